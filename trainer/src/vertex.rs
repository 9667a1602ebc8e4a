//! What Vertex AI tells a training container through its environment: where the final model
//! goes (`AIP_MODEL_DIR`), and, in a hyperparameter-tuning trial, the trial's id, its own
//! checkpoint directory and where to report the tuned metric (`cloudml-hypertune`'s
//! JSON-lines file).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_storage::join;

use crate::{Error, Result};
use mtl_crds::contract::torchrun::{AIP_CHECKPOINT_DIR, AIP_MODEL_DIR};

/// cloudml-hypertune's defaults (`hypertune/hypertune.py`).
pub const DEFAULT_METRIC_TAG: &str = "training/hptuning/metric";
pub const DEFAULT_METRIC_FILE: &str = "/tmp/hypertune/output.metrics";
/// cloudml-hypertune rewrites its file with the newest 100 reports each time.
const KEPT_REPORTS: usize = 100;

/// The Vertex AI variables the trainer reads (all unset outside Vertex AI).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VertexEnv {
    /// `AIP_MODEL_DIR`: where Vertex (and Model Registry) expects the final model.
    pub model_dir: Option<String>,
    /// `AIP_CHECKPOINT_DIR`: the job's (or trial's) checkpoint directory.
    pub checkpoint_dir: Option<String>,
    /// `CLOUD_ML_TRIAL_ID`: set in a hyperparameter-tuning trial.
    pub trial_id: Option<String>,
    /// `CLOUD_ML_HP_METRIC_TAG`: the metric the study optimises.
    pub metric_tag: Option<String>,
    /// `CLOUD_ML_HP_METRIC_FILE`: where hypertune reports go.
    pub metric_file: Option<String>,
}

impl VertexEnv {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        Self {
            model_dir: get(AIP_MODEL_DIR),
            checkpoint_dir: get(AIP_CHECKPOINT_DIR),
            trial_id: get("CLOUD_ML_TRIAL_ID"),
            metric_tag: get("CLOUD_ML_HP_METRIC_TAG"),
            metric_file: get("CLOUD_ML_HP_METRIC_FILE"),
        }
    }

    pub fn from_process_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// In a tuning trial, the trial's own checkpoint location (`AIP_CHECKPOINT_DIR`, which
    /// Vertex scopes to the trial, else `<uri>/trial-<id>`), so trials sharing one job spec
    /// never resume from each other's checkpoints.
    pub fn trial_checkpoints(&self, uri: &str) -> Option<String> {
        let trial = self.trial_id.as_ref()?;
        Some(
            self.checkpoint_dir
                .clone()
                .unwrap_or_else(|| join(uri, &format!("trial-{trial}"))),
        )
    }

    /// Where the final model goes, if anywhere: `AIP_MODEL_DIR` on Vertex AI (always), else
    /// `<uri>/model` when `checkpoints.exportOnFinish` is set.
    pub fn export_dir(&self, spec: &MultiTaskTrainingJobSpec) -> Option<String> {
        self.model_dir.clone().or_else(|| {
            spec.checkpoints
                .export_on_finish
                .then(|| join(&spec.checkpoints.uri, mtl_crds::contract::MODEL_DIR))
        })
    }

    /// The hypertune reporter of a tuning trial (`CLOUD_ML_HP_METRIC_TAG` or
    /// `CLOUD_ML_TRIAL_ID` set), or `None`.
    pub fn hypertune(&self, spec: &MultiTaskTrainingJobSpec) -> Option<Hypertune> {
        if self.metric_tag.is_none() && self.trial_id.is_none() {
            return None;
        }
        let tag = self
            .metric_tag
            .clone()
            .unwrap_or_else(|| DEFAULT_METRIC_TAG.into());
        // The study's tag when it names one of the job's metrics, else the metric that ranks
        // checkpoints, else the mean.
        let metric = if spec.reported_metrics().contains(&tag) {
            tag.clone()
        } else {
            spec.checkpoints
                .best
                .as_ref()
                .map_or_else(|| "mean".to_string(), |b| b.metric.clone())
        };
        Some(Hypertune {
            path: PathBuf::from(
                self.metric_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_METRIC_FILE.into()),
            ),
            tag,
            metric,
            trial: self.trial_id.clone().unwrap_or_else(|| "0".into()),
            reports: VecDeque::new(),
        })
    }
}

/// Reports each evaluation's tuned metric as `cloudml-hypertune` does: one JSON object per
/// line, keys sorted, every value a string but `timestamp`, the whole file rewritten with the
/// newest 100 reports.
#[derive(Debug)]
pub struct Hypertune {
    pub path: PathBuf,
    /// The key the value is reported under.
    pub tag: String,
    /// The evaluation metric reported.
    pub metric: String,
    pub trial: String,
    reports: VecDeque<String>,
}

impl Hypertune {
    /// Appends a report of `metrics[self.metric]` at `step`. `Ok(false)` when the evaluation
    /// did not report that metric.
    pub fn report(
        &mut self,
        metrics: &BTreeMap<String, f64>,
        step: u64,
        checkpoint_path: &str,
        timestamp: f64,
    ) -> Result<bool> {
        let Some(&value) = metrics.get(&self.metric) else {
            return Ok(false);
        };
        let mut line = BTreeMap::new();
        line.insert("checkpoint_path", serde_json::json!(checkpoint_path));
        line.insert("global_step", serde_json::json!(step.to_string()));
        line.insert("timestamp", serde_json::json!(timestamp));
        line.insert("trial", serde_json::json!(self.trial));
        line.insert(self.tag.as_str(), serde_json::json!(python_float(value)));
        let text = serde_json::to_string(&line)
            .map_err(|e| Error::file(self.path.display(), e.to_string()))?;
        if self.reports.len() == KEPT_REPORTS {
            self.reports.pop_front();
        }
        self.reports.push_back(text);
        let mut body = String::new();
        for r in &self.reports {
            body.push_str(r);
            body.push('\n');
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        }
        write_whole(&self.path, &body)?;
        Ok(true)
    }
}

/// Python's `str(float)`, which hypertune reports values as: a finite integral value keeps
/// its `.0`.
fn python_float(v: f64) -> String {
    let s = v.to_string();
    if v.is_finite() && !s.contains(['.', 'e', 'E']) {
        format!("{s}.0")
    } else if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        s
    }
}

/// Replaces `path` in one rename, so the reader never sees half a file.
fn write_whole(path: &Path, body: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> VertexEnv {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VertexEnv::from_vars(|k| vars.get(k).cloned())
    }

    fn spec() -> MultiTaskTrainingJobSpec {
        let text = r#"
model: {pretrained: m}
tasks:
  - {name: rte, type: classification, train: t.tsv, validation: d.tsv, format: glueTsv,
     textFields: [a, b], labelField: label}
checkpoints: {uri: "gs://b/run", best: {metric: rte/f1}}
"#;
        mtl_crds::parse_job("job.yaml", text).unwrap()
    }

    #[test]
    fn trials_get_their_own_checkpoints_and_vertex_always_exports() {
        assert_eq!(VertexEnv::default().trial_checkpoints("gs://b/run"), None);
        assert_eq!(VertexEnv::default().export_dir(&spec()), None);
        let trial = env(&[("CLOUD_ML_TRIAL_ID", "7")]);
        assert_eq!(
            trial.trial_checkpoints("gs://b/run").as_deref(),
            Some("gs://b/run/trial-7")
        );
        let scoped = env(&[
            ("CLOUD_ML_TRIAL_ID", "7"),
            ("AIP_CHECKPOINT_DIR", "gs://b/out/7/checkpoints/"),
            ("AIP_MODEL_DIR", "gs://b/out/7/model/"),
        ]);
        assert_eq!(
            scoped.trial_checkpoints("gs://b/run").as_deref(),
            Some("gs://b/out/7/checkpoints/")
        );
        assert_eq!(
            scoped.export_dir(&spec()).as_deref(),
            Some("gs://b/out/7/model/")
        );
        let mut s = spec();
        s.checkpoints.export_on_finish = true;
        assert_eq!(
            VertexEnv::default().export_dir(&s).as_deref(),
            Some("gs://b/run/model")
        );
    }

    #[test]
    fn hypertune_reports_the_studys_metric_or_the_best_one() {
        assert!(VertexEnv::default().hypertune(&spec()).is_none());
        let h = env(&[("CLOUD_ML_HP_METRIC_TAG", "rte/accuracy")])
            .hypertune(&spec())
            .unwrap();
        assert_eq!(
            (h.tag.as_str(), h.metric.as_str()),
            ("rte/accuracy", "rte/accuracy")
        );
        assert_eq!(h.path, PathBuf::from(DEFAULT_METRIC_FILE));
        let h = env(&[
            ("CLOUD_ML_HP_METRIC_TAG", "score"),
            ("CLOUD_ML_TRIAL_ID", "3"),
        ])
        .hypertune(&spec())
        .unwrap();
        assert_eq!(
            (h.tag.as_str(), h.metric.as_str(), h.trial.as_str()),
            ("score", "rte/f1", "3")
        );
        let h = env(&[("CLOUD_ML_TRIAL_ID", "3")])
            .hypertune(&spec())
            .unwrap();
        assert_eq!(h.tag, DEFAULT_METRIC_TAG);
    }

    #[test]
    fn python_floats() {
        assert_eq!(python_float(1.0), "1.0");
        assert_eq!(python_float(0.25), "0.25");
        assert_eq!(python_float(-3.0), "-3.0");
        assert_eq!(python_float(f64::NAN), "nan");
    }

    #[test]
    fn hypertune_keeps_the_newest_hundred_reports() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hp/output.metrics");
        let mut h = env(&[
            ("CLOUD_ML_HP_METRIC_TAG", "rte/f1"),
            ("CLOUD_ML_HP_METRIC_FILE", file.to_str().unwrap()),
        ])
        .hypertune(&spec())
        .unwrap();
        assert!(!h.report(&BTreeMap::new(), 1, "", 0.0).unwrap());
        for step in 1..=105 {
            let m = BTreeMap::from([("rte/f1".to_string(), step as f64 / 200.0)]);
            assert!(h.report(&m, step, "", 1.5).unwrap());
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[0]["global_step"], "6");
        assert_eq!(lines[99]["rte/f1"], "0.525");
    }
}
