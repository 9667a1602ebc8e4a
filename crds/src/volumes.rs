//! Which volume types a job's `podTemplate.volumes` may use.
//!
//! The operator creates the pods, so a job could otherwise give its author volumes the author
//! could not mount directly: `hostPath` (the node's filesystem) in a namespace without Pod
//! Security Admission labels. By default only the types of the Pod Security Standards'
//! restricted profile pass: refused at admission by a CEL rule on each volume, and again by
//! the operator. A cluster that needs more (an `nfs` share, a `hostPath` cache on local SSD)
//! widens both: the operator's `--allow-volume-types` and a CRD generated with
//! `crdgen job --allow-volume-types` (see docs/security.md).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The volume types the restricted profile allows (Pod Security Standards, "Volume Types").
pub const RESTRICTED_VOLUME_TYPES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every other volume source of core/v1 `Volume` (Kubernetes 1.34).
pub const OTHER_VOLUME_TYPES: [&str; 22] = [
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// A Kubernetes `Volume` as a job gives it: its name and one volume source, kept as given
/// (the API server checks the source when the pod is created; the whole Volume schema would
/// make the CRD several times larger).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(transparent)]
pub struct PodVolume(pub serde_json::Map<String, Value>);

impl PodVolume {
    /// The volume's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.0.get("name").and_then(Value::as_str)
    }

    /// The keys naming its volume source(s): every key but `name`.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str).filter(|k| *k != "name")
    }
}

impl JsonSchema for PodVolume {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PodVolume".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let source = |description: String| {
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                   "description": description})
        };
        let mut properties = serde_json::Map::new();
        properties.insert(
            "name".into(),
            json!({"type": "string", "maxLength": 63,
                   "description": "The volume's name, as volumeMounts refer to it (at most 63 characters)."}),
        );
        for t in RESTRICTED_VOLUME_TYPES {
            properties.insert(
                t.into(),
                source(format!(
                    "A Kubernetes `{t}` volume source, checked by the API server when the pod is created."
                )),
            );
        }
        for t in OTHER_VOLUME_TYPES {
            properties.insert(
                t.into(),
                source(format!(
                    "A Kubernetes `{t}` volume source: refused unless the cluster's administrator allowed the type (it is outside the restricted Pod Security Standard)."
                )),
            );
        }
        let (rule, message) = volume_rule(&[]);
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "properties": properties,
            "x-kubernetes-validations": [{"rule": rule, "message": message}],
        });
        schemars::Schema::try_from(schema).unwrap_or_default()
    }

    fn inline_schema() -> bool {
        true
    }
}

/// The volume types allowed with `extra` allowed on top of the restricted profile's, in the
/// order the restricted ones and then the extra ones are listed.
pub fn allowed_volume_types(extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = RESTRICTED_VOLUME_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect();
    for t in extra {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

/// The CEL rule (and its message) refusing, on one volume, every known type not allowed.
pub fn volume_rule(extra: &[String]) -> (String, String) {
    let allowed = allowed_volume_types(extra);
    let refused: Vec<String> = OTHER_VOLUME_TYPES
        .iter()
        .filter(|t| !allowed.iter().any(|a| a == *t))
        .map(|t| format!("!has(self.{t})"))
        .collect();
    let rule = if refused.is_empty() {
        "true".to_string()
    } else {
        refused.join(" && ")
    };
    (rule, volume_types_message(&allowed))
}

/// What a job is told when one of its volumes has a type not allowed.
pub fn volume_types_message(allowed: &[String]) -> String {
    format!(
        "volume type not allowed: the operator mounts only {} volumes (the restricted Pod Security Standard's types, and those the cluster's administrator allowed)",
        allowed.join(", ")
    )
}

/// The MultiTaskTrainingJob CRD with `extra` volume types allowed on top of the restricted
/// profile's (what `crdgen job --allow-volume-types` prints).
pub fn job_crd(extra: &[String]) -> CustomResourceDefinition {
    let mut crd = crate::MultiTaskTrainingJob::crd();
    if extra.is_empty() {
        return crd;
    }
    let (rule, message) = volume_rule(extra);
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut() else {
            continue;
        };
        let Ok(mut v) = serde_json::to_value(&schema.open_api_v3_schema) else {
            continue;
        };
        if let Some(Value::Array(rules)) = v.pointer_mut(
            "/properties/spec/properties/podTemplate/properties/volumes/items/x-kubernetes-validations",
        ) {
            *rules = vec![json!({"rule": rule, "message": message})];
        }
        if let Ok(s) = serde_json::from_value(v) {
            schema.open_api_v3_schema = s;
        }
    }
    crd
}
