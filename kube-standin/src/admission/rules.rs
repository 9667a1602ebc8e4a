//! Runs the `x-kubernetes-validations` rules of every schema node over an object, as the
//! API server's CEL validator walks it: `self` bound to the node's value, `oldSelf` to the
//! correlated old value (object fields by name, map-list items by key; never other list
//! items), rules skipped on null values, and errors of rules without `oldSelf` on unchanged
//! values reported as warnings (validation ratcheting).

use serde_json::{Map, Value};

use super::field_error::{ErrorType, FieldError, quote};
use crate::cel::values::{root_to_cel, to_cel};
use crate::cel::{CompiledRule, Failure};
use crate::schema::Schema;

/// Checks every rule of `schema` (the resource root) over `obj`; `old` on updates.
pub(crate) fn check(
    obj: &Value,
    old: Option<&Value>,
    schema: &Schema,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    // At the root, CEL sees only the name and generateName of the metadata.
    let root = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.retain(|k, _| k == "name" || k == "generateName");
        }
        v
    };
    let obj = root(obj);
    let old = old.map(root);
    walk(&obj, old.as_ref(), schema, "", errors, warnings);
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn walk(
    value: &Value,
    old: Option<&Value>,
    s: &Schema,
    path: &str,
    errors: &mut Vec<FieldError>,
    warnings: &mut Vec<String>,
) {
    if value.is_null() {
        return;
    }
    if !s.rules.is_empty() {
        let cel = |v: &Value| {
            if path.is_empty() {
                root_to_cel(v, s)
            } else {
                to_cel(v, Some(s))
            }
        };
        let this = cel(value);
        let prev = old.map(cel);
        let unchanged = old == Some(value);
        for rule in &s.rules {
            if rule.transition && prev.is_none() && rule.spec.optional_old_self != Some(true) {
                continue;
            }
            let old_self = if rule.transition { prev.as_ref() } else { None };
            if let Err(failure) = rule.evaluate(&this, old_self) {
                let error = field_error(failure, rule, s, path);
                if unchanged && !rule.transition {
                    warnings.push(error.to_string());
                } else {
                    errors.push(error);
                }
            }
        }
    }
    match value {
        Value::Object(fields) => {
            let old_fields = old.and_then(Value::as_object);
            for (k, v) in fields {
                let Some(child) = s.properties.get(k).or_else(|| s.additional()) else {
                    continue;
                };
                let old_v = old_fields.and_then(|o| o.get(k));
                walk(v, old_v, child, &join(path, k), errors, warnings);
            }
        }
        Value::Array(items) => {
            let Some(item_schema) = &s.items else {
                return;
            };
            let old_items = old.and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let old_item = if s.is_map_list() {
                    old_items.and_then(|o| o.iter().find(|x| same_keys(x, item, &s.list_map_keys)))
                } else {
                    None
                };
                walk(
                    item,
                    old_item,
                    item_schema,
                    &format!("{path}[{i}]"),
                    errors,
                    warnings,
                );
            }
        }
        _ => {}
    }
}

fn same_keys(a: &Value, b: &Value, keys: &[String]) -> bool {
    let get = |v: &Value, k: &str| {
        v.as_object()
            .and_then(|m: &Map<String, Value>| m.get(k))
            .cloned()
    };
    keys.iter().all(|k| get(a, k) == get(b, k))
}

fn field_error(failure: Failure, rule: &CompiledRule, s: &Schema, path: &str) -> FieldError {
    let value = Some(quote(&s.type_));
    let message = match failure {
        Failure::Rejected(message) => message,
        Failure::BadMessage(detail) | Failure::Error(detail) => {
            return FieldError::invalid(path, value, &detail);
        }
    };
    let mut field = path.to_string();
    if let Some(segments) = s.resolve_field_path(&rule.spec.field_path) {
        for segment in segments {
            field = join(&field, &segment);
        }
    }
    match rule.spec.reason.as_deref() {
        Some("FieldValueRequired") => FieldError::required(&field, &message),
        Some("FieldValueForbidden") => {
            FieldError::new(ErrorType::Forbidden, &field, None, &message)
        }
        Some("FieldValueDuplicate") => FieldError::new(ErrorType::Duplicate, &field, value, ""),
        _ => FieldError::invalid(&field, value, &message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        let mut s = Schema::parse(&json!({"type": "object", "properties": {
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.tasks.all(t, self.tasks.exists_one(u, u.name == t.name))", "message": "task names must be unique"}
                ],
                "properties": {
                    "model": {"type": "object", "properties": {"pretrained": {"type": "string"}},
                              "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "model is immutable"}]},
                    "tasks": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"}, "numChoices": {"type": "integer"}},
                        "x-kubernetes-validations": [{
                            "rule": "self.type != 'multipleChoice' || has(self.numChoices)",
                            "message": "a multipleChoice task needs numChoices",
                            "fieldPath": ".numChoices", "reason": "FieldValueRequired"
                        }]
                    }}
                }
            }
        }}))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        s
    }

    fn run(obj: &Value, old: Option<&Value>) -> (Vec<String>, Vec<String>) {
        let (mut errors, mut warnings) = (Vec::new(), Vec::new());
        check(obj, old, &schema(), &mut errors, &mut warnings);
        (errors.iter().map(ToString::to_string).collect(), warnings)
    }

    fn job(tasks: Value, pretrained: &str) -> Value {
        json!({"metadata": {"name": "j", "labels": {"a": "b"}}, "spec": {"model": {"pretrained": pretrained}, "tasks": tasks}})
    }

    #[test]
    fn rules_report_the_field_path_reason_and_message() {
        let obj = job(
            json!([{"name": "a", "type": "regression"}, {"name": "b", "type": "multipleChoice"}]),
            "m",
        );
        assert_eq!(
            run(&obj, None).0,
            ["spec.tasks[1].numChoices: Required value: a multipleChoice task needs numChoices"]
        );
        let dup = job(
            json!([{"name": "a", "type": "regression"}, {"name": "a", "type": "regression"}]),
            "m",
        );
        assert_eq!(
            run(&dup, None).0,
            ["spec: Invalid value: \"object\": task names must be unique"]
        );
    }

    /// Rules on the root may read `metadata.name` though the schema does not declare it (as
    /// a singleton's `self.metadata.name == 'default'` does), and nothing else of metadata.
    #[test]
    fn root_rules_see_the_name_of_the_metadata() {
        let mut s: Schema = serde_json::from_value(json!({
            "type": "object",
            "properties": {"spec": {"type": "object"}},
            "x-kubernetes-validations": [
                {"rule": "self.metadata.name == 'default'", "message": "only default"},
                {"rule": "!has(self.metadata.labels)", "message": "labels unseen"}
            ]
        }))
        .unwrap();
        let mut problems = Vec::new();
        s.compile("openAPIV3Schema", true, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let check_named = |name: &str| {
            let (mut errors, mut warnings) = (Vec::new(), Vec::new());
            let obj = json!({"metadata": {"name": name, "labels": {"a": "b"}}, "spec": {}});
            check(&obj, None, &s, &mut errors, &mut warnings);
            errors.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert!(check_named("default").is_empty());
        assert_eq!(
            check_named("other"),
            [": Invalid value: \"object\": only default"]
        );
    }

    #[test]
    fn transition_rules_run_on_updates_only_and_unchanged_errors_only_warn() {
        let old = job(json!([{"name": "a", "type": "regression"}]), "m1");
        let new = job(json!([{"name": "a", "type": "regression"}]), "m2");
        assert!(run(&new, None).0.is_empty());
        assert_eq!(
            run(&new, Some(&old)).0,
            ["spec.model: Invalid value: \"object\": model is immutable"]
        );
        // An old object that already broke a rule may be updated elsewhere (ratcheting);
        // items of atomic lists do not correlate, so only rules above the list ratchet.
        let bad_old = job(
            json!([{"name": "a", "type": "regression"}, {"name": "a", "type": "regression"}]),
            "m1",
        );
        let mut bad_new = bad_old.clone();
        bad_new["metadata"]["labels"]["c"] = json!("d");
        let (errors, warnings) = run(&bad_new, Some(&bad_old));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let mc_old = job(json!([{"name": "a", "type": "multipleChoice"}]), "m1");
        let mut mc_new = mc_old.clone();
        mc_new["metadata"]["labels"]["c"] = json!("d");
        assert_eq!(run(&mc_new, Some(&mc_old)).0.len(), 1);
    }
}
