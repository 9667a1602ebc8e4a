//! Measurements behind `make bench`: the product's own data path, model and optimizer step,
//! timed step by step, and the rate of a plain libtorch matmul on the same device.
//! `bench/run.py` runs the Python reference on the same plan and compares.

use std::path::PathBuf;
use std::time::Instant;

use mtl_crds::MultiTaskTrainingJobSpec;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use mtl_trainer::Result;
use mtl_trainer::assets::ModelAssets;
use mtl_trainer::data::TokenStore;
use mtl_trainer::data::{Loader, TaskData, cache::Origin};
use mtl_trainer::io::Storage;
use mtl_trainer::model::{MODEL_FILE, build_model};
use mtl_trainer::optim::{AdamW, AdamWConfig, LinearSchedule};
use mtl_trainer::precision::Amp;
use mtl_trainer::sampling::Sampler;
use mtl_trainer::train;

/// What to run.
pub struct TrainBench {
    pub spec: MultiTaskTrainingJobSpec,
    /// Steps run before the measured window (allocator, caches, lazy init).
    pub warmup: usize,
    /// Steps in the measured window.
    pub steps: usize,
    /// Pad every batch to this length (the original's fixed padding) instead of per batch.
    pub pad_to: Option<usize>,
    /// Dropout on (training mode); off makes losses comparable with another implementation.
    pub dropout: bool,
    pub device: Device,
    pub cache_dir: PathBuf,
    /// Write the complete initial state (encoder and heads) here, for the reference to load.
    pub save_init: Option<PathBuf>,
}

/// The batch of one step: a task and the indices of its training examples.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedBatch {
    pub task: String,
    pub examples: Vec<usize>,
}

/// One timed step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub task: String,
    pub examples: usize,
    /// Sequences (examples × choices) and their padded length.
    pub rows: usize,
    pub seq_len: usize,
    pub real_tokens: usize,
    /// Sum over sequences of their real length squared (attention's useful work).
    pub sum_sq_len: usize,
    pub loss: f64,
    pub lr: f64,
    /// Sampling and collation (host to device included).
    pub data_s: f64,
    /// Forward, backward, clipping, optimizer step.
    pub compute_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub implementation: &'static str,
    pub device: String,
    pub threads: i32,
    pub pad_to: Option<usize>,
    pub dropout: bool,
    pub warmup: usize,
    /// Reading and tokenizing every training example (once per run), or mapping the stores
    /// when `from_cache`.
    pub load_s: f64,
    pub from_cache: bool,
    pub tokenized_sequences: usize,
    pub schedule: LinearSchedule,
    pub plan: Vec<PlannedBatch>,
    pub steps: Vec<StepRecord>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `warmup + steps` training steps of `b.spec` exactly as `train` does them and times each.
pub fn train(b: &TrainBench) -> Result<TrainReport> {
    let spec = &b.spec;
    let store = Storage::new()?;
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, &b.cache_dir)?;
    let config = assets.config()?;
    let encoder = assets.encoder(&config, spec.model.max_length as usize)?;

    let started = Instant::now();
    let tasks =
        Loader::new(&store, &b.cache_dir, &encoder, &assets.tokenizer_path())?.load(spec, true)?;
    let load_s = started.elapsed().as_secs_f64();
    let stores: Vec<&TokenStore> = tasks.iter().filter_map(|t| t.train.as_ref()).collect();
    let sequences = stores.iter().map(|s| s.meta().sequences as usize).sum();
    let from_cache = tasks.iter().all(|t| t.origin.0 == Some(Origin::Cached));

    let tr = &spec.training;
    let mut model = build_model(config, &spec.tasks, b.device, tr.seed);
    model.load_pretrained(&assets.dir.join(MODEL_FILE))?;
    if let Some(path) = &b.save_init {
        model.save(path)?;
    }
    let mut optim = AdamW::new(
        model.named_tensors(),
        AdamWConfig {
            weight_decay: tr.weight_decay,
            ..Default::default()
        },
    );
    let mut sampler = Sampler::new(
        &spec.sampling,
        tr.seed,
        tr.batch_size as usize,
        tasks.iter().map(TaskData::train_len).collect(),
    );
    let mut amp = Amp::new(tr.precision, b.device, tr.allow_tf32)?;
    let total = (b.warmup + b.steps) as u64;
    let schedule = LinearSchedule::for_run(tr, total);

    let mut plan = Vec::new();
    let mut steps = Vec::new();
    for step in 0..total as usize {
        tch::manual_seed((tr.seed ^ (step as u64).wrapping_mul(0x9E37_79B9)) as i64);
        sync(b.device);
        let started = Instant::now();
        let planned = sampler.plan(step as u64);
        let task = &tasks[planned.task].spec;
        let train = stores[planned.task];
        let mut collator = model.batcher(planned.task);
        collator.pad_to = b.pad_to;
        let batch = collator.collate(train, &planned.examples)?;
        sync(b.device);
        let data_s = started.elapsed().as_secs_f64();

        let started = Instant::now();
        let lr = schedule.at(step as u64);
        let shape = batch.input_ids.size();
        let record = StepRecord {
            step,
            task: task.name.clone(),
            examples: batch.examples,
            rows: shape.first().copied().unwrap_or(0) as usize,
            seq_len: shape.get(1).copied().unwrap_or(0) as usize,
            real_tokens: batch.real_tokens,
            sum_sq_len: planned
                .examples
                .iter()
                .flat_map(|&i| (0..train.choices()).map(move |j| train.sequence(i, j).len()))
                .map(|len| len.pow(2))
                .sum(),
            loss: 0.0,
            lr,
            data_s,
            compute_s: 0.0,
        };
        let micro = [train::Micro::whole(planned.task, batch)];
        let settings = train::StepSettings {
            lr,
            max_grad_norm: tr.max_grad_norm,
            dropout: b.dropout,
        };
        let out = train::train_step(&model, &mut optim, &mut amp, &micro, &settings, None)?;
        sync(b.device);
        steps.push(StepRecord {
            loss: out.micro[0].loss,
            compute_s: started.elapsed().as_secs_f64(),
            ..record
        });
        plan.push(PlannedBatch {
            task: task.name.clone(),
            examples: planned.examples,
        });
    }
    Ok(TrainReport {
        implementation: "mtl-trainer",
        device: format!("{:?}", b.device),
        threads: tch::get_num_threads(),
        pad_to: b.pad_to,
        dropout: b.dropout,
        warmup: b.warmup,
        load_s,
        from_cache,
        tokenized_sequences: sequences,
        schedule,
        plan,
        steps,
    })
}

/// One store of a [`LoadReport`].
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub task: String,
    pub split: &'static str,
    pub examples: u64,
    pub sequences: u64,
    pub tokens: u64,
    pub bytes: usize,
    pub from_cache: bool,
}

/// Reading, tokenizing and caching a job's data (or mapping it from the cache).
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub seconds: f64,
    pub examples: u64,
    pub examples_per_s: f64,
    pub stores: Vec<StoreReport>,
}

/// Loads every store of `spec` with the cache at `cache_dir`, timed.
pub fn load(spec: &MultiTaskTrainingJobSpec, cache_dir: &std::path::Path) -> Result<LoadReport> {
    let store = Storage::new()?;
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, cache_dir)?;
    let config = assets.config()?;
    let encoder = assets.encoder(&config, spec.model.max_length as usize)?;
    let started = Instant::now();
    let tasks =
        Loader::new(&store, cache_dir, &encoder, &assets.tokenizer_path())?.load(spec, true)?;
    let seconds = started.elapsed().as_secs_f64();
    let mut stores = Vec::new();
    for t in &tasks {
        for (split, s, origin) in [
            ("train", t.train.as_ref(), t.origin.0),
            ("validation", t.validation.as_ref(), t.origin.1),
        ] {
            if let Some(s) = s {
                stores.push(StoreReport {
                    task: t.spec.name.clone(),
                    split,
                    examples: s.meta().examples,
                    sequences: s.meta().sequences,
                    tokens: s.meta().tokens,
                    bytes: s.bytes(),
                    from_cache: origin == Some(Origin::Cached),
                });
            }
        }
    }
    let examples = stores.iter().map(|s| s.examples).sum();
    Ok(LoadReport {
        seconds,
        examples,
        examples_per_s: examples as f64 / seconds.max(1e-9),
        stores,
    })
}

/// The rate of one matmul shape on `device`.
#[derive(Debug, Clone, Serialize)]
pub struct MatmulRate {
    pub m: i64,
    pub k: i64,
    pub n: i64,
    pub kind: String,
    pub iterations: u64,
    pub seconds: f64,
    pub flops_per_s: f64,
}

/// FLOP/s of `(m×k) @ (k×n)` in `kind`, run for at least `min_seconds` after warm-up.
pub fn matmul_rate(
    m: i64,
    k: i64,
    n: i64,
    kind: Kind,
    device: Device,
    min_seconds: f64,
) -> MatmulRate {
    let a = Tensor::randn([m, k], (kind, device));
    let b = Tensor::randn([k, n], (kind, device));
    for _ in 0..3 {
        let _ = a.matmul(&b);
    }
    sync(device);
    let started = Instant::now();
    let mut iterations = 0u64;
    while iterations < 5 || started.elapsed().as_secs_f64() < min_seconds {
        let _ = a.matmul(&b);
        iterations += 1;
        if iterations.is_multiple_of(8) {
            sync(device);
        }
    }
    sync(device);
    let seconds = started.elapsed().as_secs_f64();
    MatmulRate {
        m,
        k,
        n,
        kind: format!("{kind:?}"),
        iterations,
        seconds,
        flops_per_s: 2.0 * (m * k * n) as f64 * iterations as f64 / seconds,
    }
}
