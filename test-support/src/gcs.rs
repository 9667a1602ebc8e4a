//! A real `gcp-storage-emulator` process for tests (cargo feature `gcs`).
//!
//! ```ignore
//! let emu = mtl_test_support::gcs::Emulator::start();
//! let storage = emu.storage(); // Storage::with_gcs_endpoint(emu.endpoint())
//! storage.write(&emu.uri("a.json"), b"{}".to_vec()).await?;
//! ```
//!
//! The executable is `$MTL_GCS_EMULATOR`, else `<workspace>/.venv/bin/gcp-storage-emulator`,
//! else `gcp-storage-emulator` on `PATH`. Each emulator listens on its own free port on
//! 127.0.0.1, so tests run in parallel; nothing here touches process-global environment
//! variables. The process is killed on drop.
//!
//! Setup failures panic with a message that says what to install: this is test support.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mtl_storage::Storage;

/// The bucket every emulator starts with.
pub const BUCKET: &str = "mtl-test";
/// Environment variable naming the emulator executable.
pub const EMULATOR_ENV: &str = "MTL_GCS_EMULATOR";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_EVERY: Duration = Duration::from_millis(25);

/// A running `gcp-storage-emulator`.
#[derive(Debug)]
pub struct Emulator {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    data_dir: Option<PathBuf>,
    buckets: Vec<String>,
    log: PathBuf,
}

/// The emulator executable: `$MTL_GCS_EMULATOR`, the workspace venv's, or the one on `PATH`.
pub fn emulator_program() -> PathBuf {
    if let Some(p) = std::env::var_os(EMULATOR_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/gcp-storage-emulator");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("gcp-storage-emulator")
}

impl Emulator {
    /// Starts an in-memory emulator with the bucket [`BUCKET`]. Panics if it cannot.
    pub fn start() -> Self {
        Self::try_start(None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts an emulator that stores its data under `data_dir`, so that objects, buckets and
    /// unfinished resumable uploads survive [`Emulator::restart`].
    pub fn start_persistent(data_dir: &Path) -> Self {
        Self::try_start(Some(data_dir.to_path_buf())).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts an emulator; the error says what went wrong and where its log is.
    pub fn try_start(data_dir: Option<PathBuf>) -> Result<Self, String> {
        let program = emulator_program();
        let mut last_error = String::new();
        // A free port can be taken by someone else between probing and binding: try a few.
        for _ in 0..3 {
            let port = crate::free_port();
            let mut emu = Self {
                child: None,
                port,
                program: program.clone(),
                data_dir: data_dir.clone(),
                buckets: vec![BUCKET.to_string()],
                log: std::env::temp_dir().join(format!(
                    "mtl-gcs-emulator-{}-{port}.log",
                    std::process::id()
                )),
            };
            match emu.spawn() {
                Ok(()) => return Ok(emu),
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// `http://127.0.0.1:<port>`, for [`Storage::with_gcs_endpoint`] or `STORAGE_EMULATOR_HOST`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The bucket every emulator starts with ([`BUCKET`]).
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// `gs://<bucket>/<path>`.
    pub fn uri(&self, path: &str) -> String {
        mtl_storage::join(&format!("gs://{BUCKET}"), path)
    }

    /// A [`Storage`] whose gs:// URIs go to this emulator, anonymously.
    pub fn storage(&self) -> Storage {
        Storage::with_gcs_endpoint(self.endpoint())
    }

    /// Creates another bucket through the JSON API; it is created again on restart.
    pub fn create_bucket(&mut self, name: &str) -> Result<(), String> {
        self.insert_bucket(name)?;
        if !self.buckets.iter().any(|b| b == name) {
            self.buckets.push(name.to_string());
        }
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process (SIGKILL: connections in flight are cut, as in a crash).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the emulator if it runs and starts it again on the same port, with its buckets.
    /// An in-memory emulator comes back empty apart from the buckets. Panics if it cannot.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn() {
                Ok(()) => return,
                // The port may linger for a moment after the kill.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "emulator restart failed, trying again");
                    std::thread::sleep(POLL_EVERY);
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// The emulator's log (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let mut cmd = Command::new(&self.program);
        if let Some(dir) = &self.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        cmd.args(["start", "--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            // The first bucket exists before the port opens, so a client retrying against a
            // restarted emulator never sees it missing; any others are created via the API.
            .args(["--default-bucket", BUCKET]);
        if self.data_dir.is_none() {
            cmd.arg("--in-memory");
        }
        let child = cmd
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| {
                format!(
                    "could not run {} ({e}); install it with `python3 -m venv .venv && \
                     .venv/bin/pip install gcp-storage-emulator` in the workspace root, or set \
                     {EMULATOR_ENV}",
                    self.program.display()
                )
            })?;
        self.child = Some(child);
        if let Err(e) = self.wait_ready() {
            self.stop();
            return Err(e);
        }
        let extra: Vec<String> = self.buckets.iter().skip(1).cloned().collect();
        for bucket in extra {
            self.insert_bucket(&bucket)?;
        }
        Ok(())
    }

    /// Polls the health endpoint until it answers, the process exits, or the deadline passes.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "gcp-storage-emulator on port {} exited with {status}; log: {}",
                    self.port,
                    self.log.display()
                ));
            }
            if let Ok((200, _)) = http(self.port, "GET", "/", None) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "gcp-storage-emulator on port {} did not answer within {READY_TIMEOUT:?}; \
                     log: {}",
                    self.port,
                    self.log.display()
                ));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }

    fn insert_bucket(&self, name: &str) -> Result<(), String> {
        let body = serde_json::json!({ "name": name }).to_string();
        match http(self.port, "POST", "/storage/v1/b?project=test", Some(&body)) {
            // 409: it exists already.
            Ok((200 | 409, _)) => Ok(()),
            Ok((code, text)) => Err(format!("creating bucket {name}: HTTP {code}: {text}")),
            Err(e) => Err(format!("creating bucket {name}: {e}")),
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("gcp-storage-emulator log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code and the body.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:.80}")))?;
    let text = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, text))
}
