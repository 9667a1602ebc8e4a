//! Training. [`Trainer`] owns the model, the optimizer, the sampler, the data and the
//! checkpoint store; its loop reads as a sequence of named steps. [`train`] runs one job to
//! the end, resuming from the newest checkpoint under `spec.checkpoints.uri`.

mod early_stop;
mod interval;
mod live;
mod step;
pub mod summaries;
mod trainer;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mtl_crds::{
    BestCheckpoint, CheckpointRef, MultiTaskTrainingJobSpec, RunEnd, TaskSpec, TrainingSpec,
};
use tch::Device;

use crate::Result;
use crate::config::ModelConfig;
use crate::model::{HeadSpec, MultiTaskModel};
use crate::optim::LinearSchedule;

pub use early_stop::EarlyStopState;
pub use step::{Micro, MicroResult, Parallel, StepOutput, StepSettings, train_step};
pub use trainer::Trainer;

/// How to run, beyond what the spec says.
#[derive(Clone)]
pub struct RunOptions {
    pub device: Device,
    /// Where remote models and data are cached, and gs:// checkpoints are staged.
    pub cache_dir: PathBuf,
    /// Draw a progress bar when stderr is a terminal.
    pub progress: bool,
    /// Set (by SIGTERM, say) to checkpoint at the next step boundary and stop.
    pub stop: Arc<AtomicBool>,
    /// Stop as if signalled once this many steps are done (tests, `--stop-after`).
    pub stop_after: Option<u64>,
    /// Resume even though the batch size, accumulation, sampling, seed, tasks or training
    /// data changed since the checkpoint (`--force-resume`).
    pub force_resume: bool,
    /// Vertex AI's variables: the model directory, a tuning trial's checkpoints and metric.
    pub vertex: crate::vertex::VertexEnv,
}

impl RunOptions {
    pub fn cpu(cache_dir: PathBuf) -> Self {
        Self {
            device: Device::Cpu,
            cache_dir,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after: None,
            force_resume: false,
            vertex: Default::default(),
        }
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub step: u64,
    pub total_steps: u64,
    pub metrics: BTreeMap<String, f64>,
    /// Stopped early by a signal (after checkpointing, when a step had been trained).
    pub interrupted: bool,
    pub resumed_from: Option<u64>,
    /// The checkpoint this run committed last.
    pub checkpoint: Option<CheckpointRef>,
    /// How the run ended (`None` when interrupted).
    pub end: Option<RunEnd>,
    /// The best checkpoint, when `checkpoints.best` ranks them.
    pub best: Option<BestCheckpoint>,
    /// Where the final model was exported.
    pub model: Option<String>,
    /// The directory of the run's TensorBoard event files, when it wrote any.
    pub tensorboard: Option<String>,
}

/// Trains `spec` to the end (or until stopped), resuming from the newest checkpoint under
/// `spec.checkpoints.uri` if there is one.
pub fn train(spec: &MultiTaskTrainingJobSpec, opts: &RunOptions) -> Result<Outcome> {
    train_in(spec, opts, None)
}

/// [`train`] as one rank of `pg`'s data-parallel world (every rank calls it).
pub fn train_in(
    spec: &MultiTaskTrainingJobSpec,
    opts: &RunOptions,
    pg: Option<crate::dist::ProcessGroup>,
) -> Result<Outcome> {
    match Trainer::with_world(spec.clone(), opts.clone(), pg) {
        Ok(mut trainer) => trainer.run(),
        // Stopped while the data was read: nothing trained, nothing to save.
        Err(crate::Error::Stopped) => Ok(Outcome {
            step: 0,
            total_steps: 0,
            metrics: BTreeMap::new(),
            interrupted: true,
            resumed_from: None,
            checkpoint: None,
            end: None,
            best: None,
            model: None,
            tensorboard: None,
        }),
        Err(e) => Err(e),
    }
}

/// The learning-rate schedule of a run of `total` steps: `warmupSteps`, or `warmupRatio` of
/// the run rounded up.
pub fn schedule(tr: &TrainingSpec, total: u64) -> LinearSchedule {
    LinearSchedule {
        lr: tr.learning_rate,
        warmup: tr
            .warmup_steps
            .unwrap_or_else(|| (tr.warmup_ratio * total as f64).ceil() as u64),
        total,
    }
}

/// A model for `tasks` (one head each, in order), freshly initialised from `seed`.
pub fn build_model(
    config: ModelConfig,
    tasks: &[TaskSpec],
    device: Device,
    seed: u64,
) -> MultiTaskModel {
    // libtorch's generator is process-global: trainers built at once in one process (the
    // ranks of an in-process world) take turns, so each draws the initialisation it would
    // draw alone.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = INIT.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed as i64);
    MultiTaskModel::new(config, tasks.iter().map(HeadSpec::from).collect(), device)
}
