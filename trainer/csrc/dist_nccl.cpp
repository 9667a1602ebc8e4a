// ProcessGroupNCCL for dist.cpp, compiled only in CUDA builds (MTL_LINK_CUDA=1): it needs the
// CUDA and NCCL headers, and its symbols live in libtorch_cuda.so.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include <chrono>
#include <cstdlib>

namespace {

// ProcessGroupNCCL's defaults suit Python, where a watchdog that kills the process is the only
// way out of a hung collective. Here every failure must come back to the caller as an error:
// a blocking wait that throws on timeout, and error handling that aborts the communicators
// without tearing the process down. A value the user set explicitly is kept.
void default_env(const char *name, const char *value) {
  if (std::getenv(name) == nullptr) setenv(name, value, 0);
}

}  // namespace

c10::intrusive_ptr<c10d::Backend> mtl_make_nccl(const c10::intrusive_ptr<c10d::Store> &store,
                                                int rank, int world,
                                                std::chrono::milliseconds timeout,
                                                int device_index) {
  default_env("TORCH_NCCL_BLOCKING_WAIT", "1");
  default_env("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2");  // CleanUpOnly
  default_env("TORCH_NCCL_ENABLE_MONITORING", "0");
  // DeviceIndex is a char type: printed as a number, not a character.
  const int visible = static_cast<int>(c10::cuda::device_count());
  TORCH_CHECK(device_index >= 0 && device_index < visible, "cuda:", device_index,
              " is not a visible CUDA device (", visible, " visible)");
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device_index));
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
  // Connect now, so that a rendezvous problem shows here and not in the first allreduce.
  pg->eagerConnectSingleDevice(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device_index)));
  return pg;
}
