//! `urec script`: every event in time order, one line each, in `perf script`'s layout, with the
//! symbolized stack below it, so tools that read perf script output (inferno-collapse-perf,
//! stackcollapse-perf.pl) read this too:
//!
//! (stack lines begin with a tab)
//!
//! ```text
//! bash   1234/1234   [001] 12345.678901234: bash:readline: (55d5c1a0) prompt="$ "
//!         55d5c1a0 readline (/usr/bin/bash)
//!         55d5b9e3 main (/usr/bin/bash)
//!
//! bash   1234/1234   [001] 12345.912345678: bash:readline%return: (55d5c1a0) latency=233444444
//! ```
//!
//! An event the recorder kept as one call in N under ring pressure ends with `weight=N`.
//!
//! The comm is not padded, so the line starts with it (regex-based collapsers want that).
//! Caveat: inferno-collapse-perf 0.12 misreads an event line with any text after the event
//! name (jonhoo/inferno#308; perf's own uprobe lines `probe_x:f: (addr)` hit it too): it then
//! takes the following stack lines for event lines. Its stack-line parsing matches ours (the
//! tests check it on lines cut after the probe name); with inferno, prefer `urec report
//! --folded`, which writes the same stacks directly.
//!
//! # Ordering
//! A recording is only roughly in time order: events come from one ring buffer in commit order,
//! which can trail the timestamps taken at probe time by a little. Events are therefore held in
//! a min-heap and printed oldest first once the newest event read is [`REORDER_NS`] later (or
//! the held events pass [`REORDER_BYTES`], arguments included), which sorts any disorder
//! shorter than that window in bounded memory. An event later than that is printed when it is
//! read and counted in [`ScriptSummary::out_of_order`].
//!
//! # Filters
//! The report's filters apply (`--pid`, `--tid`, `--comm`, `--probe`, `--time`,
//! `--min/max-latency`). With latency filters a call can only be judged when it ends, so an
//! entry waits (per thread and probe, as the report pairs them) for its return, and a kept call
//! prints its entry and its return together, ordered by the return's time.
//!
//! Metadata (processes, mappings) is applied as it is read; rebasing asks for the mapping in
//! force at the event's time, so reordering does not change what an address means. A stack is
//! rendered once per (process incarnation, stack id) and reused, from a cache of at most
//! [`RENDERED_BYTES`] (emptied when full: a recording of many processes sharing few stacks
//! would otherwise keep one rendering per process).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use urec_format::{Avma, Event, EventKind, ProbeId, Record, StackId};

use crate::calls::paired::Entries;
use crate::calls::{began_ns, call_key, Calls, Verdict};
use crate::input::Ahead;
use crate::model::frames::{code_frames, probed_frames};
use crate::output::args::format_arg;
use crate::output::reorder::{Reorder, Timed};
use crate::python::{is_eval_frame, merge_python, PyCodes};
use crate::symbolize::{SymbolizeOptions, Symbolizer};
use crate::{Error, Filter};

/// How far behind the newest event read an event may arrive and still be printed in order.
/// The ring buffer's disorder is the time between a probe's timestamp and its commit:
/// microseconds, so a second is generous.
pub const REORDER_NS: u64 = crate::output::reorder::REORDER_NS;

/// Bytes of events held back for reordering. A recorded event with eight string arguments
/// takes about 2.5 KiB: at a million such events a second, the time window alone would hold
/// 2.5 GB; this bound shortens it instead (about 160,000 events of the usual 100 bytes).
pub const REORDER_BYTES: usize = crate::output::reorder::REORDER_BYTES;

/// Bytes of rendered stacks kept for reuse.
pub const RENDERED_BYTES: usize = 16 << 20;

/// Options of [`script`].
#[derive(Clone, Debug, Default)]
pub struct ScriptOptions {
    /// Where binaries and debug files are looked for.
    pub symbolize: SymbolizeOptions,
    /// Skip symbolization (frames show as `binary+0xOFF`).
    pub no_symbolize: bool,
    /// Which events and calls are printed (as `report` filters them).
    pub filter: Filter,
    /// Times in seconds since the attach (`--reltime`) rather than since boot.
    pub reltime: bool,
    /// The fields to print (`-F`); `None`: the default layout.
    pub fields: Option<Fields>,
}

/// `-F`: the parts of each line, as perf script names them. The event line holds comm, pid,
/// tid, cpu, time, event, args and latency (in that order, whatever order they are given in);
/// ip, sym and dso make up the stack lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fields {
    /// The process's command name.
    pub comm: bool,
    /// Process id.
    pub pid: bool,
    /// Thread id.
    pub tid: bool,
    /// CPU.
    pub cpu: bool,
    /// Timestamp.
    pub time: bool,
    /// The probe's name (`%return` added for returns).
    pub event: bool,
    /// Frame addresses.
    pub ip: bool,
    /// Frame names.
    pub sym: bool,
    /// Frame binaries.
    pub dso: bool,
    /// Fetched arguments.
    pub args: bool,
    /// `latency=NS` on returns.
    pub latency: bool,
}

impl std::str::FromStr for Fields {
    type Err = String;

    /// `comm,pid,tid,cpu,time,event,ip,sym,dso,args,latency`, any subset.
    fn from_str(text: &str) -> Result<Self, String> {
        let mut f = Fields::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let slot = match name {
                "comm" => &mut f.comm,
                "pid" => &mut f.pid,
                "tid" => &mut f.tid,
                "cpu" => &mut f.cpu,
                "time" => &mut f.time,
                "event" => &mut f.event,
                "ip" => &mut f.ip,
                "sym" => &mut f.sym,
                "dso" => &mut f.dso,
                "args" => &mut f.args,
                "latency" => &mut f.latency,
                other => {
                    return Err(format!(
                        "unknown field {other:?}; fields are comm, pid, tid, cpu, time, event, \
                         ip, sym, dso, args, latency"
                    ))
                }
            };
            *slot = true;
        }
        if f == Fields::default() {
            return Err("no fields given".into());
        }
        Ok(f)
    }
}

/// What [`script`] saw, for the caller to report on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptSummary {
    /// Events printed.
    pub events: u64,
    /// Events that arrived more than [`REORDER_NS`] late and were printed out of
    /// time order.
    pub out_of_order: u64,
    /// The file was truncated (read up to its last complete chunk).
    pub truncated: bool,
    /// Warnings (truncation, symbolization problems), each once.
    pub warnings: Vec<String>,
}

/// What is held for reordering: an event, or a call's entry and return printed together
/// (latency filters), placed at the (last) event's time. Its process incarnation and name are
/// looked up when it is printed, at its own time, with every record read by then.
struct Pending {
    event: Event,
    /// The call's entry, printed before `event` (boxed: the heap moves these around, and
    /// most have none).
    entry: Option<Box<Event>>,
}

impl Timed for Pending {
    fn time_ns(&self) -> u64 {
        self.event.time_ns
    }

    fn size(&self) -> usize {
        self.event.size() + self.entry.as_deref().map_or(0, Timed::size)
    }
}

/// Prints every event of the recording at `path` to `out`, in time order.
pub fn script(
    path: &Path,
    opts: &ScriptOptions,
    out: &mut dyn Write,
) -> Result<ScriptSummary, Error> {
    script_source(crate::input::Source::File(path), opts, out)
}

/// [`script`] of a recording held in memory.
pub fn script_bytes(
    bytes: Vec<u8>,
    opts: &ScriptOptions,
    out: &mut dyn Write,
) -> Result<ScriptSummary, Error> {
    script_source(
        crate::input::Source::Bytes(Path::new("(in memory)"), bytes),
        opts,
        out,
    )
}

fn script_source(
    source: crate::input::Source<'_>,
    opts: &ScriptOptions,
    out: &mut dyn Write,
) -> Result<ScriptSummary, Error> {
    let mut window = Reorder::new();
    let ahead = crate::input::ReadAhead {
        symbols: true,
        attach: opts.reltime || opts.filter.time.is_some(),
    };
    let (mut printer, status) = crate::input::read_ahead(
        source,
        ahead,
        |header, ahead| Printer::new(opts, header, ahead),
        |printer, record| {
            if let Record::Event(event) = record {
                printer
                    .calls
                    .spaces
                    .incarnations_mut()
                    .advance(event.time_ns);
                let Some((event, entry)) = printer.accept(event) else {
                    return Ok(());
                };
                let pending = Pending {
                    event,
                    entry: entry.map(Box::new),
                };
                window.push(pending, |p| printer.print(&p, out))?;
            } else {
                printer.metadata(record);
            }
            Ok(())
        },
    )?;
    window.finish(|p| printer.print(&p, out))?;
    printer.calls.check_probes()?;
    let mut warnings = status.warnings;
    warnings.extend(printer.symbolizer.take_warnings());
    if printer.events == 0 && printer.filtered > 0 {
        warnings.push(format!(
            "no event matched the filters ({} read)",
            urec_format::plural(printer.filtered, "event was", "events were")
        ));
    }
    if printer.out_of_order > 0 {
        warnings.push(format!(
            "{} printed out of time order",
            urec_format::plural(
                printer.out_of_order,
                "event arrived more than a second late and was",
                "events arrived more than a second late and were"
            )
        ));
    }
    Ok(ScriptSummary {
        events: printer.events,
        out_of_order: printer.out_of_order,
        truncated: status.truncated,
        warnings,
    })
}

struct Printer<'o> {
    opts: &'o ScriptOptions,
    /// Time 0 of the printed times: boot (CLOCK_MONOTONIC) or the attach (`--reltime`).
    origin_ns: u64,
    /// Entries waiting for their return (latency filters), per call.
    waiting: Entries<Event>,
    /// Events left out by filters.
    filtered: u64,
    /// The call core: probes selected, processes, address spaces, filters.
    calls: Calls<'o>,
    symbolizer: Symbolizer,
    probes: HashMap<ProbeId, urec_format::Probe>,
    stacks: HashMap<StackId, urec_format::Stack>,
    /// The Python functions the stacks' Python frames name.
    py_codes: PyCodes,
    /// (incarnation, stack) → its lines.
    rendered: HashMap<(u32, StackId), String>,
    /// Bytes of `rendered`'s strings.
    rendered_bytes: usize,
    /// Last address seen for a probe in a process, for events without a stack.
    addresses: HashMap<(u32, ProbeId), Avma>,
    last_printed: u64,
    events: u64,
    out_of_order: u64,
    line: String,
}

impl<'o> Printer<'o> {
    fn new(opts: &'o ScriptOptions, header: &urec_format::Header, ahead: Ahead) -> Self {
        let mut symbolizer = Symbolizer::new(opts.symbolize.clone());
        if !ahead.embedded.is_empty() {
            symbolizer.set_embedded(ahead.embedded);
        }
        let attach_ns = ahead
            .attach_ns
            .or((header.start_monotonic_ns > 0).then_some(header.start_monotonic_ns));
        Self {
            opts,
            origin_ns: if opts.reltime {
                attach_ns.unwrap_or(0)
            } else {
                0
            },
            calls: Calls::new(&opts.filter, attach_ns),
            waiting: Entries::default(),
            filtered: 0,
            symbolizer,
            probes: HashMap::new(),
            stacks: HashMap::new(),
            py_codes: PyCodes::default(),
            rendered: HashMap::new(),
            rendered_bytes: 0,
            addresses: HashMap::new(),
            last_printed: 0,
            events: 0,
            out_of_order: 0,
            line: String::new(),
        }
    }

    /// Applies the filters to `ev` (through the call core): `None` when it is left out (or,
    /// for a call judged when it ends, held until then); else what to print: the event, and
    /// the entry printed before it.
    fn accept(&mut self, ev: Event) -> Option<(Event, Option<Event>)> {
        let judged = match self.calls.event(&ev) {
            Verdict::Kept(process, slot) if self.calls.in_window(began_ns(&ev)) => {
                Some((process, slot.kind))
            }
            // An event of a probe the file does not define still prints (no `--probe`).
            Verdict::Unknown if self.calls.keeps_unknown(&ev) => None,
            _ => {
                self.filtered += 1;
                return None;
            }
        };
        if !self.calls.by_latency() {
            return Some((ev, None));
        }
        match (ev.kind, judged) {
            (EventKind::Entry, Some((process, urec_format::ProbeKind::EntryReturn))) => {
                // An entry the bound pushes out can never be judged: filtered, as one
                // whose return never comes.
                let filtered = &mut self.filtered;
                self.waiting
                    .enter(call_key(&ev, process), ev, |_, _| *filtered += 1);
                None
            }
            (EventKind::Return, Some((process, urec_format::ProbeKind::EntryReturn))) => {
                // Entries a goroutine's return unwound past never end: filtered too.
                let filtered = &mut self.filtered;
                let ended = self.waiting.end(&ev, process, |_| *filtered += 1);
                if self.calls.keeps_call(ended.measured) {
                    Some((ev, ended.entry))
                } else {
                    self.filtered += 1 + u64::from(ended.entry.is_some());
                    None
                }
            }
            (EventKind::Return, _) if self.calls.keeps_call(ev.latency_ns) => Some((ev, None)),
            _ => {
                // No latency to judge by.
                self.filtered += 1;
                None
            }
        }
    }

    fn metadata(&mut self, record: Record) {
        self.calls.apply(&record);
        match record {
            Record::Probe(p) => {
                self.probes.insert(p.id, p);
            }
            Record::Stack(s) => {
                self.stacks.insert(s.id, s);
            }
            Record::PyCode(c) => self.py_codes.insert(c),
            _ => {}
        }
    }

    fn print(&mut self, p: &Pending, out: &mut dyn Write) -> io::Result<()> {
        if let Some(entry) = &p.entry {
            self.print_event(entry, out)?;
        }
        self.print_event(&p.event, out)
    }

    fn print_event(&mut self, ev: &Event, out: &mut dyn Write) -> io::Result<()> {
        if ev.time_ns < self.last_printed {
            self.out_of_order += 1;
        }
        self.last_printed = self.last_printed.max(ev.time_ns);
        self.events += 1;

        let stack = ev.stack.and_then(|id| self.stacks.get(&id));
        let address = match stack.and_then(|s| s.frames.first()) {
            Some(&a) => {
                self.addresses.insert((ev.pid, ev.probe), a);
                Some(a)
            }
            None => self.addresses.get(&(ev.pid, ev.probe)).copied(),
        };
        let (incarnation, comm) = self
            .calls
            .spaces
            .incarnations_mut()
            .of_event(ev.pid, ev.time_ns);
        let comm = self.calls.spaces.incarnations().comm_name(comm);
        let probe = self.probes.get(&ev.probe);
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let all = Fields {
            comm: true,
            pid: true,
            tid: true,
            cpu: true,
            time: true,
            event: true,
            ip: true,
            sym: true,
            dso: true,
            args: true,
            latency: true,
        };
        let f = self.opts.fields.unwrap_or(all);
        let sep = |line: &mut String| {
            if !line.is_empty() {
                line.push(' ');
            }
        };
        if f.comm {
            line.push_str(comm);
        }
        match (f.pid, f.tid) {
            (true, true) => {
                sep(&mut line);
                let _ = write!(line, "{:>6}/{:<6}", ev.pid, ev.tid);
            }
            (true, false) | (false, true) => {
                sep(&mut line);
                let _ = write!(line, "{:>6}", if f.pid { ev.pid } else { ev.tid });
            }
            (false, false) => {}
        }
        if f.cpu {
            sep(&mut line);
            let _ = write!(line, "[{:03}]", ev.cpu);
        }
        if f.time {
            sep(&mut line);
            let t = ev.time_ns.saturating_sub(self.origin_ns);
            let _ = write!(line, "{}.{:09}:", t / 1_000_000_000, t % 1_000_000_000);
        }
        let is_return = ev.kind == EventKind::Return;
        if f.event {
            sep(&mut line);
            match probe {
                Some(pr) => line.push_str(&pr.name),
                None => {
                    let _ = write!(line, "probe#{}", ev.probe);
                }
            }
            if is_return && !line.ends_with("%return") {
                line.push_str("%return");
            }
            line.push(':');
        }
        if self.opts.fields.is_none() {
            // The default layout names the probed address, as perf does for uprobes.
            line.push_str(" (");
            match (address, probe) {
                (Some(a), _) => {
                    let _ = write!(line, "{a:x}");
                }
                (None, Some(pr)) => {
                    let _ = write!(line, "{:x}", pr.vaddr);
                }
                (None, None) => line.push('0'),
            }
            line.push(')');
        }
        if f.args {
            let mut specs = probe
                .into_iter()
                .flat_map(|pr| &pr.args)
                .filter(|a| a.at_return == is_return);
            for (i, value) in ev.args.iter().enumerate() {
                line.push(' ');
                match specs.next() {
                    Some(spec) => {
                        line.push_str(&spec.name);
                        line.push('=');
                        format_arg(&mut line, spec.ty, value);
                    }
                    None => {
                        let _ = write!(line, "arg{}=", i + 1);
                        format_arg(&mut line, urec_format::ArgType::Hex(64), value);
                    }
                }
            }
        }
        if f.latency {
            if let Some(lat) = ev.latency_ns {
                let _ = write!(line, " latency={lat}");
            }
        }
        // A Go event names its goroutine (the thread is where the call began).
        if let (Some(g), true) = (ev.goroutine, f.tid) {
            let _ = write!(line, " goroutine={g:#x}");
        }
        // A call kept as one in N under ring pressure stands for N calls.
        if ev.weight != 1 {
            let _ = write!(line, " weight={}", ev.weight);
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        self.line = line;

        if let Some(id) = ev.stack.filter(|_| f.ip || f.sym || f.dso) {
            let key = (incarnation, id);
            if !self.rendered.contains_key(&key) {
                let text = self.render_stack(ev, id);
                if self.rendered_bytes + text.len() > RENDERED_BYTES {
                    self.rendered.clear();
                    self.rendered_bytes = 0;
                }
                self.rendered_bytes += text.len();
                self.rendered.insert(key, text);
            }
            if let Some(text) = self.rendered.get(&key) {
                out.write_all(text.as_bytes())?;
            }
        }
        Ok(())
    }

    fn render_stack(&mut self, ev: &Event, id: StackId) -> String {
        let mut text = String::new();
        let Some(stack) = self.stacks.get(&id) else {
            return text;
        };
        let f = self.opts.fields;
        let frame_line = |text: &mut String, addr: u64, name: &str, dso: &str| {
            let Some(f) = f else {
                let _ = writeln!(text, "\t{addr:>16x} {name} ({dso})");
                return;
            };
            let mut parts = Vec::with_capacity(3);
            if f.ip {
                parts.push(format!("{addr:>16x}"));
            }
            if f.sym {
                parts.push(name.to_string());
            }
            if f.dso {
                parts.push(format!("({dso})"));
            }
            let _ = writeln!(text, "\t{}", parts.join(" "));
        };
        // Without symbolization every frame stays `binary+0xOFF`, the probe's too.
        let symbolized = !self.opts.no_symbolize;
        // (address, name, dso), outermost first as the merge of Python frames takes them.
        let mut lines: Vec<(u64, String, String)> = Vec::with_capacity(stack.frames.len() + 1);
        if stack.truncated {
            lines.push((0, "[truncated]".into(), "[unknown]".into()));
        }
        for (depth, &addr) in stack.frames.iter().enumerate().rev() {
            match self.calls.spaces.lookup(ev.pid, ev.time_ns, addr) {
                None => lines.push((addr.0, "[unknown]".into(), "[unknown]".into())),
                Some(m) => {
                    let mut frames = code_frames(
                        (!self.opts.no_symbolize).then_some(&mut self.symbolizer),
                        m.path,
                        m.build_id,
                        urec_format::FrameAddress::at_depth(m.offset, depth),
                    );
                    if let Some(probe) = self.probes.get(&ev.probe).filter(|_| symbolized) {
                        frames = probed_frames(probe, depth, frames);
                    }
                    for (name, _) in frames {
                        lines.push((addr.0, name, m.path.to_string()));
                    }
                }
            }
        }
        // Python frames in place of the eval frames; the .py file where the binary goes.
        let (lines, _) = merge_python(
            lines,
            stack.truncated,
            &stack.python,
            stack.python_truncated,
            |(_, name, _)| symbolized && is_eval_frame(name),
            |p| {
                let f = self.py_codes.frame(p)?;
                Some((0, f.name(), f.filename.to_string()))
            },
        );
        // Innermost first, as perf prints stacks and inlined frames.
        for (addr, name, dso) in lines.iter().rev() {
            frame_line(&mut text, *addr, name, dso);
        }
        text.push('\n');
        text
    }
}
