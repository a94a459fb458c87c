//! The report's filters (SPEC.md, "urec report": `--pid`, `--tid`, `--comm`, `--probe`,
//! `--min/max-latency`, `--time`): what they are, and the rules by which `report`, `script` and
//! `--perfetto` apply them alike ([`crate::calls::Calls`] applies them).

use urec_format::Probe;

/// Which events a report looks at. Empty lists select everything; several values of one kind
/// are alternatives (`--pid 1 --pid 2`), different kinds must all match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Process ids (`--pid`).
    pub pids: Vec<u32>,
    /// Thread ids (`--tid`).
    pub tids: Vec<u32>,
    /// Command names (`--comm`), matched exactly against the process's comm at the event.
    pub comms: Vec<String>,
    /// Probes (`--probe`): a probe's display name, one of its specs, or its symbol.
    pub probes: Vec<String>,
    /// Only calls at least this long (`--min-latency`); calls without a latency are left out.
    pub min_latency_ns: Option<u64>,
    /// Only calls at most this long (`--max-latency`).
    pub max_latency_ns: Option<u64>,
    /// Only calls that began in this window (`--time`).
    pub time: Option<TimeWindow>,
}

impl Filter {
    /// `--pid` and `--tid` keep an event of this thread.
    pub fn keeps_thread(&self, pid: u32, tid: u32) -> bool {
        (self.pids.is_empty() || self.pids.contains(&pid))
            && (self.tids.is_empty() || self.tids.contains(&tid))
    }

    /// `--comm` keeps an event of a process named `comm`.
    pub fn keeps_comm(&self, comm: &str) -> bool {
        self.comms.is_empty() || self.comms.iter().any(|c| c == comm)
    }

    /// `--min-latency` or `--max-latency` is given: calls are judged when they end.
    pub fn by_latency(&self) -> bool {
        self.min_latency_ns.is_some() || self.max_latency_ns.is_some()
    }

    /// `--min-latency` and `--max-latency` keep a call this long.
    pub fn keeps_latency(&self, latency: u64) -> bool {
        self.min_latency_ns.is_none_or(|min| latency >= min)
            && self.max_latency_ns.is_none_or(|max| latency <= max)
    }
}

/// `--time FROM..TO`: seconds since the recording's attach time, either end open. A call is
/// judged by its entry (an entry-only or return-only probe's event by its own time).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// From, inclusive, in ns after the attach.
    pub from_ns: Option<u64>,
    /// To, exclusive, in ns after the attach.
    pub to_ns: Option<u64>,
}

impl TimeWindow {
    /// The window in absolute ns, `[from, to)`, for an attach at `origin_ns`.
    pub fn bounds(&self, origin_ns: u64) -> (u64, u64) {
        (
            origin_ns.saturating_add(self.from_ns.unwrap_or(0)),
            self.to_ns
                .map_or(u64::MAX, |to| origin_ns.saturating_add(to)),
        )
    }
}

impl std::str::FromStr for TimeWindow {
    type Err = String;

    /// `2.5..`, `..10`, `1.2..3.4`.
    fn from_str(text: &str) -> Result<Self, String> {
        let Some((from, to)) = text.split_once("..") else {
            return Err(format!(
                "{text:?} is not FROM..TO (seconds: 2.5.., ..10, 1.2..3.4)"
            ));
        };
        let secs = |t: &str| -> Result<Option<u64>, String> {
            let t = t.trim();
            if t.is_empty() {
                return Ok(None);
            }
            match t.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some((v * 1e9).round() as u64)),
                _ => Err(format!("{t:?} is not a number of seconds ≥ 0")),
            }
        };
        let w = TimeWindow {
            from_ns: secs(from)?,
            to_ns: secs(to)?,
        };
        if let (Some(f), Some(t)) = (w.from_ns, w.to_ns) {
            if f >= t {
                return Err(format!("{text:?}: FROM must be before TO"));
            }
        }
        Ok(w)
    }
}

/// `--probe NAME` selects `probe`: NAME is its display name, one of its specs, or its symbol,
/// alone or as `SYMBOL@0xVADDR` (how probes on local functions sharing a name are told apart).
/// A display name without its `@0xVADDR` selects every such probe: `usdt:demo:mark` names all
/// the sites of that USDT probe, `usdt:demo:mark@0x1234` one of them.
pub(crate) fn answers_to(probe: &Probe, name: &str) -> bool {
    probe.name == name
        || probe
            .name
            .rsplit_once("@0x")
            .is_some_and(|(base, _)| base == name)
        || probe.specs.iter().any(|s| s == name)
        || probe.symbol == name
        || name
            .strip_prefix(probe.symbol.as_str())
            .is_some_and(|rest| {
                rest.strip_prefix("@0x")
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    == Some(probe.vaddr.0)
            })
}

/// `--time` in absolute ns. Its origin is the recording's attach time (read ahead from the
/// finish record, else the header's start: [`crate::input`]); in a file with neither, the time
/// of the first call judged, so a window still means "seconds into what was recorded".
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Window {
    /// `--time`, when given.
    window: Option<TimeWindow>,
    /// The attach time, when the file gives it.
    attach_ns: Option<u64>,
    /// `[from, to)` once the origin is known.
    bounds: Option<(u64, u64)>,
}

impl Window {
    pub(crate) fn new(window: Option<TimeWindow>, attach_ns: Option<u64>) -> Self {
        Self {
            window,
            attach_ns,
            bounds: None,
        }
    }

    /// Whether a call that began at `began_ns` is inside `--time` (always, without it).
    #[inline]
    pub(crate) fn keeps(&mut self, began_ns: u64) -> bool {
        let Some(window) = self.window else {
            return true;
        };
        let origin = self.attach_ns.unwrap_or(began_ns);
        let (from, to) = *self.bounds.get_or_insert_with(|| window.bounds(origin));
        from <= began_ns && began_ns < to
    }

    /// The attach time, when the file gives it.
    pub(crate) fn attach_ns(&self) -> Option<u64> {
        self.attach_ns
    }
}
