//! Storage for everything a job reads and writes: local paths and `gs://bucket/prefix` URIs
//! behind one small interface, plus the checkpoint manifest protocol that the trainer writes
//! and the operator reads.
//!
//! Every call takes a URI. A URI that starts with `gs://` goes to Google Cloud Storage; anything
//! else is a local path.

mod gcs;
mod local;
pub mod manifest;
pub mod progress;
mod retry;

use std::path::Path;

pub use gcs::{CHUNK_ALIGN, DEFAULT_CHUNK_SIZE, EMULATOR_HOST_ENV};
pub use manifest::{MANIFEST_NAME, Manifest};
pub use progress::{PROGRESS_NAME, Progress};
pub use retry::{Backoff, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{uri}: not found")]
    NotFound { uri: String },
    #[error("{uri}: {source}")]
    Io {
        uri: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{uri}: {message}")]
    Remote { uri: String, message: String },
    #[error("{uri}: {message}")]
    Corrupt { uri: String, message: String },
    #[error("{uri}: not a valid gs:// URI (expected gs://bucket/path)")]
    BadUri { uri: String },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when `uri` names an object in Google Cloud Storage.
pub fn is_gcs(uri: &str) -> bool {
    uri.starts_with("gs://")
}

/// Joins a child name onto a directory URI or path with exactly one `/`.
pub fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        return name.to_string();
    }
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        name.trim_start_matches('/')
    )
}

/// `<path>.partial-<pid>-<n>`: a name no other download (in this process or another) uses.
fn staging_path(path: &Path) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".partial-{}-{n}", std::process::id()));
    path.with_file_name(name)
}

/// Reads and writes local paths and gs:// URIs.
///
/// `Storage::new()` is what binaries use: gs:// goes to Google Cloud Storage with Application
/// Default Credentials, or to `STORAGE_EMULATOR_HOST` without credentials when that is set.
/// Tests pass an emulator endpoint explicitly with [`Storage::with_gcs_endpoint`]. The GCS
/// client is created on first use and shared by clones.
#[derive(Clone, Default)]
pub struct Storage {
    gcs: std::sync::Arc<tokio::sync::OnceCell<gcs::Gcs>>,
    settings: gcs::Settings,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("gcs_endpoint", &self.settings.endpoint)
            .field("retry", &self.settings.retry)
            .finish_non_exhaustive()
    }
}

impl Storage {
    pub fn new() -> Self {
        Self::default()
    }

    /// gs:// URIs go to `endpoint` (an emulator such as `http://127.0.0.1:9023`) without
    /// credentials, whatever the environment says.
    pub fn with_gcs_endpoint(endpoint: impl Into<String>) -> Self {
        let mut s = Self::default();
        s.settings.endpoint = Some(endpoint.into());
        s
    }

    /// Replaces the retry policy for transient GCS failures.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = policy;
        self.gcs = Default::default();
        self
    }

    /// Sets the resumable upload chunk size, rounded up to a multiple of 256 KiB
    /// (default [`DEFAULT_CHUNK_SIZE`], 8 MiB). Each upload holds one chunk in memory.
    pub fn with_upload_chunk_size(mut self, bytes: usize) -> Self {
        self.settings.chunk_size = gcs::aligned_chunk_size(bytes);
        self.gcs = Default::default();
        self
    }

    async fn gcs(&self) -> Result<&gcs::Gcs> {
        self.gcs
            .get_or_try_init(|| gcs::Gcs::connect(&self.settings))
            .await
    }

    /// Reads a whole object into memory (for small files: JSON, configs).
    pub async fn read(&self, uri: &str) -> Result<Vec<u8>> {
        if is_gcs(uri) {
            self.gcs().await?.read(uri).await
        } else {
            local::read(uri).await
        }
    }

    /// [`Storage::read`], with `Ok(None)` when there is no such object.
    pub async fn read_if_exists(&self, uri: &str) -> Result<Option<Vec<u8>>> {
        match self.read(uri).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `value` as pretty JSON in one whole-object write (a reader sees the old object
    /// or the new one, never a mix).
    pub async fn write_json<T: serde::Serialize>(&self, uri: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
            uri: uri.into(),
            message: format!("cannot be encoded as JSON: {e}"),
        })?;
        self.write(uri, bytes).await
    }

    /// Writes a whole object. On a local path the write is atomic (temp file, then rename).
    pub async fn write(&self, uri: &str, data: Vec<u8>) -> Result<()> {
        if is_gcs(uri) {
            self.gcs().await?.write(uri, data).await
        } else {
            local::write(uri, &data).await
        }
    }

    /// Copies a local file to `uri`, streaming it (resumable upload on GCS, in chunks).
    pub async fn upload(&self, file: &Path, uri: &str) -> Result<()> {
        self.upload_with_progress(file, uri, |_| {}).await
    }

    /// Like [`Storage::upload`]; `progress` is told how many bytes are stored each time that
    /// changes (on GCS after each chunk, and back to 0 if a lost session makes the upload start
    /// over).
    pub async fn upload_with_progress(
        &self,
        file: &Path,
        uri: &str,
        mut progress: impl FnMut(u64) + Send,
    ) -> Result<()> {
        if is_gcs(uri) {
            self.gcs().await?.upload(file, uri, &mut progress).await
        } else {
            local::copy(file, Path::new(uri)).await?;
            let len = tokio::fs::metadata(uri).await.map(|m| m.len());
            progress(len.unwrap_or_default());
            Ok(())
        }
    }

    /// Copies `uri` to a local file, streaming it. The file appears whole or not at all.
    pub async fn download(&self, uri: &str, file: &Path) -> Result<()> {
        if !is_gcs(uri) {
            return local::copy(Path::new(uri), file).await;
        }
        let gcs = self.gcs().await?;
        local::ensure_parent(file).await?;
        let tmp = local::temp_name(file);
        let result = match gcs.download(uri, &tmp).await {
            Ok(()) => tokio::fs::rename(&tmp, file)
                .await
                .map_err(|source| Error::Io {
                    uri: file.display().to_string(),
                    source,
                }),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// URIs of every object under `prefix` (recursively), sorted. `prefix` is read as a
    /// directory on GCS as on a local disk: `…/checkpoint-1` does not list `…/checkpoint-10`.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        if is_gcs(prefix) {
            self.gcs().await?.list(prefix).await
        } else {
            local::list(prefix).await
        }
    }

    /// Deletes one object. Deleting what does not exist is not an error.
    pub async fn delete(&self, uri: &str) -> Result<()> {
        if is_gcs(uri) {
            self.gcs().await?.delete(uri).await
        } else {
            local::delete(uri).await
        }
    }

    /// Deletes every object under `prefix`.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<()> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        for uri in self.list(&dir).await? {
            self.delete(&uri).await?;
        }
        if !is_gcs(prefix) {
            local::remove_empty_dirs(prefix).await;
        }
        Ok(())
    }

    /// Makes `uri` available as a local file: the path itself when local, otherwise a copy
    /// downloaded into `cache_dir` (at `<cache_dir>/<bucket>/<object>`) and reused while the
    /// object's generation stays the one it was downloaded at (recorded beside, under
    /// `<cache_dir>/.generations/`): a replaced object is downloaded again.
    pub async fn fetch(&self, uri: &str, cache_dir: &Path) -> Result<std::path::PathBuf> {
        if !is_gcs(uri) {
            return Ok(Path::new(uri).to_path_buf());
        }
        let rel = uri.trim_start_matches("gs://");
        let path = cache_dir.join(rel);
        let stamp = cache_dir.join(".generations").join(rel);
        let generation = self.gcs().await?.generation(uri).await?.to_string();
        let io = |p: &Path| {
            let uri = p.display().to_string();
            move |source| Error::Io { uri, source }
        };
        if tokio::fs::metadata(&path).await.is_ok()
            && tokio::fs::read_to_string(&stamp).await.ok().as_deref() == Some(generation.as_str())
        {
            return Ok(path);
        }
        for dir in [path.parent(), stamp.parent()].into_iter().flatten() {
            tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        }
        let _ = tokio::fs::remove_file(&stamp).await;
        // A staging name of this download's own: the local ranks of a node may fetch one
        // object into one cache at once, and each renames only the file it wrote.
        let partial = staging_path(&path);
        if let Err(e) = self.download(uri, &partial).await {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(io(&path))?;
        tokio::fs::write(&stamp, &generation)
            .await
            .map_err(io(&stamp))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_puts_one_slash() {
        assert_eq!(join("gs://b/p/", "/x"), "gs://b/p/x");
        assert_eq!(join("/tmp/a", "b"), "/tmp/a/b");
        assert_eq!(join("", "b"), "b");
    }

    #[tokio::test]
    async fn local_round_trip_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let s = Storage::new();
        s.write(&join(&base, "a/x.txt"), b"hello".to_vec())
            .await
            .unwrap();
        s.write(&join(&base, "a/b/y.txt"), b"world".to_vec())
            .await
            .unwrap();
        assert_eq!(s.read(&join(&base, "a/x.txt")).await.unwrap(), b"hello");
        let listed = s.list(&join(&base, "a")).await.unwrap();
        assert_eq!(
            listed,
            vec![join(&base, "a/b/y.txt"), join(&base, "a/x.txt")]
        );
        s.delete_prefix(&join(&base, "a/b")).await.unwrap();
        assert_eq!(
            s.list(&join(&base, "a")).await.unwrap(),
            vec![join(&base, "a/x.txt")]
        );
        let missing = s.read(&join(&base, "nope")).await.unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
        s.delete(&join(&base, "nope")).await.unwrap();
    }
}
