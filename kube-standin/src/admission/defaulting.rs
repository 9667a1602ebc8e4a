//! Defaulting from a structural schema, as the API server defaults a custom resource after
//! pruning: missing fields (and nulls of non-nullable fields) take the schema's `default`,
//! recursively, and other nulls of non-nullable fields are dropped.

use serde_json::Value;

use crate::schema::Schema;

fn non_nullable_null(v: &Value, s: &Schema) -> bool {
    v.is_null() && !s.nullable
}

/// Drops `null`s of fields that are neither nullable nor defaulted.
pub(crate) fn drop_non_nullable_nulls(value: &mut Value, s: &Schema) {
    match value {
        Value::Object(fields) => {
            let keys: Vec<String> = fields.keys().cloned().collect();
            for k in keys {
                let Some(prop) = s.properties.get(&k).or_else(|| s.additional()) else {
                    continue;
                };
                let drop = fields
                    .get(&k)
                    .is_some_and(|v| non_nullable_null(v, prop) && prop.default.is_none());
                if drop {
                    fields.remove(&k);
                } else if let Some(v) = fields.get_mut(&k) {
                    drop_non_nullable_nulls(v, prop);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for item in items {
                    drop_non_nullable_nulls(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

/// Applies the schema's defaults to `value`.
pub(crate) fn apply_defaults(value: &mut Value, s: &Schema) {
    match value {
        Value::Object(fields) => {
            for (k, prop) in &s.properties {
                let Some(default) = &prop.default else {
                    continue;
                };
                let missing = fields.get(k).is_none_or(|v| non_nullable_null(v, prop));
                if missing {
                    fields.insert(k.clone(), default.clone());
                }
            }
            for (k, v) in fields.iter_mut() {
                if let Some(prop) = s.properties.get(k) {
                    apply_defaults(v, prop);
                } else if let Some(values) = s.additional() {
                    if non_nullable_null(v, values)
                        && let Some(d) = &values.default
                    {
                        *v = d.clone();
                    }
                    apply_defaults(v, values);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = &s.items {
                for item in items {
                    if non_nullable_null(item, item_schema)
                        && let Some(d) = &item_schema.default
                    {
                        *item = d.clone();
                    }
                    apply_defaults(item, item_schema);
                }
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
    fn defaults_fill_missing_and_null_fields_recursively() {
        let s = Schema::parse(&json!({"type": "object", "properties": {
            "training": {"type": "object", "default": {"batchSize": 8}, "properties": {
                "batchSize": {"type": "integer", "default": 8},
                "seed": {"type": "integer", "default": 42}
            }},
            "image": {"type": "string", "nullable": true},
            "keep": {"type": "integer"}
        }}))
        .unwrap();
        let mut v = json!({"image": null, "keep": null});
        drop_non_nullable_nulls(&mut v, &s);
        apply_defaults(&mut v, &s);
        assert_eq!(
            v,
            json!({"image": null, "training": {"batchSize": 8, "seed": 42}})
        );
        let mut v = json!({"training": {"batchSize": 16}});
        apply_defaults(&mut v, &s);
        assert_eq!(v, json!({"training": {"batchSize": 16, "seed": 42}}));
    }
}
