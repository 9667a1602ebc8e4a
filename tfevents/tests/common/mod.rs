//! Runs `tensorboard_check.py` with the project's Python, which must have `tensorboard`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const INSTALL: &str = "these tests need a Python with the `tensorboard` package: run \
     `make setup` (installs requirements.txt into .venv), or \
     `python3 -m venv .venv && .venv/bin/pip install tensorboard` at the workspace root, \
     or set MTL_PYTHON to a Python that has it";

/// $MTL_PYTHON, else `.venv/bin/python` at the workspace root.
fn python() -> PathBuf {
    std::env::var_os("MTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// Runs `tensorboard_check.py <args>` with `input` as JSON on stdin; returns its JSON output.
/// Fails the test, saying how to install it, if the Python or its tensorboard is missing.
pub fn tensorboard_check(args: &[&str], input: &serde_json::Value) -> serde_json::Value {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import tensorboard; print(tensorboard.__version__)"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{} cannot import tensorboard ({}): {INSTALL}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!("cannot run {} ({e}): {INSTALL}", python.display()),
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tensorboard_check.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tensorboard_check.py");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "tensorboard_check.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("tensorboard_check.py prints JSON")
}
