//! `<checkpoints.uri>/progress.json` from rank 0: where the run stands, overwritten as one
//! object after the attempt's first step, every `checkpoints.progressEverySeconds` and at the
//! end. For readers that cannot wait for a checkpoint (the operator's `.status.progress`, a
//! person with `gsutil cat`); not part of the checkpoint protocol, so a failed write is a
//! warning.

use std::time::{Duration, Instant};

use mtl_storage::Progress;

use super::interval::Rates;
use crate::state::TrainerState;

pub(super) struct Live {
    base: String,
    every: Duration,
    written: Option<Instant>,
    /// When this attempt's first step started, and the step it started from (for the ETA).
    started: Option<(Instant, u64)>,
    rates: Option<Rates>,
    attempt: Option<u32>,
}

impl Live {
    pub fn new(base: &str, every_secs: u64) -> Self {
        Self {
            base: base.to_string(),
            every: Duration::from_secs(every_secs.max(1)),
            written: None,
            started: None,
            rates: None,
            attempt: std::env::var(mtl_crds::contract::ENV_ATTEMPT)
                .ok()
                .and_then(|a| a.parse().ok()),
        }
    }

    pub fn uri(&self) -> String {
        mtl_storage::join(&self.base, mtl_storage::PROGRESS_NAME)
    }

    /// Marks where this attempt's training starts (its ETA counts from here).
    pub fn start(&mut self, step: u64) {
        self.started = Some((Instant::now(), step));
    }

    /// The latest logging window's throughput.
    pub fn rates(&mut self, rates: Rates) {
        self.rates = Some(rates);
    }

    /// Whether this attempt has trained a step (at `step` now).
    pub fn stepped(&self, step: u64) -> bool {
        self.started.is_some_and(|(_, from)| step > from)
    }

    pub fn due(&self) -> bool {
        self.written.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// The snapshot of `state` now.
    pub fn snapshot(&self, state: &TrainerState) -> Progress {
        let last = state.log_history.last();
        let eta_seconds = self.started.and_then(|(t, from)| {
            let done = state.global_step.saturating_sub(from);
            (done > 0).then(|| {
                let per_step = t.elapsed().as_secs_f64() / done as f64;
                state.total_steps.saturating_sub(state.global_step) as f64 * per_step
            })
        });
        Progress {
            step: state.global_step,
            total_steps: state.total_steps,
            epoch: state.epoch,
            loss: last.map(|e| e.loss),
            task_losses: last.map(|e| e.task_losses.clone()).unwrap_or_default(),
            learning_rate: state.learning_rate,
            examples_per_second: self.rates.map_or(0.0, |r| r.examples_per_s),
            tokens_per_second: self.rates.map_or(0.0, |r| r.tokens_per_s),
            eta_seconds,
            eval: state.metrics.clone(),
            updated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            attempt: self.attempt,
        }
    }

    /// Marks a write as done (whether it worked or not: the next is due an interval later).
    pub fn written(&mut self) {
        self.written = Some(Instant::now());
    }
}
