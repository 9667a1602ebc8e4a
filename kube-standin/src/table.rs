//! `Table` output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`), what `kubectl get`
//! prints: a CRD's `additionalPrinterColumns` for custom resources, the built-in columns of
//! pods, events, namespaces and leases, and name plus creation time for the rest.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::admission::field_error::go_float;
use crate::resources::PrinterColumn;
use crate::resources::{Flavor, ResourceType};

/// Whether the client asked for a Table.
pub(crate) fn requested(accept: &str) -> bool {
    accept.contains("as=Table")
}

/// What each row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Include {
    None,
    Metadata,
    Object,
}

impl Include {
    pub(crate) fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated.";

fn column(name: &str, type_: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": type_, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column("Name", "string", "name", NAME_DESCRIPTION, 0)
}

fn age_column(description: &str) -> Value {
    column("Age", "string", "", description, 0)
}

/// The column definitions of `rt`.
fn columns(rt: &ResourceType) -> Vec<Value> {
    if let Some(custom) = &rt.custom {
        let mut cols = vec![name_column()];
        cols.extend(
            custom
                .columns
                .iter()
                .map(|c| column(&c.name, &c.type_, &c.format, &c.description, c.priority)),
        );
        return cols;
    }
    match rt.flavor {
        Flavor::Pod => vec![
            name_column(),
            column(
                "Ready",
                "string",
                "",
                "The aggregate readiness state of this pod for accepting traffic.",
                0,
            ),
            column(
                "Status",
                "string",
                "",
                "The aggregate status of the containers in this pod.",
                0,
            ),
            column(
                "Restarts",
                "string",
                "",
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                0,
            ),
            age_column(
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
            column(
                "IP",
                "string",
                "",
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
                1,
            ),
            column(
                "Node",
                "string",
                "",
                "NodeName is a request to schedule this pod onto a specific node.",
                1,
            ),
            column(
                "Nominated Node",
                "string",
                "",
                "nominatedNodeName is set when this pod preempts other pods on the node.",
                1,
            ),
            column(
                "Readiness Gates",
                "string",
                "",
                "If specified, all readiness gates will be evaluated for pod readiness.",
                1,
            ),
        ],
        Flavor::CoreEvent | Flavor::EventsV1Event => vec![
            column(
                "Last Seen",
                "string",
                "",
                "The time at which the most recent occurrence of this event was recorded.",
                0,
            ),
            column(
                "Type",
                "string",
                "",
                "Type of this event (Normal, Warning).",
                0,
            ),
            column(
                "Reason",
                "string",
                "",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
                0,
            ),
            column(
                "Object",
                "string",
                "",
                "The object that this event is about.",
                0,
            ),
            column(
                "Message",
                "string",
                "",
                "A human-readable description of the status of this operation.",
                0,
            ),
        ],
        Flavor::Generic if rt.kind == "Namespace" => vec![
            name_column(),
            column("Status", "string", "", "The status of the namespace", 0),
            age_column(
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
        Flavor::Generic if rt.kind == "Lease" => vec![
            name_column(),
            column(
                "Holder",
                "string",
                "",
                "holderIdentity contains the identity of the holder of a current lease.",
                0,
            ),
            age_column(
                "CreationTimestamp is a timestamp representing the server time when this object was created.",
            ),
        ],
        _ => vec![
            name_column(),
            column(
                "Created At",
                "date",
                "",
                "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.",
                0,
            ),
        ],
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn age(obj: &Value, pointer: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(str_at(obj, pointer)) {
        Ok(t) => human_duration(now - t.with_timezone(&Utc)),
        Err(_) => "<unknown>".into(),
    }
}

/// The cells of one object.
fn cells(rt: &ResourceType, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(str_at(obj, "/metadata/name"));
    if let Some(custom) = &rt.custom {
        let mut cells = vec![name];
        cells.extend(custom.columns.iter().map(|c| printer_cell(c, obj, now)));
        return cells;
    }
    match rt.flavor {
        Flavor::Pod => pod_cells(obj, now),
        Flavor::CoreEvent | Flavor::EventsV1Event => {
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/deprecatedLastTimestamp",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find(|p| !str_at(obj, p).is_empty())
            .map(|p| age(obj, p, now))
            .unwrap_or_else(|| "<unknown>".into());
            let regarding = obj
                .get("involvedObject")
                .or_else(|| obj.get("regarding"))
                .cloned()
                .unwrap_or(json!({}));
            vec![
                json!(last),
                json!(str_at(obj, "/type")),
                json!(str_at(obj, "/reason")),
                json!(format!(
                    "{}/{}",
                    str_at(&regarding, "/kind").to_lowercase(),
                    str_at(&regarding, "/name")
                )),
                json!(
                    obj.get("message")
                        .or_else(|| obj.get("note"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                ),
            ]
        }
        Flavor::Generic if rt.kind == "Namespace" => vec![
            name,
            json!(match str_at(obj, "/status/phase") {
                "" => "Active",
                p => p,
            }),
            json!(age(obj, "/metadata/creationTimestamp", now)),
        ],
        Flavor::Generic if rt.kind == "Lease" => vec![
            name,
            json!(str_at(obj, "/spec/holderIdentity")),
            json!(age(obj, "/metadata/creationTimestamp", now)),
        ],
        _ => vec![name, json!(str_at(obj, "/metadata/creationTimestamp"))],
    }
}

fn pod_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let statuses = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let containers = obj
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    let mut status = str_at(obj, "/status/reason").to_string();
    if status.is_empty() {
        status = str_at(obj, "/status/phase").to_string();
    }
    for c in &statuses {
        let waiting = str_at(c, "/state/waiting/reason");
        let terminated = str_at(c, "/state/terminated/reason");
        if !waiting.is_empty() {
            status = waiting.to_string();
        } else if !terminated.is_empty() {
            status = terminated.to_string();
        }
    }
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        status = "Terminating".into();
    }
    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        json!(str_at(obj, "/metadata/name")),
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        json!(age(obj, "/metadata/creationTimestamp", now)),
        json!(none(str_at(obj, "/status/podIP"))),
        json!(none(str_at(obj, "/spec/nodeName"))),
        json!(none(str_at(obj, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

/// A printer column's cell, as the API server's CRD table convertor computes it.
fn printer_cell(c: &PrinterColumn, obj: &Value, now: DateTime<Utc>) -> Value {
    let Some(value) = json_path(obj, &c.json_path) else {
        return Value::Null;
    };
    match (c.type_.as_str(), value) {
        (_, Value::Null) => Value::Null,
        ("string", Value::String(s)) => json!(s),
        ("string", Value::Number(n)) => json!(n.as_i64().map_or_else(
            || go_float(n.as_f64().unwrap_or_default()),
            |i| i.to_string()
        )),
        ("string", other) => json!(other.to_string()),
        ("integer", Value::Number(n)) => json!(
            n.as_i64()
                .unwrap_or_else(|| n.as_f64().unwrap_or_default() as i64)
        ),
        ("number", Value::Number(n)) => json!(n.as_f64()),
        ("boolean", Value::Bool(b)) => json!(b),
        ("date", Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => json!(human_duration(now - t.with_timezone(&Utc))),
            Err(_) => json!("<invalid>"),
        },
        _ => Value::Null,
    }
}

/// A simple JSONPath (`.status.phase`, `.spec.tasks[0].name`, `.metadata.labels['a.b/c']`).
pub(crate) fn json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    let mut node = obj;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            node = node.get(&r[..end])?;
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix("['") {
            let end = r.find("']")?;
            node = node.get(&r[..end])?;
            rest = &r[end + 2..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            node = node.get(r[..end].parse::<usize>().ok()?)?;
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(node)
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub(crate) fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn row(rt: &ResourceType, obj: &Value, include: Include, now: DateTime<Utc>) -> Value {
    let mut row = json!({"cells": cells(rt, obj, now)});
    match include {
        Include::None => {}
        Include::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
            });
        }
        Include::Object => row["object"] = obj.clone(),
    }
    row
}

/// A `meta.k8s.io/v1` Table of `items`, with the list's metadata.
pub(crate) fn table(
    rt: &ResourceType,
    items: &[Value],
    metadata: Value,
    include: Include,
) -> Value {
    let now = Utc::now();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns(rt),
        "rows": items.iter().map(|o| row(rt, o, include, now)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_kubectl() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(150)), "2m30s");
        assert_eq!(human_duration(d(3600 * 5 + 60)), "5h1m");
        assert_eq!(human_duration(d(3600 * 30)), "30h");
        assert_eq!(human_duration(d(86400 * 3 + 3600)), "3d1h");
        assert_eq!(human_duration(d(-5)), "<invalid>");
    }

    #[test]
    fn json_paths_and_printer_cells() {
        let obj = json!({"metadata": {"labels": {"a.b/c": "x"}}, "status": {"phase": "Running", "step": 200, "list": [{"n": 1}]}});
        assert_eq!(json_path(&obj, ".status.phase"), Some(&json!("Running")));
        assert_eq!(json_path(&obj, ".status.list[0].n"), Some(&json!(1)));
        assert_eq!(
            json_path(&obj, ".metadata.labels['a.b/c']"),
            Some(&json!("x"))
        );
        assert_eq!(json_path(&obj, ".status.missing"), None);
        let col = |t: &str, p: &str| PrinterColumn {
            name: "c".into(),
            type_: t.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: p.into(),
        };
        let now = Utc::now();
        assert_eq!(
            printer_cell(&col("integer", ".status.step"), &obj, now),
            json!(200)
        );
        assert_eq!(
            printer_cell(&col("string", ".status.step"), &obj, now),
            json!("200")
        );
        assert_eq!(
            printer_cell(&col("string", ".status.latest"), &obj, now),
            Value::Null
        );
    }
}
