//! The checkpoint manifest, `<uri>/checkpoints.json`.
//!
//! A checkpoint exists only once the manifest names it; the manifest is rewritten only after
//! every file of the new checkpoint is stored. Readers (resume, the operator) read only the
//! manifest, never a listing, so a half-written checkpoint is never seen.

use mtl_crds::CheckpointRef;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Storage, join};

pub const MANIFEST_NAME: &str = "checkpoints.json";

/// Committed checkpoints, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    pub checkpoints: Vec<CheckpointRef>,
}

/// URI of the checkpoint directory for `step` under `base`.
pub fn checkpoint_uri(base: &str, step: u64) -> String {
    join(base, &format!("checkpoint-{step}"))
}

impl Manifest {
    /// Parses manifest bytes; `uri` is only for the error message.
    pub fn parse(uri: &str, bytes: &[u8]) -> Result<Self> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::Corrupt {
                uri: uri.into(),
                message: "checkpoint manifest is empty".into(),
            });
        }
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            uri: uri.into(),
            message: format!("checkpoint manifest is not valid: {e}"),
        })
    }

    /// Reads the manifest under `base`. `Ok(None)` when there is none yet.
    pub async fn load(storage: &Storage, base: &str) -> Result<Option<Self>> {
        let uri = join(base, MANIFEST_NAME);
        match storage.read(&uri).await {
            Ok(bytes) => Self::parse(&uri, &bytes).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads the manifest under `base`, which must exist (resuming from a given checkpoint
    /// directory): a missing one is [`Error::NotFound`] naming the manifest's URI.
    pub async fn load_required(storage: &Storage, base: &str) -> Result<Self> {
        let uri = join(base, MANIFEST_NAME);
        Self::load(storage, base)
            .await?
            .ok_or(Error::NotFound { uri })
    }

    pub fn latest(&self) -> Option<&CheckpointRef> {
        self.checkpoints.last()
    }

    /// Records `entry` as the newest checkpoint, writes the manifest, then deletes the
    /// checkpoints beyond `keep` that the manifest no longer names.
    pub async fn commit(
        &mut self,
        storage: &Storage,
        base: &str,
        entry: CheckpointRef,
        keep: Option<u32>,
    ) -> Result<()> {
        self.checkpoints.retain(|c| c.step < entry.step);
        self.checkpoints.push(entry);
        let mut dropped = Vec::new();
        if let Some(keep) = keep.map(|k| k.max(1) as usize)
            && self.checkpoints.len() > keep
        {
            dropped = self
                .checkpoints
                .drain(..self.checkpoints.len() - keep)
                .collect();
        }
        let uri = join(base, MANIFEST_NAME);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Corrupt {
            uri: uri.clone(),
            message: e.to_string(),
        })?;
        storage.write(&uri, bytes).await?;
        for old in dropped {
            if let Err(e) = storage.delete_prefix(&old.uri).await {
                tracing::warn!(uri = %old.uri, error = %e, "could not delete old checkpoint");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn entry(base: &str, step: u64) -> CheckpointRef {
        CheckpointRef {
            step,
            uri: checkpoint_uri(base, step),
            time: "2026-01-01T00:00:00Z".into(),
            metrics: BTreeMap::from([("mean".to_string(), step as f64)]),
        }
    }

    #[tokio::test]
    async fn commit_keeps_newest_and_deletes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let s = Storage::new();
        assert_eq!(Manifest::load(&s, &base).await.unwrap(), None);
        let mut m = Manifest::default();
        for step in [10, 20, 30] {
            s.write(
                &join(&checkpoint_uri(&base, step), "model.safetensors"),
                vec![1],
            )
            .await
            .unwrap();
            m.commit(&s, &base, entry(&base, step), Some(2))
                .await
                .unwrap();
        }
        let loaded = Manifest::load(&s, &base).await.unwrap().unwrap();
        let steps: Vec<_> = loaded.checkpoints.iter().map(|c| c.step).collect();
        assert_eq!(steps, [20, 30]);
        assert_eq!(loaded.latest().unwrap().step, 30);
        assert!(s.list(&checkpoint_uri(&base, 10)).await.unwrap().is_empty());
        assert_eq!(s.list(&checkpoint_uri(&base, 20)).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn empty_or_corrupt_manifest_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let s = Storage::new();
        s.write(&join(&base, MANIFEST_NAME), b"  \n".to_vec())
            .await
            .unwrap();
        let err = Manifest::load(&s, &base).await.unwrap_err().to_string();
        assert!(
            err.contains("checkpoints.json") && err.contains("empty"),
            "{err}"
        );
        s.write(&join(&base, MANIFEST_NAME), b"{\"checkpoints\": [".to_vec())
            .await
            .unwrap();
        let err = Manifest::load(&s, &base).await.unwrap_err().to_string();
        assert!(err.contains("not valid"), "{err}");
    }
}
