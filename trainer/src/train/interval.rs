//! Loss, gradient norm and throughput over one logging interval.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::state::LogEntry;

use super::step::StepOutput;

pub(super) struct Interval {
    losses: BTreeMap<String, (f64, usize)>,
    grad_norms: (f64, usize),
    skipped: u64,
    examples: usize,
    tokens: usize,
    steps: u64,
    allreduce_s: f64,
    reduced_bytes: usize,
    since: Instant,
}

/// Throughput over an interval.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// Examples trained in the interval (every rank's), and its wall time.
    pub examples: usize,
    pub seconds: f64,
    pub examples_per_s: f64,
    pub tokens_per_s: f64,
    /// Mean seconds per step in the allreduces (0 on one process).
    pub allreduce_s: f64,
    /// Share of the interval's wall time spent in the allreduces.
    pub allreduce_share: f64,
    /// Mean bytes of gradients allreduced per step.
    pub reduced_bytes: f64,
}

impl Interval {
    pub fn new() -> Self {
        Self {
            losses: BTreeMap::new(),
            grad_norms: (0.0, 0),
            skipped: 0,
            examples: 0,
            tokens: 0,
            steps: 0,
            allreduce_s: 0.0,
            reduced_bytes: 0,
            since: Instant::now(),
        }
    }

    /// Adds one step; `task_name` names a task by its index.
    pub fn add(&mut self, out: &StepOutput, task_name: impl Fn(usize) -> String) {
        for m in &out.micro {
            let e = self.losses.entry(task_name(m.task)).or_default();
            e.0 += m.loss;
            e.1 += 1;
            self.examples += m.examples;
            self.tokens += m.real_tokens;
        }
        self.steps += 1;
        self.allreduce_s += out.allreduce_s;
        self.reduced_bytes += out.reduced_bytes;
        if out.skipped {
            self.skipped += 1;
        } else {
            self.grad_norms.0 += out.grad_norm;
            self.grad_norms.1 += 1;
        }
    }

    pub fn mean_loss(&self) -> f64 {
        let (s, n) = self
            .losses
            .values()
            .fold((0.0, 0), |(s, n), (ls, ln)| (s + ls, n + ln));
        if n == 0 { 0.0 } else { s / n as f64 }
    }

    /// The interval's log entry and throughput; starts the next interval.
    pub fn flush(&mut self, step: u64, epoch: f64, lr: f64) -> (LogEntry, Rates) {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let steps = self.steps.max(1) as f64;
        let rates = Rates {
            examples: self.examples,
            seconds: secs,
            examples_per_s: self.examples as f64 / secs,
            tokens_per_s: self.tokens as f64 / secs,
            allreduce_s: self.allreduce_s / steps,
            allreduce_share: self.allreduce_s / secs,
            reduced_bytes: self.reduced_bytes as f64 / steps,
        };
        let (norm_sum, norms) = self.grad_norms;
        let entry = LogEntry {
            step,
            epoch,
            loss: self.mean_loss(),
            learning_rate: lr,
            grad_norm: (norms > 0).then(|| norm_sum / norms as f64),
            skipped_steps: self.skipped,
            task_losses: self
                .losses
                .iter()
                .map(|(k, (s, n))| (k.clone(), s / *n as f64))
                .collect(),
        };
        *self = Self::new();
        (entry, rates)
    }
}
