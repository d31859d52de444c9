//! Every NATS subject, KV key and header name this node uses, built here and nowhere else
//! (`../shared/spec/cluster.md` §2). Client text never reaches the NATS protocol as is: a group
//! code (or any other variable part: a node id, a preview code) becomes one subject token of
//! its bytes in lower-case hex, which holds no `.`, `*`, `>`, whitespace or control character
//! whatever the input — even a code that a door failed to check. The fixed parts (the prefix,
//! the kinds) come from configuration and are reduced to `[A-Za-z0-9_-]` here as well.
//!
//! Owns: the subject layout (`<prefix>.<kind>.<token>`), reading a code back out of a received
//! subject (and refusing one that does not decode to a valid group code), the header names.
//! Must not touch: NATS connections, shard state.

use crate::code::valid_group_code;

/// The header naming the publishing node.
pub const NODE_HEADER: &str = "Spectra-Node";
/// The ownership epoch of the match (`../shared/spec/cluster.md` §6.1) a frame was published
/// under: edges drop frames of an older epoch than one they have seen.
pub const EPOCH_HEADER: &str = "Spectra-Epoch";
/// The publisher's clock at publication (µs since the epoch), for the lag metric.
pub const SENT_HEADER: &str = "Spectra-Sent-Us";

/// The kinds of per-code subject (`<prefix>.<kind>.<code token>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Encoded room frames of a match, from its origin.
    Frames,
    /// Request/reply: the origin's current frames.
    Snapshot,
    /// Request/reply: a message for the origin from another node.
    Ingest,
    /// The match's event log (JetStream).
    Events,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Frames => "frames",
            Kind::Snapshot => "snapshot",
            Kind::Ingest => "ingest",
            Kind::Events => "events",
        }
    }
}

/// One NATS subject token (and KV key) for any text: its UTF-8 bytes in lower-case hex (`_`
/// for the empty text, which no token may be). The only characters it can emit are
/// `0-9a-f_`.
pub fn token(text: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if text.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

/// The text of a token `token` made (`None`: not such a token, or not UTF-8).
fn untoken(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) || token.is_empty() {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes = token
        .as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Configured names (the prefix) reduced to one plain token: `[A-Za-z0-9_-]`, anything else
/// `-`, at most 64 characters, never empty.
pub fn plain_name(text: &str) -> String {
    let name: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() {
        "spectra".into()
    } else {
        name
    }
}

/// The subjects of one cluster (prefix) as seen by one node.
#[derive(Debug, Clone)]
pub struct Subjects {
    prefix: String,
    node: String,
}

impl Subjects {
    pub fn new(prefix: &str, node_id: &str) -> Subjects {
        Subjects {
            prefix: plain_name(prefix),
            node: token(node_id),
        }
    }

    /// The prefix, for bucket and stream names (`<prefix>_matches`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>.<kind>.<code token>`.
    pub fn of(&self, kind: Kind, code: &str) -> String {
        format!("{}.{}.{}", self.prefix, kind.name(), token(code))
    }

    /// Every code of a kind (`<prefix>.<kind>.*`), for a subscription or a stream.
    pub fn every(&self, kind: Kind) -> String {
        format!("{}.{}.*", self.prefix, kind.name())
    }

    /// The group code a received subject of `kind` names: `None` unless it is exactly
    /// `<prefix>.<kind>.<token>` and the token decodes to a valid group code.
    pub fn code_of(&self, kind: Kind, subject: &str) -> Option<String> {
        let rest = subject
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('.')?
            .strip_prefix(kind.name())?
            .strip_prefix('.')?;
        untoken(rest).filter(|c| valid_group_code(c))
    }

    /// Messages for connections of `node` (`<prefix>.node.<node token>`).
    pub fn node(&self, node_id: &str) -> String {
        format!("{}.node.{}", self.prefix, token(node_id))
    }

    /// This node's own `node` subject.
    pub fn own_node(&self) -> String {
        format!("{}.node.{}", self.prefix, self.node)
    }

    /// The reply subject of this node's forwarded message number `n`.
    pub fn ack(&self, n: u64) -> String {
        format!("{}.ack.{}.{n}", self.prefix, self.node)
    }

    /// Every reply subject of this node's forwards.
    pub fn acks(&self) -> String {
        format!("{}.ack.{}.*", self.prefix, self.node)
    }

    /// The forward number of a reply subject of this node's (`None`: not one).
    pub fn ack_number(&self, subject: &str) -> Option<u64> {
        subject
            .strip_prefix(self.acks().trim_end_matches('*'))?
            .parse()
            .ok()
    }

    /// A KV key for any text (group, node and preview codes).
    pub fn key(text: &str) -> String {
        token(text)
    }

    /// The group code of a match record's key (`None`: not a key `key` made of a valid code).
    pub fn code_of_key(key: &str) -> Option<String> {
        untoken(key).filter(|c| valid_group_code(c))
    }

    /// The `Nats-Msg-Id` of append number `n` by one writer (`writer`: random hex) of the log of
    /// `code` under `epoch`: unique per append, the same when that append is retried.
    pub fn log_message_id(&self, code: &str, epoch: u64, writer: &str, n: u64) -> String {
        format!("{}:{epoch}:{}:{n}", token(code), token(writer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What NATS treats specially in a subject: separators, wildcards, whitespace, controls.
    fn safe_subject_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_' || c == '-'
    }

    fn tokens_are_safe(subject: &str, tokens: usize) {
        let parts: Vec<&str> = subject.split('.').collect();
        assert_eq!(parts.len(), tokens, "{subject:?}");
        for p in parts {
            assert!(!p.is_empty(), "{subject:?}");
            assert!(p.chars().all(safe_subject_char), "{subject:?}");
        }
    }

    /// Every byte 0–255, alone and inside a code, makes one safe token that reads back.
    #[test]
    fn every_byte_makes_one_safe_token() {
        let s = Subjects::new("spectra", "node-a");
        for b in 0u8..=255 {
            let raw = [b'A', b, b'Z'];
            // Bytes that are not UTF-8 alone still reach `token` as text through lossy paths.
            let text = String::from_utf8_lossy(&raw).into_owned();
            let t = token(&text);
            assert!(
                t.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
            assert_eq!(untoken(&t).as_deref(), Some(text.as_str()));
            for kind in [Kind::Frames, Kind::Snapshot, Kind::Ingest, Kind::Events] {
                tokens_are_safe(&s.of(kind, &text), 3);
            }
            tokens_are_safe(&s.node(&text), 3);
            let c = char::from(b);
            tokens_are_safe(&s.of(Kind::Frames, &c.to_string()), 3);
        }
        for hostile in [
            "",
            " ",
            ">",
            "*",
            "A.B",
            "A\r\nPUB x 1\r\n",
            "\0",
            "ÄÖ",
            "A B",
        ] {
            tokens_are_safe(&s.of(Kind::Ingest, hostile), 3);
            tokens_are_safe(&Subjects::new(hostile, hostile).ack(7), 4);
            tokens_are_safe(&Subjects::new(hostile, hostile).own_node(), 3);
        }
    }

    #[test]
    fn a_received_subject_names_a_valid_code_or_nothing() {
        let s = Subjects::new("t", "n");
        assert_eq!(
            s.code_of(Kind::Frames, &s.of(Kind::Frames, "MATCH-1")),
            Some("MATCH-1".into())
        );
        assert_eq!(
            s.code_of(Kind::Ingest, &s.of(Kind::Ingest, "Ä.b_c")),
            Some("Ä.b_c".into())
        );
        // A kind, prefix or token that does not match, and codes no door accepts.
        assert_eq!(s.code_of(Kind::Ingest, &s.of(Kind::Frames, "A")), None);
        assert_eq!(s.code_of(Kind::Ingest, "u.ingest.41"), None);
        assert_eq!(s.code_of(Kind::Ingest, "t.ingest.4"), None);
        assert_eq!(s.code_of(Kind::Ingest, "t.ingest.4G"), None);
        assert_eq!(s.code_of(Kind::Ingest, "t.ingest.41.42"), None);
        assert_eq!(s.code_of(Kind::Ingest, "t.ingest.414"), None);
        assert_eq!(s.code_of(Kind::Ingest, "t.ingest.ff"), None);
        assert_eq!(s.code_of(Kind::Ingest, &s.of(Kind::Ingest, "A B")), None);
        assert_eq!(s.code_of(Kind::Ingest, &s.of(Kind::Ingest, "A\r\n")), None);
        assert_eq!(s.code_of(Kind::Ingest, &s.of(Kind::Ingest, "")), None);
        let long = "A".repeat(65);
        assert_eq!(s.code_of(Kind::Ingest, &s.of(Kind::Ingest, &long)), None);
        assert_eq!(s.ack_number(&s.ack(42)), Some(42));
        assert_eq!(s.ack_number("t.ack.6e.x"), None);
        assert_eq!(s.ack_number("t.ack.6f.1"), None);
    }

    #[test]
    fn configured_names_become_plain_tokens() {
        assert_eq!(plain_name("org.spectra >"), "org-spectra--");
        assert_eq!(plain_name(""), "spectra");
        assert_eq!(
            Subjects::new("a.b", "n").every(Kind::Events),
            "a-b.events.*"
        );
    }

    /// Record keys read back to their code; anything else (another bucket's keys, a key of an
    /// invalid code, not hex) is no code. Log message ids are one per append and safe in a
    /// header (no whitespace or control character whatever the code).
    #[test]
    fn record_keys_and_log_message_ids() {
        for code in ["G", "ABC-1_2.3", "PUB-0123456789ABCDEF01234567"] {
            assert_eq!(
                Subjects::code_of_key(&Subjects::key(code)).as_deref(),
                Some(code)
            );
        }
        for key in ["", "_", "zz", "4", &token("A B"), &token("a\r\nPUB x")] {
            assert_eq!(Subjects::code_of_key(key), None, "{key:?}");
        }
        let s = Subjects::new("spectra", "node-a");
        let id = s.log_message_id("A B\r\n", 7, "w1", 42);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == ':' || c == '_'),
            "{id}"
        );
        assert_ne!(id, s.log_message_id("A B\r\n", 7, "w1", 43));
        assert_ne!(id, s.log_message_id("A B\r\n", 8, "w1", 42));
        assert_ne!(id, s.log_message_id("A B\r\n", 7, "w2", 42));
    }
}
