//! Where a run stands, as `trainer_state.json` keeps it: [`TrainerState`] (steps, schedule,
//! sampler position, metrics, the training log), the [`Fingerprint`] of what decides the
//! run's batches (checked on resume), and early stopping's count ([`EarlyStopState`]).

use std::collections::BTreeMap;

use mtl_crds::{
    DataFormat, EarlyStoppingSpec, MetricMode, MultiTaskTrainingJobSpec, RunEnd, SamplingSpec,
    TaskSpec, TaskType,
};
use serde::{Deserialize, Serialize};

use crate::precision::LossScale;

/// One line of the training log kept in `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: u64,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    /// Mean global gradient norm (before clipping) over the interval's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Steps of the interval the fp16 loss scaler skipped (an inf or NaN gradient).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_losses: BTreeMap<String, f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub global_step: u64,
    /// Micro-batches consumed: the sampler's whole state (it is a pure function of this).
    pub micro_step: u64,
    pub epoch: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    pub learning_rate: f64,
    pub seed: u64,
    /// spec.model.maxLength the model was trained with (predict and eval reuse it).
    #[serde(default)]
    pub max_length: Option<u32>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub log_history: Vec<LogEntry>,
    #[serde(default)]
    pub eval_history: Vec<BTreeMap<String, f64>>,
    /// What the run's batches depend on; resuming checks it (absent in checkpoints written
    /// before it was kept: those resume unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// The fp16 loss scaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScale>,
    /// Early stopping's count (`training.earlyStopping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopState>,
    /// Set when the run ended before its last step (early stopping): resuming it trains no
    /// further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RunEnd>,
}

/// What decides which batches a run trains on, step by step, and what each output means:
/// resuming with any of it changed would silently change what the resumed run is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprint {
    /// The global batch: `batchSize` × data-parallel ranks.
    pub batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub sampling: SamplingSpec,
    pub seed: u64,
    pub tasks: Vec<TaskFingerprint>,
    /// SHA-256 of the model's `tokenizer.json` (absent in checkpoints written before it was
    /// kept: not compared then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskFingerprint {
    pub name: String,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub outputs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// SHA-256 of the training file.
    pub train_sha256: String,
    /// How the file is read into examples (absent in checkpoints written before it was kept:
    /// not compared then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<TaskReading>,
}

/// What turns a task's training file into its tokenized examples, besides the file and the
/// tokenizer (the token cache's key hashes the same inputs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskReading {
    pub format: DataFormat,
    pub text_fields: Vec<String>,
    pub label_field: Option<String>,
    pub choices_field: Option<String>,
    /// The length examples are cut at: the task's `maxLength`, else the model's.
    pub max_length: u32,
    pub max_train_examples: Option<u64>,
}

impl TaskReading {
    fn of(spec: &MultiTaskTrainingJobSpec, t: &TaskSpec) -> Self {
        Self {
            format: t.format,
            text_fields: t.text_fields.clone(),
            label_field: t.label_field.clone(),
            choices_field: t.choices_field.clone(),
            max_length: t.max_length.unwrap_or(spec.model.max_length),
            max_train_examples: t.max_train_examples,
        }
    }

    /// The first difference between the checkpoint's reading (`self`) and the job's, with the
    /// field as `at(field)` names it.
    fn difference(
        &self,
        now: &Self,
        at: &dyn Fn(&str) -> String,
    ) -> Option<(String, String, String)> {
        let pairs = [
            (
                "format",
                format!("{:?}", self.format),
                format!("{:?}", now.format),
            ),
            (
                "textFields",
                format!("{:?}", self.text_fields),
                format!("{:?}", now.text_fields),
            ),
            (
                "labelField",
                format!("{:?}", self.label_field),
                format!("{:?}", now.label_field),
            ),
            (
                "choicesField",
                format!("{:?}", self.choices_field),
                format!("{:?}", now.choices_field),
            ),
            (
                "maxLength (its own, else spec.model.maxLength)",
                self.max_length.to_string(),
                now.max_length.to_string(),
            ),
            (
                "maxTrainExamples",
                format!("{:?}", self.max_train_examples),
                format!("{:?}", now.max_train_examples),
            ),
        ];
        pairs
            .into_iter()
            .find(|(_, a, b)| a != b)
            .map(|(f, a, b)| (at(f), a, b))
    }
}

impl Fingerprint {
    /// `train_sha256`: each task's training-file hash, in task order; `ranks`: the
    /// data-parallel world size.
    pub fn of(
        spec: &MultiTaskTrainingJobSpec,
        train_sha256: &[String],
        tokenizer_sha256: &str,
        ranks: usize,
    ) -> Self {
        let tr = &spec.training;
        Self {
            batch_size: tr.batch_size * ranks as u32,
            gradient_accumulation_steps: tr.gradient_accumulation_steps,
            sampling: spec.sampling.clone(),
            seed: tr.seed,
            tasks: spec
                .tasks
                .iter()
                .zip(train_sha256)
                .map(|(t, sha)| TaskFingerprint {
                    name: t.name.clone(),
                    task_type: t.task_type,
                    outputs: match t.task_type {
                        TaskType::MultipleChoice => t.num_choices.unwrap_or(0),
                        _ => t.num_outputs(),
                    },
                    label_names: t.label_names.clone(),
                    train_sha256: sha.clone(),
                    reading: Some(TaskReading::of(spec, t)),
                })
                .collect(),
            tokenizer_sha256: Some(tokenizer_sha256.to_string()),
        }
    }

    /// The first difference between the checkpoint's fingerprint (`self`) and the job's, as
    /// `field: the checkpoint has X, the job has Y`.
    pub fn difference(&self, now: &Fingerprint) -> Option<String> {
        let differs = |field: &str, saved: String, job: String| {
            Some(format!(
                "{field}: the checkpoint has {saved}, the job has {job}"
            ))
        };
        if self.batch_size != now.batch_size {
            return differs(
                "spec.training.batchSize (× data-parallel ranks: the global batch)",
                self.batch_size.to_string(),
                now.batch_size.to_string(),
            );
        }
        if self.gradient_accumulation_steps != now.gradient_accumulation_steps {
            return differs(
                "spec.training.gradientAccumulationSteps",
                self.gradient_accumulation_steps.to_string(),
                now.gradient_accumulation_steps.to_string(),
            );
        }
        if self.sampling != now.sampling {
            return differs(
                "spec.sampling",
                format!("{:?}", self.sampling),
                format!("{:?}", now.sampling),
            );
        }
        if self.seed != now.seed {
            return differs(
                "spec.training.seed",
                self.seed.to_string(),
                now.seed.to_string(),
            );
        }
        let names = |f: &Fingerprint| f.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(self) != names(now) {
            return differs(
                "spec.tasks",
                format!("tasks {:?}", names(self)),
                format!("{:?}", names(now)),
            );
        }
        for (i, (a, b)) in self.tasks.iter().zip(&now.tasks).enumerate() {
            let at = |f: &str| format!("spec.tasks[{i}] ({}).{f}", a.name);
            if a.task_type != b.task_type {
                return differs(
                    &at("type"),
                    format!("{:?}", a.task_type),
                    format!("{:?}", b.task_type),
                );
            }
            if a.outputs != b.outputs {
                return differs(
                    &at("numLabels/numChoices"),
                    a.outputs.to_string(),
                    b.outputs.to_string(),
                );
            }
            if a.label_names != b.label_names {
                return differs(
                    &at("labelNames"),
                    format!("{:?}", a.label_names),
                    format!("{:?}", b.label_names),
                );
            }
            if a.train_sha256 != b.train_sha256 {
                return differs(
                    &at("train"),
                    format!("data with SHA-256 {}", a.train_sha256),
                    b.train_sha256.clone(),
                );
            }
            if let (Some(then), Some(now)) = (&a.reading, &b.reading)
                && let Some((field, saved, job)) = then.difference(now, &at)
            {
                return differs(&field, saved, job);
            }
        }
        if let (Some(then), Some(now)) = (&self.tokenizer_sha256, &now.tokenizer_sha256)
            && then != now
        {
            return differs(
                "spec.model.pretrained (its tokenizer.json)",
                format!("a tokenizer.json with SHA-256 {then}"),
                now.clone(),
            );
        }
        None
    }
}

/// Early stopping's count: evaluations of the watched metric since it last improved. Kept in
/// `trainer_state.json`, so a resumed run goes on counting where it was.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopState {
    /// The best value so far (the baseline an improvement must beat by `minDelta`).
    pub best: Option<f64>,
    /// Evaluations in a row that did not improve on `best`.
    pub evals_without_improvement: u32,
}

impl EarlyStopState {
    /// Counts one evaluation's `value` of `metric`: `Some(why)` when training should stop.
    /// An improvement (better than the best by more than `minDelta`, or the first value)
    /// resets the count and becomes the best; a NaN never improves.
    pub fn observe(
        &mut self,
        metric: &str,
        value: f64,
        mode: MetricMode,
        rule: &EarlyStoppingSpec,
    ) -> Option<String> {
        let improved = !value.is_nan()
            && self
                .best
                .is_none_or(|best| mode.better(value, best, rule.min_delta));
        if improved {
            self.best = Some(value);
            self.evals_without_improvement = 0;
            return None;
        }
        self.evals_without_improvement += 1;
        (self.evals_without_improvement >= rule.patience).then(|| {
            format!(
                "{metric} did not improve on its best {} by more than {} for {} evaluations",
                self.best.map_or("(none)".into(), |b| b.to_string()),
                rule.min_delta,
                self.evals_without_improvement
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[f64], mode: MetricMode, patience: u32, min_delta: f64) -> Option<usize> {
        let rule = EarlyStoppingSpec {
            patience,
            min_delta,
        };
        let mut s = EarlyStopState::default();
        values
            .iter()
            .position(|&v| s.observe("mean", v, mode, &rule).is_some())
    }

    #[test]
    fn stops_after_patience_evaluations_without_improvement() {
        use MetricMode::*;
        // Index of the evaluation that stops training.
        assert_eq!(run(&[0.5, 0.5, 0.5], Max, 2, 0.0), Some(2));
        assert_eq!(run(&[0.5, 0.6, 0.6, 0.7, 0.7], Max, 2, 0.0), None);
        assert_eq!(run(&[0.5, 0.6, 0.6, 0.7, 0.7, 0.65], Max, 2, 0.0), Some(5));
        // Creeping by less than minDelta is no improvement, and does not move the baseline.
        assert_eq!(run(&[0.5, 0.504, 0.508, 0.509], Max, 3, 0.01), Some(3));
        assert_eq!(run(&[0.5, 0.505, 0.52], Max, 2, 0.01), None);
        // Smaller is better for a loss.
        assert_eq!(run(&[1.0, 0.9, 0.95, 0.92], Min, 2, 0.0), Some(3));
        assert_eq!(run(&[1.0, f64::NAN, f64::NAN], Min, 2, 0.0), Some(2));
        assert_eq!(
            run(&[0.1], Max, 1, 0.0),
            None,
            "the first value is the baseline"
        );
    }
}
