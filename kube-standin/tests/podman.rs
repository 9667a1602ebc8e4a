//! The kubelet stand-in's podman runtime with real containers: the pod spec's image, command,
//! args, env, security context and emptyDir volumes, the host's loopback, exit codes and
//! termination messages as container status, and graceful deletion (SIGTERM, then SIGKILL
//! after the grace period).
//!
//! These need podman and a local image with bash (`images/bases.sh` makes
//! `localhost/mtl-base/debian:bookworm`; `$MTL_TEST_IMAGE` names another), so they are
//! ignored by `cargo test` and run by `make image-test`:
//!     cargo test -p kube-standin --test podman -- --ignored

mod common;

use std::future::Future;
use std::time::Duration;

use common::{NS, client_for, init_tracing};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_standin::{KubeletConfig, PodmanConfig, StandIn};
use mtl_test_support::{Patience, eventually_with};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Containers start in seconds, but the machine may be busy.
const DEADLINE: Duration = Duration::from_secs(120);

fn image() -> String {
    std::env::var("MTL_TEST_IMAGE").unwrap_or_else(|_| "localhost/mtl-base/debian:bookworm".into())
}

async fn start(extra_env: &[(&str, &str)]) -> (StandIn, Api<Pod>) {
    init_tracing();
    let standin = StandIn::builder()
        .kubelet(KubeletConfig {
            podman: Some(PodmanConfig {
                extra_env: extra_env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..PodmanConfig::default()
            }),
            ..KubeletConfig::default()
        })
        .start()
        .await
        .expect("stand-in starts");
    let pods = Api::namespaced(client_for(&standin.url()), NS);
    (standin, pods)
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let patience = Patience {
        deadline: DEADLINE,
        every: Duration::from_millis(100),
    };
    eventually_with(what, patience, String::new, check).await
}

async fn pod_until(pods: &Api<Pod>, name: &str, what: &str, pred: impl Fn(&Pod) -> bool) -> Pod {
    eventually(what, || async {
        pods.get_opt(name).await.ok().flatten().filter(|p| pred(p))
    })
    .await
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn container<'a>(p: &'a Pod, name: &str) -> &'a ContainerStatus {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == name))
        .unwrap_or_else(|| panic!("no status of container {name}: {p:?}"))
}

fn exit(p: &Pod, name: &str) -> (i32, String) {
    let t = container(p, name)
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("container {name} has not terminated: {p:?}"));
    (t.exit_code, t.message.unwrap_or_default())
}

async fn create(pods: &Api<Pod>, pod: serde_json::Value) {
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).expect("pod"),
    )
    .await
    .expect("pod created");
}

#[tokio::test]
#[ignore = "needs podman and a local image: make image-test"]
async fn containers_run_as_the_pod_spec_says_and_their_exits_become_status() {
    let (standin, pods) = start(&[("FROM_NODE", "node-env")]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let writer = format!(
        r#"echo "$GREETING $FROM_NODE $POD_NAME uid=$(id -u) gid=$(id -g) groups=$(id -G) host=$(hostname)" > /shared/out
        if touch /written 2>/dev/null; then echo root-writable >> /shared/out; else echo root-read-only >> /shared/out; fi
        exec 3<>/dev/tcp/127.0.0.1/{port}; echo hello-from-the-pod >&3; exec 3>&-
        echo "wrote /shared/out" > /dev/termination-log
        exit 3"#
    );
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "work"},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
                "volumes": [{"name": "shared", "emptyDir": {}}],
                "containers": [
                    {"name": "writer", "image": image(), "command": ["bash", "-c"], "args": [writer],
                     "env": [{"name": "GREETING", "value": "hi"},
                             {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                     "securityContext": {"readOnlyRootFilesystem": true},
                     "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                    {"name": "reader", "image": image(), "command": ["bash", "-c",
                        "for i in $(seq 600); do [ -s /shared/out ] && grep -q root- /shared/out && break; sleep 0.1; done; cat /shared/out > /dev/termination-log"],
                     "volumeMounts": [{"name": "shared", "mountPath": "/shared", "readOnly": true}]},
                    {"name": "logger", "image": image(), "command": ["bash", "-c",
                        "for i in 1 2 3; do echo line $i; done; echo the last words >&2; exit 1"],
                     "terminationMessagePolicy": "FallbackToLogsOnError"}
                ]
            }
        }),
    )
    .await;

    // The container reaches a server on the host's loopback.
    let (mut conn, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .expect("the writer connects within the deadline")
        .unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).await.unwrap();
    assert_eq!(got.trim(), "hello-from-the-pod");

    let done = pod_until(&pods, "work", "the pod to fail", |p| phase(p) == "Failed").await;
    assert_eq!(exit(&done, "writer"), (3, "wrote /shared/out\n".into()));
    let (code, shared) = exit(&done, "reader");
    assert_eq!(code, 0, "{done:?}");
    assert_eq!(
        shared,
        "hi node-env work uid=1000 gid=1000 groups=1000 2000 host=work\nroot-read-only\n"
    );
    let (code, message) = exit(&done, "logger");
    assert_eq!(code, 1);
    assert_eq!(message, "line 1\nline 2\nline 3\nthe last words");
    let writer = container(&done, "writer");
    assert!(
        writer
            .container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("podman://")),
        "{writer:?}"
    );
    assert!(writer.image_id.starts_with("sha256:"), "{writer:?}");
    let status = done.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        standin
            .kubelet()
            .container_log(NS, "work", "logger", 0)
            .as_deref(),
        Some("line 1\nline 2\nline 3\nthe last words\n")
    );
}

#[tokio::test]
#[ignore = "needs podman and a local image: make image-test"]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let (standin, pods) = start(&[]).await;
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            // The finalizer keeps the pod, with its last status, after the kubelet is done.
            "metadata": {"name": "stop-me", "finalizers": ["standin.test/keep"]},
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 2,
                "containers": [
                    {"name": "graceful", "image": image(), "command": ["bash", "-c",
                        "trap 'echo got SIGTERM > /dev/termination-log; exit 42' TERM; echo ready; while :; do sleep 0.1; done"]},
                    {"name": "stubborn", "image": image(), "command": ["bash", "-c",
                        "trap '' TERM; echo ready; while :; do sleep 0.1; done"]}
                ]
            }
        }),
    )
    .await;
    pod_until(&pods, "stop-me", "both containers running", |p| {
        phase(p) == "Running"
    })
    .await;
    for c in ["graceful", "stubborn"] {
        eventually(&format!("{c} to install its trap"), || async {
            standin
                .kubelet()
                .container_log(NS, "stop-me", c, 0)
                .filter(|l| l.contains("ready"))
        })
        .await;
    }

    pods.delete("stop-me", &DeleteParams::default())
        .await
        .unwrap();
    let gone = pod_until(&pods, "stop-me", "both containers to end", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
            })
    })
    .await;
    assert_eq!(exit(&gone, "graceful"), (42, "got SIGTERM\n".into()));
    assert_eq!(
        exit(&gone, "stubborn").0,
        137,
        "SIGKILL after the grace period"
    );
    assert_eq!(phase(&gone), "Failed");
    // The kubelet finished the deletion; only the finalizer holds the pod.
    let held = pod_until(&pods, "stop-me", "the deletion to finish", |p| {
        p.metadata.deletion_grace_period_seconds == Some(0)
    })
    .await;
    assert!(held.metadata.deletion_timestamp.is_some());
    pods.patch(
        "stop-me",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the pod to go", || async {
        pods.get_opt("stop-me")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
#[ignore = "needs podman and a local image: make image-test"]
async fn a_failed_container_restarts_under_on_failure() {
    let (_standin, pods) = start(&[]).await;
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "flaky"},
            "spec": {
                "restartPolicy": "OnFailure",
                "volumes": [{"name": "state", "emptyDir": {}}],
                "containers": [{"name": "once", "image": image(), "command": ["bash", "-c",
                    "if [ -e /state/tried ]; then echo second > /dev/termination-log; exit 0; fi; touch /state/tried; exit 7"],
                    "volumeMounts": [{"name": "state", "mountPath": "/state"}]}]
            }
        }),
    )
    .await;
    let done = pod_until(&pods, "flaky", "the retried pod to succeed", |p| {
        phase(p) == "Succeeded"
    })
    .await;
    let c = container(&done, "once");
    assert_eq!(c.restart_count, 1);
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the first run's exit");
    assert_eq!(last.exit_code, 7);
    assert_eq!(exit(&done, "once"), (0, "second\n".into()));
}

#[tokio::test]
#[ignore = "needs podman and a local image: make image-test"]
async fn an_image_that_is_not_there_leaves_the_pod_pending() {
    let (_standin, pods) = start(&[]).await;
    create(
        &pods,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "no-image"},
            "spec": {"containers": [{"name": "c", "image": "localhost/mtl-no-such-image:1",
                                      "imagePullPolicy": "Never"}]}
        }),
    )
    .await;
    let p = pod_until(&pods, "no-image", "the image error", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .is_some_and(|r| r == "ErrImageNeverPull")
    })
    .await;
    assert_eq!(phase(&p), "Pending");
    // Deleting it needs no container to stop.
    pods.delete("no-image", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod to go", || async {
        pods.get_opt("no-image")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
