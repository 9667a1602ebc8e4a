//! Training. [`Trainer`] owns the model, the optimizer, the sampler, the data and the
//! checkpoint store; its loop reads as a sequence of named steps. [`train`] runs one job to
//! the end, resuming from the newest checkpoint under `spec.checkpoints.uri`.
//!
//! - `setup`: everything a run is built from (job checks, model files, data, model,
//!   optimizer, sampler, schedule), before the first step.
//! - `trainer`: the [`Trainer`] and its loop (resume, step, log, evaluate, checkpoint,
//!   finish); `world`: its membership of a data-parallel world.
//! - `step`: one optimizer step over the micro-batches of a gradient-accumulation group.
//! - `report`: what the run tells as it goes (log lines, the progress bar, TensorBoard
//!   `summaries`, `progress.json` (`live`), hypertune reports), over logging `interval`s.
//! - `options`: [`RunOptions`] and [`Outcome`].

mod interval;
mod live;
mod options;
mod report;
mod setup;
mod step;
pub mod summaries;
mod trainer;
mod world;

use mtl_crds::MultiTaskTrainingJobSpec;

use crate::Result;
use crate::distributed::ProcessGroup;

pub use options::{Outcome, RunOptions};
pub use step::{Micro, MicroResult, Parallel, StepOutput, StepSettings, train_step};
pub use trainer::Trainer;

/// Trains `spec` to the end (or until stopped), resuming from the newest checkpoint under
/// `spec.checkpoints.uri` if there is one.
pub fn train(spec: &MultiTaskTrainingJobSpec, opts: &RunOptions) -> Result<Outcome> {
    train_in(spec, opts, None)
}

/// [`train`] as one rank of `pg`'s data-parallel world (every rank calls it).
pub fn train_in(
    spec: &MultiTaskTrainingJobSpec,
    opts: &RunOptions,
    pg: Option<ProcessGroup>,
) -> Result<Outcome> {
    match Trainer::with_world(spec.clone(), opts.clone(), pg) {
        Ok(mut trainer) => trainer.run(),
        // Stopped while the data was read: nothing trained, nothing to save.
        Err(crate::Error::Stopped) => Ok(Outcome::stopped_before_training()),
        Err(e) => Err(e),
    }
}
