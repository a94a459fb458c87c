//! Showing fetched argument values as the kernel's uprobe tracer does: decimal for `u`/`s`
//! types, `0x` hex for `x` types, C-escaped quoted strings capped at 256 bytes, `(fault)`.

use std::fmt::Write;

use urec_format::{ArgType, ArgValue};

/// Longest string shown, in bytes; longer ones end in `...` after the closing quote.
const STRING_CAP: usize = 256;

fn mask(v: u64, bits: u8) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

/// Appends `value` shown as `ty` to `out`.
pub(crate) fn format_arg(out: &mut String, ty: ArgType, value: &ArgValue) {
    match (value, ty) {
        (ArgValue::Fault, _) => out.push_str("(fault)"),
        (ArgValue::Int(v), ArgType::Unsigned(bits)) => {
            let _ = write!(out, "{}", mask(*v, bits));
        }
        (ArgValue::Int(v), ArgType::Signed(bits)) => {
            let bits = u32::from(bits.clamp(1, 64));
            let shift = 64 - bits;
            let _ = write!(out, "{}", ((*v << shift) as i64) >> shift);
        }
        (ArgValue::Int(v), ArgType::Bitfield { width, offset, .. }) => {
            let _ = write!(
                out,
                "{}",
                mask(v.checked_shr(u32::from(offset)).unwrap_or(0), width)
            );
        }
        (ArgValue::Int(v), ArgType::Hex(bits)) => {
            let _ = write!(out, "{:#x}", mask(*v, bits));
        }
        (ArgValue::Int(v), ArgType::String) => {
            let _ = write!(out, "{v:#x}");
        }
        (ArgValue::Str { bytes, truncated }, _) => {
            out.push('"');
            let shown = &bytes[..bytes.len().min(STRING_CAP)];
            for &b in shown {
                match b {
                    b'"' => out.push_str("\\\""),
                    b'\\' => out.push_str("\\\\"),
                    b'\n' => out.push_str("\\n"),
                    b'\t' => out.push_str("\\t"),
                    b'\r' => out.push_str("\\r"),
                    0x20..=0x7e => out.push(char::from(b)),
                    _ => {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
            }
            out.push('"');
            if *truncated || bytes.len() > STRING_CAP {
                out.push_str("...");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(ty: ArgType, v: ArgValue) -> String {
        let mut s = String::new();
        format_arg(&mut s, ty, &v);
        s
    }

    #[test]
    fn every_type() {
        assert_eq!(show(ArgType::Unsigned(8), ArgValue::Int(0x1ff)), "255");
        assert_eq!(show(ArgType::Signed(32), ArgValue::Int(0xffff_fffe)), "-2");
        assert_eq!(show(ArgType::Signed(64), ArgValue::Int(u64::MAX)), "-1");
        assert_eq!(show(ArgType::Hex(16), ArgValue::Int(0x12345)), "0x2345");
        assert_eq!(
            show(
                ArgType::Bitfield {
                    width: 3,
                    offset: 4,
                    container: 8
                },
                ArgValue::Int(0b1101_0000)
            ),
            "5"
        );
        assert_eq!(show(ArgType::Hex(64), ArgValue::Fault), "(fault)");
        assert_eq!(
            show(
                ArgType::String,
                ArgValue::Str {
                    bytes: b"a\"b\\\n\x01".to_vec(),
                    truncated: false
                }
            ),
            r#""a\"b\\\n\x01""#
        );
        let long = show(
            ArgType::String,
            ArgValue::Str {
                bytes: vec![b'x'; 300],
                truncated: false,
            },
        );
        assert_eq!(long.len(), 256 + 2 + 3);
        assert!(long.ends_with("\"..."));
    }
}
