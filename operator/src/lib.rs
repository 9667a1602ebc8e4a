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

/// The one server-side apply field manager for pods and status (the controller and the pods
/// backend both write under it).
pub const FIELD_MANAGER: &str = "mtl-operator";

/// The operator's `User-Agent` on every Kubernetes API request.
pub const USER_AGENT: &str = concat!("mtl-operator/", env!("CARGO_PKG_VERSION"));
pub use error::{Error, ErrorKind, Result};
