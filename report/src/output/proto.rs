//! A minimal protobuf wire-format writer for the two protobuf exports (`--pprof`, `--perfetto`).
//!
//! Only what those need: varints, 64-bit fixed values, length-delimited bytes and nested
//! messages. A nested message is written into its own scratch [`Msg`] and then appended with
//! its length, so no size has to be known in advance; the exports build one small message at a
//! time (a sample, a packet) and stream it out, which keeps memory bounded.
//!
//! Wire format (protobuf "Encoding" documentation): a field is a key `(number << 3) | wire
//! type` as a varint, then the value: wire type 0 a varint, 1 eight little-endian bytes, 2 a
//! varint length and that many bytes. Default values (0, empty) are left out, as proto3 does.

/// One message being written.
#[derive(Clone, Debug, Default)]
pub(crate) struct Msg {
    buf: Vec<u8>,
}

const VARINT: u64 = 0;
const LEN: u64 = 2;

impl Msg {
    /// An empty message.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The encoded bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the message, keeping its allocation.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u64) {
        self.varint((u64::from(field) << 3) | wire);
    }

    /// An unsigned (or enum, or bool) field; left out when 0.
    pub(crate) fn uint(&mut self, field: u32, v: u64) {
        if v != 0 {
            self.uint_always(field, v);
        }
    }

    /// An unsigned field written even when 0 (repeated packed-less values, required zeros).
    pub(crate) fn uint_always(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    /// A signed `int64` / `int32` field (two's complement varint); left out when 0.
    pub(crate) fn int(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, VARINT);
            self.varint(v as u64);
        }
    }

    /// A `bool` field, written only when true.
    pub(crate) fn bool(&mut self, field: u32, v: bool) {
        if v {
            self.uint_always(field, 1);
        }
    }

    /// A `bytes` or `string` field, written even when empty (pprof's string table starts with
    /// "").
    pub(crate) fn bytes_field(&mut self, field: u32, v: &[u8]) {
        self.key(field, LEN);
        self.varint(v.len() as u64);
        self.buf.extend_from_slice(v);
    }

    /// A `string` field, written even when empty.
    pub(crate) fn str(&mut self, field: u32, v: &str) {
        self.bytes_field(field, v.as_bytes());
    }

    /// A nested message.
    pub(crate) fn msg(&mut self, field: u32, m: &Msg) {
        self.bytes_field(field, &m.buf);
    }

    /// A packed `repeated uint64` field; left out when empty.
    pub(crate) fn packed(&mut self, field: u32, values: impl IntoIterator<Item = u64>) {
        let mut inner = Msg::new();
        for v in values {
            inner.varint(v);
        }
        if !inner.buf.is_empty() {
            self.bytes_field(field, &inner.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_the_protobuf_documentation_says() {
        // The documentation's examples: field 1 = 150 → 08 96 01; field 2 = "testing".
        let mut m = Msg::new();
        m.uint(1, 150);
        assert_eq!(m.bytes(), &[0x08, 0x96, 0x01]);
        let mut m = Msg::new();
        m.str(2, "testing");
        assert_eq!(m.bytes(), b"\x12\x07testing");
        let mut m = Msg::new();
        m.packed(4, [3, 270, 86942]);
        assert_eq!(m.bytes(), &[0x22, 0x06, 0x03, 0x8E, 0x02, 0x9E, 0xA7, 0x05]);
        let mut m = Msg::new();
        m.int(1, -1);
        assert_eq!(m.bytes().len(), 11);
        let mut m = Msg::new();
        m.uint(1, 0);
        m.packed(2, []);
        assert!(m.bytes().is_empty());
        let mut outer = Msg::new();
        let mut inner = Msg::new();
        inner.uint(1, 150);
        outer.msg(3, &inner);
        assert_eq!(outer.bytes(), &[0x1a, 0x03, 0x08, 0x96, 0x01]);
    }
}
