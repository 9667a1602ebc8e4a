//! Feedback while training: a progress bar on a terminal, JSON log lines elsewhere (a pod).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Console {
    bar: Option<ProgressBar>,
}

impl Console {
    /// A bar when stderr is a terminal and `enabled`; otherwise nothing is drawn.
    pub fn new(total: u64, start: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta}) {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(start);
            bar
        });
        Self { bar }
    }

    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    pub fn set_position(&self, step: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step);
        }
    }

    pub fn inc(&self, message: impl FnOnce() -> String) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(message());
        }
    }

    /// Runs `f` (which may log) without tearing the bar.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
