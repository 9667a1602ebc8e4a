//! The objects of one attempt: its pods and, for several workers, the headless Service that
//! gives them DNS names. Pure: tested in `tests.rs`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Service, ServicePort, ServiceSpec, Toleration, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DynamicObject, ObjectMeta};
use kube::{Resource, ResourceExt};
use mtl_crds::{MultiTaskTrainingJob, PodTemplate};

use super::{
    CACHE_DIR, CHECKPOINTS_VOLUME, CONTAINER, COSCHEDULING_GROUP_LABEL, DEFAULT_CPU_REQUEST,
    DEFAULT_MEMORY_REQUEST, DEFAULT_SCRATCH_SIZE, DEFAULT_SHM_SIZE, GKE_ACCELERATOR_LABEL,
    GPU_RESOURCE, KUEUE_GROUP_COUNT_ANNOTATION, KUEUE_GROUP_LABEL, KUEUE_PRIORITY_LABEL,
    KUEUE_QUEUE_LABEL, KUEUE_RETRIABLE_ANNOTATION, LABEL_ATTEMPT, LABEL_JOB, LABEL_WORKER,
    MASTER_PORT, PodOptions, TMP_SIZE, pod_group_resource, pod_name, service_name,
};
use crate::{Error, Result};
use mtl_crds::contract;

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

/// A DNS-1035 label (what Service names and, for several workers, pod hostnames must be).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn job_name(job: &MultiTaskTrainingJob) -> Result<String> {
    job.meta().name.clone().ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.name",
    })
}

/// Processes each worker pod starts: one per GPU, or one on CPU.
pub fn procs_per_worker(job: &MultiTaskTrainingJob) -> u32 {
    job.spec.resources.as_ref().map_or(0, |r| r.gpus).max(1)
}

/// The rendezvous environment of worker `index` (rank 0 hosts the store), as Kubeflow's
/// PyTorchJob sets it: the torchrun variables and the `PET_*` ones a node agent reads.
fn world_env(job: &MultiTaskTrainingJob, name: &str, attempt: u32, index: u32) -> Vec<EnvVar> {
    let workers = job.spec.workers;
    let nproc = procs_per_worker(job);
    let master = format!(
        "{}.{}",
        pod_name(name, attempt, 0, workers),
        service_name(name)
    );
    use contract::torchrun as var;
    vec![
        env(var::MASTER_ADDR, master.clone()),
        env(var::MASTER_PORT, MASTER_PORT.to_string()),
        env(var::WORLD_SIZE, (workers * nproc).to_string()),
        env(var::RANK, index.to_string()),
        env(var::PET_MASTER_ADDR, master),
        env(var::PET_MASTER_PORT, MASTER_PORT.to_string()),
        env(var::PET_NNODES, workers.to_string()),
        env(var::PET_NPROC_PER_NODE, nproc.to_string()),
        env(var::PET_NODE_RANK, index.to_string()),
    ]
}

/// The largest attempt number the pod names are sized for: `backoffLimit` (≤ 100) and
/// `maxPreemptions` (≤ 100,000) leave room for resumes within six digits.
const MAX_ATTEMPT: u32 = 999_999;

/// What the pods backend cannot run, checked without building anything: the job's name
/// (a label value, and for several workers its Service's and its pods' host names), the
/// checkpoint location, the image and `spec.podTemplate` against what the operator sets.
pub fn validate(job: &MultiTaskTrainingJob, opts: &PodOptions) -> Result<()> {
    let name = job_name(job)?;
    check_name(job, &name)?;
    check_workers(job, &name)?;
    check_checkpoints(job)?;
    image(job)?;
    if let Some(template) = &job.spec.pod_template {
        let parts = Parts::of(job, &name, 1, 0, opts);
        check_template(&parts.taken(), template).map_err(|message| invalid(job, message))?;
    }
    Ok(())
}

fn check_name(job: &MultiTaskTrainingJob, name: &str) -> Result<()> {
    if name.len() > 63 {
        return Err(invalid(
            job,
            "job names longer than 63 characters cannot label their pods",
        ));
    }
    Ok(())
}

/// 1..64 workers; several need a DNS-label name short enough for every pod's hostname, and
/// checkpoints in gs:// that they all reach.
fn check_workers(job: &MultiTaskTrainingJob, name: &str) -> Result<()> {
    let spec = &job.spec;
    let workers = spec.workers;
    if !(1..=64).contains(&workers) {
        return Err(invalid(
            job,
            format!("spec.workers: {workers} is not between 1 and 64"),
        ));
    }
    if workers == 1 {
        return Ok(());
    }
    if !is_dns_label(name) {
        return Err(invalid(
            job,
            format!(
                "metadata.name {name:?}: a job with several workers names its headless Service after itself, so the name must be a DNS label (lower case letters, digits and '-', starting with a letter)"
            ),
        ));
    }
    // Judged once for every attempt to come: the longest hostname is that of the last
    // worker of an attempt numbered with as many digits as attempts can reach
    // (backoffLimit, maxPreemptions and resumes: 6 digits reserved).
    let longest = pod_name(name, MAX_ATTEMPT, workers - 1, workers);
    if longest.len() > 63 {
        let room = 63 - (longest.len() - name.len());
        return Err(invalid(
            job,
            format!(
                "pod hostname {longest:?} (attempt {MAX_ATTEMPT}, worker {}) would be longer than 63 characters: with {workers} workers the job's name may have at most {room} characters",
                workers - 1
            ),
        ));
    }
    if !spec.checkpoints.uri.starts_with("gs://") {
        return Err(invalid(
            job,
            format!(
                "spec.checkpoints.uri: {:?} must be a gs:// URI when spec.workers is {workers}",
                spec.checkpoints.uri
            ),
        ));
    }
    Ok(())
}

/// The checkpoint claim, if the job names one.
fn claim(job: &MultiTaskTrainingJob) -> Option<&str> {
    job.spec
        .checkpoints
        .persistent_volume_claim
        .as_deref()
        .filter(|c| !c.is_empty())
}

/// Checkpoints outlive the pod: in gs://, or on a claim mounted at the URI's path.
fn check_checkpoints(job: &MultiTaskTrainingJob) -> Result<()> {
    let uri = &job.spec.checkpoints.uri;
    match claim(job) {
        None if !uri.starts_with("gs://") => Err(invalid(
            job,
            format!(
                "spec.checkpoints.uri: {uri:?} is on the pod's own disk, which is lost with the pod (and the next attempt resumes from it): use a gs:// URI, or name a spec.checkpoints.persistentVolumeClaim mounted there"
            ),
        )),
        Some(_) if !uri.starts_with('/') => Err(invalid(
            job,
            format!(
                "spec.checkpoints.uri: {uri:?} must be the absolute path spec.checkpoints.persistentVolumeClaim is mounted at"
            ),
        )),
        _ => Ok(()),
    }
}

fn image(job: &MultiTaskTrainingJob) -> Result<String> {
    job.spec
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            invalid(
                job,
                "spec.image is required for backend kubernetes (or an operator --default-image)",
            )
        })
}

/// The pod of worker `index` of attempt `attempt` of `job` (worker 0 when the job has one):
/// the operator's own [`Parts`] in a locked-down pod, then `spec.podTemplate` merged in.
pub fn build_pod(
    job: &MultiTaskTrainingJob,
    attempt: u32,
    index: u32,
    opts: &PodOptions,
) -> Result<Pod> {
    let name = job_name(job)?;
    check_name(job, &name)?;
    let owner = job.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.uid",
    })?;
    check_workers(job, &name)?;
    check_checkpoints(job)?;
    let image = image(job)?;
    let job_json = serde_json::to_string(&job.spec).map_err(|source| Error::Serialize {
        what: "job spec",
        source,
    })?;
    let workers = job.spec.workers;
    let pod = pod_name(&name, attempt, index, workers);
    let parts = Parts::of(job, &name, attempt, index, opts);
    let res = job.spec.resources.clone().unwrap_or_default();
    let (node_selector, tolerations) = placement(&res);
    let container = Container {
        image: Some(image),
        args: Some(contract::trainer_args(job_json)),
        env: Some(parts.env),
        ports: (workers > 1).then(|| {
            vec![ContainerPort {
                name: Some("c10d".into()),
                container_port: i32::from(MASTER_PORT),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]
        }),
        resources: Some(resources(&res)),
        volume_mounts: Some(parts.mounts),
        ..locked_down_container()
    };
    let mut built = Pod {
        metadata: ObjectMeta {
            name: Some(pod.clone()),
            namespace: job.namespace(),
            labels: Some(parts.labels),
            annotations: (!parts.annotations.is_empty()).then_some(parts.annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            termination_grace_period_seconds: Some(opts.grace_period_seconds),
            service_account_name: res.service_account_name.clone(),
            scheduler_name: parts.scheduler,
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            hostname: (workers > 1).then(|| pod.clone()),
            subdomain: (workers > 1).then(|| service_name(&name)),
            volumes: Some(parts.volumes),
            ..locked_down_pod_spec()
        }),
        status: None,
    };
    if let Some(template) = &job.spec.pod_template {
        merge_template(&mut built, template).map_err(|message| invalid(job, message))?;
    }
    Ok(built)
}

/// The trainer container as every pod runs it: non-root, read-only root, no capabilities.
fn locked_down_container() -> Container {
    Container {
        name: CONTAINER.into(),
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
        ..Default::default()
    }
}

/// The pod settings every attempt has: never restarted in place, no API token, non-root.
fn locked_down_pod_spec() -> PodSpec {
    PodSpec {
        restart_policy: Some("Never".into()),
        // The trainer never calls the Kubernetes API; Workload Identity needs no token.
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            fs_group: Some(1000),
            // Re-own a checkpoint claim only when its root is not the group's already,
            // rather than walking every file of it on each attempt.
            fs_group_change_policy: Some("OnRootMismatch".into()),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Requests and limits. Given: request = limit (with both, and GPUs defaulting their requests
/// from their limits, the pod is Guaranteed). Unset: a default request and no limit
/// (Burstable). Scratch space is requested as ephemeral storage.
fn resources(res: &mtl_crds::ResourcesSpec) -> ResourceRequirements {
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if res.gpus > 0 {
        limits.insert(GPU_RESOURCE.to_string(), quantity(&res.gpus.to_string()));
    }
    for (key, value, default) in [
        ("cpu", &res.cpu, DEFAULT_CPU_REQUEST),
        ("memory", &res.memory, DEFAULT_MEMORY_REQUEST),
    ] {
        match value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => {
                limits.insert(key.to_string(), quantity(v));
                requests.insert(key.to_string(), quantity(v));
            }
            None => {
                requests.insert(key.to_string(), quantity(default));
            }
        }
    }
    requests.insert("ephemeral-storage".into(), quantity(&scratch_size(res)));
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..Default::default()
    }
}

fn scratch_size(res: &mtl_crds::ResourcesSpec) -> String {
    res.scratch_size
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_SCRATCH_SIZE)
        .to_string()
}

/// Where the pod may run: the GPU type's node pool and the job's own selector, the GPU
/// taint tolerated and the job's own tolerations.
fn placement(res: &mtl_crds::ResourcesSpec) -> (BTreeMap<String, String>, Vec<Toleration>) {
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
    (node_selector, tolerations)
}

/// What the operator itself puts into worker `index`'s pod of attempt `attempt`, before
/// `spec.podTemplate`: what the template may not set again.
struct Parts {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// scheduler-plugins' coscheduling scheduler, for several workers.
    scheduler: Option<String>,
    env: Vec<EnvVar>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
}

impl Parts {
    fn of(
        job: &MultiTaskTrainingJob,
        name: &str,
        attempt: u32,
        index: u32,
        opts: &PodOptions,
    ) -> Self {
        let (labels, annotations, scheduler) = labels(job, name, attempt, index, opts);
        let (volumes, mounts) = volumes(job);
        Self {
            labels,
            annotations,
            scheduler,
            env: environment(job, name, attempt, index),
            volumes,
            mounts,
        }
    }

    fn taken(&self) -> Taken<'_> {
        Taken {
            labels: self.labels.keys().map(String::as_str).collect(),
            annotations: self.annotations.keys().map(String::as_str).collect(),
            env: self.env.iter().map(|e| e.name.as_str()).collect(),
            volumes: self.volumes.iter().map(|v| v.name.as_str()).collect(),
            mount_paths: self.mounts.iter().map(|m| m.mount_path.as_str()).collect(),
        }
    }
}

/// The pod's labels and annotations (the job's and attempt's, Kueue's queue and pod group,
/// coscheduling's group), and the scheduler that places its group.
fn labels(
    job: &MultiTaskTrainingJob,
    name: &str,
    attempt: u32,
    index: u32,
    opts: &PodOptions,
) -> (
    BTreeMap<String, String>,
    BTreeMap<String, String>,
    Option<String>,
) {
    let workers = job.spec.workers;
    let mut labels = BTreeMap::from([
        (LABEL_JOB.to_string(), name.to_string()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    let mut annotations = BTreeMap::new();
    // Kueue's plain-Pod integration: the job's queue (and workload priority) labels go onto
    // its pods; several workers are one pod group, admitted together.
    let job_labels = job.labels();
    if let Some(queue) = job_labels.get(KUEUE_QUEUE_LABEL) {
        labels.insert(KUEUE_QUEUE_LABEL.into(), queue.clone());
        if let Some(priority) = job_labels.get(KUEUE_PRIORITY_LABEL) {
            labels.insert(KUEUE_PRIORITY_LABEL.into(), priority.clone());
        }
        if workers > 1 {
            labels.insert(KUEUE_GROUP_LABEL.into(), format!("{name}-{attempt}"));
            annotations.insert(KUEUE_GROUP_COUNT_ANNOTATION.into(), workers.to_string());
            // The operator never replaces a pod within a group (each attempt is a new group):
            // without this, Kueue keeps a group with a failed pod admitted, holding its
            // quota while it waits for replacements, and the next attempt may never fit.
            annotations.insert(KUEUE_RETRIABLE_ANNOTATION.into(), "false".into());
        }
    }
    // scheduler-plugins' coscheduling: the attempt's PodGroup, placed all or nothing by the
    // scheduler that runs the plugin.
    let coscheduler = opts.coscheduling_scheduler.clone().filter(|_| workers > 1);
    if coscheduler.is_some() {
        labels.insert(COSCHEDULING_GROUP_LABEL.into(), format!("{name}-{attempt}"));
    }
    if workers > 1 {
        labels.insert(LABEL_WORKER.to_string(), index.to_string());
    }
    (labels, annotations, coscheduler)
}

/// The trainer's environment: the contract's variables, and for several workers the
/// rendezvous ones ([`world_env`]).
fn environment(job: &MultiTaskTrainingJob, name: &str, attempt: u32, index: u32) -> Vec<EnvVar> {
    let mut env_vars = vec![
        env(contract::ENV_CACHE_DIR, CACHE_DIR),
        env(contract::ENV_JOB_NAME, name),
        env(contract::ENV_ATTEMPT, attempt.to_string()),
        env("HOME", "/scratch"),
    ];
    if job.spec.workers > 1 {
        env_vars.extend(world_env(job, name, attempt, index));
    }
    env_vars
}

/// The pod's volumes and the trainer's mounts of them: scratch, /tmp, shared memory, and
/// the checkpoint claim at the checkpoint path when the job names one.
fn volumes(job: &MultiTaskTrainingJob) -> (Vec<Volume>, Vec<VolumeMount>) {
    let res = job.spec.resources.clone().unwrap_or_default();
    let claim = claim(job);
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let mounts = [
        mount("scratch", "/scratch"),
        mount("tmp", "/tmp"),
        mount("dshm", "/dev/shm"),
    ]
    .into_iter()
    .chain(claim.map(|_| mount(CHECKPOINTS_VOLUME, &job.spec.checkpoints.uri)))
    .collect();
    let empty_dir = |name: &str, size: &str| Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(quantity(size)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let shm = Volume {
        name: "dshm".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(quantity(
                res.shm_size
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(DEFAULT_SHM_SIZE),
            )),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volumes = [
        empty_dir("scratch", &scratch_size(&res)),
        empty_dir("tmp", TMP_SIZE),
        shm,
    ]
    .into_iter()
    .chain(claim.map(|c| Volume {
        name: CHECKPOINTS_VOLUME.into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: c.into(),
            read_only: None,
        }),
        ..Default::default()
    }))
    .collect();
    (volumes, mounts)
}

/// The names and keys the operator's own parts use, which `spec.podTemplate` may not use again.
struct Taken<'a> {
    labels: Vec<&'a str>,
    annotations: Vec<&'a str>,
    env: Vec<&'a str>,
    volumes: Vec<&'a str>,
    mount_paths: Vec<&'a str>,
}

/// Whether `spec.podTemplate` can be merged into a pod whose own parts use `taken`: a label,
/// annotation, environment variable, volume or mount path the operator already uses is an
/// error that names the field, and so is a mount of a volume the pod does not have, or an
/// embedded object that is not of its Kubernetes type.
fn check_template(taken: &Taken<'_>, t: &PodTemplate) -> std::result::Result<(), String> {
    for (field, theirs, ours) in [
        ("labels", &t.labels, &taken.labels),
        ("annotations", &t.annotations, &taken.annotations),
    ] {
        for key in theirs.keys() {
            if ours.contains(&key.as_str()) || is_reserved_key(key) {
                return Err(format!(
                    "spec.podTemplate.{field}: {key:?} is set by the operator (job labels such as Kueue's queue go on the job's metadata.labels)"
                ));
            }
        }
    }
    let mut theirs: Vec<String> = Vec::with_capacity(t.volumes.len());
    for (i, v) in t.volumes.iter().enumerate() {
        let v: Volume = as_kubernetes(&format!("spec.podTemplate.volumes[{i}]"), &v.0)?;
        if taken.volumes.contains(&v.name.as_str()) || theirs.contains(&v.name) {
            return Err(format!(
                "spec.podTemplate.volumes[{i}].name: {:?} is a volume of the operator's (or named twice)",
                v.name
            ));
        }
        theirs.push(v.name);
    }
    let mut env = taken.env.clone();
    for (i, e) in t.env.iter().enumerate() {
        if env.contains(&e.name.as_str()) {
            return Err(format!(
                "spec.podTemplate.env[{i}].name: {:?} is set by the operator (or named twice)",
                e.name
            ));
        }
        env.push(&e.name);
    }
    let mut mounts = taken.mount_paths.clone();
    for (i, m) in t.volume_mounts.iter().enumerate() {
        if !theirs.contains(&m.name) {
            return Err(format!(
                "spec.podTemplate.volumeMounts[{i}].name: {:?} is not one of spec.podTemplate.volumes",
                m.name
            ));
        }
        if mounts.contains(&m.mount_path.as_str()) {
            return Err(format!(
                "spec.podTemplate.volumeMounts[{i}].mountPath: {:?} is mounted by the operator (or twice)",
                m.mount_path
            ));
        }
        mounts.push(&m.mount_path);
    }
    if let Some(a) = &t.affinity {
        as_kubernetes::<k8s_openapi::api::core::v1::Affinity>("spec.podTemplate.affinity", &a.0)?;
    }
    Ok(())
}

/// Adds `spec.podTemplate` to a built pod, once [`check_template`] found nothing in it that
/// the pod already has.
fn merge_template(pod: &mut Pod, t: &PodTemplate) -> std::result::Result<(), String> {
    let taken = taken_by(pod);
    check_template(&taken, t)?;
    let meta = &mut pod.metadata;
    for (theirs, ours) in [
        (&t.labels, &mut meta.labels),
        (&t.annotations, &mut meta.annotations),
    ] {
        let ours = ours.get_or_insert_with(BTreeMap::new);
        ours.extend(theirs.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if meta.annotations.as_ref().is_some_and(BTreeMap::is_empty) {
        meta.annotations = None;
    }
    let spec = pod.spec.get_or_insert_with(Default::default);
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for (i, v) in t.volumes.iter().enumerate() {
        volumes.push(as_kubernetes(
            &format!("spec.podTemplate.volumes[{i}]"),
            &v.0,
        )?);
    }
    let container = &mut spec.containers[0];
    container
        .env
        .get_or_insert_with(Vec::new)
        .extend(t.env.iter().cloned());
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .extend(t.volume_mounts.iter().cloned());
    if t.priority_class_name.is_some() {
        spec.priority_class_name = t.priority_class_name.clone();
    }
    if t.scheduler_name.is_some() {
        spec.scheduler_name = t.scheduler_name.clone();
    }
    if let Some(a) = &t.affinity {
        spec.affinity = Some(as_kubernetes("spec.podTemplate.affinity", &a.0)?);
    }
    if !t.image_pull_secrets.is_empty() {
        spec.image_pull_secrets = Some(t.image_pull_secrets.clone());
    }
    Ok(())
}

fn keys(map: &Option<BTreeMap<String, String>>) -> Vec<&str> {
    map.iter()
        .flat_map(|m| m.keys().map(String::as_str))
        .collect()
}

/// What a built pod already uses (see [`Taken`]).
fn taken_by(pod: &Pod) -> Taken<'_> {
    let spec = pod.spec.as_ref();
    let container = spec.and_then(|s| s.containers.first());
    Taken {
        labels: keys(&pod.metadata.labels),
        annotations: keys(&pod.metadata.annotations),
        env: container
            .iter()
            .flat_map(|c| c.env.iter().flatten().map(|e| e.name.as_str()))
            .collect(),
        volumes: spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten().map(|v| v.name.as_str()))
            .collect(),
        mount_paths: container
            .iter()
            .flat_map(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .map(|m| m.mount_path.as_str())
            })
            .collect(),
    }
}

/// An embedded object (`field`) read as its Kubernetes type.
fn as_kubernetes<T: serde::de::DeserializeOwned>(
    field: &str,
    value: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::Object(value.clone()))
        .map_err(|e| format!("{field}: not a Kubernetes {}: {e}", short_type::<T>()))
}

fn short_type<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Label and annotation keys the operator owns, whether or not this pod carries them: its
/// own `multitask.dev/` keys and Kueue's, which come from the job.
fn is_reserved_key(key: &str) -> bool {
    key.starts_with("multitask.dev/") || key.starts_with("kueue.x-k8s.io/")
}

/// The headless Service of a job with several workers: DNS records for every worker pod
/// (`<pod>.<service>`), published before the pods are ready, since rank 0's store must be
/// reachable while the others start. Owned by the job, so it goes away with it.
/// The PodGroup of attempt `attempt` of a job with several workers (scheduler-plugins'
/// coscheduling): all `workers` pods are placed, or none, and it goes with the job.
pub fn build_pod_group(job: &MultiTaskTrainingJob, attempt: u32) -> Result<DynamicObject> {
    let name = job_name(job)?;
    let owner = job.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.uid",
    })?;
    let mut group = DynamicObject::new(&format!("{name}-{attempt}"), &pod_group_resource());
    group.metadata.namespace = job.namespace();
    group.metadata.labels = Some(BTreeMap::from([
        (LABEL_JOB.to_string(), name.clone()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]));
    group.metadata.owner_references = Some(vec![owner]);
    group.data = serde_json::json!({"spec": {"minMember": job.spec.workers}});
    Ok(group)
}

pub fn build_service(job: &MultiTaskTrainingJob) -> Result<Service> {
    let name = job_name(job)?;
    let owner = job.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: mtl_crds::KIND,
        field: "metadata.uid",
    })?;
    let selector = BTreeMap::from([(LABEL_JOB.to_string(), name.clone())]);
    Ok(Service {
        metadata: ObjectMeta {
            name: Some(service_name(&name)),
            namespace: job.namespace(),
            labels: Some(selector.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some("c10d".into()),
                port: i32::from(MASTER_PORT),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    })
}
