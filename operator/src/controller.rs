//! The kube-runtime controller: gathers what [`crate::decide`] needs, carries out its actions,
//! writes status with server-side apply and records Events.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use mtl_crds::{Backend, JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::{Manifest, Progress, Storage};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backend::AttemptBackend;
use crate::backend::pods::{LABEL_JOB, PodOptions, Pods};
use crate::backend::vertex::{VertexBackend, VertexClients};
use crate::decide::{self, Decision, ManifestRead, Note, Observation};
use crate::metrics::Metrics;
use crate::status::{self, cond};
use crate::{Error, FIELD_MANAGER, Result};

/// Finalizer of `backend: vertexAi` jobs: deleting one cancels its CustomJobs, which nothing
/// else would, before the job goes away. `backend: kubernetes` jobs carry none, as a Job
/// carries none: their pods and Services are owned by the job, and the garbage collector
/// deletes them gracefully (the trainer checkpoints on SIGTERM) once the job is gone. A
/// deletion then never waits for the operator, and a job costs no finalizer write. Jobs that
/// an older operator gave it are released.
pub const FINALIZER: &str = "multitask.dev/cleanup";
/// The annotation `kubectl apply` (client-side) keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Tunables of the reconciler.
#[derive(Clone, Debug)]
pub struct Config {
    pub pod: PodOptions,
    /// How often a live job is looked at (its attempt observed, the manifest maybe read).
    pub poll_interval: Duration,
    /// At most one read of a live job's checkpoint manifest per this long.
    pub manifest_poll: Duration,
    /// Upper bound on one manifest read.
    pub manifest_timeout: Duration,
    /// Reconciles in flight at once (0: unbounded). A burst of new jobs then queues instead
    /// of holding every job's requests and buffers in memory at the same time.
    pub concurrency: u16,
    /// At most one read of a running job's `progress.json` per this long.
    pub progress_poll: Duration,
    /// `.status.progress` is rewritten on each whole percent, or after this long: not on
    /// every read (`--progress-write-seconds`).
    pub progress_write: Duration,
    /// One reconcile may take at most this long; past it, it is abandoned and retried.
    pub reconcile_timeout: Duration,
    /// `/healthz` fails after this long without a completed reconcile while jobs are live.
    pub healthz_stall: Duration,
    /// The wait between a failed attempt and the next.
    pub backoff: crate::backoff::Backoff,
    /// Trainer image of a job whose spec names none (`--default-image`).
    pub default_image: Option<String>,
    /// What jobs may ask for: the default policy and the volume types allowed
    /// (`--policy-file`, `--allow-volume-types`); namespaces override it with their own.
    pub policy: crate::policy::Policy,
    /// The key `status.acceptedSpec` is signed with (`--accepted-spec-key-file`). Unset: the
    /// accepted spec is neither signed nor verified (anyone who may write a job's `/status`
    /// decides what it runs).
    pub accepted_spec_key: Option<crate::accepted::AcceptedSpecKey>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            pod: PodOptions::default(),
            poll_interval: Duration::from_secs(30),
            manifest_poll: Duration::from_secs(30),
            manifest_timeout: Duration::from_secs(20),
            concurrency: 16,
            progress_poll: Duration::from_secs(30),
            progress_write: Duration::from_secs(120),
            reconcile_timeout: Duration::from_secs(300),
            healthz_stall: Duration::from_secs(600),
            backoff: Default::default(),
            default_image: None,
            policy: Default::default(),
            accepted_spec_key: None,
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub storage: Storage,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Vertex AI clients, one per region (regional endpoints with ADC, or
    /// `MTL_VERTEX_ENDPOINT` for a stand-in).
    pub vertex: Arc<VertexClients>,
    /// What the operator remembers of each job (`namespace/name`) between reconciles;
    /// forgotten when the job is deleted ([`Context::forget`]).
    memory: Mutex<HashMap<String, JobMemory>>,
    /// The pods the controller watches, once [`run`] started the watch.
    pod_store: OnceLock<Store<Pod>>,
    /// The jobs the controller watches, once [`run`] started the watch.
    job_store: OnceLock<Store<MultiTaskTrainingJob>>,
}

/// What the operator remembers of one job between reconciles, by its own clock.
#[derive(Clone, Debug, Default)]
struct JobMemory {
    /// When its progress object was last read and last seen to change, while it runs.
    progress: Option<ProgressSeen>,
    /// When this operator last wrote `.status.progress`.
    progress_written_at: Option<Instant>,
    /// When its checkpoint manifest was last read.
    manifest_read_at: Option<Instant>,
    /// The ended attempt whose manifest was read once more (the final read).
    manifest_read_after: Option<u32>,
    /// This accepted job was checked against the policy as it is now (once per operator).
    policy_checked: bool,
    /// The status this operator last wrote, and the job's resourceVersion it was written
    /// over (see [`Context::current_status`]).
    written: Option<(Vec<String>, MultiTaskTrainingJobStatus)>,
}

/// What the operator remembers of a job's progress object, by its own clock.
#[derive(Clone, Debug)]
struct ProgressSeen {
    read_at: Instant,
    updated_at: String,
    changed_at: Timestamp,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        storage: Storage,
        metrics: Arc<Metrics>,
        config: Config,
    ) -> Self {
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            recorder,
            storage,
            metrics,
            config,
            vertex: Arc::new(VertexClients::from_env()),
            memory: Mutex::new(HashMap::new()),
            pod_store: OnceLock::new(),
            job_store: OnceLock::new(),
        }
    }

    /// Runs `f` on what is remembered of job `key`.
    fn remember<T>(&self, key: &str, f: impl FnOnce(&mut JobMemory) -> T) -> T {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        f(memory.entry(key.to_string()).or_default())
    }

    /// Forgets job `key` (`namespace/name`): what the operator remembered of it and its
    /// per-job metrics. Called when the job's watch reports it deleted.
    pub fn forget(&self, key: &str) {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        self.metrics.forget_job(key);
    }

    /// Forgets every job but those in `live`: after the job watch listed again, the jobs
    /// deleted while it was away, whose deletions it never saw.
    pub fn forget_all_but(&self, live: &std::collections::HashSet<String>) {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|key, _| live.contains(key));
        self.metrics.forget_jobs_except(live);
    }

    /// How many jobs the operator remembers something of.
    pub fn remembered(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The job's status as it is now. A reconcile can run on a cached job that does not show
    /// our last status write yet (a pod event arrived before the job's own): while the job is
    /// still at the resourceVersion our writes went over, or at one of our own earlier writes,
    /// the status written last is the current one, so the reconcile neither decides again from the old status nor writes and
    /// announces the same transition twice.
    fn current_status(&self, job: &MultiTaskTrainingJob) -> MultiTaskTrainingJobStatus {
        let rv = job.resource_version();
        let written = self.remember(&job_key(job), |m| match m.written.take() {
            Some((seen, st)) if rv.as_ref().is_some_and(|rv| seen.contains(rv)) => {
                m.written = Some((seen, st.clone()));
                Some(st)
            }
            _ => None,
        });
        written.unwrap_or_else(|| job.status.clone().unwrap_or_default())
    }

    /// The pods backend, reading pods from the controller's cache when it runs.
    fn pods(&self) -> Pods {
        Pods {
            client: self.client.clone(),
            opts: self.config.pod.clone(),
            store: self.pod_store.get().cloned(),
        }
    }
}

fn job_key(job: &MultiTaskTrainingJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

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
        let job = Arc::new(as_accepted(&job, &ctx).await);
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

/// The job as it runs: its spec as first accepted (`.status.acceptedSpec`) with its current
/// `runPolicy`. The CRD's transition rules refuse a change to any other field; where an API
/// server let one through (rules not enforced), the change is ignored and a Warning Event names
/// the changed fields, once per generation. A job not accepted yet runs as it is, with the
/// operator's `--default-image` when it names no image (the accepted spec then keeps that
/// image, whatever the flag says later).
async fn as_accepted(job: &MultiTaskTrainingJob, ctx: &Context) -> MultiTaskTrainingJob {
    let mut current = job.clone();
    let status = ctx.current_status(job);
    let accepted = match acceptance(ctx, job, &status) {
        Acceptance::Verified => status.accepted_spec,
        // Run nothing from it: the job fails (see `reconcile_with`), and stops what runs
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
    publish(
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

/// Whether this reconcile reads the checkpoint manifest: while the job can still change, at
/// most once per [`Config::manifest_poll`] (so the reconcile caused by our own status write
/// reads nothing), and once more when an attempt has ended (the final read, which says whether
/// the trainer stopped early), not on every look while it waits out a backoff or a teardown. Never for checkpoints on a PersistentVolumeClaim, which the
/// operator does not mount. Records the read.
fn manifest_due(
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

/// A call for `job` failed: the `Synced` condition (False, `reason`, what was done and the
/// API's message) on the status as it was, and a Warning Event, so `kubectl describe` shows
/// why nothing happens; then the error goes back to the controller to be retried. A failure to
/// record it is logged only.
async fn report_failure(
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

/// What the trainer would reject before its first step, then what `backend` cannot run.
fn validate<B: AttemptBackend>(backend: &B, job: &MultiTaskTrainingJob) -> Result<()> {
    job.spec.validate().map_err(|message| Error::InvalidSpec {
        job: job.name_any(),
        message,
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

/// One reconcile of a live job on backend `backend`: observe, decide, act, write status, tell.
pub async fn reconcile_with<B: AttemptBackend>(
    backend: &B,
    job: &MultiTaskTrainingJob,
    ctx: &Context,
) -> Result<Action> {
    let old = ctx.current_status(job);
    let acceptance = acceptance(ctx, job, &old);
    let refused = if old.phase.is_finished() {
        None
    } else if acceptance == Acceptance::Unverified {
        Some((
            "AcceptedSpecUnverified",
            UNVERIFIED_ACCEPTED_SPEC.to_string(),
        ))
    } else if let Err(Error::InvalidSpec { message, .. }) = validate(backend, job) {
        Some(("InvalidSpec", message))
    } else {
        let accepted = acceptance == Acceptance::Verified;
        match policy_refusal(ctx, job, accepted).await {
            Ok(refusal) => refusal.map(|message| ("PolicyViolation", message)),
            Err(e) => {
                let what = "reading the namespace's MultiTaskTrainingPolicy";
                return Err(report_failure(ctx, job, &old, "PolicyReadFailed", what, e).await);
            }
        }
    };
    if let Some((reason, message)) = refused {
        return fail_at_once(ctx, job, &old, reason, message).await;
    }
    let observed = if old.attempt > 0 {
        match backend.observe(job, old.attempt).await {
            Ok(o) => o,
            Err(e) => {
                let what = format!("looking up {}", backend.describe(job, old.attempt));
                return Err(report_failure(ctx, job, &old, "ObserveFailed", &what, e).await);
            }
        }
    } else {
        None
    };
    let manifest = if manifest_due(ctx, job, &old, observed.as_ref()) {
        ctx.metrics.manifest_reads.inc();
        read_manifest(
            &ctx.storage,
            &job.spec.checkpoints.uri,
            ctx.config.manifest_timeout,
        )
        .await
    } else {
        ManifestRead::NotRead
    };
    let now = Timestamp::now();
    let describe = |n: u32| backend.describe(job, n);
    let Decision {
        actions,
        status: mut new,
        mut notes,
        mut requeue_after,
    } = decide::decide(&Observation {
        queued: job.spec.backend == mtl_crds::Backend::Kubernetes
            && job
                .labels()
                .contains_key(crate::backend::pods::KUEUE_QUEUE_LABEL),
        spec: &job.spec,
        generation: job.metadata.generation,
        status: &old,
        attempt: observed.as_ref(),
        manifest: &manifest,
        now,
        describe: &describe,
        poll_interval: ctx.config.poll_interval,
        backoff: ctx.config.backoff,
    });
    debug!(?actions, phase = new.phase.as_str(), "decided");
    if new.accepted_spec.is_none() {
        // From now on the job runs as it is now (see `as_accepted`), signed so that nobody
        // else can change what that is.
        new.accepted_spec = serde_json::to_value(&job.spec).ok();
        new.accepted_spec_digest = ctx
            .config
            .accepted_spec_key
            .as_ref()
            .zip(new.accepted_spec.as_ref())
            .map(|(key, spec)| key.sign(&job.uid().unwrap_or_default(), spec));
    }

    // Labels can change after acceptance: an attempt starts with a Kueue priority the policy
    // allows now, or without one.
    let relabelled;
    let job = if actions
        .iter()
        .any(|a| matches!(a, decide::Action::StartAttempt(_)))
    {
        match allowed_priority(ctx, job).await {
            Ok(None) => job,
            Ok(Some((stripped, note))) => {
                notes.push(note);
                relabelled = stripped;
                &relabelled
            }
            Err(e) => {
                let what = "reading the namespace's MultiTaskTrainingPolicy";
                return Err(report_failure(ctx, job, &old, "PolicyReadFailed", what, e).await);
            }
        }
    } else {
        job
    };
    for action in actions {
        match action {
            decide::Action::StartAttempt(n) => {
                if let Err(e) = backend.start(job, n, &mut new).await {
                    if e.is_refused_spec() {
                        // The backend refused the request as written (Vertex AI's 400): the
                        // same request cannot succeed, so the job fails with its message.
                        let message = match &e {
                            Error::Vertex { source, .. } => source.to_string(),
                            other => other.to_string(),
                        };
                        return fail_at_once(ctx, job, &old, "InvalidSpec", message).await;
                    }
                    // Nothing of the decision is kept (the backend took back what it made):
                    // the next reconcile decides again, and finishes a start cut short.
                    let what = format!("creating {}", backend.describe(job, n));
                    return Err(report_failure(ctx, job, &old, "CreateFailed", &what, e).await);
                }
                info!(attempt = n, "started attempt");
            }
            decide::Action::StopAttempt { attempt, name } => {
                backend.stop(job, attempt, &name).await?;
                info!(attempt, pod = %name, "stopped attempt");
                notes.push(Note {
                    warning: false,
                    reason: "Stopping",
                    message: format!("stopping {}", backend.describe(job, attempt)),
                });
            }
            decide::Action::DeleteJob => {
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
            }
        }
    }

    let running = observed
        .as_ref()
        .is_some_and(|a| a.state == crate::backend::AttemptState::Running)
        && new.phase == JobPhase::Running;
    if let Some(after) = fold_progress(ctx, job, &mut new, running, now).await {
        requeue_after = Some(requeue_after.map_or(after, |r| r.min(after)));
    }
    // A CustomJob Vertex AI still queues or provisions is looked at less and less often (its
    // GETs count against a per-project quota); a shorter wait decided for a reason stays.
    if job.spec.backend == Backend::VertexAi
        && requeue_after == Some(ctx.config.poll_interval)
        && observed
            .as_ref()
            .is_some_and(|a| a.state == crate::backend::AttemptState::Pending)
    {
        requeue_after = Some(crate::backend::vertex::next_look(
            ctx.config.poll_interval,
            true,
            status::parse_time(new.attempt_start_time.as_deref()),
            now,
        ));
    }

    // The calls of this reconcile worked: say so if an earlier one had failed.
    if status::find(&new, cond::SYNCED).is_some_and(|c| c.status != "True") {
        status::set(&mut new, cond::SYNCED, true, "Synced", "", now);
    }
    if new != old {
        patch_status(ctx, job, &new).await?;
        ctx.metrics.observe_transition(&old, &new, now);
    }
    for note in &notes {
        publish(ctx, job, note).await;
    }
    ctx.metrics.set_job_phase(&job_key(job), new.phase);
    ctx.metrics.set_job(&job_key(job), &new);
    Ok(match requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// While an attempt runs: reads `progress.json` when [`Config::progress_poll`] has passed
/// since the last read (so the reconcile caused by our own status write reads nothing), folds
/// it into `.status.progress`, and sets `Stalled` when it stopped changing. Returns when to
/// look again. A failed read keeps the last progress; the manifest's condition reports storage
/// trouble.
async fn fold_progress(
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

/// Fails a job that retrying will not fix, with `reason` and `message` (status, a Warning
/// Event, metrics), instead of looping.
async fn fail_at_once(
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
async fn publish(ctx: &Context, job: &MultiTaskTrainingJob, note: &Note) {
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
