//! The best checkpoint (`checkpoints.best`), early stopping (`training.earlyStopping`), the
//! final model (`checkpoints.exportOnFinish`) and a Vertex AI tuning trial's hypertune
//! reports, on the bundled example data with a small random BERT.

mod common;

use mtl_crds::{BestCheckpointSpec, EarlyStoppingSpec, MetricMode};
use mtl_trainer::train::{self, RunOptions};
use mtl_trainer::vertex::VertexEnv;

use common::{job, run_ok, tiny_model, torch_rng, trainer};

/// A learning rate of 0 leaves the weights as they are: every evaluation scores the same, so
/// none after the first improves, and patience 2 with an evaluation at every second step
/// ends the run at step 2 + 2 × 2 = 6 of 20. The trial's hypertune file gets one report per
/// evaluation, in the format the real `cloudml-hypertune` writes.
#[test]
fn a_plateau_stops_early_at_the_expected_evaluation_and_reports_to_hypertune() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(20);
    spec.training.learning_rate = 0.0;
    spec.training.eval_every_steps = 2;
    spec.checkpoints.every_steps = 4;
    spec.checkpoints.keep = Some(1);
    spec.checkpoints.best = Some(BestCheckpointSpec {
        metric: "mean".into(),
        mode: None,
    });
    spec.training.early_stopping = Some(EarlyStoppingSpec {
        patience: 2,
        min_delta: 0.0,
    });
    let metric_file = tmp.path().join("hypertune/output.metrics");
    let opts = RunOptions {
        vertex: VertexEnv {
            trial_id: Some("7".into()),
            metric_tag: Some("accuracy".into()),
            metric_file: Some(metric_file.display().to_string()),
            ..VertexEnv::default()
        },
        ..RunOptions::cpu(tmp.path().join("cache"))
    };
    let outcome = train::train(&spec, &opts).unwrap();
    assert_eq!(outcome.step, 6);
    assert!(!outcome.interrupted);
    let end = outcome.end.clone().unwrap();
    assert_eq!((end.reason.as_str(), end.step), ("EarlyStopped", 6));
    assert!(
        end.message.contains("mean did not improve"),
        "{}",
        end.message
    );

    // The trial checkpoints under its own directory: at 4 (every 4) and 6 (the early stop),
    // both evaluated at their step; the best is the first (6 scores the same: no better).
    let trial = out.join("trial-7");
    let (manifest, steps) = common::manifest(&trial);
    assert_eq!(steps, [4, 6], "keep 1: the newest, and the best");
    assert_eq!(manifest["best"]["step"], 4);
    assert_eq!(manifest["best"]["metric"], "mean");
    assert_eq!(manifest["end"]["reason"], "EarlyStopped");
    assert_eq!(outcome.best.as_ref().map(|b| b.step), Some(4));

    // Resuming an early-stopped run trains no further.
    let again = train::train(&spec, &opts).unwrap();
    assert_eq!((again.step, again.resumed_from), (6, Some(6)));
    assert_eq!(again.end.map(|e| e.reason), Some("EarlyStopped".into()));

    // One report per evaluation (steps 2, 4, 6; the resumed run evaluated nothing), under
    // the study's tag, of the ranking metric (the tag names none of the job's metrics).
    let text = std::fs::read_to_string(&metric_file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<&str> = lines
        .iter()
        .map(|l| l["global_step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["2", "4", "6"]);
    let reported: f64 = lines[2]["accuracy"].as_str().unwrap().parse().unwrap();
    assert!((reported - outcome.metrics["mean"]).abs() < 1e-12);
    let script = common::workspace().join("trainer/tests/reference/hypertune_reference.py");
    common::run_python(&[
        script.to_str().unwrap(),
        metric_file.to_str().unwrap(),
        "accuracy",
        "7",
    ]);
}

/// With the metric ranked so that early checkpoints win (a loss, larger taken as better),
/// the best checkpoint outlives `keep: 1`, `export --checkpoint best` writes a model that
/// transformers loads and that predicts what `predict --checkpoint best` says, and
/// `exportOnFinish` leaves that same model under `<uri>/model/<task>/`.
#[test]
fn the_best_checkpoint_survives_keep_and_is_the_exported_final_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let out = tmp.path().join("run");
    let cache = tmp.path().join("cache");
    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(12);
    spec.checkpoints.every_steps = 2;
    spec.checkpoints.keep = Some(1);
    spec.checkpoints.best = Some(BestCheckpointSpec {
        metric: "stsb/loss".into(),
        mode: Some(MetricMode::Max),
    });
    spec.checkpoints.export_on_finish = true;
    let job_path = tmp.path().join("job.yaml");
    std::fs::write(&job_path, serde_yaml::to_string(&spec).unwrap()).unwrap();
    let summary = run_ok(
        trainer()
            .args(["--device", "cpu", "train", "--job"])
            .arg(&job_path)
            .env("MTL_CACHE_DIR", &cache),
    );
    let summary: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(summary["end"]["reason"], "Completed");
    assert_eq!(summary["model"], out.join("model").display().to_string());
    // Where the curves are, and how to open them.
    assert_eq!(
        summary["tensorboard"],
        format!("tensorboard --logdir {}", out.join("logs").display())
    );
    assert!(std::fs::read_dir(out.join("logs")).unwrap().count() > 0);

    // Every checkpoint was evaluated at its step (trainer_state.json keeps the history): the
    // best is the one with the largest stsb/loss among them.
    let (manifest, steps) = common::manifest(&out);
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("checkpoint-12/trainer_state.json")).unwrap(),
    )
    .unwrap();
    let evals = state["eval_history"].as_array().unwrap();
    let evaluated: Vec<u64> = evals
        .iter()
        .map(|e| e["step"].as_f64().unwrap() as u64)
        .collect();
    assert_eq!(evaluated, [2, 4, 6, 8, 10, 12]);
    let (best_step, best_value) = evals
        .iter()
        .map(|e| {
            (
                e["step"].as_f64().unwrap() as u64,
                e["stsb/loss"].as_f64().unwrap(),
            )
        })
        .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
    assert_eq!(manifest["best"]["step"], best_step);
    assert_eq!(manifest["best"]["value"], best_value);
    assert_eq!(summary["best_checkpoint"]["step"], best_step);
    assert_ne!(
        best_step, 12,
        "the ranking was chosen so that an early checkpoint wins"
    );
    assert_eq!(steps, [best_step, 12]);
    assert!(
        out.join(format!("checkpoint-{best_step}/model.safetensors"))
            .is_file()
    );

    let rte_in = tmp.path().join("rte.jsonl");
    common::rte_jsonl(&rte_in, 12);
    let preds = tmp.path().join("rte.pred.jsonl");
    let export = tmp.path().join("export-rte");
    run_ok(
        trainer()
            .args(["--device", "cpu", "predict", "--job"])
            .arg(&job_path)
            .args(["--checkpoint", "best", "--task", "rte", "--input"])
            .arg(&rte_in)
            .arg("--out")
            .arg(&preds)
            .env("MTL_CACHE_DIR", &cache),
    );
    run_ok(
        trainer()
            .args(["--device", "cpu", "export", "--job"])
            .arg(&job_path)
            .args(["--checkpoint", "best", "--task", "rte", "--out"])
            .arg(&export)
            .env("MTL_CACHE_DIR", &cache),
    );
    let script = common::workspace().join("trainer/tests/reference/check_export.py");
    common::run_python(&[
        script.to_str().unwrap(),
        export.to_str().unwrap(),
        rte_in.to_str().unwrap(),
        preds.to_str().unwrap(),
        &spec.model.max_length.to_string(),
    ]);
    // The final model is the best checkpoint's, for every task.
    let exported = std::fs::read(export.join("model.safetensors")).unwrap();
    assert_eq!(
        std::fs::read(out.join("model/rte/model.safetensors")).unwrap(),
        exported
    );
    for task in ["stsb", "csqa"] {
        assert!(
            out.join(format!("model/{task}/config.json")).is_file(),
            "{task}"
        );
    }

    // A step picks that checkpoint; one not committed is a clear error naming what is.
    let err = trainer()
        .args(["--device", "cpu", "export", "--job"])
        .arg(&job_path)
        .args(["--checkpoint", "8", "--task", "rte", "--out"])
        .arg(tmp.path().join("x"))
        .env("MTL_CACHE_DIR", &cache)
        .output()
        .unwrap();
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(
        stderr.contains("--checkpoint 8: no committed checkpoint at that step")
            && stderr.contains(&format!("committed: {best_step}, 12")),
        "{stderr}"
    );
}

/// A checkpoint carries only metrics measured at its own step: with an evaluation every 3
/// steps and a checkpoint every 2, checkpoint 4 does not pass off step 3's scores as its own;
/// checkpoint 6, evaluated at its step, carries that evaluation, the same values to the last
/// digit as its `trainer_state.json`.
#[test]
fn checkpoints_carry_only_the_metrics_measured_at_their_step() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let mut spec = job(&model, &out);
    spec.training.max_steps = Some(6);
    spec.training.eval_every_steps = 3;
    spec.checkpoints.every_steps = 2;
    spec.checkpoints.keep = None;
    let opts = RunOptions::cpu(tmp.path().join("cache"));
    let outcome = train::train(&spec, &opts).unwrap();
    assert_eq!(outcome.step, 6);
    let (manifest, steps) = common::manifest(&out);
    assert_eq!(steps, [2, 4, 6]);
    let metrics = |i: usize| manifest["checkpoints"][i]["metrics"].clone();
    assert!(
        metrics(0).is_null(),
        "step 2: nothing evaluated yet: {}",
        metrics(0)
    );
    assert!(
        metrics(1).is_null(),
        "step 4: last evaluated at 3: {}",
        metrics(1)
    );
    assert!(
        metrics(2)["mean"].is_f64(),
        "step 6: evaluated there: {}",
        metrics(2)
    );
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("checkpoint-6/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(metrics(2), state["metrics"]);
}
