//! Prometheus metrics, served at `/metrics` (OpenMetrics text format).

use std::collections::HashMap;
use std::sync::Mutex;

use mtl_crds::JobPhase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::ErrorKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

const PHASES: [JobPhase; 6] = [
    JobPhase::Pending,
    JobPhase::Running,
    JobPhase::Restarting,
    JobPhase::Suspended,
    JobPhase::Succeeded,
    JobPhase::Failed,
];

/// The operator's metrics, registered under the prefix `mtl_operator`.
pub struct Metrics {
    pub reconciles: Counter,
    pub errors: Family<ErrorLabels, Counter>,
    pub jobs: Family<PhaseLabels, Gauge>,
    pub leader: Gauge,
    pub reconcile_duration: Histogram,
    /// Reads of trainers' progress objects.
    pub progress_reads: Counter,
    phases: Mutex<HashMap<String, JobPhase>>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mtl_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let jobs = Family::<PhaseLabels, Gauge>::default();
        let leader = Gauge::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let progress_reads = Counter::default();
        registry.register(
            "progress_reads",
            "Reads of trainers' progress.json",
            progress_reads.clone(),
        );
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            errors.clone(),
        );
        registry.register("jobs", "MultiTaskTrainingJobs by phase", jobs.clone());
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        for kind in [
            ErrorKind::Conflict,
            ErrorKind::Transient,
            ErrorKind::BadSpec,
            ErrorKind::Internal,
        ] {
            let _ = errors.get_or_create(&ErrorLabels {
                kind: kind.as_str().into(),
            });
        }
        for phase in PHASES {
            let _ = jobs.get_or_create(&PhaseLabels {
                phase: phase.as_str().into(),
            });
        }
        Self {
            reconciles,
            errors,
            jobs,
            leader,
            reconcile_duration,
            progress_reads,
            phases: Mutex::default(),
            registry,
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.as_str().into(),
            })
            .inc();
    }

    fn with_phases(&self, f: impl FnOnce(&mut HashMap<String, JobPhase>)) {
        let mut phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut phases);
        for phase in PHASES {
            let n = phases.values().filter(|p| **p == phase).count();
            self.jobs
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().into(),
                })
                .set(n as i64);
        }
    }

    pub fn set_job_phase(&self, job: &str, phase: JobPhase) {
        self.with_phases(|m| {
            m.insert(job.to_string(), phase);
        });
    }

    pub fn forget_job(&self, job: &str) {
        self.with_phases(|m| {
            m.remove(job);
        });
    }

    /// The registry in OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_reconciles_errors_and_phases() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.error(ErrorKind::Conflict);
        m.set_job_phase("ns/a", JobPhase::Running);
        m.set_job_phase("ns/b", JobPhase::Running);
        m.set_job_phase("ns/b", JobPhase::Succeeded);
        let text = m.encode();
        assert!(text.contains("mtl_operator_reconciles_total 1"), "{text}");
        assert!(
            text.contains("mtl_operator_reconcile_errors_total{kind=\"conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mtl_operator_reconcile_errors_total{kind=\"bad_spec\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mtl_operator_jobs{phase=\"Running\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mtl_operator_jobs{phase=\"Succeeded\"} 1"),
            "{text}"
        );
        m.forget_job("ns/a");
        assert!(
            m.encode()
                .contains("mtl_operator_jobs{phase=\"Running\"} 0")
        );
    }
}
