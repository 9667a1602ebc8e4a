//! What a platform team allows jobs to ask for: policy as data.
//!
//! Anyone who may create a MultiTaskTrainingJob gets the operator to create pods and Vertex AI
//! CustomJobs with the operator's own identity, and to read the job's `gs://` checkpoints with
//! it. The policy bounds every field that would otherwise let a job author do more through the
//! operator than directly: images, service accounts, PriorityClasses, schedulers, tolerations,
//! node selectors, claims, volume types, buckets, GPUs, workers, and on Vertex AI the project,
//! service account, machine and accelerator. It is the operator's default (`--policy-file`,
//! the chart's `policy` values) overridden field by field by the namespace's
//! `MultiTaskTrainingPolicy` named `default`; volume types are cluster-wide
//! (`--allow-volume-types`, matching the CRD's rule). A job outside it fails at acceptance with
//! reason `PolicyViolation`, before anything is created. Pure: tested below.

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::{
    Backend, MultiTaskTrainingJobSpec, PolicySpec, allowed_volume_types, volume_types_message,
};

/// The operator's policy: the default for namespaces without their own, and the volume types
/// allowed beyond the restricted Pod Security Standard's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// The policy of a namespace without a `MultiTaskTrainingPolicy` (`--policy-file`).
    pub defaults: PolicySpec,
    /// Volume types allowed beyond the restricted profile's (`--allow-volume-types`).
    pub extra_volume_types: Vec<String>,
}

impl Policy {
    /// Reads the default policy from a YAML file (a `MultiTaskTrainingPolicy`'s spec); the
    /// error names the file and the field at fault.
    pub fn load_defaults(path: &Path) -> Result<PolicySpec, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the policy file {}: {e}", path.display()))?;
        if text.trim().is_empty() {
            return Ok(PolicySpec::default());
        }
        let de = serde_yaml::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .location()
                .map(|l| format!(" (line {})", l.line()))
                .unwrap_or_default();
            format!(
                "the policy file {}{line}: {}: {inner}",
                path.display(),
                if at == "." { "the policy" } else { &at }
            )
        })
    }

    /// Checks `spec` (as the job runs: its image already defaulted) and the job's `labels`
    /// against the namespace's policy `namespace` over the defaults. The message names each
    /// field at fault, its value and what is allowed.
    pub fn check(
        &self,
        namespace: Option<&PolicySpec>,
        spec: &MultiTaskTrainingJobSpec,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let effective = self.effective(namespace);
        let mut violations = Vec::new();
        if spec.backend == Backend::Kubernetes {
            label_violations(&mut violations, &effective, labels);
        }
        violations.extend(spec_violations(&effective, &self.extra_volume_types, spec));
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations.join("; "))
        }
    }

    /// What the policy says against the job's `labels` alone (checked again when an attempt
    /// starts, since labels can change after acceptance).
    pub fn check_labels(
        &self,
        namespace: Option<&PolicySpec>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut violations = Vec::new();
        label_violations(&mut violations, &self.effective(namespace), labels);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations.join("; "))
        }
    }

    fn effective(&self, namespace: Option<&PolicySpec>) -> PolicySpec {
        match namespace {
            Some(ns) => ns.over(&self.defaults),
            None => self.defaults.clone(),
        }
    }
}

/// The Kueue label whose value the policy bounds (a WorkloadPriorityClass).
pub const WORKLOAD_PRIORITY_LABEL: &str = "kueue.x-k8s.io/priority-class";

fn label_violations(out: &mut Vec<String>, p: &PolicySpec, labels: &BTreeMap<String, String>) {
    one_of(
        out,
        &format!("metadata.labels[{WORKLOAD_PRIORITY_LABEL:?}]"),
        labels.get(WORKLOAD_PRIORITY_LABEL).map(String::as_str),
        &p.workload_priority_classes,
        "jobs may use the WorkloadPriorityClasses",
    );
}

/// Every way `spec` breaks `p`, in the order of the spec's fields.
fn spec_violations(
    p: &PolicySpec,
    extra_volumes: &[String],
    spec: &MultiTaskTrainingJobSpec,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(prefixes) = &p.image_prefixes {
        let image = spec.image.as_deref().unwrap_or_default();
        if !prefixes.iter().any(|pre| image.starts_with(pre.as_str())) {
            out.push(format!(
                "spec.image {image:?} is not allowed: {}",
                allowed(prefixes, "images must start with")
            ));
        }
    }
    if let Some(prefixes) = &p.bucket_prefixes {
        for (field, uri) in gs_uris(spec) {
            if !prefixes.iter().any(|pre| under_prefix(&uri, pre)) {
                out.push(format!(
                    "{field} {uri:?} is not allowed: {}",
                    allowed(prefixes, "gs:// objects must lie under")
                ));
            }
        }
    }
    let workers = spec.workers.max(1);
    cap(
        &mut out,
        "spec.workers",
        workers,
        p.max_workers,
        "maxWorkers",
    );
    match spec.backend {
        Backend::Kubernetes => kubernetes(&mut out, p, extra_volumes, spec, workers),
        Backend::VertexAi => vertex(&mut out, p, spec, workers),
    }
    out
}

fn kubernetes(
    out: &mut Vec<String>,
    p: &PolicySpec,
    extra_volumes: &[String],
    spec: &MultiTaskTrainingJobSpec,
    workers: u32,
) {
    let res = spec.resources.clone().unwrap_or_default();
    let sa = res.service_account_name.as_deref().unwrap_or("default");
    one_of(
        out,
        "spec.resources.serviceAccountName",
        Some(sa),
        &p.service_accounts,
        "pods may run as",
    );
    one_of(
        out,
        "spec.resources.gpuType",
        res.gpu_type.as_deref(),
        &p.gpu_types,
        "pods may use the GPU types",
    );
    cap(
        out,
        "spec.resources.gpus",
        res.gpus,
        p.max_gpus_per_worker,
        "maxGpusPerWorker",
    );
    cap(
        out,
        "GPUs of the job (spec.workers × spec.resources.gpus)",
        res.gpus.saturating_mul(workers),
        p.max_gpus_per_job,
        "maxGpusPerJob",
    );
    for (i, t) in res.tolerations.iter().enumerate() {
        let key = t.key.as_deref().unwrap_or_default();
        if let Some(keys) = &p.toleration_keys
            && !keys.iter().any(|k| k == key)
        {
            let every = if key.is_empty() {
                " (a toleration without a key tolerates every taint)"
            } else {
                ""
            };
            out.push(format!(
                "spec.resources.tolerations[{i}].key {key:?}{every} is not allowed: {}",
                allowed(keys, "pods may tolerate the taint keys")
            ));
        }
    }
    for key in res.node_selector.keys() {
        if let Some(keys) = &p.node_selector_keys
            && !keys.iter().any(|k| k == key)
        {
            out.push(format!(
                "spec.resources.nodeSelector[{key:?}] is not allowed: {}",
                allowed(keys, "pods may select on the node labels")
            ));
        }
    }
    one_of(
        out,
        "spec.checkpoints.persistentVolumeClaim",
        spec.checkpoints.persistent_volume_claim.as_deref(),
        &p.persistent_volume_claims,
        "pods may mount the claims",
    );
    let Some(t) = &spec.pod_template else {
        return;
    };
    one_of(
        out,
        "spec.podTemplate.priorityClassName",
        t.priority_class_name.as_deref(),
        &p.priority_classes,
        "pods may use the PriorityClasses",
    );
    one_of(
        out,
        "spec.podTemplate.schedulerName",
        t.scheduler_name.as_deref(),
        &p.scheduler_names,
        "pods may use the schedulers",
    );
    let volume_types = allowed_volume_types(extra_volumes);
    for (i, v) in t.volumes.iter().enumerate() {
        let at = format!("spec.podTemplate.volumes[{i}]");
        for ty in v.types() {
            if !volume_types.iter().any(|a| a == ty) {
                out.push(format!(
                    "{at} ({:?}) has type {ty}: {}",
                    v.name().unwrap_or_default(),
                    volume_types_message(&volume_types)
                ));
            }
        }
        let claim =
            v.0.get("persistentVolumeClaim")
                .and_then(|c| c.get("claimName"))
                .and_then(serde_json::Value::as_str);
        one_of(
            out,
            &format!("{at}.persistentVolumeClaim.claimName"),
            claim,
            &p.persistent_volume_claims,
            "pods may mount the claims",
        );
    }
}

fn vertex(out: &mut Vec<String>, p: &PolicySpec, spec: &MultiTaskTrainingJobSpec, workers: u32) {
    let Some(v) = spec.vertex_ai.as_ref() else {
        return;
    };
    let vp = &p.vertex_ai;
    one_of(
        out,
        "spec.vertexAI.project",
        Some(&v.project),
        &vp.projects,
        "Vertex AI jobs may run in",
    );
    one_of(
        out,
        "spec.vertexAI.serviceAccount",
        v.service_account.as_deref().filter(|s| !s.is_empty()),
        &vp.service_accounts,
        "Vertex AI jobs may run as",
    );
    let machine = v.effective_machine_type().ok();
    one_of(
        out,
        "spec.vertexAI.machineType",
        machine.as_deref(),
        &vp.machine_types,
        "Vertex AI jobs may use the machine types",
    );
    one_of(
        out,
        "spec.vertexAI.acceleratorType",
        v.accelerator_type.as_deref(),
        &vp.accelerator_types,
        "Vertex AI jobs may use the accelerators",
    );
    one_of(
        out,
        "spec.vertexAI.network",
        v.network.as_deref(),
        &vp.networks,
        "Vertex AI jobs may be peered with the networks",
    );
    if v.enable_web_access && vp.allow_web_access == Some(false) {
        out.push(
            "spec.vertexAI.enableWebAccess is not allowed: the policy gives no interactive shell into Vertex AI jobs (it would run as the job's service account)".into(),
        );
    }
    let per_worker = if v.accelerator_type.is_some() {
        v.accelerator_count
    } else {
        0
    };
    cap(
        out,
        "spec.vertexAI.acceleratorCount",
        per_worker,
        p.max_gpus_per_worker,
        "maxGpusPerWorker",
    );
    cap(
        out,
        "accelerators of the job (spec.workers × spec.vertexAI.acceleratorCount)",
        per_worker.saturating_mul(workers),
        p.max_gpus_per_job,
        "maxGpusPerJob",
    );
}

/// The `gs://` URIs of a spec, each with its field: what the trainer reads and writes with
/// the job's identity, and (the checkpoints) what the operator reads with its own.
fn gs_uris(spec: &MultiTaskTrainingJobSpec) -> Vec<(String, String)> {
    let mut out = vec![(
        "spec.model.pretrained".to_string(),
        spec.model.pretrained.clone(),
    )];
    for (i, t) in spec.tasks.iter().enumerate() {
        out.push((
            format!("spec.tasks[{i}] ({}).train", t.name),
            t.train.clone(),
        ));
        if let Some(v) = &t.validation {
            out.push((
                format!("spec.tasks[{i}] ({}).validation", t.name),
                v.clone(),
            ));
        }
    }
    out.push(("spec.checkpoints.uri".into(), spec.checkpoints.uri.clone()));
    out.retain(|(_, uri)| uri.starts_with("gs://"));
    out
}

/// Whether `uri` lies under `prefix`, which ends at a path boundary: `gs://team-a` admits
/// `gs://team-a/x` but not `gs://team-a-other/x`.
fn under_prefix(uri: &str, prefix: &str) -> bool {
    match uri.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A field whose value, when set, must be one of `allowed_values` (when the policy sets them).
fn one_of(
    out: &mut Vec<String>,
    field: &str,
    value: Option<&str>,
    allowed_values: &Option<Vec<String>>,
    what: &str,
) {
    if let (Some(value), Some(values)) = (value, allowed_values)
        && !values.iter().any(|a| a == value)
    {
        out.push(format!(
            "{field} {value:?} is not allowed: {}",
            allowed(values, what)
        ));
    }
}

/// A count that must not exceed the policy's `max` (named `name` in the policy).
fn cap(out: &mut Vec<String>, field: &str, value: u32, max: Option<u32>, name: &str) {
    if let Some(max) = max
        && value > max
    {
        out.push(format!(
            "{field} {value} is over the policy's {name} of {max}"
        ));
    }
}

/// "`what` "a" or "b"", or that the policy allows none.
fn allowed(items: &[String], what: &str) -> String {
    if items.is_empty() {
        return "the policy allows none".into();
    }
    let list = items
        .iter()
        .map(|i| format!("{i:?}"))
        .collect::<Vec<_>>()
        .join(" or ");
    format!("{what} {list}")
}

#[cfg(test)]
mod tests;
