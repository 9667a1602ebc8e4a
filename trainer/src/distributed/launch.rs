//! The local agent, as torchrun's: one worker process per local rank of a node, started by
//! re-running a program (by default this one, with the same arguments) with the launcher
//! environment of its rank. Node 0's agent hosts the rendezvous store (workers connect to it
//! with `TORCHELASTIC_USE_AGENT_STORE=True`), so the store outlives any one worker. SIGTERM
//! and SIGINT reaching the agent are forwarded to every worker; when a worker fails, the
//! others are stopped (SIGTERM, then SIGKILL after a grace period) and the agent returns an
//! error naming the rank and how it ended.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libc::{SIGINT, SIGKILL, SIGTERM};

use super::env::NodeEnv;
use super::ffi::send_signal;
use super::group::{AgentStore, DEFAULT_TIMEOUT};
use crate::{Error, Result};
use mtl_crds::contract::torchrun::{LOCAL_RANK, MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE};

/// How one node's workers are started.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    pub node: NodeEnv,
    /// The worker program and its arguments.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Extra environment for every worker.
    pub env: Vec<(OsString, OsString)>,
    /// How long the agent's store waits for workers (its TCPStore timeout).
    pub store_timeout: Duration,
    /// After a failure, how long the other workers get between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
}

impl LocalWorkers {
    /// Workers that re-run this process (`std::env::current_exe`, same arguments).
    pub fn current_process(node: NodeEnv) -> Result<Self> {
        let program = std::env::current_exe().map_err(|e| {
            Error::Dist(format!(
                "local agent: cannot find this program to re-run: {e}"
            ))
        })?;
        Ok(Self {
            node,
            program,
            args: std::env::args_os().skip(1).collect(),
            env: Vec::new(),
            store_timeout: DEFAULT_TIMEOUT,
            stop_grace: Duration::from_secs(10),
        })
    }

    /// The environment of local rank `local_rank` (the variables torchrun sets), with the
    /// store at `port`.
    pub fn worker_env(&self, local_rank: usize, port: u16) -> Vec<(String, String)> {
        let n = &self.node;
        let rank = n.node_rank * n.nproc_per_node + local_rank;
        let mut env = vec![
            (RANK, rank.to_string()),
            (LOCAL_RANK, local_rank.to_string()),
            (WORLD_SIZE, n.world_size().to_string()),
            ("LOCAL_WORLD_SIZE", n.nproc_per_node.to_string()),
            ("GROUP_RANK", n.node_rank.to_string()),
            ("ROLE_RANK", rank.to_string()),
            ("ROLE_WORLD_SIZE", n.world_size().to_string()),
            (MASTER_ADDR, n.master_addr.clone()),
            (MASTER_PORT, port.to_string()),
            ("TORCHELASTIC_USE_AGENT_STORE", "True".into()),
            ("TORCHELASTIC_RESTART_COUNT", "0".into()),
        ];
        // As torchrun: one intra-op thread per worker unless the user chose otherwise.
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            env.push(("OMP_NUM_THREADS", "1".into()));
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Starts the workers and waits for all of them: `Completed` when every worker exits with
    /// 0, `Stopped` when a forwarded SIGTERM/SIGINT made them stop with the trainer's
    /// checkpoint-and-stop code 143.
    pub fn run(&self) -> Result<AgentOutcome> {
        let n = &self.node;
        // Node 0's agent hosts the store; the other nodes' workers connect to it.
        let store = if n.node_rank == 0 {
            Some(AgentStore::serve(
                n.master_port,
                n.world_size(),
                self.store_timeout,
            )?)
        } else if n.master_port == 0 {
            return Err(Error::Dist(format!(
                "local agent of node {}: no rendezvous port for node 0's store",
                n.node_rank
            )));
        } else {
            None
        };
        let port = store.as_ref().map_or(n.master_port, AgentStore::port);
        let (tx, rx) = mpsc::channel();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map_err(|e| Error::Dist(format!("local agent: cannot handle signals: {e}")))?;
        let signal_handle = signals.handle();
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for sig in signals.forever() {
                    if tx.send(Event::Signal(sig)).is_err() {
                        break;
                    }
                }
            });
        }
        let result = self.supervise(port, &tx, &rx);
        signal_handle.close();
        drop(store);
        result
    }

    fn supervise(
        &self,
        port: u16,
        tx: &mpsc::Sender<Event>,
        rx: &mpsc::Receiver<Event>,
    ) -> Result<AgentOutcome> {
        let n = &self.node;
        let mut workers: Vec<Worker> = Vec::with_capacity(n.nproc_per_node);
        let mut stopped = 0usize;
        for local_rank in 0..n.nproc_per_node {
            let mut cmd = Command::new(&self.program);
            cmd.args(&self.args)
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .envs(self.worker_env(local_rank, port));
            let child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    let error = Error::Dist(format!(
                        "local agent: starting local rank {local_rank} ({}): {e}",
                        self.program.display()
                    ));
                    self.stop_all(&mut workers, rx);
                    return Err(error);
                }
            };
            let pid = child.id();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut child = child;
                let status = child.wait();
                let _ = tx.send(Event::Exited { local_rank, status });
            });
            workers.push(Worker {
                rank: n.node_rank * n.nproc_per_node + local_rank,
                local_rank,
                pid,
                exited: false,
            });
            tracing::info!(rank = workers[local_rank].rank, pid, "started worker");
        }
        let mut failure: Option<Error> = None;
        let mut kill_at: Option<Instant> = None;
        let mut forwarded: Option<i32> = None;
        while workers.iter().any(|w| !w.exited) {
            let event = match kill_at {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(e) => e,
                    Err(_) => {
                        self.signal_running(&workers, SIGKILL);
                        kill_at = None;
                        continue;
                    }
                },
                None => rx
                    .recv()
                    .map_err(|_| Error::Dist("local agent: event channel closed".into()))?,
            };
            match event {
                Event::Signal(sig) => {
                    tracing::warn!(signal = sig, "forwarding the signal to every worker");
                    forwarded = Some(sig);
                    self.signal_running(&workers, sig);
                }
                Event::Exited { local_rank, status } => {
                    let w = &mut workers[local_rank];
                    w.exited = true;
                    let ok = matches!(&status, Ok(s) if s.success());
                    let stop = forwarded.is_some()
                        && matches!(&status, Ok(s) if s.code() == Some(STOPPED_EXIT));
                    stopped += usize::from(stop);
                    if ok || stop || failure.is_some() || kill_at.is_some() {
                        continue;
                    }
                    let code = status.as_ref().ok().and_then(ExitStatus::code);
                    let status = describe(&status, forwarded);
                    tracing::error!(rank = w.rank, %status, "worker failed; stopping the others");
                    failure = Some(Error::WorkerFailed {
                        rank: w.rank,
                        local_rank: w.local_rank,
                        pid: w.pid,
                        status,
                        code,
                    });
                    self.signal_running(&workers, SIGTERM);
                    kill_at = Some(Instant::now() + self.stop_grace);
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None if stopped > 0 => Ok(AgentOutcome::Stopped),
            None => Ok(AgentOutcome::Completed),
        }
    }

    /// After a failed start: kills what was started and waits for it.
    fn stop_all(&self, workers: &mut [Worker], rx: &mpsc::Receiver<Event>) {
        self.signal_running(workers, SIGKILL);
        while workers.iter().any(|w| !w.exited) {
            match rx.recv() {
                Ok(Event::Exited { local_rank, .. }) => workers[local_rank].exited = true,
                Ok(Event::Signal(_)) => {}
                Err(_) => break,
            }
        }
    }

    fn signal_running(&self, workers: &[Worker], sig: i32) {
        // A worker whose exit is not yet received may have just been reaped; its pid is not
        // reused before the agent's wait thread has reported it, which is the window here.
        for w in workers.iter().filter(|w| !w.exited) {
            if let Err(e) = send_signal(w.pid, sig) {
                tracing::warn!(rank = w.rank, pid = w.pid, "cannot signal worker: {e}");
            }
        }
    }
}

/// The trainer's exit code after checkpointing on a stop request (128 + SIGTERM).
pub const STOPPED_EXIT: i32 = mtl_crds::contract::EXIT_STOPPED as i32;

/// How a node's workers ended, when none failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOutcome {
    Completed,
    Stopped,
}

struct Worker {
    rank: usize,
    local_rank: usize,
    pid: u32,
    exited: bool,
}

enum Event {
    Signal(i32),
    Exited {
        local_rank: usize,
        status: std::io::Result<ExitStatus>,
    },
}

/// How a worker ended, in words.
fn describe(status: &std::io::Result<ExitStatus>, forwarded: Option<i32>) -> String {
    let status = match status {
        Ok(s) => s,
        Err(e) => return format!("could not be waited for: {e}"),
    };
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = signal_name(sig);
            if forwarded == Some(sig) {
                format!("was stopped by signal {sig} ({name}), forwarded by the agent")
            } else {
                format!("was killed by signal {sig} ({name})")
            }
        }
        None => format!("ended with {status}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "another signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::env::Launcher;

    #[test]
    fn worker_env_is_torchruns() {
        let w = LocalWorkers {
            node: NodeEnv {
                nnodes: 2,
                node_rank: 1,
                nproc_per_node: 4,
                master_addr: "node0".into(),
                master_port: 29500,
                launcher: Launcher::Flags,
            },
            program: "mtl-trainer".into(),
            args: vec![],
            env: vec![],
            store_timeout: DEFAULT_TIMEOUT,
            stop_grace: Duration::from_secs(1),
        };
        let env: std::collections::BTreeMap<String, String> =
            w.worker_env(2, 29500).into_iter().collect();
        let worker = match crate::distributed::env::resolve(&env, &Default::default(), 4).unwrap() {
            crate::distributed::env::Launch::Worker(w) => w,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (
                worker.rank,
                worker.world_size,
                worker.local_rank,
                worker.local_world_size
            ),
            (6, 8, 2, 4)
        );
        assert_eq!(
            (worker.master_addr.as_str(), worker.master_port),
            ("node0", 29500)
        );
        assert!(worker.agent_store);
    }

    #[test]
    fn exit_statuses_in_words() {
        assert_eq!(
            describe(&Ok(ExitStatus::from_raw(1 << 8)), None),
            "exited with status 1"
        );
        assert_eq!(
            describe(&Ok(ExitStatus::from_raw(libc::SIGKILL)), None),
            "was killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(
                &Ok(ExitStatus::from_raw(libc::SIGTERM)),
                Some(libc::SIGTERM)
            ),
            "was stopped by signal 15 (SIGTERM), forwarded by the agent"
        );
    }
}
