//! The trainer's error type: every variant says which file, field or value is at fault.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Job(#[from] mtl_crds::Error),
    #[error("{0}")]
    Invalid(String),
    /// A stop was requested (SIGTERM, Ctrl-C) before training started.
    #[error("stopped before training started")]
    Stopped,
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// What a file holds cannot be used, however often it is read (see
    /// [`Error::is_invalid_input`]).
    #[error("{path}: {message}")]
    InvalidInput { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Line {
        path: String,
        line: u64,
        message: String,
    },
    #[error(transparent)]
    Storage(#[from] mtl_storage::Error),
    #[error("libtorch: {0}")]
    Torch(String),
    #[error(
        "out of memory: {0}\nhint: lower spec.training.batchSize (raise gradientAccumulationSteps to keep the effective batch) or spec.model.maxLength"
    )]
    OutOfMemory(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: String, message: String },
    /// A launcher's environment variable (RANK, PET_NNODES, CLUSTER_SPEC, …) is wrong.
    #[error("{var}: {message}")]
    Env { var: String, message: String },
    /// A c10d rendezvous or collective failed (the message says which and why).
    #[error("distributed: {0}")]
    Dist(String),
    /// A collective failed and these ranks did not report in afterwards: they are gone.
    #[error("distributed: {what} failed: lost rank {}: {detail}", join(ranks))]
    PeerLost {
        what: String,
        ranks: Vec<usize>,
        detail: String,
    },
    /// A worker process started by the local agent failed.
    #[error("rank {rank} (local rank {local_rank}, pid {pid}) {status}")]
    WorkerFailed {
        rank: usize,
        local_rank: usize,
        pid: u32,
        status: String,
        /// Its exit code, when it exited rather than being killed by a signal.
        code: Option<i32>,
    },
}

fn join(ranks: &[usize]) -> String {
    ranks
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tch::TchError> for Error {
    /// libtorch's message without its C++ stack trace; running out of device or host memory
    /// is named as such, with what to change.
    fn from(e: tch::TchError) -> Self {
        let text = e.to_string();
        let message = text
            .split("Exception raised from")
            .next()
            .unwrap_or(&text)
            .trim()
            .to_string();
        if message.contains("out of memory") || message.contains("can't allocate memory") {
            Error::OutOfMemory(message)
        } else {
            Error::Torch(message)
        }
    }
}

impl Error {
    /// Whether running again cannot help: the job, its data, model or tokenizer is wrong, or
    /// its checkpoints belong to another job. The process then exits with
    /// [`mtl_crds::EXIT_INVALID_INPUT`], and the operator fails the job at once. Storage,
    /// device, memory and peer failures may pass and are retried.
    pub fn is_invalid_input(&self) -> bool {
        match self {
            Error::Job(_)
            | Error::Invalid(_)
            | Error::Line { .. }
            | Error::Tokenizer { .. }
            | Error::Env { .. }
            | Error::InvalidInput { .. } => true,
            // A data or model file that is not there stays missing until someone acts.
            Error::Storage(e) => e.is_not_found(),
            Error::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            // A worker that exited for invalid input: every rank would.
            Error::WorkerFailed { code, .. } => {
                *code == Some(i32::from(mtl_crds::EXIT_INVALID_INPUT))
            }
            _ => false,
        }
    }

    /// An error no retry can fix, about the file or URI at `path` (a data file's content, a
    /// model's config, a checkpoint of another job).
    pub fn invalid_input(path: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn file(path: impl std::fmt::Display, message: impl Into<String>) -> Self {
        Error::File {
            path: path.to_string(),
            message: message.into(),
        }
    }

    pub fn io(path: impl AsRef<std::path::Path>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.as_ref().display().to_string();
        move |source| Error::Io { path, source }
    }
}
