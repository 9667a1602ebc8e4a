//! The live progress object, `<uri>/progress.json`: where a run stands, overwritten as a whole
//! by the trainer (rank 0) every `training.progressEverySeconds`, read by the operator into
//! `.status.progress`. Not part of the checkpoint protocol: a lost or stale write costs
//! nothing but freshness, and a resume never reads it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, Storage, join};

pub const PROGRESS_NAME: &str = "progress.json";

/// One snapshot of a running (or just finished) attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Optimizer steps done.
    pub step: u64,
    pub total_steps: u64,
    pub epoch: f64,
    /// Mean training loss over the latest logging window (absent before the first one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// The same per task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_losses: BTreeMap<String, f64>,
    pub learning_rate: f64,
    /// Over the latest logging window.
    pub examples_per_second: f64,
    pub tokens_per_second: f64,
    /// Seconds left at this attempt's pace so far (absent before its first step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// The latest evaluation's metrics (`stsb/pearson`, `mean`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub eval: BTreeMap<String, f64>,
    /// RFC 3339 time of this write, by the trainer's clock.
    pub updated_at: String,
    /// The operator's attempt number (`MTL_ATTEMPT`), when it started the trainer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl Progress {
    /// Parses progress bytes; `uri` is only for the error message.
    pub fn parse(uri: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            uri: uri.into(),
            message: format!("progress object is not valid: {e}"),
        })
    }

    /// Reads the progress object under `base`; `Ok(None)` when there is none yet.
    pub async fn load(storage: &Storage, base: &str) -> Result<Option<Self>> {
        let uri = join(base, PROGRESS_NAME);
        match storage.read_if_exists(&uri).await? {
            Some(bytes) => Self::parse(&uri, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Overwrites the progress object under `base` with one whole-object write (a reader sees
    /// the old object or the new one, never a mix).
    pub async fn store(&self, storage: &Storage, base: &str) -> Result<()> {
        storage.write_json(&join(base, PROGRESS_NAME), self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_reports_missing_and_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let storage = Storage::new();
        assert_eq!(Progress::load(&storage, &base).await.unwrap(), None);
        let p = Progress {
            step: 40,
            total_steps: 100,
            epoch: 0.4,
            loss: Some(0.5),
            task_losses: BTreeMap::from([("rte".into(), 0.6)]),
            learning_rate: 1e-5,
            examples_per_second: 12.0,
            tokens_per_second: 900.0,
            eta_seconds: Some(30.0),
            eval: BTreeMap::from([("mean".into(), 0.7)]),
            updated_at: "2026-01-01T00:00:00Z".into(),
            attempt: Some(2),
        };
        p.store(&storage, &base).await.unwrap();
        assert_eq!(Progress::load(&storage, &base).await.unwrap(), Some(p));
        std::fs::write(dir.path().join(PROGRESS_NAME), b"{\"step\": ").unwrap();
        let err = Progress::load(&storage, &base).await.unwrap_err();
        assert!(err.to_string().contains("progress.json"), "{err}");
    }
}
