//! Evaluation metrics: Pearson and Spearman correlation (STS-B), accuracy and F1
//! (classification), accuracy (multiple choice).

use std::collections::BTreeMap;

use mtl_crds::TaskType;

pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
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
        return 0.0;
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

/// F1 of class 1 for two classes; macro-averaged F1 for more.
pub fn f1(pred: &[usize], gold: &[usize], classes: usize) -> f64 {
    let f1_of = |c: usize| {
        let tp = pred
            .iter()
            .zip(gold)
            .filter(|&(&p, &g)| p == c && g == c)
            .count() as f64;
        let fp = pred
            .iter()
            .zip(gold)
            .filter(|&(&p, &g)| p == c && g != c)
            .count() as f64;
        let fneg = pred
            .iter()
            .zip(gold)
            .filter(|&(&p, &g)| p != c && g == c)
            .count() as f64;
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        }
    };
    if classes == 2 {
        f1_of(1)
    } else {
        (0..classes).map(f1_of).sum::<f64>() / classes.max(1) as f64
    }
}

/// Predictions of one task over its validation set.
pub enum Predictions {
    Scores {
        pred: Vec<f64>,
        gold: Vec<f64>,
    },
    Classes {
        pred: Vec<usize>,
        gold: Vec<usize>,
        classes: usize,
    },
}

/// Metrics of one task, keyed `<task>/<metric>`, plus its headline score.
pub fn task_metrics(
    task: &str,
    task_type: TaskType,
    p: &Predictions,
) -> (BTreeMap<String, f64>, f64) {
    let mut m = BTreeMap::new();
    let key = |k: &str| format!("{task}/{k}");
    let headline = match p {
        Predictions::Scores { pred, gold } => {
            let (r, rho) = (pearson(pred, gold), spearman(pred, gold));
            m.insert(key("pearson"), r);
            m.insert(key("spearman"), rho);
            (r + rho) / 2.0
        }
        Predictions::Classes {
            pred,
            gold,
            classes,
        } => {
            let acc = accuracy(pred, gold);
            m.insert(key("accuracy"), acc);
            if task_type == TaskType::Classification {
                m.insert(key("f1"), f1(pred, gold, *classes));
            }
            acc
        }
    };
    (m, headline)
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
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn accuracy_and_f1() {
        let pred = [1, 0, 1, 1, 0, 0];
        let gold = [1, 0, 0, 1, 1, 0];
        assert_eq!(accuracy(&pred, &gold), 4.0 / 6.0);
        // class 1: tp 2, fp 1, fn 1 → 2*2/(4+1+1)
        assert!((f1(&pred, &gold, 2) - 4.0 / 6.0).abs() < 1e-12);
        let pred3 = [0, 1, 2, 2];
        let gold3 = [0, 1, 1, 2];
        // class 0: 1; class 1: tp1 fn1 → 2/3; class 2: tp1 fp1 → 2/3
        assert!((f1(&pred3, &gold3, 3) - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }
}
