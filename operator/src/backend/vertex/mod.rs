//! Vertex AI backend: runs a `MultiTaskTrainingJob` as a Vertex AI CustomJob.
//!
//! The pieces, each in its own file:
//! - [`custom_job`]: the pure builder `MultiTaskTrainingJob` → `CustomJob` (display name,
//!   worker pool, container args, labels that tie the CustomJob back to the Kubernetes object).
//! - [`observe`]: the one table of Vertex AI job states ([`state_row`]): a CustomJob's
//!   `JobState` → the attempt's state, the job's phase, a condition reason and message, and the
//!   console URL.
//! - [`client`]: [`VertexClient`], a thin layer over `google-cloud-aiplatform-v1`'s `JobService`
//!   (REST transport): exactly one CustomJob per attempt (`ensure_created` adopts before it
//!   creates), cancel/stop, bounded retries of 429/503.
//! - [`error`]: [`Error`] and [`ErrorKind`], which the controller maps to conditions and
//!   requeue delays.
//! - [`backend`]: [`VertexBackend`], the controller's `AttemptBackend` for `backend: vertexAI`.
//!
//! The CLI that drives this backend by hand (`mtl-operator vertex submit|status|cancel`) is
//! [`crate::cli::vertex`].
//!
//! Endpoints: `https://{region}-aiplatform.googleapis.com` with Application Default Credentials;
//! `MTL_VERTEX_ENDPOINT` (or [`VertexClient::with_endpoint`]) points at a local stand-in with
//! anonymous credentials.

pub mod backend;
pub mod client;
pub mod custom_job;
pub mod error;
pub mod observe;

pub use backend::{VertexBackend, into_operator_error, next_look, with_remaining_deadline};
pub use client::{
    CancelOutcome, DeleteOutcome, ENDPOINT_ENV, RetryPolicy, StopState, Submitted, VertexClient,
    VertexClients, regional_endpoint,
};
pub use custom_job::{
    LABEL_ATTEMPT, LABEL_JOB, LABEL_MANAGED_BY, LABEL_NAMESPACE, LABEL_UID, TRAINER_CACHE_DIR,
    build_custom_job, display_name, job_labels, parent, sanitize_label_value, validate_for_vertex,
};
pub use error::{Error, ErrorKind, Operation, Result};
pub use observe::{
    Lifecycle, StateRow, VertexObservation, console_url, observe, observe_with_suspend,
    observed_attempt, phase_of, platform_disruption, state_row,
};

/// The Vertex AI API types (CustomJob, JobState, …) this module speaks, re-exported so callers
/// need no direct dependency on the Google crate.
pub use google_cloud_aiplatform_v1::model::{CustomJob, JobState};
