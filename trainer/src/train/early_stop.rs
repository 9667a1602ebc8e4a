//! Early stopping's count: evaluations of the watched metric since it last improved.

use mtl_crds::{EarlyStoppingSpec, MetricMode};
use serde::{Deserialize, Serialize};

/// Kept in `trainer_state.json`, so a resumed run goes on counting where it was.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EarlyStopState {
    /// The best value so far (the baseline an improvement must beat by `minDelta`).
    pub best: Option<f64>,
    /// Evaluations in a row that did not improve on `best`.
    pub evals_without_improvement: u32,
}

impl EarlyStopState {
    /// Counts one evaluation's `value` of `metric`: `Some(why)` when training should stop.
    /// An improvement (better than the best by more than `minDelta`, or the first value)
    /// resets the count and becomes the best; a NaN never improves.
    pub fn observe(
        &mut self,
        metric: &str,
        value: f64,
        mode: MetricMode,
        rule: &EarlyStoppingSpec,
    ) -> Option<String> {
        let improved = !value.is_nan()
            && self
                .best
                .is_none_or(|best| mode.better(value, best, rule.min_delta));
        if improved {
            self.best = Some(value);
            self.evals_without_improvement = 0;
            return None;
        }
        self.evals_without_improvement += 1;
        (self.evals_without_improvement >= rule.patience).then(|| {
            format!(
                "{metric} did not improve on its best {} by more than {} for {} evaluations",
                self.best.map_or("(none)".into(), |b| b.to_string()),
                rule.min_delta,
                self.evals_without_improvement
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[f64], mode: MetricMode, patience: u32, min_delta: f64) -> Option<usize> {
        let rule = EarlyStoppingSpec {
            patience,
            min_delta,
        };
        let mut s = EarlyStopState::default();
        values
            .iter()
            .position(|&v| s.observe("mean", v, mode, &rule).is_some())
    }

    #[test]
    fn stops_after_patience_evaluations_without_improvement() {
        use MetricMode::*;
        // Index of the evaluation that stops training.
        assert_eq!(run(&[0.5, 0.5, 0.5], Max, 2, 0.0), Some(2));
        assert_eq!(run(&[0.5, 0.6, 0.6, 0.7, 0.7], Max, 2, 0.0), None);
        assert_eq!(run(&[0.5, 0.6, 0.6, 0.7, 0.7, 0.65], Max, 2, 0.0), Some(5));
        // Creeping by less than minDelta is no improvement, and does not move the baseline.
        assert_eq!(run(&[0.5, 0.504, 0.508, 0.509], Max, 3, 0.01), Some(3));
        assert_eq!(run(&[0.5, 0.505, 0.52], Max, 2, 0.01), None);
        // Smaller is better for a loss.
        assert_eq!(run(&[1.0, 0.9, 0.95, 0.92], Min, 2, 0.0), Some(3));
        assert_eq!(run(&[1.0, f64::NAN, f64::NAN], Min, 2, 0.0), Some(2));
        assert_eq!(
            run(&[0.1], Max, 1, 0.0),
            None,
            "the first value is the baseline"
        );
    }
}
