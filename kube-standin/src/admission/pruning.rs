//! Pruning of fields a structural schema does not declare, as the API server prunes a
//! custom resource when it decodes a request: the paths of what was dropped come back for
//! the `unknown field` warning (or the strict-validation error).

use serde_json::Value;

use crate::schema::{AdditionalProperties, Schema};

const META_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// Drops undeclared fields of the object `obj` (the resource root) and returns their paths
/// (`spec.foo`, `spec.tasks[0].bar`).
pub(crate) fn prune(obj: &mut Value, schema: &Schema) -> Vec<String> {
    let mut unknown = Vec::new();
    prune_node(obj, Some(schema), true, "", &mut unknown);
    unknown
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn prune_node(
    value: &mut Value,
    schema: Option<&Schema>,
    embedded: bool,
    path: &str,
    unknown: &mut Vec<String>,
) {
    if schema.is_some_and(|s| s.preserve_unknown_fields) {
        return;
    }
    match value {
        Value::Object(fields) => {
            let Some(s) = schema else {
                unknown.extend(fields.keys().map(|k| child(path, k)));
                fields.clear();
                return;
            };
            let embedded = embedded || s.embedded_resource;
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                if embedded && META_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                let next = match (s.properties.get(&k), &s.additional_properties) {
                    (Some(prop), _) => Some(Some(prop)),
                    (None, Some(AdditionalProperties::Schema(values))) => Some(Some(&**values)),
                    (None, Some(AdditionalProperties::Bool(true))) => Some(None),
                    _ => None,
                };
                match next {
                    Some(next) => {
                        if let Some(v) = fields.get_mut(&k) {
                            prune_node(v, next, false, &child(path, &k), unknown);
                        }
                    }
                    None => {
                        unknown.push(child(path, &k));
                        fields.remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            let items_schema = schema.and_then(|s| s.items.as_deref());
            for (i, item) in items.iter_mut().enumerate() {
                prune_node(item, items_schema, false, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_undeclared_fields_and_reports_their_paths() {
        let s = Schema::parse(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "tasks": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
            }}
        }}))
        .unwrap();
        let mut obj = json!({
            "apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x"},
            "extra": 1,
            "spec": {"foo": 1, "tasks": [{"name": "a", "bar": 2}], "labels": {"k": "v"}, "free": {"any": 1}}
        });
        let unknown = prune(&mut obj, &s);
        assert_eq!(unknown, ["extra", "spec.foo", "spec.tasks[0].bar"]);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "a/v1", "kind": "K", "metadata": {"name": "x"},
                "spec": {"tasks": [{"name": "a"}], "labels": {"k": "v"}, "free": {"any": 1}}
            })
        );
    }
}
