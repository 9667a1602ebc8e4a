//! How remote calls are retried: exponential backoff with jitter, bounded in attempts and time.

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// An exponential backoff: `base`, doubling with every failure, at most `max`. The workspace's
/// one backoff: storage's retries ([`RetryPolicy`]), the operator's Vertex AI calls and the
/// wait between a job's failed attempts (as Kubernetes Job's) all use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        self.base.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// [`Self::delay`] with up to 1/`share` of it taken off at random, so that many clients
    /// failing together do not retry in step.
    pub fn jittered(&self, failures: u32, share: u32) -> Duration {
        let full = self.delay(failures);
        let most = u64::try_from((full / share.max(1)).as_nanos()).unwrap_or(u64::MAX);
        let off = if most == 0 {
            0
        } else {
            random_u64() % (most + 1)
        };
        full - Duration::from_nanos(off)
    }
}

/// Retry policy for transient failures (HTTP 408, 429, 5xx, refused or reset connections,
/// timeouts).
///
/// The bounds apply to one run of consecutive failures: a call that makes progress (a chunk of
/// a resumable upload or of a download lands) starts counting afresh, so a long transfer over a
/// flaky network is not cut off only because it is long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first one included (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry; it doubles with each further failure.
    pub initial_backoff: Duration,
    /// Longest single wait.
    pub max_backoff: Duration,
    /// No retry starts later than this after the first failure of the run.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(32),
            max_elapsed: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait after the `failures`-th consecutive failure (1-based): `initial * 2^(n-1)`, capped
    /// at `max_backoff`, then jittered down by up to half so that many clients do not retry in
    /// step.
    pub fn delay(&self, failures: u32) -> Duration {
        Backoff {
            base: self.initial_backoff,
            max: self.max_backoff,
        }
        .jittered(failures, 2)
    }
}

/// A random number without a random-number crate: std seeds every `RandomState` afresh.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.map(|d| d.as_nanos()).unwrap_or_default());
    h.finish()
}

/// Counts one run of consecutive failures against a [`RetryPolicy`].
pub(crate) struct Attempts<'a> {
    policy: &'a RetryPolicy,
    failures: u32,
    since: Option<Instant>,
}

impl<'a> Attempts<'a> {
    pub(crate) fn new(policy: &'a RetryPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            since: None,
        }
    }

    /// Progress was made: the next failure starts a new run.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
        self.since = None;
    }

    /// Records a failure. Waits and returns `Ok` when another try is allowed; otherwise returns
    /// the message to give up with (it names the attempts made and `cause`).
    pub(crate) async fn backoff(&mut self, what: &str, cause: &str) -> Result<(), String> {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.failures += 1;
        let give_up = |why: &str| {
            format!(
                "{what} failed after {} attempt{} over {:.1?} ({why}): {cause}",
                self.failures,
                if self.failures == 1 { "" } else { "s" },
                since.elapsed(),
            )
        };
        if self.failures >= self.policy.max_attempts.max(1) {
            return Err(give_up("retries exhausted"));
        }
        let delay = self.policy.delay(self.failures);
        if since.elapsed() + delay > self.policy.max_elapsed {
            return Err(give_up("retry time exhausted"));
        }
        tracing::warn!(
            what,
            %cause,
            attempt = self.failures,
            delay_ms = delay.as_millis() as u64,
            "transient storage failure, retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_takes_off_at_most_its_share() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let ms: Vec<u128> = [1, 2, 3, 4, 5, 40, u32::MAX]
            .iter()
            .map(|&n| b.delay(n).as_millis())
            .collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let d = b.jittered(3, 4);
            assert!(
                d >= Duration::from_millis(300) && d <= Duration::from_millis(400),
                "{d:?}"
            );
            seen.insert(d);
        }
        assert!(seen.len() > 1, "jitter varies");
    }

    #[test]
    fn delay_doubles_is_capped_and_jittered() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_elapsed: Duration::from_secs(10),
        };
        for _ in 0..100 {
            let d1 = p.delay(1);
            assert!(d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d20 = p.delay(20);
            assert!(d20 >= Duration::from_millis(500) && d20 <= Duration::from_millis(1000));
        }
        assert!(p.delay(u32::MAX) <= Duration::from_millis(1000));
    }

    #[tokio::test]
    async fn attempts_stop_at_the_bound_and_reset_on_progress() {
        let p = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            max_elapsed: Duration::from_secs(10),
        };
        let mut a = Attempts::new(&p);
        assert!(a.backoff("upload", "reset").await.is_ok());
        assert!(a.backoff("upload", "reset").await.is_ok());
        let msg = a.backoff("upload", "connection reset").await.unwrap_err();
        assert!(
            msg.contains("3 attempts") && msg.contains("connection reset"),
            "{msg}"
        );
        a.reset();
        assert!(a.backoff("upload", "reset").await.is_ok());
    }

    #[tokio::test]
    async fn attempts_stop_when_time_runs_out() {
        let p = RetryPolicy {
            max_attempts: 100,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_millis(10),
        };
        let mut a = Attempts::new(&p);
        let msg = a.backoff("read", "503").await.unwrap_err();
        assert!(msg.contains("time exhausted"), "{msg}");
    }
}
