//! A local stand-in for the Kubernetes API server and the kubelet, for end-to-end tests of
//! kube-rs operators without a cluster.
//!
//! It serves plain HTTP on 127.0.0.1 and speaks the API server's protocol for what kube-rs
//! and `kubectl` use: discovery (legacy and aggregated), OpenAPI v2 (protobuf) and v3, Table
//! output, get/list/create/replace/delete/patch (merge, strategic as merge, JSON patch,
//! server-side apply), the status subresource, chunked watches with BOOKMARK events and
//! `410 Gone` ERROR events, finalizers, graceful pod deletion, pod scheduling gates and
//! ownerReference garbage collection. CustomResourceDefinitions are real objects: creating
//! one serves its resource, whose objects are pruned, defaulted and validated against the CRD's schema and CEL rules
//! as the API server does. A kubelet stand-in moves pods through their phases and disrupts
//! them, or runs their containers with podman. Tests can stand in for a mutating pod webhook
//! (Kueue's, [`PodWebhook::kueue`]) and make writes fail or hang ([`Fault`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), kube_standin::Error> {
//! let standin = kube_standin::StandIn::start().await?;
//! println!("{}", standin.url()); // http://127.0.0.1:PORT
//! standin.kubelet().set_auto_run(true);
//! let stats = standin.stats();
//! assert_eq!(stats.count("list", "pods"), 0);
//! # Ok(()) }
//! ```

mod admission;
mod cel;
mod clock;
mod convert;
mod crd;
mod error;
mod faults;
mod kubectl;
mod kubelet;
mod kueue;
mod openapi;
mod patch;
mod pods;
mod resources;
mod schema;
mod selectors;
mod server;
mod stats;
mod store;
mod table;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use admission::FieldValidation;
pub use cel::budget::{RULE_COST_LIMIT, RuleCost, SCHEMA_COST_LIMIT, rule_costs};
pub use error::{ApiError, Error};
pub use faults::{Fault, FaultEffect};
pub use kubectl::{Kubectl, KubectlOutput};
pub use kubelet::{ContainerExit, Disruption, Kubelet, KubeletConfig, Outcome, PodmanConfig};
pub use kueue::Kueue;
pub use pods::PodWebhook;
pub use resources::{CustomType, PrinterColumn};
pub use resources::{Flavor, Registry, ResourceType};
pub use stats::{RequestRecord, StatsSnapshot, VerbCount};

use server::Shared;
use stats::Stats;
use store::{DeleteOpts, ListOpts, Store};

/// Configures a [`StandIn`] before it starts.
#[derive(Debug, Clone)]
pub struct Builder {
    port: u16,
    registry: Registry,
    history_capacity: usize,
    bookmark_interval: Duration,
    request_log_capacity: usize,
    kubelet: KubeletConfig,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            port: 0,
            registry: Registry::default(),
            history_capacity: 10_000,
            bookmark_interval: Duration::from_secs(1),
            request_log_capacity: 10_000,
            kubelet: KubeletConfig::default(),
        }
    }
}

impl Builder {
    /// Port on 127.0.0.1 (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Serves one more resource type (or replaces one with the same group/version/plural).
    pub fn resource(mut self, rt: ResourceType) -> Self {
        self.registry.add(rt);
        self
    }

    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub fn history_capacity(mut self, events: usize) -> Self {
        self.history_capacity = events;
        self
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK (the real server: ~1 min).
    pub fn bookmark_interval(mut self, interval: Duration) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Requests kept in the request log (counters are unbounded).
    pub fn request_log_capacity(mut self, requests: usize) -> Self {
        self.request_log_capacity = requests;
        self
    }

    /// Initial kubelet stand-in settings.
    pub fn kubelet(mut self, config: KubeletConfig) -> Self {
        self.kubelet = config;
        self
    }

    /// Binds 127.0.0.1 and serves on the current tokio runtime.
    pub async fn start(self) -> Result<StandIn, Error> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let store = Arc::new(Store::new(self.registry, self.history_capacity));
        let stats = Arc::new(Stats::new(self.request_log_capacity));
        let kubelet = Kubelet::new(store.clone(), self.kubelet);
        let kubelet_task = kubelet.spawn_auto();
        let shared = Arc::new(Shared {
            store: store.clone(),
            stats: stats.clone(),
            kubelet: kubelet.clone(),
            bookmark_interval: self.bookmark_interval,
            addr,
            faults: Default::default(),
        });
        let (shutdown, rx) = oneshot::channel();
        let server = tokio::spawn(server::serve(listener, shared.clone(), rx));
        tracing::info!(url = %format!("http://{addr}"), "kube stand-in serving");
        Ok(StandIn {
            addr,
            store,
            stats,
            kubelet,
            shared: shared.clone(),
            shutdown: Some(shutdown),
            tasks: vec![server, kubelet_task],
        })
    }
}

/// A running stand-in. Dropping it stops the server.
pub struct StandIn {
    addr: SocketAddr,
    store: Arc<Store>,
    stats: Arc<Stats>,
    kubelet: Kubelet,
    shared: Arc<server::Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl StandIn {
    /// Starts with the defaults on a free port.
    pub async fn start() -> Result<Self, Error> {
        Builder::default().start().await
    }

    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) for the stand-in: no TLS, no credentials.
    pub fn kubeconfig(&self, namespace: &str) -> String {
        kubeconfig_yaml(&self.url(), namespace)
    }

    /// The kubelet stand-in.
    pub fn kubelet(&self) -> &Kubelet {
        &self.kubelet
    }

    /// Request counters and the request log.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot(true)
    }

    pub fn reset_stats(&self) {
        self.stats.reset();
    }

    /// Refuses or holds writes as `fault` says (until [`clear_faults`](Self::clear_faults)).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.faults.add(fault);
    }

    /// Ends every fault; held writes are then served.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Stands in for a mutating admission webhook on pods created from now on (e.g.
    /// [`PodWebhook::kueue`]).
    pub fn add_pod_webhook(&self, hook: PodWebhook) {
        self.store.add_pod_webhook(hook);
    }

    /// Stands in for Kueue (its pod webhook, and one ClusterQueue admitting `quota` pods at
    /// once with the pod controller's rules for groups; see [`Kueue`]) from now on.
    pub fn enable_kueue(&mut self, quota: u32) -> Kueue {
        self.store.add_pod_webhook(PodWebhook::kueue());
        let kueue = Kueue::new(self.store.clone(), quota);
        self.tasks.push(kueue.spawn());
        kueue
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store.current_rv()
    }

    /// Drops the watch event history: watches resuming from an older resourceVersion get
    /// an ERROR event with a 410 `Status`. Returns the compacted resourceVersion.
    pub fn compact(&self) -> u64 {
        self.store.compact()
    }

    /// Ends every open watch with an ERROR 410 event, so clients relist.
    pub fn expire_watches(&self) {
        self.store.expire_watches();
    }

    /// Compaction plus [`expire_watches`](Self::expire_watches): what a watch cache reset
    /// looks like to every client.
    pub fn compact_and_expire_watches(&self) -> u64 {
        let rv = self.store.compact();
        self.store.expire_watches();
        rv
    }

    fn rt(&self, api_version: &str, plural: &str) -> Result<ResourceType, Error> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.store
            .find_type(group, version, plural)
            .ok_or_else(|| Error::UnknownResource(format!("{plural}.{api_version}")))
    }

    /// Reads one object in-process (`api_version` like `v1` or `multitask.dev/v1alpha1`).
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Error> {
        let rt = self.rt(api_version, plural)?;
        Ok(self.store.get(&rt, namespace, name)?)
    }

    /// Lists objects in-process (all namespaces when `namespace` is `None`).
    pub fn list(
        &self,
        api_version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, Error> {
        let rt = self.rt(api_version, plural)?;
        let list = self.store.list(&rt, namespace, &ListOpts::default())?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Creates an object in-process, as a client's POST would (admitted the same way;
    /// `namespace` is ignored for cluster-scoped types).
    pub fn create(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, Error> {
        let rt = self.rt(api_version, plural)?;
        Ok(self
            .store
            .create(&rt, namespace, obj, &Default::default())?
            .object)
    }

    /// Deletes an object in-process (background propagation), as a client's DELETE would.
    pub fn delete(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Error> {
        let rt = self.rt(api_version, plural)?;
        Ok(self
            .store
            .delete(&rt, namespace, name, &DeleteOpts::default())?)
    }

    /// Stops serving and aborts open connections.
    pub async fn shutdown(mut self) {
        self.stop();
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // The first task is the server, which the signal stops gracefully; after `shutdown`
        // (then `drop`) there are none left.
        for t in self.tasks.iter().skip(1) {
            t.abort();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig for `url` with one context, no TLS and no credentials.
pub fn kubeconfig_yaml(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {url}
users:
- name: standin
  user: {{}}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
    namespace: {namespace}
current-context: standin
"
    )
}
