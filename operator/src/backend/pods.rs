//! `backend: kubernetes`: one pod per attempt, named `<job>-<attempt>`.
//!
//! [`build_pod`] and [`observe_pod`] are pure (tested below); [`Pods`] talks to the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};

use super::{AttemptBackend, AttemptState, ObservedAttempt};
use crate::{Error, Result};

/// Label naming the job a pod belongs to.
pub const LABEL_JOB: &str = "multitask.dev/job";
/// Label holding the attempt number of a pod.
pub const LABEL_ATTEMPT: &str = "multitask.dev/attempt";
/// The trainer's container name.
pub const CONTAINER: &str = "trainer";
/// Where the trainer caches downloads (on the /scratch emptyDir).
pub const CACHE_DIR: &str = "/scratch/cache";
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
pub const GKE_ACCELERATOR_LABEL: &str = "cloud.google.com/gke-accelerator";
/// The pod condition Kubernetes sets on pods it is about to disrupt (preemption, eviction,
/// taint-based deletion, node shutdown, pod GC of a lost node).
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";
/// The trainer's exit code after SIGTERM (128 + 15): it checkpointed and stopped on request.
pub const SIGTERM_EXIT: i32 = 143;

/// Pod settings that come from the operator's command line rather than the job.
#[derive(Clone, Debug)]
pub struct PodOptions {
    /// terminationGracePeriodSeconds: long enough for the trainer to write a checkpoint.
    pub grace_period_seconds: i64,
    /// Server-side apply field manager.
    pub field_manager: String,
}

impl Default for PodOptions {
    fn default() -> Self {
        Self {
            grace_period_seconds: 300,
            field_manager: crate::FIELD_MANAGER.into(),
        }
    }
}

/// `<job>-<attempt>`.
pub fn pod_name(job: &str, attempt: u32) -> String {
    format!("{job}-{attempt}")
}

fn invalid(job: &MultiTaskTrainingJob, message: impl Into<String>) -> Error {
    Error::InvalidSpec {
        job: job.name_any(),
        message: message.into(),
    }
}

fn quantity(s: &str) -> Quantity {
    Quantity(s.to_string())
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The pod for attempt `attempt` of `job`.
pub fn build_pod(job: &MultiTaskTrainingJob, attempt: u32, opts: &PodOptions) -> Result<Pod> {
    let name = job.meta().name.clone().ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.name",
    })?;
    if name.len() > 63 {
        return Err(invalid(
            job,
            "job names longer than 63 characters cannot label their pods",
        ));
    }
    let owner = job.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.uid",
    })?;
    let spec = &job.spec;
    let image = spec
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid(job, "spec.image is required for backend kubernetes"))?;
    let job_json = serde_json::to_string(spec).map_err(|source| Error::Serialize {
        what: "job spec",
        source,
    })?;
    let res = spec.resources.clone().unwrap_or_default();

    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if res.gpus > 0 {
        limits.insert(GPU_RESOURCE.to_string(), quantity(&res.gpus.to_string()));
    }
    for (key, value) in [("cpu", &res.cpu), ("memory", &res.memory)] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            limits.insert(key.to_string(), quantity(v));
            requests.insert(key.to_string(), quantity(v));
        }
    }

    let mut node_selector = BTreeMap::new();
    if let Some(gpu_type) = res.gpu_type.as_deref().filter(|g| !g.is_empty()) {
        node_selector.insert(GKE_ACCELERATOR_LABEL.to_string(), gpu_type.to_string());
    }
    node_selector.extend(res.node_selector.clone());

    let mut tolerations = Vec::new();
    if res.gpus > 0 {
        tolerations.push(Toleration {
            key: Some(GPU_RESOURCE.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
    }
    tolerations.extend(res.tolerations.clone());

    let labels = BTreeMap::from([
        (LABEL_JOB.to_string(), name.clone()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);

    let container = Container {
        name: CONTAINER.into(),
        image: Some(image),
        args: Some(vec!["train".into(), "--job-json".into(), job_json]),
        env: Some(vec![
            env("MTL_CACHE_DIR", CACHE_DIR),
            env("MTL_JOB_NAME", name.clone()),
            env("MTL_ATTEMPT", attempt.to_string()),
            env("HOME", "/scratch"),
        ]),
        resources: Some(ResourceRequirements {
            limits: (!limits.is_empty()).then_some(limits),
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(1000),
            ..Default::default()
        }),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "scratch".into(),
                mount_path: "/scratch".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };

    let empty_dir = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };

    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&name, attempt)),
            namespace: job.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            termination_grace_period_seconds: Some(opts.grace_period_seconds),
            service_account_name: res.service_account_name.clone(),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                fs_group: Some(1000),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            volumes: Some(vec![empty_dir("scratch"), empty_dir("tmp")]),
            ..Default::default()
        }),
        status: None,
    })
}

/// Pod-level `status.reason`s that mean the platform, not the trainer, ended the pod.
const DISRUPTION_REASONS: &[&str] = &[
    "Evicted",
    "Preempted",
    "Preempting",
    "NodeLost",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "UnexpectedAdmissionError",
];

/// Reduces a pod to the backend-neutral [`ObservedAttempt`].
pub fn observe_pod(pod: &Pod, attempt: u32) -> ObservedAttempt {
    let status = pod.status.clone().unwrap_or_default();
    let disruption = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_TARGET && c.status == "True");
    let trainer = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let terminated = trainer.and_then(|c| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()))
    });
    let pod_reason = status.reason.clone().unwrap_or_default();
    let pod_message = status.message.clone().unwrap_or_default();

    let state = match status.phase.as_deref() {
        Some("Running") => AttemptState::Running,
        Some("Succeeded") => AttemptState::Succeeded,
        Some("Failed") => {
            let sigterm = terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == SIGTERM_EXIT);
            if let Some(c) = disruption {
                AttemptState::Disrupted {
                    reason: c.reason.clone().unwrap_or_else(|| DISRUPTION_TARGET.into()),
                    message: c.message.clone().unwrap_or_default(),
                }
            } else if DISRUPTION_REASONS.contains(&pod_reason.as_str())
                || pod_reason.starts_with("OutOf")
            {
                AttemptState::Disrupted {
                    reason: pod_reason,
                    message: pod_message,
                }
            } else if sigterm {
                AttemptState::Disrupted {
                    reason: "Terminated".into(),
                    message: "the trainer stopped on SIGTERM (exit code 143)".into(),
                }
            } else {
                match terminated {
                    Some(t) => {
                        let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
                        let message = t.message.as_deref().map(str::trim).unwrap_or_default();
                        AttemptState::Failed {
                            reason: format!("{reason}, exit code {}", t.exit_code),
                            message: if message.is_empty() {
                                pod_message
                            } else {
                                message.to_string()
                            },
                        }
                    }
                    None => AttemptState::Failed {
                        reason: if pod_reason.is_empty() {
                            "Failed".into()
                        } else {
                            pod_reason
                        },
                        message: pod_message,
                    },
                }
            }
        }
        // Pending, Unknown (node unreachable) or not yet reported.
        _ => AttemptState::Pending,
    };
    let terminating =
        pod.metadata.deletion_timestamp.is_some() || (disruption.is_some() && !state.is_terminal());
    ObservedAttempt {
        attempt,
        name: pod.name_any(),
        state,
        terminating,
    }
}

/// The pods backend.
#[derive(Clone)]
pub struct Pods {
    pub client: Client,
    pub opts: PodOptions,
}

impl Pods {
    fn api(&self, job: &MultiTaskTrainingJob) -> Result<Api<Pod>> {
        let ns = job.namespace().ok_or(Error::MissingField {
            kind: mtl_crds::KIND,
            field: "metadata.namespace",
        })?;
        Ok(Api::namespaced(self.client.clone(), &ns))
    }

    /// Fails (and so retries later) when a pod with our name belongs to someone else, e.g. to a
    /// deleted job of the same name whose pods are still terminating.
    fn check_owner(job: &MultiTaskTrainingJob, pod: &Pod) -> Result<()> {
        let ours = pod
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == job.meta().uid.as_ref());
        if ours {
            Ok(())
        } else {
            Err(Error::Kube(kube::Error::Api(Box::new(
                kube::core::Status {
                    code: 409,
                    reason: "AlreadyExists".into(),
                    message: format!(
                        "pod {} exists but is not controlled by this job",
                        pod.name_any()
                    ),
                    ..Default::default()
                },
            ))))
        }
    }
}

impl AttemptBackend for Pods {
    fn describe(&self, job: &MultiTaskTrainingJob, attempt: u32) -> String {
        format!("pod {}", pod_name(&job.name_any(), attempt))
    }

    fn validate(&self, job: &MultiTaskTrainingJob) -> Result<()> {
        build_pod(job, 1, &self.opts).map(|_| ())
    }

    async fn observe(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> Result<Option<ObservedAttempt>> {
        let name = pod_name(&job.name_any(), attempt);
        match self.api(job)?.get_opt(&name).await? {
            Some(pod) => {
                Self::check_owner(job, &pod)?;
                Ok(Some(observe_pod(&pod, attempt)))
            }
            None => Ok(None),
        }
    }

    async fn start(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        status: &mut MultiTaskTrainingJobStatus,
    ) -> Result<()> {
        let pod = build_pod(job, attempt, &self.opts)?;
        let name = pod.name_any();
        let api = self.api(job)?;
        // Pod specs are immutable: apply only when the pod is not there yet (a status write that
        // was lost after an earlier create must not turn into a rejected update).
        match api.get_opt(&name).await? {
            Some(existing) => Self::check_owner(job, &existing)?,
            None => {
                let params = PatchParams::apply(&self.opts.field_manager).force();
                api.patch(&name, &params, &Patch::Apply(&pod)).await?;
            }
        }
        status.pod_name = Some(name);
        Ok(())
    }

    async fn stop(&self, job: &MultiTaskTrainingJob, _attempt: u32, name: &str) -> Result<()> {
        match self
            .api(job)?
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn cleanup(&self, job: &MultiTaskTrainingJob) -> Result<()> {
        let api = self.api(job)?;
        let selector = format!("{LABEL_JOB}={}", job.name_any());
        let pods = api.list(&ListParams::default().labels(&selector)).await?;
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api
                .delete(&pod.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
