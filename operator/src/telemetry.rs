//! Prometheus metrics, served at `/metrics` (OpenMetrics text format).

use std::collections::HashMap;
use std::sync::Mutex;

use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::jiff::Timestamp;
use mtl_crds::{JobPhase, MultiTaskTrainingJobStatus};
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
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// One job: `namespace` and `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub namespace: String,
    pub name: String,
}

/// One job and its phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobPhaseLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Per-job gauges, set from the status each reconcile writes and removed with the job.
struct JobGauges {
    step: Family<JobLabels, FloatGauge>,
    progress: Family<JobLabels, FloatGauge>,
    examples_per_second: Family<JobLabels, FloatGauge>,
    loss: Family<JobLabels, FloatGauge>,
    restarts: Family<JobLabels, FloatGauge>,
    preemptions: Family<JobLabels, FloatGauge>,
    phase: Family<JobPhaseLabels, FloatGauge>,
}

impl JobGauges {
    fn register(registry: &mut Registry) -> Self {
        let g = Self {
            step: Family::default(),
            progress: Family::default(),
            examples_per_second: Family::default(),
            loss: Family::default(),
            restarts: Family::default(),
            preemptions: Family::default(),
            phase: Family::default(),
        };
        for (name, help, family) in [
            (
                "job_step",
                "Optimizer step of the job's latest progress report",
                &g.step,
            ),
            (
                "job_progress_ratio",
                "Share of the job's steps done (0 to 1)",
                &g.progress,
            ),
            (
                "job_examples_per_second",
                "Training examples per second in the latest progress report",
                &g.examples_per_second,
            ),
            (
                "job_loss",
                "Training loss in the latest progress report",
                &g.loss,
            ),
            ("job_restarts", "Failed attempts replaced", &g.restarts),
            (
                "job_preemptions",
                "Attempts lost to the platform",
                &g.preemptions,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
        registry.register(
            "job_phase",
            "1 for the job's current phase",
            g.phase.clone(),
        );
        g
    }
}

fn job_labels(key: &str) -> JobLabels {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    JobLabels {
        namespace: namespace.into(),
        name: name.into(),
    }
}

/// How an attempt can end, as `attempts_ended` labels it.
const ENDINGS: [&str; 4] = ["Succeeded", "Failed", "Preempted", "Suspended"];

/// What one status change says for the histograms.
#[derive(Debug, Default, PartialEq)]
pub struct Transition {
    /// Seconds from the attempt's start to Running, when it just got there.
    pub to_running: Option<f64>,
    /// How the attempt of `old` ended, and after how many seconds (when its start is known).
    pub ended: Option<(&'static str, Option<f64>)>,
}

/// What changed from `old` to `new` at `now`. Pure: tested below.
pub fn transition(
    old: &MultiTaskTrainingJobStatus,
    new: &MultiTaskTrainingJobStatus,
    now: Timestamp,
) -> Transition {
    let since = |t: Option<&str>| {
        crate::status::parse_time(t).map(|t| t.duration_until(now).as_secs_f64().max(0.0))
    };
    let mut out = Transition::default();
    if new.phase == JobPhase::Running && old.phase != JobPhase::Running {
        out.to_running = since(new.attempt_start_time.as_deref());
    }
    if old.attempt > 0 && !old.phase.is_finished() {
        let reason = if new.preemptions > old.preemptions {
            Some("Preempted")
        } else if new.restarts > old.restarts {
            Some("Failed")
        } else if new.phase == JobPhase::Succeeded {
            Some("Succeeded")
        } else if new.phase == JobPhase::Failed {
            Some("Failed")
        } else if new.phase == JobPhase::Suspended && old.phase != JobPhase::Suspended {
            Some("Suspended")
        } else {
            None
        };
        out.ended = reason.map(|r| (r, since(old.attempt_start_time.as_deref())));
    }
    out
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
    pub manifest_reads: Counter,
    /// From an attempt's start (its pods created, or admitted by Kueue) to Running.
    pub time_to_running: Histogram,
    /// From an attempt's start to its end.
    pub attempt_duration: Histogram,
    /// Attempts ended, by how: Succeeded, Failed, Preempted, Suspended.
    pub attempts_ended: Family<ReasonLabels, Counter>,
    job: JobGauges,
    phases: Mutex<HashMap<String, JobPhase>>,
    /// When a reconcile last completed (unix seconds), or the metrics were made.
    last_reconcile: AtomicU64,
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
        let manifest_reads = Counter::default();
        // 1 s to ~4.5 h, and 1 min to ~34 days.
        let time_to_running = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        let attempt_duration = Histogram::new(exponential_buckets(60.0, 2.0, 16));
        let attempts_ended = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "time_to_running_seconds",
            "From an attempt's start (pods created, or admitted by Kueue) to Running",
            time_to_running.clone(),
        );
        registry.register(
            "attempt_duration_seconds",
            "From an attempt's start to its end",
            attempt_duration.clone(),
        );
        registry.register(
            "attempts_ended",
            "Attempts ended, by reason (Succeeded, Failed, Preempted, Suspended)",
            attempts_ended.clone(),
        );
        for reason in ENDINGS {
            let _ = attempts_ended.get_or_create(&ReasonLabels {
                reason: reason.into(),
            });
        }
        let job = JobGauges::register(&mut registry);
        registry.register(
            "progress_reads",
            "Reads of trainers' progress.json",
            progress_reads.clone(),
        );
        registry.register(
            "manifest_reads",
            "Reads of checkpoint manifests",
            manifest_reads.clone(),
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
            manifest_reads,
            time_to_running,
            attempt_duration,
            attempts_ended,
            job,
            phases: Mutex::default(),
            last_reconcile: AtomicU64::new(Timestamp::now().as_second().max(0) as u64),
            registry,
        }
    }

    /// Observes what a status write tells: an attempt that reached Running, or one that ended.
    pub fn observe_transition(
        &self,
        old: &MultiTaskTrainingJobStatus,
        new: &MultiTaskTrainingJobStatus,
        now: Timestamp,
    ) {
        let t = transition(old, new, now);
        if let Some(secs) = t.to_running {
            self.time_to_running.observe(secs);
        }
        if let Some((reason, secs)) = t.ended {
            self.attempts_ended
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
            if let Some(secs) = secs {
                self.attempt_duration.observe(secs);
            }
        }
    }

    /// A reconcile completed (with or without an error) at `now`.
    pub fn reconciled(&self, now: Timestamp) {
        self.last_reconcile
            .store(now.as_second().max(0) as u64, Ordering::Relaxed);
    }

    /// Why the controller looks wedged at `now`, if it does: leading, with live jobs (each
    /// looked at every `--poll-seconds`), and no reconcile completed for `after`.
    pub fn wedged(&self, now: Timestamp, after: std::time::Duration) -> Option<String> {
        if self.leader.get() != 1 {
            return None;
        }
        let live = {
            let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
            phases.values().filter(|p| !p.is_finished()).count()
        };
        let last = self.last_reconcile.load(Ordering::Relaxed);
        let age = (now.as_second().max(0) as u64).saturating_sub(last);
        (live > 0 && age >= after.as_secs())
            .then(|| format!("no reconcile completed for {age}s while {live} jobs are live"))
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

    /// The per-job gauges of `job` (`namespace/name`) from its status.
    pub fn set_job(&self, job: &str, st: &MultiTaskTrainingJobStatus) {
        let labels = job_labels(job);
        let g = &self.job;
        g.restarts
            .get_or_create(&labels)
            .set(f64::from(st.restarts));
        g.preemptions
            .get_or_create(&labels)
            .set(f64::from(st.preemptions));
        if let Some(p) = &st.progress {
            g.step.get_or_create(&labels).set(p.step as f64);
            let ratio = if p.total_steps == 0 {
                0.0
            } else {
                p.step.min(p.total_steps) as f64 / p.total_steps as f64
            };
            g.progress.get_or_create(&labels).set(ratio);
            if let Some(x) = p.examples_per_second {
                g.examples_per_second.get_or_create(&labels).set(x);
            }
            if let Some(x) = p.loss {
                g.loss.get_or_create(&labels).set(x);
            }
        }
        for phase in PHASES {
            let key = JobPhaseLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                phase: phase.as_str().into(),
            };
            if phase == st.phase {
                g.phase.get_or_create(&key).set(1.0);
            } else {
                g.phase.remove(&key);
            }
        }
    }

    /// Forgets every job not in `live` (`namespace/name` keys).
    pub fn forget_jobs_except(&self, live: &std::collections::HashSet<String>) {
        let gone: Vec<String> = {
            let phases = self.phases.lock().unwrap_or_else(|p| p.into_inner());
            phases
                .keys()
                .filter(|k| !live.contains(*k))
                .cloned()
                .collect()
        };
        for job in gone {
            self.forget_job(&job);
        }
    }

    pub fn forget_job(&self, job: &str) {
        self.with_phases(|m| {
            m.remove(job);
        });
        let labels = job_labels(job);
        let g = &self.job;
        for family in [
            &g.step,
            &g.progress,
            &g.examples_per_second,
            &g.loss,
            &g.restarts,
            &g.preemptions,
        ] {
            family.remove(&labels);
        }
        for phase in PHASES {
            g.phase.remove(&JobPhaseLabels {
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                phase: phase.as_str().into(),
            });
        }
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
    fn a_leader_with_live_jobs_and_no_reconcile_is_wedged() {
        let m = Metrics::new();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let after = |s: i64| crate::status::add_seconds(t0, s);
        let limit = std::time::Duration::from_secs(600);
        m.reconciled(t0);
        m.set_job_phase("ns/a", JobPhase::Running);
        assert_eq!(
            m.wedged(after(900), limit),
            None,
            "a standby is never wedged"
        );
        m.leader.set(1);
        assert_eq!(m.wedged(after(599), limit), None);
        assert_eq!(
            m.wedged(after(900), limit).as_deref(),
            Some("no reconcile completed for 900s while 1 jobs are live")
        );
        m.reconciled(after(890));
        assert_eq!(m.wedged(after(900), limit), None);
        // Finished jobs are not looked at again: nothing to wait for.
        m.set_job_phase("ns/a", JobPhase::Succeeded);
        assert_eq!(m.wedged(after(5000), limit), None);
    }

    #[test]
    fn transitions_feed_the_attempt_histograms() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let after = |secs: i64| crate::status::add_seconds(t0, secs);
        let st = |phase: JobPhase, attempt: u32| MultiTaskTrainingJobStatus {
            phase,
            attempt,
            attempt_start_time: Some(crate::status::format_time(t0)),
            ..Default::default()
        };
        // Pending for 90 s, then Running.
        let t = transition(
            &st(JobPhase::Pending, 1),
            &st(JobPhase::Running, 1),
            after(90),
        );
        assert_eq!(t.to_running, Some(90.0));
        assert_eq!(t.ended, None);
        // Ran an hour and was preempted: the next attempt starts.
        let mut next = st(JobPhase::Restarting, 2);
        next.preemptions = 1;
        let t = transition(&st(JobPhase::Running, 1), &next, after(3600));
        assert_eq!(t.ended, Some(("Preempted", Some(3600.0))));
        let mut next = st(JobPhase::Restarting, 2);
        next.restarts = 1;
        assert_eq!(
            transition(&st(JobPhase::Running, 1), &next, after(60)).ended,
            Some(("Failed", Some(60.0)))
        );
        for (phase, reason) in [
            (JobPhase::Succeeded, "Succeeded"),
            (JobPhase::Failed, "Failed"),
            (JobPhase::Suspended, "Suspended"),
        ] {
            let t = transition(&st(JobPhase::Running, 1), &st(phase, 1), after(10));
            assert_eq!(t.ended, Some((reason, Some(10.0))), "{phase:?}");
        }
        // A quiet look, or a job refused before any attempt, ends nothing.
        let running = st(JobPhase::Running, 1);
        assert_eq!(
            transition(&running, &running, after(5)),
            Transition::default()
        );
        assert_eq!(
            transition(
                &st(JobPhase::Pending, 0),
                &st(JobPhase::Failed, 0),
                after(5)
            )
            .ended,
            None
        );
        let now = after(10);
        let m = Metrics::new();
        m.observe_transition(&st(JobPhase::Running, 1), &st(JobPhase::Succeeded, 1), now);
        let text = m.encode();
        assert!(
            text.contains("mtl_operator_attempts_ended_total{reason=\"Succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mtl_operator_attempt_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("mtl_operator_time_to_running_seconds_count 0"),
            "{text}"
        );
    }

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

    #[test]
    fn per_job_gauges_follow_status_and_go_with_the_job() {
        let m = Metrics::new();
        let mut st = MultiTaskTrainingJobStatus {
            phase: JobPhase::Running,
            restarts: 1,
            preemptions: 2,
            progress: Some(mtl_crds::JobProgress {
                step: 30,
                total_steps: 120,
                percent: "25%".into(),
                examples_per_second: Some(12.5),
                loss: Some(0.5),
                ..Default::default()
            }),
            ..Default::default()
        };
        m.set_job("ns/a", &st);
        let text = m.encode();
        for want in [
            "mtl_operator_job_step{namespace=\"ns\",name=\"a\"} 30.0",
            "mtl_operator_job_progress_ratio{namespace=\"ns\",name=\"a\"} 0.25",
            "mtl_operator_job_examples_per_second{namespace=\"ns\",name=\"a\"} 12.5",
            "mtl_operator_job_loss{namespace=\"ns\",name=\"a\"} 0.5",
            "mtl_operator_job_restarts{namespace=\"ns\",name=\"a\"} 1.0",
            "mtl_operator_job_preemptions{namespace=\"ns\",name=\"a\"} 2.0",
            "mtl_operator_job_phase{namespace=\"ns\",name=\"a\",phase=\"Running\"} 1.0",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
        st.phase = JobPhase::Succeeded;
        m.set_job("ns/a", &st);
        let text = m.encode();
        assert!(!text.contains("phase=\"Running\"} 1"), "{text}");
        assert!(text.contains("phase=\"Succeeded\"} 1"), "{text}");
        m.forget_job("ns/a");
        let text = m.encode();
        assert!(!text.contains("name=\"a\""), "{text}");
    }
}
