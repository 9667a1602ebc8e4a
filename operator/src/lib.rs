//! mtl-operator library: reconcile logic, backends, status.
//!
//! - [`decide`]: where a job's phase is decided (pure, table-tested)
//! - [`controller`]: the kube-runtime controller that observes, decides, acts, writes status
//! - [`backend`]: where attempts run, behind one trait: `backend/pods/` (Kubernetes pods) and
//!   `backend/vertex/` (Vertex AI CustomJobs)
//! - [`cli`]: `mtl-operator vertex submit|status|cancel`, the Vertex AI backend without a cluster
//! - [`status`]: conditions and the checkpoint manifest folded into `.status`
//! - [`progress`]: the trainer's progress.json folded into `.status.progress`, `Stalled`
//! - [`policy`]: what jobs may ask for (policy as data); [`accepted`]: the signed accepted spec
//! - [`leader`], [`telemetry`] (Prometheus metrics), [`server`], [`manager`], [`client`]: running it in production

pub mod accepted;
pub mod backend;
pub mod cli;
pub mod client;
pub mod controller;
pub mod decide;
mod error;
pub mod leader;
pub mod manager;
pub mod policy;
pub mod progress;
pub mod server;
pub mod status;
pub mod telemetry;

#[cfg(test)]
mod fixtures;

pub use controller::FINALIZER;

// Constants several modules use.

/// The one server-side apply field manager for pods and status (the controller and the pods
/// backend both write under it).
pub const FIELD_MANAGER: &str = "mtl-operator";
/// Label naming the job a pod belongs to (the pods backend sets it, the controller watches by
/// it).
pub const LABEL_JOB: &str = "multitask.dev/job";
/// Kueue's queue label: on the job, copied onto its pods (Kueue's plain-Pod integration).
pub const KUEUE_QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// The waiting reason of an attempt Kueue has not admitted yet (both backends report it,
/// `decide` reads it).
pub const QUEUED: &str = "Queued";

/// The operator's `User-Agent` on every Kubernetes API request.
pub const USER_AGENT: &str = concat!("mtl-operator/", env!("CARGO_PKG_VERSION"));
pub use error::{Error, ErrorKind, Result};
