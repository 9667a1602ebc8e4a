//! `MultiTaskTrainingJob` → Vertex AI `CustomJob`: a pure builder, tested field by field.
//!
//! The CustomJob runs the same trainer image as the pod backend with the same arguments
//! (`train --job-json <spec>`; the image's ENTRYPOINT is `mtl-trainer`), writes under the
//! checkpoint URI, and carries labels that tie it to the Kubernetes object and attempt, which is
//! how [`super::VertexClient::ensure_created`] finds it again after an operator restart.

use std::collections::BTreeMap;

use google_cloud_aiplatform_v1::model::{
    AcceleratorType, ContainerSpec, CustomJob, CustomJobSpec, EnvVar, GcsDestination, MachineSpec,
    Scheduling, WorkerPoolSpec,
};
use mtl_crds::{
    MultiTaskTrainingJob, VertexAiSpec, VertexReservationType, VertexSchedulingStrategy,
};

use super::error::{Error, Result};
use mtl_crds::contract;

/// Label keys on every CustomJob the operator creates.
pub const LABEL_NAMESPACE: &str = "mtl-namespace";
pub const LABEL_JOB: &str = "mtl-job";
pub const LABEL_UID: &str = "mtl-uid";
pub const LABEL_ATTEMPT: &str = "mtl-attempt";
pub const LABEL_MANAGED_BY: &str = "managed-by";
const MANAGED_BY: &str = "mtl-operator";

/// Where the trainer caches downloaded models and datasets inside the Vertex container.
pub const TRAINER_CACHE_DIR: &str = "/tmp/cache";

/// Vertex AI caps label values at 63 characters and display names at 128.
const MAX_LABEL_VALUE: usize = 63;
const MAX_DISPLAY_NAME: usize = 128;

/// `projects/{project}/locations/{region}`: the parent of the job's CustomJobs.
pub fn parent(vertex: &VertexAiSpec) -> String {
    format!("projects/{}/locations/{}", vertex.project, vertex.region)
}

fn namespace_of(job: &MultiTaskTrainingJob) -> &str {
    job.metadata.namespace.as_deref().unwrap_or("default")
}

fn name_of(job: &MultiTaskTrainingJob) -> &str {
    job.metadata
        .name
        .as_deref()
        .or(job.metadata.generate_name.as_deref())
        .unwrap_or("")
}

/// The Kubernetes UID, or for a job read from a file (no UID) a stable stand-in derived from
/// namespace and name, so the CLI's CustomJobs are found again by the same label query.
pub(crate) fn uid_of(job: &MultiTaskTrainingJob) -> String {
    match job.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "local-{:016x}",
            fnv1a(&format!("{}/{}", namespace_of(job), name_of(job)))
        ),
    }
}

/// FNV-1a, 64 bit: stable across Rust versions, unlike `DefaultHasher`.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `<namespace>-<name>-<attempt>`, cut to Vertex's 128 characters (keeping the attempt).
pub fn display_name(job: &MultiTaskTrainingJob, attempt: u32) -> String {
    let suffix = format!("-{attempt}");
    let mut head = format!("{}-{}", namespace_of(job), name_of(job));
    truncate_chars(&mut head, MAX_DISPLAY_NAME - suffix.len());
    head + &suffix
}

fn truncate_chars(s: &mut String, max: usize) {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
}

/// A label value that Vertex AI accepts: lowercase, only `[a-z0-9_-]`, at most 63 characters.
/// Other characters (`.`, `/`, upper case already lowered, non-ASCII) become `-`.
pub fn sanitize_label_value(value: &str) -> String {
    value
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' | '-' => c,
            _ => '-',
        })
        .take(MAX_LABEL_VALUE)
        .collect()
}

/// The labels that tie a CustomJob to its Kubernetes object and attempt.
pub fn job_labels(job: &MultiTaskTrainingJob, attempt: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            LABEL_NAMESPACE.into(),
            sanitize_label_value(namespace_of(job)),
        ),
        (LABEL_JOB.into(), sanitize_label_value(name_of(job))),
        (LABEL_UID.into(), sanitize_label_value(&uid_of(job))),
        (LABEL_ATTEMPT.into(), attempt.to_string()),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
    ])
}

/// Vertex's AcceleratorType from the spec's name. Accepts the API names (`NVIDIA_TESLA_T4`) and
/// the GKE spelling (`nvidia-tesla-t4`). An unknown name is passed through as a string, so
/// Vertex itself answers 400 with the list of valid values (and newer types still work).
fn accelerator_type(name: &str) -> AcceleratorType {
    AcceleratorType::from(mtl_crds::accelerator_api_name(name).as_str())
}

/// Checks what `build_custom_job` cannot express: the settings a Vertex AI job needs.
/// The errors name the field to fix; they are not retryable.
pub fn validate_for_vertex(job: &MultiTaskTrainingJob) -> Result<&VertexAiSpec> {
    let who = format!("{}/{}", namespace_of(job), name_of(job));
    let invalid = |message: String| Error::InvalidSpec {
        job: who.clone(),
        message,
    };
    if name_of(job).is_empty() {
        return Err(invalid("metadata.name: required".into()));
    }
    let vertex = job.spec.vertex_ai.as_ref().ok_or_else(|| {
        invalid("spec.vertexAI: required for backend vertexAI (project, region)".into())
    })?;
    if vertex.project.trim().is_empty() {
        return Err(invalid("spec.vertexAI.project: required".into()));
    }
    if vertex.region.is_empty()
        || !vertex
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid(format!(
            "spec.vertexAI.region: {:?} is not a Vertex AI region such as us-central1",
            vertex.region
        )));
    }
    vertex.effective_machine_type().map_err(invalid)?;
    if vertex.tensorboard.is_some() && vertex.service_account.as_deref().is_none_or(str::is_empty) {
        return Err(invalid(
            "spec.vertexAI.serviceAccount: required when spec.vertexAI.tensorboard is set (Vertex AI uploads the logs as that account)".into(),
        ));
    }
    if vertex.max_wait_duration.is_some()
        && vertex.scheduling_strategy != Some(VertexSchedulingStrategy::FlexStart)
    {
        return Err(invalid(
            "spec.vertexAI.maxWaitDuration: only for schedulingStrategy FLEX_START (the others do not wait for machines)".into(),
        ));
    }
    if let Some(r) = &vertex.reservation_affinity {
        let specific = r.affinity_type == VertexReservationType::SpecificReservation;
        if specific != (r.key.is_some() && !r.values.is_empty()) {
            return Err(invalid(if specific {
                "spec.vertexAI.reservationAffinity: SPECIFIC_RESERVATION needs key and values (the reservations)".into()
            } else {
                "spec.vertexAI.reservationAffinity: key and values are only for SPECIFIC_RESERVATION".into()
            }));
        }
    }
    if vertex.accelerator_count > 0 && vertex.accelerator_type.is_none() {
        return Err(invalid(format!(
            "spec.vertexAI.acceleratorType: required when acceleratorCount is {}, e.g. NVIDIA_TESLA_T4",
            vertex.accelerator_count
        )));
    }
    if job
        .spec
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        return Err(invalid(
            "spec.image: required for backend vertexAI (the trainer image, pushed to a registry Vertex AI can pull from), or an operator --default-image".into(),
        ));
    }
    if !job.spec.checkpoints.uri.starts_with("gs://") {
        return Err(invalid(format!(
            "spec.checkpoints.uri: {:?} must be a gs:// URI for backend vertexAI (it becomes the CustomJob's baseOutputDirectory)",
            job.spec.checkpoints.uri
        )));
    }
    for (set, field) in [
        (job.spec.pod_template.is_some(), "spec.podTemplate"),
        (
            job.spec.checkpoints.persistent_volume_claim.is_some(),
            "spec.checkpoints.persistentVolumeClaim",
        ),
    ] {
        if set {
            return Err(invalid(format!(
                "{field}: applies to the pods of backend kubernetes; a Vertex AI custom job has none"
            )));
        }
    }
    if let Err(e) = serde_json::to_string(&job.spec) {
        return Err(invalid(format!("spec cannot be encoded as JSON: {e}")));
    }
    Ok(vertex)
}

/// Logs a warning for each task file that is not a gs:// URI: the Vertex AI container can only
/// read it if the image bundles it.
pub(crate) fn warn_local_paths(job: &MultiTaskTrainingJob) {
    let who = format!("{}/{}", namespace_of(job), name_of(job));
    for (i, task) in job.spec.tasks.iter().enumerate() {
        for (field, uri) in [
            ("train", Some(&task.train)),
            ("validation", task.validation.as_ref()),
        ] {
            if let Some(uri) = uri
                && !uri.starts_with("gs://")
            {
                tracing::warn!(job = %who, "spec.tasks[{i}].{field} = {uri:?} is not a gs:// URI: the Vertex AI container must already hold it");
            }
        }
    }
}

/// The CustomJob for one attempt of `job`. Pure: no network, no clock.
///
/// Assumes [`validate_for_vertex`] passed; missing settings come out empty (and Vertex AI
/// rejects them) rather than panicking.
pub fn build_custom_job(job: &MultiTaskTrainingJob, attempt: u32) -> CustomJob {
    let vertex = job.spec.vertex_ai.clone().unwrap_or_default();
    // Serialising plain data structs to JSON cannot fail; validate_for_vertex reports it if it
    // ever did.
    let spec_json = serde_json::to_string(&job.spec).unwrap_or_default();

    let mut machine =
        MachineSpec::new().set_machine_type(vertex.effective_machine_type().unwrap_or_default());
    if let Some(accel) = vertex.accelerator_type.as_deref() {
        machine = machine
            .set_accelerator_type(accelerator_type(accel))
            .set_accelerator_count(i32::try_from(vertex.accelerator_count).unwrap_or(i32::MAX));
    }
    if let Some(r) = &vertex.reservation_affinity {
        use google_cloud_aiplatform_v1::model::ReservationAffinity;
        use google_cloud_aiplatform_v1::model::reservation_affinity::Type;
        let mut affinity =
            ReservationAffinity::new().set_reservation_affinity_type(match r.affinity_type {
                VertexReservationType::NoReservation => Type::NoReservation,
                VertexReservationType::AnyReservation => Type::AnyReservation,
                VertexReservationType::SpecificReservation => Type::SpecificReservation,
            });
        if let Some(key) = &r.key {
            affinity = affinity.set_key(key.clone());
        }
        machine = machine.set_reservation_affinity(affinity.set_values(r.values.clone()));
    }

    let container = ContainerSpec::new()
        .set_image_uri(job.spec.image.clone().unwrap_or_default())
        .set_args(contract::trainer_args(spec_json))
        .set_env([
            EnvVar::new()
                .set_name(contract::ENV_CACHE_DIR)
                .set_value(TRAINER_CACHE_DIR),
            // As on pods: which job and attempt this is.
            EnvVar::new()
                .set_name(contract::ENV_JOB_NAME)
                .set_value(name_of(job)),
            EnvVar::new()
                .set_name(contract::ENV_ATTEMPT)
                .set_value(attempt.to_string()),
        ]);

    // Several workers: the primary replica in pool 0 (rank 0, the rendezvous host), the others
    // in pool 1, all alike; Vertex AI tells each where it stands in CLUSTER_SPEC.
    let disk = vertex.boot_disk_size_gb.map(|gb| {
        google_cloud_aiplatform_v1::model::DiskSpec::new()
            .set_boot_disk_size_gb(i32::try_from(gb).unwrap_or(i32::MAX))
    });
    let pool = |replicas: i64| {
        let pool = WorkerPoolSpec::new()
            .set_machine_spec(machine.clone())
            .set_replica_count(replicas)
            .set_container_spec(container.clone());
        match &disk {
            Some(d) => pool.set_disk_spec(d.clone()),
            None => pool,
        }
    };
    let mut pools = vec![pool(1)];
    if job.spec.workers > 1 {
        pools.push(pool(i64::from(job.spec.workers) - 1));
    }

    let mut spec = CustomJobSpec::new()
        .set_worker_pool_specs(pools)
        .set_base_output_directory(
            GcsDestination::new().set_output_uri_prefix(job.spec.checkpoints.uri.clone()),
        );
    let deadline = job.spec.run_policy.active_deadline_seconds;
    // Retries: the operator's backoffLimit is the only retry of a failed attempt. With one
    // worker Vertex AI retries nothing itself (`disableRetries`). With several, a worker
    // restarted in place cannot rejoin the static c10d world (its peers would wait out
    // --dist-timeout): a restarted worker restarts the whole job (`restartJobOnWorkerRestart`),
    // which `disableRetries` would turn off (Vertex AI's Scheduling reference), so it is not
    // sent then.
    let mut scheduling = if job.spec.workers > 1 {
        Scheduling::new().set_restart_job_on_worker_restart(true)
    } else {
        Scheduling::new().set_disable_retries(true)
    };
    if let Some(secs) = deadline {
        scheduling = scheduling.set_timeout(google_cloud_wkt::Duration::clamp(secs.max(0), 0));
    }
    if let Some(wait) = vertex
        .max_wait_duration
        .as_deref()
        .and_then(|w| w.strip_suffix('s'))
        .and_then(|w| w.parse::<i64>().ok())
    {
        scheduling = scheduling.set_max_wait_duration(google_cloud_wkt::Duration::clamp(wait, 0));
    }
    if let Some(s) = vertex.scheduling_strategy {
        use google_cloud_aiplatform_v1::model::scheduling::Strategy;
        scheduling = scheduling.set_strategy(match s {
            VertexSchedulingStrategy::Standard => Strategy::Standard,
            VertexSchedulingStrategy::Spot => Strategy::Spot,
            VertexSchedulingStrategy::FlexStart => Strategy::FlexStart,
        });
    }
    spec = spec.set_scheduling(scheduling);
    if let Some(sa) = vertex.service_account.as_deref().filter(|s| !s.is_empty()) {
        spec = spec.set_service_account(sa);
    }
    if let Some(tb) = vertex.tensorboard.as_deref().filter(|s| !s.is_empty()) {
        spec = spec.set_tensorboard(tb);
    }
    if let Some(network) = vertex.network.as_deref().filter(|s| !s.is_empty()) {
        spec = spec.set_network(network);
    }
    if vertex.enable_web_access {
        spec = spec.set_enable_web_access(true);
    }

    CustomJob::new()
        .set_display_name(display_name(job, attempt))
        .set_job_spec(spec)
        .set_labels(custom_job_labels(job, attempt))
}

/// Vertex AI allows at most this many labels on a resource.
const MAX_LABELS: usize = 64;

/// The job's own labels (keys and values in Vertex's alphabet; keys that cannot start with a
/// letter are left out), then the operator's [`job_labels`], which win, at most 64 in all.
fn custom_job_labels(job: &MultiTaskTrainingJob, attempt: u32) -> BTreeMap<String, String> {
    let ours = job_labels(job, attempt);
    let room = MAX_LABELS - ours.len();
    let mut labels: BTreeMap<String, String> = job
        .metadata
        .labels
        .iter()
        .flatten()
        .map(|(k, v)| (sanitize_label_value(k), sanitize_label_value(v)))
        .filter(|(k, _)| k.starts_with(|c: char| c.is_ascii_lowercase()) && !ours.contains_key(k))
        .take(room)
        .collect();
    labels.extend(ours);
    labels
}

/// True when `custom_job` carries the labels of `job`'s `attempt`.
pub(crate) fn is_attempt_of(
    custom_job: &CustomJob,
    job: &MultiTaskTrainingJob,
    attempt: u32,
) -> bool {
    let want = job_labels(job, attempt);
    [LABEL_UID, LABEL_ATTEMPT]
        .iter()
        .all(|k| custom_job.labels.get(*k) == want.get(*k))
}

/// The attempt label of a CustomJob, when it has one.
pub(crate) fn attempt_label(custom_job: &CustomJob) -> Option<u32> {
    custom_job.labels.get(LABEL_ATTEMPT)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_vertex_rules() {
        assert_eq!(sanitize_label_value("My.Job/1"), "my-job-1");
        assert_eq!(sanitize_label_value("ok_name-2"), "ok_name-2");
        assert_eq!(sanitize_label_value("Ünï"), "-n-");
        let long = "a".repeat(100);
        assert_eq!(sanitize_label_value(&long).len(), 63);
    }

    #[test]
    fn accelerator_names_in_both_spellings() {
        assert_eq!(
            accelerator_type("NVIDIA_TESLA_T4"),
            AcceleratorType::NvidiaTeslaT4
        );
        assert_eq!(accelerator_type("nvidia-l4"), AcceleratorType::NvidiaL4);
        assert!(matches!(
            accelerator_type("NVIDIA_FOO"),
            AcceleratorType::UnknownValue(_)
        ));
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
