//! The symbols step: names every address a recording holds, from this host's files, and
//! appends the names to the file as its symbols section (SPEC "Portable recordings"). Run by
//! `urec record` once the file is complete, and by `urec archive` on an existing file.
//!
//! The step reads what `report` would name ([`crate::frame_addresses`]) and asks the same
//! symbolizer `report` uses, so a workstation without the binaries reports the frames the
//! recording host could name. Only named addresses are stored. It lives here, not in the
//! binary, because what to name is the report's own question; the binary only prints.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use urec_format::{BinarySymbols, BuildId, Reader, Record, SymbolEntry, SymbolFrame};
use urec_symbolize::{EmbeddedSymbols, SymbolizeOptions, Symbolizer};

/// A file the recorder kept open: the exact file a traced process mapped.
pub struct Provided {
    /// The path the process mapped it at, as recorded.
    pub path: String,
    /// Its build id, when it has one.
    pub build_id: Option<BuildId>,
    /// The open file.
    pub file: File,
}

/// What the step named.
#[derive(Debug, Default)]
pub struct Named {
    /// The section, one entry per binary with at least one named address.
    pub symbols: Vec<BinarySymbols>,
    /// Addresses named.
    pub named: u64,
    /// Of those, the ones with a source line.
    pub with_lines: u64,
    /// Addresses left unnamed.
    pub unnamed: u64,
    /// The symbolizer's warnings (missing binaries and what would fix them).
    pub warnings: Vec<String>,
}

/// The symbols step of `urec record`: names the addresses of the recording urec has just
/// written at `path` (the files the recorder kept open first) and appends the section. Returns
/// what was named and the section's stored bytes.
pub fn add(path: &Path, opts: SymbolizeOptions, provided: Vec<Provided>) -> Result<(Named, u64)> {
    let named = name(path, opts, provided, EmbeddedSymbols::default())?;
    let bytes = append(path, &named.symbols)?;
    Ok((named, bytes))
}

/// The symbols step of `urec archive`: names the addresses of the recording at `path`,
/// keeping the names of its existing section where this host has no file, and rewrites the
/// file with the new section ([`rewrite`]). Returns what was named and the section's bytes.
pub fn archive(path: &Path, opts: SymbolizeOptions) -> Result<(Named, u64)> {
    let embedded = existing(path)?;
    let named = name(path, opts, Vec::new(), embedded)?;
    let bytes = rewrite(path, &named.symbols)?;
    Ok((named, bytes))
}

/// Names the addresses of the recording at `path`. `provided` files come first; `embedded` is
/// a section the file already has (`archive` keeps its names where this host has no file).
pub fn name(
    path: &Path,
    opts: SymbolizeOptions,
    provided: Vec<Provided>,
    embedded: EmbeddedSymbols,
) -> Result<Named> {
    let addresses = crate::frame_addresses(path)?;
    let mut symbolizer = Symbolizer::new(opts);
    if !embedded.is_empty() {
        symbolizer.set_embedded(embedded);
    }
    // The kept files by build id, else by path. Each is moved to the first recorded (path,
    // build id) it matches (a system-wide recording keeps hundreds open: no duplicates); a
    // second path of the same file is searched for as usual. Files no address needs close here.
    let mut binaries: Vec<(&str, Option<&BuildId>)> = addresses
        .iter()
        .map(|a| (a.binary.as_str(), a.build_id.as_ref()))
        .collect();
    binaries.sort();
    binaries.dedup();
    let mut provided: Vec<(String, Option<BuildId>, Option<File>)> = provided
        .into_iter()
        .map(|p| (p.path, p.build_id, Some(p.file)))
        .collect();
    for (binary, build_id) in binaries {
        let slot = provided
            .iter_mut()
            .find(|(path, id, file)| {
                file.is_some()
                    && match (build_id, id) {
                        (Some(a), Some(b)) => a == b,
                        (None, _) => path == binary,
                        _ => false,
                    }
            })
            .and_then(|(_, _, file)| file.take());
        if let Some(file) = slot {
            symbolizer.provide_file(binary, build_id, file);
        }
    }
    drop(provided);
    // Every address once first, so that debuginfod fetches for all binaries at once.
    symbolizer.begin_batch();
    for a in &addresses {
        symbolizer.symbolize_at(&a.binary, a.build_id.as_ref(), a.address);
    }
    symbolizer.end_batch();
    let mut out = Named::default();
    let mut by_binary: BTreeMap<(String, Option<BuildId>), BTreeMap<u64, Vec<SymbolFrame>>> =
        BTreeMap::new();
    for a in &addresses {
        let frames = symbolizer.symbolize_at(&a.binary, a.build_id.as_ref(), a.address);
        if frames.first().and_then(|f| f.function_name()).is_none() {
            out.unnamed += 1;
            continue;
        }
        out.named += 1;
        if frames.first().is_some_and(|f| f.line.is_some()) {
            out.with_lines += 1;
        }
        let list: Vec<SymbolFrame> = frames
            .iter()
            .map(|f| SymbolFrame {
                function: f.display_name().into(),
                file: f.file.as_deref().map(Into::into),
                line: f.line,
            })
            .collect();
        by_binary
            .entry((a.binary.clone(), a.build_id.clone()))
            .or_default()
            .entry(a.address.lookup().0)
            .or_insert(list);
    }
    out.warnings = symbolizer.take_warnings();
    out.symbols = by_binary
        .into_iter()
        .map(|((path, build_id), entries)| BinarySymbols {
            path,
            build_id,
            entries: entries
                .into_iter()
                .map(|(offset, frames)| SymbolEntry { offset, frames })
                .collect(),
        })
        .collect();
    Ok(out)
}

/// The length of the complete recording at `path` (up to its first trailer, without any
/// symbols section) and its footer; an error for a truncated file, which has no place to
/// append to.
fn complete(path: &Path) -> Result<(u64, urec_format::Footer)> {
    let reader = Reader::open(path)?;
    match (reader.complete_len(), reader.footer().cloned()) {
        (Some(len), Some(footer)) => Ok((len, footer)),
        _ => bail!(
            "{} is not a complete recording (it has no footer): its symbols cannot be added",
            path.display()
        ),
    }
}

/// Appends `symbols` to the recording urec has just written at `path` (complete, no section
/// yet). An interruption leaves the recording complete and the section unfinished.
pub fn append(path: &Path, symbols: &[BinarySymbols]) -> Result<u64> {
    let (len, footer) = complete(path)?;
    // The output's directory may be writable by others (and under sudo the file is the
    // user's): whatever is at the path now is opened only if it is a regular file.
    let mut file = urec_untrusted::open_append(path)
        .with_context(|| format!("opening {} to add its symbols", path.display()))?;
    if file.metadata()?.len() != len {
        bail!("{} already has a symbols section", path.display());
    }
    let mut out = std::io::BufWriter::new(&mut file);
    let stats = urec_format::append_symbols(&mut out, len, &footer, symbols)?;
    out.flush()?;
    drop(out);
    file.sync_all()?;
    Ok(stats.stored_bytes)
}

/// Replaces the symbols section of the recording at `path` (or adds one): the recording's own
/// bytes and the new section go to a temporary file beside it, which then takes its place with
/// the original's mode and owner. A failure leaves the original untouched.
pub fn rewrite(path: &Path, symbols: &[BinarySymbols]) -> Result<u64> {
    let (len, footer) = complete(path)?;
    let original =
        urec_untrusted::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = original.metadata()?;
    let tmp = temp_path(path);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let result = (|| -> Result<u64> {
        let mut source = std::io::Read::take(&original, len);
        let mut w = std::io::BufWriter::new(&mut out);
        let copied = std::io::copy(&mut source, &mut w)?;
        if copied != len {
            bail!("{} changed while it was read", path.display());
        }
        let stats = urec_format::append_symbols(&mut w, len, &footer, symbols)?;
        w.flush()?;
        drop(w);
        out.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        // Keeping the owner needs root when it is another user's file; as that user, it is
        // already theirs.
        let _ = std::os::unix::fs::fchown(&out, Some(meta.uid()), Some(meta.gid()));
        out.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("replacing {} by {}", path.display(), tmp.display()))?;
        Ok(stats.stored_bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "urec.data".into());
    path.with_file_name(format!(".{name}.archive-{}", std::process::id()))
}

/// The symbols section the file at `path` already has, as the symbolizer takes it.
pub fn existing(path: &Path) -> Result<EmbeddedSymbols> {
    let mut reader = Reader::open(path)?;
    let mut embedded = EmbeddedSymbols::default();
    for record in reader.metadata() {
        let record = record?;
        embedded.allow_for(&record);
        if let Record::Symbols(s) = record {
            embedded.push(s);
        }
    }
    Ok(embedded)
}

/// One line on what the step named, for `record` and `archive`.
pub fn summary_line(named: &Named, bytes: u64) -> String {
    use urec_format::plural;
    format!(
        "symbols: named {} of {} in {} ({} with file:line), {}",
        named.named,
        plural(named.named + named.unnamed, "address", "addresses"),
        plural(named.symbols.len() as u64, "binary", "binaries"),
        named.with_lines,
        plural(bytes, "byte", "bytes")
    )
}
