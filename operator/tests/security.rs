//! No escalation through the operator, end to end against kube-standin with the real
//! `mtl-operator`: a job can ask for nothing its author could not do directly. Volume types
//! outside the restricted Pod Security Standard, what the namespace's policy does not allow,
//! and an accepted spec someone else wrote are each refused, naming the field; each is first
//! shown to get through where the protection is off (as it did before it existed).

mod common;

use common::{Env, NS, kubelet_ok};
use kube::api::{Api, Patch, PatchParams};
use mtl_crds::{JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use serde_json::json;

const RESTRICTED: &str =
    "configMap, csi, downwardAPI, emptyDir, ephemeral, persistentVolumeClaim, projected, secret";

fn host_path() -> serde_json::Value {
    json!({"podTemplate": {"volumes": [{"name": "node", "hostPath": {"path": "/"}}],
                           "volumeMounts": [{"name": "node", "mountPath": "/host"}]}})
}

#[tokio::test]
async fn a_host_path_volume_is_refused_at_admission_and_by_the_operator() {
    // The CRD as shipped refuses it when the job is created, naming the volume.
    let env = Env::start().await;
    let mut job = json!({
        "apiVersion": "multitask.dev/v1alpha1", "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "node"},
        "spec": {"image": "mtl-trainer:test", "model": {"pretrained": "gs://models/minilm"},
                 "tasks": [{"name": "stsb", "type": "regression", "train": "gs://data/t.tsv",
                            "format": "glueTsv", "textFields": ["a", "b"], "labelField": "score"}],
                 "checkpoints": {"uri": env.checkpoints()}}
    });
    common::merge(&mut job["spec"], host_path());
    let err = env
        .jobs()
        .patch("node", &PatchParams::apply("kubectl"), &Patch::Apply(&job))
        .await
        .expect_err("refused at admission");
    let kube::Error::Api(status) = err else {
        panic!("{err}")
    };
    assert_eq!(status.code, 422, "{}", status.message);
    assert!(
        status.message.contains("spec.podTemplate.volumes[0]")
            && status
                .message
                .contains(&format!("the operator mounts only {RESTRICTED} volumes")),
        "{}",
        status.message
    );

    // Where the CRD lets it through (here: a CRD widened for hostPath), an operator that
    // allows only the restricted types refuses it before any pod, naming the volume ...
    let mut env = Env::start_without_crd().await;
    env.create_crd(&mtl_crds::job_crd(&["hostPath".into()]))
        .await;
    env.install_policy_crd().await;
    let first = env.operator("op-a");
    env.apply("node", host_path()).await;
    let message = env.failed("node", "PolicyViolation").await.1;
    assert_eq!(
        message,
        format!(
            "spec.podTemplate.volumes[0] (\"node\") has type hostPath: volume type not allowed: the operator mounts only {RESTRICTED} volumes (the restricted Pod Security Standard's types, and those the cluster's administrator allowed)"
        )
    );
    env.event("PolicyViolation").await;
    assert!(env.pod_names().await.is_empty());

    // ... and one whose administrator allowed hostPath mounts it: what any job got before.
    env.signal(first, "-TERM");
    env.wait_exit(first).await;
    env.operator_env
        .push(("MTL_ALLOW_VOLUME_TYPES".into(), "hostPath".into()));
    env.operator("op-b");
    env.apply("cache", host_path()).await;
    let pod = env.pod("cache-1").await;
    let volumes = pod.spec.unwrap().volumes.unwrap();
    let node = volumes
        .iter()
        .find(|v| v.name == "node")
        .expect("the volume");
    assert_eq!(node.host_path.as_ref().unwrap().path, "/");
}

#[tokio::test]
async fn a_namespace_policy_refuses_what_it_does_not_allow_naming_the_field() {
    let mut env = Env::start().await;
    // Without a policy, all of it runs: a PriorityClass that preempts other teams, a
    // toleration for their dedicated nodes, 9 GPUs, another team's bucket.
    env.operator("op-a");
    env.apply(
        "before",
        json!({"podTemplate": {"priorityClassName": "system-cluster-critical"},
               "resources": {"gpus": 9, "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
               "model": {"pretrained": "gs://team-b/models/minilm"}}),
    )
    .await;
    let pod = env.pod("before-1").await.spec.unwrap();
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );

    // The cluster's default policy bounds images; the namespace's own the rest.
    env.default_policy(json!({"imagePrefixes": ["mtl-trainer:"]}));
    env.namespace_policy(json!({
        "priorityClasses": ["batch-low"],
        "tolerationKeys": ["nvidia.com/gpu"],
        "maxGpusPerWorker": 8,
        "bucketPrefixes": ["gs://models/", "gs://data/", env.checkpoints()],
        "vertexAI": {"machineTypes": ["a2-highgpu-1g"]}
    }))
    .await;
    env.signal(0, "-TERM");
    env.wait_exit(0).await;
    env.operator("op-b");
    let vertex = json!({"backend": "vertexAI", "resources": null,
        "vertexAI": {"project": "acme-ml", "region": "us-central1",
                     "machineType": "a3-highgpu-8g", "acceleratorType": "NVIDIA_H100_80GB",
                     "acceleratorCount": 8}});
    let cases = [
        (
            "image",
            json!({"image": "docker.io/evil:1"}),
            "spec.image \"docker.io/evil:1\" is not allowed: images must start with \"mtl-trainer:\"",
        ),
        (
            "priority",
            json!({"podTemplate": {"priorityClassName": "system-cluster-critical"}}),
            "spec.podTemplate.priorityClassName \"system-cluster-critical\" is not allowed: pods may use the PriorityClasses \"batch-low\"",
        ),
        (
            "toleration",
            json!({"resources": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}),
            "spec.resources.tolerations[0].key \"dedicated\" is not allowed: pods may tolerate the taint keys \"nvidia.com/gpu\"",
        ),
        (
            "gpus",
            json!({"resources": {"gpus": 9}}),
            "spec.resources.gpus 9 is over the policy's maxGpusPerWorker of 8",
        ),
        (
            "vertex",
            vertex,
            "spec.vertexAI.machineType \"a3-highgpu-8g\" is not allowed: Vertex AI jobs may use the machine types \"a2-highgpu-1g\"",
        ),
        (
            "bucket",
            json!({"model": {"pretrained": "gs://team-b/models/minilm"}}),
            "spec.model.pretrained \"gs://team-b/models/minilm\" is not allowed: gs:// objects must lie under",
        ),
    ];
    for (name, extra, _) in &cases {
        env.apply(name, extra.clone()).await;
    }
    for (name, _, want) in &cases {
        let message = env.failed(name, "PolicyViolation").await.1;
        assert!(message.starts_with(want), "{name}: {message}");
    }
    assert_eq!(
        env.pod_names().await,
        ["before-1"],
        "no pod for a refused job"
    );
    // Within the policy, a job runs.
    env.apply(
        "within",
        json!({"podTemplate": {"priorityClassName": "batch-low"},
               "resources": {"gpus": 8, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}]}}),
    )
    .await;
    env.pod("within-1").await;
}

/// The policy is judged when a job is accepted: one tightened afterwards leaves a running
/// job alone, with one Warning Event, and refuses new jobs.
#[tokio::test]
async fn a_tightened_policy_leaves_an_accepted_job_running() {
    let mut env = Env::start().await;
    let first = env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    env.namespace_policy(json!({"imagePrefixes": ["registry.example/mtl/"]}))
        .await;
    env.signal(first, "-TERM");
    env.wait_exit(first).await;
    env.operator("op-b");
    let note = env.event("PolicyChanged").await;
    assert!(
        note.contains("spec.image \"mtl-trainer:test\" is not allowed"),
        "{note}"
    );
    env.commit_checkpoint(100).await;
    let st = env
        .status_until("train", "op-b reconciles (step 100)", |s| {
            s.step == Some(100)
        })
        .await;
    assert_eq!(st.phase, JobPhase::Running);
    assert_eq!(env.pod_names().await, ["train-1"]);

    env.apply("late", json!({})).await;
    env.failed("late", "PolicyViolation").await;
    env.apply(
        "allowed",
        json!({"image": "registry.example/mtl/mtl-trainer:1"}),
    )
    .await;
    env.pod("allowed-1").await;
}

/// Writes `accepted` into job `name`'s `status.acceptedSpec` through `/status`, as someone
/// allowed to patch it (not the operator) can.
async fn forge(env: &Env, name: &str, accepted: serde_json::Value) {
    let jobs: Api<MultiTaskTrainingJob> = env.jobs();
    jobs.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"acceptedSpec": accepted}})),
    )
    .await
    .expect("status patched");
}

fn accepted_spec(st: &MultiTaskTrainingJobStatus) -> serde_json::Value {
    st.accepted_spec.clone().expect("an accepted spec")
}

#[tokio::test]
async fn a_forged_accepted_spec_is_refused_and_reported() {
    let mut env = Env::start().await;
    // Without a key nothing is verified: a forged accepted spec decides what runs (as any
    // accepted spec did before it was signed). Here the next attempt runs another image.
    env.operator_env
        .retain(|(k, _)| k != "MTL_ACCEPTED_SPEC_KEY_FILE");
    let unsigned = env.operator("op-unsigned");
    env.apply("open", json!({})).await;
    env.pod("open-1").await;
    let st = env
        .status_until("open", "accepted", |s| s.accepted_spec.is_some())
        .await;
    assert!(st.accepted_spec_digest.is_none());
    // Forged while no operator runs, so that the next one's cache holds it (a running one
    // could start attempt 2 on the pod's failure before its cache shows the forgery).
    env.signal(unsigned, "-TERM");
    env.wait_exit(unsigned).await;
    let mut forged = accepted_spec(&st);
    forged["image"] = json!("docker.io/evil:1");
    forge(&env, "open", forged).await;
    kubelet_ok(env.standin.kubelet().fail(NS, "open-1", 1, "crashed"));
    let unsigned = env.operator("op-unsigned-2");
    let pod = env.pod("open-2").await;
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some("docker.io/evil:1")
    );
    env.signal(unsigned, "-TERM");
    env.wait_exit(unsigned).await;

    // With the key, what the operator accepted is signed ...
    let mut env = Env::start().await;
    let signed = env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    let st = env
        .status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    assert!(
        st.accepted_spec_digest
            .as_deref()
            .is_some_and(|d| d.starts_with("hmac-sha256:")),
        "{st:?}"
    );
    // ... and a forged one fails the job, stopping what runs, and says why.
    let mut forged = accepted_spec(&st);
    forged["image"] = json!("docker.io/evil:1");
    forge(&env, "train", forged).await;
    let message = env.failed("train", "AcceptedSpecUnverified").await.1;
    assert!(
        message.starts_with("status.acceptedSpec does not carry the operator's signature"),
        "{message}"
    );
    env.event("AcceptedSpecUnverified").await;
    env.event("Stopping").await;
    common::eventually("the pods to be gone", || async {
        env.pod_names().await.is_empty().then_some(())
    })
    .await;

    // A spec forged before the operator first looks (past the policy, which is judged at
    // acceptance) is refused too, before any pod.
    env.signal(signed, "-TERM");
    env.wait_exit(signed).await;
    env.apply("early", json!({})).await;
    let job = env.jobs().get("early").await.unwrap();
    let mut early = serde_json::to_value(&job.spec).unwrap();
    common::merge(&mut early, host_path());
    forge(&env, "early", early).await;
    env.operator("op-b");
    env.failed("early", "AcceptedSpecUnverified").await;
    assert!(!env.pod_names().await.iter().any(|p| p.starts_with("early")));
}

/// The default policy (`--policy-file`, the chart's `policy` values) applies where a
/// namespace has none: a job outside it fails at once, and no pod is created.
#[tokio::test]
async fn a_job_outside_the_default_policy_fails_before_any_pod() {
    let mut env = Env::start().await;
    env.default_policy(json!({"imagePrefixes": ["registry.example/mtl/", "gcr.io/acme/"]}));
    env.operator("op-a");
    env.apply("train", json!({})).await;
    assert_eq!(
        env.failed("train", "PolicyViolation").await.1,
        "spec.image \"mtl-trainer:test\" is not allowed: images must start with \"registry.example/mtl/\" or \"gcr.io/acme/\""
    );
    env.event("PolicyViolation").await;
    assert!(env.pod_names().await.is_empty());
    env.apply(
        "allowed",
        json!({"image": "registry.example/mtl/mtl-trainer:1"}),
    )
    .await;
    env.pod("allowed-1").await;
}

/// A Kueue WorkloadPriorityClass (the job's `kueue.x-k8s.io/priority-class` label, which the
/// operator copies onto its pods) is bounded like a PriorityClass: refused at acceptance, and
/// dropped from an attempt that starts after the label changed to one not allowed.
#[tokio::test]
async fn kueue_priority_labels_are_bounded_when_each_attempt_starts() {
    let mut env = Env::start().await;
    env.namespace_policy(json!({"workloadPriorityClasses": ["low"]}))
        .await;
    let first = env.operator("op-a");
    let labelled = |name: &str, class: &str| {
        json!({"name": name, "labels": {"kueue.x-k8s.io/queue-name": "team-a",
                                        "kueue.x-k8s.io/priority-class": class}})
    };
    env.apply_with_meta("urgent", labelled("urgent", "urgent"), json!({}))
        .await;
    assert_eq!(
        env.failed("urgent", "PolicyViolation").await.1,
        "metadata.labels[\"kueue.x-k8s.io/priority-class\"] \"urgent\" is not allowed: jobs may use the WorkloadPriorityClasses \"low\""
    );

    env.apply_with_meta("train", labelled("train", "low"), json!({}))
        .await;
    let pod = env.pod("train-1").await;
    assert_eq!(
        pod.metadata.labels.unwrap()["kueue.x-k8s.io/priority-class"],
        "low"
    );
    // Relabelled after acceptance: the next attempt runs at the queue's default priority.
    // (Done while no operator runs, so the next one's cache holds the new label when it sees
    // the failure.)
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.signal(first, "-TERM");
    env.wait_exit(first).await;
    env.apply_with_meta("train", labelled("train", "urgent"), json!({}))
        .await;
    kubelet_ok(env.standin.kubelet().fail(NS, "train-1", 1, "crashed"));
    env.operator("op-b");
    let pod = env.pod("train-2").await;
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["kueue.x-k8s.io/queue-name"], "team-a");
    assert!(
        !labels.contains_key("kueue.x-k8s.io/priority-class"),
        "{labels:?}"
    );
    let note = env.event("PolicyChanged").await;
    assert!(note.contains("\"urgent\" is not allowed"), "{note}");
}
