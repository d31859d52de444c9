//! The one group-code rule, for every door that names a match: observer and aux logons,
//! overlay logons, spectator joins, the REST paths and queries, and anything built from a code
//! afterwards (NATS subjects, KV keys, replay file names, log lines). A code is checked here
//! before it touches a map, a log line or NATS, and refused everywhere with the same words.

/// Longest group code (characters). Real codes are short words the client upper-cases.
pub const MAX_GROUP_CODE_CHARS: usize = 64;

/// The refusal every door gives an invalid group code.
pub const INVALID_GROUP_CODE: &str =
    "Invalid group code: use 1 to 64 letters, digits, '-', '_' or '.'.";

/// A group code names a match, a room, a replay file and log lines: letters and digits (any
/// script), `-`, `_` and `.`, at most `MAX_GROUP_CODE_CHARS` — no spaces, no control characters,
/// no NATS wildcard.
pub fn valid_group_code(code: &str) -> bool {
    let n = code.chars().count();
    (1..=MAX_GROUP_CODE_CHARS).contains(&n)
        && code
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["A", "MATCH-1", "a.b_c", "Ä1", &"G".repeat(64)] {
            assert!(valid_group_code(ok), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "A B",
            ">",
            "*",
            "A\r\n",
            "A\0",
            "A/B",
            "A%20",
            &"G".repeat(65),
        ] {
            assert!(!valid_group_code(bad), "{bad:?}");
        }
        assert!(INVALID_GROUP_CODE.contains(&MAX_GROUP_CODE_CHARS.to_string()));
    }
}
