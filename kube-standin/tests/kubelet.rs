//! The kubelet stand-in: phases, container statuses, disruptions, graceful deletion, auto
//! mode, and driving it over HTTP (in-process and from the binary).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{NS, client_for, pod, poll, start, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, PodCondition};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use kube_standin::{ContainerExit, Disruption, Outcome};
use serde_json::{Value, json};

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
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

fn terminated(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .expect("container terminated")
}

async fn control(client: &Client, path: &str, body: Value) -> Value {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    client.request::<Value>(req).await.unwrap()
}

#[tokio::test]
async fn pod_moves_through_phases() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let created = pods
        .create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    assert_eq!(phase(&created), "Pending");
    let status = created.status.as_ref().unwrap();
    assert_eq!(status.qos_class.as_deref(), Some("BestEffort"));
    let spec = created.spec.as_ref().unwrap();
    assert_eq!(spec.scheduler_name.as_deref(), Some("default-scheduler"));
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));

    let kubelet = standin.kubelet();
    // No node fits: unbound, PodScheduled=False with the scheduler's message.
    kubelet
        .unschedulable(
            NS,
            "p",
            "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
        )
        .unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(phase(&p), "Pending");
    assert_eq!(p.spec.as_ref().unwrap().node_name, None);
    let scheduled = condition(&p, "PodScheduled").unwrap();
    assert_eq!(
        (scheduled.status.as_str(), scheduled.reason.as_deref()),
        ("False", Some("Unschedulable"))
    );
    assert!(
        scheduled
            .message
            .as_deref()
            .unwrap()
            .contains("Insufficient")
    );

    kubelet
        .pending(NS, "p", "ImagePullBackOff", "pull failed")
        .unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(condition(&p, "PodScheduled").unwrap().status, "True");
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("standin-node")
    );
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        cs.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ImagePullBackOff")
    );

    kubelet.run(NS, "p").unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(phase(&p), "Running");
    assert!(p.status.as_ref().unwrap().start_time.is_some());
    assert_eq!(condition(&p, "Ready").unwrap().status, "True");

    kubelet
        .terminate(NS, "p", ContainerExit::failure(3, "CUDA out of memory"))
        .unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(phase(&p), "Failed");
    let t = terminated(&p);
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert_eq!(t.message.as_deref(), Some("CUDA out of memory"));

    // A finished pod is deleted at once even though it is bound to a node.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());

    pods.create(&PostParams::default(), &pod("q"))
        .await
        .unwrap();
    kubelet.run(NS, "q").unwrap();
    kubelet.succeed(NS, "q").unwrap();
    let q = pods.get("q").await.unwrap();
    assert_eq!(phase(&q), "Succeeded");
    assert_eq!(terminated(&q).reason.as_deref(), Some("Completed"));
}

#[tokio::test]
async fn restart_policy_always_restarts_containers() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut p = pod("p");
    p.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    standin.kubelet().run(NS, "p").unwrap();
    standin.kubelet().fail(NS, "p", 1, "boom").unwrap();
    let p = pods.get("p").await.unwrap();
    assert_eq!(phase(&p), "Running");
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(cs.restart_count, 1);
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.message.as_deref()), (1, Some("boom")));
}

#[tokio::test]
async fn eviction_and_node_shutdown_mark_the_pod_failed() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    for (name, d, reason) in [
        ("evicted", Disruption::eviction(None), "Evicted"),
        ("spot", Disruption::node_shutdown(), "Terminated"),
        (
            "custom",
            Disruption {
                condition_reason: "PreemptionByScheduler".into(),
                message: "preempted".into(),
                outcome: Outcome::Fail {
                    reason: "Preempted".into(),
                },
            },
            "Preempted",
        ),
    ] {
        pods.create(&PostParams::default(), &pod(name))
            .await
            .unwrap();
        standin.kubelet().run(NS, name).unwrap();
        standin.kubelet().disrupt(NS, name, d.clone()).unwrap();
        let p = pods.get(name).await.unwrap();
        assert_eq!(phase(&p), "Failed");
        assert_eq!(p.status.as_ref().unwrap().reason.as_deref(), Some(reason));
        let c = condition(&p, "DisruptionTarget").expect("DisruptionTarget condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some(d.condition_reason.as_str()))
        );
        assert_eq!(terminated(&p).exit_code, 137);
    }
}

#[tokio::test]
async fn preemption_sets_the_condition_then_deletes_gracefully() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    standin.kubelet().set_auto_finish_deletion(false);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    standin.kubelet().run(NS, "p").unwrap();

    let mut watch = pods
        .watch(
            &kube::api::WatchParams::default().timeout(30),
            &pods.get("p").await.unwrap().resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    standin.kubelet().preempt(NS, "p").unwrap();

    // The operator sees the condition first, then the deletion in progress.
    let terminating = pods.get("p").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    assert_eq!(
        condition(&terminating, "DisruptionTarget")
            .unwrap()
            .reason
            .as_deref(),
        Some("PreemptionByScheduler")
    );
    let first = within("condition event", watch.try_next())
        .await
        .unwrap()
        .unwrap();
    match first {
        kube::api::WatchEvent::Modified(p) => {
            assert!(condition(&p, "DisruptionTarget").is_some());
            assert!(p.metadata.deletion_timestamp.is_none());
        }
        other => panic!("expected MODIFIED, got {other:?}"),
    }

    // Deleting again keeps it terminating; the kubelet finishing the deletion removes it.
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_some());
    assert!(
        standin
            .kubelet()
            .finish_deletion(NS, "p")
            .unwrap()
            .is_none()
    );
    assert!(pods.get_opt("p").await.unwrap().is_none());

    // With auto_finish_deletion on, a graceful deletion completes by itself.
    standin.kubelet().set_auto_finish_deletion(true);
    pods.create(&PostParams::default(), &pod("q"))
        .await
        .unwrap();
    standin.kubelet().run(NS, "q").unwrap();
    pods.delete("q", &DeleteParams::default()).await.unwrap();
    within(
        "graceful deletion to finish",
        await_condition(pods.clone(), "q", |p: Option<&Pod>| p.is_none()),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn auto_mode_runs_new_pods() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    standin.kubelet().set_auto_run(true);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let running = within(
        "auto run",
        await_condition(pods.clone(), "p", |p: Option<&Pod>| {
            p.is_some_and(|p| phase(p) == "Running")
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(running.status.unwrap().start_time.is_some());
}

#[tokio::test]
async fn http_control_endpoints_drive_the_kubelet_and_report_stats() {
    let (standin, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let base = "/standin/kubelet/namespaces/default/pods/p";
    let p = control(&client, &format!("{base}/run"), json!({})).await;
    assert_eq!(p["status"]["phase"], "Running");
    let p = control(
        &client,
        &format!("{base}/fail"),
        json!({"exitCode": 2, "message": "bad data"}),
    )
    .await;
    assert_eq!(p["status"]["phase"], "Failed");
    assert_eq!(
        p["status"]["containerStatuses"][0]["state"]["terminated"]["message"],
        "bad data"
    );

    let cfg = control(&client, "/standin/kubelet/auto", json!({"autoRun": true})).await;
    assert_eq!(cfg["autoRun"], true);
    assert!(standin.kubelet().config().auto_run);

    let stats: Value = client
        .request(http::Request::get("/standin/stats").body(vec![]).unwrap())
        .await
        .unwrap();
    let create_pods = stats["counts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["verb"] == "create" && c["resource"] == "pods")
        .unwrap();
    assert_eq!(create_pods["count"], 1);
    assert!(
        stats["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["verb"] == "create")
    );

    let compacted = control(&client, "/standin/compact", json!({})).await;
    assert_eq!(
        compacted["compactedResourceVersion"],
        standin.resource_version().to_string()
    );

    let missing = client
        .request::<Value>(
            http::Request::post("/standin/kubelet/namespaces/default/pods/nope/run")
                .body(vec![])
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(matches!(missing, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn binary_prints_its_url_and_serves() {
    common::init_tracing();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-standin"))
        .args(["--port", "0", "--auto-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = within(
        "the URL line",
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let url = url.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let client = client_for(&url);
    let pods: Api<Pod> = Api::namespaced(client, NS);
    pods.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let phase = poll("the pod to run", || async {
        let p = pods.get("p").await.ok()?;
        (phase(&p) == "Running").then_some(phase(&p))
    })
    .await;
    assert_eq!(phase, "Running");
    assert_eq!(
        pods.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    child.kill().unwrap();
    child.wait().unwrap();
}
