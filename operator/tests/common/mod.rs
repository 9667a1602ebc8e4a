//! Shared by the end-to-end tests: a kube-standin with the CRD installed from
//! `crds/multitasktrainingjobs.yaml`, the real `mtl-operator` binary started against it
//! through a kubeconfig, checkpoints on gs:// (a real `gcp-storage-emulator`, as
//! `backend: kubernetes` requires) written the way the trainer writes them, and bounded
//! polling (nothing sleeps for synchronisation).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use kube_standin::{Kubectl, StandIn};
use mtl_crds::{CheckpointRef, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::manifest::checkpoint_uri;
use mtl_storage::{Manifest, Storage};
use mtl_test_support::gcs::Emulator;
use mtl_test_support::{Patience, eventually_with, free_port};
use serde_json::json;

/// The CRD as `make crds` generates it (and as the Helm chart installs it).
pub const CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/multitasktrainingjobs.yaml"
);

/// The MultiTaskTrainingPolicy CRD, as `make crds` generates it.
pub const POLICY_CRD_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crds/multitasktrainingpolicies.yaml"
);

pub const NS: &str = "default";
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives `Some`; past 30 s the test fails with `what`, the last value
/// seen and the logs of the operators it started.
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let patience = Patience {
        deadline: DEADLINE,
        every: Duration::from_millis(50),
    };
    eventually_with(what, patience, operator_logs, check).await
}

thread_local! {
    /// Log files of the operators this test started (tests run one per thread).
    static LOGS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn operator_logs() -> String {
    LOGS.with(|l| {
        l.borrow()
            .iter()
            .map(|p| {
                format!(
                    "--- {} ---\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    })
}

/// One stand-in, a kubeconfig for it, a storage emulator for checkpoints and the operators
/// started on it.
pub struct Env {
    pub standin: StandIn,
    /// Where `checkpoints()` lives; the operators find it through `STORAGE_EMULATOR_HOST`.
    pub emulator: Emulator,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// Extra environment of the operators started from now on.
    pub operator_env: Vec<(String, String)>,
    operators: Vec<Operator>,
}

struct Operator {
    identity: String,
    child: Child,
    metrics: String,
    log: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        for op in &mut self.operators {
            let _ = op.child.kill();
            let _ = op.child.wait();
        }
    }
}

impl Env {
    /// A stand-in with the CRDs installed, as a user installs them.
    pub async fn start() -> Env {
        let env = Self::start_without_crd().await;
        env.install_crd().await;
        env.install_policy_crd().await;
        env
    }

    /// Creates the MultiTaskTrainingPolicy CRD from `crds/multitasktrainingpolicies.yaml`.
    pub async fn install_policy_crd(&self) {
        let yaml = std::fs::read_to_string(POLICY_CRD_FILE).expect("the policy CRD is readable");
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&yaml).expect("the policy CRD parses");
        self.create_crd(&crd).await;
    }

    /// Operators started from now on get `policy` (a MultiTaskTrainingPolicy's spec) as their
    /// default policy (`--policy-file`).
    pub fn default_policy(&mut self, policy: serde_json::Value) {
        let path = self
            .dir
            .path()
            .join(format!("policy-{}.yaml", self.operators.len()));
        std::fs::write(&path, serde_yaml::to_string(&policy).expect("YAML")).expect("policy file");
        self.operator_env.retain(|(k, _)| k != "MTL_POLICY_FILE");
        self.operator_env
            .push(("MTL_POLICY_FILE".into(), path.display().to_string()));
    }

    /// Creates or replaces the namespace's MultiTaskTrainingPolicy `default` (as a platform
    /// administrator would, with `kubectl apply`).
    pub async fn namespace_policy(&self, spec: serde_json::Value) {
        let api: Api<mtl_crds::MultiTaskTrainingPolicy> = Api::namespaced(self.client.clone(), NS);
        let policy = json!({
            "apiVersion": "multitask.dev/v1alpha1",
            "kind": "MultiTaskTrainingPolicy",
            "metadata": {"name": "default"},
            "spec": spec,
        });
        api.patch(
            "default",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&policy),
        )
        .await
        .expect("policy applied");
    }

    /// A stand-in serving only the built-in types.
    pub async fn start_without_crd() -> Env {
        let standin = StandIn::builder()
            .bookmark_interval(Duration::from_millis(500))
            .start()
            .await
            .expect("stand-in starts");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, standin.kubeconfig(NS)).expect("kubeconfig written");
        let mut config = Config::new(standin.url().parse().expect("url"));
        config.default_namespace = NS.into();
        let client = Client::try_from(config).expect("client");
        let emulator = Emulator::start();
        // The key the operator signs accepted specs with, as the chart's Secret gives it.
        let key = dir.path().join("accepted-spec-key");
        std::fs::write(&key, "a test key of more than sixteen bytes\n").expect("key written");
        let operator_env = vec![
            ("STORAGE_EMULATOR_HOST".into(), emulator.endpoint()),
            (
                "MTL_ACCEPTED_SPEC_KEY_FILE".into(),
                key.display().to_string(),
            ),
        ];
        Env {
            standin,
            emulator,
            client,
            dir,
            kubeconfig,
            operator_env,
            operators: Vec::new(),
        }
    }

    /// Creates the CRD from `crds/multitasktrainingjobs.yaml` over HTTP (as
    /// `kubectl create -f` does) and waits until it is Established.
    pub async fn install_crd(&self) {
        self.install_crd_edited(|_| {}).await
    }

    /// As [`Env::install_crd`], with the CRD changed by `edit` first (as an API server that
    /// does not enforce some of it would have it).
    pub async fn install_crd_edited(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let yaml = std::fs::read_to_string(CRD_FILE).expect("the CRD file is readable");
        let mut value: serde_json::Value = serde_yaml::from_str(&yaml).expect("the CRD parses");
        edit(&mut value);
        let crd: CustomResourceDefinition = serde_json::from_value(value).expect("the CRD parses");
        self.create_crd(&crd).await;
    }

    /// Creates `crd` and waits until it is established.
    pub async fn create_crd(&self, crd: &CustomResourceDefinition) {
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        crds.create(&PostParams::default(), crd)
            .await
            .expect("the CRD is created");
        let name = crd.metadata.name.clone().unwrap_or_default();
        eventually(&format!("CRD {name} to be established"), || {
            let (crds, name) = (crds.clone(), name.clone());
            async move {
                let crd = crds.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }

    /// scheduler-plugins' PodGroup CRD (`scheduling.x-k8s.io/v1alpha1`), as its chart installs
    /// it, in the parts the operator writes; and the operator to be started with coscheduling.
    pub async fn with_coscheduling(&mut self) {
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "podgroups.scheduling.x-k8s.io"},
            "spec": {
                "group": "scheduling.x-k8s.io",
                "scope": "Namespaced",
                "names": {"plural": "podgroups", "singular": "podgroup", "kind": "PodGroup",
                          "shortNames": ["pg", "pgs"]},
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {
                            "minMember": {"type": "integer", "format": "int32"},
                            "scheduleTimeoutSeconds": {"type": "integer", "format": "int32"},
                            "minResources": {"type": "object", "additionalProperties": {
                                "x-kubernetes-int-or-string": true}}
                        }},
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    }}}
                }]
            }
        }))
        .expect("the PodGroup CRD parses");
        self.create_crd(&crd).await;
        self.operator_env.push((
            "MTL_COSCHEDULING_SCHEDULER_NAME".into(),
            "scheduler-plugins-scheduler".into(),
        ));
    }

    /// The real `kubectl`, with its own home directory under this environment's.
    pub fn kubectl(&self) -> Kubectl {
        let home = self.dir.path().join("kubectl");
        std::fs::create_dir_all(&home).expect("kubectl home");
        Kubectl::new(&self.standin.url(), &home, NS).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `mtl-operator run` as `identity`; returns its index.
    pub fn operator(&mut self, identity: &str) -> usize {
        let port = free_port();
        let log = self.dir.path().join(format!("{identity}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_mtl-operator"))
            .args([
                "run",
                "--namespace",
                NS,
                "--metrics-addr",
                &format!("127.0.0.1:{port}"),
                "--lease-namespace",
                NS,
                "--identity",
                identity,
                "--lease-duration-seconds",
                "3",
                "--pod-grace-seconds",
                "5",
                "--poll-seconds",
                "1",
                "--manifest-poll-seconds",
                "1",
                "--progress-poll-seconds",
                "1",
                "--progress-write-seconds",
                "1",
                "--backoff-base-seconds",
                "1",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .envs(self.operator_env.iter().cloned())
            .env("RUST_LOG", "info,kube=warn,tower=warn,hyper=warn")
            .stdout(Stdio::null())
            .stderr(out.try_clone().expect("log handle"))
            .spawn()
            .expect("mtl-operator starts");
        LOGS.with(|l| l.borrow_mut().push(log.clone()));
        self.operators.push(Operator {
            identity: identity.into(),
            child,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
            log,
        });
        self.operators.len() - 1
    }

    pub fn signal(&mut self, i: usize, sig: &str) {
        let pid = self.operators[i].child.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    pub async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        eventually("the operator to exit", || {
            let status = self.operators[i].child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    pub fn logs(&self) -> String {
        self.operators
            .iter()
            .map(|o| {
                format!(
                    "--- {} ---\n{}",
                    o.identity,
                    std::fs::read_to_string(&o.log).unwrap_or_default()
                )
            })
            .collect()
    }

    pub fn jobs(&self) -> Api<MultiTaskTrainingJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// The checkpoints of the jobs `apply` creates: `gs://<bucket>/out` on the emulator.
    pub fn checkpoints(&self) -> String {
        self.emulator.uri("out")
    }

    /// Storage that reaches [`Env::checkpoints`].
    pub fn storage(&self) -> Storage {
        self.emulator.storage()
    }

    /// `kubectl apply --server-side -f job.yaml`.
    pub async fn apply(&self, name: &str, extra: serde_json::Value) {
        self.apply_with_meta(name, json!({"name": name}), extra)
            .await
    }

    /// Applies job `name` as an older operator left it: carrying `multitask.dev/cleanup`.
    pub async fn apply_with_old_finalizer(&self, name: &str) {
        self.apply_with_meta(
            name,
            json!({"name": name, "finalizers": [mtl_operator::FINALIZER]}),
            json!({}),
        )
        .await
    }

    /// Waits until job `name` carries no finalizer.
    pub async fn finalizers_released(&self, name: &str) {
        let jobs = self.jobs();
        eventually("the finalizer released", || {
            let jobs = jobs.clone();
            async move {
                let job = jobs.get(name).await.ok()?;
                job.metadata
                    .finalizers
                    .unwrap_or_default()
                    .is_empty()
                    .then_some(())
            }
        })
        .await
    }

    pub async fn apply_with_meta(
        &self,
        name: &str,
        metadata: serde_json::Value,
        extra: serde_json::Value,
    ) {
        let mut job = json!({
            "apiVersion": "multitask.dev/v1alpha1",
            "kind": "MultiTaskTrainingJob",
            "metadata": metadata,
            "spec": {
                "image": "mtl-trainer:test",
                "model": {"pretrained": "gs://models/minilm"},
                "tasks": [{
                    "name": "stsb", "type": "regression", "train": "gs://data/stsb/train.tsv",
                    "format": "glueTsv", "textFields": ["sentence1", "sentence2"], "labelField": "score"
                }],
                "checkpoints": {"uri": self.checkpoints(), "everySteps": 100},
                "resources": {"gpus": 1, "gpuType": "nvidia-l4", "cpu": 4, "memory": "16Gi",
                              "serviceAccountName": "trainer"},
                "runPolicy": {"backoffLimit": 1}
            }
        });
        merge(&mut job["spec"], extra);
        self.jobs()
            .patch(
                name,
                &PatchParams::apply("kubectl").force(),
                &Patch::Apply(&job),
            )
            .await
            .expect("job applied");
    }

    /// Waits until job `name` no longer exists.
    pub async fn job_gone(&self, name: &str, what: &str) {
        let jobs = self.jobs();
        eventually(what, || {
            let jobs = jobs.clone();
            async move { jobs.get_opt(name).await.ok()?.is_none().then_some(()) }
        })
        .await;
    }

    /// Waits for job `name` to fail, checks that its Failed condition gives `reason`, and
    /// returns the status and that condition's message.
    pub async fn failed(&self, name: &str, reason: &str) -> (MultiTaskTrainingJobStatus, String) {
        let st = self
            .status_until(name, "phase Failed", |s| {
                s.phase == mtl_crds::JobPhase::Failed
            })
            .await;
        let c = mtl_operator::status::find(&st, "Failed").expect("a Failed condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason),
            "{}",
            c.message
        );
        let message = c.message.clone();
        (st, message)
    }

    pub async fn status_until(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&MultiTaskTrainingJobStatus) -> bool,
    ) -> MultiTaskTrainingJobStatus {
        let jobs = self.jobs();
        let found = tokio::time::timeout(
            DEADLINE,
            eventually(what, || {
                let jobs = jobs.clone();
                let pred = &pred;
                async move {
                    let job = jobs.get_opt(name).await.ok().flatten()?;
                    job.status.filter(|s| pred(s))
                }
            }),
        )
        .await;
        match found {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}\n{}", self.logs()),
        }
    }

    pub async fn pod(&self, name: &str) -> Pod {
        let pods = self.pods();
        eventually(&format!("pod {name}"), || {
            let pods = pods.clone();
            async move { pods.get_opt(name).await.ok().flatten() }
        })
        .await
    }

    pub async fn pod_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .pods()
            .list(&ListParams::default())
            .await
            .expect("pods listed")
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Commits a checkpoint the way the trainer does: files first, then the manifest.
    pub async fn commit_checkpoint(&self, step: u64) {
        let storage = self.storage();
        let base = self.checkpoints();
        let dir = checkpoint_uri(&base, step);
        storage
            .write(&mtl_storage::join(&dir, "model.safetensors"), vec![0; 16])
            .await
            .expect("checkpoint file");
        let mut manifest = Manifest::load(&storage, &base)
            .await
            .expect("manifest readable")
            .unwrap_or_default();
        manifest
            .commit(
                &storage,
                &base,
                CheckpointRef {
                    step,
                    uri: dir,
                    time: "2026-01-01T00:00:00Z".into(),
                    metrics: BTreeMap::from([("stsb/pearson".to_string(), step as f64 / 1000.0)]),
                },
                None,
                None,
            )
            .await
            .expect("manifest committed");
    }

    /// Writes `progress.json` the way the trainer does (one whole object); `written` tells
    /// one write from the next, as the trainer's clock does.
    pub async fn write_progress(&self, step: u64, total_steps: u64, eta: f64, written: u32) {
        let p = mtl_storage::Progress {
            step,
            total_steps,
            epoch: 0.5,
            loss: Some(0.25),
            task_losses: BTreeMap::new(),
            learning_rate: 1e-5,
            examples_per_second: 10.0,
            tokens_per_second: 700.0,
            eta_seconds: Some(eta),
            eval: BTreeMap::new(),
            updated_at: format!("2026-01-01T00:00:{written:02}Z"),
            attempt: Some(1),
        };
        p.store(&self.storage(), &self.checkpoints())
            .await
            .expect("progress written");
    }

    /// The note of an Event with `reason`.
    pub fn event_note(&self, reason: &str) -> Option<String> {
        self.standin
            .list("events.k8s.io/v1", "events", Some(NS))
            .unwrap_or_default()
            .iter()
            .find(|e| e["reason"] == reason)
            .and_then(|e| e["note"].as_str().map(str::to_string))
    }

    /// Waits for an Event of `reason` on the job and returns its note. The operator records
    /// Events after the status write they go with, so a test that saw the status waits.
    pub async fn event(&self, reason: &str) -> String {
        eventually(&format!("a {reason} event"), || async {
            self.event_note(reason)
        })
        .await
    }

    pub async fn metrics(&self, i: usize) -> Option<String> {
        http_get(&self.operators[i].metrics).await
    }
}

pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                if v.is_null() {
                    // As in a JSON merge patch: null leaves the field out.
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// A tiny HTTP/1.0 GET (the metrics endpoint), without another client dependency.
pub async fn http_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/')?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    (status_line.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
}

pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub fn kubelet_ok(r: Result<serde_json::Value, kube_standin::Error>) {
    r.expect("kubelet stand-in step");
}

pub async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    leases
        .get_opt("mtl-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}
