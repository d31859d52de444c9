//! The match engine: rebuilds a match's state from ingest events (`match-engine.md`) and renders
//! the `match_data` snapshot (`snapshot-schema.md`). Plain Rust: no I/O, no clock of its own —
//! events carry their server timestamp and timers advance through `advance(now_ms)` — and no
//! knowledge of the server: a match is built from a `Logon`, fed event objects, and asked for its
//! snapshot. Events arrive typed (`event::Event`: the kind read once where they enter). Every value a
//! client sends is bounded where it is stored (`js::field`).
//!
//! Deliberate differences from the original are listed in `docs/compatibility.md`.

mod cached;
pub mod event;
pub mod js;
pub mod player;
pub mod tables;
pub mod team;
pub mod tools;

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use cached::Cached;
pub use event::{AuxKind, Event, Kind, ObsKind};
use js::{Flags, field, gt, loose_eq, num, text, to_num, truthy};
use player::Player;
use tables::tables;
use team::Team;

/// What a match is built from: the observer's validated logon object and what the server
/// decided about it (the key's organisation and supporter status are never the client's word).
#[derive(Debug, Clone)]
pub struct Logon {
    pub group_code: String,
    /// The whole logon object as the client sent it (teams, tools).
    pub data: Map<String, Value>,
    pub is_supporter: bool,
    pub organization_id: String,
}

/// What applying an event did to the match's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Continue,
    /// `round_info` with phase `game_end`: broadcast the final state, then remove the match.
    GameEnded,
}

/// Running team-timeout timers (engine §7.1), on the caller's clock.
#[derive(Debug, Clone)]
struct TimeoutTimers {
    next_tick_ms: u64,
    end_ms: u64,
}

#[derive(Debug, Clone)]
pub struct Match {
    match_id: Value,
    match_type: Value,
    switch_round: i64,
    first_ot_round: i64,
    group_code: String,
    is_running: bool,
    agent_select_start_time: Option<u64>,
    round_number: Value,
    round_phase: Value,
    round_timeout_time: Option<u64>,
    was_timeout: bool,
    spike_detonation_time: Option<u64>,
    teams: Vec<Team>,
    map: String,
    planted: bool,
    detonated: bool,
    defused: bool,
    attackers_won: Option<Value>,
    show_alive_kda: bool,
    tech_pause: bool,
    timeout_left: bool,
    timeout_right: bool,
    time_remaining: f64,
    grace_period_passed: bool,
    toast_info: Map<String, Value>,
    has_entered_overtime: bool,
    tools: Cached<Map<String, Value>>,
    organization_id: String,
    is_registered: bool,
    org_is_supporter: bool,
    /// Change counter: the broadcaster sends a snapshot whenever it moved.
    event_number: u64,
    timeout_timers: Option<TimeoutTimers>,
    toast_hide_at: Option<u64>,
    /// The logon teams as sent, for the finished-game team info.
    pub logon_left: Value,
    pub logon_right: Value,
}

fn obj(v: Option<&Value>) -> Option<&Map<String, Value>> {
    v.and_then(Value::as_object)
}

impl Match {
    /// Builds a match from a validated observer logon (engine §2).
    pub fn new(logon: &Logon) -> Result<Match, String> {
        let left = obj(logon.data.get("leftTeam")).ok_or("leftTeam must be an object")?;
        let right = obj(logon.data.get("rightTeam")).ok_or("rightTeam must be an object")?;
        // QUIRK E20: exactly one team must start on attack, or nothing maps to in-game teams.
        if truthy(left.get("attackStart")) == truthy(right.get("attackStart")) {
            return Err("exactly one of leftTeam/rightTeam must have attackStart true".into());
        }
        let mut tools = tools::merge(logon.data.get("toolsData"));
        let remove_tricode =
            obj(tools.get("playercamsInfo")).and_then(|p| p.get("removeTricodes").cloned());
        let id = |t: &Map<String, Value>| if truthy(t.get("attackStart")) { 0 } else { 1 };
        let teams = vec![
            Team::new(left, id(left), remove_tricode.clone()),
            Team::new(right, id(right), remove_tricode),
        ];
        tools::supporter_rules(&mut tools, logon.is_supporter)?;
        Ok(Match {
            match_id: json!(""),
            match_type: json!("bomb"),
            switch_round: 13,
            first_ot_round: 25,
            group_code: logon.group_code.clone(),
            is_running: false,
            agent_select_start_time: None,
            round_number: json!(0),
            round_phase: json!("LOBBY"),
            round_timeout_time: None,
            was_timeout: false,
            spike_detonation_time: None,
            teams,
            map: "Loading".into(),
            planted: false,
            detonated: false,
            defused: false,
            attackers_won: Some(Value::Bool(false)),
            show_alive_kda: false,
            tech_pause: false,
            timeout_left: false,
            timeout_right: false,
            time_remaining: 0.0,
            grace_period_passed: false,
            toast_info: match json!({"active": false, "title": "", "message": "", "duration": null, "eventLogoEnabled": true})
            {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            has_entered_overtime: false,
            tools: Cached::new(tools),
            organization_id: logon.organization_id.clone(),
            is_registered: false,
            org_is_supporter: logon.is_supporter,
            event_number: 1,
            timeout_timers: None,
            toast_hide_at: None,
            logon_left: Value::Object(left.clone()),
            logon_right: Value::Object(right.clone()),
        })
    }

    pub fn event_number(&self) -> u64 {
        self.event_number
    }

    /// The Valorant match id as the aux logon compares it (JS string form).
    pub fn match_id_text(&self) -> String {
        text(Some(&self.match_id))
    }

    pub fn teams_rounds_won(&self) -> (f64, f64) {
        let r = |t: &Team| to_num(t.rounds_won.as_ref()).unwrap_or(f64::NAN);
        (r(&self.teams[0]), r(&self.teams[1]))
    }

    /// A few facts for the operator's status page (not part of any snapshot).
    pub fn summary(&self) -> Value {
        let (left, right) = self.teams_rounds_won();
        let score = |n: f64| if n.is_finite() { json!(n) } else { json!(0) };
        json!({
            "map": self.map,
            "roundNumber": self.round_number,
            "roundPhase": self.round_phase,
            "teams": [self.teams[0].team_tricode, self.teams[1].team_tricode],
            "score": [score(left), score(right)],
            "eventNumber": self.event_number,
        })
    }

    pub fn tool(&self, key: &str) -> Value {
        self.tools.get(key).cloned().unwrap_or(Value::Null)
    }

    pub fn is_registered(&self) -> bool {
        self.is_registered
    }

    /// Registered with the backend (whatever the answer was, as in the original).
    pub fn set_registered(&mut self) {
        self.is_registered = true;
        self.event_number += 1;
    }

    /// `tools.playercamsInfo.identifier` and `.secret` (for the playercam refresh).
    pub fn playercam_ids(&self) -> (String, String) {
        let p = self.tools.get("playercamsInfo");
        let get = |k: &str| {
            p.and_then(|p| p.get(k))
                .map(|v| text(Some(v)))
                .unwrap_or_default()
        };
        (get("identifier"), get("secret"))
    }

    /// An accepted name-override / playercam refresh (engine §4.27).
    pub fn apply_playercams(&mut self, name_overrides: Value, enabled_players: Value) {
        let tools = self.tools.edit();
        if let Some(Value::Object(p)) = tools.get_mut("playercamsInfo") {
            p.insert("enabledPlayers".into(), enabled_players);
        }
        match tools.get_mut("nameOverrides") {
            Some(Value::Object(n)) => {
                n.insert("overrides".into(), name_overrides);
            }
            _ => {
                tools.insert(
                    "nameOverrides".into(),
                    json!({ "overrides": name_overrides }),
                );
            }
        }
        self.event_number += 1;
    }

    /// PUUIDs of a team's players in roster order.
    pub fn team_puuids(&self, team: usize) -> Vec<String> {
        self.teams
            .get(team)
            .map(|t| t.players.iter().map(|p| p.riot_id.clone()).collect())
            .unwrap_or_default()
    }

    /// Applies stats-backend MMR results (`{puuid, currentMMRTier, peakMMRTier}`).
    pub fn apply_mmr(&mut self, results: &[Value]) {
        for r in results {
            let Some(puuid) = r.get("puuid").and_then(Value::as_str) else {
                continue;
            };
            for p in self.players_by_id(puuid) {
                p.current_mmr_tier = r.get("currentMMRTier").cloned().unwrap_or(Value::Null);
                p.peak_mmr_tier = r.get("peakMMRTier").cloned().unwrap_or(Value::Null);
            }
        }
        self.event_number += 1;
    }

    /// The match as the backend receives it: the snapshot plus the group secret and the
    /// unstripped tools (ingest spec §8.1), without timer handles.
    pub fn backend_state(&self, group_secret: &str) -> Value {
        let mut v = self.snapshot();
        if let Value::Object(m) = &mut v {
            m.insert("tools".into(), Value::Object((*self.tools).clone()));
            m.insert(
                "groupSecret".into(),
                Value::String(group_secret.to_string()),
            );
        }
        v
    }

    /// Spectator lobby state: `waiting` (no roster yet), `lobby` (agent select), `finalized`
    /// (`match_start` received).
    pub fn lobby_state(&self) -> &'static str {
        if self.is_running || self.match_id.as_str().is_some_and(|s| !s.is_empty()) {
            "finalized"
        } else if self.agent_select_start_time.is_some() {
            "lobby"
        } else {
            "waiting"
        }
    }

    pub fn org_is_supporter(&self) -> bool {
        self.org_is_supporter
    }

    fn team_by_ingame(&mut self, start_team: Option<&Value>) -> Option<usize> {
        self.teams
            .iter()
            .position(|t| loose_eq(Some(&json!(t.ingame_team_id)), start_team))
    }

    /// Applies one ingest event (the envelope with `type`, `data`, `timestamp`).
    pub fn apply(&mut self, event: &Event) -> Outcome {
        let kind = event.kind();
        let event = event.envelope();
        let ts = event.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
        let null = Value::Null;
        let data = event.get("data").unwrap_or(&null);
        let player_id = event
            .get("playerId")
            .map(|p| text(Some(p)))
            .unwrap_or_default();
        let counted = match kind {
            Kind::Obs(ObsKind::Roster) => self.roster(data, ts),
            Kind::Obs(ObsKind::Scoreboard) => self.scoreboard(data, ts),
            Kind::Obs(ObsKind::Killfeed) => {
                self.killfeed(data);
                true
            }
            Kind::Obs(ObsKind::Observing) => {
                for p in self.teams.iter_mut().flat_map(|t| t.players.iter_mut()) {
                    // Only the players whose flag flips change (and lose their kept JSON).
                    let observed = data.as_str() == Some(p.search_name.as_str());
                    if p.is_observed != observed {
                        p.edit().is_observed = observed;
                    }
                }
                true
            }
            Kind::Obs(ObsKind::RoundInfo) => return self.round_info(data, ts),
            Kind::Obs(ObsKind::Score) => self.score(data, ts),
            Kind::Obs(ObsKind::MatchStart) => {
                self.match_id = field(Some(data));
                self.is_running = true;
                true
            }
            Kind::Obs(ObsKind::Map) => {
                self.map = tables().map(&text(Some(data)));
                true
            }
            Kind::Obs(ObsKind::GameMode) => {
                self.match_type = field(Some(data));
                let swift = data.as_str() == Some("swift");
                self.switch_round = if swift { 5 } else { 13 };
                self.first_ot_round = if swift { 99 } else { 25 };
                true
            }
            Kind::Obs(ObsKind::SpikePlanted) => {
                self.plant(ts);
                true
            }
            Kind::Obs(ObsKind::SpikeDetonated) => {
                self.detonated = true;
                self.spike_detonation_time = None;
                true
            }
            Kind::Obs(ObsKind::SpikeDefused) => {
                self.defused = true;
                true
            }
            Kind::Obs(ObsKind::TechPause) => {
                self.tech_pause = !self.tech_pause;
                if self.tech_pause {
                    self.timeout_left = false;
                    self.timeout_right = false;
                    self.timeout_timers = None;
                }
                true
            }
            Kind::Obs(ObsKind::LeftTimeout) => {
                self.team_timeout(true, ts);
                true
            }
            Kind::Obs(ObsKind::RightTimeout) => {
                self.team_timeout(false, ts);
                true
            }
            Kind::Obs(ObsKind::SwitchKdaCredits) => {
                self.show_alive_kda = !self.show_alive_kda;
                true
            }
            Kind::Obs(ObsKind::Toast) => {
                self.toast(data, ts);
                true
            }
            Kind::Obs(ObsKind::SwapLeftRight) => {
                self.teams.swap(0, 1);
                if let Some(Value::Object(c)) = self.tools.edit().get_mut("timeoutCounter") {
                    let l = c.get("left").cloned();
                    let r = c.get("right").cloned();
                    match r {
                        Some(r) => c.insert("left".into(), r),
                        None => c.shift_remove("left"),
                    };
                    match l {
                        Some(l) => c.insert("right".into(), l),
                        None => c.shift_remove("right"),
                    };
                }
                true
            }
            Kind::Obs(ObsKind::SwapAttackerDefender) => {
                for t in &mut self.teams {
                    t.flip_side();
                }
                let (a, b) = self.teams.split_at_mut(1);
                std::mem::swap(&mut a[0].rounds_won, &mut b[0].rounds_won);
                std::mem::swap(&mut a[0].round_record, &mut b[0].round_record);
                true
            }
            Kind::Aux(AuxKind::Scoreboard) => {
                self.aux_scoreboard(data, ts);
                true
            }
            Kind::Aux(AuxKind::ScoreboardTeam) => self.aux_scoreboard_team(data, &player_id, ts),
            Kind::Aux(AuxKind::Abilities) => {
                if let Some(d) = data.as_object() {
                    for p in self.players_by_id(&player_id) {
                        p.set_abilities(d);
                    }
                }
                true
            }
            Kind::Aux(AuxKind::Health) => {
                if data.is_number() {
                    for p in self.players_by_id(&player_id) {
                        p.set_health(data);
                    }
                }
                true
            }
            Kind::Aux(AuxKind::AstraTargeting | AuxKind::CypherCam) => {
                if let Some(on) = data.as_bool() {
                    let (agent, suffix) = if kind == Kind::Aux(AuxKind::AstraTargeting) {
                        ("Astra", "Targeting")
                    } else {
                        ("Cypher", "Cam")
                    };
                    for p in self.players_by_id(&player_id) {
                        p.set_icon_suffix(agent, suffix, on);
                    }
                }
                true
            }
            Kind::Unknown => true, // unknown types only advance the counter
        };
        if counted {
            self.event_number += 1;
        }
        Outcome::Continue
    }

    fn players_by_id(&mut self, id: &str) -> impl Iterator<Item = &mut Player> {
        self.teams
            .iter_mut()
            .flat_map(|t| t.players.iter_mut())
            .filter(move |p| p.riot_id == id)
            .map(Cached::edit)
    }

    /// `roster` (engine §4.1). Returns whether the counter advances.
    fn roster(&mut self, data: &Value, ts: u64) -> bool {
        let Some(d) = data.as_object() else {
            return false;
        };
        let Some(ti) = self.team_by_ingame(d.get("startTeam")) else {
            return false;
        };
        if self.agent_select_start_time.is_none() {
            self.agent_select_start_time = Some(ts);
        }
        let id = text(d.get("playerId"));
        let empty = |k: &str| d.get(k).and_then(Value::as_str) == Some("");
        if empty("playerId") || empty("name") || empty("tagline") {
            return true;
        }
        let in_lobby = !gt(Some(&self.round_number), Some(&json!(1)));
        let team = &mut self.teams[ti];
        let name = stripped_name(team, &js::short(&text(d.get("name")), js::MAX_FIELD_CHARS));
        if let Some(p) = team.player_by_riot_id(&id) {
            // QUIRK E7 fixed: tricode removal is re-applied on updates.
            p.roster_update(d, name);
        } else if team.players.len() < 5 {
            team.players.push(Cached::new(Player::from_roster(d, name)));
            // QUIRK E13 fixed: a late roster addition no longer resets the side mid-match.
            if in_lobby {
                team.is_attacking =
                    Some(Value::Bool(loose_eq(d.get("startTeam"), Some(&json!(0)))));
            }
        }
        true
    }

    /// Spike-plant detection by money (engine §5.6) for one scoreboard line against a team.
    fn money_plant_check(&mut self, ti: usize, d: &Map<String, Value>, ts: u64) {
        if self.round_phase.as_str() != Some("combat") {
            return;
        }
        let id = text(d.get("playerId"));
        let old = self.teams[ti]
            .players
            .iter()
            .find(|p| p.riot_id == id)
            .and_then(|p| to_num(Some(&p.money)))
            .unwrap_or(9999.0);
        if let Some(new) = to_num(d.get("money"))
            && new > old
            && new - old == 300.0
        {
            self.plant(ts);
        }
    }

    fn scoreboard(&mut self, data: &Value, ts: u64) -> bool {
        let Some(d) = data.as_object() else {
            return false;
        };
        let Some(ti) = self.team_by_ingame(d.get("startTeam")) else {
            return false;
        };
        self.money_plant_check(ti, d, ts);
        let team = &mut self.teams[ti];
        if let Some(p) = team.player_by_riot_id(&text(d.get("playerId"))) {
            p.scoreboard_update(d);
            p.scoreboard_available = true;
            team.recompute_spent();
        }
        true
    }

    fn aux_line(&mut self, ti: usize, d: &Map<String, Value>) {
        if let Some(p) = self.teams[ti].player_by_riot_id(&text(d.get("playerId")))
            && !p.scoreboard_available
        {
            p.scoreboard_update(d);
            p.aux_scoreboard = true;
        }
    }

    fn aux_scoreboard(&mut self, data: &Value, ts: u64) {
        let Some(d) = data.as_object() else {
            return;
        };
        let Some(ti) = self.team_by_ingame(d.get("startTeam")) else {
            return;
        };
        self.money_plant_check(ti, d, ts);
        self.aux_line(ti, d);
    }

    /// Teammates' lines from an aux client. QUIRK E8 fixed: the team that contains the sender is
    /// chosen (the original always used `teams[1]`), falling back to `teams[1]`.
    fn aux_scoreboard_team(&mut self, data: &Value, sender: &str, ts: u64) -> bool {
        let parsed: Value = match data {
            Value::String(s) => match serde_json::from_str(s) {
                Ok(v) => v,
                Err(_) => return false,
            },
            other => other.clone(),
        };
        let Some(lines) = parsed.as_array() else {
            return false;
        };
        let ti = self
            .teams
            .iter()
            .position(|t| t.players.iter().any(|p| p.riot_id == sender))
            .unwrap_or(1);
        for line in lines.iter().filter_map(Value::as_object) {
            self.money_plant_check(ti, line, ts);
        }
        for line in lines.iter().filter_map(Value::as_object) {
            self.aux_line(ti, line);
        }
        true
    }

    fn killfeed(&mut self, data: &Value) {
        let Some(d) = data.as_object() else {
            return;
        };
        let attacker = d.get("attacker");
        let victim = d.get("victim");
        let assists: Vec<String> = d
            .get("assists")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|x| text(Some(x))).collect())
            .unwrap_or_default();
        for team in &mut self.teams {
            if let Some(p) = team
                .players
                .iter_mut()
                .find(|p| loose_eq(Some(&Value::String(p.name.clone())), attacker))
            {
                let p = p.edit();
                p.killfeed_stats(d);
                p.attacker_fallback();
                if !team.has_duplicate_agents {
                    for a in &assists {
                        let Some(agent) = tables().agent(a) else {
                            continue;
                        };
                        if let Some(q) = team
                            .players
                            .iter_mut()
                            .find(|q| q.agent_internal.as_str() == Some(agent))
                        {
                            q.edit().assist_fallback();
                        }
                    }
                }
            }
            if let Some(p) = team
                .players
                .iter_mut()
                .find(|p| loose_eq(Some(&Value::String(p.name.clone())), victim))
            {
                p.edit().victim_fallback();
            }
        }
    }

    /// The spike-plant setter (engine §4.10).
    fn plant(&mut self, ts: u64) {
        if self.planted || self.round_phase.as_str() != Some("combat") {
            return;
        }
        self.planted = true;
        self.round_timeout_time = None;
        self.spike_detonation_time = Some(ts.saturating_add(45_000));
    }

    fn round_info(&mut self, data: &Value, ts: u64) -> Outcome {
        self.round_number = field(data.get("roundNumber"));
        self.round_phase = field(data.get("roundPhase"));
        match self.round_phase.as_str() {
            Some("shopping") => self.shopping(),
            Some("combat") => {
                for t in &mut self.teams {
                    t.detect_duplicates();
                }
                self.round_timeout_time = Some(ts.saturating_add(99_000));
                self.toast_info.insert("active".into(), Value::Bool(false));
                // QUIRK E16 fixed: the pending auto-hide is cancelled with the toast.
                self.toast_hide_at = None;
            }
            Some("end") => {
                self.round_timeout_time = None;
                self.spike_detonation_time = None;
            }
            Some("game_end") => {
                self.is_running = false;
                self.timeout_timers = None;
                self.event_number += 1;
                return Outcome::GameEnded;
            }
            _ => {}
        }
        self.event_number += 1;
        Outcome::Continue
    }

    fn shopping(&mut self) {
        let n = to_num(Some(&self.round_number));
        let first_round = self.round_number.is_number() && n == Some(1.0);
        if !first_round && !self.record_reasons() {
            return; // QUIRK E26: cannot happen with E20 enforced at logon
        }
        let n = n.unwrap_or(f64::NAN);
        if n >= self.first_ot_round as f64 && !self.has_entered_overtime {
            self.has_entered_overtime = true;
            if let Some(Value::Object(c)) = self.tools.edit().get_mut("timeoutCounter") {
                for side in ["left", "right"] {
                    let v = to_num(c.get(side)).unwrap_or(f64::NAN);
                    c.insert(side.into(), num((v + 1.0).min(2.0)));
                }
            }
            self.event_number += 1;
        }
        self.planted = false;
        self.detonated = false;
        self.defused = false;
        let switch = n == self.switch_round as f64 || n >= self.first_ot_round as f64;
        if switch {
            for t in &mut self.teams {
                t.flip_side();
            }
        }
        for p in self.teams.iter_mut().flat_map(|t| t.players.iter_mut()) {
            p.edit().round_reset(switch);
        }
    }

    /// Round reasons for the round that just ended (engine §5.9). False if no attacking or no
    /// defending team exists.
    fn record_reasons(&mut self) -> bool {
        let r = to_num(Some(&self.round_number)).unwrap_or(f64::NAN) - 1.0;
        let Some(a) = self.teams.iter().position(Team::attacking) else {
            return false;
        };
        let Some(d) = self.teams.iter().position(|t| !t.attacking()) else {
            return false;
        };
        if !r.is_finite() {
            return true;
        }
        let r = r as i64;
        if truthy(self.attackers_won.as_ref()) {
            let reason = if self.detonated { "detonated" } else { "kills" };
            self.teams[a].record_round(r, reason);
            self.teams[d].record_round(r, "lost");
        } else {
            let reason = if self.defused {
                "defused"
            } else if self.was_timeout {
                "timeout"
            } else {
                "kills"
            };
            self.teams[d].record_round(r, reason);
            self.teams[a].record_round(r, "lost");
        }
        true
    }

    fn score(&mut self, data: &Value, ts: u64) -> bool {
        let (Some(t0), Some(t1)) = (
            self.teams.iter().position(|t| t.ingame_team_id == 0),
            self.teams.iter().position(|t| t.ingame_team_id == 1),
        ) else {
            return false;
        };
        let s0 = data.get("team_0");
        let s1 = data.get("team_1");
        if gt(s0, self.teams[t0].rounds_won.as_ref()) {
            self.attackers_won = self.teams[t0].is_attacking.clone();
        } else if gt(s1, self.teams[t1].rounds_won.as_ref()) {
            self.attackers_won = self.teams[t1].is_attacking.clone();
        }
        self.was_timeout = self.round_timeout_time.is_some_and(|t| t != 0 && ts >= t);
        self.teams[t0].rounds_won = s0.map(|v| field(Some(v)));
        self.teams[t1].rounds_won = s1.map(|v| field(Some(v)));
        self.planted = false;
        true
    }

    fn timeout_tools(&self) -> (f64, f64) {
        let duration = to_num(self.tools.get("timeoutDuration")).unwrap_or(f64::NAN);
        let grace = to_num(self.tools.get("timeoutCancellationGracePeriod")).unwrap_or(f64::NAN);
        (duration, duration - grace)
    }

    fn counter_mut(&mut self, left: bool) -> Option<(&mut Map<String, Value>, &'static str)> {
        match self.tools.edit().get_mut("timeoutCounter") {
            Some(Value::Object(c)) => Some((c, if left { "left" } else { "right" })),
            _ => None,
        }
    }

    /// `left_timeout` / `right_timeout` (engine §7.1).
    fn team_timeout(&mut self, left: bool, ts: u64) {
        let (duration, g) = self.timeout_tools();
        let running = if left {
            self.timeout_left
        } else {
            self.timeout_right
        };
        if running {
            if self.time_remaining <= g
                && let Some((c, side)) = self.counter_mut(left)
            {
                let v = to_num(c.get(side)).unwrap_or(f64::NAN);
                c.insert(side.into(), num((v - 1.0).max(0.0)));
            }
            self.timeout_left = false;
            self.timeout_right = false;
            self.timeout_timers = None;
            return;
        }
        let remaining = self
            .counter_mut(left)
            .and_then(|(c, side)| to_num(c.get(side)))
            .unwrap_or(f64::NAN);
        if remaining.is_nan() || remaining <= 0.0 {
            return;
        }
        self.timeout_left = left;
        self.timeout_right = !left;
        self.tech_pause = false;
        self.time_remaining = duration;
        self.grace_period_passed = false;
        let duration_ms = if duration.is_finite() && duration > 0.0 {
            (duration * 1000.0) as u64
        } else {
            0
        };
        self.timeout_timers = Some(TimeoutTimers {
            next_tick_ms: ts.saturating_add(1000),
            end_ms: ts.saturating_add(duration_ms),
        });
    }

    /// `toast` (engine §4.16).
    fn toast(&mut self, data: &Value, ts: u64) {
        if truthy(self.toast_info.get("active")) {
            self.toast_info.insert("active".into(), Value::Bool(false));
            self.toast_hide_at = None;
            return;
        }
        let Some(d) = data.as_object() else {
            return;
        };
        self.toast_info = d
            .iter()
            .take(MAX_TOAST_KEYS)
            .map(|(k, v)| (js::short(k, 64), toast_field(v)))
            .collect();
        self.toast_info.insert("active".into(), Value::Bool(true));
        self.event_number += 1;
        self.toast_hide_at = match d.get("duration") {
            Some(Value::Null) => None,
            Some(v) => Some(
                ts.saturating_add(to_num(Some(v)).filter(|f| *f > 0.0).map_or(1, |f| f as u64)),
            ),
            None => Some(ts.saturating_add(1)), // QUIRK E17 kept: no duration hides at once
        };
    }

    /// Runs the timers due at `now_ms` (timeout countdown and end, toast auto-hide).
    pub fn advance(&mut self, now_ms: u64) {
        let (_, g) = self.timeout_tools();
        while let Some(t) = self.timeout_timers.clone() {
            // The end timer wins a tie with the last countdown tick, as in the original.
            if t.end_ms <= now_ms && t.end_ms <= t.next_tick_ms {
                let side = if self.timeout_left {
                    Some(true)
                } else if self.timeout_right {
                    Some(false)
                } else {
                    None
                };
                if let Some(left) = side
                    && let Some((c, key)) = self.counter_mut(left)
                {
                    let v = to_num(c.get(key)).unwrap_or(f64::NAN);
                    c.insert(key.into(), num((v - 1.0).max(0.0)));
                }
                self.timeout_left = false;
                self.timeout_right = false;
                self.timeout_timers = None;
                self.event_number += 1;
            } else if t.next_tick_ms <= now_ms {
                if self.time_remaining > 0.0 {
                    self.time_remaining -= 1.0;
                    if !self.grace_period_passed && self.time_remaining <= g {
                        self.grace_period_passed = true;
                    }
                    self.event_number += 1;
                    if let Some(tt) = self.timeout_timers.as_mut() {
                        tt.next_tick_ms = tt.next_tick_ms.saturating_add(1000);
                    }
                } else if let Some(tt) = self.timeout_timers.as_mut() {
                    tt.next_tick_ms = u64::MAX; // countdown stopped; the end timer remains
                }
            } else {
                break;
            }
        }
        if let Some(at) = self.toast_hide_at
            && at <= now_ms
        {
            self.toast_hide_at = None;
            self.toast_info.insert("active".into(), Value::Bool(false));
            self.event_number += 1;
        }
    }

    /// An auxiliary client of this player disconnected (QUIRK E3 fixed: advances the counter).
    pub fn aux_disconnected(&mut self, player_id: &str) {
        let mut any = false;
        for p in self.players_by_id(player_id) {
            p.aux_unavailable();
            any = true;
        }
        if any {
            self.event_number += 1;
        }
    }

    /// The broadcast snapshot as a JSON value (sensitive fields are never part of it).
    pub fn snapshot(&self) -> Value {
        serde_json::to_value(Snapshot(self)).unwrap_or(Value::Null)
    }

    /// The snapshot's JSON text, written straight from the match (no intermediate `Value`):
    /// the same JSON as `snapshot()`.
    pub fn snapshot_json(&self) -> String {
        serde_json::to_string(&Snapshot(self)).unwrap_or_else(|_| "null".into())
    }

    /// The snapshot as a value to serialise (the JSON of `snapshot_json`), for a writer that
    /// serialises it into more than one form at once.
    pub fn snapshot_serialize(&self) -> impl Serialize + '_ {
        Snapshot(self)
    }

    /// The escaped form of a kept part (`Cached::escaped_if`) when `fragment` is that part's
    /// kept JSON, as `snapshot_serialize` hands it to the serializer: an encoder writing the
    /// snapshot as a string argument copies it instead of escaping the fragment.
    pub fn escaped_part(&self, fragment: &str) -> Option<&str> {
        self.teams
            .iter()
            .flat_map(|t| t.players.iter().map(|p| p.escaped_if(fragment)))
            .chain(
                self.teams
                    .iter()
                    .map(|t| t.round_record.escaped_if(fragment)),
            )
            .chain(std::iter::once(self.tools.escaped_if(fragment)))
            .find_map(|e| e)
    }
}

/// The broadcast snapshot of a match (snapshot-schema §2, key order as the original's).
struct Snapshot<'a>(&'a Match);

impl Serialize for Snapshot<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("matchId", &g.match_id)?;
        m.serialize_entry("matchType", &g.match_type)?;
        m.serialize_entry("switchRound", &g.switch_round)?;
        m.serialize_entry("firstOtRound", &g.first_ot_round)?;
        m.serialize_entry("groupCode", &g.group_code)?;
        m.serialize_entry("isRunning", &g.is_running)?;
        if let Some(t) = g.agent_select_start_time {
            m.serialize_entry("agentSelectStartTime", &t)?;
        }
        m.serialize_entry("roundNumber", &g.round_number)?;
        m.serialize_entry("roundPhase", &g.round_phase)?;
        if let Some(t) = g.round_timeout_time {
            m.serialize_entry("roundTimeoutTime", &t)?;
        }
        m.serialize_entry("wasTimeout", &g.was_timeout)?;
        if let Some(t) = g.spike_detonation_time {
            m.serialize_entry("spikeDetonationTime", &t)?;
        }
        m.serialize_entry("teams", &g.teams)?;
        m.serialize_entry("map", &g.map)?;
        m.serialize_entry(
            "spikeState",
            &Flags(&[
                ("planted", g.planted),
                ("detonated", g.detonated),
                ("defused", g.defused),
            ]),
        )?;
        if let Some(a) = &g.attackers_won {
            m.serialize_entry("attackersWon", a)?;
        }
        m.serialize_entry("showAliveKDA", &g.show_alive_kda)?;
        m.serialize_entry("timeoutState", &TimeoutState(g))?;
        m.serialize_entry("timeoutGracePeriodPassed", &g.grace_period_passed)?;
        m.serialize_entry("toastInfo", &g.toast_info)?;
        m.serialize_entry("hasEnteredOvertime", &g.has_entered_overtime)?;
        // Through its kept JSON (the broadcast view: private keys left out).
        m.serialize_entry("tools", &g.tools)?;
        m.serialize_entry("organizationId", &g.organization_id)?;
        m.serialize_entry("isRegistered", &g.is_registered)?;
        m.serialize_entry("orgIsSupporter", &g.org_is_supporter)?;
        m.end()
    }
}

/// `timeoutState` of the snapshot.
struct TimeoutState<'a>(&'a Match);

impl Serialize for TimeoutState<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.0;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("techPause", &g.tech_pause)?;
        m.serialize_entry("leftTeam", &g.timeout_left)?;
        m.serialize_entry("rightTeam", &g.timeout_right)?;
        m.serialize_entry("timeRemaining", &num(g.time_remaining))?;
        m.end()
    }
}

/// Keys of a toast kept (title, message, duration, eventLogoEnabled and a few more).
const MAX_TOAST_KEYS: usize = 16;
/// Characters of one toast text (a toast is one line or two on the overlay).
const MAX_TOAST_CHARS: usize = 1024;

fn toast_field(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(js::short(s, MAX_TOAST_CHARS)),
        other => field(Some(other)),
    }
}

/// The roster name with the team tricode removed when the team strips tricodes.
fn stripped_name(team: &Team, name: &str) -> String {
    if !truthy(team.remove_tricode.as_ref()) {
        return name.to_string();
    }
    match team.team_tricode.as_ref().and_then(Value::as_str) {
        Some(tri) if !tri.is_empty() && name.starts_with(tri) => {
            name.replacen(tri, "", 1).trim().to_string()
        }
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests;
