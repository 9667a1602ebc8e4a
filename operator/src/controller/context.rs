//! What every reconcile shares: the reconciler's [`Config`], the [`Context`] (clients,
//! metrics, the caches) and what the operator remembers of each job between reconciles.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::Storage;

use crate::backend::pods::{PodOptions, Pods};
use crate::backend::vertex::VertexClients;
use crate::telemetry::Metrics;

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
    pub backoff: crate::decide::Backoff,
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
    pub(super) memory: Mutex<HashMap<String, JobMemory>>,
    /// The pods the controller watches, once [`super::run`] started the watch.
    pub(super) pod_store: OnceLock<Store<Pod>>,
    /// The jobs the controller watches, once [`super::run`] started the watch.
    pub(super) job_store: OnceLock<Store<MultiTaskTrainingJob>>,
}

/// What the operator remembers of one job between reconciles, by its own clock.
#[derive(Clone, Debug, Default)]
pub(super) struct JobMemory {
    /// When its progress object was last read and last seen to change, while it runs.
    pub(super) progress: Option<ProgressSeen>,
    /// When this operator last wrote `.status.progress`.
    pub(super) progress_written_at: Option<Instant>,
    /// When its checkpoint manifest was last read.
    pub(super) manifest_read_at: Option<Instant>,
    /// The ended attempt whose manifest was read once more (the final read).
    pub(super) manifest_read_after: Option<u32>,
    /// This accepted job was checked against the policy as it is now (once per operator).
    pub(super) policy_checked: bool,
    /// The status this operator last wrote, and the job's resourceVersion it was written
    /// over (see [`Context::current_status`]).
    pub(super) written: Option<(Vec<String>, MultiTaskTrainingJobStatus)>,
}

/// What the operator remembers of a job's progress object, by its own clock.
#[derive(Clone, Debug)]
pub(super) struct ProgressSeen {
    pub(super) read_at: Instant,
    pub(super) updated_at: String,
    pub(super) changed_at: Timestamp,
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
    pub(super) fn remember<T>(&self, key: &str, f: impl FnOnce(&mut JobMemory) -> T) -> T {
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
    pub(super) fn current_status(&self, job: &MultiTaskTrainingJob) -> MultiTaskTrainingJobStatus {
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
    pub(super) fn pods(&self) -> Pods {
        Pods {
            client: self.client.clone(),
            opts: self.config.pod.clone(),
            store: self.pod_store.get().cloned(),
        }
    }
}

pub(super) fn job_key(job: &MultiTaskTrainingJob) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}
