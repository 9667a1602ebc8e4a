//! The resource types the stand-in serves, and the discovery documents that describe them.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::schema::Schema;

/// One `additionalPrinterColumns` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// What a CRD version adds to the type it serves.
#[derive(Debug, Clone)]
pub struct CustomType {
    /// The CRD's name (`plural.group`).
    pub crd: String,
    pub(crate) schema: Option<Schema>,
    /// `openAPIV3Schema` as written, for the OpenAPI documents.
    pub(crate) raw_schema: Value,
    pub(crate) columns: Vec<PrinterColumn>,
}

/// Type-specific behaviour layered over the generic storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Plain object: no defaulting.
    Generic,
    /// core/v1 Pod: defaulting, status reset on create, immutable spec, graceful deletion.
    Pod,
    /// core/v1 Event: stored once, also served as events.k8s.io/v1 (converted).
    CoreEvent,
    /// events.k8s.io/v1 Event: a view over the core/v1 events storage.
    EventsV1Event,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition: checked when written, serves the
    /// resource it defines.
    Crd,
}

/// One served resource: `group/version` + plural, and how it behaves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    /// Serves `/status`; writes to the main resource ignore `.status` and vice versa.
    pub status_subresource: bool,
    /// Sets `metadata.generation` and bumps it on changes outside metadata and status.
    pub generation: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub flavor: Flavor,
    /// The schema and printer columns of a type served by a CustomResourceDefinition.
    pub custom: Option<Arc<CustomType>>,
}

impl ResourceType {
    /// A namespaced custom resource with a status subresource (what `#[kube(status = ..)]` makes).
    pub fn custom(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            namespaced: true,
            status_subresource: true,
            generation: true,
            short_names: Vec::new(),
            categories: Vec::new(),
            flavor: Flavor::Generic,
            custom: None,
        }
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            namespaced,
            status_subresource: false,
            generation: false,
            ..Self::custom(group, version, kind, plural)
        }
    }

    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Pod`, or `Kind.group` as the real server names kinds in messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// `pods`, or `plural.group` as the real server names resources in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub(crate) fn details(&self, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": self.plural});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }

    /// Where objects of this type live: events of both groups share one storage.
    pub(crate) fn storage(&self) -> (&str, &str) {
        match self.flavor {
            Flavor::EventsV1Event => ("", "events"),
            _ => (&self.group, &self.plural),
        }
    }

    fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// core/v1 pods.
pub fn pod_type() -> ResourceType {
    ResourceType {
        status_subresource: true,
        generation: true,
        short_names: vec!["po".into()],
        categories: vec!["all".into()],
        flavor: Flavor::Pod,
        ..ResourceType::builtin("", "v1", "Pod", "pods", true)
    }
}

/// The set of served resource types.
#[derive(Debug, Clone)]
pub struct Registry {
    types: Vec<ResourceType>,
}

/// apiextensions.k8s.io/v1 customresourcedefinitions.
pub fn crd_type() -> ResourceType {
    ResourceType {
        status_subresource: true,
        generation: true,
        short_names: vec!["crd".into(), "crds".into()],
        categories: vec!["api-extensions".into()],
        flavor: Flavor::Crd,
        ..ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
    }
}

impl Default for Registry {
    /// pods, events (both groups), namespaces, leases, services (stored as written: no
    /// cluster IPs or endpoints) and customresourcedefinitions; custom
    /// resources are served once their CRD is created.
    fn default() -> Self {
        let pods = pod_type();
        let core_events = ResourceType {
            short_names: vec!["ev".into()],
            flavor: Flavor::CoreEvent,
            ..ResourceType::builtin("", "v1", "Event", "events", true)
        };
        let namespaces = ResourceType {
            status_subresource: true,
            short_names: vec!["ns".into()],
            ..ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
        };
        let events_v1 = ResourceType {
            short_names: vec!["ev".into()],
            flavor: Flavor::EventsV1Event,
            ..ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true)
        };
        let leases = ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true);
        let services = ResourceType {
            short_names: vec!["svc".into()],
            categories: vec!["all".into()],
            ..ResourceType::builtin("", "v1", "Service", "services", true)
        };
        Self {
            types: vec![
                pods,
                core_events,
                namespaces,
                events_v1,
                leases,
                services,
                crd_type(),
            ],
        }
    }
}

impl Registry {
    /// Adds (or replaces) a served type.
    pub fn add(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.group == rt.group && t.version == rt.version && t.plural == rt.plural));
        self.types.push(rt);
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
    }

    /// The type objects in a storage are stored as (the canonical one for events).
    pub(crate) fn for_storage(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.storage() == (group, plural) && t.flavor != Flavor::EventsV1Event)
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) if !versions.contains(&t.version) => {
                    versions.push(t.version.clone())
                }
                Some(_) => {}
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    pub(crate) fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// `/api`
    pub(crate) fn api_versions(&self, server: &str) -> Value {
        json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
        })
    }

    fn api_group(group: &str, versions: &[String]) -> Value {
        let versions: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
            .collect();
        json!({
            "name": group,
            "versions": versions,
            "preferredVersion": versions[0],
        })
    }

    /// `/apis/<group>`
    pub(crate) fn api_group_doc(&self, group: &str) -> Option<Value> {
        let (g, versions) = self.groups().into_iter().find(|(g, _)| g == group)?;
        let mut doc = Self::api_group(&g, &versions);
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        Some(doc)
    }

    /// `/apis`
    pub(crate) fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(g, v)| Self::api_group(g, v))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/api/v1`, `/apis/<group>/<version>`
    pub(crate) fn api_resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for t in self
            .types
            .iter()
            .filter(|t| t.group == group && t.version == version)
        {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": t.verbs(),
                "shortNames": t.short_names,
                "categories": t.categories,
            }));
            if t.status_subresource {
                resources.push(json!({
                    "name": format!("{}/status", t.plural),
                    "singularName": "",
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    /// Aggregated discovery (`apidiscovery.k8s.io/v2`) for `/api` (core) or `/apis` (groups).
    pub(crate) fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".into()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .types
                            .iter()
                            .filter(|t| t.group == *g && t.version == *v)
                            .map(|t| {
                                let gvk = json!({"group": g, "version": v, "kind": t.kind});
                                let subresources: Vec<Value> = if t.status_subresource {
                                    vec![json!({"subresource": "status", "responseKind": gvk, "verbs": ["get", "patch", "update"]})]
                                } else {
                                    Vec::new()
                                };
                                json!({
                                    "resource": t.plural,
                                    "responseKind": gvk,
                                    "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": t.singular,
                                    "verbs": t.verbs(),
                                    "shortNames": t.short_names,
                                    "categories": t.categories,
                                    "subresources": subresources,
                                })
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g}, "versions": versions})
            })
            .collect();
        json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": items,
        })
    }
}
