//! End to end with Kueue's plain-Pod integration, against kube-standin standing in for
//! Kueue's pod webhook (queue-labelled pods get the `kueue.x-k8s.io/admission` scheduling
//! gate and the `kueue.x-k8s.io/managed` finalizer) and for the scheduler (a gated pod is never
//! bound). The test does what Kueue's controllers do: it admits a workload by removing the
//! gate, evicts one by setting the pods' `TerminationTarget` condition and deleting them, and
//! removes the finalizer of a finished pod.
//!
//! Every wait polls with a bounded deadline; nothing sleeps for synchronisation.

mod common;

use common::{Env, NS, eventually, kubelet_ok};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube_standin::PodWebhook;
use mtl_crds::{JobPhase, MultiTaskTrainingJobStatus};
use mtl_operator::backend::pods::{
    KUEUE_ADMISSION_GATE, KUEUE_GROUP_COUNT_ANNOTATION, KUEUE_GROUP_LABEL, KUEUE_QUEUE_LABEL,
    KUEUE_RETRIABLE_ANNOTATION, KUEUE_TERMINATION_TARGET,
};
use mtl_operator::status::find as condition;
use serde_json::json;

/// The finalizer Kueue's webhook adds to the pods it manages.
const KUEUE_FINALIZER: &str = "kueue.x-k8s.io/managed";

/// A stand-in with Kueue's webhook and a kubelet that runs every pod it may; one operator.
async fn start() -> Env {
    let mut env = Env::start().await;
    env.standin.add_pod_webhook(PodWebhook::kueue());
    env.standin.kubelet().set_auto_run(true);
    env.operator("op-a");
    env
}

/// Applies job `name` in queue `team-a`, with `extra` merged into its spec.
async fn apply_queued(env: &Env, name: &str, extra: serde_json::Value) {
    env.apply_with_meta(
        name,
        json!({
            "name": name,
            "labels": {KUEUE_QUEUE_LABEL: "team-a"},
        }),
        extra,
    )
    .await
}

fn gates(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .map(|g| g.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn unbound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_ref())
        .is_none()
}

/// The Running condition's (status, reason, message).
fn running_condition(s: &MultiTaskTrainingJobStatus) -> Option<(String, String, String)> {
    condition(s, "Running").map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn queued(s: &MultiTaskTrainingJobStatus) -> bool {
    running_condition(s).is_some_and(|(_, reason, _)| reason == "Queued")
}

/// Admits the pod as Kueue does once its workload fits: the gate goes.
async fn admit(env: &Env, pod: &str) {
    env.pods()
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"schedulingGates": null}})),
        )
        .await
        .expect("gate removed");
}

/// Evicts the pod as Kueue does (preemption by a higher-priority workload): the
/// `TerminationTarget` condition through the status subresource, then a graceful delete.
async fn evict(env: &Env, name: &str) {
    let pods = env.pods();
    let mut pod = pods.get(name).await.expect("pod to evict");
    let status = pod.status.get_or_insert_default();
    status
        .conditions
        .get_or_insert_default()
        .push(PodCondition {
            type_: KUEUE_TERMINATION_TARGET.into(),
            status: "True".into(),
            reason: Some("WorkloadEvictedDueToPreempted".into()),
            message: Some("Preempted to accommodate a higher priority Workload".into()),
            ..Default::default()
        });
    pods.replace_status(name, &PostParams::default(), &pod)
        .await
        .expect("TerminationTarget set");
    pods.delete(name, &DeleteParams::default())
        .await
        .expect("evicted pod deleted");
}

/// Removes Kueue's finalizer, as Kueue does once a pod it manages has finished.
async fn release_finished(env: &Env, name: &str) {
    let pods = env.pods();
    let pod = eventually(&format!("pod {name} finished"), || {
        let pods = pods.clone();
        async move {
            let p = pods.get_opt(name).await.ok().flatten()?;
            matches!(phase(&p), "Succeeded" | "Failed").then_some(p)
        }
    })
    .await;
    assert!(pod.metadata.deletion_timestamp.is_some());
    pods.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("finalizer removed");
}

#[tokio::test]
async fn a_queued_job_waits_at_kueues_gate_and_runs_once_admitted() {
    let env = start().await;
    apply_queued(&env, "train", json!({})).await;

    let pod = env.pod("train-1").await;
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()[KUEUE_QUEUE_LABEL],
        "team-a"
    );
    assert_eq!(gates(&pod), [KUEUE_ADMISSION_GATE]);
    assert!(
        pod.metadata
            .finalizers
            .unwrap()
            .iter()
            .any(|f| f == KUEUE_FINALIZER)
    );

    let st = env.status_until("train", "the job Queued", queued).await;
    assert_eq!(st.phase, JobPhase::Pending);
    let (status, _, message) = running_condition(&st).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(
            "pod train-1 is waiting: Queued: waiting for Kueue to admit it (queue team-a)"
        ),
        "{message}"
    );
    let note = env.event("AttemptWaiting").await;
    assert!(note.contains("Queued"), "{note}");
    // The kubelet runs every pod it may, yet the gated one stays unbound: no trainer runs.
    let pod = env.pod("train-1").await;
    assert!(
        phase(&pod) == "Pending" && unbound(&pod),
        "{:?}",
        pod.status
    );

    admit(&env, "train-1").await;
    let st = env
        .status_until("train", "Running once admitted", |s| {
            s.phase == JobPhase::Running
        })
        .await;
    let (status, reason, _) = running_condition(&st).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "AttemptRunning")
    );
    assert_eq!((st.attempt, st.restarts, st.preemptions), (1, 0, 0));
}

#[tokio::test]
async fn a_kueue_eviction_is_a_preemption_and_the_next_attempt_queues_again() {
    let env = start().await;
    apply_queued(&env, "train", json!({})).await;
    env.pod("train-1").await;
    admit(&env, "train-1").await;
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    evict(&env, "train-1").await;
    let st = env
        .status_until("train", "attempt 2 after the eviction", |s| s.attempt == 2)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0));
    let restarting = condition(&st, "Restarting").expect("a Restarting condition");
    assert!(
        restarting.message.contains("WorkloadEvictedDueToPreempted"),
        "{}",
        restarting.message
    );

    // The next attempt's pod is in the queue again: gated, and the job says so.
    let next = env.pod("train-2").await;
    assert_eq!(gates(&next), [KUEUE_ADMISSION_GATE]);
    assert_eq!(
        next.metadata.labels.as_ref().unwrap()[KUEUE_QUEUE_LABEL],
        "team-a"
    );
    let st = env
        .status_until("train", "attempt 2 Queued", |s| {
            queued(s) && running_condition(s).is_some_and(|(_, _, m)| m.contains("pod train-2"))
        })
        .await;
    assert_ne!(st.phase, JobPhase::Running);

    // Kueue lets the evicted pod go once it has finished; that is not another preemption.
    release_finished(&env, "train-1").await;
    let pods = env.pods();
    eventually("pod train-1 gone", || {
        let pods = pods.clone();
        async move { pods.get_opt("train-1").await.ok()?.is_none().then_some(()) }
    })
    .await;
    admit(&env, "train-2").await;
    let st = env
        .status_until("train", "attempt 2 Running", |s| {
            s.phase == JobPhase::Running
        })
        .await;
    assert_eq!((st.attempt, st.preemptions, st.restarts), (2, 1, 0));
}

/// `workers: 2`: both pods carry the pod group Kueue admits together, each held at the gate
/// until admitted.
#[tokio::test]
async fn the_workers_of_a_queued_job_are_one_pod_group() {
    let emulator = mtl_test_support::gcs::Emulator::start();
    let mut env = Env::start().await;
    env.standin.add_pod_webhook(PodWebhook::kueue());
    env.standin.kubelet().set_auto_run(true);
    env.operator_env
        .push(("STORAGE_EMULATOR_HOST".into(), emulator.endpoint()));
    env.operator("op-a");
    let uri = emulator.uri("runs/train");
    apply_queued(
        &env,
        "train",
        json!({"workers": 2, "checkpoints": {"uri": uri}}),
    )
    .await;

    for i in 0..2 {
        let pod = env.pod(&format!("train-1-{i}")).await;
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[KUEUE_QUEUE_LABEL], "team-a");
        assert_eq!(labels[KUEUE_GROUP_LABEL], "train-1");
        let annotations = pod.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[KUEUE_GROUP_COUNT_ANNOTATION], "2");
        assert_eq!(annotations[KUEUE_RETRIABLE_ANNOTATION], "false");
        assert_eq!(gates(&pod), [KUEUE_ADMISSION_GATE]);
    }
    let st = env.status_until("train", "the group Queued", queued).await;
    let (_, _, message) = running_condition(&st).unwrap();
    assert!(message.contains("worker pod train-1-0"), "{message}");

    // Kueue admits the group as a whole.
    for i in 0..2 {
        admit(&env, &format!("train-1-{i}")).await;
    }
    let st = env
        .status_until("train", "both workers Running", |s| {
            s.phase == JobPhase::Running && s.running_workers == Some(2)
        })
        .await;
    assert_eq!((st.attempt, st.preemptions, st.restarts), (1, 0, 0));
}

/// Against kube-standin's Kueue (its pod controller's rules for groups, one ClusterQueue with
/// room for one group of two): Kueue keeps a group with a failed pod admitted, holding its
/// quota while it waits for replacement pods, unless a pod says `retriable-in-group:
/// "false"`. The operator never replaces pods within a group, so it says so: when a worker
/// fails and the other is stopped, the group is finished, its quota given back, its pods let
/// go, and the next attempt's group is admitted.
#[tokio::test]
async fn a_failed_groups_quota_goes_back_and_the_next_attempt_is_admitted() {
    let mut env = Env::start().await;
    let kueue = env.standin.enable_kueue(2);
    env.standin.kubelet().set_auto_run(true);
    env.operator("op-a");
    apply_queued(&env, "train", json!({"workers": 2})).await;
    env.status_until("train", "attempt 1 admitted and running", |s| {
        s.phase == JobPhase::Running && s.running_workers == Some(2)
    })
    .await;
    assert_eq!(kueue.admitted(), ["train-1"]);

    kubelet_ok(env.standin.kubelet().fail(
        NS,
        "train-1-1",
        1,
        "CUDA error: an illegal memory access",
    ));
    let st = env
        .status_until("train", "attempt 2 admitted and running", |s| {
            s.attempt == 2 && s.phase == JobPhase::Running && s.running_workers == Some(2)
        })
        .await;
    assert_eq!((st.restarts, st.preemptions), (1, 0));
    assert_eq!(kueue.admitted(), ["train-2"]);
    // Kueue lets attempt 1's pods go: the stopped one, held while terminating, is gone; the
    // failed one stays (its job owns it) without Kueue's finalizer.
    eventually("attempt 1's pods let go by Kueue", || {
        let env = &env;
        async move {
            let stopped = env.pods().get_opt("train-1-0").await.ok()?;
            let failed = env.pods().get_opt("train-1-1").await.ok()??;
            let held = failed
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == KUEUE_FINALIZER);
            (stopped.is_none() && !held).then_some(())
        }
    })
    .await;
}
