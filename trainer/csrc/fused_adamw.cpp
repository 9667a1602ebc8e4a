// ATen's fused AdamW kernel (what torch.optim.AdamW(fused=True) runs) for mtl-trainer's
// optimizer. tch exposes the generated single-tensor ops only; `_fused_adamw_` takes tensor
// lists, so it is reached through this one C entry point. One pass over each parameter, its
// gradient and both moments, where the op-by-op update makes about four.
#include <ATen/core/Tensor.h>
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
}  // namespace

// Updates `n` parameters in place from their gradients; `steps` holds each parameter's step
// count (already incremented) as a float scalar tensor on its device. Returns 0, or 1 with a
// NUL-terminated message in `error`.
extern "C" int mtl_fused_adamw(const at::Tensor *const *params, const at::Tensor *const *grads,
                               const at::Tensor *const *exp_avgs,
                               const at::Tensor *const *exp_avg_sqs,
                               const at::Tensor *const *steps, size_t n, double lr,
                               double beta1, double beta2, double weight_decay, double eps,
                               char *error, size_t error_len) {
  try {
    auto p = collect(params, n), g = collect(grads, n), m = collect(exp_avgs, n),
         v = collect(exp_avg_sqs, n), s = collect(steps, n);
    at::_fused_adamw_(p, g, m, v, /*max_exp_avg_sqs=*/{}, s, lr, beta1, beta2, weight_decay,
                      eps, /*amsgrad=*/false, /*maximize=*/false);
    return 0;
  } catch (const std::exception &e) {
    if (error_len > 0) {
      std::strncpy(error, e.what(), error_len - 1);
      error[error_len - 1] = '\0';
    }
    return 1;
  }
}
