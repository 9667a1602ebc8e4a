//! The checkpoint manifest, `<uri>/checkpoints.json`.
//!
//! A checkpoint exists only once the manifest names it; the manifest is rewritten only after
//! every file of the new checkpoint is stored. Readers (resume, the operator) read only the
//! manifest, never a listing, so a half-written checkpoint is never seen.

use mtl_crds::{BestCheckpoint, BestCheckpointSpec, CheckpointRef, RunEnd};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Storage, join};

pub const MANIFEST_NAME: &str = "checkpoints.json";

/// Committed checkpoints, oldest first, and what the run left besides them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Manifest {
    pub checkpoints: Vec<CheckpointRef>,
    /// The best checkpoint by `spec.checkpoints.best` (always one of `checkpoints`: `keep`
    /// never deletes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestCheckpoint>,
    /// How the run ended, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RunEnd>,
    /// Where the final model was exported (one HF model directory per task under it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
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
        match storage.read_if_exists(&uri).await? {
            Some(bytes) => Self::parse(&uri, &bytes).map(Some),
            None => Ok(None),
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

    /// The checkpoint at `step`, if the manifest names it.
    pub fn at(&self, step: u64) -> Option<&CheckpointRef> {
        self.checkpoints.iter().find(|c| c.step == step)
    }

    /// Records `entry` as the newest checkpoint, writes the manifest, then deletes the
    /// checkpoints beyond `keep` that the manifest no longer names. `rank`: the rule the
    /// entry competes for best checkpoint by (given only when its metrics were measured at
    /// its own step); the best one is kept beyond `keep`.
    pub async fn commit(
        &mut self,
        storage: &Storage,
        base: &str,
        entry: CheckpointRef,
        keep: Option<u32>,
        rank: Option<&BestCheckpointSpec>,
    ) -> Result<()> {
        self.checkpoints.retain(|c| c.step < entry.step);
        if self.best.as_ref().is_some_and(|b| b.step >= entry.step) {
            self.best = None;
        }
        if let Some(rule) = rank
            && let Some(&value) = entry.metrics.get(&rule.metric)
            && self
                .best
                .as_ref()
                .is_none_or(|b| rule.mode().better(value, b.value, 0.0))
        {
            self.best = Some(BestCheckpoint {
                step: entry.step,
                uri: entry.uri.clone(),
                metric: rule.metric.clone(),
                value,
            });
        }
        self.checkpoints.push(entry);
        let mut dropped = Vec::new();
        if let Some(keep) = keep.map(|k| k.max(1) as usize) {
            let best = self.best.as_ref().map(|b| b.step);
            // The newest `keep`, and the best wherever it is.
            let newest = self.checkpoints.len().saturating_sub(keep);
            let (kept, old): (Vec<_>, Vec<_>) = std::mem::take(&mut self.checkpoints)
                .into_iter()
                .enumerate()
                .partition(|(i, c)| *i >= newest || Some(c.step) == best);
            self.checkpoints = kept.into_iter().map(|(_, c)| c).collect();
            dropped = old.into_iter().map(|(_, c)| c).collect();
        }
        self.store(storage, base).await?;
        for old in dropped {
            if let Err(e) = storage.delete_prefix(&old.uri).await {
                tracing::warn!(uri = %old.uri, error = %e, "could not delete old checkpoint");
            }
        }
        Ok(())
    }

    /// Writes the manifest as it is (one whole-object write).
    pub async fn store(&self, storage: &Storage, base: &str) -> Result<()> {
        storage.write_json(&join(base, MANIFEST_NAME), self).await
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
            m.commit(&s, &base, entry(&base, step), Some(2), None)
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

    /// A metric comes back from the manifest to the last digit, as `trainer_state.json` has
    /// it (serde_json's default float parsing is off by one ulp on about one value in ten).
    #[tokio::test]
    async fn metrics_round_trip_to_the_last_digit() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let s = Storage::new();
        let mut e = entry(&base, 10);
        let value: f64 = "0.9856906946328695".parse().unwrap();
        e.metrics.insert("stsb/pearson".into(), value);
        s.write(&join(&e.uri, "model.safetensors"), vec![1])
            .await
            .unwrap();
        let mut m = Manifest::default();
        m.commit(&s, &base, e, None, None).await.unwrap();
        let loaded = Manifest::load(&s, &base).await.unwrap().unwrap();
        assert_eq!(
            loaded.latest().unwrap().metrics["stsb/pearson"].to_bits(),
            value.to_bits()
        );
    }

    /// Commits checkpoints with the given `mean`s under `keep: 1`, ranked by `mode`.
    async fn ranked(
        means: &[(u64, f64)],
        mode: mtl_crds::MetricMode,
    ) -> (Manifest, Manifest, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let s = Storage::new();
        let rule = BestCheckpointSpec {
            metric: "mean".into(),
            mode: Some(mode),
        };
        let mut m = Manifest::default();
        for &(step, mean) in means {
            s.write(
                &join(&checkpoint_uri(&base, step), "model.safetensors"),
                vec![1],
            )
            .await
            .unwrap();
            let mut e = entry(&base, step);
            e.metrics.insert("mean".into(), mean);
            m.commit(&s, &base, e, Some(1), Some(&rule)).await.unwrap();
        }
        let loaded = Manifest::load(&s, &base).await.unwrap().unwrap();
        (m, loaded, dir)
    }

    #[tokio::test]
    async fn keep_never_deletes_the_best_checkpoint() {
        let (m, loaded, dir) = ranked(
            &[(10, 0.5), (20, 0.9), (30, 0.7), (40, 0.9)],
            mtl_crds::MetricMode::Max,
        )
        .await;
        assert_eq!(m, loaded);
        let steps: Vec<_> = loaded.checkpoints.iter().map(|c| c.step).collect();
        assert_eq!(
            steps,
            [20, 40],
            "the best (20: a tie later is no better) and the newest"
        );
        let best = loaded.best.unwrap();
        assert_eq!(
            (best.step, best.value, best.metric.as_str()),
            (20, 0.9, "mean")
        );
        let base = dir.path().display().to_string();
        let s = Storage::new();
        assert!(s.list(&checkpoint_uri(&base, 30)).await.unwrap().is_empty());
        assert!(s.list(&checkpoint_uri(&base, 10)).await.unwrap().is_empty());
        assert_eq!(s.list(&best.uri).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn min_mode_ranks_the_smallest_first() {
        let (_, loaded, _dir) = ranked(
            &[(10, 0.5), (20, 0.3), (30, 0.4)],
            mtl_crds::MetricMode::Min,
        )
        .await;
        assert_eq!(loaded.best.unwrap().step, 20);
        let steps: Vec<_> = loaded.checkpoints.iter().map(|c| c.step).collect();
        assert_eq!(steps, [20, 30]);
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
