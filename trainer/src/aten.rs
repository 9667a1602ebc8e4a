//! ATen entry points that tch does not expose, through `csrc/aten.cpp` (compiled by build.rs
//! against the same libtorch as tch): the fused AdamW kernel, the gradient scaler's unscale
//! kernel, resetting gradients to undefined, autocast with an explicit device and dtype, and
//! the TF32 switch. The only foreign calls of the trainer's training path.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int};

use tch::{TchError, Tensor};
use torch_sys::C_tensor;

unsafe extern "C" {
    fn mtl_fused_adamw(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        exp_avgs: *const *const C_tensor,
        exp_avg_sqs: *const *const C_tensor,
        steps: *const *const C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_unscale_grads(
        grads: *const *const C_tensor,
        n: usize,
        found_inf: *const C_tensor,
        inv_scale: *const C_tensor,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_reset_grads(
        params: *const *const C_tensor,
        n: usize,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_autocast_enter(
        device: c_int,
        dtype: c_int,
        prev_enabled: *mut c_int,
        prev_dtype: *mut c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_autocast_exit(
        device: c_int,
        prev_enabled: c_int,
        prev_dtype: c_int,
        error: *mut c_char,
        error_len: usize,
    ) -> c_int;
    fn mtl_set_allow_tf32(allow: c_int, error: *mut c_char, error_len: usize) -> c_int;
}

/// Room for the C++ side's error message.
struct ErrorBuf([c_char; 1024]);

impl ErrorBuf {
    fn new() -> Self {
        Self([0; 1024])
    }

    /// `Ok` for return code 0, else the message the C++ side wrote, prefixed with `what`.
    fn check(&self, rc: c_int, what: &str) -> Result<(), TchError> {
        if rc == 0 {
            return Ok(());
        }
        let bytes: Vec<u8> = self.0.iter().map(|&c| c as u8).collect();
        let message = CStr::from_bytes_until_nul(&bytes)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown error".into());
        Err(TchError::Torch(format!("{what}: {message}")))
    }
}

fn ptrs(ts: &[&Tensor]) -> Vec<*const C_tensor> {
    ts.iter().map(|t| t.as_ptr()).collect()
}

/// Tensors of one fused update: parameters, their gradients, moments and step counts, index
/// by index.
#[derive(Default)]
pub struct AdamWGroup<'a> {
    pub params: Vec<&'a Tensor>,
    pub grads: Vec<Tensor>,
    pub exp_avgs: Vec<&'a Tensor>,
    pub exp_avg_sqs: Vec<&'a Tensor>,
    /// Float scalar tensors on the parameters' device, incremented by the update.
    pub steps: Vec<&'a Tensor>,
}

/// Hyper-parameters of one update.
pub struct AdamWUpdate {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// Increments every step count of `g`, then updates every parameter in place (decoupled
/// weight decay, then Adam with bias correction for its own step count).
pub fn fused_adamw(g: &AdamWGroup<'_>, u: &AdamWUpdate) -> Result<(), TchError> {
    let n = g.params.len();
    if n == 0 {
        return Ok(());
    }
    if [
        g.grads.len(),
        g.exp_avgs.len(),
        g.exp_avg_sqs.len(),
        g.steps.len(),
    ] != [n; 4]
    {
        return Err(TchError::Torch(
            "fused AdamW: parameter, gradient, moment and step lists differ in length".into(),
        ));
    }
    let grads: Vec<&Tensor> = g.grads.iter().collect();
    let (p, gr, m, v, s) = (
        ptrs(&g.params),
        ptrs(&grads),
        ptrs(&g.exp_avgs),
        ptrs(&g.exp_avg_sqs),
        ptrs(&g.steps),
    );
    let mut error = ErrorBuf::new();
    // SAFETY: each pointer is the `torch::Tensor*` of a tch tensor borrowed (and so alive) for
    // the whole call; the C++ side copies the handles into refcounted `at::Tensor`s that it
    // drops before returning, and writes at most `error.0.len()` bytes, NUL-terminated, into
    // `error`. Every array holds `n` pointers.
    let rc = unsafe {
        mtl_fused_adamw(
            p.as_ptr(),
            gr.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            u.lr,
            u.beta1,
            u.beta2,
            u.weight_decay,
            u.eps,
            error.0.as_mut_ptr(),
            error.0.len(),
        )
    };
    error.check(rc, "fused AdamW")
}

/// Multiplies every gradient by `inv_scale` and sets `found_inf` to 1.0 if any holds an inf
/// or NaN (both float scalar tensors on the gradients' device).
pub fn unscale_grads(
    grads: &[Tensor],
    found_inf: &Tensor,
    inv_scale: &Tensor,
) -> Result<(), TchError> {
    if grads.is_empty() {
        return Ok(());
    }
    let refs: Vec<&Tensor> = grads.iter().collect();
    let g = ptrs(&refs);
    let mut error = ErrorBuf::new();
    // SAFETY: as in `fused_adamw`: borrowed tensors alive for the call, `g` holds
    // `grads.len()` pointers, the message buffer is bounded.
    let rc = unsafe {
        mtl_unscale_grads(
            g.as_ptr(),
            g.len(),
            found_inf.as_ptr(),
            inv_scale.as_ptr(),
            error.0.as_mut_ptr(),
            error.0.len(),
        )
    };
    error.check(rc, "unscaling gradients")
}

/// Makes the gradients of `params` undefined, so the next backward starts them afresh and an
/// optimizer skips parameters that took no part in a step.
pub fn reset_grads(params: &[&Tensor]) -> Result<(), TchError> {
    if params.is_empty() {
        return Ok(());
    }
    let p = ptrs(params);
    let mut error = ErrorBuf::new();
    // SAFETY: as in `fused_adamw`; the C++ side resets each tensor's gradient slot.
    let rc = unsafe { mtl_reset_grads(p.as_ptr(), p.len(), error.0.as_mut_ptr(), error.0.len()) };
    error.check(rc, "resetting gradients")
}

/// The reduced-precision type autocast runs matmuls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocastDtype {
    BFloat16,
    Float16,
}

/// Runs `f` with autocast on for `cuda` (else the CPU) in `dtype`, restoring the previous
/// autocast state afterwards.
pub fn autocast<T>(cuda: bool, dtype: AutocastDtype, f: impl FnOnce() -> T) -> Result<T, TchError> {
    let device = c_int::from(cuda);
    let code = match dtype {
        AutocastDtype::BFloat16 => 0,
        AutocastDtype::Float16 => 1,
    };
    let (mut prev_enabled, mut prev_dtype) = (0, 0);
    let mut error = ErrorBuf::new();
    // SAFETY: plain ints in and out; the message buffer is bounded.
    let rc = unsafe {
        mtl_autocast_enter(
            device,
            code,
            &mut prev_enabled,
            &mut prev_dtype,
            error.0.as_mut_ptr(),
            error.0.len(),
        )
    };
    error.check(rc, "entering autocast")?;
    let out = f();
    let mut error = ErrorBuf::new();
    // SAFETY: as above.
    let rc = unsafe {
        mtl_autocast_exit(
            device,
            prev_enabled,
            prev_dtype,
            error.0.as_mut_ptr(),
            error.0.len(),
        )
    };
    error.check(rc, "leaving autocast")?;
    Ok(out)
}

/// Lets float32 matmuls and convolutions on CUDA use TF32.
pub fn set_allow_tf32(allow: bool) -> Result<(), TchError> {
    let mut error = ErrorBuf::new();
    // SAFETY: an int in; the message buffer is bounded.
    let rc = unsafe { mtl_set_allow_tf32(c_int::from(allow), error.0.as_mut_ptr(), error.0.len()) };
    error.check(rc, "setting TF32")
}
