//! A CustomJob's state → the job's phase, a condition reason and message. Pure, table-tested.

use google_cloud_aiplatform_v1::model::{CustomJob, JobState};
use mtl_crds::JobPhase;

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

/// Maps a CustomJob to the job's phase.
///
/// | Vertex state                      | phase     | reason                      |
/// |-----------------------------------|-----------|-----------------------------|
/// | QUEUED                            | Pending   | VertexJobQueued             |
/// | PENDING                           | Pending   | VertexJobPending            |
/// | RUNNING                           | Running   | VertexJobRunning            |
/// | UPDATING                          | Running   | VertexJobUpdating           |
/// | SUCCEEDED                         | Succeeded | VertexJobSucceeded          |
/// | FAILED                            | Failed    | VertexJobFailed             |
/// | PARTIALLY_SUCCEEDED               | Failed    | VertexJobPartiallySucceeded |
/// | EXPIRED                           | Failed    | VertexJobExpired            |
/// | CANCELLING, CANCELLED             | Suspended | VertexJobCancelling/Cancelled |
/// | PAUSED                            | Suspended | VertexJobPaused             |
/// | UNSPECIFIED, unknown              | Pending   | VertexJobStateUnknown       |
///
/// A cancelled CustomJob maps to Suspended, which is right when the operator cancelled it for
/// `runPolicy.suspend`. When nobody asked for a suspension (someone cancelled it in the
/// console), use [`observe_with_suspend`], which reports Failed instead.
pub fn observe(custom_job: &CustomJob) -> VertexObservation {
    let state = custom_job.state.clone();
    let state_name = state
        .name()
        .map(str::to_string)
        .unwrap_or_else(|| match state.value() {
            Some(v) => format!("JOB_STATE({v})"),
            None => "JOB_STATE_UNKNOWN".to_string(),
        });
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

    let (phase, reason, message, terminal, cancelled) = match state {
        JobState::Queued => (
            JobPhase::Pending,
            "VertexJobQueued",
            format!("Vertex AI CustomJob {display} is queued"),
            false,
            false,
        ),
        JobState::Pending => (
            JobPhase::Pending,
            "VertexJobPending",
            format!("Vertex AI CustomJob {display} is provisioning resources"),
            false,
            false,
        ),
        JobState::Running => (
            JobPhase::Running,
            "VertexJobRunning",
            format!("Vertex AI CustomJob {display} is running"),
            false,
            false,
        ),
        JobState::Updating => (
            JobPhase::Running,
            "VertexJobUpdating",
            format!("Vertex AI CustomJob {display} is being updated"),
            false,
            false,
        ),
        JobState::Succeeded => (
            JobPhase::Succeeded,
            "VertexJobSucceeded",
            format!("Vertex AI CustomJob {display} succeeded"),
            true,
            false,
        ),
        JobState::Failed => (
            JobPhase::Failed,
            "VertexJobFailed",
            match &error_message {
                Some(m) => format!("Vertex AI CustomJob {display} failed: {m}"),
                None => format!(
                    "Vertex AI CustomJob {display} failed (Vertex AI gave no error message)"
                ),
            },
            true,
            false,
        ),
        JobState::PartiallySucceeded => (
            JobPhase::Failed,
            "VertexJobPartiallySucceeded",
            with_error(
                format!("Vertex AI CustomJob {display} only partially succeeded"),
                &error_message,
            ),
            true,
            false,
        ),
        JobState::Expired => (
            JobPhase::Failed,
            "VertexJobExpired",
            with_error(
                format!(
                    "Vertex AI CustomJob {display} expired (ran past its scheduling timeout, spec.runPolicy.activeDeadlineSeconds)"
                ),
                &error_message,
            ),
            true,
            false,
        ),
        JobState::Cancelling => (
            JobPhase::Suspended,
            "VertexJobCancelling",
            format!("Vertex AI CustomJob {display} is being cancelled"),
            false,
            true,
        ),
        JobState::Cancelled => (
            JobPhase::Suspended,
            "VertexJobCancelled",
            format!("Vertex AI CustomJob {display} was cancelled"),
            true,
            true,
        ),
        JobState::Paused => (
            JobPhase::Suspended,
            "VertexJobPaused",
            format!("Vertex AI CustomJob {display} is paused"),
            false,
            false,
        ),
        _ => (
            JobPhase::Pending,
            "VertexJobStateUnknown",
            format!("Vertex AI CustomJob {display} reports state {state_name}"),
            false,
            false,
        ),
    };

    VertexObservation {
        phase,
        state: state_name,
        reason,
        message,
        name: custom_job.name.clone(),
        console_url: console_url(&custom_job.name),
        start_time: custom_job.start_time.map(String::from),
        end_time: custom_job.end_time.map(String::from),
        terminal,
        cancelled,
    }
}

/// [`observe`], knowing whether the job's spec asks for suspension: a CustomJob cancelled while
/// `spec.runPolicy.suspend` is false was cancelled behind the operator's back, which ends the
/// attempt as Failed (reason `VertexJobCancelled`) rather than Suspended.
pub fn observe_with_suspend(custom_job: &CustomJob, suspend: bool) -> VertexObservation {
    let mut seen = observe(custom_job);
    if seen.cancelled && !suspend && seen.terminal {
        seen.phase = JobPhase::Failed;
        seen.message = format!(
            "{}, but spec.runPolicy.suspend is false: cancelled outside the operator",
            seen.message
        );
    }
    seen
}

fn with_error(message: String, error: &Option<String>) -> String {
    match error {
        Some(e) => format!("{message}: {e}"),
        None => message,
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
            (JobState::Paused, Suspended, "VertexJobPaused", false),
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
}
