// ATen entry points that tch does not expose, for mtl-trainer: the fused AdamW kernel and the
// gradient scaler's kernels (they take tensor lists; tch generates single-tensor ops only),
// autocast with an explicit dtype and device (tch's autocast enables CUDA autocast without
// setting its dtype), resetting gradients to undefined (torch's `zero_grad(set_to_none=True)`)
// and the TF32 switch. Every function catches what ATen throws and returns 0, or 1 with a
// NUL-terminated message in `error`: nothing unwinds across the C boundary.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstddef>
#include <cstring>
#include <exception>
#include <vector>

namespace {
std::vector<at::Tensor> collect(const at::Tensor *const *ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

template <typename F>
int guarded(char *error, size_t error_len, F f) {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  } catch (...) {
    if (error_len > 0) {
      std::strncpy(error, "unknown C++ exception", error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}

at::DeviceType device_type(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

at::ScalarType dtype(int code) {
  switch (code) {
    case 1: return at::kHalf;
    case 2: return at::kFloat;
    default: return at::kBFloat16;
  }
}

int dtype_code(at::ScalarType t) {
  switch (t) {
    case at::kHalf: return 1;
    case at::kFloat: return 2;
    default: return 0;
  }
}
}  // namespace

extern "C" {

// One AdamW update of `n` parameters in place from their gradients. `steps` holds each
// parameter's step count as a float scalar tensor on its device; each is incremented first,
// as torch.optim.AdamW does before calling the kernel.
int mtl_fused_adamw(const at::Tensor *const *params, const at::Tensor *const *grads,
                    const at::Tensor *const *exp_avgs, const at::Tensor *const *exp_avg_sqs,
                    const at::Tensor *const *steps, size_t n, double lr, double beta1,
                    double beta2, double weight_decay, double eps, char *error,
                    size_t error_len) {
  return guarded(error, error_len, [&] {
    auto p = collect(params, n), g = collect(grads, n), m = collect(exp_avgs, n),
         v = collect(exp_avg_sqs, n), s = collect(steps, n);
    for (auto &t : s) t.add_(1);
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false);
  });
}

// Multiplies every gradient by `inv_scale` (a float scalar tensor) and sets `found_inf` (a
// float scalar tensor) to 1 if any of them holds an inf or NaN: GradScaler.unscale_.
int mtl_unscale_grads(const at::Tensor *const *grads, size_t n, const at::Tensor *found_inf,
                      const at::Tensor *inv_scale, char *error, size_t error_len) {
  return guarded(error, error_len, [&] {
    auto g = collect(grads, n);
    at::Tensor found = *found_inf;
    at::_amp_foreach_non_finite_check_and_unscale_(g, found, *inv_scale);
  });
}

// Makes the gradient of each tensor undefined (torch's `zero_grad(set_to_none=True)`).
int mtl_reset_grads(const at::Tensor *const *params, size_t n, char *error, size_t error_len) {
  return guarded(error, error_len, [&] {
    for (size_t i = 0; i < n; ++i) params[i]->mutable_grad().reset();
  });
}

// Turns autocast on for `device` (0 CPU, 1 CUDA) in `dtype` (0 bfloat16, 1 float16) and
// enters one nesting level; the previous state goes to `prev_enabled` / `prev_dtype`.
int mtl_autocast_enter(int device, int dtype_code_in, int *prev_enabled, int *prev_dtype,
                       char *error, size_t error_len) {
  return guarded(error, error_len, [&] {
    auto dev = device_type(device);
    *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *prev_dtype = dtype_code(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::set_autocast_dtype(dev, dtype(dtype_code_in));
    at::autocast::increment_nesting();
  });
}

// Leaves the level `mtl_autocast_enter` entered and restores the previous state; the cast
// cache is cleared when the outermost level is left.
int mtl_autocast_exit(int device, int prev_enabled, int prev_dtype, char *error,
                      size_t error_len) {
  return guarded(error, error_len, [&] {
    auto dev = device_type(device);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, dtype(prev_dtype));
  });
}

// TF32 for float32 matmuls and convolutions on CUDA (torch.backends.cuda.matmul.allow_tf32
// and torch.backends.cudnn.allow_tf32).
int mtl_set_allow_tf32(int allow, char *error, size_t error_len) {
  return guarded(error, error_len, [&] {
    at::globalContext().setAllowTF32CuBLAS(allow != 0);
    at::globalContext().setAllowTF32CuDNN(allow != 0);
  });
}

}  // extern "C"
