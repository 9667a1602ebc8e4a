//! Data parallel over real processes on 127.0.0.1: every test starts workers that are this
//! test binary again, running the ignored test `dist_worker` with `MTL_DIST_CASE` naming what
//! to do, joined by torch's own Gloo through a c10d TCPStore. Nothing is mocked: the workers
//! rendezvous as under torchrun, Vertex AI or this trainer's local agent, and the faults are
//! real (a SIGKILLed peer, a worker exiting 1, SIGTERM to the agent).

use mtl_test_support::free_port;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use mtl_trainer::distributed::{
    self, Backend, DEFAULT_BUCKET_CAP_BYTES, GradientSync, GroupOptions, Launch, LaunchFlags,
    Launcher, LocalWorkers, NodeEnv, ProcessGroup, ReduceOp, broadcast_tensors,
};
use tch::{Device, Kind, Tensor};

const CASE: &str = "MTL_DIST_CASE";
/// A guard against hangs only (a test that reaches it has failed): far above what any case
/// takes, including the collective timeout below.
const HANG: Duration = Duration::from_secs(240);
/// The collective timeout of the workers.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Several worlds at once would overload a 2-core machine; one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker_args() -> Vec<&'static str> {
    vec![
        "--exact",
        "dist_worker",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]
}

/// A worker process of `case`, with `env`.
fn worker_command(case: &str, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(worker_args())
        .env(CASE, case)
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Waits for `child` at most `HANG`; past that it is killed and the test fails.
fn wait_or_kill(mut child: Child, what: &str) -> (ExitStatus, String) {
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut err = String::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_string(&mut err);
        }
        let status = child.wait();
        let _ = tx.send((status, err));
    });
    match rx.recv_timeout(HANG) {
        Ok((status, err)) => (status.unwrap(), err),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what} (pid {pid}) hung");
        }
    }
}

/// The local agent, in a process of its own (it takes over SIGTERM and SIGINT), starting
/// `nproc` workers of `case`. Returns its exit status and stderr.
fn run_agent(case: &str, nproc: usize) -> (ExitStatus, String) {
    let child = agent_command(case, nproc)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_or_kill(child, "local agent")
}

fn agent_command(case: &str, nproc: usize) -> Command {
    worker_command(
        "agent",
        &[
            ("MTL_DIST_WORKER_CASE", case.into()),
            ("MTL_DIST_NPROC", nproc.to_string()),
        ],
    )
}

fn local_workers(case: &str, nproc: usize) -> LocalWorkers {
    LocalWorkers {
        node: NodeEnv {
            nnodes: 1,
            node_rank: 0,
            nproc_per_node: nproc,
            master_addr: "127.0.0.1".into(),
            master_port: 0,
            launcher: Launcher::Flags,
        },
        program: std::env::current_exe().unwrap(),
        args: worker_args().into_iter().map(Into::into).collect(),
        env: vec![
            (CASE.into(), case.into()),
            ("GLOO_SOCKET_IFNAME".into(), "lo".into()),
        ],
        store_timeout: TIMEOUT,
        stop_grace: Duration::from_secs(10),
    }
}

// ---------------------------------------------------------------------------------------------
// The tests

#[test]
fn collectives_on_two_ranks() {
    let _s = serial();
    let (status, err) = run_agent("collectives", 2);
    assert!(status.success(), "{status}\n{err}");
}

#[test]
fn collectives_on_three_ranks_with_an_idle_rank() {
    let _s = serial();
    let (status, err) = run_agent("collectives", 3);
    assert!(status.success(), "{status}\n{err}");
}

#[test]
fn rendezvous_the_torchrun_way() {
    let _s = serial();
    let port = free_port().to_string();
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            let env = [
                ("RANK", rank.to_string()),
                ("WORLD_SIZE", "2".into()),
                ("LOCAL_RANK", rank.to_string()),
                ("LOCAL_WORLD_SIZE", "2".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", port.clone()),
                ("MTL_DIST_EXPECT", "Torchrun".into()),
            ];
            worker_command("rendezvous", &env)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let (status, err) = wait_or_kill(child, "torchrun-style worker");
        assert!(status.success(), "rank {rank}: {status}\n{err}");
    }
}

#[test]
fn rendezvous_the_vertex_way() {
    let _s = serial();
    let addr = format!("127.0.0.1:{}", free_port());
    let children: Vec<Child> = [("workerpool0", 0), ("workerpool1", 0)]
        .into_iter()
        .map(|(pool, index)| {
            let spec = serde_json::json!({
                "cluster": {"workerpool0": [addr], "workerpool1": [addr]},
                "environment": "cloud",
                "task": {"type": pool, "index": index},
            });
            let env = [
                ("CLUSTER_SPEC", spec.to_string()),
                ("MTL_DIST_EXPECT", "Vertex".into()),
            ];
            worker_command("rendezvous", &env)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let (status, err) = wait_or_kill(child, "CLUSTER_SPEC worker");
        assert!(status.success(), "rank {rank}: {status}\n{err}");
    }
}

/// How a peer is lost.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// SIGKILL: its sockets close.
    Kill,
    /// SIGSTOP: its sockets stay open and it never answers; only the timeout can tell.
    Stop,
}

/// Takes `victim` away once both ranks are connected and the other is inside an allreduce;
/// the other must exit with an error naming the victim.
fn lose_peer(victim: usize, fault: Fault) {
    let _s = serial();
    let port = free_port().to_string();
    let mut children: Vec<Child> = (0..2)
        .map(|rank| {
            let env = [
                ("RANK", rank.to_string()),
                ("WORLD_SIZE", "2".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", port.clone()),
                ("MTL_DIST_VICTIM", victim.to_string()),
                // A short timeout once connected, for the stuck peer.
                ("MTL_DIST_STEADY_TIMEOUT_MS", "3000".into()),
            ];
            worker_command("lose_peer", &env)
                .stdin(Stdio::piped())
                .stdout(if rank == victim {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // The victim says READY once it has taken part in one allreduce; then it only waits.
    let out = children[victim].stdout.take().unwrap();
    let ready = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.ends_with("READY"));
    assert!(ready, "rank {victim} never became ready");
    let pid = children[victim].id().to_string();
    let sig = if fault == Fault::Kill {
        "-KILL"
    } else {
        "-STOP"
    };
    assert!(
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success()
    );
    let survivor = 1 - victim;
    let child = children.remove(survivor);
    let (status, err) = wait_or_kill(child, "surviving rank");
    assert_eq!(
        status.code(),
        Some(3),
        "rank {survivor} should exit with its error (no abort, no hang): {status}\n{err}"
    );
    assert!(
        err.contains(&format!("lost rank {victim}")),
        "rank {survivor}'s error should name rank {victim}:\n{err}"
    );
    if fault == Fault::Stop {
        assert!(
            err.contains("Timed out"),
            "the error should say what timed out:\n{err}"
        );
    }
    let _ = children[0].kill();
    let _ = children[0].wait();
}

#[test]
fn a_killed_peer_is_named_by_the_survivor() {
    lose_peer(1, Fault::Kill);
}

#[test]
fn a_killed_rank_zero_is_named_even_though_it_hosted_the_store() {
    lose_peer(0, Fault::Kill);
}

#[test]
fn a_stuck_peer_times_out_and_is_named() {
    lose_peer(1, Fault::Stop);
}

#[test]
fn the_agent_takes_every_worker_down_when_one_fails() {
    let _s = serial();
    let (status, err) = run_agent("agent_fail", 3);
    assert_eq!(status.code(), Some(3), "{status}\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("worker error: "))
        .unwrap_or_else(|| panic!("the agent should report the failed worker:\n{err}"));
    assert!(
        line.starts_with("worker error: rank 1 (local rank 1, pid ")
            && line.ends_with(") exited with status 1"),
        "{line}"
    );
}

#[test]
fn the_agent_forwards_sigterm_to_its_workers() {
    let _s = serial();
    // The agent runs in a process of its own, so that the SIGTERM sent to it reaches no other
    // test.
    let mut agent = agent_command("sigterm_worker", 2)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(agent.stdout.take().unwrap());
    let mut lines = out.lines().map_while(Result::ok);
    let mut ready = 0;
    for line in lines.by_ref() {
        if line.contains("WAITING FOR SIGTERM") {
            ready += 1;
            if ready == 2 {
                break;
            }
        }
    }
    assert_eq!(ready, 2, "both workers should be waiting");
    let pid = agent.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let reader = std::thread::spawn(move || {
        lines
            .filter(|l| l.contains("STOPPED BY SIGTERM"))
            .collect::<Vec<String>>()
    });
    let (status, err) = wait_or_kill(agent, "agent");
    let stopped = reader.join().unwrap();
    assert!(status.success(), "{status}\n{err}");
    assert_eq!(
        stopped.len(),
        2,
        "both workers should have got SIGTERM: {stopped:?}"
    );
}

/// NCCL, where it can run (a CUDA build with a GPU): a world of one reduces on `cuda:0`.
/// Elsewhere asking for it must be an error that says why, not an abort.
#[test]
fn nccl_runs_on_a_gpu_or_says_why_not() {
    let _s = serial();
    let worker = distributed::WorkerEnv {
        rank: 0,
        world_size: 1,
        local_rank: 0,
        local_world_size: 1,
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        agent_store: false,
        restart: 0,
        launcher: Launcher::Flags,
    };
    let options = GroupOptions {
        backend: Backend::Nccl,
        timeout: TIMEOUT,
    };
    match ProcessGroup::init(&worker, &options) {
        Ok(pg) => {
            assert!(tch::Cuda::is_available(), "NCCL without a GPU");
            let t = Tensor::ones([3], (Kind::Float, pg.device()));
            pg.allreduce(&[&t], ReduceOp::Sum).unwrap();
            assert_eq!(
                Vec::<f32>::try_from(&t.to_device(Device::Cpu)).unwrap(),
                [1.0; 3]
            );
            pg.shutdown().unwrap();
        }
        Err(e) => {
            assert!(!tch::Cuda::is_available(), "NCCL failed with a GPU: {e}");
            let e = e.to_string();
            eprintln!("NCCL unavailable here, as expected: {e}");
            assert!(
                e.contains("built without CUDA") || e.contains("is not a visible CUDA device"),
                "{e}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The worker side

#[test]
#[ignore = "a worker process of the other tests of this file, started by them"]
fn dist_worker() {
    let case = std::env::var(CASE).expect("MTL_DIST_CASE names what the worker does");
    tch::set_num_threads(1);
    let result = match case.as_str() {
        "collectives" => collectives(),
        "rendezvous" => rendezvous(),
        "lose_peer" => lose_peer_worker(),
        "agent" => agent(),
        "agent_fail" => agent_fail(),
        "sigterm_worker" => sigterm_worker(),
        other => panic!("unknown case {other}"),
    };
    if let Err(e) = result {
        eprintln!("worker error: {e}");
        std::process::exit(3);
    }
}

fn join() -> mtl_trainer::Result<ProcessGroup> {
    let worker = match distributed::env::from_process_env(&LaunchFlags::default(), 0)? {
        Launch::Worker(w) => w,
        other => panic!("a worker expected, got {other:?}"),
    };
    if let Ok(expect) = std::env::var("MTL_DIST_EXPECT") {
        assert_eq!(format!("{:?}", worker.launcher), expect);
    }
    ProcessGroup::init(
        &worker,
        &GroupOptions {
            backend: Backend::Gloo,
            timeout: TIMEOUT,
        },
    )
}

fn rendezvous() -> mtl_trainer::Result<()> {
    let pg = join()?;
    let t = Tensor::from_slice(&[pg.rank() as f32 + 1.0]);
    pg.allreduce(&[&t], ReduceOp::Sum)?;
    assert_eq!(t.double_value(&[0]), 3.0);
    pg.shutdown()
}

fn lose_peer_worker() -> mtl_trainer::Result<()> {
    let victim: usize = std::env::var("MTL_DIST_VICTIM").unwrap().parse().unwrap();
    let mut pg = join()?;
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    pg.allreduce(&[&t], ReduceOp::Sum)?;
    let steady: u64 = std::env::var("MTL_DIST_STEADY_TIMEOUT_MS")
        .unwrap()
        .parse()
        .unwrap();
    pg.set_timeout(Duration::from_millis(steady))?;
    if pg.rank() == victim {
        println!("READY");
        // Wait, never joining another collective, until killed (stdin stays open).
        let mut sink = String::new();
        let _ = std::io::stdin().read_to_string(&mut sink);
        return Ok(());
    }
    pg.allreduce(&[&t], ReduceOp::Sum)?;
    panic!("the allreduce with a killed peer succeeded");
}

fn agent_fail() -> mtl_trainer::Result<()> {
    let rank: usize = std::env::var("RANK").unwrap().parse().unwrap();
    if rank == 1 {
        std::process::exit(1);
    }
    // The others wait in the rendezvous for rank 1, until the agent stops them.
    let _pg = join()?;
    panic!("rank {rank} joined a world without rank 1");
}

fn agent() -> mtl_trainer::Result<()> {
    let case = std::env::var("MTL_DIST_WORKER_CASE").unwrap();
    let nproc = std::env::var("MTL_DIST_NPROC").unwrap().parse().unwrap();
    local_workers(&case, nproc).run().map(|_| ())
}

fn sigterm_worker() -> mtl_trainer::Result<()> {
    use std::io::Write;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM]).unwrap();
    let rank = std::env::var("RANK").unwrap();
    println!("WAITING FOR SIGTERM (rank {rank})");
    std::io::stdout().flush().unwrap();
    let sig = signals.forever().next();
    assert_eq!(sig, Some(signal_hook::consts::SIGTERM));
    println!("STOPPED BY SIGTERM (rank {rank})");
    Ok(())
}

/// Every collective of the layer on a world of 2 or 3 ranks, each checked against what one
/// process computes alone.
fn collectives() -> mtl_trainer::Result<()> {
    let pg = join()?;
    let (rank, world) = (pg.rank(), pg.world_size());

    // Allreduce sums exactly, several tensors and kinds in one call.
    let a = Tensor::full([5], rank as f64 + 1.0, (Kind::Float, Device::Cpu));
    let b = Tensor::arange(7, (Kind::Int64, Device::Cpu)) * (rank as i64 + 1);
    let c = Tensor::full([2, 3], 0.5, (Kind::Double, Device::Cpu));
    pg.allreduce(&[&a, &b, &c], ReduceOp::Sum)?;
    let tri = (world * (world + 1) / 2) as f64;
    assert_eq!(Vec::<f32>::try_from(&a)?, vec![tri as f32; 5]);
    assert_eq!(
        Vec::<i64>::try_from(&b)?,
        (0..7).map(|i| i * tri as i64).collect::<Vec<_>>()
    );
    assert_eq!(
        Vec::<f64>::try_from(&c.reshape([-1]))?,
        vec![0.5 * world as f64; 6]
    );

    // Scalars and flags.
    let mut v = [rank as f64, 1.0];
    pg.allreduce_f64(&mut v, ReduceOp::Sum)?;
    assert_eq!(v, [(world * (world - 1) / 2) as f64, world as f64]);
    let mut m = [rank as f64, -(rank as f64)];
    pg.allreduce_f64(&mut m, ReduceOp::Max)?;
    assert_eq!(m, [(world - 1) as f64, 0.0]);
    let mut m = [rank as f64];
    pg.allreduce_f64(&mut m, ReduceOp::Min)?;
    assert_eq!(m, [0.0]);
    assert!(pg.any(rank == world - 1)?);
    assert!(!pg.any(false)?);

    // Broadcast from rank 0 (small buckets): every rank ends with rank 0's values.
    let shapes: [&[i64]; 4] = [&[3, 4], &[5], &[2, 2, 2], &[1]];
    let make = |seed: i64| {
        tch::manual_seed(seed);
        shapes
            .iter()
            .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
            .collect::<Vec<_>>()
    };
    let mine = make(100 + rank as i64);
    let refs: Vec<&Tensor> = mine.iter().collect();
    broadcast_tensors(&pg, &refs, 24)?;
    for (got, want) in mine.iter().zip(make(100)) {
        assert!(
            got.equal(&want),
            "broadcast left rank {rank} with its own values"
        );
    }

    // Gradient averaging, small buckets (tensors straddle the cap) and the default ones.
    for cap in [48, DEFAULT_BUCKET_CAP_BYTES] {
        weighted_average(&pg, cap)?;
    }
    pg.shutdown()
}

/// A small two-head model: `tanh(x w1 + b1) w2`, then head `a` or `b` by the example's task.
struct Model {
    params: BTreeMap<&'static str, Tensor>,
}

impl Model {
    fn new() -> Self {
        tch::manual_seed(7);
        let mut params = BTreeMap::new();
        for (name, shape) in [
            ("w1", &[6i64, 5][..]),
            ("b1", &[5][..]),
            ("w2", &[5, 4][..]),
            ("head_a", &[4, 2][..]),
            ("head_b", &[4, 3][..]),
            ("unused", &[3][..]),
        ] {
            let t = Tensor::randn(shape, (Kind::Float, Device::Cpu)).set_requires_grad(true);
            params.insert(name, t);
        }
        Self { params }
    }

    /// Mean loss over the examples `range` of the data set (None when it is empty).
    fn loss(&self, x: &Tensor, task: &[bool], range: std::ops::Range<usize>) -> Option<Tensor> {
        if range.is_empty() {
            return None;
        }
        let p = &self.params;
        let n = range.len() as f64;
        let mut total: Option<Tensor> = None;
        for i in range {
            let h = (x.get(i as i64).unsqueeze(0).matmul(&p["w1"]) + &p["b1"])
                .tanh()
                .matmul(&p["w2"]);
            let head = if task[i] { &p["head_b"] } else { &p["head_a"] };
            let l = h.matmul(head).pow_tensor_scalar(2).sum(Kind::Float);
            total = Some(match total {
                None => l,
                Some(t) => t + l,
            });
        }
        total.map(|t| t / n)
    }
}

/// N ranks with uneven shards (one idle when there are 3) against one process with the
/// whole batch; head `b` is used by the last rank only, `unused` by nobody.
fn weighted_average(pg: &ProcessGroup, cap: usize) -> mtl_trainer::Result<()> {
    let (rank, world) = (pg.rank(), pg.world_size());
    let counts: Vec<usize> = if world == 2 {
        vec![5, 2]
    } else {
        vec![4, 0, 3]
    };
    let total: usize = counts.iter().sum();
    tch::manual_seed(11);
    let x = Tensor::randn([total as i64, 6], (Kind::Float, Device::Cpu));
    // Task b only in the last shard.
    let task: Vec<bool> = (0..total).map(|i| i >= total - 2).collect();

    // One process, the whole batch.
    let reference = Model::new();
    reference.loss(&x, &task, 0..total).unwrap().backward();

    // This rank's shard.
    let model = Model::new();
    let start: usize = counts[..rank].iter().sum();
    if let Some(l) = model.loss(&x, &task, start..start + counts[rank]) {
        l.backward();
    }
    let named: Vec<(&str, &Tensor)> = model.params.iter().map(|(k, v)| (*k, v)).collect();
    let sync = GradientSync::new(pg, &named, cap)?;
    let stats = sync.average(pg, counts[rank] as u64)?;
    assert_eq!(stats.global_examples, total as u64);
    let names: Vec<&str> = sync.names().iter().map(String::as_str).collect();
    assert_eq!(names, ["b1", "head_a", "head_b", "unused", "w1", "w2"]);
    assert_eq!(stats.used, [true, true, true, false, true, true]);
    if cap < 100 {
        assert!(stats.buckets > 2, "small buckets: {stats:?}");
    } else {
        assert_eq!(stats.buckets, 1);
    }

    for (name, p) in &model.params {
        let (got, want) = (p.grad(), reference.params[name].grad());
        if *name == "unused" {
            assert!(!got.defined(), "a parameter no rank used got a gradient");
            continue;
        }
        assert!(got.defined(), "rank {rank}: {name} has no gradient");
        let diff = (&got - &want).abs().max().double_value(&[]);
        let scale = want.abs().max().double_value(&[]).max(1e-3);
        assert!(
            diff <= 1e-5 * scale,
            "rank {rank}, {name}: off by {diff} from one process (scale {scale})"
        );
        // Bit-identical on every rank: compare with rank 0's.
        let ours = got.copy();
        pg.broadcast(&[&ours], 0)?;
        assert!(ours.equal(&got), "rank {rank}, {name}: differs from rank 0");
    }

    // A step without any example anywhere changes nothing.
    let grads = || -> Vec<Option<Tensor>> {
        model
            .params
            .values()
            .map(|p| Some(p.grad()).filter(Tensor::defined).map(|g| g.copy()))
            .collect()
    };
    let before = grads();
    let stats = sync.average(pg, 0)?;
    assert_eq!((stats.global_examples, stats.buckets), (0, 0));
    for (after, before) in grads().iter().zip(&before) {
        match (after, before) {
            (Some(a), Some(b)) => assert!(a.equal(b)),
            (None, None) => {}
            _ => panic!("a step without examples defined or dropped a gradient"),
        }
    }
    Ok(())
}
