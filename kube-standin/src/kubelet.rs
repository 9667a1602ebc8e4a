//! The kubelet (and scheduler) stand-in: moves pods through Pending, Running, Succeeded or
//! Failed, finishes graceful deletions, and disrupts pods the way GKE does. As the real
//! scheduler, it never binds a pod whose `spec.schedulingGates` is not empty. With
//! [`KubeletConfig::podman`] it runs the pods' containers for real (`kubelet/podman.rs`).

mod conditions;
mod podman;

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::Error;
use crate::clock::now_rfc3339;
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::store::{DeleteOpts, Store};
use conditions::set_condition;
pub use podman::PodmanConfig;

/// How the kubelet stand-in behaves on its own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    /// The node pods are bound to (`spec.nodeName`).
    pub node_name: String,
    /// Schedule and run every new pod right away.
    pub auto_run: bool,
    /// Complete graceful pod deletions at once (stop containers, delete with grace 0).
    /// When off, a deleted running pod stays with a `deletionTimestamp` until
    /// [`Kubelet::finish_deletion`].
    pub auto_finish_deletion: bool,
    /// Run every new pod's containers with podman (status, exit codes and deletions follow
    /// the real containers; `auto_run` is then implied). Set at start; the manual status
    /// transitions ([`Kubelet::run`], [`Kubelet::succeed`], ...) still only edit status.
    #[serde(default)]
    pub podman: Option<PodmanConfig>,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        Self {
            node_name: "standin-node".into(),
            auto_run: false,
            auto_finish_deletion: true,
            podman: None,
        }
    }
}

/// How a container ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerExit {
    pub exit_code: i32,
    /// `state.terminated.reason`; `Completed` for exit code 0 and `Error` otherwise when unset.
    pub reason: Option<String>,
    /// `state.terminated.message` (what the container wrote to its termination log).
    pub message: Option<String>,
}

impl ContainerExit {
    pub fn success() -> Self {
        Self::default()
    }

    pub fn failure(exit_code: i32, message: impl Into<String>) -> Self {
        Self {
            exit_code,
            reason: None,
            message: Some(message.into()),
        }
    }
}

/// What happens to a disrupted pod after its `DisruptionTarget` condition is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The kubelet marks it `Failed` with this `status.reason` (same status update).
    Fail { reason: String },
    /// It is deleted (gracefully, as the scheduler does when preempting).
    Delete,
}

/// A disruption: the `DisruptionTarget` condition's reason and message, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disruption {
    /// `TerminationByKubelet`, `PreemptionByScheduler`, `DeletionByTaintManager`, ...
    pub condition_reason: String,
    pub message: String,
    pub outcome: Outcome,
}

impl Disruption {
    /// Node-pressure eviction: `TerminationByKubelet`, then `Failed` with reason `Evicted`.
    pub fn eviction(message: Option<&str>) -> Self {
        Self {
            condition_reason: "TerminationByKubelet".into(),
            message: message
                .unwrap_or("The node was low on resource: memory.")
                .into(),
            outcome: Outcome::Fail {
                reason: "Evicted".into(),
            },
        }
    }

    /// GKE spot/preemptible VM reclaim via graceful node shutdown: `TerminationByKubelet`,
    /// then `Failed` with reason `Terminated`.
    pub fn node_shutdown() -> Self {
        Self {
            condition_reason: "TerminationByKubelet".into(),
            message: "Pod was terminated in response to imminent node shutdown.".into(),
            outcome: Outcome::Fail {
                reason: "Terminated".into(),
            },
        }
    }

    /// A node lost (unreachable): the taint manager's `DeletionByTaintManager`, then a
    /// graceful deletion that the unreachable kubelet never completes (turn off
    /// `auto_finish_deletion`; PodGC force-deletes such a pod once the node is gone).
    pub fn node_lost() -> Self {
        Self {
            condition_reason: "DeletionByTaintManager".into(),
            message: "Taint manager: deleting due to NoExecute taint".into(),
            outcome: Outcome::Delete,
        }
    }

    /// Scheduler preemption: `PreemptionByScheduler`, then the pod is deleted.
    pub fn scheduler_preemption() -> Self {
        Self {
            condition_reason: "PreemptionByScheduler".into(),
            message: "default-scheduler: preempting to accommodate a higher priority pod".into(),
            outcome: Outcome::Delete,
        }
    }
}

/// Drives pods. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct Kubelet {
    store: Arc<Store>,
    pods: ResourceType,
    config: Arc<Mutex<KubeletConfig>>,
    wake: Arc<Notify>,
    podman: Option<Arc<podman::Runtime>>,
}

/// The scheduler's refusal to bind a pod that still has scheduling gates.
fn refuse_gated(pod: &Value) -> Result<(), ApiError> {
    if crate::pods::gated(pod) {
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(ApiError::bad_request(format!(
            "pod {name} has non-empty .spec.schedulingGates: {:?}",
            crate::pods::scheduling_gates(pod)
        )));
    }
    Ok(())
}

fn containers(pod: &Value) -> Vec<(String, String)> {
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or_default().to_string(),
                        c["image"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets every container's status with `state` (and `ready`/`started`), keeping restart counts.
fn set_container_states(pod: &mut Value, state: &Value, running: bool, restarted: bool) {
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let previous = pod
        .pointer("/status/containerStatuses")
        .cloned()
        .unwrap_or(json!([]));
    let statuses: Vec<Value> = containers(pod)
        .into_iter()
        .map(|(name, image)| {
            let prev = previous
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == name.as_str()))
                .cloned()
                .unwrap_or(json!({}));
            let restarts = prev["restartCount"].as_i64().unwrap_or(0) + i64::from(restarted);
            let last_state = if restarted {
                json!({"terminated": prev.pointer("/state/terminated").cloned().unwrap_or(json!({}))})
            } else {
                prev.get("lastState").cloned().unwrap_or(json!({}))
            };
            json!({
                "name": name,
                "image": image,
                "imageID": format!("{image}@sha256:standin"),
                "containerID": format!("containerd://{uid}-{name}-{restarts}"),
                "ready": running,
                "started": running,
                "restartCount": restarts,
                "state": state,
                "lastState": last_state,
            })
        })
        .collect();
    pod["status"]["containerStatuses"] = json!(statuses);
}

/// The kubelet ending a pod on its own account: `Failed` with `reason` and `message`, its
/// containers killed (137) if they ran.
fn fail_pod(pod: &mut Value, reason: &str, message: &str) {
    let started = running_since(pod);
    let was_running = pod.pointer("/status/phase") == Some(&json!("Running"));
    let status = &mut pod["status"];
    status["phase"] = json!("Failed");
    status["reason"] = json!(reason);
    status["message"] = json!(message);
    set_condition(status, "ContainersReady", "False", Some("PodFailed"), None);
    set_condition(status, "Ready", "False", Some("PodFailed"), None);
    if was_running {
        let terminated = json!({"terminated": {
            "exitCode": 137,
            "reason": "Error",
            "startedAt": started,
            "finishedAt": now_rfc3339(),
        }});
        set_container_states(pod, &terminated, false, false);
    }
}

fn running_since(pod: &Value) -> String {
    pod.pointer("/status/containerStatuses/0/state/running/startedAt")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(now_rfc3339)
}

impl Kubelet {
    pub(crate) fn new(store: Arc<Store>, config: KubeletConfig) -> Self {
        let pods = store
            .registry
            .find("", "v1", "pods")
            .cloned()
            .unwrap_or_else(crate::resources::pod_type);
        let podman = config
            .podman
            .as_ref()
            .map(|c| Arc::new(podman::Runtime::new(c)));
        Self {
            store,
            pods,
            config: Arc::new(Mutex::new(config)),
            wake: Arc::new(Notify::new()),
            podman,
        }
    }

    pub fn config(&self) -> KubeletConfig {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_auto_run(&self, on: bool) {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .auto_run = on;
        self.wake.notify_one();
    }

    /// The log of a container run by the podman runtime (restart number `restart`), as text.
    pub fn container_log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        restart: u32,
    ) -> Option<String> {
        self.podman.as_ref()?.log(ns, pod, container, restart)
    }

    pub fn set_auto_finish_deletion(&self, on: bool) {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .auto_finish_deletion = on;
        self.wake.notify_one();
    }

    fn update(
        &self,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, Error> {
        Ok(self.store.update_internal(&self.pods, ns, name, f)?)
    }

    /// Binds `pod` to `node` (unless bound), as the scheduler does; a gated pod cannot be.
    fn bind(pod: &mut Value, node: &str) -> Result<(), ApiError> {
        refuse_gated(pod)?;
        let bound = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !bound {
            pod["spec"]["nodeName"] = json!(node);
        }
        if !pod["status"].is_object() {
            pod["status"] = json!({"phase": "Pending"});
        }
        let status = &mut pod["status"];
        set_condition(status, "PodScheduled", "True", None, None);
        status["hostIP"] = json!("10.0.0.1");
        status["hostIPs"] = json!([{"ip": "10.0.0.1"}]);
        Ok(())
    }

    /// The scheduler binds the pod to the node; containers are being created.
    pub fn schedule(&self, ns: &str, name: &str) -> Result<Value, Error> {
        self.pending(ns, name, "ContainerCreating", "")
    }

    /// The scheduler found no node: `Pending`, unbound, `PodScheduled=False` with reason
    /// `Unschedulable` and the scheduler's `message` (e.g. `0/3 nodes are available: 3
    /// Insufficient nvidia.com/gpu.`).
    pub fn unschedulable(&self, ns: &str, name: &str, message: &str) -> Result<Value, Error> {
        self.update(ns, name, |pod| {
            refuse_gated(pod)?;
            if !pod["status"].is_object() {
                pod["status"] = json!({"phase": "Pending"});
            }
            let status = &mut pod["status"];
            status["phase"] = json!("Pending");
            set_condition(
                status,
                "PodScheduled",
                "False",
                Some("Unschedulable"),
                Some(message),
            );
            Ok(())
        })
    }

    /// Bound and `Pending`, containers waiting with `reason` (e.g. `ImagePullBackOff`).
    pub fn pending(
        &self,
        ns: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> Result<Value, Error> {
        let node = self.config().node_name;
        self.update(ns, name, |pod| {
            Self::bind(pod, &node)?;
            let status = &mut pod["status"];
            status["phase"] = json!("Pending");
            set_condition(status, "Initialized", "True", None, None);
            set_condition(
                status,
                "ContainersReady",
                "False",
                Some("ContainersNotReady"),
                None,
            );
            set_condition(status, "Ready", "False", Some("ContainersNotReady"), None);
            let mut waiting = json!({"reason": reason});
            if !message.is_empty() {
                waiting["message"] = json!(message);
            }
            set_container_states(pod, &json!({"waiting": waiting}), false, false);
            Ok(())
        })
    }

    /// `Running`: bound, `startTime` set, containers running and ready.
    pub fn run(&self, ns: &str, name: &str) -> Result<Value, Error> {
        let node = self.config().node_name;
        self.update(ns, name, |pod| {
            Self::bind(pod, &node)?;
            let now = now_rfc3339();
            let status = &mut pod["status"];
            status["phase"] = json!("Running");
            if status.get("startTime").is_none_or(Value::is_null) {
                status["startTime"] = json!(now);
            }
            status["podIP"] = json!("10.1.0.2");
            status["podIPs"] = json!([{"ip": "10.1.0.2"}]);
            set_condition(status, "PodReadyToStartContainers", "True", None, None);
            set_condition(status, "Initialized", "True", None, None);
            set_condition(status, "ContainersReady", "True", None, None);
            set_condition(status, "Ready", "True", None, None);
            set_container_states(pod, &json!({"running": {"startedAt": now}}), true, false);
            Ok(())
        })
    }

    /// Every container exits with `exit`. Under `restartPolicy: Never` (or `OnFailure` with
    /// exit code 0) the pod ends `Succeeded` or `Failed`; otherwise the containers restart
    /// (`restartCount` + 1, `CrashLoopBackOff`).
    pub fn terminate(&self, ns: &str, name: &str, exit: ContainerExit) -> Result<Value, Error> {
        let node = self.config().node_name;
        self.update(ns, name, |pod| {
            Self::bind(pod, &node)?;
            let policy = pod.pointer("/spec/restartPolicy").and_then(Value::as_str).unwrap_or("Always").to_string();
            let terminal = policy == "Never" || (policy == "OnFailure" && exit.exit_code == 0);
            let started = running_since(pod);
            let now = now_rfc3339();
            let status = &mut pod["status"];
            if status.get("startTime").is_none_or(Value::is_null) {
                status["startTime"] = json!(started);
            }
            let reason = exit.reason.clone().unwrap_or_else(|| {
                if exit.exit_code == 0 { "Completed" } else { "Error" }.to_string()
            });
            let mut terminated = json!({
                "exitCode": exit.exit_code,
                "reason": reason,
                "startedAt": started,
                "finishedAt": now,
            });
            if let Some(m) = &exit.message {
                terminated["message"] = json!(m);
            }
            if terminal {
                status["phase"] = json!(if exit.exit_code == 0 { "Succeeded" } else { "Failed" });
                set_condition(status, "PodReadyToStartContainers", "False", None, None);
                set_condition(status, "ContainersReady", "False", Some("PodCompleted"), None);
                set_condition(status, "Ready", "False", Some("PodCompleted"), None);
                set_container_states(pod, &json!({"terminated": terminated}), false, false);
            } else {
                status["phase"] = json!("Running");
                set_condition(status, "ContainersReady", "False", Some("ContainersNotReady"), None);
                set_condition(status, "Ready", "False", Some("ContainersNotReady"), None);
                // Record the exit as the current state first, so it becomes lastState.
                set_container_states(pod, &json!({"terminated": terminated}), false, false);
                let waiting = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}});
                set_container_states(pod, &waiting, false, true);
            }
            Ok(())
        })
    }

    /// Convenience: every container exits 0.
    pub fn succeed(&self, ns: &str, name: &str) -> Result<Value, Error> {
        self.terminate(ns, name, ContainerExit::success())
    }

    /// Convenience: every container exits `exit_code` with `message` as termination message.
    pub fn fail(
        &self,
        ns: &str,
        name: &str,
        exit_code: i32,
        message: &str,
    ) -> Result<Value, Error> {
        self.terminate(ns, name, ContainerExit::failure(exit_code, message))
    }

    /// Sets the `DisruptionTarget` condition, then fails or deletes the pod.
    pub fn disrupt(&self, ns: &str, name: &str, d: Disruption) -> Result<Value, Error> {
        let pod = self.update(ns, name, |pod| {
            set_condition(
                &mut pod["status"],
                "DisruptionTarget",
                "True",
                Some(&d.condition_reason),
                Some(&d.message),
            );
            if let Outcome::Fail { reason } = &d.outcome {
                fail_pod(pod, reason, &d.message);
            }
            Ok(())
        })?;
        match d.outcome {
            Outcome::Fail { .. } => Ok(pod),
            Outcome::Delete => {
                Ok(self
                    .store
                    .delete(&self.pods, ns, name, &DeleteOpts::default())?)
            }
        }
    }

    /// An eviction for outgrowing the pod's own storage (an emptyDir's `sizeLimit`, its
    /// ephemeral-storage limit): the eviction manager fails the pod with reason `Evicted` and
    /// its message, and sets no `DisruptionTarget`, since the pod, not the node, is at fault.
    pub fn evict_over_limit(&self, ns: &str, name: &str, message: &str) -> Result<Value, Error> {
        self.update(ns, name, |pod| {
            fail_pod(pod, "Evicted", message);
            Ok(())
        })
    }

    /// Node-pressure eviction (see [`Disruption::eviction`]).
    pub fn evict(&self, ns: &str, name: &str) -> Result<Value, Error> {
        self.disrupt(ns, name, Disruption::eviction(None))
    }

    /// GKE spot VM reclaim (see [`Disruption::node_shutdown`]).
    pub fn node_shutdown(&self, ns: &str, name: &str) -> Result<Value, Error> {
        self.disrupt(ns, name, Disruption::node_shutdown())
    }

    /// Scheduler preemption (see [`Disruption::scheduler_preemption`]).
    pub fn preempt(&self, ns: &str, name: &str) -> Result<Value, Error> {
        self.disrupt(ns, name, Disruption::scheduler_preemption())
    }

    /// Completes a graceful deletion: running containers stop (exit 143), and the pod is
    /// deleted with grace period 0. Returns the pod if finalizers still hold it.
    pub fn finish_deletion(&self, ns: &str, name: &str) -> Result<Option<Value>, Error> {
        let pod = self.store.get(&self.pods, ns, name)?;
        let deleting = pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        if !deleting {
            return Err(
                ApiError::bad_request(format!("pod {ns}/{name} is not being deleted")).into(),
            );
        }
        if pod.pointer("/status/phase") == Some(&json!("Running")) {
            self.update(ns, name, |pod| {
                let started = running_since(pod);
                let terminated = json!({"terminated": {
                    "exitCode": 143,
                    "reason": "Error",
                    "startedAt": started,
                    "finishedAt": now_rfc3339(),
                }});
                set_container_states(pod, &terminated, false, false);
                let status = &mut pod["status"];
                // As the kubelet does (Kubernetes 1.27+): a deleted pod reaches a terminal
                // phase before it goes, which is what finalizers holding it show.
                status["phase"] = json!("Failed");
                set_condition(status, "PodReadyToStartContainers", "False", None, None);
                set_condition(
                    status,
                    "ContainersReady",
                    "False",
                    Some("PodCompleted"),
                    None,
                );
                set_condition(status, "Ready", "False", Some("PodCompleted"), None);
                Ok(())
            })?;
        }
        let opts = DeleteOpts {
            grace_period_seconds: Some(0),
            ..DeleteOpts::default()
        };
        self.store.delete(&self.pods, ns, name, &opts)?;
        Ok(self.store.get(&self.pods, ns, name).ok())
    }

    /// The background loop of the auto modes.
    pub(crate) fn spawn_auto(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let mut changes = self.store.subscribe();
        tokio::spawn(async move {
            loop {
                changes.borrow_and_update();
                let cfg = this.config();
                let pods = this.store.all(&this.pods);
                if let Some(rt) = &this.podman {
                    let node: Arc<dyn podman::Node> = Arc::new(this.clone());
                    rt.sync(&node, &pods);
                }
                if cfg.auto_run || cfg.auto_finish_deletion {
                    for pod in &pods {
                        if !this.podman.as_ref().is_some_and(|rt| rt.manages(pod)) {
                            this.auto_step(&cfg, pod);
                        }
                    }
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = this.wake.notified() => {}
                }
            }
        })
    }

    fn auto_step(&self, cfg: &KubeletConfig, pod: &Value) {
        let s = |p: &str| pod.pointer(p).and_then(Value::as_str).unwrap_or_default();
        let (ns, name) = (s("/metadata/namespace"), s("/metadata/name"));
        let deleting = pod
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null());
        let grace_pending = pod
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0);
        let result = if deleting {
            if cfg.auto_finish_deletion && grace_pending {
                self.finish_deletion(ns, name).map(|_| ())
            } else {
                Ok(())
            }
        } else if cfg.auto_run
            && s("/spec/nodeName").is_empty()
            && s("/status/phase") == "Pending"
            && !crate::pods::gated(pod)
        {
            self.run(ns, name).map(|_| ())
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::debug!(%ns, %name, error = %e, "kubelet stand-in step failed");
        }
    }
}

impl podman::Node for Kubelet {
    fn update_pod(
        &self,
        ns: &str,
        name: &str,
        f: &mut dyn FnMut(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, Error> {
        self.update(ns, name, f)
    }

    fn schedule(&self, ns: &str, name: &str) -> Result<Value, Error> {
        Kubelet::schedule(self, ns, name)
    }

    fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        self.store.get(&self.pods, ns, name).ok()
    }

    fn delete_pod(&self, ns: &str, name: &str, opts: &DeleteOpts) -> Result<(), ApiError> {
        self.store.delete(&self.pods, ns, name, opts).map(|_| ())
    }
}
