//! Byte-level building blocks: LEB128 varints, zigzag, a bounds-checked cursor, and the
//! row encoding of the header, metadata records and footer (docs/format.md, "Values").
//!
//! Every read is bounds-checked and returns [`Malformed`] rather than panicking: the bytes come
//! from a file, and a file can hold anything.

use crate::limits::{MAX_ARGS, MAX_PY_FRAMES, MAX_STACK_FRAMES, MAX_STRINGS};
use crate::types::*;

/// A decoding failure inside a chunk whose checksum was fine (a writer bug or crafted input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

pub(crate) type Res<T> = Result<T, Malformed>;

#[inline]
pub(crate) fn put_u64(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    (v >> 1) as i64 ^ -((v & 1) as i64)
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

pub(crate) fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_opt_u64(buf: &mut Vec<u8>, v: Option<u64>) {
    match v {
        None => buf.push(0),
        Some(v) => {
            buf.push(1);
            put_u64(buf, v);
        }
    }
}

pub(crate) fn put_build_id(buf: &mut Vec<u8>, id: &Option<BuildId>) {
    match id {
        None => put_u64(buf, 0),
        Some(id) => {
            put_u64(buf, id.0.len() as u64 + 1);
            buf.extend_from_slice(&id.0);
        }
    }
}

fn put_strs(buf: &mut Vec<u8>, v: &[String]) {
    put_u64(buf, v.len() as u64);
    for s in v {
        put_str(buf, s);
    }
}

/// A bounds-checked reader over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    pub(crate) fn at(buf: &'a [u8], pos: usize) -> Self {
        Cursor { buf, pos }
    }

    /// The whole buffer, to read a part of it again from a remembered position.
    pub(crate) fn buf(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    pub(crate) fn u64(&mut self) -> Res<u64> {
        let mut result = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(Malformed("a value runs past the end of its data"));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(Malformed("a varint overflows 64 bits"));
            }
            result |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(result);
            }
            shift += 7;
            if shift > 63 {
                return Err(Malformed("a varint overflows 64 bits"));
            }
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Res<u32> {
        u32::try_from(self.u64()?).map_err(|_| Malformed("a 32-bit value is out of range"))
    }

    pub(crate) fn u8(&mut self) -> Res<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(Malformed("a value runs past the end of its data"))?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn len(&mut self) -> Res<usize> {
        let n = self.u64()?;
        let left = self.buf.len().saturating_sub(self.pos);
        if n > left as u64 {
            return Err(Malformed("a length runs past the end of its data"));
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Res<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(Malformed("a value runs past the end of its data"))?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }

    /// A string; invalid UTF-8 (which a writer never produces) is replaced, not refused.
    pub(crate) fn string(&mut self) -> Res<String> {
        let n = self.len()?;
        Ok(String::from_utf8_lossy(self.bytes(n)?).into_owned())
    }

    fn strings(&mut self) -> Res<Vec<String>> {
        // The cap, not the bytes left: an empty string takes one byte but 24 in memory.
        let n = self.len()?;
        if n > MAX_STRINGS {
            return Err(Malformed(
                "a list of strings is longer than any urec writes",
            ));
        }
        (0..n).map(|_| self.string()).collect()
    }

    fn bool(&mut self) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Malformed("a flag is neither 0 nor 1")),
        }
    }

    fn opt_u64(&mut self) -> Res<Option<u64>> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    pub(crate) fn build_id(&mut self) -> Res<Option<BuildId>> {
        match self.u64()? {
            0 => Ok(None),
            n => {
                let n = usize::try_from(n - 1).map_err(|_| Malformed("build id too long"))?;
                Ok(Some(BuildId(self.bytes(n)?.to_vec())))
            }
        }
    }
}

// ---- Header ----

pub(crate) fn encode_header(buf: &mut Vec<u8>, h: &Header) {
    put_str(buf, &h.host);
    put_str(buf, &h.kernel);
    put_str(buf, &h.arch);
    put_strs(buf, &h.command);
    match &h.workload {
        None => buf.push(0),
        Some(w) => {
            buf.push(1);
            put_strs(buf, w);
        }
    }
    put_u64(buf, h.start_unix_ns);
    put_u64(buf, h.start_monotonic_ns);
}

pub(crate) fn decode_header(c: &mut Cursor<'_>) -> Res<Header> {
    Ok(Header {
        host: c.string()?,
        kernel: c.string()?,
        arch: c.string()?,
        command: c.strings()?,
        workload: if c.bool()? { Some(c.strings()?) } else { None },
        start_unix_ns: c.u64()?,
        start_monotonic_ns: c.u64()?,
    })
    // Fields a later minor version appends are ignored.
}

// ---- Metadata records ----

pub(crate) const TAG_PROBE: u8 = 1;
pub(crate) const TAG_PROCESS: u8 = 2;
pub(crate) const TAG_PROCESS_EVENT: u8 = 3;
pub(crate) const TAG_MAPPING: u8 = 4;
pub(crate) const TAG_STACK: u8 = 5;
pub(crate) const TAG_LOST: u8 = 6;
pub(crate) const TAG_FINISH: u8 = 7;
pub(crate) const TAG_SYMBOLS: u8 = 8;
pub(crate) const TAG_FILTERED: u8 = 9;
pub(crate) const TAG_AGGREGATE: u8 = 10;
pub(crate) const TAG_PY_CODE: u8 = 11;

fn kind_code(k: ProbeKind) -> u8 {
    match k {
        ProbeKind::EntryReturn => 0,
        ProbeKind::Entry => 1,
        ProbeKind::Return => 2,
    }
}

fn stack_mode_code(m: StackMode) -> u8 {
    match m {
        StackMode::None => 0,
        StackMode::FramePointer => 1,
        StackMode::Dwarf => 2,
    }
}

fn put_arg_type(buf: &mut Vec<u8>, t: ArgType) {
    match t {
        ArgType::Unsigned(w) => buf.extend_from_slice(&[0, w]),
        ArgType::Signed(w) => buf.extend_from_slice(&[1, w]),
        ArgType::Hex(w) => buf.extend_from_slice(&[2, w]),
        ArgType::String => buf.push(3),
        ArgType::Bitfield {
            width,
            offset,
            container,
        } => buf.extend_from_slice(&[4, width, offset, container]),
    }
}

fn arg_type(c: &mut Cursor<'_>) -> Res<ArgType> {
    Ok(match c.u8()? {
        0 => ArgType::Unsigned(c.u8()?),
        1 => ArgType::Signed(c.u8()?),
        2 => ArgType::Hex(c.u8()?),
        3 => ArgType::String,
        4 => ArgType::Bitfield {
            width: c.u8()?,
            offset: c.u8()?,
            container: c.u8()?,
        },
        _ => return Err(Malformed("unknown argument type")),
    })
}

pub(crate) fn event_kind_code(k: EventKind) -> u8 {
    match k {
        EventKind::Entry => 0,
        EventKind::Return => 1,
    }
}

/// Appends `record` as `tag, varint body length, body`. Events are not metadata and are
/// encoded by [`crate::events`]; passing one here is a bug.
pub(crate) fn encode_record(buf: &mut Vec<u8>, body: &mut Vec<u8>, record: &Record) {
    body.clear();
    let tag = match record {
        Record::Probe(p) => {
            put_u64(body, p.id.into());
            put_str(body, &p.name);
            put_strs(body, &p.specs);
            put_str(body, &p.binary);
            put_build_id(body, &p.build_id);
            put_str(body, &p.symbol);
            put_u64(body, p.vaddr.0);
            put_u64(body, p.offset.0);
            body.push(kind_code(p.kind));
            body.push(stack_mode_code(p.stack_mode));
            put_u64(body, p.args.len() as u64);
            for a in &p.args {
                put_str(body, &a.name);
                put_str(body, &a.fetch);
                put_arg_type(body, a.ty);
                body.push(u8::from(a.at_return));
            }
            // 2.2: trailing fields, which older readers skip.
            match &p.site {
                None => body.push(0),
                Some(site) => {
                    body.push(1);
                    put_u64(body, site.offset.0);
                    body.push(match site.path {
                        SitePath::Unknown => 0,
                        SitePath::Emulated => 1,
                        SitePath::SingleStepped => 2,
                    });
                    // 2.3: the probe cost, trailing too.
                    put_opt_u64(body, site.cost_ns);
                }
            }
            TAG_PROBE
        }
        Record::Process(p) => {
            put_u64(body, p.pid.into());
            put_u64(body, p.ppid.into());
            put_str(body, &p.comm);
            put_str(body, &p.exe);
            put_opt_u64(body, p.start_ns);
            // 1.2: trailing fields, which 1.1 readers skip.
            put_opt_u64(body, p.mnt_ns);
            put_opt_u64(body, p.pid_ns);
            match &p.cgroup {
                None => body.push(0),
                Some(c) => {
                    body.push(1);
                    put_str(body, c);
                }
            }
            TAG_PROCESS
        }
        Record::ProcessEvent(e) => {
            put_u64(body, e.pid.into());
            put_u64(body, e.time_ns);
            match &e.change {
                ProcessChange::Exec { comm, exe } => {
                    body.push(0);
                    put_str(body, comm);
                    put_str(body, exe);
                }
                ProcessChange::Comm(comm) => {
                    body.push(1);
                    put_str(body, comm);
                }
                ProcessChange::Exit => body.push(2),
            }
            TAG_PROCESS_EVENT
        }
        Record::Mapping(m) => {
            put_u64(body, m.pid.into());
            put_u64(body, m.time_ns);
            put_u64(body, m.start.0);
            put_u64(body, m.end.0);
            put_u64(body, m.offset.0);
            put_str(body, &m.path);
            put_u64(body, m.dev);
            put_u64(body, m.inode);
            put_build_id(body, &m.build_id);
            TAG_MAPPING
        }
        Record::Stack(s) => {
            put_u64(body, s.id.into());
            body.push(u8::from(s.truncated));
            put_u64(body, s.frames.len() as u64);
            let mut prev = 0u64;
            for f in &s.frames {
                put_u64(body, zigzag(f.0.wrapping_sub(prev) as i64));
                prev = f.0;
            }
            // 2.4: the Python frames, trailing and only when there are any, so that a native
            // stack is byte for byte a 2.3 one and a 2.3 reader skips them.
            if !s.python.is_empty() || s.python_truncated {
                body.push(u8::from(s.python_truncated));
                put_u64(body, s.python.len() as u64);
                for f in &s.python {
                    put_u64(body, u64::from(f.code) << 1 | u64::from(f.entry));
                    put_u64(body, f.line.into());
                }
            }
            TAG_STACK
        }
        Record::Lost(l) => {
            body.push(match l.source {
                LostSource::Ring => 0,
                LostSource::Sideband => 1,
                LostSource::Unwind => 2,
            });
            put_opt_u64(body, l.probe.map(u64::from));
            body.push(match l.kind {
                None => 0,
                Some(k) => 1 + event_kind_code(k),
            });
            put_u64(body, l.count);
            TAG_LOST
        }
        Record::Filtered(f) => {
            put_u64(body, f.probe.into());
            put_u64(body, f.count);
            TAG_FILTERED
        }
        Record::Aggregate(a) => {
            put_u64(body, a.probe.into());
            for v in [a.calls, a.returns, a.in_flight, a.filtered, a.sampled] {
                put_u64(body, v);
            }
            match &a.latency {
                None => body.push(0),
                Some(l) => {
                    body.push(1);
                    for v in [l.count, l.total, l.min, l.max] {
                        put_u64(body, v);
                    }
                    body.push(l.sub_bits);
                    put_u64(body, l.buckets.len() as u64);
                    // Indexes as gaps from the previous one: increasing by construction.
                    let mut next = 0u64;
                    for &(i, n) in &l.buckets {
                        put_u64(body, u64::from(i).wrapping_sub(next));
                        put_u64(body, n);
                        next = u64::from(i) + 1;
                    }
                }
            }
            TAG_AGGREGATE
        }
        Record::Finish(f) => {
            put_u64(body, f.attach_ns);
            put_u64(body, f.stop_ns);
            put_opt_u64(body, f.workload_status.map(|s| zigzag(s.into())));
            TAG_FINISH
        }
        Record::Symbols(s) => {
            crate::symbols::encode(body, s);
            TAG_SYMBOLS
        }
        Record::PyCode(p) => {
            put_u64(body, p.id.into());
            put_str(body, &p.qualname);
            put_str(body, &p.filename);
            put_u64(body, p.first_line.into());
            TAG_PY_CODE
        }
        Record::Event(_) => unreachable!("events are encoded in event chunks"),
    };
    buf.push(tag);
    put_bytes(buf, body);
}

/// Decodes one record body of a known tag; `Ok(None)` for a tag this version does not know
/// (a later minor version's record, skipped).
pub(crate) fn decode_record(tag: u8, c: &mut Cursor<'_>) -> Res<Option<Record>> {
    Ok(Some(match tag {
        TAG_PROBE => {
            let id = c.u32()?;
            let name = c.string()?;
            let specs = c.strings()?;
            let binary = c.string()?;
            let build_id = c.build_id()?;
            let symbol = c.string()?;
            let vaddr = Svma(c.u64()?);
            let offset = FileOffset(c.u64()?);
            let kind = match c.u8()? {
                0 => ProbeKind::EntryReturn,
                1 => ProbeKind::Entry,
                2 => ProbeKind::Return,
                _ => return Err(Malformed("unknown probe kind")),
            };
            let stack_mode = match c.u8()? {
                0 => StackMode::None,
                1 => StackMode::FramePointer,
                2 => StackMode::Dwarf,
                _ => return Err(Malformed("unknown stack mode")),
            };
            let n = c.len()?;
            if n > MAX_ARGS {
                return Err(Malformed(
                    "a probe has more arguments than any urec fetches",
                ));
            }
            let mut args = Vec::with_capacity(n);
            for _ in 0..n {
                args.push(ArgSpec {
                    name: c.string()?,
                    fetch: c.string()?,
                    ty: arg_type(c)?,
                    at_return: c.bool()?,
                });
            }
            // 2.2's trailing fields: absent in older files.
            let site = if !c.is_empty() && c.bool()? {
                Some(ProbeSite {
                    offset: FileOffset(c.u64()?),
                    path: match c.u8()? {
                        1 => SitePath::Emulated,
                        2 => SitePath::SingleStepped,
                        _ => SitePath::Unknown,
                    },
                    // 2.3's probe cost: absent in older files.
                    cost_ns: if c.is_empty() { None } else { c.opt_u64()? },
                })
            } else {
                None
            };
            Record::Probe(Probe {
                id,
                name,
                specs,
                binary,
                build_id,
                symbol,
                vaddr,
                offset,
                kind,
                stack_mode,
                args,
                site,
            })
        }
        TAG_PROCESS => {
            let mut p = Process {
                pid: c.u32()?,
                ppid: c.u32()?,
                comm: c.string()?,
                exe: c.string()?,
                start_ns: c.opt_u64()?,
                ..Process::default()
            };
            // 1.2's trailing fields: absent in a 1.1 file.
            if !c.is_empty() {
                p.mnt_ns = c.opt_u64()?;
                p.pid_ns = c.opt_u64()?;
                p.cgroup = if c.bool()? { Some(c.string()?) } else { None };
            }
            Record::Process(p)
        }
        TAG_PROCESS_EVENT => {
            let pid = c.u32()?;
            let time_ns = c.u64()?;
            let change = match c.u8()? {
                0 => ProcessChange::Exec {
                    comm: c.string()?,
                    exe: c.string()?,
                },
                1 => ProcessChange::Comm(c.string()?),
                2 => ProcessChange::Exit,
                _ => return Err(Malformed("unknown process change")),
            };
            Record::ProcessEvent(ProcessEvent {
                pid,
                time_ns,
                change,
            })
        }
        TAG_MAPPING => Record::Mapping(Mapping {
            pid: c.u32()?,
            time_ns: c.u64()?,
            start: Avma(c.u64()?),
            end: Avma(c.u64()?),
            offset: FileOffset(c.u64()?),
            path: c.string()?,
            dev: c.u64()?,
            inode: c.u64()?,
            build_id: c.build_id()?,
        }),
        TAG_STACK => {
            let id = c.u32()?;
            let truncated = c.bool()?;
            let n = c.len()?; // each frame takes at least one byte
            let kept = n.min(MAX_STACK_FRAMES);
            let mut frames = Vec::with_capacity(kept);
            let mut prev = 0u64;
            for i in 0..n {
                // Frames past the cap are still decoded, so that damage in them is caught
                // the same whatever the cap.
                prev = prev.wrapping_add(unzigzag(c.u64()?) as u64);
                if i < kept {
                    frames.push(Avma(prev));
                }
            }
            let (python, python_truncated) = decode_python(c)?;
            Record::Stack(Stack {
                id,
                frames,
                truncated: truncated || n > kept,
                python,
                python_truncated,
            })
        }
        TAG_LOST => {
            let source = match c.u8()? {
                0 => LostSource::Ring,
                1 => LostSource::Sideband,
                2 => LostSource::Unwind,
                _ => return Err(Malformed("unknown lost source")),
            };
            let probe = match c.opt_u64()? {
                None => None,
                Some(p) => Some(u32::try_from(p).map_err(|_| Malformed("probe id too large"))?),
            };
            let kind = match c.u8()? {
                0 => None,
                1 => Some(EventKind::Entry),
                2 => Some(EventKind::Return),
                _ => return Err(Malformed("unknown event kind")),
            };
            Record::Lost(Lost {
                source,
                probe,
                kind,
                count: c.u64()?,
            })
        }
        TAG_FINISH => Record::Finish(Finish {
            attach_ns: c.u64()?,
            stop_ns: c.u64()?,
            workload_status: match c.opt_u64()? {
                None => None,
                Some(v) => Some(
                    i32::try_from(unzigzag(v))
                        .map_err(|_| Malformed("exit status out of range"))?,
                ),
            },
        }),
        TAG_SYMBOLS => Record::Symbols(crate::symbols::decode(c)?),
        TAG_FILTERED => Record::Filtered(Filtered {
            probe: c.u32()?,
            count: c.u64()?,
        }),
        TAG_AGGREGATE => Record::Aggregate(decode_aggregate(c)?),
        TAG_PY_CODE => Record::PyCode(PyCode {
            id: c.u32()?,
            qualname: c.string()?.into(),
            filename: c.string()?.into(),
            first_line: c.u32()?,
        }),
        _ => return Ok(None),
    }))
}

/// A Stack body's Python frames (2.4), absent in older files and in native stacks.
fn decode_python(c: &mut Cursor<'_>) -> Res<(Vec<PyFrame>, bool)> {
    if c.is_empty() {
        return Ok((Vec::new(), false));
    }
    let truncated = c.bool()?;
    // Each frame takes at least two bytes; the cap, not the bytes left, bounds memory.
    let n = c.len()?;
    let kept = n.min(MAX_PY_FRAMES);
    let mut frames = Vec::with_capacity(kept);
    for i in 0..n {
        let word = c.u64()?;
        let line = c.u32()?;
        let code = u32::try_from(word >> 1).map_err(|_| Malformed("python code id too large"))?;
        if i < kept {
            frames.push(PyFrame {
                code,
                line,
                entry: word & 1 == 1,
            });
        }
    }
    Ok((frames, truncated || n > kept))
}

fn decode_aggregate(c: &mut Cursor<'_>) -> Res<Aggregate> {
    let probe = c.u32()?;
    let (calls, returns, in_flight, filtered, sampled) =
        (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?);
    let latency = match c.u8()? {
        0 => None,
        1 => {
            let (count, total, min, max) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
            let sub_bits = c.u8()?;
            if u32::from(sub_bits) > crate::log_linear::KERNEL_MAX_BITS {
                return Err(Malformed("histogram sub-bucket bits out of range"));
            }
            let limit = crate::log_linear::kernel_buckets(sub_bits.into());
            let n = c.u64()?;
            if n > limit as u64 {
                return Err(Malformed("more histogram buckets than the layout has"));
            }
            let mut buckets = Vec::with_capacity(n as usize);
            let mut next = 0u64;
            for _ in 0..n {
                let i = next
                    .checked_add(c.u64()?)
                    .filter(|&i| i < limit as u64)
                    .ok_or(Malformed("histogram bucket out of range"))?;
                buckets.push((i as u32, c.u64()?));
                next = i + 1;
            }
            Some(LatencyAggregate {
                count,
                total,
                min,
                max,
                sub_bits,
                buckets,
            })
        }
        _ => return Err(Malformed("unknown latency flag")),
    };
    Ok(Aggregate {
        probe,
        calls,
        returns,
        in_flight,
        filtered,
        sampled,
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: &[u8]) -> Option<Record> {
        decode_record(TAG_PROCESS, &mut Cursor::new(body)).unwrap_or_else(|e| panic!("{}", e.0))
    }

    #[test]
    fn process_context_is_trailing_and_optional() {
        let full = Process {
            pid: 7,
            ppid: 1,
            comm: "nginx".into(),
            exe: "/usr/sbin/nginx".into(),
            start_ns: Some(9),
            mnt_ns: Some(4026532200),
            pid_ns: Some(4026532201),
            cgroup: Some("/system.slice/docker-abc.scope".into()),
        };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        encode_record(&mut buf, &mut body, &Record::Process(full.clone()));
        assert_eq!(decode(&body), Some(Record::Process(full.clone())));
        // A 1.1 body (no context): read, the context unknown.
        let old = Process {
            mnt_ns: None,
            pid_ns: None,
            cgroup: None,
            ..full.clone()
        };
        encode_record(&mut buf, &mut body, &Record::Process(old.clone()));
        assert_eq!(&body[body.len() - 3..], &[0, 0, 0]);
        assert_eq!(decode(&body[..body.len() - 3]), Some(Record::Process(old)));
        // A later minor version's fields after these: skipped.
        encode_record(&mut buf, &mut body, &Record::Process(full.clone()));
        body.extend_from_slice(&[5, 1, 2, 3]);
        assert_eq!(decode(&body), Some(Record::Process(full)));
    }

    #[test]
    fn probe_site_is_trailing_and_optional() {
        let full = Probe {
            id: 3,
            name: "t:f".into(),
            specs: vec!["t:f".into()],
            binary: "/t".into(),
            build_id: None,
            symbol: "f".into(),
            vaddr: Svma(0x1130),
            offset: FileOffset(0x1130),
            kind: ProbeKind::EntryReturn,
            stack_mode: StackMode::FramePointer,
            args: Vec::new(),
            site: Some(ProbeSite {
                offset: FileOffset(0x1134),
                path: SitePath::Emulated,
                cost_ns: Some(410),
            }),
        };
        let decode = |body: &[u8]| {
            decode_record(TAG_PROBE, &mut Cursor::new(body)).unwrap_or_else(|e| panic!("{}", e.0))
        };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        encode_record(&mut buf, &mut body, &Record::Probe(full.clone()));
        assert_eq!(decode(&body), Some(Record::Probe(full.clone())));
        // A 1.6 body (no site): read, the site unknown.
        let old = Probe {
            site: None,
            ..full.clone()
        };
        encode_record(&mut buf, &mut body, &Record::Probe(old.clone()));
        assert_eq!(body.last(), Some(&0));
        assert_eq!(decode(&body[..body.len() - 1]), Some(Record::Probe(old)));
        // A 2.2 body (a site, no cost after it): read, the cost unknown.
        encode_record(&mut buf, &mut body, &Record::Probe(full.clone()));
        assert_eq!(body[body.len() - 3..], [1, 0x9a, 0x03]); // opt_u64 Some(410)
        let no_cost = Probe {
            site: full.site.map(|s| ProbeSite { cost_ns: None, ..s }),
            ..full.clone()
        };
        assert_eq!(
            decode(&body[..body.len() - 3]),
            Some(Record::Probe(no_cost.clone()))
        );
        // 2.3 with the cost not measured.
        encode_record(&mut buf, &mut body, &Record::Probe(no_cost.clone()));
        assert_eq!(decode(&body), Some(Record::Probe(no_cost)));
        // A later minor version's fields after these: skipped.
        encode_record(&mut buf, &mut body, &Record::Probe(full.clone()));
        body.extend_from_slice(&[5, 1, 2, 3]);
        assert_eq!(decode(&body), Some(Record::Probe(full)));
    }

    #[test]
    fn aggregate_histograms_are_held_to_their_layout() {
        let agg = |sub_bits, buckets| {
            Record::Aggregate(Aggregate {
                probe: 3,
                calls: 10,
                returns: 10,
                latency: Some(LatencyAggregate {
                    count: 10,
                    total: 100,
                    min: 1,
                    max: 20,
                    sub_bits,
                    buckets,
                }),
                ..Aggregate::default()
            })
        };
        let decode = |r: &Record| {
            let (mut buf, mut body) = (Vec::new(), Vec::new());
            encode_record(&mut buf, &mut body, r);
            decode_record(TAG_AGGREGATE, &mut Cursor::new(&body))
        };
        let ok = agg(6, vec![(0, 1), (2495, 9)]);
        assert_eq!(decode(&ok).ok().flatten(), Some(ok));
        assert!(
            decode(&agg(7, vec![(0, 1)])).is_err(),
            "more bits than the kernel's"
        );
        assert!(
            decode(&agg(6, vec![(2496, 1)])).is_err(),
            "past the last bucket"
        );
        assert!(
            decode(&agg(0, vec![(45, 1)])).is_err(),
            "past a coarse layout's last"
        );
        // A writer that repeated an index encodes a wrapped gap: refused, not reordered.
        assert!(decode(&agg(6, vec![(5, 1), (5, 1)])).is_err());
    }

    #[test]
    fn python_frames_are_trailing_and_cost_native_stacks_nothing() {
        let decode = |body: &[u8]| decode_record(TAG_STACK, &mut Cursor::new(body));
        let native = Stack {
            id: 4,
            frames: vec![Avma(0x1010), Avma(0x2000)],
            truncated: false,
            ..Stack::default()
        };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        encode_record(&mut buf, &mut body, &Record::Stack(native.clone()));
        // Exactly 2.3's body: id, truncated, n, two zigzag deltas.
        assert_eq!(body, [4, 0, 2, 0xa0, 0x40, 0xe0, 0x3f]);
        assert_eq!(decode(&body), Ok(Some(Record::Stack(native.clone()))));
        let py = Stack {
            python: vec![
                PyFrame {
                    code: 2,
                    line: 3,
                    entry: false,
                },
                PyFrame {
                    code: 70,
                    line: 0,
                    entry: true,
                },
            ],
            python_truncated: true,
            ..native.clone()
        };
        encode_record(&mut buf, &mut body, &Record::Stack(py.clone()));
        assert_eq!(&body[7..], [1, 2, 4, 3, 0x8d, 0x01, 0]);
        assert_eq!(decode(&body), Ok(Some(Record::Stack(py.clone()))));
        // A 2.3 reader's view: the native part, the rest skipped as trailing fields.
        assert_eq!(decode(&body[..7]), Ok(Some(Record::Stack(native))));
        // A later minor version's fields after these: skipped.
        body.extend_from_slice(&[5, 1, 2, 3]);
        assert_eq!(decode(&body), Ok(Some(Record::Stack(py))));
        // A count past the bytes, a code id past u32, a flag that is no bool: damage.
        assert!(decode(&[4, 0, 0, 0, 200, 1]).is_err());
        assert!(decode(&[4, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x7f, 0]).is_err());
        assert!(decode(&[4, 0, 0, 2, 0]).is_err());
    }

    #[test]
    fn a_long_python_chain_keeps_its_innermost_frames_and_says_truncated() {
        let long = Stack {
            id: 1,
            python: (0..MAX_PY_FRAMES as u32 + 10)
                .map(|code| PyFrame {
                    code,
                    line: 1,
                    entry: false,
                })
                .collect(),
            ..Stack::default()
        };
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        encode_record(&mut buf, &mut body, &Record::Stack(long.clone()));
        let Ok(Some(Record::Stack(read))) = decode_record(TAG_STACK, &mut Cursor::new(&body))
        else {
            panic!("not read back");
        };
        assert_eq!(read.python, long.python[..MAX_PY_FRAMES]);
        assert!(read.python_truncated);
    }

    #[test]
    fn py_code_round_trips() {
        let code = Record::PyCode(PyCode {
            id: 9,
            qualname: "Worker.<locals>.run".into(),
            filename: "/srv/app/worker.py".into(),
            first_line: 120,
        });
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        encode_record(&mut buf, &mut body, &code);
        assert_eq!(buf[0], TAG_PY_CODE);
        assert_eq!(
            decode_record(TAG_PY_CODE, &mut Cursor::new(&body)),
            Ok(Some(code))
        );
        assert!(decode_record(TAG_PY_CODE, &mut Cursor::new(&body[..body.len() - 1])).is_err());
    }
}
