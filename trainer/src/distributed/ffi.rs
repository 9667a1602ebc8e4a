//! The foreign calls of the data-parallel layer: c10d (TCPStore, PrefixStore,
//! ProcessGroupGloo, ProcessGroupNCCL) through `csrc/dist.cpp`, compiled by build.rs against
//! the same libtorch as tch. Every `unsafe` of `distributed` is in this module; the types here own
//! their C++ handles and free them on drop.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::ptr::NonNull;
use std::time::Duration;

use tch::Tensor;
use torch_sys::C_tensor;

/// Opaque C++ handles (`struct mtl_store`, `struct mtl_group` of dist.cpp).
#[repr(C)]
struct CStore {
    _private: [u8; 0],
}
#[repr(C)]
struct CGroup {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn mtl_store_serve(
        port: u16,
        world: i64,
        timeout_ms: i64,
        out: *mut *mut CStore,
        bound_port: *mut u16,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_store_free(store: *mut CStore);
    fn mtl_group_new(
        host: *const c_char,
        port: u16,
        host_store: c_int,
        prefix: *const c_char,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        backend: c_int,
        device_index: c_int,
        out: *mut *mut CGroup,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_allreduce(
        group: *mut CGroup,
        tensors: *const *const C_tensor,
        n: usize,
        op: c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_broadcast(
        group: *mut CGroup,
        tensors: *const *const C_tensor,
        n: usize,
        root: c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_barrier(group: *mut CGroup, error: *mut c_char, error_len: usize) -> c_int;
    fn mtl_group_set_timeout(
        group: *mut CGroup,
        timeout_ms: i64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_store_set(
        group: *mut CGroup,
        key: *const c_char,
        value: *const u8,
        len: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_store_wait(
        group: *mut CGroup,
        key: *const c_char,
        timeout_ms: i64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_group_free(group: *mut CGroup, leak_backend: c_int);
    fn mtl_set_grad(
        param: *const C_tensor,
        grad: *const C_tensor,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_dist_has_nccl() -> c_int;
}

/// How a call failed (the return codes of dist.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Failed while running (a peer error, a backend error).
    Failed,
    /// A store wait or a collective ran out of time.
    Timeout,
    /// The store (or a peer's socket) could not be reached.
    Unreachable,
    /// Refused before it started: a bad argument on this rank.
    Invalid,
}

/// A failed call: its kind and c10d's message (prefixed with what was being done).
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Room for c10d's messages: Gloo's and NCCL's carry addresses and file positions.
const ERROR_LEN: usize = 4096;

/// Runs one C call that reports through a `(rc, error buffer)` pair.
fn call(body: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), Failure> {
    let mut error = vec![0 as c_char; ERROR_LEN];
    let rc = body(error.as_mut_ptr(), error.len());
    let kind = match rc {
        0 => return Ok(()),
        2 => FailureKind::Timeout,
        3 => FailureKind::Unreachable,
        4 => FailureKind::Invalid,
        _ => FailureKind::Failed,
    };
    let bytes: Vec<u8> = error.iter().map(|&c| c as u8).collect();
    let message = CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown error".into());
    Err(Failure { kind, message })
}

fn c_string(what: &str, s: &str) -> Result<CString, Failure> {
    CString::new(s).map_err(|_| Failure {
        kind: FailureKind::Invalid,
        message: format!("{what} {s:?} contains a NUL byte"),
    })
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Reduction of an allreduce (`MTL_REDUCE_*` of dist.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

/// Collective backend (`MTL_BACKEND_*` of dist.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Gloo = 0,
    Nccl = 1,
}

/// Whether this build has ProcessGroupNCCL (built with `MTL_LINK_CUDA=1`).
pub fn has_nccl() -> bool {
    // SAFETY: takes nothing, returns a constant.
    unsafe { mtl_dist_has_nccl() != 0 }
}

/// A c10d TCPStore server that is not a rank itself (torchrun's "agent store").
pub struct StoreServer {
    raw: NonNull<CStore>,
    port: u16,
}

// SAFETY: the handle is a heap object owned by this value alone; TCPStore's server runs on its
// own thread and its handle may be dropped from any thread.
unsafe impl Send for StoreServer {}

impl StoreServer {
    /// Listens on `port` (0: any free port) for `world` clients.
    pub fn serve(port: u16, world: usize, timeout: Duration) -> Result<Self, Failure> {
        let mut raw = std::ptr::null_mut();
        let mut bound = 0u16;
        let world = i64::try_from(world).unwrap_or(i64::MAX);
        // SAFETY: `raw` and `bound` are valid for writes for the call; the error buffer is
        // `error_len` bytes long (see `call`). On success `raw` is a new heap object that this
        // value owns.
        call(|error, len| unsafe {
            mtl_store_serve(
                port,
                world,
                millis(timeout),
                &mut raw,
                &mut bound,
                error,
                len,
            )
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| Failure {
            kind: FailureKind::Failed,
            message: "TCPStore server: no handle returned".into(),
        })?;
        Ok(Self { raw, port: bound })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for StoreServer {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mtl_store_serve and is freed exactly once, here.
        unsafe { mtl_store_free(self.raw.as_ptr()) }
    }
}

/// Everything `Group::new` needs: where the store is, who hosts it, this rank, the backend.
pub struct GroupInit<'a> {
    pub host: &'a str,
    pub port: u16,
    /// This process hosts the TCPStore server (rank 0 without an agent store).
    pub host_store: bool,
    /// Key prefix of this group in the store.
    pub prefix: &'a str,
    pub rank: usize,
    pub world: usize,
    pub timeout: Duration,
    pub backend: BackendKind,
    /// CUDA device index for NCCL (ignored by Gloo).
    pub device_index: usize,
}

/// A rendezvous store (PrefixStore over a TCPStore) and a c10d backend connected to every
/// rank.
pub struct Group {
    raw: NonNull<CGroup>,
    leak_on_drop: bool,
}

// SAFETY: the handle is a heap object owned by this value alone; c10d backends may be driven
// from any one thread at a time, and `&mut self`/`&self` methods are only reached through the
// single-threaded (`!Sync`) `ProcessGroup`.
unsafe impl Send for Group {}

impl Group {
    pub fn new(init: &GroupInit<'_>) -> Result<Self, Failure> {
        let host = c_string("store host", init.host)?;
        let prefix = c_string("store prefix", init.prefix)?;
        let as_int = |what: &str, v: usize| {
            c_int::try_from(v).map_err(|_| Failure {
                kind: FailureKind::Invalid,
                message: format!("{what} {v} is out of range"),
            })
        };
        let (rank, world) = (
            as_int("rank", init.rank)?,
            as_int("world size", init.world)?,
        );
        let device = as_int("device index", init.device_index)?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `host` and `prefix` are NUL-terminated and outlive the call; `raw` is valid
        // for writes; the error buffer is `error_len` bytes long. On success `raw` is a new
        // heap object that this value owns.
        call(|error, len| unsafe {
            mtl_group_new(
                host.as_ptr(),
                init.port,
                c_int::from(init.host_store),
                prefix.as_ptr(),
                rank,
                world,
                millis(init.timeout),
                init.backend as c_int,
                device,
                &mut raw,
                error,
                len,
            )
        })?;
        let raw = NonNull::new(raw).ok_or_else(|| Failure {
            kind: FailureKind::Failed,
            message: "rendezvous: no handle returned".into(),
        })?;
        Ok(Self {
            raw,
            leak_on_drop: false,
        })
    }

    /// In-place allreduce of each tensor (one collective each, all in flight together).
    pub fn allreduce(&self, tensors: &[&Tensor], op: ReduceOp) -> Result<(), Failure> {
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        // SAFETY: each pointer is the `torch::Tensor*` of a tch tensor borrowed (and so alive)
        // for the whole call; the C++ side copies the handles into refcounted `at::Tensor`s
        // (the c10d work items keep their own references while they run) and writes at most
        // `error_len` bytes, NUL-terminated, into the error buffer.
        call(|error, len| unsafe {
            mtl_group_allreduce(
                self.raw.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                op as c_int,
                error,
                len,
            )
        })
    }

    /// In-place broadcast of each tensor from `root`.
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), Failure> {
        let root = c_int::try_from(root).map_err(|_| Failure {
            kind: FailureKind::Invalid,
            message: format!("broadcast root {root} is out of range"),
        })?;
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        // SAFETY: as in `allreduce`.
        call(|error, len| unsafe {
            mtl_group_broadcast(
                self.raw.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                root,
                error,
                len,
            )
        })
    }

    pub fn barrier(&self) -> Result<(), Failure> {
        // SAFETY: the handle is alive; the error buffer is `error_len` bytes long.
        call(|error, len| unsafe { mtl_group_barrier(self.raw.as_ptr(), error, len) })
    }

    /// The timeout of every later collective.
    pub fn set_timeout(&self, timeout: Duration) -> Result<(), Failure> {
        // SAFETY: the handle is alive; the error buffer is `error_len` bytes long.
        call(|error, len| unsafe {
            mtl_group_set_timeout(self.raw.as_ptr(), millis(timeout), error, len)
        })
    }

    /// Sets `key` in this group's store.
    pub fn store_set(&self, key: &str, value: &[u8]) -> Result<(), Failure> {
        let key = c_string("store key", key)?;
        // SAFETY: `key` is NUL-terminated and `value` holds `value.len()` bytes, both alive
        // for the call; the error buffer is `error_len` bytes long.
        call(|error, len| unsafe {
            mtl_group_store_set(
                self.raw.as_ptr(),
                key.as_ptr(),
                value.as_ptr(),
                value.len(),
                error,
                len,
            )
        })
    }

    /// Waits until `key` exists in this group's store, at most `timeout`.
    pub fn store_wait(&self, key: &str, timeout: Duration) -> Result<(), Failure> {
        let key = c_string("store key", key)?;
        // SAFETY: `key` is NUL-terminated and alive for the call; the error buffer is
        // `error_len` bytes long.
        call(|error, len| unsafe {
            mtl_group_store_wait(self.raw.as_ptr(), key.as_ptr(), millis(timeout), error, len)
        })
    }

    /// On drop, free only the handle and keep the backend alive: after a failed collective,
    /// destroying a backend waits for work queued against the lost peers.
    pub fn leak_backend_on_drop(&mut self) {
        self.leak_on_drop = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `raw` came from mtl_group_new and is freed exactly once, here; the C++ side
        // catches everything while freeing.
        unsafe { mtl_group_free(self.raw.as_ptr(), c_int::from(self.leak_on_drop)) }
    }
}

/// Sets (`Some`) or clears (`None`) the `.grad` of a leaf tensor, which tch cannot do itself.
pub fn set_grad(param: &Tensor, grad: Option<&Tensor>) -> Result<(), Failure> {
    let grad = grad.map_or(std::ptr::null(), Tensor::as_ptr);
    // SAFETY: `param` (and `grad` when not null) are `torch::Tensor*` of tch tensors borrowed
    // for the call; the C++ side only copies the grad handle into the parameter's autograd
    // metadata (a refcounted reference); the error buffer is `error_len` bytes long.
    call(|error, len| unsafe { mtl_set_grad(param.as_ptr(), grad, error, len) })
}

/// Sends `signal` to process `pid` (a worker of the local agent). A worker that has already
/// exited is not an error: there is nothing left to stop.
pub fn send_signal(pid: u32, signal: c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::other(format!("pid {pid} is out of range")))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    let err = std::io::Error::last_os_error();
    if rc == 0 || err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}
