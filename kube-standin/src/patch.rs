//! Patch strategies: JSON merge, strategic merge (as merge), JSON patch, server-side apply.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The patch types of the `Content-Type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Strategic,
    Json,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            _ => Err(ApiError::unsupported_media_type(ct)),
        }
    }
}

/// Parses a request body as JSON, or as YAML (a superset) when `yaml` is set.
pub fn parse_body(body: &[u8], yaml: bool) -> Result<Value, ApiError> {
    if yaml {
        serde_yaml::from_slice::<Value>(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body of the request was in an unknown format: {e}"
            ))
        })
    }
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Strategic merge patch, treated as a merge patch with the `$` directives dropped.
pub fn strategic(target: &mut Value, patch: &Value) {
    merge(target, patch);
    strip_directives(target);
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

/// RFC 6902 JSON patch; a failed `test` or a bad path is a 422 like the real server.
/// As in the API server's JSON-patch library, `test` of an absent path against `null`
/// succeeds (kube-runtime's finalizer helper relies on it).
pub fn json(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let mut patch = patch.clone();
    if let Value::Array(ops) = &mut patch {
        ops.retain(|op| {
            let absent_null_test = op.get("op").and_then(Value::as_str) == Some("test")
                && op.get("value").is_some_and(Value::is_null)
                && op
                    .get("path")
                    .and_then(Value::as_str)
                    .is_some_and(|p| target.pointer(p).is_none());
            !absent_null_test
        });
    }
    let ops: json_patch::Patch = serde_json::from_value(patch)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// Server-side apply, approximated: drop the fields this manager applied last time and no
/// longer applies, then deep-merge the applied object (maps merge, lists and scalars replace).
pub fn apply(target: &mut Value, previous: Option<&Value>, applied: &Value) {
    if let Some(prev) = previous {
        prune(target, prev, applied, 0);
    }
    deep_merge(target, applied);
}

const PROTECTED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
];

fn prune(target: &mut Value, prev: &Value, now: &Value, depth: usize) {
    let (Value::Object(t), Value::Object(p)) = (target, prev) else {
        return;
    };
    let empty = Map::new();
    let n = now.as_object().unwrap_or(&empty);
    for (k, pv) in p {
        if depth == 1 && PROTECTED_METADATA.contains(&k.as_str()) {
            continue;
        }
        match n.get(k) {
            None if pv.is_object() && t.get(k).is_some_and(Value::is_object) => {
                // Drop only what this manager applied below here; others' fields stay.
                if let Some(tv) = t.get_mut(k) {
                    prune(tv, pv, &Value::Object(Map::new()), depth + 1);
                    if tv.as_object().is_some_and(Map::is_empty) {
                        t.remove(k);
                    }
                }
            }
            None => {
                t.remove(k);
            }
            Some(nv) => {
                if let Some(tv) = t.get_mut(k) {
                    prune(tv, pv, nv, depth + 1);
                }
            }
        }
    }
}

fn deep_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                if av.is_null() {
                    t.remove(k);
                } else if let Some(tv) = t.get_mut(k) {
                    deep_merge(tv, av);
                } else {
                    t.insert(k.clone(), av.clone());
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_prunes_fields_the_manager_dropped() {
        let mut obj = json!({"metadata": {"name": "a", "labels": {"x": "1", "y": "2"}}, "spec": {"a": 1, "b": 2}});
        let prev = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"a": 1}});
        let now = json!({"metadata": {"name": "a"}, "spec": {"c": 3}});
        apply(&mut obj, Some(&prev), &now);
        assert_eq!(
            obj,
            json!({"metadata": {"name": "a", "labels": {"y": "2"}}, "spec": {"b": 2, "c": 3}})
        );
    }

    #[test]
    fn json_patch_test_failure_is_422() {
        let mut obj = json!({"metadata": {"finalizers": ["a"]}});
        let err = json(
            &mut obj,
            &json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "b"}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn json_patch_test_of_absent_path_against_null_passes() {
        let mut obj = json!({"metadata": {"name": "a"}});
        json(
            &mut obj,
            &json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
            ]),
        )
        .unwrap();
        assert_eq!(obj["metadata"]["finalizers"], json!(["f"]));
        let err = json(
            &mut obj,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn strategic_drops_directives() {
        let mut obj = json!({"spec": {"a": 1}});
        strategic(&mut obj, &json!({"spec": {"$retainKeys": ["a"], "b": 2}}));
        assert_eq!(obj, json!({"spec": {"a": 1, "b": 2}}));
    }
}
