//! TensorBoard summaries of a run, written by rank 0 (or the only process) as one event file
//! per process, started at the first logged step, under `<checkpoints.uri>/logs/`, or under `AIP_TENSORBOARD_LOG_DIR` when
//! Vertex AI sets it.
//!
//! GCS objects cannot be appended to, so the file is kept in memory and written as a whole
//! object (a snapshot that replaces the previous one): at most every [`FLUSH_EVERY`], at
//! every checkpoint and at the end of the run. A restarted attempt starts a new file in
//! the same directory; TensorBoard reads them all, in name (time) order. Checkpoint pruning
//! (`keep`) never touches `logs/`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_storage::join;
use mtl_tfevents::EventFile;

use super::interval::Rates;
use crate::Result;
use crate::io::Storage;
use crate::state::LogEntry;
use mtl_crds::contract::torchrun::AIP_TENSORBOARD_LOG_DIR;

/// The longest the stored file lags behind the run (besides checkpoints and the end).
pub const FLUSH_EVERY: Duration = Duration::from_secs(30);

/// Where the event files of a job go.
pub fn log_dir(spec: &MultiTaskTrainingJobSpec) -> String {
    match std::env::var(AIP_TENSORBOARD_LOG_DIR) {
        Ok(dir) if !dir.is_empty() => dir.trim_end_matches('/').to_string(),
        _ => join(&spec.checkpoints.uri, mtl_crds::contract::LOGS_DIR),
    }
}

pub struct Summaries {
    file: EventFile,
    uri: String,
    dirty: bool,
    flushed: Instant,
}

impl Summaries {
    /// A new event file for this process, opened with the job's hyperparameters as text.
    pub fn new(spec: &MultiTaskTrainingJobSpec, step: u64) -> Self {
        let host = hostname();
        let mut file = EventFile::new(&host, std::process::id(), SystemTime::now());
        file.text("hyperparameters", step as i64, &hyperparameters(spec));
        let uri = join(&log_dir(spec), file.name());
        Self {
            file,
            uri,
            dirty: true,
            flushed: Instant::now(),
        }
    }

    /// The stored event file.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// A training log entry: `train/loss`, `train/loss/<task>`, `learning_rate`,
    /// `grad_norm`, `examples_per_second`, `tokens_per_second`.
    pub fn train(&mut self, e: &LogEntry, rates: &Rates) {
        let step = e.step as i64;
        self.file.scalar("train/loss", step, e.loss);
        for (task, loss) in &e.task_losses {
            self.file.scalar(&format!("train/loss/{task}"), step, *loss);
        }
        self.file.scalar("learning_rate", step, e.learning_rate);
        if let Some(g) = e.grad_norm {
            self.file.scalar("grad_norm", step, g);
        }
        self.file
            .scalar("examples_per_second", step, rates.examples_per_s);
        self.file
            .scalar("tokens_per_second", step, rates.tokens_per_s);
        self.dirty = true;
    }

    /// An evaluation: `eval/<task>/<metric>` and `eval/mean`.
    pub fn eval(&mut self, step: u64, metrics: &BTreeMap<String, f64>) {
        for (name, value) in metrics {
            self.file
                .scalar(&format!("eval/{name}"), step as i64, *value);
        }
        self.dirty = true;
    }

    /// Writes the file when it changed and `FLUSH_EVERY` passed since the last write.
    pub fn flush_if_due(&mut self, store: &Storage) -> Result<()> {
        if self.flushed.elapsed() >= FLUSH_EVERY {
            self.flush(store)?;
        }
        Ok(())
    }

    /// Writes the whole file as one object when anything changed since the last write.
    pub fn flush(&mut self, store: &Storage) -> Result<()> {
        if self.dirty {
            store.block_on(store.storage.write(&self.uri, self.file.bytes().to_vec()))?;
            self.dirty = false;
        }
        self.flushed = Instant::now();
        Ok(())
    }
}

/// The job's tasks and training settings as a Markdown table (TensorBoard's text plugin).
fn hyperparameters(spec: &MultiTaskTrainingJobSpec) -> String {
    let tr = &spec.training;
    let mut rows: Vec<(String, String)> = vec![
        ("model".into(), spec.model.pretrained.clone()),
        ("maxLength".into(), spec.model.max_length.to_string()),
        (
            "tasks".into(),
            spec.tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ),
    ];
    let value = serde_json::to_value(&spec.sampling).unwrap_or_default();
    rows.push(("sampling".into(), value.to_string()));
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(tr) {
        for (k, v) in fields {
            rows.push((format!("training.{k}"), v.to_string()));
        }
    }
    let mut md = String::from("| hyperparameter | value |\n|---|---|\n");
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {} |\n", v.replace('|', "\\|")));
    }
    md
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
}
