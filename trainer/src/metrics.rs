//! Evaluation metrics: Pearson and Spearman correlation (STS-B), accuracy and F1
//! (classification), accuracy (multiple choice).

use std::collections::BTreeMap;

use mtl_crds::{TaskMetric, TaskSpec, TaskType};

use crate::Error;

/// Pearson's r; NaN, as scipy's `pearsonr`, when either side is constant (a collapsed
/// regression head) or there are fewer than two pairs: not a score that can rank as best.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return f64::NAN;
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return f64::NAN;
    }
    sxy / (sxx.sqrt() * syy.sqrt())
}

/// Ranks starting at 1, ties sharing their average rank (as scipy's `rankdata`).
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    pred.iter().zip(gold).filter(|(p, g)| p == g).count() as f64 / gold.len() as f64
}

/// F1 of the class `positive` (sklearn's `f1_score(average="binary", pos_label=positive)`;
/// 0 when the class is neither predicted nor present, as sklearn's `zero_division=0`).
pub fn f1_binary(pred: &[usize], gold: &[usize], positive: usize) -> f64 {
    let (mut tp, mut fp, mut fneg) = (0usize, 0usize, 0usize);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == positive, g == positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fneg += 1,
            (false, false) => {}
        }
    }
    let denominator = 2 * tp + fp + fneg;
    if denominator == 0 {
        0.0
    } else {
        2.0 * tp as f64 / denominator as f64
    }
}

/// Macro-averaged F1 over the classes present in the gold labels or the predictions
/// (sklearn's `f1_score(average="macro")`, which ignores classes absent from both).
pub fn f1_macro(pred: &[usize], gold: &[usize]) -> f64 {
    let present: std::collections::BTreeSet<usize> = pred.iter().chain(gold).copied().collect();
    if present.is_empty() {
        return 0.0;
    }
    present
        .iter()
        .map(|&c| f1_binary(pred, gold, c))
        .sum::<f64>()
        / present.len() as f64
}

/// Matthews correlation coefficient over any number of classes (sklearn's
/// `matthews_corrcoef`, 0 when it is undefined: one class predicted or present only).
pub fn mcc(pred: &[usize], gold: &[usize]) -> f64 {
    let classes = pred.iter().chain(gold).copied().max().map_or(0, |m| m + 1);
    let (mut p, mut t) = (vec![0f64; classes], vec![0f64; classes]);
    let mut correct = 0f64;
    for (&a, &b) in pred.iter().zip(gold) {
        p[a] += 1.0;
        t[b] += 1.0;
        if a == b {
            correct += 1.0;
        }
    }
    let s = pred.len().min(gold.len()) as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov = correct * s - dot(&p, &t);
    let denominator = ((s * s - dot(&p, &p)) * (s * s - dot(&t, &t))).sqrt();
    if denominator == 0.0 || denominator.is_nan() {
        0.0
    } else {
        cov / denominator
    }
}

/// Predictions of one task over its validation set.
pub enum Predictions {
    Scores { pred: Vec<f64>, gold: Vec<f64> },
    Classes { pred: Vec<usize>, gold: Vec<usize> },
}

/// Metrics of one task, keyed `<task>/<metric>`, and its headline score, as GLUE reports
/// them:
///
/// | task type | metrics | headline (default) |
/// |---|---|---|
/// | regression (STS-B) | `pearson`, `spearman` | their mean |
/// | classification (RTE, MNLI, …) | `accuracy`, `f1`, `mcc` | `accuracy` |
/// | multiple choice (CommonsenseQA) | `accuracy` | `accuracy` |
///
/// The task's `metric` picks another headline: `mcc` (CoLA), `f1Accuracy` (MRPC, QQP),
/// `f1`, `pearson`, `spearman`.
///
/// `f1` is the F1 of the positive class for two classes (`positiveLabel`, else the second
/// label name, index 1 as sklearn's default `pos_label=1`), macro-averaged over the classes
/// present otherwise.
pub fn task_metrics(
    task: &TaskSpec,
    p: &Predictions,
) -> Result<(BTreeMap<String, f64>, f64), Error> {
    let mut m = BTreeMap::new();
    let key = |k: &str| format!("{}/{k}", task.name);
    let headline = match p {
        Predictions::Scores { pred, gold } => {
            check_lengths(task, pred.len(), gold.len())?;
            let (r, rho) = (pearson(pred, gold), spearman(pred, gold));
            m.insert(key("pearson"), r);
            m.insert(key("spearman"), rho);
            match task.metric {
                Some(TaskMetric::Pearson) => r,
                Some(TaskMetric::Spearman) => rho,
                _ => (r + rho) / 2.0,
            }
        }
        Predictions::Classes { pred, gold } => {
            check_lengths(task, pred.len(), gold.len())?;
            let acc = accuracy(pred, gold);
            m.insert(key("accuracy"), acc);
            if task.task_type == TaskType::Classification {
                let f1 = if task.num_outputs() == 2 {
                    f1_binary(pred, gold, positive_index(task)?)
                } else {
                    f1_macro(pred, gold)
                };
                m.insert(key("f1"), f1);
                m.insert(key("mcc"), mcc(pred, gold));
            }
            // validate() refuses a metric the task type has not; accuracy otherwise.
            let f1 = m.get(&key("f1")).copied().unwrap_or(acc);
            match task.metric {
                Some(TaskMetric::F1) => f1,
                Some(TaskMetric::Mcc) => m.get(&key("mcc")).copied().unwrap_or(acc),
                Some(TaskMetric::F1Accuracy) => (f1 + acc) / 2.0,
                _ => acc,
            }
        }
    };
    Ok((m, headline))
}

fn check_lengths(task: &TaskSpec, pred: usize, gold: usize) -> Result<(), Error> {
    if pred != gold || gold == 0 {
        return Err(Error::Invalid(format!(
            "task {}: {pred} predictions for {gold} labels",
            task.name
        )));
    }
    Ok(())
}

/// The class F1 counts as positive for a two-class task: `positiveLabel` (a label name, or
/// an index when there are no names), else 1.
pub fn positive_index(task: &TaskSpec) -> Result<usize, Error> {
    let Some(label) = &task.positive_label else {
        return Ok(1);
    };
    let found = match &task.label_names {
        Some(names) => names.iter().position(|n| n == label),
        None => label.parse::<usize>().ok().filter(|&i| i < 2),
    };
    found.ok_or_else(|| {
        Error::Invalid(format!(
            "task {}: positiveLabel {label:?} is not one of its labels",
            task.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_and_spearman_match_hand_values() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [2.0, 4.0, 5.0, 4.0, 5.0];
        // scipy.stats.pearsonr: 0.7745966692414834; spearmanr: 0.7378647873726218
        assert!((pearson(&x, &y) - 0.774_596_669_241_483_4).abs() < 1e-12);
        assert!((spearman(&x, &y) - 0.737_864_787_372_621_8).abs() < 1e-12);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        assert!(pearson(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        assert!(spearman(&[1.0, 2.0], &[3.0, 3.0]).is_nan());
        assert!(pearson(&[1.0], &[2.0]).is_nan());
    }

    #[test]
    fn accuracy_and_f1_as_sklearn() {
        let pred = [1, 0, 1, 1, 0, 0];
        let gold = [1, 0, 0, 1, 1, 0];
        assert_eq!(accuracy(&pred, &gold), 4.0 / 6.0);
        // class 1: tp 2, fp 1, fn 1 → 2*2/(4+1+1)
        assert!((f1_binary(&pred, &gold, 1) - 4.0 / 6.0).abs() < 1e-12);
        // class 0 as the positive one: tp 2, fp 1, fn 1 as well here.
        assert!((f1_binary(&pred, &gold, 0) - 4.0 / 6.0).abs() < 1e-12);
        let pred3 = [0, 1, 2, 2];
        let gold3 = [0, 1, 1, 2];
        // class 0: 1; class 1: tp1 fn1 → 2/3; class 2: tp1 fp1 → 2/3
        assert!((f1_macro(&pred3, &gold3) - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        // A fourth class neither predicted nor gold does not dilute the average (sklearn
        // averages over the labels present).
        assert_eq!(
            f1_macro(&pred3, &gold3),
            f1_macro(&[0, 1, 2, 2], &[0, 1, 1, 2])
        );
        assert!((f1_macro(&[0, 0], &[0, 0]) - 1.0).abs() < 1e-12);
        // Positive class never predicted nor present: 0 (zero_division=0).
        assert_eq!(f1_binary(&[0, 0], &[0, 0], 1), 0.0);
    }
}
