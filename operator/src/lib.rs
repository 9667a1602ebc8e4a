//! mtl-operator library: reconcile logic, backends, status.
//!
//! - [`decide`]: where a job's phase is decided (pure, table-tested)
//! - [`controller`]: the kube-runtime controller that observes, decides, acts, writes status
//! - [`backend`]: where attempts run (`backend/pods.rs`; Vertex AI plugs into the same trait)
//! - [`status`]: conditions and the checkpoint manifest folded into `.status`
//! - [`progress`]: the trainer's progress.json folded into `.status.progress`, `Stalled`
//! - [`leader`], [`metrics`], [`server`], [`manager`]: running it in production

pub mod backend;
pub mod controller;
pub mod decide;
mod error;
pub mod leader;
pub mod manager;
pub mod metrics;
pub mod progress;
pub mod server;
pub mod status;
pub mod vertex;

#[cfg(test)]
mod fixtures;

pub use controller::{FIELD_MANAGER, FINALIZER};
pub use error::{Error, ErrorKind, Result};
