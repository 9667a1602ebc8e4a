//! Where an attempt runs. The decision layer ([`crate::decide`]) sees only the
//! backend-neutral [`ObservedAttempt`]; each backend turns its own objects (a pod, a Vertex AI
//! custom job) into one, and carries out [`crate::decide::Action`]s through [`AttemptBackend`].

pub mod pods;
pub mod vertex;

use std::future::Future;

use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};

use crate::Result;

/// One attempt (pod, Vertex AI job) as the backend reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedAttempt {
    /// Attempt number (1-based), the same as `status.attempt` when it is current.
    pub attempt: u32,
    /// Backend name of the attempt: the pod name, the Vertex AI job resource name.
    pub name: String,
    pub state: AttemptState,
    /// Teardown has begun (deletion requested, or the platform marked it for disruption) and
    /// a trainer may still be writing a checkpoint: start no other attempt until it is over.
    /// For an attempt of several workers that ended on one of them (`state` terminal) this
    /// holds while any other worker is still up.
    pub terminating: bool,
    /// Workers of the attempt (pods; a Vertex AI job is one).
    pub workers: u32,
    /// Workers whose trainer is running.
    pub running: u32,
    /// Workers still up that nobody has asked to stop (no deletion, no disruption): what a
    /// stop would end.
    pub unstopped: u32,
    /// Why a pending attempt does not run yet, when the platform says something a user must
    /// act on (an image that cannot be pulled, a pod no node can take).
    pub waiting: Option<Waiting>,
}

/// A reason an attempt is stuck before its trainer starts, as Kubernetes words it.
#[derive(Clone, Debug, PartialEq)]
pub struct Waiting {
    /// e.g. `ImagePullBackOff`, `Unschedulable`, `CreateContainerConfigError`.
    pub reason: String,
    pub message: String,
}

impl ObservedAttempt {
    /// A one-worker attempt in `state`: `terminating` when teardown of a live worker began.
    pub fn single(attempt: u32, name: String, state: AttemptState, terminating: bool) -> Self {
        let terminating = terminating && !state.is_terminal();
        Self {
            attempt,
            name,
            running: u32::from(state == AttemptState::Running),
            unstopped: u32::from(!state.is_terminal() && !terminating),
            state,
            terminating,
            workers: 1,
            waiting: None,
        }
    }
}

/// Lifecycle of one attempt, reduced to what the job's phase depends on.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptState {
    /// Accepted but not yet running (scheduling, pulling the image, queued).
    Pending,
    Running,
    Succeeded,
    /// The trainer failed: counts against `runPolicy.backoffLimit`.
    Failed {
        reason: String,
        message: String,
    },
    /// Lost to the platform (preemption, eviction, node loss): replaced without spending
    /// `backoffLimit`.
    Disrupted {
        reason: String,
        message: String,
    },
    /// The trainer exited with `EXIT_INVALID_INPUT`: its spec, data, model or checkpoints are
    /// wrong in a way no retry fixes. The job fails at once, reason `InvalidInput`.
    InvalidInput {
        message: String,
    },
    /// Stopped by someone outside the operator (a Vertex AI CustomJob cancelled in the
    /// console): the job fails with reason `Cancelled` rather than being replaced.
    Cancelled {
        message: String,
    },
}

impl AttemptState {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            AttemptState::Succeeded
                | AttemptState::Failed { .. }
                | AttemptState::Disrupted { .. }
                | AttemptState::Cancelled { .. }
                | AttemptState::InvalidInput { .. }
        )
    }
}

/// What a backend does for the reconciler. Implemented by [`pods::Pods`] and
/// [`vertex::VertexBackend`].
pub trait AttemptBackend {
    /// Human name of attempt `attempt` for events, e.g. `pod train-3`.
    fn describe(&self, job: &MultiTaskTrainingJob, attempt: u32) -> String;

    /// Checks that `job` can run on this backend at all ([`crate::Error::InvalidSpec`] if not).
    fn validate(&self, job: &MultiTaskTrainingJob) -> Result<()>;

    /// Looks up attempt `attempt` of `job`. `Ok(None)` when it does not exist (never created, or
    /// deleted and gone).
    fn observe(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
    ) -> impl Future<Output = Result<Option<ObservedAttempt>>> + Send;

    /// Starts attempt `attempt`. Idempotent: starting an attempt that already exists is a no-op.
    /// Records the attempt's backend name in `status`.
    fn start(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        status: &mut MultiTaskTrainingJobStatus,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Asks a running attempt to stop (the trainer gets SIGTERM, checkpoints, exits).
    /// Stopping what is already gone is not an error.
    fn stop(
        &self,
        job: &MultiTaskTrainingJob,
        attempt: u32,
        name: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}
