//! The match engine: rebuilds a match's state from ingest events and renders the `match_data`
//! snapshot. Plain Rust, no I/O and no clock of its own (callers pass times in).
//!
//! This is the foundation version: it keeps the match's basic fields (id, game mode, map, round
//! number and phase, running flag, the logon teams) so the transport can be proven end to end.
//! The full state machine of `match-engine.md` replaces the internals behind the same interface.

use serde_json::{Map, Value, json};

use crate::ingest::ObsLogon;

/// What applying an event did to the match's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// `round_info` with phase `game_end`: broadcast the final state, then remove the match.
    GameEnded,
}

#[derive(Debug)]
pub struct Match {
    group_code: String,
    match_id: Value,
    match_type: String,
    is_running: bool,
    round_number: i64,
    round_phase: String,
    map: String,
    left_team: Value,
    right_team: Value,
    event_number: u64,
}

fn team(v: Option<&Value>, fallback_attacking: bool) -> Value {
    let t = v.and_then(Value::as_object);
    let field = |k: &str| t.and_then(|t| t.get(k)).cloned().unwrap_or(Value::Null);
    json!({
        "teamName": field("name"),
        "teamTricode": field("tricode"),
        "teamUrl": field("url"),
        "isAttacking": t
            .and_then(|t| t.get("attackStart"))
            .and_then(Value::as_bool)
            .unwrap_or(fallback_attacking),
        "roundsWon": 0,
        "players": [],
    })
}

impl Match {
    /// Builds a match from a validated observer logon.
    pub fn new(logon: &ObsLogon) -> Result<Match, String> {
        let left = logon.data.get("leftTeam");
        let right = logon.data.get("rightTeam");
        if !left.is_some_and(Value::is_object) || !right.is_some_and(Value::is_object) {
            return Err("leftTeam and rightTeam must be objects".into());
        }
        Ok(Match {
            group_code: logon.group_code.clone(),
            match_id: Value::String(String::new()),
            match_type: "bomb".into(),
            is_running: false,
            round_number: 0,
            round_phase: "LOBBY".into(),
            map: "Loading".into(),
            left_team: team(left, false),
            right_team: team(right, false),
            event_number: 1,
        })
    }

    /// The change counter: the broadcaster sends a snapshot whenever it moved.
    pub fn event_number(&self) -> u64 {
        self.event_number
    }

    /// The Valorant match id as the aux logon compares it (JS string form).
    pub fn match_id_text(&self) -> String {
        match &self.match_id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// Applies one ingest event (the envelope with `type` and `data`).
    pub fn apply(&mut self, event: &Map<String, Value>) -> Outcome {
        let data = event.get("data").unwrap_or(&Value::Null);
        let mut outcome = Outcome::Continue;
        match event.get("type").and_then(Value::as_str) {
            Some("map") => {
                if let Some(m) = data.as_str() {
                    self.map = m.to_string();
                }
            }
            Some("game_mode") => {
                self.match_type = match data {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
            }
            Some("match_start") => {
                self.match_id = data.clone();
                self.is_running = true;
            }
            Some("round_info") => {
                if let Some(n) = data.get("roundNumber").and_then(Value::as_i64) {
                    self.round_number = n;
                }
                if let Some(phase) = data.get("roundPhase").and_then(Value::as_str) {
                    self.round_phase = phase.to_string();
                    if phase == "game_end" {
                        self.is_running = false;
                        outcome = Outcome::GameEnded;
                    }
                }
            }
            _ => {}
        }
        self.event_number += 1;
        outcome
    }

    /// An auxiliary client of this player disconnected (no counter change).
    pub fn aux_disconnected(&mut self, _player_id: &str) {}

    /// The broadcast snapshot as JSON text (sensitive fields are never part of it).
    pub fn snapshot_json(&self) -> String {
        json!({
            "matchId": self.match_id,
            "matchType": self.match_type,
            "switchRound": 13,
            "firstOtRound": 25,
            "groupCode": self.group_code,
            "isRunning": self.is_running,
            "roundNumber": self.round_number,
            "roundPhase": self.round_phase,
            "teams": [self.left_team, self.right_team],
            "map": self.map,
        })
        .to_string()
    }
}
