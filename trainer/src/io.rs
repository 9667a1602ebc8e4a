//! Synchronous storage for the (synchronous) trainer: [`Storage`], a facade over the async
//! storage layer (local paths and gs:// behind one interface), and JSON files read and
//! written with errors that name the file.

use std::path::{Path, PathBuf};

use mtl_storage::Manifest;
use serde::Serialize;

use crate::{Error, Result};

/// Sync facade over the async storage layer, for the (synchronous) training loop.
pub struct Storage {
    rt: tokio::runtime::Runtime,
    pub storage: mtl_storage::Storage,
}

impl Storage {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("tokio runtime"))?;
        Ok(Self {
            rt,
            storage: mtl_storage::Storage::new(),
        })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A local path for `uri`, downloading it into `cache` once if it is remote.
    pub fn fetch(&self, uri: &str, cache: &Path) -> Result<PathBuf> {
        Ok(self.block_on(self.storage.fetch(uri, cache))?)
    }

    /// Fetches the files `names` that exist under `dir_uri` (none is required).
    pub fn fetch_if_present(&self, dir_uri: &str, names: &[&str], cache: &Path) -> Result<()> {
        for name in names {
            match self.block_on(self.storage.fetch(&mtl_storage::join(dir_uri, name), cache)) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn manifest(&self, base: &str) -> Result<Option<Manifest>> {
        Ok(self.block_on(Manifest::load(&self.storage, base))?)
    }
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path.display(), e.to_string()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path.display(), e.to_string()))?;
    std::fs::write(path, text).map_err(Error::io(path))
}
