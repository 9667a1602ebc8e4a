//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`) as the API server handles them:
//! checked and defaulted when written, given their status (names accepted, established,
//! stored versions) and the cleanup finalizer, and turned into the resource types they serve.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::field_error::{ErrorType, FieldError, go_value, quote};
use crate::clock::now_rfc3339;
use crate::error::ApiError;
use crate::resources::{CustomType, Flavor, PrinterColumn, ResourceType};
use crate::schema::Schema;

/// The finalizer the API server puts on every CRD: its instances are deleted first.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Checks a CRD written by a client and sets what the server sets: name defaults, the
/// cleanup finalizer (on create) and the status.
pub(crate) fn prepare(
    rt: &ResourceType,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = s(obj, "/metadata/name").to_string();
    let mut errors = check(obj);
    if let Some(old) = old {
        for (field, pointer) in [("spec.group", "/spec/group"), ("spec.scope", "/spec/scope")] {
            if s(obj, pointer) != s(old, pointer) {
                errors.push(FieldError::invalid(
                    field,
                    Some(quote(s(obj, pointer))),
                    "field is immutable",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(rt, &name, errors));
    }
    let kind = s(obj, "/spec/names/kind").to_string();
    let names = &mut obj["spec"]["names"];
    if s(names, "/singular").is_empty() {
        names["singular"] = json!(kind.to_lowercase());
    }
    if s(names, "/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    if obj["spec"].get("conversion").is_none() {
        obj["spec"]["conversion"] = json!({"strategy": "None"});
    }
    if old.is_none() {
        let finalizers = &mut obj["metadata"]["finalizers"];
        if !finalizers.is_array() {
            *finalizers = json!([]);
        }
        if let Some(list) = finalizers.as_array_mut()
            && !list.iter().any(|f| f == CLEANUP_FINALIZER)
        {
            list.push(json!(CLEANUP_FINALIZER));
        }
    }
    obj["status"] = status(obj, old);
    Ok(())
}

fn condition(type_: &str, reason: &str, message: &str, since: Option<&Value>) -> Value {
    let time = since
        .and_then(|c| c.get("lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| json!(now_rfc3339()));
    json!({"type": type_, "status": "True", "reason": reason, "message": message, "lastTransitionTime": time})
}

fn status(obj: &Value, old: Option<&Value>) -> Value {
    let old_condition = |t: &str| {
        old.and_then(|o| o.pointer("/status/conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == t))
            .cloned()
    };
    let mut stored: Vec<Value> = old
        .and_then(|o| o.pointer("/status/storedVersions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in obj["spec"]["versions"].as_array().into_iter().flatten() {
        if v["storage"] == true && !stored.contains(&v["name"]) {
            stored.push(v["name"].clone());
        }
    }
    json!({
        "acceptedNames": obj["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found", old_condition("NamesAccepted").as_ref()),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted", old_condition("Established").as_ref()),
        ],
        "storedVersions": stored,
    })
}

/// Marks a CRD whose deletion started as terminating.
pub(crate) fn mark_terminating(obj: &mut Value) {
    if let Some(conditions) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
        && !conditions.iter().any(|c| c["type"] == "Terminating")
    {
        conditions.push(json!({
            "type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
            "message": "CustomResource deletion is in progress", "lastTransitionTime": now_rfc3339(),
        }));
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// The API server's checks of a CRD that the stand-in reproduces.
fn check(obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let spec = &obj["spec"];
    let group = s(spec, "/group");
    let plural = s(spec, "/names/plural");
    let kind = s(spec, "/names/kind");
    let name = s(obj, "/metadata/name");
    if group.is_empty() {
        errors.push(FieldError::required("spec.group", ""));
    } else if !group.contains('.') {
        errors.push(FieldError::invalid(
            "spec.group",
            Some(quote(group)),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        errors.push(FieldError::required("spec.names.plural", ""));
    } else if !is_dns_label(plural) {
        errors.push(FieldError::invalid(
            "spec.names.plural",
            Some(quote(plural)),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    }
    if kind.is_empty() {
        errors.push(FieldError::required("spec.names.kind", ""));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        errors.push(FieldError::invalid(
            "metadata.name",
            Some(quote(name)),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    match s(spec, "/scope") {
        "Namespaced" | "Cluster" => {}
        other => errors.push(FieldError::new(
            ErrorType::NotSupported,
            "spec.scope",
            Some(quote(other)),
            "supported values: \"Cluster\", \"Namespaced\"",
        )),
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        errors.push(FieldError::invalid(
            "spec.versions",
            Some("[]".into()),
            "must have exactly one version marked as storage version",
        ));
    }
    let storage = versions.iter().filter(|v| v["storage"] == true).count();
    if !versions.is_empty() && storage != 1 {
        errors.push(FieldError::invalid(
            "spec.versions",
            Some(go_value(&spec["versions"])),
            "must have exactly one version marked as storage version",
        ));
    }
    // Like the API server, which validates the versions' schema once, as `spec.validation`,
    // when every version has the same one.
    let schemas: Vec<Option<&Value>> = versions
        .iter()
        .map(|v| v.pointer("/schema/openAPIV3Schema"))
        .collect();
    let shared = schemas
        .first()
        .copied()
        .flatten()
        .filter(|first| schemas.iter().all(|s| *s == Some(*first)));
    if let Some(doc) = shared {
        check_schema(doc, "spec.validation.openAPIV3Schema", &mut errors);
    }
    for (i, v) in versions.iter().enumerate() {
        let at = format!("spec.versions[{i}]");
        if s(v, "/name").is_empty() {
            errors.push(FieldError::required(&format!("{at}.name"), ""));
        }
        match schemas[i] {
            None => errors.push(FieldError::required(
                &format!("{at}.schema.openAPIV3Schema"),
                "schemas are required",
            )),
            Some(doc) if shared.is_none() => {
                check_schema(doc, &format!("{at}.schema.openAPIV3Schema"), &mut errors)
            }
            Some(_) => {}
        }
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("{at}.additionalPrinterColumns[{j}]");
            if s(c, "/name").is_empty() {
                errors.push(FieldError::required(&format!("{at}.name"), ""));
            }
            if !matches!(
                s(c, "/type"),
                "integer" | "number" | "string" | "boolean" | "date"
            ) {
                errors.push(FieldError::new(
                    ErrorType::NotSupported,
                    &format!("{at}.type"),
                    Some(quote(s(c, "/type"))),
                    "supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"",
                ));
            }
            if !s(c, "/jsonPath").starts_with('.') {
                errors.push(FieldError::invalid(
                    &format!("{at}.jsonPath"),
                    Some(quote(s(c, "/jsonPath"))),
                    "must be a simple json path starting with .",
                ));
            }
        }
    }
    errors
}

/// A version's schema: structural, its rules compiling and, when it is, within the CEL cost
/// budget (the API server estimates costs only for a structural schema).
fn check_schema(doc: &Value, path: &str, errors: &mut Vec<FieldError>) {
    match Schema::parse(doc) {
        Ok(mut schema) => {
            let mut problems = Vec::new();
            schema.compile(path, true, &mut problems);
            let structural = problems
                .iter()
                .all(|p| p.field.contains(".x-kubernetes-validations["));
            errors.append(&mut problems);
            if structural {
                errors.extend(crate::cel::budget::check(&schema, path).1);
            }
        }
        Err(e) => errors.push(FieldError::invalid(path, Some(quote("object")), &e)),
    }
}

/// The resource types a stored CRD serves (one per served version).
pub(crate) fn served_types(obj: &Value) -> Vec<ResourceType> {
    let spec = &obj["spec"];
    let group = s(spec, "/group");
    let names = &spec["names"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != true {
            continue;
        }
        let raw_schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .unwrap_or(json!({}));
        let schema = Schema::parse(&raw_schema).ok().map(|mut schema| {
            schema.compile("openAPIV3Schema", true, &mut Vec::new());
            schema
        });
        let mut columns: Vec<PrinterColumn> = v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| PrinterColumn {
                name: s(c, "/name").into(),
                type_: s(c, "/type").into(),
                format: s(c, "/format").into(),
                description: s(c, "/description").into(),
                priority: c["priority"].as_i64().unwrap_or(0),
                json_path: s(c, "/jsonPath").into(),
            })
            .collect();
        if columns.is_empty() {
            columns.push(PrinterColumn {
                name: "Age".into(),
                type_: "date".into(),
                format: String::new(),
                description: String::new(),
                priority: 0,
                json_path: ".metadata.creationTimestamp".into(),
            });
        }
        out.push(ResourceType {
            group: group.into(),
            version: s(v, "/name").into(),
            plural: s(names, "/plural").into(),
            singular: s(names, "/singular").into(),
            kind: s(names, "/kind").into(),
            namespaced: s(spec, "/scope") == "Namespaced",
            status_subresource: v.pointer("/subresources/status").is_some(),
            generation: true,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            flavor: Flavor::Generic,
            custom: Some(Arc::new(CustomType {
                crd: s(obj, "/metadata/name").into(),
                schema,
                raw_schema,
                columns,
            })),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::crd_type;

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}],
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                    }}}
                }]
            }
        })
    }

    #[test]
    fn prepare_defaults_names_and_sets_status_and_finalizer() {
        let mut obj = crd();
        prepare(&crd_type(), &mut obj, None).unwrap();
        assert_eq!(obj["spec"]["names"]["singular"], "widget");
        assert_eq!(obj["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(obj["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));
        assert_eq!(obj["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(obj["status"]["conditions"][1]["type"], "Established");
        let types = served_types(&obj);
        assert_eq!(types.len(), 1);
        let rt = &types[0];
        assert_eq!(
            (rt.kind.as_str(), rt.namespaced, rt.status_subresource),
            ("Widget", true, true)
        );
        assert_eq!(rt.short_names, ["wd"]);
        assert_eq!(rt.custom.as_ref().unwrap().columns[0].name, "Size");
    }

    #[test]
    fn bad_crds_are_rejected_with_field_errors() {
        let mut obj = crd();
        obj["metadata"]["name"] = json!("wrong");
        obj["spec"]["scope"] = json!("Global");
        obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"] =
            json!([{"rule": "self.spec.size >"}]);
        let err = prepare(&crd_type(), &mut obj, None).unwrap_err();
        assert_eq!(err.code, 422);
        let causes: Vec<String> = err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        assert!(causes.contains(&"metadata.name".to_string()), "{causes:?}");
        assert!(causes.contains(&"spec.scope".to_string()), "{causes:?}");
        assert!(
            // One version: the API server validates its schema as `spec.validation`.
            causes.contains(
                &"spec.validation.openAPIV3Schema.x-kubernetes-validations[0].rule".to_string()
            ),
            "{causes:?}"
        );
    }
}
