//! Where a job's phase is decided: a pure function from what was observed (spec, status, the
//! current attempt, the checkpoint manifest, the time) to what to do and the new status.
//!
//! No I/O happens here, so every rule is tested table by table below; the controller only
//! gathers the inputs and carries out the [`Action`]s.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use mtl_crds::{JobPhase, MultiTaskTrainingJobSpec, MultiTaskTrainingJobStatus};
use mtl_storage::Manifest;

use crate::backend::{AttemptState, ObservedAttempt};
use crate::status::{self, cond};

/// What reading `<checkpoints.uri>/checkpoints.json` gave.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestRead {
    /// Not read this time (the job is finished, or has not started).
    NotRead,
    /// No manifest yet: the trainer has not committed a checkpoint.
    Missing,
    Found(Manifest),
    /// Reading or parsing failed; the message says where and why.
    Failed(String),
}

/// Everything one decision looks at.
pub struct Observation<'a> {
    /// The job waits in a Kueue queue (its pods are gated until Kueue admits them).
    pub queued: bool,
    pub spec: &'a MultiTaskTrainingJobSpec,
    /// `metadata.generation` of the job.
    pub generation: Option<i64>,
    pub status: &'a MultiTaskTrainingJobStatus,
    /// The attempt numbered `status.attempt`, if it exists.
    pub attempt: Option<&'a ObservedAttempt>,
    pub manifest: &'a ManifestRead,
    pub now: Timestamp,
    /// Names attempt N for events, e.g. `pod train-3`.
    pub describe: &'a dyn Fn(u32) -> String,
    /// How often a live job is looked at again (manifest polling, pending pods).
    pub poll_interval: Duration,
    /// The wait between a failed attempt and the next.
    pub backoff: Backoff,
}

/// Something the controller must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start attempt N (create pod `<job>-N`).
    StartAttempt(u32),
    /// Stop attempt N (delete its pod, giving the trainer its grace period to checkpoint).
    StopAttempt { attempt: u32, name: String },
    /// `ttlSecondsAfterFinished` has passed: delete the job itself.
    DeleteJob,
}

/// A transition worth a Kubernetes Event.
#[derive(Clone, Debug, PartialEq)]
pub struct Note {
    pub warning: bool,
    /// PascalCase reason, shown by `kubectl describe`.
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub actions: Vec<Action>,
    pub status: MultiTaskTrainingJobStatus,
    pub notes: Vec<Note>,
    /// Look again after this long even if nothing changes; `None`: wait for a change.
    pub requeue_after: Option<Duration>,
}

/// The delay between a failed attempt and the next, as Kubernetes Job's: `base` doubling with
/// every failure, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(10),
            max: Duration::from_secs(360),
        }
    }
}

impl Backoff {
    /// The wait before the attempt that follows the `restarts`-th failure (1 for the first).
    pub fn delay(&self, restarts: u32) -> Duration {
        let doublings = restarts.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// The waiting reason of an attempt Kueue has not admitted yet.
pub const QUEUED: &str = "Queued";

/// While waiting for a terminating attempt to go away.
pub const TERMINATING_POLL: Duration = Duration::from_secs(5);

/// Whether the controller should read the manifest before deciding: while the job can still
/// change, which includes the reconcile that sees it finish (the final read).
pub fn needs_manifest(status: &MultiTaskTrainingJobStatus) -> bool {
    !status.phase.is_finished() && status.attempt > 0
}

struct Builder<'a> {
    o: &'a Observation<'a>,
    d: Decision,
}

impl Builder<'_> {
    fn note(&mut self, warning: bool, reason: &'static str, message: String) {
        self.d.notes.push(Note {
            warning,
            reason,
            message,
        });
    }

    fn st(&mut self) -> &mut MultiTaskTrainingJobStatus {
        &mut self.d.status
    }

    fn requeue(&mut self, after: Duration) {
        self.d.requeue_after = Some(match self.d.requeue_after {
            Some(cur) => cur.min(after),
            None => after,
        });
    }

    fn start_attempt(&mut self, attempt: u32) {
        let now = self.o.now;
        let queued = self.o.queued;
        self.d.actions.push(Action::StartAttempt(attempt));
        let st = self.st();
        st.attempt = attempt;
        st.next_attempt_time = None;
        st.attempt_disruption = None;
        // A queued job starts when Kueue first admits it, and so does each of its attempts
        // (see `decide_phase`).
        st.attempt_start_time = (!queued).then(|| status::format_time(now));
        if st.start_time.is_none() && !queued {
            st.start_time = Some(status::format_time(now));
        }
        let what = (self.o.describe)(attempt);
        status::set(
            self.st(),
            cond::CREATED,
            true,
            "AttemptCreated",
            format!("created {what}"),
            now,
        );
        status::clear(self.st(), cond::RUNNING, "AttemptEnded", "", now);
        self.requeue(self.o.poll_interval);
    }

    /// Stops the current attempt's workers that are still up and not yet asked to stop.
    fn stop_if_live(&mut self) {
        if let Some(a) = self.o.attempt
            && a.unstopped > 0
        {
            self.d.actions.push(Action::StopAttempt {
                attempt: a.attempt,
                name: a.name.clone(),
            });
        }
    }

    fn finish(&mut self, phase: JobPhase, reason: &'static str, message: String) {
        let now = self.o.now;
        let st = self.st();
        st.phase = phase;
        st.completion_time = Some(status::format_time(now));
        let type_ = if phase == JobPhase::Succeeded {
            cond::SUCCEEDED
        } else {
            cond::FAILED
        };
        status::set(st, type_, true, reason, message.clone(), now);
        status::clear(st, cond::RUNNING, reason, "", now);
        status::clear(st, cond::RESTARTING, reason, "", now);
        self.note(phase == JobPhase::Failed, reason, message);
        self.ttl();
    }

    /// Requeue for (or carry out) `ttlSecondsAfterFinished`.
    fn ttl(&mut self) {
        let Some(ttl) = self.o.spec.run_policy.ttl_seconds_after_finished else {
            return;
        };
        let done =
            status::parse_time(self.d.status.completion_time.as_deref()).unwrap_or(self.o.now);
        let expires = status::add_seconds(done, ttl);
        let left = self.o.now.duration_until(expires);
        if left <= SignedDuration::ZERO {
            self.d.actions.push(Action::DeleteJob);
            self.note(
                false,
                "TTLExpired",
                format!("finished more than ttlSecondsAfterFinished={ttl}s ago; deleting the job"),
            );
        } else {
            self.requeue(Duration::from_secs(left.as_secs().max(1) as u64));
        }
    }

    fn fold_manifest(&mut self) {
        let now = self.o.now;
        match self.o.manifest {
            ManifestRead::Found(m) => {
                if let Some(step) = status::apply_manifest(self.st(), m) {
                    let uri = self.d.status.latest_checkpoint.clone().unwrap_or_default();
                    self.note(
                        false,
                        "CheckpointCommitted",
                        format!("checkpoint at step {step}: {uri}"),
                    );
                }
                if status::find(&self.d.status, cond::CHECKPOINTS_READABLE).is_some() {
                    status::set(
                        self.st(),
                        cond::CHECKPOINTS_READABLE,
                        true,
                        "ManifestRead",
                        "",
                        now,
                    );
                }
            }
            ManifestRead::Failed(msg) => {
                if status::set(
                    self.st(),
                    cond::CHECKPOINTS_READABLE,
                    false,
                    "ManifestReadFailed",
                    msg.clone(),
                    now,
                ) {
                    self.note(true, "ManifestReadFailed", msg.clone());
                }
            }
            ManifestRead::Missing | ManifestRead::NotRead => {}
        }
    }
}

/// Decides what to do about one job. See the module docs and the tests for the rules.
pub fn decide(o: &Observation<'_>) -> Decision {
    let mut d = decide_phase(o);
    // How many of several workers run, while the job can still run.
    d.status.running_workers = (o.spec.workers > 1 && !d.status.phase.is_finished())
        .then(|| o.attempt.map_or(0, |a| a.running));
    d
}

fn decide_phase(o: &Observation<'_>) -> Decision {
    let mut b = Builder {
        o,
        d: Decision {
            actions: Vec::new(),
            status: o.status.clone(),
            notes: Vec::new(),
            requeue_after: None,
        },
    };
    b.d.status.observed_generation = o.generation;
    let now = o.now;
    let policy = &o.spec.run_policy;

    // Finished jobs stay finished: stop a straggling attempt, honour the TTL.
    if b.d.status.phase.is_finished() {
        b.stop_if_live();
        b.ttl();
        return b.d;
    }

    b.fold_manifest();
    let current = b.d.status.attempt;
    // The first disruption seen of the current attempt is how it ended, whatever its pods do
    // while it winds down (a vanished pod, peers failing on the lost rank).
    if let Some(a) = o.attempt
        && a.attempt == current
        && let AttemptState::Disrupted { reason, message } = &a.state
        && b.d
            .status
            .attempt_disruption
            .as_ref()
            .is_none_or(|d| d.attempt != current)
    {
        b.st().attempt_disruption = Some(mtl_crds::AttemptDisruption {
            attempt: current,
            reason: reason.clone(),
            message: message.clone(),
        });
    }
    // A queued job's clock starts when Kueue first admits its attempt (as a Job's startTime is
    // set when Kueue unsuspends it): queue time does not count against its deadline.
    if o.queued
        && let Some(a) = o.attempt
        && a.attempt == current
        && !(a.state == AttemptState::Pending
            && a.waiting.as_ref().is_some_and(|w| w.reason == QUEUED))
    {
        let st = b.st();
        for time in [&mut st.start_time, &mut st.attempt_start_time] {
            if time.is_none() {
                *time = Some(status::format_time(now));
            }
        }
    }
    let judged = o.attempt.map(|a| kept_disruption(a, &b.d.status));
    let attempt = judged.as_ref();

    // A finished trainer wins over everything (a suspend or deadline racing with success).
    if let Some(a) = attempt
        && a.state == AttemptState::Succeeded
    {
        // Rank 0 finished: workers still up have nothing left to do.
        b.stop_if_live();
        let what = (o.describe)(a.attempt);
        let end = match o.manifest {
            ManifestRead::Found(m) => m.end.as_ref(),
            _ => None,
        };
        match end {
            Some(e) if e.reason == mtl_crds::END_EARLY_STOPPED => b.finish(
                JobPhase::Succeeded,
                "EarlyStopped",
                format!("{what} stopped early at step {}: {}", e.step, e.message),
            ),
            _ => b.finish(
                JobPhase::Succeeded,
                "Succeeded",
                format!("{what} completed"),
            ),
        }
        return b.d;
    }

    // activeDeadlineSeconds counts from the start, or from the latest resume: a suspended job
    // is not judged, and one resuming now starts its count afresh (below).
    if !policy.suspend
        && b.d.status.phase != JobPhase::Suspended
        && let Some(deadline) = policy.active_deadline_seconds
        && let Some(started) = status::parse_time(b.d.status.start_time.as_deref())
    {
        let ends = status::add_seconds(started, deadline);
        let left = now.duration_until(ends);
        if left <= SignedDuration::ZERO {
            b.stop_if_live();
            b.finish(
                JobPhase::Failed,
                "DeadlineExceeded",
                format!("job ran longer than activeDeadlineSeconds={deadline}"),
            );
            return b.d;
        }
        b.requeue(Duration::from_secs(left.as_secs().max(1) as u64));
    }

    if policy.suspend {
        if b.d.status.phase != JobPhase::Suspended {
            let live = attempt.filter(|a| !a.state.is_terminal());
            let message = match live {
                Some(a) => format!(
                    "runPolicy.suspend is set; stopping {}",
                    (o.describe)(a.attempt)
                ),
                None => "runPolicy.suspend is set".to_string(),
            };
            b.st().phase = JobPhase::Suspended;
            status::set(
                b.st(),
                cond::SUSPENDED,
                true,
                "JobSuspended",
                message.clone(),
                now,
            );
            status::clear(b.st(), cond::RUNNING, "JobSuspended", "", now);
            status::clear(b.st(), cond::RESTARTING, "JobSuspended", "", now);
            b.note(false, "Suspended", message);
        }
        b.stop_if_live();
        if attempt.is_some_and(|a| a.terminating) {
            b.requeue(TERMINATING_POLL);
        }
        return b.d;
    }

    // Wait for a terminating attempt to finish before anything else runs beside it. An
    // attempt of several workers that ended on one of them ends for all: stop the others, and
    // judge (and count) it once none is left up.
    if let Some(a) = attempt
        && a.terminating
    {
        if a.state.is_terminal() {
            b.stop_if_live();
        }
        b.requeue(TERMINATING_POLL);
        return b.d;
    }

    if b.d.status.phase == JobPhase::Suspended {
        // The pod cache may still show the suspended attempt up: start the next only once it
        // is seen to have ended, never beside it.
        if attempt.is_some_and(|a| !a.state.is_terminal()) {
            b.stop_if_live();
            b.requeue(TERMINATING_POLL);
            return b.d;
        }
        let next = current + 1;
        b.st().phase = if current == 0 {
            JobPhase::Pending
        } else {
            JobPhase::Restarting
        };
        let message = format!(
            "runPolicy.suspend cleared; starting {} (resumes from the newest checkpoint)",
            (o.describe)(next)
        );
        status::set(
            b.st(),
            cond::SUSPENDED,
            false,
            "JobResumed",
            message.clone(),
            now,
        );
        b.note(false, "Resumed", message);
        if current > 0 {
            // As Kubernetes Job: the deadline counts from the resume (for a queued job, from
            // when Kueue admits the resumed attempt).
            b.st().start_time = (!o.queued).then(|| status::format_time(now));
        }
        b.start_attempt(next);
        return b.d;
    }

    // A failed attempt, already counted, waits out its backoff (whether or not its pods are
    // still there) before the next starts. Its failure was seen: an observation of it pending
    // or running again is a cache behind that read (a pod first read with a GET), not news.
    if let Some(at) = status::parse_time(b.d.status.next_attempt_time.as_deref()) {
        let left = now.duration_until(at);
        if left <= SignedDuration::ZERO {
            b.start_attempt(current + 1);
        } else {
            b.requeue(Duration::from_millis(left.as_millis().max(1) as u64));
        }
        return b.d;
    }

    let Some(a) = attempt else {
        if current == 0 {
            b.st().phase = JobPhase::Pending;
            b.start_attempt(1);
            let message = format!("created {}", (o.describe)(1));
            b.note(false, "Created", message);
        } else {
            // Gone without a trace: deleted by the cluster (node lost, pod GC) or by a person,
            // or stopped after the disruption kept in status.
            let what = (o.describe)(current);
            let message = match b.d.status.attempt_disruption.as_ref() {
                Some(d) if d.attempt == current => disrupted_text(&what, &d.reason, &d.message),
                _ => format!("{what} disappeared while the job was running"),
            };
            replace_disrupted(&mut b, current, "AttemptDisrupted", &message);
        }
        return b.d;
    };

    match &a.state {
        AttemptState::Pending => {
            if b.d.status.phase != JobPhase::Restarting {
                b.st().phase = JobPhase::Pending;
            }
            check_startup(&mut b, a);
            // What keeps it from running, when the platform says (a bad image, no node):
            // in the Running condition, and a Warning Event when it first appears.
            if let Some(w) = &a.waiting {
                let what = (o.describe)(a.attempt);
                let message = if w.message.is_empty() {
                    format!("{what} is waiting: {}", w.reason)
                } else {
                    format!("{what} is waiting: {}: {}", w.reason, w.message)
                };
                let new = status::find(&b.d.status, cond::RUNNING)
                    .is_none_or(|c| c.reason != w.reason || c.message != message);
                status::set(
                    b.st(),
                    cond::RUNNING,
                    false,
                    &w.reason,
                    message.clone(),
                    now,
                );
                if new {
                    b.note(true, "AttemptWaiting", message);
                }
            }
            b.requeue(o.poll_interval);
        }
        AttemptState::Running => {
            // No Event: the Running condition says when (a Job records none either); Events
            // are for what was done to the job and what went wrong.
            b.st().phase = JobPhase::Running;
            let message = format!("{} is running", (o.describe)(a.attempt));
            status::set(b.st(), cond::RUNNING, true, "AttemptRunning", message, now);
            status::clear(b.st(), cond::RESTARTING, "AttemptRunning", "", now);
            b.requeue(o.poll_interval);
        }
        // Handled before the deadline and suspend checks.
        AttemptState::Succeeded => {}
        AttemptState::Failed { reason, message } => {
            replace_failed(&mut b, current, a.attempt, reason, message);
        }
        AttemptState::InvalidInput { message } => {
            let what = (o.describe)(a.attempt);
            let text = if message.is_empty() {
                format!("{what} failed on input no retry can fix (exit code 2)")
            } else {
                message.clone()
            };
            b.finish(JobPhase::Failed, "InvalidInput", text);
        }
        AttemptState::Cancelled { message } => {
            let what = (o.describe)(a.attempt);
            b.finish(
                JobPhase::Failed,
                "Cancelled",
                format!("{message} outside the operator (runPolicy.suspend is not set); {what} is not replaced"),
            );
        }
        AttemptState::Disrupted { reason, message } => {
            let refused = node_refused(reason);
            // Still restarting from a refusal: this attempt never ran either.
            let again = refused
                && status::find(&b.d.status, cond::RESTARTING)
                    .is_some_and(|c| c.status == "True" && c.reason == REJECTED_BY_NODE);
            if again {
                let reason = format!("refused by its node again ({reason})");
                replace_failed(&mut b, current, a.attempt, &reason, message);
            } else {
                let (what, why) = if refused {
                    ("refused by its node", REJECTED_BY_NODE)
                } else {
                    ("disrupted", "AttemptDisrupted")
                };
                let text = if refused {
                    let sep = if message.is_empty() { "" } else { ": " };
                    format!(
                        "{} was {what} ({reason}{sep}{message})",
                        (o.describe)(a.attempt)
                    )
                } else {
                    disrupted_text(&(o.describe)(a.attempt), reason, message)
                };
                replace_disrupted(&mut b, current, why, &text);
            }
        }
    }
    b.d
}

/// `a` as it ended: the disruption kept in `status` when it was one, over what its workers
/// did after it (see [`MultiTaskTrainingJobStatus::attempt_disruption`]).
fn kept_disruption(a: &ObservedAttempt, status: &MultiTaskTrainingJobStatus) -> ObservedAttempt {
    let mut a = a.clone();
    if let Some(d) = status
        .attempt_disruption
        .as_ref()
        .filter(|d| d.attempt == a.attempt)
        && a.state.is_terminal()
        && a.state != AttemptState::Succeeded
    {
        a.state = AttemptState::Disrupted {
            reason: d.reason.clone(),
            message: d.message.clone(),
        };
    }
    a
}

/// `pod x-3 was disrupted (reason: message)`.
fn disrupted_text(what: &str, reason: &str, message: &str) -> String {
    let sep = if message.is_empty() { "" } else { ": " };
    format!("{what} was disrupted ({reason}{sep}{message})")
}

/// Stops an attempt of several workers that has not had all of them running for
/// `runPolicy.startupTimeoutSeconds` since it started (was admitted), keeping why as its
/// disruption; until then, looks again when the time is up.
fn check_startup(b: &mut Builder<'_>, a: &ObservedAttempt) {
    let o = b.o;
    if o.spec.workers <= 1 || a.waiting.as_ref().is_some_and(|w| w.reason == QUEUED) {
        return;
    }
    let Some(started) = status::parse_time(b.d.status.attempt_start_time.as_deref()) else {
        return;
    };
    let timeout = o
        .spec
        .run_policy
        .startup_timeout_seconds
        .unwrap_or(mtl_crds::DEFAULT_STARTUP_TIMEOUT_SECONDS);
    let left = o
        .now
        .duration_until(status::add_seconds(started, i64::from(timeout)));
    if left > SignedDuration::ZERO {
        b.requeue(Duration::from_millis(left.as_millis().max(1) as u64));
        return;
    }
    let message = format!(
        "{} of {} workers were running {timeout}s after the attempt started (runPolicy.startupTimeoutSeconds); stopping it",
        a.running, a.workers
    );
    b.st().attempt_disruption = Some(mtl_crds::AttemptDisruption {
        attempt: a.attempt,
        reason: "StartupTimeout".into(),
        message: message.clone(),
    });
    b.stop_if_live();
    b.requeue(TERMINATING_POLL);
    b.note(
        true,
        "StartupTimeout",
        format!("{}: {message}", (o.describe)(a.attempt)),
    );
}

/// The Restarting condition's reason after a node refused the attempt's pod at admission.
const REJECTED_BY_NODE: &str = "AttemptRejectedByNode";

/// Pod reasons of the kubelet refusing a pod at admission. They recur on the same broken or
/// misreported node, so only the first is replaced as a disruption; a repeat counts as a
/// failure.
fn node_refused(reason: &str) -> bool {
    reason.starts_with("OutOf") || matches!(reason, "UnexpectedAdmissionError" | "NodeAffinity")
}

/// Replaces a failed attempt after its backoff, spending backoffLimit, or fails the job when
/// it is spent.
fn replace_failed(b: &mut Builder<'_>, current: u32, attempt: u32, reason: &str, message: &str) {
    let (o, now) = (b.o, b.o.now);
    let policy = &o.spec.run_policy;
    let what = (o.describe)(attempt);
    let detail = if message.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {message}")
    };
    let limit = policy.backoff_limit;
    if b.d.status.restarts < limit {
        let restarts = b.d.status.restarts + 1;
        b.st().restarts = restarts;
        b.st().phase = JobPhase::Restarting;
        let delay = o.backoff.delay(restarts);
        let text = format!(
            "{what} failed ({detail}); starting {} in {} (restart {restarts} of backoffLimit {limit})",
            (o.describe)(current + 1),
            humantime(delay)
        );
        status::set(
            b.st(),
            cond::RESTARTING,
            true,
            "AttemptFailed",
            text.clone(),
            now,
        );
        b.note(true, "Restarting", text);
        if delay.is_zero() {
            b.start_attempt(current + 1);
        } else {
            b.st().next_attempt_time = Some(status::format_time(status::add_millis(now, delay)));
            b.requeue(delay);
        }
    } else {
        // The trainer's own words go into the Failed condition's message.
        let text = if message.is_empty() {
            format!("{what} failed ({reason}) and backoffLimit {limit} is spent")
        } else {
            message.to_string()
        };
        b.finish(JobPhase::Failed, "BackoffLimitExceeded", text);
    }
}

/// Replaces an attempt lost to the platform without spending backoffLimit; `why` is the
/// Restarting condition's reason.
fn replace_disrupted(b: &mut Builder<'_>, current: u32, why: &'static str, message: &str) {
    let now = b.o.now;
    let preemptions = b.d.status.preemptions + 1;
    b.st().preemptions = preemptions;
    let max = b.o.spec.run_policy.max_preemptions;
    if preemptions > max {
        b.finish(
            JobPhase::Failed,
            "PreemptionLimitExceeded",
            format!("{message}; runPolicy.maxPreemptions {max} is spent"),
        );
        return;
    }
    b.st().phase = JobPhase::Restarting;
    let text = format!(
        "{message}; starting {} (preemption {preemptions}, not counted against backoffLimit)",
        (b.o.describe)(current + 1)
    );
    status::set(b.st(), cond::RESTARTING, true, why, text.clone(), now);
    b.note(true, "Preempted", text);
    b.start_attempt(current + 1);
}

/// `10s`, `2m`, `2m30s`: a delay as an event reads it.
fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, _) => format!("{}s", s.max(u64::from(d.subsec_millis() > 0))),
        (m, 0) => format!("{m}m"),
        (m, r) => format!("{m}m{r}s"),
    }
}

#[cfg(test)]
mod tests;
