//! The warnings of symbolization, each one line, once per binary, and each saying what would
//! fix it: a user staring at `bash+0x3f2a1` needs the remedy more than the diagnosis.

use std::collections::HashSet;
use std::path::Path;

use crate::locate::build_id_rel;

/// Warnings gathered for the caller, each text at most once per report.
#[derive(Default)]
pub(crate) struct Warnings {
    pending: Vec<String>,
    seen: HashSet<String>,
}

impl Warnings {
    pub fn push(&mut self, msg: String) {
        if self.seen.insert(msg.clone()) {
            self.pending.push(msg);
        }
    }

    /// The messages pushed since `pending_len` was `from`, to be withdrawn later.
    pub fn since(&self, from: usize) -> Vec<String> {
        self.pending.get(from..).unwrap_or_default().to_vec()
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Withdraws messages not yet taken (a binary that another source named after all).
    pub fn retract(&mut self, msgs: &[String]) {
        self.pending.retain(|m| !msgs.contains(m));
    }

    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }
}

/// What would name the frames of a binary that is not here: the ways of bringing its files
/// (or their symbols) to this host.
pub(crate) fn remedies(build_id: Option<&[u8]>) -> String {
    let debug_dir = match build_id.and_then(build_id_rel) {
        Some(rel) => format!("--debug-dir DIR holding DIR/{}.debug", rel.display()),
        None => "--debug-dir DIR holding its debug file".to_string(),
    };
    format!(
        "to name them: --symfs DIR (a copy of the recording host's root), {debug_dir}, \
         `urec archive FILE` on the recording host, installing its -dbgsym package, or \
         DEBUGINFOD_URLS"
    )
}

/// Neither the binary nor a debug file for it was found.
pub(crate) fn missing(recorded: &Path, build_id: Option<&[u8]>, searched: &[&str]) -> String {
    let id = build_id.map_or_else(String::new, |w| format!(" with build id {}", hex(w)));
    format!(
        "{}{id} not found (searched {}); its frames are shown as offsets; {}",
        recorded.display(),
        urec_format::name_list(searched, searched.len()),
        remedies(build_id)
    )
}

/// Something other than a regular file is at the recorded path (`why` says what): it was not
/// opened, and nothing else with the recorded build id was found.
pub(crate) fn not_regular(found: &Path, why: &str, build_id: Option<&[u8]>) -> String {
    format!(
        "{}: {why}, not opened; its frames are shown as offsets; {}",
        found.display(),
        remedies(build_id)
    )
}

/// The file at the recorded path is another version, and the right one was not found.
pub(crate) fn mismatch_unresolved(found: &Path, got: Option<&[u8]>, want: &[u8]) -> String {
    format!(
        "build id mismatch: {} has build id {}, the recording has {}: the file at {} is \
         another version; its frames are shown as offsets; {}",
        found.display(),
        got.map_or_else(|| "none".to_string(), hex),
        hex(want),
        found.display(),
        remedies(Some(want))
    )
}

/// The file at the recorded path is another version; the right one was found elsewhere.
pub(crate) fn mismatch_resolved(
    found: &Path,
    got: Option<&[u8]>,
    want: &[u8],
    used: &Path,
) -> String {
    format!(
        "build id mismatch: {} has build id {}, the recording has {}: the file at {} is \
         another version; using {} instead",
        found.display(),
        got.map_or_else(|| "none".to_string(), hex),
        hex(want),
        found.display(),
        used.display()
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 8] = [0xab, 0xcd, 1, 2, 3, 4, 5, 6];

    #[test]
    fn missing_names_every_remedy_on_one_line() {
        let w = missing(
            Path::new("/usr/bin/x"),
            Some(&ID),
            &["its recorded path", "build-id directories"],
        );
        assert_eq!(
            w,
            "/usr/bin/x with build id abcd010203040506 not found (searched its recorded path, \
             build-id directories); its frames are shown as offsets; to name them: --symfs DIR \
             (a copy of the recording host's root), --debug-dir DIR holding \
             DIR/.build-id/ab/cd010203040506.debug, `urec archive FILE` on the recording host, \
             installing its -dbgsym package, or DEBUGINFOD_URLS"
        );
        assert!(!w.contains('\n'));
    }

    #[test]
    fn mismatch_says_the_file_is_another_version() {
        let w = mismatch_unresolved(Path::new("/usr/bin/x"), None, &ID);
        assert!(
            w.starts_with("build id mismatch: /usr/bin/x has build id none"),
            "{w}"
        );
        assert!(
            w.contains("the file at /usr/bin/x is another version"),
            "{w}"
        );
        assert!(
            w.contains("--symfs DIR") && w.contains("urec archive"),
            "{w}"
        );
        let w = mismatch_resolved(Path::new("/a"), Some(&[1; 8]), &ID, Path::new("/b"));
        assert!(w.ends_with("using /b instead"), "{w}");
    }
}
