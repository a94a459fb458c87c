//! `urec report` on 10 million synthetic events: wall time and peak RSS of the table and the
//! flamegraph, each measured in a fresh child process so that peak RSS is the report's alone.
//!
//! ```text
//! cargo bench -p urec-report --bench report            # 10M events
//! UREC_BENCH_EVENTS=1000000 cargo bench -p urec-report --bench report
//! ```
//!
//! The workload is `urec_format::synth` (Zipf over 4,096 stacks of 8–30 frames, 4 probes,
//! 8 threads, entry/return pairs with measured latency), its stacks placed in the executable
//! segments of real binaries of this machine (bash, libc, libm, libstdc++ when present) so
//! that rebasing and symbolization do real work. The recording is written to the temp dir
//! once and reused while its event count matches.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use object::{Object, ObjectSegment};
use urec_format::synth::{Synth, SynthBinary, SynthConfig};
use urec_format::{Writer, WriterOptions};
use urec_report::{analyze, ReportOptions, Weight};

const CANDIDATES: [&str; 5] = [
    "/usr/bin/bash",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/x86_64-linux-gnu/libm.so.6",
    "/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/usr/bin/python3",
];

fn exec_segment(path: &str) -> Option<SynthBinary> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let build_id = file
        .build_id()
        .ok()
        .flatten()
        .map(|b| urec_format::BuildId(b.to_vec()));
    for seg in file.segments() {
        if let object::SegmentFlags::Elf { p_flags, .. } = seg.flags() {
            if p_flags & object::elf::PF_X != object::elf::ProgramFlags(0) {
                let (off, len) = seg.file_range();
                return Some(SynthBinary {
                    path: std::fs::canonicalize(path)
                        .ok()?
                        .to_string_lossy()
                        .into_owned(),
                    build_id,
                    exec_offset: off & !0xfff,
                    exec_len: (len + (off & 0xfff)) & !0xf,
                    exec_vaddr: seg.address() & !0xfff,
                });
            }
        }
    }
    None
}

fn generate(path: &Path, events: u64) -> std::io::Result<()> {
    let binaries: Vec<SynthBinary> = CANDIDATES.iter().filter_map(|p| exec_segment(p)).collect();
    eprintln!(
        "generating {events} events over {} binaries: {:?}",
        binaries.len(),
        binaries.iter().map(|b| b.path.as_str()).collect::<Vec<_>>()
    );
    let mut synth = Synth::new(SynthConfig {
        binaries,
        ..SynthConfig::default()
    });
    let out = BufWriter::new(File::create(path)?);
    let mut w = Writer::with_options(out, &synth.header(), WriterOptions::default())
        .map_err(std::io::Error::other)?;
    synth
        .write_all(&mut w, events)
        .map_err(std::io::Error::other)?;
    w.finish().map_err(std::io::Error::other)?.flush()
}

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs one measurement in this (child) process and prints `wall_ms peak_rss_kb`.
fn child(mode: &str, file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let opts = ReportOptions {
        no_symbolize: mode.ends_with("-nosym"),
        ..ReportOptions::default()
    };
    let report = analyze(file, &opts)?;
    let analyzed = start.elapsed();
    let mut sink = std::io::sink();
    match mode.trim_end_matches("-nosym") {
        "table" => urec_report::output::table::write(&report, &mut sink)?,
        "flamegraph" => {
            let svg = file.with_extension("svg");
            let mut out = BufWriter::new(File::create(&svg)?);
            urec_report::output::flamegraph::write(&report, Weight::Calls, &mut out)?;
            out.flush()?;
        }
        other => return Err(format!("unknown mode {other}").into()),
    }
    println!(
        "{} {} {} {} {}",
        start.elapsed().as_millis(),
        analyzed.as_millis(),
        peak_rss_kb(),
        report.stacks.len(),
        report.functions.iter().map(|f| f.calls).sum::<u64>()
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1], Path::new(&args[i + 2]));
    }
    let events: u64 = std::env::var("UREC_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let file: PathBuf = std::env::temp_dir().join(format!("urec-report-bench-{events}.data"));
    if !file.exists() {
        let t = Instant::now();
        generate(&file, events)?;
        eprintln!("generated in {:.2}s", t.elapsed().as_secs_f64());
    }
    let size = std::fs::metadata(&file)?.len();
    println!(
        "recording: {} ({events} events, {:.1} MB, {:.2} bytes/event)",
        file.display(),
        size as f64 / 1e6,
        size as f64 / events as f64
    );
    println!(
        "{:<16} {:>9} {:>12} {:>13} {:>8} {:>10}",
        "mode", "wall", "aggregate", "peak RSS", "stacks", "calls"
    );
    for mode in ["table", "flamegraph", "table-nosym"] {
        let out = Command::new(std::env::current_exe()?)
            .args(["--child", mode])
            .arg(&file)
            .output()?;
        if !out.status.success() {
            return Err(format!("{mode} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<&str> = text.split_whitespace().collect();
        if v.len() < 5 {
            return Err(format!("{mode}: unexpected output {text:?}").into());
        }
        println!(
            "{mode:<16} {:>7}ms {:>10}ms {:>10} kB {:>8} {:>10}",
            v[0], v[1], v[2], v[3], v[4]
        );
    }
    Ok(())
}
