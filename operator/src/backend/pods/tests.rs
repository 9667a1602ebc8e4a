use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use super::*;
use crate::backend::AttemptState;
use crate::fixtures::{JobExt, test_job};

fn gpu_job() -> MultiTaskTrainingJob {
    let mut job = test_job().checkpoints_at("gs://b/out");
    job.spec.resources = Some(
        serde_json::from_value(serde_json::json!({
            "gpus": 2,
            "gpuType": "nvidia-l4",
            "cpu": "8",
            "memory": "32Gi",
            "nodeSelector": {"pool": "training"},
            "tolerations": [{"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
            "serviceAccountName": "trainer-wi",
        }))
        .unwrap(),
    );
    job
}

#[test]
fn pod_spec_carries_everything_the_trainer_needs() {
    let job = gpu_job();
    let pod = build_pod(&job, 3, 0, &PodOptions::default()).unwrap();
    let v = serde_json::to_value(&pod).unwrap();
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["metadata"]["name"], "train-3");
    assert_eq!(v["metadata"]["namespace"], "testns");
    assert_eq!(v["metadata"]["labels"][LABEL_JOB], "train");
    assert_eq!(v["metadata"]["labels"][LABEL_ATTEMPT], "3");
    let owner = &v["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "MultiTaskTrainingJob");
    assert_eq!(owner["apiVersion"], "multitask.dev/v1alpha1");
    assert_eq!(owner["uid"], "uid-train");
    assert_eq!(owner["controller"], true);

    let spec = &v["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["terminationGracePeriodSeconds"], 300);
    assert_eq!(spec["serviceAccountName"], "trainer-wi");
    assert_eq!(spec["nodeSelector"][GKE_ACCELERATOR_LABEL], "nvidia-l4");
    assert_eq!(spec["nodeSelector"]["pool"], "training");
    assert_eq!(
        spec["tolerations"],
        serde_json::json!([
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
        ])
    );
    let psc = &spec["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true);
    assert_eq!(psc["runAsUser"], 1000);
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault");
    // A checkpoint claim is re-chowned only when its root is not the pod's group already.
    assert_eq!(psc["fsGroupChangePolicy"], "OnRootMismatch");
    // The trainer never calls the Kubernetes API (Workload Identity needs no mounted token).
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(
        spec["volumes"][0],
        serde_json::json!({"name": "scratch", "emptyDir": {"sizeLimit": "20Gi"}})
    );
    assert_eq!(
        spec["volumes"][1],
        serde_json::json!({"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}})
    );

    let c = &spec["containers"][0];
    assert_eq!(c["name"], "trainer");
    assert_eq!(c["image"], "trainer:1");
    assert_eq!(c["args"][0], "train");
    assert_eq!(c["args"][1], "--job-json");
    let round_trip: mtl_crds::MultiTaskTrainingJobSpec =
        serde_json::from_str(c["args"][2].as_str().unwrap()).unwrap();
    assert_eq!(
        round_trip, job.spec,
        "the trainer gets the job's spec verbatim"
    );
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], "2");
    assert_eq!(c["resources"]["limits"]["cpu"], "8");
    assert_eq!(c["resources"]["requests"]["memory"], "32Gi");
    assert!(c["resources"]["requests"].get("nvidia.com/gpu").is_none());
    // cpu and memory given: requests equal limits (Guaranteed, with the GPU's request
    // defaulting to its limit); the scratch emptyDir's size is requested as disk.
    assert_eq!(c["resources"]["requests"]["cpu"], "8");
    assert_eq!(c["resources"]["limits"]["memory"], "32Gi");
    assert_eq!(c["resources"]["requests"]["ephemeral-storage"], "20Gi");
    let csc = &c["securityContext"];
    assert_eq!(csc["allowPrivilegeEscalation"], false);
    assert_eq!(csc["readOnlyRootFilesystem"], true);
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(env["MTL_CACHE_DIR"], "/scratch/cache");
    assert_eq!(env["MTL_JOB_NAME"], "train");
    assert_eq!(env["MTL_ATTEMPT"], "3");
    let mounts: Vec<_> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/scratch", "/tmp", "/dev/shm"]);
    assert_eq!(
        spec["volumes"][2],
        serde_json::json!({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}})
    );
    // One worker: no rendezvous, no DNS name of its own.
    assert!(!env.contains_key("MASTER_ADDR") && !env.contains_key("WORLD_SIZE"));
    assert!(spec.get("subdomain").is_none() && spec.get("hostname").is_none());
    assert!(v["metadata"]["labels"].get(LABEL_WORKER).is_none());
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn workers_job(workers: u32) -> MultiTaskTrainingJob {
    let mut job = gpu_job();
    job.spec.workers = workers;
    job
}

#[test]
fn worker_pods_carry_the_rendezvous_of_their_attempt() {
    let job = workers_job(3);
    for index in 0..3 {
        let pod = build_pod(&job, 4, index, &PodOptions::default()).unwrap();
        let name = format!("train-4-{index}");
        assert_eq!(pod.metadata.name.as_deref(), Some(name.as_str()));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_WORKER], index.to_string());
        assert_eq!(labels[LABEL_ATTEMPT], "4");
        let spec = pod.spec.clone().unwrap();
        // <pod>.<service> resolves through the headless Service.
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("train"));
        let env = env_of(&pod);
        assert_eq!(env["MASTER_ADDR"], "train-4-0.train");
        assert_eq!(env["PET_MASTER_ADDR"], "train-4-0.train");
        assert_eq!(env["MASTER_PORT"], "29500");
        assert_eq!(env["PET_MASTER_PORT"], "29500");
        // Two GPUs per pod: each pod is a node of two processes, six ranks in all.
        assert_eq!(env["PET_NNODES"], "3");
        assert_eq!(env["PET_NPROC_PER_NODE"], "2");
        assert_eq!(env["PET_NODE_RANK"], index.to_string());
        assert_eq!(env["RANK"], index.to_string());
        assert_eq!(env["WORLD_SIZE"], "6");
        let port = &spec.containers[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.container_port, port.name.as_deref()),
            (29500, Some("c10d"))
        );
    }

    // What the trainer makes of a worker pod's environment: a node of the right world.
    let mut cpu = workers_job(2);
    cpu.spec.resources = None;
    let env = env_of(&build_pod(&cpu, 1, 1, &PodOptions::default()).unwrap());
    assert_eq!(
        (
            env["WORLD_SIZE"].as_str(),
            env["RANK"].as_str(),
            env["PET_NPROC_PER_NODE"].as_str()
        ),
        ("2", "1", "1")
    );
}

#[test]
fn headless_service_selects_the_jobs_pods_before_they_are_ready() {
    let svc = build_service(&workers_job(3)).unwrap();
    let v = serde_json::to_value(&svc).unwrap();
    assert_eq!(v["metadata"]["name"], "train");
    assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-train");
    assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(v["spec"]["clusterIP"], "None");
    assert_eq!(v["spec"]["publishNotReadyAddresses"], true);
    assert_eq!(
        v["spec"]["selector"],
        serde_json::json!({LABEL_JOB: "train"})
    );
    assert_eq!(v["spec"]["ports"][0]["port"], 29500);
}

#[test]
fn several_workers_need_shared_checkpoints_and_dns_names() {
    let mut local = workers_job(2);
    local.spec.checkpoints.uri = "/ckpt".into();
    let err = build_pod(&local, 1, 0, &PodOptions::default()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadSpec);
    assert!(err.to_string().contains("gs://"), "{err}");

    let mut dotted = workers_job(2);
    dotted.metadata.name = Some("train.v2".into());
    let err = build_pod(&dotted, 1, 0, &PodOptions::default()).unwrap_err();
    assert!(err.to_string().contains("DNS label"), "{err}");

    let mut long = workers_job(2);
    long.metadata.name = Some("x".repeat(60));
    let err = build_pod(&long, 1, 0, &PodOptions::default()).unwrap_err();
    assert!(err.to_string().contains("longer than 63"), "{err}");
    // Judged at acceptance for the longest hostname any attempt and worker can have: a name
    // that fits attempt 1 but not attempt 100000 is refused before the first pod.
    let mut later = workers_job(12);
    later.metadata.name = Some("x".repeat(55));
    let err = build_pod(&later, 1, 0, &PodOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("{}-999999-11", "x".repeat(55))),
        "{err}"
    );
    assert!(err.to_string().contains("at most 53 characters"), "{err}");
    let mut fits = workers_job(12);
    fits.metadata.name = Some("x".repeat(52));
    assert!(build_pod(&fits, 1, 0, &PodOptions::default()).is_ok());

    let mut many = workers_job(65);
    many.spec.workers = 65;
    assert!(build_pod(&many, 1, 0, &PodOptions::default()).is_err());
}

#[test]
fn cpu_only_pod_has_no_gpu_bits() {
    let pod = build_pod(
        &test_job(),
        1,
        0,
        &PodOptions {
            grace_period_seconds: 60,
            field_manager: "x".into(),
            coscheduling_scheduler: None,
        },
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.termination_grace_period_seconds, Some(60));
    assert_eq!(spec.node_selector, None);
    assert_eq!(spec.tolerations, None);
    assert_eq!(spec.containers[0].resources.as_ref().unwrap().limits, None);
}

/// Without cpu/memory the trainer still requests some (Burstable, not BestEffort, so not the
/// first evicted); `scratchSize` sets the scratch emptyDir's limit and the disk request.
#[test]
fn unset_resources_get_default_requests_not_best_effort() {
    let mut job = test_job();
    job.spec.resources = Some(
        serde_json::from_value(serde_json::json!({"gpus": 1, "scratchSize": "100Gi"})).unwrap(),
    );
    let pod = build_pod(&job, 1, 0, &PodOptions::default()).unwrap();
    let v = serde_json::to_value(&pod).unwrap();
    let r = &v["spec"]["containers"][0]["resources"];
    assert_eq!(
        r["requests"],
        serde_json::json!({"cpu": "2", "memory": "8Gi", "ephemeral-storage": "100Gi"})
    );
    assert_eq!(r["limits"], serde_json::json!({"nvidia.com/gpu": "1"}));
    assert_eq!(
        v["spec"]["volumes"][0],
        serde_json::json!({"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}})
    );
}

#[test]
fn bad_jobs_are_spec_errors_not_panics() {
    let mut no_image = test_job();
    no_image.spec.image = None;
    let err = build_pod(&no_image, 1, 0, &PodOptions::default()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadSpec);
    assert!(err.to_string().contains("spec.image"), "{err}");

    let mut long = test_job();
    long.metadata.name = Some("x".repeat(64));
    assert_eq!(
        build_pod(&long, 1, 0, &PodOptions::default())
            .unwrap_err()
            .kind(),
        crate::ErrorKind::BadSpec
    );

    let mut no_uid = test_job();
    no_uid.metadata.uid = None;
    assert!(build_pod(&no_uid, 1, 0, &PodOptions::default()).is_err());
}

/// Checkpoints must outlive the pod: gs://, or a PersistentVolumeClaim mounted at `uri`.
#[test]
fn checkpoints_go_to_gs_or_a_claim_mounted_at_the_uri() {
    let mut local = test_job().checkpoints_at("/tmp/ckpt");
    let err = build_pod(&local, 1, 0, &PodOptions::default()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadSpec);
    assert!(err.to_string().contains("lost with the pod"), "{err}");
    local.spec.checkpoints.persistent_volume_claim = Some("ckpt".into());
    let pod = build_pod(&local, 1, 0, &PodOptions::default()).unwrap();
    let spec = pod.spec.unwrap();
    let claim = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == CHECKPOINTS_VOLUME);
    assert_eq!(
        claim.unwrap().persistent_volume_claim.unwrap().claim_name,
        "ckpt"
    );
    let mount = spec.containers[0].volume_mounts.clone().unwrap();
    assert!(
        mount
            .iter()
            .any(|m| m.name == CHECKPOINTS_VOLUME && m.mount_path == "/tmp/ckpt")
    );

    local.spec.checkpoints.uri = "ckpt".into();
    let err = build_pod(&local, 1, 0, &PodOptions::default()).unwrap_err();
    assert!(err.to_string().contains("absolute path"), "{err}");

    let gs = test_job().checkpoints_at("gs://b/out");
    let pod = build_pod(&gs, 1, 0, &PodOptions::default()).unwrap();
    assert!(
        !pod.spec
            .unwrap()
            .volumes
            .unwrap()
            .iter()
            .any(|v| v.name == CHECKPOINTS_VOLUME)
    );
}

fn with_template(template: serde_json::Value) -> MultiTaskTrainingJob {
    let mut job = test_job();
    job.spec.pod_template = Some(serde_json::from_value(template).unwrap());
    job
}

/// `spec.podTemplate` is merged onto the built pod: a GCS FUSE volume with its annotation,
/// extra environment, scheduling fields.
#[test]
fn pod_template_is_merged_onto_the_pod() {
    let job = with_template(serde_json::json!({
        "labels": {"team": "nlp"},
        "annotations": {"gke-gcsfuse/volumes": "true"},
        "env": [{"name": "HF_DATASETS_OFFLINE", "value": "1"}],
        "volumes": [{"name": "data", "csi": {"driver": "gcsfuse.csi.storage.gke.io",
                     "volumeAttributes": {"bucketName": "datasets"}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
        "priorityClassName": "training-high",
        "schedulerName": "gang",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
        "imagePullSecrets": [{"name": "registry"}]
    }));
    let pod = build_pod(&job, 1, 0, &PodOptions::default()).unwrap();
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["team"], "nlp");
    assert_eq!(labels[LABEL_JOB], "train", "the operator's labels stay");
    assert_eq!(
        pod.metadata.annotations.unwrap()["gke-gcsfuse/volumes"],
        "true"
    );
    let spec = pod.spec.unwrap();
    let c = &spec.containers[0];
    let env = c.env.clone().unwrap();
    assert!(env.iter().any(|e| e.name == "HF_DATASETS_OFFLINE"));
    assert!(env.iter().any(|e| e.name == "MTL_JOB_NAME"));
    let mounts = c.volume_mounts.clone().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/data")
    );
    assert!(mounts.iter().any(|m| m.mount_path == "/scratch"));
    let volumes = spec.volumes.unwrap();
    let data = volumes.iter().find(|v| v.name == "data").unwrap();
    assert_eq!(
        data.csi.as_ref().unwrap().driver,
        "gcsfuse.csi.storage.gke.io"
    );
    assert_eq!(spec.priority_class_name.as_deref(), Some("training-high"));
    assert_eq!(spec.scheduler_name.as_deref(), Some("gang"));
    assert!(spec.affinity.unwrap().node_affinity.is_some());
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry");
}

#[test]
fn pod_template_cannot_override_what_the_operator_sets() {
    for (template, says) in [
        (
            serde_json::json!({"labels": {"multitask.dev/job": "other"}}),
            "spec.podTemplate.labels: \"multitask.dev/job\"",
        ),
        (
            serde_json::json!({"labels": {"kueue.x-k8s.io/queue-name": "q"}}),
            "job's metadata.labels",
        ),
        (
            serde_json::json!({"env": [{"name": "MTL_ATTEMPT", "value": "9"}]}),
            "spec.podTemplate.env[0].name: \"MTL_ATTEMPT\"",
        ),
        (
            serde_json::json!({"volumes": [{"name": "scratch", "emptyDir": {}}]}),
            "spec.podTemplate.volumes[0].name: \"scratch\"",
        ),
        (
            serde_json::json!({"volumes": [{"name": "d", "emptyDir": {}}],
                               "volumeMounts": [{"name": "d", "mountPath": "/tmp"}]}),
            "spec.podTemplate.volumeMounts[0].mountPath: \"/tmp\"",
        ),
        (
            serde_json::json!({"volumeMounts": [{"name": "nowhere", "mountPath": "/x"}]}),
            "is not one of spec.podTemplate.volumes",
        ),
        (
            serde_json::json!({"volumes": [{"name": 7}]}),
            "spec.podTemplate.volumes[0]: not a Kubernetes Volume",
        ),
        (
            serde_json::json!({"affinity": {"nodeAffinity": "near"}}),
            "spec.podTemplate.affinity: not a Kubernetes Affinity",
        ),
    ] {
        let err = build_pod(
            &with_template(template.clone()),
            1,
            0,
            &PodOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::BadSpec, "{template}");
        assert!(err.to_string().contains(says), "{template}: {err}");
    }
}

fn pod_with(phase: &str, f: impl FnOnce(&mut PodStatus)) -> Pod {
    let mut status = PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    };
    f(&mut status);
    Pod {
        metadata: ObjectMeta {
            name: Some("train-1".into()),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

fn terminated(exit_code: i32, reason: &str, message: Option<&str>) -> impl FnOnce(&mut PodStatus) {
    let t = ContainerStateTerminated {
        exit_code,
        reason: Some(reason.into()),
        message: message.map(Into::into),
        ..Default::default()
    };
    move |s| {
        s.container_statuses = Some(vec![ContainerStatus {
            name: CONTAINER.into(),
            state: Some(ContainerState {
                terminated: Some(t),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
}

fn disruption_target(reason: &str) -> impl FnOnce(&mut PodStatus) {
    let reason = reason.to_string();
    move |s| {
        s.conditions = Some(vec![PodCondition {
            type_: DISRUPTION_TARGET.into(),
            status: "True".into(),
            reason: Some(reason),
            message: Some("preempted by a higher-priority pod".into()),
            ..Default::default()
        }]);
    }
}

#[test]
fn observe_pod_table() {
    let failed = |reason: &str, message: &str| AttemptState::Failed {
        reason: reason.into(),
        message: message.into(),
    };
    let disrupted = |reason: &str, message: &str| AttemptState::Disrupted {
        reason: reason.into(),
        message: message.into(),
    };
    let rows: Vec<(&str, Pod, AttemptState, bool)> = vec![
        (
            "pending",
            pod_with("Pending", |_| {}),
            AttemptState::Pending,
            false,
        ),
        (
            "no status yet",
            Pod::default(),
            AttemptState::Pending,
            false,
        ),
        (
            "unknown (node unreachable)",
            pod_with("Unknown", |_| {}),
            AttemptState::Pending,
            false,
        ),
        (
            "running",
            pod_with("Running", |_| {}),
            AttemptState::Running,
            false,
        ),
        (
            "succeeded",
            pod_with("Succeeded", |_| {}),
            AttemptState::Succeeded,
            false,
        ),
        (
            "trainer error with termination message",
            pod_with(
                "Failed",
                terminated(1, "Error", Some("cannot read gs://d/x.tsv\n")),
            ),
            failed("Error, exit code 1", "cannot read gs://d/x.tsv"),
            false,
        ),
        (
            "input the trainer says no retry can fix (exit code 2)",
            pod_with(
                "Failed",
                terminated(
                    2,
                    "Error",
                    Some("rte/train.tsv:3: label \"neutral\" is not one of [\"entailment\"]\n"),
                ),
            ),
            AttemptState::InvalidInput {
                message: "rte/train.tsv:3: label \"neutral\" is not one of [\"entailment\"]".into(),
            },
            false,
        ),
        (
            "OOM kill is the trainer's failure",
            pod_with("Failed", terminated(137, "OOMKilled", None)),
            failed("OOMKilled, exit code 137", ""),
            false,
        ),
        (
            "preempted by the scheduler",
            pod_with("Failed", |s| {
                disruption_target("PreemptionByScheduler")(s);
                terminated(SIGTERM_EXIT, "Error", None)(s);
            }),
            disrupted(
                "PreemptionByScheduler",
                "preempted by a higher-priority pod",
            ),
            false,
        ),
        (
            "evicted by the kubelet",
            pod_with("Failed", |s| {
                s.reason = Some("Evicted".into());
                s.message = Some("The node was low on resource: ephemeral-storage.".into());
            }),
            disrupted(
                "Evicted",
                "The node was low on resource: ephemeral-storage.",
            ),
            false,
        ),
        (
            "GKE spot node shutdown",
            pod_with("Failed", |s| {
                s.reason = Some("Terminated".into());
                s.message =
                    Some("Pod was terminated in response to imminent node shutdown.".into());
            }),
            disrupted(
                "Terminated",
                "Pod was terminated in response to imminent node shutdown.",
            ),
            false,
        ),
        (
            "GPU not allocatable at admission",
            pod_with("Failed", |s| s.reason = Some("OutOfnvidia.com/gpu".into())),
            disrupted("OutOfnvidia.com/gpu", ""),
            false,
        ),
        (
            "trainer stopped on SIGTERM",
            pod_with("Failed", terminated(SIGTERM_EXIT, "Error", None)),
            disrupted(
                "Terminated",
                "the trainer stopped on SIGTERM (exit code 143)",
            ),
            false,
        ),
        // A worker the platform marked for disruption ends the attempt at once, whatever its
        // phase; it is terminating while its trainer checkpoints.
        (
            "running but marked for disruption: disrupted, terminating",
            pod_with("Running", disruption_target("DeletionByTaintManager")),
            disrupted(
                "DeletionByTaintManager",
                "preempted by a higher-priority pod",
            ),
            true,
        ),
        (
            "on an unreachable node and marked for disruption",
            pod_with("Unknown", disruption_target("DeletionByTaintManager")),
            disrupted(
                "DeletionByTaintManager",
                "preempted by a higher-priority pod",
            ),
            true,
        ),
        (
            "evicted under node pressure (the kubelet's DisruptionTarget)",
            pod_with("Failed", |s| {
                disruption_target("TerminationByKubelet")(s);
                s.reason = Some("Evicted".into());
            }),
            disrupted("TerminationByKubelet", "preempted by a higher-priority pod"),
            false,
        ),
        // Evicted for outgrowing its own limits (no DisruptionTarget): the job's failure,
        // with the limit to raise.
        (
            "scratch outgrown",
            pod_with("Failed", |s| {
                s.reason = Some("Evicted".into());
                s.message = Some(
                    "Usage of EmptyDir volume \"scratch\" exceeds the limit \"20Gi\". ".into(),
                );
            }),
            failed(
                "Evicted",
                "Usage of EmptyDir volume \"scratch\" exceeds the limit \"20Gi\". Raise spec.resources.scratchSize.",
            ),
            false,
        ),
        (
            "shared memory outgrown",
            pod_with("Failed", |s| {
                s.reason = Some("Evicted".into());
                s.message =
                    Some("Usage of EmptyDir volume \"dshm\" exceeds the limit \"2Gi\".".into());
            }),
            failed(
                "Evicted",
                "Usage of EmptyDir volume \"dshm\" exceeds the limit \"2Gi\". Raise spec.resources.shmSize.",
            ),
            false,
        ),
        (
            "ephemeral storage outgrown",
            pod_with("Failed", |s| {
                s.reason = Some("Evicted".into());
                s.message = Some(
                    "Pod ephemeral local storage usage exceeds the total limit of containers 20Gi."
                        .into(),
                );
            }),
            failed(
                "Evicted",
                "Pod ephemeral local storage usage exceeds the total limit of containers 20Gi. Raise spec.resources.scratchSize.",
            ),
            false,
        ),
        (
            "refused by its node's affinity at admission",
            pod_with("Failed", |s| {
                s.reason = Some("NodeAffinity".into());
                s.message = Some("Pod Predicate NodeAffinity failed".into());
            }),
            disrupted("NodeAffinity", "Pod Predicate NodeAffinity failed"),
            false,
        ),
    ];
    for (name, pod, state, terminating) in rows {
        let seen = observe_pod(&pod, 1);
        assert_eq!(seen.state, state, "{name}");
        assert_eq!(seen.terminating, terminating, "{name}: terminating");
        assert_eq!(seen.attempt, 1);
    }

    let mut deleting = pod_with("Running", |_| {});
    deleting.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    assert!(observe_pod(&deleting, 1).terminating);
}

fn named(name: &str, mut pod: Pod) -> (String, Option<Pod>) {
    pod.metadata.name = Some(name.into());
    (name.to_string(), Some(pod))
}

fn finished_at(at: &str, mut pod: Pod) -> Pod {
    for c in pod
        .status
        .as_mut()
        .unwrap()
        .container_statuses
        .iter_mut()
        .flatten()
    {
        if let Some(t) = c.state.as_mut().and_then(|s| s.terminated.as_mut()) {
            t.finished_at = Some(Time(at.parse().unwrap()));
        }
    }
    pod
}

fn gone(name: &str) -> (String, Option<Pod>) {
    (name.to_string(), None)
}

#[test]
fn workers_reduce_to_one_attempt() {
    let running = || pod_with("Running", |_| {});
    let pending = || pod_with("Pending", |_| {});
    let lost_peer = |at: &str| {
        finished_at(
            at,
            pod_with("Failed", terminated(1, "Error", Some("lost rank 1"))),
        )
    };
    let oom = |at: &str| finished_at(at, pod_with("Failed", terminated(137, "OOMKilled", None)));
    let sigterm = || pod_with("Failed", terminated(SIGTERM_EXIT, "Error", None));
    let preempted = || {
        pod_with("Failed", |s| {
            disruption_target("PreemptionByScheduler")(s);
            terminated(SIGTERM_EXIT, "Error", None)(s);
        })
    };
    let mut deleting = running();
    deleting.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));

    struct Row {
        name: &'static str,
        pods: Vec<(String, Option<Pod>)>,
        // state reason ("" for Pending/Running/Succeeded), terminating, running, unstopped
        state: &'static str,
        reason: &'static str,
        terminating: bool,
        running: u32,
        unstopped: u32,
    }
    let rows = vec![
        Row {
            name: "all running",
            pods: vec![
                named("t-1-0", running()),
                named("t-1-1", running()),
                named("t-1-2", running()),
            ],
            state: "Running",
            reason: "",
            terminating: false,
            running: 3,
            unstopped: 3,
        },
        Row {
            name: "one still pending",
            pods: vec![
                named("t-1-0", running()),
                named("t-1-1", pending()),
                named("t-1-2", running()),
            ],
            state: "Pending",
            reason: "",
            terminating: false,
            running: 2,
            unstopped: 3,
        },
        Row {
            name: "rank 0 succeeded: the attempt did, stragglers are stopped",
            pods: vec![
                named("t-1-0", pod_with("Succeeded", |_| {})),
                named("t-1-1", running()),
            ],
            state: "Succeeded",
            reason: "",
            terminating: false,
            running: 1,
            unstopped: 1,
        },
        Row {
            name: "another rank finished first: still running",
            pods: vec![
                named("t-1-0", running()),
                named("t-1-1", pod_with("Succeeded", |_| {})),
            ],
            state: "Running",
            reason: "",
            terminating: false,
            running: 1,
            unstopped: 1,
        },
        Row {
            name: "one worker failed, the others still up: the attempt ended, others to stop",
            pods: vec![
                named("t-1-0", running()),
                named("t-1-1", oom("2026-01-01T00:00:05Z")),
                named("t-1-2", running()),
            ],
            state: "Failed",
            reason: "OOMKilled, exit code 137",
            terminating: true,
            running: 2,
            unstopped: 2,
        },
        Row {
            name: "the others are being deleted: nothing more to stop, still terminating",
            pods: vec![
                named("t-1-0", deleting.clone()),
                named("t-1-1", oom("2026-01-01T00:00:05Z")),
                gone("t-1-2"),
            ],
            state: "Failed",
            reason: "OOMKilled, exit code 137",
            terminating: true,
            running: 1,
            unstopped: 0,
        },
        Row {
            name: "failed worker left, the others gone: judged once",
            pods: vec![
                gone("t-1-0"),
                named("t-1-1", oom("2026-01-01T00:00:05Z")),
                gone("t-1-2"),
            ],
            state: "Failed",
            reason: "OOMKilled, exit code 137",
            terminating: false,
            running: 0,
            unstopped: 0,
        },
        Row {
            name: "the first failure explains the others (lost peer)",
            pods: vec![
                named("t-1-0", lost_peer("2026-01-01T00:00:09Z")),
                named("t-1-1", oom("2026-01-01T00:00:05Z")),
                named("t-1-2", lost_peer("2026-01-01T00:00:08Z")),
            ],
            state: "Failed",
            reason: "OOMKilled, exit code 137",
            terminating: false,
            running: 0,
            unstopped: 0,
        },
        Row {
            name: "a preempted worker makes it a preemption, though its peers failed",
            pods: vec![
                named("t-1-0", lost_peer("2026-01-01T00:00:01Z")),
                named("t-1-1", preempted()),
                named("t-1-2", sigterm()),
            ],
            state: "Disrupted",
            reason: "PreemptionByScheduler",
            terminating: false,
            running: 0,
            unstopped: 0,
        },
        Row {
            name: "all stopped on SIGTERM together",
            pods: vec![named("t-1-0", sigterm()), named("t-1-1", sigterm())],
            state: "Disrupted",
            reason: "Terminated",
            terminating: false,
            running: 0,
            unstopped: 0,
        },
        Row {
            name: "a worker pod vanished while the others run",
            pods: vec![
                named("t-1-0", running()),
                gone("t-1-1"),
                named("t-1-2", running()),
            ],
            state: "Disrupted",
            reason: GONE_REASON,
            terminating: true,
            running: 2,
            unstopped: 2,
        },
        Row {
            name: "a worker whose node is lost ends the attempt at once; its peers are stopped",
            pods: vec![
                named("t-1-0", running()),
                named(
                    "t-1-1",
                    pod_with("Running", disruption_target("DeletionByTaintManager")),
                ),
                named("t-1-2", running()),
            ],
            state: "Disrupted",
            reason: "DeletionByTaintManager",
            terminating: true,
            running: 3,
            unstopped: 2,
        },
        Row {
            name: "a failure wins over pods the operator deleted",
            pods: vec![
                gone("t-1-0"),
                named("t-1-1", sigterm()),
                named("t-1-2", lost_peer("2026-01-01T00:00:01Z")),
            ],
            state: "Failed",
            reason: "Error, exit code 1",
            terminating: false,
            running: 0,
            unstopped: 0,
        },
    ];
    for row in rows {
        let a = observe_workers(&row.pods, 1).unwrap();
        let (state, reason) = match &a.state {
            AttemptState::Pending => ("Pending", ""),
            AttemptState::Running => ("Running", ""),
            AttemptState::Succeeded => ("Succeeded", ""),
            AttemptState::Failed { reason, .. } => ("Failed", reason.as_str()),
            AttemptState::Disrupted { reason, .. } => ("Disrupted", reason.as_str()),
            AttemptState::Cancelled { .. } => ("Cancelled", ""),
            AttemptState::InvalidInput { .. } => ("InvalidInput", ""),
        };
        assert_eq!(
            (state, reason),
            (row.state, row.reason),
            "{}: state",
            row.name
        );
        assert_eq!(a.terminating, row.terminating, "{}: terminating", row.name);
        assert_eq!(a.running, row.running, "{}: running", row.name);
        assert_eq!(a.unstopped, row.unstopped, "{}: unstopped", row.name);
        assert_eq!(a.workers, row.pods.len() as u32, "{}: workers", row.name);
        assert_eq!(a.name, row.pods[0].0, "{}: name", row.name);
    }
    assert_eq!(observe_workers(&[gone("t-1-0"), gone("t-1-1")], 1), None);
}

fn waiting_for(reason: &str, message: &str) -> impl FnOnce(&mut PodStatus) {
    let w = k8s_openapi::api::core::v1::ContainerStateWaiting {
        reason: Some(reason.into()),
        message: Some(message.into()),
    };
    move |s| {
        s.container_statuses = Some(vec![ContainerStatus {
            name: CONTAINER.into(),
            state: Some(ContainerState {
                waiting: Some(w),
                ..Default::default()
            }),
            ..Default::default()
        }]);
    }
}

#[test]
fn a_pending_pod_says_what_keeps_it_from_running() {
    let reason = |pod: &Pod| observe_pod(pod, 1).waiting.map(|w| (w.reason, w.message));
    let pull = pod_with(
        "Pending",
        waiting_for("ImagePullBackOff", "Back-off pulling image"),
    );
    assert_eq!(
        reason(&pull),
        Some(("ImagePullBackOff".into(), "Back-off pulling image".into()))
    );
    // Creating containers is the normal way to start.
    let creating = pod_with("Pending", waiting_for("ContainerCreating", ""));
    assert_eq!(reason(&creating), None);
    let unschedulable = pod_with("Pending", |s| {
        s.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some("0/3 nodes are available: 3 Insufficient nvidia.com/gpu.".into()),
            ..Default::default()
        }]);
    });
    assert_eq!(
        reason(&unschedulable).map(|r| r.0),
        Some("Unschedulable".into())
    );
    // Only while pending.
    let running = pod_with("Running", waiting_for("ImagePullBackOff", "x"));
    assert_eq!(reason(&running), None);
    // Several workers: the first stuck one, by name.
    let a = observe_workers(
        &[
            named(
                "train-1-0",
                pod_with("Pending", waiting_for("ContainerCreating", "")),
            ),
            named(
                "train-1-1",
                pod_with("Pending", waiting_for("ErrImagePull", "not found")),
            ),
        ],
        1,
    )
    .unwrap();
    let w = a.waiting.unwrap();
    assert_eq!(
        (w.reason.as_str(), w.message.as_str()),
        ("ErrImagePull", "worker pod train-1-1: not found")
    );
}

/// A pod of the attempt's name that the job does not control (a deleted job's pod still
/// terminating, or someone else's) is an error that names it and is retried after a pause,
/// not every second as a write conflict is.
#[test]
fn a_pod_the_job_does_not_own_is_retried_after_a_pause() {
    let job = test_job();
    let mut stray = build_pod(&job, 1, 0, &PodOptions::default()).unwrap();
    stray.metadata.owner_references = None;
    let err = check_owner(&job, "pod", &stray).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Transient, "{err}");
    assert!(err.kind().requeue_after() >= std::time::Duration::from_secs(15));
    assert!(
        err.to_string()
            .contains("pod train-1 exists but is not controlled by this job"),
        "{err}"
    );
    let ours = build_pod(&job, 1, 0, &PodOptions::default()).unwrap();
    check_owner(&job, "pod", &ours).unwrap();
}

/// Kueue's plain-Pod integration: a job labelled with a queue gets its pods labelled the same
/// (with its workload priority class); several workers are one pod group of that many pods.
#[test]
fn a_queued_jobs_pods_carry_kueues_labels_and_group() {
    let mut job = workers_job(3);
    job.metadata.labels = Some(BTreeMap::from([
        (KUEUE_QUEUE_LABEL.to_string(), "team-a".to_string()),
        (KUEUE_PRIORITY_LABEL.to_string(), "low".to_string()),
    ]));
    for i in 0..3 {
        let pod = build_pod(&job, 2, i, &PodOptions::default()).unwrap();
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[KUEUE_QUEUE_LABEL], "team-a");
        assert_eq!(labels[KUEUE_PRIORITY_LABEL], "low");
        assert_eq!(labels[KUEUE_GROUP_LABEL], "train-2");
        assert_eq!(
            pod.metadata.annotations.unwrap()[KUEUE_GROUP_COUNT_ANNOTATION],
            "3"
        );
    }
    // One worker: a plain pod, no group.
    let mut single = test_job();
    single.metadata.labels = job.metadata.labels.clone();
    let pod = build_pod(&single, 1, 0, &PodOptions::default()).unwrap();
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()[KUEUE_QUEUE_LABEL],
        "team-a"
    );
    assert!(!pod.metadata.labels.unwrap().contains_key(KUEUE_GROUP_LABEL));
    assert!(pod.metadata.annotations.is_none());
    // No queue: nothing of Kueue's.
    let pod = build_pod(&workers_job(3), 1, 0, &PodOptions::default()).unwrap();
    assert!(
        pod.metadata
            .labels
            .unwrap()
            .keys()
            .all(|k| !k.starts_with("kueue.x-k8s.io/"))
    );
}

/// A pod Kueue holds at its admission gate is `Queued`; one Kueue evicted (its
/// `TerminationTarget` condition, set before it deletes the pod) is a disruption with Kueue's
/// reason, replaced without spending backoffLimit.
#[test]
fn kueue_gated_pods_are_queued_and_its_evictions_are_disruptions() {
    let mut gated = pod_with("Pending", |s| {
        s.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("SchedulingGated".into()),
            message: Some("Scheduling is blocked due to non-empty scheduling gates".into()),
            ..Default::default()
        }]);
    });
    gated.metadata.labels = Some(BTreeMap::from([(
        KUEUE_QUEUE_LABEL.to_string(),
        "team-a".to_string(),
    )]));
    gated.spec = Some(k8s_openapi::api::core::v1::PodSpec {
        scheduling_gates: Some(vec![k8s_openapi::api::core::v1::PodSchedulingGate {
            name: KUEUE_ADMISSION_GATE.into(),
        }]),
        ..Default::default()
    });
    let seen = observe_pod(&gated, 1);
    assert_eq!(seen.state, AttemptState::Pending);
    let w = seen.waiting.unwrap();
    assert_eq!(
        (w.reason.as_str(), w.message.as_str()),
        ("Queued", "waiting for Kueue to admit it (queue team-a)")
    );

    let evicted = pod_with("Failed", |s| {
        s.conditions = Some(vec![PodCondition {
            type_: KUEUE_TERMINATION_TARGET.into(),
            status: "True".into(),
            reason: Some("WorkloadEvictedDueToPreempted".into()),
            message: Some("Preempted to accommodate a higher priority Workload".into()),
            ..Default::default()
        }]);
        terminated(SIGTERM_EXIT, "Error", None)(s);
    });
    assert_eq!(
        observe_pod(&evicted, 1).state,
        AttemptState::Disrupted {
            reason: "WorkloadEvictedDueToPreempted".into(),
            message: "Preempted to accommodate a higher priority Workload".into(),
        }
    );
}
