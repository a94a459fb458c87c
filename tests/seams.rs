//! Where a user's guess at the command line meets a seam: subcommands other tools have that
//! urec spells differently (`diff`, `merge`), and flags whose value cannot be right
//! (`--symfs` on a missing directory). Each is a usage error (exit 2) that says what to type.

mod common;

use common::urec;

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `urec diff A B` names the `report` command that compares, with the user's files in place.
#[test]
fn diff_suggests_report_diff() {
    let out = urec(&["diff", "old.data", "new.data"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("urec report --diff old.data -i new.data"),
        "{stderr}"
    );
    assert!(!stderr.contains("unrecognized subcommand"), "{stderr}");
    // Without two files: the command's shape.
    let out = urec(&["diff"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("urec report --diff BASE -i NEW"),
        "{stderr}"
    );
}

/// `urec merge A B` names `report -i A -i B`, which merges.
#[test]
fn merge_suggests_report_inputs() {
    let out = urec(&["merge", "a.data", "b.data", "c.data"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("urec report -i a.data -i b.data -i c.data"),
        "{stderr}"
    );
    let out = urec(&["merge"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("urec report -i A -i B"), "{stderr}");
}

/// Other unknown subcommands keep clap's message.
#[test]
fn other_unknown_subcommands_unchanged() {
    let out = urec(&["frobnicate"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unrecognized subcommand"), "{stderr}");
}

/// `--symfs` on a directory that is not there (or a file) is a usage error for every
/// subcommand that takes it, before the recording is read: otherwise every frame would come
/// out unnamed with no word about the typo.
#[test]
fn symfs_must_be_a_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-root");
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").expect("write a file");
    // The recording does not exist either: the flag is checked first.
    let data = dir.path().join("urec.data");
    for sub in ["report", "script", "archive"] {
        for (root, why) in [(&missing, "no such directory"), (&file, "not a directory")] {
            let out = urec(&[
                sub,
                "-i",
                data.to_str().expect("utf-8 path"),
                "--symfs",
                root.to_str().expect("utf-8 path"),
            ]);
            let stderr = stderr_of(&out);
            assert_eq!(out.status.code(), Some(2), "{sub}: {stderr}");
            assert!(
                stderr.contains(&format!("--symfs {}: {why}", root.display())),
                "{sub}: {stderr}"
            );
        }
    }
    // An existing directory is taken (and the missing recording is what fails, exit 1).
    let out = urec(&[
        "report",
        "-i",
        data.to_str().expect("utf-8 path"),
        "--symfs",
        dir.path().to_str().expect("utf-8 path"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
}
