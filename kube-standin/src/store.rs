//! Generic object storage keyed by (group, resource, namespace, name), with one global
//! resourceVersion counter, a bounded event history for watches, finalizers, graceful pod
//! deletion and ownerReference garbage collection.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::admission::field_error::{ErrorType, FieldError};
use crate::admission::{self, FieldValidation, Origin};
use crate::clock::now_rfc3339;
use crate::convert::{from_storage, to_storage};
use crate::crd;
use crate::error::ApiError;
use crate::patch::{self, PatchType};
use crate::pods;
use crate::resources::{Flavor, Registry, ResourceType};
use crate::selectors::Selectors;

/// Storage key of one object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub group: String,
    pub plural: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    fn new(rt: &ResourceType, namespace: &str, name: &str) -> Self {
        let (group, plural) = rt.storage();
        Self {
            group: group.into(),
            plural: plural.into(),
            namespace: if rt.namespaced {
                namespace.into()
            } else {
                String::new()
            },
            name: name.into(),
        }
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Part {
    /// The main resource: `.status` is kept for types with a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
    /// Server-internal writers (the kubelet stand-in, the scheduler's binding): anything.
    Internal,
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub field_validation: FieldValidation,
    pub origin: Origin,
}

/// A written object and the warnings of its admission.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Propagation {
    Orphan,
    #[default]
    Background,
    Foreground,
}

/// The `DeleteOptions` body of a delete.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeleteOpts {
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub(crate) fn from_body(body: &Value) -> Result<Self, ApiError> {
        let propagation = match body.get("propagationPolicy").and_then(Value::as_str) {
            None => match body.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Propagation::Orphan,
                _ => Propagation::Background,
            },
            Some("Orphan") => Propagation::Orphan,
            Some("Background") => Propagation::Background,
            Some("Foreground") => Propagation::Foreground,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: {other:?}"
                )));
            }
        };
        let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
        Ok(Self {
            grace_period_seconds: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation,
            precondition_uid: s("/preconditions/uid"),
            precondition_rv: s("/preconditions/resourceVersion"),
            dry_run: body
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
struct HistEvent {
    rv: u64,
    group: String,
    plural: String,
    namespace: String,
    etype: EventType,
    object: Arc<Value>,
    old: Option<Arc<Value>>,
}

/// What a watch stream should send next.
pub(crate) enum WatchPoll {
    Events(Vec<(EventType, Value)>, u64),
    Gone(ApiError),
}

/// Where a watch starts.
pub(crate) struct WatchStart {
    pub initial: Vec<Value>,
    pub pos: u64,
    pub epoch: u64,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<HistEvent>,
    history_cap: usize,
    /// Watches from a resourceVersion below this are answered 410 Gone.
    compacted_rv: u64,
    /// Bumped to end every open watch with 410 Gone.
    watch_epoch: u64,
    /// The last object each field manager applied: (key, manager, status?) -> object.
    applied: HashMap<(Key, String, bool), Value>,
    rng: u64,
    /// The built-in types plus those the stored CRDs serve.
    served: Arc<Registry>,
    /// Warnings of the write in progress.
    warnings: Vec<String>,
    /// Mutating admission on pod creation (a test standing in for a webhook).
    pod_webhooks: Vec<pods::PodWebhook>,
}

const CRD_GROUP: &str = "apiextensions.k8s.io";
const CRD_PLURAL: &str = "customresourcedefinitions";

fn crd_key(name: &str) -> Key {
    Key {
        group: CRD_GROUP.into(),
        plural: CRD_PLURAL.into(),
        namespace: String::new(),
        name: name.into(),
    }
}

fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str)
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    meta(obj)
        .get("deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Everything but metadata and status: what bumps `metadata.generation`.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn check_type(rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != rt.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

impl Inner {
    fn next_u64(&mut self) -> u64 {
        // SplitMix64: names and uids need uniqueness, not cryptographic strength.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..5)
            .map(|_| ALPHABET[(self.next_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }

    fn record(&mut self, key: &Key, etype: EventType, object: Value, old: Option<Value>) {
        self.history.push_back(HistEvent {
            rv: self.rv,
            group: key.group.clone(),
            plural: key.plural.clone(),
            namespace: key.namespace.clone(),
            etype,
            object: Arc::new(object),
            old: old.map(Arc::new),
        });
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
    }

    /// Stores `obj` under a new resourceVersion and records the event.
    fn put(&mut self, key: &Key, mut obj: Value, etype: EventType) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let old = self.objects.insert(key.clone(), obj.clone());
        self.record(key, etype, obj.clone(), old);
        obj
    }

    /// Removes the object (its final state `obj`), records DELETED, collects dependents.
    fn remove(&mut self, reg: &Registry, key: &Key, mut obj: Value) -> Value {
        self.rv += 1;
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(self.rv.to_string()));
        let old = self.objects.remove(key);
        self.record(key, EventType::Deleted, obj.clone(), old);
        self.applied.retain(|(k, _, _), _| k != key);
        if let Some(uid) = meta_str(&obj, "uid") {
            let uid = uid.to_string();
            self.collect_garbage(reg, &uid);
        }
        if key.group == CRD_GROUP && key.plural == CRD_PLURAL {
            self.rebuild_served(reg);
        } else if let Some(crd) = self.crd_of(key) {
            self.finish_crd_deletion(reg, &crd);
        }
        obj
    }

    /// Rebuilds the served types: the built-in ones plus every stored CRD's.
    fn rebuild_served(&mut self, builtins: &Registry) {
        let mut served = builtins.clone();
        for (_, obj) in self.range(CRD_GROUP, CRD_PLURAL, None) {
            for rt in crd::served_types(obj) {
                served.add(rt);
            }
        }
        self.served = Arc::new(served);
    }

    /// The CRD serving the objects under `key`, if any.
    fn crd_of(&self, key: &Key) -> Option<String> {
        let rt = self.served.for_storage(&key.group, &key.plural)?;
        rt.custom.as_ref().map(|c| c.crd.clone())
    }

    /// Whether the CRD named `crd` is being deleted.
    fn crd_terminating(&self, crd: &str) -> bool {
        self.objects.get(&crd_key(crd)).is_some_and(deleting)
    }

    /// The storage (group, plural) of the objects a stored CRD serves, if it is being deleted.
    fn terminating_crd_storage(&self, crd: &str) -> Option<(String, String)> {
        let obj = self.objects.get(&crd_key(crd)).filter(|o| deleting(o))?;
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Some((s("/spec/group"), s("/spec/names/plural")))
    }

    /// A CRD whose deletion started: deletes each of its objects (their own finalizers may
    /// hold them), then releases the CRD if none is left.
    fn delete_crd_objects(&mut self, reg: &Registry, crd: &str) {
        let Some((group, plural)) = self.terminating_crd_storage(crd) else {
            return;
        };
        let live: Vec<Key> = self
            .range(&group, &plural, None)
            .filter(|(_, o)| !deleting(o))
            .map(|(k, _)| k.clone())
            .collect();
        for key in live {
            let _ = self.delete(reg, &key, &DeleteOpts::default());
        }
        self.finish_crd_deletion(reg, crd);
    }

    /// Once a terminating CRD has no objects left, releases its cleanup finalizer: the CRD
    /// goes and its resource is no longer served.
    fn finish_crd_deletion(&mut self, reg: &Registry, crd: &str) {
        let Some((group, plural)) = self.terminating_crd_storage(crd) else {
            return;
        };
        if self.range(&group, &plural, None).next().is_some() {
            return;
        }
        let key = crd_key(crd);
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return;
        };
        if let Some(Value::Array(fs)) = meta_mut(&mut obj).get_mut("finalizers") {
            fs.retain(|f| f != crd::CLEANUP_FINALIZER);
        }
        if finalizers(&obj).is_empty() {
            self.remove(reg, &key, obj);
        } else {
            self.put(&key, obj, EventType::Modified);
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects
            .values()
            .any(|o| meta_str(o, "uid") == Some(uid))
    }

    fn dependents(&self, uid: &str) -> Vec<Key> {
        self.objects
            .iter()
            .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Background ownerReference garbage collection for a removed owner: each dependent is
    /// looked at as the collector looks at any object with a dangling reference.
    fn collect_garbage(&mut self, reg: &Registry, owner_uid: &str) {
        for key in self.dependents(owner_uid) {
            self.collect_if_dangling(reg, &key);
        }
    }

    /// The garbage collector's look at a created or updated object whose owners may already
    /// be gone (a controller that acted on a stale cache): without a live owner it is
    /// deleted, otherwise its dangling references are removed (`attemptToDeleteItem` in
    /// kube-controller-manager's garbagecollector, which runs on every add and update).
    fn collect_if_dangling(&mut self, reg: &Registry, key: &Key) {
        let Some(obj) = self.objects.get(key).cloned() else {
            return;
        };
        let (solid, dangling): (Vec<String>, Vec<String>) = owner_uids(&obj)
            .into_iter()
            .partition(|u| self.uid_exists(u));
        if dangling.is_empty() {
            return;
        }
        if solid.is_empty() {
            if !deleting(&obj) {
                tracing::debug!(?key, "garbage-collecting a dependent whose owners are gone");
                if let Err(e) = self.delete(reg, key, &DeleteOpts::default()) {
                    tracing::warn!(?key, error = %e, "garbage collection failed");
                }
            }
            return;
        }
        let mut obj = obj;
        if let Some(Value::Array(refs)) = meta_mut(&mut obj).get_mut("ownerReferences") {
            refs.retain(|r| {
                r.get("uid")
                    .and_then(Value::as_str)
                    .is_none_or(|u| !dangling.iter().any(|d| d == u))
            });
        }
        self.put(key, obj, EventType::Modified);
    }

    fn drop_owner_ref(&mut self, key: &Key, mut obj: Value, owner_uid: &str) {
        if let Some(Value::Array(refs)) = meta_mut(&mut obj).get_mut("ownerReferences") {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
        }
        self.put(key, obj, EventType::Modified);
    }

    fn create(
        &mut self,
        reg: &Registry,
        rt: &ResourceType,
        namespace: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        check_type(rt, &obj)?;
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        let body_ns = meta_str(&obj, "namespace").map(str::to_string);
        let m = meta_mut(&mut obj);
        if rt.namespaced {
            if let Some(ns) = body_ns.filter(|ns| !ns.is_empty() && ns != namespace) {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({ns}) does not match the namespace sent on the request ({namespace})"
                )));
            }
            m.insert("namespace".into(), json!(namespace));
        } else {
            m.remove("namespace");
        }
        for server_set in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ] {
            m.remove(server_set);
        }
        let name = match m.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let prefix = prefix.to_string();
                    format!("{prefix}{}", self.name_suffix())
                }
                _ => {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![FieldError::required(
                            "metadata.name",
                            "name or generateName is required",
                        )],
                    ));
                }
            },
        };
        if !is_dns_subdomain(&name) {
            return Err(ApiError::invalid(
                rt,
                &name,
                vec![FieldError::invalid(
                    "metadata.name",
                    Some(format!("{name:?}")),
                    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                )],
            ));
        }
        let key = Key::new(rt, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(rt, &name));
        }
        if let Some(custom) = &rt.custom
            && self.crd_terminating(&custom.crd)
        {
            return Err(ApiError::method_not_allowed(
                "create not allowed while custom resource definition is terminating",
            ));
        }
        match rt.flavor {
            Flavor::Pod => {
                for hook in &self.pod_webhooks {
                    hook.admit(&mut obj);
                }
                pods::prepare_create(&mut obj)
            }
            _ if rt.status_subresource => {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
            _ => {}
        }
        meta_mut(&mut obj).insert("name".into(), json!(name));
        if rt.flavor == Flavor::Crd {
            crd::prepare(rt, &mut obj, None)?;
        }
        let warnings = admission::admit(
            rt,
            &mut obj,
            None,
            false,
            opts.field_validation,
            opts.origin,
        )?;
        self.warnings.extend(warnings);
        let uid = self.uid();
        let m = meta_mut(&mut obj);
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if rt.generation {
            m.insert("generation".into(), json!(1));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let out = self.put(&key, obj, EventType::Added);
        if rt.flavor == Flavor::Crd {
            self.rebuild_served(reg);
        }
        self.collect_if_dangling(reg, &key);
        Ok(out)
    }

    fn update(
        &mut self,
        reg: &Registry,
        rt: &ResourceType,
        key: &Key,
        mut new: Value,
        part: Part,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let Some(old) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(rt, &key.name));
        };
        check_type(rt, &new)?;
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        let old_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        if let Some(rv) = meta_str(&new, "resourceVersion")
            && !rv.is_empty()
            && rv != old_rv
        {
            return Err(ApiError::modified(rt, &key.name));
        }
        if let Some(name) = meta_str(&new, "name")
            && name != key.name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
        match part {
            Part::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            Part::Main => {
                if rt.status_subresource
                    && let Some(o) = new.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => {
                            o.insert("status".into(), s.clone());
                        }
                        None => {
                            o.remove("status");
                        }
                    }
                }
                let m = meta_mut(&mut new);
                m.remove("managedFields");
                for immutable in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    match meta(&old).get(immutable) {
                        Some(v) => {
                            m.insert(immutable.into(), v.clone());
                        }
                        None => {
                            m.remove(immutable);
                        }
                    }
                }
                if deleting(&old) {
                    let before = finalizers(&old);
                    if let Some(added) = finalizers(&new).iter().find(|f| !before.contains(f)) {
                        return Err(ApiError::invalid(
                            rt,
                            &key.name,
                            vec![FieldError::new(
                                ErrorType::Forbidden,
                                "metadata.finalizers",
                                None,
                                &format!(
                                    "no new finalizers can be added if the object is being deleted, found new finalizers [{added:?}]"
                                ),
                            )],
                        ));
                    }
                }
                if rt.flavor == Flavor::Pod {
                    pods::validate_update(rt, &key.name, &old, &mut new)?;
                }
                if rt.flavor == Flavor::Crd {
                    crd::prepare(rt, &mut new, Some(&old))?;
                }
            }
            Part::Internal => {}
        }
        if part != Part::Internal {
            let warnings = admission::admit(
                rt,
                &mut new,
                Some(&old),
                part == Part::Status,
                opts.field_validation,
                opts.origin,
            )?;
            self.warnings.extend(warnings);
        }
        meta_mut(&mut new).insert("resourceVersion".into(), json!(old_rv));
        if rt.generation && spec_part(&new) != spec_part(&old) {
            let generation = meta(&old)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            meta_mut(&mut new).insert("generation".into(), json!(generation + 1));
        }
        if new == old {
            return Ok(old);
        }
        if opts.dry_run {
            return Ok(new);
        }
        let graceful_pending = meta(&new)
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0);
        if deleting(&new) && finalizers(&new).is_empty() && !graceful_pending {
            return Ok(self.remove(reg, key, new));
        }
        let out = self.put(key, new, EventType::Modified);
        if rt.flavor == Flavor::Crd {
            self.rebuild_served(reg);
        }
        self.collect_if_dangling(reg, key);
        Ok(out)
    }

    fn delete(&mut self, reg: &Registry, key: &Key, opts: &DeleteOpts) -> Result<Value, ApiError> {
        let rt = self
            .served
            .for_storage(&key.group, &key.plural)
            .cloned()
            .ok_or_else(|| ApiError::path_not_found(&key.plural))?;
        let Some(obj) = self.objects.get(key).cloned() else {
            return Err(ApiError::not_found(&rt, &key.name));
        };
        if let Some(uid) = &opts.precondition_uid
            && meta_str(&obj, "uid") != Some(uid)
        {
            return Err(ApiError::conflict(
                &rt,
                &key.name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&obj, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && meta_str(&obj, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict(
                &rt,
                &key.name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&obj, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if opts.dry_run {
            return Ok(obj);
        }
        let uid = meta_str(&obj, "uid").unwrap_or_default().to_string();
        match opts.propagation {
            Propagation::Orphan => {
                for dep in self.dependents(&uid) {
                    if let Some(d) = self.objects.get(&dep).cloned() {
                        self.drop_owner_ref(&dep, d, &uid);
                    }
                }
            }
            Propagation::Foreground => {
                for dep in self.dependents(&uid) {
                    let _ = self.delete(reg, &dep, &DeleteOpts::default());
                }
            }
            Propagation::Background => {}
        }
        let grace = if rt.flavor == Flavor::Pod {
            pods::grace_period(&obj, opts.grace_period_seconds)
        } else {
            0
        };
        let mut new = obj.clone();
        if deleting(&obj) {
            let pending = meta(&obj)
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if grace == 0 && pending > 0 {
                meta_mut(&mut new).insert("deletionGracePeriodSeconds".into(), json!(0));
                if finalizers(&new).is_empty() {
                    return Ok(self.remove(reg, key, new));
                }
                return Ok(self.put(key, new, EventType::Modified));
            }
            return Ok(obj);
        }
        if grace > 0 || !finalizers(&obj).is_empty() {
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            let m = meta_mut(&mut new);
            m.insert(
                "deletionTimestamp".into(),
                json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            );
            m.insert("deletionGracePeriodSeconds".into(), json!(grace));
            if rt.generation {
                let generation = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                m.insert("generation".into(), json!(generation + 1));
            }
            if rt.flavor == Flavor::Crd {
                crd::mark_terminating(&mut new);
                let out = self.put(key, new, EventType::Modified);
                self.delete_crd_objects(reg, &key.name);
                return Ok(out);
            }
            return Ok(self.put(key, new, EventType::Modified));
        }
        Ok(self.remove(reg, key, new))
    }

    fn range<'a>(
        &'a self,
        group: &'a str,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        let start = Key {
            group: group.into(),
            plural: plural.into(),
            namespace: namespace.unwrap_or_default().into(),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.group == group && k.plural == plural && namespace.is_none_or(|ns| k.namespace == ns)
        })
    }
}

/// The storage shared by the HTTP server, the kubelet stand-in and in-process handles.
pub(crate) struct Store {
    pub(crate) registry: Registry,
    inner: Mutex<Inner>,
    notify: watch::Sender<u64>,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// Parameters of a list.
#[derive(Debug, Default)]
pub(crate) struct ListOpts {
    pub selectors: Selectors,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub exact: bool,
}

impl Store {
    pub(crate) fn new(registry: Registry, history_cap: usize) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let served = Arc::new(registry.clone());
        Self {
            registry,
            inner: Mutex::new(Inner {
                rv: 0,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_cap: history_cap.max(1),
                compacted_rv: 0,
                watch_epoch: 0,
                applied: HashMap::new(),
                rng: seed,
                served,
                warnings: Vec::new(),
                pod_webhooks: Vec::new(),
            }),
            notify: watch::channel(0).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` under the lock, then wakes watchers if the resourceVersion moved.
    fn write<T>(&self, f: impl FnOnce(&mut Inner, &Registry) -> T) -> T {
        self.write_warned(f).0
    }

    /// [`write`](Self::write), also returning the admission warnings of the write.
    fn write_warned<T>(&self, f: impl FnOnce(&mut Inner, &Registry) -> T) -> (T, Vec<String>) {
        let mut inner = self.lock();
        inner.warnings.clear();
        let out = f(&mut inner, &self.registry);
        let warnings = std::mem::take(&mut inner.warnings);
        let rv = inner.rv;
        drop(inner);
        self.notify.send_if_modified(|v| {
            let changed = *v != rv;
            *v = rv;
            changed
        });
        (out, warnings)
    }

    /// The canonical type objects of `rt` are stored as (core/v1 for both event APIs).
    fn canonical(&self, rt: &ResourceType) -> ResourceType {
        if rt.flavor != Flavor::EventsV1Event {
            return rt.clone();
        }
        let (g, p) = rt.storage();
        self.registry.for_storage(g, p).unwrap_or(rt).clone()
    }

    /// The served types: built-in ones and those of the stored CRDs.
    pub(crate) fn served(&self) -> Arc<Registry> {
        self.lock().served.clone()
    }

    /// A served type by group, version and plural.
    pub(crate) fn find_type(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<ResourceType> {
        self.lock().served.find(group, version, plural).cloned()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub(crate) fn current_rv(&self) -> u64 {
        self.lock().rv
    }

    pub(crate) fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Result<Value, ApiError> {
        let key = Key::new(rt, ns, name);
        self.lock()
            .objects
            .get(&key)
            .cloned()
            .map(|o| from_storage(rt, o))
            .ok_or_else(|| ApiError::not_found(rt, name))
    }

    pub(crate) fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Value, ApiError> {
        let inner = self.lock();
        let (group, plural) = rt.storage();
        let mut list_rv = inner.rv;
        let mut after: Option<(String, String)> = None;
        if let Some(token) = &opts.continue_token {
            let decoded =
                unhex(token).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
            let mut parts = decoded.splitn(3, '\n');
            let rv = parts.next().and_then(|r| r.parse::<u64>().ok());
            let (Some(rv), Some(tns), Some(tname)) = (rv, parts.next(), parts.next()) else {
                return Err(ApiError::bad_request("continue key is not valid"));
            };
            if rv < inner.compacted_rv {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            list_rv = rv;
            after = Some((tns.to_string(), tname.to_string()));
        } else if let Some(rv) = opts.resource_version.as_deref().filter(|r| !r.is_empty()) {
            let rv: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
            if opts.exact && rv != inner.rv {
                return Err(ApiError::gone(format!(
                    "too old resource version: {rv} ({})",
                    inner.rv
                )));
            }
        }
        let mut items = Vec::new();
        let mut remaining = 0usize;
        let mut next: Option<String> = None;
        for (key, obj) in inner.range(group, plural, ns) {
            if let Some((ans, aname)) = &after
                && (&key.namespace, &key.name) <= (ans, aname)
            {
                continue;
            }
            if !opts.selectors.matches(obj) {
                continue;
            }
            if opts.limit.is_some_and(|l| l > 0 && items.len() >= l) {
                if next.is_none() {
                    let (lns, lname) = items
                        .last()
                        .map(|(k, _): &(&Key, Value)| (k.namespace.clone(), k.name.clone()))
                        .unwrap_or_default();
                    next = Some(hex(&format!("{list_rv}\n{lns}\n{lname}")));
                }
                remaining += 1;
                continue;
            }
            items.push((key, from_storage(rt, obj.clone())));
        }
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if let Some(token) = next {
            metadata["continue"] = json!(token);
            metadata["remainingItemCount"] = json!(remaining);
        }
        let items: Vec<Value> = items.into_iter().map(|(_, v)| v).collect();
        Ok(json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    pub(crate) fn create(
        &self,
        rt: &ResourceType,
        ns: &str,
        obj: Value,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let canonical = self.canonical(rt);
        let obj = to_storage(rt, obj);
        let (out, warnings) =
            self.write_warned(|inner, reg| inner.create(reg, &canonical, ns, obj, opts));
        out.map(|o| Written {
            object: from_storage(rt, o),
            warnings,
        })
    }

    pub(crate) fn replace(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        obj: Value,
        part: Part,
        opts: &WriteOpts,
    ) -> Result<Written, ApiError> {
        let canonical = self.canonical(rt);
        let key = Key::new(rt, ns, name);
        let obj = to_storage(rt, obj);
        let (out, warnings) =
            self.write_warned(|inner, reg| inner.update(reg, &canonical, &key, obj, part, opts));
        out.map(|o| Written {
            object: from_storage(rt, o),
            warnings,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: Value,
        part: Part,
        opts: &WriteOpts,
        force: bool,
    ) -> Result<Written, ApiError> {
        let canonical = self.canonical(rt);
        let key = Key::new(rt, ns, name);
        let _ = force; // No field ownership is tracked, so there are no conflicts to force.
        let opts = &WriteOpts {
            origin: if ptype == PatchType::Apply {
                Origin::Apply
            } else {
                Origin::Patch
            },
            ..opts.clone()
        };
        let (out, warnings) = self.write_warned(|inner, reg| {
            let existing = inner.objects.get(&key).cloned();
            if ptype == PatchType::Apply {
                let manager = opts.field_manager.clone().ok_or_else(|| {
                    ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                })?;
                for (field, what) in [("apiVersion", "apiVersion"), ("kind", "kind")] {
                    if body.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                        return Err(ApiError::bad_request(format!("{what} must be set")));
                    }
                }
                if let Some(n) = meta_str(&body, "name")
                    && n != name
                {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({name})"
                    )));
                }
                let applied_key = (key.clone(), manager, part == Part::Status);
                let result = match existing {
                    None if part == Part::Status => Err(ApiError::not_found(rt, name)),
                    None => {
                        let mut obj = body.clone();
                        meta_mut(&mut obj).insert("name".into(), json!(name));
                        inner.create(reg, &canonical, ns, to_storage(rt, obj), opts)
                    }
                    Some(old) => {
                        let mut new = from_storage(rt, old);
                        patch::apply(&mut new, inner.applied.get(&applied_key), &body);
                        inner.update(reg, &canonical, &key, to_storage(rt, new), part, opts)
                    }
                }?;
                if !opts.dry_run && inner.objects.contains_key(&key) {
                    inner.applied.insert(applied_key, body);
                }
                return Ok(result);
            }
            let Some(old) = existing else {
                return Err(ApiError::not_found(rt, name));
            };
            let mut new = from_storage(rt, old);
            match ptype {
                PatchType::Merge => patch::merge(&mut new, &body),
                PatchType::Strategic => patch::strategic(&mut new, &body),
                PatchType::Json => patch::json(&mut new, &body)?,
                PatchType::Apply => unreachable!("handled above"),
            }
            inner.update(reg, &canonical, &key, to_storage(rt, new), part, opts)
        });
        out.map(|o| Written {
            object: from_storage(rt, o),
            warnings,
        })
    }

    pub(crate) fn delete(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let key = Key::new(rt, ns, name);
        self.write(|inner, reg| inner.delete(reg, &key, opts))
            .map(|o| from_storage(rt, o))
    }

    pub(crate) fn delete_collection(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        selectors: &Selectors,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let (group, plural) = rt.storage();
        self.write(|inner, reg| {
            let keys: Vec<Key> = inner
                .range(group, plural, ns)
                .filter(|(_, o)| selectors.matches(o))
                .map(|(k, _)| k.clone())
                .collect();
            let mut items = Vec::new();
            for key in keys {
                match inner.delete(reg, &key, opts) {
                    Ok(o) => items.push(from_storage(rt, o)),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json!({
                "kind": format!("{}List", rt.kind),
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": inner.rv.to_string()},
                "items": items,
            }))
        })
    }

    /// Server-internal update (kubelet, scheduler): `f` edits the stored object freely.
    pub(crate) fn update_internal(
        &self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value) -> Result<(), ApiError>,
    ) -> Result<Value, ApiError> {
        let key = Key::new(rt, ns, name);
        self.write(|inner, reg| {
            let mut obj = inner
                .objects
                .get(&key)
                .cloned()
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            f(&mut obj)?;
            inner.update(reg, rt, &key, obj, Part::Internal, &WriteOpts::default())
        })
    }

    /// Registers a mutating admission webhook for pods created from now on.
    pub(crate) fn add_pod_webhook(&self, hook: pods::PodWebhook) {
        self.lock().pod_webhooks.push(hook);
    }

    /// All stored objects of a type (storage representation), for the kubelet.
    pub(crate) fn all(&self, rt: &ResourceType) -> Vec<Value> {
        let (group, plural) = rt.storage();
        self.lock()
            .range(group, plural, None)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Drops the event history: watches from any older resourceVersion now get 410 Gone.
    pub(crate) fn compact(&self) -> u64 {
        let mut inner = self.lock();
        inner.history.clear();
        inner.compacted_rv = inner.rv;
        inner.rv
    }

    /// Ends every open watch with an ERROR 410 event, as when a watch cache is reset.
    pub(crate) fn expire_watches(&self) {
        self.lock().watch_epoch += 1;
        self.notify.send_modify(|_| {});
    }

    pub(crate) fn watch_start(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        selectors: &Selectors,
        resource_version: Option<&str>,
    ) -> Result<Result<WatchStart, ApiError>, ApiError> {
        let inner = self.lock();
        let epoch = inner.watch_epoch;
        match resource_version.filter(|r| !r.is_empty() && *r != "0") {
            None => {
                let (group, plural) = rt.storage();
                let initial = inner
                    .range(group, plural, ns)
                    .filter(|(_, o)| selectors.matches(o))
                    .map(|(_, o)| from_storage(rt, o.clone()))
                    .collect();
                Ok(Ok(WatchStart {
                    initial,
                    pos: inner.rv,
                    epoch,
                }))
            }
            Some(rv) => {
                let pos: u64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?;
                if pos < inner.compacted_rv {
                    return Ok(Err(ApiError::gone(format!(
                        "too old resource version: {pos} ({})",
                        inner.compacted_rv + 1
                    ))));
                }
                Ok(Ok(WatchStart {
                    initial: Vec::new(),
                    pos,
                    epoch,
                }))
            }
        }
    }

    pub(crate) fn watch_poll(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        selectors: &Selectors,
        pos: u64,
        epoch: u64,
    ) -> WatchPoll {
        let inner = self.lock();
        if epoch != inner.watch_epoch {
            return WatchPoll::Gone(ApiError::gone(format!(
                "too old resource version: {pos} ({})",
                inner.rv + 1
            )));
        }
        if pos < inner.compacted_rv {
            return WatchPoll::Gone(ApiError::gone(format!(
                "too old resource version: {pos} ({})",
                inner.compacted_rv + 1
            )));
        }
        let (group, plural) = rt.storage();
        let start = inner.history.partition_point(|e| e.rv <= pos);
        let mut out = Vec::new();
        for e in inner.history.range(start..) {
            if e.group != group || e.plural != plural || ns.is_some_and(|n| n != e.namespace) {
                continue;
            }
            let now = selectors.matches(&e.object);
            let etype = match e.etype {
                EventType::Modified => {
                    let before = e.old.as_deref().is_some_and(|o| selectors.matches(o));
                    match (before, now) {
                        (true, true) => Some(EventType::Modified),
                        (false, true) => Some(EventType::Added),
                        (true, false) => Some(EventType::Deleted),
                        (false, false) => None,
                    }
                }
                other => now.then_some(other),
            };
            if let Some(t) = etype {
                out.push((t, from_storage(rt, (*e.object).clone())));
            }
        }
        WatchPoll::Events(out, inner.rv.max(pos))
    }
}
