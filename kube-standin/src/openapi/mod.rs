//! The OpenAPI documents `kubectl` reads: `/openapi/v3` (one JSON document per group
//! version, for `kubectl explain` and to learn that the server validates fields itself) and
//! `/openapi/v2` (protobuf, parsed before every `kubectl apply`), generated from the served
//! types: a CRD's schema for custom resources, an open object schema for built-in types.

pub(crate) mod v2;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::resources::{Flavor, Registry, ResourceType};

/// The Kubernetes release whose API server behaviour (and wording) the stand-in follows: what
/// `/version` and the OpenAPI documents' `info` report.
pub(crate) const GIT_VERSION: &str = "v1.32.0-standin";

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// The `components.schemas` name of a type (`dev.multitask.v1alpha1.MultiTaskTrainingJob`).
pub(crate) fn schema_name(rt: &ResourceType) -> String {
    let group = match rt.group.as_str() {
        "" => "io.k8s.api.core".to_string(),
        "apiextensions.k8s.io" => "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions".into(),
        g if g.ends_with(".k8s.io") => {
            format!("io.k8s.api.{}", g.trim_end_matches(".k8s.io"))
        }
        g => g.split('.').rev().collect::<Vec<_>>().join("."),
    };
    format!("{group}.{}.{}", rt.version, rt.kind)
}

fn gvk(rt: &ResourceType) -> Value {
    json!({"group": rt.group, "version": rt.version, "kind": rt.kind})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn string_field(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

const API_VERSION_DOC: &str = "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values.";
const KIND_DOC: &str = "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase.";
const METADATA_DOC: &str = "Standard object's metadata.";

/// `ObjectMeta` and `ListMeta`, which every type refers to.
fn meta_schemas() -> Vec<(String, Value)> {
    let strings =
        json!({"type": "object", "additionalProperties": {"type": "string", "default": ""}});
    let object_meta = json!({
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "properties": {
            "name": string_field("Name must be unique within a namespace. Cannot be updated."),
            "generateName": string_field("An optional prefix used by the server to generate a unique name when name is not set."),
            "namespace": string_field("The namespace the object is in; empty for cluster-scoped objects."),
            "uid": string_field("The unique identifier the server gave the object when it was created."),
            "resourceVersion": string_field("The version of the object the server stored last, for optimistic concurrency and watches."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number of the desired state, bumped by the server when the spec changes."},
            "creationTimestamp": {"type": "string", "format": "date-time", "description": "The server time the object was created."},
            "deletionTimestamp": {"type": "string", "format": "date-time", "description": "When the object is to be deleted; set by the server when deletion is requested."},
            "deletionGracePeriodSeconds": {"type": "integer", "format": "int64", "description": "Seconds allowed for graceful termination before the object is removed."},
            "labels": {"description": "Map of string keys and values to organize and select objects.", "allOf": [strings.clone()]},
            "annotations": {"description": "Unstructured key value map for arbitrary metadata.", "allOf": [strings]},
            "finalizers": {"type": "array", "items": {"type": "string", "default": ""}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Objects this object depends on; it is garbage-collected when they are gone."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Which field manager owns which fields."},
        },
    });
    let list_meta = json!({
        "type": "object",
        "description": "ListMeta describes metadata that synthetic resources must have, including lists and various status objects.",
        "properties": {
            "resourceVersion": string_field("The version of the list, to resume a watch from."),
            "continue": string_field("Set when more items are available: the token of the next chunk."),
            "remainingItemCount": {"type": "integer", "format": "int64", "description": "Items left after this chunk."},
        },
    });
    vec![
        (format!("{META}.ObjectMeta"), object_meta),
        (format!("{META}.ListMeta"), list_meta),
    ]
}

/// The schema of one object of `rt`.
fn object_schema(rt: &ResourceType) -> Value {
    let mut schema = match rt.custom.as_ref() {
        Some(custom) => custom.raw_schema.clone(),
        None => json!({
            "type": "object",
            "description": format!("{} (served without a schema: every field is accepted).", rt.kind),
            "properties": {
                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            },
        }),
    };
    if matches!(rt.flavor, Flavor::CoreEvent | Flavor::EventsV1Event) {
        // Events keep their fields at the top level.
        schema["x-kubernetes-preserve-unknown-fields"] = json!(true);
    }
    if !schema["properties"].is_object() {
        schema["properties"] = json!({});
    }
    let props = &mut schema["properties"];
    props["apiVersion"] = string_field(API_VERSION_DOC);
    props["kind"] = string_field(KIND_DOC);
    props["metadata"] = json!({"description": METADATA_DOC, "allOf": [reference(&format!("{META}.ObjectMeta"))], "default": {}});
    if schema["type"].is_null() {
        schema["type"] = json!("object");
    }
    schema["x-kubernetes-group-version-kind"] = json!([gvk(rt)]);
    schema
}

fn list_schema(rt: &ResourceType) -> Value {
    json!({
        "type": "object",
        "description": format!("{}List is a list of {}", rt.kind, rt.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": string_field(API_VERSION_DOC),
            "kind": string_field(KIND_DOC),
            "items": {"type": "array", "description": format!("List of {}.", rt.plural), "items": reference(&schema_name(rt))},
            "metadata": {"description": "Standard list metadata.", "allOf": [reference(&format!("{META}.ListMeta"))], "default": {}},
        },
        "x-kubernetes-group-version-kind": [{"group": rt.group, "version": rt.version, "kind": format!("{}List", rt.kind)}],
    })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ),
        query(
            "fieldManager",
            "A name associated with the actor or entity that is making these changes.",
        ),
        query(
            "fieldValidation",
            "How the server handles fields the schema does not declare: Ignore, Warn (the default) or Strict.",
        ),
    ];
    if patch {
        params.push(json!({"name": "force", "in": "query", "description": "Force is going to \"force\" Apply requests.", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    params
}

fn operation(
    rt: &ResourceType,
    action: &str,
    id: &str,
    params: Vec<Value>,
    returns: &str,
) -> Value {
    let mut op = json!({
        "description": format!("{action} {}", rt.kind),
        "operationId": id,
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference(returns)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(rt),
    });
    if matches!(action, "put" | "post" | "patch") {
        let content_types: &[&str] = if action == "patch" {
            &[
                "application/apply-patch+yaml",
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ]
        } else {
            &["application/json"]
        };
        let content: Map<String, Value> = content_types
            .iter()
            .map(|ct| (ct.to_string(), json!({"schema": reference(returns)})))
            .collect();
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// The paths of `rt`.
fn paths(rt: &ResourceType) -> Vec<(String, Value)> {
    let base = if rt.group.is_empty() {
        "/api/v1".to_string()
    } else {
        format!("/apis/{}/{}", rt.group, rt.version)
    };
    let scope = if rt.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let id = format!("{}{}", rt.kind, rt.version);
    let (one, list) = (schema_name(rt), format!("{}List", schema_name(rt)));
    let mut scope_params = vec![];
    if rt.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let mut item_params = vec![path_param("name", &format!("name of the {}", rt.kind))];
    item_params.extend(scope_params.clone());
    let mut out = vec![
        (
            format!("{base}{scope}/{}", rt.plural),
            json!({
                "get": operation(rt, "list", &format!("list{id}"), vec![], &list),
                "post": operation(rt, "post", &format!("create{id}"), write_params(false), &one),
                "delete": operation(rt, "deletecollection", &format!("deletecollection{id}"), vec![], &format!("{META}.Status")),
                "parameters": scope_params,
            }),
        ),
        (
            format!("{base}{scope}/{}/{{name}}", rt.plural),
            json!({
                "get": operation(rt, "get", &format!("read{id}"), vec![], &one),
                "put": operation(rt, "put", &format!("replace{id}"), write_params(false), &one),
                "patch": operation(rt, "patch", &format!("patch{id}"), write_params(true), &one),
                "delete": operation(rt, "delete", &format!("delete{id}"), vec![], &format!("{META}.Status")),
                "parameters": item_params.clone(),
            }),
        ),
    ];
    if rt.status_subresource {
        out.push((
            format!("{base}{scope}/{}/{{name}}/status", rt.plural),
            json!({
                "get": operation(rt, "get", &format!("read{id}Status"), vec![], &one),
                "put": operation(rt, "put", &format!("replace{id}Status"), write_params(false), &one),
                "patch": operation(rt, "patch", &format!("patch{id}Status"), write_params(true), &one),
                "parameters": item_params,
            }),
        ));
    }
    out
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "Status is a return value for calls that don't return other objects.",
        "properties": {
            "apiVersion": string_field(API_VERSION_DOC),
            "kind": string_field(KIND_DOC),
            "code": {"type": "integer", "format": "int32", "description": "Suggested HTTP return code for this status."},
            "message": string_field("A human-readable description of the status of this operation."),
            "reason": string_field("A machine-readable description of why this operation is in the \"Failure\" status."),
            "status": string_field("Status of the operation: \"Success\" or \"Failure\"."),
            "details": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "description": "Extended data associated with the reason."},
        },
        "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Status"}],
    })
}

/// The `(group, version)` pairs with a document, as `api/v1` or `apis/<group>/<version>`.
fn group_versions(reg: &Registry) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = Vec::new();
    for t in reg.types() {
        let key = if t.group.is_empty() {
            "api/v1".to_string()
        } else {
            format!("apis/{}/{}", t.group, t.version)
        };
        if !out.iter().any(|(k, _, _)| *k == key) {
            out.push((key, t.group.clone(), t.version.clone()));
        }
    }
    out
}

/// The OpenAPI v3 document of one group version.
pub(crate) fn v3_document(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let types: Vec<&ResourceType> = reg
        .types()
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .collect();
    if types.is_empty() {
        return None;
    }
    let mut schemas: Map<String, Value> = meta_schemas().into_iter().collect();
    schemas.insert(format!("{META}.Status"), status_schema());
    let mut all_paths = Map::new();
    for rt in types {
        schemas.insert(schema_name(rt), object_schema(rt));
        schemas.insert(format!("{}List", schema_name(rt)), list_schema(rt));
        all_paths.extend(paths(rt));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::openapi::GIT_VERSION},
        "paths": all_paths,
        "components": {"schemas": schemas},
    }))
}

fn hash(doc: &Value) -> String {
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest.iter().take(32).map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3`: where each group version's document is.
pub(crate) fn v3_index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (key, group, version) in group_versions(reg) {
        if let Some(doc) = v3_document(reg, &group, &version) {
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", hash(&doc))}),
            );
        }
    }
    json!({"paths": paths})
}

/// Every type's schemas and paths in one document (the input of `/openapi/v2`).
pub(crate) fn all_schemas_and_paths(reg: &Registry) -> (Map<String, Value>, Map<String, Value>) {
    let mut schemas: Map<String, Value> = meta_schemas().into_iter().collect();
    schemas.insert(format!("{META}.Status"), status_schema());
    let mut all_paths = Map::new();
    for rt in reg.types() {
        schemas.insert(schema_name(rt), object_schema(rt));
        schemas.insert(format!("{}List", schema_name(rt)), list_schema(rt));
        all_paths.extend(paths(rt));
    }
    (schemas, all_paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_follow_the_api_server() {
        let reg = Registry::default();
        let pods = reg.find("", "v1", "pods").unwrap();
        assert_eq!(schema_name(pods), "io.k8s.api.core.v1.Pod");
        let leases = reg.find("coordination.k8s.io", "v1", "leases").unwrap();
        assert_eq!(schema_name(leases), "io.k8s.api.coordination.v1.Lease");
        let crd = ResourceType::custom(
            "multitask.dev",
            "v1alpha1",
            "MultiTaskTrainingJob",
            "multitasktrainingjobs",
        );
        assert_eq!(
            schema_name(&crd),
            "dev.multitask.v1alpha1.MultiTaskTrainingJob"
        );
    }

    #[test]
    fn every_patch_path_names_its_kind_and_takes_field_validation() {
        let reg = Registry::default();
        let doc = v3_document(&reg, "", "v1").unwrap();
        let patch = &doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Pod");
        assert!(
            patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation")
        );
        assert!(
            v3_index(&reg)["paths"]["api/v1"]["serverRelativeURL"]
                .as_str()
                .unwrap()
                .starts_with("/openapi/v3/api/v1?hash=")
        );
    }
}
