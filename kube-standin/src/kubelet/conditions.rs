//! Pod conditions as the kubelet and the scheduler set them.

use serde_json::{Value, json};

use crate::clock::now_rfc3339;

/// Sets condition `type_` of a pod's `status` to `value`; `lastTransitionTime` moves only when
/// the value changes.
pub(crate) fn set_condition(
    status: &mut Value,
    type_: &str,
    value: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    let Some(conds) = status["conditions"].as_array_mut() else {
        return;
    };
    let now = now_rfc3339();
    let mut cond =
        json!({"type": type_, "status": value, "lastProbeTime": null, "lastTransitionTime": now});
    if let Some(r) = reason {
        cond["reason"] = json!(r);
    }
    if let Some(m) = message {
        cond["message"] = json!(m);
    }
    match conds.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            if existing["status"] == value {
                cond["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = cond;
        }
        None => conds.push(cond),
    }
}
