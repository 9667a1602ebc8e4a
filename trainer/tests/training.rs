//! End-to-end training on the bundled example data with a small random BERT (MiniLM's
//! tokenizer, tiny dimensions): checkpoint layout and manifest, exact resume, the binary's
//! SIGTERM handling, and `predict` / `export` against transformers.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use mtl_trainer::train::{self, RunOptions};
use tch::Device;

use common::{checkpoint_weights, job, run_ok, tiny_model, torch_rng, trainer};

#[test]
fn resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
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
    let (manifest, steps) = common::manifest(&straight);
    assert_eq!(steps, [10, 12]);
    assert!(manifest["checkpoints"][1]["metrics"]["mean"].is_number());
    assert!(!straight.join("checkpoint-5").exists());
    for f in mtl_trainer::checkpoint::FILES {
        assert!(straight.join("checkpoint-12").join(f).is_file(), "{f}");
    }

    let again = tmp.path().join("again");
    train::train(&job(&model, &again), &opts).unwrap();
    let (w1, w2) = (
        checkpoint_weights(&straight, 12),
        checkpoint_weights(&again, 12),
    );
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

    let (wa, wb) = (
        checkpoint_weights(&straight, 12),
        checkpoint_weights(&resumed, 12),
    );
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
    let _rng = torch_rng();
    let spec = tmp.path().join("bench-job.json");
    let job = job(&model, &tmp.path().join("unused"));
    std::fs::write(&spec, serde_json::to_string(&job).unwrap()).unwrap();
    // The benchmark's binary, `mtl-bench train`, and its JSON report.
    let run = |pad_to: Option<usize>| -> BenchReport {
        let out = tmp.path().join(format!("bench-{pad_to:?}.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtl-bench"));
        cmd.args(["--device", "cpu", "train", "--warmup", "1", "--steps", "5"])
            .arg("--no-dropout")
            .arg("--job")
            .arg(&spec)
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .arg("--out")
            .arg(&out);
        if let Some(n) = pad_to {
            cmd.args(["--pad-to", &n.to_string()]);
        }
        run_ok(&mut cmd);
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
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

/// What the padding test reads of `mtl-bench train`'s report.
#[derive(serde::Deserialize)]
struct BenchReport {
    steps: Vec<BenchStep>,
    plan: Vec<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct BenchStep {
    step: usize,
    task: String,
    rows: usize,
    seq_len: usize,
    real_tokens: usize,
    loss: f64,
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
    // Wait until steps have been trained (the first "train" log line), then signal.
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"message\":\"train\"") {
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
    assert!(
        step >= 10,
        "stopped at step {step}, after the first log at 10"
    );
    assert_eq!(common::manifest(&out).1.last(), Some(&step));
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
    // RTE trains at its own, shorter length: predict and the export must truncate there too.
    let rte = spec.tasks.iter().position(|t| t.name == "rte").unwrap();
    spec.tasks[rte].max_length = Some(12);
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
    common::rte_jsonl(&rte_in, 20);
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
        if task == "rte" {
            // Two records alike in their first 12 tokens (RTE's maxLength) and unlike after:
            // predict truncates where training did, so they score the same.
            let tails = tmp.path().join("tails.jsonl");
            let record = |tail: &str| {
                serde_json::json!({
                    "sentence1": format!("the man is walking the dog in the park {tail}"),
                    "sentence2": format!("a man walks a dog near the river {tail}"),
                })
                .to_string()
            };
            std::fs::write(
                &tails,
                format!(
                    "{}\n{}\n",
                    record("while it rains"),
                    record("after the long meeting at work ended")
                ),
            )
            .unwrap();
            let out = tmp.path().join("tails.pred.jsonl");
            run_ok(
                trainer()
                    .args(["--device", "cpu", "predict", "--job"])
                    .arg(&job_path)
                    .args(["--task", "rte", "--input"])
                    .arg(&tails)
                    .arg("--out")
                    .arg(&out)
                    .env("MTL_CACHE_DIR", &cache),
            );
            let scores: Vec<Vec<f64>> = std::fs::read_to_string(&out)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    serde_json::from_value(v["scores"].clone()).unwrap()
                })
                .collect();
            let diff = scores[0]
                .iter()
                .zip(&scores[1])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                diff < 1e-7,
                "truncated alike, scored apart by {diff}: {scores:?}"
            );
        }
        let script = common::workspace().join("trainer/tests/reference/check_export.py");
        common::run_python(&[
            script.to_str().unwrap(),
            export.to_str().unwrap(),
            input.to_str().unwrap(),
            preds.to_str().unwrap(),
            &spec
                .tasks
                .iter()
                .find(|t| t.name == task)
                .and_then(|t| t.max_length)
                .unwrap_or(spec.model.max_length)
                .to_string(),
        ]);
    }
}

#[test]
fn a_stop_before_the_first_step_writes_no_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let opts = RunOptions::cpu(tmp.path().join("cache"));
    opts.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let o = train::train(&job(&model, &out), &opts).unwrap();
    assert_eq!((o.step, o.interrupted), (0, true));
    assert!(o.checkpoint.is_none());
    assert!(!out.join("checkpoint-0").exists());
    assert!(!out.join("checkpoints.json").exists());
    assert!(
        !out.exists(),
        "nothing at all under checkpoints.uri (no logs/ either)"
    );
    // Stopped after the data loaded, before the first step: nothing either.
    let mut opts = RunOptions::cpu(tmp.path().join("cache"));
    opts.stop_after = Some(0);
    let o = train::train(&job(&model, &out), &opts).unwrap();
    assert_eq!((o.step, o.interrupted), (0, true));
    assert!(
        !out.exists(),
        "nothing at all under checkpoints.uri (no logs/ either)"
    );
}

#[test]
fn resuming_with_changed_batches_is_refused_naming_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let opts = RunOptions {
        stop_after: Some(5),
        ..RunOptions::cpu(tmp.path().join("cache"))
    };
    let first = train::train(&job(&model, &out), &opts).unwrap();
    assert_eq!(first.checkpoint.as_ref().map(|c| c.step), Some(5));
    let mut bigger = job(&model, &out);
    bigger.training.batch_size = 16;
    let err = train::train(&bigger, &opts).unwrap_err().to_string();
    assert!(
        err.contains("spec.training.batchSize")
            && err.contains("the checkpoint has 8, the job has 16")
            && err.contains("--force-resume"),
        "{err}"
    );
    let mut reseeded = job(&model, &out);
    reseeded.training.seed = 7;
    let err = train::train(&reseeded, &opts).unwrap_err().to_string();
    assert!(err.contains("spec.training.seed"), "{err}");
    let mut relabelled = job(&model, &out);
    relabelled.tasks[1].label_names = Some(vec!["not_entailment".into(), "entailment".into()]);
    let err = train::train(&relabelled, &opts).unwrap_err().to_string();
    assert!(err.contains("spec.tasks[1] (rte).labelNames"), "{err}");
    // What else decides the batches: a quick run's example limit, the lengths examples are
    // cut at, the fields read, the tokenizer.
    let mut limited = job(&model, &out);
    limited.tasks[0].max_train_examples = Some(40);
    let err = train::train(&limited, &opts).unwrap_err().to_string();
    assert!(
        err.contains("spec.tasks[0] (stsb).maxTrainExamples"),
        "{err}"
    );
    let mut shorter = job(&model, &out);
    shorter.tasks[1].max_length = Some(16);
    let err = train::train(&shorter, &opts).unwrap_err().to_string();
    assert!(
        err.contains("spec.tasks[1] (rte).maxLength") && err.contains("the job has 16"),
        "{err}"
    );
    let mut model_shorter = job(&model, &out);
    model_shorter.model.max_length = 32;
    let err = train::train(&model_shorter, &opts).unwrap_err().to_string();
    assert!(err.contains("spec.model.maxLength"), "{err}");
    let mut swapped = job(&model, &out);
    swapped.tasks[1].text_fields.reverse();
    let err = train::train(&swapped, &opts).unwrap_err().to_string();
    assert!(err.contains("spec.tasks[1] (rte).textFields"), "{err}");
    let other_tokenizer = tmp.path().join("model-2");
    std::fs::create_dir_all(&other_tokenizer).unwrap();
    for file in std::fs::read_dir(&model).unwrap() {
        let file = file.unwrap().path();
        std::fs::copy(&file, other_tokenizer.join(file.file_name().unwrap())).unwrap();
    }
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(other_tokenizer.join("tokenizer.json")).unwrap())
            .unwrap();
    std::fs::write(
        other_tokenizer.join("tokenizer.json"),
        serde_json::to_string_pretty(&tokenizer).unwrap(),
    )
    .unwrap();
    let err = train::train(&job(&other_tokenizer, &out), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "{err}");
    // Nothing was written by the refused runs; --force-resume goes on from step 5.
    let manifest = std::fs::read_to_string(out.join("checkpoints.json")).unwrap();
    assert!(!manifest.contains("\"step\": 10"), "{manifest}");
    let forced = train::train(
        &bigger,
        &RunOptions {
            force_resume: true,
            stop_after: None,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!((forced.resumed_from, forced.step), (Some(5), 12));
}

#[test]
fn eval_scores_each_task_with_the_head_of_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let spec = job(&model, &out);
    let trained = train::train(&spec, &RunOptions::cpu(cache.clone())).unwrap();
    // Another job naming the same tasks in another order, one of them left out.
    let mut reordered = spec.clone();
    reordered.tasks = vec![spec.tasks[2].clone(), spec.tasks[0].clone()];
    let store = mtl_trainer::io::Storage::new().unwrap();
    let entry = mtl_trainer::checkpoint::resolve(&store, &spec.checkpoints.uri, None).unwrap();
    let loaded = mtl_trainer::checkpoint::Loaded::load(&store, entry, &cache, Device::Cpu).unwrap();
    let bs = spec.training.eval_batch_size.unwrap_or(32) as usize;
    let m = mtl_trainer::predict::evaluate(&loaded, &store, &reordered, &cache, bs).unwrap();
    for key in [
        "csqa/accuracy",
        "stsb/pearson",
        "stsb/spearman",
        "csqa/loss",
    ] {
        let (a, b) = (m[key], trained.metrics[key]);
        assert!(
            (a - b).abs() < 1e-9,
            "{key}: {a} vs {b} at the end of training"
        );
    }
    assert!(!m.contains_key("rte/accuracy"));
    // A task the checkpoint has no head for, or a head of another shape, is an error.
    let mut unknown = spec.clone();
    unknown.tasks[0].name = "mrpc".into();
    let err = mtl_trainer::predict::evaluate(&loaded, &store, &unknown, &cache, bs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"mrpc\" has no head"), "{err}");
}

#[test]
fn bf16_on_cpu_trains_and_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let run = |precision| {
        let out = tmp.path().join(format!("run-{precision:?}"));
        let mut spec = job(&model, &out);
        // STS-B alone: a regression loss the tiny model visibly lowers within a minute.
        spec.tasks.truncate(1);
        spec.training.precision = precision;
        spec.training.max_steps = Some(60);
        spec.training.log_every_steps = 20;
        spec.training.learning_rate = 1e-2;
        spec.checkpoints.every_steps = 60;
        let o = train::train(&spec, &RunOptions::cpu(tmp.path().join("cache"))).unwrap();
        assert_eq!(o.step, 60);
        let state: mtl_trainer::state::TrainerState = mtl_trainer::io::read_json(
            &out.join("checkpoint-60")
                .join(mtl_trainer::checkpoint::STATE_FILE),
        )
        .unwrap();
        // Weights and optimizer state stay float32.
        let w = checkpoint_weights(&out, 60);
        assert!(w.values().all(|t| t.kind() == tch::Kind::Float));
        assert!(
            state
                .log_history
                .iter()
                .all(|e| e.grad_norm.is_some_and(f64::is_finite))
        );
        state
            .log_history
            .iter()
            .map(|e| e.loss)
            .collect::<Vec<f64>>()
    };
    let bf16 = run(mtl_crds::Precision::Bf16);
    let fp32 = run(mtl_crds::Precision::Fp32);
    assert!(bf16.iter().all(|l| l.is_finite()), "{bf16:?}");
    assert!(
        bf16[2] < 0.7 * bf16[0],
        "bf16 training loss did not fall: {bf16:?}"
    );
    // bf16 rounds differently, so the runs are close, not equal.
    assert_ne!(bf16, fp32);
    let rel = (bf16[2] - fp32[2]).abs() / fp32[2];
    assert!(rel < 0.1, "bf16 {bf16:?} vs fp32 {fp32:?}");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = trainer()
        .args(["--device", "cpu", "train", "--job"])
        .arg(common::workspace().join("examples/job-local.yaml"))
        .args(["--max-steps", "100000", "--output"])
        .arg(&out)
        .env("MTL_CACHE_DIR", tmp.path().join("cache"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let signal = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    for line in lines.by_ref() {
        if line.unwrap().contains("data loaded") {
            break;
        }
    }
    signal("-INT");
    // The first Ctrl-C is acknowledged at once; the run would stop at the next step.
    for line in lines.by_ref() {
        if line.unwrap().contains("stop requested") {
            break;
        }
    }
    signal("-INT");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(130), "stderr: {rest:?}");
    assert!(
        !out.join("checkpoints.json").exists(),
        "no checkpoint was committed"
    );
}

/// `lossWeight` multiplies a task's loss before the backward pass: with weight 0 (and no
/// weight decay) RTE's head gets no update at all and ends as it was initialised, while the
/// other heads train.
#[test]
fn a_zero_loss_weight_leaves_its_head_untrained() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(6);
    spec.training.weight_decay = 0.0;
    spec.checkpoints.every_steps = 6;
    let rte = spec.tasks.iter().position(|t| t.name == "rte").unwrap();
    spec.tasks[rte].loss_weight = Some(0.0);
    let outcome = train::train(&spec, &RunOptions::cpu(tmp.path().join("cache"))).unwrap();
    assert_eq!(outcome.step, 6);
    let config = mtl_trainer::config::ModelConfig::load(&model.join("config.json")).unwrap();
    let initial =
        mtl_trainer::model::build_model(config, &spec.tasks, Device::Cpu, spec.training.seed)
            .named_tensors();
    let trained = checkpoint_weights(&out, 6);
    let moved = |head: &str| -> f64 {
        initial
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("heads.{head}.")))
            .map(|(name, t)| (&trained[name] - t).abs().max().double_value(&[]))
            .fold(0.0, f64::max)
    };
    assert_eq!(moved("rte"), 0.0, "weight 0: RTE's head is untouched");
    assert!(moved("stsb") > 0.0, "STS-B's head trained");
}

/// `predict --submission DIR` writes each task's test predictions as the benchmark servers
/// take them: GLUE's `STS-B.tsv` and `RTE.tsv` (a header, then `index\tprediction` with the
/// test file's index, a score or a label name) and CommonsenseQA's JSONL of `{"id",
/// "answerKey"}`, one row per test record; the test files have no labels.
#[test]
fn predict_writes_a_submission_directory_from_unlabelled_test_files() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let data = common::workspace().join("examples/data");
    // Test files as GLUE and CommonsenseQA publish them: the dev files without their labels.
    let unlabelled_tsv = |from: &str, to: &str, label: &str| {
        let text = std::fs::read_to_string(data.join(from)).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
        let keep: Vec<usize> = (0..header.len()).filter(|&i| header[i] != label).collect();
        let row = |l: &str| {
            let cells: Vec<&str> = l.split('\t').collect();
            keep.iter()
                .map(|&i| cells[i])
                .collect::<Vec<_>>()
                .join("\t")
        };
        let rows: Vec<String> = std::iter::once(row(&header.join("\t")))
            .chain(lines.take(10).map(row))
            .collect();
        std::fs::write(tmp.path().join(to), rows.join("\n") + "\n").unwrap();
    };
    unlabelled_tsv("stsb/dev.tsv", "stsb-test.tsv", "score");
    unlabelled_tsv("rte/dev.tsv", "rte-test.tsv", "label");
    let csqa: Vec<serde_json::Value> = std::fs::read_to_string(data.join("csqa/dev.jsonl"))
        .unwrap()
        .lines()
        .take(10)
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("answerKey");
            v
        })
        .collect();
    let csqa_text: Vec<String> = csqa.iter().map(|v| v.to_string()).collect();
    std::fs::write(tmp.path().join("csqa-test.jsonl"), csqa_text.join("\n")).unwrap();

    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(2);
    for t in &mut spec.tasks {
        t.test = Some(
            tmp.path()
                .join(format!(
                    "{}-test.{}",
                    t.name,
                    if t.name == "csqa" { "jsonl" } else { "tsv" }
                ))
                .display()
                .to_string(),
        );
    }
    let job_path = tmp.path().join("job.yaml");
    std::fs::write(&job_path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    run_ok(
        trainer()
            .args(["--device", "cpu", "train", "--job"])
            .arg(&job_path)
            .env("MTL_CACHE_DIR", &cache),
    );
    let dir = tmp.path().join("submission");
    run_ok(
        trainer()
            .args(["--device", "cpu", "predict", "--job"])
            .arg(&job_path)
            .arg("--submission")
            .arg(&dir)
            .env("MTL_CACHE_DIR", &cache),
    );
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    files.sort();
    assert_eq!(files, ["RTE.tsv", "STS-B.tsv", "csqa.jsonl"]);

    let tsv = |name: &str| -> Vec<(String, String)> {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("index\tprediction"), "{name}");
        lines
            .map(|l| {
                let (i, p) = l.split_once('\t').unwrap();
                (i.to_string(), p.to_string())
            })
            .collect()
    };
    let stsb = tsv("STS-B.tsv");
    assert_eq!(stsb.len(), 10);
    let test_index: Vec<String> = std::fs::read_to_string(tmp.path().join("stsb-test.tsv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(
        stsb.iter().map(|(i, _)| i.clone()).collect::<Vec<_>>(),
        test_index
    );
    assert!(
        stsb.iter()
            .all(|(_, p)| p.parse::<f64>().is_ok_and(f64::is_finite)),
        "{stsb:?}"
    );
    let rte = tsv("RTE.tsv");
    assert_eq!(rte.len(), 10);
    assert!(
        rte.iter()
            .all(|(_, p)| p == "entailment" || p == "not_entailment"),
        "{rte:?}"
    );
    let answers: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("csqa.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 10);
    for (a, q) in answers.iter().zip(&csqa) {
        assert_eq!(a["id"], q["id"]);
        assert!(
            ["A", "B", "C", "D", "E"].contains(&a["answerKey"].as_str().unwrap()),
            "{a}"
        );
    }
}
