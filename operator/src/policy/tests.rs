use super::*;
use serde_json::json;

/// `Policy::check` of a job without labels.
trait CheckSpec {
    fn check_spec(
        &self,
        ns: Option<&PolicySpec>,
        spec: &MultiTaskTrainingJobSpec,
    ) -> Result<(), String>;
}

impl CheckSpec for Policy {
    fn check_spec(
        &self,
        ns: Option<&PolicySpec>,
        spec: &MultiTaskTrainingJobSpec,
    ) -> Result<(), String> {
        self.check(ns, spec, &BTreeMap::new())
    }
}

fn spec(extra: serde_json::Value) -> MultiTaskTrainingJobSpec {
    let mut v = json!({
        "image": "us-docker.pkg.dev/acme/mtl/mtl-trainer:1",
        "model": {"pretrained": "gs://acme-models/roberta"},
        "tasks": [{"name": "stsb", "type": "regression", "train": "gs://acme-data/stsb.tsv",
                   "format": "glueTsv", "textFields": ["s1", "s2"], "labelField": "score"}],
        "checkpoints": {"uri": "gs://acme-runs/out"},
        "resources": {"serviceAccountName": "trainer"}
    });
    for (k, e) in extra.as_object().unwrap() {
        v[k] = e.clone();
    }
    serde_json::from_value(v).unwrap()
}

fn policy(p: serde_json::Value) -> Policy {
    Policy {
        defaults: serde_json::from_value(p).unwrap(),
        extra_volume_types: Vec::new(),
    }
}

fn acme() -> Policy {
    policy(json!({
        "imagePrefixes": ["us-docker.pkg.dev/acme/mtl/"],
        "serviceAccounts": ["trainer"],
        "vertexAI": {"projects": ["acme-ml"],
                     "serviceAccounts": ["trainer@acme-ml.iam.gserviceaccount.com"]}
    }))
}

#[test]
fn an_empty_policy_allows_everything_but_other_volume_types() {
    Policy::default()
        .check_spec(None, &spec(json!({"image": "docker.io/evil:latest"})))
        .unwrap();
    let host = spec(json!({"podTemplate": {"volumes": [
        {"name": "cache", "emptyDir": {}},
        {"name": "node", "hostPath": {"path": "/"}}
    ]}}));
    let err = Policy::default().check_spec(None, &host).unwrap_err();
    assert_eq!(
        err,
        "spec.podTemplate.volumes[1] (\"node\") has type hostPath: volume type not allowed: the operator mounts only configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret volumes (the restricted Pod Security Standard's types, and those the cluster's administrator allowed)"
    );
    let widened = Policy {
        extra_volume_types: vec!["hostPath".into()],
        ..Policy::default()
    };
    widened.check_spec(None, &host).unwrap();
}

#[test]
fn images_must_start_with_an_allowed_prefix() {
    let p = acme();
    p.check_spec(None, &spec(json!({}))).unwrap();
    let err = p
        .check_spec(None, &spec(json!({"image": "docker.io/evil:latest"})))
        .unwrap_err();
    assert_eq!(
        err,
        "spec.image \"docker.io/evil:latest\" is not allowed: images must start with \"us-docker.pkg.dev/acme/mtl/\""
    );
    // A prefix, not a substring: the registry host cannot be faked by a path.
    let err = p
        .check_spec(
            None,
            &spec(json!({"image": "evil.io/us-docker.pkg.dev/acme/mtl/x"})),
        )
        .unwrap_err();
    assert!(err.starts_with("spec.image"), "{err}");
}

#[test]
fn pods_run_only_as_allowed_service_accounts() {
    let err = acme()
        .check_spec(None, &spec(json!({"resources": {}})))
        .unwrap_err();
    assert_eq!(
        err,
        "spec.resources.serviceAccountName \"default\" is not allowed: pods may run as \"trainer\""
    );
}

#[test]
fn a_namespace_policy_overrides_the_default_field_by_field() {
    let ns: PolicySpec = serde_json::from_value(json!({
        "imagePrefixes": ["gcr.io/team-a/"],
        "priorityClasses": []
    }))
    .unwrap();
    let p = acme();
    let err = p.check_spec(Some(&ns), &spec(json!({}))).unwrap_err();
    assert!(
        err.starts_with("spec.image \"us-docker.pkg.dev/acme/mtl/mtl-trainer:1\" is not allowed: images must start with \"gcr.io/team-a/\""),
        "{err}"
    );
    // The service accounts still come from the default.
    let job = spec(json!({"image": "gcr.io/team-a/t:1", "resources": {"serviceAccountName": "x"}}));
    let err = p.check_spec(Some(&ns), &job).unwrap_err();
    assert!(
        err.starts_with("spec.resources.serviceAccountName \"x\""),
        "{err}"
    );
    // `[]` allows none: only leaving the field unset.
    let job = spec(json!({"image": "gcr.io/team-a/t:1",
        "podTemplate": {"priorityClassName": "high"}}));
    assert_eq!(
        p.check_spec(Some(&ns), &job).unwrap_err(),
        "spec.podTemplate.priorityClassName \"high\" is not allowed: the policy allows none"
    );
    p.check_spec(Some(&ns), &spec(json!({"image": "gcr.io/team-a/t:1"})))
        .unwrap();
}

#[test]
fn scheduling_fields_are_bounded() {
    let p = policy(json!({
        "priorityClasses": ["batch-low"],
        "schedulerNames": ["default-scheduler"],
        "tolerationKeys": ["nvidia.com/gpu"],
        "nodeSelectorKeys": ["cloud.google.com/gke-nodepool"],
        "gpuTypes": ["nvidia-l4"]
    }));
    let job = spec(json!({
        "resources": {"serviceAccountName": "trainer", "gpuType": "nvidia-h100-80gb",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"},
                            {"key": "dedicated", "value": "team-b", "effect": "NoSchedule"},
                            {"operator": "Exists"}],
            "nodeSelector": {"team": "b"}},
        "podTemplate": {"priorityClassName": "system-cluster-critical", "schedulerName": "mine"}
    }));
    let err = p.check_spec(None, &job).unwrap_err();
    let parts: Vec<&str> = err.split("; ").collect();
    assert_eq!(
        parts,
        [
            "spec.resources.gpuType \"nvidia-h100-80gb\" is not allowed: pods may use the GPU types \"nvidia-l4\"",
            "spec.resources.tolerations[1].key \"dedicated\" is not allowed: pods may tolerate the taint keys \"nvidia.com/gpu\"",
            "spec.resources.tolerations[2].key \"\" (a toleration without a key tolerates every taint) is not allowed: pods may tolerate the taint keys \"nvidia.com/gpu\"",
            "spec.resources.nodeSelector[\"team\"] is not allowed: pods may select on the node labels \"cloud.google.com/gke-nodepool\"",
            "spec.podTemplate.priorityClassName \"system-cluster-critical\" is not allowed: pods may use the PriorityClasses \"batch-low\"",
            "spec.podTemplate.schedulerName \"mine\" is not allowed: pods may use the schedulers \"default-scheduler\"",
        ]
    );
}

#[test]
fn gpus_and_workers_are_capped() {
    let p = policy(json!({"maxGpusPerWorker": 8, "maxWorkers": 4, "maxGpusPerJob": 16}));
    let job = |gpus: u32, workers: u32| {
        spec(json!({"resources": {"gpus": gpus}, "workers": workers,
            "checkpoints": {"uri": "gs://acme-runs/out"}}))
    };
    p.check_spec(None, &job(8, 2)).unwrap();
    assert_eq!(
        p.check_spec(None, &job(9, 1)).unwrap_err(),
        "spec.resources.gpus 9 is over the policy's maxGpusPerWorker of 8"
    );
    assert_eq!(
        p.check_spec(None, &job(1, 5)).unwrap_err(),
        "spec.workers 5 is over the policy's maxWorkers of 4"
    );
    assert_eq!(
        p.check_spec(None, &job(8, 3)).unwrap_err(),
        "GPUs of the job (spec.workers × spec.resources.gpus) 24 is over the policy's maxGpusPerJob of 16"
    );
}

#[test]
fn claims_are_bounded_wherever_they_are_mounted() {
    let p = policy(json!({"persistentVolumeClaims": ["team-a-data"]}));
    let job = spec(json!({
        "checkpoints": {"uri": "/ckpt", "persistentVolumeClaim": "team-b-ckpt"},
        "podTemplate": {"volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "team-a-data"}},
            {"name": "other", "persistentVolumeClaim": {"claimName": "team-b-data"}}
        ]}
    }));
    let err = p.check_spec(None, &job).unwrap_err();
    assert_eq!(
        err,
        "spec.checkpoints.persistentVolumeClaim \"team-b-ckpt\" is not allowed: pods may mount the claims \"team-a-data\"; spec.podTemplate.volumes[1].persistentVolumeClaim.claimName \"team-b-data\" is not allowed: pods may mount the claims \"team-a-data\""
    );
}

#[test]
fn gs_uris_must_lie_under_an_allowed_prefix_at_a_path_boundary() {
    let p = policy(
        json!({"bucketPrefixes": ["gs://acme-models", "gs://acme-data/", "gs://acme-runs/team-a/"]}),
    );
    let job = spec(json!({"checkpoints": {"uri": "gs://acme-runs/team-a/run-1"}}));
    p.check_spec(None, &job).unwrap();
    let job = spec(json!({
        "model": {"pretrained": "gs://acme-models-other/roberta"},
        "checkpoints": {"uri": "gs://acme-runs/team-b/run-1"}
    }));
    let err = p.check_spec(None, &job).unwrap_err();
    assert_eq!(
        err,
        "spec.model.pretrained \"gs://acme-models-other/roberta\" is not allowed: gs:// objects must lie under \"gs://acme-models\" or \"gs://acme-data/\" or \"gs://acme-runs/team-a/\"; spec.checkpoints.uri \"gs://acme-runs/team-b/run-1\" is not allowed: gs:// objects must lie under \"gs://acme-models\" or \"gs://acme-data/\" or \"gs://acme-runs/team-a/\""
    );
    // Paths on a claim or in the image are not the operator's to read: not bounded here.
    let local = spec(json!({"model": {"pretrained": "/models/roberta"},
        "checkpoints": {"uri": "gs://acme-runs/team-a/x"}}));
    p.check_spec(None, &local).unwrap();
}

#[test]
fn vertex_jobs_are_bounded() {
    let vertex = |v: serde_json::Value, workers: u32| {
        let mut base = json!({"project": "acme-ml", "region": "us-central1",
            "machineType": "a2-highgpu-1g", "acceleratorType": "NVIDIA_TESLA_A100",
            "acceleratorCount": 1});
        for (k, e) in v.as_object().unwrap() {
            base[k] = e.clone();
        }
        spec(
            json!({"backend": "vertexAI", "vertexAI": base, "workers": workers,
            "resources": null}),
        )
    };
    let mut p = acme();
    p.defaults.vertex_ai.machine_types = Some(vec!["a2-highgpu-1g".into()]);
    p.defaults.vertex_ai.accelerator_types = Some(vec!["NVIDIA_TESLA_A100".into()]);
    p.defaults.max_gpus_per_worker = Some(8);
    p.defaults.max_gpus_per_job = Some(8);
    p.check_spec(None, &vertex(json!({}), 1)).unwrap();
    p.check_spec(
        None,
        &vertex(
            json!({"serviceAccount": "trainer@acme-ml.iam.gserviceaccount.com"}),
            1,
        ),
    )
    .unwrap();
    assert_eq!(
        p.check_spec(None, &vertex(json!({"project": "someone-else"}), 1))
            .unwrap_err(),
        "spec.vertexAI.project \"someone-else\" is not allowed: Vertex AI jobs may run in \"acme-ml\""
    );
    let err = p
        .check_spec(
            None,
            &vertex(
                json!({"serviceAccount": "owner@acme-ml.iam.gserviceaccount.com"}),
                1,
            ),
        )
        .unwrap_err();
    assert!(
        err.starts_with(
            "spec.vertexAI.serviceAccount \"owner@acme-ml.iam.gserviceaccount.com\" is not allowed"
        ),
        "{err}"
    );
    assert_eq!(
        p.check_spec(
            None,
            &vertex(
                json!({"machineType": "a3-highgpu-8g", "acceleratorType": "NVIDIA_H100_80GB"}),
                1
            )
        )
        .unwrap_err(),
        "spec.vertexAI.machineType \"a3-highgpu-8g\" is not allowed: Vertex AI jobs may use the machine types \"a2-highgpu-1g\"; spec.vertexAI.acceleratorType \"NVIDIA_H100_80GB\" is not allowed: Vertex AI jobs may use the accelerators \"NVIDIA_TESLA_A100\""
    );
    assert_eq!(
        p.check_spec(None, &vertex(json!({"acceleratorCount": 4}), 4))
            .unwrap_err(),
        "accelerators of the job (spec.workers × spec.vertexAI.acceleratorCount) 16 is over the policy's maxGpusPerJob of 8"
    );
}

#[test]
fn a_policy_file_names_the_field_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, "imagePrefixes: [gcr.io/a/]\nmaxWorkers: many\n").unwrap();
    let err = Policy::load_defaults(&path).unwrap_err();
    assert!(err.contains("policy.yaml"), "{err}");
    assert!(err.contains("maxWorkers"), "{err}");
    std::fs::write(
        &path,
        "imagePrefixes: [gcr.io/a/]\nvertexAI: {projects: [p]}\n",
    )
    .unwrap();
    let p = Policy::load_defaults(&path).unwrap();
    assert_eq!(p.image_prefixes, Some(vec!["gcr.io/a/".to_string()]));
    assert_eq!(p.vertex_ai.projects, Some(vec!["p".to_string()]));
    // A misspelt field is an error, not a field that allows everything.
    std::fs::write(&path, "imagePrefix: [gcr.io/a/]\n").unwrap();
    let err = Policy::load_defaults(&path).unwrap_err();
    assert!(err.contains("imagePrefix"), "{err}");
    std::fs::write(&path, "{}\n").unwrap();
    assert_eq!(Policy::load_defaults(&path).unwrap(), PolicySpec::default());
}

#[test]
fn kueue_workload_priority_classes_are_bounded() {
    let p = policy(json!({"workloadPriorityClasses": ["low"]}));
    let labels = |class: &str| {
        BTreeMap::from([
            (
                "kueue.x-k8s.io/queue-name".to_string(),
                "team-a".to_string(),
            ),
            (WORKLOAD_PRIORITY_LABEL.to_string(), class.to_string()),
        ])
    };
    p.check(None, &spec(json!({})), &labels("low")).unwrap();
    p.check(None, &spec(json!({})), &BTreeMap::new()).unwrap();
    let err = p
        .check(None, &spec(json!({})), &labels("urgent"))
        .unwrap_err();
    assert_eq!(
        err,
        "metadata.labels[\"kueue.x-k8s.io/priority-class\"] \"urgent\" is not allowed: jobs may use the WorkloadPriorityClasses \"low\""
    );
    assert_eq!(p.check_labels(None, &labels("urgent")).unwrap_err(), err);
}

#[test]
fn vertex_networks_and_web_access_are_bounded() {
    let p = policy(
        json!({"vertexAI": {"networks": ["projects/1/global/networks/team-a"],
                                       "allowWebAccess": false}}),
    );
    let job = |v: serde_json::Value| {
        let mut base = json!({"project": "acme-ml", "region": "us-central1"});
        for (k, e) in v.as_object().unwrap() {
            base[k] = e.clone();
        }
        spec(json!({"backend": "vertexAI", "vertexAI": base, "resources": null}))
    };
    p.check_spec(
        None,
        &job(json!({"network": "projects/1/global/networks/team-a"})),
    )
    .unwrap();
    assert_eq!(
        p.check_spec(
            None,
            &job(json!({"network": "projects/1/global/networks/prod"}))
        )
        .unwrap_err(),
        "spec.vertexAI.network \"projects/1/global/networks/prod\" is not allowed: Vertex AI jobs may be peered with the networks \"projects/1/global/networks/team-a\""
    );
    let err = p
        .check_spec(None, &job(json!({"enableWebAccess": true})))
        .unwrap_err();
    assert!(
        err.starts_with("spec.vertexAI.enableWebAccess is not allowed"),
        "{err}"
    );
    Policy::default()
        .check_spec(None, &job(json!({"enableWebAccess": true})))
        .unwrap();
}
