//! Checkpoint layout and commit protocol (DESIGN.md, "Checkpoints"):
//!
//! ```text
//! <uri>/checkpoint-<step>/model.safetensors      encoder + all heads
//! <uri>/checkpoint-<step>/optimizer.safetensors  AdamW moments
//! <uri>/checkpoint-<step>/trainer_state.json     step, schedule, sampler position, metrics
//! <uri>/checkpoint-<step>/config.json, tokenizer.json, tasks.json
//! <uri>/checkpoints.json                          the manifest, newest last
//! ```
//! Files are uploaded first; the manifest is rewritten last, so readers never see a partial
//! checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mtl_crds::{
    BestCheckpointSpec, CheckpointRef, MultiTaskTrainingJobSpec, RunEnd, SamplingSpec, TaskSpec,
    TaskType,
};
use mtl_storage::manifest::checkpoint_uri;
use mtl_storage::{Manifest, Storage, is_gcs, join};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TASKS_FILE: &str = "tasks.json";

/// Files every checkpoint holds, uploaded in this order.
pub const FILES: [&str; 6] = [
    CONFIG_FILE,
    TOKENIZER_FILE,
    TASKS_FILE,
    STATE_FILE,
    OPTIMIZER_FILE,
    MODEL_FILE,
];

/// Tokenizer side files copied along when the pretrained model has them, so an exported
/// model loads with `AutoTokenizer` too.
pub const TOKENIZER_EXTRAS: [&str; 5] = [
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];

/// One line of the training log kept in `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: u64,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    /// Mean global gradient norm (before clipping) over the interval's steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Steps of the interval the fp16 loss scaler skipped (an inf or NaN gradient).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_steps: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_losses: BTreeMap<String, f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `trainer_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub global_step: u64,
    /// Micro-batches consumed: the sampler's whole state (it is a pure function of this).
    pub micro_step: u64,
    pub epoch: f64,
    pub total_steps: u64,
    pub warmup_steps: u64,
    pub learning_rate: f64,
    pub seed: u64,
    /// spec.model.maxLength the model was trained with (predict and eval reuse it).
    #[serde(default)]
    pub max_length: Option<u32>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    #[serde(default)]
    pub log_history: Vec<LogEntry>,
    #[serde(default)]
    pub eval_history: Vec<BTreeMap<String, f64>>,
    /// What the run's batches depend on; resuming checks it (absent in checkpoints written
    /// before it was kept: those resume unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<Fingerprint>,
    /// The fp16 loss scaler's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<crate::precision::LossScale>,
    /// Early stopping's count (`training.earlyStopping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<crate::train::EarlyStopState>,
    /// Set when the run ended before its last step (early stopping): resuming it trains no
    /// further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<RunEnd>,
}

/// What decides which batches a run trains on, step by step, and what each output means:
/// resuming with any of it changed would silently change what the resumed run is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprint {
    /// The global batch: `batchSize` × data-parallel ranks.
    pub batch_size: u32,
    pub gradient_accumulation_steps: u32,
    pub sampling: SamplingSpec,
    pub seed: u64,
    pub tasks: Vec<TaskFingerprint>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskFingerprint {
    pub name: String,
    #[serde(rename = "type")]
    pub task_type: TaskType,
    pub outputs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_names: Option<Vec<String>>,
    /// SHA-256 of the training file.
    pub train_sha256: String,
}

impl Fingerprint {
    /// `train_sha256`: each task's training-file hash, in task order; `ranks`: the
    /// data-parallel world size.
    pub fn of(spec: &MultiTaskTrainingJobSpec, train_sha256: &[String], ranks: usize) -> Self {
        let tr = &spec.training;
        Self {
            batch_size: tr.batch_size * ranks as u32,
            gradient_accumulation_steps: tr.gradient_accumulation_steps,
            sampling: spec.sampling.clone(),
            seed: tr.seed,
            tasks: spec
                .tasks
                .iter()
                .zip(train_sha256)
                .map(|(t, sha)| TaskFingerprint {
                    name: t.name.clone(),
                    task_type: t.task_type,
                    outputs: match t.task_type {
                        TaskType::MultipleChoice => t.num_choices.unwrap_or(0),
                        _ => t.num_outputs(),
                    },
                    label_names: t.label_names.clone(),
                    train_sha256: sha.clone(),
                })
                .collect(),
        }
    }

    /// The first difference between the checkpoint's fingerprint (`self`) and the job's, as
    /// `field: the checkpoint has X, the job has Y`.
    pub fn difference(&self, now: &Fingerprint) -> Option<String> {
        let differs = |field: &str, saved: String, job: String| {
            Some(format!(
                "{field}: the checkpoint has {saved}, the job has {job}"
            ))
        };
        if self.batch_size != now.batch_size {
            return differs(
                "spec.training.batchSize (× data-parallel ranks: the global batch)",
                self.batch_size.to_string(),
                now.batch_size.to_string(),
            );
        }
        if self.gradient_accumulation_steps != now.gradient_accumulation_steps {
            return differs(
                "spec.training.gradientAccumulationSteps",
                self.gradient_accumulation_steps.to_string(),
                now.gradient_accumulation_steps.to_string(),
            );
        }
        if self.sampling != now.sampling {
            return differs(
                "spec.sampling",
                format!("{:?}", self.sampling),
                format!("{:?}", now.sampling),
            );
        }
        if self.seed != now.seed {
            return differs(
                "spec.training.seed",
                self.seed.to_string(),
                now.seed.to_string(),
            );
        }
        let names = |f: &Fingerprint| f.tasks.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        if names(self) != names(now) {
            return differs(
                "spec.tasks",
                format!("tasks {:?}", names(self)),
                format!("{:?}", names(now)),
            );
        }
        for (i, (a, b)) in self.tasks.iter().zip(&now.tasks).enumerate() {
            let at = |f: &str| format!("spec.tasks[{i}] ({}).{f}", a.name);
            if a.task_type != b.task_type {
                return differs(
                    &at("type"),
                    format!("{:?}", a.task_type),
                    format!("{:?}", b.task_type),
                );
            }
            if a.outputs != b.outputs {
                return differs(
                    &at("numLabels/numChoices"),
                    a.outputs.to_string(),
                    b.outputs.to_string(),
                );
            }
            if a.label_names != b.label_names {
                return differs(
                    &at("labelNames"),
                    format!("{:?}", a.label_names),
                    format!("{:?}", b.label_names),
                );
            }
            if a.train_sha256 != b.train_sha256 {
                return differs(
                    &at("train"),
                    format!("data with SHA-256 {}", a.train_sha256),
                    b.train_sha256.clone(),
                );
            }
        }
        None
    }
}

/// Sync facade over the async storage layer, for the (synchronous) training loop.
pub struct Store {
    rt: tokio::runtime::Runtime,
    pub storage: Storage,
}

impl Store {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("tokio runtime"))?;
        Ok(Self {
            rt,
            storage: Storage::new(),
        })
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A local path for `uri`, downloading it into `cache` once if it is remote.
    pub fn fetch(&self, uri: &str, cache: &Path) -> Result<PathBuf> {
        Ok(self.block_on(self.storage.fetch(uri, cache))?)
    }

    /// Fetches the tokenizer side files that exist under `dir_uri` (none is required).
    pub fn fetch_tokenizer_extras(&self, dir_uri: &str, cache: &Path) -> Result<()> {
        for name in TOKENIZER_EXTRAS {
            match self.block_on(self.storage.fetch(&join(dir_uri, name), cache)) {
                Err(e) if !e.is_not_found() => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn manifest(&self, base: &str) -> Result<Option<Manifest>> {
        Ok(self.block_on(Manifest::load(&self.storage, base))?)
    }
}

/// A checkpoint's files in a local directory, ready to be uploaded.
pub struct Staged {
    pub dir: PathBuf,
    pub step: u64,
}

/// Where to write the files of checkpoint `step` before they are committed: the final
/// directory itself for local URIs, a staging directory in the cache for gs://.
pub fn staging_dir(base: &str, step: u64, cache: &Path) -> PathBuf {
    if is_gcs(base) {
        cache.join("staging").join(format!("checkpoint-{step}"))
    } else {
        PathBuf::from(checkpoint_uri(base, step))
    }
}

/// Uploads a staged checkpoint and then commits it to the manifest (`rank`: see
/// [`Manifest::commit`]).
pub fn commit(
    store: &Store,
    base: &str,
    staged: &Staged,
    metrics: BTreeMap<String, f64>,
    keep: Option<u32>,
    rank: Option<&BestCheckpointSpec>,
) -> Result<CheckpointRef> {
    let uri = checkpoint_uri(base, staged.step);
    if is_gcs(base) {
        for name in FILES
            .iter()
            .copied()
            .chain(TOKENIZER_EXTRAS.iter().copied())
        {
            let file = staged.dir.join(name);
            if file.exists() {
                store.block_on(store.storage.upload(&file, &join(&uri, name)))?;
            }
        }
    }
    let entry = CheckpointRef {
        step: staged.step,
        uri: uri.clone(),
        time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        metrics,
    };
    let mut manifest = store.manifest(base)?.unwrap_or_default();
    store.block_on(manifest.commit(&store.storage, base, entry.clone(), keep, rank))?;
    if is_gcs(base) {
        let _ = std::fs::remove_dir_all(&staged.dir);
    }
    Ok(entry)
}

/// Makes checkpoint `entry`'s files available locally (downloading from gs:// into `cache`).
pub fn localize(store: &Store, entry: &CheckpointRef, cache: &Path) -> Result<PathBuf> {
    if !is_gcs(&entry.uri) {
        return Ok(PathBuf::from(&entry.uri));
    }
    let mut dir = None;
    for name in FILES {
        let path = store.fetch(&join(&entry.uri, name), cache)?;
        dir = path.parent().map(Path::to_path_buf);
    }
    store.fetch_tokenizer_extras(&entry.uri, cache)?;
    dir.ok_or_else(|| Error::file(&entry.uri, "checkpoint has no files"))
}

/// Whether a `--checkpoint` value picks a checkpoint of the job's manifest (`latest`, `best`,
/// a step) rather than naming a checkpoint directory.
pub fn is_selector(checkpoint: &str) -> bool {
    matches!(checkpoint, "latest" | "best") || checkpoint.parse::<u64>().is_ok()
}

/// The checkpoint `selector` picks from the manifest under `base`: `latest` (also when
/// `None`), `best`, or a step; any other value is a checkpoint directory's URI.
pub fn resolve(store: &Store, base: &str, selector: Option<&str>) -> Result<CheckpointRef> {
    let selector = selector.unwrap_or("latest");
    if !is_selector(selector) {
        return Ok(CheckpointRef {
            step: 0,
            uri: selector.to_string(),
            time: String::new(),
            metrics: BTreeMap::new(),
        });
    }
    let at = join(base, mtl_storage::MANIFEST_NAME);
    let manifest = store.manifest(base)?.unwrap_or_default();
    let steps = || {
        manifest
            .checkpoints
            .iter()
            .map(|c| c.step.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match selector {
        "latest" => manifest.latest().ok_or_else(|| {
            Error::file(
                &at,
                "no committed checkpoint (train first, or pass --checkpoint)",
            )
        })?,
        "best" => {
            let best = manifest.best.as_ref().ok_or_else(|| {
                Error::file(
                    &at,
                    "--checkpoint best: no best checkpoint recorded (set spec.checkpoints.best and train)",
                )
            })?;
            manifest.at(best.step).ok_or_else(|| {
                Error::file(
                    &at,
                    format!(
                        "the best checkpoint, step {}, is not among the committed ones",
                        best.step
                    ),
                )
            })?
        }
        step => {
            let step: u64 = step.parse().unwrap_or_default();
            manifest.at(step).ok_or_else(|| {
                Error::file(
                    &at,
                    format!(
                        "--checkpoint {step}: no committed checkpoint at that step (committed: {})",
                        steps()
                    ),
                )
            })?
        }
    };
    Ok(found.clone())
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::file(path.display(), e.to_string()))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::file(path.display(), e.to_string()))?;
    std::fs::write(path, text).map_err(Error::io(path))
}

/// The tasks a checkpoint was trained on (`tasks.json`).
pub fn read_tasks(dir: &Path) -> Result<Vec<TaskSpec>> {
    read_json(&dir.join(TASKS_FILE))
}
