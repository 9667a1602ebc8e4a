//! The CRD schema's bounds, checked on a spec without an API server: numbers against
//! `minimum`/`maximum`, strings against `maxLength`/`minLength`, lists and maps against
//! their item counts, and enums. The API server enforces the same schema at admission; local
//! runs (`mtl-trainer --job job.yaml`) have none, so `validate()` walks the spec against the
//! generated schema itself: one source for the bounds, the Rust types' `schemars` attributes.

use std::sync::OnceLock;

use kube::CustomResourceExt;
use serde_json::Value;

use crate::MultiTaskTrainingJob;

/// The schema of `spec`, generated once.
fn spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = serde_json::to_value(MultiTaskTrainingJob::crd()).unwrap_or_default();
        crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
            .cloned()
            .unwrap_or_default()
    })
}

/// Every place `spec` (as JSON) breaks a bound of the CRD's schema, with its path.
pub fn schema_errors(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(spec, spec_schema(), "spec", &mut out);
    out
}

fn walk(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    let num = |k: &str| schema.get(k).and_then(Value::as_f64);
    let count = |k: &str| schema.get(k).and_then(Value::as_u64);
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !allowed.contains(value)
    {
        let names: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(format!(
            "{path}: {value} is not one of {}",
            names.join(", ")
        ));
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = num("minimum")
                && x < min
            {
                out.push(format!("{path}: {n} is less than the minimum {min}"));
            }
            if let Some(max) = num("maximum")
                && x > max
            {
                out.push(format!("{path}: {n} is more than the maximum {max}"));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = count("maxLength")
                && len > max
            {
                out.push(format!(
                    "{path}: {len} characters, more than the {max} allowed"
                ));
            }
            if let Some(min) = count("minLength")
                && len < min
            {
                out.push(format!(
                    "{path}: {len} characters, fewer than the {min} required"
                ));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(max) = count("maxItems")
                && len > max
            {
                out.push(format!("{path}: {len} items, more than the {max} allowed"));
            }
            if let Some(min) = count("minItems")
                && len < min
            {
                out.push(format!(
                    "{path}: {len} items, fewer than the {min} required"
                ));
            }
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => {
            if let Some(max) = count("maxProperties")
                && fields.len() as u64 > max
            {
                out.push(format!(
                    "{path}: {} entries, more than the {max} allowed",
                    fields.len()
                ));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in fields {
                let child = props.and_then(|p| p.get(k)).or(additional);
                if let Some(child) = child {
                    let sub = if props.is_some_and(|p| p.contains_key(k)) {
                        format!("{path}.{k}")
                    } else {
                        format!("{path}[{k:?}]")
                    };
                    walk(v, child, &sub, out);
                }
            }
        }
        _ => {}
    }
}
