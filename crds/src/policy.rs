//! The `MultiTaskTrainingPolicy` API: what the jobs of one namespace may ask the operator
//! for. The same spec, as YAML, is the operator's cluster-wide default (`--policy-file`, the
//! chart's `policy` values), which a namespace's policy overrides field by field.
//!
//! A field left unset allows anything (or inherits the default); a list set to `[]` allows
//! nothing (only leaving the job's field unset). Platform administrators write policies: the
//! chart's `mtl-edit` role, which namespace editors get, does not include them.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the one policy per namespace the operator reads.
pub const POLICY_NAME: &str = "default";

/// What jobs in this namespace may ask for. The operator reads the one named `default` when
/// it accepts a job; a job outside it fails with `PolicyViolation` before anything is
/// created, and a policy changed later does not touch jobs already accepted.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "multitask.dev",
    version = "v1alpha1",
    kind = "MultiTaskTrainingPolicy",
    namespaced,
    shortname = "mtlpolicy",
    category = "ml",
    validation = Rule::new("self.metadata.name == 'default'").message("the operator reads only the MultiTaskTrainingPolicy named \"default\" of a namespace"),
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// Prefixes the job's image must start with, e.g. `us-docker.pkg.dev/acme/mtl/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<512>)]
    pub image_prefixes: Option<Vec<String>>,
    /// Kubernetes service accounts the trainer pods may run as
    /// (`resources.serviceAccountName`; unset is the namespace's `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<253>)]
    pub service_accounts: Option<Vec<String>>,
    /// PriorityClasses the pods may name (`podTemplate.priorityClassName`): what the
    /// scheduler and Kueue preempt other teams' pods by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<253>)]
    pub priority_classes: Option<Vec<String>>,
    /// Schedulers the pods may name (`podTemplate.schedulerName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<253>)]
    pub scheduler_names: Option<Vec<String>>,
    /// Taint keys the pods may tolerate (`resources.tolerations[].key`; a toleration without
    /// a key tolerates every taint, and is allowed only by `""` here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<317>)]
    pub toleration_keys: Option<Vec<String>>,
    /// Node label keys the pods may select on (`resources.nodeSelector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<317>)]
    pub node_selector_keys: Option<Vec<String>>,
    /// PersistentVolumeClaims of the namespace the pods may mount
    /// (`checkpoints.persistentVolumeClaim`, `podTemplate.volumes[].persistentVolumeClaim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<253>)]
    pub persistent_volume_claims: Option<Vec<String>>,
    /// `gs://` prefixes that `model.pretrained`, the tasks' data and `checkpoints.uri` must
    /// lie under, e.g. `gs://acme-ml-team-a/` (a prefix ends at a `/`: `gs://team-a` does not
    /// admit `gs://team-a-other`). The operator reads a job's manifest and progress with its
    /// own identity, so this is also what it reads on the namespace's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<1024>)]
    pub bucket_prefixes: Option<Vec<String>>,
    /// Kueue WorkloadPriorityClasses the job may name with its `kueue.x-k8s.io/priority-class`
    /// label, which the operator copies onto its pods (what Kueue preempts by). Judged at
    /// acceptance, and again when each attempt starts (labels can change): an attempt whose
    /// label is no longer allowed runs without it, with a Warning Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<253>)]
    pub workload_priority_classes: Option<Vec<String>>,
    /// GPU types the pods may ask for (`resources.gpuType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<128>)]
    pub gpu_types: Option<Vec<String>>,
    /// The most GPUs of one worker (`resources.gpus`, `vertexAI.acceleratorCount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpus_per_worker: Option<u32>,
    /// The most workers of one job (`workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_workers: Option<u32>,
    /// The most GPUs of one job: GPUs per worker × workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gpus_per_job: Option<u32>,
    /// Bounds of `backend: vertexAI` jobs.
    #[serde(
        default,
        rename = "vertexAI",
        skip_serializing_if = "VertexPolicy::is_empty"
    )]
    pub vertex_ai: VertexPolicy,
}

/// What Vertex AI jobs of the namespace may ask for (the operator's Google identity creates
/// them).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VertexPolicy {
    /// Google Cloud projects the jobs may run in (`vertexAI.project`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<63>)]
    pub projects: Option<Vec<String>>,
    /// Service accounts the jobs may run as (`vertexAI.serviceAccount`; unset, Vertex AI's
    /// own service agent, is always allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<320>)]
    pub service_accounts: Option<Vec<String>>,
    /// Machine types the jobs may use (`vertexAI.machineType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<128>)]
    pub machine_types: Option<Vec<String>>,
    /// Accelerator types the jobs may use (`vertexAI.acceleratorType`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<128>)]
    pub accelerator_types: Option<Vec<String>>,
    /// VPC networks the jobs may be peered with (`vertexAI.network`): what their replicas can
    /// reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), transform = crate::bounds::strings::<1024>)]
    pub networks: Option<Vec<String>>,
    /// Whether jobs may ask for an interactive shell into their containers
    /// (`vertexAI.enableWebAccess`), which runs with the job's service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_web_access: Option<bool>,
}

impl VertexPolicy {
    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl PolicySpec {
    /// This policy over `base`: each field this one sets replaces the base's.
    pub fn over(&self, base: &PolicySpec) -> PolicySpec {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            a.clone().or_else(|| b.clone())
        }
        PolicySpec {
            image_prefixes: pick(&self.image_prefixes, &base.image_prefixes),
            service_accounts: pick(&self.service_accounts, &base.service_accounts),
            priority_classes: pick(&self.priority_classes, &base.priority_classes),
            scheduler_names: pick(&self.scheduler_names, &base.scheduler_names),
            toleration_keys: pick(&self.toleration_keys, &base.toleration_keys),
            node_selector_keys: pick(&self.node_selector_keys, &base.node_selector_keys),
            persistent_volume_claims: pick(
                &self.persistent_volume_claims,
                &base.persistent_volume_claims,
            ),
            bucket_prefixes: pick(&self.bucket_prefixes, &base.bucket_prefixes),
            workload_priority_classes: pick(
                &self.workload_priority_classes,
                &base.workload_priority_classes,
            ),
            gpu_types: pick(&self.gpu_types, &base.gpu_types),
            max_gpus_per_worker: self.max_gpus_per_worker.or(base.max_gpus_per_worker),
            max_workers: self.max_workers.or(base.max_workers),
            max_gpus_per_job: self.max_gpus_per_job.or(base.max_gpus_per_job),
            vertex_ai: VertexPolicy {
                projects: pick(&self.vertex_ai.projects, &base.vertex_ai.projects),
                service_accounts: pick(
                    &self.vertex_ai.service_accounts,
                    &base.vertex_ai.service_accounts,
                ),
                machine_types: pick(&self.vertex_ai.machine_types, &base.vertex_ai.machine_types),
                accelerator_types: pick(
                    &self.vertex_ai.accelerator_types,
                    &base.vertex_ai.accelerator_types,
                ),
                networks: pick(&self.vertex_ai.networks, &base.vertex_ai.networks),
                allow_web_access: self
                    .vertex_ai
                    .allow_web_access
                    .or(base.vertex_ai.allow_web_access),
            },
        }
    }
}
