//! Checkpoints: their layout, writing and committing one ([`save`], [`commit`]), making one
//! local ([`localize`]), picking one ([`resolve`]), resuming a run from the newest
//! ([`resume`]) and loading one for inference ([`Loaded`]). The trainer's docs
//! (docs/trainer.md, "Checkpoints") describe the protocol:
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

use mtl_crds::{BestCheckpointSpec, CheckpointRef, MultiTaskTrainingJobSpec, TaskSpec};
use mtl_storage::manifest::checkpoint_uri;
use mtl_storage::{is_gcs, join};
use tch::{Device, Tensor};
use tracing::{info, warn};

use crate::assets::ModelAssets;
use crate::config::ModelConfig;
use crate::data::TextEncoder;
use crate::io::{Storage, read_json, write_json};
use crate::model::{
    CONFIG_FILE, HeadSpec, MODEL_FILE, MultiTaskModel, TOKENIZER_EXTRAS, TOKENIZER_FILE,
    build_model,
};
use crate::optim::AdamW;
use crate::precision::Amp;
use crate::state::{Fingerprint, TrainerState};
use crate::{Error, Result};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";
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

/// What a checkpoint keeps of a run: the weights, the optimizer's state, where the run stands
/// (the loss scale in it), the tasks, and the pretrained model's config and tokenizer.
pub struct Snapshot<'a> {
    pub model: &'a MultiTaskModel,
    pub optim: &'a AdamW,
    pub state: &'a TrainerState,
    pub tasks: &'a [TaskSpec],
    pub assets: &'a ModelAssets,
    /// The metrics measured at this very step, if an evaluation ran at it: only those go into
    /// the manifest entry and rank the checkpoint (an earlier evaluation's are not its own).
    pub metrics: Option<&'a BTreeMap<String, f64>>,
}

/// Writes every file of the checkpoint of `snapshot.state.global_step` (staged in `cache`
/// for gs://), then commits it to the manifest under `base`, with the metrics measured at its
/// step (`keep`, `rank`: see [`commit`]; a checkpoint without metrics is not ranked).
pub fn save(
    store: &Storage,
    base: &str,
    cache: &Path,
    snapshot: &Snapshot<'_>,
    keep: Option<u32>,
    rank: Option<&BestCheckpointSpec>,
) -> Result<CheckpointRef> {
    let step = snapshot.state.global_step;
    let dir = staging_dir(base, step, cache);
    std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    snapshot.model.save(&dir.join(MODEL_FILE))?;
    let tensors = snapshot
        .optim
        .state_tensors()
        .into_iter()
        .map(|(n, t)| Ok((n, t.f_to_device(Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<Vec<(String, Tensor)>>>()?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    Tensor::write_safetensors(&tensors, &optim_path)
        .map_err(|e| Error::file(optim_path.display(), e.to_string()))?;
    write_json(&dir.join(STATE_FILE), snapshot.state)?;
    write_json(&dir.join(TASKS_FILE), &snapshot.tasks)?;
    snapshot.assets.copy_to(&dir)?;
    let staged = Staged { dir, step };
    commit(
        store,
        base,
        &staged,
        snapshot.metrics.cloned().unwrap_or_default(),
        keep,
        rank.filter(|_| snapshot.metrics.is_some()),
    )
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
    store: &Storage,
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
pub fn localize(store: &Storage, entry: &CheckpointRef, cache: &Path) -> Result<PathBuf> {
    if !is_gcs(&entry.uri) {
        return Ok(PathBuf::from(&entry.uri));
    }
    let mut dir = None;
    for name in FILES {
        let path = store.fetch(&join(&entry.uri, name), cache)?;
        dir = path.parent().map(Path::to_path_buf);
    }
    store.fetch_if_present(&entry.uri, &TOKENIZER_EXTRAS, cache)?;
    dir.ok_or_else(|| Error::file(&entry.uri, "checkpoint has no files"))
}

/// Whether a `--checkpoint` value picks a checkpoint of the job's manifest (`latest`, `best`,
/// a step) rather than naming a checkpoint directory.
pub fn is_selector(checkpoint: &str) -> bool {
    matches!(checkpoint, "latest" | "best") || checkpoint.parse::<u64>().is_ok()
}

/// The checkpoint `selector` picks from the manifest under `base`: `latest` (also when
/// `None`), `best`, or a step; any other value is a checkpoint directory's URI.
pub fn resolve(store: &Storage, base: &str, selector: Option<&str>) -> Result<CheckpointRef> {
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

/// The tasks a checkpoint was trained on (`tasks.json`).
pub fn read_tasks(dir: &Path) -> Result<Vec<TaskSpec>> {
    read_json(&dir.join(TASKS_FILE))
}

/// What resuming restores a run into: its model's weights, its optimizer's state and its loss
/// scaler.
pub struct Restore<'a> {
    pub model: &'a mut MultiTaskModel,
    pub optim: &'a mut AdamW,
    pub amp: &'a mut Amp,
}

/// Loads the newest committed checkpoint under `spec.checkpoints.uri`, if any, into `into`
/// and returns where that run stood (None when nothing was committed). The checkpoint must
/// have been trained on the job's tasks, and (unless `force`, `--force-resume`) with the
/// same batches: its fingerprint must be `now`.
pub fn resume(
    store: &Storage,
    spec: &MultiTaskTrainingJobSpec,
    cache: &Path,
    now: Option<&Fingerprint>,
    force: bool,
    into: Restore<'_>,
) -> Result<Option<TrainerState>> {
    let Some(latest) = store
        .manifest(&spec.checkpoints.uri)?
        .and_then(|m| m.latest().cloned())
    else {
        return Ok(None);
    };
    let dir = localize(store, &latest, cache)?;
    check_same_heads(&read_tasks(&dir)?, spec, &latest.uri)?;
    let saved: TrainerState = read_json(&dir.join(STATE_FILE))?;
    check_same_batches(saved.fingerprint.as_ref(), now, force, &latest.uri)?;
    into.model.load_checkpoint(&dir.join(MODEL_FILE))?;
    let optim_path = dir.join(OPTIMIZER_FILE);
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(&optim_path)
        .map_err(|e| Error::file(optim_path.display(), e.to_string()))?
        .into_iter()
        .collect();
    into.optim
        .load_state(&tensors, saved.global_step)
        .map_err(|m| Error::file(optim_path.display(), m))?;
    if let (Some(scaler), Some(s)) = (&mut into.amp.scaler, &saved.loss_scale) {
        scaler.load(s)?;
    }
    info!(step = saved.global_step, uri = %latest.uri, "resuming from checkpoint");
    Ok(Some(saved))
}

/// The checkpoint's fingerprint (`then`) must be the job's (`now`), unless `force`; a
/// checkpoint without one resumes unchecked.
fn check_same_batches(
    then: Option<&Fingerprint>,
    now: Option<&Fingerprint>,
    force: bool,
    at: &str,
) -> Result<()> {
    match (then, now) {
        (Some(then), Some(now)) => {
            if let Some(diff) = then.difference(now) {
                if !force {
                    return Err(Error::invalid_input(
                        at,
                        format!(
                            "cannot resume: {diff}; resuming would change which batches the rest of the run trains on (use a new checkpoints.uri, restore the setting, or pass --force-resume)"
                        ),
                    ));
                }
                warn!(difference = %diff, "resuming with a changed job (--force-resume)");
            }
        }
        _ => {
            warn!(uri = %at, "checkpoint has no fingerprint; resuming without checking that the job is unchanged")
        }
    }
    Ok(())
}

/// The checkpoint's heads must be the job's: same task names in the same order, with the
/// same types and output counts.
fn check_same_heads(saved: &[TaskSpec], spec: &MultiTaskTrainingJobSpec, at: &str) -> Result<()> {
    let shape = |ts: &[TaskSpec]| -> Vec<HeadSpec> { ts.iter().map(HeadSpec::from).collect() };
    if shape(saved) != shape(&spec.tasks) {
        let names = |ts: &[TaskSpec]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
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

/// A committed checkpoint made local and its model loaded (`eval`, `predict`, `export`).
pub struct Loaded {
    pub model: MultiTaskModel,
    /// The tasks it was trained on, in head order.
    pub tasks: Vec<TaskSpec>,
    pub encoder: TextEncoder,
    pub dir: PathBuf,
    pub entry: CheckpointRef,
}

impl Loaded {
    pub fn load(
        store: &Storage,
        entry: CheckpointRef,
        cache: &Path,
        device: Device,
    ) -> Result<Self> {
        let dir = localize(store, &entry, cache)?;
        let tasks = read_tasks(&dir)?;
        let state: TrainerState = read_json(&dir.join(STATE_FILE))?;
        let config = ModelConfig::load(&dir.join(CONFIG_FILE))?;
        let max_length = state.max_length.unwrap_or(128) as usize;
        let encoder = ModelAssets { dir: dir.clone() }.encoder(&config, max_length)?;
        let mut model = build_model(config, &tasks, device, state.seed);
        model.load_checkpoint(&dir.join(MODEL_FILE))?;
        Ok(Self {
            model,
            tasks,
            encoder,
            dir,
            entry,
        })
    }

    /// The tokenizer as training used it for `task`: truncating at the task's own `maxLength`
    /// when it has one, else at the model's.
    pub fn encoder_for(&self, task: &TaskSpec) -> Result<TextEncoder> {
        match task.max_length {
            Some(n) if n as usize != self.encoder.max_length() => {
                self.encoder.with_max_length(n as usize)
            }
            _ => Ok(self.encoder.clone()),
        }
    }

    pub fn task(&self, name: &str) -> Result<(usize, &TaskSpec)> {
        self.tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--task {name:?}: the checkpoint has tasks {:?}",
                    self.tasks.iter().map(|t| &t.name).collect::<Vec<_>>()
                ))
            })
    }
}
