//! Inference from a committed checkpoint ([`Loaded`]): `eval` (metrics on the validation
//! sets) and `predict` (JSONL in, one prediction per line out).

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::{DataFormat, MultiTaskTrainingJobSpec, Precision, TaskType};
use serde::Serialize;
use tch::Kind;

use crate::Result;
use crate::checkpoint::Loaded;
use crate::data;
use crate::eval::{self, EvalSet, infer};
use crate::io::Storage;
use crate::model::TOKENIZER_FILE;
use crate::precision::Amp;

/// `eval`: the validation sets of `spec`'s tasks, each scored by `loaded`'s head of the same
/// name (the job may list the tasks in another order, or only some of them).
pub fn evaluate(
    loaded: &Loaded,
    store: &Storage,
    spec: &MultiTaskTrainingJobSpec,
    cache: &Path,
    batch_size: usize,
) -> Result<BTreeMap<String, f64>> {
    let loader = data::Loader::new(
        store,
        cache,
        &loaded.encoder,
        &loaded.dir.join(TOKENIZER_FILE),
    )?;
    let tasks = loader.load(spec, false)?;
    let heads = tasks
        .iter()
        .map(|t| eval::head_for(&loaded.model, &loaded.tasks, &t.spec))
        .collect::<Result<Vec<_>>>()?;
    let sets: Vec<EvalSet<'_>> = tasks
        .iter()
        .zip(heads)
        .filter_map(|(t, head)| {
            t.validation.as_ref().map(|v| EvalSet {
                spec: &t.spec,
                head,
                examples: v,
            })
        })
        .collect();
    let amp = Amp::new(
        spec.training.precision,
        loaded.model.device(),
        spec.training.allow_tf32,
    )?;
    eval::evaluate(&loaded.model, &sets, batch_size, &amp)
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
    cache: &Path,
) -> Result<Vec<Prediction>> {
    let (index, spec) = loaded.task(task)?;
    let mut reader = spec.clone();
    if reader.format == DataFormat::GlueTsv {
        reader.format = DataFormat::Jsonl;
    }
    reader.label_field = None;
    let shown = input.display().to_string();
    let examples = data::read_examples(&reader, input, &shown, false)?;
    // Truncated as training truncated this task (its own maxLength, else the model's).
    let encoder = loaded.encoder_for(spec)?;
    let tokenized = data::scratch_store(cache, &encoder, &examples, &shown)?;
    let amp = Amp::new(Precision::Fp32, loaded.model.device(), false)?;
    let logits = infer(
        &loaded.model.frozen()?,
        &loaded.model.batcher(index),
        index,
        &tokenized,
        batch_size,
        &amp,
    )?
    .f_to_kind(Kind::Double)?;
    let rows = (0..logits.size()[0])
        .map(|i| Vec::<f64>::try_from(logits.f_get(i)?))
        .collect::<std::result::Result<Vec<Vec<f64>>, tch::TchError>>()?;
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
