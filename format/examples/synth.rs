//! Writes a synthetic recording (the benchmark workload of `urec_format::synth`) to a file,
//! for benchmarks of `urec report` and friends:
//!
//! ```text
//! cargo run --release -p urec-format --example synth -- out.urec 10000000 [BINARY...]
//! ```
//!
//! Its stacks are addresses inside the executable segments of real binaries of this machine
//! (default: `/usr/bin/bash`, libc and libtinfo), mapped by one synthetic process, so that a
//! report can rebase and symbolize them. A binary that is missing or not a 64-bit
//! little-endian ELF file is replaced by a placeholder path with a warning.

use std::process::ExitCode;

use urec_format::synth::{Synth, SynthBinary, SynthConfig};
use urec_format::{BuildId, Writer};

const DEFAULT_BINARIES: [&str; 3] = [
    "/usr/bin/bash",
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libtinfo.so.6",
];

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The first executable PT_LOAD segment and the GNU build id of a 64-bit little-endian ELF
/// file: just enough ELF for a plausible mapping.
fn describe(path: &str) -> Option<SynthBinary> {
    let canonical = std::fs::canonicalize(path).ok()?;
    let b = std::fs::read(&canonical).ok()?;
    if b.get(0..4)? != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let phoff = usize::try_from(u64_at(&b, 0x20)?).ok()?;
    let phentsize = usize::from(u16_at(&b, 0x36)?);
    let phnum = usize::from(u16_at(&b, 0x38)?);
    let mut exec = None;
    let mut build_id = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let (p_type, p_flags) = (u32_at(&b, ph)?, u32_at(&b, ph + 4)?);
        let (offset, vaddr, filesz) = (
            u64_at(&b, ph + 8)?,
            u64_at(&b, ph + 16)?,
            u64_at(&b, ph + 32)?,
        );
        if p_type == 1 && p_flags & 1 != 0 && exec.is_none() {
            let skew = offset % 4096;
            exec = Some((offset - skew, vaddr - skew, filesz + skew));
        }
        if p_type == 4 && build_id.is_none() {
            // Notes: namesz, descsz, type, name and desc each padded to 4 bytes.
            let (mut at, end) = (
                usize::try_from(offset).ok()?,
                usize::try_from(offset + filesz).ok()?,
            );
            while at + 12 <= end {
                let (namesz, descsz, ty) = (
                    u32_at(&b, at)? as usize,
                    u32_at(&b, at + 4)? as usize,
                    u32_at(&b, at + 8)?,
                );
                let name = at + 12;
                let desc = name + namesz.div_ceil(4) * 4;
                if ty == 3 && b.get(name..name + namesz)? == b"GNU\0" {
                    build_id = Some(BuildId(b.get(desc..desc + descsz)?.to_vec()));
                }
                at = desc + descsz.div_ceil(4) * 4;
            }
        }
    }
    let (exec_offset, exec_vaddr, exec_len) = exec?;
    Some(SynthBinary {
        path: canonical.to_string_lossy().into_owned(),
        build_id,
        exec_offset,
        exec_len,
        exec_vaddr,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(Ok(events))) = (
        args.first(),
        args.get(1).map(|n| n.replace('_', "").parse::<u64>()),
    ) else {
        eprintln!("usage: synth OUT.urec EVENTS [BINARY...]");
        return ExitCode::from(2);
    };
    let paths: Vec<&str> = if args.len() > 2 {
        args[2..].iter().map(String::as_str).collect()
    } else {
        DEFAULT_BINARIES.to_vec()
    };
    let mut binaries = Vec::new();
    for p in paths {
        match describe(p) {
            Some(b) => binaries.push(b),
            None => eprintln!(
                "synth: warning: {p} is not a readable 64-bit ELF file; using a placeholder"
            ),
        }
    }
    let mut synth = Synth::new(SynthConfig {
        binaries,
        ..SynthConfig::default()
    });
    let result = (|| -> Result<u64, urec_format::FormatError> {
        let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
        let mut w = Writer::new(file, &synth.header())?;
        synth.write_all(&mut w, events)?;
        w.finish()?;
        Ok(std::fs::metadata(out)?.len())
    })();
    match result {
        Ok(bytes) => {
            eprintln!("synth: wrote {events} events to {out} ({bytes} bytes)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("synth: error: {out}: {e}");
            ExitCode::from(1)
        }
    }
}
