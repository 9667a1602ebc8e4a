//! Setting a run up: the job checked against its model, the model's files fetched, the data
//! read and tokenized, the model and its optimizer built, the sampler and the schedule
//! planned, and the state of a fresh run. Everything that can be wrong with the job, its data
//! or its model is found here, before the first step.

use std::collections::BTreeMap;
use std::time::Instant;

use mtl_crds::{MultiTaskTrainingJobSpec, TrainingSpec};
use tch::Device;
use tracing::{info, warn};

use super::options::RunOptions;
use crate::assets::ModelAssets;
use crate::config::ModelConfig;
use crate::data::{Loader, TaskData, TextEncoder};
use crate::distributed::ProcessGroup;
use crate::io::Storage;
use crate::model::{MODEL_FILE, MultiTaskModel, build_model};
use crate::optim::{AdamW, AdamWConfig, LinearSchedule};
use crate::precision::Amp;
use crate::sampling::Sampler;
use crate::state::{Fingerprint, TrainerState};
use crate::{Error, Result};

/// What a run trains, and with what.
pub(super) struct Parts {
    /// The pretrained model's files (config and tokenizer go into every checkpoint).
    pub assets: ModelAssets,
    pub tasks: Vec<TaskData>,
    pub model: MultiTaskModel,
    pub optim: AdamW,
    pub amp: Amp,
    pub sampler: Sampler,
    pub schedule: LinearSchedule,
}

/// A run, set up and not yet resumed.
pub(super) struct Setup {
    /// The job, its `checkpoints.uri` a tuning trial's own where Vertex AI asks for it.
    pub spec: MultiTaskTrainingJobSpec,
    pub store: Storage,
    pub parts: Parts,
    /// Where a fresh run stands: nothing trained.
    pub state: TrainerState,
}

/// Sets up `spec` as `opts` say, as one rank of `pg`'s world when there is one (each step's
/// batch of `batchSize × ranks` examples is then split among the ranks).
pub(super) fn setup(
    spec: MultiTaskTrainingJobSpec,
    opts: &RunOptions,
    pg: Option<&ProcessGroup>,
) -> Result<Setup> {
    let ranks = pg.map_or(1, ProcessGroup::world_size);
    let spec = checked_spec(spec, opts)?;
    let store = Storage::new()?;
    let tr = &spec.training;
    let amp = Amp::new(tr.precision, opts.device, tr.allow_tf32)?;
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, &opts.cache_dir)?;
    let config = assets.config()?;
    check_lengths(&spec, &config)?;
    let encoder = assets.encoder(&config, spec.model.max_length as usize)?;
    let (tasks, tokenizer_sha256) = load_data(&spec, opts, &store, &assets, &encoder, pg)?;
    let (model, optim) = build(config, &spec, &assets, opts.device)?;
    // The sampler plans the global batch; each rank takes its shard of it.
    let sampler = Sampler::new(
        &spec.sampling,
        tr.seed,
        tr.batch_size as usize * ranks,
        tasks.iter().map(TaskData::train_len).collect(),
    );
    let total = total_steps(tr, &sampler);
    // The annealed strategy's exponent moves over the run's micro-batches.
    let sampler = sampler.with_horizon(total * u64::from(tr.gradient_accumulation_steps.max(1)));
    let schedule = LinearSchedule::for_run(tr, total);
    let state = fresh_state(&spec, &tasks, &tokenizer_sha256, &schedule, ranks);
    Ok(Setup {
        spec,
        store,
        parts: Parts {
            assets,
            tasks,
            model,
            optim,
            amp,
            sampler,
            schedule,
        },
        state,
    })
}

/// The job, valid, with a tuning trial's own checkpoint location.
fn checked_spec(
    spec: MultiTaskTrainingJobSpec,
    opts: &RunOptions,
) -> Result<MultiTaskTrainingJobSpec> {
    spec.validate()
        .map_err(|m| Error::Invalid(format!("invalid job: {m}")))?;
    let mut spec = spec;
    if let Some(uri) = opts.vertex.trial_checkpoints(&spec.checkpoints.uri) {
        info!(uri = %uri, "hyperparameter-tuning trial: checkpoints go to the trial's own location");
        spec.checkpoints.uri = uri;
    }
    Ok(spec)
}

/// `maxLength` (the job's and each task's) must fit the model's position embeddings.
fn check_lengths(spec: &MultiTaskTrainingJobSpec, config: &ModelConfig) -> Result<()> {
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
    Ok(())
}

/// Every task's data, read and tokenized (or mapped from the token cache), and the SHA-256 of
/// the tokenizer file it was tokenized with. The first rank of each node tokenizes into the
/// cache; its other ranks then map it.
fn load_data(
    spec: &MultiTaskTrainingJobSpec,
    opts: &RunOptions,
    store: &Storage,
    assets: &ModelAssets,
    encoder: &TextEncoder,
    pg: Option<&ProcessGroup>,
) -> Result<(Vec<TaskData>, String)> {
    let started = Instant::now();
    let mut loader = Loader::new(store, &opts.cache_dir, encoder, &assets.tokenizer_path())?;
    loader.stop = Some(opts.stop.as_ref());
    let local_main = pg.is_none_or(|g| g.local_rank() == 0);
    if let (Some(g), false) = (pg, local_main) {
        g.barrier()?;
    }
    let tasks = loader.load(spec, true)?;
    if let (Some(g), true) = (pg, local_main) {
        g.barrier()?;
    }
    info!(
        tasks = tasks.len(),
        examples = tasks.iter().map(TaskData::train_len).sum::<usize>(),
        seconds = started.elapsed().as_secs_f64(),
        "data loaded and tokenized"
    );
    Ok((tasks, loader.tokenizer_sha256))
}

/// The model, from the pretrained weights (heads from `training.seed`), and its optimizer.
fn build(
    config: ModelConfig,
    spec: &MultiTaskTrainingJobSpec,
    assets: &ModelAssets,
    device: Device,
) -> Result<(MultiTaskModel, AdamW)> {
    let tr = &spec.training;
    let mut model = build_model(config, &spec.tasks, device, tr.seed);
    let report = model.load_pretrained(&assets.dir.join(MODEL_FILE))?;
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
    Ok((model, optim))
}

/// Optimizer steps of the run: `maxSteps`, or `epochs` of the sampler's batches over the
/// accumulation (at least one).
fn total_steps(tr: &TrainingSpec, sampler: &Sampler) -> u64 {
    let accum = u64::from(tr.gradient_accumulation_steps.max(1));
    let per_epoch = sampler.batches_per_epoch() as u64;
    tr.max_steps
        .unwrap_or_else(|| ((tr.epochs * per_epoch as f64) / accum as f64).floor() as u64)
        .max(1)
}

/// The state of a run that has trained nothing yet, with the fingerprint resuming checks.
fn fresh_state(
    spec: &MultiTaskTrainingJobSpec,
    tasks: &[TaskData],
    tokenizer_sha256: &str,
    schedule: &LinearSchedule,
    ranks: usize,
) -> TrainerState {
    let shas: Vec<String> = tasks.iter().map(|t| t.train_sha256.clone()).collect();
    TrainerState {
        global_step: 0,
        micro_step: 0,
        epoch: 0.0,
        total_steps: schedule.total,
        warmup_steps: schedule.warmup,
        learning_rate: schedule.at(0),
        seed: spec.training.seed,
        max_length: Some(spec.model.max_length),
        metrics: BTreeMap::new(),
        log_history: Vec::new(),
        eval_history: Vec::new(),
        fingerprint: Some(Fingerprint::of(spec, &shas, tokenizer_sha256, ranks)),
        loss_scale: None,
        early_stopping: None,
        end: None,
    }
}
