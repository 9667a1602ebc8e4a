//! Pod-specific server behaviour: defaulting, mutating admission webhooks, the initial
//! status, QoS class, scheduling gates, the spec fields an update may change, and the
//! graceful deletion period.

use serde_json::{Value, json};

use crate::admission::field_error::{ErrorType, FieldError};
use crate::error::ApiError;
use crate::resources::ResourceType;

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(value);
    }
}

fn default_container(c: &mut Value) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let last = image.rsplit('/').next().unwrap_or_default();
    let tag = if last.contains('@') {
        Some("digest")
    } else {
        last.split_once(':').map(|(_, t)| t)
    };
    let policy = match tag {
        None | Some("latest") => "Always",
        Some(_) => "IfNotPresent",
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "resources", json!({}));
    // Requests default to limits.
    if let Some(limits) = c.pointer("/resources/limits").cloned()
        && let (Some(limits), Some(res)) = (limits.as_object(), c["resources"].as_object_mut())
    {
        let requests = res.entry("requests").or_insert_with(|| json!({}));
        for (k, v) in limits {
            set_default(requests, k, v.clone());
        }
    }
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// The scheme defaults the real server applies on every write of a pod spec.
pub(crate) fn scheme_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set_default(spec, "priority", json!(0));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(default_container);
        }
    }
}

/// Admission defaults applied on create only (service account, default toleration seconds).
pub(crate) fn admission_defaults(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    let tolerations = spec
        .as_object_mut()
        .map(|m| m.entry("tolerations").or_insert_with(|| json!([])));
    if let Some(Value::Array(ts)) = tolerations {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            if !ts.iter().any(|t| t["key"] == key) {
                ts.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
}

/// `status.qosClass` as the real server computes it (quantities compared textually).
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for r in ["cpu", "memory"] {
            let req = c.pointer(&format!("/resources/requests/{r}"));
            let lim = c.pointer(&format!("/resources/limits/{r}"));
            any |= req.is_some() || lim.is_some();
            guaranteed &= lim.is_some() && (req.is_none() || req == lim);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// A mutating admission webhook on pod creation, as a test registers it with
/// [`StandIn::add_pod_webhook`](crate::StandIn::add_pod_webhook): pods created with the
/// label `selector` get `labels`, `scheduling_gates` and `finalizers` added before they are
/// stored, as Kueue's pod webhook does for pods of a queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodWebhook {
    /// The label key a pod must carry (any value).
    pub selector: String,
    pub labels: Vec<(String, String)>,
    pub scheduling_gates: Vec<String>,
    pub finalizers: Vec<String>,
}

impl PodWebhook {
    /// Kueue's plain-Pod webhook: pods labelled `kueue.x-k8s.io/queue-name` get the label
    /// `kueue.x-k8s.io/managed: "true"`, the scheduling gate `kueue.x-k8s.io/admission`
    /// (removed when Kueue admits the workload) and the finalizer `kueue.x-k8s.io/managed`
    /// (removed by Kueue once the pod has finished).
    pub fn kueue() -> Self {
        Self {
            selector: "kueue.x-k8s.io/queue-name".into(),
            labels: vec![("kueue.x-k8s.io/managed".into(), "true".into())],
            scheduling_gates: vec!["kueue.x-k8s.io/admission".into()],
            finalizers: vec!["kueue.x-k8s.io/managed".into()],
        }
    }

    /// Mutates `pod` when it carries the selector label.
    pub(crate) fn admit(&self, pod: &mut Value) {
        let selected = pod
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .is_some_and(|l| l.contains_key(&self.selector));
        if !selected {
            return;
        }
        if !pod["metadata"]["labels"].is_object() {
            pod["metadata"]["labels"] = json!({});
        }
        for (k, v) in &self.labels {
            pod["metadata"]["labels"][k] = json!(v);
        }
        /// Appends `item` to the list at `list` unless it holds it (by `key`, when given).
        fn push(list: &mut Value, item: Value, key: Option<&str>) {
            if !list.is_array() {
                *list = json!([]);
            }
            if let Some(items) = list.as_array_mut() {
                let present = items.iter().any(|i| match key {
                    Some(k) => i[k] == item[k],
                    None => *i == item,
                });
                if !present {
                    items.push(item);
                }
            }
        }
        for f in &self.finalizers {
            push(&mut pod["metadata"]["finalizers"], json!(f), None);
        }
        if pod["spec"].is_object() {
            for g in &self.scheduling_gates {
                push(
                    &mut pod["spec"]["schedulingGates"],
                    json!({"name": g}),
                    Some("name"),
                );
            }
        }
    }
}

/// The names in `spec.schedulingGates`.
pub(crate) fn scheduling_gates(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/schedulingGates")
        .and_then(Value::as_array)
        .map(|gates| {
            gates
                .iter()
                .filter_map(|g| g["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A pod the scheduler leaves alone: its `spec.schedulingGates` is not empty.
pub(crate) fn gated(pod: &Value) -> bool {
    !scheduling_gates(pod).is_empty()
}

/// The condition the real server sets on a pod created with scheduling gates.
pub(crate) const SCHEDULING_GATED: &str = "SchedulingGated";
const SCHEDULING_GATED_MESSAGE: &str = "Scheduling is blocked due to non-empty scheduling gates";

/// Defaults a new pod and resets its status, like the real server's create strategy (which
/// marks a gated pod `PodScheduled=False`, reason `SchedulingGated`).
pub(crate) fn prepare_create(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        scheme_defaults(spec);
        admission_defaults(spec);
    }
    let qos = qos_class(&obj["spec"]);
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
    if gated(obj) {
        obj["status"]["conditions"] = json!([{
            "type": "PodScheduled",
            "status": "False",
            "lastProbeTime": null,
            "lastTransitionTime": crate::clock::now_rfc3339(),
            "reason": SCHEDULING_GATED,
            "message": SCHEDULING_GATED_MESSAGE,
        }]);
    }
}

const FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Rejects changes to immutable pod spec fields (422, like the real server).
pub(crate) fn validate_update(
    rt: &ResourceType,
    name: &str,
    old: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    if let Some(spec) = new.get_mut("spec") {
        scheme_defaults(spec);
    }
    let (Some(old_spec), Some(new_spec)) = (old.get("spec"), new.get("spec")) else {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::required("spec", "")],
        ));
    };
    // Gates may be removed (that is how a pod is released to the scheduler), never added.
    let before = scheduling_gates(old);
    let added: Vec<FieldError> = scheduling_gates(new)
        .iter()
        .enumerate()
        .filter(|(_, g)| !before.contains(g))
        .map(|(i, g)| {
            FieldError::new(
                ErrorType::Forbidden,
                &format!("spec.schedulingGates[{i}].name"),
                None,
                &format!("only deletion is allowed, but found new scheduling gate '{g}'"),
            )
        })
        .collect();
    if !added.is_empty() {
        return Err(ApiError::invalid(rt, name, added));
    }
    let mut normalized = new_spec.clone();
    for list in ["containers", "initContainers"] {
        if let (Some(o), Some(n)) = (
            old_spec.get(list).and_then(Value::as_array),
            normalized.get_mut(list).and_then(Value::as_array_mut),
        ) && o.len() == n.len()
        {
            for (oc, nc) in o.iter().zip(n.iter_mut()) {
                nc["image"] = oc["image"].clone();
            }
        }
    }
    for key in ["activeDeadlineSeconds", "tolerations", "schedulingGates"] {
        match old_spec.get(key) {
            Some(v) => normalized[key] = v.clone(),
            None => {
                if let Some(m) = normalized.as_object_mut() {
                    m.remove(key);
                }
            }
        }
    }
    if normalized != *old_spec {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![FieldError::new(
                ErrorType::Forbidden,
                "spec",
                None,
                FORBIDDEN,
            )],
        ));
    }
    Ok(())
}

/// Seconds of graceful deletion: zero for unscheduled or finished pods.
pub(crate) fn grace_period(obj: &Value, requested: Option<i64>) -> i64 {
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str);
    if !scheduled || matches!(phase, Some("Succeeded" | "Failed")) {
        return 0;
    }
    requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        assert_eq!(qos_class(&json!({"containers": [{}]})), "BestEffort");
        assert_eq!(
            qos_class(
                &json!({"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]})
            ),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn image_may_change_but_args_may_not() {
        let rt = crate::resources::Registry::default()
            .find("", "v1", "pods")
            .cloned()
            .unwrap();
        let mut old =
            json!({"spec": {"containers": [{"name": "c", "image": "a:1", "args": ["x"]}]}});
        scheme_defaults(&mut old["spec"]);
        let mut new =
            json!({"spec": {"containers": [{"name": "c", "image": "a:2", "args": ["x"]}]}});
        assert!(validate_update(&rt, "p", &old, &mut new).is_ok());
        let mut new =
            json!({"spec": {"containers": [{"name": "c", "image": "a:1", "args": ["y"]}]}});
        assert_eq!(
            validate_update(&rt, "p", &old, &mut new).unwrap_err().code,
            422
        );
    }
}
