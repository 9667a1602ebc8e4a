//! Errors of the Vertex AI backend, classified so reconcile can choose a condition and a requeue
//! delay without parsing messages.

use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::{Code, StatusDetails};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Vertex AI call that failed, and the IAM permission it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Get,
    List,
    Cancel,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create CustomJob",
            Operation::Get => "get CustomJob",
            Operation::List => "list CustomJobs",
            Operation::Cancel => "cancel CustomJob",
            Operation::Delete => "delete CustomJob",
        }
    }

    /// The IAM permission the call needs (all in `roles/aiplatform.user`).
    pub fn permission(self) -> &'static str {
        match self {
            Operation::Create => "aiplatform.customJobs.create",
            Operation::Get => "aiplatform.customJobs.get",
            Operation::List => "aiplatform.customJobs.list",
            Operation::Cancel => "aiplatform.customJobs.cancel",
            Operation::Delete => "aiplatform.customJobs.delete",
        }
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of an [`Error`]: what went wrong, not what to do about it. The controller's one
/// retry policy (`crate::ErrorKind::requeue_after`) maps each class to a requeue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job's spec cannot run on Vertex AI as written (missing field, bad machine or
    /// accelerator type). Retrying does not help; a new generation of the spec does.
    InvalidSpec,
    /// The operator's credentials lack an IAM permission. Fixed outside the cluster.
    PermissionDenied,
    /// No usable credentials (Application Default Credentials missing or rejected).
    Unauthenticated,
    /// The CustomJob does not exist.
    NotFound,
    /// 429, 503, connection errors, still failing after the bounded retries. Try again soon.
    Transient,
    /// Anything else Vertex AI answered (409, 412, 500, …).
    Other,
}

/// An error of the Vertex AI backend. Messages say what failed and what to change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job cannot be submitted as written; no request was sent.
    #[error("{job}: {message}")]
    InvalidSpec { job: String, message: String },
    /// Vertex AI answered 400 INVALID_ARGUMENT (bad machine or accelerator type, bad field).
    #[error("Vertex AI rejected {op} for {target}: {message}. {hint}")]
    Rejected {
        op: Operation,
        target: String,
        message: String,
        hint: String,
    },
    /// Vertex AI answered 403.
    #[error(
        "Vertex AI denied {op} on {target}: {message}. Grant {permission} to {principal}{extra}"
    )]
    PermissionDenied {
        op: Operation,
        target: String,
        message: String,
        /// The missing permission, as Vertex AI named it or as the call needs it.
        permission: String,
        principal: String,
        extra: String,
    },
    /// Vertex AI answered 401, or no credentials could be loaded.
    #[error(
        "Vertex AI {op} on {target}: not authenticated ({message}). Provide Application Default Credentials (Workload Identity on GKE, GOOGLE_APPLICATION_CREDENTIALS, or `gcloud auth application-default login`)"
    )]
    Unauthenticated {
        op: Operation,
        target: String,
        message: String,
    },
    #[error("Vertex AI {op}: {target} not found")]
    NotFound { op: Operation, target: String },
    /// 429/503/connection failures that outlasted the retries.
    #[error("Vertex AI {op} on {target} still failing after {attempts} attempts: {message}")]
    Transient {
        op: Operation,
        target: String,
        attempts: u32,
        message: String,
    },
    #[error("Vertex AI {op} on {target} failed: {message}")]
    Api {
        op: Operation,
        target: String,
        message: String,
        /// The HTTP status Vertex AI answered with, when the call got that far.
        http: Option<u16>,
    },
    #[error("cannot build the Vertex AI client for {endpoint}: {message}")]
    Client { endpoint: String, message: String },
    #[error(transparent)]
    Job(#[from] mtl_crds::Error),
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The HTTP status Vertex AI answered with (400 refused, 401, 403, 404, or the code of any
    /// other answer); `None` when no answer decided the error (no request was sent, the
    /// retries ran out on connection errors and 5xx alike, the client could not be built).
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Error::Rejected { .. } => Some(400),
            Error::Unauthenticated { .. } => Some(401),
            Error::PermissionDenied { .. } => Some(403),
            Error::NotFound { .. } => Some(404),
            Error::Api { http, .. } => *http,
            Error::InvalidSpec { .. }
            | Error::Transient { .. }
            | Error::Client { .. }
            | Error::Job(_)
            | Error::Usage(_) => None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSpec { .. }
            | Error::Rejected { .. }
            | Error::Job(_)
            | Error::Usage(_) => ErrorKind::InvalidSpec,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Unauthenticated { .. } => ErrorKind::Unauthenticated,
            Error::Client { .. } => ErrorKind::Unauthenticated,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Transient { .. } => ErrorKind::Transient,
            Error::Api { .. } => ErrorKind::Other,
        }
    }
}

/// What a failed call looks like to the retry loop.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth another try: 429, 503, 502, 504, connection and I/O errors.
    Retryable(String),
    Fatal(Error),
}

/// Who was calling and on what, for error messages.
#[derive(Clone, Debug, Default)]
pub(crate) struct CallContext {
    /// What the call was about: a CustomJob name or `project/region` and job.
    pub target: String,
    pub project: String,
    pub region: String,
    /// The Google service account the CustomJob runs as (create only).
    pub job_service_account: Option<String>,
    /// Machine settings, quoted in the hint of a 400.
    pub machine: Option<String>,
}

/// Classifies a `google-cloud-gax` error for `op`.
pub(crate) fn classify(op: Operation, ctx: &CallContext, e: &GaxError) -> Failure {
    let status = e.status();
    let code = status.map(|s| s.code);
    let http = e.http_status_code();
    let message = status
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| e.to_string());

    let retryable_http = matches!(http, Some(429 | 502 | 503 | 504));
    let retryable_code = matches!(
        code,
        Some(Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded)
    );
    if retryable_http
        || retryable_code
        || e.is_connect()
        || e.is_io()
        || e.is_timeout()
        || e.is_transient_and_before_rpc()
    {
        return Failure::Retryable(match http {
            Some(h) => format!("HTTP {h}: {message}"),
            None => message,
        });
    }
    let target = ctx.target.clone();
    let fatal = match (http, code) {
        (Some(404), _) | (_, Some(Code::NotFound)) => Error::NotFound { op, target },
        (Some(403), _) | (_, Some(Code::PermissionDenied)) => {
            let named = status.and_then(|s| {
                s.details.iter().find_map(|d| match d {
                    StatusDetails::ErrorInfo(info) => info.metadata.get("permission").cloned(),
                    _ => None,
                })
            });
            let permission = named.unwrap_or_else(|| op.permission().to_string());
            let extra = match (op, ctx.job_service_account.as_deref()) {
                (Operation::Create, Some(sa)) => format!(
                    ". To run the job as {sa} (spec.vertexAI.serviceAccount), the operator also needs iam.serviceAccounts.actAs on it (roles/iam.serviceAccountUser)"
                ),
                _ => String::new(),
            };
            Error::PermissionDenied {
                op,
                target,
                message,
                permission,
                principal: format!(
                    "the operator's Google service account (Application Default Credentials; on GKE the Workload Identity of the operator's Kubernetes service account) on project {} (roles/aiplatform.user has it)",
                    ctx.project
                ),
                extra,
            }
        }
        (Some(401), _) | (_, Some(Code::Unauthenticated)) => Error::Unauthenticated {
            op,
            target,
            message,
        },
        (_, Some(Code::InvalidArgument)) | (Some(400), None) => Error::Rejected {
            op,
            target,
            message,
            hint: match (op, ctx.machine.as_deref()) {
                (Operation::Create, Some(machine)) => format!(
                    "Check spec.vertexAI ({machine}): the machine type must exist in {region} and accept that accelerator type and count (https://cloud.google.com/vertex-ai/docs/training/configure-compute); accelerator types are API names such as NVIDIA_TESLA_T4, NVIDIA_L4",
                    region = ctx.region
                ),
                _ => "Fix the request named above".into(),
            },
        },
        _ => Error::Api {
            op,
            target,
            message: match (http, code) {
                (Some(h), Some(c)) => format!("HTTP {h} {c}: {message}"),
                (Some(h), None) => format!("HTTP {h}: {message}"),
                (None, Some(c)) => format!("{c}: {message}"),
                (None, None) => message,
            },
            http,
        },
    };
    Failure::Fatal(fatal)
}

/// True when the error is Vertex's answer to cancelling a job that already finished.
pub(crate) fn is_failed_precondition(e: &GaxError) -> bool {
    e.status().map(|s| s.code) == Some(Code::FailedPrecondition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;

    fn ctx() -> CallContext {
        CallContext {
            target: "projects/p/locations/us-central1".into(),
            project: "p".into(),
            region: "us-central1".into(),
            job_service_account: Some("trainer@p.iam.gserviceaccount.com".into()),
            machine: Some(
                "machineType n1-standard-8, acceleratorType NVIDIA_TESLA_T4, acceleratorCount 1"
                    .into(),
            ),
        }
    }

    fn service(code: Code, message: &str) -> GaxError {
        GaxError::service(Status::default().set_code(code).set_message(message))
    }

    #[test]
    fn classification() {
        for code in [Code::Unavailable, Code::ResourceExhausted] {
            assert!(matches!(
                classify(Operation::Create, &ctx(), &service(code, "busy")),
                Failure::Retryable(_)
            ));
        }
        let Failure::Fatal(e) = classify(
            Operation::Create,
            &ctx(),
            &service(Code::PermissionDenied, "Permission denied"),
        ) else {
            panic!("403 must not be retried")
        };
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(e.status_code(), Some(403));
        let text = e.to_string();
        assert!(text.contains("aiplatform.customJobs.create"), "{text}");
        assert!(text.contains("iam.serviceAccounts.actAs"), "{text}");

        let Failure::Fatal(e) = classify(
            Operation::Create,
            &ctx(),
            &service(Code::InvalidArgument, "bad machine"),
        ) else {
            panic!("400 must not be retried")
        };
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert_eq!(e.status_code(), Some(400));
        assert!(e.to_string().contains("spec.vertexAI"));
        // The controller fails the job rather than retrying the same request.
        let e = crate::Error::Vertex {
            job: "j".into(),
            source: Box::new(e),
        };
        assert!(e.is_refused_spec());
    }
}
