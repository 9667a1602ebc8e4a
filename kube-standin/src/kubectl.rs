//! Runs the real `kubectl` against a stand-in, for end-to-end tests: with a kubeconfig and a
//! home directory (so discovery and OpenAPI caches) of its own.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Error;

/// What one `kubectl` run printed.
#[derive(Debug, Clone)]
pub struct KubectlOutput {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl KubectlOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for KubectlOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A `kubectl` bound to one stand-in.
#[derive(Debug, Clone)]
pub struct Kubectl {
    binary: PathBuf,
    home: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// The `kubectl` binary: `$KUBECTL`, or the first on `PATH`.
    pub fn find() -> Result<PathBuf, Error> {
        if let Some(path) = std::env::var_os("KUBECTL").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(path));
        }
        std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("kubectl"))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                Error::Kubectl(
                    "kubectl is not installed (not on PATH and $KUBECTL unset); these tests drive the real kubectl".into(),
                )
            })
    }

    /// A `kubectl` for the stand-in at `url` (namespace `namespace`), keeping its kubeconfig
    /// and caches in `dir`.
    pub fn new(url: &str, dir: &Path, namespace: &str) -> Result<Self, Error> {
        let binary = Self::find()?;
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, crate::kubeconfig_yaml(url, namespace))
            .map_err(|e| Error::Kubectl(format!("cannot write {}: {e}", kubeconfig.display())))?;
        Ok(Self {
            binary,
            home: dir.to_path_buf(),
            kubeconfig,
        })
    }

    /// The kubeconfig file it uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl ARGS` (with `stdin` piped in when given) on the blocking pool, so a
    /// stand-in served by the calling runtime keeps answering.
    pub async fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<KubectlOutput, Error> {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .env_remove("KUBECTL_EXPLAIN_OPENAPIV3")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let stdin = stdin.map(str::to_string);
        let shown = format!("kubectl {}", args.join(" "));
        let output = tokio::task::spawn_blocking(move || {
            let mut child = command.spawn()?;
            if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
                pipe.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
        .await
        .map_err(|e| Error::Kubectl(format!("{shown}: {e}")))?
        .map_err(|e| Error::Kubectl(format!("{shown}: {e}")))?;
        Ok(KubectlOutput {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
