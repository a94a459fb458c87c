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
//! a min-heap of at most [`REORDER_WINDOW`] events (and [`REORDER_BYTES`] of them, arguments
//! included) and printed oldest first as newer ones arrive, which sorts any disorder shorter
//! than the window in bounded memory. An event later than that is printed when it is read and
//! counted in [`ScriptSummary::out_of_order`].
//!
//! Metadata (processes, mappings) is applied as it is read; rebasing asks for the mapping in
//! force at the event's time, so reordering does not change what an address means. A stack is
//! rendered once per (process incarnation, stack id) and reused, from a cache of at most
//! [`RENDERED_BYTES`] (emptied when full: a recording of many processes sharing few stacks
//! would otherwise keep one rendering per process).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::Path;

use urec_format::{Avma, Event, EventKind, ProbeId, Record, StackId};

use crate::args::format_arg;
use crate::frames::code_frames;
use crate::rebase::AddressSpaces;
use crate::symbolize::{EmbeddedSymbols, SymbolizeOptions, Symbolizer};
use crate::Error;

/// Events held back for reordering (see the module docs).
pub const REORDER_WINDOW: usize = 100_000;

/// Bytes of events held back for reordering. A recorded event with eight string arguments
/// takes about 2.5 KiB, so a full window of those would take 250 MB; this keeps the window
/// at 100,000 events of the usual size (about 100 bytes) and shortens it for large ones.
pub const REORDER_BYTES: usize = 16 << 20;

/// Bytes of rendered stacks kept for reuse.
pub const RENDERED_BYTES: usize = 16 << 20;

/// Options of [`script`].
#[derive(Clone, Debug, Default)]
pub struct ScriptOptions {
    /// Where binaries and debug files are looked for.
    pub symbolize: SymbolizeOptions,
    /// Skip symbolization (frames show as `binary+0xOFF`).
    pub no_symbolize: bool,
}

/// What [`script`] saw, for the caller to report on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptSummary {
    /// Events printed.
    pub events: u64,
    /// Events that arrived more than [`REORDER_WINDOW`] events late and were printed out of
    /// time order.
    pub out_of_order: u64,
    /// The file was truncated (read up to its last complete chunk).
    pub truncated: bool,
    /// Warnings (truncation, symbolization problems), each once.
    pub warnings: Vec<String>,
}

/// An event held for reordering. Ordered by (time, read order) so the heap pops the oldest
/// first and equal times keep file order. Its process incarnation and name are looked up when
/// it is printed, at its own time, with every record read by then.
struct Pending {
    event: Event,
    seq: u64,
}

impl Pending {
    fn key(&self) -> (u64, u64) {
        (self.event.time_ns, self.seq)
    }

    /// What the event holds in memory, roughly (the heap's own slot included).
    fn size(&self) -> usize {
        let args = &self.event.args;
        std::mem::size_of::<Self>()
            + args.capacity() * std::mem::size_of::<urec_format::ArgValue>()
            + args
                .iter()
                .map(|a| match a {
                    urec_format::ArgValue::Str { bytes, .. } => bytes.capacity(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
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
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut held = 0usize;
    let mut seq = 0u64;
    let (mut printer, status) = crate::input::read_with_symbols(
        source,
        |_, embedded| Printer::new(opts, embedded),
        |printer, record| {
            if let Record::Event(event) = record {
                printer.spaces.incarnations_mut().advance(event.time_ns);
                let pending = Pending { event, seq };
                held += pending.size();
                heap.push(Reverse(pending));
                seq += 1;
                while heap.len() > REORDER_WINDOW || (held > REORDER_BYTES && heap.len() > 1) {
                    let Some(Reverse(p)) = heap.pop() else { break };
                    held -= p.size();
                    printer.print(&p, out)?;
                }
            } else {
                printer.metadata(record);
            }
            Ok(())
        },
    )?;
    while let Some(Reverse(p)) = heap.pop() {
        printer.print(&p, out)?;
    }
    let mut warnings = status.warnings;
    warnings.extend(printer.symbolizer.take_warnings());
    if printer.out_of_order > 0 {
        warnings.push(format!(
            "{} printed out of time order",
            urec_format::plural(
                printer.out_of_order,
                "event arrived too late to be sorted and was",
                "events arrived too late to be sorted and were"
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
    spaces: AddressSpaces,
    symbolizer: Symbolizer,
    probes: HashMap<ProbeId, urec_format::Probe>,
    stacks: HashMap<StackId, urec_format::Stack>,
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
    fn new(opts: &'o ScriptOptions, embedded: EmbeddedSymbols) -> Self {
        let mut symbolizer = Symbolizer::new(opts.symbolize.clone());
        if !embedded.is_empty() {
            symbolizer.set_embedded(embedded);
        }
        Self {
            opts,
            spaces: AddressSpaces::new(),
            symbolizer,
            probes: HashMap::new(),
            stacks: HashMap::new(),
            rendered: HashMap::new(),
            rendered_bytes: 0,
            addresses: HashMap::new(),
            last_printed: 0,
            events: 0,
            out_of_order: 0,
            line: String::new(),
        }
    }

    fn metadata(&mut self, record: Record) {
        self.spaces.apply(&record);
        match record {
            Record::Probe(p) => {
                self.probes.insert(p.id, p);
            }
            Record::Stack(s) => {
                self.stacks.insert(s.id, s);
            }
            _ => {}
        }
    }

    fn print(&mut self, p: &Pending, out: &mut dyn Write) -> io::Result<()> {
        let ev = &p.event;
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
        let incarnation = self
            .spaces
            .incarnations_mut()
            .at_or_new(ev.pid, ev.time_ns)
            .id;
        let incarnations = self.spaces.incarnations();
        let comm = incarnations.comm_name(incarnations.comm_at(ev.pid, ev.time_ns));
        let probe = self.probes.get(&ev.probe);
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let _ = write!(
            line,
            "{comm} {:>6}/{:<6} [{:03}] {}.{:09}: ",
            ev.pid,
            ev.tid,
            ev.cpu,
            ev.time_ns / 1_000_000_000,
            ev.time_ns % 1_000_000_000
        );
        match probe {
            Some(pr) => line.push_str(&pr.name),
            None => {
                let _ = write!(line, "probe#{}", ev.probe);
            }
        }
        let is_return = ev.kind == EventKind::Return;
        if is_return && !line.ends_with("%return") {
            line.push_str("%return");
        }
        line.push_str(": (");
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
        if let Some(lat) = ev.latency_ns {
            let _ = write!(line, " latency={lat}");
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        self.line = line;

        if let Some(id) = ev.stack {
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
        for (depth, &addr) in stack.frames.iter().enumerate() {
            match self.spaces.lookup(ev.pid, ev.time_ns, addr) {
                None => {
                    let _ = writeln!(text, "\t{addr:>16x} [unknown] ([unknown])");
                }
                Some(m) => {
                    let frames = code_frames(
                        (!self.opts.no_symbolize).then_some(&mut self.symbolizer),
                        m.path,
                        m.build_id,
                        m.offset.0,
                        depth > 0,
                    );
                    // Innermost first, as perf prints inlined frames.
                    for (name, _) in frames.iter().rev() {
                        let _ = writeln!(text, "\t{addr:>16x} {name} ({})", m.path);
                    }
                }
            }
        }
        if stack.truncated {
            let _ = writeln!(text, "\t{:>16x} [truncated] ([unknown])", 0);
        }
        text.push('\n');
        text
    }
}
