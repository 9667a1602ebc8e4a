//! The [`Trainer`]: one training run and its loop, as named steps: set up, resume, then step,
//! log, evaluate and checkpoint until the end (or a stop), then finish.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use mtl_crds::{CheckpointRef, MultiTaskTrainingJobSpec, RunEnd};
use tracing::{info, warn};

use super::options::{Outcome, RunOptions};
use super::report::Report;
use super::setup::{Parts, Setup, setup};
use super::step::{Micro, Parallel, StepOutput, StepSettings, train_step};
use super::summaries;
use super::world::World;
use crate::checkpoint::{self, Restore, Snapshot};
use crate::data::TokenStore;
use crate::distributed::ProcessGroup;
use crate::eval::{self, EvalSet};
use crate::io::Storage;
use crate::model::MultiTaskModel;
use crate::state::TrainerState;
use crate::{Error, Result};

/// One training run: the job, what it trains (data, model, optimizer, sampler, schedule),
/// where it stands, and what it reports.
pub struct Trainer {
    spec: MultiTaskTrainingJobSpec,
    opts: RunOptions,
    store: Storage,
    parts: Parts,
    state: TrainerState,
    marks: Marks,
    /// Data parallel: this rank's world and the gradients it sums (None on one process).
    world: Option<World>,
    report: Report,
}

/// Where this attempt stands with its checkpoints and evaluations.
#[derive(Default)]
struct Marks {
    /// The step this attempt resumed from.
    resumed_from: Option<u64>,
    /// The last step checkpointed (by rank 0: every rank knows).
    last_saved: Option<u64>,
    /// The checkpoint this attempt committed last.
    last_entry: Option<CheckpointRef>,
    /// The step `state.metrics` were measured at.
    evaluated_at: Option<u64>,
}

impl Trainer {
    /// Fetches the model, reads and tokenizes the data, builds the model and optimizer, and
    /// resumes from the newest committed checkpoint when there is one. Everything that can be
    /// wrong with the job, its data or its model is found here, before the first step.
    pub fn new(spec: MultiTaskTrainingJobSpec, opts: RunOptions) -> Result<Self> {
        Self::with_world(spec, opts, None)
    }

    /// A trainer that is one rank of `pg`'s world: each step's batch of `batchSize × ranks`
    /// examples is split among the ranks, gradients are summed across them, rank 0 logs,
    /// evaluates and checkpoints.
    pub fn with_world(
        spec: MultiTaskTrainingJobSpec,
        opts: RunOptions,
        pg: Option<ProcessGroup>,
    ) -> Result<Self> {
        let Setup {
            spec,
            store,
            mut parts,
            mut state,
        } = setup(spec, &opts, pg.as_ref())?;
        let mut marks = Marks::default();
        resume(&store, &spec, &opts, &mut parts, &mut state, &mut marks)?;
        let world = match pg {
            Some(pg) => {
                World::agree_on_resume(
                    &pg,
                    state.global_step,
                    state.micro_step,
                    &spec.checkpoints.uri,
                )?;
                Some(World::join(pg, &parts.model, &parts.optim)?)
            }
            None => None,
        };
        let main = world.as_ref().is_none_or(|w| w.pg.is_main());
        let report = Report::new(&spec, &opts, state.global_step, state.total_steps, main);
        Ok(Self {
            spec,
            opts,
            store,
            parts,
            state,
            marks,
            world,
            report,
        })
    }

    /// Rank 0 (or the only process): the one that logs, evaluates and checkpoints.
    fn is_main(&self) -> bool {
        self.world.as_ref().is_none_or(|w| w.pg.is_main())
    }

    fn rank_and_size(&self) -> (usize, usize) {
        self.world
            .as_ref()
            .map_or((0, 1), |w| (w.pg.rank(), w.pg.world_size()))
    }

    /// Leaves the world (a barrier, then the group's teardown), when there is one.
    pub fn shutdown(&mut self) -> Result<()> {
        match self.world.take() {
            Some(w) => w.pg.shutdown(),
            None => Ok(()),
        }
    }

    pub fn model(&self) -> &MultiTaskModel {
        &self.parts.model
    }

    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Trains to the end or until stopped, then evaluates and checkpoints; leaves the
    /// data-parallel world, if any, at the end.
    pub fn run(&mut self) -> Result<Outcome> {
        let mut interrupted = false;
        self.report.start(self.state.global_step);
        if let Some(end) = &self.state.end {
            info!(step = end.step, reason = %end.reason, "the run already ended; nothing left to train");
        }
        while self.state.global_step < self.state.total_steps && self.state.end.is_none() {
            if self.stop_requested()? {
                interrupted = true;
                break;
            }
            let out = self.step()?;
            self.record(&out);
            self.log_if_due();
            self.evaluate_if_due()?;
            self.checkpoint_if_due()?;
            self.report.flush_summaries(&self.store, false);
            self.report_progress(false);
        }
        self.report.bar.finish();
        if interrupted {
            self.checkpoint_on_stop()?;
        } else if self.state.metrics.is_empty() && self.is_main() {
            // Resumed at the end: nothing left to train, report the final metrics again.
            self.state.metrics = self.evaluate()?;
        }
        self.report.flush_summaries(&self.store, true);
        self.report_progress(true);
        let finished = if interrupted { None } else { self.finish()? };
        self.shutdown()?;
        Ok(self.outcome(interrupted, finished))
    }

    /// What the run ended with; `finished`: the manifest [`finish`](Self::finish) stored.
    fn outcome(&self, interrupted: bool, finished: Option<mtl_storage::Manifest>) -> Outcome {
        let (end, best, model) = match finished {
            Some(m) => (m.end, m.best, m.model),
            None => (None, None, None),
        };
        Outcome {
            step: self.state.global_step,
            total_steps: self.state.total_steps,
            metrics: self.state.metrics.clone(),
            interrupted,
            resumed_from: self.marks.resumed_from,
            checkpoint: self.marks.last_entry.clone(),
            end,
            best,
            model,
            // This attempt's summaries, or those of the attempts before it.
            tensorboard: (self.state.global_step > 0).then(|| summaries::log_dir(&self.spec)),
        }
    }

    /// Rank 0, at the end of a run that was not interrupted: exports the final model when
    /// asked to (from the best checkpoint, else the latest), and records how the run ended
    /// and where the model went in the manifest, which it returns.
    fn finish(&mut self) -> Result<Option<mtl_storage::Manifest>> {
        if !self.is_main() {
            return Ok(None);
        }
        let base = self.spec.checkpoints.uri.clone();
        let mut manifest = self.store.manifest(&base)?.unwrap_or_default();
        if let Some(target) = self.opts.vertex.export_dir(&self.spec) {
            let from = manifest
                .best
                .as_ref()
                .and_then(|b| manifest.at(b.step))
                .or(manifest.latest())
                .cloned();
            if let Some(from) = from {
                let cache = self.opts.cache_dir.clone();
                let device = self.opts.device;
                let uris = self.report.bar.suspend(|| {
                    crate::export::export_all(&self.store, &from, &target, &cache, device)
                })?;
                info!(step = from.step, from = %from.uri, model = %target, tasks = ?uris, "final model exported");
                manifest.model = Some(target);
            }
        }
        manifest.end = Some(self.state.end.clone().unwrap_or_else(|| RunEnd {
            reason: mtl_crds::END_COMPLETED.into(),
            step: self.state.global_step,
            message: String::new(),
        }));
        self.store
            .block_on(manifest.store(&self.store.storage, &base))?;
        Ok(Some(manifest))
    }

    /// Whether to stop now; on several ranks, whether any rank was asked to, so that every
    /// rank stops at the same step.
    fn stop_requested(&self) -> Result<bool> {
        let here = self.opts.stop.load(Ordering::SeqCst)
            || self
                .opts
                .stop_after
                .is_some_and(|s| self.state.global_step >= s);
        match &self.world {
            Some(w) => w.pg.any(here),
            None => Ok(here),
        }
    }

    /// The micro-batches of the next step, in sampler order: on several ranks, this rank's
    /// shard of each (`batchSize` examples, fewer or none in a short last batch), balanced by
    /// length across the ranks.
    fn next_micro_batches(&mut self) -> Result<Vec<Micro>> {
        let accum = self.spec.training.gradient_accumulation_steps.max(1);
        let (rank, ranks) = self.rank_and_size();
        (0..accum)
            .map(|_| {
                let plan = self.parts.sampler.plan(self.state.micro_step);
                self.state.micro_step += 1;
                let store = self.parts.tasks[plan.task]
                    .train
                    .as_ref()
                    .ok_or_else(|| Error::Invalid("training data was not loaded".into()))?;
                let batch = self.parts.model.batcher(plan.task).training_batch(
                    store,
                    &plan.examples,
                    rank,
                    ranks,
                )?;
                Ok(Micro {
                    task: plan.task,
                    batch,
                    global_examples: plan.examples.len(),
                    loss_weight: self.spec.tasks[plan.task].loss_weight.unwrap_or(1.0),
                })
            })
            .collect()
    }

    /// One optimizer step.
    pub fn step(&mut self) -> Result<StepOutput> {
        let tr = &self.spec.training;
        // Dropout randomness is a function of the step (and the rank), so a resumed run draws
        // the same masks.
        let (rank, _) = self.rank_and_size();
        let seed = tr.seed
            ^ self.state.global_step.wrapping_mul(0x9E37_79B9)
            ^ (rank as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        tch::manual_seed(seed as i64);
        let micro = self.next_micro_batches()?;
        let settings = StepSettings {
            lr: self.parts.schedule.at(self.state.global_step),
            max_grad_norm: self.spec.training.max_grad_norm,
            dropout: true,
        };
        let parallel = self.world.as_ref().map(|w| Parallel {
            pg: &w.pg,
            sync: &w.sync,
        });
        let out = train_step(
            &self.parts.model,
            &mut self.parts.optim,
            &mut self.parts.amp,
            &micro,
            &settings,
            parallel.as_ref(),
        )?;
        self.state.global_step += 1;
        self.state.learning_rate = settings.lr;
        let per_epoch = self.parts.sampler.batches_per_epoch().max(1) as f64;
        self.state.epoch = self.state.micro_step as f64 / per_epoch;
        Ok(out)
    }

    fn record(&mut self, out: &StepOutput) {
        let tasks = &self.parts.tasks;
        self.report.record(out, |i| tasks[i].spec.name.clone());
    }

    fn final_step(&self) -> bool {
        self.state.global_step == self.state.total_steps
    }

    fn log_if_due(&mut self) {
        let every = self.spec.training.log_every_steps.max(1);
        if (!self.state.global_step.is_multiple_of(every) && !self.final_step()) || !self.is_main()
        {
            return;
        }
        self.report.log(&self.spec, &mut self.state);
    }

    /// Overwrites `progress.json` when due (`now` false) or now.
    fn report_progress(&mut self, now: bool) {
        let base = &self.spec.checkpoints.uri;
        self.report.progress(&self.store, base, &self.state, now);
    }

    /// Every task's metrics on its validation set.
    fn evaluate(&self) -> Result<BTreeMap<String, f64>> {
        let tr = &self.spec.training;
        let batch_size = tr.eval_batch_size.unwrap_or(tr.batch_size.max(32)) as usize;
        let sets: Vec<EvalSet<'_>> = self
            .parts
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(head, t)| {
                t.validation.as_ref().map(|v: &TokenStore| EvalSet {
                    spec: &t.spec,
                    head,
                    examples: v,
                })
            })
            .collect();
        eval::evaluate(&self.parts.model, &sets, batch_size, &self.parts.amp)
    }

    /// Evaluates every `evalEverySteps`, at the last step, and at every checkpoint when
    /// `checkpoints.best` ranks them; then counts the evaluation for early stopping (rank 0
    /// judges, every rank learns the verdict, so all stop at this step).
    fn evaluate_if_due(&mut self) -> Result<()> {
        let every = self.spec.training.eval_every_steps;
        let step = self.state.global_step;
        let due = (every > 0 && step.is_multiple_of(every))
            || self.final_step()
            || (self.spec.checkpoints.best.is_some() && self.checkpoint_step());
        if !due {
            return Ok(());
        }
        let mut stop = None;
        if self.is_main() {
            self.state.metrics = self.evaluate()?;
            self.marks.evaluated_at = Some(step);
            let mut entry = self.state.metrics.clone();
            entry.insert("step".into(), step as f64);
            self.state.eval_history.push(entry);
            self.report.eval(step, &self.state.metrics);
            stop = self.count_for_early_stopping();
        }
        if self.spec.training.early_stopping.is_none() {
            return Ok(());
        }
        let stop_all = match &self.world {
            Some(w) => w.pg.any(stop.is_some())?,
            None => stop.is_some(),
        };
        if stop_all && !self.final_step() {
            let message = stop.unwrap_or_default();
            if self.is_main() {
                self.report
                    .bar
                    .suspend(|| warn!(step, reason = %message, "early stopping"));
            }
            self.state.end = Some(RunEnd {
                reason: mtl_crds::END_EARLY_STOPPED.into(),
                step,
                message,
            });
        }
        Ok(())
    }

    /// Early stopping's verdict on the evaluation just made: `Some(why)` to stop.
    fn count_for_early_stopping(&mut self) -> Option<String> {
        let rule = self.spec.training.early_stopping.as_ref()?;
        let best = self.spec.checkpoints.best.as_ref()?;
        let value = self
            .state
            .metrics
            .get(&best.metric)
            .copied()
            .unwrap_or(f64::NAN);
        self.state
            .early_stopping
            .get_or_insert_with(Default::default)
            .observe(&best.metric, value, best.mode(), rule)
    }

    /// Whether this step is one `checkpoints.everySteps` (or the end) checkpoints.
    fn checkpoint_step(&self) -> bool {
        self.state
            .global_step
            .is_multiple_of(self.spec.checkpoints.every_steps)
            || self.final_step()
    }

    fn checkpoint_if_due(&mut self) -> Result<()> {
        // Early stopping ends the run at this step: checkpoint it.
        let due = self.checkpoint_step() || self.state.end.is_some();
        if due && self.is_main() {
            self.save()?;
        }
        // Every rank knows the step is saved, so a stop right after it writes no other.
        if due {
            self.marks.last_saved = Some(self.state.global_step);
        }
        Ok(())
    }

    /// On a stop request: a checkpoint of the last step trained, unless it is already saved
    /// or no step was trained at all (a fresh run stopped during data loading saves
    /// nothing).
    fn checkpoint_on_stop(&mut self) -> Result<()> {
        let step = self.state.global_step;
        if step == 0 || self.marks.last_saved == Some(step) || !self.is_main() {
            return Ok(());
        }
        warn!(step, "stop requested: checkpointing before exit");
        self.save()
    }

    /// Writes every file of a checkpoint, then commits it to the manifest.
    fn save(&mut self) -> Result<()> {
        let parts = &self.parts;
        self.state.loss_scale = parts.amp.scaler.as_ref().map(|s| s.state()).transpose()?;
        let checkpoints = &self.spec.checkpoints;
        let entry = checkpoint::save(
            &self.store,
            &checkpoints.uri,
            &self.opts.cache_dir,
            &Snapshot {
                model: &parts.model,
                optim: &parts.optim,
                state: &self.state,
                tasks: &self.spec.tasks,
                assets: &parts.assets,
                metrics: (self.marks.evaluated_at == Some(self.state.global_step))
                    .then_some(&self.state.metrics),
            },
            checkpoints.keep,
            checkpoints.best.as_ref(),
        )?;
        self.report
            .bar
            .suspend(|| info!(step = entry.step, uri = %entry.uri, "checkpoint committed"));
        self.marks.last_saved = Some(entry.step);
        self.marks.last_entry = Some(entry);
        self.report.flush_summaries(&self.store, true);
        Ok(())
    }
}

/// Resumes from the newest committed checkpoint under `spec.checkpoints.uri`, if any:
/// weights, optimizer state, loss scale and where the run stood (`state`, keeping the
/// schedule and the fingerprint of this job). The checkpoint must have been trained on the
/// same tasks, and (unless `force_resume`) with the same batches.
fn resume(
    store: &Storage,
    spec: &MultiTaskTrainingJobSpec,
    opts: &RunOptions,
    parts: &mut Parts,
    state: &mut TrainerState,
    marks: &mut Marks,
) -> Result<()> {
    let restore = Restore {
        model: &mut parts.model,
        optim: &mut parts.optim,
        amp: &mut parts.amp,
    };
    let now = state.fingerprint.as_ref();
    let Some(saved) = checkpoint::resume(
        store,
        spec,
        &opts.cache_dir,
        now,
        opts.force_resume,
        restore,
    )?
    else {
        return Ok(());
    };
    marks.resumed_from = Some(saved.global_step);
    marks.last_saved = Some(saved.global_step);
    let fingerprint = state.fingerprint.take();
    *state = TrainerState {
        total_steps: state.total_steps,
        warmup_steps: state.warmup_steps,
        fingerprint,
        ..saved
    };
    Ok(())
}
