//! [`VertexBackend`]: the controller's [`AttemptBackend`] for `spec.backend: vertexAI`.
//!
//! One attempt is one CustomJob. `start` adopts-or-creates it (so an operator restart between
//! the create and the status write leaves one CustomJob), `observe` reads it back as an
//! [`ObservedAttempt`], `stop` cancels it, and `cleanup` (the finalizer) cancels every CustomJob
//! of the object and succeeds only once Vertex AI has accepted each cancellation or reports the
//! job finished or gone; until then the finalizer stays.

use std::sync::Arc;

use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use tracing::info;

use super::client::{StopState, VertexClients};
use super::custom_job::{attempt_label, display_name, validate_for_vertex};
use super::error::Error as VertexError;
use super::observe::{observe, observed_attempt};
use crate::backend::{AttemptBackend, ObservedAttempt};
use k8s_openapi::jiff::Timestamp;

/// The Vertex AI backend, sharing one client per region across reconciles.
#[derive(Clone, Debug)]
pub struct VertexBackend {
    pub clients: Arc<VertexClients>,
}

impl VertexBackend {
    pub fn new(clients: Arc<VertexClients>) -> Self {
        Self { clients }
    }

    /// Cancels every CustomJob of `job` (its finalizer, when the job is deleted).
    pub async fn cleanup(&self, job: &MultiTaskTrainingJob) -> crate::Result<()> {
        if validate_for_vertex(job).is_err() {
            // Without project and region nothing can have been created.
            return Ok(());
        }
        let client = self
            .clients
            .for_job(job)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        match client
            .stop(job)
            .await
            .map_err(|e| into_operator_error(job, e))?
        {
            StopState::Stopped => info!(job = %job_key(job), "no Vertex AI CustomJob left running"),
            StopState::Stopping { names } => {
                info!(job = %job_key(job), ?names, "Vertex AI accepted the cancellation")
            }
        }
        Ok(())
    }
}

fn job_key(job: &MultiTaskTrainingJob) -> String {
    format!(
        "{}/{}",
        job.metadata.namespace.as_deref().unwrap_or("default"),
        job.metadata.name.as_deref().unwrap_or("")
    )
}

/// Maps a Vertex error onto the operator's error: a spec that fails validation (no request
/// sent) is `InvalidSpec`; everything Vertex AI answered keeps its class in `Error::Vertex`
/// (see `Error::kind`, `Error::is_refused_spec`).
pub fn into_operator_error(job: &MultiTaskTrainingJob, e: VertexError) -> crate::Error {
    match e {
        VertexError::InvalidSpec { message, .. } => crate::Error::InvalidSpec {
            job: job_key(job),
            message,
        },
        other => crate::Error::Vertex {
            job: job_key(job),
            source: Box::new(other),
        },
    }
}

/// The job as its next CustomJob is built at `now`: `runPolicy.activeDeadlineSeconds` cut to
/// what is left of it since the job started (`start`), so the CustomJob's
/// `scheduling.timeout` ends with the job's deadline rather than a whole deadline later.
pub fn with_remaining_deadline<'a>(
    job: &'a MultiTaskTrainingJob,
    start: Option<&str>,
    now: Timestamp,
) -> std::borrow::Cow<'a, MultiTaskTrainingJob> {
    let (Some(deadline), Some(start)) = (
        job.spec.run_policy.active_deadline_seconds,
        crate::status::parse_time(start),
    ) else {
        return std::borrow::Cow::Borrowed(job);
    };
    let used = start.duration_until(now).as_secs().max(0);
    let mut cut = job.clone();
    cut.spec.run_policy.active_deadline_seconds = Some((deadline - used).max(1));
    std::borrow::Cow::Owned(cut)
}

/// How long to wait before looking at a CustomJob again: `poll` while it runs; while Vertex
/// AI still queues or provisions it (`pending`, since `since`), the time it has waited, from
/// `poll` up to 5 minutes: a job queued for quota for hours costs a few GETs an hour, not
/// one every `poll`.
pub fn next_look(
    poll: std::time::Duration,
    pending: bool,
    since: Option<Timestamp>,
    now: Timestamp,
) -> std::time::Duration {
    const MAX: std::time::Duration = std::time::Duration::from_secs(300);
    let waited = since.map(|s| s.duration_until(now).as_secs().max(0) as u64);
    match (pending, waited) {
        (true, Some(w)) => std::time::Duration::from_secs(w).clamp(poll, MAX.max(poll)),
        _ => poll,
    }
}

impl AttemptBackend for VertexBackend {
    fn describe(&self, job: &MultiTaskTrainingJob, attempt: u32) -> String {
        format!("Vertex AI CustomJob {}", display_name(job, attempt))
    }

    fn validate(&self, job: &MultiTaskTrainingJob) -> crate::Result<()> {
        validate_for_vertex(job).map(|_| ()).map_err(|e| match e {
            VertexError::InvalidSpec { job, message } => crate::Error::InvalidSpec { job, message },
            other => into_operator_error(job, other),
        })
    }

    async fn observe(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> crate::Result<Option<ObservedAttempt>> {
        let client = self
            .clients
            .for_job(job)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        let status = job.status.as_ref();
        let saved = status
            .filter(|s| s.attempt == attempt)
            .and_then(|s| s.vertex_job_name.as_deref());
        // The saved name is the cheap path; the label search covers a name that never reached
        // the status (or a status from an older attempt).
        let found = match saved {
            Some(name) => match client.get(name).await {
                Ok(Some(cj)) if attempt_label(&cj).is_none_or(|a| a == attempt) => Some(cj),
                Ok(_) => client
                    .find(job, attempt)
                    .await
                    .map_err(|e| into_operator_error(job, e))?,
                Err(e) => return Err(into_operator_error(job, e)),
            },
            None => client
                .find(job, attempt)
                .await
                .map_err(|e| into_operator_error(job, e))?,
        };
        Ok(found.map(|cj| observed_attempt(&cj, attempt)))
    }

    async fn start(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        status: &mut MultiTaskTrainingJobStatus,
    ) -> crate::Result<()> {
        let client = self
            .clients
            .for_job(job)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        let job = &with_remaining_deadline(job, status.start_time.as_deref(), Timestamp::now());
        let submitted = client
            .ensure_created(job, attempt)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        let seen = observe(&submitted.custom_job);
        status.vertex_job_name = Some(submitted.custom_job.name.clone());
        status.vertex_job_console_url = seen.console_url;
        Ok(())
    }

    async fn stop(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        name: &str,
    ) -> crate::Result<()> {
        let client = self
            .clients
            .for_job(job)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        let outcome = client
            .cancel(name)
            .await
            .map_err(|e| into_operator_error(job, e))?;
        info!(job = %job_key(job), attempt, %name, ?outcome, "stopping Vertex AI CustomJob");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_custom_job_gets_what_is_left_of_the_deadline() {
        let mut job = crate::fixtures::test_job();
        job.spec.run_policy.active_deadline_seconds = Some(3600);
        let start = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| crate::status::add_seconds(start, s);
        let text = crate::status::format_time(start);
        let deadline = |j: &MultiTaskTrainingJob| j.spec.run_policy.active_deadline_seconds;
        assert_eq!(
            deadline(&with_remaining_deadline(&job, Some(&text), at(0))),
            Some(3600)
        );
        assert_eq!(
            deadline(&with_remaining_deadline(&job, Some(&text), at(1000))),
            Some(2600)
        );
        assert_eq!(
            deadline(&with_remaining_deadline(&job, Some(&text), at(5000))),
            Some(1)
        );
        assert_eq!(
            deadline(&with_remaining_deadline(&job, None, at(1000))),
            Some(3600)
        );
        job.spec.run_policy.active_deadline_seconds = None;
        assert_eq!(
            deadline(&with_remaining_deadline(&job, Some(&text), at(10))),
            None
        );
    }

    #[test]
    fn polling_backs_off_while_vertex_queues() {
        let poll = std::time::Duration::from_secs(30);
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |s: i64| crate::status::add_seconds(t0, s);
        let secs = |d: std::time::Duration| d.as_secs();
        // Queued: 30 s, then the time waited (each look about doubles it), up to 5 minutes.
        let mut looks = Vec::new();
        let mut now = 0;
        while now < 3600 {
            let wait = secs(next_look(poll, true, Some(t0), at(now)));
            looks.push(wait);
            now += wait as i64;
        }
        assert_eq!(&looks[..5], [30, 30, 60, 120, 240]);
        assert!(looks[5..].iter().all(|&w| w == 300), "{looks:?}");
        assert!(
            looks.len() < 20,
            "{} looks in an hour, not 120",
            looks.len()
        );
        // Running: every poll.
        assert_eq!(secs(next_look(poll, false, Some(t0), at(3000))), 30);
        assert_eq!(secs(next_look(poll, true, None, at(3000))), 30);
    }
}
