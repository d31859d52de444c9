//! Parsing of ingest event payloads with simd-json into an order-preserving JSON value. The one
//! parser for events: live ingest and crash recovery both read events through `parse_event`, so
//! an event the live path accepts is an event recovery restores, and one it refuses is refused by
//! both.

use serde_json::Value;

/// Largest event (JSON text) an ingest client may send. Real events are below 2 KB (a
/// scoreboard line ~450 bytes, an `aux_scoreboard_team` of five lines ~2 KB).
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects in an event. Real events nest at most 4 deep.
pub const MAX_EVENT_DEPTH: usize = 32;

/// Parses one event's JSON text. The error text is for the log.
pub fn parse_event(text: &str) -> Result<Value, String> {
    if text.len() > MAX_EVENT_BYTES {
        return Err(format!(
            "event of {} bytes is over the limit of {MAX_EVENT_BYTES}",
            text.len()
        ));
    }
    if nesting_exceeds(text.as_bytes(), MAX_EVENT_DEPTH) {
        return Err(format!(
            "event nests deeper than the limit of {MAX_EVENT_DEPTH}"
        ));
    }
    let mut bytes = text.as_bytes().to_vec();
    simd_json::serde::from_slice::<Value>(&mut bytes).map_err(|e| e.to_string())
}

/// Whether arrays/objects in `text` nest deeper than `max` (brackets inside strings do not
/// count). Runs before the parser so no parser's own limit decides.
fn nesting_exceeds(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_rejects_garbage() {
        let v = parse_event(r#"{"z":1,"a":{"y":2.5,"b":[1,"x",null]},"m":"é"}"#).expect("json");
        assert_eq!(
            v.to_string(),
            r#"{"z":1,"a":{"y":2.5,"b":[1,"x",null]},"m":"é"}"#
        );
        assert!(parse_event("{not json").is_err());
        assert!(parse_event("").is_err());
        assert!(parse_event("[1,").is_err());
    }

    #[test]
    fn depth_and_size_are_bounded() {
        let nested = |n: usize| format!("{{\"d\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        assert!(parse_event(&nested(MAX_EVENT_DEPTH - 1)).is_ok());
        assert!(parse_event(&nested(MAX_EVENT_DEPTH)).is_err());
        assert!(parse_event(&nested(200)).is_err());
        // Brackets inside strings (and escaped quotes) do not count.
        let text = format!(r#"{{"s":"{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(parse_event(&text).is_ok());
        let big = format!(r#"{{"s":"{}"}}"#, "x".repeat(MAX_EVENT_BYTES));
        assert!(parse_event(&big).is_err());
    }
}
