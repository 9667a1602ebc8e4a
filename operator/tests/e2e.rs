//! End to end: the real `mtl-operator` binary against the Kubernetes API + kubelet stand-in
//! (`kube-standin`, in-process, plain HTTP, with the CRD installed from `crds/`), through a
//! kubeconfig file, with checkpoints on a real storage emulator written the way the trainer
//! writes them.
//!
//! Every wait polls with a bounded deadline; nothing sleeps for synchronisation.

mod common;

use common::{Env, NS, eventually, kubelet_ok, lease_holder, metric};
use std::collections::BTreeMap;

use kube::api::{Api, DeleteParams, ListParams};
use mtl_crds::{JobPhase, MultiTaskTrainingJobStatus};
use mtl_operator::status::find as condition;
use serde_json::json;

#[tokio::test]
async fn job_runs_to_success_and_status_follows_the_manifest() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;

    let pod = env.pod("train-1").await;
    let meta = &pod.metadata;
    assert_eq!(meta.labels.as_ref().unwrap()["multitask.dev/job"], "train");
    assert_eq!(meta.labels.as_ref().unwrap()["multitask.dev/attempt"], "1");
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("MultiTaskTrainingJob", Some(true))
    );
    let spec = pod.spec.clone().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("mtl-trainer:test"));
    let args = c.args.clone().unwrap();
    assert_eq!(&args[..2], ["train", "--job-json"]);
    let passed: mtl_crds::MultiTaskTrainingJobSpec = serde_json::from_str(&args[2]).unwrap();
    assert_eq!(passed.checkpoints.uri, env.checkpoints());
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.termination_grace_period_seconds, Some(5));
    assert_eq!(spec.service_account_name.as_deref(), Some("trainer"));
    assert_eq!(
        spec.node_selector.as_ref().unwrap()["cloud.google.com/gke-accelerator"],
        "nvidia-l4"
    );
    let limits = c.resources.as_ref().unwrap().limits.clone().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    // `cpu: 4` in the job (an int-or-string quantity, as on a pod).
    assert_eq!(limits["cpu"].0, "4");
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );

    let st = env
        .status_until("train", "phase Pending", |s| s.phase == JobPhase::Pending)
        .await;
    assert_eq!((st.attempt, st.pod_name.as_deref()), (1, Some("train-1")));

    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "phase Running", |s| s.phase == JobPhase::Running)
        .await;

    env.commit_checkpoint(100).await;
    env.commit_checkpoint(200).await;
    let st = env
        .status_until("train", "status.step 200", |s| s.step == Some(200))
        .await;
    assert_eq!(st.checkpoints.len(), 2);
    assert!(
        st.latest_checkpoint
            .as_deref()
            .unwrap()
            .ends_with("checkpoint-200")
    );
    assert_eq!(st.metrics["stsb/pearson"], 0.2);

    // The last checkpoint lands right before the trainer exits: the final read catches it.
    env.commit_checkpoint(300).await;
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-1"));
    let st = env
        .status_until("train", "phase Succeeded", |s| {
            s.phase == JobPhase::Succeeded
        })
        .await;
    assert_eq!(st.step, Some(300));
    assert!(st.completion_time.is_some());
    assert_eq!((st.restarts, st.preemptions), (0, 0));

    for want in ["Created", "CheckpointCommitted", "Succeeded"] {
        env.event(want).await;
    }
    assert_eq!(env.pod_names().await, ["train-1"]);
    let text = env.metrics(0).await.expect("metrics served");
    assert!(
        metric(&text, "mtl_operator_reconciles_total").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(metric(&text, "mtl_operator_leader"), Some(1.0));
}

#[tokio::test]
async fn preemption_replaces_the_pod_without_spending_backoff_limit() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    // Scheduler preemption: DisruptionTarget, then graceful deletion (trainer exits 143).
    kubelet_ok(env.standin.kubelet().preempt(NS, "train-1"));
    let st = env
        .status_until("train", "attempt 2 after preemption", |s| s.attempt == 2)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0));
    env.pod("train-2").await;

    // GKE spot reclaim on the replacement: Failed with reason Terminated.
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    env.status_until("train", "Running again", |s| s.phase == JobPhase::Running)
        .await;
    kubelet_ok(env.standin.kubelet().node_shutdown(NS, "train-2"));
    let st = env
        .status_until("train", "attempt 3 after node shutdown", |s| s.attempt == 3)
        .await;
    assert_eq!((st.preemptions, st.restarts), (2, 0));
    env.pod("train-3").await;
    env.event("Preempted").await;
}

/// A worker whose node is lost while its peers run: the taint manager marks it
/// (`DeletionByTaintManager`) and asks for its deletion, which its unreachable kubelet never
/// completes. The attempt ends at once (the peers are stopped, not left in the rendezvous),
/// and what follows (the peer failing on the lost rank, PodGC force-deleting the pod) does
/// not make it a failure: one preemption, no backoff spent.
#[tokio::test]
async fn a_worker_on_a_lost_node_is_a_preemption_whatever_follows() {
    use kube_standin::Disruption;
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({"workers": 2})).await;
    for i in 0..2 {
        env.pod(&format!("train-1-{i}")).await;
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-1-{i}")));
    }
    env.status_until("train", "Running with 2 workers", |s| {
        s.phase == JobPhase::Running && s.running_workers == Some(2)
    })
    .await;
    // Nothing finishes a deletion now: the lost node's kubelet cannot.
    env.standin.kubelet().set_auto_finish_deletion(false);
    kubelet_ok(
        env.standin
            .kubelet()
            .disrupt(NS, "train-1-1", Disruption::node_lost()),
    );
    let st = env
        .status_until("train", "the disruption kept in status", |s| {
            s.attempt_disruption.is_some()
        })
        .await;
    assert_eq!(
        st.attempt_disruption.as_ref().map(|d| d.reason.as_str()),
        Some("DeletionByTaintManager")
    );
    // The peer is stopped rather than left waiting for rank 1 until --dist-timeout.
    eventually("the peer to be asked to stop", || {
        let env = &env;
        async move {
            let pod = env.pods().get("train-1-0").await.ok()?;
            pod.metadata.deletion_timestamp.map(|_| ())
        }
    })
    .await;
    // The peer fails on the lost rank, then PodGC force-deletes both pods.
    kubelet_ok(env.standin.kubelet().fail(
        NS,
        "train-1-0",
        1,
        "distributed: allreduce failed: lost rank 1",
    ));
    for i in 0..2 {
        env.pods()
            .delete(
                &format!("train-1-{i}"),
                &DeleteParams::default().grace_period(0),
            )
            .await
            .expect("force delete");
    }
    let st = env
        .status_until("train", "attempt 2 after the lost node", |s| s.attempt == 2)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0), "{st:#?}");
    assert_eq!(st.attempt_disruption, None);
    env.event("Preempted").await;
}

/// A gang one of whose workers is never scheduled: the running worker would wait in the
/// rendezvous until --dist-timeout and then fail. After `runPolicy.startupTimeoutSeconds` the
/// attempt is stopped and replaced as a disruption (a preemption, not a failure).
#[tokio::test]
async fn a_gang_not_running_within_its_startup_timeout_is_replaced_as_a_disruption() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply(
        "train",
        json!({"workers": 2, "runPolicy": {"startupTimeoutSeconds": 2}}),
    )
    .await;
    env.pod("train-1-0").await;
    env.pod("train-1-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1-0"));
    let st = env
        .status_until("train", "attempt 2 after the start-up timeout", |s| {
            s.attempt == 2
        })
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0), "{st:#?}");
    let restarting = condition(&st, "Restarting").expect("a Restarting condition");
    assert!(
        restarting
            .message
            .contains("StartupTimeout: 1 of 2 workers were running 2s after"),
        "{}",
        restarting.message
    );
    let note = env.event("StartupTimeout").await;
    assert!(note.contains("runPolicy.startupTimeoutSeconds"), "{note}");
    let names = env.pod_names().await;
    assert!(
        !names.iter().any(|n| n.starts_with("train-1-")),
        "attempt 1's workers were stopped: {names:?}"
    );
}

/// With coscheduling (scheduler-plugins' PodGroup, the Kueue-less gang option) an attempt of
/// several workers gets a PodGroup with `minMember` = workers, owned by the job, before its
/// pods, which carry its label and go to the plugin's scheduler.
#[tokio::test]
async fn coscheduling_gives_each_gang_a_pod_group() {
    use kube::api::{ApiResource, DynamicObject};
    let mut env = Env::start().await;
    env.with_coscheduling().await;
    env.operator("op-a");
    env.apply("train", json!({"workers": 3})).await;
    let ar = ApiResource {
        group: "scheduling.x-k8s.io".into(),
        version: "v1alpha1".into(),
        api_version: "scheduling.x-k8s.io/v1alpha1".into(),
        kind: "PodGroup".into(),
        plural: "podgroups".into(),
    };
    let groups: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), NS, &ar);
    let group = eventually("the PodGroup of attempt 1", || {
        let groups = groups.clone();
        async move { groups.get_opt("train-1").await.ok().flatten() }
    })
    .await;
    assert_eq!(group.data["spec"]["minMember"], 3);
    let owner = &group.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("MultiTaskTrainingJob", Some(true))
    );
    for i in 0..3 {
        let pod = env.pod(&format!("train-1-{i}")).await;
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap()["scheduling.x-k8s.io/pod-group"],
            "train-1"
        );
        assert_eq!(
            pod.spec.as_ref().unwrap().scheduler_name.as_deref(),
            Some("scheduler-plugins-scheduler")
        );
    }
    // One worker: no gang, no PodGroup.
    env.apply("solo", json!({})).await;
    let pod = env.pod("solo-1").await;
    assert_ne!(
        pod.spec.as_ref().unwrap().scheduler_name.as_deref(),
        Some("scheduler-plugins-scheduler")
    );
    assert!(groups.get_opt("solo-1").await.unwrap().is_none());
}

/// A pod evicted for outgrowing its `/scratch` emptyDir (no `DisruptionTarget`: the pod, not
/// the node, is at fault) is the job's failure, and says which limit to raise.
#[tokio::test]
async fn an_emptydir_eviction_is_a_failure_that_names_the_limit() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    kubelet_ok(env.standin.kubelet().evict_over_limit(
        NS,
        "train-1",
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"20Gi\". ",
    ));
    let st = env
        .status_until("train", "attempt 2 after the eviction", |s| s.attempt == 2)
        .await;
    assert_eq!((st.restarts, st.preemptions), (1, 0));
    let restarting = condition(&st, "Restarting").expect("a Restarting condition");
    assert!(
        restarting
            .message
            .contains("exceeds the limit \"20Gi\". Raise spec.resources.scratchSize."),
        "{}",
        restarting.message
    );
}

/// The trainer's exit code 2 (input no retry can fix) fails the job after one attempt, with
/// reason `InvalidInput` and the trainer's termination message.
#[tokio::test]
async fn invalid_input_fails_the_job_after_one_attempt() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({"runPolicy": {"backoffLimit": 3}}))
        .await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    let message = "tasks[1] (rte): rte/train.tsv:3: label \"neutral\" is not one of [\"entailment\", \"not_entailment\"]";
    kubelet_ok(env.standin.kubelet().fail(
        NS,
        "train-1",
        i32::from(mtl_crds::EXIT_INVALID_INPUT),
        message,
    ));
    let (st, failed) = env.failed("train", "InvalidInput").await;
    assert_eq!(failed, message);
    assert_eq!((st.restarts, st.attempt), (0, 1));
    assert_eq!(env.pod_names().await, ["train-1"], "no second attempt");
}

/// A pod create the API server refuses (a ResourceQuota's 403) shows in the job's status,
/// with the API's message, and as a Warning Event; once the quota allows it the pod is
/// created and the condition clears.
#[tokio::test]
async fn a_refused_pod_create_shows_in_status_and_is_retried() {
    let mut env = Env::start().await;
    let quota = "pods \"train-1\" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, limited: requests.nvidia.com/gpu=4";
    env.standin
        .inject_fault(kube_standin::Fault::forbidden("pods", NS, quota));
    env.operator("op-a");
    env.apply("train", json!({})).await;
    let synced = |s: &MultiTaskTrainingJobStatus| condition(s, "Synced").cloned();
    let st = env
        .status_until("train", "Synced False", |s| {
            synced(s).is_some_and(|c| c.status == "False")
        })
        .await;
    let c = synced(&st).unwrap();
    assert_eq!(c.reason, "CreateFailed");
    assert!(
        c.message.contains("creating pod train-1") && c.message.contains("exceeded quota"),
        "{}",
        c.message
    );
    assert!(env.pod_names().await.is_empty());
    env.event("CreateFailed").await;

    // Quota freed: retried (a quota refusal is retried soon), created, condition cleared.
    env.standin.clear_faults();
    env.pod("train-1").await;
    env.status_until("train", "Synced True", |s| {
        synced(s).is_some_and(|c| c.status == "True")
    })
    .await;
}

/// A gang refused part way (a quota with room for two of three workers): the workers this
/// reconcile created are deleted again, so none holds its GPUs in a rendezvous that cannot
/// complete and no pod runs untracked; once the quota allows, the attempt starts whole.
#[tokio::test]
async fn a_gang_refused_part_way_leaves_no_pod_behind() {
    use kube_standin::Fault;
    let mut env = Env::start().await;
    env.standin
        .inject_fault(Fault::forbidden("pods", NS, "exceeded quota: gpus").after(2));
    env.operator("op-a");
    env.apply("train", json!({"workers": 3})).await;
    let synced = |s: &MultiTaskTrainingJobStatus| condition(s, "Synced").cloned();
    let st = env
        .status_until("train", "the refusal in Synced", |s| {
            synced(s).is_some_and(|c| c.status == "False")
        })
        .await;
    let c = synced(&st).unwrap();
    assert!(
        c.message.contains("creating attempt 1") && c.message.contains("exceeded quota"),
        "{}",
        c.message
    );
    // Two were created, then taken back.
    assert!(env.standin.stats().count("create", "pods") >= 2);
    eventually("no pod of the half-made gang left", || {
        let env = &env;
        async move { env.pod_names().await.is_empty().then_some(()) }
    })
    .await;
    assert_eq!(st.attempt, 0, "the attempt was not recorded as started");

    env.standin.clear_faults();
    for i in 0..3 {
        env.pod(&format!("train-1-{i}")).await;
    }
    env.status_until("train", "Synced True", |s| {
        synced(s).is_some_and(|c| c.status == "True")
    })
    .await;
}

/// Starting an attempt asks the API server, not the pod cache, what exists: right after a
/// start cut short took its pods back, the cache may still hold one as it was, and a start
/// that trusted it would record an attempt missing that pod (which then looked disrupted and
/// started over). The backend is driven directly, with such a stale cache.
#[tokio::test]
async fn starting_an_attempt_creates_pods_a_stale_cache_still_shows() {
    use kube::ResourceExt;
    use kube::runtime::{reflector::store::Writer, watcher};
    use mtl_operator::backend::AttemptBackend;
    use mtl_operator::backend::pods::{PodOptions, Pods};
    let env = Env::start().await;
    env.apply("train", json!({"workers": 2})).await;
    let job = env.jobs().get("train").await.unwrap();
    let stale: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "train-1-0", "namespace": NS, "resourceVersion": "1",
                     "ownerReferences": [{"apiVersion": "multitask.dev/v1alpha1",
                                          "kind": "MultiTaskTrainingJob", "name": "train",
                                          "uid": job.uid().unwrap(), "controller": true}]},
        "spec": {"containers": [{"name": "trainer", "image": "x"}]}
    }))
    .unwrap();
    let mut writer = Writer::default();
    writer.apply_watcher_event(&watcher::Event::Apply(stale));
    let pods = Pods {
        client: env.client.clone(),
        opts: PodOptions::default(),
        store: Some(writer.as_reader()),
    };
    let mut status = MultiTaskTrainingJobStatus::default();
    pods.start(&job, 1, &mut status).await.unwrap();
    assert_eq!(env.pod_names().await, ["train-1-0", "train-1-1"]);
}

/// A pod that cannot start says why in the job's status and an Event: the scheduler's
/// Unschedulable with its message, then the kubelet's ImagePullBackOff.
#[tokio::test]
async fn a_stuck_pod_shows_why_in_the_job_status() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    let running_condition = |s: &MultiTaskTrainingJobStatus, reason: &str| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Running" && c.status == "False" && c.reason == reason)
    };
    kubelet_ok(env.standin.kubelet().unschedulable(
        NS,
        "train-1",
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
    ));
    let st = env
        .status_until("train", "Unschedulable in status", |s| {
            running_condition(s, "Unschedulable")
        })
        .await;
    assert_eq!(st.phase, JobPhase::Pending);
    let c = condition(&st, "Running").unwrap();
    assert!(
        c.message.contains("Insufficient nvidia.com/gpu"),
        "{}",
        c.message
    );

    kubelet_ok(env.standin.kubelet().pending(
        NS,
        "train-1",
        "ImagePullBackOff",
        "Back-off pulling image \"mtl-trainer:test\"",
    ));
    env.status_until("train", "ImagePullBackOff in status", |s| {
        running_condition(s, "ImagePullBackOff")
    })
    .await;
    // A Warning Event (one per new reason; the recorder folds repeats of a reason into a
    // series, so the count of objects is not asserted).
    env.event("AttemptWaiting").await;

    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
}

#[tokio::test]
async fn failures_past_backoff_limit_fail_the_job_with_the_termination_message() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    kubelet_ok(
        env.standin
            .kubelet()
            .fail(NS, "train-1", 1, "CUDA error: out of memory"),
    );
    // Counted once; the next attempt starts after its backoff (1 s here), which the
    // Restarting condition announces.
    let st = env
        .status_until("train", "attempt 2", |s| s.attempt == 2)
        .await;
    assert_eq!(
        (st.restarts, st.phase),
        (1, JobPhase::Restarting),
        "{st:#?}\n{}",
        env.logs()
    );
    assert_eq!(st.next_attempt_time, None);
    let restarting = condition(&st, "Restarting").unwrap();
    assert!(
        restarting.message.contains("starting pod train-2 in 1s"),
        "{}",
        restarting.message
    );

    env.pod("train-2").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    let message = "tasks[0] (stsb): cannot read gs://data/stsb/train.tsv: 403 Forbidden";
    kubelet_ok(env.standin.kubelet().fail(NS, "train-2", 1, message));
    let (_, failed) = env.failed("train", "BackoffLimitExceeded").await;
    assert_eq!(failed, message);
    assert_eq!(
        env.pod_names().await,
        ["train-1", "train-2"],
        "no third attempt"
    );
}

#[tokio::test]
async fn operator_restart_mid_job_creates_no_duplicate_pod() {
    let mut env = Env::start().await;
    let first = env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    // Killed hard: no clean shutdown, the lease is left to expire.
    env.signal(first, "-KILL");
    env.wait_exit(first).await;
    env.commit_checkpoint(100).await;
    env.operator("op-b");
    env.status_until("train", "op-b reconciles (step 100)", |s| {
        s.step == Some(100)
    })
    .await;
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-b"));
    assert_eq!(env.pod_names().await, ["train-1"]);
    let creates =
        env.standin.stats().count("patch", "pods") + env.standin.stats().count("create", "pods");
    assert_eq!(creates, 1, "the pod was written once");
}

#[tokio::test]
async fn suspend_deletes_the_pod_and_resume_starts_a_new_attempt() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    env.commit_checkpoint(100).await;
    env.status_until("train", "step 100", |s| s.step == Some(100))
        .await;

    env.apply("train", json!({"runPolicy": {"suspend": true}}))
        .await;
    let st = env
        .status_until("train", "Suspended", |s| s.phase == JobPhase::Suspended)
        .await;
    assert_eq!(
        (st.attempt, st.step),
        (1, Some(100)),
        "suspend keeps status"
    );
    let pods = env.pods();
    eventually("pod train-1 deleted", || {
        let pods = pods.clone();
        async move { pods.get_opt("train-1").await.ok()?.is_none().then_some(()) }
    })
    .await;

    env.apply("train", json!({"runPolicy": {"suspend": false}}))
        .await;
    env.pod("train-2").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    let st = env
        .status_until("train", "Running after resume", |s| {
            s.phase == JobPhase::Running
        })
        .await;
    assert_eq!((st.attempt, st.restarts, st.preemptions), (2, 0, 0));
    let suspended = condition(&st, "Suspended").unwrap();
    assert_eq!(suspended.status, "False");
    env.event("Suspended").await;
    env.event("Resumed").await;
}

#[tokio::test]
async fn two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    let mut env = Env::start().await;
    let a = env.operator("op-a");
    let holder = eventually("a lease holder", || lease_holder(&env)).await;
    assert_eq!(holder, "op-a");
    let b = env.operator("op-b");
    // op-b is up (serves metrics) and stands by.
    let text = eventually("op-b metrics", || env.metrics(b)).await;
    assert_eq!(metric(&text, "mtl_operator_leader"), Some(0.0));

    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    env.status_until("train", "Pending", |s| s.phase == JobPhase::Pending)
        .await;
    let text_b = env.metrics(b).await.expect("op-b metrics");
    assert_eq!(
        metric(&text_b, "mtl_operator_reconciles_total"),
        Some(0.0),
        "the standby did nothing"
    );
    let text_a = env.metrics(a).await.expect("op-a metrics");
    assert_eq!(metric(&text_a, "mtl_operator_leader"), Some(1.0));

    // Clean shutdown of the leader releases the lease; the standby takes over and acts.
    env.signal(a, "-TERM");
    let exit = env.wait_exit(a).await;
    assert!(
        exit.success(),
        "clean exit on SIGTERM: {exit:?}\n{}",
        env.logs()
    );
    eventually("op-b leads", || async {
        (lease_holder(&env).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running via op-b", |s| {
        s.phase == JobPhase::Running
    })
    .await;
    assert_eq!(env.pod_names().await, ["train-1"]);
}

/// A pods job carries no finalizer: deleting it does not wait for the operator (here: no
/// operator runs any more), and the garbage collector deletes its pods gracefully, as it
/// deletes a Job's (the trainer gets SIGTERM and its grace period to checkpoint).
#[tokio::test]
async fn deleting_a_job_deletes_its_pods_without_the_operator() {
    let mut env = Env::start().await;
    let op = env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    let job = env.jobs().get("train").await.unwrap();
    assert_eq!(
        job.metadata.finalizers.unwrap_or_default(),
        Vec::<String>::new(),
        "a pods job has no finalizer"
    );
    env.signal(op, "-KILL");
    env.wait_exit(op).await;

    // Hold the pod's graceful deletion (as a trainer still checkpointing would) to see it.
    env.standin.kubelet().set_auto_finish_deletion(false);
    env.jobs()
        .delete("train", &DeleteParams::default())
        .await
        .expect("delete accepted");
    env.job_gone("train", "job gone").await;
    let pod = eventually("the pod's graceful deletion", || {
        let pods = env.pods();
        async move {
            let pod = pods.get("train-1").await.ok()?;
            pod.metadata.deletion_timestamp.is_some().then_some(pod)
        }
    })
    .await;
    assert!(
        pod.metadata.deletion_grace_period_seconds.unwrap_or(0) > 0,
        "deleted gracefully: {:?}",
        pod.metadata
    );
    env.standin.kubelet().set_auto_finish_deletion(true);
    let pods = env.pods();
    eventually("pods gone", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn finished_job_is_deleted_after_its_ttl() {
    let mut env = Env::start().await;
    env.operator("op-a");
    // Times in status have whole seconds, as metav1.Time: a TTL of 1 s can run out within
    // milliseconds of the Succeeded status, before a poll sees it; 3 s leaves at least 2.
    env.apply(
        "train",
        json!({"runPolicy": {"ttlSecondsAfterFinished": 3}}),
    )
    .await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-1"));
    env.status_until("train", "Succeeded", |s| s.phase == JobPhase::Succeeded)
        .await;
    env.job_gone("train", "job deleted by TTL").await;
}

/// A pods job that an older operator gave its finalizer is released from it and runs on.
/// (The per-job state going with a deleted job is checked by the progress test below.)
#[tokio::test]
async fn an_older_operators_finalizer_is_released() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply_with_old_finalizer("train").await;
    env.pod("train-1").await;
    env.finalizers_released("train").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
}

/// `workers: 3`: three pods under a headless Service, each with its rank's rendezvous
/// environment; a preempted worker replaces the whole attempt (one preemption), a failed one
/// too (one restart), and rank 0's success ends the job. Checkpoints on gs:// (a real
/// emulator), as the CRD requires for several workers.
#[tokio::test]
async fn workers_are_one_attempt_replaced_together_and_counted_once() {
    use k8s_openapi::api::core::v1::Service;
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({"workers": 3, "resources": {"gpus": 2}}))
        .await;

    let pods: Vec<_> = futures::future::join_all((0..3).map(|i| {
        let env = &env;
        async move { env.pod(&format!("train-1-{i}")).await }
    }))
    .await;
    for (i, pod) in pods.iter().enumerate() {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.hostname.as_deref(),
            Some(format!("train-1-{i}").as_str())
        );
        assert_eq!(spec.subdomain.as_deref(), Some("train"));
        let env: BTreeMap<_, _> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["MASTER_ADDR"], "train-1-0.train");
        assert_eq!(env["MASTER_PORT"], "29500");
        assert_eq!(env["WORLD_SIZE"], "6");
        assert_eq!(env["RANK"], i.to_string());
        assert_eq!(env["PET_NODE_RANK"], i.to_string());
        assert_eq!(env["PET_NNODES"], "3");
        assert_eq!(env["PET_NPROC_PER_NODE"], "2");
        let shm = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "dshm")
            .and_then(|v| v.empty_dir.clone())
            .expect("a /dev/shm volume");
        assert_eq!(shm.medium.as_deref(), Some("Memory"));
    }
    let services: Api<Service> = Api::namespaced(env.client.clone(), NS);
    let svc = services.get("train").await.expect("the headless Service");
    let svc_spec = svc.spec.unwrap();
    assert_eq!(svc_spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(svc_spec.publish_not_ready_addresses, Some(true));
    assert_eq!(
        svc.metadata.owner_references.unwrap()[0].kind,
        "MultiTaskTrainingJob"
    );

    for i in 0..3 {
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-1-{i}")));
    }
    let st = env
        .status_until("train", "Running with 3 workers", |s| {
            s.phase == JobPhase::Running && s.running_workers == Some(3)
        })
        .await;
    assert_eq!(st.pod_name.as_deref(), Some("train-1-0"));

    // One worker preempted: the others are stopped, one preemption, one new attempt.
    kubelet_ok(env.standin.kubelet().preempt(NS, "train-1-1"));
    let st = env
        .status_until("train", "attempt 2 after a preemption", |s| s.attempt == 2)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0));
    for i in 0..3 {
        env.pod(&format!("train-2-{i}")).await;
    }
    let names = env.pod_names().await;
    assert!(
        !names.iter().any(|n| n.starts_with("train-1-")),
        "attempt 1's workers are all gone: {names:?}"
    );

    // One worker fails: the others are stopped, backoff spent once.
    for i in 0..3 {
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-2-{i}")));
    }
    env.status_until("train", "attempt 2 running", |s| {
        s.phase == JobPhase::Running && s.running_workers == Some(3)
    })
    .await;
    kubelet_ok(env.standin.kubelet().fail(
        NS,
        "train-2-2",
        1,
        "CUDA error: an illegal memory access",
    ));
    let st = env
        .status_until("train", "attempt 3 after a failure", |s| s.attempt == 3)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 1));
    let restarting = condition(&st, "Restarting").expect("a Restarting condition");
    assert!(
        restarting.message.contains("illegal memory access"),
        "{}",
        restarting.message
    );
    let names = env.pod_names().await;
    assert!(
        !names.contains(&"train-2-0".to_string()) && !names.contains(&"train-2-1".to_string()),
        "the failed attempt's other workers were stopped: {names:?}"
    );

    // Rank 0 finishes: the job succeeded; the workers still up are stopped. (Status names
    // an attempt before its pods exist: wait for them.)
    for i in 0..3 {
        env.pod(&format!("train-3-{i}")).await;
        kubelet_ok(env.standin.kubelet().run(NS, &format!("train-3-{i}")));
    }
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-3-0"));
    let st = env
        .status_until("train", "Succeeded", |s| s.phase == JobPhase::Succeeded)
        .await;
    assert_eq!((st.preemptions, st.restarts, st.attempt), (1, 1, 3));
    assert_eq!(st.running_workers, None);
    eventually("the stragglers of attempt 3 to be stopped", || {
        let env = &env;
        async move {
            let names = env.pod_names().await;
            (!names.contains(&"train-3-1".to_string()) && !names.contains(&"train-3-2".to_string()))
                .then_some(())
        }
    })
    .await;
}

/// A job as `kubectl apply -f -` sends it, with `checkpoints` and `workers` as given.
fn job_with_checkpoints(checkpoints: serde_json::Value, workers: u32) -> String {
    serde_json::to_string(&json!({
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "local"},
        "spec": {
            "image": "mtl-trainer:test",
            "model": {"pretrained": "gs://models/minilm"},
            "tasks": [{"name": "stsb", "type": "regression", "train": "gs://data/stsb.tsv",
                       "format": "glueTsv", "textFields": ["s1", "s2"], "labelField": "score"}],
            "checkpoints": checkpoints,
            "workers": workers
        }
    }))
    .unwrap()
}

/// At admission, the CRD refuses checkpoints on a pod's own disk for `backend: kubernetes`
/// (a path without a PersistentVolumeClaim), a claim not mounted at an absolute path, and
/// several workers without gs://; a claim mounted at an absolute path is accepted.
#[tokio::test]
async fn pods_need_checkpoints_that_outlive_them_at_admission() {
    let env = Env::start().await;
    let kubectl = env.kubectl();
    for (checkpoints, workers, refusal) in [
        (
            json!({"uri": "/tmp/ckpt"}),
            1,
            "backend kubernetes needs a gs:// checkpoints.uri, or checkpoints.persistentVolumeClaim",
        ),
        (
            json!({"uri": "ckpt", "persistentVolumeClaim": "ckpt"}),
            1,
            "with persistentVolumeClaim, uri is the absolute path",
        ),
        (
            json!({"uri": "/ckpt", "persistentVolumeClaim": "ckpt"}),
            2,
            "workers > 1 needs a gs:// checkpoints.uri",
        ),
    ] {
        let job = job_with_checkpoints(checkpoints.clone(), workers);
        let out = kubectl
            .run(&["apply", "-f", "-"], Some(&job))
            .await
            .unwrap();
        assert!(!out.success(), "accepted {checkpoints}: {out}");
        assert!(
            out.stderr.contains(refusal),
            "{checkpoints}: {}",
            out.stderr
        );
    }
    let job = job_with_checkpoints(json!({"uri": "/ckpt", "persistentVolumeClaim": "ckpt"}), 1);
    let out = kubectl
        .run(&["apply", "-f", "-"], Some(&job))
        .await
        .unwrap();
    assert!(out.success(), "{out}");
}

/// Checkpoints on a PersistentVolumeClaim: the claim is mounted at `checkpoints.uri`, and the
/// operator, which cannot read it, never reads a manifest for the job. Where the API server
/// lets a local path through (the rule stripped), the operator fails the job with
/// `InvalidSpec` instead of running it on a disk that dies with the pod.
#[tokio::test]
async fn checkpoints_on_a_claim_are_mounted_and_local_ones_refused() {
    let mut env = Env::start_without_crd().await;
    env.install_crd_edited(|crd| {
        strip_rules(
            crd,
            &rule_has(
                "message",
                "backend kubernetes needs a gs:// checkpoints.uri",
            ),
        )
    })
    .await;
    env.operator("op-a");
    env.apply(
        "claim",
        json!({"checkpoints": {"uri": "/checkpoints/run", "persistentVolumeClaim": "team-ckpt"}}),
    )
    .await;
    let pod = env.pod("claim-1").await;
    let spec = pod.spec.unwrap();
    let volume = spec
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "checkpoints")
        .expect("a checkpoints volume");
    assert_eq!(
        volume.persistent_volume_claim.unwrap().claim_name,
        "team-ckpt"
    );
    let mount = spec.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .find(|m| m.name == "checkpoints")
        .expect("a checkpoints mount");
    assert_eq!(mount.mount_path, "/checkpoints/run");
    kubelet_ok(env.standin.kubelet().run(NS, "claim-1"));
    env.status_until("claim", "Running", |s| s.phase == JobPhase::Running)
        .await;

    env.apply("local", json!({"checkpoints": {"uri": "/tmp/ckpt"}}))
        .await;
    let (_, failed) = env.failed("local", "InvalidSpec").await;
    assert!(failed.contains("lost with the pod"), "{failed}");
    assert!(env.pods().get_opt("local-1").await.unwrap().is_none());
    let text = env.metrics(0).await.expect("metrics served");
    assert_eq!(
        metric(&text, "mtl_operator_manifest_reads_total"),
        Some(0.0),
        "the claim's manifest is out of reach: {text}"
    );
}

/// `spec.podTemplate` reaches the pod as the API server stores it, and cannot change once the
/// job exists (the CRD's transition rule, enforced by the stand-in).
#[tokio::test]
async fn pod_template_reaches_the_pod_and_is_immutable() {
    let mut env = Env::start().await;
    env.operator("op-a");
    let template = json!({
        "labels": {"team": "nlp"},
        "annotations": {"gke-gcsfuse/volumes": "true"},
        "env": [{"name": "HF_DATASETS_OFFLINE", "value": "1"}],
        "volumes": [{"name": "data", "csi": {"driver": "gcsfuse.csi.storage.gke.io",
                     "volumeAttributes": {"bucketName": "datasets"}}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": true}],
        "priorityClassName": "training-high",
        "imagePullSecrets": [{"name": "registry"}]
    });
    env.apply("train", json!({"podTemplate": template})).await;
    let pod = env.pod("train-1").await;
    assert_eq!(pod.metadata.labels.as_ref().unwrap()["team"], "nlp");
    assert_eq!(
        pod.metadata.annotations.as_ref().unwrap()["gke-gcsfuse/volumes"],
        "true"
    );
    let spec = pod.spec.unwrap();
    assert_eq!(spec.priority_class_name.as_deref(), Some("training-high"));
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "registry");
    let c = &spec.containers[0];
    assert!(
        c.env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "HF_DATASETS_OFFLINE")
    );
    assert!(
        c.volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .any(|m| m.mount_path == "/data")
    );
    assert!(
        spec.volumes
            .unwrap()
            .iter()
            .any(|v| v.name == "data" && v.csi.is_some())
    );

    let mut changed = template.clone();
    changed["priorityClassName"] = json!("training-low");
    let job = serde_json::to_string(&json!({
        "apiVersion": "multitask.dev/v1alpha1", "kind": "MultiTaskTrainingJob",
        "metadata": {"name": "train"}, "spec": {"podTemplate": changed}
    }))
    .unwrap();
    let out = env
        .kubectl()
        .run(
            &["patch", "mttj", "train", "--type", "merge", "-p", &job],
            None,
        )
        .await
        .unwrap();
    assert!(!out.success(), "changed: {out}");
    assert!(
        out.stderr
            .contains("spec.podTemplate cannot change once the job exists"),
        "{}",
        out.stderr
    );
}

/// Removes the CRD's validation rules (`x-kubernetes-validations` entries) that `drop` picks.
fn strip_rules(v: &mut serde_json::Value, drop: &dyn Fn(&serde_json::Value) -> bool) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                rules.retain(|r| !drop(r));
            }
            map.values_mut().for_each(|v| strip_rules(v, drop));
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip_rules(v, drop)),
        _ => {}
    }
}

/// Whether rule field `field` (`rule`, `message`) contains `text`.
fn rule_has(field: &'static str, text: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |r| r[field].as_str().unwrap_or("").contains(text)
}

/// The trainer's progress.json reaches `.status.progress` and `kubectl get`'s PROGRESS and
/// ETA columns; one that stops changing while the pod runs makes the job `Stalled` until it
/// moves again; reads stay bounded by the poll interval however often status is written.
#[tokio::test]
async fn progress_reaches_status_and_a_stale_one_stalls_the_job() {
    let started = std::time::Instant::now();
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({"checkpoints": {"progressEverySeconds": 1}}))
        .await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    env.write_progress(168, 400, 750.0, 1).await;
    let st = env
        .status_until("train", "progress 42%", |s| {
            s.progress.as_ref().is_some_and(|p| p.percent == "42%")
        })
        .await;
    let p = st.progress.unwrap();
    assert_eq!(
        (p.step, p.total_steps, p.eta.as_deref()),
        (168, 400, Some("12m"))
    );
    assert_eq!(p.examples_per_second, Some(10.0));
    assert!(p.estimated_completion_time.is_some());
    let out = env
        .kubectl()
        .run(&["get", "mttj", "train"], None)
        .await
        .unwrap();
    assert!(out.success(), "{out}");
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("PROGRESS") && header.contains("ETA"),
        "{out}"
    );
    assert!(
        out.stdout.contains("42%") && out.stdout.contains("12m"),
        "{out}"
    );

    // No change for 10 progress intervals while the pod runs.
    let st = env
        .status_until("train", "Stalled", |s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True")
        })
        .await;
    let stalled = condition(&st, "Stalled").unwrap();
    assert_eq!(stalled.reason, "ProgressStale");
    env.write_progress(200, 400, 600.0, 2).await;
    env.status_until("train", "Stalled cleared", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "False" && c.reason == "ProgressResumed")
    })
    .await;

    // Per-job gauges, labelled by namespace and name, gone with the job. The operator sets
    // them right after the status write the test saw.
    let job = r#"{namespace="default",name="train"}"#;
    let ratio = format!("mtl_operator_job_progress_ratio{job}");
    let text = eventually("the job's gauges at step 200", || {
        let (env, ratio) = (&env, &ratio);
        async move {
            let text = env.metrics(0).await?;
            (metric(&text, ratio) == Some(0.5)).then_some(text)
        }
    })
    .await;
    let reads = metric(&text, "mtl_operator_progress_reads_total").unwrap();
    let bound = started.elapsed().as_secs_f64() + 2.0;
    assert!(
        reads >= 3.0 && reads <= bound,
        "{reads} progress reads in {bound:.0} s with --progress-poll-seconds 1"
    );
    assert_eq!(
        metric(&text, &format!("mtl_operator_job_step{job}")),
        Some(200.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"mtl_operator_job_phase{namespace="default",name="train",phase="Running"}"#
        ),
        Some(1.0)
    );
    env.jobs()
        .delete("train", &DeleteParams::default())
        .await
        .expect("job deleted");
    eventually("the job's gauges to go", || {
        let env = &env;
        async move {
            let text = env.metrics(0).await?;
            (!text.contains(r#"name="train""#)).then_some(())
        }
    })
    .await;
}

/// Where an API server lets a spec change through (transition rules not enforced), the
/// operator keeps running the job as accepted: a backend switch under a running pod starts no
/// Vertex AI job and the pod's outcome still decides the job; a Warning Event names the fields.
#[tokio::test]
async fn a_spec_change_the_api_server_let_through_is_ignored() {
    let mut env = Env::start_without_crd().await;
    // Every transition rule (`oldSelf`) dropped.
    env.install_crd_edited(|crd| strip_rules(crd, &rule_has("rule", "oldSelf")))
        .await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    let st = env
        .status_until("train", "Running", |s| {
            s.phase == JobPhase::Running && s.accepted_spec.is_some()
        })
        .await;
    assert_eq!(st.accepted_spec.unwrap()["backend"], "kubernetes");

    env.apply(
        "train",
        json!({"backend": "vertexAI", "vertexAI": {"project": "p", "region": "us-central1"},
               "training": {"learningRate": 0.5}}),
    )
    .await;
    let note = env.event("SpecChangeIgnored").await;
    assert!(
        note.contains("spec.backend, spec.training, spec.vertexAI changed"),
        "{note}"
    );
    env.commit_checkpoint(100).await;
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-1"));
    let st = env
        .status_until("train", "Succeeded", |s| s.phase == JobPhase::Succeeded)
        .await;
    assert_eq!(st.step, Some(100));
    assert!(st.vertex_job_name.is_none(), "{st:?}");
    assert_eq!(st.accepted_spec.unwrap()["training"]["learningRate"], 1e-5);
    assert_eq!(env.pod_names().await, ["train-1"]);
}

/// A job that names no image runs the operator's `--default-image`, and keeps it: the image
/// is part of the accepted spec.
#[tokio::test]
async fn a_job_without_an_image_runs_the_operators_default_image() {
    let mut env = Env::start().await;
    env.operator_env.push((
        "MTL_DEFAULT_IMAGE".into(),
        "registry.example/mtl-trainer:7".into(),
    ));
    env.operator("op-a");
    env.apply("train", json!({"image": null})).await;
    let pod = env.pod("train-1").await;
    let image = pod.spec.unwrap().containers[0].image.clone();
    assert_eq!(image.as_deref(), Some("registry.example/mtl-trainer:7"));
    let st = env
        .status_until("train", "the accepted spec", |s| s.accepted_spec.is_some())
        .await;
    assert_eq!(
        st.accepted_spec.unwrap()["image"],
        "registry.example/mtl-trainer:7"
    );
    let job = env.jobs().get("train").await.unwrap();
    assert!(
        job.spec.image.is_none(),
        "the user's spec is left as written"
    );
    assert!(env.event_note("SpecChangeIgnored").is_none());
}
