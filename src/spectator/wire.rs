//! Spectator protocol messages (`spectator-protocol.md`): the `{"type","data"}` envelope and
//! its messages (ids and timestamps come from `util`). Builders only; no state.

use serde_json::{Value, json};

/// `{"type": kind, "data": data}` as text.
pub fn message(kind: &str, data: Value) -> String {
    json!({ "type": kind, "data": data }).to_string()
}

pub fn error(code: &str, message_text: &str) -> String {
    message(
        "Error",
        json!({ "message": message_text, "error_code": code }),
    )
}

pub fn join_failed(code: &str, reason: &str) -> String {
    message(
        "SpectatorJoinFailed",
        json!({ "reason": reason, "error_code": code }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::{rfc3339, uuid_v4};

    #[test]
    fn formats() {
        let e: serde_json::Value = serde_json::from_str(&error("X", "m")).expect("json");
        assert_eq!(e["data"]["error_code"], json!("X"));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_736_937_300_123), "2025-01-15T10:35:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
    }
}
