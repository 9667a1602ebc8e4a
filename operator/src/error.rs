//! The operator's one error type, and how long to wait before retrying each kind.

use std::time::Duration;

/// Everything that can go wrong while reconciling, electing a leader or serving metrics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("finalizer {finalizer}: {source}")]
    Finalizer {
        finalizer: &'static str,
        #[source]
        source: Box<kube::runtime::finalizer::Error<Error>>,
    },

    /// The job cannot be run as written; retrying soon will not help.
    #[error("job {job}: {message}")]
    InvalidSpec { job: String, message: String },

    /// An object from the API server lacks a field the API guarantees (name, namespace, uid).
    #[error("{kind} has no {field}")]
    MissingField {
        kind: &'static str,
        field: &'static str,
    },

    /// An object of the name the job needs exists and is not the job's: a deleted job's pod
    /// still terminating, or someone else's. Retried after a pause; it shows in `Synced`.
    #[error(
        "{what} exists but is not controlled by this job (a deleted job's pod still terminating, or another object of that name)"
    )]
    NotOwned { what: String },

    /// An object the start needs is still being deleted (taken back after an earlier start
    /// was cut short): retried once it is gone.
    #[error("{what} is still terminating from an earlier try; retrying once it is gone")]
    Terminating { what: String },

    #[error("serialising {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// A Vertex AI call failed; the Vertex error keeps its class (a refused request, a
    /// permission, an outage), which decides what the controller does, and the HTTP status
    /// Vertex AI answered with (`source.status_code()`).
    #[error("job {job}: {source}")]
    Vertex {
        job: String,
        #[source]
        source: Box<crate::backend::vertex::Error>,
    },

    /// A reconcile took longer than `--reconcile-timeout-seconds` and was abandoned.
    #[error("{what}: gave up after {}s", after.as_secs())]
    Timeout { what: String, after: Duration },

    #[error("lease {lease}: {message}")]
    Lease { lease: String, message: String },

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Coarse class of an error: decides the requeue delay and labels the error metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Someone else wrote the object first (409): retry at once with fresh data.
    Conflict,
    /// API server or network trouble (5xx, 429, timeouts, connection errors): back off.
    Transient,
    /// The request or the job is wrong (4xx other than conflict, bad spec): retrying soon won't fix it.
    BadSpec,
    /// The binary lacks a backend or cannot serialise its own types.
    Internal,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Conflict => "conflict",
            ErrorKind::Transient => "transient",
            ErrorKind::BadSpec => "bad_spec",
            ErrorKind::Internal => "internal",
        }
    }

    /// How long the controller waits before reconciling the object again.
    pub fn requeue_after(self) -> Duration {
        match self {
            ErrorKind::Conflict => Duration::from_secs(1),
            ErrorKind::Transient => Duration::from_secs(15),
            ErrorKind::BadSpec => Duration::from_secs(300),
            ErrorKind::Internal => Duration::from_secs(120),
        }
    }
}

fn kube_kind(e: &kube::Error) -> ErrorKind {
    match e {
        kube::Error::Api(status) => match status.code {
            409 => ErrorKind::Conflict,
            429 | 500..=599 => ErrorKind::Transient,
            // 404 mid-reconcile: the object went away under us; the watch catches up quickly.
            404 => ErrorKind::Transient,
            // A ResourceQuota's refusal lasts until other jobs free their share: retry soon,
            // as the Job controller does.
            403 if status.message.contains("exceeded quota") => ErrorKind::Transient,
            400..=499 => ErrorKind::BadSpec,
            _ => ErrorKind::Transient,
        },
        kube::Error::SerdeError(_) => ErrorKind::Internal,
        _ => ErrorKind::Transient,
    }
}

impl Error {
    /// The backend refused the request as written (Vertex AI's 400 INVALID_ARGUMENT): the
    /// same request cannot succeed, so the job fails instead of retrying.
    pub fn is_refused_spec(&self) -> bool {
        matches!(self, Error::Vertex { source, .. }
            if source.kind() == crate::backend::vertex::ErrorKind::InvalidSpec)
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Kube(e) => kube_kind(e),
            Error::Finalizer { source, .. } => {
                use kube::runtime::finalizer::Error as F;
                match source.as_ref() {
                    F::ApplyFailed(e) | F::CleanupFailed(e) => e.kind(),
                    // A failed JSON-patch `test` (422) means someone changed the finalizers
                    // concurrently: retry at once like a conflict.
                    F::AddFinalizer(kube::Error::Api(s))
                    | F::RemoveFinalizer(kube::Error::Api(s))
                        if s.code == 422 =>
                    {
                        ErrorKind::Conflict
                    }
                    F::AddFinalizer(e) | F::RemoveFinalizer(e) => kube_kind(e),
                    F::UnnamedObject | F::InvalidFinalizer => ErrorKind::Internal,
                }
            }
            Error::InvalidSpec { .. } => ErrorKind::BadSpec,
            Error::Vertex { source, .. } => {
                use crate::backend::vertex::ErrorKind as V;
                match source.kind() {
                    // Fixed by a person (the spec, an IAM grant): polled slowly, reported.
                    V::InvalidSpec | V::PermissionDenied | V::Unauthenticated => ErrorKind::BadSpec,
                    V::NotFound | V::Transient | V::Other => ErrorKind::Transient,
                }
            }
            Error::MissingField { .. } => ErrorKind::BadSpec,
            Error::Serialize { .. } => ErrorKind::Internal,
            Error::Lease { .. }
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::NotOwned { .. }
            | Error::Terminating { .. } => ErrorKind::Transient,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        })))
    }

    #[test]
    fn requeue_delay_follows_error_kind() {
        let table = [
            (api(409), ErrorKind::Conflict),
            (api(500), ErrorKind::Transient),
            (api(503), ErrorKind::Transient),
            (api(429), ErrorKind::Transient),
            (api(422), ErrorKind::BadSpec),
            (api(403), ErrorKind::BadSpec),
            (
                Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
                    code: 403,
                    message: "pods \"train-1\" is forbidden: exceeded quota: gpus".into(),
                    ..Default::default()
                }))),
                ErrorKind::Transient,
            ),
            (
                Error::InvalidSpec {
                    job: "j".into(),
                    message: "no image".into(),
                },
                ErrorKind::BadSpec,
            ),
        ];
        for (err, kind) in table {
            assert_eq!(err.kind(), kind, "{err}");
        }
        assert!(ErrorKind::Conflict.requeue_after() < ErrorKind::Transient.requeue_after());
        assert!(ErrorKind::Transient.requeue_after() < ErrorKind::BadSpec.requeue_after());
    }

    #[test]
    fn finalizer_errors_classify_by_their_cause() {
        use kube::runtime::finalizer::Error as F;
        let e = Error::Finalizer {
            finalizer: "x",
            source: Box::new(F::ApplyFailed(api(409))),
        };
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let Error::Kube(inner) = api(422) else {
            unreachable!()
        };
        let e = Error::Finalizer {
            finalizer: "x",
            source: Box::new(F::AddFinalizer(inner)),
        };
        assert_eq!(
            e.kind(),
            ErrorKind::Conflict,
            "a failed patch test is a race, not a bad spec"
        );
    }
}
