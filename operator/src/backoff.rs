//! The operator's one exponential backoff: the wait between a failed attempt and the next
//! ([`crate::decide`], as Kubernetes Job's) and between retries of a Vertex AI call
//! ([`crate::backend::vertex::RetryPolicy`], which adds a bound on the tries and jitter).

use std::time::Duration;

/// `base` doubling with every failure, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// Kubernetes Job's: 10 s, doubling, at most 6 minutes.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(360),
        }
    }
}

impl Backoff {
    /// The wait after the `failures`-th failure (1 for the first): `base` × 2^(failures-1),
    /// capped at `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}
