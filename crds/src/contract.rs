//! The contract between the operator (pods and Vertex AI alike) and `mtl-trainer`, each item
//! written once: the command line the backends run, the environment they set, and the exit
//! codes the trainer answers with, and the folders it writes under the checkpoint URI
//! (docs/architecture.md). The files the operator reads there (`checkpoints.json`,
//! `progress.json`) are `mtl-storage`'s, which reads and writes them for both.

/// The trainer's command line for a job: `train --job-json <spec as JSON>` (the images'
/// ENTRYPOINT is `mtl-trainer`).
pub fn trainer_args(spec_json: String) -> Vec<String> {
    vec![TRAIN_COMMAND.into(), JOB_JSON_FLAG.into(), spec_json]
}

/// The trainer's training subcommand.
pub const TRAIN_COMMAND: &str = "train";
/// The flag that carries the job's spec as JSON.
pub const JOB_JSON_FLAG: &str = "--job-json";

/// Where the trainer caches downloaded models and token stores (a scratch disk).
pub const ENV_CACHE_DIR: &str = "MTL_CACHE_DIR";
/// The job's name, for the trainer's logs.
pub const ENV_JOB_NAME: &str = "MTL_JOB_NAME";
/// The attempt number, which the trainer writes into `progress.json`.
pub const ENV_ATTEMPT: &str = "MTL_ATTEMPT";
/// Where the trainer writes its error for Kubernetes' termination message (default
/// `/dev/termination-log`).
pub const ENV_TERMINATION_LOG: &str = "MTL_TERMINATION_LOG";

/// The trainer's exit code for an error no retry can fix (an invalid spec, data file, model
/// or tokenizer, a checkpoint the job cannot resume from): the operator fails the job at
/// once, reason `InvalidInput`, without spending `backoffLimit` (as a Job's
/// `podFailurePolicy` `FailJob` rule on that exit code would).
pub const EXIT_INVALID_INPUT: u8 = 2;
/// The trainer's exit code after it checkpointed and stopped on SIGTERM (128 + 15).
pub const EXIT_STOPPED: u8 = 143;

/// The folder under the checkpoint URI that TensorBoard event files go to (unless Vertex AI
/// names one in [`torchrun::AIP_TENSORBOARD_LOG_DIR`]).
pub const LOGS_DIR: &str = "logs";
/// The folder under the checkpoint URI the finished model is exported to (Hugging Face layout),
/// unless Vertex AI names one in [`torchrun::AIP_MODEL_DIR`].
pub const MODEL_DIR: &str = "model";

/// The data-parallel world as launchers describe it: torchrun's (and PyTorchJob's) variables,
/// which the pods backend writes and the trainer reads, and Vertex AI's.
pub mod torchrun {
    /// Rank 0's address and port (one process per node, as `torchrun` sets them).
    pub const MASTER_ADDR: &str = "MASTER_ADDR";
    pub const MASTER_PORT: &str = "MASTER_PORT";
    /// Processes in the world, this process's rank, its rank on the node.
    pub const WORLD_SIZE: &str = "WORLD_SIZE";
    pub const RANK: &str = "RANK";
    pub const LOCAL_RANK: &str = "LOCAL_RANK";
    /// PyTorchJob's elastic-launch variables: rank 0's address and port, nodes, processes per
    /// node and this node's rank (the trainer then launches its processes itself).
    pub const PET_MASTER_ADDR: &str = "PET_MASTER_ADDR";
    pub const PET_MASTER_PORT: &str = "PET_MASTER_PORT";
    pub const PET_NNODES: &str = "PET_NNODES";
    pub const PET_NPROC_PER_NODE: &str = "PET_NPROC_PER_NODE";
    pub const PET_NODE_RANK: &str = "PET_NODE_RANK";
    /// Vertex AI's description of a custom job's worker pools (JSON).
    pub const CLUSTER_SPEC: &str = "CLUSTER_SPEC";
    /// Where Vertex AI wants the model, checkpoints and TensorBoard logs of a custom job.
    pub const AIP_MODEL_DIR: &str = "AIP_MODEL_DIR";
    pub const AIP_CHECKPOINT_DIR: &str = "AIP_CHECKPOINT_DIR";
    pub const AIP_TENSORBOARD_LOG_DIR: &str = "AIP_TENSORBOARD_LOG_DIR";
}
