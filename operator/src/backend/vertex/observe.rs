//! A CustomJob's state → the attempt's state, the job's phase, a condition reason and message:
//! one table ([`state_row`]) that the reconciler, the client and the CLI all read. Pure,
//! table-tested.

use google_cloud_aiplatform_v1::model::{CustomJob, JobState};
use mtl_crds::JobPhase;

use crate::backend::{AttemptState, ObservedAttempt};

/// What one look at a CustomJob says about the job.
#[derive(Clone, Debug, PartialEq)]
pub struct VertexObservation {
    /// The phase to write to `.status.phase`.
    pub phase: JobPhase,
    /// Vertex's state name, e.g. `JOB_STATE_RUNNING`.
    pub state: String,
    /// Condition reason, CamelCase, e.g. `VertexJobRunning`.
    pub reason: &'static str,
    /// Condition message; for a failed job, Vertex's `error.message`.
    pub message: String,
    /// The CustomJob resource name (`projects/…/locations/…/customJobs/…`).
    pub name: String,
    /// Link to the job in the Google Cloud console.
    pub console_url: Option<String>,
    /// RFC 3339 times Vertex reports, for `.status.startTime` / `.status.completionTime`.
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    /// The CustomJob will not change state any more (succeeded, failed, cancelled, expired).
    pub terminal: bool,
    /// The CustomJob was cancelled (or is being cancelled).
    pub cancelled: bool,
}

/// `https://console.cloud.google.com/vertex-ai/locations/{region}/training/{id}?project={project}`
/// for a CustomJob name `projects/{project}/locations/{region}/customJobs/{id}`.
pub fn console_url(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["projects", project, "locations", region, "customJobs", id]
            if !project.is_empty() && !region.is_empty() && !id.is_empty() =>
        {
            Some(format!(
                "https://console.cloud.google.com/vertex-ai/locations/{region}/training/{id}?project={project}"
            ))
        }
        _ => None,
    }
}

/// What a CustomJob's state says about its attempt, before Vertex's error message is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// Queued, provisioning, paused, or a state this operator does not know.
    Pending,
    Running,
    Succeeded,
    /// Ended without success: counts against `backoffLimit` unless Vertex's error says the
    /// platform, not the trainer, ended it (see [`observed_attempt`]).
    Failed,
    /// Cancelled (by the operator for a suspension, or by someone in the console).
    Cancelled,
}

/// One row of [`state_row`]: what a Vertex `JobState` means, for every caller (the
/// reconciler's [`observed_attempt`], the CLI's and the client's [`observe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateRow {
    pub lifecycle: Lifecycle,
    /// Condition reason, CamelCase, e.g. `VertexJobRunning`.
    pub reason: &'static str,
    /// What the CustomJob does, after "Vertex AI CustomJob {name} ": `is running`.
    pub says: &'static str,
    /// The CustomJob will not change state any more.
    pub terminal: bool,
    /// A cancellation is under way (CANCELLING): the trainer may still be checkpointing.
    pub terminating: bool,
    /// Vertex's `error.message` is appended to the condition message when there is one.
    pub with_error: bool,
}

/// The one table of Vertex AI job states.
///
/// | Vertex state          | attempt            | phase ([`phase_of`])         | reason                        |
/// |-----------------------|--------------------|------------------------------|-------------------------------|
/// | QUEUED                | Pending            | Pending                      | VertexJobQueued               |
/// | PENDING               | Pending            | Pending                      | VertexJobPending              |
/// | PAUSED                | Pending            | Pending                      | VertexJobPaused               |
/// | RUNNING               | Running            | Running                      | VertexJobRunning              |
/// | UPDATING              | Running            | Running                      | VertexJobUpdating             |
/// | SUCCEEDED             | Succeeded          | Succeeded                    | VertexJobSucceeded            |
/// | FAILED                | Failed             | Failed                       | VertexJobFailed               |
/// | PARTIALLY_SUCCEEDED   | Failed             | Failed                       | VertexJobPartiallySucceeded   |
/// | EXPIRED               | Failed             | Failed                       | VertexJobExpired              |
/// | CANCELLING            | Running, terminating | Suspended                  | VertexJobCancelling           |
/// | CANCELLED             | Cancelled          | Suspended (Failed if no suspension was asked for) | VertexJobCancelled |
/// | UNSPECIFIED, unknown  | Pending            | Pending                      | VertexJobStateUnknown         |
pub fn state_row(state: &JobState) -> StateRow {
    use Lifecycle::*;
    let row = |lifecycle, reason, says, terminal| StateRow {
        lifecycle,
        reason,
        says,
        terminal,
        terminating: false,
        with_error: false,
    };
    match state {
        JobState::Queued => row(Pending, "VertexJobQueued", "is queued", false),
        JobState::Pending => row(
            Pending,
            "VertexJobPending",
            "is provisioning resources",
            false,
        ),
        JobState::Paused => row(Pending, "VertexJobPaused", "is paused", false),
        JobState::Running => row(Running, "VertexJobRunning", "is running", false),
        JobState::Updating => row(Running, "VertexJobUpdating", "is being updated", false),
        JobState::Succeeded => row(Succeeded, "VertexJobSucceeded", "succeeded", true),
        JobState::Failed => StateRow {
            with_error: true,
            ..row(Failed, "VertexJobFailed", "failed", true)
        },
        JobState::PartiallySucceeded => StateRow {
            with_error: true,
            ..row(
                Failed,
                "VertexJobPartiallySucceeded",
                "only partially succeeded",
                true,
            )
        },
        JobState::Expired => StateRow {
            with_error: true,
            ..row(
                Failed,
                "VertexJobExpired",
                "expired (ran past its scheduling timeout, spec.runPolicy.activeDeadlineSeconds)",
                true,
            )
        },
        JobState::Cancelling => StateRow {
            terminating: true,
            ..row(Running, "VertexJobCancelling", "is being cancelled", false)
        },
        JobState::Cancelled => row(Cancelled, "VertexJobCancelled", "was cancelled", true),
        _ => row(Pending, "VertexJobStateUnknown", "reports state", false),
    }
}

/// The job's phase for a row of [`state_row`]. A cancelled CustomJob is Suspended when the job
/// asks for a suspension (`suspend`: `Some(true)`, or `None` when not known); cancelled while
/// `spec.runPolicy.suspend` is false, someone cancelled it outside the operator: Failed.
pub fn phase_of(row: &StateRow, suspend: Option<bool>) -> JobPhase {
    match row.lifecycle {
        Lifecycle::Pending => JobPhase::Pending,
        Lifecycle::Running if row.terminating => JobPhase::Suspended,
        Lifecycle::Running => JobPhase::Running,
        Lifecycle::Succeeded => JobPhase::Succeeded,
        Lifecycle::Failed => JobPhase::Failed,
        Lifecycle::Cancelled if suspend == Some(false) => JobPhase::Failed,
        Lifecycle::Cancelled => JobPhase::Suspended,
    }
}

/// Vertex's state name, e.g. `JOB_STATE_RUNNING`.
fn state_name(state: &JobState) -> String {
    state
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| match state.value() {
            Some(v) => format!("JOB_STATE({v})"),
            None => "JOB_STATE_UNKNOWN".to_string(),
        })
}

/// The condition message of a CustomJob in `row`: what it does, and for a failure Vertex's
/// `error.message`.
fn message(custom_job: &CustomJob, row: &StateRow, state_name: &str) -> String {
    let display = if custom_job.display_name.is_empty() {
        custom_job.name.as_str()
    } else {
        custom_job.display_name.as_str()
    };
    let error_message = custom_job
        .error
        .as_ref()
        .map(|e| e.message.trim().to_string())
        .filter(|m| !m.is_empty());
    let mut text = format!("Vertex AI CustomJob {display} {}", row.says);
    if row.reason == "VertexJobStateUnknown" {
        text = format!("{text} {state_name}");
    }
    match (&error_message, row.with_error) {
        (Some(e), true) => format!("{text}: {e}"),
        (None, true) if row.reason == "VertexJobFailed" => {
            format!("{text} (Vertex AI gave no error message)")
        }
        _ => text,
    }
}

/// Maps a CustomJob to the job's phase, a condition reason and message, by [`state_row`].
///
/// A cancelled CustomJob maps to Suspended, which is right when the operator cancelled it for
/// `runPolicy.suspend`. When nobody asked for a suspension (someone cancelled it in the
/// console), use [`observe_with_suspend`], which reports Failed instead.
pub fn observe(custom_job: &CustomJob) -> VertexObservation {
    observe_as(custom_job, None)
}

/// [`observe`], knowing whether the job's spec asks for suspension: a CustomJob cancelled while
/// `spec.runPolicy.suspend` is false was cancelled behind the operator's back, which ends the
/// attempt as Failed (reason `VertexJobCancelled`) rather than Suspended.
pub fn observe_with_suspend(custom_job: &CustomJob, suspend: bool) -> VertexObservation {
    observe_as(custom_job, Some(suspend))
}

fn observe_as(custom_job: &CustomJob, suspend: Option<bool>) -> VertexObservation {
    let row = state_row(&custom_job.state);
    let state = state_name(&custom_job.state);
    let mut message = message(custom_job, &row, &state);
    let phase = phase_of(&row, suspend);
    if row.lifecycle == Lifecycle::Cancelled && phase == JobPhase::Failed {
        message = format!(
            "{message}, but spec.runPolicy.suspend is false: cancelled outside the operator"
        );
    }
    VertexObservation {
        phase,
        state,
        reason: row.reason,
        message,
        name: custom_job.name.clone(),
        console_url: console_url(&custom_job.name),
        start_time: custom_job.start_time.map(String::from),
        end_time: custom_job.end_time.map(String::from),
        terminal: row.terminal,
        cancelled: row.lifecycle == Lifecycle::Cancelled || row.terminating,
    }
}

/// A CustomJob as the decision layer sees an attempt, by [`state_row`]: a Failed row is the
/// trainer's failure (counts against backoffLimit, with Vertex's error message), unless the
/// replica exited with the trainer's invalid-input code (InvalidInput, not retried) or
/// [`platform_disruption`] says Vertex AI's capacity or platform ended it (Disrupted, counted
/// as a preemption). CANCELLING is a running attempt being torn down; CANCELLED is Cancelled
/// (by the operator for a suspend, which the decision layer handles first, or by someone in
/// the console, which fails the job with reason `Cancelled`: a person stopped it, so it is not
/// started again).
pub fn observed_attempt(custom_job: &CustomJob, attempt: u32) -> ObservedAttempt {
    let row = state_row(&custom_job.state);
    let seen = observe(custom_job);
    let state = match row.lifecycle {
        Lifecycle::Pending => AttemptState::Pending,
        Lifecycle::Running => AttemptState::Running,
        Lifecycle::Succeeded => AttemptState::Succeeded,
        Lifecycle::Failed => failed_attempt(custom_job, seen),
        Lifecycle::Cancelled => AttemptState::Cancelled {
            message: seen.message,
        },
    };
    ObservedAttempt::single(attempt, custom_job.name.clone(), state, row.terminating)
}

/// A CustomJob that ended without success: whose failure it was, by Vertex's error.
fn failed_attempt(custom_job: &CustomJob, seen: VertexObservation) -> AttemptState {
    // Only FAILED carries a replica's exit or the platform's reason; EXPIRED and
    // PARTIALLY_SUCCEEDED are failures as they are.
    let failed = custom_job.state == JobState::Failed;
    // Vertex words a replica's exit as "The replica workerpool0-0 exited with a non-zero
    // status of 2. ...": the trainer's code for input no retry can fix.
    let invalid_input = format!(
        "exited with a non-zero status of {}.",
        mtl_crds::EXIT_INVALID_INPUT
    );
    let exited_invalid = custom_job
        .error
        .as_ref()
        .is_some_and(|e| e.message.contains(&invalid_input));
    match platform_disruption(custom_job) {
        _ if failed && exited_invalid => AttemptState::InvalidInput {
            message: seen.message,
        },
        Some(reason) if failed => AttemptState::Disrupted {
            reason: reason.to_string(),
            message: seen.message,
        },
        _ => AttemptState::Failed {
            reason: seen.reason.to_string(),
            message: seen.message,
        },
    }
}

/// Why Vertex AI, not the trainer, ended a failed CustomJob, if it did: no capacity
/// (`RESOURCE_EXHAUSTED`), the service unavailable or failing internally (`UNAVAILABLE`,
/// `INTERNAL`), or a Spot / FLEX_START VM taken back. A replica that exited non-zero is the
/// trainer's failure whatever the code.
pub fn platform_disruption(custom_job: &CustomJob) -> Option<&'static str> {
    let error = custom_job.error.as_ref()?;
    let message = error.message.to_ascii_lowercase();
    if message.contains("exited with a non-zero status") {
        return None;
    }
    match error.code {
        8 => Some("VertexCapacity"),
        14 => Some("VertexUnavailable"),
        13 => Some("VertexInternalError"),
        _ if message.contains("preempt") => Some("VertexPreempted"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: &str = "projects/my-proj/locations/us-central1/customJobs/12345";

    fn job(state: JobState, error: Option<&str>) -> CustomJob {
        let cj = CustomJob::new()
            .set_name(NAME)
            .set_display_name("ns-job-1")
            .set_state(state);
        match error {
            // As Vertex sends it: the error is a google.rpc.Status.
            Some(m) => {
                let mut json = serde_json::to_value(&cj).unwrap();
                json["error"] = serde_json::json!({"code": 13, "message": m});
                serde_json::from_value(json).unwrap()
            }
            None => cj,
        }
    }

    #[test]
    fn state_table() {
        use JobPhase::*;
        let table = [
            (JobState::Queued, Pending, "VertexJobQueued", false),
            (JobState::Pending, Pending, "VertexJobPending", false),
            (JobState::Running, Running, "VertexJobRunning", false),
            (JobState::Updating, Running, "VertexJobUpdating", false),
            (JobState::Succeeded, Succeeded, "VertexJobSucceeded", true),
            (JobState::Failed, Failed, "VertexJobFailed", true),
            (
                JobState::PartiallySucceeded,
                Failed,
                "VertexJobPartiallySucceeded",
                true,
            ),
            (JobState::Expired, Failed, "VertexJobExpired", true),
            (
                JobState::Cancelling,
                Suspended,
                "VertexJobCancelling",
                false,
            ),
            (JobState::Cancelled, Suspended, "VertexJobCancelled", true),
            (JobState::Paused, Pending, "VertexJobPaused", false),
            (
                JobState::Unspecified,
                Pending,
                "VertexJobStateUnknown",
                false,
            ),
            (JobState::from(99), Pending, "VertexJobStateUnknown", false),
        ];
        for (state, phase, reason, terminal) in table {
            let seen = observe(&job(state.clone(), None));
            assert_eq!(seen.phase, phase, "{state:?}");
            assert_eq!(seen.reason, reason, "{state:?}");
            assert_eq!(seen.terminal, terminal, "{state:?}");
            assert!(seen.message.contains("ns-job-1"), "{}", seen.message);
        }
    }

    #[test]
    fn failed_message_carries_vertex_error() {
        let seen = observe(&job(
            JobState::Failed,
            Some("The replica workerpool0-0 exited with a non-zero status of 1."),
        ));
        assert_eq!(
            seen.message,
            "Vertex AI CustomJob ns-job-1 failed: The replica workerpool0-0 exited with a non-zero status of 1."
        );
        assert_eq!(seen.state, "JOB_STATE_FAILED");
    }

    #[test]
    fn console_link() {
        assert_eq!(
            console_url(NAME).as_deref(),
            Some(
                "https://console.cloud.google.com/vertex-ai/locations/us-central1/training/12345?project=my-proj"
            )
        );
        assert_eq!(console_url("nonsense"), None);
        assert_eq!(
            observe(&job(JobState::Running, None)).console_url,
            console_url(NAME)
        );
    }

    #[test]
    fn cancelled_outside_the_operator_fails() {
        let cj = job(JobState::Cancelled, None);
        assert_eq!(observe_with_suspend(&cj, true).phase, JobPhase::Suspended);
        assert_eq!(observe_with_suspend(&cj, false).phase, JobPhase::Failed);
    }

    #[test]
    fn platform_failures_are_disruptions_and_replica_exits_are_failures() {
        let failed = |code: i32, message: &str| -> CustomJob {
            let mut json = serde_json::to_value(
                CustomJob::new()
                    .set_name("projects/p/locations/l/customJobs/1")
                    .set_state(JobState::Failed),
            )
            .unwrap();
            json["error"] = serde_json::json!({"code": code, "message": message});
            serde_json::from_value(json).unwrap()
        };
        let table = [
            (
                8,
                "The zone does not have enough resources",
                Some("VertexCapacity"),
            ),
            (14, "Service unavailable", Some("VertexUnavailable")),
            (13, "Internal error occurred", Some("VertexInternalError")),
            (3, "The VM was preempted", Some("VertexPreempted")),
            (
                3,
                "The replica workerpool0-0 exited with a non-zero status of 1.",
                None,
            ),
            (
                13,
                "The replica workerpool1-0 exited with a non-zero status of 137.",
                None,
            ),
            (3, "Bad argument", None),
        ];
        for (code, message, want) in table {
            let cj = failed(code, message);
            assert_eq!(platform_disruption(&cj), want, "{code} {message}");
            let state = observed_attempt(&cj, 1).state;
            assert_eq!(
                matches!(state, AttemptState::Disrupted { .. }),
                want.is_some(),
                "{code} {message}: {state:?}"
            );
        }
    }

    #[test]
    fn attempt_states() {
        let cj = |state: JobState| {
            CustomJob::new()
                .set_name("projects/p/locations/l/customJobs/1")
                .set_state(state)
        };
        let table = [
            (JobState::Queued, AttemptState::Pending, false),
            (JobState::Pending, AttemptState::Pending, false),
            (JobState::Paused, AttemptState::Pending, false),
            (JobState::Running, AttemptState::Running, false),
            (JobState::Updating, AttemptState::Running, false),
            (JobState::Cancelling, AttemptState::Running, true),
            (JobState::Succeeded, AttemptState::Succeeded, false),
        ];
        for (state, want, terminating) in table {
            let got = observed_attempt(&cj(state.clone()), 2);
            assert_eq!(got.state, want, "{state:?}");
            assert_eq!(got.terminating, terminating, "{state:?}");
            assert_eq!(got.attempt, 2);
        }
        assert!(matches!(
            observed_attempt(&cj(JobState::Failed), 1).state,
            AttemptState::Failed { reason, .. } if reason == "VertexJobFailed"
        ));
        assert!(matches!(
            observed_attempt(&cj(JobState::Expired), 1).state,
            AttemptState::Failed { reason, .. } if reason == "VertexJobExpired"
        ));
        assert!(matches!(
            observed_attempt(&cj(JobState::Cancelled), 1).state,
            AttemptState::Cancelled { message } if message.contains("was cancelled")
        ));
        // A replica that exited with the trainer's invalid-input code: not retried.
        let failed_with = |message: &str| -> CustomJob {
            serde_json::from_value(serde_json::json!({
                "name": "projects/p/locations/l/customJobs/1",
                "state": "JOB_STATE_FAILED",
                "error": {"code": 3, "message": message},
            }))
            .unwrap()
        };
        let invalid = failed_with(
            "The replica workerpool0-0 exited with a non-zero status of 2. Termination reason: Error.",
        );
        assert!(matches!(
            observed_attempt(&invalid, 1).state,
            AttemptState::InvalidInput { message } if message.contains("status of 2")
        ));
        let crashed = failed_with(
            "The replica workerpool0-0 exited with a non-zero status of 1. Termination reason: Error.",
        );
        assert!(matches!(
            observed_attempt(&crashed, 1).state,
            AttemptState::Failed { .. }
        ));
    }
}
