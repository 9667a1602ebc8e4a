//! The one foreign call of the trainer: ATen's fused AdamW kernel, through
//! `csrc/fused_adamw.cpp` (compiled by build.rs against the same libtorch as tch).
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
}

/// Tensors of one fused update: parameters, their gradients and moments, index by index.
#[derive(Default)]
pub struct Group<'a> {
    pub params: Vec<&'a Tensor>,
    pub grads: Vec<Tensor>,
    pub exp_avgs: Vec<&'a Tensor>,
    pub exp_avg_sqs: Vec<&'a Tensor>,
}

/// Hyper-parameters of one update.
pub struct Update {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// Updates every parameter of `g` in place (decoupled weight decay, then Adam with bias
/// correction for step `step`, a float scalar tensor on the parameters' device).
pub fn adamw(g: &Group<'_>, step: &Tensor, u: &Update) -> Result<(), TchError> {
    let n = g.params.len();
    if n == 0 {
        return Ok(());
    }
    if [g.grads.len(), g.exp_avgs.len(), g.exp_avg_sqs.len()] != [n; 3] {
        return Err(TchError::Torch(
            "fused AdamW: parameter, gradient and moment lists differ in length".into(),
        ));
    }
    let ptrs = |ts: &[&Tensor]| ts.iter().map(|t| t.as_ptr()).collect::<Vec<_>>();
    let grads: Vec<&Tensor> = g.grads.iter().collect();
    let (p, gr, m, v) = (
        ptrs(&g.params),
        ptrs(&grads),
        ptrs(&g.exp_avgs),
        ptrs(&g.exp_avg_sqs),
    );
    let steps = vec![step.as_ptr(); n];
    let mut error = [0 as c_char; 1024];
    // SAFETY: each pointer is the `torch::Tensor*` of a tch tensor borrowed (and so alive) for
    // the whole call; the C++ side copies the handles into refcounted `at::Tensor`s that it
    // drops before returning, and writes at most `error.len()` bytes, NUL-terminated, into
    // `error`. Every array holds `n` pointers.
    let rc = unsafe {
        mtl_fused_adamw(
            p.as_ptr(),
            gr.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            steps.as_ptr(),
            n,
            u.lr,
            u.beta1,
            u.beta2,
            u.weight_decay,
            u.eps,
            error.as_mut_ptr(),
            error.len(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = error.iter().map(|&c| c as u8).collect();
    let message = CStr::from_bytes_until_nul(&bytes)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown error".into());
    Err(TchError::Torch(format!("fused AdamW: {message}")))
}
