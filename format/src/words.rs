//! Counts, lists and command lines in messages. Here because every crate of the workspace prints them and
//! depends on this one, so that "1 entries" is fixed in one place and long lists are cut alike.

/// `n` with its noun in the right number: `plural(1, "entry", "entries")` is `1 entry`,
/// `plural(0, "entry", "entries")` is `0 entries`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// The first `show` of `names` joined with `, `, and ` (and N more)` for the rest: a warning
/// about 200 functions stays one readable line.
pub fn name_list<S: AsRef<str>>(names: &[S], show: usize) -> String {
    let shown: Vec<&str> = names.iter().take(show).map(AsRef::as_ref).collect();
    let mut s = shown.join(", ");
    if names.len() > show {
        s.push_str(&format!(" (and {} more)", names.len() - show));
    }
    s
}

/// `word` as a POSIX shell would need it typed: as is when it is made of plain characters,
/// else in single quotes (a `'` inside as `'\''`), so that pasting it back gives the same word.
pub fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "%+,-./:=@_^".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// `argv` as one line a shell splits back into the same words (see [`shell_word`]).
pub fn shell_words<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|w| shell_word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::{name_list, plural};

    #[test]
    fn lists() {
        assert_eq!(name_list(&["a", "b"], 8), "a, b");
        assert_eq!(name_list(&["a", "b", "c"], 2), "a, b (and 1 more)");
        assert_eq!(name_list::<&str>(&[], 2), "");
    }

    #[test]
    fn numbers() {
        assert_eq!(plural(0, "entry", "entries"), "0 entries");
        assert_eq!(plural(1, "entry", "entries"), "1 entry");
        assert_eq!(plural(2, "stack", "stacks"), "2 stacks");
    }

    #[test]
    fn shell_quoting() {
        let argv = [
            "urec",
            "record",
            "-e",
            "bash:readline%return cmd=+0($retval):string",
            "it's",
            "",
            "a^b",
        ];
        assert_eq!(
            super::shell_words(&argv),
            r#"urec record -e 'bash:readline%return cmd=+0($retval):string' 'it'\''s' '' a^b"#
        );
    }
}
