//! What the workspace's tests share, so that each piece exists once: a free TCP port
//! ([`free_port`]), polling until a condition holds ([`eventually`]), the rows of a `kubectl get`
//! table ([`kubectl::rows`]), a real `gcp-storage-emulator` process ([`gcs::Emulator`], feature
//! `gcs`), and the import-circle check `make lint` runs ([`modgraph`]).
//!
//! A dev-dependency only: nothing here ships in a binary. Setup failures panic with a message
//! that says what to install, as test support may.

#[cfg(feature = "gcs")]
pub mod gcs;
pub mod kubectl;
pub mod modgraph;

use std::future::Future;
use std::time::Duration;

/// A TCP port on 127.0.0.1 that nothing listens on now. Someone else can take it before the
/// caller binds it: a caller that can retry should.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// How long [`eventually`] waits, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    pub deadline: Duration,
    pub every: Duration,
}

impl Default for Patience {
    /// 30 s, looking every 50 ms: long enough for a loaded 2-core machine, short enough that a
    /// test that cannot pass fails while its logs still say why.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(30),
            every: Duration::from_millis(50),
        }
    }
}

/// Polls `check` until it gives `Some`, with the default [`Patience`]; past the deadline the
/// test fails naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_with(what, Patience::default(), String::new, check).await
}

/// Polls `check` until it gives `Some`; past `patience.deadline` the test fails naming `what`,
/// followed by `diagnostics()` (operator logs, pod logs: whatever says why).
pub async fn eventually_with<T, F, Fut>(
    what: &str,
    patience: Patience,
    diagnostics: impl FnOnce() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience.deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {:?} waiting for {what}\n{}",
                patience.deadline,
                diagnostics()
            );
        }
        tokio::time::sleep(patience.every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)).expect("bindable");
    }

    #[tokio::test(start_paused = true)]
    async fn eventually_returns_the_first_value() {
        let mut calls = 0;
        let got = eventually("the third call", || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "waiting for never\nthe diagnostics")]
    async fn eventually_fails_with_what_and_the_diagnostics() {
        let patience = Patience {
            deadline: Duration::from_secs(1),
            every: Duration::from_millis(100),
        };
        eventually_with(
            "never",
            patience,
            || "the diagnostics".into(),
            || async { None::<()> },
        )
        .await;
    }
}
