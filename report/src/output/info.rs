//! `urec info`: what a recording holds, without analysing it: header, probes, processes,
//! binaries with build ids, event and lost counts, damage, and bytes per section.
//!
//! It reads only the metadata chunks; event chunks are checked (CRC) and counted from their
//! frames, and the per-probe event counts come from the footer. Only a file without a footer
//! (a recorder that was killed) costs a full pass over the events.
//!
//! A damaged file (truncated, or with chunks skipped) is still described, and the damage is
//! returned beside the text ([`Description::damage`]), as `report` and `script` read the same
//! file: what still reads is a recording. An error is for a file of which nothing can be read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use urec_format::{
    plural, EventKind, LostSource, ProbeKind, ProcessChange, Reader, Record, SectionStats,
    StackMode,
};

use crate::Error;

/// What [`describe`] says of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// The description, lines ending in newlines (names from the file not yet escaped: print
    /// it through [`urec_format::Printable`]).
    pub text: String,
    /// What is wrong with the file, if anything (truncation, skipped chunks).
    pub damage: Option<String>,
}

#[derive(Default)]
struct ProbeCounts {
    entries: u64,
    returns: u64,
}

/// What the metadata chunks say, gathered in one pass (the events are not read).
#[derive(Default)]
struct Contents {
    /// By id: a repeated probe record (no writer makes one) is one probe, not a row per copy.
    probes: BTreeMap<u32, urec_format::Probe>,
    processes: Vec<urec_format::Process>,
    execs: BTreeMap<u32, Vec<String>>,
    exits: BTreeSet<u32>,
    binaries: BTreeMap<String, BTreeSet<String>>,
    mappings: u64,
    stacks: u64,
    /// Stacks with Python frames, and the Python functions (PyCode records) they name.
    python_stacks: u64,
    py_codes: u64,
    lost: BTreeMap<LostSource, u64>,
    lost_by_probe: BTreeMap<u32, u64>,
    filtered_by_probe: BTreeMap<u32, u64>,
    /// The last in-kernel snapshot of each probe (snapshots are cumulative): calls, sampled.
    kernel_calls: BTreeMap<u32, (u64, u64)>,
    finish: Option<urec_format::Finish>,
    /// The symbols section: named addresses (and those with a source line) per binary.
    symbols: BTreeMap<(String, String), (u64, u64)>,
}

/// The description of the recording at `path`, and what is wrong with it, if anything.
pub fn describe(path: &Path) -> Result<Description, Error> {
    let mut reader = Reader::open(path).map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |source| Error::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let mut c = read_metadata(&mut reader).map_err(corrupt)?;
    let probes: Vec<_> = std::mem::take(&mut c.probes).into_values().collect();
    for p in &probes {
        let id = p
            .build_id
            .as_ref()
            .map(|b| b.to_string())
            .unwrap_or_default();
        c.binaries.entry(p.binary.clone()).or_default().insert(id);
    }
    let status = reader.status().clone();
    let (counts, counted_from_footer) = event_counts(&mut reader).map_err(corrupt)?;
    let events: u64 = counts.values().fold(0u64, |t, c| {
        t.saturating_add(c.entries).saturating_add(c.returns)
    });

    let mut s = String::new();
    write_summary(
        &mut s,
        path,
        &reader,
        &c,
        &status,
        &counts,
        counted_from_footer,
    );
    write_probes(&mut s, &probes, &c, &counts);
    write_processes(&mut s, &c);
    write_binaries(&mut s, &c, &status);
    write_sections(&mut s, &status, events);
    Ok(Description {
        text: s,
        damage: damage(&status),
    })
}

/// One pass over the metadata chunks.
fn read_metadata(reader: &mut Reader) -> Result<Contents, urec_format::FormatError> {
    let mut c = Contents::default();
    let mut last_process = std::collections::HashMap::new();
    for record in reader.metadata() {
        match record? {
            Record::Probe(p) => {
                c.probes.insert(p.id, p);
            }
            Record::Process(p) => {
                // A record repeating the last one of its pid describes nothing new (no writer
                // makes one); listing each copy would cost a row apiece.
                if last_process.get(&p.pid) != Some(&p) {
                    last_process.insert(p.pid, p.clone());
                    c.processes.push(p);
                }
            }
            Record::ProcessEvent(e) => match e.change {
                ProcessChange::Exec { exe, .. } => c.execs.entry(e.pid).or_default().push(exe),
                ProcessChange::Exit => {
                    c.exits.insert(e.pid);
                }
                ProcessChange::Comm(_) => {}
            },
            Record::Mapping(m) => {
                c.mappings += 1;
                let id = m.build_id.map(|b| b.to_string()).unwrap_or_default();
                c.binaries.entry(m.path).or_default().insert(id);
            }
            Record::Stack(s) => {
                c.stacks += 1;
                c.python_stacks += u64::from(!s.python.is_empty());
            }
            Record::PyCode(_) => c.py_codes += 1,
            Record::Lost(l) => {
                let n = c.lost.entry(l.source).or_default();
                *n = n.saturating_add(l.count);
                if let Some(p) = l.probe {
                    let n = c.lost_by_probe.entry(p).or_default();
                    *n = n.saturating_add(l.count);
                }
            }
            Record::Filtered(f) => {
                let n = c.filtered_by_probe.entry(f.probe).or_default();
                *n = n.saturating_add(f.count);
            }
            Record::Aggregate(a) => {
                c.kernel_calls.insert(a.probe, (a.calls, a.sampled));
            }
            Record::Finish(f) => c.finish = Some(f),
            Record::Symbols(s) => {
                let id = s.build_id.map(|b| b.to_string()).unwrap_or_default();
                let e = c.symbols.entry((s.path, id)).or_default();
                e.0 = e.0.saturating_add(s.entries.len() as u64);
                let lines = s
                    .entries
                    .iter()
                    .filter(|e| e.frames.first().is_some_and(|f| f.line.is_some()))
                    .count();
                e.1 = e.1.saturating_add(lines as u64);
            }
            Record::Event(_) => {}
        }
    }
    Ok(c)
}

/// Events per probe: from the footer, else counted (true: from the footer).
fn event_counts(
    reader: &mut Reader,
) -> Result<(BTreeMap<u32, ProbeCounts>, bool), urec_format::FormatError> {
    let mut counts: BTreeMap<u32, ProbeCounts> = BTreeMap::new();
    if let Some(footer) = reader.footer() {
        for c in &footer.event_counts {
            let e = counts.entry(c.probe).or_default();
            match c.kind {
                EventKind::Entry => e.entries = e.entries.saturating_add(c.count),
                EventKind::Return => e.returns = e.returns.saturating_add(c.count),
            }
        }
        return Ok((counts, true));
    }
    for record in reader.records() {
        if let Record::Event(ev) = record? {
            let e = counts.entry(ev.probe).or_default();
            match ev.kind {
                EventKind::Entry => e.entries += 1,
                EventKind::Return => e.returns += 1,
            }
        }
    }
    Ok((counts, false))
}

/// The header lines: file, host, command, duration, events, losses, state.
fn write_summary(
    w: &mut String,
    path: &Path,
    reader: &Reader,
    c: &Contents,
    status: &urec_format::ReadStatus,
    counts: &BTreeMap<u32, ProbeCounts>,
    counted_from_footer: bool,
) {
    let events: u64 = counts.values().fold(0u64, |t, c| {
        t.saturating_add(c.entries).saturating_add(c.returns)
    });
    let h = reader.header();
    let (major, minor) = reader.version();
    // Writing to a String cannot fail.
    let _ = writeln!(
        w,
        "file:       {} ({}, format {major}.{minor})",
        path.display(),
        plural(reader.len(), "byte", "bytes")
    );
    let _ = writeln!(w, "started:    {} UTC", utc(h.start_unix_ns));
    let _ = writeln!(w, "host:       {} (Linux {}, {})", h.host, h.kernel, h.arch);
    let _ = writeln!(w, "command:    {}", urec_format::shell_words(&h.command));
    match &h.workload {
        Some(argv) => {
            let status = c
                .finish
                .as_ref()
                .and_then(|f| f.workload_status)
                .map(|s| format!(" (exit status {s})"))
                .unwrap_or_default();
            let _ = writeln!(w, "workload:   {}{status}", urec_format::shell_words(argv));
        }
        None => {
            let _ = writeln!(w, "workload:   -");
        }
    }
    match &c.finish {
        Some(f) => {
            let _ = writeln!(
                w,
                "duration:   {}",
                duration(f.stop_ns.saturating_sub(f.attach_ns))
            );
        }
        None => {
            let _ = writeln!(w, "duration:   unknown (no finish record)");
        }
    }
    let entries: u64 = counts
        .values()
        .fold(0u64, |t, c| t.saturating_add(c.entries));
    let _ = writeln!(
        w,
        "events:     {events} ({}, {}{})",
        plural(entries, "entry", "entries"),
        plural(events - entries, "return", "returns"),
        if counted_from_footer {
            ""
        } else {
            "; counted, no footer"
        }
    );
    let total_lost: u64 = c.lost.values().fold(0u64, |t, &n| t.saturating_add(n));
    let _ = writeln!(
        w,
        "lost:       {total_lost} (ring {}, sideband {}, unwind {})",
        c.lost.get(&LostSource::Ring).unwrap_or(&0),
        c.lost.get(&LostSource::Sideband).unwrap_or(&0),
        c.lost.get(&LostSource::Unwind).unwrap_or(&0)
    );
    let _ = writeln!(w, "stacks:     {}", c.stacks);
    if c.py_codes > 0 || c.python_stacks > 0 {
        let _ = writeln!(
            w,
            "python:     {}, {} with Python frames",
            plural(c.py_codes, "function", "functions"),
            plural(c.python_stacks, "stack", "stacks")
        );
    }
    let _ = writeln!(w, "mappings:   {}", c.mappings);
    let state = if status.truncated {
        "TRUNCATED (the file ends before its footer; read up to its last complete chunk)"
    } else {
        "complete"
    };
    let _ = writeln!(w, "state:      {state}");
    let _ = writeln!(
        w,
        "corrupt:    {} skipped",
        plural(status.corrupt_chunks, "chunk", "chunks")
    );
}

/// The probes' table, where each was attached, and its kernel counts where events fall short.
fn write_probes(
    w: &mut String,
    probes: &[urec_format::Probe],
    c: &Contents,
    counts: &BTreeMap<u32, ProbeCounts>,
) {
    let _ = writeln!(w, "\nprobes ({}):", probes.len());
    let rows: Vec<Vec<String>> = probes
        .iter()
        .map(|p| {
            let n = counts.get(&p.id);
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.binary.clone(),
                if p.symbol.is_empty() {
                    "-".into()
                } else {
                    p.symbol.clone()
                },
                format!("{:#x}", p.offset.0),
                match p.kind {
                    ProbeKind::EntryReturn => "entry+return",
                    ProbeKind::Entry => "entry",
                    ProbeKind::Return => "return",
                }
                .into(),
                match p.stack_mode {
                    StackMode::None => "none",
                    StackMode::FramePointer => "fp",
                    StackMode::Dwarf => "dwarf",
                }
                .into(),
                n.map_or(0, |n| n.entries).to_string(),
                n.map_or(0, |n| n.returns).to_string(),
                c.lost_by_probe.get(&p.id).unwrap_or(&0).to_string(),
                p.args
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    table(
        w,
        &[
            "id", "name", "binary", "symbol", "offset", "kind", "stack", "entries", "returns",
            "lost", "args",
        ],
        &rows,
    );
    // Where each probe was attached (1.7): its start, or a moved entry site.
    for p in probes {
        if let Some(site) = &p.site {
            let at = match site.offset.0.checked_sub(p.offset.0) {
                Some(0) => "at its start".to_string(),
                Some(d) => format!("at its start +{d:#x}"),
                None => "before its start".to_string(),
            };
            let _ = writeln!(
                w,
                "probe {}: attached at file offset {:#x} ({at}), {}",
                p.id,
                site.offset.0,
                site.path.name()
            );
        }
    }

    // Where the events fall short of the calls (lost or sampled), say how many calls there were.
    for p in probes {
        let recorded = counts.get(&p.id).map_or(0, |c| match p.kind {
            ProbeKind::Return => c.returns,
            _ => c.entries,
        });
        if let Some(&(calls, sampled)) = c.kernel_calls.get(&p.id).filter(|c| c.0 != recorded) {
            let sampled = if sampled > 0 {
                format!(
                    " ({} sampled out under ring pressure)",
                    plural(sampled, "call", "calls")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                w,
                "probe {}: {} counted in the kernel, {recorded} recorded{sampled}",
                p.id,
                plural(calls, "call", "calls")
            );
        }
    }
    for (id, n) in &c.filtered_by_probe {
        let _ = writeln!(
            w,
            "probe {id}: {} its predicate rejected (not recorded, not lost)",
            plural(*n, "call", "calls")
        );
    }
}

/// The processes' table.
fn write_processes(w: &mut String, c: &Contents) {
    let _ = writeln!(w, "\nprocesses ({}):", c.processes.len());
    let rows: Vec<Vec<String>> = c
        .processes
        .iter()
        .map(|p| {
            let mut exe = p.exe.clone();
            for e in c.execs.get(&p.pid).into_iter().flatten() {
                exe.push_str(" -> ");
                exe.push_str(e);
            }
            let or_dash = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            vec![
                p.pid.to_string(),
                p.ppid.to_string(),
                p.comm.clone(),
                if c.exits.contains(&p.pid) {
                    "exited"
                } else {
                    "-"
                }
                .into(),
                or_dash(p.mnt_ns),
                or_dash(p.pid_ns),
                p.cgroup.clone().unwrap_or_else(|| "-".into()),
                exe,
            ]
        })
        .collect();
    table(
        w,
        &[
            "pid", "ppid", "comm", "exit", "mnt ns", "pid ns", "cgroup", "exe",
        ],
        &rows,
    );
}

/// The binaries with their build ids, and the symbols section.
fn write_binaries(w: &mut String, c: &Contents, status: &urec_format::ReadStatus) {
    let _ = writeln!(w, "\nbinaries ({}):", c.binaries.len());
    let rows: Vec<Vec<String>> = c
        .binaries
        .iter()
        .flat_map(|(path, ids)| {
            ids.iter().map(move |id| {
                let id = if id.is_empty() {
                    "-".into()
                } else {
                    id.clone()
                };
                vec![id, path.clone()]
            })
        })
        .collect();
    table(w, &["build id", "path"], &rows);

    if c.symbols.is_empty() {
        let _ = writeln!(
            w,
            "\nsymbols:    none (recorded with --no-symbols, or by a urec before 1.1); \
             `urec archive` adds them"
        );
    } else {
        let named: u64 = c.symbols.values().map(|v| v.0).sum();
        let lines: u64 = c.symbols.values().map(|v| v.1).sum();
        let _ = writeln!(
            w,
            "\nsymbols:    {} named in {} ({} with file:line), {}",
            plural(named, "address", "addresses"),
            plural(c.symbols.len() as u64, "binary", "binaries"),
            lines,
            plural(status.sections.symbols.stored_bytes, "byte", "bytes")
        );
        let rows: Vec<Vec<String>> = c
            .symbols
            .iter()
            .map(|((path, id), (n, l))| {
                let id = if id.is_empty() { "-" } else { id.as_str() };
                vec![n.to_string(), l.to_string(), id.to_string(), path.clone()]
            })
            .collect();
        table(w, &["named", "lines", "build id", "path"], &rows);
    }
}

/// Bytes per section, and the reader's warnings.
fn write_sections(w: &mut String, status: &urec_format::ReadStatus, events: u64) {
    let _ = writeln!(w, "\nsections:");
    let sec = &status.sections;
    let mut rows = Vec::new();
    let mut total = SectionStats::default();
    for (name, st) in [
        ("header", &sec.header),
        ("metadata", &sec.metadata),
        ("events", &sec.events),
        ("footer", &sec.footer),
        ("symbols", &sec.symbols),
    ] {
        total.chunks += st.chunks;
        total.stored_bytes += st.stored_bytes;
        total.raw_bytes += st.raw_bytes;
        total.records += st.records;
        rows.push(section_row(name, st, events));
    }
    rows.push(section_row("total", &total, events));
    table(
        w,
        &[
            "section",
            "chunks",
            "records",
            "bytes",
            "raw bytes",
            "ratio",
            "bytes/event",
        ],
        &rows,
    );
    if !status.warnings.is_empty() {
        let _ = writeln!(w, "\nwarnings:");
        for warning in &status.warnings {
            let _ = writeln!(w, "  {warning}");
        }
    }
}

/// What is wrong with the file, if anything.
fn damage(status: &urec_format::ReadStatus) -> Option<String> {
    let mut damage = Vec::new();
    if status.truncated {
        damage.push("the recording is truncated (the recorder did not finish it)".to_string());
    }
    if status.corrupt_chunks > 0 {
        damage.push(format!(
            "{} skipped",
            plural(
                status.corrupt_chunks,
                "damaged chunk was",
                "damaged chunks were"
            )
        ));
    }
    (!damage.is_empty()).then(|| damage.join("; "))
}

fn section_row(name: &str, s: &SectionStats, events: u64) -> Vec<String> {
    let ratio = if s.stored_bytes > 0 {
        format!("{:.2}", s.raw_bytes as f64 / s.stored_bytes as f64)
    } else {
        "-".into()
    };
    let per_event = if events > 0 && (name == "events" || name == "total") {
        format!("{:.2}", s.stored_bytes as f64 / events as f64)
    } else {
        "-".into()
    };
    vec![
        name.into(),
        s.chunks.to_string(),
        s.records.to_string(),
        s.stored_bytes.to_string(),
        s.raw_bytes.to_string(),
        ratio,
        per_event,
    ]
}

/// Left-aligned columns, two spaces apart, indented by two; numbers are not special-cased
/// so that the output stays simple to parse with `awk`.
fn table(w: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |w: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, cell) in cells.enumerate() {
            // Padded by hand: `{:<width$}` panics on a width above 65,535, and a file can
            // hold a name that long.
            l.push_str("  ");
            l.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            l.extend(std::iter::repeat_n(' ', pad));
        }
        let _ = writeln!(w, "{}", l.trim_end());
    };
    line(w, &mut header.iter().copied());
    for row in rows {
        line(w, &mut row.iter().map(String::as_str));
    }
}

fn duration(ns: u64) -> String {
    format!("{}.{:09} s", ns / 1_000_000_000, ns % 1_000_000_000)
}

/// `YYYY-MM-DD HH:MM:SS.mmm` for ns since the Unix epoch (civil-from-days, proleptic
/// Gregorian), so that no date crate is needed for one line.
fn utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let millis = unix_ns % 1_000_000_000 / 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_700_000_000_123_000_000), "2023-11-14 22:13:20.123");
        assert_eq!(utc(951_782_400_000_000_000), "2000-02-29 00:00:00.000");
    }
}
