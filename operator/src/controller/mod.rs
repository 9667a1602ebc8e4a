//! The kube-runtime controller. A reconcile runs in three phases, each in its own module:
//! [`observe`] gathers what [`crate::decide`] needs (the job as accepted, its attempt, its
//! checkpoint manifest and progress), `decide` (pure) says what to do, and [`apply`] carries
//! it out (attempts started and stopped, status written with server-side apply, Events,
//! metrics). [`context`] holds what every reconcile shares.

mod apply;
mod context;
mod observe;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use mtl_crds::{Backend, JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use tracing::{Instrument, debug, info, info_span, warn};

pub use apply::patch_status;
pub use context::{Config, Context};

use crate::backend::vertex::VertexBackend;
use crate::backend::{AttemptBackend, AttemptState, ObservedAttempt};
use crate::decide::{self, Decision, ManifestRead, Note, Observation};
use crate::status;
#[cfg(test)]
use crate::status::cond;
use crate::{Error, Result};
use crate::{KUEUE_QUEUE_LABEL, LABEL_JOB};
use context::job_key;
#[cfg(test)]
use observe::manifest_due;

/// Finalizer of `backend: vertexAi` jobs: deleting one cancels its CustomJobs, which nothing
/// else would, before the job goes away. `backend: kubernetes` jobs carry none, as a Job
/// carries none: their pods and Services are owned by the job, and the garbage collector
/// deletes them gracefully (the trainer checkpoints on SIGTERM) once the job is gone. A
/// deletion then never waits for the operator, and a job costs no finalizer write. Jobs that
/// an older operator gave it are released.
pub const FINALIZER: &str = "multitask.dev/cleanup";
/// The annotation `kubectl apply` (client-side) keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Entry point for kube-runtime. A Vertex AI job's finalizer splits it into apply and
/// cleanup; a pods job has none (see [`FINALIZER`]).
pub async fn reconcile(job: Arc<MultiTaskTrainingJob>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!("reconcile", job = %job_key(&job), generation = job.metadata.generation);
    async move {
        let started = Instant::now();
        ctx.metrics.reconciles.inc();
        let ns = job.namespace().ok_or(Error::MissingField {
            kind: mtl_crds::KIND,
            field: "metadata.namespace",
        })?;
        let api: Api<MultiTaskTrainingJob> = Api::namespaced(ctx.client.clone(), &ns);
        let job = Arc::new(observe::as_accepted(&job, &ctx).await);
        let work = async {
            match job.spec.backend {
                Backend::Kubernetes => reconcile_pods(&api, &job, &ctx).await,
                Backend::VertexAi => finalizer(&api, FINALIZER, job.clone(), |event| async {
                    match event {
                        Finalizer::Apply(job) => {
                            let vertex = VertexBackend::new(ctx.vertex.clone());
                            reconcile_with(&vertex, &job, &ctx).await
                        }
                        Finalizer::Cleanup(job) => cleanup_vertex(&job, &ctx).await,
                    }
                })
                .await
                .map_err(|e| Error::Finalizer {
                    finalizer: FINALIZER,
                    source: Box::new(e),
                }),
            }
        };
        // A reconcile stuck on a call (a storage read, an API request the client does not
        // time out) must not hold its job, or a concurrency slot, forever.
        let limit = ctx.config.reconcile_timeout;
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                what: format!("reconciling {}", job_key(&job)),
                after: limit,
            }),
        };
        ctx.metrics.reconciled(Timestamp::now());
        // A reconcile that ran while its job was deleted may have remembered it after the
        // watch's Delete made the operator forget it: forget it again. (Its store entry goes
        // before the Delete is seen, so one of the two comes after every write.)
        if let Some(store) = ctx.job_store.get()
            && store.get(&reflector::ObjectRef::from_obj(&*job)).is_none()
        {
            ctx.forget(&job_key(&job));
        }
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }
    .instrument(span)
    .await
}

/// Requeue delay by error kind; counts the error.
pub fn error_policy(job: Arc<MultiTaskTrainingJob>, error: &Error, ctx: Arc<Context>) -> Action {
    let kind = error.kind();
    ctx.metrics.error(kind);
    warn!(job = %job_key(&job), error = %error, kind = kind.as_str(), "reconcile failed");
    Action::requeue(kind.requeue_after())
}

/// A pods job: released from the finalizer an older operator gave it, left to the garbage
/// collector once it is being deleted, reconciled otherwise.
async fn reconcile_pods(
    api: &Api<MultiTaskTrainingJob>,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
) -> Result<Action> {
    if let Some(i) = job.finalizers().iter().position(|f| f == FINALIZER) {
        // The same JSON patch kube-runtime's finalizer helper removes one with: the `test`
        // fails (422, retried) if someone changed the list meanwhile.
        use json_patch::{PatchOperation, RemoveOperation, TestOperation, jsonptr::PointerBuf};
        let path =
            PointerBuf::from_tokens(["metadata".to_string(), "finalizers".into(), i.to_string()]);
        let patch = json_patch::Patch(vec![
            PatchOperation::Test(TestOperation {
                path: path.clone(),
                value: FINALIZER.into(),
            }),
            PatchOperation::Remove(RemoveOperation { path }),
        ]);
        api.patch::<MultiTaskTrainingJob>(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Json(patch),
        )
        .await
        .map_err(|e| Error::Finalizer {
            finalizer: FINALIZER,
            source: Box::new(kube::runtime::finalizer::Error::RemoveFinalizer(e)),
        })?;
        info!("released the finalizer of an older operator; pods are garbage-collected");
        // The patch is a change of the job: its watch brings the next reconcile.
        return Ok(Action::await_change());
    }
    if job.meta().deletion_timestamp.is_some() {
        // Someone else's finalizer holds the job: start nothing; its pods go with it.
        return Ok(Action::await_change());
    }
    reconcile_with(&ctx.pods(), job, ctx).await
}

/// Cleans up a Vertex AI job being deleted: cancels every attempt's CustomJob (the trainer
/// checkpoints on SIGTERM); the finalizer stays until Vertex AI accepted.
async fn cleanup_vertex(job: &MultiTaskTrainingJob, ctx: &Context) -> Result<Action> {
    VertexBackend::new(ctx.vertex.clone()).cleanup(job).await?;
    apply::publish(
        ctx,
        job,
        &Note {
            warning: false,
            reason: "Deleting",
            message: "job deleted; stopped its attempts".into(),
        },
    )
    .await;
    ctx.forget(&job_key(job));
    Ok(Action::await_change())
}

/// One reconcile of a live job on backend `backend`: observe, decide, apply.
pub async fn reconcile_with<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
) -> Result<Action> {
    let old = ctx.current_status(job);
    if let Some((reason, message)) = observe::refusal(backend, job, ctx, &old).await? {
        return apply::fail_at_once(ctx, job, &old, reason, message).await;
    }
    let attempt = observe::attempt(backend, job, ctx, &old).await?;
    let manifest = observe::manifest(ctx, job, &old, attempt.as_ref()).await;
    let now = Timestamp::now();
    let mut decision = decide_now(backend, job, ctx, &old, attempt.as_ref(), &manifest, now);
    debug!(actions = ?decision.actions, phase = decision.status.phase.as_str(), "decided");
    apply::accept(ctx, job, &mut decision.status);
    let actions = &decision.actions;
    let started_as = observe::as_started(ctx, job, &old, actions, &mut decision.notes).await?;
    if let Some(done) = apply::carry_out(backend, &started_as, ctx, &old, &mut decision).await? {
        return Ok(done);
    }
    let job = &*started_as;
    let requeue_after = next_look(job, ctx, attempt.as_ref(), &mut decision, now).await;
    apply::write_status(ctx, job, &old, decision.status, &decision.notes, now).await?;
    Ok(match requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// [`decide::decide`] on what was observed.
fn decide_now<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    old: &MultiTaskTrainingJobStatus,
    attempt: Option<&ObservedAttempt>,
    manifest: &ManifestRead,
    now: Timestamp,
) -> Decision {
    let describe = |n: u32| backend.describe(job, n);
    decide::decide(&Observation {
        queued: job.spec.backend == Backend::Kubernetes
            && job.labels().contains_key(KUEUE_QUEUE_LABEL),
        spec: &job.spec,
        generation: job.metadata.generation,
        status: old,
        attempt,
        manifest,
        now,
        describe: &describe,
        poll_interval: ctx.config.poll_interval,
        backoff: ctx.config.backoff,
    })
}

/// When to look again: the decision's time, or sooner for the next read of a running job's
/// progress (folded into the status here); a CustomJob Vertex AI still queues or provisions
/// is looked at less and less often (its GETs count against a per-project quota), while a
/// shorter wait decided for a reason stays.
async fn next_look(
    job: &MultiTaskTrainingJob,
    ctx: &Context,
    attempt: Option<&ObservedAttempt>,
    decision: &mut Decision,
    now: Timestamp,
) -> Option<Duration> {
    let mut requeue_after = decision.requeue_after;
    let new = &mut decision.status;
    let running =
        attempt.is_some_and(|a| a.state == AttemptState::Running) && new.phase == JobPhase::Running;
    if let Some(after) = observe::fold_progress(ctx, job, new, running, now).await {
        requeue_after = Some(requeue_after.map_or(after, |r| r.min(after)));
    }
    if job.spec.backend == Backend::VertexAi
        && requeue_after == Some(ctx.config.poll_interval)
        && attempt.is_some_and(|a| a.state == AttemptState::Pending)
    {
        requeue_after = Some(crate::backend::vertex::next_look(
            ctx.config.poll_interval,
            true,
            status::parse_time(new.attempt_start_time.as_deref()),
            now,
        ));
    }
    requeue_after
}

/// Runs the controller until `shutdown` resolves. Watches jobs (in `namespace`, or all) and the
/// pods they own.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (jobs, pods): (Api<MultiTaskTrainingJob>, Api<Pod>) = match namespace {
        Some(ns) => (
            Api::namespaced(ctx.client.clone(), ns),
            Api::namespaced(ctx.client.clone(), ns),
        ),
        None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
    };
    // One watch of the jobs' pods feeds both the cache the pods backend reads (so a
    // reconcile GETs no pod the watch has seen) and the reconciles of their jobs, each
    // triggered after the cache holds the change. Managed fields and the trainer container's
    // arguments (the whole job spec) and environment are dropped: nothing reads them from the
    // cache, and they are most of a pod.
    let (store, writer) = reflector::store::<Pod>();
    let _ = ctx.pod_store.set(store);
    let pod_events = watcher(pods, watcher::Config::default().labels(LABEL_JOB))
        .default_backoff()
        .modify(|pod| {
            pod.managed_fields_mut().clear();
            for c in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
                c.args = None;
                c.env = None;
            }
        })
        .reflect(writer)
        .touched_objects();
    // The jobs' watch feeds the controller's store and trigger, and tells the operator to
    // forget a job when it is deleted (pods jobs have no finalizer, so no reconcile sees
    // them go), or when a new list no longer holds it (deleted while the watch was away).
    let (job_store, job_writer) = reflector::store::<MultiTaskTrainingJob>();
    let _ = ctx.job_store.set(job_store.clone());
    // Managed fields and `kubectl apply`'s last-applied-configuration annotation (a second
    // copy of the spec) are dropped from the cached jobs too: nothing reads them.
    let job_events = watcher(jobs, watcher::Config::default())
        .default_backoff()
        .modify(|job| {
            job.managed_fields_mut().clear();
            job.annotations_mut().remove(LAST_APPLIED);
        })
        .reflect(job_writer)
        .inspect_ok({
            let (ctx, store) = (ctx.clone(), job_store.clone());
            move |event| match event {
                watcher::Event::Delete(job) => ctx.forget(&job_key(job)),
                watcher::Event::InitDone => {
                    let live = store.state().iter().map(|j| job_key(j)).collect();
                    ctx.forget_all_but(&live);
                }
                _ => {}
            }
        })
        .applied_objects();
    Controller::for_stream(job_events, job_store)
        .owns_stream(pod_events)
        .with_config(controller::Config::default().concurrency(ctx.config.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(job = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "controller"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
