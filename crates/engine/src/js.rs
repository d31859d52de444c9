//! JavaScript value semantics the original relies on: truthiness, loose equality, number
//! formatting (integers without `.0`, NaN/Infinity as `null`) and string interpolation.

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Number, Value};

/// `Boolean(v)` in JavaScript (`None` = undefined).
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(_)) | Some(Value::Object(_)) => true,
    }
}

/// `Number(v)` for the values the clients send (`None` = NaN).
pub fn to_num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Null => Some(0.0),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                Some(0.0)
            } else {
                t.parse::<f64>().ok()
            }
        }
        _ => None,
    }
}

/// `a > b` with numeric coercion (false when either side is NaN/undefined).
pub fn gt(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (to_num(a), to_num(b)) {
        (Some(x), Some(y)) => x > y,
        _ => false,
    }
}

/// `a == b` (loose) for primitives: numbers and numeric strings compare as numbers.
pub fn loose_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => true,
        (None | Some(Value::Null), _) | (_, None | Some(Value::Null)) => false,
        (Some(Value::String(x)), Some(Value::String(y))) => x == y,
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x == y,
        (Some(x), Some(y)) => match (to_num(Some(x)), to_num(Some(y))) {
            (Some(p), Some(q)) => p == q,
            _ => false,
        },
    }
}

/// A JavaScript number as JSON: integral values as integers, non-finite as `null`.
pub fn num(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        return Value::from(f as i64);
    }
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// A small JSON object of named flags, in order (`{"planted":false,…}`), serialised as it
/// stands (no `Map` built for it).
pub struct Flags<'a>(pub &'a [(&'a str, bool)]);

impl Serialize for Flags<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Longest string (in characters) a client can store in one field of the match state.
pub const MAX_FIELD_CHARS: usize = 256;
/// Largest array or object (as JSON text) a client can store in one field; larger ones become
/// `null`. No real client sends a structured value in a stored field; this only bounds what a
/// hostile one can make every snapshot carry.
pub const MAX_FIELD_JSON: usize = 1024;

/// A client value as the match stores it (absent = `null`): strings cut to `MAX_FIELD_CHARS`,
/// arrays and objects longer than `MAX_FIELD_JSON` dropped. Numbers and booleans pass.
pub fn field(v: Option<&Value>) -> Value {
    match v {
        None => Value::Null,
        Some(Value::String(s)) => Value::String(short(s, MAX_FIELD_CHARS)),
        Some(v @ (Value::Array(_) | Value::Object(_))) => {
            if serde_json::to_string(v).map_or(usize::MAX, |t| t.len()) <= MAX_FIELD_JSON {
                v.clone()
            } else {
                Value::Null
            }
        }
        Some(v) => v.clone(),
    }
}

/// `s` cut to at most `max` characters.
pub fn short(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string(); // no more bytes than `max`, so no more characters
    }
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_string(),
        None => s.to_string(),
    }
}

/// String interpolation of a value (`${v}`), `undefined` when absent.
pub fn text(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) => "null".into(),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) => match num(f) {
                Value::Number(n) => n.to_string(),
                _ => f.to_string(),
            },
            None => n.to_string(),
        },
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Array(_)) => "[array]".into(),
        Some(Value::Object(_)) => "[object Object]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn semantics() {
        assert!(truthy(Some(&json!(1))));
        assert!(!truthy(Some(&json!(""))));
        assert!(!truthy(None));
        assert!(loose_eq(Some(&json!(0)), Some(&json!("0"))));
        assert!(!loose_eq(Some(&json!(1)), None));
        assert_eq!(num(5.0), json!(5));
        assert_eq!(num(1.0 / 3.0).to_string(), "0.3333333333333333");
        assert_eq!(num(f64::NAN), Value::Null);
        assert!(gt(Some(&json!(3)), Some(&json!(2))));
        assert!(!gt(None, Some(&json!(2))));
        assert_eq!(text(Some(&json!(3.0))), "3");
    }

    #[test]
    fn fields_are_bounded() {
        let long = "é".repeat(10_000);
        assert_eq!(
            field(Some(&json!(long)))
                .as_str()
                .map(|s| s.chars().count()),
            Some(MAX_FIELD_CHARS)
        );
        assert_eq!(field(Some(&json!(vec![1; 5000]))), Value::Null);
        assert_eq!(field(Some(&json!([1, 2]))), json!([1, 2]));
        assert_eq!(field(Some(&json!(1e300))), json!(1e300));
        assert_eq!(field(None), Value::Null);
        assert_eq!(short("abc", 2), "ab");
    }
}
