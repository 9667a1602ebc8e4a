//! Google Cloud Storage backend (placeholder until the GCS client lands).

use std::path::Path;

use crate::{Error, Result};

pub struct Gcs;

impl Gcs {
    pub async fn from_env() -> Result<Self> {
        Err(Error::Remote {
            uri: "gs://".into(),
            message: "gs:// storage is not available in this build".into(),
        })
    }
    pub async fn read(&self, uri: &str) -> Result<Vec<u8>> {
        Err(Error::NotFound { uri: uri.into() })
    }
    pub async fn write(&self, _uri: &str, _data: Vec<u8>) -> Result<()> {
        Ok(())
    }
    pub async fn upload(&self, _file: &Path, _uri: &str) -> Result<()> {
        Ok(())
    }
    pub async fn download(&self, uri: &str, _file: &Path) -> Result<()> {
        Err(Error::NotFound { uri: uri.into() })
    }
    pub async fn list(&self, _prefix: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    pub async fn delete(&self, _uri: &str) -> Result<()> {
        Ok(())
    }
}
