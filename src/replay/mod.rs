//! Replay logs in the original's format (ingest spec §10): `Match_<code>_<ms>.replay`, a header
//! object, then `,\n` and one event per accepted ingest event. This module owns the format (file
//! name, header, parsing); `log` writes files, `recover` rebuilds live matches from them at
//! start-up. Nothing here touches sessions or broadcasts.
//!
//! Beyond the original's header, ours carries a `spectraServer` object (the server-generated group
//! secret, organisation and supporter flag) so a crashed match can be rebuilt with the same secret;
//! the original's replay tool ignores unknown header keys.

pub mod log;
pub mod recover;

use serde_json::{Map, Value, json};
use spectra_engine::Event;

use crate::shard::messages::ObsLogon;

/// The file name of a match's replay log. The group code is the client's text, so anything but
/// letters, digits, `-` and `_` becomes `_` (no path can escape the directory); the header keeps
/// the real code.
pub fn file_name(code: &str, start_ms: u64) -> String {
    let safe: String = code
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("Match_{safe}_{start_ms}.replay")
}

/// The header: the logon object without `key` and `type`, our recovery data, then
/// `logStartTime` as the last key.
pub fn header(logon: &ObsLogon, secret: &str, start_ms: u64) -> Value {
    let mut h = logon.data.clone();
    h.remove("key");
    h.remove("type");
    h.insert(
        "spectraServer".into(),
        json!({
            "groupSecret": secret,
            "organizationId": logon.organization_id,
            "isSupporter": logon.is_supporter,
        }),
    );
    h.insert("logStartTime".into(), json!(start_ms));
    Value::Object(h)
}

/// A parsed replay file.
#[derive(Debug, Default)]
pub struct ReplayFile {
    pub header: Map<String, Value>,
    /// The events, typed where they enter (`Event::new`).
    pub events: Vec<Event>,
    /// Lines that were not a JSON object (a crash can cut the last one short).
    pub skipped: usize,
    /// Bytes up to the end of the last record that parsed: a resumed log continues from here,
    /// dropping a record cut short by a crash.
    pub valid_len: u64,
}

impl ReplayFile {
    pub fn group_code(&self) -> Option<&str> {
        self.header.get("groupCode").and_then(Value::as_str)
    }

    pub fn start_ms(&self) -> u64 {
        self.header
            .get("logStartTime")
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// The observer logon this file was started with (recovery data from `spectraServer`).
    pub fn logon(&self) -> Option<(ObsLogon, String)> {
        let code = self.group_code()?.to_string();
        let server = self.header.get("spectraServer")?;
        let secret = server.get("groupSecret")?.as_str()?.to_string();
        let mut data = self.header.clone();
        data.remove("spectraServer");
        data.remove("logStartTime");
        let logon = ObsLogon {
            group_secret: String::new(),
            obs_name: data
                .get("obsName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            group_code: code,
            data,
            is_supporter: server
                .get("isSupporter")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            organization_id: server
                .get("organizationId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        Some((logon, secret))
    }
}

impl ReplayFile {
    /// A match logon from the header alone (the original's files carry no recovery data): for
    /// replaying a file through the engine in tools and benchmarks.
    pub fn engine_logon(&self, group_code: &str) -> spectra_engine::Logon {
        spectra_engine::Logon {
            group_code: group_code.to_string(),
            data: self.header.clone(),
            is_supporter: false,
            organization_id: String::new(),
        }
    }
}

/// Parses a replay file. Every record is one line (compact JSON never contains a raw newline);
/// a line that does not parse — typically the last one, cut by a crash — is counted and skipped.
pub fn parse(text: &str) -> Result<ReplayFile, String> {
    let mut offset = 0;
    let mut lines = text.split_inclusive('\n').map(|line| {
        let start = offset;
        offset += line.len();
        (start, line.trim_end().trim_end_matches(','))
    });
    let (_, first) = lines.next().unwrap_or((0, ""));
    let header = match serde_json::from_str::<Value>(first) {
        Ok(Value::Object(h)) => h,
        _ => return Err("the first line is not a JSON object (not a replay file?)".into()),
    };
    let mut file = ReplayFile {
        header,
        valid_len: first.len() as u64,
        ..ReplayFile::default()
    };
    for (start, record) in lines {
        if record.is_empty() {
            continue;
        }
        // The live path's parser and limits: what was accepted live is what is restored.
        match crate::parse::parse_event(record) {
            Ok(Value::Object(event)) => {
                file.events.push(Event::new(event));
                file.valid_len = (start + record.len()) as u64;
            }
            _ => file.skipped += 1,
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_leave_the_directory() {
        assert_eq!(file_name("ABC-1_x", 5), "Match_ABC-1_x_5.replay");
        assert_eq!(file_name("../../etc/x", 7), "Match_______etc_x_7.replay");
    }

    #[test]
    fn parses_header_events_and_skips_a_cut_last_line() {
        let text = "{\"groupCode\":\"G\",\"spectraServer\":{\"groupSecret\":\"S\"},\"logStartTime\":9},\n{\"type\":\"a\"},\n{\"type\":\"b\"},\n{\"type\":\"c";
        let f = parse(text).expect("parses");
        assert_eq!(f.group_code(), Some("G"));
        assert_eq!(f.start_ms(), 9);
        assert_eq!(f.events.len(), 2);
        assert_eq!(f.skipped, 1);
        assert_eq!(
            &text[..f.valid_len as usize],
            text.rsplit_once(",\n").map_or("", |p| p.0)
        );
        let (logon, secret) = f.logon().expect("recovery data");
        assert_eq!(secret, "S");
        assert!(!logon.data.contains_key("logStartTime"));
    }

    #[test]
    fn reads_the_kit_recording() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/kit/reference/match.replay"
        );
        let text = std::fs::read_to_string(path).expect("../shared/kit beside the repository");
        let f = parse(&text).expect("parses");
        assert_eq!(f.group_code(), Some("KITTEST"));
        assert!(f.events.len() > 100);
        assert_eq!(f.skipped, 0);
        assert!(
            f.logon().is_none(),
            "the original's header has no recovery data"
        );
    }
}
