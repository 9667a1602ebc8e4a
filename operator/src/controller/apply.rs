//! The apply phase of a reconcile: what [`crate::decide`] decided, carried out: attempts
//! started and stopped, the job deleted after its TTL, the status written with server-side
//! apply, Events recorded, metrics set.

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use mtl_crds::{JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use tracing::{info, warn};

use super::context::{Context, job_key};
use crate::backend::AttemptBackend;
use crate::decide::{self, Decision, Note};
use crate::status::{self, cond};
use crate::{Error, FIELD_MANAGER, Result};

/// A call for `job` failed: the `Synced` condition (False, `reason`, what was done and the
/// API's message) on the status as it was, and a Warning Event, so `kubectl describe` shows
/// why nothing happens; then the error goes back to the controller to be retried. A failure to
/// record it is logged only.
pub(super) async fn report_failure(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    old: &MultiTaskTrainingJobStatus,
    reason: &'static str,
    what: &str,
    e: Error,
) -> Error {
    let message = format!("{what}: {e}");
    let mut st = old.clone();
    let changed = status::find(&st, cond::SYNCED)
        .is_none_or(|c| c.status != "False" || c.reason != reason || c.message != message);
    if changed {
        status::set(
            &mut st,
            cond::SYNCED,
            false,
            reason,
            message.clone(),
            Timestamp::now(),
        );
        if let Err(pe) = patch_status(ctx, job, &st).await {
            warn!(error = %pe, "could not record the failure in status");
        }
        publish(
            ctx,
            job,
            &Note {
                warning: true,
                reason,
                message,
            },
        )
        .await;
    }
    e
}

/// Carries out `actions` on `backend`. `Ok(Some(_))`: the reconcile ends there (the backend
/// refused the start as written, and the job failed at once).
pub(super) async fn carry_out<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    old: &MultiTaskTrainingJobStatus,
    decision: &mut Decision,
) -> Result<Option<Action>> {
    for action in std::mem::take(&mut decision.actions) {
        match action {
            decide::Action::StartAttempt(n) => {
                if let Err(e) = backend.start(job, n, &mut decision.status).await {
                    return start_failed(backend, job, ctx, old, n, e).await.map(Some);
                }
                info!(attempt = n, "started attempt");
            }
            decide::Action::StopAttempt { attempt, name } => {
                backend.stop(job, attempt, &name).await?;
                info!(attempt, pod = %name, "stopped attempt");
                decision.notes.push(Note {
                    warning: false,
                    reason: "Stopping",
                    message: format!("stopping {}", backend.describe(job, attempt)),
                });
            }
            decide::Action::DeleteJob => delete_job(ctx, job).await?,
        }
    }
    Ok(None)
}

/// A start that failed: a request the backend refused as written (Vertex AI's 400) fails the
/// job with its message, since the same request cannot succeed; anything else is reported
/// and retried. Nothing of the decision is kept (the backend took back what it made): the
/// next reconcile decides again, and finishes a start cut short.
async fn start_failed<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    old: &MultiTaskTrainingJobStatus,
    attempt: u32,
    e: Error,
) -> Result<Action> {
    if e.is_refused_spec() {
        let message = match &e {
            Error::Vertex { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        return fail_at_once(ctx, job, old, "InvalidSpec", message).await;
    }
    let what = format!("creating {}", backend.describe(job, attempt));
    Err(report_failure(ctx, job, old, "CreateFailed", &what, e).await)
}

/// `ttlSecondsAfterFinished` elapsed: the job goes (already gone is fine).
async fn delete_job(ctx: &Context, job: &MultiTaskTrainingJob) -> Result<()> {
    let api: Api<MultiTaskTrainingJob> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    match api
        .delete(&job.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => info!("ttlSecondsAfterFinished elapsed; deleted job"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// From now on the job runs as it is now (see `observe::as_accepted`), signed so that
/// nobody else can change what that is.
pub(super) fn accept(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    new: &mut MultiTaskTrainingJobStatus,
) {
    if new.accepted_spec.is_some() {
        return;
    }
    new.accepted_spec = serde_json::to_value(&job.spec).ok();
    new.accepted_spec_digest = ctx
        .config
        .accepted_spec_key
        .as_ref()
        .zip(new.accepted_spec.as_ref())
        .map(|(key, spec)| key.sign(&job.uid().unwrap_or_default(), spec));
}

/// Writes the new status when it changed (`Synced` True: this reconcile's calls worked),
/// records its Events and sets the job's metrics.
pub(super) async fn write_status(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    old: &MultiTaskTrainingJobStatus,
    mut new: MultiTaskTrainingJobStatus,
    notes: &[Note],
    now: Timestamp,
) -> Result<()> {
    if status::find(&new, cond::SYNCED).is_some_and(|c| c.status != "True") {
        status::set(&mut new, cond::SYNCED, true, "Synced", "", now);
    }
    if new != *old {
        patch_status(ctx, job, &new).await?;
        ctx.metrics.observe_transition(old, &new, now);
    }
    for note in notes {
        publish(ctx, job, note).await;
    }
    ctx.metrics.set_job_phase(&job_key(job), new.phase);
    ctx.metrics.set_job(&job_key(job), &new);
    Ok(())
}

/// Fails a job that retrying will not fix, with `reason` and `message` (status, a Warning
/// Event, metrics), instead of looping.
pub(super) async fn fail_at_once(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    old: &MultiTaskTrainingJobStatus,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    let mut new = old.clone();
    new.observed_generation = job.metadata.generation;
    mark_invalid(&mut new, reason, &message, Timestamp::now());
    patch_status(ctx, job, &new).await?;
    publish(
        ctx,
        job,
        &Note {
            warning: true,
            reason,
            message,
        },
    )
    .await;
    ctx.metrics.set_job_phase(&job_key(job), new.phase);
    ctx.metrics.set_job(&job_key(job), &new);
    Ok(Action::await_change())
}

/// A job that cannot or may not run as written: `Failed`, with `reason` (`InvalidSpec`,
/// `PolicyViolation`, ...) and the message in its Failed condition.
fn mark_invalid(st: &mut MultiTaskTrainingJobStatus, reason: &str, message: &str, now: Timestamp) {
    st.phase = JobPhase::Failed;
    st.completion_time = Some(status::format_time(now));
    status::set(st, cond::FAILED, true, reason, message, now);
    status::clear(st, cond::CREATED, reason, "", now);
}

/// Writes `.status` with server-side apply under [`FIELD_MANAGER`].
pub async fn patch_status(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    status: &MultiTaskTrainingJobStatus,
) -> Result<()> {
    let api: Api<MultiTaskTrainingJob> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": MultiTaskTrainingJob::api_version(&()),
        "kind": MultiTaskTrainingJob::kind(&()),
        "status": status,
    });
    let written = api
        .patch_status(
            &job.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    // The resourceVersions the job has had since this operator's writes began: the one the
    // first went over and each write's. The cache may still show an earlier write of ours
    // after a later one was made; any of them is older than the status written last.
    if let Some(over) = job.resource_version() {
        let after = written.resource_version();
        ctx.remember(&job_key(job), |m| {
            let mut seen = match m.written.take() {
                Some((seen, _)) if seen.contains(&over) => seen,
                _ => vec![over],
            };
            seen.extend(after);
            let extra = seen.len().saturating_sub(WRITES_REMEMBERED);
            seen.drain(..extra);
            m.written = Some((seen, status.clone()));
        });
    }
    Ok(())
}

/// The resourceVersions of a job's own status writes remembered (the cache is behind by a few
/// writes at most).
const WRITES_REMEMBERED: usize = 8;

/// Records a Kubernetes Event on the job. Events are best effort: a failure is logged, not fatal.
pub(super) async fn publish(ctx: &Context, job: &MultiTaskTrainingJob, note: &Note) {
    if note.warning {
        warn!(reason = note.reason, message = %note.message, "event");
    } else {
        info!(reason = note.reason, message = %note.message, "event");
    }
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.into(),
        note: Some(truncate(&note.message, 1000)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &job.object_ref(&())).await {
        warn!(error = %e, reason = note.reason, "could not record event");
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
