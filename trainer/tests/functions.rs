//! Activation functions against transformers' `ACT2FN`, and metrics against sklearn and scipy.

mod common;

use std::collections::BTreeMap;

use mtl_crds::{DataFormat, TaskSpec, TaskType};
use mtl_trainer::config::Activation;
use mtl_trainer::metrics::{self, Predictions};
use rand::{Rng, SeedableRng};
use tch::{Kind, Tensor};

#[test]
fn every_hf_activation_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("act.safetensors");
    let script = common::workspace().join("trainer/tests/reference/functions_reference.py");
    common::run_python(&[
        script.to_str().unwrap(),
        "activations",
        out.to_str().unwrap(),
    ]);
    let want: BTreeMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let x = &want["input"];
    let mut checked = 0;
    for (name, expected) in &want {
        if name == "input" {
            continue;
        }
        let act: Activation = serde_json::from_value(serde_json::json!(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = act.apply(x).unwrap();
        let diff = (&got - expected)
            .abs()
            .max()
            .to_kind(Kind::Double)
            .double_value(&[]);
        assert!(diff < 1e-5, "{name}: differs from transformers by {diff}");
        checked += 1;
    }
    assert_eq!(checked, 22);
}

fn task(classes: u32, positive: Option<&str>) -> TaskSpec {
    TaskSpec {
        name: "t".into(),
        task_type: TaskType::Classification,
        num_labels: Some(classes),
        num_choices: None,
        train: String::new(),
        validation: None,
        test: None,
        submission_file: None,
        format: DataFormat::Jsonl,
        text_fields: vec!["text".into()],
        label_field: Some("label".into()),
        label_names: Some((0..classes).map(|c| format!("c{c}")).collect()),
        choices_field: None,
        positive_label: positive.map(str::to_string),
        max_train_examples: None,
        max_eval_examples: None,
        max_length: None,
        metric: None,
        loss_weight: None,
    }
}

#[test]
fn metrics_match_sklearn_and_scipy() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut cases = Vec::new();
    let mut ours = Vec::new();
    for i in 0..40 {
        let classes: usize = [2, 3, 5][i % 3];
        let n = rng.random_range(5..60);
        // Skewed draws, so that some classes are absent from gold and predictions.
        let draw = |rng: &mut rand_chacha::ChaCha8Rng| {
            let u: f64 = rng.random();
            ((u * u) * classes as f64) as usize
        };
        let gold: Vec<usize> = (0..n).map(|_| draw(&mut rng)).collect();
        let pred: Vec<usize> = (0..n).map(|_| draw(&mut rng)).collect();
        let positive = if classes == 2 { i % 2 } else { 1 };
        let spec = task(classes as u32, Some(&format!("c{positive}")));
        let (m, headline) = metrics::task_metrics(
            &spec,
            &Predictions::Classes {
                pred: pred.clone(),
                gold: gold.clone(),
            },
        )
        .unwrap();
        assert_eq!(headline, m["t/accuracy"]);
        ours.push(m);
        cases.push(serde_json::json!({"pred": pred, "gold": gold, "classes": classes, "positive": positive}));
    }
    // Constant predictions (a collapsed regression head) and constant labels: scipy says NaN.
    for (scores, gold) in [
        (vec![2.5; 6], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]),
        (vec![0.1, 0.4, 0.2, 0.9], vec![3.0; 4]),
    ] {
        let mut spec = task(2, None);
        spec.task_type = TaskType::Regression;
        let (m, headline) = metrics::task_metrics(
            &spec,
            &Predictions::Scores {
                pred: scores.clone(),
                gold: gold.clone(),
            },
        )
        .unwrap();
        assert!(headline.is_nan(), "a collapsed head has no headline score");
        ours.push(m);
        cases.push(serde_json::json!({"scores": scores, "gold_scores": gold}));
    }
    for _ in 0..10 {
        let n = rng.random_range(3..80);
        let gold: Vec<f64> = (0..n)
            .map(|_| (rng.random::<f64>() * 5.0 * 4.0).round() / 4.0)
            .collect();
        let scores: Vec<f64> = gold
            .iter()
            .map(|g| g + rng.random::<f64>() * 2.0 - 1.0)
            .collect();
        let mut spec = task(2, None);
        spec.task_type = TaskType::Regression;
        let (m, headline) = metrics::task_metrics(
            &spec,
            &Predictions::Scores {
                pred: scores.clone(),
                gold: gold.clone(),
            },
        )
        .unwrap();
        assert!((headline - (m["t/pearson"] + m["t/spearman"]) / 2.0).abs() < 1e-15);
        ours.push(m);
        cases.push(serde_json::json!({"scores": scores, "gold_scores": gold}));
    }
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&inp, serde_json::to_string(&cases).unwrap()).unwrap();
    let script = common::workspace().join("trainer/tests/reference/functions_reference.py");
    common::run_python(&[
        script.to_str().unwrap(),
        "metrics",
        inp.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let want: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    for (i, (m, w)) in ours.iter().zip(&want).enumerate() {
        let close = |ours: f64, theirs: &serde_json::Value, what: &str| {
            // The reference writes NaN as null (JSON has no NaN).
            if theirs.is_null() {
                assert!(
                    ours.is_nan(),
                    "case {i} {what}: {ours} vs sklearn/scipy NaN"
                );
                return;
            }
            let t = theirs.as_f64().unwrap();
            assert!(
                (ours - t).abs() < 1e-12,
                "case {i} {what}: {ours} vs sklearn/scipy {t}"
            );
        };
        if let Some(p) = m.get("t/pearson") {
            close(*p, &w["pearson"], "pearson");
            close(m["t/spearman"], &w["spearman"], "spearman");
            continue;
        }
        close(m["t/accuracy"], &w["accuracy"], "accuracy");
        let sk = if w["f1_binary"].is_null() {
            &w["f1_macro"]
        } else {
            &w["f1_binary"]
        };
        close(m["t/f1"], sk, "f1");
        close(m["t/mcc"], &w["mcc"], "mcc");
    }
}

/// A task's `metric` picks its headline: GLUE scores CoLA by Matthews correlation and MRPC
/// and QQP by the mean of F1 and accuracy.
#[test]
fn the_task_metric_picks_the_headline() {
    let pred = vec![1, 0, 1, 1, 0, 0, 1, 1];
    let gold = vec![1, 0, 0, 1, 1, 0, 1, 1];
    let classes = Predictions::Classes {
        pred: pred.clone(),
        gold: gold.clone(),
    };
    let mut spec = task(2, None);
    let (m, headline) = metrics::task_metrics(&spec, &classes).unwrap();
    assert_eq!(headline, m["t/accuracy"]);
    for (metric, want) in [
        (mtl_crds::TaskMetric::Mcc, m["t/mcc"]),
        (mtl_crds::TaskMetric::F1, m["t/f1"]),
        (
            mtl_crds::TaskMetric::F1Accuracy,
            (m["t/f1"] + m["t/accuracy"]) / 2.0,
        ),
    ] {
        spec.metric = Some(metric);
        assert_eq!(
            metrics::task_metrics(&spec, &classes).unwrap().1,
            want,
            "{metric:?}"
        );
    }
    let scores = Predictions::Scores {
        pred: vec![0.1, 0.5, 0.2, 0.9],
        gold: vec![0.0, 1.0, 0.5, 0.7],
    };
    let mut reg = task(2, None);
    reg.task_type = TaskType::Regression;
    reg.metric = Some(mtl_crds::TaskMetric::Spearman);
    let (m, headline) = metrics::task_metrics(&reg, &scores).unwrap();
    assert_eq!(headline, m["t/spearman"]);
}
