//! The `MultiTaskTrainingJob` API (`multitask.dev/v1alpha1`).
//!
//! One type serves three readers: the CRD schema that `kubectl apply` validates against,
//! the operator that reconciles it, and `mtl-trainer`, which reads the same manifest (or
//! just its `spec`) for a local run.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{EnvVar, LocalObjectReference, Toleration, VolumeMount};
use kube::core::{Message, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod contract;
mod machines;
mod policy;
mod rules;
mod schema_bounds;
mod status;
mod volumes;
pub use machines::*;
pub use policy::*;
pub use rules::{Admission, FieldError, FieldErrors, RULES, SpecRule, Twin};
pub use schema_bounds::schema_errors;
pub use status::*;
pub use volumes::*;

pub const GROUP: &str = "multitask.dev";
pub const VERSION: &str = "v1alpha1";
pub const KIND: &str = "MultiTaskTrainingJob";

pub use contract::EXIT_INVALID_INPUT;

/// Errors reading a job manifest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: invalid job: {message}")]
    Invalid { path: String, message: String },
}

/// A multi-task fine-tuning job: one shared encoder, one head per task.
// clippy reads the repeated `type_ = "string"` of two printcolumns as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "multitask.dev",
    version = "v1alpha1",
    kind = "MultiTaskTrainingJob",
    namespaced,
    status = "MultiTaskTrainingJobStatus",
    shortname = "mttj",
    category = "ml",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.step"),
    printcolumn(
        name = "Progress",
        type_ = "string",
        json_path = ".status.progress.percent"
    ),
    printcolumn(name = "ETA", type_ = "string", json_path = ".status.progress.eta"),
    printcolumn(
        name = "Latest checkpoint",
        type_ = "string",
        json_path = ".status.latestCheckpoint"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Restarts",
        type_ = "integer",
        json_path = ".status.restarts",
        priority = 1
    ),
    printcolumn(
        name = "Preemptions",
        type_ = "integer",
        json_path = ".status.preemptions",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
// `validate_cel`, for the tests only (the kube `cel` feature is a dev-dependency).
#[cfg_attr(test, x_kube(cel))]
#[x_kube(
    validation = Rule::new(rules::UNIQUE_TASK_NAMES).message("task names must be unique"),
    validation = Rule::new(rules::VERTEX_NEEDS_SETTINGS).message("backend vertexAI needs spec.vertexAI (project, region)"),
    validation = Rule::new(rules::WORKERS_NEED_GCS).message("workers > 1 needs a gs:// checkpoints.uri: every worker and every attempt must reach the same checkpoints").field_path(".workers"),
    validation = Rule::new(rules::KUBERNETES_NEEDS_SHARED_CHECKPOINTS).message("backend kubernetes needs a gs:// checkpoints.uri, or checkpoints.persistentVolumeClaim: a pod's own disk is lost with the pod, and the next attempt resumes from these checkpoints").field_path(".checkpoints.uri"),
    validation = Rule::new(rules::CLAIM_NEEDS_KUBERNETES).message("checkpoints.persistentVolumeClaim is mounted into pods: it needs backend kubernetes").field_path(".checkpoints.persistentVolumeClaim"),
    validation = Rule::new(rules::EARLY_STOPPING_NEEDS_BEST).message("training.earlyStopping watches checkpoints.best.metric: set checkpoints.best").field_path(".training.earlyStopping"),
    validation = immutable("backend"),
    validation = immutable("image"),
    validation = immutable("model"),
    validation = immutable("tasks"),
    validation = immutable("sampling"),
    validation = immutable("training"),
    validation = immutable("checkpoints"),
    validation = immutable("resources"),
    validation = immutable("vertexAI"),
    validation = immutable("workers"),
    validation = immutable("podTemplate"),
    validation = Rule::new(rules::POD_TEMPLATE_NEEDS_KUBERNETES).message("podTemplate shapes the trainer's pods: it needs backend kubernetes").field_path(".podTemplate")
)]
pub struct MultiTaskTrainingJobSpec {
    /// Where the trainer runs: a pod in this cluster, or a Vertex AI custom job.
    #[serde(default)]
    pub backend: Backend,
    /// Trainer image (the image built from Dockerfile.trainer). Unset: the operator's
    /// `--default-image` (chart value `defaultTrainerImage`); the job fails with `InvalidSpec`
    /// when neither names one. At most 512 characters (a registry, repository, tag and digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    pub model: ModelSpec,
    /// The tasks trained jointly; each gets its own head on the shared encoder.
    #[schemars(length(min = 1, max = 32))]
    pub tasks: Vec<TaskSpec>,
    /// How the task of each training step is drawn (default: proportional to dataset size).
    #[serde(default)]
    pub sampling: SamplingSpec,
    #[serde(default)]
    pub training: TrainingSpec,
    pub checkpoints: CheckpointSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    #[serde(default, rename = "vertexAI", skip_serializing_if = "Option::is_none")]
    pub vertex_ai: Option<VertexAiSpec>,
    #[serde(default)]
    pub run_policy: RunPolicy,
    /// Data-parallel workers per attempt: pods on `backend: kubernetes` (each using all of
    /// its `resources.gpus`), replicas on Vertex AI. `training.batchSize` stays per device, so
    /// the global batch is `batchSize × workers × GPUs per worker`.
    #[serde(default = "default_workers", skip_serializing_if = "is_one")]
    #[schemars(range(min = 1, max = 64))]
    pub workers: u32,
    /// What a platform adds to the trainer's pods (`backend: kubernetes`): labels,
    /// annotations, environment, volumes (GCS FUSE, a dataset disk), scheduling. Merged onto
    /// the pod the operator builds; what the operator sets itself cannot be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplate>,
}

/// A Kubernetes object embedded as given (`x-kubernetes-preserve-unknown-fields`): the operator
/// reads it as its Kubernetes type when it builds the pod, and refuses one that is not.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct FreeForm(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for FreeForm {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FreeForm".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    }

    fn inline_schema() -> bool {
        true
    }
}

/// Additions to every pod of a job. A name the operator already uses (a label, an
/// environment variable, a volume or a mount path of its own) is refused with `InvalidSpec`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Labels added to the pods (at most 64; values of at most 63 characters, as Kubernetes
    /// allows). Kueue's queue and priority labels belong on the job's own `metadata.labels`,
    /// from where the operator copies them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64), transform = bounds::strings::<63>)]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to the pods (e.g. `gke-gcsfuse/volumes: "true"` for GCS FUSE); at
    /// most 64, values of at most 4096 characters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64), transform = bounds::strings::<4096>)]
    pub annotations: BTreeMap<String, String>,
    /// Environment variables added to the trainer container (at most 64; each string in them
    /// of at most 32768 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), transform = bounds::strings::<32768>)]
    pub env: Vec<EnvVar>,
    /// Volumes added to the pods (Kubernetes `Volume` objects), mounted with
    /// `volumeMounts`. Only the restricted Pod Security Standard's types (configMap, csi,
    /// downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret) unless
    /// the cluster's administrator allowed more. Each source is kept as given here and
    /// checked by the API server when the pod is created (the whole Volume schema would make
    /// this CRD several times larger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub volumes: Vec<PodVolume>,
    /// Mounts of `volumes` in the trainer container (at most 16; paths and names of at most
    /// 4096 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), transform = bounds::strings::<4096>)]
    pub volume_mounts: Vec<VolumeMount>,
    /// PriorityClass of the pods (what the scheduler, and Kueue, preempt by); a name of at
    /// most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Scheduler of the pods, when not the default one; a name of at most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub scheduler_name: Option<String>,
    /// Node and pod (anti-)affinity of the pods (a Kubernetes `Affinity`), on top of the GPU
    /// type's node selector; checked by the API server like `volumes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<FreeForm>,
    /// Secrets for pulling the trainer image from a private registry (at most 8 names of at
    /// most 253 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), transform = bounds::strings::<253>)]
    pub image_pull_secrets: Vec<LocalObjectReference>,
}

/// The fields of a spec that cannot change once the job exists: all but `runPolicy`, whose
/// fields (suspend, deadlines, retry limits, TTL) are how a running job is steered, as on
/// Kubernetes Job and Kubeflow's jobs. Changing any other field under a running attempt would
/// start the next attempt (or another backend's) on a different job than the checkpoints
/// belong to.
pub const IMMUTABLE_FIELDS: [&str; 11] = [
    "backend",
    "image",
    "model",
    "tasks",
    "sampling",
    "training",
    "checkpoints",
    "resources",
    "vertexAI",
    "workers",
    "podTemplate",
];

/// A transition rule keeping `spec.<field>` as it was created: set or unset as before, and
/// equal when set (a plain `self == oldSelf` on the field would let it be added or removed).
pub(crate) fn immutable(field: &str) -> Rule {
    Rule::new(format!(
        "has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field})"
    ))
    .message(Message::Message(format!(
        "spec.{field} cannot change once the job exists (only spec.runPolicy can): delete and re-create the job to change it"
    )))
    .field_path(format!(".{field}"))
}

fn default_workers() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Backend {
    #[default]
    #[serde(rename = "kubernetes")]
    Kubernetes,
    #[serde(rename = "vertexAI")]
    VertexAi,
}

/// The pretrained encoder every task shares.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// Directory or gs:// prefix holding config.json, model.safetensors and tokenizer.json.
    #[schemars(length(min = 1, max = 1024))]
    pub pretrained: String,
    /// Sequences (or sentence pairs) are truncated longest-first to this many tokens.
    #[serde(default = "default_max_length")]
    #[schemars(range(min = 8, max = 4096))]
    pub max_length: u32,
}

fn default_max_length() -> u32 {
    128
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskType {
    /// One real-valued output, MSE loss (STS-B).
    Regression,
    /// `numLabels`-way classification, cross-entropy loss (RTE).
    Classification,
    /// One of `numChoices` answers, cross-entropy over choices (CommonsenseQA).
    MultipleChoice,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DataFormat {
    /// Tab-separated with a header row, as GLUE distributes STS-B and RTE.
    GlueTsv,
    /// The official CommonsenseQA JSON lines (`question.stem`, `question.choices`, `answerKey`).
    CommonsenseQaJsonl,
    /// One JSON object per line, read through the task's field mapping.
    Jsonl,
}

/// One task: its head, its data and how to read it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
// `validate_cel`, for the tests only (the kube `cel` feature is a dev-dependency).
#[cfg_attr(test, x_kube(cel))]
#[x_kube(
    validation = Rule::new(rules::CLASSIFICATION_CLASSES).message("a classification task needs numLabels >= 2 or at least two labelNames"),
    validation = Rule::new(rules::CHOICES_REQUIRED).message("a multipleChoice task needs numChoices").field_path(".numChoices").reason(Reason::FieldValueRequired),
    validation = Rule::new(rules::LABEL_NAMES_PER_CLASS).message("labelNames must name every one of numLabels classes"),
    validation = Rule::new(rules::LABEL_NAMES_PER_CHOICE).message("labelNames of a multipleChoice task must name every one of numChoices choices"),
    validation = Rule::new(rules::CSQA_IS_MULTIPLE_CHOICE).message("format commonsenseQaJsonl holds multiple-choice questions: use type multipleChoice"),
    validation = Rule::new(rules::MULTIPLE_CHOICE_NOT_GLUE_TSV).message("format glueTsv has no choices: a multipleChoice task needs commonsenseQaJsonl or jsonl with choicesField"),
    validation = Rule::new(rules::REGRESSION_NO_LABEL_NAMES).message("a regression task has no labelNames"),
    validation = Rule::new(rules::POSITIVE_LABEL).message("positiveLabel must be one of the labelNames of a two-class classification task"),
    validation = Rule::new(rules::REGRESSION_METRIC).message("metric: pearson, spearman and pearsonSpearman score regression tasks; accuracy, f1, mcc and f1Accuracy classification").field_path(".metric"),
    validation = Rule::new(rules::MULTIPLE_CHOICE_METRIC).message("metric: a multipleChoice task is scored by accuracy").field_path(".metric"),
    validation = Rule::new(rules::TEXT_FIELDS_NAMED).message("textFields: name one or two text fields (commonsenseQaJsonl has its own)").field_path(".textFields"),
    validation = Rule::new(rules::JSONL_CHOICES_FIELD).message("a jsonl multipleChoice task needs choicesField").field_path(".choicesField").reason(Reason::FieldValueRequired)
)]
pub struct TaskSpec {
    /// Task name: names the head, the metrics and the exported model.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9_]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The head and loss: regression, classification or multipleChoice.
    #[serde(rename = "type")]
    pub task_type: TaskType,
    /// Classes of a classification task (defaults to the number of labelNames).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 10000))]
    pub num_labels: Option<u32>,
    /// Choices per question of a multipleChoice task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 64))]
    pub num_choices: Option<u32>,
    /// Training file: local path or gs:// URI, at most 1024 characters (GCS's longest
    /// object name).
    #[schemars(length(min = 1, max = 1024))]
    pub train: String,
    /// Validation file: local path or gs:// URI, at most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub validation: Option<String>,
    /// Test file (labels absent or ignored): local path or gs:// URI, at most 1024 characters.
    /// `mtl-trainer predict --submission DIR` writes its predictions in the form benchmark
    /// servers take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub test: Option<String>,
    /// The file `predict --submission` writes this task's test predictions to: GLUE's name
    /// for a GLUE task (`CoLA.tsv`, `SST-2.tsv`, `STS-B.tsv`, `RTE.tsv`, ...) by default, else
    /// `<task>.tsv`, or `<task>.jsonl` for commonsenseQaJsonl. `.tsv` writes
    /// `index\tprediction` rows, `.jsonl` one `{"id", "answerKey"}` (multiple choice) or
    /// `{"id", "prediction"}` object per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub submission_file: Option<String>,
    /// How the train, validation and test files are read: glueTsv, commonsenseQaJsonl or jsonl.
    pub format: DataFormat,
    /// Columns or fields holding the text: one for single sentences, two for pairs.
    /// For multipleChoice, the question field. Names of at most 128 characters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), inner(length(max = 128)))]
    pub text_fields: Vec<String>,
    /// Column or field holding the label (score, class name or index, answer); at most 128
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub label_field: Option<String>,
    /// Class names in label order (classification) or choice labels (multipleChoice): at
    /// most 10000 (as `numLabels`), each of at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 10000), inner(length(max = 128)))]
    pub label_names: Option<Vec<String>>,
    /// For jsonl multipleChoice: the field with the list of choices (strings or objects with
    /// `text`); at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub choices_field: Option<String>,
    /// The class whose F1 is reported for a two-class task (default: the second label, as
    /// sklearn's pos_label=1); at most 128 characters, as a label name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub positive_label: Option<String>,
    /// Train on the first N examples of the training file only (quick runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_train_examples: Option<u64>,
    /// Evaluate on the first N examples of the validation file only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_eval_examples: Option<u64>,
    /// This task's sequences are truncated to this many tokens instead of spec.model.maxLength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 4096))]
    pub max_length: Option<u32>,
    /// The task's headline score (what `mean` averages): GLUE's choice by default,
    /// `pearsonSpearman` for regression and `accuracy` otherwise; `mcc` for CoLA,
    /// `f1Accuracy` (the mean of F1 and accuracy) for MRPC and QQP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<TaskMetric>,
    /// A static weight on this task's loss (default 1): each of its micro-batches' loss is
    /// multiplied by it before the backward pass. Logged losses stay unweighted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1000.0))]
    pub loss_weight: Option<f64>,
}

/// A task's headline score.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskMetric {
    Accuracy,
    F1,
    /// Matthews correlation coefficient (CoLA).
    Mcc,
    /// The mean of F1 and accuracy (MRPC, QQP).
    F1Accuracy,
    Pearson,
    Spearman,
    /// The mean of Pearson and Spearman (STS-B).
    PearsonSpearman,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SamplingStrategy {
    /// Each task's share of steps equals its share of batches (the original's sampler).
    #[default]
    Proportional,
    /// Every task equally often.
    Uniform,
    /// Probability proportional to size^(1/T).
    Temperature,
    /// Probability proportional to size^α, α annealed linearly over training from 1
    /// (proportional) to `annealTo` (Stickland & Murray's "BERT and PALs", 2019).
    Annealed,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::TEMPERATURE_SET).message("strategy temperature needs temperature"))]
pub struct SamplingSpec {
    /// proportional (default), uniform, temperature or annealed.
    #[serde(default)]
    pub strategy: SamplingStrategy,
    /// T for the temperature strategy (1 = proportional, large = uniform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1000.0))]
    pub temperature: Option<f64>,
    /// The exponent α the annealed strategy reaches at the end of training (from 1 at the
    /// start; 0 = uniform). Default 0.2, as "BERT and PALs".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub anneal_to: Option<f64>,
}

impl SamplingSpec {
    /// `annealTo`, or its default.
    pub fn anneal_to(&self) -> f64 {
        self.anneal_to.unwrap_or(0.2)
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    /// float32 throughout.
    #[default]
    Fp32,
    /// Autocast to bfloat16 (CUDA with bf16 support, or CPU); float32 weights and optimizer.
    Bf16,
    /// Autocast to float16 with dynamic loss scaling (CUDA only).
    Fp16,
}

/// Optimisation settings (defaults are the original project's).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// Passes over the training data (fractions allowed); ignored when maxSteps is set. Default 3.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 0.0, max = 10000.0))]
    pub epochs: f64,
    /// Stop after this many optimizer steps (overrides epochs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_steps: Option<u64>,
    /// Examples per optimizer micro-step on each device (as HF's per_device_train_batch_size):
    /// the global batch is batchSize × gradientAccumulationSteps × devices. Default 8.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 65536))]
    pub batch_size: u32,
    /// Examples per evaluation batch (default: the larger of batchSize and 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub eval_batch_size: Option<u32>,
    /// Peak learning rate of AdamW, reached after warmup and decayed linearly to 0. Default 1e-5.
    #[serde(default = "default_learning_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub learning_rate: f64,
    /// Linear warmup steps (overrides warmupRatio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Share of the total steps spent warming the learning rate up linearly from 0. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub warmup_ratio: f64,
    /// AdamW's decoupled weight decay (not applied to biases and LayerNorm weights). Default 0.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight_decay: f64,
    /// Gradients are clipped to this global L2 norm before each optimizer step (0: no
    /// clipping). Default 1.
    #[serde(default = "default_max_grad_norm")]
    #[schemars(range(min = 0.0))]
    pub max_grad_norm: f64,
    /// Micro-steps whose gradients are summed before each optimizer step. Default 1.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 4096))]
    pub gradient_accumulation_steps: u32,
    /// Seeds initialisation, dropout, shuffling and task sampling; the same seed and data give
    /// the same run. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Numeric precision of the forward and backward passes: fp32 (default), bf16 or fp16.
    #[serde(default)]
    pub precision: Precision,
    /// Let float32 matmuls on CUDA use TF32 (faster on Ampere and later, ~10-bit mantissa).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_tf32: bool,
    /// Evaluate every N optimizer steps (0: only at the end).
    #[serde(default)]
    pub eval_every_steps: u64,
    /// Log the mean loss, learning rate and throughput (stderr, TensorBoard) every N optimizer
    /// steps. Default 50.
    #[serde(default = "default_log_every")]
    #[schemars(range(min = 1))]
    pub log_every_steps: u64,
    /// Stop when `checkpoints.best.metric` has not improved for `patience` evaluations in a
    /// row (needs `checkpoints.best`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
}

/// Early stopping (Keras's and HF's `EarlyStoppingCallback`): an evaluation improves when the
/// watched metric beats the best value so far by more than `minDelta`; after `patience`
/// evaluations in a row without improvement, training ends (checkpointed, phase Succeeded,
/// reason EarlyStopped).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStoppingSpec {
    /// Evaluations without improvement before training stops.
    #[schemars(range(min = 1, max = 100000))]
    pub patience: u32,
    /// How much better than the best so far an evaluation must be to count as an improvement.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    #[schemars(range(min = 0.0))]
    pub min_delta: f64,
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

/// Which checkpoint is the best: the one with the best value of `metric`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestCheckpointSpec {
    /// A metric evaluation reports: `mean` (of the tasks' headline scores), or
    /// `<task>/<metric>` with metric `pearson`/`spearman` (regression), `accuracy`/`f1`
    /// (classification), `accuracy` (multipleChoice), or `loss` (any task).
    /// At most 128 characters.
    #[serde(default = "default_best_metric")]
    #[schemars(length(min = 1, max = 128))]
    pub metric: String,
    /// Whether larger (`max`) or smaller (`min`) is better. Default: `min` for a loss,
    /// `max` for everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MetricMode>,
}

fn default_best_metric() -> String {
    "mean".into()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MetricMode {
    Max,
    Min,
}

impl MetricMode {
    /// Whether `a` is better than `b` by more than `delta`.
    pub fn better(self, a: f64, b: f64, delta: f64) -> bool {
        match self {
            MetricMode::Max => a - b > delta,
            MetricMode::Min => b - a > delta,
        }
    }
}

impl BestCheckpointSpec {
    /// `mode`, or its default for the metric (`min` for a loss).
    pub fn mode(&self) -> MetricMode {
        self.mode.unwrap_or(if self.metric.ends_with("loss") {
            MetricMode::Min
        } else {
            MetricMode::Max
        })
    }
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            max_steps: None,
            batch_size: default_batch_size(),
            eval_batch_size: None,
            learning_rate: default_learning_rate(),
            warmup_steps: None,
            warmup_ratio: 0.0,
            weight_decay: 0.0,
            max_grad_norm: default_max_grad_norm(),
            gradient_accumulation_steps: 1,
            seed: default_seed(),
            precision: Precision::Fp32,
            allow_tf32: false,
            eval_every_steps: 0,
            log_every_steps: default_log_every(),
            early_stopping: None,
        }
    }
}

fn default_epochs() -> f64 {
    3.0
}
fn default_batch_size() -> u32 {
    8
}
fn default_learning_rate() -> f64 {
    1e-5
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_one() -> u32 {
    1
}
fn default_seed() -> u64 {
    42
}
fn default_log_every() -> u64 {
    50
}

/// Where checkpoints go and how many stay.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(rules::CLAIM_URI_ABSOLUTE).message("with persistentVolumeClaim, uri is the absolute path the claim is mounted at in the trainer's pod").field_path(".uri"))]
pub struct CheckpointSpec {
    /// gs://bucket/prefix; or, with `persistentVolumeClaim`, the absolute path the claim is
    /// mounted at in the trainer's pod; or a local directory for local runs.
    /// `backend: kubernetes` needs one of the first two, since an attempt's own disk is gone
    /// with its pod.
    #[schemars(length(min = 1, max = 1024))]
    pub uri: String,
    /// A PersistentVolumeClaim of the job's namespace holding the checkpoints
    /// (`backend: kubernetes`): mounted read-write at `uri`, which must then be an absolute
    /// path. Several workers need a gs:// `uri` instead. The operator does not mount the
    /// claim, so `.status` shows no checkpoints or progress for such a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(rules::CLAIM_NAME).message("must be a PersistentVolumeClaim name (a DNS subdomain)"))]
    pub persistent_volume_claim: Option<String>,
    /// Commit a checkpoint every N optimizer steps (and at the end, and on SIGTERM). Default
    /// 3000.
    #[serde(default = "default_every_steps")]
    #[schemars(range(min = 1))]
    pub every_steps: u64,
    /// Keep the newest N checkpoints (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep: Option<u32>,
    /// How often the trainer overwrites `<uri>/progress.json` (step, loss, rates, ETA), which
    /// the operator shows in `.status.progress`. Default 30.
    #[serde(
        default = "default_progress_every",
        skip_serializing_if = "is_default_progress_every"
    )]
    #[schemars(range(min = 1))]
    pub progress_every_seconds: u64,
    /// Track the best checkpoint by an evaluation metric: the manifest marks it, `keep`
    /// never deletes it, `.status.bestCheckpoint` names it, and evaluation runs at every
    /// checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestCheckpointSpec>,
    /// When training ends, export every task as a standalone HuggingFace model under
    /// `<uri>/model/<task>/` (under `AIP_MODEL_DIR` on Vertex AI, where it is always done),
    /// from the best checkpoint when `best` is set, else the latest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub export_on_finish: bool,
}

fn default_progress_every() -> u64 {
    30
}

fn is_default_progress_every(n: &u64) -> bool {
    *n == default_progress_every()
}

fn default_every_steps() -> u64 {
    3000
}

/// Pod resources for `backend: kubernetes`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// GPUs of the trainer pod (`nvidia.com/gpu` limit); each worker trains on all of them,
    /// one process per GPU. Default 0 (CPU).
    #[serde(default)]
    #[schemars(range(min = 0, max = 16))]
    pub gpus: u32,
    /// GKE accelerator, e.g. nvidia-tesla-t4, nvidia-l4 (node selector
    /// cloud.google.com/gke-accelerator); a label value of at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub gpu_type: Option<String>,
    /// CPU request and limit of the trainer container, a quantity (`4`, `"500m"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[schemars(schema_with = "quantity::schema")]
    pub cpu: Option<String>,
    /// Memory request and limit of the trainer container, a quantity (`16Gi`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[schemars(schema_with = "quantity::schema")]
    pub memory: Option<String>,
    /// Node labels the trainer pod must run on, added to the GPU type's selector (at most
    /// 64; values of at most 63 characters).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64), transform = bounds::strings::<63>)]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the trainer pod, added to the one for GKE's GPU taint (at most 32;
    /// keys and values of at most 317 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), transform = bounds::strings::<317>)]
    pub tolerations: Vec<Toleration>,
    /// Kubernetes service account bound to a Google service account (Workload Identity); a
    /// name of at most 253 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// Size limit of the `/scratch` emptyDir (downloads, the token cache, checkpoint staging),
    /// also requested as ephemeral storage so the scheduler picks a node with that much disk.
    /// Default 20Gi.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[schemars(schema_with = "quantity::schema")]
    pub scratch_size: Option<String>,
    /// Size of the memory-backed `/dev/shm` (NCCL and libtorch need more than the 64 MiB a
    /// container gets by default); counts against the pod's memory. Default 2Gi.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "quantity::deserialize"
    )]
    #[schemars(schema_with = "quantity::schema")]
    pub shm_size: Option<String>,
}

/// The syntax of a resource quantity (`resources.cpu`, `memory`, ...), as the schema's
/// `pattern`.
pub use quantity::PATTERN as QUANTITY_PATTERN;

/// Bounds for the Kubernetes objects a job embeds (env, mounts, tolerations): the API server
/// estimates the cost of the CRD's CEL rules from the schema's bounds, and Kubernetes' own
/// schemas leave most strings unbounded.
mod bounds {
    use schemars::Schema;
    use serde_json::Value;

    /// Lists and maps nested in an embedded object.
    const NESTED_ITEMS: u64 = 16;

    /// Gives every string below `schema` without a `maxLength` one of `N` characters, and
    /// every list and map without a bound `NESTED_ITEMS` entries.
    pub fn strings<const N: u64>(schema: &mut Schema) {
        if let Some(obj) = schema.as_object_mut() {
            bound(obj, N);
        }
    }

    fn bound(node: &mut serde_json::Map<String, Value>, n: u64) {
        let is = |node: &serde_json::Map<String, Value>, t: &str| match node.get("type") {
            Some(Value::String(s)) => s == t,
            Some(Value::Array(a)) => a.iter().any(|v| v == t),
            _ => false,
        };
        let int_or_string = node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
        if (is(node, "string") || int_or_string) && !node.contains_key("maxLength") {
            node.insert("maxLength".into(), n.into());
        }
        if is(node, "array") && !node.contains_key("maxItems") {
            node.insert("maxItems".into(), NESTED_ITEMS.into());
        }
        if node
            .get("additionalProperties")
            .is_some_and(Value::is_object)
            && !node.contains_key("maxProperties")
        {
            node.insert("maxProperties".into(), NESTED_ITEMS.into());
        }
        for key in ["items", "additionalProperties"] {
            if let Some(Value::Object(child)) = node.get_mut(key) {
                bound(child, n);
            }
        }
        for key in ["properties"] {
            if let Some(Value::Object(children)) = node.get_mut(key) {
                for child in children.values_mut().filter_map(Value::as_object_mut) {
                    bound(child, n);
                }
            }
        }
        for key in ["anyOf", "allOf", "oneOf"] {
            if let Some(Value::Array(children)) = node.get_mut(key) {
                for child in children.iter_mut().filter_map(Value::as_object_mut) {
                    bound(child, n);
                }
            }
        }
    }
}

/// Resource quantities as Kubernetes takes them: int-or-string (`cpu: 4`, `memory: 16Gi`),
/// kept as the string the API would print. The schema checks a string's syntax with the
/// pattern Kubernetes' own CRDs use for `resource.Quantity`: a CEL `isQuantity(string(self))`
/// would do the same, but the API server cannot bound the cost of `string()` on an
/// int-or-string and refuses such a rule when the CRD is created.
mod quantity {
    use std::fmt;

    use schemars::{Schema, SchemaGenerator, json_schema};
    use serde::de::{self, Deserializer, Visitor};

    /// `resource.Quantity`'s syntax, as Kubernetes publishes it in its CRDs' schemas.
    pub const PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

    pub fn schema(_: &mut SchemaGenerator) -> Schema {
        // Kubernetes' own IntOrString in a structural schema: no `type`, the extension says
        // it; the pattern applies to strings only.
        json_schema!({
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "x-kubernetes-int-or-string": true,
            "pattern": PATTERN,
            "maxLength": 64,
        })
    }

    struct IntOrString;

    impl<'de> Visitor<'de> for IntOrString {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a quantity: a whole number (4) or a string (\"500m\", \"16Gi\")")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_any(IntOrString)
    }
}

/// Vertex AI custom job settings for `backend: vertexAI`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexAiSpec {
    /// Google Cloud project the CustomJob runs in (an ID or number, at most 63 characters).
    #[schemars(length(min = 1, max = 63))]
    pub project: String,
    /// Vertex AI region, e.g. us-central1 (at most 63 characters).
    #[schemars(length(min = 1, max = 63))]
    pub region: String,
    /// Compute Engine machine type of each replica (at most 63 characters). Unset: the one
    /// that comes with the accelerator (g2-standard-* for NVIDIA_L4, a2-highgpu-* for
    /// NVIDIA_TESLA_A100, a2-ultragpu-* for NVIDIA_A100_80GB, a3-highgpu-* for
    /// NVIDIA_H100_80GB, by acceleratorCount), n1-standard-8 for T4, V100, P100, P4 or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub machine_type: Option<String>,
    /// e.g. NVIDIA_TESLA_T4, NVIDIA_L4 (at most 63 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub accelerator_type: Option<String>,
    /// GPUs per replica (needs acceleratorType). Default 0.
    #[serde(default)]
    pub accelerator_count: u32,
    /// Google service account the job runs as (an e-mail address, at most 254 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254))]
    pub service_account: Option<String>,
    /// A Vertex AI TensorBoard to upload the trainer's summaries to,
    /// `projects/P/locations/L/tensorboards/ID` (Vertex then sets `AIP_TENSORBOARD_LOG_DIR`;
    /// it needs `serviceAccount`). At most 1024 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 1024),
        regex(pattern = r"^projects/[^/]+/locations/[^/]+/tensorboards/[^/]+$")
    )]
    pub tensorboard: Option<String>,
    /// How Vertex AI provisions the machines: `STANDARD` (on demand), `SPOT` (preemptible,
    /// cheaper) or `FLEX_START` (waits for capacity). Vertex's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<VertexSchedulingStrategy>,
    /// How long a `FLEX_START` job waits for its machines before it fails, as Vertex AI
    /// writes a duration: seconds with an `s` (`"7200s"`). Vertex's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^[0-9]{1,10}s$"))]
    pub max_wait_duration: Option<String>,
    /// Boot disk of each replica in GB (the trainer's cache of models and token stores lives
    /// on it): 100 to 65536. Vertex's default, 100, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 65536))]
    pub boot_disk_size_gb: Option<u32>,
    /// Which Compute Engine reservations the replicas' machines come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_affinity: Option<VertexReservationAffinity>,
    /// The VPC network the job is peered with, `projects/{number}/global/networks/{name}`
    /// (at most 1024 characters): the replicas can reach what that network reaches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub network: Option<String>,
    /// An interactive shell into the training containers from the console (Vertex AI's
    /// `enableWebAccess`), for debugging. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enable_web_access: bool,
}

/// Vertex AI's `ReservationAffinity`: which reservations machines may be taken from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexReservationAffinity {
    /// `NO_RESERVATION`, `ANY_RESERVATION` or `SPECIFIC_RESERVATION`.
    #[serde(rename = "type")]
    pub affinity_type: VertexReservationType,
    /// With `SPECIFIC_RESERVATION`: the reservation's label key, e.g.
    /// `compute.googleapis.com/reservation-name` (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub key: Option<String>,
    /// With `SPECIFIC_RESERVATION`: the reservations' full resource names (at most 8, each
    /// of at most 1024 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), transform = bounds::strings::<1024>)]
    pub values: Vec<String>,
}

/// Vertex AI's `ReservationAffinity.Type`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VertexReservationType {
    NoReservation,
    AnyReservation,
    SpecificReservation,
}

/// Vertex AI's `Scheduling.strategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VertexSchedulingStrategy {
    Standard,
    Spot,
    FlexStart,
}

/// Retries, deadlines and clean-up (Kubeflow's runPolicy).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// Failed attempts replaced before the job fails. Preemptions do not count.
    #[serde(default = "default_backoff_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub backoff_limit: u32,
    /// Attempts lost to preemption or eviction replaced before the job fails with
    /// `PreemptionLimitExceeded`. Default 100.
    #[serde(default = "default_max_preemptions")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_preemptions: u32,
    /// Seconds the job may run before it fails with `DeadlineExceeded`, counted from its
    /// start or, after a suspension, from when it was resumed (as Kubernetes Job does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after the job finished (Succeeded or Failed) when the operator deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Stop the running attempt (it checkpoints) and start none until cleared; the status
    /// is kept, and resuming starts a new attempt from the newest checkpoint.
    #[serde(default)]
    pub suspend: bool,
    /// Seconds an attempt of several workers may take from its creation (for a job in a Kueue
    /// queue, from its admission) until all its workers run. Past it, the attempt is stopped
    /// and replaced as a disruption (a preemption, not a failure): the workers already running
    /// would otherwise hold their GPUs in the rendezvous until the trainer's --dist-timeout
    /// (30 min) and then fail. Default 1200 (20 min: time for GKE to add GPU nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub startup_timeout_seconds: Option<u32>,
}

/// [`RunPolicy::startup_timeout_seconds`] when unset.
pub const DEFAULT_STARTUP_TIMEOUT_SECONDS: u32 = 1200;

impl Default for RunPolicy {
    fn default() -> Self {
        Self {
            backoff_limit: default_backoff_limit(),
            max_preemptions: default_max_preemptions(),
            active_deadline_seconds: None,
            ttl_seconds_after_finished: None,
            suspend: false,
            startup_timeout_seconds: None,
        }
    }
}

fn default_backoff_limit() -> u32 {
    3
}

fn default_max_preemptions() -> u32 {
    100
}

impl TaskSpec {
    /// Outputs of the task's head: 1 for regression and multiple choice (one score per choice).
    pub fn num_outputs(&self) -> u32 {
        match self.task_type {
            TaskType::Regression | TaskType::MultipleChoice => 1,
            TaskType::Classification => self
                .num_labels
                .or_else(|| self.label_names.as_ref().map(|n| n.len() as u32))
                .unwrap_or(2),
        }
    }
}

impl TaskSpec {
    /// What evaluation reports for this task, each as `<task>/<name>` (the trainer's metrics
    /// module produces exactly these).
    pub fn metric_names(&self) -> &'static [&'static str] {
        match self.task_type {
            TaskType::Regression => &["pearson", "spearman", "loss"],
            TaskType::Classification => &["accuracy", "f1", "loss"],
            TaskType::MultipleChoice => &["accuracy", "loss"],
        }
    }
}

impl MultiTaskTrainingJobSpec {
    /// Every metric an evaluation of this job reports: `<task>/<metric>` for each task with
    /// validation data, and `mean` when there is one.
    pub fn reported_metrics(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tasks
            .iter()
            .filter(|t| t.validation.is_some())
            .flat_map(|t| t.metric_names().iter().map(|m| format!("{}/{m}", t.name)))
            .collect();
        if !names.is_empty() {
            names.push("mean".into());
        }
        names
    }

    /// The spec a job runs as, once it was accepted as `accepted`: the accepted spec with this
    /// spec's `runPolicy`, and the immutable fields ([`IMMUTABLE_FIELDS`], as `spec.<field>`)
    /// on which this spec differs from it (empty when it does not).
    pub fn against_accepted(&self, accepted: &Self) -> (Self, Vec<String>) {
        let (now, then) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(accepted).unwrap_or_default(),
        );
        let changed = IMMUTABLE_FIELDS
            .iter()
            .filter(|f| now.get(**f) != then.get(**f))
            .map(|f| format!("spec.{f}"))
            .collect();
        let mut effective = accepted.clone();
        effective.run_policy = self.run_policy.clone();
        (effective, changed)
    }
}

/// The header `kubectl get mttj` prints: NAME, then the CRD's printer columns in capitals
/// (those of priority 1 only with `-o wide`), as kubectl renders a server-side table.
pub fn kubectl_headers(wide: bool) -> Vec<String> {
    use kube::CustomResourceExt;
    let crd = MultiTaskTrainingJob::crd();
    let columns = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.additional_printer_columns.clone())
        .unwrap_or_default();
    std::iter::once("NAME".to_string())
        .chain(
            columns
                .iter()
                .filter(|c| wide || c.priority.unwrap_or(0) == 0)
                .map(|c| c.name.to_uppercase()),
        )
        .collect()
}

/// Reads a job file: a whole `MultiTaskTrainingJob` manifest, or just its spec.
/// Errors name the file, the field path and the line.
pub fn parse_job(path: &str, text: &str) -> Result<MultiTaskTrainingJobSpec, Error> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| Error::Parse {
        path: path.into(),
        message: e.to_string(),
    })?;
    let is_manifest = value.get("kind").is_some() || value.get("spec").is_some();
    let spec_value = if is_manifest {
        if let Some(kind) = value.get("kind").and_then(|k| k.as_str())
            && kind != KIND
        {
            return Err(Error::Parse {
                path: path.into(),
                message: format!("kind is {kind:?}, expected {KIND}"),
            });
        }
        value.get("spec").cloned().ok_or_else(|| Error::Parse {
            path: path.into(),
            message: "manifest has no spec".into(),
        })?
    } else {
        value
    };
    let prefix = if is_manifest { "spec." } else { "" };
    let spec: MultiTaskTrainingJobSpec =
        serde_path_to_error::deserialize(spec_value).map_err(|e| {
            let field = e.path().to_string();
            let line = line_of(text, &field);
            Error::Parse {
                path: match line {
                    Some(l) => format!("{path}:{l}"),
                    None => path.into(),
                },
                message: format!("{prefix}{field}: {}", e.inner()),
            }
        })?;
    spec.validate().map_err(|errors| Error::Invalid {
        path: path.into(),
        message: errors.to_string(),
    })?;
    Ok(spec)
}

/// Best-effort line of the last key of a dotted field path, for error messages.
fn line_of(text: &str, field: &str) -> Option<usize> {
    let key = field.rsplit('.').next()?.split('[').next()?;
    if key.is_empty() || key == "?" {
        return None;
    }
    let needle = format!("{key}:");
    text.lines()
        .position(|l| {
            let l = l.trim_start().trim_start_matches("- ");
            l.starts_with(&needle)
        })
        .map(|i| i + 1)
}

/// Reads and parses a job file from disk.
pub fn read_job(path: &Path) -> Result<MultiTaskTrainingJobSpec, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: shown.clone(),
        source,
    })?;
    parse_job(&shown, &text)
}

#[cfg(test)]
mod tests;
