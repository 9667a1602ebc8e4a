//! Multi-task parity with transformers over many steps: a tiny BERT and a tiny RoBERTa with
//! three tasks (regression, classification, multiple choice) trained by `train::train` on the
//! bundled data, against the original design on transformers (one shared encoder, per-task HF
//! heads, `torch.optim.AdamW` with HF's decay groups, `zero_grad(set_to_none=True)`) replayed
//! on the same batches from the same initial weights (`tests/reference/multitask_reference.py`).
//!
//! Each step trains one task, so the other heads (and RoBERTa's pooler, read by the multiple
//! choice head only) get no gradient: torch leaves them alone and keeps a step count per
//! parameter. Per-step losses and every parameter at the end must agree.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use mtl_trainer::assets::ModelAssets;
use mtl_trainer::checkpoint;
use mtl_trainer::data::{Loader, TaskData};
use mtl_trainer::io::{self, Storage};
use mtl_trainer::model::{MODEL_FILE, build_model};
use mtl_trainer::optim::LinearSchedule;
use mtl_trainer::sampling::Sampler;
use mtl_trainer::state::TrainerState;
use mtl_trainer::train::{self, RunOptions};
use tch::{Device, Kind, Tensor};

const STEPS: u64 = 36;

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .norm()
        .double_value(&[]);
    diff / b.to_kind(Kind::Double).norm().double_value(&[]).max(1e-12)
}

fn read(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
        .into_iter()
        .collect()
}

fn case(models: &Path, kind: &str, accumulation: u32) {
    let tmp = tempfile::tempdir().unwrap();
    let model_dir = models.join(kind);
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt"] {
        std::fs::copy(common::minilm_dir().join(f), model_dir.join(f)).unwrap();
    }
    let mut spec =
        mtl_trainer::job::load_file(&common::workspace().join("examples/job-local.yaml")).unwrap();
    spec.model.pretrained = model_dir.display().to_string();
    spec.model.max_length = 40;
    spec.checkpoints.uri = tmp.path().join("out").display().to_string();
    spec.checkpoints.every_steps = 10_000;
    let tr = &mut spec.training;
    tr.max_steps = Some(STEPS);
    tr.batch_size = 4;
    tr.learning_rate = 2e-3;
    tr.warmup_steps = Some(4);
    tr.weight_decay = 0.05;
    tr.max_grad_norm = 1.0;
    tr.gradient_accumulation_steps = accumulation;
    tr.log_every_steps = 1;
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();

    // The initial weights and the batches, built as the trainer builds them.
    let store = Storage::new().unwrap();
    let cache = tmp.path().join("cache");
    let assets = ModelAssets::fetch(&store, &spec.model.pretrained, &cache).unwrap();
    let config = assets.config().unwrap();
    let encoder = assets
        .encoder(&config, spec.model.max_length as usize)
        .unwrap();
    let tasks = Loader::new(&store, &cache, &encoder, &assets.tokenizer_path())
        .unwrap()
        .load(&spec, true)
        .unwrap();
    let mut model = build_model(config, &spec.tasks, Device::Cpu, spec.training.seed);
    model
        .load_pretrained(&model_dir.join("model.safetensors"))
        .unwrap();
    model.save(&run_dir.join("init.safetensors")).unwrap();
    let init = read(&run_dir.join("init.safetensors"));
    let mut sampler = Sampler::new(
        &spec.sampling,
        spec.training.seed,
        spec.training.batch_size as usize,
        tasks.iter().map(TaskData::train_len).collect(),
    );
    let mut batches: Vec<(String, Tensor)> = Vec::new();
    let mut steps: Vec<Vec<String>> = Vec::new();
    let mut micro = 0;
    for s in 0..STEPS {
        let mut names = Vec::new();
        for m in 0..accumulation {
            let plan = sampler.plan(micro);
            micro += 1;
            let train = tasks[plan.task].train.as_ref().unwrap();
            let b = model
                .batcher(plan.task)
                .collate(train, &plan.examples)
                .unwrap();
            let key = format!("step{s}.micro{m}.");
            batches.push((format!("{key}input_ids"), b.input_ids));
            batches.push((format!("{key}token_type_ids"), b.token_type_ids));
            batches.push((format!("{key}attention_mask"), b.attention_mask));
            batches.push((format!("{key}labels"), b.labels.unwrap()));
            names.push(tasks[plan.task].spec.name.clone());
        }
        steps.push(names);
    }
    let used: std::collections::BTreeSet<&String> = steps.iter().flatten().collect();
    assert_eq!(used.len(), 3, "the plan trains every task: {steps:?}");
    Tensor::write_safetensors(&batches, run_dir.join("batches.safetensors")).unwrap();
    let schedule = LinearSchedule::for_run(&spec.training, STEPS);
    let run = serde_json::json!({
        "model": spec.model.pretrained,
        "tasks": spec.tasks,
        "steps": steps,
        "training": {
            "learning_rate": spec.training.learning_rate,
            "warmup_steps": schedule.warmup,
            "total_steps": schedule.total,
            "weight_decay": spec.training.weight_decay,
            "max_grad_norm": spec.training.max_grad_norm,
        },
    });
    std::fs::write(run_dir.join("run.json"), run.to_string()).unwrap();

    // mtl trains the job; the reference replays its batches.
    let outcome = train::train(&spec, &RunOptions::cpu(cache.clone())).unwrap();
    assert_eq!(outcome.step, STEPS);
    let script = common::workspace().join("trainer/tests/reference/multitask_reference.py");
    common::run_python(&[
        script.to_str().unwrap(),
        "replay",
        run_dir.to_str().unwrap(),
    ]);
    let want = read(&run_dir.join("reference.safetensors"));

    // Per-step losses (the log's loss is the mean over the step's micro-batches).
    let ckpt = Path::new(&spec.checkpoints.uri).join(format!("checkpoint-{STEPS}"));
    let state: TrainerState = io::read_json(&ckpt.join(checkpoint::STATE_FILE)).unwrap();
    let ref_losses = Vec::<f64>::try_from(&want["loss"]).unwrap();
    assert_eq!(state.log_history.len() as u64, STEPS);
    for (s, entry) in state.log_history.iter().enumerate() {
        let a = accumulation as usize;
        let reference = ref_losses[s * a..(s + 1) * a].iter().sum::<f64>() / a as f64;
        let rel = (entry.loss - reference).abs() / reference.abs().max(1e-12);
        assert!(
            rel < 1e-4,
            "{kind}: step {} loss {} vs transformers {reference} (relative {rel:.2e})",
            entry.step,
            entry.loss
        );
    }

    // Every parameter at the end: encoder, every head, the pooler.
    let got = read(&ckpt.join(MODEL_FILE));
    let lr_sum: f64 = (0..STEPS).map(|s| schedule.at(s)).sum();
    let mut compared = 0;
    let mut worst = (0.0, String::new());
    for (name, p) in &got {
        let w = want
            .get(name)
            .unwrap_or_else(|| panic!("{kind}: transformers has no {name}"));
        // Zero in exact arithmetic, because softmax ignores a constant added to all of its
        // inputs: the attention key bias and a multiple-choice head's output bias. Both sides
        // step on rounding noise there, which Adam turns into steps of up to about lr; they
        // are checked to have moved no further than that.
        if common::analytic_zero(name) {
            for (side, t) in [("mtl", p), ("transformers", w)] {
                let moved = (t - &init[name]).abs().max().double_value(&[]);
                assert!(
                    moved <= 3.2 * lr_sum,
                    "{kind}: {side} moved {name} by {moved}, more than noise steps can"
                );
            }
            continue;
        }
        let err = rel_err(p, w);
        if err > worst.0 {
            worst = (err, name.clone());
        }
        compared += 1;
    }
    eprintln!(
        "{kind}: {compared} parameters, largest relative difference {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "{kind}: {} differs from transformers after {STEPS} steps (relative {:.2e})",
        worst.1,
        worst.0
    );
    assert!(compared > 40, "{kind}: only {compared} parameters compared");
    for prefix in ["heads.stsb.", "heads.rte.", "heads.csqa.", ".pooler."] {
        assert!(
            got.keys().any(|k| k.contains(prefix)),
            "{kind}: no {prefix} parameters"
        );
    }
}

#[test]
fn three_tasks_over_many_steps_match_transformers() {
    let models = tempfile::tempdir().unwrap();
    let script = common::workspace().join("trainer/tests/reference/multitask_reference.py");
    common::run_python(&[
        script.to_str().unwrap(),
        "models",
        models.path().to_str().unwrap(),
    ]);
    // One after the other: model initialisation draws from libtorch's global generator.
    case(models.path(), "bert", 1);
    case(models.path(), "roberta", 2);
}
