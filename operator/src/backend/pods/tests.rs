use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::fixtures::test_job;

fn gpu_job() -> MultiTaskTrainingJob {
    let mut job = test_job();
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
    let pod = build_pod(&job, 3, &PodOptions::default()).unwrap();
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
    assert_eq!(
        spec["volumes"][0],
        serde_json::json!({"name": "scratch", "emptyDir": {}})
    );
    assert_eq!(
        spec["volumes"][1],
        serde_json::json!({"name": "tmp", "emptyDir": {}})
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
    assert_eq!(mounts, ["/scratch", "/tmp"]);
}

#[test]
fn cpu_only_pod_has_no_gpu_bits() {
    let pod = build_pod(
        &test_job(),
        1,
        &PodOptions {
            grace_period_seconds: 60,
            field_manager: "x".into(),
        },
    )
    .unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.termination_grace_period_seconds, Some(60));
    assert_eq!(spec.node_selector, None);
    assert_eq!(spec.tolerations, None);
    assert_eq!(spec.containers[0].resources.as_ref().unwrap().limits, None);
}

#[test]
fn bad_jobs_are_spec_errors_not_panics() {
    let mut no_image = test_job();
    no_image.spec.image = None;
    let err = build_pod(&no_image, 1, &PodOptions::default()).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::BadSpec);
    assert!(err.to_string().contains("spec.image"), "{err}");

    let mut long = test_job();
    long.metadata.name = Some("x".repeat(64));
    assert_eq!(
        build_pod(&long, 1, &PodOptions::default())
            .unwrap_err()
            .kind(),
        crate::ErrorKind::BadSpec
    );

    let mut no_uid = test_job();
    no_uid.metadata.uid = None;
    assert!(build_pod(&no_uid, 1, &PodOptions::default()).is_err());
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
        (
            "running but marked for disruption: terminating",
            pod_with("Running", disruption_target("DeletionByTaintManager")),
            AttemptState::Running,
            true,
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
