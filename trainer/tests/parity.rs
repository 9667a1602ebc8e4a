//! Numerical parity with HuggingFace transformers: logits of every head type, the loss and
//! every parameter gradient of a training step, and AdamW, for small random BERT and
//! RoBERTa models written by `tests/reference/hf_reference.py`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use mtl_crds::TaskType;
use mtl_trainer::config::ModelConfig;
use mtl_trainer::data::Batch;
use mtl_trainer::model::{HeadSpec, MultiTaskModel};
use mtl_trainer::optim::{AdamW, AdamWConfig};
use tch::{Device, Kind, Tensor};

fn heads() -> Vec<HeadSpec> {
    let h = |name: &str, task_type, outputs| HeadSpec {
        name: name.into(),
        task_type,
        outputs,
    };
    vec![
        h("reg", TaskType::Regression, 1),
        h("cls", TaskType::Classification, 3),
        h("mc", TaskType::MultipleChoice, 1),
    ]
}

fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let diff = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .norm()
        .double_value(&[]);
    let scale = b.to_kind(Kind::Double).norm().double_value(&[]).max(1e-12);
    diff / scale
}

fn batch(e: &BTreeMap<String, Tensor>, task: &str, regression: bool) -> Batch {
    let labels = &e[&format!("{task}.labels")];
    let ids = e[&format!("{task}.input_ids")].shallow_clone();
    let examples = labels.size()[0] as usize;
    let rows = ids.size()[0] as usize;
    Batch {
        input_ids: ids,
        token_type_ids: e[&format!("{task}.token_type_ids")].shallow_clone(),
        attention_mask: e[&format!("{task}.attention_mask")].shallow_clone(),
        labels: Some(if regression {
            labels.to_kind(Kind::Float)
        } else {
            labels.to_kind(Kind::Int64)
        }),
        examples,
        choices: rows / examples,
        real_tokens: 0,
        padded_tokens: 0,
    }
}

fn check(dir: &Path) {
    let config = ModelConfig::load(&dir.join("config.json")).unwrap();
    let mut model = MultiTaskModel::new(config, heads(), Device::Cpu);
    model
        .load_checkpoint(&dir.join("model.safetensors"))
        .unwrap();
    let expected: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let params = model.named_tensors();
    for (i, task) in ["reg", "cls", "mc"].into_iter().enumerate() {
        let b = batch(&expected, task, task == "reg");
        let logits = tch::no_grad(|| model.forward(i, &b, false)).unwrap();
        let want = &expected[&format!("{task}.eval_logits")];
        let max_abs = (&logits - want).abs().max().double_value(&[]);
        assert!(
            max_abs < 1e-4,
            "{dir:?} {task}: eval logits differ by {max_abs}"
        );

        for p in params.values() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let (loss, _) = model.loss(i, &b, true).unwrap();
        loss.backward();
        let want_loss = expected[&format!("{task}.loss")].double_value(&[0]);
        let got_loss = loss.double_value(&[]);
        assert!(
            ((got_loss - want_loss) / want_loss).abs() < 1e-4,
            "{dir:?} {task}: loss {got_loss} vs {want_loss}"
        );
        let prefix = format!("{task}.grad.");
        let grads: Vec<(&str, &Tensor)> = expected
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|n| (n, v)))
            .collect();
        // Two gradients are zero in exact arithmetic, because softmax ignores a constant added
        // to all its inputs: the attention key bias (to every score of a query) and a multiple
        // choice head's output bias (to every choice). Both sides hold rounding noise there,
        // so those are checked to be negligible rather than equal.
        let largest = grads
            .iter()
            .map(|(_, g)| g.to_kind(Kind::Double).norm().double_value(&[]))
            .fold(0.0, f64::max);
        let mut compared = 0;
        for (name, want) in grads {
            let p = params
                .get(name)
                .unwrap_or_else(|| panic!("no parameter {name}"));
            let analytic_zero = name.ends_with("attention.self.key.bias")
                || (task == "mc" && name.ends_with("classifier.bias"));
            if analytic_zero {
                for (side, g) in [("mtl", &p.grad()), ("transformers", want)] {
                    let n = g.to_kind(Kind::Double).norm().double_value(&[]);
                    assert!(
                        n < 1e-5 * largest,
                        "{dir:?} {task}: {side} gradient of {name} is {n}, not negligible"
                    );
                }
                compared += 1;
                continue;
            }
            let err = rel_err(&p.grad(), want);
            assert!(
                err < 1e-4,
                "{dir:?} {task}: gradient of {name} differs (relative {err})"
            );
            compared += 1;
        }
        assert!(compared > 20, "{task}: only {compared} gradients compared");
    }

    // AdamW: two steps from the `cls` gradients, as torch.optim.AdamW takes them.
    let mut model = MultiTaskModel::new(
        ModelConfig::load(&dir.join("config.json")).unwrap(),
        heads(),
        Device::Cpu,
    );
    model
        .load_checkpoint(&dir.join("model.safetensors"))
        .unwrap();
    let b = batch(&expected, "cls", false);
    let (loss, _) = model.loss(1, &b, true).unwrap();
    loss.backward();
    // Only the parameters torch's cls model has take part (other heads get no gradient).
    let named: BTreeMap<String, Tensor> = model
        .named_tensors()
        .into_iter()
        .filter(|(n, _)| expected.contains_key(&format!("cls.adamw.{n}")))
        .collect();
    let mut opt = AdamW::new(
        named
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect(),
        AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
    );
    opt.step(1e-3).unwrap();
    opt.step(1e-3).unwrap();
    for (name, p) in &named {
        let want = &expected[&format!("cls.adamw.{name}")];
        if name.ends_with("attention.self.key.bias") {
            // Adam turns its noise gradient (see above) into steps of about ±lr from zero.
            let moved = p.abs().max().double_value(&[]);
            assert!(moved <= 2.0 * 1e-3 * 1.001, "{dir:?}: {name} moved {moved}");
            continue;
        }
        let err = rel_err(p, want);
        assert!(
            err < 1e-5,
            "{dir:?}: AdamW result for {name} differs (relative {err})"
        );
    }
}

#[test]
fn bert_and_roberta_match_transformers() {
    let out = tempfile::tempdir().unwrap();
    let script = common::workspace().join("trainer/tests/reference/hf_reference.py");
    common::run_python(&[script.to_str().unwrap(), out.path().to_str().unwrap()]);
    check(&out.path().join("bert"));
    check(&out.path().join("roberta"));
}
