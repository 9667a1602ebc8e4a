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
//!
//! Several processes share a cache (a node's local ranks; two jobs on one disk). Each build
//! stages under a name of its own (`.<key>.tmp-<pid>-<n>`); one that was killed leaves it
//! behind, and the next build removes those whose process no longer runs. An unusable entry
//! is first moved aside under a name of its own and checked again there: if another process
//! rebuilt it meanwhile, the whole entry is put back rather than deleted.

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
                discard_unusable(&root, &dir)?;
                if let Ok(store) = TokenStore::open(&dir) {
                    return Ok((store, Origin::Cached));
                }
            }
        }
    }
    std::fs::create_dir_all(&root).map_err(Error::io(&root))?;
    remove_dead_staging(&root);
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

/// Removes the unusable entry `dir`: moved aside under a name of its own first, then checked
/// there. An entry that opens there after all was rebuilt by another process meanwhile and is
/// put back (unless yet another has taken its place).
fn discard_unusable(root: &Path, dir: &Path) -> Result<()> {
    let n = BUILDS.fetch_add(1, Ordering::Relaxed);
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let aside = root.join(format!(".{name}.unusable-{}-{n}", std::process::id()));
    match std::fs::rename(dir, &aside) {
        Ok(()) => {}
        // Someone else moved it first.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir)(e)),
    }
    if TokenStore::open(&aside).is_ok() && std::fs::rename(&aside, dir).is_ok() {
        return Ok(());
    }
    std::fs::remove_dir_all(&aside).map_err(Error::io(&aside))
}

/// Removes the staging and set-aside directories (`.<key>.tmp-<pid>-<n>`,
/// `.<key>.unusable-<pid>-<n>`) of processes that no longer run (Linux's `/proc` says which
/// do; elsewhere nothing is removed). A failure to remove one is no error.
fn remove_dead_staging(root: &Path) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.starts_with('.') {
            continue;
        }
        let pid = [".tmp-", ".unusable-"].iter().find_map(|mark| {
            let (_, rest) = name.rsplit_once(mark)?;
            rest.split('-').next()?.parse::<u32>().ok()
        });
        if let Some(pid) = pid
            && !proc.join(pid.to_string()).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no process has now: a child's, after it exited.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn tiny_store(dir: &Path) {
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let mut w = crate::data::token_store::TokenStoreWriter::create(dir, 2, false, "t").unwrap();
        let (ids, types) = ([1u32, 2, 3], [0u32, 0, 0]);
        w.push(std::iter::once((&ids[..], &types[..])), Some(1.0))
            .unwrap();
        w.finish().unwrap();
    }

    /// A build killed part-way leaves its temporary directory; the next build in the cache
    /// removes those of processes that no longer run, and keeps a live process's.
    #[test]
    fn temporary_directories_of_dead_builds_are_removed() {
        let cache = tempfile::tempdir().unwrap();
        let root = tokens_dir(cache.path());
        let dead = root.join(format!(".k1.tmp-{}-0", dead_pid()));
        let alive = root.join(format!(".k2.tmp-{}-7", std::process::id()));
        for d in [&dead, &alive] {
            std::fs::create_dir_all(d.join("part")).unwrap();
        }
        open_or_build(cache.path(), "k3", "t", |dir| {
            tiny_store(dir);
            Ok(())
        })
        .unwrap();
        assert!(
            !dead.exists(),
            "a dead build's temporary directory is removed"
        );
        assert!(alive.exists(), "a running build's is kept");
    }

    /// Two processes may both find an entry unusable; the one that rebuilt it first must not
    /// lose its rebuild to the other's removal. An entry taken aside as unusable that turns
    /// out to be whole (someone rebuilt it meanwhile) is put back, not deleted.
    #[test]
    fn a_whole_entry_taken_aside_as_unusable_is_put_back() {
        let cache = tempfile::tempdir().unwrap();
        let dir = tokens_dir(cache.path()).join("k");
        tiny_store(&dir);
        discard_unusable(&tokens_dir(cache.path()), &dir).unwrap();
        assert!(TokenStore::open(&dir).is_ok(), "the rebuilt entry survives");
        // A truly damaged one goes, and leaves nothing beside it.
        std::fs::remove_file(dir.join(super::super::token_store::META_FILE)).unwrap();
        discard_unusable(&tokens_dir(cache.path()), &dir).unwrap();
        assert!(!dir.exists());
        let left: Vec<_> = std::fs::read_dir(tokens_dir(cache.path()))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
