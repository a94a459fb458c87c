//! Tables of every layout built by hand (the local toolchain builds one layout only), and
//! crafted bytes: truncated, flipped, random.

use super::*;
use proptest::prelude::*;

/// One function of a hand-built table: name, size, file, and (length, line) runs.
struct F {
    name: &'static str,
    size: u32,
    file: &'static str,
    lines: Vec<(u32, i32)>,
}

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A pc-value table: `(pc length, value)` runs from value -1.
fn pcvalue(runs: &[(u32, i32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = -1i32;
    for &(len, v) in runs {
        let d = v - prev;
        let z = if d < 0 {
            (!(d as u32)) << 1 | 1
        } else {
            (d as u32) << 1
        };
        varint(&mut out, z);
        varint(&mut out, len);
        prev = v;
    }
    out.push(0);
    out
}

/// A table of `version`'s layout for functions laid out one after the other from `text`.
fn build(version: Version, text: u64, funcs: &[F]) -> Vec<u8> {
    let new = version >= Version::Go118;
    let mut files: Vec<&str> = funcs.iter().map(|f| f.file).collect();
    files.dedup();
    let file_index = |name: &str| files.iter().position(|f| *f == name).unwrap() as i32;
    if version == Version::Go12 {
        return build12(text, funcs, &files);
    }
    let mut names = Vec::new();
    let mut nameoffs = Vec::new();
    for f in funcs {
        nameoffs.push(names.len() as u32);
        names.extend(f.name.as_bytes());
        names.push(0);
    }
    let mut filetab = Vec::new();
    let mut cutab = Vec::new();
    for f in &files {
        cutab.extend((filetab.len() as u32).to_le_bytes());
        filetab.extend(f.as_bytes());
        filetab.push(0);
    }
    let mut pctab = vec![0u8];
    let mut tabs = Vec::new();
    for f in funcs {
        let pcfile = pctab.len() as u32;
        pctab.extend(pcvalue(&[(f.size, file_index(f.file))]));
        let pcln = pctab.len() as u32;
        pctab.extend(pcvalue(&f.lines));
        tabs.push((pcfile, pcln));
    }
    let words = if new { 8 } else { 7 };
    let header = 8 + 8 * words;
    let funcname_off = header;
    let cu_off = funcname_off + names.len();
    let file_off = cu_off + cutab.len();
    let pc_off = file_off + filetab.len();
    let func_off = pc_off + pctab.len();
    let field = if new { 4 } else { 8 };
    let n = funcs.len();
    let functab_len = (2 * n + 1) * field;
    let fsize = if new { 4 + 8 * 4 + 4 } else { 8 + 8 * 4 + 4 };
    let mut out = Vec::new();
    out.extend(version.magic().to_le_bytes());
    out.extend([0, 0, 1, 8]);
    let mut w = vec![n as u64, files.len() as u64];
    if new {
        w.push(text);
    }
    w.extend([funcname_off, cu_off, file_off, pc_off, func_off].map(|x| x as u64));
    for x in w {
        out.extend(x.to_le_bytes());
    }
    out.extend(&names);
    out.extend(&cutab);
    out.extend(&filetab);
    out.extend(&pctab);
    let mut pc = if new { 0u64 } else { text };
    let put = |out: &mut Vec<u8>, v: u64| {
        if new {
            out.extend((v as u32).to_le_bytes())
        } else {
            out.extend(v.to_le_bytes())
        }
    };
    for (i, f) in funcs.iter().enumerate() {
        put(&mut out, pc);
        put(&mut out, (functab_len + i * fsize) as u64);
        pc += u64::from(f.size);
    }
    put(&mut out, pc);
    let mut pc = if new { 0u64 } else { text };
    for (i, f) in funcs.iter().enumerate() {
        put(&mut out, pc);
        let (pcfile, pcln) = tabs[i];
        // nameoff args deferreturn pcsp pcfile pcln npcdata cuOffset
        for v in [nameoffs[i], 0, 0, 0, pcfile, pcln, 0, 0] {
            out.extend(v.to_le_bytes());
        }
        out.extend([0u8; 4]); // funcID, flag, pad, nfuncdata (1.20: startLine first)
        pc += u64::from(f.size);
    }
    out
}

/// The Go 1.2 – 1.15 layout: offsets from the header, a global file table.
fn build12(text: u64, funcs: &[F], files: &[&str]) -> Vec<u8> {
    let n = funcs.len();
    let functab = 16;
    let after_functab = functab + (2 * n + 1) * 8;
    let filetab = after_functab + 4;
    // file index 0 is unused in this layout
    let nfiles = files.len() + 1;
    let funcs_at = filetab + 4 * nfiles;
    let fsize = 8 + 8 * 4;
    let strings_at = funcs_at + n * fsize;
    let mut strings = Vec::new();
    let str_at = |s: &str, strings: &mut Vec<u8>| {
        let at = strings_at + strings.len();
        strings.extend(s.as_bytes());
        strings.push(0);
        at as u32
    };
    let file_offs: Vec<u32> = files.iter().map(|f| str_at(f, &mut strings)).collect();
    let name_offs: Vec<u32> = funcs.iter().map(|f| str_at(f.name, &mut strings)).collect();
    let pct_at = strings_at + strings.len();
    let mut pctab = Vec::new();
    let mut tabs = Vec::new();
    for f in funcs {
        let fi = files.iter().position(|x| *x == f.file).unwrap() as i32 + 1;
        let pcfile = (pct_at + pctab.len()) as u32;
        pctab.extend(pcvalue(&[(f.size, fi)]));
        let pcln = (pct_at + pctab.len()) as u32;
        pctab.extend(pcvalue(&f.lines));
        tabs.push((pcfile, pcln));
    }
    let mut out = Vec::new();
    out.extend(Version::Go12.magic().to_le_bytes());
    out.extend([0, 0, 1, 8]);
    out.extend((n as u64).to_le_bytes());
    let mut pc = text;
    for (i, f) in funcs.iter().enumerate() {
        out.extend(pc.to_le_bytes());
        out.extend(((funcs_at + i * fsize) as u64).to_le_bytes());
        pc += u64::from(f.size);
    }
    out.extend(pc.to_le_bytes());
    out.extend((filetab as u32).to_le_bytes());
    out.extend((nfiles as u32).to_le_bytes());
    for o in &file_offs {
        out.extend(o.to_le_bytes());
    }
    let mut pc = text;
    for (i, f) in funcs.iter().enumerate() {
        out.extend(pc.to_le_bytes());
        let (pcfile, pcln) = tabs[i];
        for v in [name_offs[i], 0, 0, 0, pcfile, pcln, 0, 0] {
            out.extend(v.to_le_bytes());
        }
        pc += u64::from(f.size);
    }
    out.extend(&strings);
    out.extend(&pctab);
    out
}

fn sample() -> Vec<F> {
    vec![
        F {
            name: "main.Leaf",
            size: 0x40,
            file: "/src/main.go",
            lines: vec![(0x10, 10), (0x20, 11), (0x10, 12)],
        },
        F {
            name: "net/http.(*conn).serve",
            size: 0x100,
            file: "/go/src/net/http/server.go",
            lines: vec![(0x80, 1900), (0x80, 1850)],
        },
        F {
            name: "main.main",
            size: 0x20,
            file: "/src/main.go",
            lines: vec![(0x20, 20)],
        },
    ]
}

const ALL: [Version; 4] = [
    Version::Go12,
    Version::Go116,
    Version::Go118,
    Version::Go120,
];

#[test]
fn every_layout_names_bounds_and_lines() {
    for v in ALL {
        let bytes = build(v, 0x401000, &sample());
        let t = Pclntab::parse(bytes, None).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(t.version(), v);
        let fs: Vec<(String, u64, u64)> = t
            .functions()
            .map(|f| (f.name.into_owned(), f.entry, f.end))
            .collect();
        assert_eq!(
            fs,
            [
                ("main.Leaf".to_string(), 0x401000, 0x401040),
                ("net/http.(*conn).serve".into(), 0x401040, 0x401140),
                ("main.main".into(), 0x401140, 0x401160),
            ],
            "{v:?}"
        );
        assert_eq!(t.find(0x401041).unwrap().name, "net/http.(*conn).serve");
        assert_eq!(t.find(0x401160), None);
        assert_eq!(t.find(0x400fff), None);
        let line = |pc| t.line(pc).map(|(f, l)| (f.into_owned(), l));
        assert_eq!(line(0x401000), Some(("/src/main.go".into(), 10)), "{v:?}");
        assert_eq!(line(0x40100f), Some(("/src/main.go".into(), 10)));
        assert_eq!(line(0x401010), Some(("/src/main.go".into(), 11)));
        assert_eq!(line(0x40103f), Some(("/src/main.go".into(), 12)));
        assert_eq!(
            line(0x4010c0),
            Some(("/go/src/net/http/server.go".into(), 1850))
        );
        assert_eq!(line(0x401150), Some(("/src/main.go".into(), 20)));
    }
}

#[test]
fn an_unrelocated_text_start_takes_the_given_one() {
    let bytes = build(Version::Go120, 0, &sample());
    assert_eq!(
        Pclntab::parse(bytes.clone(), None).unwrap_err(),
        Error::NoTextStart
    );
    let t = Pclntab::parse(bytes, Some(0x1000)).unwrap();
    assert_eq!(t.find(0x1000).unwrap().name, "main.Leaf");
}

#[test]
fn found_by_magic_inside_other_bytes() {
    let table = build(Version::Go118, 0x401000, &sample());
    let mut seg = vec![0xffu8; 0x104];
    seg.extend(0xffff_fff0u32.to_le_bytes()); // a magic that is no table
    seg.extend([0, 0, 1, 8, 0xff, 0xff]);
    while !seg.len().is_multiple_of(4) {
        seg.push(0);
    }
    let at = seg.len();
    seg.extend(&table);
    seg.extend([0u8; 64]);
    let (found, t) = Pclntab::scan(&seg, Some(0x401000)).unwrap();
    assert_eq!(found, at);
    assert_eq!(t.len(), 3);
    assert!(Pclntab::scan(&seg[..at], Some(0x401000)).is_none());
}

/// Every prefix of a table, and every single-byte change of one, parses or fails without a
/// panic, and lookups on what parses stay within bounds.
#[test]
fn truncated_and_flipped_tables() {
    for v in ALL {
        let bytes = build(v, 0x401000, &sample());
        for n in 0..bytes.len() {
            if let Ok(t) = Pclntab::parse(bytes[..n].to_vec(), Some(0x401000)) {
                exercise(&t);
            }
        }
        for i in 0..bytes.len() {
            for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= x;
                if let Ok(t) = Pclntab::parse(b, Some(0x401000)) {
                    exercise(&t);
                }
            }
        }
    }
}

fn exercise(t: &Pclntab) {
    for f in t.functions().take(64) {
        if f.entry <= f.end {
            let _ = t.find(f.entry);
            let _ = t.line(f.entry);
            let _ = t.line(f.end.saturating_sub(1));
        }
    }
    for pc in [0, 1, 0x401000, 0x401041, 0x4010ff, u64::MAX] {
        let _ = t.find(pc);
        let _ = t.line(pc);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                magic in 0usize..4, pcs in proptest::collection::vec(any::<u64>(), 4)) {
        if bytes.len() >= 8 {
            bytes[..4].copy_from_slice(&ALL[magic].magic().to_le_bytes());
            bytes[4] = 0;
            bytes[5] = 0;
            bytes[6] = 1;
            bytes[7] = 8;
        }
        if let Ok(t) = Pclntab::parse(bytes.clone(), Some(0x1000)) {
            exercise(&t);
            for pc in pcs {
                let _ = t.find(pc);
                let _ = t.line(pc);
            }
        }
        let _ = Pclntab::scan(&bytes, None);
    }

    #[test]
    fn random_edits_of_a_real_layout(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
                                     v in 0usize..4) {
        let mut bytes = build(ALL[v], 0x401000, &sample());
        for (at, b) in edits {
            let n = bytes.len();
            bytes[at % n] = b;
        }
        if let Ok(t) = Pclntab::parse(bytes, Some(0x401000)) {
            exercise(&t);
        }
    }
}
