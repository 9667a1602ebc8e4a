//! Data parallel on torch.distributed's c10d, as DDP does it: a TCPStore rendezvous, Gloo (CPU)
//! or NCCL (CUDA) collectives, gradients averaged in ~25 MiB buckets after backward,
//! parameters broadcast from rank 0.
//!
//! - `env`: where rank and world come from (torchrun, PyTorchJob, Kubeflow Trainer, Vertex
//!   AI's CLUSTER_SPEC, flags).
//! - `launch`: the local agent that starts one worker per local rank.
//! - `group`: [`ProcessGroup`], one rank's membership of the world, and its collectives.
//! - `grads`: [`GradientSync`] (example-weighted gradient averaging) and
//!   [`broadcast_tensors`].
//! - `shard`: which examples of a step's batch each rank trains on (balanced by length).
//! - `ffi`: the C++ side (csrc/dist.cpp), this module's one file with `unsafe` (the crate's
//!   others: `aten.rs`, `data/token_store.rs`).
//!
//! A training step on N ranks, each with its own shard of the step's batch:
//! ```text
//! let sync = GradientSync::new(&pg, &named_params, DEFAULT_BUCKET_CAP_BYTES)?;  // once
//! broadcast_tensors(&pg, &params, DEFAULT_BUCKET_CAP_BYTES)?;                    // after init/resume
//! loop {
//!     loss(local shard).backward();        // mean over the local examples
//!     sync.average(&pg, local_examples)?;  // now as if one process had the whole batch
//!     clip, optimizer step, zero grads;
//!     if pg.any(stop_requested)? { break }  // every rank stops at the same step
//! }
//! pg.shutdown()?;
//! ```

pub mod env;
mod ffi;
pub mod grads;
pub mod group;
pub mod launch;
pub mod shard;

pub use env::{Launch, LaunchFlags, Launcher, NodeEnv, WorkerEnv};
pub use grads::{DEFAULT_BUCKET_CAP_BYTES, GradStats, GradientSync, broadcast_tensors};
pub use group::{AgentStore, Backend, DEFAULT_TIMEOUT, GroupOptions, ProcessGroup, ReduceOp};
pub use launch::{AgentOutcome, LocalWorkers, STOPPED_EXIT};
