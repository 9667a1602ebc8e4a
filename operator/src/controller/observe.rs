//! The observation phase of a reconcile: the job as accepted, whether it may run at all,
//! its current attempt, its checkpoint manifest and its progress, gathered for
//! [`crate::decide`].

use std::borrow::Cow;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use mtl_crds::{Backend, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::{Manifest, Progress, Storage};
use tracing::{debug, warn};

use super::apply::{publish, report_failure};
use super::context::{Context, ProgressSeen, job_key};
use crate::backend::{AttemptBackend, ObservedAttempt};
use crate::decide::{self, ManifestRead, Note};
use crate::status::{self, cond};
use crate::{Error, Result};

/// The job as it runs: its spec as first accepted (`.status.acceptedSpec`) with its current
/// `runPolicy`. The CRD's transition rules refuse a change to any other field; where an API
/// server let one through (rules not enforced), the change is ignored and a Warning Event names
/// the changed fields, once per generation. A job not accepted yet runs as it is, with the
/// operator's `--default-image` when it names no image (the accepted spec then keeps that
/// image, whatever the flag says later).
pub(super) async fn as_accepted(job: &MultiTaskTrainingJob, ctx: &Context) -> MultiTaskTrainingJob {
    let mut current = job.clone();
    let status = ctx.current_status(job);
    let accepted = match acceptance(ctx, job, &status) {
        Acceptance::Verified => status.accepted_spec,
        // Run nothing from it: the job fails (see [`refusal`]), and stops what runs
        // by its own spec, which the CRD keeps as created.
        Acceptance::Unverified | Acceptance::None => None,
    };
    let accepted = accepted.and_then(|a| {
        serde_json::from_value::<mtl_crds::MultiTaskTrainingJobSpec>(a)
            .inspect_err(|e| {
                warn!(error = %e, "status.acceptedSpec does not parse; running the job as it is");
            })
            .ok()
    });
    let Some(accepted) = accepted else {
        if current.spec.image.is_none() {
            current.spec.image = ctx.config.default_image.clone();
        }
        return current;
    };
    if current.spec.image.is_none() {
        // Defaulted when accepted: an unset image is not a change.
        current.spec.image = accepted.image.clone();
    }
    let (spec, changed) = current.spec.against_accepted(&accepted);
    let seen = job.status.as_ref().and_then(|s| s.observed_generation);
    if !changed.is_empty() && seen != job.metadata.generation {
        publish(
            ctx,
            job,
            &Note {
                warning: true,
                reason: "SpecChangeIgnored",
                message: format!(
                    "{} changed after the job was created; the job keeps running as created \
                     (only spec.runPolicy can change: delete and re-create the job to change the rest)",
                    changed.join(", ")
                ),
            },
        )
        .await;
    }
    current.spec = spec;
    current
}

/// Whether a job's `status.acceptedSpec` is the operator's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Acceptance {
    /// Not accepted yet: no accepted spec.
    None,
    /// Signed by this operator's key (or no key is configured, and nothing is verified).
    Verified,
    /// Present but not signed by this operator's key: written by someone else.
    Unverified,
}

/// How `status` (the job's as it is now) holds the job's accepted spec.
fn acceptance(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    st: &MultiTaskTrainingJobStatus,
) -> Acceptance {
    let Some(spec) = st.accepted_spec.as_ref() else {
        return Acceptance::None;
    };
    let Some(key) = ctx.config.accepted_spec_key.as_ref() else {
        return Acceptance::Verified;
    };
    let uid = job.uid().unwrap_or_default();
    match st.accepted_spec_digest.as_deref() {
        Some(digest) if key.verify(&uid, spec, digest) => Acceptance::Verified,
        _ => Acceptance::Unverified,
    }
}

/// Why a job whose accepted spec does not verify is not run.
const UNVERIFIED_ACCEPTED_SPEC: &str = "status.acceptedSpec does not carry the operator's signature (status.acceptedSpecDigest): it was written by someone other than the operator, or signed with another key. The job is not run; delete and re-create it";

/// Why the job may not run at all, if it may not: an accepted spec someone else signed, a
/// spec the trainer or `backend` would reject, or one the policy does not allow. Nothing for
/// a finished job.
pub(super) async fn refusal<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    old: &MultiTaskTrainingJobStatus,
) -> Result<Option<(&'static str, String)>> {
    if old.phase.is_finished() {
        return Ok(None);
    }
    let acceptance = acceptance(ctx, job, old);
    if acceptance == Acceptance::Unverified {
        return Ok(Some((
            "AcceptedSpecUnverified",
            UNVERIFIED_ACCEPTED_SPEC.to_string(),
        )));
    }
    if let Err(Error::InvalidSpec { message, .. }) = validate(backend, job) {
        return Ok(Some(("InvalidSpec", message)));
    }
    let accepted = acceptance == Acceptance::Verified;
    match policy_refusal(ctx, job, accepted).await {
        Ok(refusal) => Ok(refusal.map(|message| ("PolicyViolation", message))),
        Err(e) => {
            let what = "reading the namespace's MultiTaskTrainingPolicy";
            Err(report_failure(ctx, job, old, "PolicyReadFailed", what, e).await)
        }
    }
}

/// The job's current attempt as `backend` sees it (none before the first).
pub(super) async fn attempt<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    old: &MultiTaskTrainingJobStatus,
) -> Result<Option<ObservedAttempt>> {
    if old.attempt == 0 {
        return Ok(None);
    }
    match backend.observe(job, old.attempt).await {
        Ok(o) => Ok(o),
        Err(e) => {
            let what = format!("looking up {}", backend.describe(job, old.attempt));
            Err(report_failure(ctx, job, old, "ObserveFailed", &what, e).await)
        }
    }
}

/// The checkpoint manifest, when [`manifest_due`].
pub(super) async fn manifest(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    old: &MultiTaskTrainingJobStatus,
    attempt: Option<&ObservedAttempt>,
) -> ManifestRead {
    if !manifest_due(ctx, job, old, attempt) {
        return ManifestRead::NotRead;
    }
    ctx.metrics.manifest_reads.inc();
    read_manifest(
        &ctx.storage,
        &job.spec.checkpoints.uri,
        ctx.config.manifest_timeout,
    )
    .await
}

/// The job as its attempts start: labels can change after acceptance, so an attempt starts
/// with a Kueue priority the policy allows now, or without one (and a Warning in `notes`).
/// The job as it is when `actions` start nothing.
pub(super) async fn as_started<'a>(
    ctx: &Context,
    job: &'a MultiTaskTrainingJob,
    old: &MultiTaskTrainingJobStatus,
    actions: &[decide::Action],
    notes: &mut Vec<Note>,
) -> Result<Cow<'a, MultiTaskTrainingJob>> {
    if !actions
        .iter()
        .any(|a| matches!(a, decide::Action::StartAttempt(_)))
    {
        return Ok(Cow::Borrowed(job));
    }
    match allowed_priority(ctx, job).await {
        Ok(None) => Ok(Cow::Borrowed(job)),
        Ok(Some((stripped, note))) => {
            notes.push(note);
            Ok(Cow::Owned(stripped))
        }
        Err(e) => {
            let what = "reading the namespace's MultiTaskTrainingPolicy";
            Err(report_failure(ctx, job, old, "PolicyReadFailed", what, e).await)
        }
    }
}

/// Whether this reconcile reads the checkpoint manifest: while the job can still change, at
/// most once per [`super::Config::manifest_poll`] (so the reconcile caused by our own status write
/// reads nothing), and once more when an attempt has ended (the final read, which says whether
/// the trainer stopped early), not on every look while it waits out a backoff or a teardown. Never for checkpoints on a PersistentVolumeClaim, which the
/// operator does not mount. Records the read.
pub(super) fn manifest_due(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    status: &MultiTaskTrainingJobStatus,
    attempt: Option<&crate::backend::ObservedAttempt>,
) -> bool {
    if !decide::needs_manifest(status) || job.spec.checkpoints.persistent_volume_claim.is_some() {
        return false;
    }
    let ended = attempt.filter(|a| a.state.is_terminal()).map(|a| a.attempt);
    ctx.remember(&job_key(job), |m| {
        let final_read = ended.is_some() && m.manifest_read_after != ended;
        let due = final_read
            || m.manifest_read_at
                .is_none_or(|at| at.elapsed() >= ctx.config.manifest_poll);
        if due {
            m.manifest_read_at = Some(Instant::now());
        }
        if final_read {
            m.manifest_read_after = ended;
        }
        due
    })
}

async fn read_manifest(storage: &Storage, uri: &str, timeout: Duration) -> ManifestRead {
    match tokio::time::timeout(timeout, Manifest::load(storage, uri)).await {
        Ok(Ok(Some(m))) => ManifestRead::Found(m),
        Ok(Ok(None)) => ManifestRead::Missing,
        Ok(Err(e)) => ManifestRead::Failed(e.to_string()),
        Err(_) => ManifestRead::Failed(format!(
            "{}: reading the checkpoint manifest took longer than {}s",
            mtl_storage::join(uri, mtl_storage::MANIFEST_NAME),
            timeout.as_secs()
        )),
    }
}

/// What the trainer would reject before its first step, then what `backend` cannot run.
fn validate<B: AttemptBackend>(backend: &B, job: &MultiTaskTrainingJob) -> Result<()> {
    job.spec.validate().map_err(|errors| Error::InvalidSpec {
        job: job.name_any(),
        message: errors.to_string(),
    })?;
    backend.validate(job)
}

/// What the policy does not allow, judged when the job is accepted (before its accepted spec
/// is written): a policy tightened later does not fail a job already accepted, which gets one
/// Warning Event instead (when this operator first looks at it) and runs on as accepted.
async fn policy_refusal(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    accepted: bool,
) -> Result<Option<String>> {
    let key = job_key(job);
    if accepted && ctx.remember(&key, |m| m.policy_checked) {
        return Ok(None);
    }
    let namespace = namespace_policy(ctx, job).await?;
    let Err(message) = ctx
        .config
        .policy
        .check(namespace.as_ref(), &job.spec, job.labels())
    else {
        ctx.remember(&key, |m| m.policy_checked = true);
        return Ok(None);
    };
    if !accepted {
        return Ok(Some(message));
    }
    ctx.remember(&key, |m| m.policy_checked = true);
    let note = Note {
        warning: true,
        reason: "PolicyChanged",
        message: format!(
            "the policy no longer allows this job ({message}); it was accepted before and runs on as accepted"
        ),
    };
    publish(ctx, job, &note).await;
    Ok(None)
}

/// A pods job whose Kueue priority label the policy no longer allows, without it, and the
/// Warning to tell; `None` when the label is allowed or absent (one policy read then).
async fn allowed_priority(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
) -> Result<Option<(MultiTaskTrainingJob, Note)>> {
    let label = crate::policy::WORKLOAD_PRIORITY_LABEL;
    if job.spec.backend != Backend::Kubernetes || !job.labels().contains_key(label) {
        return Ok(None);
    }
    let namespace = namespace_policy(ctx, job).await?;
    let Err(message) = ctx
        .config
        .policy
        .check_labels(namespace.as_ref(), job.labels())
    else {
        return Ok(None);
    };
    let mut stripped = job.clone();
    stripped.labels_mut().remove(label);
    let note = Note {
        warning: true,
        reason: "PolicyChanged",
        message: format!(
            "{message}: the attempt starts without that label (at the queue's default priority)"
        ),
    };
    Ok(Some((stripped, note)))
}

/// The job's namespace's `MultiTaskTrainingPolicy` named `default`, if it has one (none
/// either when the namespace has none or the policy CRD is not installed).
async fn namespace_policy(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
) -> Result<Option<mtl_crds::PolicySpec>> {
    let api: Api<mtl_crds::MultiTaskTrainingPolicy> =
        Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    Ok(api.get_opt(mtl_crds::POLICY_NAME).await?.map(|p| p.spec))
}

/// While an attempt runs: reads `progress.json` when [`super::Config::progress_poll`] has passed
/// since the last read (so the reconcile caused by our own status write reads nothing), folds
/// it into `.status.progress`, and sets `Stalled` when it stopped changing. Returns when to
/// look again. A failed read keeps the last progress; the manifest's condition reports storage
/// trouble.
pub(super) async fn fold_progress(
    ctx: &Context,
    job: &MultiTaskTrainingJob,
    st: &mut MultiTaskTrainingJobStatus,
    running: bool,
    now: Timestamp,
) -> Option<Duration> {
    let key = job_key(job);
    let interval = job.spec.checkpoints.progress_every_seconds;
    // Progress on a PersistentVolumeClaim is out of the operator's reach, like the manifest.
    let running = running && job.spec.checkpoints.persistent_volume_claim.is_none();
    if !running {
        ctx.remember(&key, |m| m.progress = None);
        crate::progress::fold_stalled(st, false, None, interval, now);
        return None;
    }
    let seen = ctx.remember(&key, |m| m.progress.clone());
    let poll = ctx.config.progress_poll;
    let due = seen.as_ref().is_none_or(|s| s.read_at.elapsed() >= poll);
    let mut changed_at = seen.as_ref().map(|s| s.changed_at);
    if due {
        ctx.metrics.progress_reads.inc();
        let read = tokio::time::timeout(
            ctx.config.manifest_timeout,
            Progress::load(&ctx.storage, &job.spec.checkpoints.uri),
        )
        .await;
        let mut entry = seen.clone().unwrap_or(ProgressSeen {
            read_at: Instant::now(),
            updated_at: String::new(),
            changed_at: now,
        });
        entry.read_at = Instant::now();
        match read {
            Ok(Ok(Some(p))) => {
                if p.updated_at != entry.updated_at {
                    entry.changed_at = if seen.is_none() {
                        // First read since a restart: the status says how long it has
                        // not changed.
                        crate::progress::changed_at_after_restart(
                            st.progress.as_ref(),
                            &p.updated_at,
                            now,
                        )
                    } else {
                        now
                    };
                    entry.updated_at = p.updated_at.clone();
                }
                let fresh = crate::progress::to_status(&p, now);
                let since = ctx.remember(&key, |m| m.progress_written_at.map(|t| t.elapsed()));
                if crate::progress::should_write(
                    st.progress.as_ref(),
                    &fresh,
                    since,
                    ctx.config.progress_write,
                ) {
                    st.progress = Some(fresh);
                    ctx.remember(&key, |m| m.progress_written_at = Some(Instant::now()));
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => debug!(error = %e, "progress object unreadable"),
            Err(_) => debug!("reading the progress object timed out"),
        }
        changed_at = Some(entry.changed_at);
        ctx.remember(&key, |m| m.progress = Some(entry));
    }
    // Counted from when the attempt started running if the object has not changed since.
    let running_since = status::find(st, cond::RUNNING)
        .filter(|c| c.status == "True")
        .and_then(|c| status::parse_time(Some(&c.last_transition_time)));
    let unchanged_since = match (changed_at, running_since) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    crate::progress::fold_stalled(st, true, unchanged_since, interval, now);
    Some(poll)
}
