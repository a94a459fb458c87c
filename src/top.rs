//! `urec top`: live per-probe counts and latencies from the in-kernel aggregates (SPEC.md,
//! "`urec top`"). Probe specs, predicates, targets and `--cgroup` are resolved as `urec record`
//! resolves them (the shared set-up of [`urec_record::TargetRequest`]); [`urec_record::top`] attaches the
//! programs to count only and hands every interval's figures to a view here: the full-screen
//! table on a terminal, JSON lines otherwise (or with `--json`).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use urec_format::{FrameAddress, LatencyAggregate, ProbeKind, StackMode};
use urec_record::top::{Row, Tick, TopOptions, TopView};
use urec_record::Verbosity;
use urec_report::{human_ns, LatencyHistogram};

use crate::record::parse_duration;
use crate::UsageError;

/// Command-line arguments of `urec top`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  urec top -e 'libc:malloc' -a\n  \
    urec top -e ./server:handle_request -p 1234 --sort p99\n  \
    urec top --json -d 10 -e 'libc:read' -- ./client")]
pub struct Args {
    /// Probe spec, as for `urec record` (repeatable); arguments are not fetched, predicates
    /// apply.
    #[arg(short = 'e', long = "event", value_name = "SPEC", required = true)]
    pub events: Vec<String>,
    #[command(flatten)]
    pub target: crate::record::TargetArgs,
    /// Stop after this long: a number of seconds, or with a unit (500ms, 10s, 5m, 1h).
    #[arg(short = 'd', long = "duration", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often the figures are shown.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// The table's order (on a terminal the keys c, r, 5, 9, m change it).
    #[arg(long, value_enum, default_value = "calls")]
    pub sort: SortKey,
    /// JSON lines on stdout even on a terminal.
    #[arg(long)]
    pub json: bool,
    /// Also the N hottest call paths of each probe in each interval (frame-pointer stacks on
    /// ring-buffer events: each call then costs what `urec record -g fp` costs).
    #[arg(long, value_name = "N")]
    pub top_stacks: Option<u32>,
    /// Allow a glob to match more than 1000 functions (as for `urec record`).
    #[arg(long)]
    pub force: bool,
    /// Also say what was attached and how.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The command to run and trace (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--sort`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// Calls in the interval (then total calls).
    Calls,
    /// Calls per second in the interval.
    Rate,
    /// Median latency of the interval.
    P50,
    /// 99th percentile latency of the interval.
    P99,
    /// Largest latency of the interval.
    Max,
}

impl SortKey {
    fn name(self) -> &'static str {
        match self {
            SortKey::Calls => "calls",
            SortKey::Rate => "rate",
            SortKey::P50 => "p50",
            SortKey::P99 => "p99",
            SortKey::Max => "max",
        }
    }
}

/// Runs `urec top`; returns the exit status (the command's, with `-- COMMAND`).
pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.top_stacks == Some(0) {
        return Err(UsageError("--top-stacks takes a number of stacks, at least 1".into()).into());
    }
    let top_stacks = args.top_stacks.unwrap_or(0);
    let targets = args.target.request(&args.command);
    targets.check_flags().map_err(|e| e.into_anyhow())?;
    let verbosity = if args.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let resolution = targets
        .resolve(&args.events, args.force)
        .map_err(|e| e.into_anyhow())?;
    let probes = resolution
        .probes
        .iter()
        .map(|p| {
            let mode = if top_stacks > 0 {
                StackMode::FramePointer
            } else {
                StackMode::None
            };
            urec_record::plan(p, mode).map_err(|e| UsageError(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    urec_record::warn_resolution(&resolution, verbosity);
    let target = targets.target().map_err(|e| e.into_anyhow())?;
    let workload = !args.command.is_empty();
    let opts = TopOptions {
        probes,
        target,
        duration: args.duration,
        interval: args.interval,
        cgroup: args.target.cgroup.clone(),
        verbosity,
        top_stacks,
    };
    let summary = if !args.json && std::io::stdout().is_terminal() {
        let mut view = Screen::new(args.sort, args.interval, workload)?;
        view.top_n = top_stacks;
        let result = urec_record::top::run(opts, &mut view);
        let last = view.finish();
        let summary = result.map_err(|e| e.into_anyhow()).context("urec top")?;
        if let Some(tick) = last {
            print!("{}", final_table(&tick, args.sort));
        }
        summary
    } else {
        let mut view = JsonLines {
            out: std::io::stdout().lock(),
            namer: (top_stacks > 0).then(StackNamer::new),
            top_n: top_stacks,
        };
        urec_record::top::run(opts, &mut view)
            .map_err(|e| e.into_anyhow())
            .context("urec top")?
    };
    if workload {
        if let Some(line) = summary.workload_end.and_then(|end| {
            let program = args.command.first().map_or("the command", String::as_str);
            urec_record::workload_line(program, end, 0)
        }) {
            // (Not the events count of `urec record`: nothing is recorded.)
            eprintln!(
                "{}",
                line.rsplit_once(';').map_or(line.as_str(), |(l, _)| l)
            );
        }
        return Ok(summary.workload_status.unwrap_or(0).clamp(0, 255) as u8);
    }
    Ok(0)
}

/// One row's figures as both views show them.
struct Figures<'a> {
    row: &'a Row,
    rate: f64,
    /// p50, p99, max of the interval.
    interval: Option<(u64, u64, u64)>,
    total: Option<urec_report::LatencyStats>,
}

/// Names the frames of `--top-stacks` stacks (located in their files by the recorder) with
/// the report's symbolizer.
struct StackNamer {
    symbolizer: urec_symbolize::Symbolizer,
}

impl StackNamer {
    fn new() -> StackNamer {
        StackNamer {
            symbolizer: urec_symbolize::Symbolizer::new(Default::default()),
        }
    }

    /// The `n` hottest call paths of `stacks` by name (outermost first), the same path in
    /// several processes merged.
    fn hottest(
        &mut self,
        stacks: &[urec_record::top::HotStack],
        n: u32,
    ) -> Vec<(u64, Vec<String>)> {
        let mut merged: Vec<(u64, Vec<String>)> = Vec::new();
        for st in stacks {
            let names = self.names(st);
            match merged.iter_mut().find(|(_, m)| *m == names) {
                Some((calls, _)) => *calls += st.calls,
                None => merged.push((st.calls, names)),
            }
        }
        merged.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        merged.truncate(n as usize);
        merged
    }

    /// The stack's function names, outermost first (inlined functions included).
    fn names(&mut self, stack: &urec_record::top::HotStack) -> Vec<String> {
        let mut out = Vec::new();
        for (i, &addr) in stack.frames.iter().enumerate().rev() {
            match stack.files.get(i).and_then(Option::as_ref) {
                None => out.push(format!("{addr:#x}")),
                Some((path, _)) if &**path == "[vdso]" => out.push("[vdso]".into()),
                Some((path, offset)) => {
                    let offset = urec_format::FileOffset(*offset);
                    for f in
                        self.symbolizer
                            .symbolize_at(path, None, FrameAddress::at_depth(offset, i))
                    {
                        out.push(f.display_name().to_string());
                    }
                }
            }
        }
        out
    }
}

fn figures(tick: &Tick) -> Vec<Figures<'_>> {
    let secs = tick.span.as_secs_f64();
    tick.rows
        .iter()
        .map(|row| {
            let latency = |l: Option<&LatencyAggregate>| {
                l.filter(|_| row.kind == ProbeKind::EntryReturn)
                    .map(LatencyHistogram::from_kernel)
                    .and_then(|h| h.stats())
            };
            Figures {
                row,
                rate: if secs > 0.0 {
                    row.interval_calls as f64 / secs
                } else {
                    0.0
                },
                interval: latency(row.interval_latency.as_ref()).map(|s| (s.p50, s.p99, s.max)),
                total: latency(row.total.latency.as_ref()),
            }
        })
        .collect()
}

fn sort(rows: &mut [Figures<'_>], key: SortKey) {
    let lat =
        |f: &Figures<'_>, i: usize| f.interval.map_or(0, |(p50, p99, max)| [p50, p99, max][i]);
    rows.sort_by(|a, b| {
        let by = match key {
            SortKey::Calls => b.row.interval_calls.cmp(&a.row.interval_calls),
            SortKey::Rate => b.rate.total_cmp(&a.rate),
            SortKey::P50 => lat(b, 0).cmp(&lat(a, 0)),
            SortKey::P99 => lat(b, 1).cmp(&lat(a, 1)),
            SortKey::Max => lat(b, 2).cmp(&lat(a, 2)),
        };
        by.then(b.row.total.calls.cmp(&a.row.total.calls))
            .then(a.row.id.cmp(&b.row.id))
    });
}

/// One JSON line (SPEC.md, "`urec top`"), fields in the documented order.
#[derive(serde::Serialize)]
struct JsonTick<'a> {
    schema: u32,
    time_s: f64,
    #[serde(rename = "final")]
    last: bool,
    functions: Vec<JsonFunction<'a>>,
}

#[derive(serde::Serialize)]
struct JsonFunction<'a> {
    probe: &'a str,
    symbol: &'a str,
    calls: u64,
    returns: u64,
    filtered: u64,
    in_flight: u64,
    interval_calls: u64,
    rate: f64,
    interval_latency_ns: Option<JsonInterval>,
    latency_ns: Option<urec_report::LatencyStats>,
    /// With `--top-stacks` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    top_stacks: Option<Vec<JsonStack>>,
}

#[derive(serde::Serialize)]
struct JsonStack {
    calls: u64,
    /// Outermost first.
    stack: Vec<String>,
}

#[derive(serde::Serialize)]
struct JsonInterval {
    p50: u64,
    p99: u64,
    max: u64,
}

/// The JSON line of one interval.
fn json_line<'a>(tick: &'a Tick, mut namer: Option<&mut StackNamer>, top_n: u32) -> JsonTick<'a> {
    let functions = figures(tick)
        .iter()
        .map(|f| JsonFunction {
            probe: &f.row.name,
            symbol: &f.row.symbol,
            calls: f.row.total.calls,
            returns: f.row.total.returns,
            filtered: f.row.total.filtered,
            in_flight: f.row.total.in_flight,
            interval_calls: f.row.interval_calls,
            rate: f.rate,
            interval_latency_ns: f
                .interval
                .map(|(p50, p99, max)| JsonInterval { p50, p99, max }),
            latency_ns: f.total,
            top_stacks: namer.as_deref_mut().map(|n| {
                n.hottest(&f.row.stacks, top_n)
                    .into_iter()
                    .map(|(calls, stack)| JsonStack { calls, stack })
                    .collect()
            }),
        })
        .collect();
    JsonTick {
        schema: 1,
        time_s: tick.time.as_secs_f64(),
        last: tick.last,
        functions,
    }
}

/// JSON lines on stdout, one per interval.
struct JsonLines<W: Write> {
    out: W,
    /// With `--top-stacks`.
    namer: Option<StackNamer>,
    top_n: u32,
}

impl<W: Write> TopView for JsonLines<W> {
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        std::thread::sleep(timeout);
        Ok(false)
    }

    fn show(&mut self, tick: &Tick) -> anyhow::Result<()> {
        serde_json::to_writer(
            &mut self.out,
            &json_line(tick, self.namer.as_mut(), self.top_n),
        )?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        Ok(())
    }
}

/// `1.23M`-style counts for the table's narrow columns.
fn short_count(n: f64) -> String {
    if n < 10_000.0 {
        return format!("{n:.0}");
    }
    let (v, unit) = if n < 1e6 {
        (n / 1e3, "k")
    } else if n < 1e9 {
        (n / 1e6, "M")
    } else {
        (n / 1e9, "G")
    };
    if v >= 99.95 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

const HEADERS: [&str; 7] = ["PROBE", "CALLS", "TOTAL", "CALLS/S", "P50", "P99", "MAX"];

/// The cells of one row: probe, interval calls, total calls, rate, p50, p99, max.
fn cells(f: &Figures<'_>) -> [String; 7] {
    let lat = |i: usize| {
        f.interval.map_or("-".to_string(), |(p50, p99, max)| {
            human_ns([p50, p99, max][i])
        })
    };
    [
        f.row.name.clone(),
        short_count(f.row.interval_calls as f64),
        short_count(f.row.total.calls as f64),
        short_count(f.rate),
        lat(0),
        lat(1),
        lat(2),
    ]
}

/// The status line under the table: what cannot show in the rows.
fn status_line(tick: &Tick) -> String {
    let filtered: u64 = tick.rows.iter().map(|r| r.total.filtered).sum();
    let in_flight: u64 = tick.rows.iter().map(|r| r.total.in_flight).sum();
    let stacks = tick.rows.iter().any(|r| !r.stacks.is_empty());
    let cost = match tick.bpf_ns_per_run {
        Some(ns) => format!("probe cost: BPF {ns:.0} ns/run + the trap"),
        None => "probe cost: sysctl kernel.bpf_stats_enabled=1".to_string(),
    };
    format!(
        "lost {}  filtered {}  in flight {}  {cost}  ({})",
        tick.lost,
        filtered,
        in_flight,
        if stacks {
            "paths from events"
        } else {
            "kernel counts, no events"
        }
    )
}

/// What stays on the terminal after the full-screen view: the final, exact totals.
fn final_table(tick: &Tick, key: SortKey) -> String {
    let mut rows = figures(tick);
    sort(&mut rows, key);
    let mut lines = vec![[
        "PROBE".to_string(),
        "CALLS".into(),
        "RETURNS".into(),
        "P50".into(),
        "P99".into(),
        "MAX".into(),
    ]];
    for f in &rows {
        let lat = |v: fn(&urec_report::LatencyStats) -> u64| {
            f.total.as_ref().map_or("-".to_string(), |s| human_ns(v(s)))
        };
        lines.push([
            f.row.name.clone(),
            f.row.total.calls.to_string(),
            f.row.total.returns.to_string(),
            lat(|s| s.p50),
            lat(|s| s.p99),
            lat(|s| s.max),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = format!("urec top: {:.1} s, final totals\n", tick.time.as_secs_f64());
    for l in &lines {
        let mut line = format!("{:<w$}", l[0], w = widths[0]);
        for c in 1..6 {
            line += &format!("  {:>w$}", l[c], w = widths[c]);
        }
        out += line.trim_end();
        out.push('\n');
    }
    out += &status_line(tick);
    out.push('\n');
    out
}

/// The full-screen table on the terminal (ratatui, on the alternate screen in raw mode).
struct Screen {
    terminal: Option<ratatui::DefaultTerminal>,
    key: SortKey,
    interval: Duration,
    /// A command shares the terminal: redraw every cell every interval, over its output.
    repaint: bool,
    last: Option<Tick>,
    /// `--top-stacks N`: the N hot call paths of each probe under the table (0: none).
    top_n: u32,
    namer: StackNamer,
    /// The named stacks of the last interval, per probe row (as drawn).
    named: Vec<(String, Vec<(u64, String)>)>,
}

impl Screen {
    fn new(key: SortKey, interval: Duration, repaint: bool) -> anyhow::Result<Screen> {
        let terminal = ratatui::try_init().context("setting up the terminal")?;
        Ok(Screen {
            terminal: Some(terminal),
            key,
            interval,
            repaint,
            last: None,
            top_n: 0,
            namer: StackNamer::new(),
            named: Vec::new(),
        })
    }

    /// Leaves the full screen; the last figures shown.
    fn finish(&mut self) -> Option<Tick> {
        if self.terminal.take().is_some() {
            ratatui::restore();
        }
        self.last.take()
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        use ratatui::layout::{Constraint, Layout};
        use ratatui::style::{Modifier, Style};
        use ratatui::text::Line;
        use ratatui::widgets::{Cell, Paragraph, Row as TRow, Table};
        let (Some(terminal), Some(tick)) = (self.terminal.as_mut(), self.last.as_ref()) else {
            return Ok(());
        };
        if self.repaint {
            terminal.clear()?;
        }
        let mut rows = figures(tick);
        sort(&mut rows, self.key);
        let title = format!(
            "urec top  {:.0} s  interval {}  {} probes  sort: {}   keys: c r 5 9 m sort, q quits",
            tick.time.as_secs_f64(),
            human_ns(self.interval.as_nanos() as u64),
            tick.rows.len(),
            self.key.name()
        );
        let status = status_line(tick);
        let body: Vec<TRow> = rows
            .iter()
            .map(|f| TRow::new(cells(f).into_iter().map(Cell::from)))
            .collect();
        let name_width = rows
            .iter()
            .map(|f| f.row.name.chars().count())
            .max()
            .unwrap_or(5)
            .clamp(5, 48) as u16;
        let widths = [
            Constraint::Length(name_width),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(8),
        ];
        let header = TRow::new(HEADERS.map(Cell::from))
            .style(Style::default().add_modifier(Modifier::REVERSED));
        let mut stack_lines: Vec<Line> = Vec::new();
        if self.top_n > 0 {
            stack_lines.push(Line::from(
                "hot call paths of the interval (calls  outermost;...;probed)",
            ));
            for f in &rows {
                if let Some((_, named)) = self.named.iter().find(|(n, _)| *n == f.row.name) {
                    if named.is_empty() {
                        continue;
                    }
                    stack_lines.push(Line::from(f.row.name.clone()));
                    for (calls, folded) in named {
                        stack_lines.push(Line::from(format!("  {calls:>8}  {folded}")));
                    }
                }
            }
        }
        let table_height = if self.top_n > 0 {
            Constraint::Length(rows.len() as u16 + 2)
        } else {
            Constraint::Min(1)
        };
        terminal.draw(|frame| {
            let [top, table, stacks, bottom] = Layout::vertical([
                Constraint::Length(1),
                table_height,
                Constraint::Min(0),
                Constraint::Length(1),
            ])
            .areas(frame.area());
            frame.render_widget(Paragraph::new(stack_lines), stacks);
            frame.render_widget(Paragraph::new(Line::from(title)), top);
            frame.render_widget(
                Table::new(body, widths).header(header).column_spacing(2),
                table,
            );
            frame.render_widget(Paragraph::new(Line::from(status)), bottom);
        })?;
        Ok(())
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

impl TopView for Screen {
    fn wait(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
        if !event::poll(timeout)? {
            return Ok(false);
        }
        match event::read()? {
            Event::Key(k) if k.kind != KeyEventKind::Release => {
                let key = match k.code {
                    KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Ok(true),
                    KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => {
                        return Ok(true)
                    }
                    KeyCode::Char('c') => SortKey::Calls,
                    KeyCode::Char('r') => SortKey::Rate,
                    KeyCode::Char('5') => SortKey::P50,
                    KeyCode::Char('9') => SortKey::P99,
                    KeyCode::Char('m') => SortKey::Max,
                    _ => return Ok(false),
                };
                self.key = key;
                self.draw()?;
            }
            Event::Resize(..) => self.draw()?,
            _ => {}
        }
        Ok(false)
    }

    fn show(&mut self, tick: &Tick) -> anyhow::Result<()> {
        self.last = Some(tick.clone());
        if self.top_n > 0 {
            self.named = tick
                .rows
                .iter()
                .map(|r| {
                    let named = self
                        .namer
                        .hottest(&r.stacks, self.top_n)
                        .into_iter()
                        .map(|(calls, names)| (calls, names.join(";")))
                        .collect();
                    (r.name.clone(), named)
                })
                .collect();
        }
        if tick.last {
            return Ok(());
        }
        self.draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::Aggregate;

    fn tick() -> Tick {
        let lat = LatencyAggregate {
            count: 2,
            total: 3000,
            min: 1000,
            max: 2000,
            sub_bits: 6,
            buckets: vec![
                (urec_format::log_linear::bucket(1000, 6) as u32, 1),
                (urec_format::log_linear::bucket(2000, 6) as u32, 1),
            ],
        };
        let row = |id, kind, calls, latency: Option<LatencyAggregate>| Row {
            id,
            name: format!("t:f{id}"),
            symbol: format!("f{id}"),
            kind,
            total: Aggregate {
                probe: id,
                calls,
                returns: if kind == ProbeKind::Entry { 0 } else { calls },
                latency: latency.clone(),
                ..Default::default()
            },
            interval_calls: calls / 2,
            interval_latency: latency,
            stacks: Vec::new(),
        };
        Tick {
            time: Duration::from_millis(2500),
            span: Duration::from_millis(500),
            last: false,
            rows: vec![
                row(0, ProbeKind::Entry, 10, None),
                row(1, ProbeKind::EntryReturn, 2, Some(lat)),
            ],
            lost: 0,
            bpf_ns_per_run: None,
        }
    }

    #[test]
    fn json_lines_follow_the_schema() {
        let v = serde_json::to_value(json_line(&tick(), None, 0)).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["time_s"], 2.5);
        assert_eq!(v["final"], false);
        let f = &v["functions"];
        assert_eq!(f[0]["probe"], "t:f0");
        assert_eq!(f[0]["calls"], 10);
        assert_eq!(f[0]["interval_calls"], 5);
        assert_eq!(f[0]["rate"], 10.0);
        assert!(f[0]["latency_ns"].is_null());
        assert!(f[0]["interval_latency_ns"].is_null());
        assert_eq!(f[1]["latency_ns"]["min"], 1000);
        assert_eq!(f[1]["latency_ns"]["max"], 2000);
        assert_eq!(f[1]["latency_ns"]["total"], 3000);
        assert_eq!(f[1]["interval_latency_ns"]["max"], 2000);
        let p50 = f[1]["interval_latency_ns"]["p50"].as_u64().unwrap();
        assert!((990..=1010).contains(&p50), "{p50}");
    }

    #[test]
    fn sorting_and_the_final_table() {
        let t = tick();
        let mut rows = figures(&t);
        sort(&mut rows, SortKey::Calls);
        assert_eq!(rows[0].row.id, 0);
        sort(&mut rows, SortKey::P99);
        assert_eq!(rows[0].row.id, 1);
        let table = final_table(&t, SortKey::Calls);
        assert!(table.contains("t:f0      10"), "{table}");
        assert!(table.contains("lost 0  filtered 0"), "{table}");
        assert_eq!(short_count(1234.0), "1234");
        assert_eq!(short_count(123_456.0), "123k");
        assert_eq!(short_count(12_345_678.0), "12.3M");
    }
}
