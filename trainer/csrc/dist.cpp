// torch.distributed's c10d for mtl-trainer's data-parallel layer: TCPStore rendezvous (+ a
// PrefixStore per group), ProcessGroupGloo on CPU, ProcessGroupNCCL on CUDA (dist_nccl.cpp,
// compiled only in CUDA builds), and the few collectives the trainer needs. A C interface, so
// that Rust reaches it as it reaches csrc/fused_adamw.cpp: every entry point returns 0 or a
// non-zero code with a NUL-terminated message, and no exception crosses it.
//
// Gloo's own headers (which ProcessGroupGloo.hpp includes) come from Debian's libgloo-dev; the
// Gloo that runs is the one compiled into libtorch_cpu.so. This file only calls c10d functions
// defined inside libtorch (Options::create_default, the ProcessGroupGloo constructor, virtual
// calls through c10d::Backend) and never constructs, copies or calls into a Gloo class itself,
// so no Gloo class layout from those headers is compiled into this object: the headers are
// needed for the declarations to parse, not for their contents to match libtorch's Gloo.
#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros_like.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "dist.h"

namespace {

// Return codes of the C interface (mirrored in src/distributed/ffi.rs). kInvalid: a collective was
// refused before it started (a bad argument on this rank), as opposed to one that failed or
// timed out while running with its peers.
constexpr int kOk = 0;
constexpr int kError = 1;
constexpr int kTimeout = 2;
constexpr int kUnreachable = 3;
constexpr int kInvalid = 4;

void write_error(const std::string &message, char *error, size_t error_len) {
  if (error_len == 0) return;
  std::strncpy(error, message.c_str(), error_len - 1);
  error[error_len - 1] = '\0';
}

// Runs `body`, turning every exception into a return code and a message prefixed by `what`.
// c10 errors carry a C++ backtrace in what(); the message without it is what a user can read.
// An empty `what` adds no prefix (the Rust side names collectives itself).
template <typename F>
int guarded(const char *what, char *error, size_t error_len, F &&body) {
  const std::string prefix = *what == '\0' ? std::string() : std::string(what) + ": ";
  try {
    body();
    return kOk;
  } catch (const c10::DistNetworkError &e) {
    write_error(prefix + e.what_without_backtrace(), error, error_len);
    return kUnreachable;
  } catch (const c10::DistStoreError &e) {
    // The store's only failure that is not a network one is a wait that ran out of time.
    write_error(prefix + e.what_without_backtrace(), error, error_len);
    return kTimeout;
  } catch (const c10::Error &e) {
    write_error(prefix + e.what_without_backtrace(), error, error_len);
    return kError;
  } catch (const std::exception &e) {
    write_error(prefix + e.what(), error, error_len);
    return kError;
  } catch (...) {
    write_error(prefix + "unknown C++ exception", error, error_len);
    return kError;
  }
}

std::vector<at::Tensor> collect(const at::Tensor *const *ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*ts[i]);
  return out;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case MTL_REDUCE_SUM:
      return c10d::ReduceOp(c10d::ReduceOp::SUM);
    case MTL_REDUCE_MAX:
      return c10d::ReduceOp(c10d::ReduceOp::MAX);
    case MTL_REDUCE_MIN:
      return c10d::ReduceOp(c10d::ReduceOp::MIN);
    default:
      TORCH_CHECK(false, "unknown reduce op ", op);
  }
}

}  // namespace

// The backend of the NCCL build (dist_nccl.cpp).
#ifdef MTL_WITH_NCCL
c10::intrusive_ptr<c10d::Backend> mtl_make_nccl(const c10::intrusive_ptr<c10d::Store> &store,
                                                int rank, int world,
                                                std::chrono::milliseconds timeout,
                                                int device_index);
#endif

struct mtl_store {
  c10::intrusive_ptr<c10d::TCPStore> store;
};

struct mtl_group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

namespace {

// Waits for every work item in order and rethrows the first failure, naming the item. Each
// wait is bounded: the backend's own timeout ends a stuck collective, and the wait gives it as
// long again before reporting the collective as timed out itself.
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>> &works,
              std::chrono::milliseconds timeout) {
  std::exception_ptr first;
  size_t first_index = 0;
  for (size_t i = 0; i < works.size(); ++i) {
    try {
      works[i]->wait(timeout * 2);
    } catch (...) {
      if (!first) {
        first = std::current_exception();
        first_index = i;
      }
    }
  }
  if (!first) return;
  std::string detail;
  try {
    std::rethrow_exception(first);
  } catch (const c10::Error &e) {
    detail = e.what_without_backtrace();
  } catch (const std::exception &e) {
    detail = e.what();
  }
  TORCH_CHECK(false, "tensor ", first_index + 1, " of ", works.size(), ": ", detail);
}

}  // namespace

extern "C" {

int mtl_store_serve(uint16_t port, int64_t world, int64_t timeout_ms, mtl_store **out,
                    uint16_t *bound_port, char *error, size_t error_len) {
  return guarded("TCPStore server", error, error_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = true;
    opts.numWorkers = static_cast<size_t>(world);
    // An agent's store serves workers that connect whenever they start; nothing to wait for.
    opts.waitWorkers = false;
    opts.multiTenant = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    // The server listens on every interface; the host is only where its own client connects.
    auto store = c10::make_intrusive<c10d::TCPStore>("127.0.0.1", opts);
    *bound_port = store->getPort();
    *out = new mtl_store{std::move(store)};
  });
}

void mtl_store_free(mtl_store *store) { delete store; }

int mtl_group_new(const char *host, uint16_t port, int host_store, const char *prefix, int rank,
                  int world, int64_t timeout_ms, int backend, int device_index,
                  mtl_group **out, char *error, size_t error_len) {
  auto timeout = std::chrono::milliseconds(timeout_ms);
  c10::intrusive_ptr<c10d::Store> store;
  int rc = guarded("rendezvous", error, error_len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = host_store != 0;
    opts.numWorkers = static_cast<size_t>(world);
    // As torch: every rank counts itself in (a client increments the store's count of
    // workers), and the host waits for all of them.
    opts.waitWorkers = true;
    opts.multiTenant = true;
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
  });
  if (rc != kOk) return rc;
  c10::intrusive_ptr<c10d::Backend> pg;
  rc = guarded(backend == MTL_BACKEND_NCCL ? "ProcessGroupNCCL" : "ProcessGroupGloo", error,
               error_len, [&] {
                 if (backend == MTL_BACKEND_NCCL) {
#ifdef MTL_WITH_NCCL
                   pg = mtl_make_nccl(c10::make_intrusive<c10d::PrefixStore>("nccl", store),
                                      rank, world, timeout, device_index);
#else
                   (void)device_index;
                   TORCH_CHECK(false,
                               "this mtl-trainer was built without CUDA (build with "
                               "MTL_LINK_CUDA=1 for NCCL)");
#endif
                 } else {
                   auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
                   pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
                       c10::make_intrusive<c10d::PrefixStore>("gloo", store), rank, world,
                       options);
                 }
               });
  if (rc != kOk) return rc;
  *out = new mtl_group{std::move(store), std::move(pg), timeout};
  return kOk;
}

int mtl_group_allreduce(mtl_group *group, const at::Tensor *const *tensors, size_t n, int op,
                        char *error, size_t error_len) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  int rc = guarded("", error, error_len, [&] {
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = group->timeout;
    works.reserve(n);
    // One collective per tensor, all in flight at once, in the caller's order (the same on
    // every rank): a tensor list would be read as one tensor per device instead.
    for (auto &t : collect(tensors, n)) {
      std::vector<at::Tensor> one{t};
      works.push_back(group->backend->allreduce(one, opts));
    }
  });
  if (rc != kOk) return kInvalid;
  return guarded("", error, error_len, [&] { wait_all(works, group->timeout); });
}

int mtl_group_broadcast(mtl_group *group, const at::Tensor *const *tensors, size_t n, int root,
                        char *error, size_t error_len) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  int rc = guarded("", error, error_len, [&] {
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = group->timeout;
    works.reserve(n);
    for (auto &t : collect(tensors, n)) {
      std::vector<at::Tensor> one{t};
      works.push_back(group->backend->broadcast(one, opts));
    }
  });
  if (rc != kOk) return kInvalid;
  return guarded("", error, error_len, [&] { wait_all(works, group->timeout); });
}

int mtl_group_barrier(mtl_group *group, char *error, size_t error_len) {
  return guarded("", error, error_len, [&] {
    c10d::BarrierOptions opts;
    opts.timeout = group->timeout;
    auto work = group->backend->barrier(opts);
    work->wait(group->timeout * 2);
  });
}

int mtl_group_set_timeout(mtl_group *group, int64_t timeout_ms, char *error,
                          size_t error_len) {
  return guarded("set timeout", error, error_len, [&] {
    group->timeout = std::chrono::milliseconds(timeout_ms);
    group->backend->setTimeout(group->timeout);
  });
}

int mtl_group_store_set(mtl_group *group, const char *key, const uint8_t *value, size_t len,
                        char *error, size_t error_len) {
  return guarded("store set", error, error_len, [&] {
    group->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
  });
}

int mtl_group_store_wait(mtl_group *group, const char *key, int64_t timeout_ms, char *error,
                         size_t error_len) {
  return guarded("store wait", error, error_len, [&] {
    group->store->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
  });
}

void mtl_group_free(mtl_group *group, int leak_backend) {
  if (group == nullptr) return;
  try {
    if (leak_backend != 0) {
      // After a failed collective a backend may still have work queued against a lost peer,
      // and its destructor would wait for that work. The process is on its way out: keep the
      // backend alive (one reference never dropped) and free only our own handle.
      c10::intrusive_ptr<c10d::Backend> keep = group->backend;
      (void)keep.release();
    } else {
      group->backend->shutdown();
    }
    delete group;
  } catch (...) {
    // Freeing must not throw across the boundary; what is left is reclaimed at exit.
  }
}

int mtl_set_grad(const at::Tensor *param, const at::Tensor *grad, char *error,
                 size_t error_len) {
  return guarded("set grad", error, error_len, [&] {
    at::Tensor p = *param;
    if (grad == nullptr) {
      p.mutable_grad() = at::Tensor();
    } else {
      p.mutable_grad() = *grad;
    }
  });
}

int mtl_dist_has_nccl(void) {
#ifdef MTL_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

}  // extern "C"
