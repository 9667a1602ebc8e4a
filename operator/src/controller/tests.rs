//! The exact API calls of a reconcile, against a mock API server (controller-rs style).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus,
};
use kube::Resource;
use mtl_crds::{CheckpointRef, JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::Manifest;

use super::*;
use crate::backend::pods::build_pod;
use crate::fixtures::*;

/// What the API server should see, request by request.
enum Scenario {
    /// A new Vertex AI job gets the finalizer and nothing else (the patch triggers the next
    /// reconcile).
    FinalizerCreation(MultiTaskTrainingJob),
    /// A new pods job (no finalizer): pod `train-1` is created, status patched, event recorded.
    CreateFirstPod(MultiTaskTrainingJob),
    /// The pod runs and a checkpoint was committed: status carries phase and checkpoints.
    PodRunningWithCheckpoint(MultiTaskTrainingJob),
    /// The pod failed and backoffLimit is spent: Failed with the termination message.
    FailedPastBackoffLimit(MultiTaskTrainingJob),
    /// Suspend: the pod is deleted and status says Suspended.
    Suspend(MultiTaskTrainingJob),
    /// A pods job with an older operator's finalizer: the finalizer is removed, nothing else
    /// (deleting or not: the garbage collector deletes the pods).
    FinalizerRelease(MultiTaskTrainingJob),
    /// A job that cannot run: failed at once with a message holding the `&str`, no pod.
    InvalidSpec(MultiTaskTrainingJob, &'static str),
    /// Nothing changed: one GET of the pod, no writes (after the policy lookup of a job this
    /// operator has not looked at yet).
    Quiet(MultiTaskTrainingJob),
}

fn owned_pod(job: &MultiTaskTrainingJob, attempt: u32, status: PodStatus) -> Pod {
    let mut pod = build_pod(job, attempt, 0, &Default::default()).unwrap();
    pod.status = Some(status);
    pod
}

fn phase(p: &str) -> PodStatus {
    PodStatus {
        phase: Some(p.into()),
        ..Default::default()
    }
}

async fn expect_event(v: &mut ApiServerVerifier, reason: &str) {
    let (req, send) = v.expect(Method::POST, EVENTS).await;
    assert_eq!(req.body["reason"], reason, "event body: {}", req.body);
    assert_eq!(req.body["regarding"]["kind"], "MultiTaskTrainingJob");
    assert_eq!(req.body["regarding"]["name"], "train");
    assert_eq!(req.body["reportingController"], "mtl-operator");
    respond(send, &req.body);
}

/// The namespace's MultiTaskTrainingPolicy is read (once per job and operator); it has none.
async fn expect_policy_lookup(v: &mut ApiServerVerifier) {
    let (_, send) = v
        .expect(
            Method::GET,
            "/apis/multitask.dev/v1alpha1/namespaces/testns/multitasktrainingpolicies/default",
        )
        .await;
    respond_status(send, 404, "NotFound");
}

async fn expect_status_patch(
    v: &mut ApiServerVerifier,
    job: &MultiTaskTrainingJob,
) -> MultiTaskTrainingJobStatus {
    let (req, send) = v
        .expect(Method::PATCH, &format!("{JOBS}/train/status"))
        .await;
    assert_eq!(req.content_type, "application/apply-patch+yaml");
    assert!(
        req.query.contains("fieldManager=mtl-operator"),
        "{}",
        req.query
    );
    assert!(req.query.contains("force=true"), "{}", req.query);
    assert_eq!(req.body["apiVersion"], "multitask.dev/v1alpha1");
    assert_eq!(req.body["kind"], "MultiTaskTrainingJob");
    assert!(
        req.body.get("spec").is_none(),
        "a status patch carries only status"
    );
    let status: MultiTaskTrainingJobStatus =
        serde_json::from_value(req.body["status"].clone()).unwrap();
    respond(send, &job.clone().with_status(status.clone()));
    status
}

impl ApiServerVerifier {
    fn run(self, scenario: Scenario) -> tokio::task::JoinHandle<()> {
        spawn(self, |mut v| async move {
            match scenario {
                Scenario::FinalizerCreation(job) => {
                    let (req, send) = v.expect(Method::PATCH, &format!("{JOBS}/train")).await;
                    assert_eq!(req.content_type, "application/json-patch+json");
                    assert_eq!(
                        req.body,
                        serde_json::json!([
                            {"op": "test", "path": "/metadata/finalizers", "value": null},
                            {"op": "add", "path": "/metadata/finalizers", "value": [crate::FINALIZER]},
                        ])
                    );
                    respond(send, &job.finalized());
                }
                Scenario::CreateFirstPod(job) => {
                    expect_policy_lookup(&mut v).await;
                    // One request: a create, as the Job controller makes its pods.
                    let (req, send) = v.expect(Method::POST, PODS).await;
                    assert_eq!(req.content_type, "application/json");
                    assert!(
                        req.query.contains("fieldManager=mtl-operator"),
                        "{}",
                        req.query
                    );
                    let pod = &req.body;
                    assert_eq!(pod["metadata"]["labels"]["multitask.dev/job"], "train");
                    assert_eq!(pod["metadata"]["labels"]["multitask.dev/attempt"], "1");
                    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], "uid-train");
                    assert_eq!(pod["spec"]["containers"][0]["image"], "trainer:1");
                    assert_eq!(pod["spec"]["containers"][0]["args"][1], "--job-json");
                    respond(send, pod);
                    let status = expect_status_patch(&mut v, &job).await;
                    assert_eq!(status.phase, JobPhase::Pending);
                    assert_eq!(status.attempt, 1);
                    assert_eq!(status.pod_name.as_deref(), Some("train-1"));
                    assert_eq!(status.observed_generation, Some(1));
                    assert!(status.start_time.is_some());
                    assert!(crate::status::is_true(&status, cond::CREATED));
                    expect_event(&mut v, "Created").await;
                }
                Scenario::PodRunningWithCheckpoint(job) => {
                    expect_policy_lookup(&mut v).await;
                    let (_, send) = v.expect(Method::GET, &format!("{PODS}/train-1")).await;
                    respond(send, &owned_pod(&job, 1, phase("Running")));
                    let status = expect_status_patch(&mut v, &job).await;
                    assert_eq!(status.phase, JobPhase::Running);
                    assert_eq!(status.step, Some(500));
                    assert_eq!(status.checkpoints.len(), 1);
                    assert!(
                        status
                            .latest_checkpoint
                            .as_deref()
                            .unwrap()
                            .ends_with("checkpoint-500")
                    );
                    assert_eq!(status.metrics["mean"], 0.5);
                    expect_event(&mut v, "CheckpointCommitted").await;
                }
                Scenario::FailedPastBackoffLimit(job) => {
                    expect_policy_lookup(&mut v).await;
                    let (_, send) = v.expect(Method::GET, &format!("{PODS}/train-2")).await;
                    let mut st = phase("Failed");
                    st.container_statuses = Some(vec![ContainerStatus {
                        name: "trainer".into(),
                        state: Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                exit_code: 1,
                                reason: Some("Error".into()),
                                message: Some(
                                    "tasks[0] (stsb): gs://d/stsb.tsv: 403 Forbidden".into(),
                                ),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]);
                    respond(send, &owned_pod(&job, 2, st));
                    let status = expect_status_patch(&mut v, &job).await;
                    assert_eq!(status.phase, JobPhase::Failed);
                    let failed = crate::status::find(&status, cond::FAILED).unwrap();
                    assert_eq!(failed.reason, "BackoffLimitExceeded");
                    assert_eq!(
                        failed.message,
                        "tasks[0] (stsb): gs://d/stsb.tsv: 403 Forbidden"
                    );
                    expect_event(&mut v, "BackoffLimitExceeded").await;
                }
                Scenario::Suspend(job) => {
                    expect_policy_lookup(&mut v).await;
                    let (_, send) = v.expect(Method::GET, &format!("{PODS}/train-1")).await;
                    respond(send, &owned_pod(&job, 1, phase("Running")));
                    let (req, send) = v.expect(Method::DELETE, &format!("{PODS}/train-1")).await;
                    assert_eq!(req.body["propagationPolicy"], "Background");
                    respond(send, &owned_pod(&job, 1, phase("Running")));
                    let status = expect_status_patch(&mut v, &job).await;
                    assert_eq!(status.phase, JobPhase::Suspended);
                    assert_eq!(status.attempt, 1, "suspend keeps status");
                    expect_event(&mut v, "Suspended").await;
                    expect_event(&mut v, "Stopping").await;
                }
                Scenario::FinalizerRelease(job) => {
                    let (req, send) = v.expect(Method::PATCH, &format!("{JOBS}/train")).await;
                    assert_eq!(req.content_type, "application/json-patch+json");
                    assert_eq!(
                        req.body,
                        serde_json::json!([
                            {"op": "test", "path": "/metadata/finalizers/0", "value": crate::FINALIZER},
                            {"op": "remove", "path": "/metadata/finalizers/0"},
                        ])
                    );
                    respond(send, &job);
                }
                Scenario::InvalidSpec(job, says) => {
                    let status = expect_status_patch(&mut v, &job).await;
                    assert_eq!(status.phase, JobPhase::Failed);
                    let failed = crate::status::find(&status, cond::FAILED).unwrap();
                    assert_eq!(failed.reason, "InvalidSpec");
                    assert!(failed.message.contains(says), "{}", failed.message);
                    expect_event(&mut v, "InvalidSpec").await;
                }
                Scenario::Quiet(job) => {
                    expect_policy_lookup(&mut v).await;
                    let (_, send) = v.expect(Method::GET, &format!("{PODS}/train-1")).await;
                    respond(send, &owned_pod(&job, 1, phase("Running")));
                }
            }
            // Nothing more may be asked of the API server.
            let extra =
                tokio::time::timeout(std::time::Duration::from_millis(100), v.0.next_request())
                    .await;
            if let Ok(Some((req, _))) = extra {
                panic!("unexpected extra request: {} {}", req.method(), req.uri());
            }
        })
    }
}

fn status(phase: JobPhase, attempt: u32) -> MultiTaskTrainingJobStatus {
    MultiTaskTrainingJobStatus {
        phase,
        attempt,
        pod_name: Some(format!("train-{attempt}")),
        start_time: Some("2026-01-01T00:00:00Z".into()),
        observed_generation: Some(1),
        ..Default::default()
    }
}

#[tokio::test]
async fn new_vertex_job_gets_the_finalizer() {
    let (ctx, server) = Context::test();
    let mut job = test_job();
    job.spec.backend = mtl_crds::Backend::VertexAi;
    let mock = server.run(Scenario::FinalizerCreation(job.clone()));
    let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    finish(mock).await;
}

/// A pods job gets no finalizer: its first reconcile creates the pod.
#[tokio::test]
async fn new_job_creates_its_first_pod_without_a_finalizer() {
    let (ctx, server) = Context::test();
    let job = test_job();
    let mock = server.run(Scenario::CreateFirstPod(job.clone()));
    let action = reconcile(Arc::new(job), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(ctx.config.poll_interval));
    finish(mock).await;
    assert!(
        ctx.metrics
            .encode()
            .contains("mtl_operator_jobs{phase=\"Pending\"} 1")
    );
}

#[tokio::test]
async fn running_pod_and_manifest_fill_status() {
    let emulator = mtl_test_support::gcs::Emulator::start();
    let base = emulator.uri("out");
    let mut manifest = Manifest::default();
    manifest
        .commit(
            &emulator.storage(),
            &base,
            CheckpointRef {
                step: 500,
                uri: mtl_storage::manifest::checkpoint_uri(&base, 500),
                time: "2026-01-01T00:10:00Z".into(),
                metrics: BTreeMap::from([("mean".to_string(), 0.5)]),
            },
            None,
            None,
        )
        .await
        .unwrap();
    let (ctx, server) = Context::test_with_storage(emulator.storage());
    let job = test_job()
        .checkpoints_at(&base)
        .with_status(status(JobPhase::Pending, 1));
    let mock = server.run(Scenario::PodRunningWithCheckpoint(job.clone()));
    reconcile(Arc::new(job), ctx).await.expect("reconcile");
    finish(mock).await;
}

#[tokio::test]
async fn failure_past_backoff_limit_fails_with_termination_message() {
    let (ctx, server) = Context::test();
    let mut st = status(JobPhase::Running, 2);
    st.restarts = 1; // backoffLimit is 1 in test_job
    let job = test_job().with_status(st);
    let mock = server.run(Scenario::FailedPastBackoffLimit(job.clone()));
    let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    finish(mock).await;
}

#[tokio::test]
async fn suspend_deletes_the_pod() {
    let (ctx, server) = Context::test();
    let mut job = test_job().with_status(status(JobPhase::Running, 1));
    job.spec.run_policy.suspend = true;
    let mock = server.run(Scenario::Suspend(job.clone()));
    reconcile(Arc::new(job), ctx).await.expect("reconcile");
    finish(mock).await;
}

/// A pods job that an older operator gave its finalizer is released from it, running or
/// being deleted; nothing else is asked (the garbage collector deletes the pods of a deleted
/// job gracefully).
#[tokio::test]
async fn an_older_operators_finalizer_is_released() {
    for deleting in [false, true] {
        let (ctx, server) = Context::test();
        let mut job = test_job()
            .finalized()
            .with_status(status(JobPhase::Running, 1));
        if deleting {
            job = job.deleting();
        }
        let mock = server.run(Scenario::FinalizerRelease(job.clone()));
        let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
        assert_eq!(action, Action::await_change());
        finish(mock).await;
    }
}

/// A pods job held by someone else's finalizer while being deleted: nothing is started or
/// stopped, no request made.
#[tokio::test]
async fn a_deleting_job_is_left_to_the_garbage_collector() {
    let (ctx, mut server) = Context::test();
    let mut job = test_job()
        .deleting()
        .with_status(status(JobPhase::Running, 1));
    job.meta_mut().finalizers = Some(vec!["example.com/audit".into()]);
    let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    let extra = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        server.0.next_request(),
    )
    .await;
    assert!(
        !matches!(extra, Ok(Some(_))),
        "a deleting pods job made a request"
    );
}

/// What the operator remembers of a job goes when the job's watch reports it deleted, or
/// when a new list no longer holds it; so do its per-job metrics.
#[tokio::test]
async fn a_deleted_job_is_forgotten() {
    let (ctx, mut server) = Context::test();
    for name in ["a", "b", "c"] {
        let mut job = test_job().with_status(status(JobPhase::Running, 1));
        job.meta_mut().name = Some(name.into());
        let patch = tokio::spawn({
            let (ctx, job) = (ctx.clone(), job.clone());
            async move { patch_status(&ctx, &job, &status(JobPhase::Running, 1)).await }
        });
        let (_, send) = server
            .expect(Method::PATCH, &format!("{JOBS}/{name}/status"))
            .await;
        respond(send, &job);
        patch.await.unwrap().expect("status written");
        ctx.metrics
            .set_job_phase(&format!("testns/{name}"), JobPhase::Running);
    }
    assert_eq!(ctx.remembered(), 3);
    ctx.forget("testns/a");
    assert_eq!(ctx.remembered(), 2);
    ctx.forget_all_but(&["testns/b".to_string()].into());
    assert_eq!(ctx.remembered(), 1);
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("mtl_operator_jobs{phase=\"Running\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn job_without_image_fails_once_instead_of_looping() {
    let (ctx, server) = Context::test();
    let mut job = test_job();
    job.spec.image = None;
    let mock = server.run(Scenario::InvalidSpec(job.clone(), "spec.image"));
    let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    finish(mock).await;
}

/// The manifest of a live job is read at most once per `--manifest-poll-seconds`, however
/// often the job is looked at, and once more when its attempt has ended; never for a claim.
#[tokio::test]
async fn manifest_reads_are_bounded_by_the_manifest_poll() {
    use crate::backend::{AttemptState, ObservedAttempt};
    let config = Config {
        poll_interval: std::time::Duration::from_secs(1),
        manifest_poll: std::time::Duration::from_secs(3600),
        ..Config::default()
    };
    let (ctx, _server) = Context::test_with(mtl_storage::Storage::new(), config);
    let job = test_job().checkpoints_at("gs://b/out");
    let st = status(JobPhase::Running, 1);
    let running = ObservedAttempt::single(1, "train-1".into(), AttemptState::Running, false);
    let ended = ObservedAttempt::single(1, "train-1".into(), AttemptState::Succeeded, false);
    assert!(manifest_due(&ctx, &job, &st, Some(&running)), "first look");
    assert!(
        !manifest_due(&ctx, &job, &st, Some(&running)),
        "within the poll"
    );
    assert!(!manifest_due(&ctx, &job, &st, None));
    assert!(
        manifest_due(&ctx, &job, &st, Some(&ended)),
        "the final read"
    );
    // Once per ended attempt: a job waiting out a backoff or a teardown is not read again
    // on every look.
    assert!(
        !manifest_due(&ctx, &job, &st, Some(&ended)),
        "the final read is done"
    );
    let ended_2 = ObservedAttempt::single(2, "train-2".into(), AttemptState::Succeeded, false);
    assert!(
        manifest_due(&ctx, &job, &status(JobPhase::Running, 2), Some(&ended_2)),
        "the next attempt's final read"
    );
    let claim = test_job();
    assert!(!manifest_due(&ctx, &claim, &st, Some(&ended)), "a claim");
    let finished = status(JobPhase::Succeeded, 1);
    assert!(
        !manifest_due(&ctx, &job, &finished, Some(&ended)),
        "finished"
    );
}

/// A reconcile that finishes after its job left the watch's store (deleted meanwhile) leaves
/// nothing of the job behind: not its last status, not its metrics.
#[tokio::test]
async fn a_reconcile_of_a_job_deleted_meanwhile_forgets_it() {
    let (ctx, server) = Context::test();
    let (store, _writer) = reflector::store::<MultiTaskTrainingJob>();
    let _ = ctx.job_store.set(store);
    let mut job = test_job();
    job.spec.image = None;
    let mock = server.run(Scenario::InvalidSpec(job.clone(), "spec.image"));
    reconcile(Arc::new(job), ctx.clone())
        .await
        .expect("reconcile");
    finish(mock).await;
    assert_eq!(ctx.remembered(), 0);
    let metrics = ctx.metrics.encode();
    assert!(
        metrics.contains("mtl_operator_jobs{phase=\"Failed\"} 0"),
        "{metrics}"
    );
}

/// What the trainer would reject before its first step (`MultiTaskTrainingJobSpec::validate`,
/// rules the schema cannot express) fails the job at once instead of costing
/// `backoffLimit + 1` GPU pods.
#[tokio::test]
async fn job_the_trainer_would_reject_fails_before_any_pod() {
    let (ctx, server) = Context::test();
    let mut job = test_job();
    job.spec.training.early_stopping = Some(mtl_crds::EarlyStoppingSpec {
        patience: 2,
        min_delta: 0.0,
    });
    let mock = server.run(Scenario::InvalidSpec(job.clone(), "earlyStopping"));
    let action = reconcile(Arc::new(job), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    finish(mock).await;
}

#[tokio::test]
async fn quiet_poll_writes_nothing() {
    let (ctx, server) = Context::test();
    let mut st = status(JobPhase::Running, 1);
    crate::status::set(
        &mut st,
        cond::RUNNING,
        true,
        "AttemptRunning",
        "pod train-1 is running",
        "2026-01-01T00:01:00Z".parse().unwrap(),
    );
    // Accepted at an earlier reconcile.
    st.accepted_spec = Some(serde_json::to_value(&test_job().spec).unwrap());
    let job = test_job().with_status(st);
    let mock = server.run(Scenario::Quiet(job.clone()));
    reconcile(Arc::new(job), ctx).await.expect("reconcile");
    finish(mock).await;
}

#[tokio::test]
async fn api_errors_count_and_requeue_by_kind() {
    let (ctx, server) = Context::test();
    let job = Arc::new(test_job().with_status(status(JobPhase::Running, 1)));
    let mock = spawn(server, |mut v| async move {
        expect_policy_lookup(&mut v).await;
        let (_, send) = v.expect(Method::GET, &format!("{PODS}/train-1")).await;
        respond_status(send, 409, "Conflict");
    });
    let err = reconcile(job.clone(), ctx.clone()).await.unwrap_err();
    finish(mock).await;
    assert_eq!(err.kind(), crate::ErrorKind::Conflict);
    let action = error_policy(job, &err, ctx.clone());
    assert_eq!(action, Action::requeue(std::time::Duration::from_secs(1)));
    assert!(
        ctx.metrics
            .encode()
            .contains("mtl_operator_reconcile_errors_total{kind=\"conflict\"} 1")
    );
}

#[test]
fn owner_reference_points_at_the_job() {
    let job = test_job();
    let owner = job.controller_owner_ref(&()).unwrap();
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.kind, "MultiTaskTrainingJob");
}

/// A reconcile on a cached job that does not show our last status write yet decides from the
/// status written, not from the stale one; once the job moves on, from the job.
#[tokio::test]
async fn a_stale_cached_job_is_read_with_the_status_last_written() {
    let (ctx, mut server) = Context::test();
    let job = test_job().with_status(status(JobPhase::Pending, 1));
    let written = status(JobPhase::Running, 1);
    let patch = tokio::spawn({
        let (ctx, job, written) = (ctx.clone(), job.clone(), written.clone());
        async move { patch_status(&ctx, &job, &written).await }
    });
    let (_, send) = server
        .expect(Method::PATCH, &format!("{JOBS}/train/status"))
        .await;
    respond(send, &job);
    patch.await.unwrap().expect("status written");
    assert_eq!(
        ctx.current_status(&job),
        written,
        "the cache still has rv 100"
    );

    let mut moved = job.clone();
    moved.meta_mut().resource_version = Some("101".into());
    assert_eq!(ctx.current_status(&moved).phase, JobPhase::Pending);
    assert_eq!(
        ctx.current_status(&job).phase,
        JobPhase::Pending,
        "forgotten once the job moved on"
    );
}
