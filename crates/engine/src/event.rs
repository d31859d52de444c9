//! Ingest events as types. An event is the envelope an observer or aux client sends (`type`,
//! `data`, `timestamp`, …); its `type` is read once, where the event enters the server (live
//! ingest, crash recovery, tools), into a `Kind`. The engine, the replay log and the backend
//! hooks match on the `Kind`, never on the type text. Unknown types are kept as such: they are
//! logged and counted like the original does, and their text stays in the envelope.

use serde_json::{Map, Value};

/// Events the observer client sends (`obs_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObsKind {
    Roster,
    Scoreboard,
    Killfeed,
    Observing,
    RoundInfo,
    Score,
    MatchStart,
    Map,
    GameMode,
    SpikePlanted,
    SpikeDetonated,
    SpikeDefused,
    TechPause,
    LeftTimeout,
    RightTimeout,
    SwitchKdaCredits,
    Toast,
    SwapLeftRight,
    SwapAttackerDefender,
}

/// Events the auxiliary (player) client sends (`aux_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuxKind {
    Scoreboard,
    ScoreboardTeam,
    Abilities,
    Health,
    AstraTargeting,
    CypherCam,
}

/// The type of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Obs(ObsKind),
    Aux(AuxKind),
    /// A type this server does not know (or no type): kept, logged, it advances the counter.
    Unknown,
}

const NAMES: &[(&str, Kind)] = &[
    ("roster", Kind::Obs(ObsKind::Roster)),
    ("scoreboard", Kind::Obs(ObsKind::Scoreboard)),
    ("killfeed", Kind::Obs(ObsKind::Killfeed)),
    ("observing", Kind::Obs(ObsKind::Observing)),
    ("round_info", Kind::Obs(ObsKind::RoundInfo)),
    ("score", Kind::Obs(ObsKind::Score)),
    ("match_start", Kind::Obs(ObsKind::MatchStart)),
    ("map", Kind::Obs(ObsKind::Map)),
    ("game_mode", Kind::Obs(ObsKind::GameMode)),
    ("spike_planted", Kind::Obs(ObsKind::SpikePlanted)),
    ("spike_detonated", Kind::Obs(ObsKind::SpikeDetonated)),
    ("spike_defused", Kind::Obs(ObsKind::SpikeDefused)),
    ("tech_pause", Kind::Obs(ObsKind::TechPause)),
    ("left_timeout", Kind::Obs(ObsKind::LeftTimeout)),
    ("right_timeout", Kind::Obs(ObsKind::RightTimeout)),
    ("switch_kda_credits", Kind::Obs(ObsKind::SwitchKdaCredits)),
    ("toast", Kind::Obs(ObsKind::Toast)),
    ("swap_left_right", Kind::Obs(ObsKind::SwapLeftRight)),
    (
        "swap_attacker_defender",
        Kind::Obs(ObsKind::SwapAttackerDefender),
    ),
    ("aux_scoreboard", Kind::Aux(AuxKind::Scoreboard)),
    ("aux_scoreboard_team", Kind::Aux(AuxKind::ScoreboardTeam)),
    ("aux_abilities", Kind::Aux(AuxKind::Abilities)),
    ("aux_health", Kind::Aux(AuxKind::Health)),
    ("aux_astra_targeting", Kind::Aux(AuxKind::AstraTargeting)),
    ("aux_cypher_cam", Kind::Aux(AuxKind::CypherCam)),
];

impl Kind {
    /// The kind of a type text (`Unknown` for anything else).
    pub fn parse(name: &str) -> Kind {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Kind::Unknown, |(_, k)| *k)
    }
}

/// One event: its kind, read once, and the envelope as received (what the replay log writes).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    kind: Kind,
    envelope: Map<String, Value>,
}

/// An event crosses shards and nodes as its envelope; its kind is read again on arrival.
impl serde::Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.envelope.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        Map::<String, Value>::deserialize(deserializer).map(Event::new)
    }
}

impl Event {
    pub fn new(envelope: Map<String, Value>) -> Event {
        let kind = envelope
            .get("type")
            .and_then(Value::as_str)
            .map_or(Kind::Unknown, Kind::parse);
        Event { kind, envelope }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The type text as sent (for logs; `""` when there is none).
    pub fn type_name(&self) -> &str {
        self.envelope
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The envelope as received (with the server's `timestamp` once ingest added it).
    pub fn envelope(&self) -> &Map<String, Value> {
        &self.envelope
    }

    pub fn data(&self) -> Option<&Value> {
        self.envelope.get("data")
    }

    /// Adds or replaces an envelope field other than `type` (the kind stays what was read).
    pub fn set(&mut self, key: &str, value: Value) {
        if key != "type" {
            self.envelope.insert(key.to_string(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_name_round_trips_and_unknown_is_kept() {
        for (name, kind) in NAMES {
            assert_eq!(Kind::parse(name), *kind);
        }
        let e = Event::new(
            json!({"type": "future_event", "data": 1})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        assert_eq!(e.kind(), Kind::Unknown);
        assert_eq!(e.type_name(), "future_event");
        let mut e = Event::new(Map::new());
        assert_eq!(e.kind(), Kind::Unknown);
        e.set("type", json!("score"));
        assert_eq!(
            e.kind(),
            Kind::Unknown,
            "the type cannot be changed after the kind was read"
        );
        assert!(!e.envelope().contains_key("type"));
    }
}
