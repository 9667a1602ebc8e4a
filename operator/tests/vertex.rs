//! The Vertex AI backend against a local JobService stand-in (`vertex_standin`): the create
//! request field by field, state transitions, retries, non-retryable errors, exactly one
//! CustomJob per attempt across a restart, cancel/delete, and the CLI.

mod common;
mod vertex_standin;

use std::time::Duration;

use mtl_crds::{JobPhase, MultiTaskTrainingJob};
use mtl_operator::backend::vertex::{
    self, CancelOutcome, DeleteOutcome, ErrorKind, JobState, RetryPolicy, StopState, VertexClient,
    VertexClients, build_custom_job, observe,
};
use mtl_operator::cli::vertex::VertexCli;
use serde_json::{Value, json};
use vertex_standin::{Fault, Route, VertexStandIn};

const MANIFEST: &str = r#"
apiVersion: multitask.dev/v1alpha1
kind: MultiTaskTrainingJob
metadata:
  name: stsb-rte
  namespace: research
  uid: 1f0c6a7e-3b1d-4a8e-9c3f-0d2b7e9a4c11
spec:
  backend: vertexAI
  image: us-docker.pkg.dev/my-proj/mtl/trainer:0.1.0
  model:
    pretrained: gs://my-bucket/models/roberta-base
  tasks:
    - name: stsb
      type: regression
      train: gs://my-bucket/glue/STS-B/train.tsv
      validation: gs://my-bucket/glue/STS-B/dev.tsv
      format: glueTsv
      textFields: [sentence1, sentence2]
      labelField: score
    - name: rte
      type: classification
      train: gs://my-bucket/glue/RTE/train.tsv
      format: glueTsv
      textFields: [sentence1, sentence2]
      labelField: label
      labelNames: [entailment, not_entailment]
  checkpoints:
    uri: gs://my-bucket/runs/stsb-rte
    everySteps: 500
  vertexAI:
    project: my-proj
    region: us-central1
    machineType: n1-standard-8
    acceleratorType: NVIDIA_TESLA_T4
    acceleratorCount: 1
    serviceAccount: trainer@my-proj.iam.gserviceaccount.com
  runPolicy:
    activeDeadlineSeconds: 86400
"#;

const PARENT: &str = "projects/my-proj/locations/us-central1";

fn job() -> MultiTaskTrainingJob {
    serde_yaml::from_str(MANIFEST).expect("test manifest")
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
    }
}

async fn client(standin: &VertexStandIn) -> VertexClient {
    VertexClient::with_endpoint(standin.url())
        .await
        .expect("client for the stand-in")
        .with_retry(fast())
}

/// Every field the spec decides, in the JSON the crate actually sends.
#[tokio::test]
async fn create_request_carries_the_spec() {
    let standin = VertexStandIn::start().await;
    let job = job();
    let submitted = client(&standin)
        .await
        .ensure_created(&job, 1)
        .await
        .unwrap();
    assert!(!submitted.adopted);
    assert!(
        submitted
            .custom_job
            .name
            .starts_with(&format!("{PARENT}/customJobs/"))
    );

    let creates = standin.requests_to(Route::Create);
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].path, format!("/v1/{PARENT}/customJobs"));
    assert!(
        creates[0].authorization.is_none(),
        "anonymous credentials send no Authorization header"
    );
    let body = creates[0].body.clone().unwrap();

    assert_eq!(body["displayName"], "research-stsb-rte-1");
    assert_eq!(
        body["labels"],
        json!({
            "mtl-namespace": "research",
            "mtl-job": "stsb-rte",
            "mtl-uid": "1f0c6a7e-3b1d-4a8e-9c3f-0d2b7e9a4c11",
            "mtl-attempt": "1",
            "managed-by": "mtl-operator"
        })
    );
    let spec = &body["jobSpec"];
    let pools = spec["workerPoolSpecs"].as_array().unwrap();
    assert_eq!(pools.len(), 1);
    let pool = &pools[0];
    assert_eq!(pool["replicaCount"], "1", "int64 goes out as a string");
    assert_eq!(pool["machineSpec"]["machineType"], "n1-standard-8");
    assert_eq!(
        pool["machineSpec"]["acceleratorType"], 5,
        "enums go out as integers: NVIDIA_TESLA_T4 = 5"
    );
    assert_eq!(pool["machineSpec"]["acceleratorCount"], 1);
    let container = &pool["containerSpec"];
    assert_eq!(
        container["imageUri"],
        "us-docker.pkg.dev/my-proj/mtl/trainer:0.1.0"
    );
    let args = container["args"].as_array().unwrap();
    assert_eq!(args.len(), 3);
    assert_eq!(args[0], "train");
    assert_eq!(args[1], "--job-json");
    let sent_spec: Value = serde_json::from_str(args[2].as_str().unwrap()).unwrap();
    assert_eq!(sent_spec, serde_json::to_value(&job.spec).unwrap());
    let round_trip: mtl_crds::MultiTaskTrainingJobSpec = serde_json::from_value(sent_spec).unwrap();
    assert_eq!(round_trip, job.spec, "the trainer reads back the same spec");
    assert!(
        container.get("command").is_none(),
        "the image's ENTRYPOINT (mtl-trainer) runs"
    );
    assert_eq!(
        container["env"],
        json!([
            {"name": "MTL_CACHE_DIR", "value": "/tmp/cache"},
            {"name": "MTL_JOB_NAME", "value": "stsb-rte"},
            {"name": "MTL_ATTEMPT", "value": "1"},
        ])
    );
    assert_eq!(
        spec["baseOutputDirectory"],
        json!({"outputUriPrefix": "gs://my-bucket/runs/stsb-rte"})
    );
    assert_eq!(spec["scheduling"]["timeout"], "86400s");
    assert_eq!(
        spec["serviceAccount"],
        "trainer@my-proj.iam.gserviceaccount.com"
    );
    assert!(spec.get("tensorboard").is_none(), "none asked for");
}

/// The job's labels go onto the CustomJob beside the operator's (which win, and which the
/// operator finds its jobs by); `schedulingStrategy` becomes `scheduling.strategy`.
#[tokio::test]
async fn job_labels_and_scheduling_strategy_reach_vertex() {
    let standin = VertexStandIn::start().await;
    let mut job = job();
    job.metadata.labels = Some(
        [
            ("team", "NLP"),
            ("app.kubernetes.io/name", "mtl"),
            ("mtl-attempt", "99"),
            ("1bad", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    job.spec.vertex_ai.as_mut().unwrap().scheduling_strategy =
        Some(mtl_crds::VertexSchedulingStrategy::Spot);
    client(&standin)
        .await
        .ensure_created(&job, 1)
        .await
        .unwrap();
    let body = standin.requests_to(Route::Create)[0].body.clone().unwrap();
    let labels = &body["labels"];
    assert_eq!(labels["team"], "nlp");
    assert_eq!(labels["app-kubernetes-io-name"], "mtl");
    assert_eq!(labels["mtl-attempt"], "1", "the operator's label wins");
    assert!(
        labels.get("1bad").is_none(),
        "a key must start with a letter"
    );
    assert_eq!(
        body["jobSpec"]["scheduling"]["strategy"], 4,
        "enums go out as integers: SPOT = 4"
    );
    assert_eq!(body["jobSpec"]["scheduling"]["timeout"], "86400s");
    // One worker: Vertex AI retries nothing itself; backoffLimit is the only retry.
    assert_eq!(body["jobSpec"]["scheduling"]["disableRetries"], true);
    assert!(
        body["jobSpec"]["scheduling"]
            .get("restartJobOnWorkerRestart")
            .is_none()
    );
}

/// `spec.vertexAI.tensorboard` becomes the CustomJob's `tensorboard`, on the wire.
#[tokio::test]
async fn vertex_tensorboard_is_passed_on() {
    let standin = VertexStandIn::start().await;
    let mut job = job();
    let tb = "projects/my-proj/locations/us-central1/tensorboards/42";
    job.spec.vertex_ai.as_mut().unwrap().tensorboard = Some(tb.into());
    client(&standin)
        .await
        .ensure_created(&job, 1)
        .await
        .unwrap();
    let body = standin.requests_to(Route::Create)[0].body.clone().unwrap();
    assert_eq!(body["jobSpec"]["tensorboard"], tb);

    // Vertex AI uploads as the job's service account: without one the spec is refused.
    job.spec.vertex_ai.as_mut().unwrap().service_account = None;
    let err = mtl_operator::backend::vertex::validate_for_vertex(&job).unwrap_err();
    assert!(err.to_string().contains("serviceAccount"), "{err}");
}

/// `workers: 3`: the primary replica in pool 0, two more in pool 1, identical otherwise, as
/// the JSON on the wire has it.
#[tokio::test]
async fn several_workers_become_two_worker_pools() {
    let standin = VertexStandIn::start().await;
    let mut job = job();
    job.spec.workers = 3;
    client(&standin)
        .await
        .ensure_created(&job, 1)
        .await
        .unwrap();
    let creates = standin.requests_to(Route::Create);
    let body = creates[0].body.clone().unwrap();
    let pools = body["jobSpec"]["workerPoolSpecs"].as_array().unwrap();
    assert_eq!(pools.len(), 2, "{pools:?}");
    assert_eq!(pools[0]["replicaCount"], "1");
    assert_eq!(pools[1]["replicaCount"], "2");
    for field in ["machineSpec", "containerSpec"] {
        assert_eq!(
            pools[0][field], pools[1][field],
            "{field} differs between the pools"
        );
    }
    assert_eq!(pools[1]["machineSpec"]["machineType"], "n1-standard-8");
    assert_eq!(pools[1]["machineSpec"]["acceleratorType"], 5);
    assert_eq!(pools[1]["machineSpec"]["acceleratorCount"], 1);
    assert_eq!(
        pools[1]["containerSpec"]["imageUri"],
        "us-docker.pkg.dev/my-proj/mtl/trainer:0.1.0"
    );
    let args = pools[1]["containerSpec"]["args"].as_array().unwrap();
    let sent: mtl_crds::MultiTaskTrainingJobSpec =
        serde_json::from_str(args[2].as_str().unwrap()).unwrap();
    assert_eq!(
        sent.workers, 3,
        "the trainer sees the same spec in every pool"
    );
    assert!(
        pools.iter().all(|p| p.get("diskSpec").is_none()),
        "nothing else differs"
    );
    // A static c10d world cannot take one rank restarted in place: a restarted worker
    // restarts the whole job (disableRetries would turn this off, so it is not sent).
    let scheduling = &body["jobSpec"]["scheduling"];
    assert_eq!(
        scheduling["restartJobOnWorkerRestart"], true,
        "{scheduling}"
    );
    assert!(scheduling.get("disableRetries").is_none(), "{scheduling}");
}

/// The pure builder, through the crate's types.
#[test]
fn builder_fields() {
    let mut job = job();
    let cj = build_custom_job(&job, 3);
    assert_eq!(cj.display_name, "research-stsb-rte-3");
    assert_eq!(cj.labels["mtl-attempt"], "3");
    let spec = cj.job_spec.as_ref().unwrap();
    assert_eq!(spec.worker_pool_specs.len(), 1);
    let pool = &spec.worker_pool_specs[0];
    assert_eq!(pool.replica_count, 1);
    let machine = pool.machine_spec.as_ref().unwrap();
    assert_eq!(machine.machine_type, "n1-standard-8");
    assert_eq!(
        machine.accelerator_type,
        google_cloud_aiplatform_v1::model::AcceleratorType::NvidiaTeslaT4
    );
    assert_eq!(machine.accelerator_count, 1);
    let container = pool.container_spec().unwrap();
    assert_eq!(
        container.image_uri,
        "us-docker.pkg.dev/my-proj/mtl/trainer:0.1.0"
    );
    assert_eq!(container.env[0].name, "MTL_CACHE_DIR");
    assert_eq!(container.env[0].value, "/tmp/cache");
    assert_eq!(
        spec.base_output_directory
            .as_ref()
            .unwrap()
            .output_uri_prefix,
        "gs://my-bucket/runs/stsb-rte"
    );
    assert_eq!(
        spec.scheduling
            .as_ref()
            .unwrap()
            .timeout
            .as_ref()
            .unwrap()
            .seconds(),
        86400
    );
    assert_eq!(
        spec.service_account,
        "trainer@my-proj.iam.gserviceaccount.com"
    );

    // No deadline, no accelerator, no service account: those fields stay unset (scheduling
    // keeps only the retry setting).
    job.spec.run_policy.active_deadline_seconds = None;
    let vertex = job.spec.vertex_ai.as_mut().unwrap();
    vertex.accelerator_type = None;
    vertex.accelerator_count = 0;
    vertex.service_account = None;
    let cj = build_custom_job(&job, 1);
    let spec = cj.job_spec.as_ref().unwrap();
    let scheduling = spec.scheduling.as_ref().unwrap();
    assert!(scheduling.timeout.is_none());
    assert!(scheduling.disable_retries);
    assert!(spec.service_account.is_empty());
    let machine = spec.worker_pool_specs[0].machine_spec.as_ref().unwrap();
    assert_eq!(
        machine.accelerator_type,
        google_cloud_aiplatform_v1::model::AcceleratorType::Unspecified
    );

    // Names and label values are made to fit Vertex's rules.
    job.metadata.name = Some("My.Job".into());
    job.metadata.namespace = Some("Team_A".into());
    let cj = build_custom_job(&job, 1);
    assert_eq!(cj.labels["mtl-job"], "my-job");
    assert_eq!(cj.labels["mtl-namespace"], "team_a");
    assert_eq!(cj.display_name, "Team_A-My.Job-1");
}

#[tokio::test]
async fn follows_state_transitions() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    let name = client
        .ensure_created(&job(), 1)
        .await
        .unwrap()
        .custom_job
        .name;
    let id = name.rsplit('/').next().unwrap().to_string();

    let seen = observe(&client.get(&name).await.unwrap().unwrap());
    assert_eq!(
        (seen.phase, seen.reason),
        (JobPhase::Pending, "VertexJobPending")
    );
    assert_eq!(
        seen.console_url.as_deref(),
        Some(format!("https://console.cloud.google.com/vertex-ai/locations/us-central1/training/{id}?project=my-proj").as_str())
    );

    for (state, phase, reason) in [
        ("JOB_STATE_QUEUED", JobPhase::Pending, "VertexJobQueued"),
        ("JOB_STATE_RUNNING", JobPhase::Running, "VertexJobRunning"),
        (
            "JOB_STATE_SUCCEEDED",
            JobPhase::Succeeded,
            "VertexJobSucceeded",
        ),
    ] {
        standin.set_state(&name, state);
        let cj = client.get(&name).await.unwrap().unwrap();
        let seen = observe(&cj);
        assert_eq!((seen.phase, seen.reason), (phase, reason), "{state}");
        assert_eq!(seen.state, state);
    }
    let seen = observe(&client.get(&name).await.unwrap().unwrap());
    assert!(seen.terminal);
    assert!(seen.start_time.is_some() && seen.end_time.is_some());

    // A failure carries Vertex's error message.
    let failed = client
        .ensure_created(&job(), 2)
        .await
        .unwrap()
        .custom_job
        .name;
    standin.fail_job(
        &failed,
        "The replica workerpool0-0 exited with a non-zero status of 1.",
    );
    let seen = observe(&client.get(&failed).await.unwrap().unwrap());
    assert_eq!(seen.phase, JobPhase::Failed);
    assert_eq!(seen.reason, "VertexJobFailed");
    assert!(
        seen.message
            .ends_with("The replica workerpool0-0 exited with a non-zero status of 1."),
        "{}",
        seen.message
    );
}

#[tokio::test]
async fn retries_429_and_503_then_succeeds() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    standin.fail_next(Route::Create, 429, 1);
    standin.fail_next(Route::Create, 503, 1);
    let submitted = client.ensure_created(&job(), 1).await.unwrap();
    assert!(!submitted.adopted);
    assert_eq!(standin.requests_to(Route::Create).len(), 3);
    assert_eq!(
        standin.requests_to(Route::List).len(),
        3,
        "each create is preceded by a look for an existing CustomJob"
    );
    assert_eq!(standin.jobs().len(), 1);

    standin.fail_next(Route::Get, 503, 2);
    standin.fail_next(Route::List, 429, 1);
    assert!(
        client
            .get(&submitted.custom_job.name)
            .await
            .unwrap()
            .is_some()
    );
    assert!(client.find(&job(), 1).await.unwrap().is_some());
    assert_eq!(standin.pending_faults(), 0);
}

/// A Vertex error as the controller meets it.
fn operator_error(err: vertex::Error) -> mtl_operator::Error {
    mtl_operator::Error::Vertex {
        job: "train".into(),
        source: Box::new(err),
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    standin.fail_next(Route::Get, 503, 10);
    let err = client
        .get(&format!("{PARENT}/customJobs/1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(err.status_code(), None, "no one answer decided it");
    assert!(
        matches!(err, vertex::Error::Transient { attempts: 4, .. }),
        "{err:?}"
    );
    // The controller's policy for it: requeued soon, as any transient error.
    assert_eq!(
        operator_error(err).kind(),
        mtl_operator::ErrorKind::Transient
    );
    assert_eq!(standin.requests_to(Route::Get).len(), 4);
}

#[tokio::test]
async fn permission_denied_is_not_retried_and_names_the_permission() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    standin.inject(Fault::permission_denied(
        Route::Create,
        "aiplatform.customJobs.create",
        PARENT,
    ));
    let err = client.ensure_created(&job(), 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(err.status_code(), Some(403));
    let msg = err.to_string();
    assert!(msg.contains("Grant aiplatform.customJobs.create"), "{msg}");
    assert!(msg.contains("project my-proj"), "{msg}");
    assert!(
        msg.contains("trainer@my-proj.iam.gserviceaccount.com"),
        "{msg}"
    );
    assert!(msg.contains("iam.serviceAccounts.actAs"), "{msg}");
    // Fixed by a person (an IAM grant): the controller polls it slowly, like a bad spec.
    assert_eq!(operator_error(err).kind(), mtl_operator::ErrorKind::BadSpec);
    assert_eq!(
        standin.requests_to(Route::Create).len(),
        1,
        "no retry storm"
    );

    // A 403 on listing names the list permission.
    standin.fail_next(Route::List, 403, 1);
    let msg = client.find(&job(), 1).await.unwrap_err().to_string();
    assert!(msg.contains("aiplatform.customJobs.list"), "{msg}");
}

#[tokio::test]
async fn bad_machine_or_accelerator_is_a_spec_error() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;

    let mut bad_machine = job();
    bad_machine.spec.vertex_ai.as_mut().unwrap().machine_type = Some("n1-standard-7".into());
    let err = client.ensure_created(&bad_machine, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert_eq!(err.status_code(), Some(400));
    let msg = err.to_string();
    assert!(
        msg.contains("Machine type \"n1-standard-7\" is not supported."),
        "{msg}"
    );
    assert!(msg.contains("spec.vertexAI"), "{msg}");
    // The same request cannot succeed: the controller fails the job instead of retrying.
    assert!(operator_error(err).is_refused_spec());

    let mut bad_accel = job();
    bad_accel.spec.vertex_ai.as_mut().unwrap().accelerator_type = Some("NVIDIA_TESLA_T5".into());
    let err = client.ensure_created(&bad_accel, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(err.to_string().contains("NVIDIA_TESLA_T5"), "{err}");

    assert_eq!(
        standin.requests_to(Route::Create).len(),
        2,
        "each tried once"
    );
    assert!(standin.jobs().is_empty());
}

#[tokio::test]
async fn invalid_spec_fails_before_any_request() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    type Breakage = fn(&mut MultiTaskTrainingJob);
    let cases: [(Breakage, &str); 4] = [
        (|j| j.spec.vertex_ai = None, "spec.vertexAI"),
        (
            |j| j.spec.checkpoints.uri = "/tmp/ckpt".into(),
            "spec.checkpoints.uri",
        ),
        (|j| j.spec.image = None, "spec.image"),
        (
            |j| j.spec.vertex_ai.as_mut().unwrap().accelerator_type = None,
            "spec.vertexAI.acceleratorType",
        ),
    ];
    for (break_it, field) in cases {
        let mut j = job();
        break_it(&mut j);
        let err = client.ensure_created(&j, 1).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{field}");
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(standin.requests().is_empty());
}

/// The operator creates the CustomJob, restarts before writing `.status.vertexJobName`, and
/// reconciles again with no saved name: the same CustomJob is adopted.
#[tokio::test]
async fn restart_between_create_and_status_write_leaves_one_job() {
    let standin = VertexStandIn::start().await;
    let first = client(&standin)
        .await
        .ensure_created(&job(), 1)
        .await
        .unwrap();
    assert!(!first.adopted);

    let restarted = client(&standin).await;
    let again = restarted.ensure_created(&job(), 1).await.unwrap();
    assert!(again.adopted);
    assert_eq!(again.custom_job.name, first.custom_job.name);
    assert_eq!(standin.jobs().len(), 1);
    assert_eq!(standin.requests_to(Route::Create).len(), 1);

    let filter = &standin.requests_to(Route::List)[1].query["filter"];
    assert_eq!(
        filter,
        r#"labels.mtl-uid="1f0c6a7e-3b1d-4a8e-9c3f-0d2b7e9a4c11" AND labels.mtl-attempt="1""#
    );

    // The next attempt is a new CustomJob; another object's attempt 1 is not adopted.
    let second = restarted.ensure_created(&job(), 2).await.unwrap();
    assert!(!second.adopted);
    let mut other = job();
    other.metadata.uid = Some("0000-other".into());
    assert!(!restarted.ensure_created(&other, 1).await.unwrap().adopted);
    assert_eq!(standin.jobs().len(), 3);
}

/// Two leaders at once (a split brain) can each create attempt 1's CustomJob. The next look
/// follows the oldest and cancels every other one, so only one trains (and bills).
#[tokio::test]
async fn duplicate_custom_jobs_of_an_attempt_are_cancelled_but_the_oldest() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    let first = client.ensure_created(&job(), 1).await.unwrap();
    // The other leader's copy, created later.
    let mut copy = standin.job(&first.custom_job.name).unwrap();
    copy.as_object_mut().unwrap().remove("state");
    copy["createTime"] = json!("2099-01-01T00:00:00Z");
    let duplicate = standin.insert_job("my-proj", "us-central1", copy);
    standin.set_state(&duplicate, "JOB_STATE_RUNNING");

    let found = client.find(&job(), 1).await.unwrap().unwrap();
    assert_eq!(found.name, first.custom_job.name, "the oldest is followed");
    let cancels: Vec<String> = standin
        .requests_to(Route::Cancel)
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(cancels, [format!("/v1/{duplicate}:cancel")]);
    assert_eq!(
        standin.job(&duplicate).unwrap()["state"],
        "JOB_STATE_CANCELLING"
    );
    assert_ne!(
        standin.job(&first.custom_job.name).unwrap()["state"],
        "JOB_STATE_CANCELLING"
    );
    // A duplicate already finished is not cancelled again.
    standin.set_state(&duplicate, "JOB_STATE_CANCELLED");
    client.find(&job(), 1).await.unwrap();
    assert_eq!(standin.requests_to(Route::Cancel).len(), 1);
}

/// A create that Vertex committed but whose response was lost (503): the retry finds it.
#[tokio::test]
async fn lost_create_response_is_adopted() {
    let standin = VertexStandIn::start().await;
    standin.inject(Fault::http(Route::Create, 503).after_commit());
    let submitted = client(&standin)
        .await
        .ensure_created(&job(), 1)
        .await
        .unwrap();
    assert!(submitted.adopted);
    assert_eq!(standin.jobs().len(), 1);
    assert_eq!(standin.requests_to(Route::Create).len(), 1);
}

#[tokio::test]
async fn cancel_and_stop() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    let job = job();
    let name = client
        .ensure_created(&job, 1)
        .await
        .unwrap()
        .custom_job
        .name;
    standin.set_state(&name, "JOB_STATE_RUNNING");

    assert_eq!(
        client.cancel(&name).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        standin.requests_to(Route::Cancel)[0].path,
        format!("/v1/{name}:cancel")
    );
    let seen = observe(&client.get(&name).await.unwrap().unwrap());
    assert_eq!(
        (seen.phase, seen.reason),
        (JobPhase::Suspended, "VertexJobCancelling")
    );

    // stop: still cancelling, so not stopped yet; no second cancel request.
    assert_eq!(
        client.stop(&job).await.unwrap(),
        StopState::Stopping {
            names: vec![name.clone()]
        }
    );
    assert_eq!(standin.requests_to(Route::Cancel).len(), 1);
    standin.set_state(&name, "JOB_STATE_CANCELLED");
    assert_eq!(client.stop(&job).await.unwrap(), StopState::Stopped);
    assert_eq!(
        client.cancel(&name).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );

    // stop finds a running CustomJob whose name never reached the status.
    let unsaved = client
        .ensure_created(&job, 2)
        .await
        .unwrap()
        .custom_job
        .name;
    standin.set_state(&unsaved, "JOB_STATE_RUNNING");
    assert_eq!(
        client.stop(&job).await.unwrap(),
        StopState::Stopping {
            names: vec![unsaved.clone()]
        }
    );
    assert_eq!(
        standin.job(&unsaved).unwrap()["state"],
        "JOB_STATE_CANCELLING"
    );

    // Delete: refused while cancelling, done once cancelled.
    let err = client.delete(&unsaved).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Other);
    standin.set_state(&unsaved, "JOB_STATE_CANCELLED");
    assert!(matches!(
        client.delete(&unsaved).await.unwrap(),
        DeleteOutcome::Deleting { operation } if operation.starts_with(&unsaved)
    ));
    assert!(standin.job(&unsaved).is_none());
}

#[tokio::test]
async fn cancel_or_delete_of_missing_job_is_ok() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    let gone = format!("{PARENT}/customJobs/424242");
    assert_eq!(client.cancel(&gone).await.unwrap(), CancelOutcome::NotFound);
    assert_eq!(client.delete(&gone).await.unwrap(), DeleteOutcome::NotFound);
    assert!(client.get(&gone).await.unwrap().is_none());
    assert_eq!(client.stop(&job()).await.unwrap(), StopState::Stopped);

    // An injected 404 on an existing job reads the same way.
    let name = client
        .ensure_created(&job(), 1)
        .await
        .unwrap()
        .custom_job
        .name;
    standin.fail_next(Route::Cancel, 404, 1);
    assert_eq!(client.cancel(&name).await.unwrap(), CancelOutcome::NotFound);
}

#[tokio::test]
async fn clients_are_shared_per_region() {
    let standin = VertexStandIn::start().await;
    let clients = VertexClients::with_endpoint(standin.url()).with_retry(fast());
    let a = clients.for_job(&job()).await.unwrap();
    let b = clients.for_region("us-central1").await.unwrap();
    assert_eq!(a.endpoint(), b.endpoint());
    a.ensure_created(&job(), 1).await.unwrap();
    assert!(b.ensure_created(&job(), 1).await.unwrap().adopted);
}

#[tokio::test]
async fn cli_submit_status_cancel() {
    let standin = VertexStandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    // A bare spec, as `mtl-trainer --job` also reads it: named after the file, namespace default.
    let manifest: Value = serde_yaml::from_str(MANIFEST).unwrap();
    let path = dir.path().join("glue-pair.yaml");
    std::fs::write(&path, serde_yaml::to_string(&manifest["spec"]).unwrap()).unwrap();
    let cli = VertexCli::with_endpoint(standin.url()).with_retry(fast());

    let out = cli.submit(&path).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].action, "submitted");
    assert_eq!(out[0].display_name, "default-glue-pair-1");
    assert_eq!(out[0].attempt, Some(1));
    let name = out[0].name.clone();
    assert!(out[0].to_string().contains("console.cloud.google.com"));
    let labels = &standin.create_bodies()[0]["labels"];
    assert_eq!(labels["mtl-job"], "glue-pair");
    assert_eq!(labels["mtl-namespace"], "default");
    assert!(labels["mtl-uid"].as_str().unwrap().starts_with("local-"));

    // A second submit while the first runs does not start another.
    standin.set_state(&name, "JOB_STATE_RUNNING");
    let out = cli.submit(&path).await.unwrap();
    assert_eq!(out[0].name, name);
    assert!(out[0].action.starts_with("already active"));
    assert_eq!(standin.jobs().len(), 1);

    let by_file = cli.status(path.to_str().unwrap()).await.unwrap();
    assert_eq!(by_file[0].state, "JOB_STATE_RUNNING");
    let by_name = cli.status(&name).await.unwrap();
    assert_eq!(by_name[0].phase, JobPhase::Running);

    let out = cli.cancel(path.to_str().unwrap()).await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].action, "cancel requested");
    assert_eq!(out[0].state, "JOB_STATE_CANCELLING");
    standin.set_state(&name, "JOB_STATE_CANCELLED");
    let out = cli.cancel(&name).await.unwrap();
    assert_eq!(out[0].action, "already finished, nothing to cancel");

    // After it finished, submit starts attempt 2.
    let out = cli.submit(&path).await.unwrap();
    assert_eq!(out[0].attempt, Some(2));
    assert_eq!(out[0].display_name, "default-glue-pair-2");

    // A manifest keeps its own name and namespace, and its labels reach the CustomJob as
    // they do through the operator.
    let full = dir.path().join("whatever.yaml");
    let mut labelled: Value = serde_yaml::from_str(MANIFEST).unwrap();
    labelled["metadata"]["labels"] = json!({"team": "NLP", "cost-center": "42"});
    std::fs::write(&full, serde_yaml::to_string(&labelled).unwrap()).unwrap();
    let out = cli.submit(&full).await.unwrap();
    assert_eq!(out[0].display_name, "research-stsb-rte-1");
    let body = standin.create_bodies().last().cloned().unwrap();
    assert_eq!(body["labels"]["team"], "nlp", "{}", body["labels"]);
    assert_eq!(body["labels"]["cost-center"], "42");

    let missing = cli
        .status(dir.path().join("nope.yaml").to_str().unwrap())
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("nope.yaml"), "{missing}");
}

#[test]
fn job_state_names_match_the_api() {
    assert_eq!(
        JobState::PartiallySucceeded.name(),
        Some("JOB_STATE_PARTIALLY_SUCCEEDED")
    );
}

/// The controller's view: `AttemptBackend` over the stand-in.
#[tokio::test]
async fn attempt_backend_round_trip() {
    use mtl_operator::backend::vertex::VertexBackend;
    use mtl_operator::backend::{AttemptBackend, AttemptState};
    use std::sync::Arc;

    let standin = VertexStandIn::start().await;
    let backend = VertexBackend::new(Arc::new(
        VertexClients::with_endpoint(standin.url()).with_retry(fast()),
    ));
    let mut job = job();
    backend.validate(&job).unwrap();
    assert_eq!(
        backend.describe(&job, 2),
        "Vertex AI CustomJob research-stsb-rte-2"
    );
    assert!(backend.observe(&job, 1).await.unwrap().is_none());

    let mut status = mtl_crds::MultiTaskTrainingJobStatus {
        attempt: 1,
        ..Default::default()
    };
    backend.start(&job, 1, &mut status).await.unwrap();
    let name = status.vertex_job_name.clone().unwrap();
    assert!(
        status
            .vertex_job_console_url
            .as_deref()
            .unwrap()
            .contains("training/")
    );

    // Found by label before the status is written, by name after.
    let seen = backend.observe(&job, 1).await.unwrap().unwrap();
    assert_eq!(
        (seen.name.as_str(), seen.state.clone()),
        (name.as_str(), AttemptState::Pending)
    );
    job.status = Some(status.clone());
    standin.set_state(&name, "JOB_STATE_RUNNING");
    assert_eq!(
        backend.observe(&job, 1).await.unwrap().unwrap().state,
        AttemptState::Running
    );

    // start again (a lost status write) adopts.
    backend.start(&job, 1, &mut status).await.unwrap();
    assert_eq!(standin.jobs().len(), 1);

    backend.stop(&job, 1, &name).await.unwrap();
    let seen = backend.observe(&job, 1).await.unwrap().unwrap();
    assert!(seen.terminating);
    standin.set_state(&name, "JOB_STATE_CANCELLED");
    // Cancelled: a suspend when the spec asks for one, else the end of the job (decide).
    assert!(matches!(
        backend.observe(&job, 1).await.unwrap().unwrap().state,
        AttemptState::Cancelled { .. }
    ));

    // Finalizer: cancels what still runs; a cancelled or missing job does not block it.
    let second = client(&standin)
        .await
        .ensure_created(&job, 2)
        .await
        .unwrap()
        .custom_job
        .name;
    standin.set_state(&second, "JOB_STATE_RUNNING");
    backend.cleanup(&job).await.unwrap();
    assert_eq!(
        standin.job(&second).unwrap()["state"],
        "JOB_STATE_CANCELLING"
    );
    backend
        .stop(&job, 1, &format!("{PARENT}/customJobs/999999"))
        .await
        .unwrap();

    // A 403 surfaces as a spec-class error (slow requeue) with the message intact.
    standin.inject(Fault::permission_denied(
        Route::Create,
        "aiplatform.customJobs.create",
        PARENT,
    ));
    let err = backend.start(&job, 3, &mut status).await.unwrap_err();
    assert_eq!(err.kind(), mtl_operator::ErrorKind::BadSpec);
    assert!(
        err.to_string().contains("aiplatform.customJobs.create"),
        "{err}"
    );
    // A 503 storm surfaces as transient.
    standin.fail_next(Route::List, 503, 4);
    let err = backend.observe(&job, 3).await.unwrap_err();
    assert_eq!(err.kind(), mtl_operator::ErrorKind::Transient);
}

/// A CustomJob Vertex AI refuses as written (400: here a machine type it does not know) ends
/// the job at once, `Failed` with reason `InvalidSpec` and Vertex's message, after one create:
/// retrying the same request cannot succeed. End to end: the operator against kube-standin and
/// the Vertex stand-in.
#[tokio::test]
async fn a_custom_job_vertex_refuses_fails_the_job_after_one_request() {
    let standin = VertexStandIn::start().await;
    let mut env = common::Env::start().await;
    env.operator_env
        .push(("MTL_VERTEX_ENDPOINT".into(), standin.url().to_string()));
    env.operator("op-a");
    env.apply(
        "refused",
        json!({"backend": "vertexAI", "resources": null,
               "vertexAI": {"project": "my-proj", "region": "us-central1",
                            "machineType": "n1-standard-7"}}),
    )
    .await;
    let (_, failed) = env.failed("refused", "InvalidSpec").await;
    assert!(
        failed.contains("Machine type \"n1-standard-7\" is not supported."),
        "{failed}"
    );
    env.event("InvalidSpec").await;
    assert_eq!(standin.requests_to(Route::Create).len(), 1);
    assert!(standin.jobs().is_empty());
}

/// Vertex AI takes each GPU only on its machine family (L4 on G2, A100 on A2, H100 on A3; T4,
/// V100, P100, P4 on N1): the stand-in refuses the rest as Vertex does. An unset machine type
/// follows the accelerator, so the default spec with an L4, A100 or H100 is accepted.
#[tokio::test]
async fn the_machine_type_follows_the_accelerator() {
    let standin = VertexStandIn::start().await;
    let client = client(&standin).await;
    let mut l4_on_n1 = job();
    let vertex = l4_on_n1.spec.vertex_ai.as_mut().unwrap();
    vertex.accelerator_type = Some("NVIDIA_L4".into());
    let err = client.ensure_created(&l4_on_n1, 1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(
        err.to_string().contains(
            "accelerator type \"NVIDIA_L4\" is not supported for machine type \"n1-standard-8\""
        ),
        "{err}"
    );

    for (attempt, (accel, count, machine)) in (1..).zip([
        ("NVIDIA_L4", 1, "g2-standard-8"),
        ("nvidia-l4", 2, "g2-standard-24"),
        ("NVIDIA_TESLA_A100", 4, "a2-highgpu-4g"),
        ("NVIDIA_A100_80GB", 8, "a2-ultragpu-8g"),
        ("NVIDIA_H100_80GB", 8, "a3-highgpu-8g"),
        ("NVIDIA_TESLA_T4", 1, "n1-standard-8"),
    ]) {
        let mut j = job();
        let vertex = j.spec.vertex_ai.as_mut().unwrap();
        vertex.machine_type = None;
        vertex.accelerator_type = Some(accel.into());
        vertex.accelerator_count = count;
        let created = client
            .ensure_created(&j, attempt)
            .await
            .unwrap_or_else(|e| panic!("{accel} x{count}: {e}"));
        let pool = &created.custom_job.job_spec.unwrap().worker_pool_specs[0];
        assert_eq!(
            pool.machine_spec.as_ref().unwrap().machine_type,
            machine,
            "{accel} x{count}"
        );
    }
    // No default for a count the accelerator does not come in: refused before any request.
    let mut three = job();
    let vertex = three.spec.vertex_ai.as_mut().unwrap();
    vertex.machine_type = None;
    vertex.accelerator_type = Some("NVIDIA_H100_80GB".into());
    vertex.accelerator_count = 3;
    let err = mtl_operator::backend::vertex::validate_for_vertex(&three).unwrap_err();
    assert!(
        err.to_string().contains(
            "spec.vertexAI.acceleratorCount: NVIDIA_H100_80GB comes 1, 2, 4, 8 per machine, not 3"
        ),
        "{err}"
    );
}

/// A CustomJob that failed for capacity or platform reasons (no GPUs in the zone, Vertex AI
/// unavailable or failing internally) is a disruption: the next attempt starts without
/// spending backoffLimit, counted in `preemptions`. A trainer that exits non-zero is a failure.
#[tokio::test]
async fn capacity_and_platform_failures_are_preemptions_not_restarts() {
    let standin = VertexStandIn::start().await;
    let mut env = common::Env::start().await;
    env.operator_env
        .push(("MTL_VERTEX_ENDPOINT".into(), standin.url().to_string()));
    env.operator("op-a");
    env.apply(
        "gpus",
        json!({"backend": "vertexAI", "resources": null, "runPolicy": {"backoffLimit": 3},
               "vertexAI": {"project": "my-proj", "region": "us-central1",
                            "acceleratorType": "NVIDIA_L4", "acceleratorCount": 1}}),
    )
    .await;
    let created = |n: usize| {
        let standin = &standin;
        move || async move {
            let jobs = standin.jobs();
            (jobs.len() >= n).then(|| jobs[n - 1]["name"].as_str().unwrap().to_string())
        }
    };
    let first = common::eventually("attempt 1's CustomJob", created(1)).await;
    standin.set_state(&first, "JOB_STATE_RUNNING");
    standin.fail_job_with(
        &first,
        8,
        "The zone 'us-central1-a' does not have enough resources available to fulfill the request.",
    );
    let second = common::eventually("attempt 2's CustomJob", created(2)).await;
    let st = env
        .status_until("gpus", "a preemption counted", |s| s.preemptions == 1)
        .await;
    assert_eq!(st.restarts, 0, "capacity is not the trainer's failure");
    let note = env.event("Preempted").await;
    assert!(
        note.contains("VertexCapacity") && note.contains("not counted against backoffLimit"),
        "{note}"
    );

    standin.set_state(&second, "JOB_STATE_RUNNING");
    standin.fail_job_with(
        &second,
        3,
        "The replica workerpool0-0 exited with a non-zero status of 1.",
    );
    common::eventually("attempt 3's CustomJob", created(3)).await;
    let st = env
        .status_until("gpus", "a restart counted", |s| s.restarts == 1)
        .await;
    assert_eq!(st.preemptions, 1);
}

/// The CustomJob options a GKE/Vertex team sets: boot disk, reservations, VPC network,
/// FLEX_START's wait, web access, each on the wire where Vertex AI reads it.
#[tokio::test]
async fn vertex_options_reach_the_custom_job() {
    let standin = VertexStandIn::start().await;
    let mut j = job();
    j.spec.workers = 2;
    let reservation = "projects/my-proj/zones/us-central1-a/reservations/r1";
    let vertex = j.spec.vertex_ai.as_mut().unwrap();
    vertex.boot_disk_size_gb = Some(500);
    vertex.reservation_affinity = Some(mtl_crds::VertexReservationAffinity {
        affinity_type: mtl_crds::VertexReservationType::SpecificReservation,
        key: Some("compute.googleapis.com/reservation-name".into()),
        values: vec![reservation.into()],
    });
    vertex.network = Some("projects/123/global/networks/ml".into());
    vertex.scheduling_strategy = Some(mtl_crds::VertexSchedulingStrategy::FlexStart);
    vertex.max_wait_duration = Some("7200s".into());
    vertex.enable_web_access = true;
    client(&standin).await.ensure_created(&j, 1).await.unwrap();
    let body = standin.requests_to(Route::Create)[0].body.clone().unwrap();
    let spec = &body["jobSpec"];
    for pool in spec["workerPoolSpecs"].as_array().unwrap() {
        assert_eq!(pool["diskSpec"]["bootDiskSizeGb"], 500, "{pool}");
        let affinity = &pool["machineSpec"]["reservationAffinity"];
        assert_eq!(
            affinity["reservationAffinityType"],
            google_cloud_aiplatform_v1::model::reservation_affinity::Type::SpecificReservation
                .value()
                .unwrap(),
            "{affinity}"
        );
        assert_eq!(affinity["key"], "compute.googleapis.com/reservation-name");
        assert_eq!(affinity["values"], json!([reservation]));
    }
    assert_eq!(spec["network"], "projects/123/global/networks/ml");
    assert_eq!(spec["enableWebAccess"], true);
    assert_eq!(spec["scheduling"]["maxWaitDuration"], "7200s");

    // What Vertex AI would refuse is refused before any request, naming the field.
    let mut standard = j.clone();
    standard
        .spec
        .vertex_ai
        .as_mut()
        .unwrap()
        .scheduling_strategy = None;
    let err = mtl_operator::backend::vertex::validate_for_vertex(&standard).unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.vertexAI.maxWaitDuration: only for schedulingStrategy FLEX_START"),
        "{err}"
    );
    let mut no_key = j.clone();
    no_key
        .spec
        .vertex_ai
        .as_mut()
        .unwrap()
        .reservation_affinity
        .as_mut()
        .unwrap()
        .key = None;
    let err = mtl_operator::backend::vertex::validate_for_vertex(&no_key).unwrap_err();
    assert!(
        err.to_string()
            .contains("SPECIFIC_RESERVATION needs key and values"),
        "{err}"
    );
}
