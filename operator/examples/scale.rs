//! The operator at scale (`make bench`): N MultiTaskTrainingJobs against the Kubernetes API
//! stand-in, with the real `mtl-operator` binary.
//!
//! Starts the stand-in (its kubelet runs every pod), starts the operator and waits until it is
//! ready, creates N jobs in-process, then measures the time until every job has its pod and
//! until every job's status says Running, the operator's peak RSS (VmHWM) and CPU time, and the
//! API requests it made (every HTTP request the stand-in served: only the operator speaks HTTP
//! to it). The stand-in runs in this process, so its own cost is not the operator's.
//!
//!   cargo run --release -p mtl-operator --example scale -- \
//!       --operator target/release/mtl-operator --jobs 1000 --out operator-1000.json

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use kube_standin::{KubeletConfig, StandIn};
use serde_json::json;

const NS: &str = "default";
const API: &str = "multitask.dev/v1alpha1";
const PLURAL: &str = "multitasktrainingjobs";
/// The CRD, created in the stand-in before the operator starts, as a cluster has it.
const CRD: &str = include_str!("../../crds/multitasktrainingjobs.yaml");

#[derive(Parser)]
struct Args {
    /// The mtl-operator binary.
    #[arg(long)]
    operator: PathBuf,
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    /// Give up after this long.
    #[arg(long, default_value_t = 600)]
    timeout_seconds: u64,
    #[arg(long)]
    out: PathBuf,
}

struct Operator(Child);

impl Drop for Operator {
    /// SIGTERM (the operator shuts down cleanly), SIGKILL if it is still there after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) `pid` has used: fields 14 and 15 of /proc/PID/stat, in clock
/// ticks of 1/100 s (Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// Peak and current resident set of `pid`, in bytes.
fn rss(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    Ok((field("VmHWM:"), field("VmRSS:")))
}

/// A plain HTTP/1.1 GET over TCP (the operator's health and metrics endpoints).
async fn http_get(url: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(name))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

fn job(i: usize, checkpoints: &str) -> serde_json::Value {
    json!({
        "apiVersion": API,
        "kind": "MultiTaskTrainingJob",
        "metadata": {"name": format!("job-{i:05}"), "namespace": NS},
        "spec": {
            "image": "mtl-trainer:bench",
            "model": {"pretrained": "gs://models/roberta-base"},
            "tasks": [{
                "name": "stsb", "type": "regression", "train": "gs://data/stsb/train.tsv",
                "format": "glueTsv", "textFields": ["sentence1", "sentence2"], "labelField": "score"
            }],
            "checkpoints": {"uri": format!("{checkpoints}/job-{i:05}"), "everySteps": 3000},
            "resources": {"gpus": 1, "gpuType": "nvidia-l4"}
        }
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let standin = StandIn::builder()
        .kubelet(KubeletConfig {
            auto_run: true,
            ..KubeletConfig::default()
        })
        .history_capacity(20 * args.jobs + 1000)
        .request_log_capacity(16)
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig(NS))?;
    // Checkpoints on gs:// (a real storage emulator), as `backend: kubernetes` requires: the
    // operator reads each live job's manifest from it.
    let emulator = mtl_test_support::gcs::Emulator::start();
    let checkpoints = emulator.uri("bench");
    standin.create(
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "",
        serde_yaml::from_str(CRD).context("the CRD parses")?,
    )?;

    let port = mtl_test_support::free_port();
    let log = std::fs::File::create(dir.path().join("operator.log"))?;
    let child = Command::new(&args.operator)
        .args([
            "run",
            "--namespace",
            NS,
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--lease-namespace",
            NS,
            "--identity",
            "bench",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("STORAGE_EMULATOR_HOST", emulator.endpoint())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.operator.display()))?;
    let pid = child.id();
    let _operator = Operator(child);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let base = format!("http://127.0.0.1:{port}");
    // Ready: leader and watches started.
    while http_get(&format!("{base}/readyz")).await.is_none() {
        if Instant::now() > deadline {
            bail!("operator not ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let idle_requests = standin.stats().total;
    let idle_cpu = cpu_seconds(pid)?;

    let started = Instant::now();
    for i in 0..args.jobs {
        standin.create(API, PLURAL, NS, job(i, &checkpoints))?;
    }
    let created_s = started.elapsed().as_secs_f64();
    let (mut pods_s, mut status_s) = (None, None);
    let mut peak_sampled = 0u64;
    while pods_s.is_none() || status_s.is_none() {
        if Instant::now() > deadline {
            bail!(
                "timed out: pods after {pods_s:?} s, status after {status_s:?} s; log in {}",
                dir.path().display()
            );
        }
        if pods_s.is_none() && standin.list("v1", "pods", Some(NS))?.len() >= args.jobs {
            pods_s = Some(started.elapsed().as_secs_f64());
        }
        if status_s.is_none() {
            let running = standin
                .list(API, PLURAL, Some(NS))?
                .iter()
                .filter(|j| j["status"]["phase"] == "Running")
                .count();
            if running >= args.jobs {
                status_s = Some(started.elapsed().as_secs_f64());
            }
        }
        peak_sampled = peak_sampled.max(rss(pid)?.1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = standin.stats();
    let metrics = http_get(&format!("{base}/metrics"))
        .await
        .unwrap_or_default();
    let (peak_rss, rss_now) = rss(pid)?;
    let operator_cpu = cpu_seconds(pid)? - idle_cpu;
    let requests = stats.total - idle_requests;
    let by_kind: Vec<_> = stats
        .counts
        .iter()
        .map(|c| json!({"verb": c.verb, "resource": c.resource, "count": c.count}))
        .collect();
    let report = json!({
        "jobs": args.jobs,
        "seconds_to_create": created_s,
        "seconds_to_pods": pods_s,
        "seconds_to_status": status_s,
        "peak_rss_bytes": peak_rss.max(peak_sampled),
        "operator_cpu_seconds": operator_cpu,
        "operator_cpu_ms_per_job": 1e3 * operator_cpu / args.jobs as f64,
        "rss_bytes_at_end": rss_now,
        "requests": requests,
        "requests_per_job": requests as f64 / args.jobs as f64,
        "requests_by_kind": by_kind,
        "watch_events_sent": stats.watch_events_sent,
        "reconciles": metric(&metrics, "mtl_operator_reconciles_total"),
        "reconciles_per_job": metric(&metrics, "mtl_operator_reconciles_total") / args.jobs as f64,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&report)?)?;
    println!("{}", serde_json::to_string(&report)?);
    standin.shutdown().await;
    Ok(())
}
