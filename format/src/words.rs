//! Counts in messages. Here because every crate of the workspace prints counts and depends on
//! this one, so that "1 entries" is fixed in one place.

/// `n` with its noun in the right number: `plural(1, "entry", "entries")` is `1 entry`,
/// `plural(0, "entry", "entries")` is `0 entries`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn numbers() {
        assert_eq!(plural(0, "entry", "entries"), "0 entries");
        assert_eq!(plural(1, "entry", "entries"), "1 entry");
        assert_eq!(plural(2, "stack", "stacks"), "2 stacks");
    }
}
