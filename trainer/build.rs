//! Embeds an rpath to the libtorch library directory so `mtl-trainer` runs without
//! LD_LIBRARY_PATH, compiles `csrc/aten.cpp` against the same libtorch's headers, and
//! on request links libtorch_cuda even though no symbol of it is used directly (otherwise
//! `--as-needed` drops it and CUDA goes unseen).

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=MTL_LINK_CUDA");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=csrc/aten.cpp");
    // torch-sys (links = "tch") says where libtorch's libraries are: <libtorch>/lib, with the
    // headers in <libtorch>/include, in the pip wheel and the libtorch archive alike.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys reports the libtorch library directory");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let include = Path::new(&lib)
        .parent()
        .map(|root| root.join("include"))
        .expect("libtorch's lib directory has a parent");
    // The same C++ ABI as torch-sys builds its own wrapper with (libtorch 2.x: the new ABI).
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag_if_supported("-Wno-unused-parameter")
        .warnings(false)
        .file("csrc/aten.cpp")
        .compile("mtl_aten");
    if std::env::var("MTL_LINK_CUDA").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
