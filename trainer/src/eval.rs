//! Evaluation: every task's validation set through its own head (found by task name), the
//! task's metrics and loss, and `mean` of the headline scores.

use std::collections::BTreeMap;

use mtl_crds::{TaskSpec, TaskType};
use tch::{Device, Kind, Tensor};

use crate::data::{Batcher, TokenStore};
use crate::metrics::{self, Predictions};
use crate::model::{HeadSpec, Inference, MultiTaskModel};
use crate::precision::Amp;
use crate::{Error, Result};

/// The head of `model` that task `t` of a job reads: the one with the task's name, which must
/// have the task's type, outputs and label names (`trained`: the tasks the model was trained
/// on, in head order).
pub fn head_for(model: &MultiTaskModel, trained: &[TaskSpec], t: &TaskSpec) -> Result<usize> {
    let names = || trained.iter().map(|t| t.name.as_str()).collect::<Vec<_>>();
    let index = model.task_index(&t.name).ok_or_else(|| {
        Error::Invalid(format!(
            "task {:?} has no head in the checkpoint (its tasks: {:?})",
            t.name,
            names()
        ))
    })?;
    let (want, have) = (HeadSpec::from(t), &model.heads_spec[index]);
    if &want != have {
        return Err(Error::Invalid(format!(
            "task {:?}: the job has a {:?} head with {} outputs, the checkpoint a {:?} head with {}",
            t.name, want.task_type, want.outputs, have.task_type, have.outputs
        )));
    }
    if let Some(saved) = trained.iter().find(|s| s.name == t.name)
        && saved.label_names != t.label_names
    {
        return Err(Error::Invalid(format!(
            "task {:?}: labelNames {:?} differ from the checkpoint's {:?} (label order decides what each output means)",
            t.name, t.label_names, saved.label_names
        )));
    }
    Ok(index)
}

/// The example indices of a store in batches of `batch_size`, in order.
fn batches(store: &TokenStore, batch_size: usize) -> impl Iterator<Item = Vec<usize>> {
    let bs = batch_size.max(1);
    (0..store.len())
        .step_by(bs)
        .map(move |start| (start..(start + bs).min(store.len())).collect())
}

/// Raw outputs of `head` over every example of `store`, batch by batch (CPU, float32).
pub fn infer(
    model: &Inference<'_>,
    batcher: &Batcher,
    head: usize,
    store: &TokenStore,
    batch_size: usize,
    amp: &Amp,
) -> Result<Tensor> {
    let mut outs = Vec::new();
    for chunk in batches(store, batch_size) {
        let batch = batcher.collate(store, &chunk)?;
        let logits = amp.run(|| model.forward(head, &batch))?;
        outs.push(logits.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?);
    }
    Ok(if outs.is_empty() {
        Tensor::f_zeros([0, 1], (Kind::Float, Device::Cpu))?
    } else {
        Tensor::f_cat(&outs, 0)?
    })
}

/// One task's validation data and the head that scores it.
pub struct EvalSet<'a> {
    pub spec: &'a TaskSpec,
    pub head: usize,
    pub examples: &'a TokenStore,
}

/// Metrics of every set (`<task>/<metric>`, `<task>/loss`), plus `mean` of the headline
/// scores (see [`metrics::task_metrics`]). A metric that is NaN (correlations of constant
/// predictions) is left out, with a warning: JSON cannot carry it, and a missing metric never
/// ranks as best and counts as no improvement for early stopping; `mean` is then left out
/// too, since the tasks' average is undefined.
pub fn evaluate(
    model: &MultiTaskModel,
    sets: &[EvalSet<'_>],
    batch_size: usize,
    amp: &Amp,
) -> Result<BTreeMap<String, f64>> {
    let inference = model.frozen()?;
    let mut all = BTreeMap::new();
    let mut headlines = Vec::new();
    for set in sets.iter().filter(|s| !s.examples.is_empty()) {
        let b = model.batcher(set.head);
        let mut outs = Vec::new();
        let (mut loss_sum, mut n) = (0.0, 0usize);
        for chunk in batches(set.examples, batch_size) {
            let batch = b.collate(set.examples, &chunk)?;
            let (loss, logits) = amp.run(|| inference.loss(set.head, &batch))?;
            loss_sum += loss.f_double_value(&[])? * chunk.len() as f64;
            n += chunk.len();
            outs.push(logits.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?);
        }
        let logits = Tensor::f_cat(&outs, 0)?;
        let gold: Vec<f64> = (0..set.examples.len())
            .map(|i| {
                set.examples.label(i).ok_or_else(|| {
                    Error::Invalid(format!(
                        "task {}: a validation example has no label",
                        set.spec.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let preds = predictions(set.spec, &logits, gold)?;
        let (m, headline) = metrics::task_metrics(set.spec, &preds)?;
        let undefined: Vec<&str> = m
            .iter()
            .filter(|(_, v)| !v.is_finite())
            .map(|(k, _)| k.as_str())
            .collect();
        if !undefined.is_empty() {
            tracing::warn!(
                task = %set.spec.name,
                "{} NaN (constant predictions or labels): left out of the metrics",
                undefined.join(", ")
            );
        }
        all.extend(m.into_iter().filter(|(_, v)| v.is_finite()));
        all.insert(
            format!("{}/loss", set.spec.name),
            loss_sum / n.max(1) as f64,
        );
        headlines.push(headline);
    }
    let mean = headlines.iter().sum::<f64>() / headlines.len().max(1) as f64;
    if !headlines.is_empty() && mean.is_finite() {
        all.insert("mean".into(), mean);
    }
    Ok(all)
}

/// Scores (regression) or argmax classes from a task's logits.
fn predictions(spec: &TaskSpec, logits: &Tensor, gold: Vec<f64>) -> Result<Predictions> {
    let failed =
        |e: tch::TchError| Error::Invalid(format!("task {}: reading predictions: {e}", spec.name));
    Ok(match spec.task_type {
        TaskType::Regression => Predictions::Scores {
            pred: Vec::<f64>::try_from(
                logits
                    .f_squeeze_dim(-1)
                    .and_then(|t| t.f_to_kind(Kind::Double))
                    .map_err(failed)?,
            )
            .map_err(failed)?,
            gold,
        },
        _ => Predictions::Classes {
            pred: Vec::<i64>::try_from(logits.f_argmax(-1, false).map_err(failed)?)
                .map_err(failed)?
                .into_iter()
                .map(|x| x as usize)
                .collect(),
            gold: gold.into_iter().map(|x| x as usize).collect(),
        },
    })
}
