//! Naming one address from the local files found for its binary, through blazesym.

use std::path::Path;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};
use urec_format::{FileOffset, Svma};

use crate::binary::Files;
use crate::demangle::demangle;
use crate::{Frame, Unnamed};

/// The frames of the code at `lookup` (a file offset), outermost first; else why none, with
/// the error blazesym gave if it failed rather than found nothing.
pub(crate) fn resolve(
    blaze: &blazesym::symbolize::Symbolizer,
    files: &Files,
    lookup: FileOffset,
) -> Result<Vec<Frame>, (Unnamed, Option<blazesym::Error>)> {
    let Some(vaddr) = files.info.offset_to_vaddr(lookup) else {
        return Err((Unnamed::NotInAnySymbol, None));
    };
    // The richest source first: separate debug file, own DWARF, then ELF symbols.
    let mut sources = Vec::with_capacity(2);
    match (&files.debug, &files.binary) {
        (Some(debug), _) => sources.push(elf_source(debug.path(), true)),
        (None, Some(binary)) if files.info.has_dwarf => {
            sources.push(elf_source(binary.path(), true))
        }
        _ => {}
    }
    match (&files.binary, &files.debug) {
        (Some(binary), _) => sources.push(elf_source(binary.path(), false)),
        (None, Some(debug)) => sources.push(elf_source(debug.path(), false)),
        (None, None) => {}
    }
    let mut error = None;
    let mut named = None;
    for src in &sources {
        match blaze.symbolize_single(src, Input::VirtOffset(vaddr.0)) {
            Ok(Symbolized::Sym(sym)) if !sym.name.is_empty() => {
                named = Some(frames_of(sym));
                break;
            }
            Ok(_) => {}
            Err(err) => error = Some(err),
        }
    }
    if let Some(frames) = named.as_ref().filter(|f| f[0].line.is_some()) {
        return Ok(frames.clone());
    }
    // A Go binary without symbols or DWARF: Go's own table names it, with file:line.
    if let Some(frames) = go_frames(files, vaddr) {
        return Ok(frames);
    }
    named.ok_or((files.no_symbol, error))
}

/// The Go function at `vaddr` and the functions inlined into it, with file:line, from Go's
/// function table.
fn go_frames(files: &Files, vaddr: Svma) -> Option<Vec<Frame>> {
    let frames = files.go_table()?.frames(vaddr)?;
    Some(
        (0..)
            .zip(frames)
            .map(|(depth, f)| {
                Frame::function(
                    f.name.into_owned(),
                    f.file.map(|f| f.into_owned()),
                    f.line,
                    depth,
                )
            })
            .collect(),
    )
}

fn elf_source(path: &Path, debug_syms: bool) -> Source<'static> {
    let mut elf = Elf::new(path);
    elf.debug_syms = debug_syms;
    Source::Elf(elf)
}

/// The real function first, then its inline chain, innermost last; each frame carries the
/// source location of the instruction within that function (blazesym already shifts call
/// sites one level up).
fn frames_of(sym: Sym<'_>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    let (file, line) = location(sym.code_info.as_deref());
    frames.push(Frame::function(demangle(&sym.name), file, line, 0));
    for (depth, f) in (1..).zip(sym.inlined.iter()) {
        let (file, line) = location(f.code_info.as_ref());
        frames.push(Frame::function(demangle(&f.name), file, line, depth));
    }
    frames
}

fn location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
        None => (None, None),
    }
}
