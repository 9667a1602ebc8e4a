//! Inference from a committed checkpoint: `eval` (metrics on the validation sets) and
//! `predict` (JSONL in, one prediction per line out).

use std::path::{Path, PathBuf};

use mtl_crds::{CheckpointRef, DataFormat, Precision, TaskSpec, TaskType};
use serde::Serialize;
use tch::{Device, Kind};

use crate::checkpoint::{self, Store, TrainerState};
use crate::config::ModelConfig;
use crate::data::{self, TextEncoder};
use crate::model::MultiTaskModel;
use crate::train::{ModelAssets, build_model, infer};
use crate::{Error, Result};

/// A checkpoint loaded for inference.
pub struct Loaded {
    pub model: MultiTaskModel,
    pub tasks: Vec<TaskSpec>,
    pub encoder: TextEncoder,
    pub dir: PathBuf,
    pub entry: CheckpointRef,
}

impl Loaded {
    pub fn load(store: &Store, entry: CheckpointRef, cache: &Path, device: Device) -> Result<Self> {
        let dir = checkpoint::localize(store, &entry, cache)?;
        let tasks = checkpoint::read_tasks(&dir)?;
        let state: TrainerState = checkpoint::read_json(&dir.join(checkpoint::STATE_FILE))?;
        let config = ModelConfig::load(&dir.join(checkpoint::CONFIG_FILE))?;
        let max_length = state.max_length.unwrap_or(128) as usize;
        let encoder = ModelAssets { dir: dir.clone() }.encoder(&config, max_length)?;
        let mut model = build_model(config, &tasks, device, state.seed);
        model.load_checkpoint(&dir.join(checkpoint::MODEL_FILE))?;
        Ok(Self {
            model,
            tasks,
            encoder,
            dir,
            entry,
        })
    }

    pub fn task(&self, name: &str) -> Result<(usize, &TaskSpec)> {
        self.tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--task {name:?}: the checkpoint has tasks {:?}",
                    self.tasks.iter().map(|t| &t.name).collect::<Vec<_>>()
                ))
            })
    }
}

/// One output line of `predict`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    /// Score (regression), class name or index (classification), choice label or index
    /// (multiple choice).
    pub prediction: serde_json::Value,
    /// Raw outputs: the score, class logits or per-choice scores.
    pub scores: Vec<f64>,
}

/// Predictions of `task` for every record of `input` (JSONL read through the task's field
/// mapping; CommonsenseQA JSONL for such tasks). Labels in the input are ignored.
pub fn predict(
    loaded: &Loaded,
    task: &str,
    input: &Path,
    batch_size: usize,
) -> Result<Vec<Prediction>> {
    let (index, spec) = loaded.task(task)?;
    let mut reader = spec.clone();
    if reader.format == DataFormat::GlueTsv {
        reader.format = DataFormat::Jsonl;
    }
    reader.label_field = None;
    let examples = data::read_examples(&reader, input, &input.display().to_string(), false)?;
    let tokenized = loaded.encoder.encode(&examples)?;
    let logits = infer(
        &loaded.model,
        index,
        &tokenized,
        batch_size,
        Precision::Fp32,
    )
    .to_kind(Kind::Double);
    let rows: Vec<Vec<f64>> = (0..logits.size()[0])
        .map(|i| Vec::<f64>::try_from(logits.get(i)).unwrap_or_default())
        .collect();
    Ok(rows
        .into_iter()
        .map(|scores| {
            let prediction = match spec.task_type {
                TaskType::Regression => serde_json::json!(scores.first().copied().unwrap_or(0.0)),
                _ => {
                    let best = scores
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map_or(0, |(i, _)| i);
                    match spec.label_names.as_ref().and_then(|n| n.get(best)) {
                        Some(name) => serde_json::json!(name),
                        None => serde_json::json!(best),
                    }
                }
            };
            Prediction { prediction, scores }
        })
        .collect())
}
