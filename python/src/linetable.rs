//! The location table of CPython 3.11+ code objects (`co_linetable`, described in CPython's
//! `Objects/locations.md`), decoded only as far as the line: the recorder needs the line of one
//! instruction per frame, not columns.
//!
//! The table is a sequence of entries, each covering `(first_byte & 7) + 1` code units (2-byte
//! `_Py_CODEUNIT`s, inline caches included) and saying how the line changes:
//!
//! | code (`first_byte >> 3 & 15`) | line | bytes after the first |
//! |---|---|---|
//! | 0–9 (short form) | unchanged | 1 (columns) |
//! | 10–12 (one-line form) | + code − 10 | 2 (columns) |
//! | 13 (no column info) | + signed varint | the varint |
//! | 14 (long form) | + signed varint | the varint, then end line, column, end column varints |
//! | 15 (no location) | none for these units (the running line is kept) | 0 |
//!
//! Varints are 6-bit chunks, low first, bit 6 set when another follows; a signed varint holds
//! `v << 1` or `(-v << 1) | 1`. Only the first byte of an entry has bit 7 set, so the decoder
//! does what CPython's `advance()` (`Objects/codeobject.c`) does: read the line delta, then
//! skip to the next byte with bit 7 set, whatever the form's other fields are.

/// The line of the code unit at byte offset `offset` from the first instruction, as
/// CPython's `PyCode_Addr2Line(code, offset)` computes it: None for a unit without a location
/// (code 15), an offset past the table, a line that is not positive, or a table that ends
/// mid-entry (the table came from another process and may be cut or corrupt).
pub fn line_at_byte(table: &[u8], first_line: i64, offset: u64) -> Option<u32> {
    let mut line = first_line;
    let mut start = 0u64;
    let mut at = 0usize;
    while at < table.len() {
        let first = table[at];
        if first & 0x80 == 0 {
            return None;
        }
        let code = (first >> 3) & 15;
        let len = (u64::from(first & 7) + 1) * 2;
        let delta = match code {
            0..=9 | 15 => 0,
            10..=12 => i64::from(code) - 10,
            _ => signed_varint(table.get(at + 1..)?)?,
        };
        line = line.checked_add(delta)?;
        if (start..start + len).contains(&offset) {
            return if code == 15 {
                None
            } else {
                u32::try_from(line).ok().filter(|&l| l > 0)
            };
        }
        start += len;
        at += 1;
        while at < table.len() && table[at] & 0x80 == 0 {
            at += 1;
        }
    }
    None
}

/// An unsigned varint at the start of `bytes`, or None when it runs past the end or past 32
/// bits (CPython's own are `int`s).
fn varint(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        let shift = 6 * i as u32;
        if shift >= 32 {
            return None;
        }
        value |= u32::from(b & 63).checked_shl(shift)?;
        if b & 64 == 0 {
            return Some(value);
        }
    }
    None
}

fn signed_varint(bytes: &[u8]) -> Option<i64> {
    let v = varint(bytes)?;
    let magnitude = i64::from(v >> 1);
    Some(if v & 1 == 1 { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-made entries of each form (the ground truth against CPython's own `co_lines()` is
    /// `tests/naming.rs`).
    #[test]
    fn each_form() {
        let table = [
            0x80 | (1 << 3),      // short form, 1 unit: line 10
            0x05,                 // its column byte
            0x80 | (11 << 3) | 1, // one-line form +1, 2 units: line 11
            0x02,
            0x03,
            0x80 | (13 << 3),        // no column, delta varint: -3 → 8
            0x07,                    // (3 << 1) | 1
            0x80 | (15 << 3),        // no location, 1 unit
            0x80 | (14 << 3) | 2,    // long form, 3 units, +200 → 208
            0x40 | (400 & 63) as u8, // 400 = 200 << 1, low chunk with "more"
            (400 >> 6) as u8,
            0x00, // end line delta
            0x01, // column + 1
            0x02, // end column + 1
        ];
        let at = |off| line_at_byte(&table, 10, off);
        assert_eq!(at(0), Some(10));
        assert_eq!(at(1), Some(10));
        assert_eq!((at(2), at(4), at(5)), (Some(11), Some(11), Some(11)));
        assert_eq!(at(6), Some(8));
        assert_eq!(at(8), None);
        assert_eq!((at(10), at(14), at(15)), (Some(208), Some(208), Some(208)));
        assert_eq!(at(16), None, "past the table");
    }

    #[test]
    fn cut_or_corrupt_tables_give_no_line() {
        // A long form whose varint runs off the end.
        assert_eq!(line_at_byte(&[0x80 | (14 << 3), 0x41], 1, 0), None);
        // A table that does not start at an entry.
        assert_eq!(line_at_byte(&[0x05, 0x80], 1, 0), None);
        // A line that would not be positive.
        assert_eq!(line_at_byte(&[0x80 | (13 << 3), 0x03], 1, 0), None);
        // A varint longer than 32 bits.
        assert_eq!(
            line_at_byte(
                &[0x80 | (13 << 3), 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 1],
                1,
                0
            ),
            None
        );
        assert_eq!(line_at_byte(&[], 1, 0), None);
    }
}
