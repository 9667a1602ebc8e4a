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
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    pub last_transition_time: String,
}

/// A committed checkpoint, as the trainer's manifest records it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRef {
    pub step: u64,
    pub uri: String,
    /// RFC 3339 time the checkpoint was committed.
    pub time: String,
    /// Metric name to value, e.g. `stsb/pearson`, `mean`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiTaskTrainingJobStatus {
    #[serde(default)]
    pub phase: JobPhase,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Attempts that failed and were replaced (counted against backoffLimit).
    #[serde(default)]
    pub restarts: u32,
    /// Attempts lost to preemption or eviction (not counted against backoffLimit).
    #[serde(default)]
    pub preemptions: u32,
    /// Attempt number of the current pod or Vertex AI job.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Vertex AI CustomJob resource name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex_job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vertex_job_console_url: Option<String>,
    /// Optimizer step of the newest committed checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoints: Vec<CheckpointRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_checkpoint: Option<String>,
    /// Latest per-task metrics.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}
