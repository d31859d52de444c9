//! Packet formats of the two protocol layers, as plain values: Engine.IO v4 packets (the
//! transport layer: open, ping/pong, message, upgrade, noop, close) and Socket.IO v5 packets (the
//! namespace layer carried inside Engine.IO messages). Parsing and encoding only; no state.

use bytes::Bytes;
use serde_json::Value;

use crate::websocket::FrameBuf;

/// Engine.IO v4 packet (text form; binary messages are handled apart).
#[derive(Debug, PartialEq)]
pub enum EioPacket<'a> {
    Open,
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

impl<'a> EioPacket<'a> {
    pub fn parse(text: &'a str) -> Option<EioPacket<'a>> {
        let mut chars = text.chars();
        let kind = chars.next()?;
        let rest = chars.as_str();
        Some(match kind {
            '0' => EioPacket::Open,
            '1' => EioPacket::Close,
            '2' => EioPacket::Ping(rest),
            '3' => EioPacket::Pong(rest),
            '4' => EioPacket::Message(rest),
            '5' => EioPacket::Upgrade,
            '6' => EioPacket::Noop,
            _ => return None,
        })
    }
}

/// Record separator between packets of a long-polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Joins packets into one long-polling payload.
pub fn encode_payload(packets: &[Bytes]) -> Bytes {
    if packets.len() == 1 {
        return packets[0].clone();
    }
    let len = packets.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

/// Socket.IO v5 packet types.
#[derive(Debug, PartialEq, Clone, Copy)]
pub enum SioType {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// A parsed Socket.IO packet; `data` is the raw JSON text after the header.
#[derive(Debug, PartialEq)]
pub struct SioPacket<'a> {
    pub kind: SioType,
    pub nsp: &'a str,
    pub id: Option<u64>,
    /// Binary attachments that follow as separate Engine.IO messages (binary types only).
    pub attachments: usize,
    pub data: &'a str,
}

impl<'a> SioPacket<'a> {
    pub fn parse(text: &'a str) -> Option<SioPacket<'a>> {
        let bytes = text.as_bytes();
        let kind = match bytes.first()? {
            b'0' => SioType::Connect,
            b'1' => SioType::Disconnect,
            b'2' => SioType::Event,
            b'3' => SioType::Ack,
            b'4' => SioType::ConnectError,
            b'5' => SioType::BinaryEvent,
            b'6' => SioType::BinaryAck,
            _ => return None,
        };
        let mut rest = &text[1..];
        let mut attachments = 0;
        if matches!(kind, SioType::BinaryEvent | SioType::BinaryAck) {
            // "<attachments>-" precedes the namespace.
            let dash = rest.find('-')?;
            if dash == 0 || !rest[..dash].bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            attachments = rest[..dash].parse().ok()?;
            rest = &rest[dash + 1..];
        }
        let mut nsp = "/";
        if rest.starts_with('/') {
            match rest.find(',') {
                Some(comma) => {
                    nsp = &rest[..comma];
                    rest = &rest[comma + 1..];
                }
                None => {
                    nsp = rest;
                    rest = "";
                }
            }
        }
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        let id = if digits > 0 {
            let id = rest[..digits].parse().ok()?;
            rest = &rest[digits..];
            Some(id)
        } else {
            None
        };
        Some(SioPacket {
            kind,
            nsp,
            id,
            attachments,
            data: rest,
        })
    }
}

/// Encodes a Socket.IO packet as Engine.IO message text (`4` + type + attachments + namespace +
/// id + data). `attachments > 0` turns an event/ack into its binary form.
pub fn encode_sio(
    kind: SioType,
    nsp: &str,
    id: Option<u64>,
    data: &str,
    attachments: usize,
) -> Bytes {
    let (kind, attachments) = match (kind, attachments) {
        (SioType::Event, n) if n > 0 => (SioType::BinaryEvent, n),
        (SioType::Ack, n) if n > 0 => (SioType::BinaryAck, n),
        (k, n) => (k, n),
    };
    let digit = match kind {
        SioType::Connect => '0',
        SioType::Disconnect => '1',
        SioType::Event => '2',
        SioType::Ack => '3',
        SioType::ConnectError => '4',
        SioType::BinaryEvent => '5',
        SioType::BinaryAck => '6',
    };
    let mut out = String::with_capacity(data.len() + nsp.len() + 24);
    out.push('4');
    out.push(digit);
    if matches!(kind, SioType::BinaryEvent | SioType::BinaryAck) {
        out.push_str(&attachments.to_string());
        out.push('-');
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        out.push_str(&id.to_string());
    }
    out.push_str(data);
    Bytes::from(out)
}

/// Long-polling form of an Engine.IO binary message: `b` + base64.
pub fn binary_payload_packet(data: &[u8]) -> Bytes {
    use base64::Engine as _;
    let mut out = String::with_capacity(data.len() * 4 / 3 + 4);
    out.push('b');
    base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
    Bytes::from(out)
}

/// Decodes the base64 of a long-polling binary packet (after the `b`).
pub fn decode_binary_payload(text: &str) -> Option<Bytes> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .map(Bytes::from)
}

/// Reads an EVENT's data (`["name", arg, ...]`) into the event name and its first argument as
/// text. A string argument is returned as is; any other JSON value as its JSON text.
pub fn event_name_and_arg(data: &str) -> Option<(String, Option<String>)> {
    event_from_value(serde_json::from_str(data).ok()?)
}

/// Whether a parsed EVENT payload is valid Socket.IO: an array starting with the event name.
pub fn is_event_payload(value: &Value) -> bool {
    matches!(value, Value::Array(items) if matches!(items.first(), Some(Value::String(_))))
}

/// `event_name_and_arg` on an already parsed payload.
pub fn event_from_value(value: Value) -> Option<(String, Option<String>)> {
    let mut items = match value {
        Value::Array(items) => items.into_iter(),
        _ => return None,
    };
    let name = match items.next()? {
        Value::String(s) => s,
        _ => return None,
    };
    let arg = match items.next() {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Null) => Some("null".to_string()),
        Some(other) => Some(other.to_string()),
    };
    Some((name, arg))
}

/// The Engine.IO message text of a Socket.IO event with one JSON-string argument:
/// `42["name","<payload as a JSON string>"]`.
pub fn event_packet(name: &str, payload: &str) -> Bytes {
    event_packet_buf(name, payload, None).into_message()
}

/// `event_packet` with the event's offset as a last string argument
/// (`42["name","<payload>","<offset>"]`): Socket.IO connection state recovery; the client sends
/// the last offset it saw when it reconnects.
pub fn event_packet_with_offset(name: &str, payload: &str, offset: &str) -> Bytes {
    event_packet_buf(name, payload, Some(offset)).into_message()
}

/// `event_packet(name, &json)` (with the offset, if any) and `json` itself, for a `value`
/// serialised once: the packet's string argument is written in the same pass as the JSON text
/// (`size_hint`: the JSON's expected length). `None` when the value cannot be serialised.
pub fn event_packet_of<T: serde::Serialize + ?Sized>(
    name: &str,
    value: &T,
    offset: Option<&str>,
    size_hint: usize,
) -> Option<(Bytes, String)> {
    event_packet_of_known(name, value, offset, size_hint, &|_| None)
        .map(|(packet, json)| (packet.into_message(), json))
}

/// `event_packet_of`, with the escaped forms of raw fragments the caller keeps (`known`: parts
/// serialised as kept JSON, whose escaped text it keeps too) copied instead of escaped again.
pub fn event_packet_of_known<T: serde::Serialize + ?Sized>(
    name: &str,
    value: &T,
    offset: Option<&str>,
    size_hint: usize,
    known: &crate::json_arg::KnownEscapes<'_>,
) -> Option<(FrameBuf, String)> {
    event_around(name, offset, size_hint, |out| {
        out.push(b'"');
        let json = crate::json_arg::serialize_both(value, out, size_hint, known)?;
        out.push(b'"');
        Some(json)
    })
}

/// `event_packet` (with the offset, if any) written after room for its WebSocket frame header
/// (`outbound::FrameSet::of_packet`).
pub fn event_packet_buf(name: &str, payload: &str, offset: Option<&str>) -> FrameBuf {
    let written = event_around(name, offset, payload.len(), |out| {
        push_json_string(out, payload);
        Some(())
    });
    // The argument above is always written.
    written.map_or_else(|| FrameBuf::with_capacity(0), |(packet, ())| packet)
}

/// `42["name",<argument>(,"offset")]`, the argument (about `len` bytes before escaping) written
/// by `argument`; None when it writes none.
fn event_around<T>(
    name: &str,
    offset: Option<&str>,
    len: usize,
    argument: impl FnOnce(&mut Vec<u8>) -> Option<T>,
) -> Option<(FrameBuf, T)> {
    let extra = offset.map_or(0, |o| o.len() + 4);
    // Escaping grows a JSON payload by its quotes; an eighth more avoids most regrowth.
    let mut packet = FrameBuf::with_capacity(len + len / 8 + name.len() + 16 + extra);
    let out = packet.buf();
    out.extend_from_slice(b"42[");
    push_json_string(out, name);
    out.push(b',');
    let written = argument(out)?;
    if let Some(offset) = offset {
        out.push(b',');
        push_json_string(out, offset);
    }
    out.push(b']');
    Some((packet, written))
}

/// Appends `s` as a JSON string literal, escaped straight into `out` (no intermediate copy).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socketio_packets() {
        let p = SioPacket::parse("0").unwrap();
        assert_eq!((p.kind, p.nsp, p.data), (SioType::Connect, "/", ""));
        let p = SioPacket::parse("0/admin,{\"a\":1}").unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.data),
            (SioType::Connect, "/admin", "{\"a\":1}")
        );
        let p = SioPacket::parse("2[\"hello\",\"{}\"]").unwrap();
        assert_eq!(
            (p.kind, p.id, p.data),
            (SioType::Event, None, "[\"hello\",\"{}\"]")
        );
        let p = SioPacket::parse("212[\"x\"]").unwrap();
        assert_eq!(p.id, Some(12));
        let p = SioPacket::parse("51-[\"x\",{\"_placeholder\":true,\"num\":0}]").unwrap();
        assert_eq!((p.kind, p.attachments), (SioType::BinaryEvent, 1));
        assert!(SioPacket::parse("5-[]").is_none());
        assert!(SioPacket::parse("9").is_none());
        assert!(SioPacket::parse("5x-[]").is_none());
        assert!(SioPacket::parse("").is_none());
    }

    #[test]
    fn event_args() {
        assert_eq!(
            event_name_and_arg("[\"hello\",\"{\\\"room\\\":\\\"A\\\"}\"]"),
            Some(("hello".into(), Some("{\"room\":\"A\"}".into())))
        );
        assert_eq!(
            event_name_and_arg("[\"hello\",{\"room\":\"A\"}]"),
            Some(("hello".into(), Some("{\"room\":\"A\"}".into())))
        );
        assert_eq!(event_name_and_arg("[\"x\"]"), Some(("x".into(), None)));
        assert_eq!(event_name_and_arg("{}"), None);
        assert_eq!(event_name_and_arg("[1]"), None);
        assert_eq!(event_name_and_arg("[\"x\""), None);
    }

    #[test]
    fn encodes() {
        assert_eq!(
            &event_packet("greeting_ok", "{\"a\":\"b\"}")[..],
            b"42[\"greeting_ok\",\"{\\\"a\\\":\\\"b\\\"}\"]"
        );
        assert_eq!(
            &event_packet_with_offset("greeting", "{}", "7")[..],
            b"42[\"greeting\",\"{}\",\"7\"]"
        );
        let joined = encode_payload(&[Bytes::from_static(b"2"), Bytes::from_static(b"40")]);
        assert_eq!(&joined[..], b"2\x1e40");
        assert_eq!(EioPacket::parse("2probe"), Some(EioPacket::Ping("probe")));
        assert_eq!(EioPacket::parse("x"), None);
        assert_eq!(
            &encode_sio(SioType::Ack, "/custom", Some(7), "[1]", 2)[..],
            b"462-/custom,7[1]"
        );
        assert_eq!(&encode_sio(SioType::Event, "/", None, "[]", 0)[..], b"42[]");
        let b = binary_payload_packet(&[1, 2, 3, 4]);
        assert_eq!(&b[..], b"bAQIDBA==");
        assert_eq!(
            decode_binary_payload("AQIDBA==").as_deref(),
            Some(&[1u8, 2, 3, 4][..])
        );
        assert_eq!(decode_binary_payload("!!"), None);
    }
}
