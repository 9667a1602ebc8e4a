//! Embeds an rpath to the libtorch library directory so `mtl-trainer` runs without
//! LD_LIBRARY_PATH, compiles `csrc/` against the same libtorch's headers (`aten.cpp`, the ATen
//! entry points tch lacks, and c10d's data-parallel layer: `dist.cpp`, plus `dist_nccl.cpp` in CUDA builds), and
//! on request links libtorch_cuda even though no symbol of it is used directly (otherwise
//! `--as-needed` drops it and CUDA goes unseen).

use std::path::{Path, PathBuf};

fn main() {
    for var in [
        "MTL_LINK_CUDA",
        "LIBTORCH_CXX11_ABI",
        "MTL_GLOO_INCLUDE",
        "MTL_CUDA_INCLUDE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    for file in [
        "csrc/aten.cpp",
        "csrc/dist.cpp",
        "csrc/dist.h",
        "csrc/dist_nccl.cpp",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }
    // torch-sys (links = "tch") says where libtorch's libraries are: <libtorch>/lib, with the
    // headers in <libtorch>/include, in the pip wheel and the libtorch archive alike.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys reports the libtorch library directory");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = PathBuf::from(lib);
    let include = lib
        .parent()
        .map(|root| root.join("include"))
        .expect("libtorch's lib directory has a parent");
    let cuda = std::env::var("MTL_LINK_CUDA").is_ok_and(|v| v == "1");

    libtorch_build(&include)
        .file("csrc/aten.cpp")
        .compile("mtl_aten");

    let mut dist = libtorch_build(&include);
    dist.define("USE_C10D_GLOO", None);
    if let Some(dir) = gloo_include() {
        dist.include(dir);
    }
    if cuda {
        dist.define("MTL_WITH_NCCL", None);
    }
    dist.file("csrc/dist.cpp").compile("mtl_dist");

    if cuda {
        let mut nccl = libtorch_build(&include);
        nccl.define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        for dir in cuda_includes(&lib) {
            nccl.include(dir);
        }
        nccl.file("csrc/dist_nccl.cpp").compile("mtl_dist_nccl");
        // c10::cuda (device count, current device), used by dist_nccl.cpp.
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// A C++ build against libtorch's headers, with the C++ ABI torch-sys builds its own wrapper
/// with (libtorch 2.x: the new ABI).
fn libtorch_build(include: &Path) -> cc::Build {
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++17")
        .include(include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false);
    build
}

/// Where Gloo's headers are: `MTL_GLOO_INCLUDE`, or the compiler's own search path (where
/// Debian's libgloo-dev puts them; `None` then, as no `-I` is needed). The torch wheel ships
/// c10d's ProcessGroupGloo.hpp but not the Gloo headers it includes.
fn gloo_include() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("MTL_GLOO_INCLUDE") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("gloo/context.h").is_file(),
            "MTL_GLOO_INCLUDE={} holds no gloo/context.h",
            dir.display()
        );
        return Some(dir);
    }
    let found = ["/usr/include", "/usr/local/include"]
        .iter()
        .any(|d| Path::new(d).join("gloo/context.h").is_file());
    assert!(
        found,
        "trainer/csrc/dist.cpp needs Gloo's C++ headers (gloo/context.h), which the torch wheel \
         does not ship: install Debian's libgloo-dev (`apt-get install libgloo-dev`, as `make \
         setup` does), or set MTL_GLOO_INCLUDE to a directory that holds gloo/"
    );
    None
}

/// The CUDA runtime, CCCL, cuBLAS, cuSPARSE, cuSOLVER and NCCL headers for `dist_nccl.cpp`: `MTL_CUDA_INCLUDE`
/// (colon-separated), or the nvidia-* wheels beside libtorch (`<libtorch>/lib/../../nvidia`,
/// the site-packages layout that the torch wheel's RPATH also assumes), or `$CUDA_HOME/include`.
fn cuda_includes(lib: &Path) -> Vec<PathBuf> {
    let dirs: Vec<PathBuf> = if let Ok(list) = std::env::var("MTL_CUDA_INCLUDE") {
        std::env::split_paths(&list).collect()
    } else {
        let nvidia = lib.join("../../nvidia");
        let wheels = [
            nvidia.join("cu13/include"),
            nvidia.join("cu13/include/cccl"),
            nvidia.join("nccl/include"),
        ];
        if wheels.iter().all(|d| d.is_dir()) {
            wheels.to_vec()
        } else {
            let home = std::env::var("CUDA_HOME").unwrap_or_else(|_| "/usr/local/cuda".into());
            vec![PathBuf::from(home).join("include")]
        }
    };
    for header in [
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
        "nccl.h",
        // ATen's CUDAContextLight.h, which c10d's NCCL headers include.
        "cublas_v2.h",
        "cublasLt.h",
        "cusparse.h",
        "cusolverDn.h",
    ] {
        assert!(
            dirs.iter().any(|d| d.join(header).exists()),
            "MTL_LINK_CUDA=1 builds trainer/csrc/dist_nccl.cpp, which needs {header}; not found \
             in {dirs:?}. Install the nvidia-cuda-runtime, nvidia-cuda-crt, nvidia-cuda-cccl, \
             nvidia-cublas, nvidia-cusparse, nvidia-cusolver and nvidia-nccl-cu13 wheels beside \
             torch (requirements.txt; torch depends on most of them), or set MTL_CUDA_INCLUDE"
        );
    }
    dirs
}
