//! Shared test helpers: a stand-in with a kube-rs client, job fixtures, bounded waiting.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use kube_standin::StandIn;
use mtl_crds::MultiTaskTrainingJob;
use serde_json::json;

pub const NS: &str = "default";
/// Upper bound for anything a test awaits.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A kube-rs client for `url` with no TLS and no credentials.
pub fn client_for(url: &str) -> Client {
    let mut config = Config::new(url.parse().expect("stand-in URL is a valid URI"));
    config.default_namespace = NS.into();
    Client::try_from(config).expect("client builds")
}

/// The MultiTaskTrainingJob CRD, as `make crds` generates it.
pub const CRD_YAML: &str = include_str!("../../../crds/multitasktrainingjobs.yaml");

/// Creates the CRD over HTTP, as `kubectl create -f crds/multitasktrainingjobs.yaml` does,
/// and waits until it is Established.
pub async fn install_crd(client: &Client) {
    let crd: CustomResourceDefinition = serde_yaml::from_str(CRD_YAML).expect("the CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("the CRD is created");
    poll("the CRD to be established", || async {
        let crd = crds.get("multitasktrainingjobs.multitask.dev").await.ok()?;
        let conditions = crd.status?.conditions?;
        conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
}

/// A stand-in with the CRD installed, and a client for it.
pub async fn start() -> (StandIn, Client) {
    let (standin, client) = start_without_crd().await;
    install_crd(&client).await;
    (standin, client)
}

/// A stand-in serving only the built-in types.
pub async fn start_without_crd() -> (StandIn, Client) {
    init_tracing();
    let standin = StandIn::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .expect("stand-in starts");
    let client = client_for(&standin.url());
    (standin, client)
}

pub fn job(name: &str) -> MultiTaskTrainingJob {
    serde_json::from_value(json!({
        "apiVersion": "multitask.dev/v1alpha1",
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": name, "labels": {"app": "mtl"}},
        "spec": {
            "model": {"pretrained": "/models/minilm"},
            "tasks": [{
                "name": "stsb", "type": "regression", "train": "data/stsb/train.tsv",
                "format": "glueTsv", "textFields": ["sentence1", "sentence2"], "labelField": "score"
            }],
            "checkpoints": {"uri": "gs://bucket/run1"}
        }
    }))
    .expect("fixture job parses")
}

pub fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "mtl"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "trainer", "image": "mtl-trainer:0.1", "args": ["--job", "/job.json"]}]
        }
    }))
    .expect("fixture pod parses")
}

/// Awaits `fut` for at most [`DEADLINE`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `check` until it returns `Some`, for at most [`DEADLINE`].
pub async fn poll<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}
