//! End to end with real containers: the real `mtl-operator` binary against kube-standin,
//! whose kubelet runs the pods with podman; the trainer image in the pod fine-tunes a tiny
//! random BERT (MiniLM's tokenizer) on the bundled STS-B and RTE samples, with data, model and
//! checkpoints in a real `gcp-storage-emulator` on the host's loopback.
//!
//! They need podman, the trainer image (`make images`; `$MTL_TRAINER_IMAGE` names another)
//! and the project's venv (emulator, transformers, MiniLM's tokenizer), so they are ignored by
//! `cargo test` and run by
//! `make image-test`:
//!     cargo test -p mtl-operator --test containers -- --ignored

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Config};
use kube_standin::{KubeletConfig, PodmanConfig, StandIn};
use mtl_crds::{JobPhase, MultiTaskTrainingJob, MultiTaskTrainingJobStatus};
use mtl_test_support::gcs::Emulator;
use mtl_test_support::{Patience, eventually_with, free_port};
use serde_json::{Value, json};

const NS: &str = "default";
/// Training on a shared 2-core machine: generous, and every wait is a poll.
const DEADLINE: Duration = Duration::from_secs(600);

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn trainer_image() -> String {
    std::env::var("MTL_TRAINER_IMAGE").unwrap_or_else(|_| "localhost/mtl-trainer:local".into())
}

fn minilm_dir() -> PathBuf {
    std::env::var_os("MTL_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/minilm"))
}

/// A random 2-layer BERT of hidden size 32 with MiniLM's vocabulary and tokenizer, saved by
/// transformers as a HuggingFace model directory.
fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("tiny-bert");
    let python = std::env::var_os("MTL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".venv/bin/python"));
    let script = r#"
import shutil, sys, torch
from transformers import BertConfig, BertModel
out, tokenizer = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=128)
BertModel(config).save_pretrained(out)
for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
    shutil.copy(f"{tokenizer}/{f}", f"{out}/{f}")
"#;
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(&out)
        .arg(minilm_dir())
        .env("HF_HUB_OFFLINE", "1")
        .status()
        .unwrap_or_else(|e| panic!("{} (make setup creates .venv): {e}", python.display()));
    assert!(status.success(), "making the tiny model failed");
    out
}

/// An emulator with MiniLM and two tasks' data, the stand-in with the podman kubelet, and the
/// operator, all on 127.0.0.1.
struct World {
    emulator: Emulator,
    standin: StandIn,
    client: Client,
    operator: Child,
    operator_log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.operator.kill();
        let _ = self.operator.wait();
    }
}

/// Creates the CRD from `crds/` as a user installs it, and waits until it is Established.
async fn install_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let yaml = std::fs::read_to_string(workspace().join("crds/multitasktrainingjobs.yaml"))
        .expect("the CRD file is readable");
    let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("the CRD parses");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&kube::api::PostParams::default(), &crd)
        .await
        .expect("the CRD is created");
    for _ in 0..600 {
        let established = crds
            .get("multitasktrainingjobs.multitask.dev")
            .await
            .ok()
            .and_then(|c| c.status)
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if established {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the CRD was not established");
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let emulator = Emulator::start();
        let storage = emulator.storage();
        let model = tiny_model(dir.path());
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
            "special_tokens_map.json",
        ] {
            storage
                .upload(&model.join(f), &emulator.uri(&format!("models/tiny/{f}")))
                .await
                .unwrap_or_else(|e| panic!("uploading the model's {f}: {e}"));
        }
        for task in ["stsb", "rte"] {
            for split in ["train", "dev"] {
                let file = workspace().join(format!("examples/data/{task}/{split}.tsv"));
                storage
                    .upload(&file, &emulator.uri(&format!("data/{task}/{split}.tsv")))
                    .await
                    .expect("example data uploaded");
            }
        }
        let standin = StandIn::builder()
            .bookmark_interval(Duration::from_millis(500))
            .kubelet(KubeletConfig {
                podman: Some(PodmanConfig {
                    extra_env: [("STORAGE_EMULATOR_HOST".to_string(), emulator.endpoint())].into(),
                    ..PodmanConfig::default()
                }),
                ..KubeletConfig::default()
            })
            .start()
            .await
            .expect("stand-in starts");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, standin.kubeconfig(NS)).expect("kubeconfig written");
        let mut config = Config::new(standin.url().parse().expect("url"));
        config.default_namespace = NS.into();
        let client = Client::try_from(config).expect("client");
        install_crd(&client).await;
        let operator_log = dir.path().join("operator.log");
        let log = std::fs::File::create(&operator_log).expect("log file");
        let operator = Command::new(env!("CARGO_BIN_EXE_mtl-operator"))
            .args([
                "run",
                "--namespace",
                NS,
                "--lease-namespace",
                NS,
                "--identity",
                "op",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
            .args([
                "--pod-grace-seconds",
                "120",
                "--poll-seconds",
                "1",
                "--manifest-poll-seconds",
                "1",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("STORAGE_EMULATOR_HOST", emulator.endpoint())
            .env("RUST_LOG", "info,kube=warn,tower=warn,hyper=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mtl-operator starts");
        World {
            emulator,
            standin,
            client,
            operator,
            operator_log,
            _dir: dir,
        }
    }

    fn checkpoints(&self, job: &str) -> String {
        self.emulator.uri(&format!("runs/{job}"))
    }

    /// `kubectl apply --server-side` of a job that trains the tiny model for `max_steps`.
    async fn apply(&self, name: &str, max_steps: u64, every_steps: u64) {
        let task = |name: &str, kind: &str, label: &str| {
            let mut t = json!({
                "name": name, "type": kind, "format": "glueTsv",
                "train": self.emulator.uri(&format!("data/{name}/train.tsv")),
                "validation": self.emulator.uri(&format!("data/{name}/dev.tsv")),
                "textFields": ["sentence1", "sentence2"], "labelField": label,
            });
            if kind == "classification" {
                t["labelNames"] = json!(["entailment", "not_entailment"]);
            }
            t
        };
        let job = json!({
            "apiVersion": "multitask.dev/v1alpha1",
            "kind": "MultiTaskTrainingJob",
            "metadata": {"name": name},
            "spec": {
                "image": trainer_image(),
                "model": {"pretrained": self.emulator.uri("models/tiny"), "maxLength": 64},
                "tasks": [task("stsb", "regression", "score"), task("rte", "classification", "label")],
                "training": {"maxSteps": max_steps, "batchSize": 8, "learningRate": 1.0e-3, "seed": 7},
                "checkpoints": {"uri": self.checkpoints(name), "everySteps": every_steps, "keep": 20},
                "runPolicy": {"backoffLimit": 0}
            }
        });
        let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(self.client.clone(), NS);
        jobs.patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&job),
        )
        .await
        .expect("job applied");
    }

    fn diagnostics(&self, job: &str) -> String {
        let mut out = format!(
            "--- operator ---\n{}",
            std::fs::read_to_string(&self.operator_log).unwrap_or_default()
        );
        for attempt in 1..=3 {
            if let Some(log) = self.log(&format!("{job}-{attempt}")) {
                out.push_str(&format!("--- pod {job}-{attempt} ---\n{log}"));
            }
        }
        out
    }

    /// The trainer container's log in pod `pod`.
    fn log(&self, pod: &str) -> Option<String> {
        self.standin.kubelet().container_log(NS, pod, "trainer", 0)
    }

    async fn eventually<T, F, Fut>(&self, job: &str, what: &str, check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let patience = Patience {
            deadline: DEADLINE,
            every: Duration::from_millis(200),
        };
        eventually_with(what, patience, || self.diagnostics(job), check).await
    }

    async fn status_until(
        &self,
        job: &str,
        what: &str,
        pred: impl Fn(&MultiTaskTrainingJobStatus) -> bool,
    ) -> MultiTaskTrainingJobStatus {
        let jobs: Api<MultiTaskTrainingJob> = Api::namespaced(self.client.clone(), NS);
        let status = self
            .eventually(job, what, || {
                let jobs = jobs.clone();
                let pred = &pred;
                async move {
                    let j = jobs.get_opt(job).await.ok().flatten()?;
                    j.status.filter(|s| pred(s) || s.phase == JobPhase::Failed)
                }
            })
            .await;
        assert_ne!(
            status.phase,
            JobPhase::Failed,
            "the job failed: {status:?}\n{}",
            self.diagnostics(job)
        );
        status
    }
}

/// The JSON summary mtl-trainer prints on stdout when `train` ends.
fn summary(log: &str) -> Value {
    let start = log
        .rfind("\n{\n")
        .map(|i| i + 1)
        .or_else(|| log.starts_with("{\n").then_some(0));
    let text = &log[start.unwrap_or_else(|| panic!("no summary in the trainer's log:\n{log}"))..];
    let end = text.find("\n}").map(|i| i + 2).expect("the summary's end");
    serde_json::from_str(&text[..end]).unwrap_or_else(|e| panic!("summary: {e}\n{text}"))
}

#[tokio::test]
#[ignore = "needs podman and the trainer image: make image-test"]
async fn a_job_trains_in_the_trainer_image_and_succeeds() {
    let world = World::start().await;
    world.apply("real", 40, 20).await;

    let status = world
        .status_until("real", "phase Succeeded", |s| {
            s.phase == JobPhase::Succeeded
        })
        .await;
    let steps: Vec<u64> = status.checkpoints.iter().map(|c| c.step).collect();
    assert_eq!(steps, [20, 40], "{status:?}");
    let base = world.checkpoints("real");
    assert_eq!(
        status.latest_checkpoint.as_deref(),
        Some(format!("{base}/checkpoint-40").as_str())
    );
    assert!(
        status.checkpoints[1].metrics.contains_key("stsb/pearson"),
        "{status:?}"
    );
    assert!(
        status.checkpoints[1].metrics.contains_key("rte/accuracy"),
        "{status:?}"
    );
    assert_eq!(
        (status.attempt, status.restarts, status.preemptions),
        (1, 0, 0)
    );

    // Every file of the checkpoint is in the bucket, and the pod ran the real container.
    let files = world
        .emulator
        .storage()
        .list(&format!("{base}/checkpoint-40/"))
        .await
        .unwrap();
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
        "tokenizer.json",
    ] {
        assert!(
            files.iter().any(|u| u.ends_with(f)),
            "{f} missing from {files:?}"
        );
    }
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    let pod = pods.get("real-1").await.expect("the pod");
    let c = &pod.status.unwrap().container_statuses.unwrap()[0];
    let t = c
        .state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .expect("terminated");
    assert_eq!(t.exit_code, 0);
    assert!(
        c.container_id
            .as_deref()
            .unwrap_or_default()
            .starts_with("podman://")
    );
    let out = summary(&world.log("real-1").expect("the trainer's log"));
    assert_eq!(out["step"], 40, "{out}");
    assert_eq!(out["resumed_from"], Value::Null, "{out}");
}

#[tokio::test]
#[ignore = "needs podman and the trainer image: make image-test"]
async fn a_deleted_pod_checkpoints_on_sigterm_and_the_next_attempt_resumes_from_it() {
    let world = World::start().await;
    // Long enough that the pod is deleted mid-run: the first checkpoint comes at a sixth.
    let (max_steps, every) = (600, 100);
    world.apply("resume", max_steps, every).await;

    // Training is under way once the first periodic checkpoint is in status.
    world
        .status_until("resume", "the first checkpoint", |s| {
            !s.checkpoints.is_empty()
        })
        .await;
    let pods: Api<Pod> = Api::namespaced(world.client.clone(), NS);
    pods.delete("resume-1", &DeleteParams::default())
        .await
        .expect("pod deleted");

    let status = world
        .status_until("resume", "phase Succeeded after a second attempt", |s| {
            s.phase == JobPhase::Succeeded
        })
        .await;
    assert_eq!(status.attempt, 2, "{status:?}");
    assert_eq!(
        (status.preemptions, status.restarts),
        (1, 0),
        "a deletion is not a failure"
    );

    // Attempt 1 stopped on SIGTERM with a checkpoint of where it was.
    let first = summary(&world.log("resume-1").expect("attempt 1's log"));
    assert_eq!(first["interrupted"], true, "{first}");
    let stopped_at = first["step"].as_u64().expect("step");
    assert!(stopped_at < max_steps, "{first}");
    let checkpoint = format!("{}/checkpoint-{stopped_at}", world.checkpoints("resume"));
    assert_eq!(first["checkpoint"], checkpoint.as_str(), "{first}");
    assert!(
        status
            .checkpoints
            .iter()
            .any(|c| c.step == stopped_at && c.uri == checkpoint),
        "the SIGTERM checkpoint is committed: {status:?}"
    );

    // Attempt 2 resumed from it and trained to the end.
    let second = summary(&world.log("resume-2").expect("attempt 2's log"));
    assert_eq!(second["resumed_from"], stopped_at, "{second}");
    assert_eq!(second["step"], max_steps, "{second}");
    assert_eq!(second["interrupted"], false, "{second}");
    assert_eq!(status.checkpoints.last().map(|c| c.step), Some(max_steps));
}
