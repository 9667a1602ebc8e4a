//! Token stores cached in `<MTL_CACHE_DIR>/tokens/<key>/`.
//!
//! The key is a SHA-256 over everything that decides a store's content: the store format,
//! the data file's content (its SHA-256), the tokenizer file's content, the maximum length,
//! whether segment ids are kept, the task's field mapping (type, format, text and label
//! fields, label names, choices), the example limit, and whether labels are required. A
//! second run on the same data (a restart, another job) maps the store instead of reading and
//! tokenizing again; a change to any of those makes a new key.
//!
//! A store is built in a temporary directory beside its final place and renamed into place
//! when complete, so an interrupted or failed build (a bad row in a large file) leaves
//! nothing under the key and never touches other entries. An entry that fails its checks
//! when opened (missing `meta.json`, a size or CRC-32C that does not match) is removed and
//! rebuilt, with a warning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::token_store::{FORMAT, TokenStore};
use crate::{Error, Result};

/// Where cached stores live under a cache directory.
pub fn tokens_dir(cache: &Path) -> PathBuf {
    cache.join("tokens")
}

/// The key of a store: SHA-256 (hex) of `parts` as JSON, with the store format.
pub fn key<T: Serialize>(parts: &T) -> String {
    let mut h = Sha256::new();
    h.update(FORMAT.to_le_bytes());
    h.update(serde_json::to_vec(parts).unwrap_or_default());
    format!("{:x}", h.finalize())
}

/// How a store was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mapped from the cache.
    Cached,
    /// Read and tokenized now (and cached).
    Built,
}

static BUILDS: AtomicU64 = AtomicU64::new(0);

/// The store under `key`, from the cache, or built by `build` into a fresh directory (which
/// it must create) and then cached.
pub fn open_or_build(
    cache: &Path,
    key: &str,
    shown: &str,
    build: impl FnOnce(&Path) -> Result<()>,
) -> Result<(TokenStore, Origin)> {
    let root = tokens_dir(cache);
    let dir = root.join(key);
    if dir.exists() {
        match TokenStore::open(&dir) {
            Ok(store) => {
                info!(data = shown, entry = %dir.display(), examples = store.len(), "token store reused from the cache");
                return Ok((store, Origin::Cached));
            }
            Err(e) => {
                warn!(data = shown, entry = %dir.display(), error = %e, "cached token store is unusable; rebuilding it");
                std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
            }
        }
    }
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let tmp = root.join(format!(".{key}.tmp-{}-{n}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(Error::io(&tmp))?;
    }
    if let Err(e) = build(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another process built the same entry meanwhile: use theirs.
        Err(_) if dir.join(super::token_store::META_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io(&dir)(e));
        }
    }
    let store = TokenStore::open(&dir)?;
    info!(data = shown, entry = %dir.display(), examples = store.len(), bytes = store.bytes(), "token store built and cached");
    Ok((store, Origin::Built))
}
