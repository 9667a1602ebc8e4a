//! The decision rules, table by table.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use mtl_crds::{CheckpointRef, JobPhase, MultiTaskTrainingJobSpec, MultiTaskTrainingJobStatus};
use mtl_storage::Manifest;

use super::*;
use crate::backend::{AttemptState, ObservedAttempt};
use crate::status::{cond, find};

const T0: &str = "2026-01-01T00:00:00Z";
const POLL: Duration = Duration::from_secs(30);

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn spec() -> MultiTaskTrainingJobSpec {
    mtl_crds::parse_job(
        "job.yaml",
        r#"
image: trainer:1
model: { pretrained: gs://m/roberta }
tasks:
  - { name: stsb, type: regression, train: gs://d/stsb.tsv, format: glueTsv, textFields: [s1, s2], labelField: score }
checkpoints: { uri: gs://b/out }
runPolicy: { backoffLimit: 2 }
"#,
    )
    .unwrap()
}

fn status(phase: JobPhase, attempt: u32) -> MultiTaskTrainingJobStatus {
    MultiTaskTrainingJobStatus {
        phase,
        attempt,
        start_time: (attempt > 0).then(|| T0.to_string()),
        pod_name: (attempt > 0).then(|| format!("train-{attempt}")),
        ..Default::default()
    }
}

/// `s` with `restarts` and `preemptions` counted.
fn with(
    mut s: MultiTaskTrainingJobStatus,
    restarts: u32,
    preemptions: u32,
) -> MultiTaskTrainingJobStatus {
    s.restarts = restarts;
    s.preemptions = preemptions;
    s
}

fn pod(attempt: u32, state: AttemptState) -> ObservedAttempt {
    ObservedAttempt::single(attempt, format!("train-{attempt}"), state, false)
}

fn terminating(a: ObservedAttempt) -> ObservedAttempt {
    ObservedAttempt::single(a.attempt, a.name, a.state, true)
}

fn failed(msg: &str) -> AttemptState {
    AttemptState::Failed {
        reason: "Error".into(),
        message: msg.into(),
    }
}

fn preempted() -> AttemptState {
    AttemptState::Disrupted {
        reason: "PreemptionByScheduler".into(),
        message: "".into(),
    }
}

fn manifest(steps: &[u64]) -> Manifest {
    Manifest {
        checkpoints: steps
            .iter()
            .map(|&step| CheckpointRef {
                step,
                uri: format!("gs://b/out/checkpoint-{step}"),
                time: T0.into(),
                metrics: BTreeMap::from([("stsb/pearson".to_string(), step as f64 / 1000.0)]),
            })
            .collect(),
        ..Manifest::default()
    }
}

fn run(
    spec: &MultiTaskTrainingJobSpec,
    status: &MultiTaskTrainingJobStatus,
    attempt: Option<ObservedAttempt>,
    manifest: ManifestRead,
    now: &str,
) -> Decision {
    run_in_queue(false, spec, status, attempt, manifest, now)
}

/// As [`run`], for a job in a Kueue queue when `queued`.
fn run_in_queue(
    queued: bool,
    spec: &MultiTaskTrainingJobSpec,
    status: &MultiTaskTrainingJobStatus,
    attempt: Option<ObservedAttempt>,
    manifest: ManifestRead,
    now: &str,
) -> Decision {
    let describe = |n: u32| format!("pod train-{n}");
    decide(&Observation {
        queued,
        spec,
        generation: Some(7),
        status,
        attempt: attempt.as_ref(),
        manifest: &manifest,
        now: t(now),
        describe: &describe,
        poll_interval: POLL,
        backoff: Backoff::default(),
    })
}

fn reasons(d: &Decision) -> Vec<&'static str> {
    d.notes.iter().map(|n| n.reason).collect()
}

struct Row {
    name: &'static str,
    status: MultiTaskTrainingJobStatus,
    attempt: Option<ObservedAttempt>,
    // expectations
    actions: Vec<Action>,
    phase: JobPhase,
    attempt_no: u32,
    restarts: u32,
    preemptions: u32,
    notes: Vec<&'static str>,
}

fn check(spec: &MultiTaskTrainingJobSpec, rows: Vec<Row>, now: &str) {
    for row in rows {
        let d = run(
            spec,
            &row.status,
            row.attempt.clone(),
            ManifestRead::Missing,
            now,
        );
        let s = &d.status;
        assert_eq!(d.actions, row.actions, "{}: actions", row.name);
        assert_eq!(s.phase, row.phase, "{}: phase", row.name);
        assert_eq!(s.attempt, row.attempt_no, "{}: attempt", row.name);
        assert_eq!(s.restarts, row.restarts, "{}: restarts", row.name);
        assert_eq!(s.preemptions, row.preemptions, "{}: preemptions", row.name);
        assert_eq!(reasons(&d), row.notes, "{}: notes", row.name);
        assert_eq!(
            s.observed_generation,
            Some(7),
            "{}: observedGeneration",
            row.name
        );
    }
}

#[test]
fn attempt_lifecycle_table() {
    use Action::*;
    use AttemptState::*;
    let spec = spec();
    let rows = vec![
        Row {
            name: "new job starts attempt 1",
            status: MultiTaskTrainingJobStatus::default(),
            attempt: None,
            actions: vec![StartAttempt(1)],
            phase: JobPhase::Pending,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Created"],
        },
        Row {
            name: "pending pod: nothing to do",
            status: status(JobPhase::Pending, 1),
            attempt: Some(pod(1, Pending)),
            actions: vec![],
            phase: JobPhase::Pending,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "pod starts running: a condition, no event",
            status: status(JobPhase::Pending, 1),
            attempt: Some(pod(1, Running)),
            actions: vec![],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "still running: no event",
            status: status(JobPhase::Running, 1),
            attempt: Some(pod(1, Running)),
            actions: vec![],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "pod succeeded",
            status: status(JobPhase::Running, 1),
            attempt: Some(pod(1, Succeeded)),
            actions: vec![],
            phase: JobPhase::Succeeded,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Succeeded"],
        },
        Row {
            name: "failed pod counted, replaced after its backoff",
            status: status(JobPhase::Running, 1),
            attempt: Some(pod(1, failed("CUDA out of memory"))),
            actions: vec![],
            phase: JobPhase::Restarting,
            attempt_no: 1,
            restarts: 1,
            preemptions: 0,
            notes: vec!["Restarting"],
        },
        Row {
            name: "last allowed restart",
            status: with(status(JobPhase::Running, 2), 1, 0),
            attempt: Some(pod(2, failed("boom"))),
            actions: vec![],
            phase: JobPhase::Restarting,
            attempt_no: 2,
            restarts: 2,
            preemptions: 0,
            notes: vec!["Restarting"],
        },
        Row {
            name: "failure past backoffLimit fails the job",
            status: with(status(JobPhase::Running, 3), 2, 0),
            attempt: Some(pod(3, failed("boom"))),
            actions: vec![],
            phase: JobPhase::Failed,
            attempt_no: 3,
            restarts: 2,
            preemptions: 0,
            notes: vec!["BackoffLimitExceeded"],
        },
        Row {
            name: "preempted pod replaced without spending backoffLimit",
            status: with(status(JobPhase::Running, 3), 2, 0),
            attempt: Some(pod(3, preempted())),
            actions: vec![StartAttempt(4)],
            phase: JobPhase::Restarting,
            attempt_no: 4,
            restarts: 2,
            preemptions: 1,
            notes: vec!["Preempted"],
        },
        Row {
            name: "pod gone while running counts as preemption",
            status: status(JobPhase::Running, 1),
            attempt: None,
            actions: vec![StartAttempt(2)],
            phase: JobPhase::Restarting,
            attempt_no: 2,
            restarts: 0,
            preemptions: 1,
            notes: vec!["Preempted"],
        },
        Row {
            name: "terminating pod: wait before replacing",
            status: status(JobPhase::Running, 1),
            attempt: Some(terminating(pod(1, Running))),
            actions: vec![],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "replacement pending stays Restarting",
            status: with(status(JobPhase::Restarting, 2), 0, 1),
            attempt: Some(pod(2, Pending)),
            actions: vec![],
            phase: JobPhase::Restarting,
            attempt_no: 2,
            restarts: 0,
            preemptions: 1,
            notes: vec![],
        },
        Row {
            name: "replacement running",
            status: with(status(JobPhase::Restarting, 2), 0, 1),
            attempt: Some(pod(2, Running)),
            actions: vec![],
            phase: JobPhase::Running,
            attempt_no: 2,
            restarts: 0,
            preemptions: 1,
            notes: vec![],
        },
        Row {
            name: "finished job: nothing more",
            status: status(JobPhase::Succeeded, 1),
            attempt: Some(pod(1, Succeeded)),
            actions: vec![],
            phase: JobPhase::Succeeded,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "failed job with a pod still running stops it",
            status: status(JobPhase::Failed, 1),
            attempt: Some(pod(1, Running)),
            actions: vec![StopAttempt {
                attempt: 1,
                name: "train-1".into(),
            }],
            phase: JobPhase::Failed,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
    ];
    check(&spec, rows, "2026-01-01T01:00:00Z");
}

#[test]
fn suspend_and_resume_table() {
    use Action::*;
    use AttemptState::*;
    let mut suspended = spec();
    suspended.run_policy.suspend = true;
    let rows = vec![
        Row {
            name: "suspend a running job: stop the pod, keep status",
            status: status(JobPhase::Running, 1),
            attempt: Some(pod(1, Running)),
            actions: vec![StopAttempt {
                attempt: 1,
                name: "train-1".into(),
            }],
            phase: JobPhase::Suspended,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Suspended"],
        },
        Row {
            name: "suspended, pod terminating: no second delete",
            status: status(JobPhase::Suspended, 1),
            attempt: Some(terminating(pod(1, Running))),
            actions: vec![],
            phase: JobPhase::Suspended,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "suspended, pod gone",
            status: status(JobPhase::Suspended, 1),
            attempt: None,
            actions: vec![],
            phase: JobPhase::Suspended,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "created suspended: no pod at all",
            status: MultiTaskTrainingJobStatus::default(),
            attempt: None,
            actions: vec![],
            phase: JobPhase::Suspended,
            attempt_no: 0,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Suspended"],
        },
        Row {
            name: "success racing with suspend wins",
            status: status(JobPhase::Running, 1),
            attempt: Some(pod(1, Succeeded)),
            actions: vec![],
            phase: JobPhase::Succeeded,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Succeeded"],
        },
    ];
    check(&suspended, rows, "2026-01-01T01:00:00Z");

    let resumed = spec();
    let rows = vec![
        Row {
            name: "resume starts a new attempt, counters untouched",
            status: status(JobPhase::Suspended, 1),
            attempt: None,
            actions: vec![StartAttempt(2)],
            phase: JobPhase::Restarting,
            attempt_no: 2,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Resumed"],
        },
        Row {
            name: "resume waits for the old pod to finish terminating",
            status: status(JobPhase::Suspended, 1),
            attempt: Some(terminating(pod(1, Running))),
            actions: vec![],
            phase: JobPhase::Suspended,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        // The pod cache may not show the suspended attempt's deletion yet: the next attempt
        // starts only once the old one is seen gone, never beside it.
        Row {
            name: "resume waits for an old pod the cache still shows running",
            status: status(JobPhase::Suspended, 1),
            attempt: Some(pod(1, Running)),
            actions: vec![StopAttempt {
                attempt: 1,
                name: "train-1".into(),
            }],
            phase: JobPhase::Suspended,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "resume a job created suspended starts attempt 1",
            status: MultiTaskTrainingJobStatus {
                phase: JobPhase::Suspended,
                ..Default::default()
            },
            attempt: None,
            actions: vec![StartAttempt(1)],
            phase: JobPhase::Pending,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Resumed"],
        },
    ];
    check(&resumed, rows, "2026-01-01T01:00:00Z");
}

#[test]
fn suspended_status_keeps_checkpoints_and_conditions() {
    let mut spec = spec();
    spec.run_policy.suspend = true;
    let mut st = status(JobPhase::Running, 1);
    st.step = Some(300);
    let d = run(
        &spec,
        &st,
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Found(manifest(&[300])),
        T0,
    );
    assert_eq!(d.status.step, Some(300));
    assert!(crate::status::is_true(&d.status, cond::SUSPENDED));
    let spec = super::tests::spec();
    let d2 = run(&spec, &d.status, None, ManifestRead::Missing, T0);
    let c = find(&d2.status, cond::SUSPENDED).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "JobResumed")
    );
}

#[test]
fn deadline_and_ttl_table() {
    use Action::*;
    let mut spec = spec();
    spec.run_policy.active_deadline_seconds = Some(3600);
    spec.run_policy.ttl_seconds_after_finished = Some(600);

    // Within the deadline: requeued no later than the deadline.
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T00:59:50Z",
    );
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(10)));

    // Past it: Failed with DeadlineExceeded and the pod stopped.
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T01:00:00Z",
    );
    assert_eq!(
        d.actions,
        vec![StopAttempt {
            attempt: 1,
            name: "train-1".into()
        }]
    );
    assert_eq!(d.status.phase, JobPhase::Failed);
    let failed = find(&d.status, cond::FAILED).unwrap();
    assert_eq!(failed.reason, "DeadlineExceeded");
    assert_eq!(
        d.status.completion_time.as_deref(),
        Some("2026-01-01T01:00:00Z")
    );
    // ... and the TTL clock starts.
    assert_eq!(d.requeue_after, Some(Duration::from_secs(600)));

    // A suspended job is not judged by the deadline.
    let mut suspended = spec.clone();
    suspended.run_policy.suspend = true;
    let d = run(
        &suspended,
        &status(JobPhase::Suspended, 1),
        None,
        ManifestRead::Missing,
        "2026-01-02T00:00:00Z",
    );
    assert_eq!(d.status.phase, JobPhase::Suspended);

    // TTL: before expiry requeue for the rest; after expiry delete the job.
    let mut done = status(JobPhase::Succeeded, 1);
    done.completion_time = Some("2026-01-01T00:30:00Z".into());
    let d = run(
        &spec,
        &done,
        Some(pod(1, AttemptState::Succeeded)),
        ManifestRead::NotRead,
        "2026-01-01T00:35:00Z",
    );
    assert_eq!(
        (d.actions.clone(), d.requeue_after),
        (vec![], Some(Duration::from_secs(300)))
    );
    let d = run(
        &spec,
        &done,
        None,
        ManifestRead::NotRead,
        "2026-01-01T00:40:00Z",
    );
    assert_eq!(d.actions, vec![DeleteJob]);
    assert_eq!(reasons(&d), ["TTLExpired"]);

    // No TTL: a finished job waits for changes only.
    let d = run(
        &self::spec(),
        &done,
        None,
        ManifestRead::NotRead,
        "2026-01-09T00:00:00Z",
    );
    assert_eq!((d.actions, d.requeue_after), (vec![], None));
}

#[test]
fn termination_message_goes_into_failed_condition() {
    let mut st = status(JobPhase::Running, 3);
    st.restarts = 2;
    let d = run(
        &spec(),
        &st,
        Some(pod(3, failed("tasks[0]: cannot read gs://d/stsb.tsv: 403"))),
        ManifestRead::Missing,
        T0,
    );
    let c = find(&d.status, cond::FAILED).unwrap();
    assert_eq!(c.status, "True");
    assert_eq!(c.reason, "BackoffLimitExceeded");
    assert_eq!(c.message, "tasks[0]: cannot read gs://d/stsb.tsv: 403");
    assert!(d.notes[0].warning);
    assert!(d.status.completion_time.is_some());
    // Restart messages name the pod, the cause and the budget.
    let d = run(
        &spec(),
        &status(JobPhase::Running, 1),
        Some(pod(1, failed("OOM"))),
        ManifestRead::Missing,
        T0,
    );
    let c = find(&d.status, cond::RESTARTING).unwrap();
    assert!(
        c.message.contains("pod train-1 failed (Error: OOM)"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("restart 1 of backoffLimit 2"),
        "{}",
        c.message
    );
}

#[test]
fn conditions_track_the_lifecycle() {
    let spec = spec();
    let d1 = run(
        &spec,
        &MultiTaskTrainingJobStatus::default(),
        None,
        ManifestRead::NotRead,
        T0,
    );
    assert!(crate::status::is_true(&d1.status, cond::CREATED));
    assert_eq!(d1.status.start_time.as_deref(), Some(T0));
    let d2 = run(
        &spec,
        &d1.status,
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T00:05:00Z",
    );
    let running = find(&d2.status, cond::RUNNING).unwrap();
    assert_eq!(
        (
            running.status.as_str(),
            running.last_transition_time.as_str()
        ),
        ("True", "2026-01-01T00:05:00Z")
    );
    // A later poll leaves lastTransitionTime alone.
    let d3 = run(
        &spec,
        &d2.status,
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T00:06:00Z",
    );
    assert_eq!(
        find(&d3.status, cond::RUNNING)
            .unwrap()
            .last_transition_time,
        "2026-01-01T00:05:00Z"
    );
    assert_eq!(
        d3.status, d2.status,
        "a quiet poll changes nothing, so no status write"
    );
    // Preempted: Running flips to False, Restarting to True.
    let d4 = run(
        &spec,
        &d3.status,
        Some(pod(1, preempted())),
        ManifestRead::Missing,
        "2026-01-01T00:07:00Z",
    );
    assert_eq!(find(&d4.status, cond::RUNNING).unwrap().status, "False");
    assert!(crate::status::is_true(&d4.status, cond::RESTARTING));
    let d5 = run(
        &spec,
        &d4.status,
        Some(pod(2, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T00:08:00Z",
    );
    assert_eq!(find(&d5.status, cond::RESTARTING).unwrap().status, "False");
    assert_eq!(d5.status.phase, JobPhase::Running);
    let d6 = run(
        &spec,
        &d5.status,
        Some(pod(2, AttemptState::Succeeded)),
        ManifestRead::Missing,
        "2026-01-01T00:09:00Z",
    );
    assert!(crate::status::is_true(&d6.status, cond::SUCCEEDED));
    assert_eq!(find(&d6.status, cond::RUNNING).unwrap().status, "False");
    assert_eq!(
        d6.status.completion_time.as_deref(),
        Some("2026-01-01T00:09:00Z")
    );
}

#[test]
fn manifest_table() {
    let spec = spec();
    let running = status(JobPhase::Running, 1);
    let live = Some(pod(1, AttemptState::Running));

    // New checkpoint: status fills and an event says so.
    let d = run(
        &spec,
        &running,
        live.clone(),
        ManifestRead::Found(manifest(&[100, 200])),
        T0,
    );
    assert_eq!(d.status.step, Some(200));
    assert_eq!(d.status.checkpoints.len(), 2);
    assert_eq!(
        d.status.latest_checkpoint.as_deref(),
        Some("gs://b/out/checkpoint-200")
    );
    assert_eq!(d.status.metrics["stsb/pearson"], 0.2);
    assert_eq!(reasons(&d), ["CheckpointCommitted"]);

    // Same manifest again: no event.
    let d2 = run(
        &spec,
        &d.status,
        live.clone(),
        ManifestRead::Found(manifest(&[100, 200])),
        T0,
    );
    assert!(d2.notes.is_empty());

    // Read error: a condition and one warning event, status otherwise kept; no crash.
    let d3 = run(
        &spec,
        &d2.status,
        live.clone(),
        ManifestRead::Failed("gs://b/out/checkpoints.json: 403".into()),
        T0,
    );
    let c = find(&d3.status, cond::CHECKPOINTS_READABLE).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ManifestReadFailed")
    );
    assert_eq!(d3.status.step, Some(200));
    assert_eq!(reasons(&d3), ["ManifestReadFailed"]);
    let d4 = run(
        &spec,
        &d3.status,
        live.clone(),
        ManifestRead::Failed("again".into()),
        T0,
    );
    assert!(
        d4.notes.is_empty(),
        "the warning is not repeated every poll"
    );
    let d5 = run(
        &spec,
        &d4.status,
        live,
        ManifestRead::Found(manifest(&[100, 200, 300])),
        T0,
    );
    assert_eq!(
        find(&d5.status, cond::CHECKPOINTS_READABLE).unwrap().status,
        "True"
    );

    // Final read at the end: the reconcile that sees success also takes the last checkpoint.
    let d6 = run(
        &spec,
        &d5.status,
        Some(pod(1, AttemptState::Succeeded)),
        ManifestRead::Found(manifest(&[100, 200, 300, 400])),
        T0,
    );
    assert_eq!(
        (d6.status.phase, d6.status.step),
        (JobPhase::Succeeded, Some(400))
    );
    assert_eq!(reasons(&d6), ["CheckpointCommitted", "Succeeded"]);
    assert!(!needs_manifest(&d6.status));
    assert!(needs_manifest(&d5.status));
    assert!(!needs_manifest(&MultiTaskTrainingJobStatus::default()));
}

#[test]
fn requeue_table() {
    let spec = spec();
    let cases: Vec<(
        MultiTaskTrainingJobStatus,
        Option<ObservedAttempt>,
        Option<Duration>,
    )> = vec![
        (
            status(JobPhase::Pending, 1),
            Some(pod(1, AttemptState::Pending)),
            Some(POLL),
        ),
        (
            status(JobPhase::Running, 1),
            Some(pod(1, AttemptState::Running)),
            Some(POLL),
        ),
        (
            status(JobPhase::Running, 1),
            Some(terminating(pod(1, AttemptState::Running))),
            Some(TERMINATING_POLL),
        ),
        (status(JobPhase::Succeeded, 1), None, None),
    ];
    for (st, a, want) in cases {
        let d = run(&spec, &st, a.clone(), ManifestRead::Missing, T0);
        assert_eq!(d.requeue_after, want, "{st:?} {a:?}");
    }
}

/// Attempt 1 of a job with several workers, `running` of them running and `unstopped` of them
/// still up and not yet asked to stop.
fn workers(
    state: AttemptState,
    terminating: bool,
    running: u32,
    unstopped: u32,
) -> ObservedAttempt {
    ObservedAttempt {
        attempt: 1,
        name: "train-1-0".into(),
        state,
        terminating,
        workers: 3,
        running,
        unstopped,
        waiting: None,
    }
}

#[test]
fn an_attempt_of_several_workers_ends_for_all_and_counts_once() {
    use Action::*;
    use AttemptState::*;
    let mut spec = spec();
    spec.workers = 3;
    let stop = StopAttempt {
        attempt: 1,
        name: "train-1-0".into(),
    };
    let rows = vec![
        Row {
            name: "one worker failed, two still up: stop them, count nothing yet",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(failed("boom"), true, 2, 2)),
            actions: vec![stop.clone()],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "the others are terminating: wait, no second delete",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(failed("boom"), true, 0, 0)),
            actions: vec![],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "all down: the failure spends backoff once (the next after its backoff)",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(failed("boom"), false, 0, 0)),
            actions: vec![],
            phase: JobPhase::Restarting,
            attempt_no: 1,
            restarts: 1,
            preemptions: 0,
            notes: vec!["Restarting"],
        },
        Row {
            name: "one worker preempted, the others still up: stop them",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(preempted(), true, 2, 2)),
            actions: vec![stop.clone()],
            phase: JobPhase::Running,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
        Row {
            name: "all down after a preemption: one preemption",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(preempted(), false, 0, 0)),
            actions: vec![StartAttempt(2)],
            phase: JobPhase::Restarting,
            attempt_no: 2,
            restarts: 0,
            preemptions: 1,
            notes: vec!["Preempted"],
        },
        Row {
            name: "rank 0 succeeded: the job did, stragglers stopped",
            status: status(JobPhase::Running, 1),
            attempt: Some(workers(Succeeded, false, 1, 1)),
            actions: vec![stop.clone()],
            phase: JobPhase::Succeeded,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec!["Succeeded"],
        },
        Row {
            name: "two of three running: still pending",
            status: status(JobPhase::Pending, 1),
            attempt: Some(workers(Pending, false, 2, 3)),
            actions: vec![],
            phase: JobPhase::Pending,
            attempt_no: 1,
            restarts: 0,
            preemptions: 0,
            notes: vec![],
        },
    ];
    check(&spec, rows, T0);

    // The running count follows the workers, and goes when the job is finished.
    let seen = |a: ObservedAttempt, phase| {
        run(&spec, &status(phase, 1), Some(a), ManifestRead::Missing, T0)
            .status
            .running_workers
    };
    assert_eq!(
        seen(workers(Pending, false, 2, 3), JobPhase::Pending),
        Some(2)
    );
    assert_eq!(
        seen(workers(Running, false, 3, 3), JobPhase::Running),
        Some(3)
    );
    assert_eq!(
        seen(workers(Succeeded, false, 0, 0), JobPhase::Running),
        None
    );
    // A waiting teardown looks again soon.
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(workers(failed("boom"), true, 0, 0)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.requeue_after, Some(TERMINATING_POLL));
    // One worker: no count in status.
    let d = run(
        &self::spec(),
        &status(JobPhase::Running, 1),
        Some(pod(1, Running)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.status.running_workers, None);
}

/// An attempt of several workers whose workers do not all run within
/// `runPolicy.startupTimeoutSeconds` is stopped and replaced as a disruption: the running ones
/// would hold their GPUs in the rendezvous until --dist-timeout and then fail.
#[test]
fn a_gang_that_does_not_start_in_time_is_replaced_as_a_disruption() {
    use Action::*;
    let mut spec = spec();
    spec.workers = 3;
    spec.run_policy.startup_timeout_seconds = Some(600);
    let created = run(
        &spec,
        &MultiTaskTrainingJobStatus::default(),
        None,
        ManifestRead::NotRead,
        T0,
    );
    assert_eq!(created.status.attempt_start_time.as_deref(), Some(T0));
    let mut st = created.status;
    st.phase = JobPhase::Pending;
    // Two of three running, 599 s in: wait, and look again when the time is up.
    let d = run(
        &spec,
        &st,
        Some(workers(AttemptState::Pending, false, 2, 3)),
        ManifestRead::Missing,
        "2026-01-01T00:09:59Z",
    );
    assert_eq!(d.actions, []);
    assert_eq!(d.requeue_after, Some(Duration::from_secs(1)));
    // 600 s: stopped, the disruption kept.
    let d = run(
        &spec,
        &st,
        Some(workers(AttemptState::Pending, false, 2, 3)),
        ManifestRead::Missing,
        "2026-01-01T00:10:00Z",
    );
    assert_eq!(
        d.actions,
        [StopAttempt {
            attempt: 1,
            name: "train-1-0".into()
        }]
    );
    let kept = d.status.attempt_disruption.clone().unwrap();
    assert_eq!(kept.reason, "StartupTimeout");
    assert!(
        kept.message
            .contains("2 of 3 workers were running 600s after the attempt started"),
        "{}",
        kept.message
    );
    assert_eq!(reasons(&d), ["StartupTimeout"]);
    // The stopped workers exit on SIGTERM or with a lost rank: one preemption.
    let d = run(
        &spec,
        &d.status,
        Some(workers(failed("lost rank 2"), false, 0, 0)),
        ManifestRead::Missing,
        "2026-01-01T00:10:30Z",
    );
    assert_eq!(d.actions, [StartAttempt(2)]);
    assert_eq!((d.status.restarts, d.status.preemptions), (0, 1));
    assert_eq!(
        d.status.attempt_start_time.as_deref(),
        Some("2026-01-01T00:10:30Z")
    );
    // One worker: no start-up timeout (nothing waits in a rendezvous).
    let one = self::spec();
    let d = run(
        &one,
        &status(JobPhase::Pending, 1),
        Some(pod(1, AttemptState::Pending)),
        ManifestRead::Missing,
        "2026-01-02T00:00:00Z",
    );
    assert_eq!(d.actions, []);
}

/// A job in a Kueue queue is not running while Kueue holds it: `activeDeadlineSeconds`
/// counts from when its attempt was first admitted (as a Job's `startTime` is set when Kueue
/// unsuspends it), not from when the operator created the gated pod.
#[test]
fn a_queued_jobs_deadline_counts_from_its_admission() {
    let mut spec = spec();
    spec.run_policy.active_deadline_seconds = Some(3600);
    let queued = ObservedAttempt {
        waiting: Some(crate::backend::Waiting {
            reason: "Queued".into(),
            message: "waiting for Kueue to admit it (queue team-a)".into(),
        }),
        ..pod(1, AttemptState::Pending)
    };
    let created = run_in_queue(
        true,
        &spec,
        &MultiTaskTrainingJobStatus::default(),
        None,
        ManifestRead::NotRead,
        T0,
    );
    assert_eq!(created.actions, [Action::StartAttempt(1)]);
    assert_eq!(created.status.start_time, None, "not started while queued");
    // Two hours in the queue: no deadline yet.
    let later = "2026-01-01T02:00:00Z";
    let d = run_in_queue(
        true,
        &spec,
        &created.status,
        Some(queued),
        ManifestRead::Missing,
        later,
    );
    assert_eq!(d.status.phase, JobPhase::Pending);
    assert_eq!(d.status.start_time, None);
    // Admitted: the clock starts.
    let d = run_in_queue(
        true,
        &spec,
        &d.status,
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        later,
    );
    assert_eq!(d.status.phase, JobPhase::Running);
    assert_eq!(d.status.start_time.as_deref(), Some(later));
    // A job outside a queue starts its clock when its first attempt is created, as before.
    let plain = run(
        &spec,
        &MultiTaskTrainingJobStatus::default(),
        None,
        ManifestRead::NotRead,
        T0,
    );
    assert_eq!(plain.status.start_time.as_deref(), Some(T0));
}

/// Input the trainer says no retry can fix fails the job at once, backoffLimit untouched, with
/// the trainer's words; with several workers, once the others are stopped.
#[test]
fn invalid_input_fails_the_job_without_a_retry() {
    use Action::*;
    let invalid = || AttemptState::InvalidInput {
        message: "rte/train.tsv:3: label \"neutral\" is unknown".into(),
    };
    let d = run(
        &spec(),
        &status(JobPhase::Running, 1),
        Some(pod(1, invalid())),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.actions, []);
    assert_eq!((d.status.phase, d.status.restarts), (JobPhase::Failed, 0));
    let failed = find(&d.status, cond::FAILED).unwrap();
    assert_eq!(failed.reason, "InvalidInput");
    assert_eq!(
        failed.message,
        "rte/train.tsv:3: label \"neutral\" is unknown"
    );
    assert_eq!(reasons(&d), ["InvalidInput"]);

    let mut three = spec();
    three.workers = 3;
    let d = run(
        &three,
        &status(JobPhase::Running, 1),
        Some(workers(invalid(), true, 2, 2)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(
        d.actions,
        [StopAttempt {
            attempt: 1,
            name: "train-1-0".into()
        }]
    );
    assert_eq!(d.status.phase, JobPhase::Running);
}

/// A worker's disruption seen while its peers are up is kept in status: its pod vanishing
/// and its peers failing on the lost rank, which follow from it, do not make it a failure.
#[test]
fn a_disruption_is_kept_while_the_attempt_winds_down() {
    use Action::*;
    use AttemptState::*;
    let mut spec = spec();
    spec.workers = 3;
    let lost = || Disrupted {
        reason: "DeletionByTaintManager".into(),
        message: "node unreachable".into(),
    };
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(workers(lost(), true, 3, 2)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(
        d.actions,
        [StopAttempt {
            attempt: 1,
            name: "train-1-0".into()
        }]
    );
    let kept = d.status.attempt_disruption.clone().expect("kept in status");
    assert_eq!(
        (kept.attempt, kept.reason.as_str(), kept.message.as_str()),
        (1, "DeletionByTaintManager", "node unreachable")
    );
    assert_eq!((d.status.restarts, d.status.preemptions), (0, 0));

    // The pod was force-deleted and the peers failed on the lost rank: still a preemption.
    let d = run(
        &spec,
        &d.status,
        Some(workers(failed("lost rank 1"), false, 0, 0)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.actions, [StartAttempt(2)]);
    assert_eq!((d.status.restarts, d.status.preemptions), (0, 1));
    assert_eq!(reasons(&d), ["Preempted"]);
    let restarting = find(&d.status, cond::RESTARTING).unwrap();
    assert!(
        restarting
            .message
            .contains("DeletionByTaintManager: node unreachable"),
        "{}",
        restarting.message
    );
    // The next attempt starts with a clean slate.
    assert_eq!(d.status.attempt_disruption, None);

    // A disruption of an earlier attempt says nothing about the current one.
    let mut st = status(JobPhase::Running, 2);
    st.attempt_disruption = kept.into();
    let mut two = workers(failed("boom"), false, 0, 0);
    two.attempt = 2;
    let d = run(&spec, &st, Some(two), ManifestRead::Missing, T0);
    assert_eq!((d.status.restarts, d.status.preemptions), (1, 0));
}

#[test]
fn early_stopped_run_succeeds_with_its_reason_best_and_model_in_status() {
    let spec = spec();
    let mut m = manifest(&[100, 200, 300]);
    m.best = Some(mtl_crds::BestCheckpoint {
        step: 100,
        uri: "gs://b/out/checkpoint-100".into(),
        metric: "stsb/pearson".into(),
        value: 0.1,
    });
    m.end = Some(mtl_crds::RunEnd {
        reason: mtl_crds::END_EARLY_STOPPED.into(),
        step: 300,
        message: "stsb/pearson did not improve for 2 evaluations".into(),
    });
    m.model = Some("gs://b/out/model".into());
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(pod(1, AttemptState::Succeeded)),
        ManifestRead::Found(m.clone()),
        T0,
    );
    assert_eq!(d.status.phase, JobPhase::Succeeded);
    let c = find(&d.status, cond::SUCCEEDED).unwrap();
    assert_eq!(c.reason, "EarlyStopped");
    assert!(
        c.message.contains("step 300") && c.message.contains("did not improve"),
        "{}",
        c.message
    );
    assert_eq!(d.status.best_checkpoint, m.best);
    assert_eq!(d.status.model.as_deref(), Some("gs://b/out/model"));
    assert!(reasons(&d).contains(&"EarlyStopped"), "{:?}", reasons(&d));

    // A run that trained every step keeps the plain reason.
    m.end.as_mut().unwrap().reason = mtl_crds::END_COMPLETED.into();
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(pod(1, AttemptState::Succeeded)),
        ManifestRead::Found(m),
        T0,
    );
    assert_eq!(
        find(&d.status, cond::SUCCEEDED).unwrap().reason,
        "Succeeded"
    );
}

#[test]
fn failed_attempts_back_off_as_kubernetes_job() {
    let b = Backoff::default();
    let secs: Vec<u64> = [1, 2, 3, 4, 5, 6, 7, 40]
        .iter()
        .map(|&n| b.delay(n).as_secs())
        .collect();
    assert_eq!(secs, [10, 20, 40, 80, 160, 320, 360, 360]);
}

#[test]
fn a_failed_attempt_is_replaced_once_its_backoff_has_passed() {
    use Action::*;
    let spec = spec();
    let failed_pod = || Some(pod(1, failed("boom")));
    // Seen failing at T0: counted once, the next attempt due 10 s later.
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        failed_pod(),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.status.restarts, 1);
    assert_eq!(
        d.status.next_attempt_time.as_deref(),
        Some("2026-01-01T00:00:10Z")
    );
    assert!(d.requeue_after.unwrap() <= Duration::from_secs(10));
    let c = find(&d.status, cond::RESTARTING).unwrap();
    assert!(
        c.message.contains("starting pod train-2 in 10s"),
        "{}",
        c.message
    );
    // Looked at again before then: nothing more is counted or started.
    let early = run(
        &spec,
        &d.status,
        failed_pod(),
        ManifestRead::Missing,
        "2026-01-01T00:00:04Z",
    );
    assert_eq!((early.actions.clone(), early.status.restarts), (vec![], 1));
    assert!(reasons(&early).is_empty(), "{:?}", reasons(&early));
    assert_eq!(early.requeue_after, Some(Duration::from_secs(6)));
    // Due: the next attempt starts, even if the failed pod is gone meanwhile (not a
    // preemption).
    for attempt in [failed_pod(), None] {
        let due = run(
            &spec,
            &d.status,
            attempt,
            ManifestRead::Missing,
            "2026-01-01T00:00:10Z",
        );
        assert_eq!(due.actions, vec![StartAttempt(2)]);
        assert_eq!((due.status.restarts, due.status.preemptions), (1, 0));
        assert_eq!(due.status.next_attempt_time, None);
    }
    // A pod cache behind the read that saw the failure (the failed pod was first read with a
    // GET) shows the attempt pending or running again: stale, nothing changes. It must not
    // turn the job Running, nor the next attempt start from a Running job (which its pending
    // pod would then show as Pending instead of Restarting).
    for stale in [AttemptState::Running, AttemptState::Pending] {
        let seen = run(
            &spec,
            &d.status,
            Some(pod(1, stale.clone())),
            ManifestRead::Missing,
            "2026-01-01T00:00:04Z",
        );
        assert_eq!(seen.actions, vec![], "{stale:?}");
        assert_eq!(seen.status.phase, JobPhase::Restarting, "{stale:?}");
        assert_eq!(seen.status.next_attempt_time, d.status.next_attempt_time);
        assert!(reasons(&seen).is_empty(), "{:?}", reasons(&seen));
        let due = run(
            &spec,
            &d.status,
            Some(pod(1, stale.clone())),
            ManifestRead::Missing,
            "2026-01-01T00:00:10Z",
        );
        assert_eq!(due.actions, vec![StartAttempt(2)], "{stale:?}");
        assert_eq!(due.status.phase, JobPhase::Restarting, "{stale:?}");
    }
    // The second failure waits twice as long.
    let mut st = with(status(JobPhase::Running, 2), 1, 0);
    st.start_time = Some(T0.into());
    let d = run(
        &spec,
        &st,
        Some(pod(2, failed("boom"))),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(
        d.status.next_attempt_time.as_deref(),
        Some("2026-01-01T00:00:20Z")
    );
}

#[test]
fn the_deadline_counts_from_the_latest_resume() {
    use Action::*;
    let mut spec = spec();
    spec.run_policy.active_deadline_seconds = Some(3600);
    // Suspended an hour into the job, resumed two hours after it started.
    let mut st = status(JobPhase::Suspended, 1);
    st.start_time = Some(T0.into());
    let later = "2026-01-01T02:00:00Z";
    let d = run(&spec, &st, None, ManifestRead::Missing, later);
    assert_eq!(d.actions, vec![StartAttempt(2)]);
    assert_ne!(d.status.phase, JobPhase::Failed);
    assert_eq!(d.status.start_time.as_deref(), Some(later));
    // The deadline then counts from the resume.
    let d = run(
        &spec,
        &d.status,
        Some(pod(2, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T02:59:00Z",
    );
    assert_eq!(d.status.phase, JobPhase::Running);
    let d = run(
        &spec,
        &d.status,
        Some(pod(2, AttemptState::Running)),
        ManifestRead::Missing,
        "2026-01-01T03:00:01Z",
    );
    assert_eq!(d.status.phase, JobPhase::Failed);
}

#[test]
fn preemptions_past_max_preemptions_fail_the_job() {
    use Action::*;
    let mut spec = spec();
    spec.run_policy.max_preemptions = 2;
    let d = run(
        &spec,
        &with(status(JobPhase::Running, 2), 0, 1),
        Some(pod(2, preempted())),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(
        (d.actions.clone(), d.status.preemptions),
        (vec![StartAttempt(3)], 2)
    );
    let d = run(
        &spec,
        &with(status(JobPhase::Running, 3), 0, 2),
        Some(pod(3, preempted())),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.status.phase, JobPhase::Failed);
    let c = find(&d.status, cond::FAILED).unwrap();
    assert_eq!(c.reason, "PreemptionLimitExceeded");
    assert!(c.message.contains("maxPreemptions 2"), "{}", c.message);
}

#[test]
fn an_attempt_cancelled_outside_the_operator_fails_the_job() {
    let spec = spec();
    let cancelled = AttemptState::Cancelled {
        message: "Vertex AI CustomJob ns-train-1 was cancelled".into(),
    };
    let d = run(
        &spec,
        &status(JobPhase::Running, 1),
        Some(pod(1, cancelled.clone())),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.status.phase, JobPhase::Failed);
    assert_eq!((d.status.restarts, d.status.preemptions), (0, 0));
    let c = find(&d.status, cond::FAILED).unwrap();
    assert_eq!(c.reason, "Cancelled");
    assert!(
        c.message.contains("was cancelled outside the operator"),
        "{}",
        c.message
    );
    // Cancelled by the operator for a suspend: Suspended, and resumable.
    let mut suspended = spec.clone();
    suspended.run_policy.suspend = true;
    let d = run(
        &suspended,
        &status(JobPhase::Running, 1),
        Some(pod(1, cancelled)),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.status.phase, JobPhase::Suspended);
}

#[test]
fn a_stuck_pending_attempt_says_why_in_its_running_condition() {
    let spec = spec();
    let stuck = |reason: &str, message: &str| ObservedAttempt {
        waiting: Some(crate::backend::Waiting {
            reason: reason.into(),
            message: message.into(),
        }),
        ..pod(1, AttemptState::Pending)
    };
    let d = run(
        &spec,
        &status(JobPhase::Pending, 1),
        Some(stuck(
            "ImagePullBackOff",
            "Back-off pulling image \"trainer:1\"",
        )),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(d.status.phase, JobPhase::Pending);
    let c = find(&d.status, cond::RUNNING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ImagePullBackOff")
    );
    assert!(
        c.message
            .contains("pod train-1 is waiting: ImagePullBackOff: Back-off pulling"),
        "{}",
        c.message
    );
    assert_eq!(reasons(&d), ["AttemptWaiting"]);
    assert!(d.notes[0].warning);
    // Unchanged: no second event.
    let again = run(
        &spec,
        &d.status,
        Some(stuck(
            "ImagePullBackOff",
            "Back-off pulling image \"trainer:1\"",
        )),
        ManifestRead::Missing,
        T0,
    );
    assert!(reasons(&again).is_empty(), "{:?}", reasons(&again));
    // A new reason is news.
    let d = run(
        &spec,
        &again.status,
        Some(stuck(
            "Unschedulable",
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )),
        ManifestRead::Missing,
        T0,
    );
    let c = find(&d.status, cond::RUNNING).unwrap();
    assert_eq!(c.reason, "Unschedulable");
    assert!(
        c.message.contains("Insufficient nvidia.com/gpu"),
        "{}",
        c.message
    );
    assert_eq!(reasons(&d), ["AttemptWaiting"]);
    // Running at last: the condition turns True.
    let d = run(
        &spec,
        &d.status,
        Some(pod(1, AttemptState::Running)),
        ManifestRead::Missing,
        T0,
    );
    let c = find(&d.status, cond::RUNNING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "AttemptRunning")
    );
}

/// A pod the node refused at admission (`OutOf<resource>`, `UnexpectedAdmissionError`,
/// `NodeAffinity`) is replaced for free once; the same refusal of the next attempt counts as a
/// failure (restart, backoff) so a broken node cannot drive a tight create/fail loop.
#[test]
fn a_repeated_node_admission_failure_counts_as_a_failure() {
    use Action::*;
    let rejected = |reason: &str| AttemptState::Disrupted {
        reason: reason.into(),
        message: "Node didn't have enough resource: nvidia.com/gpu".into(),
    };
    let first = run(
        &spec(),
        &status(JobPhase::Pending, 1),
        Some(pod(1, rejected("OutOfnvidia.com/gpu"))),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(first.actions, vec![StartAttempt(2)]);
    assert_eq!((first.status.restarts, first.status.preemptions), (0, 1));
    let c = find(&first.status, cond::RESTARTING).unwrap();
    assert_eq!(c.reason, "AttemptRejectedByNode");

    // The next attempt refused the same way, before it ever ran: a failure, with backoff.
    let again = run(
        &spec(),
        &first.status,
        Some(pod(2, rejected("UnexpectedAdmissionError"))),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(again.actions, vec![], "waits out the backoff");
    assert_eq!((again.status.restarts, again.status.preemptions), (1, 1));
    assert_eq!(again.status.phase, JobPhase::Restarting);
    let c = find(&again.status, cond::RESTARTING).unwrap();
    assert_eq!(c.reason, "AttemptFailed");
    assert!(
        c.message
            .contains("refused by its node again (UnexpectedAdmissionError"),
        "{}",
        c.message
    );
    assert!(again.status.next_attempt_time.is_some());

    // An attempt that ran in between makes the next refusal a first one again.
    let mut ran = first.status.clone();
    crate::status::clear(&mut ran, cond::RESTARTING, "AttemptRunning", "", t(T0));
    let fresh = run(
        &spec(),
        &ran,
        Some(pod(2, rejected("NodeAffinity"))),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(fresh.actions, vec![StartAttempt(3)]);
    assert_eq!((fresh.status.restarts, fresh.status.preemptions), (0, 2));

    // A real preemption after a refusal is still free.
    let preempt = run(
        &spec(),
        &first.status,
        Some(pod(2, preempted())),
        ManifestRead::Missing,
        T0,
    );
    assert_eq!(preempt.actions, vec![StartAttempt(3)]);
    assert_eq!(
        (preempt.status.restarts, preempt.status.preemptions),
        (0, 2)
    );
}
