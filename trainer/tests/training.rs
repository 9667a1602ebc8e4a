//! End-to-end training on the bundled example data with a small random BERT (MiniLM's
//! tokenizer, tiny dimensions): checkpoint layout and manifest, exact resume, the binary's
//! SIGTERM handling, and `predict` / `export` against transformers.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_trainer::config::ModelConfig;
use mtl_trainer::model::MultiTaskModel;
use mtl_trainer::train::{self, RunOptions};
use tch::{Device, Tensor};

/// libtorch's random generator is process-global: tests that draw from it (model init,
/// in-process training) take this lock so parallel tests do not shift each other's streams.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A random 2-layer BERT with MiniLM's vocabulary and tokenizer, saved as HF would.
fn tiny_model(dir: &Path) -> PathBuf {
    let model_dir = dir.join("tiny-bert");
    std::fs::create_dir_all(&model_dir).unwrap();
    let config = r#"{"model_type": "bert", "architectures": ["BertModel"], "vocab_size": 30522,
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "intermediate_size": 64, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 128,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;
    std::fs::write(model_dir.join("config.json"), config).unwrap();
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
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
        std::fs::copy(common::minilm_dir().join(f), model_dir.join(f)).unwrap();
    }
    model_dir
}

fn job(model: &Path, out: &Path) -> MultiTaskTrainingJobSpec {
    let mut spec =
        mtl_trainer::job::load_file(&common::workspace().join("examples/job-local.yaml")).unwrap();
    spec.model.pretrained = model.display().to_string();
    spec.checkpoints.uri = out.display().to_string();
    spec.checkpoints.every_steps = 5;
    spec.checkpoints.keep = Some(2);
    spec.training.max_steps = Some(12);
    spec.training.batch_size = 8;
    spec.training.learning_rate = 1e-3;
    spec
}

fn final_weights(uri: &Path, step: u64) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(uri.join(format!("checkpoint-{step}/model.safetensors")))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let opts = RunOptions::cpu(tmp.path().join("cache"));

    let straight = tmp.path().join("straight");
    let a = train::train(&job(&model, &straight), &opts).unwrap();
    assert_eq!((a.step, a.interrupted, a.resumed_from), (12, false, None));
    for key in [
        "stsb/pearson",
        "stsb/spearman",
        "rte/accuracy",
        "rte/f1",
        "csqa/accuracy",
        "mean",
    ] {
        assert!(
            a.metrics.get(key).is_some_and(|v| v.is_finite()),
            "missing {key}: {:?}",
            a.metrics
        );
    }
    // keep = 2: the manifest names 10 and 12; checkpoint-5 is gone; every file is there.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(straight.join("checkpoints.json")).unwrap()).unwrap();
    let steps: Vec<u64> = manifest["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [10, 12]);
    assert!(manifest["checkpoints"][1]["metrics"]["mean"].is_number());
    assert!(!straight.join("checkpoint-5").exists());
    for f in mtl_trainer::checkpoint::FILES {
        assert!(straight.join("checkpoint-12").join(f).is_file(), "{f}");
    }

    let again = tmp.path().join("again");
    train::train(&job(&model, &again), &opts).unwrap();
    let (w1, w2) = (final_weights(&straight, 12), final_weights(&again, 12));
    for (name, t) in &w1 {
        assert!(
            t.equal(&w2[name]),
            "{name} differs between two identical runs"
        );
    }

    // Interrupted after step 7 (as on SIGTERM), then the same job again.
    let resumed = tmp.path().join("resumed");
    let stopped = train::train(
        &job(&model, &resumed),
        &RunOptions {
            stop_after: Some(7),
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!((stopped.step, stopped.interrupted), (7, true));
    assert_eq!(stopped.checkpoint.as_ref().map(|c| c.step), Some(7));
    let b = train::train(&job(&model, &resumed), &opts).unwrap();
    assert_eq!((b.step, b.resumed_from), (12, Some(7)));

    let (wa, wb) = (final_weights(&straight, 12), final_weights(&resumed, 12));
    assert_eq!(wa.len(), wb.len());
    for (name, ta) in &wa {
        assert!(ta.equal(&wb[name]), "{name} differs after resume");
    }
    assert_eq!(a.metrics, b.metrics);

    // A changed task list cannot resume from these checkpoints.
    let mut other = job(&model, &resumed);
    other.tasks.truncate(2);
    let err = train::train(&other, &opts).unwrap_err().to_string();
    assert!(err.contains("checkpoint was trained on tasks"), "{err}");
}

/// The encoder computes real tokens only, so padding a batch to 128 instead of its longest
/// sequence changes no loss and no update: the benchmark's two padding modes train alike.
#[test]
fn padding_changes_neither_losses_nor_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let run = |pad_to| {
        mtl_trainer::bench::train(&mtl_trainer::bench::TrainBench {
            spec: job(&model, &tmp.path().join("unused")),
            warmup: 1,
            steps: 5,
            pad_to,
            dropout: false,
            device: Device::Cpu,
            cache_dir: tmp.path().join("cache"),
            save_init: None,
        })
        .unwrap()
    };
    let (tight, padded) = (run(None), run(Some(128)));
    assert_eq!(tight.steps.len(), 6);
    let mut tasks = std::collections::BTreeSet::new();
    for (a, b) in tight.steps.iter().zip(&padded.steps) {
        assert_eq!(
            (&a.task, a.rows, a.real_tokens),
            (&b.task, b.rows, b.real_tokens)
        );
        assert!(
            a.seq_len < 128 && b.seq_len == 128,
            "{} {}",
            a.seq_len,
            b.seq_len
        );
        assert!(a.real_tokens <= a.rows * a.seq_len);
        let rel = (a.loss - b.loss).abs() / b.loss.abs().max(1e-6);
        assert!(rel < 1e-5, "step {}: loss {} vs {}", a.step, a.loss, b.loss);
        tasks.insert(a.task.clone());
    }
    assert!(tasks.len() >= 2, "only {tasks:?} sampled");
    assert_eq!(tight.plan.len(), 6);
}

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mtl-trainer"))
}

#[test]
fn sigterm_checkpoints_at_the_next_step_and_exits_143() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = trainer()
        .args(["--device", "cpu", "train", "--job"])
        .arg(common::workspace().join("examples/job-local.yaml"))
        .args(["--max-steps", "100000", "--batch-size", "4", "--output"])
        .arg(&out)
        .env("MTL_CACHE_DIR", tmp.path().join("cache"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    // Wait until training has started (the data-loaded log line), then signal.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("data loaded") {
            break;
        }
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(143), "stderr: {rest:?}");
    let summary: serde_json::Value = serde_json::from_reader(child.stdout.take().unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    let step = summary["step"].as_u64().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["checkpoints"].as_array().unwrap().last().unwrap()["step"].as_u64(),
        Some(step)
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn exported_models_predict_in_transformers_what_predict_says() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    // A job file next to the example data, pointing at the tiny model.
    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(6);
    let job_path = tmp.path().join("job.yaml");
    std::fs::write(&job_path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    run_ok(
        trainer()
            .args(["--device", "cpu", "train", "--job"])
            .arg(&job_path)
            .env("MTL_CACHE_DIR", &cache),
    );
    let listed = run_ok(trainer().arg("checkpoints").arg(&out));
    assert!(
        listed.lines().last().unwrap().contains("\"step\":6"),
        "{listed}"
    );

    // RTE as JSONL records, and CommonsenseQA records as they are.
    let rte_in = tmp.path().join("rte.jsonl");
    let tsv =
        std::fs::read_to_string(common::workspace().join("examples/data/rte/dev.tsv")).unwrap();
    let lines: Vec<String> = tsv
        .lines()
        .skip(1)
        .take(20)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            serde_json::json!({"sentence1": f[1], "sentence2": f[2]}).to_string()
        })
        .collect();
    std::fs::write(&rte_in, lines.join("\n")).unwrap();
    let csqa_in = tmp.path().join("csqa.jsonl");
    let csqa =
        std::fs::read_to_string(common::workspace().join("examples/data/csqa/dev.jsonl")).unwrap();
    std::fs::write(
        &csqa_in,
        csqa.lines().take(10).collect::<Vec<_>>().join("\n"),
    )
    .unwrap();

    for (task, input) in [("rte", &rte_in), ("csqa", &csqa_in)] {
        let preds = tmp.path().join(format!("{task}.pred.jsonl"));
        let export = tmp.path().join(format!("export-{task}"));
        run_ok(
            trainer()
                .args(["--device", "cpu", "predict", "--job"])
                .arg(&job_path)
                .args(["--task", task, "--input"])
                .arg(input)
                .arg("--out")
                .arg(&preds)
                .env("MTL_CACHE_DIR", &cache),
        );
        run_ok(
            trainer()
                .args(["--device", "cpu", "export", "--job"])
                .arg(&job_path)
                .args(["--task", task, "--out"])
                .arg(&export)
                .env("MTL_CACHE_DIR", &cache),
        );
        let script = common::workspace().join("trainer/tests/reference/check_export.py");
        common::run_python(&[
            script.to_str().unwrap(),
            export.to_str().unwrap(),
            input.to_str().unwrap(),
            preds.to_str().unwrap(),
            &spec.model.max_length.to_string(),
        ]);
    }
}
