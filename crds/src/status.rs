//! `.status` of a `MultiTaskTrainingJob`, written by the operator.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum JobPhase {
    #[default]
    Pending,
    Running,
    Restarting,
    Suspended,
    Succeeded,
    Failed,
}

impl JobPhase {
    pub fn is_finished(self) -> bool {
        matches!(self, JobPhase::Succeeded | JobPhase::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Pending => "Pending",
            JobPhase::Running => "Running",
            JobPhase::Restarting => "Restarting",
            JobPhase::Suspended => "Suspended",
            JobPhase::Succeeded => "Succeeded",
            JobPhase::Failed => "Failed",
        }
    }
}

/// A standard Kubernetes condition (type, status, reason, message, lastTransitionTime).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Created, Running, Restarting, Succeeded, Failed, Suspended.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// CamelCase reason of the last change, e.g. AttemptRunning.
    #[serde(default)]
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: String,
}

/// A committed checkpoint, as the trainer's manifest records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    /// Optimizer step the checkpoint was taken at.
    pub step: u64,
    /// Where the checkpoint directory is.
    pub uri: String,
    /// RFC 3339 time the checkpoint was committed.
    #[schemars(extend("format" = "date-time"))]
    pub time: String,
    /// Metric name to value, e.g. `stsb/pearson`, `mean`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// The best committed checkpoint by a metric.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BestCheckpoint {
    /// Optimizer step of the best checkpoint.
    pub step: u64,
    /// Where the checkpoint directory is.
    pub uri: String,
    /// The metric checkpoints are ranked by, e.g. `mean`.
    pub metric: String,
    /// The metric's value at that checkpoint.
    pub value: f64,
}

/// How a training run ended, as the trainer records it in the manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunEnd {
    /// `Completed` (every step trained) or `EarlyStopped`.
    pub reason: String,
    /// The step training ended at.
    pub step: u64,
    /// Why, for people (e.g. which metric stopped improving).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// [`RunEnd::reason`] of a run that trained every step.
pub const END_COMPLETED: &str = "Completed";
/// [`RunEnd::reason`] of a run that early stopping ended.
pub const END_EARLY_STOPPED: &str = "EarlyStopped";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiTaskTrainingJobStatus {
    /// Pending, Running, Restarting, Suspended, Succeeded or Failed.
    #[serde(default)]
    pub phase: JobPhase,
    /// One per type (a list-map keyed by `type`, as Kubernetes conditions are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the job started (or was last resumed from suspension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub start_time: Option<String>,
    /// When the job Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub completion_time: Option<String>,
    /// Attempts that failed and were replaced (counted against backoffLimit).
    #[serde(default)]
    pub restarts: u32,
    /// Attempts lost to preemption or eviction (not counted against backoffLimit).
    #[serde(default)]
    pub preemptions: u32,
    /// After a failed attempt: when the next one starts (exponential backoff, as Kubernetes
    /// Job's: 10 s doubling per failure, at most 6 min).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub next_attempt_time: Option<String>,
    /// Attempt number of the current pod or Vertex AI job.
    #[serde(default)]
    pub attempt: u32,
    /// When the current attempt was created, or for a job in a Kueue queue admitted: where
    /// `runPolicy.startupTimeoutSeconds` counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub attempt_start_time: Option<String>,
    /// The platform disruption the current attempt was seen to end on (a worker preempted,
    /// evicted or on a lost node), kept so that what follows from it (its pod force-deleted,
    /// its peers failing on the lost rank) cannot turn it into a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_disruption: Option<AttemptDisruption>,
    /// The current attempt's pod (rank 0's pod when `spec.workers` > 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Workers of the current attempt whose trainer is running, when `spec.workers` > 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_workers: Option<u32>,
    /// Vertex AI CustomJob resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex_job_name: Option<String>,
    /// The CustomJob in the Google Cloud console.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex_job_console_url: Option<String>,
    /// Optimizer step of the newest committed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The committed checkpoints the manifest lists, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointRef>,
    /// URI of the newest committed checkpoint (where the next attempt resumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_checkpoint: Option<String>,
    /// Latest per-task metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The best checkpoint by `spec.checkpoints.best.metric`, as the manifest marks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_checkpoint: Option<BestCheckpoint>,
    /// Where the final model was exported (`spec.checkpoints.exportOnFinish`, or Vertex AI's
    /// `AIP_MODEL_DIR`): one HuggingFace model directory per task under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Where the running attempt stands, from the trainer's `progress.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<JobProgress>,
    /// The spec as the operator first accepted it. Every field but `runPolicy` is immutable
    /// (the CRD's transition rules refuse a change); where an API server lets a change through
    /// anyway, the operator keeps running the job as accepted and records a
    /// `SpecChangeIgnored` Warning Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = "object", "x-kubernetes-preserve-unknown-fields" = true))]
    pub accepted_spec: Option<serde_json::Value>,
    /// The operator's signature of `acceptedSpec` (`hmac-sha256:<hex>` over the job's uid and
    /// the accepted spec, with a key only the operator holds): a job whose accepted spec does
    /// not verify, because someone with `/status` write access changed it, is not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub accepted_spec_digest: Option<String>,
}

/// Why an attempt was disrupted, as first seen.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptDisruption {
    /// The attempt disrupted.
    pub attempt: u32,
    /// The platform's reason, e.g. `PreemptionByScheduler`, `DeletionByTaintManager`.
    pub reason: String,
    /// The platform's words.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The trainer's latest progress report, as the operator last read it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    /// Optimizer steps done.
    pub step: u64,
    /// Optimizer steps the run has in all.
    pub total_steps: u64,
    /// Share of the steps done, e.g. `42%` (the PROGRESS column).
    pub percent: String,
    /// Training throughput over the trainer's latest logging window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub examples_per_second: Option<f64>,
    /// Mean training loss over the latest logging window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// RFC 3339 time the run should end at the attempt's pace so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub estimated_completion_time: Option<String>,
    /// Time left as of the last read, e.g. `12m` (the ETA column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// RFC 3339 time the trainer wrote the report, by its clock.
    #[schemars(extend("format" = "date-time"))]
    pub updated_at: String,
}
