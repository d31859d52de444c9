//! The client-version rule: npm-semver range `>=0.3.3 <0.3.25`, parsed as npm `semver` does by
//! default (trimmed, optional leading `v`, build metadata ignored, pre-releases rejected).

/// Lowest compatible version (inclusive) and first incompatible one.
pub const MIN: (u64, u64, u64) = (0, 3, 3);
pub const LIMIT: (u64, u64, u64) = (0, 3, 25);
pub const RANGE: &str = ">=0.3.3 <0.3.25";

fn numeric(part: &str) -> Option<u64> {
    if part.is_empty() || (part.len() > 1 && part.starts_with('0')) {
        return None;
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Parses `X.Y.Z` (no pre-release); `None` if it is not such a version.
pub fn parse(version: &str) -> Option<(u64, u64, u64)> {
    let v = version.trim();
    let v = v.strip_prefix('v').unwrap_or(v);
    let v = match v.split_once('+') {
        Some((core, build)) if !build.is_empty() => core,
        Some(_) => return None,
        None => v,
    };
    if v.contains('-') {
        return None;
    }
    let mut parts = v.split('.');
    let major = numeric(parts.next()?)?;
    let minor = numeric(parts.next()?)?;
    let patch = numeric(parts.next()?)?;
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

pub fn is_compatible(version: &str) -> bool {
    parse(version).is_some_and(|v| v >= MIN && v < LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npm_semver_rules() {
        for ok in ["0.3.3", " 0.3.5 ", "v0.3.5", "0.3.5+build", "0.3.24"] {
            assert!(is_compatible(ok), "{ok}");
        }
        for bad in [
            "0.3.2",
            "0.3.25",
            "=0.3.5",
            "0.3.5-beta",
            "0.3",
            "",
            "1.0.0",
            "0.03.5",
            "x",
            "0.3.5.1",
        ] {
            assert!(!is_compatible(bad), "{bad}");
        }
    }
}
