//! Access-key validation in standalone mode (`REQUIRE_AUTH_KEY`, `AUTH_KEY`). Backend validation
//! is added by the backend module; this file must not do I/O.

use crate::config::Config;
use crate::util::constant_time_eq;

/// Outcome of a key check.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyCheck {
    Valid,
    Invalid(&'static str),
}

/// Standalone validation. A missing key never matches (the original accepted a missing key when
/// `AUTH_KEY` was unset; here `AUTH_KEY` is always set, generated if need be).
pub fn check_key(config: &Config, key: Option<&str>) -> KeyCheck {
    if !config.require_auth_key {
        return KeyCheck::Valid;
    }
    match key {
        Some(k) if constant_time_eq(k.as_bytes(), config.auth_key.as_bytes()) => KeyCheck::Valid,
        _ => KeyCheck::Invalid("Invalid Key"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
