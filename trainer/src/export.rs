//! `export`: one task of a multi-task checkpoint as a standalone HuggingFace model directory
//! that `AutoModelForSequenceClassification` / `AutoModelForMultipleChoice` loads.

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::TaskType;
use mtl_storage::{is_gcs, join};
use serde_json::{Value, json};
use tch::{Device, Tensor};

use crate::assets::ModelAssets;
use crate::checkpoint::Loaded;
use crate::io::{Storage, read_json, write_json};
use crate::model::{CONFIG_FILE, HEADS_PREFIX, MODEL_FILE, TOKENIZER_CONFIG_FILE};
use crate::{Error, Result};

/// HF architecture name for a task type, e.g. `RobertaForMultipleChoice`.
pub fn architecture(stem: &str, task_type: TaskType) -> String {
    match task_type {
        TaskType::MultipleChoice => format!("{stem}ForMultipleChoice"),
        _ => format!("{stem}ForSequenceClassification"),
    }
}

/// Every task of checkpoint `entry` as a standalone HF model under `<target>/<task>/` (a
/// directory or gs://; staged in `cache` for gs://). Returns the tasks' URIs.
pub fn export_all(
    store: &Storage,
    entry: &mtl_crds::CheckpointRef,
    target: &str,
    cache: &Path,
    device: Device,
) -> Result<Vec<String>> {
    let loaded = Loaded::load(store, entry.clone(), cache, device)?;
    let mut uris = Vec::new();
    for t in &loaded.tasks {
        let uri = join(target, &t.name);
        if is_gcs(target) {
            let dir = cache.join("export").join(&t.name);
            let _ = std::fs::remove_dir_all(&dir);
            export(&loaded, &t.name, &dir)?;
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map_err(Error::io(&dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            files.sort();
            for file in files {
                let name = file
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .to_string();
                store.block_on(store.storage.upload(&file, &join(&uri, &name)))?;
            }
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            export(&loaded, &t.name, Path::new(&uri))?;
        }
        uris.push(uri);
    }
    Ok(uris)
}

/// One task of `loaded` as a standalone HF model directory `out`.
pub fn export(loaded: &Loaded, task: &str, out: &Path) -> Result<()> {
    let (_, spec) = loaded.task(task)?;
    let config = &loaded.model.config;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;

    let mut cfg: Value = read_json(&loaded.dir.join(CONFIG_FILE))?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| Error::file(loaded.dir.join(CONFIG_FILE).display(), "not a JSON object"))?;
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
    write_json(&out.join(CONFIG_FILE), &cfg)?;

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
    let path = out.join(MODEL_FILE);
    Tensor::write_safetensors(&tensors, &path)
        .map_err(|e| Error::file(path.display(), e.to_string()))?;

    ModelAssets {
        dir: loaded.dir.clone(),
    }
    .copy_to_except_config(out)?;
    write_tokenizer_config(out, loaded.encoder_for(spec)?.max_length())
}

/// Sets `model_max_length` in `<out>/tokenizer_config.json` (created when the model had none)
/// to the length the task was trained at, so a transformers tokenizer or pipeline on the export
/// truncates where training did, not at the pretrained model's 512.
fn write_tokenizer_config(out: &Path, max_length: usize) -> Result<()> {
    let path = out.join(TOKENIZER_CONFIG_FILE);
    let mut config: Value = if path.exists() {
        read_json(&path)?
    } else {
        json!({})
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::file(path.display(), "not a JSON object"))?;
    obj.insert("model_max_length".into(), json!(max_length));
    write_json(&path, &config)
}
