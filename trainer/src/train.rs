//! The training loop: data, model, optimizer, sampling, evaluation, checkpoints and resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mtl_crds::{
    CheckpointRef, MultiTaskTrainingJobSpec, Precision, TaskSpec, TaskType, TrainingSpec,
};
use mtl_storage::join;
use tch::{Device, Kind, Tensor};
use tracing::{info, warn};

use crate::checkpoint::{self, LogEntry, Staged, Store, TrainerState};
use crate::config::ModelConfig;
use crate::data::{self, Batcher, TextEncoder, TokenizedExample};
use crate::metrics::{self, Predictions};
use crate::model::{HeadSpec, MultiTaskModel};
use crate::optim::{AdamW, AdamWConfig, LinearSchedule};
use crate::progress::Progress;
use crate::sampling::Sampler;
use crate::{Error, Result};

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
}

impl RunOptions {
    pub fn cpu(cache_dir: PathBuf) -> Self {
        Self {
            device: Device::Cpu,
            cache_dir,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            stop_after: None,
        }
    }
}

/// What a run ended with.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub step: u64,
    pub total_steps: u64,
    pub metrics: BTreeMap<String, f64>,
    /// Stopped early by a signal (after checkpointing).
    pub interrupted: bool,
    pub resumed_from: Option<u64>,
    pub checkpoint: Option<CheckpointRef>,
}

/// A pretrained (or checkpointed) model directory made local.
pub struct ModelAssets {
    pub dir: PathBuf,
}

impl ModelAssets {
    /// Fetches config.json, model.safetensors, tokenizer.json (and tokenizer side files when
    /// present) from a directory or gs:// prefix.
    pub fn fetch(store: &Store, uri: &str, cache: &Path) -> Result<Self> {
        let mut dir = None;
        for name in [
            checkpoint::CONFIG_FILE,
            checkpoint::TOKENIZER_FILE,
            checkpoint::MODEL_FILE,
        ] {
            let path = store.fetch(&join(uri, name), cache).map_err(|e| match e {
                Error::Storage(s) if s.is_not_found() => Error::file(
                    join(uri, name),
                    "not found: spec.model.pretrained must hold config.json, model.safetensors and tokenizer.json",
                ),
                e => e,
            })?;
            dir = path.parent().map(Path::to_path_buf);
        }
        store.fetch_tokenizer_extras(uri, cache)?;
        let dir = dir.ok_or_else(|| Error::file(uri, "empty model location"))?;
        Ok(Self { dir })
    }

    pub fn config(&self) -> Result<ModelConfig> {
        ModelConfig::load(&self.dir.join(checkpoint::CONFIG_FILE))
    }

    pub fn encoder(&self, config: &ModelConfig, max_length: usize) -> Result<TextEncoder> {
        TextEncoder::load(
            &self.dir.join(checkpoint::TOKENIZER_FILE),
            max_length,
            config.type_vocab_size <= 1,
        )
    }

    /// Copies the config, tokenizer and tokenizer side files into `dir`.
    pub fn copy_to(&self, dir: &Path) -> Result<()> {
        self.copy_files(dir, &[checkpoint::CONFIG_FILE])?;
        self.copy_to_except_config(dir)
    }

    /// Copies the tokenizer and its side files into `dir`.
    pub fn copy_to_except_config(&self, dir: &Path) -> Result<()> {
        self.copy_files(dir, &[checkpoint::TOKENIZER_FILE])?;
        self.copy_files(dir, &checkpoint::TOKENIZER_EXTRAS)
    }

    fn copy_files(&self, dir: &Path, names: &[&str]) -> Result<()> {
        for name in names {
            let src = self.dir.join(name);
            let dst = dir.join(name);
            if src.exists() && src != dst {
                std::fs::copy(&src, &dst).map_err(Error::io(&dst))?;
            }
        }
        Ok(())
    }
}

/// One task's data, tokenized.
pub struct TaskData {
    pub spec: TaskSpec,
    pub train: Vec<TokenizedExample>,
    pub validation: Vec<TokenizedExample>,
}

/// Reads and tokenizes every task's files.
pub fn load_tasks(
    store: &Store,
    spec: &MultiTaskTrainingJobSpec,
    encoder: &TextEncoder,
    cache: &Path,
    need_train: bool,
) -> Result<Vec<TaskData>> {
    let read = |uri: &str, task: &TaskSpec| -> Result<Vec<TokenizedExample>> {
        let path = store.fetch(uri, cache)?;
        let examples = data::read_examples(task, &path, uri, true)?;
        encoder.encode(&examples)
    };
    spec.tasks
        .iter()
        .map(|t| {
            Ok(TaskData {
                spec: t.clone(),
                train: if need_train {
                    read(&t.train, t)?
                } else {
                    Vec::new()
                },
                validation: match &t.validation {
                    Some(v) => read(v, t)?,
                    None => Vec::new(),
                },
            })
        })
        .collect()
}

pub fn batcher(model: &MultiTaskModel, task: usize) -> Batcher {
    Batcher {
        pad_id: model.config.pad_token_id(),
        regression: model.heads_spec[task].task_type == TaskType::Regression,
        device: model.device(),
        pad_to: None,
    }
}

/// Runs `f` under bf16 autocast when asked and on CUDA.
fn autocast<T>(precision: Precision, device: Device, f: impl FnOnce() -> T) -> T {
    if precision == Precision::Bf16 && device.is_cuda() {
        tch::autocast(true, f)
    } else {
        f()
    }
}

/// Raw model outputs of a task over `examples`, batch by batch, in eval mode.
pub fn infer(
    model: &MultiTaskModel,
    task: usize,
    examples: &[TokenizedExample],
    batch_size: usize,
    precision: Precision,
) -> Tensor {
    let b = batcher(model, task);
    let outs: Vec<Tensor> = tch::no_grad(|| {
        examples
            .chunks(batch_size.max(1))
            .map(|chunk| {
                let items: Vec<&TokenizedExample> = chunk.iter().collect();
                let batch = b.collate(&items);
                autocast(precision, model.device(), || {
                    model.forward(task, &batch, false)
                })
                .to_kind(Kind::Float)
                .to_device(Device::Cpu)
            })
            .collect()
    });
    if outs.is_empty() {
        Tensor::zeros([0, 1], (Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&outs, 0)
    }
}

/// Metrics of every task with validation data, plus `mean` of their headline scores.
pub fn evaluate(
    model: &MultiTaskModel,
    tasks: &[TaskData],
    batch_size: usize,
    precision: Precision,
) -> BTreeMap<String, f64> {
    let mut all = BTreeMap::new();
    let mut headlines = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        if t.validation.is_empty() {
            continue;
        }
        let logits = infer(model, i, &t.validation, batch_size, precision);
        let gold: Vec<f64> = t.validation.iter().filter_map(|e| e.label).collect();
        let preds = match t.spec.task_type {
            TaskType::Regression => Predictions::Scores {
                pred: Vec::<f64>::try_from(logits.squeeze_dim(-1).to_kind(Kind::Double))
                    .unwrap_or_default(),
                gold,
            },
            _ => Predictions::Classes {
                pred: Vec::<i64>::try_from(logits.argmax(-1, false))
                    .unwrap_or_default()
                    .into_iter()
                    .map(|x| x as usize)
                    .collect(),
                gold: gold.into_iter().map(|x| x as usize).collect(),
                classes: logits.size().last().copied().unwrap_or(1) as usize,
            },
        };
        let (m, headline) = metrics::task_metrics(&t.spec.name, t.spec.task_type, &preds);
        all.extend(m);
        headlines.push(headline);
    }
    if !headlines.is_empty() {
        all.insert(
            "mean".into(),
            headlines.iter().sum::<f64>() / headlines.len() as f64,
        );
    }
    all
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

/// A device by name: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when available).
pub fn parse_device(name: &str) -> Result<Device> {
    Ok(match name {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Device::Cuda(n),
            None => {
                return Err(Error::Invalid(format!(
                    "--device {other:?}: expected cpu, cuda, cuda:N or auto"
                )));
            }
        },
    })
}

/// Builds the model for `spec`'s tasks from a local model directory.
pub fn build_model(
    config: ModelConfig,
    tasks: &[TaskSpec],
    device: Device,
    seed: u64,
) -> MultiTaskModel {
    tch::manual_seed(seed as i64);
    MultiTaskModel::new(config, tasks.iter().map(HeadSpec::from).collect(), device)
}

fn check_same_tasks(saved: &[TaskSpec], now: &[TaskSpec], at: &str) -> Result<()> {
    let shape = |ts: &[TaskSpec]| -> Vec<HeadSpec> { ts.iter().map(HeadSpec::from).collect() };
    if shape(saved) != shape(now) {
        let names = |ts: &[TaskSpec]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        return Err(Error::file(
            at,
            format!(
                "checkpoint was trained on tasks {:?}, the job has {:?} (names, types and label counts must match to resume; use a new checkpoints.uri for a different job)",
                names(saved),
                names(now)
            ),
        ));
    }
    Ok(())
}

/// Trains `spec` to the end (or until stopped), resuming from the newest checkpoint under
/// `spec.checkpoints.uri` if there is one.
pub fn train(spec: &MultiTaskTrainingJobSpec, opts: &RunOptions) -> Result<Outcome> {
    let store = Store::new()?;
    let cache = &opts.cache_dir;
    let tr = &spec.training;
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, cache)?;
    let config = assets.config()?;
    if i64::from(spec.model.max_length) > config.max_input_length() {
        return Err(Error::Invalid(format!(
            "spec.model.maxLength {} exceeds what the model's position embeddings allow ({})",
            spec.model.max_length,
            config.max_input_length()
        )));
    }
    let encoder = assets.encoder(&config, spec.model.max_length as usize)?;
    let started = Instant::now();
    let tasks = load_tasks(&store, spec, &encoder, cache, true)?;
    info!(
        tasks = tasks.len(),
        examples = tasks.iter().map(|t| t.train.len()).sum::<usize>(),
        seconds = started.elapsed().as_secs_f64(),
        "data loaded and tokenized"
    );

    let mut model = build_model(config, &spec.tasks, opts.device, tr.seed);
    let report = model.load_pretrained(&assets.dir.join(checkpoint::MODEL_FILE))?;
    if !report.missing.is_empty() {
        warn!(missing = ?report.missing, "pretrained weights lack these tensors; they start from random values");
    }
    let mut optim = AdamW::new(
        model.named_tensors(),
        AdamWConfig {
            weight_decay: tr.weight_decay,
            ..Default::default()
        },
    );

    let accum = u64::from(tr.gradient_accumulation_steps.max(1));
    let mut sampler = Sampler::new(
        &spec.sampling,
        tr.seed,
        tr.batch_size as usize,
        tasks.iter().map(|t| t.train.len()).collect(),
    );
    let per_epoch = sampler.batches_per_epoch() as u64;
    let total = tr
        .max_steps
        .unwrap_or_else(|| ((tr.epochs * per_epoch as f64) / accum as f64).floor() as u64)
        .max(1);
    let schedule = schedule(tr, total);
    let warmup = schedule.warmup;
    let mut state = TrainerState {
        global_step: 0,
        micro_step: 0,
        epoch: 0.0,
        total_steps: total,
        warmup_steps: warmup,
        learning_rate: schedule.at(0),
        seed: tr.seed,
        max_length: Some(spec.model.max_length),
        metrics: BTreeMap::new(),
        log_history: Vec::new(),
        eval_history: Vec::new(),
    };

    // Resume from the newest committed checkpoint.
    let base = &spec.checkpoints.uri;
    let mut resumed_from = None;
    let mut last_saved = None;
    if let Some(latest) = store.manifest(base)?.and_then(|m| m.latest().cloned()) {
        let dir = checkpoint::localize(&store, &latest, cache)?;
        check_same_tasks(&checkpoint::read_tasks(&dir)?, &spec.tasks, &latest.uri)?;
        model.load_checkpoint(&dir.join(checkpoint::MODEL_FILE))?;
        let saved_state: TrainerState = checkpoint::read_json(&dir.join(checkpoint::STATE_FILE))?;
        let optim_path = dir.join(checkpoint::OPTIMIZER_FILE);
        let moments: BTreeMap<String, Tensor> = Tensor::read_safetensors(&optim_path)
            .map_err(|e| Error::file(optim_path.display(), e.to_string()))?
            .into_iter()
            .collect();
        optim
            .load_state(&moments, saved_state.global_step)
            .map_err(|m| Error::file(optim_path.display(), m))?;
        info!(step = saved_state.global_step, uri = %latest.uri, "resuming from checkpoint");
        resumed_from = Some(saved_state.global_step);
        last_saved = Some(saved_state.global_step);
        state = TrainerState {
            total_steps: total,
            warmup_steps: warmup,
            ..saved_state
        };
    }

    let progress = Progress::new(total, state.global_step, opts.progress);
    let mut interval = Interval::new();
    let mut last_entry = None;
    let eval_bs = tr.eval_batch_size.unwrap_or(tr.batch_size.max(32)) as usize;
    let save =
        |model: &MultiTaskModel, optim: &AdamW, state: &TrainerState| -> Result<CheckpointRef> {
            let dir = checkpoint::staging_dir(base, state.global_step, cache);
            std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
            model.save(&dir.join(checkpoint::MODEL_FILE))?;
            let moments: Vec<(String, Tensor)> = optim
                .state_tensors()
                .into_iter()
                .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
                .collect();
            let optim_path = dir.join(checkpoint::OPTIMIZER_FILE);
            Tensor::write_safetensors(&moments, &optim_path)
                .map_err(|e| Error::file(optim_path.display(), e.to_string()))?;
            checkpoint::write_json(&dir.join(checkpoint::STATE_FILE), state)?;
            checkpoint::write_json(&dir.join(checkpoint::TASKS_FILE), &spec.tasks)?;
            assets.copy_to(&dir)?;
            let staged = Staged {
                dir,
                step: state.global_step,
            };
            let entry = checkpoint::commit(
                &store,
                base,
                &staged,
                state.metrics.clone(),
                spec.checkpoints.keep,
            )?;
            progress.suspend(|| info!(step = entry.step, uri = %entry.uri, "checkpoint committed"));
            Ok(entry)
        };

    let mut interrupted = false;
    while state.global_step < total {
        if opts.stop.load(Ordering::SeqCst)
            || opts.stop_after.is_some_and(|s| state.global_step >= s)
        {
            interrupted = true;
            break;
        }
        // Dropout randomness is a function of the step, so a resumed run draws the same masks.
        tch::manual_seed((tr.seed ^ state.global_step.wrapping_mul(0x9E37_79B9)) as i64);
        let mut micro = Vec::with_capacity(accum as usize);
        for _ in 0..accum {
            let plan = sampler.plan(state.micro_step);
            let items: Vec<&TokenizedExample> = plan
                .examples
                .iter()
                .map(|&i| &tasks[plan.task].train[i])
                .collect();
            micro.push((plan.task, batcher(&model, plan.task).collate(&items)));
            state.micro_step += 1;
        }
        let lr = schedule.at(state.global_step);
        let losses = train_step(
            &model,
            &mut optim,
            &micro,
            lr,
            tr.max_grad_norm,
            tr.precision,
            true,
        )?;
        for ((task, batch), loss) in micro.iter().zip(losses) {
            interval.add(
                &tasks[*task].spec.name,
                loss,
                batch.examples,
                batch.real_tokens,
            );
        }
        state.global_step += 1;
        state.learning_rate = lr;
        state.epoch = state.micro_step as f64 / per_epoch.max(1) as f64;
        progress.inc(|| format!("loss {:.4} lr {:.2e}", interval.mean_loss(), lr));

        if state.global_step.is_multiple_of(tr.log_every_steps.max(1)) || state.global_step == total
        {
            let entry = interval.flush(state.global_step, state.epoch, lr);
            progress.suspend(|| {
                info!(
                    step = entry.step,
                    epoch = entry.epoch,
                    loss = entry.loss,
                    learning_rate = entry.learning_rate,
                    task_losses = %serde_json::to_string(&entry.task_losses).unwrap_or_default(),
                    examples_per_s = interval.examples_per_s,
                    tokens_per_s = interval.tokens_per_s,
                    "train"
                )
            });
            state.log_history.push(entry);
        }
        let final_step = state.global_step == total;
        if tr.eval_every_steps > 0
            && state.global_step.is_multiple_of(tr.eval_every_steps)
            && !final_step
        {
            state.metrics = evaluate(&model, &tasks, eval_bs, tr.precision);
            state
                .eval_history
                .push(with_step(&state.metrics, state.global_step));
            progress.suspend(|| info!(step = state.global_step, metrics = ?state.metrics, "eval"));
        }
        if final_step {
            state.metrics = evaluate(&model, &tasks, eval_bs, tr.precision);
            state
                .eval_history
                .push(with_step(&state.metrics, state.global_step));
        }
        if state
            .global_step
            .is_multiple_of(spec.checkpoints.every_steps)
            || final_step
        {
            last_entry = Some(save(&model, &optim, &state)?);
            last_saved = Some(state.global_step);
        }
    }
    progress.finish();

    if interrupted && last_saved != Some(state.global_step) {
        warn!(
            step = state.global_step,
            "stop requested: checkpointing before exit"
        );
        last_entry = Some(save(&model, &optim, &state)?);
    }
    if !interrupted && state.metrics.is_empty() {
        // Resumed at the end: nothing left to train, report the final metrics again.
        state.metrics = evaluate(&model, &tasks, eval_bs, tr.precision);
    }
    Ok(Outcome {
        step: state.global_step,
        total_steps: total,
        metrics: state.metrics,
        interrupted,
        resumed_from,
        checkpoint: last_entry,
    })
}

/// One optimizer step over the micro-batches `(task, batch)` of a gradient-accumulation
/// group: forward and backward of each (dropout when `dropout`), gradient clipping, AdamW on
/// the encoder and on the heads of the tasks that took part, gradients zeroed. Returns each
/// micro-batch's loss.
pub fn train_step(
    model: &MultiTaskModel,
    optim: &mut AdamW,
    micro: &[(usize, data::Batch)],
    lr: f64,
    max_grad_norm: f64,
    precision: Precision,
    dropout: bool,
) -> Result<Vec<f64>> {
    let scale = micro.len().max(1) as f64;
    let mut losses = Vec::with_capacity(micro.len());
    for (task, batch) in micro {
        let (loss, _) = autocast(precision, model.device(), || {
            model.loss(*task, batch, dropout)
        })?;
        (&loss / scale).backward();
        losses.push(loss.double_value(&[]));
    }
    optim.clip_grad_norm(max_grad_norm);
    let stepped: Vec<String> = micro
        .iter()
        .map(|(t, _)| {
            format!(
                "{}.{}.",
                crate::model::HEADS_PREFIX,
                model.heads_spec[*t].name
            )
        })
        .collect();
    // Heads of tasks that took no part in this step are not updated.
    optim.step_where(lr, |name| {
        !name.starts_with(crate::model::HEADS_PREFIX)
            || stepped.iter().any(|p| name.starts_with(p.as_str()))
    })?;
    optim.zero_grad();
    Ok(losses)
}

fn with_step(m: &BTreeMap<String, f64>, step: u64) -> BTreeMap<String, f64> {
    let mut m = m.clone();
    m.insert("step".into(), step as f64);
    m
}

/// Loss and throughput over one logging interval.
struct Interval {
    losses: BTreeMap<String, (f64, usize)>,
    examples: usize,
    tokens: usize,
    since: Instant,
    examples_per_s: f64,
    tokens_per_s: f64,
}

impl Interval {
    fn new() -> Self {
        Self {
            losses: BTreeMap::new(),
            examples: 0,
            tokens: 0,
            since: Instant::now(),
            examples_per_s: 0.0,
            tokens_per_s: 0.0,
        }
    }

    fn add(&mut self, task: &str, loss: f64, examples: usize, tokens: usize) {
        let e = self.losses.entry(task.to_string()).or_default();
        e.0 += loss;
        e.1 += 1;
        self.examples += examples;
        self.tokens += tokens;
    }

    fn mean_loss(&self) -> f64 {
        let (s, n) = self
            .losses
            .values()
            .fold((0.0, 0), |(s, n), (ls, ln)| (s + ls, n + ln));
        if n == 0 { 0.0 } else { s / n as f64 }
    }

    fn flush(&mut self, step: u64, epoch: f64, lr: f64) -> LogEntry {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        self.examples_per_s = self.examples as f64 / secs;
        self.tokens_per_s = self.tokens as f64 / secs;
        let entry = LogEntry {
            step,
            epoch,
            loss: self.mean_loss(),
            learning_rate: lr,
            task_losses: self
                .losses
                .iter()
                .map(|(k, (s, n))| (k.clone(), s / *n as f64))
                .collect(),
        };
        self.losses.clear();
        self.examples = 0;
        self.tokens = 0;
        self.since = Instant::now();
        entry
    }
}
