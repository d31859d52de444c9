//! Parsing of ingest event payloads with simd-json into an order-preserving JSON value.

use serde_json::Value;

/// Parses one event's JSON text. The error text is for the log.
pub fn parse_event(text: &str) -> Result<Value, String> {
    let mut bytes = text.as_bytes().to_vec();
    simd_json::serde::from_slice::<Value>(&mut bytes).map_err(|e| e.to_string())
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
}
