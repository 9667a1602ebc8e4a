//! JSON values as CEL sees them: typed by the structural schema (integers and numbers,
//! `date-time`/`duration` strings, `int-or-string`, maps and lists), as the API server converts
//! an object before it evaluates `x-kubernetes-validations`.

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::Value as Cel;
use kube_cel::cel::objects::{Key, Map};
use serde_json::Value;

use super::escape_property;
use crate::schema::Schema;

fn string(s: &str) -> Cel {
    Cel::String(Arc::new(s.to_string()))
}

/// A JSON value as CEL sees it under `schema`: integers as int, numbers as double,
/// `date-time`/`duration`/`byte` strings as timestamp/duration/bytes, objects as maps of
/// their (escaped) properties.
pub(crate) fn to_cel(value: &Value, schema: Option<&Schema>) -> Cel {
    let Some(schema) = schema.filter(|s| !s.preserve_unknown_fields || !s.type_.is_empty()) else {
        return untyped(value);
    };
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match (schema.type_.as_str(), n.as_i64()) {
            ("number", _) => Cel::Float(n.as_f64().unwrap_or_default()),
            (_, Some(i)) => Cel::Int(i),
            _ => match n.as_u64() {
                Some(u) => Cel::UInt(u),
                None => Cel::Float(n.as_f64().unwrap_or_default()),
            },
        },
        Value::String(s) => match schema.format.as_str() {
            "date-time" => chrono::DateTime::parse_from_rfc3339(s)
                .map(Cel::Timestamp)
                .unwrap_or_else(|_| string(s)),
            "byte" => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(|b| Cel::Bytes(Arc::new(b)))
                    .unwrap_or_else(|_| string(s))
            }
            "duration" => parse_duration(s)
                .map(Cel::Duration)
                .unwrap_or_else(|| string(s)),
            _ => string(s),
        },
        Value::Array(items) => Cel::List(Arc::new(
            items
                .iter()
                .map(|v| to_cel(v, schema.items.as_deref()))
                .collect(),
        )),
        Value::Object(fields) => {
            let mut map = HashMap::new();
            for (k, v) in fields {
                if let Some(prop) = schema.properties.get(k) {
                    if let Some(name) = escape_property(k) {
                        map.insert(Key::String(Arc::new(name)), to_cel(v, Some(prop)));
                    }
                } else if let Some(values) = schema.additional() {
                    map.insert(Key::String(Arc::new(k.clone())), to_cel(v, Some(values)));
                } else if schema.preserve_unknown_fields {
                    map.insert(Key::String(Arc::new(k.clone())), untyped(v));
                }
            }
            Cel::Map(Map { map: Arc::new(map) })
        }
    }
}

/// A resource's root as its rules see it: its schema's fields, and `apiVersion`, `kind` and
/// `metadata` (of which the caller kept only `name` and `generateName`), which the API server
/// adds to every root's type whether or not the schema declares them.
pub(crate) fn root_to_cel(value: &Value, schema: &Schema) -> Cel {
    let typed = to_cel(value, Some(schema));
    let (Cel::Map(typed), Some(fields)) = (&typed, value.as_object()) else {
        return typed;
    };
    let mut map = (*typed.map).clone();
    for name in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = fields.get(name)
            && !schema.properties.contains_key(name)
        {
            map.insert(Key::String(Arc::new(name.to_string())), untyped(v));
        }
    }
    Cel::Map(Map { map: Arc::new(map) })
}

fn untyped(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => string(s),
        Value::Array(a) => Cel::List(Arc::new(a.iter().map(untyped).collect())),
        Value::Object(o) => Cel::Map(Map {
            map: Arc::new(
                o.iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), untyped(v)))
                    .collect(),
            ),
        }),
    }
}

/// A Go `time.ParseDuration` string (`1h30m`, `300ms`, `-1.5s`).
fn parse_duration(s: &str) -> Option<chrono::Duration> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(chrono::Duration::zero());
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += n * scale;
        rest = &rest[unit_end..];
    }
    let d = chrono::Duration::nanoseconds(nanos as i64);
    Some(if neg { -d } else { d })
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("1h30m"), Some(chrono::Duration::minutes(90)));
        assert_eq!(parse_duration("1x"), None);
    }
}
