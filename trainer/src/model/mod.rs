//! The multi-task model: one encoder whose parameters every task shares, and one head per task.
//!
//! Tensor names: the encoder keeps HF names (`bert.*` / `roberta.*`); task `T`'s head is
//! stored as `heads.T.classifier.*`, which `export` renames to HF's `classifier.*`.
//!
//! A HuggingFace model directory (a pretrained model, a checkpoint, an export) holds
//! [`CONFIG_FILE`], [`MODEL_FILE`], [`TOKENIZER_FILE`] and some of [`TOKENIZER_EXTRAS`].

pub mod encoder;
pub mod heads;

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::{TaskSpec, TaskType};
use tch::{Device, Tensor, nn};

use crate::config::ModelConfig;
use crate::data::{Batch, Batcher};
use crate::{Error, Result};
use encoder::{Encoder, Frozen};
use heads::Head;

pub const HEADS_PREFIX: &str = "heads";

/// The files of a HuggingFace model directory.
pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The transformers tokenizer's settings (`model_max_length`, ...), among [`TOKENIZER_EXTRAS`].
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Tokenizer side files copied along when the pretrained model has them, so an exported
/// model loads with `AutoTokenizer` too.
pub const TOKENIZER_EXTRAS: [&str; 5] = [
    TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
];

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

/// What a task's head looks like, as far as the model is concerned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeadSpec {
    pub name: String,
    pub task_type: TaskType,
    pub outputs: i64,
}

impl From<&TaskSpec> for HeadSpec {
    fn from(t: &TaskSpec) -> Self {
        Self {
            name: t.name.clone(),
            task_type: t.task_type,
            outputs: t.num_outputs() as i64,
        }
    }
}

pub struct MultiTaskModel {
    pub vs: nn::VarStore,
    pub config: ModelConfig,
    pub heads_spec: Vec<HeadSpec>,
    encoder: Encoder,
    heads: Vec<Head>,
}

/// What loading pretrained weights found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Model tensors the file lacked (kept at their initial values).
    pub missing: Vec<String>,
}

impl MultiTaskModel {
    /// A freshly initialised model (HF initialisation: N(0, initializer_range), zero biases,
    /// unit LayerNorm weights).
    pub fn new(config: ModelConfig, heads_spec: Vec<HeadSpec>, device: Device) -> Self {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = Encoder::new(&root / config.model_type.prefix(), &config);
        let heads = heads_spec
            .iter()
            .map(|h| {
                Head::new(
                    &root / HEADS_PREFIX / h.name.as_str(),
                    &config,
                    h.outputs,
                    h.task_type == TaskType::MultipleChoice,
                )
            })
            .collect();
        Self {
            vs,
            config,
            heads_spec,
            encoder,
            heads,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Builds batches for the head of `task` with the model's padding id, on its device.
    pub fn batcher(&self, task: usize) -> Batcher {
        Batcher::for_head(
            self.config.pad_token_id(),
            self.heads_spec.get(task).map(|h| h.task_type),
            self.device(),
        )
    }

    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.heads_spec.iter().position(|h| h.name == name)
    }

    /// Logits of `task` for `batch`: (n, outputs), or (n, choices) for multiple choice.
    /// `train`: dropout on.
    pub fn forward(&self, task: usize, batch: &Batch, train: bool) -> Result<Tensor> {
        self.forward_with(task, batch, train, None)
    }

    fn forward_with(
        &self,
        task: usize,
        batch: &Batch,
        train: bool,
        frozen: Option<&Frozen>,
    ) -> Result<Tensor> {
        let (head, spec) = self.head(task)?;
        let out = self.encoder.forward(
            &batch.input_ids,
            &batch.token_type_ids,
            &batch.attention_mask,
            head.uses_pooler(),
            train,
            frozen,
        )?;
        let logits = head.forward(&out, train)?;
        Ok(if spec.task_type == TaskType::MultipleChoice {
            logits.f_view([batch.examples as i64, batch.choices as i64])?
        } else {
            logits
        })
    }

    fn head(&self, task: usize) -> Result<(&Head, &HeadSpec)> {
        match (self.heads.get(task), self.heads_spec.get(task)) {
            (Some(h), Some(s)) => Ok((h, s)),
            _ => Err(Error::Invalid(format!(
                "task index {task} is out of range: the model has {} heads",
                self.heads.len()
            ))),
        }
    }

    /// Loss of `task` on a labelled batch, and the logits.
    pub fn loss(&self, task: usize, batch: &Batch, train: bool) -> Result<(Tensor, Tensor)> {
        let labels = batch
            .labels
            .as_ref()
            .ok_or_else(|| Error::Invalid("batch has no labels".into()))?;
        let logits = self.forward(task, batch, train)?;
        let regression = self.head(task)?.1.task_type == TaskType::Regression;
        Ok((heads::loss(&logits, labels, regression)?, logits))
    }

    /// The model for inference: the encoder's joined projection weights are built once,
    /// not for every batch. Valid while the parameters do not change.
    pub fn frozen(&self) -> Result<Inference<'_>> {
        Ok(Inference {
            model: self,
            frozen: self.encoder.frozen()?,
        })
    }

    /// Every parameter by name, sorted.
    pub fn named_tensors(&self) -> BTreeMap<String, Tensor> {
        self.vs.variables().into_iter().collect()
    }

    /// Loads HF weights (`model.safetensors`) into the encoder. Accepts names with or without
    /// the `bert.`/`roberta.` prefix and legacy `gamma`/`beta` LayerNorm names; ignores
    /// tensors the encoder has no use for (LM heads, buffers). Heads stay freshly initialised.
    pub fn load_pretrained(&mut self, path: &Path) -> Result<LoadReport> {
        let shown = path.display().to_string();
        let file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| Error::file(&shown, e.to_string()))?
            .into_iter()
            .collect();
        let prefix = format!("{}.", self.config.model_type.prefix());
        let mut report = LoadReport::default();
        for (name, var) in self.named_tensors() {
            let Some(bare) = name.strip_prefix(&prefix) else {
                continue; // a task head
            };
            let legacy = bare
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            let found = [name.clone(), bare.to_string(), legacy.clone()]
                .into_iter()
                .chain(other_prefixes(bare))
                .find_map(|k| file.get(&k));
            match found {
                Some(src) => {
                    copy_into(&var, src, &name, &shown)?;
                    report.loaded += 1;
                }
                None => report.missing.push(name),
            }
        }
        let essential: Vec<_> = report
            .missing
            .iter()
            .filter(|n| !n.contains(".pooler."))
            .collect();
        if !essential.is_empty() {
            return Err(Error::invalid_input(
                &shown,
                format!(
                    "not a {} checkpoint for this config.json: {} encoder tensors missing, e.g. {}",
                    self.config.model_type.prefix(),
                    essential.len(),
                    essential[0]
                ),
            ));
        }
        Ok(report)
    }

    /// Loads a checkpoint written by [`MultiTaskModel::save`]: every tensor must be present.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let shown = path.display().to_string();
        let file: BTreeMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(|e| Error::file(&shown, e.to_string()))?
            .into_iter()
            .collect();
        for (name, var) in self.named_tensors() {
            let src = file
                .get(&name)
                .ok_or_else(|| Error::file(&shown, format!("checkpoint has no tensor {name}")))?;
            copy_into(&var, src, &name, &shown)?;
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<(String, Tensor)> = self
            .named_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.to_device(Device::Cpu).contiguous()))
            .collect();
        Tensor::write_safetensors(&tensors, path)
            .map_err(|e| Error::file(path.display(), e.to_string()))
    }
}

/// A model whose weights stay as they are (evaluation, prediction): see
/// [`MultiTaskModel::frozen`].
pub struct Inference<'m> {
    model: &'m MultiTaskModel,
    frozen: Frozen,
}

impl Inference<'_> {
    /// Logits of `task` for `batch`, without gradients or dropout.
    pub fn forward(&self, task: usize, batch: &Batch) -> Result<Tensor> {
        tch::no_grad(|| {
            self.model
                .forward_with(task, batch, false, Some(&self.frozen))
        })
    }

    /// Loss of `task` on a labelled batch, and the logits, without gradients or dropout.
    pub fn loss(&self, task: usize, batch: &Batch) -> Result<(Tensor, Tensor)> {
        let labels = batch
            .labels
            .as_ref()
            .ok_or_else(|| Error::Invalid("batch has no labels".into()))?;
        let logits = self.forward(task, batch)?;
        let regression = self.model.head(task)?.1.task_type == TaskType::Regression;
        Ok((heads::loss(&logits, labels, regression)?, logits))
    }
}

fn other_prefixes(bare: &str) -> impl Iterator<Item = String> + '_ {
    ["bert.", "roberta."]
        .into_iter()
        .map(move |p| format!("{p}{bare}"))
}

fn copy_into(var: &Tensor, src: &Tensor, name: &str, file: &str) -> Result<()> {
    if var.size() != src.size() {
        return Err(Error::invalid_input(
            file,
            format!(
                "tensor {name} has shape {:?}, the model expects {:?}",
                src.size(),
                var.size()
            ),
        ));
    }
    tch::no_grad(|| {
        let mut v = var.shallow_clone();
        v.f_copy_(&src.to_kind(var.kind()).to_device(var.device()))
    })?;
    Ok(())
}
