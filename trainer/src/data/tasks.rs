//! Every task's training and validation files, read and tokenized.

use std::path::Path;

use mtl_crds::{MultiTaskTrainingJobSpec, TaskSpec};

use super::{TextEncoder, TokenizedExample, read_examples};
use crate::checkpoint::Store;
use crate::{Error, Result};

/// One task's data, tokenized.
pub struct TaskData {
    pub spec: TaskSpec,
    pub train: Vec<TokenizedExample>,
    pub validation: Vec<TokenizedExample>,
    /// SHA-256 of the training file (empty when it was not read).
    pub train_sha256: String,
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

/// Reads and tokenizes every task's files (the training files only when `need_train`).
pub fn load_tasks(
    store: &Store,
    spec: &MultiTaskTrainingJobSpec,
    encoder: &TextEncoder,
    cache: &Path,
    need_train: bool,
) -> Result<Vec<TaskData>> {
    let read = |uri: &str, task: &TaskSpec| -> Result<(Vec<TokenizedExample>, String)> {
        let path = store.fetch(uri, cache)?;
        let examples = read_examples(task, &path, uri, true)?;
        Ok((encoder.encode(&examples)?, sha256_file(&path)?))
    };
    spec.tasks
        .iter()
        .map(|t| {
            let (train, train_sha256) = if need_train {
                read(&t.train, t)?
            } else {
                (Vec::new(), String::new())
            };
            Ok(TaskData {
                spec: t.clone(),
                train,
                train_sha256,
                validation: match &t.validation {
                    Some(v) => read(v, t)?.0,
                    None => Vec::new(),
                },
            })
        })
        .collect()
}
