//! Scheduling gates as the API server and scheduler treat them, the stand-in for a mutating
//! pod webhook (Kueue's), finalizers holding a deleted pod, and faults that hold writes.

mod common;

use std::time::Duration;

use common::{NS, pod, poll, start, within};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube_standin::{Fault, PodWebhook};
use serde_json::json;

const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
const GATE: &str = "kueue.x-k8s.io/admission";
const FINALIZER: &str = "kueue.x-k8s.io/managed";

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn node(p: &Pod) -> Option<&str> {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref())
}

fn gates(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .map(|g| g.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default()
}

fn queued_pod(name: &str) -> Pod {
    let mut p = pod(name);
    p.metadata
        .labels
        .get_or_insert_default()
        .insert(QUEUE_LABEL.into(), "team-a".into());
    p
}

async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    poll(&format!("pod {name} {want}"), || async {
        pods.get(name).await.ok().filter(|p| phase(p) == want)
    })
    .await
}

#[tokio::test]
async fn gated_pods_are_not_scheduled_until_their_gates_are_removed() {
    let (standin, client) = start().await;
    standin.add_pod_webhook(PodWebhook::kueue());
    standin.kubelet().set_auto_run(true);
    let pods: Api<Pod> = Api::namespaced(client, NS);

    // The webhook gates a pod of a queue, as Kueue's does; the server marks it gated.
    let created = pods
        .create(&PostParams::default(), &queued_pod("gated"))
        .await
        .unwrap();
    assert_eq!(gates(&created), [GATE]);
    assert_eq!(
        created.metadata.finalizers.as_deref(),
        Some(&[FINALIZER.to_string()][..])
    );
    assert_eq!(created.metadata.labels.as_ref().unwrap()[FINALIZER], "true");
    let scheduled = condition(&created, "PodScheduled").expect("PodScheduled");
    assert_eq!(
        (
            scheduled.status.as_str(),
            scheduled.reason.as_deref(),
            scheduled.message.as_deref()
        ),
        (
            "False",
            Some("SchedulingGated"),
            Some("Scheduling is blocked due to non-empty scheduling gates")
        )
    );

    // A pod without the label is left alone, and the auto kubelet runs it; by then it has
    // passed over the gated one, which stays unbound. Binding it by hand is refused.
    let plain = pods
        .create(&PostParams::default(), &pod("plain"))
        .await
        .unwrap();
    assert!(gates(&plain).is_empty() && plain.metadata.finalizers.is_none());
    wait_phase(&pods, "plain", "Running").await;
    let still = pods.get("gated").await.unwrap();
    assert_eq!((phase(&still), node(&still)), ("Pending", None));
    let refused = standin.kubelet().run(NS, "gated").unwrap_err();
    assert!(refused.to_string().contains("schedulingGates"), "{refused}");

    // Gates can be removed, never added (422, as the API server answers).
    let add = json!({"spec": {"schedulingGates": [{"name": GATE}, {"name": "example.com/extra"}]}});
    let err = pods
        .patch("gated", &PatchParams::default(), &Patch::Merge(&add))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422);
            assert!(
                s.message.contains(
                    "spec.schedulingGates[1].name: Forbidden: only deletion is allowed, but found new scheduling gate 'example.com/extra'"
                ),
                "{}",
                s.message
            );
        }
        other => panic!("expected 422, got {other:?}"),
    }

    // Released (as Kueue admits the workload): scheduled and run.
    pods.patch(
        "gated",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"schedulingGates": null}})),
    )
    .await
    .unwrap();
    let running = wait_phase(&pods, "gated", "Running").await;
    assert_eq!(node(&running), Some("standin-node"));
    assert_eq!(condition(&running, "PodScheduled").unwrap().status, "True");
}

#[tokio::test]
async fn a_finalizer_holds_a_deleted_pod_in_its_terminal_phase() {
    let (standin, client) = start().await;
    standin.add_pod_webhook(PodWebhook::kueue());
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &queued_pod("p"))
        .await
        .unwrap();
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"schedulingGates": null}})),
    )
    .await
    .unwrap();
    standin.kubelet().run(NS, "p").unwrap();

    // Graceful deletion: the kubelet stops the containers, the pod turns Failed, and the
    // finalizer keeps it.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    let held = wait_phase(&pods, "p", "Failed").await;
    assert!(held.metadata.deletion_timestamp.is_some());
    let exit = held
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap()
        .exit_code;
    assert_eq!(exit, 143);

    // Its owner removes the finalizer: the pod is gone.
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    poll("pod p gone", || async {
        pods.get_opt("p").await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_hung_write_waits_until_cleared_and_other_requests_are_served() {
    let (standin, client) = start().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    standin.inject_fault(Fault::hang("leases", NS));
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("l".into()),
            ..Default::default()
        },
        spec: None,
    };
    let mut held = tokio::spawn({
        let leases = leases.clone();
        async move { leases.create(&PostParams::default(), &lease).await }
    });

    // Meanwhile reads of leases and writes of other resources are answered.
    let pods: Api<Pod> = Api::namespaced(client, NS);
    within(
        "a pod write",
        pods.create(&PostParams::default(), &pod("p")),
    )
    .await
    .unwrap();
    let listed = within("a lease list", leases.list(&ListParams::default()))
        .await
        .unwrap();
    assert!(
        listed.items.is_empty(),
        "the held create did not happen yet"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut held)
            .await
            .is_err(),
        "the lease write is held"
    );

    standin.clear_faults();
    let created = within("the held write", held).await.unwrap().unwrap();
    assert_eq!(created.metadata.name.as_deref(), Some("l"));
}

/// A pod of group `group` (of `count` pods) in Kueue's queue.
fn group_pod(name: &str, group: &str, count: u32, unretriable: bool) -> Pod {
    let mut p = queued_pod(name);
    p.metadata
        .labels
        .get_or_insert_default()
        .insert("kueue.x-k8s.io/pod-group-name".into(), group.into());
    let annotations = p.metadata.annotations.get_or_insert_default();
    annotations.insert(
        "kueue.x-k8s.io/pod-group-total-count".into(),
        count.to_string(),
    );
    if unretriable {
        annotations.insert("kueue.x-k8s.io/retriable-in-group".into(), "false".into());
    }
    p
}

async fn admitted(kueue: &kube_standin::Kueue, want: &[&str]) {
    poll(&format!("admitted {want:?}"), || async {
        (kueue.admitted() == want).then_some(())
    })
    .await;
}

/// Kueue's pod controller, stood in: a group is admitted once all its pods exist and the
/// quota has room (oldest first); a group with a failed pod keeps its quota while it waits for
/// replacements, unless a pod says `retriable-in-group: "false"`; a finished group gives its
/// quota back and lets its pods go.
#[tokio::test]
async fn kueue_admits_whole_groups_within_its_quota_and_holds_a_failed_retriable_one() {
    let (mut standin, client) = start().await;
    let kueue = standin.enable_kueue(2);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let create = |p: Pod| {
        let pods = pods.clone();
        async move { pods.create(&PostParams::default(), &p).await.unwrap() }
    };
    // Half a group: no workload, nothing admitted.
    create(group_pod("a-0", "a", 2, false)).await;
    create(group_pod("b-0", "b", 2, true)).await;
    create(group_pod("b-1", "b", 2, true)).await;
    admitted(&kueue, &["b"]).await;
    create(group_pod("a-1", "a", 2, false)).await;
    // "a" is complete now but the quota (2 pods) is b's.
    let a0 = pods.get("a-0").await.unwrap();
    assert_eq!(gates(&a0), [GATE]);
    for name in ["b-0", "b-1"] {
        poll(&format!("{name} ungated"), || async {
            pods.get(name).await.ok().filter(|p| gates(p).is_empty())
        })
        .await;
        standin.kubelet().run(NS, name).unwrap();
    }
    // One of b fails, the other is deleted: b is unretriable, so it is finished once both
    // ended; its quota goes to a, and b's deleted pod goes.
    standin.kubelet().fail(NS, "b-1", 1, "boom").unwrap();
    // The kubelet stand-in finishes the deletion (the trainer exits 143).
    pods.delete("b-0", &DeleteParams::default()).await.unwrap();
    admitted(&kueue, &["a"]).await;
    poll("b-0 gone", || async {
        pods.get_opt("b-0").await.unwrap().is_none().then_some(())
    })
    .await;
    let b1 = pods.get("b-1").await.unwrap();
    assert!(
        !b1.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    );

    // a is retriable: a failed pod holds the quota (Kueue waits for a replacement), and the
    // deleted one stays, terminating, under Kueue's finalizer.
    for name in ["a-0", "a-1"] {
        poll(&format!("{name} ungated"), || async {
            pods.get(name).await.ok().filter(|p| gates(p).is_empty())
        })
        .await;
        standin.kubelet().run(NS, name).unwrap();
    }
    standin.kubelet().fail(NS, "a-1", 1, "boom").unwrap();
    pods.delete("a-0", &DeleteParams::default()).await.unwrap();
    create(group_pod("c-0", "c", 1, true)).await;
    let a0 = wait_phase(&pods, "a-0", "Failed").await;
    assert!(a0.metadata.deletion_timestamp.is_some());
    assert!(
        a0.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == FINALIZER)
    );
    assert_eq!(kueue.admitted(), ["a"]);
    assert_eq!(gates(&pods.get("c-0").await.unwrap()), [GATE]);
    // A larger quota admits the next one.
    kueue.set_quota(3);
    admitted(&kueue, &["a", "c"]).await;
}
