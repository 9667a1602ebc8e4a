//! Every job, data file or model that cannot train fails before the first step, with an error
//! that names the field, file, line or value at fault, without a panic and without writing
//! anything under the checkpoint location.

mod common;

use std::panic::AssertUnwindSafe;
use std::path::Path;

use mtl_crds::{DataFormat, MultiTaskTrainingJobSpec, Precision, TaskType};
use mtl_trainer::train::{self, RunOptions};

use common::{TINY_BERT, job, tiny_model, tiny_model_with, torch_rng};

/// A copy of the bundled data under `dir/data`, for cases that corrupt a file.
fn copy_data(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    for (task, files) in [
        ("stsb", ["train.tsv", "dev.tsv"]),
        ("rte", ["train.tsv", "dev.tsv"]),
        ("csqa", ["train.jsonl", "dev.jsonl"]),
    ] {
        std::fs::create_dir_all(data.join(task)).unwrap();
        for f in files {
            std::fs::copy(
                common::workspace().join("examples/data").join(task).join(f),
                data.join(task).join(f),
            )
            .unwrap();
        }
    }
    data
}

/// Replaces line `n` (1-based) of a file.
fn set_line(path: &Path, n: usize, f: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i + 1 == n { f(l) } else { l.to_string() })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

type Edit = Box<dyn Fn(&mut MultiTaskTrainingJobSpec, &Path)>;

/// A data file of the copy made for one case.
fn data(case: &Path, task: &str, file: &str) -> std::path::PathBuf {
    case.join("data").join(task).join(file)
}

#[test]
fn bad_jobs_data_and_models_fail_before_training_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let small_vocab = tiny_model_with(
        &tmp.path().join("small-vocab"),
        &TINY_BERT.replace("30522", "1000"),
    );
    let bad_act = tmp.path().join("bad-act");
    std::fs::create_dir_all(&bad_act).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), bad_act.join(f)).unwrap();
    }
    std::fs::write(
        bad_act.join("config.json"),
        TINY_BERT.replace("\"gelu\"", "\"prelu\""),
    )
    .unwrap();
    let no_tokenizer = tmp.path().join("no-tokenizer");
    std::fs::create_dir_all(&no_tokenizer).unwrap();
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(model.join(f), no_tokenizer.join(f)).unwrap();
    }
    let roberta = tmp.path().join("roberta-config");
    std::fs::create_dir_all(&roberta).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), roberta.join(f)).unwrap();
    }
    std::fs::write(
        roberta.join("config.json"),
        TINY_BERT
            .replace("\"bert\"", "\"roberta\"")
            .replace("\"type_vocab_size\": 2", "\"type_vocab_size\": 1"),
    )
    .unwrap();

    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "multiple choice read from GLUE TSV",
            Box::new(|s, _| {
                s.tasks[1].task_type = TaskType::MultipleChoice;
                s.tasks[1].num_choices = Some(2);
            }),
            "spec.tasks[1] (rte).format: glueTsv has no choices",
        ),
        (
            "classification read from CommonsenseQA",
            Box::new(|s, _| {
                s.tasks[2].task_type = TaskType::Classification;
                s.tasks[2].num_choices = None;
            }),
            "spec.tasks[2] (csqa).format: commonsenseQaJsonl holds multiple-choice questions",
        ),
        (
            "a negative learning rate (the CRD's bounds hold without an API server too)",
            Box::new(|s, _| s.training.learning_rate = -1.0),
            "spec.training.learningRate: -1.0 is less than the minimum 0",
        ),
        (
            "label names for fewer classes than numLabels",
            Box::new(|s, _| s.tasks[1].num_labels = Some(3)),
            "spec.tasks[1] (rte).labelNames: 2 names for 3 labels",
        ),
        (
            "positive label that is not a label",
            Box::new(|s, _| s.tasks[1].positive_label = Some("neutral".into())),
            "spec.tasks[1] (rte).positiveLabel",
        ),
        (
            "choice labels for another number of choices",
            Box::new(|s, _| s.tasks[2].num_choices = Some(4)),
            "spec.tasks[2] (csqa).labelNames: 5 names for 4 choices",
        ),
        (
            "CommonsenseQA rows with other than numChoices choices",
            Box::new(|s, _| {
                s.tasks[2].num_choices = Some(4);
                s.tasks[2].label_names = None;
            }),
            "csqa/train.jsonl:1: 5 choices, the task has numChoices 4",
        ),
        (
            "tokenizer vocabulary larger than the model's",
            Box::new(move |s, _| s.model.pretrained = small_vocab.display().to_string()),
            "the tokenizer has 30522 tokens but config.json's vocab_size is 1000",
        ),
        (
            "label index outside numLabels",
            Box::new(|s, case| {
                s.tasks[1].label_names = None;
                s.tasks[1].num_labels = Some(2);
                let f = data(case, "rte", "train.tsv");
                set_line(&f, 4, |l| {
                    let mut cols: Vec<&str> = l.split('\t').collect();
                    let last = cols.len() - 1;
                    cols[last] = "2";
                    cols.join("\t")
                });
                // The other rows use names, which a task without labelNames cannot read:
                // give every row an index.
                let text = std::fs::read_to_string(&f)
                    .unwrap()
                    .replace("\tnot_entailment", "\t1")
                    .replace("\tentailment", "\t0");
                std::fs::write(&f, text).unwrap();
                s.tasks[1].train = f.display().to_string();
            }),
            "rte/train.tsv:4: label index 2 is out of range (0..2)",
        ),
        (
            "unknown label name",
            Box::new(|s, case| {
                let f = data(case, "rte", "train.tsv");
                set_line(&f, 3, |l| {
                    l.replace("\tnot_entailment", "\tneutral")
                        .replace("\tentailment", "\tneutral")
                });
                s.tasks[1].train = f.display().to_string();
            }),
            "rte/train.tsv:3: label \"neutral\" is not one of [\"entailment\", \"not_entailment\"]",
        ),
        (
            "regression score that is not a number",
            Box::new(|s, case| {
                let f = data(case, "stsb", "dev.tsv");
                set_line(&f, 6, |l| {
                    let mut cols: Vec<&str> = l.split('\t').collect();
                    let last = cols.len() - 1;
                    cols[last] = "high";
                    cols.join("\t")
                });
                s.tasks[0].validation = Some(f.display().to_string());
            }),
            "stsb/dev.tsv:6: label \"high\" is not a number",
        ),
        (
            "malformed JSON line",
            Box::new(|s, case| {
                let f = data(case, "csqa", "train.jsonl");
                set_line(&f, 7, |l| l[..l.len() / 2].to_string());
                s.tasks[2].train = f.display().to_string();
            }),
            "csqa/train.jsonl:7: malformed JSON",
        ),
        (
            "missing text column",
            Box::new(|s, _| s.tasks[0].text_fields = vec!["premise".into(), "sentence2".into()]),
            "stsb/train.tsv:1: missing column \"premise\"",
        ),
        (
            "empty training file",
            Box::new(|s, case| {
                let f = data(case, "stsb", "train.tsv");
                let header = std::fs::read_to_string(&f).unwrap();
                std::fs::write(&f, header.lines().next().unwrap()).unwrap();
                s.tasks[0].train = f.display().to_string();
            }),
            "stsb/train.tsv: no examples in file",
        ),
        (
            "missing training file",
            Box::new(|s, _| s.tasks[0].train = "/nonexistent/stsb/train.tsv".into()),
            "/nonexistent/stsb/train.tsv",
        ),
        (
            "maxLength past the position embeddings",
            Box::new(|s, _| s.model.max_length = 512),
            "spec.model.maxLength 512 exceeds what the model's position embeddings allow (128)",
        ),
        (
            "config.json with an activation HF has but that carries weights",
            Box::new(move |s, _| s.model.pretrained = bad_act.display().to_string()),
            "invalid config.json: hidden_act: unknown variant `prelu`",
        ),
        (
            "model directory without tokenizer.json",
            Box::new(move |s, _| s.model.pretrained = no_tokenizer.display().to_string()),
            "no-tokenizer/tokenizer.json: not found: spec.model.pretrained must hold",
        ),
        (
            "BERT weights under a RoBERTa config",
            Box::new(move |s, _| s.model.pretrained = roberta.display().to_string()),
            "tensor roberta.embeddings.token_type_embeddings.weight has shape [2, 32], the model expects [1, 32]",
        ),
        (
            "fp16 on a CPU",
            Box::new(|s, _| s.training.precision = Precision::Fp16),
            "spec.training.precision fp16 needs a CUDA device",
        ),
        (
            "jsonl multiple choice without choicesField",
            Box::new(|s, _| {
                s.tasks[2].format = DataFormat::Jsonl;
                s.tasks[2].text_fields = vec!["question.stem".into()];
            }),
            "spec.tasks[2] (csqa).choicesField: required for jsonl multipleChoice",
        ),
    ];
    assert!(cases.len() >= 15);
    let _rng = torch_rng();
    for (i, (what, edit, expected)) in cases.into_iter().enumerate() {
        let case = tmp.path().join(format!("case-{i}"));
        copy_data(&case);
        let out = case.join("out");
        let mut spec = job(&model, &out);
        edit(&mut spec, &case);
        let opts = RunOptions::cpu(case.join("cache"));
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| train::train(&spec, &opts)));
        let err = match result {
            Err(panic) => panic!("{what}: panicked: {:?}", panic.downcast_ref::<String>()),
            Ok(Ok(_)) => panic!("{what}: trained"),
            // Running again cannot help: the trainer exits EXIT_INVALID_INPUT, which the
            // operator does not retry.
            Ok(Err(e)) if !e.is_invalid_input() => panic!("{what}: retryable: {e:?}"),
            Ok(Err(e)) => e.to_string(),
        };
        assert!(
            err.contains(expected),
            "{what}: expected an error containing\n  {expected}\ngot\n  {err}"
        );
        assert!(!out.exists(), "{what}: wrote under the checkpoint location");
    }
}

/// The process exits with `EXIT_INVALID_INPUT` (2) on input no retry can fix, with the error
/// in its termination log, and 1 on an error that may pass.
#[test]
fn the_trainer_exits_2_on_input_no_retry_can_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    copy_data(tmp.path());
    let run = |edit: &dyn Fn(&mut MultiTaskTrainingJobSpec), name: &str| {
        let mut spec = job(&model, &tmp.path().join(name).join("out"));
        edit(&mut spec);
        let job_path = tmp.path().join(format!("{name}.json"));
        std::fs::write(&job_path, serde_json::to_string(&spec).unwrap()).unwrap();
        let log = tmp.path().join(format!("{name}.termination-log"));
        std::fs::write(&log, "").unwrap();
        let out = common::trainer()
            .args(["--device", "cpu", "train", "--job"])
            .arg(&job_path)
            .env("MTL_CACHE_DIR", tmp.path().join("cache"))
            .env("MTL_TERMINATION_LOG", &log)
            .output()
            .unwrap();
        (out.status.code(), std::fs::read_to_string(&log).unwrap())
    };
    let train = data(tmp.path(), "rte", "train.tsv");
    set_line(&train, 3, |l| l.replace("entailment", "neutral"));
    let (code, log) = run(
        &|s| s.tasks[1].train = train.display().to_string(),
        "bad-row",
    );
    assert_eq!(code, Some(i32::from(mtl_crds::EXIT_INVALID_INPUT)), "{log}");
    assert!(log.contains("rte/train.tsv:3: label"), "{log}");
    // A checkpoint location the trainer cannot write to may be fixed meanwhile: retried.
    let blocked = tmp.path().join("blocked");
    std::fs::write(&blocked, "a file, not a directory").unwrap();
    let (code, log) = run(
        &|s| s.checkpoints.uri = blocked.join("out").display().to_string(),
        "unwritable",
    );
    assert_eq!(code, Some(1), "{log}");
}
