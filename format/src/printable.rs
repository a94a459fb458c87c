//! Text from a recording, shown to people: control characters escaped.
//!
//! A recording may come from anywhere, and most of its text is chosen by the traced programs
//! (comm, paths, arguments) or by whoever wrote the file (host, command line, probe names).
//! Printed raw, an escape sequence in a comm rewrites the terminal, a `\r` hides what came
//! before it, a bidirectional override reorders a line, and a control character makes an SVG
//! ill-formed XML. So every text output goes through [`Printable`] and every message through
//! [`printable`]: control characters become `\x1b`, bidirectional controls `\u{202e}`, bytes
//! that are not UTF-8 `\xff`. JSON needs none of this (its own escaping is exact).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// Whether `c` must not reach a terminal as is; `\n` and `\t` are decided by the caller.
fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(out: &mut String, c: char) {
    if (c as u32) < 0x100 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// One line of text (a message, a field), with every control character escaped, newlines and
/// tabs included.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hazard) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_hazard(c) {
            escape_char(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A writer that passes text through with control characters escaped, except the newlines
/// and tabs that lay the output out. Invalid UTF-8 is escaped byte by byte; a character split
/// across two writes is kept until its end arrives.
pub struct Printable<W: Write> {
    inner: W,
    /// The start of a UTF-8 sequence whose end has not been written yet (at most 3 bytes).
    carry: Vec<u8>,
}

impl<W: Write> Printable<W> {
    /// Escapes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        Printable {
            inner,
            carry: Vec::new(),
        }
    }

    fn write_text(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut rest = bytes;
        let mut out = String::new();
        while !rest.is_empty() {
            let (valid, bad) = match std::str::from_utf8(rest) {
                Ok(s) => (s, None),
                Err(e) => {
                    // The prefix up to valid_up_to() is valid UTF-8 by definition.
                    let valid = std::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or("");
                    (valid, Some(e))
                }
            };
            for c in valid.chars() {
                if is_hazard(c) && c != '\n' && c != '\t' {
                    escape_char(&mut out, c);
                } else {
                    out.push(c);
                }
            }
            rest = &rest[valid.len()..];
            match bad {
                None => break,
                Some(e) => match e.error_len() {
                    // An incomplete sequence at the very end: wait for the rest.
                    None => {
                        self.carry.extend_from_slice(rest);
                        break;
                    }
                    Some(n) => {
                        for &b in &rest[..n] {
                            let _ = write!(out, "\\x{b:02x}");
                        }
                        rest = &rest[n..];
                    }
                },
            }
        }
        self.inner.write_all(out.as_bytes())
    }

    /// The writer underneath.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Printable<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let clean = self.carry.is_empty()
            && !buf
                .iter()
                .any(|&b| (b < 0x20 && b != b'\n' && b != b'\t') || b >= 0x7f);
        if clean {
            self.inner.write_all(buf)?;
        } else if self.carry.is_empty() {
            self.write_text(buf)?;
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(buf);
            self.write_text(&joined)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
        assert_eq!(printable("a\x1b[31mred\r\n"), "a\\x1b[31mred\\x0d\\x0a");
        assert_eq!(printable("\u{9b}x\u{202e}y"), "\\x9bx\\u{202e}y");
    }

    #[test]
    fn writer_keeps_layout_and_splits() {
        let mut w = Printable::new(Vec::new());
        w.write_all(b"col\tx\n\x1b]0;t\x07 ").unwrap();
        let e = "é".as_bytes();
        w.write_all(&e[..1]).unwrap();
        w.write_all(&e[1..]).unwrap();
        w.write_all(b" \xff\xfe!\n").unwrap();
        let out = String::from_utf8(w.into_inner()).unwrap();
        assert_eq!(out, "col\tx\n\\x1b]0;t\\x07 é \\xff\\xfe!\n");
    }
}
