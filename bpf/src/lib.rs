//! urec's BPF programs and the Rust view of the records they write to the ring buffer.
//!
//! `src/urec.bpf.c` holds one small fixed set of programs shared by every probe (probes are told
//! apart by the attach cookie, never compiled one program per probe); `build.rs` compiles it with
//! clang and libbpf-cargo into a skeleton ([`UrecSkelBuilder`]) embedded in the binary.
//! [`abi`] mirrors `src/urec.h`: the per-probe configuration and the ring-buffer record layout.

pub mod abi;

#[allow(
    unused,
    unused_imports,
    clippy::all,
    missing_docs,
    non_camel_case_types
)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/urec.skel.rs"));
}
pub use skel::*;

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    use libbpf_rs::skel::{OpenSkel, SkelBuilder};

    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Opens and loads the programs, with the in-kernel DWARF walk or without; false (with a
    /// message) when not root outside CI.
    fn load(kernel_dwarf: bool) -> bool {
        if !is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs root"
            );
            eprintln!("skipped: loading BPF programs needs root");
            return false;
        }
        let mut storage = MaybeUninit::uninit();
        let mut open = UrecSkelBuilder::default().open(&mut storage).unwrap();
        let cpus = libbpf_rs::num_possible_cpus().unwrap() as u32;
        open.maps.scratch.set_max_entries(cpus).unwrap();
        if kernel_dwarf {
            open.maps.rodata_data.as_deref_mut().unwrap().kernel_dwarf = 1;
        }
        let skel = open.load().unwrap();
        drop(skel);
        true
    }

    /// The verifier accepts every program (needs root; skipped otherwise unless CI=true).
    #[test]
    fn programs_load() {
        load(false);
    }

    /// With `-g kernel-dwarf` the in-kernel walk (unwind.bpf.h) is verified too (it is pruned
    /// as dead code otherwise). Needs root, as above.
    #[test]
    fn programs_load_with_the_kernel_dwarf_walk() {
        load(true);
    }
}
