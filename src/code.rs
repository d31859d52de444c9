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

/// The answer for a code that names no live match (REST, HTTP streams).
pub const NO_LIVE_MATCH: &str = "No live match has this group code";

/// What every public code starts with (`public_code`). With a spectator delay, no group code
/// may start with it, so a code names a public room or a match, never both.
pub const PUBLIC_PREFIX: &str = "PUB-";

/// The public code of a match with a spectator delay (`../shared/spec/viewer-streams.md` §4):
/// `PUB-` and 24 hex digits of HMAC-SHA256(key, group code upper-cased). Stable for a key;
/// nobody without the key can tell the group code from it or it from the group code.
pub fn public_code(key: &str, group_code: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
    let tag = ring::hmac::sign(&key, group_code.to_uppercase().as_bytes());
    let mut out = String::with_capacity(PUBLIC_PREFIX.len() + 24);
    out.push_str(PUBLIC_PREFIX);
    for b in &tag.as_ref()[..12] {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// Whether `code` has the form of a public code (case-insensitive: viewers' codes are
/// upper-cased, clients may send either).
pub fn is_public_form(code: &str) -> bool {
    code.get(..PUBLIC_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(PUBLIC_PREFIX))
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

    #[test]
    fn public_codes() {
        let p = public_code("k", "Match-1");
        assert_eq!(p, public_code("k", "MATCH-1"), "case of the group code");
        assert_ne!(p, public_code("other key", "MATCH-1"));
        assert_ne!(p, public_code("k", "MATCH-2"));
        assert_eq!(p.len(), 28);
        assert!(valid_group_code(&p) && is_public_form(&p));
        assert!(is_public_form(&p.to_lowercase()));
        assert!(!is_public_form("PUB") && !is_public_form("MATCH-1") && !is_public_form("ÄUB-"));
    }
}
