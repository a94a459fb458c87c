//! Whether the running kernel lets a uprobe program write the probed task's registers.
//!
//! Upstream (bpf-next, September 2025: "bpf: Allow uprobe program to change context
//! registers", and "uprobe: Do not emulate/sstep original instruction when ip is changed") a
//! uprobe program may write `pt_regs`, and when it moves `ip` the kernel neither emulates nor
//! single-steps the probed instruction. A program could then execute a single-stepped
//! instruction itself (`endbr64` is a no-op, `mov`/`lea`/`sub` are a register write and an
//! `ip` bump) and save the second trap. Linux 6.18 as built here refuses such a write when it
//! verifies the program ("invalid bpf_context access"), so urec does not build that: untested
//! code does not ship. It asks the verifier, so `record -v` can say when a kernel would allow
//! it.
//!
//! The question is a four-instruction program of type kprobe (what uprobe programs are) for
//! `uprobe.multi`, storing 0 into `ax` of its context: loaded and closed at once, never
//! attached.

use std::os::fd::{FromRawFd, OwnedFd};

/// What the verifier says about a uprobe program writing its registers: `Some(true)` when it
/// accepts one, `Some(false)` when it refuses it as a context access, None when the question
/// could not be asked (no privilege, no BPF).
pub fn uprobe_programs_may_write_registers() -> Option<bool> {
    // struct bpf_insn: code, dst | src << 4, off (i16), imm (i32).
    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = dst | (src << 4);
        b[2..4].copy_from_slice(&off.to_le_bytes());
        b[4..8].copy_from_slice(&imm.to_le_bytes());
        b
    }
    const AX: i16 = 10 * 8; // pt_regs.ax
    let prog: Vec<u8> = [
        insn(0xb7, 2, 0, 0, 0),  // r2 = 0
        insn(0x7b, 1, 2, AX, 0), // *(u64 *)(r1 + ax) = r2
        insn(0xb7, 0, 0, 0, 0),  // r0 = 0
        insn(0x95, 0, 0, 0, 0),  // exit
    ]
    .concat();
    let license = c"GPL";
    let mut log = vec![0u8; 4096];
    // union bpf_attr for BPF_PROG_LOAD, up to expected_attach_type.
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_KPROBE: u32 = 2;
    const BPF_TRACE_UPROBE_MULTI: u32 = 48;
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_KPROBE,
        insn_cnt: (prog.len() / 8) as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: BPF_TRACE_UPROBE_MULTI,
        ..Default::default()
    };
    // SAFETY: bpf(2) with a BPF_PROG_LOAD attribute whose pointers (program, license, log
    // buffer) outlive the call and whose size is the struct's.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoad,
            std::mem::size_of::<ProgLoad>() as u32,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this descriptor to us; it is ours to close.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        return Some(true);
    }
    let text = String::from_utf8_lossy(&log);
    text.contains("invalid bpf_context access").then_some(false)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verifier_answers_as_root() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // Linux 6.18 as built here refuses the write; a later kernel may accept it. Either
        // way the verifier must answer (None would mean the question is malformed).
        let answer = super::uprobe_programs_may_write_registers();
        assert!(answer.is_some(), "the verifier gave no answer");
    }
}
