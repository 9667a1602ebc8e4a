//! Data-parallel training on torch's Gloo, real ranks on 127.0.0.1: N ranks with `batchSize`
//! B train exactly as one process with batch N×B (losses, every parameter, every head), ranks
//! end bit-identical, heads no rank used stay untouched; the `mtl-trainer` binary as torchrun,
//! Vertex AI or its own agent starts it; a lost rank is an error naming it; SIGTERM stops
//! every rank at one step, rank 0 commits, and the run resumes (on fewer ranks too).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use mtl_crds::MultiTaskTrainingJobSpec;
use mtl_trainer::checkpoint;
use mtl_trainer::distributed::{Backend, GroupOptions, Launcher, ProcessGroup, WorkerEnv};
use mtl_trainer::io;
use mtl_trainer::state::TrainerState;
use mtl_trainer::train::{Outcome, RunOptions, Trainer};
use tch::{Kind, Tensor};

use common::{TINY_BERT, analytic_zero, job, tiny_model_with, torch_rng};
use mtl_test_support::free_port;

/// A tiny BERT without dropout (so that runs are comparable), and the bundled job on it.
fn setup(dir: &Path) -> MultiTaskTrainingJobSpec {
    let model = tiny_model_with(dir, &TINY_BERT.replace("0.1", "0.0"));
    let mut spec = job(&model, &dir.join("out"));
    spec.training.log_every_steps = 1;
    spec.training.max_steps = Some(10);
    spec.checkpoints.every_steps = 1000;
    spec.checkpoints.keep = None;
    spec
}

fn weights(t: &Trainer) -> BTreeMap<String, Tensor> {
    t.model()
        .named_tensors()
        .into_iter()
        .map(|(n, p)| (n, p.detach().copy()))
        .collect()
}

/// Rank `rank` of a `world` of threads in this process, rendezvous on `port`.
fn worker(rank: usize, world: usize, port: u16) -> WorkerEnv {
    WorkerEnv {
        rank,
        world_size: world,
        local_rank: rank,
        local_world_size: world,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart: 0,
        launcher: Launcher::Flags,
    }
}

/// Gloo with a `seconds` collective timeout.
fn gloo(seconds: u64) -> GroupOptions {
    GroupOptions {
        backend: Backend::Gloo,
        timeout: Duration::from_secs(seconds),
    }
}

/// Trains `spec` on `world` ranks in this process (one thread each), each with the batch
/// size of `spec`; returns every rank's outcome, final weights and state.
fn run_world(
    spec: &MultiTaskTrainingJobSpec,
    world: usize,
    cache: &Path,
) -> Vec<(Outcome, BTreeMap<String, Tensor>, TrainerState)> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let spec = spec.clone();
                s.spawn(move || {
                    let w = worker(rank, world, port);
                    let pg = ProcessGroup::init(&w, &gloo(120)).unwrap();
                    let opts = RunOptions::cpu(cache.to_path_buf());
                    let mut t = Trainer::with_world(spec, opts, Some(pg)).unwrap();
                    let out = t.run().unwrap();
                    (out, weights(&t), t.state().clone())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Each rank of a world in this process with its own spec; every rank's result.
fn run_world_each(specs: Vec<MultiTaskTrainingJobSpec>, cache: &Path) -> Vec<Result<u64, String>> {
    let port = free_port();
    let world = specs.len();
    std::thread::scope(|s| {
        let handles: Vec<_> = specs
            .into_iter()
            .enumerate()
            .map(|(rank, spec)| {
                s.spawn(move || {
                    let w = worker(rank, world, port);
                    let pg = ProcessGroup::init(&w, &gloo(20)).map_err(|e| e.to_string())?;
                    let opts = RunOptions::cpu(cache.to_path_buf());
                    let mut t =
                        Trainer::with_world(spec, opts, Some(pg)).map_err(|e| e.to_string())?;
                    t.run().map(|o| o.step).map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn run_single(
    spec: &MultiTaskTrainingJobSpec,
    cache: &Path,
) -> (Outcome, BTreeMap<String, Tensor>, TrainerState) {
    let mut t = Trainer::new(spec.clone(), RunOptions::cpu(cache.to_path_buf())).unwrap();
    let out = t.run().unwrap();
    let w = weights(&t);
    (out, w, t.state().clone())
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let d = (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .norm()
        .double_value(&[]);
    d / b.to_kind(Kind::Double).norm().double_value(&[]).max(1e-12)
}

/// Per-step losses and every parameter of a world's rank 0 against one process.
fn assert_same_training(
    what: &str,
    world: &[(Outcome, BTreeMap<String, Tensor>, TrainerState)],
    single: &(Outcome, BTreeMap<String, Tensor>, TrainerState),
) {
    let (_, w0, s0) = &world[0];
    let (_, w1, s1) = single;
    assert_eq!(s0.log_history.len(), s1.log_history.len(), "{what}");
    for (a, b) in s0.log_history.iter().zip(&s1.log_history) {
        let r = (a.loss - b.loss).abs() / b.loss.abs().max(1e-12);
        assert!(
            r < 1e-5,
            "{what}: step {} loss {} vs one process {} ({r:.1e})",
            a.step,
            a.loss,
            b.loss
        );
        assert_eq!(
            a.task_losses.keys().collect::<Vec<_>>(),
            b.task_losses.keys().collect::<Vec<_>>()
        );
        // Adam is nearly blind to a wrongly scaled gradient; its norm is not.
        let (ga, gb) = (a.grad_norm.unwrap(), b.grad_norm.unwrap());
        assert!(
            (ga - gb).abs() / gb < 1e-4,
            "{what}: step {} grad norm {ga} vs one process {gb}",
            a.step
        );
    }
    let worst = w1
        .iter()
        .filter(|(n, _)| !analytic_zero(n))
        .map(|(n, t)| (rel(&w0[n], t), n.clone()))
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    eprintln!(
        "{what}: largest relative difference from one process {:.1e} ({})",
        worst.0, worst.1
    );
    assert!(
        worst.0 < 1e-4,
        "{what}: {} differs from one process by {:.1e}",
        worst.1,
        worst.0
    );
    for (rank, (_, w, _)) in world.iter().enumerate().skip(1) {
        for (n, t) in w0 {
            assert!(
                t.equal(&w[n]),
                "{what}: rank {rank}'s {n} differs from rank 0's"
            );
        }
    }
}

#[test]
fn two_ranks_train_as_one_process_with_twice_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    let _rng = torch_rng();
    spec.training.gradient_accumulation_steps = 2;
    spec.training.batch_size = 4;
    spec.checkpoints.uri = tmp.path().join("world").display().to_string();
    let world = run_world(&spec, 2, &tmp.path().join("cache"));
    let mut single_spec = spec.clone();
    single_spec.training.batch_size = 8;
    single_spec.checkpoints.uri = tmp.path().join("single").display().to_string();
    let single = run_single(&single_spec, &tmp.path().join("cache"));
    assert_same_training("2 ranks x 4 (accumulating 2)", &world, &single);
    // Only rank 0 wrote the checkpoint; every task trained.
    assert_eq!(world[0].0.checkpoint.as_ref().map(|c| c.step), Some(10));
    assert!(world[1].0.checkpoint.is_none());
    assert_eq!(
        world[0]
            .2
            .log_history
            .iter()
            .flat_map(|e| e.task_losses.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
}

#[test]
fn three_ranks_with_uneven_last_batches_and_an_empty_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    let _rng = torch_rng();
    // 40 examples a task, a global batch of 9: each task's last batch holds 4 (shards 3, 1
    // and none); 15 steps are one epoch, so every last batch is trained.
    for t in &mut spec.tasks {
        t.max_train_examples = Some(40);
    }
    spec.training.batch_size = 3;
    spec.training.max_steps = Some(15);
    spec.checkpoints.uri = tmp.path().join("world").display().to_string();
    let world = run_world(&spec, 3, &tmp.path().join("cache"));
    let mut single_spec = spec.clone();
    single_spec.training.batch_size = 9;
    single_spec.checkpoints.uri = tmp.path().join("single").display().to_string();
    let single = run_single(&single_spec, &tmp.path().join("cache"));
    assert_same_training("3 ranks x 3", &world, &single);
}

#[test]
fn heads_no_rank_used_stay_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    let _rng = torch_rng();
    spec.training.max_steps = Some(1);
    spec.training.warmup_ratio = 0.0;
    spec.training.batch_size = 2;
    let init = {
        let t = Trainer::new(spec.clone(), RunOptions::cpu(tmp.path().join("cache"))).unwrap();
        weights(&t)
    };
    let world = run_world(&spec, 2, &tmp.path().join("cache"));
    let trained: String = world[0].2.log_history[0]
        .task_losses
        .keys()
        .next()
        .unwrap()
        .clone();
    for (rank, (_, w, _)) in world.iter().enumerate() {
        for (name, t) in w.iter().filter(|(n, _)| n.starts_with("heads.")) {
            let moved = !t.equal(&init[name]);
            let ours = name.starts_with(&format!("heads.{trained}."));
            assert_eq!(
                moved, ours,
                "rank {rank}: {name} (the step trained {trained})"
            );
        }
    }
}

/// Rank 0 alone evaluates; early stopping's verdict reaches every rank in the same step, so
/// both stop there (a plateau: learning rate 0, patience 1, an evaluation every 2 steps ends
/// the run at step 4 of 10) and neither reports an interruption.
#[test]
fn early_stopping_stops_every_rank_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    let _rng = torch_rng();
    spec.training.learning_rate = 0.0;
    spec.training.eval_every_steps = 2;
    spec.checkpoints.best = Some(mtl_crds::BestCheckpointSpec {
        metric: "mean".into(),
        mode: None,
    });
    spec.training.early_stopping = Some(mtl_crds::EarlyStoppingSpec {
        patience: 1,
        min_delta: 0.0,
    });
    let world = run_world(&spec, 2, &tmp.path().join("cache"));
    for (rank, (out, _, state)) in world.iter().enumerate() {
        assert_eq!((out.step, out.interrupted), (4, false), "rank {rank}");
        assert_eq!(
            state.end.as_ref().map(|e| (e.reason.as_str(), e.step)),
            Some(("EarlyStopped", 4)),
            "rank {rank}"
        );
    }
    let (manifest, steps) = common::manifest(&tmp.path().join("out"));
    assert_eq!(steps, [4]);
    assert_eq!(manifest["end"]["reason"], "EarlyStopped");
}

/// `mtl-trainer train` of `job` on one CPU thread, checkpointing to `out`, with `cache`.
fn train_cmd(job: &Path, out: &str, cache: &Path) -> Command {
    let mut c = common::trainer();
    c.args(["--device", "cpu", "--threads", "1", "train", "--job"])
        .arg(job)
        .args(["--output", out])
        .env("MTL_CACHE_DIR", cache);
    c
}

/// The job as a file, for the binary.
fn job_file(spec: &MultiTaskTrainingJobSpec, dir: &Path) -> std::path::PathBuf {
    let p = dir.join("job.yaml");
    std::fs::write(&p, serde_yaml::to_string(spec).unwrap()).unwrap();
    p
}

fn state_at(uri: &str, step: u64) -> TrainerState {
    io::read_json(
        &Path::new(uri)
            .join(format!("checkpoint-{step}"))
            .join(checkpoint::STATE_FILE),
    )
    .unwrap()
}

fn model_at(uri: &str, step: u64) -> BTreeMap<String, Tensor> {
    common::checkpoint_weights(Path::new(uri), step)
}

fn output(mut cmd: Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn the_binary_starts_ranks_as_its_own_agent_as_torchrun_and_as_vertex_ai() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    spec.training.max_steps = Some(6);
    spec.training.batch_size = 4;
    let cache = tmp.path().join("cache");
    let file = job_file(&spec, tmp.path());
    let base = |out: &str| {
        let mut c = train_cmd(&file, out, &cache);
        c.args(["--dist-timeout", "60"]);
        c
    };
    // Its own agent: two local workers.
    let agent_out = tmp.path().join("agent").display().to_string();
    let mut agent = base(&agent_out);
    agent.args(["--nproc-per-node", "2"]);
    let printed = output(agent);
    let summary: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
    assert_eq!(summary["step"], 6, "rank 0 prints the summary once");

    // torchrun's variables, and Vertex AI's CLUSTER_SPEC: two processes started here.
    let port = free_port();
    let torchrun_out = tmp.path().join("torchrun").display().to_string();
    let vertex_out = tmp.path().join("vertex").display().to_string();
    let launch = |out: &str, env: &dyn Fn(usize) -> Vec<(String, String)>| {
        let children: Vec<_> = (0..2)
            .map(|rank| {
                let mut c = base(out);
                c.envs(env(rank))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                c.spawn().unwrap()
            })
            .collect();
        for (rank, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "rank {rank}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    };
    launch(&torchrun_out, &|rank| {
        [
            ("RANK", rank.to_string()),
            ("LOCAL_RANK", rank.to_string()),
            ("WORLD_SIZE", "2".into()),
            ("LOCAL_WORLD_SIZE", "2".into()),
            ("MASTER_ADDR", "127.0.0.1".into()),
            ("MASTER_PORT", port.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    });
    let vport = free_port();
    launch(&vertex_out, &|rank| {
        let (pool, index) = if rank == 0 {
            ("workerpool0", 0)
        } else {
            ("workerpool1", 0)
        };
        let spec = serde_json::json!({
            "cluster": {"workerpool0": [format!("127.0.0.1:{vport}")], "workerpool1": ["127.0.0.1:1"]},
            "environment": "cloud",
            "task": {"type": pool, "index": index},
        });
        vec![("CLUSTER_SPEC".to_string(), spec.to_string())]
    });
    // The three worlds trained the same way.
    let a = model_at(&agent_out, 6);
    for other in [&torchrun_out, &vertex_out] {
        let b = model_at(other, 6);
        for (n, t) in &a {
            assert!(
                t.equal(&b[n]),
                "{other}: {n} differs from the agent's world"
            );
        }
        assert_eq!(
            state_at(other, 6).fingerprint.unwrap().batch_size,
            8,
            "the global batch"
        );
    }
}

/// Two torchrun-style ranks of the binary with stderr piped.
fn spawn_ranks(
    spec_file: &Path,
    out: &str,
    cache: &Path,
    port: u16,
    extra: &[&str],
) -> Vec<std::process::Child> {
    (0..2)
        .map(|rank| {
            train_cmd(spec_file, out, cache)
                .args(["--dist-timeout", "20"])
                .args(extra)
                .env("RUST_LOG", "info")
                .envs([
                    ("RANK", rank.to_string()),
                    ("LOCAL_RANK", rank.to_string()),
                    ("WORLD_SIZE", "2".into()),
                    ("LOCAL_WORLD_SIZE", "2".into()),
                    ("MASTER_ADDR", "127.0.0.1".into()),
                    ("MASTER_PORT", port.to_string()),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Reads `child`'s stderr until a line contains `needle`; returns the lines read.
fn read_until(child: &mut std::process::Child, needle: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let stderr = child.stderr.as_mut().unwrap();
    let mut reader = BufReader::new(stderr);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("stderr ended before {needle:?}: {lines:?}");
        }
        let found = line.contains(needle);
        lines.push(line);
        if found {
            return lines;
        }
    }
}

#[test]
fn a_lost_rank_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    spec.training.max_steps = Some(100_000);
    let file = job_file(&spec, tmp.path());
    let out = tmp.path().join("run").display().to_string();
    let mut ranks = spawn_ranks(&file, &out, &tmp.path().join("cache"), free_port(), &[]);
    // Rank 0 logs every step; once it trains, rank 1 is killed.
    read_until(&mut ranks[0], "\"message\":\"train\"");
    ranks[1].kill().unwrap();
    ranks[1].wait().unwrap();
    let rest = ranks.remove(0).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&rest.stderr);
    assert!(!rest.status.success(), "rank 0 went on without rank 1");
    assert_eq!(rest.status.code(), Some(1), "an error, not a crash: {err}");
    assert!(err.contains("lost rank 1"), "{err}");
}

#[test]
fn sigterm_to_one_rank_stops_both_at_one_step_and_the_run_resumes_on_fewer_ranks() {
    let tmp = tempfile::tempdir().unwrap();
    let mut spec = setup(tmp.path());
    spec.training.max_steps = Some(3000);
    spec.training.batch_size = 2;
    let cache = tmp.path().join("cache");
    let file = job_file(&spec, tmp.path());
    let out = tmp.path().join("run").display().to_string();
    let mut ranks = spawn_ranks(&file, &out, &cache, free_port(), &[]);
    read_until(&mut ranks[0], "\"message\":\"train\"");
    let kill = Command::new("kill")
        .args(["-TERM", &ranks[1].id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let outputs: Vec<_> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for (rank, o) in outputs.iter().enumerate() {
        assert_eq!(
            o.status.code(),
            Some(143),
            "rank {rank}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let summary: serde_json::Value = serde_json::from_slice(&outputs[0].stdout).unwrap();
    assert_eq!(summary["interrupted"], true);
    let stopped = summary["step"].as_u64().unwrap();
    let (_, steps) = common::manifest(Path::new(&out));
    assert_eq!(
        steps,
        [stopped],
        "rank 0 committed the step both stopped at"
    );

    // The rest of the run, on 2 ranks, ends as an uninterrupted 2-rank run; on 1 rank with
    // the same global batch, as well (within rounding). Every run keeps the 3000-step
    // schedule and stops at `end` as on SIGTERM.
    let end = (stopped + 4).to_string();
    let stop_at = ["--stop-after", end.as_str()];
    let stopped_ok = |what: &str, o: std::process::Output| {
        assert_eq!(
            o.status.code(),
            Some(143),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let two_ranks = |out: &str, what: &str| {
        for c in spawn_ranks(&file, out, &cache, free_port(), &stop_at) {
            stopped_ok(what, c.wait_with_output().unwrap());
        }
    };
    // A copy of the interrupted run for the 1-rank resume, with the global batch of two.
    let out1 = tmp.path().join("run1").display().to_string();
    copy_dir(Path::new(&out), Path::new(&out1));
    rewrite_manifest(Path::new(&out1), &out, &out1);
    two_ranks(&out, "resumed on 2 ranks");
    let mut one = spec.clone();
    one.training.batch_size = 4;
    std::fs::create_dir_all(tmp.path().join("one")).unwrap();
    let one_file = job_file(&one, &tmp.path().join("one"));
    let mut c = train_cmd(&one_file, &out1, &cache);
    c.args(stop_at);
    stopped_ok("resumed on 1 rank", c.output().unwrap());
    let straight = tmp.path().join("straight").display().to_string();
    two_ranks(&straight, "uninterrupted");
    let end: u64 = end.parse().unwrap();
    let (a, b, c) = (
        model_at(&out, end),
        model_at(&straight, end),
        model_at(&out1, end),
    );
    for (n, t) in &b {
        assert!(
            a[n].equal(t),
            "{n}: the resumed 2-rank run differs from the uninterrupted one"
        );
        if !analytic_zero(n) {
            assert!(
                rel(&c[n], t) < 1e-5,
                "{n}: resumed on 1 rank differs by {}",
                rel(&c[n], t)
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// The manifest names checkpoints by URI: point a copy's at the copy.
fn rewrite_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("checkpoints.json");
    let text = std::fs::read_to_string(&p).unwrap().replace(from, to);
    std::fs::write(p, text).unwrap();
}

/// Ranks that see different checkpoints (`--nnodes 2` with an output directory local to each
/// node: node 0 has step 4, node 1 nothing) do not train on: every rank stops before the first
/// broadcast with an error naming both steps, instead of drifting apart until a collective
/// times out.
#[test]
fn ranks_that_resume_from_different_steps_stop_naming_both() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = setup(tmp.path());
    let _rng = torch_rng();
    let cache = tmp.path().join("cache");
    let mut node0 = spec.clone();
    node0.checkpoints.uri = tmp.path().join("node0").display().to_string();
    node0.checkpoints.every_steps = 4;
    // One process with the world's global batch, so the world's fingerprint matches it.
    let mut alone = node0.clone();
    alone.training.batch_size *= 2;
    let mut first = Trainer::new(
        alone,
        RunOptions {
            stop_after: Some(4),
            ..RunOptions::cpu(cache.clone())
        },
    )
    .unwrap();
    assert_eq!(first.run().unwrap().step, 4);
    let mut node1 = spec.clone();
    node1.checkpoints.uri = tmp.path().join("node1").display().to_string();
    let results = run_world_each(vec![node0, node1], &cache);
    for (rank, r) in results.iter().enumerate() {
        let err = r.as_ref().expect_err("the world must not train");
        assert!(
            err.contains("did not resume from the same place")
                && err.contains("some at step 0, some at step 4"),
            "rank {rank}: {err}"
        );
    }
    assert!(!tmp.path().join("node1/checkpoints.json").exists());
}
