//! How to run a job beyond what its spec says ([`RunOptions`]), and what a run ended with
//! ([`Outcome`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use mtl_crds::{BestCheckpoint, CheckpointRef, RunEnd};
use tch::Device;

use crate::vertex::VertexEnv;

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
    pub vertex: VertexEnv,
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

impl Outcome {
    /// A run stopped while its data was read: nothing trained, nothing saved.
    pub fn stopped_before_training() -> Self {
        Self {
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
        }
    }
}
