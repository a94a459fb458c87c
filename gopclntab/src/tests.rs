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
    /// Its first bytes are the inlined code of this function, called from the byte after.
    inl: Option<(&'static str, u32)>,
}

/// Where hand-built inline trees are in the image ([`tree`]).
const IMAGE: u64 = 0x50_0000;

/// The inline tree of a [`build`] table: one call, of the first inlining function's callee,
/// whose name follows the functions' names.
fn tree(version: Version, funcs: &[F]) -> Vec<u8> {
    let nameoff: usize = funcs.iter().map(|f| f.name.len() + 1).sum();
    let (_, parent_pc) = funcs.iter().find_map(|f| f.inl).unwrap();
    let mut t = Vec::new();
    if version == Version::Go120 {
        t.extend([0u8; 4]);
        t.extend((nameoff as u32).to_le_bytes());
        t.extend(parent_pc.to_le_bytes());
        t.extend(0u32.to_le_bytes());
    } else {
        t.extend((-1i16).to_le_bytes());
        t.extend([0u8; 2]);
        t.extend([0u8; 8]); // file, line
        t.extend((nameoff as u32).to_le_bytes());
        t.extend(parent_pc.to_le_bytes());
    }
    t
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
    for (callee, _) in funcs.iter().filter_map(|f| f.inl) {
        names.extend(callee.as_bytes());
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
        let inl = f.inl.map(|(_, len)| {
            let at = pctab.len() as u32;
            pctab.extend(pcvalue(&[(len, 0), (f.size - len, -1)]));
            at
        });
        tabs.push((pcfile, pcln, inl));
    }
    // The `_func`s, each 8-aligned.
    let mut funcdata = Vec::new();
    let mut funcoffs = Vec::new();
    let mut pc = if new { 0u64 } else { text };
    for (i, f) in funcs.iter().enumerate() {
        while funcdata.len() % 8 != 0 {
            funcdata.push(0);
        }
        funcoffs.push(funcdata.len());
        if new {
            funcdata.extend((pc as u32).to_le_bytes());
        } else {
            funcdata.extend(pc.to_le_bytes());
        }
        let (pcfile, pcln, inl) = tabs[i];
        let npcdata = if inl.is_some() { 3 } else { 0 };
        // nameoff args deferreturn pcsp pcfile pcln npcdata cuOffset [startLine]
        for v in [nameoffs[i], 0, 0, 0, pcfile, pcln, npcdata, 0] {
            funcdata.extend(v.to_le_bytes());
        }
        if version == Version::Go120 {
            funcdata.extend(7u32.to_le_bytes());
        }
        let nfuncdata = if inl.is_some() { 4 } else { 0 };
        funcdata.extend([0, 0, 0, nfuncdata]); // funcID, flag or _, _, nfuncdata
        if let Some(at) = inl {
            for v in [0, 0, at] {
                funcdata.extend(v.to_le_bytes());
            }
            if new {
                for v in [u32::MAX, u32::MAX, u32::MAX, 0] {
                    funcdata.extend(v.to_le_bytes());
                }
            } else {
                while funcdata.len() % 8 != 0 {
                    funcdata.push(0);
                }
                for v in [0, 0, 0, IMAGE] {
                    funcdata.extend(v.to_le_bytes());
                }
            }
        }
        pc += u64::from(f.size);
    }
    let words = if new { 8 } else { 7 };
    let header = 8 + 8 * words;
    let funcname_off = header;
    let cu_off = funcname_off + names.len();
    let file_off = cu_off + cutab.len();
    let pc_off = file_off + filetab.len();
    // The function table 8-aligned, so its `_func`s are.
    let func_off = (pc_off + pctab.len()).next_multiple_of(8);
    let field = if new { 4 } else { 8 };
    let n = funcs.len();
    let functab_len = ((2 * n + 1) * field).next_multiple_of(8);
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
    out.resize(func_off, 0);
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
        put(&mut out, (functab_len + funcoffs[i]) as u64);
        pc += u64::from(f.size);
    }
    put(&mut out, pc);
    out.resize(func_off + functab_len, 0);
    out.extend(&funcdata);
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
            inl: Some(("main.helper", 0x10)),
        },
        F {
            name: "net/http.(*conn).serve",
            size: 0x100,
            file: "/go/src/net/http/server.go",
            lines: vec![(0x80, 1900), (0x80, 1850)],
            inl: None,
        },
        F {
            name: "main.main",
            size: 0x20,
            file: "/src/main.go",
            lines: vec![(0x20, 20)],
            inl: None,
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
fn inlined_frames_of_every_layout_since_go_1_16() {
    for v in [Version::Go116, Version::Go118, Version::Go120] {
        let funcs = sample();
        let t = Pclntab::parse(build(v, 0x401000, &funcs), None).unwrap();
        let image = tree(v, &funcs);
        let read = |vaddr: u64, len: usize| {
            let at = usize::try_from(vaddr.checked_sub(IMAGE)?).ok()?;
            image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
        };
        let gofunc = (v >= Version::Go118).then_some(IMAGE);
        let chain = |pc| {
            t.frames(pc, gofunc, &read)
                .unwrap()
                .into_iter()
                .map(|f| (f.name.into_owned(), f.line.unwrap_or(0)))
                .collect::<Vec<_>>()
        };
        // The inlined code: the callee at its own line, the caller at the call site's.
        assert_eq!(
            chain(0x401004),
            [("main.Leaf".to_string(), 11), ("main.helper".into(), 10)],
            "{v:?}"
        );
        assert_eq!(chain(0x401010), [("main.Leaf".to_string(), 11)], "{v:?}");
        assert_eq!(
            chain(0x401041),
            [("net/http.(*conn).serve".to_string(), 1900)]
        );
        // A tree out of reach: the real function alone.
        assert_eq!(t.frames(0x401004, gofunc, &|_, _| None).unwrap().len(), 1);
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
    let image = vec![0xffu8; 64];
    let read = |vaddr: u64, len: usize| {
        let at = usize::try_from(vaddr.checked_sub(IMAGE)?).ok()?;
        image.get(at..at.checked_add(len)?).map(<[u8]>::to_vec)
    };
    for f in t.functions().take(64) {
        if f.entry <= f.end {
            let _ = t.find(f.entry);
            let _ = t.line(f.entry);
            let _ = t.line(f.end.saturating_sub(1));
            let _ = t.frames(f.entry, Some(IMAGE), &read);
        }
    }
    for pc in [0, 1, 0x401000, 0x401004, 0x401041, 0x4010ff, u64::MAX] {
        let _ = t.find(pc);
        let _ = t.line(pc);
        let _ = t.frames(pc, Some(IMAGE), &read);
        let _ = t.frames(pc, Some(u64::MAX), &read);
    }
    let _ = t.find_gofunc(&image, IMAGE);
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
