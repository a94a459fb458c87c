//! Compiles `src/urec.bpf.c` with clang into a BPF object and generates its libbpf-rs skeleton.
//!
//! The kernel type definitions come from a vendored `vmlinux/x86/vmlinux.h` (generated once with
//! `bpftool btf dump file /sys/kernel/btf/vmlinux format c`): the build then needs neither bpftool
//! nor the build host's kernel BTF, and CO-RE relocations make the object portable across kernels.

use std::env;
use std::ffi::OsStr;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let vmlinux = manifest.join("vmlinux").join("x86");
    let src = manifest.join("src").join("urec.bpf.c");
    if let Err(err) = SkeletonBuilder::new()
        .source(&src)
        .clang_args([
            OsStr::new("-I"),
            vmlinux.as_os_str(),
            OsStr::new("-Wall"),
            OsStr::new("-Wno-unused-function"),
        ])
        .build_and_generate(out_dir.join("urec.skel.rs"))
    {
        // A build script reports failure by panicking; show the whole clang error chain.
        panic!("building the BPF skeleton from {}: {err:#}", src.display());
    }
    println!("cargo:rerun-if-changed=src/urec.bpf.c");
    println!("cargo:rerun-if-changed=src/urec.h");
    println!("cargo:rerun-if-changed=src/unwind.bpf.h");
    println!("cargo:rerun-if-changed=vmlinux/x86/vmlinux.h");
}
