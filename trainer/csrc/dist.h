// Constants shared by dist.cpp and dist_nccl.cpp, and by src/distributed/ffi.rs on the Rust side.
#pragma once

#define MTL_REDUCE_SUM 0
#define MTL_REDUCE_MAX 1
#define MTL_REDUCE_MIN 2

#define MTL_BACKEND_GLOO 0
#define MTL_BACKEND_NCCL 1
