//! Spectator protocol messages (`spectator-protocol.md`): the `{"type","data"}` envelope, ids
//! (UUID v4) and RFC 3339 timestamps. Builders only; no state.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

/// A random UUID v4 in lowercase hyphenated form.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Now as RFC 3339 UTC with milliseconds, e.g. `2025-01-15T10:35:00.123Z`.
pub fn now_rfc3339() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    rfc3339(ms)
}

pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

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

/// `{"type":"GameData","data":{"from_player":…,"data":<snapshot>}}` around an already
/// serialised snapshot (no re-serialisation).
pub fn game_data(from_player: &Value, snapshot_json: &str) -> Bytes {
    let mut out = String::with_capacity(snapshot_json.len() + 96);
    out.push_str(r#"{"type":"GameData","data":{"from_player":"#);
    out.push_str(&from_player.to_string());
    out.push_str(r#","data":"#);
    out.push_str(snapshot_json);
    out.push_str("}}");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_736_937_300_123), "2025-01-15T10:35:00.123Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        let g = game_data(&json!("p1"), r#"{"a":1}"#);
        let v: Value = serde_json::from_slice(&g).expect("json");
        assert_eq!(v["data"]["data"]["a"], json!(1));
    }
}
