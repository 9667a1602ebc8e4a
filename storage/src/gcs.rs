//! Google Cloud Storage backend over the JSON API (`gcloud-storage`).
//!
//! - Authentication: Application Default Credentials (Workload Identity on GKE,
//!   `GOOGLE_APPLICATION_CREDENTIALS`, the metadata server). When `STORAGE_EMULATOR_HOST` is set,
//!   or an endpoint is given explicitly, requests go there without credentials.
//! - `upload` is a resumable upload sent in chunks of a multiple of 256 KiB, read from the file
//!   one chunk at a time. After a transient failure it asks the session how much was committed
//!   and goes on from there; when the session is gone it starts a new one.
//! - `download` streams to the file and resumes with a `Range` request after a transient failure,
//!   pinned to the generation it started with.
//! - Transient failures are retried by [`RetryPolicy`]; 404 becomes [`Error::NotFound`], and any
//!   other failure [`Error::Remote`] naming the object and the cause.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use gcloud_storage::client::{Client, ClientConfig};
use gcloud_storage::http::Error as HttpError;
use gcloud_storage::http::objects::delete::DeleteObjectRequest;
use gcloud_storage::http::objects::download::Range;
use gcloud_storage::http::objects::get::GetObjectRequest;
use gcloud_storage::http::objects::list::ListObjectsRequest;
use gcloud_storage::http::objects::upload::{Media, UploadObjectRequest, UploadType};
use gcloud_storage::http::resumable_upload_client::{
    ChunkSize, ResumableUploadClient, UploadStatus,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::retry::{Attempts, RetryPolicy};
use crate::{Error, Result};

/// Resumable upload chunks must be multiples of this (except the last).
pub const CHUNK_ALIGN: usize = 256 * 1024;
/// Default resumable upload chunk: 8 MiB.
pub const DEFAULT_CHUNK_SIZE: usize = 32 * CHUNK_ALIGN;
/// The variable Google's client libraries honour to talk to an emulator.
pub const EMULATOR_HOST_ENV: &str = "STORAGE_EMULATOR_HOST";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A response that sends nothing for this long counts as a (transient) timeout.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// How the GCS client is built; part of [`crate::Storage`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Settings {
    /// Anonymous endpoint (an emulator); `None` = `STORAGE_EMULATOR_HOST` or else Google with ADC.
    pub endpoint: Option<String>,
    pub retry: RetryPolicy,
    /// 0 = [`DEFAULT_CHUNK_SIZE`].
    pub chunk_size: usize,
}

/// Rounds a requested chunk size up to a multiple of 256 KiB (at least 256 KiB).
pub(crate) fn aligned_chunk_size(bytes: usize) -> usize {
    bytes
        .max(1)
        .div_ceil(CHUNK_ALIGN)
        .saturating_mul(CHUNK_ALIGN)
}

/// `host:port` or a URL → a URL without a trailing slash.
fn normalize_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// `gs://bucket/name` → (`bucket`, `name`); `name` may be empty.
pub(crate) fn parse(uri: &str) -> Result<(&str, &str)> {
    let bad = || Error::BadUri { uri: uri.into() };
    let rest = uri.strip_prefix("gs://").ok_or_else(bad)?;
    let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=222).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && bucket.as_bytes()[0].is_ascii_alphanumeric()
        && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
    let name_ok = name.len() <= 1024 && !name.contains(['\r', '\n']);
    if bucket_ok && name_ok {
        Ok((bucket, name))
    } else {
        Err(bad())
    }
}

/// Like [`parse`], for a URI that must name one object.
fn parse_object(uri: &str) -> Result<(&str, &str)> {
    match parse(uri)? {
        (_, "") => Err(Error::BadUri { uri: uri.into() }),
        (_, name) if name.ends_with('/') => Err(Error::BadUri { uri: uri.into() }),
        ok => Ok(ok),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("json") => "application/json",
        Some("txt" | "tsv" | "csv" | "jsonl") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// What a failed call means for retrying it.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Worth another try: 408, 429, 5xx, no connection, timeouts, a cut-off body.
    Transient,
    /// 404.
    NotFound,
    /// 410: an upload session that expired.
    Gone,
    /// Anything else: retrying will not help.
    Rejected,
}

fn status_of(e: &HttpError) -> Option<u16> {
    match e {
        HttpError::Response(r) => Some(r.code),
        HttpError::HttpClient(r) | HttpError::RawResponse(r, _) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn classify(e: &HttpError) -> Failure {
    match status_of(e) {
        Some(404) => Failure::NotFound,
        Some(410) => Failure::Gone,
        Some(408 | 429 | 500..=599) => Failure::Transient,
        Some(_) => Failure::Rejected,
        None => match e {
            HttpError::HttpClient(r) | HttpError::RawResponse(r, _) if r.is_builder() => {
                Failure::Rejected
            }
            HttpError::HttpClient(_)
            | HttpError::RawResponse(..)
            | HttpError::HttpMiddleware(_)
            | HttpError::TokenSource(_) => Failure::Transient,
            _ => Failure::Rejected,
        },
    }
}

/// The error and its causes on one line, without URLs (an upload session URL is a credential).
fn describe(e: &HttpError) -> String {
    // `HttpError` wraps reqwest's error transparently: its `source()` skips the wrapped error.
    let first: &(dyn std::error::Error + 'static) = match e {
        HttpError::HttpClient(r) | HttpError::RawResponse(r, _) => r,
        e => e,
    };
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(first);
    while let Some(err) = cur {
        let mut text = err.to_string();
        if let Some(r) = err.downcast_ref::<reqwest::Error>()
            && let Some(url) = r.url()
        {
            text = text.replace(&format!(" for url ({url})"), "");
            text = text.replace(url.as_str(), "<url>");
        }
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    if let HttpError::RawResponse(_, detail) = e {
        parts.push(detail.clone());
    }
    if let Some(code) = status_of(e)
        && !parts.iter().any(|p| p.contains(&code.to_string()))
    {
        parts.insert(0, format!("HTTP {code}"));
    }
    parts.join(": ")
}

fn remote(uri: &str, what: &str, e: &HttpError) -> Error {
    Error::Remote {
        uri: uri.into(),
        message: format!("{what} failed: {}", describe(e)),
    }
}

fn file_error(file: &Path, source: std::io::Error) -> Error {
    let uri = file.display().to_string();
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound { uri }
    } else {
        Error::Io { uri, source }
    }
}

/// What a resumable upload reads its chunks from.
enum Source<'a> {
    File(tokio::fs::File, &'a Path),
    Memory(Vec<u8>),
}

impl Source<'_> {
    /// Bytes `start..end`.
    async fn read(&mut self, start: u64, end: u64) -> Result<Vec<u8>> {
        match self {
            Source::File(f, path) => {
                let mut chunk = vec![0u8; (end - start) as usize];
                f.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(|e| file_error(path, e))?;
                f.read_exact(&mut chunk)
                    .await
                    .map_err(|e| file_error(path, e))?;
                Ok(chunk)
            }
            Source::Memory(data) => Ok(data[start as usize..end as usize].to_vec()),
        }
    }
}

/// Where a resumable upload stands.
enum Step {
    /// Start a (new) session at offset 0.
    Create,
    /// Ask the session how much it has committed.
    Query,
    /// Send the chunk at the current offset.
    Send,
}

pub struct Gcs {
    client: Client,
    retry: RetryPolicy,
    chunk_size: usize,
}

impl Gcs {
    pub(crate) async fn connect(settings: &Settings) -> Result<Self> {
        let setup_error = |message: String| Error::Remote {
            uri: "gs://".into(),
            message,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| setup_error(format!("could not build the HTTP client: {e}")))?;
        let base = ClientConfig {
            http: Some(reqwest_middleware::ClientBuilder::new(http).build()),
            ..Default::default()
        };
        let env_endpoint = std::env::var(EMULATOR_HOST_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty());
        let config = match settings.endpoint.as_deref().or(env_endpoint.as_deref()) {
            Some(endpoint) => {
                let endpoint = normalize_endpoint(endpoint);
                tracing::info!(%endpoint, "gs:// storage uses an anonymous endpoint");
                ClientConfig {
                    storage_endpoint: endpoint,
                    ..base
                }
                .anonymous()
            }
            None => base.with_auth().await.map_err(|e| {
                setup_error(format!(
                    "no Google credentials (Application Default Credentials: Workload \
                     Identity, GOOGLE_APPLICATION_CREDENTIALS or the metadata server): {e}"
                ))
            })?,
        };
        Ok(Self {
            client: Client::new(config),
            retry: settings.retry.clone(),
            chunk_size: aligned_chunk_size(if settings.chunk_size == 0 {
                DEFAULT_CHUNK_SIZE
            } else {
                settings.chunk_size
            }),
        })
    }

    /// Runs `op` until it succeeds, fails for good, or the retry policy runs out.
    async fn call<T, F, Fut>(&self, uri: &str, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, HttpError>>,
    {
        let mut attempts = Attempts::new(&self.retry);
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match classify(&e) {
                Failure::Transient => {
                    attempts
                        .backoff(what, &describe(&e))
                        .await
                        .map_err(|message| Error::Remote {
                            uri: uri.into(),
                            message,
                        })?
                }
                Failure::NotFound | Failure::Gone => {
                    return Err(Error::NotFound { uri: uri.into() });
                }
                Failure::Rejected => return Err(remote(uri, what, &e)),
            }
        }
    }

    fn get_request(bucket: &str, name: &str) -> GetObjectRequest {
        GetObjectRequest {
            bucket: bucket.into(),
            object: name.into(),
            ..Default::default()
        }
    }

    pub async fn read(&self, uri: &str) -> Result<Vec<u8>> {
        let (bucket, name) = parse_object(uri)?;
        let req = Self::get_request(bucket, name);
        let whole = Range::default();
        self.call(uri, "read", || self.client.download_object(&req, &whole))
            .await
    }

    /// Writes a small object held in memory: a resumable upload of a single chunk (two
    /// requests). Not a simple media upload: gcp-storage-emulator fails those for an empty body
    /// or an `application/json` one, and this way the content type follows the name here too.
    pub async fn write(&self, uri: &str, data: Vec<u8>) -> Result<()> {
        let total = data.len() as u64;
        self.upload_from(uri, Source::Memory(data), total, &mut |_| {})
            .await
    }

    /// A resumable upload of `file`, one chunk in memory at a time. `progress` is told the number
    /// of bytes the server has committed each time it changes (back to 0 when a lost session
    /// forces a restart).
    pub async fn upload(
        &self,
        file: &Path,
        uri: &str,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        parse_object(uri)?;
        let f = tokio::fs::File::open(file)
            .await
            .map_err(|e| file_error(file, e))?;
        let total = f.metadata().await.map_err(|e| file_error(file, e))?.len();
        self.upload_from(uri, Source::File(f, file), total, progress)
            .await
    }

    async fn upload_from(
        &self,
        uri: &str,
        mut source: Source<'_>,
        total: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<()> {
        let (bucket, name) = parse_object(uri)?;
        let req = UploadObjectRequest {
            bucket: bucket.into(),
            ..Default::default()
        };
        let kind = UploadType::Simple(Media {
            name: name.to_string().into(),
            content_type: content_type(name).into(),
            content_length: Some(total),
        });
        let remote_err = |message: String| Error::Remote {
            uri: uri.into(),
            message,
        };

        let mut attempts = Attempts::new(&self.retry);
        let mut session: Option<ResumableUploadClient> = None;
        let mut step = Step::Create;
        let mut offset = 0u64;
        // The offset came from a status query: a 400 on the next chunk means that the server
        // disagrees about it (gcp-storage-emulator answers `bytes=0-0` when it holds nothing).
        let mut offset_from_query = false;
        loop {
            let (what, result) = match (&step, &session) {
                (Step::Create, _) | (_, None) => {
                    match self.client.prepare_resumable_upload(&req, &kind).await {
                        Ok(s) => {
                            tracing::debug!(%uri, total, "resumable upload session started");
                            session = Some(s);
                            if offset != 0 {
                                offset = 0;
                                progress(0);
                            }
                            offset_from_query = false;
                            step = Step::Send;
                            continue;
                        }
                        Err(e) if classify(&e) == Failure::NotFound => {
                            // The bucket is missing.
                            return Err(Error::NotFound { uri: uri.into() });
                        }
                        Err(e) => ("starting the upload session", Err(e)),
                    }
                }
                (Step::Query, Some(s)) => {
                    ("querying the upload session", s.status(Some(total)).await)
                }
                (Step::Send, Some(s)) => {
                    let end = (offset + self.chunk_size as u64).min(total);
                    let chunk = source.read(offset, end).await?;
                    let range = if total == 0 {
                        ChunkSize::new(0, 0, Some(0))
                    } else {
                        ChunkSize::new(offset, end - 1, Some(total))
                    };
                    ("uploading", s.upload_multiple_chunk(chunk, &range).await)
                }
            };
            match result {
                Ok(UploadStatus::Ok(object)) => {
                    if u64::try_from(object.size).ok() != Some(total) {
                        return Err(remote_err(format!(
                            "upload finished with {} bytes stored, expected {total}",
                            object.size
                        )));
                    }
                    progress(total);
                    tracing::debug!(%uri, bytes = total, "uploaded object");
                    return Ok(());
                }
                Ok(UploadStatus::ResumeIncomplete(range)) => {
                    let committed = range.last_byte + 1;
                    if committed > total {
                        return Err(remote_err(format!(
                            "upload session reports {committed} bytes committed, the file has \
                             {total}"
                        )));
                    }
                    let sent = matches!(step, Step::Send);
                    if committed > offset || !sent {
                        attempts.reset();
                    } else {
                        // A chunk went out and nothing more was committed.
                        attempts
                            .backoff(what, "the server committed none of the chunk")
                            .await
                            .map_err(remote_err)?;
                    }
                    if committed != offset {
                        progress(committed);
                    }
                    offset_from_query = !sent;
                    offset = committed;
                    step = Step::Send;
                }
                Ok(UploadStatus::NotStarted) => {
                    if matches!(step, Step::Send) {
                        attempts
                            .backoff(what, "the server committed none of the chunk")
                            .await
                            .map_err(remote_err)?;
                    }
                    if offset != 0 {
                        progress(0);
                    }
                    offset = 0;
                    offset_from_query = !matches!(step, Step::Send);
                    step = Step::Send;
                }
                Err(e) => {
                    let cause = describe(&e);
                    let failure = classify(&e);
                    let rejected_offset = failure == Failure::Rejected
                        && matches!(step, Step::Send)
                        && offset_from_query
                        && status_of(&e) == Some(400);
                    match failure {
                        Failure::Transient => {
                            attempts.backoff(what, &cause).await.map_err(remote_err)?;
                            if session.is_some() {
                                step = Step::Query;
                            }
                        }
                        Failure::NotFound | Failure::Gone => {
                            tracing::warn!(%uri, %cause, "upload session lost, starting over");
                            attempts.backoff(what, &cause).await.map_err(remote_err)?;
                            session = None;
                            step = Step::Create;
                        }
                        Failure::Rejected if rejected_offset => {
                            tracing::warn!(%uri, %cause, "server rejected the resumed offset, starting over");
                            attempts.backoff(what, &cause).await.map_err(remote_err)?;
                            session = None;
                            step = Step::Create;
                        }
                        Failure::Rejected => {
                            return Err(remote_err(format!("{what} failed: {cause}")));
                        }
                    }
                }
            }
        }
    }

    /// The object's generation (it changes whenever the object is replaced).
    pub async fn generation(&self, uri: &str) -> Result<i64> {
        let (bucket, name) = parse_object(uri)?;
        let req = Self::get_request(bucket, name);
        let meta = self
            .call(uri, "reading object metadata", || {
                self.client.get_object(&req)
            })
            .await?;
        Ok(meta.generation)
    }

    /// Streams the object to `file` (written in place; [`crate::Storage::download`] makes it
    /// atomic).
    pub async fn download(&self, uri: &str, file: &Path) -> Result<()> {
        let (bucket, name) = parse_object(uri)?;
        let meta_req = Self::get_request(bucket, name);
        let meta = self
            .call(uri, "reading object metadata", || {
                self.client.get_object(&meta_req)
            })
            .await?;
        let size = u64::try_from(meta.size).unwrap_or_default();
        let req = GetObjectRequest {
            generation: (meta.generation != 0).then_some(meta.generation),
            ..Self::get_request(bucket, name)
        };
        let file_err = |source| Error::Io {
            uri: file.display().to_string(),
            source,
        };
        let mut out = tokio::fs::File::create(file).await.map_err(file_err)?;
        let mut written = 0u64;
        let mut attempts = Attempts::new(&self.retry);
        while written < size {
            let range = Range((written > 0).then_some(written), None);
            let failure = match self.client.download_streamed_object(&req, &range).await {
                Ok(stream) => {
                    let mut stream = std::pin::pin!(stream);
                    let mut failed = None;
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(bytes) => {
                                out.write_all(&bytes).await.map_err(file_err)?;
                                written += bytes.len() as u64;
                                attempts.reset();
                            }
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    match failed {
                        Some(e) => e,
                        None => break,
                    }
                }
                Err(e) => e,
            };
            match classify(&failure) {
                Failure::Transient => attempts
                    .backoff("downloading", &describe(&failure))
                    .await
                    .map_err(|message| Error::Remote {
                        uri: uri.into(),
                        message,
                    })?,
                Failure::NotFound | Failure::Gone => {
                    return Err(Error::NotFound { uri: uri.into() });
                }
                Failure::Rejected => return Err(remote(uri, "downloading", &failure)),
            }
        }
        out.flush().await.map_err(file_err)?;
        out.sync_all().await.map_err(file_err)?;
        if written != size {
            return Err(Error::Remote {
                uri: uri.into(),
                message: format!("downloaded {written} bytes, the object has {size}"),
            });
        }
        tracing::debug!(%uri, bytes = written, "downloaded object");
        Ok(())
    }

    /// Every object under `prefix`, read as a directory: `gs://b/ckpt-1` lists `ckpt-1` itself
    /// and `ckpt-1/…`, not `ckpt-10/…`. A bucket (`gs://b` or `gs://b/`) lists everything.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let (bucket, dir) = parse(prefix)?;
        let mut out = Vec::new();
        let mut page_token = None;
        loop {
            let req = ListObjectsRequest {
                bucket: bucket.into(),
                prefix: (!dir.is_empty()).then(|| dir.to_string()),
                page_token: page_token.take(),
                ..Default::default()
            };
            let page = self
                .call(prefix, "listing", || self.client.list_objects(&req))
                .await
                .map_err(|e| match e {
                    // A missing bucket is an error, not an empty listing.
                    Error::NotFound { uri } => Error::NotFound { uri },
                    e => e,
                })?;
            out.extend(
                page.items
                    .unwrap_or_default()
                    .into_iter()
                    .map(|o| o.name)
                    .filter(|n| {
                        dir.is_empty()
                            || dir.ends_with('/')
                            || n == dir
                            || n.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
                    })
                    .map(|n| format!("gs://{bucket}/{n}")),
            );
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => page_token = Some(t),
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deletes one object; a missing one is not an error.
    pub async fn delete(&self, uri: &str) -> Result<()> {
        let (bucket, name) = parse_object(uri)?;
        let req = DeleteObjectRequest {
            bucket: bucket.into(),
            object: name.into(),
            ..Default::default()
        };
        match self
            .call(uri, "delete", || self.client.delete_object(&req))
            .await
        {
            Err(Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gs_uris() {
        assert_eq!(parse("gs://bkt/a/b.txt").unwrap(), ("bkt", "a/b.txt"));
        assert_eq!(parse("gs://bkt").unwrap(), ("bkt", ""));
        assert_eq!(parse("gs://bkt/").unwrap(), ("bkt", ""));
        assert_eq!(
            parse_object("gs://my-bucket.x/c").unwrap(),
            ("my-bucket.x", "c")
        );
        for bad in [
            "gs://",
            "gs:///x",
            "gs://Upper/x",
            "gs://a/x",
            "gs://-bkt/x",
            "s3://bkt/x",
            "gs://bkt/x\ny",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, Error::BadUri { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        for not_an_object in ["gs://bkt", "gs://bkt/", "gs://bkt/dir/"] {
            assert!(matches!(
                parse_object(not_an_object),
                Err(Error::BadUri { .. })
            ));
        }
    }

    #[test]
    fn chunk_sizes_are_multiples_of_256_kib() {
        assert_eq!(aligned_chunk_size(0), CHUNK_ALIGN);
        assert_eq!(aligned_chunk_size(1), CHUNK_ALIGN);
        assert_eq!(aligned_chunk_size(CHUNK_ALIGN), CHUNK_ALIGN);
        assert_eq!(aligned_chunk_size(CHUNK_ALIGN + 1), 2 * CHUNK_ALIGN);
        assert_eq!(DEFAULT_CHUNK_SIZE, 8 << 20);
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("127.0.0.1:9023"),
            "http://127.0.0.1:9023"
        );
        assert_eq!(
            normalize_endpoint("http://127.0.0.1:9023/"),
            "http://127.0.0.1:9023"
        );
        assert_eq!(normalize_endpoint("https://x.test"), "https://x.test");
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("a/checkpoints.json"), "application/json");
        assert_eq!(
            content_type("model.safetensors"),
            "application/octet-stream"
        );
    }

    #[test]
    fn classifies_service_errors() {
        let response = |code| {
            HttpError::Response(gcloud_storage::http::error::ErrorResponse {
                code,
                errors: Vec::new(),
                message: "boom".into(),
            })
        };
        assert_eq!(classify(&response(404)), Failure::NotFound);
        assert_eq!(classify(&response(410)), Failure::Gone);
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(&response(code)), Failure::Transient, "{code}");
        }
        for code in [400, 401, 403, 412] {
            assert_eq!(classify(&response(code)), Failure::Rejected, "{code}");
        }
        assert_eq!(
            classify(&HttpError::InvalidRangeHeader("x".into())),
            Failure::Rejected
        );
        assert_eq!(describe(&response(503)), "HTTP 503: boom");
    }
}
