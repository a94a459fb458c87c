//! Chunk framing: the file prefix, chunk frames with their checksums, the trailer, and the
//! walk over a file's chunks that survives damage (docs/format.md, "Chunks").
//!
//! Each chunk starts with four sync bytes, so that after a damaged chunk the walk can find the
//! next good one by scanning for them; a candidate only counts when its whole frame checks out
//! (lengths in range, CRC-32 over the frame fields and payload), so sync bytes that happen to
//! occur inside compressed data do no harm.

/// First eight bytes of every urec data file. The high byte first and the CR LF / ^Z after the
/// name catch transfers that mangle binary files, as PNG's signature does.
pub(crate) const MAGIC: [u8; 8] = [0x89, b'U', b'R', b'E', b'C', b'\r', b'\n', 0x1a];
/// Magic, major, minor, flags.
pub(crate) const PREFIX_LEN: usize = 16;
pub(crate) const SYNC: [u8; 4] = *b"uCHK";
pub(crate) const FRAME_LEN: usize = 24;
/// No chunk is larger than this, stored or raw: it bounds what a damaged length can make the
/// reader allocate.
pub(crate) const MAX_CHUNK_LEN: u32 = 64 << 20;
pub(crate) const TRAILER_MAGIC: [u8; 4] = *b"uEND";
pub(crate) const TRAILER_LEN: usize = 16;

pub(crate) const KIND_HEADER: u8 = 1;
pub(crate) const KIND_META: u8 = 2;
pub(crate) const KIND_EVENTS: u8 = 3;
pub(crate) const KIND_FOOTER: u8 = 4;
pub(crate) const KIND_SYMBOLS: u8 = 5;

pub(crate) const CODEC_NONE: u8 = 0;
pub(crate) const CODEC_ZSTD: u8 = 1;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The frame header of a chunk with this payload.
pub(crate) fn frame(kind: u8, codec: u8, raw_len: u32, count: u32, payload: &[u8]) -> [u8; 24] {
    let mut h = [0u8; FRAME_LEN];
    h[0..4].copy_from_slice(&SYNC);
    h[4] = kind;
    h[5] = codec;
    h[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&raw_len.to_le_bytes());
    h[16..20].copy_from_slice(&count.to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[4..20]);
    crc.update(payload);
    h[20..24].copy_from_slice(&crc.finalize().to_le_bytes());
    h
}

/// The trailer that points at the footer chunk.
pub(crate) fn trailer(footer_offset: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(&footer_offset.to_le_bytes());
    t[8..12].copy_from_slice(&TRAILER_MAGIC);
    let crc = crc32fast::hash(&t[0..12]);
    t[12..16].copy_from_slice(&crc.to_le_bytes());
    t
}

/// The footer offset a valid trailer at the end of `data` points to.
pub(crate) fn parse_trailer(data: &[u8]) -> Option<usize> {
    parse_trailer_at(data, data.len().checked_sub(TRAILER_LEN)?)
}

/// The footer offset a valid trailer at `pos` points to.
pub(crate) fn parse_trailer_at(data: &[u8], pos: usize) -> Option<usize> {
    let t = data.get(pos..pos.checked_add(TRAILER_LEN)?)?;
    if t[8..12] != TRAILER_MAGIC || crc32fast::hash(&t[0..12]) != le32(t, 12) {
        return None;
    }
    let mut off = [0u8; 8];
    off.copy_from_slice(&t[0..8]);
    usize::try_from(u64::from_le_bytes(off)).ok()
}

/// A chunk whose frame checked out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawChunk<'a> {
    pub offset: usize,
    pub kind: u8,
    pub codec: u8,
    pub raw_len: u32,
    pub count: u32,
    pub payload: &'a [u8],
}

impl RawChunk<'_> {
    /// Bytes the chunk takes in the file, frame included.
    pub(crate) fn stored_len(&self) -> usize {
        FRAME_LEN + self.payload.len()
    }
}

pub(crate) enum Check<'a> {
    Ok(RawChunk<'a>),
    /// The file ends before the chunk does.
    Incomplete(&'static str),
    /// Whatever is here is not a good chunk.
    Bad(&'static str),
}

/// Checks the chunk frame at `pos`.
pub(crate) fn check(data: &[u8], pos: usize) -> Check<'_> {
    let rest = data.get(pos..).unwrap_or(&[]);
    if rest.len() < FRAME_LEN {
        let n = rest.len().min(SYNC.len());
        return if rest[..n] == SYNC[..n] {
            Check::Incomplete("the file ends inside a chunk header")
        } else {
            Check::Bad("no chunk starts here")
        };
    }
    if rest[0..4] != SYNC {
        return Check::Bad("no chunk starts here");
    }
    let stored = le32(rest, 8);
    let raw_len = le32(rest, 12);
    if stored > MAX_CHUNK_LEN || raw_len > MAX_CHUNK_LEN {
        return Check::Bad("a chunk length is out of range");
    }
    let end = FRAME_LEN + stored as usize;
    if end > rest.len() {
        return Check::Incomplete("the file ends inside a chunk");
    }
    let payload = &rest[FRAME_LEN..end];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&rest[4..20]);
    crc.update(payload);
    if crc.finalize() != le32(rest, 20) {
        return Check::Bad("checksum mismatch");
    }
    Check::Ok(RawChunk {
        offset: pos,
        kind: rest[4],
        codec: rest[5],
        raw_len,
        count: le32(rest, 16),
        payload,
    })
}

/// The first position at or after `from` where a good chunk starts.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while pos + FRAME_LEN <= data.len() {
        let i = data[pos..].windows(4).position(|w| w == SYNC)?;
        pos += i;
        if let Check::Ok(_) = check(data, pos) {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// One step of the walk.
pub(crate) enum Step<'a> {
    /// A good chunk.
    Chunk(RawChunk<'a>),
    /// `len` damaged bytes at `offset` were skipped; a good chunk follows them.
    Skipped {
        offset: usize,
        len: usize,
        reason: &'static str,
    },
    /// The end. `truncated` says where and why when the file ends without its footer;
    /// `trailing` counts unexpected bytes after the footer; `unfinished` is where an appended
    /// section starts that has no footer of its own (its step was interrupted).
    End {
        truncated: Option<(usize, &'static str)>,
        trailing: usize,
        unfinished: Option<usize>,
    },
}

/// Walks the chunks of `data` from `pos` on.
pub(crate) struct Walker<'a> {
    data: &'a [u8],
    pos: usize,
    after_footer: bool,
    done: bool,
    /// Where the section appended after a complete recording starts, once one was met.
    appendix: Option<usize>,
}

impl<'a> Walker<'a> {
    pub(crate) fn new(data: &'a [u8], pos: usize) -> Self {
        Walker {
            data,
            pos,
            after_footer: false,
            done: false,
            appendix: None,
        }
    }

    pub(crate) fn next_step(&mut self) -> Option<Step<'a>> {
        if self.done {
            return None;
        }
        let data = self.data;
        if self.after_footer {
            let rest = data.len() - self.pos;
            let trailer = parse_trailer_at(data, self.pos).is_some();
            if trailer && rest > TRAILER_LEN {
                // A section appended to the complete recording (symbols): walk on.
                self.after_footer = false;
                self.pos += TRAILER_LEN;
                self.appendix = Some(self.pos);
            } else {
                self.done = true;
                let clean = rest == 0 || (rest == TRAILER_LEN && trailer);
                return Some(Step::End {
                    truncated: None,
                    trailing: if clean { 0 } else { rest },
                    unfinished: None,
                });
            }
        }
        if self.pos >= data.len() {
            self.done = true;
            return Some(self.end_without_footer(self.pos, "the file ends without its footer"));
        }
        let (reason, incomplete) = match check(data, self.pos) {
            Check::Ok(chunk) => {
                self.pos += chunk.stored_len();
                self.after_footer = chunk.kind == KIND_FOOTER;
                return Some(Step::Chunk(chunk));
            }
            Check::Incomplete(reason) => (reason, true),
            Check::Bad(reason) => (reason, false),
        };
        let offset = self.pos;
        match resync(data, offset + 1) {
            Some(next) => {
                self.pos = next;
                Some(Step::Skipped {
                    offset,
                    len: next - offset,
                    reason,
                })
            }
            None if incomplete => {
                self.done = true;
                Some(self.end_without_footer(offset, reason))
            }
            None => {
                // Damage up to the end: count it, then report the missing footer.
                self.pos = data.len();
                Some(Step::Skipped {
                    offset,
                    len: data.len() - offset,
                    reason,
                })
            }
        }
    }

    /// The end of a walk that met no (further) footer: a truncated recording, or an appended
    /// section whose step did not finish, which leaves the recording before it complete.
    fn end_without_footer(&self, offset: usize, reason: &'static str) -> Step<'a> {
        match self.appendix {
            Some(start) => Step::End {
                truncated: None,
                trailing: 0,
                unfinished: Some(start),
            },
            None => Step::End {
                truncated: Some((offset, reason)),
                trailing: 0,
                unfinished: None,
            },
        }
    }
}
