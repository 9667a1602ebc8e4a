//! Kueue's plain-Pod integration in the small, for end-to-end tests: its pod webhook (see
//! [`PodWebhook::kueue`](crate::PodWebhook::kueue)) and one ClusterQueue whose quota is a
//! number of pods, with the rules of Kueue's pod controller
//! (`pkg/controller/jobs/pod/pod_controller.go`) that decide when quota is taken and given
//! back:
//!
//! - A workload is a pod group (label `kueue.x-k8s.io/pod-group-name`, size from the
//!   annotation `kueue.x-k8s.io/pod-group-total-count`) or a single pod. It is created once as
//!   many runnable pods exist as the group counts (a pod is runnable unless Failed, or deleted
//!   before it was bound); until then a pod that stops being runnable loses Kueue's finalizer.
//! - Workloads are admitted oldest first while the quota has room: admission removes the
//!   `kueue.x-k8s.io/admission` scheduling gate from their pods.
//! - An admitted group is finished when all its pods Succeeded, or when every pod is
//!   Succeeded or Failed and one of them is annotated `kueue.x-k8s.io/retriable-in-group:
//!   "false"`; a single pod when it is Succeeded or Failed. Only then is its quota given back
//!   and the `kueue.x-k8s.io/managed` finalizer taken off all its pods (so deleted ones go).
//!   A group with a failed pod and no such annotation waits for replacement pods: it keeps its
//!   quota, and its deleted pods stay, terminating, under the finalizer.
//!
//! Eviction (preemption by another workload) is left to tests, which set `TerminationTarget`
//! and delete the pods as Kueue does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::resources::ResourceType;
use crate::store::Store;

const MANAGED_LABEL: &str = "kueue.x-k8s.io/managed";
const FINALIZER: &str = "kueue.x-k8s.io/managed";
const GATE: &str = "kueue.x-k8s.io/admission";
const GROUP_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
const GROUP_COUNT: &str = "kueue.x-k8s.io/pod-group-total-count";
const RETRIABLE_IN_GROUP: &str = "kueue.x-k8s.io/retriable-in-group";

/// A workload: namespace and group name, or namespace and `pod/<name>` for a single pod.
type WorkloadKey = (String, String);

#[derive(Default)]
struct State {
    /// Pods the ClusterQueue admits at once.
    quota: u32,
    /// Admitted workloads and the pods of quota each holds.
    admitted: BTreeMap<WorkloadKey, u32>,
}

/// The Kueue stand-in of a [`StandIn`](crate::StandIn) (see the module docs).
#[derive(Clone)]
pub struct Kueue {
    store: Arc<Store>,
    pods: ResourceType,
    state: Arc<Mutex<State>>,
}

fn text<'a>(pod: &'a Value, pointer: &str) -> &'a str {
    pod.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn phase(pod: &Value) -> &str {
    text(pod, "/status/phase")
}

fn terminal(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

fn label<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Runnable: it may still run or has succeeded (Kueue's "runnable or succeeded").
fn runnable(pod: &Value) -> bool {
    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let bound = !text(pod, "/spec/nodeName").is_empty();
    // Deleted before it was bound, it never runs.
    phase(pod) != "Failed" && (bound || !deleting)
}

fn has_finalizer(pod: &Value) -> bool {
    pod.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
}

impl Kueue {
    pub(crate) fn new(store: Arc<Store>, quota: u32) -> Self {
        let pods = store
            .registry
            .find("", "v1", "pods")
            .cloned()
            .unwrap_or_else(crate::resources::pod_type);
        Self {
            store,
            pods,
            state: Arc::new(Mutex::new(State {
                quota,
                ..State::default()
            })),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the ClusterQueue's quota (pods admitted at once).
    pub fn set_quota(&self, pods: u32) {
        self.state().quota = pods;
        self.sync();
    }

    /// The admitted workloads: group names, or `pod/<name>` for single pods.
    pub fn admitted(&self) -> Vec<String> {
        self.state()
            .admitted
            .keys()
            .map(|(_, w)| w.clone())
            .collect()
    }

    /// Runs the controller until the stand-in stops.
    pub(crate) fn spawn(&self) -> JoinHandle<()> {
        let this = self.clone();
        let mut changes = self.store.subscribe();
        tokio::spawn(async move {
            loop {
                changes.borrow_and_update();
                this.sync();
                if changes.changed().await.is_err() {
                    break;
                }
            }
        })
    }

    /// One pass over the pods Kueue manages.
    fn sync(&self) {
        let mut workloads: BTreeMap<WorkloadKey, (u32, Vec<Value>)> = BTreeMap::new();
        for pod in self.store.all(&self.pods) {
            if label(&pod, MANAGED_LABEL) != Some("true") {
                continue;
            }
            let ns = text(&pod, "/metadata/namespace").to_string();
            let (name, size) = match label(&pod, GROUP_LABEL) {
                Some(group) => (
                    group.to_string(),
                    annotation(&pod, GROUP_COUNT)
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(1),
                ),
                None => (format!("pod/{}", text(&pod, "/metadata/name")), 1),
            };
            workloads
                .entry((ns, name))
                .or_insert_with(|| (size, Vec::new()))
                .1
                .push(pod);
        }
        let mut state = self.state();
        // Workloads whose pods are all gone are deleted.
        state.admitted.retain(|k, _| workloads.contains_key(k));
        let mut waiting = Vec::new();
        for (key, (size, pods)) in &workloads {
            if state.admitted.contains_key(key) {
                if self.finished(key, *size, pods) {
                    for pod in pods {
                        self.release(pod);
                    }
                    state.admitted.remove(key);
                }
                continue;
            }
            // No workload yet: a pod that can no longer run is let go at once.
            for pod in pods.iter().filter(|p| !runnable(p)) {
                self.release(pod);
            }
            if pods.iter().filter(|p| runnable(p)).count() >= *size as usize {
                let created = pods
                    .iter()
                    .map(|p| text(p, "/metadata/creationTimestamp").to_string())
                    .min()
                    .unwrap_or_default();
                waiting.push((created, key.clone(), *size));
            }
        }
        // Oldest first, while the quota has room.
        waiting.sort();
        for (_, key, size) in waiting {
            let used: u32 = state.admitted.values().sum();
            if used + size > state.quota {
                break;
            }
            for pod in &workloads[&key].1 {
                self.ungate(pod);
            }
            state.admitted.insert(key, size);
        }
    }

    /// Whether an admitted workload is over: its quota goes back.
    fn finished(&self, key: &WorkloadKey, size: u32, pods: &[Value]) -> bool {
        if key.1.starts_with("pod/") {
            return pods.iter().all(terminal);
        }
        let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count();
        let unretriable = pods
            .iter()
            .any(|p| annotation(p, RETRIABLE_IN_GROUP) == Some("false"));
        succeeded >= size as usize || (unretriable && pods.iter().all(terminal))
    }

    /// Takes Kueue's finalizer off `pod` (a deleted pod then goes).
    fn release(&self, pod: &Value) {
        if !has_finalizer(pod) {
            return;
        }
        let (ns, name) = (
            text(pod, "/metadata/namespace"),
            text(pod, "/metadata/name"),
        );
        let result = self.store.update_internal(&self.pods, ns, name, |p| {
            if let Some(list) = p["metadata"]["finalizers"].as_array_mut() {
                list.retain(|f| f != FINALIZER);
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::debug!(%ns, %name, error = %e, "kueue stand-in: finalizer not removed");
        }
    }

    /// Admits `pod`: the admission gate goes.
    fn ungate(&self, pod: &Value) {
        let gated = crate::pods::scheduling_gates(pod).iter().any(|g| g == GATE);
        if !gated {
            return;
        }
        let (ns, name) = (
            text(pod, "/metadata/namespace"),
            text(pod, "/metadata/name"),
        );
        let result = self.store.update_internal(&self.pods, ns, name, |p| {
            let spec = p["spec"].as_object_mut();
            if let Some(spec) = spec {
                let empty = spec
                    .get_mut("schedulingGates")
                    .and_then(Value::as_array_mut)
                    .map(|gates| {
                        gates.retain(|g| g["name"] != GATE);
                        gates.is_empty()
                    });
                if empty == Some(true) {
                    spec.remove("schedulingGates");
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            tracing::debug!(%ns, %name, error = %e, "kueue stand-in: gate not removed");
        }
    }
}
