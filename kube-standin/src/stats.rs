//! Request counters per (verb, resource) and a bounded request log.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// One served API request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    /// Sequence number since start (not reset by [`Stats::reset`]).
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// `pods`, `pods/status`, `multitasktrainingjobs.multitask.dev/status`, ...
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    /// The client's `User-Agent` (empty when it sent none): whose request it was.
    pub user_agent: String,
}

/// One counter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VerbCount {
    pub verb: String,
    pub resource: String,
    pub count: u64,
}

/// A copy of the counters and the log.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StatsSnapshot {
    pub total: u64,
    pub counts: Vec<VerbCount>,
    pub watch_events_sent: u64,
    pub active_watches: u64,
    pub requests: Vec<RequestRecord>,
}

impl StatsSnapshot {
    /// Requests of `verb` on `resource`: `resource` is either the full name
    /// (`multitasktrainingjobs.multitask.dev/status`) or the bare plural (`multitasktrainingjobs`,
    /// `pods/status`), which sums over groups.
    pub fn count(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|c| c.verb == verb && resource_matches(&c.resource, resource))
            .map(|c| c.count)
            .sum()
    }

    /// Requests of any verb on `resource` (same matching as [`count`](Self::count)).
    pub fn count_resource(&self, resource: &str) -> u64 {
        self.counts
            .iter()
            .filter(|c| resource_matches(&c.resource, resource))
            .map(|c| c.count)
            .sum()
    }
}

fn resource_matches(full: &str, wanted: &str) -> bool {
    if full == wanted {
        return true;
    }
    let (full_res, full_sub) = full.split_once('/').unwrap_or((full, ""));
    let (want_res, want_sub) = wanted.split_once('/').unwrap_or((wanted, ""));
    full_sub == want_sub && full_res.split('.').next() == Some(want_res)
}

#[derive(Default)]
struct Inner {
    seq: u64,
    total: u64,
    counts: BTreeMap<(String, String), u64>,
    log: VecDeque<RequestRecord>,
    watch_events_sent: u64,
    active_watches: u64,
}

/// Shared counters, updated by the HTTP server.
pub struct Stats {
    inner: Mutex<Inner>,
    log_cap: usize,
}

impl Stats {
    pub(crate) fn new(log_cap: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            log_cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn record(&self, mut r: RequestRecord) {
        let mut inner = self.lock();
        inner.seq += 1;
        inner.total += 1;
        r.seq = inner.seq;
        *inner
            .counts
            .entry((r.verb.clone(), r.resource.clone()))
            .or_default() += 1;
        if self.log_cap > 0 {
            if inner.log.len() >= self.log_cap {
                inner.log.pop_front();
            }
            inner.log.push_back(r);
        }
    }

    pub(crate) fn watch_event_sent(&self) {
        self.lock().watch_events_sent += 1;
    }

    pub(crate) fn watch_opened(&self) {
        self.lock().active_watches += 1;
    }

    pub(crate) fn watch_closed(&self) {
        let mut inner = self.lock();
        inner.active_watches = inner.active_watches.saturating_sub(1);
    }

    /// A copy of the counters, with the request log when `with_log`.
    pub fn snapshot(&self, with_log: bool) -> StatsSnapshot {
        let inner = self.lock();
        StatsSnapshot {
            total: inner.total,
            counts: inner
                .counts
                .iter()
                .map(|((verb, resource), count)| VerbCount {
                    verb: verb.clone(),
                    resource: resource.clone(),
                    count: *count,
                })
                .collect(),
            watch_events_sent: inner.watch_events_sent,
            active_watches: inner.active_watches,
            requests: if with_log {
                inner.log.iter().cloned().collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Zeroes the counters and clears the log (open watches stay counted).
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.total = 0;
        inner.counts.clear();
        inner.log.clear();
        inner.watch_events_sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_matching() {
        assert!(resource_matches("pods", "pods"));
        assert!(resource_matches(
            "multitasktrainingjobs.multitask.dev",
            "multitasktrainingjobs"
        ));
        assert!(resource_matches(
            "multitasktrainingjobs.multitask.dev/status",
            "multitasktrainingjobs/status"
        ));
        assert!(!resource_matches(
            "multitasktrainingjobs.multitask.dev/status",
            "multitasktrainingjobs"
        ));
        assert!(resource_matches("events.events.k8s.io", "events"));
    }
}
