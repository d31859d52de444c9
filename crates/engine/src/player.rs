//! One player: creation from a roster line, the shared scoreboard update, killfeed fallbacks,
//! agent icon suffixes, round reset, and its snapshot JSON (key order of snapshot-schema §4).

use serde::{Serialize, Serializer, ser::SerializeMap};
use serde_json::{Map, Value, json};

use super::js::{Flags, MAX_FIELD_CHARS, field, gt, loose_eq, num, short, text, to_num, truthy};
use super::tables::tables;

#[derive(Debug, Clone)]
pub struct Player {
    pub name: String,
    tagline: String,
    pub riot_id: String,
    pub search_name: String,
    full_name: String,
    position: Value,
    locked: Value,
    pub agent_internal: Value,
    pub agent_proper: String,
    is_alive: Value,
    has_spike: Value,
    pub is_observed: bool,
    health: Value,
    abilities: Value,
    kills: Value,
    deaths: Value,
    assists: Value,
    kd_ratio: Value,
    kills_this_round: f64,
    deaths_this_round: f64,
    /// Scoreboard kills and deaths when the round began (`killsThisRound` is the difference).
    kills_at_round_start: f64,
    deaths_at_round_start: f64,
    killed_player_names: Vec<Value>,
    curr_ult_points: Value,
    max_ult_points: Value,
    ult_ready: bool,
    pub money: Value,
    money_spent: f64,
    spent_money_this_round: bool,
    armor_name: Option<String>,
    highest_weapon: Option<String>,
    pub current_mmr_tier: Value,
    pub peak_mmr_tier: Value,
    team_kills: f64,
    headshot_kills: f64,
    headshot_ratio: Value,
    kills_by_weapons: Map<String, Value>,
    kills_on_enemy: Map<String, Value>,
    kills_on_teammate: Map<String, Value>,
    pub scoreboard_available: bool,
    aux_health: bool,
    aux_abilities: bool,
    pub aux_scoreboard: bool,
    icon_suffix: String,
}

/// Distinct keys a per-key kill counter holds (weapons, victims); kills under further keys are
/// not itemised. A real player kills with a dozen weapons and abilities, and five enemies.
pub const MAX_COUNTER_KEYS: usize = 32;
/// Longest key of a per-key kill counter (weapon ids are ~30 characters, names 16).
pub const MAX_COUNTER_KEY_CHARS: usize = 64;
/// Victims listed in `killedPlayerNames` per round (a round has at most nine real victims).
pub const MAX_KILLED_NAMES: usize = 16;

/// Adds one to a per-key kill counter (the original left every value at 1, QUIRK E2: fixed).
fn count(map: &mut Map<String, Value>, key: String) {
    let key = short(&key, MAX_COUNTER_KEY_CHARS);
    if map.len() >= MAX_COUNTER_KEYS && !map.contains_key(&key) {
        return;
    }
    let next = map.get(&key).and_then(Value::as_f64).unwrap_or(0.0) + 1.0;
    map.insert(key, num(next));
}

/// A client value as text, cut to `MAX_FIELD_CHARS`.
fn str_of(v: Option<&Value>) -> String {
    short(&text(v), MAX_FIELD_CHARS)
}

impl Player {
    /// A new player from a roster line (engine §5.1); `name` is the possibly stripped name.
    pub fn from_roster(data: &Map<String, Value>, name: String) -> Player {
        let raw_name = str_of(data.get("name"));
        let tagline = str_of(data.get("tagline"));
        let agent_internal = field(data.get("agentInternal"));
        Player {
            name,
            search_name: format!("{raw_name} #{tagline}"),
            full_name: format!("{raw_name}#{tagline}"),
            tagline,
            riot_id: str_of(data.get("playerId")),
            position: field(data.get("position")),
            locked: field(data.get("locked")),
            agent_proper: tables().agent_proper(&str_of(Some(&agent_internal))),
            agent_internal,
            is_alive: Value::Bool(true),
            has_spike: Value::Bool(false),
            is_observed: false,
            health: json!(100),
            abilities: json!({"grenade": 0, "ability1": 0, "ability2": 0}),
            kills: json!(0),
            deaths: json!(0),
            assists: json!(0),
            kd_ratio: json!(0),
            kills_this_round: 0.0,
            deaths_this_round: 0.0,
            kills_at_round_start: 0.0,
            deaths_at_round_start: 0.0,
            killed_player_names: Vec::new(),
            curr_ult_points: json!(0),
            max_ult_points: json!(0),
            ult_ready: false,
            money: json!(0),
            money_spent: 0.0,
            spent_money_this_round: false,
            armor_name: Some("None".into()),
            highest_weapon: Some("Unknown".into()),
            current_mmr_tier: Value::Null,
            peak_mmr_tier: Value::Null,
            team_kills: 0.0,
            headshot_kills: 0.0,
            headshot_ratio: json!(0),
            kills_by_weapons: Map::new(),
            kills_on_enemy: Map::new(),
            kills_on_teammate: Map::new(),
            scoreboard_available: false,
            aux_health: false,
            aux_abilities: false,
            aux_scoreboard: false,
            icon_suffix: String::new(),
        }
    }

    /// Roster update of a known player (engine §4.1 step 4).
    pub fn roster_update(&mut self, data: &Map<String, Value>, name: String) {
        self.name = name;
        self.tagline = str_of(data.get("tagline"));
        self.agent_internal = field(data.get("agentInternal"));
        self.agent_proper = tables().agent_proper(&str_of(Some(&self.agent_internal)));
        self.locked = field(data.get("locked"));
    }

    /// Agent checks on scoreboard-like data (engine §5.7), with the old kills/assists/ultReady.
    fn agent_checks(&mut self, data: &Map<String, Value>) {
        let agent = self.agent_proper.as_str();
        if agent != "Clove" && agent != "Veto" {
            return;
        }
        let zero = |k: &str| data.get(k).and_then(Value::as_f64) == Some(0.0);
        if zero("kills") && zero("deaths") && zero("assists") {
            return;
        }
        let ult_spent = loose_eq(data.get("currUltPoints"), Some(&json!(0))) && self.ult_ready;
        if agent == "Clove" {
            if ult_spent {
                self.icon_suffix = "NotDeadYet".into();
            }
            if truthy(data.get("kills")) && gt(data.get("kills"), Some(&self.kills)) {
                self.icon_suffix.clear();
            }
            if truthy(data.get("assists")) && gt(data.get("assists"), Some(&self.assists)) {
                self.icon_suffix.clear();
            }
        } else if ult_spent {
            self.icon_suffix = "Evolution".into();
        }
    }

    fn death_checks(&mut self) {
        if matches!(self.agent_proper.as_str(), "Astra" | "Clove" | "Veto") {
            self.icon_suffix.clear();
        }
    }

    /// The shared scoreboard update (engine §5.2).
    pub fn scoreboard_update(&mut self, data: &Map<String, Value>) {
        self.agent_internal = field(data.get("agentInternal"));
        self.agent_proper = tables().agent_proper(&str_of(Some(&self.agent_internal)));
        self.agent_checks(data);
        self.kills = field(data.get("kills"));
        self.deaths = field(data.get("deaths"));
        self.assists = field(data.get("assists"));
        self.kd_ratio = ratio(Some(&self.kills), Some(&self.deaths));
        self.count_this_round();
        self.curr_ult_points = field(data.get("currUltPoints"));
        self.max_ult_points = field(data.get("maxUltPoints"));
        self.ult_ready = match (
            to_num(Some(&self.curr_ult_points)),
            to_num(Some(&self.max_ult_points)),
        ) {
            (Some(c), Some(m)) => c >= m,
            _ => false,
        };
        let new_money = field(data.get("money"));
        self.track_spending(&new_money);
        self.money = new_money;
        self.armor_name = data
            .get("initialArmor")
            .and_then(|i| tables().armor(i))
            .map(String::from);
        self.highest_weapon = data
            .get("scoreboardWeaponInternal")
            .and_then(Value::as_str)
            .and_then(|w| tables().weapon(w))
            .map(String::from);
        let alive_now = truthy(data.get("isAlive"));
        if !alive_now && self.is_alive == Value::Bool(true) {
            self.death_checks();
            self.health = json!(0);
        } else if alive_now && self.is_alive == Value::Bool(false) {
            self.health = json!(100);
        }
        self.is_alive = field(data.get("isAlive"));
        self.has_spike = field(data.get("hasSpike"));
    }

    /// QUIRK E1 fixed: kills and deaths this round are the difference between the scoreboard now
    /// and at the round's start, never negative (a corrected scoreboard, 20 → 19 → 21, counts
    /// the 2 it shows, not the 3 increases). A non-numeric value leaves them as they are.
    fn count_this_round(&mut self) {
        if let Some(k) = to_num(Some(&self.kills)).filter(|k| k.is_finite()) {
            self.kills_this_round = (k - self.kills_at_round_start).max(0.0);
        }
        if let Some(d) = to_num(Some(&self.deaths)).filter(|d| d.is_finite()) {
            self.deaths_this_round = (d - self.deaths_at_round_start).max(0.0);
        }
    }

    /// Money spent this round (engine §5.3, QUIRK E5 kept).
    fn track_spending(&mut self, new_money: &Value) {
        let (Some(m), Some(old)) = (to_num(Some(new_money)), to_num(Some(&self.money))) else {
            return;
        };
        if !self.spent_money_this_round && m < old {
            self.spent_money_this_round = true;
        }
        if self.spent_money_this_round && m != old {
            self.money_spent += old - m;
        }
    }

    /// Whether killfeed fallbacks apply (no scoreboard line since the last reset).
    fn fallback_mode(&self) -> bool {
        !self.scoreboard_available && !self.aux_scoreboard
    }

    /// Killfeed statistics of an attacker (engine §5.8).
    pub fn killfeed_stats(&mut self, data: &Map<String, Value>) {
        let weapon = str_of(data.get("weaponKillfeedInternal"));
        count(&mut self.kills_by_weapons, weapon);
        let victim = field(data.get("victim"));
        if self.killed_player_names.len() < MAX_KILLED_NAMES {
            self.killed_player_names.push(victim.clone());
        }
        if data.get("headshotKill") == Some(&Value::Bool(true)) {
            self.headshot_kills += 1.0;
            self.headshot_ratio = ratio(Some(&num(self.headshot_kills)), Some(&self.kills));
        }
        match data.get("isTeamkill") {
            Some(Value::Bool(true)) => {
                self.team_kills += 1.0;
                count(&mut self.kills_on_teammate, str_of(Some(&victim)));
            }
            Some(Value::Bool(false)) => count(&mut self.kills_on_enemy, str_of(Some(&victim))),
            _ => {}
        }
    }

    pub fn attacker_fallback(&mut self) {
        if !self.fallback_mode() {
            return;
        }
        let kills = to_num(Some(&self.kills)).unwrap_or(f64::NAN) + 1.0;
        let mut partial = Map::new();
        partial.insert("kills".into(), num(kills));
        self.agent_checks(&partial);
        self.kills = num(kills);
        self.count_this_round();
    }

    pub fn victim_fallback(&mut self) {
        if !self.fallback_mode() {
            return;
        }
        self.is_alive = Value::Bool(false);
        self.health = json!(0);
        self.deaths = num(to_num(Some(&self.deaths)).unwrap_or(f64::NAN) + 1.0);
        self.count_this_round();
    }

    pub fn assist_fallback(&mut self) {
        if !self.fallback_mode() {
            return;
        }
        let assists = to_num(Some(&self.assists)).unwrap_or(f64::NAN) + 1.0;
        let mut partial = Map::new();
        partial.insert("assists".into(), num(assists));
        self.agent_checks(&partial);
        self.assists = num(assists);
    }

    /// Round reset at every `shopping` (engine §5.5).
    pub fn round_reset(&mut self, side_switch: bool) {
        self.kills_this_round = 0.0;
        self.deaths_this_round = 0.0;
        let start = |v: &Value| to_num(Some(v)).filter(|f| f.is_finite()).unwrap_or(0.0);
        self.kills_at_round_start = start(&self.kills);
        self.deaths_at_round_start = start(&self.deaths);
        self.killed_player_names.clear();
        self.money_spent = 0.0;
        self.spent_money_this_round = false;
        if side_switch {
            self.money = json!(800);
        }
        self.scoreboard_available = false;
        self.aux_scoreboard = false;
        self.is_alive = Value::Bool(true);
        self.health = json!(100);
    }

    pub fn aux_unavailable(&mut self) {
        self.aux_health = false;
        self.aux_abilities = false;
        self.aux_scoreboard = false;
    }

    pub fn set_abilities(&mut self, data: &Map<String, Value>) {
        let mut a = Map::new();
        for (to, from) in [
            ("grenade", "grenade"),
            ("ability1", "ability_1"),
            ("ability2", "ability_2"),
        ] {
            if let Some(v) = data.get(from) {
                a.insert(to.into(), field(Some(v)));
            }
        }
        self.abilities = Value::Object(a);
        self.aux_abilities = true;
    }

    pub fn set_health(&mut self, health: &Value) {
        self.health = field(Some(health));
        self.aux_health = true;
    }

    pub fn set_icon_suffix(&mut self, agent: &str, suffix: &str, on: bool) {
        if self.agent_proper == agent {
            self.icon_suffix = if on { suffix.into() } else { String::new() };
        }
    }
}

/// The player's snapshot JSON, written straight to the output (no intermediate `Value`); key
/// order of snapshot-schema §4. Pass-through keys are always present (`Null` cannot tell an
/// omitted key apart).
impl Serialize for Player {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("tagline", &self.tagline)?;
        m.serialize_entry("riotId", &self.riot_id)?;
        m.serialize_entry("searchName", &self.search_name)?;
        m.serialize_entry("fullName", &self.full_name)?;
        m.serialize_entry("position", &self.position)?;
        m.serialize_entry("locked", &self.locked)?;
        m.serialize_entry("agentInternal", &self.agent_internal)?;
        m.serialize_entry("agentProper", &self.agent_proper)?;
        m.serialize_entry("isAlive", &self.is_alive)?;
        m.serialize_entry("hasSpike", &self.has_spike)?;
        m.serialize_entry("isObserved", &self.is_observed)?;
        m.serialize_entry("health", &self.health)?;
        m.serialize_entry("abilities", &self.abilities)?;
        m.serialize_entry("kills", &self.kills)?;
        m.serialize_entry("deaths", &self.deaths)?;
        m.serialize_entry("assists", &self.assists)?;
        m.serialize_entry("kdRatio", &self.kd_ratio)?;
        m.serialize_entry("killsThisRound", &num(self.kills_this_round))?;
        m.serialize_entry("deathsThisRound", &num(self.deaths_this_round))?;
        m.serialize_entry("killedPlayerNames", &self.killed_player_names)?;
        m.serialize_entry("currUltPoints", &self.curr_ult_points)?;
        m.serialize_entry("maxUltPoints", &self.max_ult_points)?;
        m.serialize_entry("ultReady", &self.ult_ready)?;
        m.serialize_entry("money", &self.money)?;
        m.serialize_entry("moneySpent", &num(self.money_spent))?;
        m.serialize_entry("spentMoneyThisRound", &self.spent_money_this_round)?;
        if let Some(a) = &self.armor_name {
            m.serialize_entry("armorName", a)?;
        }
        if let Some(w) = &self.highest_weapon {
            m.serialize_entry("highestWeapon", w)?;
        }
        m.serialize_entry("currentMMRTier", &self.current_mmr_tier)?;
        m.serialize_entry("peakMMRTier", &self.peak_mmr_tier)?;
        m.serialize_entry("teamKills", &num(self.team_kills))?;
        m.serialize_entry("headshotKills", &num(self.headshot_kills))?;
        m.serialize_entry("headshotRatio", &self.headshot_ratio)?;
        m.serialize_entry("killsByWeaponsAndAbilities", &self.kills_by_weapons)?;
        m.serialize_entry("killsOnEnemyPlayer", &self.kills_on_enemy)?;
        m.serialize_entry("killsOnTeammatePlayer", &self.kills_on_teammate)?;
        m.serialize_entry("assistsFromTeammate", &Map::new())?;
        m.serialize_entry("scoreboardAvailable", &self.scoreboard_available)?;
        m.serialize_entry(
            "auxiliaryAvailable",
            &Flags(&[
                ("health", self.aux_health),
                ("abilities", self.aux_abilities),
                ("scoreboard", self.aux_scoreboard),
            ]),
        )?;
        m.serialize_entry("iconNameSuffix", &self.icon_suffix)?;
        m.end()
    }
}

impl crate::cached::SnapshotPart for Player {
    fn write_snapshot<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.serialize(s)
    }
}

/// `a / b` with IEEE semantics, as JSON (`null` for NaN/Infinity).
fn ratio(a: Option<&Value>, b: Option<&Value>) -> Value {
    match (to_num(a), to_num(b)) {
        (Some(x), Some(y)) => num(x / y),
        _ => Value::Null,
    }
}

impl Player {
    pub fn money_spent(&self) -> f64 {
        self.money_spent
    }
}
