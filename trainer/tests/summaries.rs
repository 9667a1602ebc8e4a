//! TensorBoard summaries of a training run: what `<checkpoints.uri>/logs/` holds after a run
//! and after a resumed one, checked with our reader against `trainer_state.json` and read by
//! the real TensorBoard.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use mtl_trainer::train::{self, RunOptions};

use common::{job, tiny_model, torch_rng};

fn event_files(logs: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Scalars of one event file by tag: (step, value).
fn scalars(file: &Path) -> BTreeMap<String, Vec<(i64, f32)>> {
    let events = mtl_tfevents::read_events(&std::fs::read(file).unwrap()).unwrap();
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for e in &events {
        for (tag, step, v) in e.scalars() {
            out.entry(tag.to_string()).or_default().push((step, v));
        }
    }
    out
}

#[test]
fn a_run_writes_tensorboard_curves_that_survive_pruning_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let mut spec = job(&model, &out);
    spec.training.log_every_steps = 2;
    spec.training.eval_every_steps = 6;
    spec.training.max_steps = Some(12);
    spec.checkpoints.every_steps = 4;
    spec.checkpoints.keep = Some(1);
    let opts = RunOptions::cpu(tmp.path().join("cache"));
    train::train(&spec, &opts).unwrap();

    let logs = out.join("logs");
    let files = event_files(&logs);
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    // Pruning kept one checkpoint and left logs/ alone.
    let dirs: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("checkpoint-"))
        .collect();
    assert_eq!(dirs, ["checkpoint-12"]);

    let state: mtl_trainer::state::TrainerState = mtl_trainer::io::read_json(
        &out.join("checkpoint-12")
            .join(mtl_trainer::checkpoint::STATE_FILE),
    )
    .unwrap();
    let got = scalars(&files[0]);
    let losses: Vec<(i64, f32)> = state
        .log_history
        .iter()
        .map(|e| (e.step as i64, e.loss as f32))
        .collect();
    assert_eq!(got["train/loss"], losses);
    assert_eq!(losses.len(), 6);
    for task in ["stsb", "rte", "csqa"] {
        let tag = format!("train/loss/{task}");
        let want: Vec<(i64, f32)> = state
            .log_history
            .iter()
            .filter_map(|e| e.task_losses.get(task).map(|l| (e.step as i64, *l as f32)))
            .collect();
        assert_eq!(got.get(&tag), Some(&want), "{tag}");
    }
    let lrs: Vec<(i64, f32)> = state
        .log_history
        .iter()
        .map(|e| (e.step as i64, e.learning_rate as f32))
        .collect();
    assert_eq!(got["learning_rate"], lrs);
    for tag in ["grad_norm", "examples_per_second", "tokens_per_second"] {
        assert_eq!(got[tag].len(), 6, "{tag}");
    }
    let means: Vec<(i64, f32)> = state
        .eval_history
        .iter()
        .map(|m| (m["step"] as i64, m["mean"] as f32))
        .collect();
    assert_eq!(means.iter().map(|m| m.0).collect::<Vec<_>>(), [6, 12]);
    assert_eq!(got["eval/mean"], means);
    assert_eq!(
        got["eval/rte/accuracy"].last().map(|v| v.1),
        Some(state.metrics["rte/accuracy"] as f32)
    );
    let events = mtl_tfevents::read_events(&std::fs::read(&files[0]).unwrap()).unwrap();
    let texts: Vec<String> = events
        .iter()
        .flat_map(|e| e.texts().map(|(t, _, md)| format!("{t}: {md}")))
        .collect();
    assert_eq!(texts.len(), 1);
    assert!(texts[0].starts_with("hyperparameters: | hyperparameter | value |"));
    assert!(
        texts[0].contains("| training.batchSize | 8 |"),
        "{}",
        texts[0]
    );

    // A resumed run (the job extended to 16 steps) adds its own file beside the first.
    spec.training.max_steps = Some(16);
    train::train(&spec, &opts).unwrap();
    let files = event_files(&logs);
    assert_eq!(files.len(), 2, "{files:?}");
    let second = scalars(&files[1]);
    assert_eq!(
        second["train/loss"].iter().map(|v| v.0).collect::<Vec<_>>(),
        [14, 16]
    );

    // The real TensorBoard reads the directory as one run.
    let python = common::python();
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "tensors": 0})
acc.Reload()
tags = acc.Tags()
print(sorted(tags["scalars"]))
print([e.step for e in acc.Scalars("train/loss")])
print([e.step for e in acc.Scalars("eval/mean")])
print(sorted(tags["tensors"]))
"#;
    let run = Command::new(&python)
        .args(["-c", script])
        .arg(&logs)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (make setup installs tensorboard into .venv)",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{} with tensorboard: {}",
        python.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    for tag in [
        "'train/loss'",
        "'train/loss/csqa'",
        "'learning_rate'",
        "'eval/mean'",
        "'eval/stsb/pearson'",
    ] {
        assert!(lines[0].contains(tag), "{tag} not in {}", lines[0]);
    }
    assert_eq!(lines[1], "[2, 4, 6, 8, 10, 12, 14, 16]");
    assert_eq!(lines[2], "[6, 12, 16]");
    assert!(lines[3].contains("hyperparameters"), "{}", lines[3]);
}

/// progress.json: overwritten as the run goes, where a stopped run stood (with an ETA), and
/// the end of the resumed one, with the latest loss window and evaluation.
#[test]
fn progress_object_follows_the_run_and_its_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let _rng = torch_rng();
    let out = tmp.path().join("run");
    let mut spec = job(&model, &out);
    spec.training.log_every_steps = 2;
    spec.training.max_steps = Some(12);
    spec.checkpoints.every_steps = 3;
    let read = || {
        let bytes = std::fs::read(out.join("progress.json")).expect("progress.json written");
        mtl_storage::Progress::parse("progress.json", &bytes).unwrap()
    };

    let mut opts = RunOptions::cpu(tmp.path().join("cache"));
    opts.stop_after = Some(6);
    train::train(&spec, &opts).unwrap();
    let p = read();
    assert_eq!((p.step, p.total_steps), (6, 12));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("checkpoint-6").join("trainer_state.json")).unwrap(),
    )
    .unwrap();
    let last = state["log_history"].as_array().unwrap().last().unwrap();
    assert_eq!(p.loss, last["loss"].as_f64());
    assert!(!p.task_losses.is_empty());
    assert!(
        p.examples_per_second > 0.0 && p.tokens_per_second > 0.0,
        "{p:?}"
    );
    assert!(p.eta_seconds.is_some_and(|s| s > 0.0), "{p:?}");
    assert!(
        p.updated_at
            .parse::<chrono::DateTime<chrono::Utc>>()
            .is_ok(),
        "{}",
        p.updated_at
    );

    train::train(&spec, &RunOptions::cpu(tmp.path().join("cache"))).unwrap();
    let p = read();
    assert_eq!((p.step, p.total_steps), (12, 12));
    assert_eq!(p.eta_seconds, Some(0.0));
    assert!(
        p.eval.contains_key("mean"),
        "the final evaluation: {:?}",
        p.eval
    );
    // Checkpoint pruning and the manifest leave it alone; it is not a checkpoint.
    let manifest = std::fs::read_to_string(out.join("checkpoints.json")).unwrap();
    assert!(!manifest.contains("progress"), "{manifest}");
}
