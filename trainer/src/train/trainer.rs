//! The [`Trainer`]: everything one training run holds, and its loop.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mtl_crds::{CheckpointRef, MultiTaskTrainingJobSpec, RunEnd};
use tch::{Device, Tensor};
use tracing::{info, warn};

use super::interval::Interval;
use super::live::Live;
use super::step::{Micro, Parallel, StepSettings};
use super::summaries::Summaries;
use super::{Outcome, RunOptions, build_model, schedule, train_step};
use crate::assets::ModelAssets;
use crate::checkpoint::{self, Fingerprint, Staged, Store, TrainerState};
use crate::data::{Loader, TaskData, TokenStore};
use crate::dist::{DEFAULT_BUCKET_CAP_BYTES, GradientSync, ProcessGroup, broadcast_tensors};
use crate::eval::{self, EvalSet};
use crate::model::MultiTaskModel;
use crate::optim::{AdamW, AdamWConfig, LinearSchedule};
use crate::precision::Amp;
use crate::progress::Progress;
use crate::sampling::Sampler;
use crate::{Error, Result};

use super::StepOutput;

/// One training run: the job, its data, the model and its optimizer, the sampler and the
/// schedule, and where it stands.
pub struct Trainer {
    spec: MultiTaskTrainingJobSpec,
    opts: RunOptions,
    store: Store,
    assets: ModelAssets,
    tasks: Vec<TaskData>,
    model: MultiTaskModel,
    optim: AdamW,
    amp: Amp,
    sampler: Sampler,
    schedule: LinearSchedule,
    state: TrainerState,
    resumed_from: Option<u64>,
    last_saved: Option<u64>,
    last_entry: Option<CheckpointRef>,
    interval: Interval,
    progress: Progress,
    /// Data parallel: this rank's world and the gradients it sums (None on one process).
    world: Option<World>,
    /// TensorBoard event file (rank 0, while `run` trains).
    summaries: Option<Summaries>,
    /// `progress.json` (rank 0).
    live: Option<Live>,
    /// The step `state.metrics` were measured at.
    evaluated_at: Option<u64>,
    /// Hypertune reports, in a Vertex AI tuning trial (rank 0).
    hypertune: Option<crate::vertex::Hypertune>,
}

/// One rank's membership of a data-parallel world.
struct World {
    pg: ProcessGroup,
    sync: GradientSync,
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
        let ranks = pg.as_ref().map_or(1, ProcessGroup::world_size);
        let main = pg.as_ref().is_none_or(ProcessGroup::is_main);
        spec.validate()
            .map_err(|m| Error::Invalid(format!("invalid job: {m}")))?;
        let mut spec = spec;
        if let Some(uri) = opts.vertex.trial_checkpoints(&spec.checkpoints.uri) {
            info!(uri = %uri, "hyperparameter-tuning trial: checkpoints go to the trial's own location");
            spec.checkpoints.uri = uri;
        }
        let store = Store::new()?;
        let cache = &opts.cache_dir;
        let tr = &spec.training;
        let amp = Amp::new(tr.precision, opts.device, tr.allow_tf32)?;
        let assets = ModelAssets::fetch(&store, &spec.model.pretrained, cache)?;
        let config = assets.config()?;
        if i64::from(spec.model.max_length) > config.max_input_length() {
            return Err(Error::Invalid(format!(
                "spec.model.maxLength {} exceeds what the model's position embeddings allow ({})",
                spec.model.max_length,
                config.max_input_length()
            )));
        }
        for (i, t) in spec.tasks.iter().enumerate() {
            if let Some(n) = t.max_length
                && i64::from(n) > config.max_input_length()
            {
                return Err(Error::Invalid(format!(
                    "spec.tasks[{i}] ({}).maxLength {n} exceeds what the model's position embeddings allow ({})",
                    t.name,
                    config.max_input_length()
                )));
            }
        }
        let encoder = assets.encoder(&config, spec.model.max_length as usize)?;
        let started = Instant::now();
        let mut loader = Loader::new(&store, cache, &encoder, &assets.tokenizer_path())?;
        loader.stop = Some(opts.stop.as_ref());
        // The first rank of each node tokenizes into the cache; its other ranks then map it.
        let local_main = pg.as_ref().is_none_or(|g| g.local_rank() == 0);
        if let (Some(g), false) = (&pg, local_main) {
            g.barrier()?;
        }
        let tasks = loader.load(&spec, true)?;
        if let (Some(g), true) = (&pg, local_main) {
            g.barrier()?;
        }
        info!(
            tasks = tasks.len(),
            examples = tasks.iter().map(TaskData::train_len).sum::<usize>(),
            seconds = started.elapsed().as_secs_f64(),
            "data loaded and tokenized"
        );

        let mut model = build_model(config, &spec.tasks, opts.device, tr.seed);
        let report = model.load_pretrained(&assets.dir.join(checkpoint::MODEL_FILE))?;
        if !report.missing.is_empty() {
            warn!(missing = ?report.missing, "pretrained weights lack these tensors; they start from random values");
        }
        let optim = AdamW::new(
            model.named_tensors(),
            AdamWConfig {
                weight_decay: tr.weight_decay,
                ..Default::default()
            },
        );
        // The sampler plans the global batch; each rank takes its shard of it.
        let sampler = Sampler::new(
            &spec.sampling,
            tr.seed,
            tr.batch_size as usize * ranks,
            tasks.iter().map(TaskData::train_len).collect(),
        );
        let accum = u64::from(tr.gradient_accumulation_steps.max(1));
        let per_epoch = sampler.batches_per_epoch() as u64;
        let total = tr
            .max_steps
            .unwrap_or_else(|| ((tr.epochs * per_epoch as f64) / accum as f64).floor() as u64)
            .max(1);
        let schedule = schedule(tr, total);
        let shas: Vec<String> = tasks.iter().map(|t| t.train_sha256.clone()).collect();
        let state = TrainerState {
            global_step: 0,
            micro_step: 0,
            epoch: 0.0,
            total_steps: total,
            warmup_steps: schedule.warmup,
            learning_rate: schedule.at(0),
            seed: tr.seed,
            max_length: Some(spec.model.max_length),
            metrics: BTreeMap::new(),
            log_history: Vec::new(),
            eval_history: Vec::new(),
            fingerprint: Some(Fingerprint::of(&spec, &shas, ranks)),
            loss_scale: None,
            early_stopping: None,
            end: None,
        };
        let progress = Progress::new(total, 0, opts.progress && main);
        let mut trainer = Self {
            spec,
            opts,
            store,
            assets,
            tasks,
            model,
            optim,
            amp,
            sampler,
            schedule,
            state,
            resumed_from: None,
            last_saved: None,
            last_entry: None,
            interval: Interval::new(),
            progress,
            world: None,
            summaries: None,
            live: None,
            evaluated_at: None,
            hypertune: None,
        };
        trainer.resume()?;
        if let Some(pg) = pg {
            trainer.join(pg)?;
        }
        trainer.progress.set_position(trainer.state.global_step);
        if trainer.is_main() {
            trainer.live = Some(Live::new(
                &trainer.spec.checkpoints.uri,
                trainer.spec.checkpoints.progress_every_seconds,
            ));
            trainer.hypertune = trainer.opts.vertex.hypertune(&trainer.spec);
            if let Some(h) = &trainer.hypertune {
                info!(file = %h.path.display(), tag = %h.tag, metric = %h.metric, "hyperparameter-tuning trial: reporting each evaluation");
            }
        }
        Ok(trainer)
    }

    /// Makes every rank start from rank 0's weights and optimizer state, and sets up the
    /// gradient sum over the parameters in one order on every rank.
    fn join(&mut self, pg: ProcessGroup) -> Result<()> {
        let named = self.model.named_tensors();
        let state = self.optim.state_tensors();
        let all: Vec<&Tensor> = named.values().chain(state.iter().map(|(_, t)| t)).collect();
        tch::no_grad(|| broadcast_tensors(&pg, &all, DEFAULT_BUCKET_CAP_BYTES))?;
        let params: Vec<(&str, &Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let sync = GradientSync::new(&pg, &params, DEFAULT_BUCKET_CAP_BYTES)?;
        self.world = Some(World { pg, sync });
        Ok(())
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
        &self.model
    }

    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Loads the newest committed checkpoint under `spec.checkpoints.uri`, if any: weights,
    /// optimizer state, loss scale and where the run stood. The checkpoint must have been
    /// trained on the same tasks, and (unless `force_resume`) with the same batches.
    fn resume(&mut self) -> Result<()> {
        let base = self.spec.checkpoints.uri.clone();
        let Some(latest) = self
            .store
            .manifest(&base)?
            .and_then(|m| m.latest().cloned())
        else {
            return Ok(());
        };
        let dir = checkpoint::localize(&self.store, &latest, &self.opts.cache_dir)?;
        check_same_heads(&checkpoint::read_tasks(&dir)?, &self.spec, &latest.uri)?;
        let saved: TrainerState = checkpoint::read_json(&dir.join(checkpoint::STATE_FILE))?;
        match (&saved.fingerprint, &self.state.fingerprint) {
            (Some(then), Some(now)) => {
                if let Some(diff) = then.difference(now) {
                    if !self.opts.force_resume {
                        return Err(Error::invalid_input(
                            &latest.uri,
                            format!(
                                "cannot resume: {diff}; resuming would change which batches the rest of the run trains on (use a new checkpoints.uri, restore the setting, or pass --force-resume)"
                            ),
                        ));
                    }
                    warn!(difference = %diff, "resuming with a changed job (--force-resume)");
                }
            }
            _ => {
                warn!(uri = %latest.uri, "checkpoint has no fingerprint; resuming without checking that the job is unchanged")
            }
        }
        self.model
            .load_checkpoint(&dir.join(checkpoint::MODEL_FILE))?;
        let optim_path = dir.join(checkpoint::OPTIMIZER_FILE);
        let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&optim_path)
            .map_err(|e| Error::file(optim_path.display(), e.to_string()))?
            .into_iter()
            .collect();
        self.optim
            .load_state(&tensors, saved.global_step)
            .map_err(|m| Error::file(optim_path.display(), m))?;
        if let (Some(scaler), Some(s)) = (&mut self.amp.scaler, &saved.loss_scale) {
            scaler.load(s)?;
        }
        info!(step = saved.global_step, uri = %latest.uri, "resuming from checkpoint");
        self.resumed_from = Some(saved.global_step);
        self.last_saved = Some(saved.global_step);
        let fingerprint = self.state.fingerprint.take();
        self.state = TrainerState {
            total_steps: self.state.total_steps,
            warmup_steps: self.state.warmup_steps,
            fingerprint,
            ..saved
        };
        Ok(())
    }

    /// Trains to the end or until stopped, then evaluates and checkpoints; leaves the
    /// data-parallel world, if any, at the end.
    pub fn run(&mut self) -> Result<Outcome> {
        let mut interrupted = false;
        if let Some(live) = &mut self.live {
            live.start(self.state.global_step);
        }
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
            self.flush_summaries(false);
            self.report_progress(false);
        }
        self.progress.finish();
        if interrupted {
            self.checkpoint_on_stop()?;
        } else if self.state.metrics.is_empty() && self.is_main() {
            // Resumed at the end: nothing left to train, report the final metrics again.
            self.state.metrics = self.evaluate()?;
        }
        self.flush_summaries(true);
        self.report_progress(true);
        let finished = if interrupted { None } else { self.finish()? };
        self.shutdown()?;
        let (end, best, model) = match finished {
            Some(m) => (m.end, m.best, m.model),
            None => (None, None, None),
        };
        Ok(Outcome {
            step: self.state.global_step,
            total_steps: self.state.total_steps,
            metrics: self.state.metrics.clone(),
            interrupted,
            resumed_from: self.resumed_from,
            checkpoint: self.last_entry.clone(),
            end,
            best,
            model,
            // This attempt's summaries, or those of the attempts before it.
            tensorboard: (self.state.global_step > 0)
                .then(|| super::summaries::log_dir(&self.spec)),
        })
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
                let uris = self.progress.suspend(|| {
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
    /// length across the ranks (`dist::shard`).
    fn next_micro_batches(&mut self) -> Result<Vec<Micro>> {
        let accum = self.spec.training.gradient_accumulation_steps.max(1);
        let (rank, ranks) = self.rank_and_size();
        (0..accum)
            .map(|_| {
                let plan = self.sampler.plan(self.state.micro_step);
                self.state.micro_step += 1;
                let store = self.tasks[plan.task]
                    .train
                    .as_ref()
                    .ok_or_else(|| Error::Invalid("training data was not loaded".into()))?;
                let n = plan.examples.len();
                let shard: Vec<usize> = if ranks > 1 {
                    let lengths: Vec<usize> = plan
                        .examples
                        .iter()
                        .map(|&i| {
                            (0..store.choices())
                                .map(|j| store.sequence(i, j).len())
                                .max()
                                .unwrap_or(0)
                        })
                        .collect();
                    crate::dist::shard::shard(&lengths, rank, ranks)
                        .into_iter()
                        .map(|k| plan.examples[k])
                        .collect()
                } else {
                    plan.examples.clone()
                };
                let batch = if shard.is_empty() {
                    None
                } else {
                    Some(eval::batcher(&self.model, plan.task).collate(store, &shard)?)
                };
                Ok(Micro {
                    task: plan.task,
                    batch,
                    global_examples: n,
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
            lr: self.schedule.at(self.state.global_step),
            max_grad_norm: self.spec.training.max_grad_norm,
            dropout: true,
        };
        let parallel = self.world.as_ref().map(|w| Parallel {
            pg: &w.pg,
            sync: &w.sync,
        });
        let out = train_step(
            &self.model,
            &mut self.optim,
            &mut self.amp,
            &micro,
            &settings,
            parallel.as_ref(),
        )?;
        let lr = settings.lr;
        self.state.global_step += 1;
        self.state.learning_rate = lr;
        let per_epoch = self.sampler.batches_per_epoch().max(1) as f64;
        self.state.epoch = self.state.micro_step as f64 / per_epoch;
        Ok(out)
    }

    fn record(&mut self, out: &StepOutput) {
        let names: Vec<String> = self.tasks.iter().map(|t| t.spec.name.clone()).collect();
        self.interval.add(out, |i| names[i].clone());
        let (loss, lr) = (self.interval.mean_loss(), out.lr);
        self.progress.inc(|| format!("loss {loss:.4} lr {lr:.2e}"));
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
        let (entry, rates) = self.interval.flush(
            self.state.global_step,
            self.state.epoch,
            self.state.learning_rate,
        );
        let task_losses = serde_json::to_string(&entry.task_losses).unwrap_or_default();
        self.progress.suspend(|| {
            info!(
                step = entry.step,
                epoch = entry.epoch,
                loss = entry.loss,
                learning_rate = entry.learning_rate,
                grad_norm = entry.grad_norm,
                skipped_steps = entry.skipped_steps,
                task_losses = %task_losses,
                examples = rates.examples,
                interval_s = rates.seconds,
                examples_per_s = rates.examples_per_s,
                tokens_per_s = rates.tokens_per_s,
                allreduce_s = rates.allreduce_s,
                allreduce_share = rates.allreduce_share,
                reduced_bytes = rates.reduced_bytes,
                "train"
            )
        });
        // The event file starts with the first step logged, so a run stopped before its
        // first step writes nothing.
        let spec = &self.spec;
        let s = self.summaries.get_or_insert_with(|| {
            let s = Summaries::new(spec, entry.step);
            let logdir = super::summaries::log_dir(spec);
            info!(uri = s.uri(), open = %format!("tensorboard --logdir {logdir}"), "TensorBoard summaries");
            s
        });
        s.train(&entry, &rates);
        if let Some(live) = &mut self.live {
            live.rates(rates);
        }
        self.state.log_history.push(entry);
    }

    /// Stores the TensorBoard file: when due (`now` false) or now. Summaries are not part
    /// of the checkpoint protocol: a failed write is a warning, and the next one retries.
    fn flush_summaries(&mut self, now: bool) {
        let Some(s) = &mut self.summaries else { return };
        let written = if now {
            s.flush(&self.store)
        } else {
            s.flush_if_due(&self.store)
        };
        if let Err(e) = written {
            warn!(uri = s.uri(), error = %e, "could not write the TensorBoard summaries");
        }
    }

    /// Overwrites `progress.json` when due (`now` false) or now. Not part of the checkpoint
    /// protocol: a failed write is a warning, and the next one retries.
    fn report_progress(&mut self, now: bool) {
        let Some(live) = &mut self.live else { return };
        // Nothing before this attempt's first step: a run stopped before it writes nothing.
        if !live.stepped(self.state.global_step) || (!now && !live.due()) {
            return;
        }
        let snapshot = live.snapshot(&self.state);
        live.written();
        let base = &self.spec.checkpoints.uri;
        if let Err(e) = self
            .store
            .block_on(snapshot.store(&self.store.storage, base))
        {
            warn!(uri = %live.uri(), error = %e, "could not write the progress object");
        }
    }

    /// Every task's metrics on its validation set.
    fn evaluate(&self) -> Result<BTreeMap<String, f64>> {
        let tr = &self.spec.training;
        let batch_size = tr.eval_batch_size.unwrap_or(tr.batch_size.max(32)) as usize;
        let sets: Vec<EvalSet<'_>> = self
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
        eval::evaluate(&self.model, &sets, batch_size, &self.amp)
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
            self.evaluated_at = Some(step);
            let mut entry = self.state.metrics.clone();
            entry.insert("step".into(), step as f64);
            self.state.eval_history.push(entry);
            if let Some(s) = &mut self.summaries {
                s.eval(step, &self.state.metrics);
            }
            let metrics = serde_json::to_string(&self.state.metrics).unwrap_or_default();
            self.progress
                .suspend(|| info!(step, metrics = %metrics, "eval"));
            self.report_hypertune();
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
                self.progress
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

    /// A tuning trial's report of the evaluation just made. Not part of the checkpoint
    /// protocol: a failed write is a warning.
    fn report_hypertune(&mut self) {
        let Some(h) = &mut self.hypertune else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match h.report(&self.state.metrics, self.state.global_step, "", now) {
            Ok(true) => {}
            Ok(false) => {
                warn!(metric = %h.metric, "the evaluation did not report the tuned metric")
            }
            Err(e) => warn!(error = %e, "could not write the hypertune report"),
        }
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
            self.last_saved = Some(self.state.global_step);
        }
        Ok(())
    }

    /// On a stop request: a checkpoint of the last step trained, unless it is already saved
    /// or no step was trained at all (a fresh run stopped during data loading saves
    /// nothing).
    fn checkpoint_on_stop(&mut self) -> Result<()> {
        let step = self.state.global_step;
        if step == 0 || self.last_saved == Some(step) || !self.is_main() {
            return Ok(());
        }
        warn!(step, "stop requested: checkpointing before exit");
        self.save()
    }

    /// Writes every file of a checkpoint, then commits it to the manifest.
    fn save(&mut self) -> Result<()> {
        let base = &self.spec.checkpoints.uri;
        let cache = &self.opts.cache_dir;
        let dir = checkpoint::staging_dir(base, self.state.global_step, cache);
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        self.model.save(&dir.join(checkpoint::MODEL_FILE))?;
        let tensors = self
            .optim
            .state_tensors()
            .into_iter()
            .map(|(n, t)| Ok((n, t.f_to_device(Device::Cpu)?.f_contiguous()?)))
            .collect::<Result<Vec<(String, Tensor)>>>()?;
        let optim_path = dir.join(checkpoint::OPTIMIZER_FILE);
        Tensor::write_safetensors(&tensors, &optim_path)
            .map_err(|e| Error::file(optim_path.display(), e.to_string()))?;
        self.state.loss_scale = self.amp.scaler.as_ref().map(|s| s.state()).transpose()?;
        checkpoint::write_json(&dir.join(checkpoint::STATE_FILE), &self.state)?;
        checkpoint::write_json(&dir.join(checkpoint::TASKS_FILE), &self.spec.tasks)?;
        self.assets.copy_to(&dir)?;
        let staged = Staged {
            dir,
            step: self.state.global_step,
        };
        let entry = checkpoint::commit(
            &self.store,
            base,
            &staged,
            self.state.metrics.clone(),
            self.spec.checkpoints.keep,
            // Only metrics measured at this very step rank it.
            self.spec
                .checkpoints
                .best
                .as_ref()
                .filter(|_| self.evaluated_at == Some(self.state.global_step)),
        )?;
        self.progress
            .suspend(|| info!(step = entry.step, uri = %entry.uri, "checkpoint committed"));
        self.last_saved = Some(entry.step);
        self.last_entry = Some(entry);
        self.flush_summaries(true);
        Ok(())
    }
}

/// The checkpoint's heads must be the job's: same task names in the same order, with the
/// same types and output counts.
fn check_same_heads(
    saved: &[mtl_crds::TaskSpec],
    spec: &MultiTaskTrainingJobSpec,
    at: &str,
) -> Result<()> {
    use crate::model::HeadSpec;
    let shape =
        |ts: &[mtl_crds::TaskSpec]| -> Vec<HeadSpec> { ts.iter().map(HeadSpec::from).collect() };
    if shape(saved) != shape(&spec.tasks) {
        let names =
            |ts: &[mtl_crds::TaskSpec]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        return Err(Error::invalid_input(
            at,
            format!(
                "checkpoint was trained on tasks {:?}, the job has {:?} (names, types and label counts must match to resume; use a new checkpoints.uri for a different job)",
                names(saved),
                names(&spec.tasks)
            ),
        ));
    }
    Ok(())
}
