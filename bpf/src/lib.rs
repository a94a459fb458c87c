//! urec's BPF programs and the Rust view of the records they write to the ring buffer.
