//! The contract between the operator (pods and Vertex AI alike) and `mtl-trainer`, each item
//! written once: the command line the backends run, the environment they set, and the exit
//! codes the trainer answers with (docs/architecture.md). The files under the checkpoint URI
//! (`checkpoints.json`, `progress.json`, `logs/`) belong to `mtl-storage`.

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
