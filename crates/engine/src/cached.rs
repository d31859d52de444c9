//! A part of the snapshot kept with its JSON between broadcasts (players: most events change
//! one of ten). The JSON is written the first time the part is serialised after a change and
//! reused until the next change; any change needs `edit`, which drops the JSON, so a stale
//! text cannot be sent — the type has no other way to a `&mut T`.
//!
//! Why: serialising a player reads its values, strings and maps from all over the heap; with
//! hundreds of matches on a core those reads miss the cache on every broadcast, while the kept
//! text is one run of bytes. Owns only the cache; what is serialised and how stays with `T`
//! (`SnapshotPart`). Beside the JSON it keeps, made when first asked for (`escaped_if`), that
//! text escaped as the contents of a JSON string — the form a Socket.IO `match_data` argument
//! carries — so a broadcast copies it instead of escaping the part again.

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use std::cell::OnceCell;
use std::ops::Deref;

#[derive(Debug)]
pub struct Cached<T> {
    value: T,
    json: OnceCell<Box<RawValue>>,
    escaped: OnceCell<Box<str>>,
}

impl<T> Cached<T> {
    pub fn new(value: T) -> Self {
        Self {
            value,
            json: OnceCell::new(),
            escaped: OnceCell::new(),
        }
    }

    /// The value to change; its kept JSON (and escaped JSON) is dropped.
    pub fn edit(&mut self) -> &mut T {
        self.json.take();
        self.escaped.take();
        &mut self.value
    }

    /// When `fragment` is this part's kept JSON itself (the same bytes in memory, as a
    /// serializer hands a kept part's text on), that text escaped as inside a JSON string
    /// literal, byte for byte what `serde_json` writes for it as a `str` without the quotes.
    pub fn escaped_if(&self, fragment: &str) -> Option<&str> {
        let json = self.json.get()?.get();
        if !std::ptr::eq(json.as_ptr(), fragment.as_ptr()) || json.len() != fragment.len() {
            return None;
        }
        Some(self.escaped.get_or_init(|| escape(json)))
    }
}

/// `json` as inside a JSON string literal (serde_json's escaping of a `str`, quotes removed).
fn escape(json: &str) -> Box<str> {
    let quoted = serde_json::to_string(json).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .into()
}

/// A copy starts without the JSON: what is kept is derived, and a copy that is then changed on
/// its own must not carry the original's text. (Tests compare a copy's full encode with the
/// original's kept one.)
impl<T: Clone> Clone for Cached<T> {
    fn clone(&self) -> Self {
        Self::new(self.value.clone())
    }
}

impl<T> Deref for Cached<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// What a kept part writes into the snapshot: its broadcast form, which may leave things out
/// (the tools' private keys). `Cached` serialises a part only through this, never through the
/// part's own `Serialize`, so what is kept is always the broadcast form.
pub trait SnapshotPart {
    fn write_snapshot<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
}

/// A part as its snapshot form.
struct Part<'a, T>(&'a T);

impl<T: SnapshotPart> Serialize for Part<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.write_snapshot(s)
    }
}

/// The kept JSON, written from the value when there is none. serde_json writes it as it stands
/// (`write_raw_fragment`), byte for byte what serialising the value would write.
impl<T: SnapshotPart> Serialize for Cached<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if let Some(raw) = self.json.get() {
            return raw.serialize(s);
        }
        match serde_json::value::to_raw_value(&Part(&self.value)) {
            Ok(raw) => raw_then_keep(&self.json, raw, s),
            Err(_) => Part(&self.value).serialize(s),
        }
    }
}

fn raw_then_keep<S: Serializer>(
    cell: &OnceCell<Box<RawValue>>,
    raw: Box<RawValue>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let raw = cell.get_or_init(|| raw);
    raw.serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    impl SnapshotPart for serde_json::Value {
        fn write_snapshot<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.serialize(s)
        }
    }

    #[test]
    fn kept_until_changed() {
        let mut c = Cached::new(json!({"name": "a", "kills": 1}));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"name":"a","kills":1}"#
        );
        assert!(c.json.get().is_some());
        let kept = c.json.get().map(|raw| raw.get().to_string()).unwrap();
        let text = c.json.get().unwrap().get();
        assert_eq!(c.escaped_if(text), Some(r#"{\"name\":\"a\",\"kills\":1}"#));
        assert_eq!(
            c.escaped_if(&kept),
            None,
            "equal text elsewhere is not the part's"
        );
        c.edit()["kills"] = json!(2);
        assert!(c.json.get().is_none());
        assert!(c.escaped.get().is_none());
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"name":"a","kills":2}"#
        );
        // A serde_json::Value built from it is the value's, not a string of its text.
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"name": "a", "kills": 2})
        );
    }
}
