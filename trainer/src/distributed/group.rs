//! [`ProcessGroup`]: one rank's membership of a c10d world (rendezvous through a TCPStore,
//! collectives on Gloo or NCCL), with errors that say what failed and which rank was lost.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::env::WorkerEnv;
pub use super::ffi::ReduceOp;
use super::ffi::{self, BackendKind, Failure, FailureKind};
use crate::{Error, Result};

/// torch.distributed's default collective timeout (`default_pg_timeout`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Collective backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo over TCP: CPU tensors (and CUDA tensors through host copies).
    Gloo,
    /// NCCL: CUDA tensors, one GPU per rank (builds with `MTL_LINK_CUDA=1` only).
    Nccl,
}

impl Backend {
    /// NCCL for a CUDA device, Gloo otherwise.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// How a [`ProcessGroup`] is set up.
#[derive(Debug, Clone)]
pub struct GroupOptions {
    pub backend: Backend,
    /// How long a rendezvous, a collective or a wait for a peer may take before it is an
    /// error. A lost peer is named at most twice this long after a collective started: once to
    /// notice, once for the survivors to find out who is missing.
    pub timeout: Duration,
}

impl Default for GroupOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Gloo,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// One rank of a world. Collectives must be called in the same order on every rank; the type
/// is `Send` but not `Sync`, so one thread drives it. After a failed collective every later
/// call fails too (the world is out of step), and dropping it does not wait on lost peers.
pub struct ProcessGroup {
    raw: ffi::Group,
    rank: usize,
    world_size: usize,
    local_rank: usize,
    device: Device,
    timeout: Duration,
    store: String,
    store_host: StoreHost,
    failure: RefCell<Option<String>>,
}

/// Who hosts the rendezvous store: decides what an unreachable store says about the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreHost {
    Rank0,
    Agent,
}

impl ProcessGroup {
    /// Joins the world described by `worker`: rendezvous at its master address (as the
    /// store's host on rank 0, or as a client of an agent's store), then connects the backend
    /// to every rank. NCCL ranks use `cuda:<local rank>`.
    pub fn init(worker: &WorkerEnv, options: &GroupOptions) -> Result<Self> {
        let backend = match options.backend {
            Backend::Gloo => BackendKind::Gloo,
            Backend::Nccl if ffi::has_nccl() => BackendKind::Nccl,
            Backend::Nccl => {
                return Err(Error::Dist(
                    "NCCL asked for, but this mtl-trainer was built without CUDA \
                     (MTL_LINK_CUDA=1)"
                        .into(),
                ));
            }
        };
        let store_host = if worker.agent_store {
            StoreHost::Agent
        } else {
            StoreHost::Rank0
        };
        let store = format!("{}:{}", worker.master_addr, worker.master_port);
        let prefix = format!("mtl/{}", worker.restart);
        let raw = ffi::Group::new(&ffi::GroupInit {
            host: &worker.master_addr,
            port: worker.master_port,
            host_store: !worker.agent_store && worker.rank == 0,
            prefix: &prefix,
            rank: worker.rank,
            world: worker.world_size,
            timeout: options.timeout,
            backend,
            device_index: worker.local_rank,
        })
        .map_err(|f| {
            Error::Dist(format!(
                "rank {} of {} (rendezvous at {store}): {f}",
                worker.rank, worker.world_size
            ))
        })?;
        let device = match options.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(worker.local_rank),
        };
        tracing::info!(
            rank = worker.rank,
            world_size = worker.world_size,
            store = %store,
            backend = ?options.backend,
            "joined the process group"
        );
        Ok(Self {
            raw,
            rank: worker.rank,
            world_size: worker.world_size,
            local_rank: worker.local_rank,
            device,
            timeout: options.timeout,
            store,
            store_host,
            failure: RefCell::new(None),
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world_size(&self) -> usize {
        self.world_size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Rank 0: the one that logs, evaluates and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Where this group's collectives want their tensors (CPU for Gloo, `cuda:<local rank>`
    /// for NCCL).
    pub fn device(&self) -> Device {
        self.device
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the timeout of later collectives (e.g. a long one for the rendezvous and the
    /// first steps, a shorter one once the world runs).
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.raw
            .set_timeout(timeout)
            .map_err(|f| Error::Dist(f.message))?;
        self.timeout = timeout;
        Ok(())
    }

    /// In-place allreduce of each tensor, every one its own collective (all in flight
    /// together). Every rank passes tensors of the same shapes, kinds and order.
    pub fn allreduce(&self, tensors: &[&Tensor], op: ReduceOp) -> Result<()> {
        self.allreduce_as(
            &format!("allreduce of {}", count(tensors.len(), "tensor")),
            tensors,
            op,
        )
    }

    /// [`allreduce`](Self::allreduce), described as `what` in errors.
    pub(crate) fn allreduce_as(&self, what: &str, tensors: &[&Tensor], op: ReduceOp) -> Result<()> {
        self.run(what, || self.raw.allreduce(tensors, op))
    }

    /// In-place broadcast of each tensor from rank `root`.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        self.broadcast_as(
            &format!(
                "broadcast of {} from rank {root}",
                count(tensors.len(), "tensor")
            ),
            tensors,
            root,
        )
    }

    pub(crate) fn broadcast_as(&self, what: &str, tensors: &[&Tensor], root: usize) -> Result<()> {
        if root >= self.world_size {
            return Err(Error::Dist(format!(
                "{what}: root {root} is not a rank of a world of {}",
                self.world_size
            )));
        }
        self.run(what, || self.raw.broadcast(tensors, root))
    }

    /// Allreduces `values` in place (one collective for all of them): example counts, losses,
    /// a stop flag (`Max` of 0/1: did any rank ask to stop?). Exact for integers up to 2^53.
    pub fn allreduce_f64(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        self.allreduce_f64_as(
            &format!("allreduce of {}", count(values.len(), "scalar")),
            values,
            op,
        )
    }

    pub(crate) fn allreduce_f64_as(
        &self,
        what: &str,
        values: &mut [f64],
        op: ReduceOp,
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let t = Tensor::from_slice(&values[..]).to_device(self.device);
        self.allreduce_as(what, &[&t], op)?;
        let out = t.to_device(Device::Cpu).to_kind(Kind::Double);
        let out: Vec<f64> = Vec::try_from(&out)?;
        values.copy_from_slice(&out);
        Ok(())
    }

    /// Whether any rank says `flag` (e.g. "stop at this step": SIGTERM reached some rank).
    pub fn any(&self, flag: bool) -> Result<bool> {
        let mut v = [f64::from(u8::from(flag))];
        self.allreduce_f64_as("allreduce of a flag", &mut v, ReduceOp::Max)?;
        Ok(v[0] > 0.0)
    }

    /// Blocks until every rank reaches it.
    pub fn barrier(&self) -> Result<()> {
        self.run("barrier", || self.raw.barrier())
    }

    /// Leaves the world: a barrier (so rank 0's store outlives every rank's last use of it),
    /// then the backend is shut down. Every rank calls it at the same point.
    pub fn shutdown(self) -> Result<()> {
        self.barrier()
    }

    /// Runs one call of the backend; on failure, the group is marked failed and the error
    /// names the ranks that are gone.
    fn run(&self, what: &str, call: impl FnOnce() -> Result<(), Failure>) -> Result<()> {
        if let Some(first) = self.failure.borrow().as_ref() {
            return Err(Error::Dist(format!(
                "{what}: the process group is unusable after an earlier failure ({first})"
            )));
        }
        let Err(failure) = call() else {
            return Ok(());
        };
        *self.failure.borrow_mut() = Some(format!("{what}: {failure}"));
        if failure.kind == FailureKind::Invalid {
            return Err(Error::Dist(format!(
                "{what} on rank {}: {failure}",
                self.rank
            )));
        }
        tracing::error!(rank = self.rank, %failure, "{what} failed; finding the lost ranks");
        match self.lost_ranks() {
            Lost::Ranks(ranks) if !ranks.is_empty() => Err(Error::PeerLost {
                what: what.to_string(),
                ranks,
                detail: failure.message,
            }),
            Lost::Ranks(_) => Err(Error::Dist(format!(
                "{what} failed on rank {} (every rank reported in afterwards): {failure}",
                self.rank
            ))),
            Lost::Store(why) if self.store_host == StoreHost::Rank0 => Err(Error::PeerLost {
                what: what.to_string(),
                ranks: vec![0],
                detail: format!(
                    "{failure}; and the rendezvous store that rank 0 hosts at {} is \
                     unreachable ({why})",
                    self.store
                ),
            }),
            Lost::Store(why) => Err(Error::Dist(format!(
                "{what} failed: {failure}; and the agent's rendezvous store at {} is \
                 unreachable ({why})",
                self.store
            ))),
        }
    }

    /// After a failed collective: every surviving rank reports in at the store and waits up
    /// to the timeout for the others; those that never report are the lost ones.
    fn lost_ranks(&self) -> Lost {
        let key = |rank: usize| format!("failed/{rank}");
        if let Err(f) = self.raw.store_set(&key(self.rank), b"1") {
            return Lost::Store(f.message);
        }
        let deadline = Instant::now() + self.timeout;
        let mut lost = Vec::new();
        for rank in (0..self.world_size).filter(|&r| r != self.rank) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .raw
                .store_wait(&key(rank), left.max(Duration::from_millis(1)))
            {
                Ok(()) => {}
                Err(f) if f.kind == FailureKind::Unreachable => return Lost::Store(f.message),
                Err(_) => lost.push(rank),
            }
        }
        Lost::Ranks(lost)
    }
}

/// "1 tensor", "3 tensors".
pub(crate) fn count(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

enum Lost {
    Ranks(Vec<usize>),
    Store(String),
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.failure.borrow().is_some() {
            self.raw.leak_backend_on_drop();
        }
    }
}

/// A TCPStore server for a node's workers, hosted by their agent (torchrun's agent store):
/// it outlives any one worker, so a lost rank 0 is reported like any other rank.
pub struct AgentStore {
    raw: ffi::StoreServer,
}

impl AgentStore {
    /// Listens on `port` (0: a free port) for `world_size` ranks.
    pub fn serve(port: u16, world_size: usize, timeout: Duration) -> Result<Self> {
        let raw = ffi::StoreServer::serve(port, world_size, timeout)
            .map_err(|f| Error::Dist(format!("agent store on port {port}: {f}")))?;
        Ok(Self { raw })
    }

    pub fn port(&self) -> u16 {
        self.raw.port()
    }
}

/// Sets (`Some`) or clears (`None`) the gradient of a leaf tensor.
pub(crate) fn set_grad(param: &Tensor, grad: Option<&Tensor>) -> Result<()> {
    ffi::set_grad(param, grad).map_err(|f| Error::Dist(f.message))
}
