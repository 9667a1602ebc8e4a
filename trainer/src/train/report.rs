//! What a run tells as it goes, on rank 0 (or the only process): log lines and the progress
//! bar, TensorBoard summaries, `progress.json` and, in a Vertex AI tuning trial, hypertune
//! reports. None of it is part of the checkpoint protocol: a failed write is a warning, and
//! the next one retries.

use std::collections::BTreeMap;

use mtl_crds::MultiTaskTrainingJobSpec;
use tracing::{info, warn};

use super::interval::Interval;
use super::live::Live;
use super::options::RunOptions;
use super::step::StepOutput;
use super::summaries::{self, Summaries};
use crate::console::Console;
use crate::io::Storage;
use crate::state::TrainerState;
use crate::vertex::Hypertune;

pub(super) struct Report {
    /// Loss, gradient norm and throughput since the last log line.
    interval: Interval,
    /// The progress bar (a terminal) and the logging around it.
    pub bar: Console,
    /// TensorBoard event file (rank 0, once a step is logged).
    summaries: Option<Summaries>,
    /// `progress.json` (rank 0).
    live: Option<Live>,
    /// Hypertune reports, in a Vertex AI tuning trial (rank 0).
    hypertune: Option<Hypertune>,
}

impl Report {
    /// The reports of a run at `step` of `total`; `main`: rank 0 (or the only process), the
    /// one that reports.
    pub fn new(
        spec: &MultiTaskTrainingJobSpec,
        opts: &RunOptions,
        step: u64,
        total: u64,
        main: bool,
    ) -> Self {
        let bar = Console::new(total, 0, opts.progress && main);
        bar.set_position(step);
        let mut report = Self {
            interval: Interval::new(),
            bar,
            summaries: None,
            live: None,
            hypertune: None,
        };
        if main {
            report.live = Some(Live::new(
                &spec.checkpoints.uri,
                spec.checkpoints.progress_every_seconds,
            ));
            report.hypertune = opts.vertex.hypertune(spec);
            if let Some(h) = &report.hypertune {
                info!(file = %h.path.display(), tag = %h.tag, metric = %h.metric, "hyperparameter-tuning trial: reporting each evaluation");
            }
        }
        report
    }

    /// Marks where this attempt's training starts (the ETA of `progress.json` counts from
    /// here).
    pub fn start(&mut self, step: u64) {
        if let Some(live) = &mut self.live {
            live.start(step);
        }
    }

    /// Counts one step into the interval; `task_name` names a task by its index.
    pub fn record(&mut self, out: &StepOutput, task_name: impl Fn(usize) -> String) {
        self.interval.add(out, task_name);
        let (loss, lr) = (self.interval.mean_loss(), out.lr);
        self.bar.inc(|| format!("loss {loss:.4} lr {lr:.2e}"));
    }

    /// Logs the interval that ends at `state`'s step: a log line, a TensorBoard summary, the
    /// throughput for `progress.json`, and an entry of `state.log_history`.
    pub fn log(&mut self, spec: &MultiTaskTrainingJobSpec, state: &mut TrainerState) {
        let (entry, rates) =
            self.interval
                .flush(state.global_step, state.epoch, state.learning_rate);
        let task_losses = serde_json::to_string(&entry.task_losses).unwrap_or_default();
        self.bar.suspend(|| {
            info!(
                step = entry.step,
                epoch = entry.epoch,
                loss = entry.loss,
                learning_rate = entry.learning_rate,
                grad_norm = entry.grad_norm,
                skipped_steps = entry.skipped_steps,
                task_losses = %task_losses,
                examples = rates.examples,
                interval_s = rates.seconds,
                examples_per_s = rates.examples_per_s,
                tokens_per_s = rates.tokens_per_s,
                allreduce_s = rates.allreduce_s,
                allreduce_share = rates.allreduce_share,
                reduced_bytes = rates.reduced_bytes,
                "train"
            )
        });
        // The event file starts with the first step logged, so a run stopped before its
        // first step writes nothing.
        let s = self.summaries.get_or_insert_with(|| {
            let s = Summaries::new(spec, entry.step);
            let logdir = summaries::log_dir(spec);
            info!(uri = s.uri(), open = %format!("tensorboard --logdir {logdir}"), "TensorBoard summaries");
            s
        });
        s.train(&entry, &rates);
        if let Some(live) = &mut self.live {
            live.rates(rates);
        }
        state.log_history.push(entry);
    }

    /// Reports the evaluation at `step`: a log line, a TensorBoard summary, and a tuning
    /// trial's report.
    pub fn eval(&mut self, step: u64, metrics: &BTreeMap<String, f64>) {
        if let Some(s) = &mut self.summaries {
            s.eval(step, metrics);
        }
        let shown = serde_json::to_string(metrics).unwrap_or_default();
        self.bar.suspend(|| info!(step, metrics = %shown, "eval"));
        self.hypertune(step, metrics);
    }

    /// A tuning trial's report of the evaluation just made.
    fn hypertune(&mut self, step: u64, metrics: &BTreeMap<String, f64>) {
        let Some(h) = &mut self.hypertune else { return };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match h.report(metrics, step, "", now) {
            Ok(true) => {}
            Ok(false) => {
                warn!(metric = %h.metric, "the evaluation did not report the tuned metric")
            }
            Err(e) => warn!(error = %e, "could not write the hypertune report"),
        }
    }

    /// Stores the TensorBoard file: when due (`now` false) or now.
    pub fn flush_summaries(&mut self, store: &Storage, now: bool) {
        let Some(s) = &mut self.summaries else { return };
        let written = if now {
            s.flush(store)
        } else {
            s.flush_if_due(store)
        };
        if let Err(e) = written {
            warn!(uri = s.uri(), error = %e, "could not write the TensorBoard summaries");
        }
    }

    /// Overwrites `progress.json` under `base` with `state`: when due (`now` false) or now.
    pub fn progress(&mut self, store: &Storage, base: &str, state: &TrainerState, now: bool) {
        let Some(live) = &mut self.live else { return };
        // Nothing before this attempt's first step: a run stopped before it writes nothing.
        if !live.stepped(state.global_step) || (!now && !live.due()) {
            return;
        }
        let snapshot = live.snapshot(state);
        live.written();
        if let Err(e) = store.block_on(snapshot.store(&store.storage, base)) {
            warn!(uri = %live.uri(), error = %e, "could not write the progress object");
        }
    }
}
