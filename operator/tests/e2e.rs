//! End to end: the real `mtl-operator` binary against the Kubernetes API + kubelet stand-in
//! (`kube-standin`, in-process, plain HTTP), through a kubeconfig file, with checkpoints in a
//! local directory written the way the trainer writes them.
//!
//! Every wait polls with a bounded deadline; nothing sleeps for synchronisation.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Config};
use kube_standin::StandIn;
use mtl_crds::{CheckpointRef, JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_storage::manifest::checkpoint_uri;
use mtl_storage::{Manifest, Storage};
use serde_json::json;

const NS: &str = "default";
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives `Some`, failing after [`DEADLINE`] with `what` and the last
/// value seen.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                operator_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

/// One stand-in, a kubeconfig for it, a checkpoint directory and the operators started on it.
struct Env {
    standin: StandIn,
    client: Client,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Env {
    async fn start() -> Env {
        mtl_operator::vertex::install_crypto_provider();
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
        Env {
            standin,
            client,
            dir,
            kubeconfig,
            operators: Vec::new(),
        }
    }

    /// Starts `mtl-operator run` as `identity`; returns its index.
    fn operator(&mut self, identity: &str) -> usize {
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
            ])
            .env("KUBECONFIG", &self.kubeconfig)
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

    fn signal(&mut self, i: usize, sig: &str) {
        let pid = self.operators[i].child.id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill runs");
        assert!(ok.success());
    }

    async fn wait_exit(&mut self, i: usize) -> std::process::ExitStatus {
        eventually("the operator to exit", || {
            let status = self.operators[i].child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    fn logs(&self) -> String {
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

    fn jobs(&self) -> Api<MultiTaskTrainingJob> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    fn checkpoints(&self) -> String {
        self.dir.path().join("out").display().to_string()
    }

    /// `kubectl apply --server-side -f job.yaml`.
    ///
    /// The job arrives already carrying the operator's finalizer, so the scenarios start at the
    /// first pod; adding the finalizer is checked by `operator_adds_its_finalizer` below and
    /// request by request in the controller's mock tests.
    async fn apply(&self, name: &str, extra: serde_json::Value) {
        self.apply_with_meta(
            name,
            json!({"name": name, "finalizers": [mtl_operator::FINALIZER]}),
            extra,
        )
        .await
    }

    async fn apply_with_meta(
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
                "resources": {"gpus": 1, "gpuType": "nvidia-l4", "cpu": "4", "memory": "16Gi",
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

    async fn status_until(
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

    async fn pod(&self, name: &str) -> Pod {
        let pods = self.pods();
        eventually(&format!("pod {name}"), || {
            let pods = pods.clone();
            async move { pods.get_opt(name).await.ok().flatten() }
        })
        .await
    }

    async fn pod_names(&self) -> Vec<String> {
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
    async fn commit_checkpoint(&self, step: u64) {
        let storage = Storage::new();
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
            )
            .await
            .expect("manifest committed");
    }

    async fn event_reasons(&self) -> Vec<String> {
        self.standin
            .list("events.k8s.io/v1", "events", Some(NS))
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["reason"].as_str().map(str::to_string))
            .collect()
    }

    async fn metrics(&self, i: usize) -> Option<String> {
        http_get(&self.operators[i].metrics).await
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A tiny HTTP/1.0 GET (the metrics endpoint), without another client dependency.
async fn http_get(url: &str) -> Option<String> {
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

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn kubelet_ok(r: Result<serde_json::Value, kube_standin::Error>) {
    r.expect("kubelet stand-in step");
}

async fn lease_holder(env: &Env) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), NS);
    leases
        .get_opt("mtl-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn job_runs_to_success_and_status_follows_the_manifest() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;

    let pod = env.pod("train-1").await;
    let meta = &pod.metadata;
    assert_eq!(meta.labels.as_ref().unwrap()["multitask.dev/job"], "train");
    assert_eq!(meta.labels.as_ref().unwrap()["multitask.dev/attempt"], "1");
    let owner = &meta.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("MultiTaskTrainingJob", Some(true))
    );
    let spec = pod.spec.clone().unwrap();
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("mtl-trainer:test"));
    let args = c.args.clone().unwrap();
    assert_eq!(&args[..2], ["train", "--job-json"]);
    let passed: mtl_crds::MultiTaskTrainingJobSpec = serde_json::from_str(&args[2]).unwrap();
    assert_eq!(passed.checkpoints.uri, env.checkpoints());
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(spec.termination_grace_period_seconds, Some(5));
    assert_eq!(spec.service_account_name.as_deref(), Some("trainer"));
    assert_eq!(
        spec.node_selector.as_ref().unwrap()["cloud.google.com/gke-accelerator"],
        "nvidia-l4"
    );
    let limits = c.resources.as_ref().unwrap().limits.clone().unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, "1");
    assert_eq!(
        c.security_context
            .as_ref()
            .unwrap()
            .read_only_root_filesystem,
        Some(true)
    );

    let st = env
        .status_until("train", "phase Pending", |s| s.phase == JobPhase::Pending)
        .await;
    assert_eq!((st.attempt, st.pod_name.as_deref()), (1, Some("train-1")));

    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "phase Running", |s| s.phase == JobPhase::Running)
        .await;

    env.commit_checkpoint(100).await;
    env.commit_checkpoint(200).await;
    let st = env
        .status_until("train", "status.step 200", |s| s.step == Some(200))
        .await;
    assert_eq!(st.checkpoints.len(), 2);
    assert!(
        st.latest_checkpoint
            .as_deref()
            .unwrap()
            .ends_with("checkpoint-200")
    );
    assert_eq!(st.metrics["stsb/pearson"], 0.2);

    // The last checkpoint lands right before the trainer exits: the final read catches it.
    env.commit_checkpoint(300).await;
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-1"));
    let st = env
        .status_until("train", "phase Succeeded", |s| {
            s.phase == JobPhase::Succeeded
        })
        .await;
    assert_eq!(st.step, Some(300));
    assert!(st.completion_time.is_some());
    assert_eq!((st.restarts, st.preemptions), (0, 0));

    let reasons = env.event_reasons().await;
    for want in ["Created", "Running", "CheckpointCommitted", "Succeeded"] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
    assert_eq!(env.pod_names().await, ["train-1"]);
    let text = env.metrics(0).await.expect("metrics served");
    assert!(
        metric(&text, "mtl_operator_reconciles_total").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(metric(&text, "mtl_operator_leader"), Some(1.0));
}

#[tokio::test]
async fn preemption_replaces_the_pod_without_spending_backoff_limit() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    // Scheduler preemption: DisruptionTarget, then graceful deletion (trainer exits 143).
    kubelet_ok(env.standin.kubelet().preempt(NS, "train-1"));
    let st = env
        .status_until("train", "attempt 2 after preemption", |s| s.attempt == 2)
        .await;
    assert_eq!((st.preemptions, st.restarts), (1, 0));
    env.pod("train-2").await;

    // GKE spot reclaim on the replacement: Failed with reason Terminated.
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    env.status_until("train", "Running again", |s| s.phase == JobPhase::Running)
        .await;
    kubelet_ok(env.standin.kubelet().node_shutdown(NS, "train-2"));
    let st = env
        .status_until("train", "attempt 3 after node shutdown", |s| s.attempt == 3)
        .await;
    assert_eq!((st.preemptions, st.restarts), (2, 0));
    env.pod("train-3").await;
    assert!(env.event_reasons().await.iter().any(|r| r == "Preempted"));
}

#[tokio::test]
async fn failures_past_backoff_limit_fail_the_job_with_the_termination_message() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    kubelet_ok(
        env.standin
            .kubelet()
            .fail(NS, "train-1", 1, "CUDA error: out of memory"),
    );
    let st = env
        .status_until("train", "restart 1", |s| s.restarts == 1)
        .await;
    assert_eq!((st.attempt, st.phase), (2, JobPhase::Restarting));

    env.pod("train-2").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    let message = "tasks[0] (stsb): cannot read gs://data/stsb/train.tsv: 403 Forbidden";
    kubelet_ok(env.standin.kubelet().fail(NS, "train-2", 1, message));
    let st = env
        .status_until("train", "phase Failed", |s| s.phase == JobPhase::Failed)
        .await;
    let failed = st.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.reason.as_str()),
        ("True", "BackoffLimitExceeded")
    );
    assert_eq!(failed.message, message);
    assert_eq!(
        env.pod_names().await,
        ["train-1", "train-2"],
        "no third attempt"
    );
}

#[tokio::test]
async fn operator_restart_mid_job_creates_no_duplicate_pod() {
    let mut env = Env::start().await;
    let first = env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;

    // Killed hard: no clean shutdown, the lease is left to expire.
    env.signal(first, "-KILL");
    env.wait_exit(first).await;
    env.commit_checkpoint(100).await;
    env.operator("op-b");
    env.status_until("train", "op-b reconciles (step 100)", |s| {
        s.step == Some(100)
    })
    .await;
    assert_eq!(lease_holder(&env).await.as_deref(), Some("op-b"));
    assert_eq!(env.pod_names().await, ["train-1"]);
    let creates =
        env.standin.stats().count("patch", "pods") + env.standin.stats().count("create", "pods");
    assert_eq!(creates, 1, "the pod was written once");
}

#[tokio::test]
async fn suspend_deletes_the_pod_and_resume_starts_a_new_attempt() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running", |s| s.phase == JobPhase::Running)
        .await;
    env.commit_checkpoint(100).await;
    env.status_until("train", "step 100", |s| s.step == Some(100))
        .await;

    env.apply("train", json!({"runPolicy": {"suspend": true}}))
        .await;
    let st = env
        .status_until("train", "Suspended", |s| s.phase == JobPhase::Suspended)
        .await;
    assert_eq!(
        (st.attempt, st.step),
        (1, Some(100)),
        "suspend keeps status"
    );
    let pods = env.pods();
    eventually("pod train-1 deleted", || {
        let pods = pods.clone();
        async move { pods.get_opt("train-1").await.ok()?.is_none().then_some(()) }
    })
    .await;

    env.apply("train", json!({"runPolicy": {"suspend": false}}))
        .await;
    env.pod("train-2").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-2"));
    let st = env
        .status_until("train", "Running after resume", |s| {
            s.phase == JobPhase::Running
        })
        .await;
    assert_eq!((st.attempt, st.restarts, st.preemptions), (2, 0, 0));
    let suspended = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Suspended")
        .unwrap();
    assert_eq!(suspended.status, "False");
    let reasons = env.event_reasons().await;
    assert!(reasons.iter().any(|r| r == "Suspended") && reasons.iter().any(|r| r == "Resumed"));
}

#[tokio::test]
async fn two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    let mut env = Env::start().await;
    let a = env.operator("op-a");
    let holder = eventually("a lease holder", || lease_holder(&env)).await;
    assert_eq!(holder, "op-a");
    let b = env.operator("op-b");
    // op-b is up (serves metrics) and stands by.
    let text = eventually("op-b metrics", || env.metrics(b)).await;
    assert_eq!(metric(&text, "mtl_operator_leader"), Some(0.0));

    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    env.status_until("train", "Pending", |s| s.phase == JobPhase::Pending)
        .await;
    let text_b = env.metrics(b).await.expect("op-b metrics");
    assert_eq!(
        metric(&text_b, "mtl_operator_reconciles_total"),
        Some(0.0),
        "the standby did nothing"
    );
    let text_a = env.metrics(a).await.expect("op-a metrics");
    assert_eq!(metric(&text_a, "mtl_operator_leader"), Some(1.0));

    // Clean shutdown of the leader releases the lease; the standby takes over and acts.
    env.signal(a, "-TERM");
    let exit = env.wait_exit(a).await;
    assert!(
        exit.success(),
        "clean exit on SIGTERM: {exit:?}\n{}",
        env.logs()
    );
    eventually("op-b leads", || async {
        (lease_holder(&env).await.as_deref() == Some("op-b")).then_some(())
    })
    .await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    env.status_until("train", "Running via op-b", |s| {
        s.phase == JobPhase::Running
    })
    .await;
    assert_eq!(env.pod_names().await, ["train-1"]);
}

#[tokio::test]
async fn deleting_a_job_stops_its_pods_and_releases_the_finalizer() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply("train", json!({})).await;
    env.pod("train-1").await;
    env.status_until("train", "finalizer and status", |s| s.attempt == 1)
        .await;
    let job = env.jobs().get("train").await.unwrap();
    assert_eq!(
        job.metadata.finalizers.as_deref(),
        Some(&["multitask.dev/cleanup".to_string()][..])
    );
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));

    env.jobs()
        .delete("train", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let jobs = env.jobs();
    eventually("job gone", || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("train").await.ok()?.is_none().then_some(()) }
    })
    .await;
    let pods = env.pods();
    eventually("pods gone", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn finished_job_is_deleted_after_its_ttl() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply(
        "train",
        json!({"runPolicy": {"ttlSecondsAfterFinished": 1}}),
    )
    .await;
    env.pod("train-1").await;
    kubelet_ok(env.standin.kubelet().run(NS, "train-1"));
    kubelet_ok(env.standin.kubelet().succeed(NS, "train-1"));
    env.status_until("train", "Succeeded", |s| s.phase == JobPhase::Succeeded)
        .await;
    let jobs = env.jobs();
    eventually("job deleted by TTL", || {
        let jobs = jobs.clone();
        async move { jobs.get_opt("train").await.ok()?.is_none().then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn operator_adds_its_finalizer() {
    let mut env = Env::start().await;
    env.operator("op-a");
    env.apply_with_meta("train", json!({"name": "train"}), json!({}))
        .await;
    env.pod("train-1").await;
    let job = env.jobs().get("train").await.unwrap();
    assert_eq!(
        job.metadata.finalizers.as_deref(),
        Some(&[mtl_operator::FINALIZER.to_string()][..])
    );
}
