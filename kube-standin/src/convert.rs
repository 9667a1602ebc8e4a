//! Conversion between representations of one storage: the two event APIs (core/v1
//! stored), and the versions of a custom resource.

use serde_json::{Map, Value};

use crate::resources::{Flavor, ResourceType};

/// (events.k8s.io/v1 field, core/v1 field)
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename(obj: Value, to_core: bool, api_version: &str) -> Value {
    let Value::Object(m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for (k, v) in m {
        let key = EVENT_FIELDS
            .iter()
            .find_map(|(v1, core)| {
                if to_core {
                    (k == *v1).then_some(*core)
                } else {
                    (k == *core).then_some(*v1)
                }
            })
            .map(str::to_string)
            .unwrap_or(k);
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// The stored (canonical) representation of an object written through `rt`.
pub(crate) fn to_storage(rt: &ResourceType, obj: Value) -> Value {
    match rt.flavor {
        Flavor::EventsV1Event => rename(obj, true, "v1"),
        _ => obj,
    }
}

/// The representation served through `rt` of a stored object (a custom resource is served
/// in every version of its CRD, converted by its `apiVersion` alone: conversion `None`).
pub(crate) fn from_storage(rt: &ResourceType, mut obj: Value) -> Value {
    match rt.flavor {
        Flavor::EventsV1Event => rename(obj, false, &rt.api_version()),
        _ if rt.custom.is_some() => {
            if let Some(m) = obj.as_object_mut() {
                m.insert("apiVersion".into(), Value::String(rt.api_version()));
            }
            obj
        }
        _ => obj,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip() {
        let reg = crate::resources::Registry::default();
        let v1 = reg.find("events.k8s.io", "v1", "events").unwrap();
        let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "hi", "regarding": {"name": "p"}, "reason": "Started"});
        let core = to_storage(v1, ev.clone());
        assert_eq!(core["message"], "hi");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(from_storage(v1, core), ev);
    }
}
