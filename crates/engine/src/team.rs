//! One team: identity from the logon, its players, score and round record (snapshot-schema §3).

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use super::cached::Cached;
use super::js::truthy;
use super::player::Player;

/// The highest round a round record holds. The longest professional VALORANT maps went past
/// round 60 in overtime; the record's size comes from a client's number, so it is bounded.
pub const MAX_ROUNDS: i64 = 200;

/// One entry of a team's round record.
#[derive(Debug, Clone)]
pub struct Record {
    pub kind: String,
    pub was_attack: Option<Value>,
    pub round: i64,
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("type", &self.kind)?;
        if let Some(w) = &self.was_attack {
            m.serialize_entry("wasAttack", w)?;
        }
        m.serialize_entry("round", &self.round)?;
        m.end()
    }
}

#[derive(Debug, Clone)]
pub struct Team {
    team_name: Option<Value>,
    pub team_tricode: Option<Value>,
    team_url: Option<Value>,
    pub ingame_team_id: i64,
    pub is_attacking: Option<Value>,
    pub rounds_won: Option<Value>,
    pub spent_this_round: f64,
    pub round_record: Cached<Vec<Record>>,
    pub remove_tricode: Option<Value>,
    pub players: Vec<Cached<Player>>,
    pub has_duplicate_agents: bool,
}

impl Team {
    /// Builds a team from a logon team object (engine §2.1).
    pub fn new(
        logon: &Map<String, Value>,
        ingame_team_id: i64,
        remove_tricode: Option<Value>,
    ) -> Team {
        let is_attacking = logon.get("attackStart").cloned();
        let round_record = (1..=25)
            .map(|round| Record {
                kind: "upcoming".into(),
                was_attack: is_attacking.clone(),
                round,
            })
            .collect();
        let round_record = Cached::new(round_record);
        Team {
            team_name: logon.get("name").cloned(),
            team_tricode: logon.get("tricode").cloned(),
            team_url: logon.get("url").cloned(),
            ingame_team_id,
            is_attacking,
            rounds_won: Some(json!(0)),
            spent_this_round: 0.0,
            round_record,
            remove_tricode,
            players: Vec::new(),
            has_duplicate_agents: false,
        }
    }

    pub fn attacking(&self) -> bool {
        truthy(self.is_attacking.as_ref())
    }

    pub fn flip_side(&mut self) {
        self.is_attacking = Some(Value::Bool(!self.attacking()));
    }

    pub fn player_by_riot_id(&mut self, id: &str) -> Option<&mut Player> {
        self.players
            .iter_mut()
            .find(|p| p.riot_id == id)
            .map(Cached::edit)
    }

    /// Writes round `r`'s reason and the next five "upcoming" entries (engine §5.9). Holes left by
    /// skipped rounds are filled with "upcoming" (QUIRK E25: the original left `null` holes).
    /// Rounds outside `1..=MAX_ROUNDS` are not recorded: the round number comes from the client
    /// and sizes the record.
    pub fn record_round(&mut self, r: i64, kind: &str) {
        if !(1..=MAX_ROUNDS).contains(&r) {
            return;
        }
        let was_attack = self.is_attacking.clone();
        let needed = (r + 5) as usize;
        while self.round_record.len() < needed {
            let round = self.round_record.len() as i64 + 1;
            self.round_record.edit().push(Record {
                kind: "upcoming".into(),
                was_attack: was_attack.clone(),
                round,
            });
        }
        self.round_record.edit()[(r - 1) as usize] = Record {
            kind: kind.into(),
            was_attack: was_attack.clone(),
            round: r,
        };
        for i in r..r + 5 {
            self.round_record.edit()[i as usize] = Record {
                kind: "upcoming".into(),
                was_attack: was_attack.clone(),
                round: i + 1,
            };
        }
    }

    /// Duplicate-agent detection at combat (sticky, QUIRK E10).
    pub fn detect_duplicates(&mut self) {
        for (i, p) in self.players.iter().enumerate() {
            if self.players[i + 1..]
                .iter()
                .any(|q| q.agent_internal == p.agent_internal)
            {
                self.has_duplicate_agents = true;
                return;
            }
        }
    }

    pub fn recompute_spent(&mut self) {
        self.spent_this_round = self.players.iter().map(|p| p.money_spent()).sum();
    }
}

impl crate::cached::SnapshotPart for Vec<Record> {
    fn write_snapshot<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize(s)
    }
}

/// The team's snapshot JSON, written straight to the output (key order of snapshot-schema §3).
impl Serialize for Team {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.team_name {
            m.serialize_entry("teamName", v)?;
        }
        if let Some(v) = &self.team_tricode {
            m.serialize_entry("teamTricode", v)?;
        }
        if let Some(v) = &self.team_url {
            m.serialize_entry("teamUrl", v)?;
        }
        m.serialize_entry("ingameTeamId", &self.ingame_team_id)?;
        if let Some(v) = &self.is_attacking {
            m.serialize_entry("isAttacking", v)?;
        }
        m.serialize_entry("hasHandledTeam", &false)?;
        if let Some(v) = &self.rounds_won {
            m.serialize_entry("roundsWon", v)?;
        }
        m.serialize_entry("spentThisRound", &super::js::num(self.spent_this_round))?;
        m.serialize_entry("roundRecord", &self.round_record)?;
        if let Some(v) = &self.remove_tricode {
            m.serialize_entry("removeTricode", v)?;
        }
        m.serialize_entry("players", &self.players)?;
        m.serialize_entry("playerCount", &self.players.len())?;
        m.serialize_entry("hasDuplicateAgents", &self.has_duplicate_agents)?;
        m.end()
    }
}
