//! Every task's training and validation files as token stores: read in chunks, tokenized in
//! parallel, written to the cache once, memory-mapped afterwards.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mtl_crds::{DataFormat, MultiTaskTrainingJobSpec, TaskSpec, TaskType};
use serde::Serialize;
use tracing::info;

use super::cache::{self, Origin};
use super::example::Example;
use super::read::for_each_example;
use super::token_store::{TokenStore, TokenStoreWriter};
use super::tokenize::TextEncoder;
use crate::io::Storage;
use crate::{Error, Result};

/// Examples tokenized at once: enough for the tokenizer to keep both cores busy, few enough
/// that their text and encodings stay a few MiB.
const CHUNK: usize = 4096;

/// One task's data.
pub struct TaskData {
    pub spec: TaskSpec,
    /// The training store (absent when only validation was asked for).
    pub train: Option<TokenStore>,
    pub validation: Option<TokenStore>,
    /// SHA-256 of the training file (empty when it was not read).
    pub train_sha256: String,
    /// Whether each store came from the cache or was built now: (train, validation).
    pub origin: (Option<Origin>, Option<Origin>),
}

impl TaskData {
    pub fn train_len(&self) -> usize {
        self.train.as_ref().map_or(0, TokenStore::len)
    }
}

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// What decides a store's content besides the data and tokenizer files (see `cache.rs`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyParts<'a> {
    data_sha256: &'a str,
    tokenizer_sha256: &'a str,
    max_length: usize,
    types: bool,
    id_bytes: u32,
    #[serde(rename = "type")]
    task_type: TaskType,
    format: DataFormat,
    text_fields: &'a [String],
    label_field: Option<&'a str>,
    label_names: Option<&'a [String]>,
    choices_field: Option<&'a str>,
    num_choices: Option<u32>,
    num_labels: Option<u32>,
    limit: Option<u64>,
    require_labels: bool,
}

/// How to turn a job's files into stores.
pub struct Loader<'a> {
    pub store: &'a Storage,
    pub cache: &'a Path,
    /// The tokenizer at the job's maxLength (tasks with their own maxLength get a copy).
    pub encoder: &'a TextEncoder,
    pub tokenizer_sha256: String,
    /// Checked between chunks: a stop request ends loading with [`Error::Stopped`].
    pub stop: Option<&'a AtomicBool>,
}

impl<'a> Loader<'a> {
    /// A loader for data tokenized by `encoder`, whose tokenizer file is `tokenizer`.
    pub fn new(
        store: &'a Storage,
        cache: &'a Path,
        encoder: &'a TextEncoder,
        tokenizer: &Path,
    ) -> Result<Self> {
        Ok(Self {
            store,
            cache,
            encoder,
            tokenizer_sha256: sha256_file(tokenizer)?,
            stop: None,
        })
    }

    /// Every task's stores (the training ones only when `need_train`).
    pub fn load(&self, spec: &MultiTaskTrainingJobSpec, need_train: bool) -> Result<Vec<TaskData>> {
        spec.tasks
            .iter()
            .map(|t| {
                let encoder = match t.max_length {
                    Some(n) if n as usize != self.encoder.max_length() => {
                        self.encoder.with_max_length(n as usize)?
                    }
                    _ => self.encoder.clone(),
                };
                let (train, train_sha256) = if need_train {
                    let (store, origin, sha) =
                        self.file(t, &t.train, &encoder, t.max_train_examples)?;
                    (Some((store, origin)), sha)
                } else {
                    (None, String::new())
                };
                let validation = match &t.validation {
                    Some(v) => {
                        let (store, origin, _) = self.file(t, v, &encoder, t.max_eval_examples)?;
                        Some((store, origin))
                    }
                    None => None,
                };
                Ok(TaskData {
                    spec: t.clone(),
                    origin: (
                        train.as_ref().map(|(_, o)| *o),
                        validation.as_ref().map(|(_, o)| *o),
                    ),
                    train: train.map(|(s, _)| s),
                    validation: validation.map(|(s, _)| s),
                    train_sha256,
                })
            })
            .collect()
    }

    /// The store of one file of task `t`: from the cache, or read, tokenized and cached.
    fn file(
        &self,
        t: &TaskSpec,
        uri: &str,
        encoder: &TextEncoder,
        limit: Option<u64>,
    ) -> Result<(TokenStore, Origin, String)> {
        let path = self.store.fetch(uri, self.cache)?;
        let sha = sha256_file(&path)?;
        let key = cache::key(&KeyParts {
            data_sha256: &sha,
            tokenizer_sha256: &self.tokenizer_sha256,
            max_length: encoder.max_length(),
            types: encoder.keeps_types(),
            id_bytes: encoder.id_bytes(),
            task_type: t.task_type,
            format: t.format,
            text_fields: &t.text_fields,
            label_field: t.label_field.as_deref(),
            label_names: t.label_names.as_deref(),
            choices_field: t.choices_field.as_deref(),
            num_choices: t.num_choices,
            num_labels: t.num_labels,
            limit,
            require_labels: true,
        });
        let (store, origin) = cache::open_or_build(self.cache, &key, uri, |dir| {
            self.build(t, &path, uri, encoder, limit, dir)
        })?;
        Ok((store, origin, sha))
    }

    /// Reads `path` in chunks, tokenizes each, and writes the store into `dir`.
    fn build(
        &self,
        t: &TaskSpec,
        path: &Path,
        uri: &str,
        encoder: &TextEncoder,
        limit: Option<u64>,
        dir: &Path,
    ) -> Result<()> {
        let started = Instant::now();
        let mut out =
            TokenStoreWriter::create(dir, encoder.id_bytes(), encoder.keeps_types(), uri)?;
        let limit = limit.map_or(usize::MAX, |n| n as usize);
        let mut chunk: Vec<Example> = Vec::with_capacity(CHUNK);
        let mut read = 0usize;
        let flush = |chunk: &mut Vec<Example>, out: &mut TokenStoreWriter| -> Result<()> {
            encoder.encode_into(chunk, out)?;
            chunk.clear();
            if self.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                return Err(Error::Stopped);
            }
            Ok(())
        };
        for_each_example(t, path, uri, true, &mut |e| {
            chunk.push(e);
            read += 1;
            if chunk.len() == CHUNK {
                flush(&mut chunk, &mut out)?;
            }
            Ok(read < limit)
        })?;
        flush(&mut chunk, &mut out)?;
        if out.examples() == 0 {
            return Err(Error::invalid_input(uri, "no examples in file"));
        }
        let meta = out.finish()?;
        let secs = started.elapsed().as_secs_f64();
        info!(
            data = uri,
            examples = meta.examples,
            tokens = meta.tokens,
            seconds = secs,
            examples_per_s = meta.examples as f64 / secs.max(1e-9),
            "tokenized"
        );
        Ok(())
    }
}

/// A store of `examples` held only while it is used (`predict`'s input): written to a scratch
/// directory under the cache, mapped, and the directory removed at once (the mapping stays).
pub fn scratch_store(
    cache: &Path,
    encoder: &TextEncoder,
    examples: &[Example],
    shown: &str,
) -> Result<TokenStore> {
    static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let root = cache::tokens_dir(cache);
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
    let dir = root.join(format!(".scratch-{}-{n}", std::process::id()));
    let built = (|| {
        let mut out =
            TokenStoreWriter::create(&dir, encoder.id_bytes(), encoder.keeps_types(), shown)?;
        for chunk in examples.chunks(CHUNK) {
            encoder.encode_into(chunk, &mut out)?;
        }
        out.finish()?;
        TokenStore::open(&dir)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    built
}
