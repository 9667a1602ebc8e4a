//! `backend: kubernetes`: one pod per worker and attempt, named `<job>-<attempt>` (one
//! worker) or `<job>-<attempt>-<index>` (several, under a headless Service named `<job>`).
//!
//! [`build_pod`], [`build_service`], [`observe_pod`] and [`observe_workers`] are pure (tested
//! in `tests.rs`); [`Pods`] talks to the API server.

mod build;
mod observe;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};

pub use build::{build_pod, build_pod_group, build_service, procs_per_worker, validate};
pub use observe::{GONE_REASON, observe_pod, observe_workers};

use super::{AttemptBackend, ObservedAttempt};
use crate::{Error, Result};

pub use crate::{KUEUE_QUEUE_LABEL, LABEL_JOB};
/// Label holding the attempt number of a pod.
pub const LABEL_ATTEMPT: &str = "multitask.dev/attempt";
/// Label holding the worker index (the node rank) of a pod of a job with several workers.
pub const LABEL_WORKER: &str = "multitask.dev/worker";
/// Kueue's workload priority class label, copied with the queue label.
pub const KUEUE_PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";
/// The pod group of an attempt with several workers: Kueue admits its pods together.
pub const KUEUE_GROUP_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
/// How many pods the group has.
pub const KUEUE_GROUP_COUNT_ANNOTATION: &str = "kueue.x-k8s.io/pod-group-total-count";
/// The label scheduler-plugins' coscheduling groups pods by (the PodGroup's name).
pub const COSCHEDULING_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";

/// scheduler-plugins' PodGroup (`scheduling.x-k8s.io/v1alpha1`).
pub fn pod_group_resource() -> ApiResource {
    ApiResource {
        group: "scheduling.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "scheduling.x-k8s.io/v1alpha1".into(),
        kind: "PodGroup".into(),
        plural: "podgroups".into(),
    }
}

/// Marks a pod group that Kueue should not wait to see replaced: once all its pods ended, its
/// workload is finished and its quota given back.
pub const KUEUE_RETRIABLE_ANNOTATION: &str = "kueue.x-k8s.io/retriable-in-group";
/// The scheduling gate Kueue's webhook puts on a pod until its workload is admitted.
pub const KUEUE_ADMISSION_GATE: &str = "kueue.x-k8s.io/admission";
/// The pod condition Kueue sets before it deletes an evicted or preempted workload's pods.
pub const KUEUE_TERMINATION_TARGET: &str = "TerminationTarget";
/// The trainer's container name.
pub const CONTAINER: &str = "trainer";
/// Where the trainer caches downloads (on the /scratch emptyDir).
pub const CACHE_DIR: &str = "/scratch/cache";
/// The volume of `spec.checkpoints.persistentVolumeClaim`, mounted at `spec.checkpoints.uri`.
pub const CHECKPOINTS_VOLUME: &str = "checkpoints";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const GKE_ACCELERATOR_LABEL: &str = "cloud.google.com/gke-accelerator";
/// The pod condition Kubernetes sets on pods it is about to disrupt (preemption, eviction,
/// taint-based deletion, node shutdown, pod GC of a lost node).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The trainer's exit code after SIGTERM (128 + 15): it checkpointed and stopped on request.
pub const SIGTERM_EXIT: i32 = mtl_crds::contract::EXIT_STOPPED as i32;
/// Port of rank 0's rendezvous store (torchrun's default).
pub const MASTER_PORT: u16 = 29500;
/// `sizeLimit` of the memory-backed `/dev/shm` unless `resources.shmSize` says otherwise.
pub const DEFAULT_SHM_SIZE: &str = "2Gi";
/// `sizeLimit` of the `/scratch` emptyDir (and the ephemeral-storage request) unless
/// `resources.scratchSize` says otherwise.
pub const DEFAULT_SCRATCH_SIZE: &str = "20Gi";
/// `sizeLimit` of the `/tmp` emptyDir.
pub const TMP_SIZE: &str = "1Gi";
/// CPU and memory requested when `resources.cpu` / `resources.memory` are unset, so that the
/// trainer is not BestEffort (the first evicted under pressure); no limit is set then.
pub const DEFAULT_CPU_REQUEST: &str = "2";
pub const DEFAULT_MEMORY_REQUEST: &str = "8Gi";
/// `<job>-<attempt>` for a job with one worker, `<job>-<attempt>-<index>` for several.
pub fn pod_name(job: &str, attempt: u32, index: u32, workers: u32) -> String {
    if workers > 1 {
        format!("{job}-{attempt}-{index}")
    } else {
        format!("{job}-{attempt}")
    }
}

/// The headless Service of a job with several workers: named after the job.
pub fn service_name(job: &str) -> String {
    job.to_string()
}

/// Pod settings that come from the operator's command line rather than the job.
#[derive(Clone, Debug)]
pub struct PodOptions {
    /// terminationGracePeriodSeconds: long enough for the trainer to write a checkpoint.
    pub grace_period_seconds: i64,
    /// Server-side apply field manager.
    pub field_manager: String,
    /// Gang-schedule attempts of several workers with scheduler-plugins' coscheduling: the
    /// name of the scheduler that runs the plugin (`--coscheduling-scheduler-name`); each
    /// such attempt gets a PodGroup and its pods go to that scheduler.
    pub coscheduling_scheduler: Option<String>,
}

impl Default for PodOptions {
    fn default() -> Self {
        Self {
            grace_period_seconds: 300,
            field_manager: crate::FIELD_MANAGER.into(),
            coscheduling_scheduler: None,
        }
    }
}

/// The pods backend.
#[derive(Clone)]
pub struct Pods {
    pub client: Client,
    pub opts: PodOptions,
    /// The operator's cache of the pods it watches (the controller's pod watch feeds it). A
    /// pod found there costs no request; one missing is looked up on the API server, since
    /// the cache may not have seen a pod created a moment ago.
    pub store: Option<Store<Pod>>,
}

fn namespace(job: &MultiTaskTrainingJob) -> Result<String> {
    job.namespace().ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.namespace",
    })
}

/// Fails (and so retries later) when an object with our name belongs to someone else, e.g. to
/// a deleted job of the same name whose pods are still terminating.
fn check_owner<K: Resource>(job: &MultiTaskTrainingJob, what: &str, obj: &K) -> Result<()> {
    let ours = obj
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == job.meta().uid.as_ref());
    if ours {
        Ok(())
    } else {
        Err(Error::NotOwned {
            what: format!("{what} {}", obj.meta().name.as_deref().unwrap_or_default()),
        })
    }
}

/// Deletes `name`; one that is already gone is not an error.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Pods {
    fn api(&self, job: &MultiTaskTrainingJob) -> Result<Api<Pod>> {
        Ok(Api::namespaced(self.client.clone(), &namespace(job)?))
    }

    /// Pod `name` of the job's namespace as the cache has it.
    fn cached(&self, job: &MultiTaskTrainingJob, name: &str) -> Option<Pod> {
        let store = self.store.as_ref()?;
        let key = ObjectRef::new(name).within(job.namespace().as_deref()?);
        store.get(&key).map(|p| (*p).clone())
    }

    /// Pod `name`: from the cache, else from the API server.
    async fn get_pod(&self, job: &MultiTaskTrainingJob, name: &str) -> Result<Option<Pod>> {
        match self.cached(job, name) {
            Some(pod) => Ok(Some(pod)),
            None => Ok(self.api(job)?.get_opt(name).await?),
        }
    }

    /// Creates `obj` unless an object of its name exists (which must be ours): one request
    /// when it is new, as the Job controller creates its pods. Pod specs are immutable: a
    /// status write lost after an earlier create must not turn into a rejected update, so an
    /// existing object is left as it is. True when this call created it.
    async fn create_missing<K>(
        &self,
        api: &Api<K>,
        job: &MultiTaskTrainingJob,
        what: &str,
        obj: &K,
    ) -> Result<bool>
    where
        K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(self.opts.field_manager.clone()),
            ..Default::default()
        };
        match api.create(&params, obj).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => match api.get_opt(&name).await? {
                Some(existing) if existing.meta().deletion_timestamp.is_some() => {
                    Err(Error::Terminating {
                        what: format!("{what} {name}"),
                    })
                }
                Some(existing) => check_owner(job, what, &existing).map(|()| false),
                // Deleted between the two requests: not there now, so not started whole; the
                // next reconcile starts it again.
                None => Err(Error::Terminating {
                    what: format!("{what} {name}"),
                }),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The pods of attempt `attempt` (for stopping or observing all its workers).
    async fn attempt_pods(&self, job: &MultiTaskTrainingJob, attempt: u32) -> Result<Vec<Pod>> {
        let selector = format!("{LABEL_JOB}={},{LABEL_ATTEMPT}={attempt}", job.name_any());
        let pods = self
            .api(job)?
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(pods.items)
    }
}

impl AttemptBackend for Pods {
    fn describe(&self, job: &MultiTaskTrainingJob, attempt: u32) -> String {
        let workers = job.spec.workers;
        let first = pod_name(&job.name_any(), attempt, 0, workers);
        if workers > 1 {
            format!(
                "attempt {attempt} (pods {first} … {})",
                pod_name(&job.name_any(), attempt, workers - 1, workers)
            )
        } else {
            format!("pod {first}")
        }
    }

    fn validate(&self, job: &MultiTaskTrainingJob) -> Result<()> {
        validate(job, &self.opts)
    }

    async fn observe(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> Result<Option<ObservedAttempt>> {
        let workers = job.spec.workers;
        let name = job.name_any();
        if workers <= 1 {
            let pod_name = pod_name(&name, attempt, 0, 1);
            return match self.get_pod(job, &pod_name).await? {
                Some(pod) => {
                    check_owner(job, "pod", &pod)?;
                    Ok(Some(observe_pod(&pod, attempt)))
                }
                None => Ok(None),
            };
        }
        // From the cache when it has every worker, else one list for all of them.
        let cached: Vec<Pod> = (0..workers)
            .filter_map(|i| self.cached(job, &pod_name(&name, attempt, i, workers)))
            .collect();
        let mut found = if cached.len() == workers as usize {
            cached
        } else {
            self.attempt_pods(job, attempt).await?
        };
        let mut pods = Vec::with_capacity(workers as usize);
        for i in 0..workers {
            let want = pod_name(&name, attempt, i, workers);
            let pod = match found.iter().position(|p| p.name_any() == want) {
                Some(at) => {
                    let pod = found.swap_remove(at);
                    check_owner(job, "pod", &pod)?;
                    Some(pod)
                }
                None => None,
            };
            pods.push((want, pod));
        }
        Ok(observe_workers(&pods, attempt))
    }

    async fn start(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        status: &mut MultiTaskTrainingJobStatus,
    ) -> Result<()> {
        let workers = job.spec.workers;
        let pods: Vec<Pod> = (0..workers.max(1))
            .map(|i| build_pod(job, attempt, i, &self.opts))
            .collect::<Result<_>>()?;
        if workers > 1 {
            let services: Api<Service> = Api::namespaced(self.client.clone(), &namespace(job)?);
            self.create_missing(&services, job, "service", &build_service(job)?)
                .await?;
            if self.opts.coscheduling_scheduler.is_some() {
                // Before its pods, so the scheduler holds them until all can be placed.
                let ar = pod_group_resource();
                let groups: Api<DynamicObject> =
                    Api::namespaced_with(self.client.clone(), &namespace(job)?, &ar);
                self.create_missing(&groups, job, "PodGroup", &build_pod_group(job, attempt)?)
                    .await?;
            }
        }
        let api = self.api(job)?;
        let mut created = Vec::new();
        // The API server decides what exists, not the cache: right after a start cut short
        // took its pods back, the cache may still hold them as they were, and trusting it would
        // start the attempt without pods that are already gone. A pod that exists answers 409
        // and is read live: ours and running is kept, terminating is waited for.
        for pod in &pods {
            match self.create_missing(&api, job, "pod", pod).await {
                Ok(true) => created.push(pod.name_any()),
                Ok(false) => {}
                Err(e) => {
                    // Half a gang would hold its GPUs in a rendezvous that cannot complete,
                    // with no attempt in status to account for it: take back what this call
                    // made; a later reconcile starts the attempt whole.
                    for name in created.iter().rev() {
                        if let Err(de) = delete(&api, name).await {
                            tracing::warn!(pod = %name, error = %de, "could not take back a pod of a half-created attempt");
                        }
                    }
                    return Err(e);
                }
            }
        }
        status.pod_name = Some(pods[0].name_any());
        Ok(())
    }

    async fn stop(&self, job: &MultiTaskTrainingJob, attempt: u32, name: &str) -> Result<()> {
        let api = self.api(job)?;
        if job.spec.workers <= 1 {
            return delete(&api, name).await;
        }
        for pod in self.attempt_pods(job, attempt).await? {
            let done = matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
            if pod.metadata.deletion_timestamp.is_none() && !done {
                delete(&api, &pod.name_any()).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
