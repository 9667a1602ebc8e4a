//! Where a job's phase is decided: a pure function from what was observed (spec, status, the
//! current attempt, the checkpoint manifest, the time) to what to do and the new status.
//!
//! No I/O happens here, so every rule is tested table by table below; the controller only
//! gathers the inputs and carries out the [`Action`]s.

use std::ops::ControlFlow;
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

/// The delay between a failed attempt and the next, as Kubernetes Job's (the operator's one
/// exponential backoff, [`mtl_storage::Backoff`]).
pub use mtl_storage::Backoff;

pub use crate::QUEUED;

/// While waiting for a terminating attempt to go away.
pub const TERMINATING_POLL: Duration = Duration::from_secs(5);

/// Whether the controller should read the manifest before deciding: while the job can still
/// change, which includes the reconcile that sees it finish (the final read).
pub fn needs_manifest(status: &MultiTaskTrainingJobStatus) -> bool {
    !status.phase.is_finished() && status.attempt > 0
}

/// A decision being made: what was seen, and what has been decided so far.
struct Plan<'a> {
    seen: &'a Observation<'a>,
    decision: Decision,
}

impl Plan<'_> {
    fn note(&mut self, warning: bool, reason: &'static str, message: String) {
        self.decision.notes.push(Note {
            warning,
            reason,
            message,
        });
    }

    fn status(&mut self) -> &mut MultiTaskTrainingJobStatus {
        &mut self.decision.status
    }

    fn requeue(&mut self, after: Duration) {
        self.decision.requeue_after = Some(match self.decision.requeue_after {
            Some(cur) => cur.min(after),
            None => after,
        });
    }

    fn start_attempt(&mut self, attempt: u32) {
        let now = self.seen.now;
        let queued = self.seen.queued;
        self.decision.actions.push(Action::StartAttempt(attempt));
        let st = self.status();
        st.attempt = attempt;
        st.next_attempt_time = None;
        st.attempt_disruption = None;
        // A queued job starts when Kueue first admits it, and so does each of its attempts
        // (see `decide_phase`).
        st.attempt_start_time = (!queued).then(|| status::format_time(now));
        if st.start_time.is_none() && !queued {
            st.start_time = Some(status::format_time(now));
        }
        let what = (self.seen.describe)(attempt);
        status::set(
            self.status(),
            cond::CREATED,
            true,
            "AttemptCreated",
            format!("created {what}"),
            now,
        );
        status::clear(self.status(), cond::RUNNING, "AttemptEnded", "", now);
        self.requeue(self.seen.poll_interval);
    }

    /// Stops the current attempt's workers that are still up and not yet asked to stop.
    fn stop_if_live(&mut self) {
        if let Some(a) = self.seen.attempt
            && a.unstopped > 0
        {
            self.decision.actions.push(Action::StopAttempt {
                attempt: a.attempt,
                name: a.name.clone(),
            });
        }
    }

    fn finish(&mut self, phase: JobPhase, reason: &'static str, message: String) {
        let now = self.seen.now;
        let st = self.status();
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
        let Some(ttl) = self.seen.spec.run_policy.ttl_seconds_after_finished else {
            return;
        };
        let done = status::parse_time(self.decision.status.completion_time.as_deref())
            .unwrap_or(self.seen.now);
        let expires = status::add_seconds(done, ttl);
        let left = self.seen.now.duration_until(expires);
        if left <= SignedDuration::ZERO {
            self.decision.actions.push(Action::DeleteJob);
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
        let now = self.seen.now;
        match self.seen.manifest {
            ManifestRead::Found(m) => {
                if let Some(step) = status::apply_manifest(self.status(), m) {
                    let uri = self
                        .decision
                        .status
                        .latest_checkpoint
                        .clone()
                        .unwrap_or_default();
                    self.note(
                        false,
                        "CheckpointCommitted",
                        format!("checkpoint at step {step}: {uri}"),
                    );
                }
                if status::find(&self.decision.status, cond::CHECKPOINTS_READABLE).is_some() {
                    status::set(
                        self.status(),
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
                    self.status(),
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
pub fn decide(seen: &Observation<'_>) -> Decision {
    let mut decision = decide_phase(seen);
    // How many of several workers run, while the job can still run.
    decision.status.running_workers = (seen.spec.workers > 1
        && !decision.status.phase.is_finished())
    .then(|| seen.attempt.map_or(0, |attempt| attempt.running));
    decision
}

fn decide_phase(seen: &Observation<'_>) -> Decision {
    let mut plan = Plan {
        seen,
        decision: Decision {
            actions: Vec::new(),
            status: seen.status.clone(),
            notes: Vec::new(),
            requeue_after: None,
        },
    };
    plan.decision.status.observed_generation = seen.generation;
    if finished_stays_finished(&mut plan).is_break() {
        return plan.decision;
    }
    plan.fold_manifest();
    keep_first_disruption(&mut plan);
    start_clock_when_admitted(&mut plan);
    let judged = seen
        .attempt
        .map(|a| kept_disruption(a, &plan.decision.status));
    for rule in RULES {
        if rule(&mut plan, judged.as_ref()).is_break() {
            break;
        }
    }
    plan.decision
}

/// A rule of [`decide_phase`]: `Break` when it decided, `Continue` to try the next one.
type Rule = fn(&mut Plan<'_>, Option<&ObservedAttempt>) -> ControlFlow<()>;

/// The rules of a live job, tried in this order on the attempt as it ended
/// ([`kept_disruption`]); the first that decides ends the decision.
const RULES: &[Rule] = &[
    succeeded_wins,
    deadline_passed,
    suspended,
    wait_for_teardown,
    resume_after_suspend,
    wait_out_backoff,
    attempt_gone,
    follow_attempt,
];

/// Finished jobs stay finished: stop a straggling attempt, honour the TTL.
fn finished_stays_finished(plan: &mut Plan<'_>) -> ControlFlow<()> {
    if !plan.decision.status.phase.is_finished() {
        return ControlFlow::Continue(());
    }
    plan.stop_if_live();
    plan.ttl();
    ControlFlow::Break(())
}

/// The first disruption seen of the current attempt is how it ended, whatever its pods do
/// while it winds down (a vanished pod, peers failing on the lost rank).
fn keep_first_disruption(plan: &mut Plan<'_>) {
    let current = plan.decision.status.attempt;
    if let Some(attempt) = plan.seen.attempt
        && attempt.attempt == current
        && let AttemptState::Disrupted { reason, message } = &attempt.state
        && plan
            .decision
            .status
            .attempt_disruption
            .as_ref()
            .is_none_or(|kept| kept.attempt != current)
    {
        plan.status().attempt_disruption = Some(mtl_crds::AttemptDisruption {
            attempt: current,
            reason: reason.clone(),
            message: message.clone(),
        });
    }
}

/// A queued job's clock starts when Kueue first admits its attempt (as a Job's startTime is
/// set when Kueue unsuspends it): queue time does not count against its deadline.
fn start_clock_when_admitted(plan: &mut Plan<'_>) {
    let (seen, now) = (plan.seen, plan.seen.now);
    if seen.queued
        && let Some(attempt) = seen.attempt
        && attempt.attempt == plan.decision.status.attempt
        && !(attempt.state == AttemptState::Pending
            && attempt.waiting.as_ref().is_some_and(|w| w.reason == QUEUED))
    {
        let status = plan.status();
        for time in [&mut status.start_time, &mut status.attempt_start_time] {
            if time.is_none() {
                *time = Some(status::format_time(now));
            }
        }
    }
}

/// A finished trainer wins over everything (a suspend or deadline racing with success).
fn succeeded_wins(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    let Some(attempt) = attempt.filter(|a| a.state == AttemptState::Succeeded) else {
        return ControlFlow::Continue(());
    };
    // Rank 0 finished: workers still up have nothing left to do.
    plan.stop_if_live();
    let what = (plan.seen.describe)(attempt.attempt);
    let end = match plan.seen.manifest {
        ManifestRead::Found(m) => m.end.as_ref(),
        _ => None,
    };
    match end {
        Some(e) if e.reason == mtl_crds::END_EARLY_STOPPED => plan.finish(
            JobPhase::Succeeded,
            "EarlyStopped",
            format!("{what} stopped early at step {}: {}", e.step, e.message),
        ),
        _ => plan.finish(
            JobPhase::Succeeded,
            "Succeeded",
            format!("{what} completed"),
        ),
    }
    ControlFlow::Break(())
}

/// activeDeadlineSeconds counts from the start, or from the latest resume: a suspended job
/// is not judged, and one resuming now starts its count afresh (see
/// [`resume_after_suspend`]). Until it passes, look again when it does.
fn deadline_passed(plan: &mut Plan<'_>, _: Option<&ObservedAttempt>) -> ControlFlow<()> {
    let policy = &plan.seen.spec.run_policy;
    if policy.suspend || plan.decision.status.phase == JobPhase::Suspended {
        return ControlFlow::Continue(());
    }
    let (Some(deadline), Some(started)) = (
        policy.active_deadline_seconds,
        status::parse_time(plan.decision.status.start_time.as_deref()),
    ) else {
        return ControlFlow::Continue(());
    };
    let left = plan
        .seen
        .now
        .duration_until(status::add_seconds(started, deadline));
    if left > SignedDuration::ZERO {
        plan.requeue(Duration::from_secs(left.as_secs().max(1) as u64));
        return ControlFlow::Continue(());
    }
    plan.stop_if_live();
    plan.finish(
        JobPhase::Failed,
        "DeadlineExceeded",
        format!("job ran longer than activeDeadlineSeconds={deadline}"),
    );
    ControlFlow::Break(())
}

/// `runPolicy.suspend`: Suspended, its attempt stopped; waits for a terminating one.
fn suspended(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    if !plan.seen.spec.run_policy.suspend {
        return ControlFlow::Continue(());
    }
    if plan.decision.status.phase != JobPhase::Suspended {
        let now = plan.seen.now;
        let live = attempt.filter(|a| !a.state.is_terminal());
        let message = match live {
            Some(a) => format!(
                "runPolicy.suspend is set; stopping {}",
                (plan.seen.describe)(a.attempt)
            ),
            None => "runPolicy.suspend is set".to_string(),
        };
        plan.status().phase = JobPhase::Suspended;
        status::set(
            plan.status(),
            cond::SUSPENDED,
            true,
            "JobSuspended",
            message.clone(),
            now,
        );
        status::clear(plan.status(), cond::RUNNING, "JobSuspended", "", now);
        status::clear(plan.status(), cond::RESTARTING, "JobSuspended", "", now);
        plan.note(false, "Suspended", message);
    }
    plan.stop_if_live();
    if attempt.is_some_and(|a| a.terminating) {
        plan.requeue(TERMINATING_POLL);
    }
    ControlFlow::Break(())
}

/// Wait for a terminating attempt to finish before anything else runs beside it. An
/// attempt of several workers that ended on one of them ends for all: stop the others, and
/// judge (and count) it once none is left up.
fn wait_for_teardown(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    let Some(attempt) = attempt.filter(|a| a.terminating) else {
        return ControlFlow::Continue(());
    };
    if attempt.state.is_terminal() {
        plan.stop_if_live();
    }
    plan.requeue(TERMINATING_POLL);
    ControlFlow::Break(())
}

/// `runPolicy.suspend` cleared on a Suspended job: the next attempt starts (once the
/// suspended one is seen to have ended).
fn resume_after_suspend(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    if plan.decision.status.phase != JobPhase::Suspended {
        return ControlFlow::Continue(());
    }
    // The pod cache may still show the suspended attempt up: start the next only once it
    // is seen to have ended, never beside it.
    if attempt.is_some_and(|a| !a.state.is_terminal()) {
        plan.stop_if_live();
        plan.requeue(TERMINATING_POLL);
        return ControlFlow::Break(());
    }
    let (seen, now) = (plan.seen, plan.seen.now);
    let current = plan.decision.status.attempt;
    let next = current + 1;
    plan.status().phase = if current == 0 {
        JobPhase::Pending
    } else {
        JobPhase::Restarting
    };
    let message = format!(
        "runPolicy.suspend cleared; starting {} (resumes from the newest checkpoint)",
        (seen.describe)(next)
    );
    status::set(
        plan.status(),
        cond::SUSPENDED,
        false,
        "JobResumed",
        message.clone(),
        now,
    );
    plan.note(false, "Resumed", message);
    if current > 0 {
        // As Kubernetes Job: the deadline counts from the resume (for a queued job, from
        // when Kueue admits the resumed attempt).
        plan.status().start_time = (!seen.queued).then(|| status::format_time(now));
    }
    plan.start_attempt(next);
    ControlFlow::Break(())
}

/// A failed attempt, already counted, waits out its backoff (whether or not its pods are
/// still there) before the next starts. Its failure was seen: an observation of it pending
/// or running again is a cache behind that read (a pod first read with a GET), not news.
fn wait_out_backoff(plan: &mut Plan<'_>, _: Option<&ObservedAttempt>) -> ControlFlow<()> {
    let Some(at) = status::parse_time(plan.decision.status.next_attempt_time.as_deref()) else {
        return ControlFlow::Continue(());
    };
    let left = plan.seen.now.duration_until(at);
    if left <= SignedDuration::ZERO {
        plan.start_attempt(plan.decision.status.attempt + 1);
    } else {
        plan.requeue(Duration::from_millis(left.as_millis().max(1) as u64));
    }
    ControlFlow::Break(())
}

/// No attempt: the first one starts; a later one that is gone without a trace (deleted by
/// the cluster, node lost, pod GC, or by a person, or stopped after the disruption kept in
/// status) is replaced as a disruption.
fn attempt_gone(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    if attempt.is_some() {
        return ControlFlow::Continue(());
    }
    let current = plan.decision.status.attempt;
    if current == 0 {
        plan.status().phase = JobPhase::Pending;
        plan.start_attempt(1);
        let message = format!("created {}", (plan.seen.describe)(1));
        plan.note(false, "Created", message);
    } else {
        let what = (plan.seen.describe)(current);
        let message = match plan.decision.status.attempt_disruption.as_ref() {
            Some(kept) if kept.attempt == current => {
                disrupted_text(&what, &kept.reason, &kept.message)
            }
            _ => format!("{what} disappeared while the job was running"),
        };
        replace_disrupted(plan, current, "AttemptDisrupted", &message);
    }
    ControlFlow::Break(())
}

/// The attempt's own state decides: waiting, running, or ended one way or another.
fn follow_attempt(plan: &mut Plan<'_>, attempt: Option<&ObservedAttempt>) -> ControlFlow<()> {
    let Some(attempt) = attempt else {
        return ControlFlow::Continue(());
    };
    let current = plan.decision.status.attempt;
    match &attempt.state {
        AttemptState::Pending => attempt_pending(plan, attempt),
        AttemptState::Running => attempt_running(plan, attempt),
        // Handled before the deadline and suspend checks.
        AttemptState::Succeeded => {}
        AttemptState::Failed { reason, message } => {
            replace_failed(plan, current, attempt.attempt, reason, message);
        }
        AttemptState::InvalidInput { message } => {
            let what = (plan.seen.describe)(attempt.attempt);
            let text = if message.is_empty() {
                format!("{what} failed on input no retry can fix (exit code 2)")
            } else {
                message.clone()
            };
            plan.finish(JobPhase::Failed, "InvalidInput", text);
        }
        AttemptState::Cancelled { message } => {
            let what = (plan.seen.describe)(attempt.attempt);
            plan.finish(
                JobPhase::Failed,
                "Cancelled",
                format!("{message} outside the operator (runPolicy.suspend is not set); {what} is not replaced"),
            );
        }
        AttemptState::Disrupted { reason, message } => {
            attempt_disrupted(plan, current, attempt, reason, message);
        }
    }
    ControlFlow::Break(())
}

/// Not running yet: Pending (or still Restarting), what keeps it from running when the
/// platform says (a bad image, no node) in the Running condition and a Warning Event when it
/// first appears; an attempt of several workers past its startup timeout is stopped.
fn attempt_pending(plan: &mut Plan<'_>, attempt: &ObservedAttempt) {
    let now = plan.seen.now;
    if plan.decision.status.phase != JobPhase::Restarting {
        plan.status().phase = JobPhase::Pending;
    }
    check_startup(plan, attempt);
    if let Some(waiting) = &attempt.waiting {
        let what = (plan.seen.describe)(attempt.attempt);
        let message = if waiting.message.is_empty() {
            format!("{what} is waiting: {}", waiting.reason)
        } else {
            format!("{what} is waiting: {}: {}", waiting.reason, waiting.message)
        };
        let new = status::find(&plan.decision.status, cond::RUNNING)
            .is_none_or(|c| c.reason != waiting.reason || c.message != message);
        status::set(
            plan.status(),
            cond::RUNNING,
            false,
            &waiting.reason,
            message.clone(),
            now,
        );
        if new {
            plan.note(true, "AttemptWaiting", message);
        }
    }
    plan.requeue(plan.seen.poll_interval);
}

/// Running. No Event: the Running condition says when (a Job records none either); Events
/// are for what was done to the job and what went wrong.
fn attempt_running(plan: &mut Plan<'_>, attempt: &ObservedAttempt) {
    let now = plan.seen.now;
    plan.status().phase = JobPhase::Running;
    let message = format!("{} is running", (plan.seen.describe)(attempt.attempt));
    status::set(
        plan.status(),
        cond::RUNNING,
        true,
        "AttemptRunning",
        message,
        now,
    );
    status::clear(plan.status(), cond::RESTARTING, "AttemptRunning", "", now);
    plan.requeue(plan.seen.poll_interval);
}

/// Lost to the platform: replaced without spending backoffLimit, except a node's refusal
/// that repeats (counted as a failure).
fn attempt_disrupted(
    plan: &mut Plan<'_>,
    current: u32,
    attempt: &ObservedAttempt,
    reason: &str,
    message: &str,
) {
    let refused = node_refused(reason);
    // Still restarting from a refusal: this attempt never ran either.
    let again = refused
        && status::find(&plan.decision.status, cond::RESTARTING)
            .is_some_and(|c| c.status == "True" && c.reason == REJECTED_BY_NODE);
    if again {
        let reason = format!("refused by its node again ({reason})");
        replace_failed(plan, current, attempt.attempt, &reason, message);
        return;
    }
    let what = (plan.seen.describe)(attempt.attempt);
    if refused {
        let sep = if message.is_empty() { "" } else { ": " };
        let text = format!("{what} was refused by its node ({reason}{sep}{message})");
        replace_disrupted(plan, current, REJECTED_BY_NODE, &text);
    } else {
        let text = disrupted_text(&what, reason, message);
        replace_disrupted(plan, current, "AttemptDisrupted", &text);
    }
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
fn check_startup(plan: &mut Plan<'_>, attempt: &ObservedAttempt) {
    let seen = plan.seen;
    if seen.spec.workers <= 1 || attempt.waiting.as_ref().is_some_and(|w| w.reason == QUEUED) {
        return;
    }
    let Some(started) = status::parse_time(plan.decision.status.attempt_start_time.as_deref())
    else {
        return;
    };
    let timeout = seen
        .spec
        .run_policy
        .startup_timeout_seconds
        .unwrap_or(mtl_crds::DEFAULT_STARTUP_TIMEOUT_SECONDS);
    let left = seen
        .now
        .duration_until(status::add_seconds(started, i64::from(timeout)));
    if left > SignedDuration::ZERO {
        plan.requeue(Duration::from_millis(left.as_millis().max(1) as u64));
        return;
    }
    let message = format!(
        "{} of {} workers were running {timeout}s after the attempt started (runPolicy.startupTimeoutSeconds); stopping it",
        attempt.running, attempt.workers
    );
    plan.status().attempt_disruption = Some(mtl_crds::AttemptDisruption {
        attempt: attempt.attempt,
        reason: "StartupTimeout".into(),
        message: message.clone(),
    });
    plan.stop_if_live();
    plan.requeue(TERMINATING_POLL);
    plan.note(
        true,
        "StartupTimeout",
        format!("{}: {message}", (seen.describe)(attempt.attempt)),
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
fn replace_failed(plan: &mut Plan<'_>, current: u32, attempt: u32, reason: &str, message: &str) {
    let (seen, now) = (plan.seen, plan.seen.now);
    let policy = &seen.spec.run_policy;
    let what = (seen.describe)(attempt);
    let detail = if message.is_empty() {
        reason.to_string()
    } else {
        format!("{reason}: {message}")
    };
    let limit = policy.backoff_limit;
    if plan.decision.status.restarts < limit {
        let restarts = plan.decision.status.restarts + 1;
        plan.status().restarts = restarts;
        plan.status().phase = JobPhase::Restarting;
        let delay = seen.backoff.delay(restarts);
        let text = format!(
            "{what} failed ({detail}); starting {} in {} (restart {restarts} of backoffLimit {limit})",
            (seen.describe)(current + 1),
            humantime(delay)
        );
        status::set(
            plan.status(),
            cond::RESTARTING,
            true,
            "AttemptFailed",
            text.clone(),
            now,
        );
        plan.note(true, "Restarting", text);
        if delay.is_zero() {
            plan.start_attempt(current + 1);
        } else {
            plan.status().next_attempt_time =
                Some(status::format_time(status::add_millis(now, delay)));
            plan.requeue(delay);
        }
    } else {
        // The trainer's own words go into the Failed condition's message.
        let text = if message.is_empty() {
            format!("{what} failed ({reason}) and backoffLimit {limit} is spent")
        } else {
            message.to_string()
        };
        plan.finish(JobPhase::Failed, "BackoffLimitExceeded", text);
    }
}

/// Replaces an attempt lost to the platform without spending backoffLimit; `why` is the
/// Restarting condition's reason.
fn replace_disrupted(plan: &mut Plan<'_>, current: u32, why: &'static str, message: &str) {
    let now = plan.seen.now;
    let preemptions = plan.decision.status.preemptions + 1;
    plan.status().preemptions = preemptions;
    let max = plan.seen.spec.run_policy.max_preemptions;
    if preemptions > max {
        plan.finish(
            JobPhase::Failed,
            "PreemptionLimitExceeded",
            format!("{message}; runPolicy.maxPreemptions {max} is spent"),
        );
        return;
    }
    plan.status().phase = JobPhase::Restarting;
    let text = format!(
        "{message}; starting {} (preemption {preemptions}, not counted against backoffLimit)",
        (plan.seen.describe)(current + 1)
    );
    status::set(
        plan.status(),
        cond::RESTARTING,
        true,
        why,
        text.clone(),
        now,
    );
    plan.note(true, "Preempted", text);
    plan.start_attempt(current + 1);
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
