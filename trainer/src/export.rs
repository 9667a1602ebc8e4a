//! `export`: one task of a multi-task checkpoint as a standalone HuggingFace model directory
//! that `AutoModelForSequenceClassification` / `AutoModelForMultipleChoice` loads.

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::TaskType;
use serde_json::{Value, json};
use tch::{Device, Tensor};

use crate::assets::ModelAssets;
use crate::checkpoint::{self, read_json, write_json};
use crate::model::HEADS_PREFIX;
use crate::predict::Loaded;
use crate::{Error, Result};

/// HF architecture name for a task type, e.g. `RobertaForMultipleChoice`.
pub fn architecture(stem: &str, task_type: TaskType) -> String {
    match task_type {
        TaskType::MultipleChoice => format!("{stem}ForMultipleChoice"),
        _ => format!("{stem}ForSequenceClassification"),
    }
}

pub fn export(loaded: &Loaded, task: &str, out: &Path) -> Result<()> {
    let (_, spec) = loaded.task(task)?;
    let config = &loaded.model.config;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;

    let mut cfg: Value = read_json(&loaded.dir.join(checkpoint::CONFIG_FILE))?;
    let obj = cfg.as_object_mut().ok_or_else(|| {
        Error::file(
            loaded.dir.join(checkpoint::CONFIG_FILE).display(),
            "not a JSON object",
        )
    })?;
    obj.insert(
        "architectures".into(),
        json!([architecture(config.model_type.class_stem(), spec.task_type)]),
    );
    for k in [
        "id2label",
        "label2id",
        "problem_type",
        "num_labels",
        "_name_or_path",
    ] {
        obj.remove(k);
    }
    match spec.task_type {
        TaskType::Regression => {
            obj.insert("id2label".into(), json!({"0": "LABEL_0"}));
            obj.insert("label2id".into(), json!({"LABEL_0": 0}));
            obj.insert("problem_type".into(), json!("regression"));
        }
        TaskType::Classification => {
            let n = spec.num_outputs() as usize;
            let names: Vec<String> = spec
                .label_names
                .clone()
                .unwrap_or_else(|| (0..n).map(|i| format!("LABEL_{i}")).collect());
            let id2label: BTreeMap<String, &String> = names
                .iter()
                .enumerate()
                .map(|(i, l)| (i.to_string(), l))
                .collect();
            let label2id: BTreeMap<&String, usize> =
                names.iter().enumerate().map(|(i, l)| (l, i)).collect();
            obj.insert("id2label".into(), json!(id2label));
            obj.insert("label2id".into(), json!(label2id));
            obj.insert("problem_type".into(), json!("single_label_classification"));
        }
        TaskType::MultipleChoice => {}
    }
    write_json(&out.join(checkpoint::CONFIG_FILE), &cfg)?;

    // Encoder tensors keep their names; the task's head becomes `classifier.*`; other heads
    // and (for RoBERTa sequence heads) the unused pooler are left out.
    let head_prefix = format!("{HEADS_PREFIX}.{task}.");
    let skip_pooler = config.model_type.is_roberta() && spec.task_type != TaskType::MultipleChoice;
    let tensors: Vec<(String, Tensor)> = loaded
        .model
        .named_tensors()
        .into_iter()
        .filter_map(|(name, t)| {
            let renamed = if let Some(rest) = name.strip_prefix(&head_prefix) {
                rest.to_string()
            } else if name.starts_with(&format!("{HEADS_PREFIX}."))
                || (skip_pooler && name.contains(".pooler."))
            {
                return None;
            } else {
                name
            };
            Some((renamed, t.to_device(Device::Cpu).contiguous()))
        })
        .collect();
    let path = out.join(checkpoint::MODEL_FILE);
    Tensor::write_safetensors(&tensors, &path)
        .map_err(|e| Error::file(path.display(), e.to_string()))?;

    ModelAssets {
        dir: loaded.dir.clone(),
    }
    .copy_to_except_config(out)
}
