//! A value serialised once into two forms: its JSON text, and that text as the contents of a
//! JSON string literal (`"` → `\"`, `\` → `\\`, control characters as serde_json escapes them)
//! — what a Socket.IO event carries when its argument is a JSON-encoded string, as Spectra's
//! `match_data` is. One pass over the value writes both, instead of serialising it and then
//! escaping the result in a second pass over every byte.
//!
//! Owns: the escaping of serde_json's compact output. Knows nothing of what is serialised; the
//! plain form is byte for byte `serde_json::to_string`, the escaped form byte for byte that
//! string escaped by `serde_json::to_writer(&str)`.

use serde::Serialize;
use serde_json::ser::{CharEscape, CompactFormatter, Formatter};
use std::io::{self, Write};

/// The escaped form of a raw fragment the caller already has (a part kept with its JSON and
/// that JSON escaped), or None: the fragment is escaped here.
pub type KnownEscapes<'k> = dyn Fn(&str) -> Option<&'k str> + 'k;

/// Writes the plain JSON to the serializer's writer and the escaped JSON to `escaped`.
struct Both<'a, 'k> {
    escaped: &'a mut Vec<u8>,
    known: &'a KnownEscapes<'k>,
}

/// `bytes` escaped as inside a JSON string (only `"`, `\` and control characters change).
fn escape_into(out: &mut Vec<u8>, mut bytes: &[u8]) {
    out.reserve(bytes.len() + bytes.len() / 8);
    // Runs that need no escape are copied whole (kept JSON arrives here as one long fragment).
    while let Some(i) = bytes
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        out.extend_from_slice(&bytes[..i]);
        escape_byte(out, bytes[i]);
        bytes = &bytes[i + 1..];
    }
    out.extend_from_slice(bytes);
}

/// One byte that needs an escape inside a JSON string.
fn escape_byte(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        // Never in serde_json's compact output outside its own escapes; kept correct.
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0..=0x1f => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(b >> 4) as usize],
            HEX[(b & 0xf) as usize],
        ]),
        _ => out.push(b),
    }
}

/// A token that is the same in both forms (no quote, no backslash).
macro_rules! same {
    ($($name:ident($t:ty)),* $(,)?) => {
        $(
            fn $name<W: ?Sized + Write>(&mut self, writer: &mut W, value: $t) -> io::Result<()> {
                CompactFormatter.$name(writer, value)?;
                CompactFormatter.$name(self.escaped, value)
            }
        )*
    };
}

impl Formatter for Both<'_, '_> {
    same!(
        write_bool(bool),
        write_i8(i8),
        write_i16(i16),
        write_i32(i32),
        write_i64(i64),
        write_i128(i128),
        write_u8(u8),
        write_u16(u16),
        write_u32(u32),
        write_u64(u64),
        write_u128(u128),
        write_f32(f32),
        write_f64(f64),
    );

    fn write_null<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b"null")?;
        self.escaped.extend_from_slice(b"null");
        Ok(())
    }

    fn write_number_str<W: ?Sized + Write>(&mut self, writer: &mut W, v: &str) -> io::Result<()> {
        writer.write_all(v.as_bytes())?;
        escape_into(self.escaped, v.as_bytes());
        Ok(())
    }

    fn begin_string<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b"\"")?;
        self.escaped.extend_from_slice(b"\\\"");
        Ok(())
    }

    fn end_string<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.begin_string(writer)
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json hands over the characters that need no escape only: none needs one here.
        writer.write_all(fragment.as_bytes())?;
        self.escaped.extend_from_slice(fragment.as_bytes());
        Ok(())
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        char_escape: CharEscape,
    ) -> io::Result<()> {
        let mut plain = Vec::with_capacity(6);
        CompactFormatter.write_char_escape(&mut plain, char_escape)?;
        writer.write_all(&plain)?;
        escape_into(self.escaped, &plain);
        Ok(())
    }

    fn write_raw_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        writer.write_all(fragment.as_bytes())?;
        match (self.known)(fragment) {
            Some(escaped) => self.escaped.extend_from_slice(escaped.as_bytes()),
            None => escape_into(self.escaped, fragment.as_bytes()),
        }
        Ok(())
    }

    fn begin_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.punct(writer, b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.punct(writer, b"]")
    }

    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(writer, first)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.punct(writer, b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.punct(writer, b"}")
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.separator(writer, first)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, writer: &mut W) -> io::Result<()> {
        self.punct(writer, b":")
    }
}

impl Both<'_, '_> {
    /// The comma before every element or key but the first.
    fn separator<W: ?Sized + Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            self.punct(writer, b",")
        }
    }

    fn punct<W: ?Sized + Write>(&mut self, writer: &mut W, p: &[u8]) -> io::Result<()> {
        writer.write_all(p)?;
        self.escaped.extend_from_slice(p);
        Ok(())
    }
}

/// `value`'s JSON text (its buffer sized for `size_hint` bytes), and that text escaped as a
/// JSON string's contents appended to `escaped`; `None` (and `escaped` as it was) when the value
/// cannot be serialised.
pub fn serialize_both<T: Serialize + ?Sized>(
    value: &T,
    escaped: &mut Vec<u8>,
    size_hint: usize,
    known: &KnownEscapes<'_>,
) -> Option<String> {
    let mark = escaped.len();
    let mut plain = Vec::with_capacity(size_hint.max(64));
    let mut ser = serde_json::Serializer::with_formatter(&mut plain, Both { escaped, known });
    if value.serialize(&mut ser).is_err() {
        escaped.truncate(mark);
        return None;
    }
    // serde_json writes valid UTF-8 only.
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: &serde_json::Value) {
        let mut escaped = Vec::new();
        let plain = serialize_both(v, &mut escaped, 0, &|_| None).expect("serialisable");
        assert_eq!(plain, serde_json::to_string(v).unwrap_or_default());
        let mut expected = Vec::new();
        serde_json::to_writer(&mut expected, &plain).expect("a string");
        // Without its surrounding quotes.
        assert_eq!(
            String::from_utf8_lossy(&escaped),
            String::from_utf8_lossy(&expected[1..expected.len() - 1])
        );
    }

    #[test]
    fn both_forms_equal_serialise_then_escape() {
        check(&json!(null));
        check(&json!({"a": 1, "b": [true, false, null, 1.5, -3, 1e300, u64::MAX], "c": {}}));
        check(
            &json!({"q\"uote": "say \"hi\" \\ back\\slash", "ctl": "\u{0}\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f}", "uni": "é ☃ 🎮 \u{2028}", "slash": "a/b"}),
        );
        check(&json!([[], [[]], {"": ""}, "\\\"\\\"", 0.1, 12345678901234567890u64, -0.0]));
        let many: Vec<_> = (0..300)
            .map(|i| json!({"i": i, "s": format!("\"{i}\\")}))
            .collect();
        check(&json!(many));
    }

    /// Raw fragments (a part's kept JSON) are escaped in runs: every ASCII byte, at the start,
    /// in the middle and at the end of a run, as serde_json escapes a string.
    #[test]
    fn raw_fragments_escape_as_serde_json_escapes_a_string() {
        let all: String = (0u8..0x80).map(char::from).collect();
        for text in [
            all.clone(),
            format!("{all}{all}é☃🎮"),
            "\"".into(),
            "plain".into(),
            String::new(),
            format!("{{\"a\":\"{}\"}}", "x".repeat(500)),
        ] {
            let mut out = b"prefix".to_vec();
            escape_into(&mut out, text.as_bytes());
            let expected = serde_json::to_string(&text).expect("a string");
            assert_eq!(
                String::from_utf8_lossy(&out[6..]),
                expected[1..expected.len() - 1],
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_value_that_cannot_be_serialised_leaves_the_buffer_as_it_was() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(vec![1u8], 1);
        let mut escaped = b"42[".to_vec();
        assert!(serialize_both(&map, &mut escaped, 0, &|_| None).is_none());
        assert_eq!(escaped, b"42[");
    }
}
