//! Test helpers: jobs built with small builder methods, and an API server stand-in over
//! `tower_test::mock` that checks each request the reconciler makes, in order.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use mtl_crds::{MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use serde_json::Value;
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle, SendResponse};

use crate::controller::{Config, Context};
use crate::telemetry::Metrics;

pub const NS: &str = "testns";
pub const JOBS: &str = "/apis/multitask.dev/v1alpha1/namespaces/testns/multitasktrainingjobs";
pub const PODS: &str = "/api/v1/namespaces/testns/pods";
pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/testns/events";

/// Job `testns/train` (uid `uid-train`), image `trainer:1`, checkpoints on a
/// PersistentVolumeClaim (so the operator reads no manifest; see [`JobExt::checkpoints_at`]).
pub fn test_job() -> MultiTaskTrainingJob {
    let spec = mtl_crds::parse_job(
        "job.yaml",
        r#"
image: trainer:1
model: { pretrained: gs://m/roberta }
tasks:
  - { name: stsb, type: regression, train: gs://d/stsb.tsv, format: glueTsv, textFields: [s1, s2], labelField: score }
checkpoints: { uri: /checkpoints/out, persistentVolumeClaim: ckpt }
runPolicy: { backoffLimit: 1 }
"#,
    )
    .expect("test job parses");
    let mut job = MultiTaskTrainingJob::new("train", spec);
    job.meta_mut().namespace = Some(NS.into());
    job.meta_mut().uid = Some("uid-train".into());
    job.meta_mut().generation = Some(1);
    job.meta_mut().resource_version = Some("100".into());
    job
}

/// Builder methods on test jobs.
pub trait JobExt: Sized {
    fn finalized(self) -> Self;
    fn with_status(self, status: MultiTaskTrainingJobStatus) -> Self;
    fn deleting(self) -> Self;
    /// Checkpoints at `uri` (gs://), which the operator reads.
    fn checkpoints_at(self, uri: &str) -> Self;
}

impl JobExt for MultiTaskTrainingJob {
    fn finalized(mut self) -> Self {
        self.meta_mut()
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(crate::FINALIZER.into());
        self
    }

    fn with_status(mut self, status: MultiTaskTrainingJobStatus) -> Self {
        self.status = Some(status);
        self
    }

    fn deleting(mut self) -> Self {
        self.meta_mut().deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        self
    }

    fn checkpoints_at(mut self, uri: &str) -> Self {
        self.spec.checkpoints.uri = uri.into();
        self.spec.checkpoints.persistent_volume_claim = None;
        self
    }
}

/// One request as the mock API server received it.
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

pub struct ApiServerVerifier(pub Handle<Request<Body>, Response<Body>>);

impl ApiServerVerifier {
    /// Takes the next request and checks its method and path.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
    ) -> (Received, SendResponse<Response<Body>>) {
        let (request, send) = self.0.next_request().await.unwrap_or_else(|| {
            panic!("expected {method} {path}, but the reconciler made no request")
        });
        let (parts, body) = request.into_parts();
        let bytes = body.collect().await.expect("request body").to_bytes();
        let received = Received {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body: if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("request body is JSON")
            },
        };
        assert_eq!(
            (received.method.clone(), received.path.as_str()),
            (method.clone(), path),
            "unexpected request (query {:?})",
            received.query
        );
        (received, send)
    }
}

pub fn respond(send: SendResponse<Response<Body>>, body: &impl serde::Serialize) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap(),
    );
}

pub fn respond_status(send: SendResponse<Response<Body>>, code: u16, reason: &str) {
    let status = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{reason} (test)"), "reason": reason, "code": code,
    });
    send.send_response(
        Response::builder()
            .status(StatusCode::from_u16(code).unwrap())
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
}

/// Runs a scenario to completion on the mock server.
pub fn spawn<F>(
    verifier: ApiServerVerifier,
    f: impl FnOnce(ApiServerVerifier) -> F,
) -> JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(f(verifier))
}

/// Waits for a scenario, failing the test if it hangs or panicked.
pub async fn finish(handle: JoinHandle<()>) {
    tokio::time::timeout(std::time::Duration::from_secs(5), handle)
        .await
        .expect("scenario finished in time")
        .expect("scenario passed");
}

impl Context {
    /// A context whose client talks to a mock API server.
    pub fn test() -> (Arc<Self>, ApiServerVerifier) {
        Self::test_with_storage(mtl_storage::Storage::new())
    }

    /// As [`Context::test`], reading checkpoints through `storage`.
    pub fn test_with_storage(storage: mtl_storage::Storage) -> (Arc<Self>, ApiServerVerifier) {
        Self::test_with(storage, Config::default())
    }

    /// As [`Context::test`], with `config`.
    pub fn test_with(
        storage: mtl_storage::Storage,
        config: Config,
    ) -> (Arc<Self>, ApiServerVerifier) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NS);
        let ctx = Context::new(
            client,
            Reporter {
                controller: "mtl-operator".into(),
                instance: Some("test".into()),
            },
            storage,
            Arc::new(Metrics::new()),
            config,
        );
        (Arc::new(ctx), ApiServerVerifier(handle))
    }
}
