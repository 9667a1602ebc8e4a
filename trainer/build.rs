//! Embeds an rpath to the libtorch library directory so `mtl-trainer` runs without
//! LD_LIBRARY_PATH, and on request links libtorch_cuda even though no symbol of it is used
//! directly (otherwise `--as-needed` drops it and CUDA goes unseen).

fn main() {
    println!("cargo:rerun-if-env-changed=MTL_LINK_CUDA");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    if std::env::var("MTL_LINK_CUDA").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
