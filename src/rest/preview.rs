//! Previews (`PUT /createPreview`, `GET /preview/:code`): the preview object of ingest spec §9.2
//! built from the observer's request, stored for 10 minutes on the shard that owns the code.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Map, Value, json};

use crate::engine::tables::tables;
use crate::engine::tools;

pub const PREVIEW_TTL: Duration = Duration::from_secs(600);
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";

/// The previews stored on one shard.
#[derive(Default)]
pub struct Previews {
    map: HashMap<String, (Value, Instant)>,
}

/// This shard's previews (shard-local state of the REST service).
pub fn of(shard: &crate::shard::Shard) -> std::rc::Rc<std::cell::RefCell<Previews>> {
    shard.state()
}

impl Previews {
    pub fn put(&mut self, code: String, preview: Value) {
        self.sweep();
        self.map
            .insert(code, (preview, Instant::now() + PREVIEW_TTL));
    }

    pub fn get(&mut self, code: &str) -> Option<Value> {
        self.sweep();
        self.map.get(code).map(|(v, _)| v.clone())
    }

    fn sweep(&mut self) {
        let now = Instant::now();
        self.map.retain(|_, (_, expires)| *expires > now);
    }
}

/// The code to store a preview under: a given 6-character code as is, otherwise a fresh one
/// (QUIRK P1 fixed: the original prefixed the fresh code with the given value, e.g. `undefined`).
pub fn preview_code(given: Option<&Value>) -> String {
    if let Some(Value::String(s)) = given
        && s.encode_utf16().count() == 6
    {
        return s.clone();
    }
    crate::random::random_string(CODE_ALPHABET, 6)
}

fn player(name: &str, agent: &str) -> Value {
    let mut rng = rand::rng();
    let ult: i64 = rng.random_range(2..=8);
    json!({
        "name": name,
        "agentInternal": agent,
        "isAlive": true,
        "hasSpike": false,
        "isObserved": false,
        "health": 100,
        "abilities": {"ability1": 1, "ability2": 1, "grenade": 0},
        "kills": rng.random_range(0..=20),
        "deaths": rng.random_range(0..=20),
        "assists": rng.random_range(0..=20),
        "currUltPoints": ult,
        "maxUltPoints": 8,
        "ultReady": ult >= 8,
        "money": rng.random_range(0..=9) * 1000,
        "moneySpent": rng.random_range(0..=2) * 1000,
        "armorName": "None",
        "highestWeapon": "Ghost",
        "scoreboardAvailable": false,
        "auxiliaryAvailable": {"abilities": true, "health": true, "scoreboard": false},
        "iconNameSuffix": "",
    })
}

fn team(body: &Map<String, Value>, players: &[(String, String)]) -> Value {
    let mut m = Map::new();
    let get = |k: &str| body.get(k).cloned();
    for (to, from) in [
        ("teamName", "name"),
        ("teamTricode", "tricode"),
        ("teamUrl", "url"),
    ] {
        if let Some(v) = get(from) {
            m.insert(to.into(), v);
        }
    }
    if let Some(v) = get("attackStart") {
        m.insert("isAttacking".into(), v);
    }
    m.insert("roundsWon".into(), json!(0));
    m.insert("spentThisRound".into(), json!(10350));
    m.insert("roundRecord".into(), json!([]));
    m.insert(
        "players".into(),
        Value::Array(players.iter().map(|(n, a)| player(n, a)).collect()),
    );
    m.insert("hasDuplicateAgents".into(), json!(false));
    Value::Object(m)
}

/// Builds the preview object from a `createPreview` body.
pub fn build(body: &Map<String, Value>) -> Result<Value, String> {
    let left = body
        .get("leftTeam")
        .and_then(Value::as_object)
        .ok_or("leftTeam must be an object")?;
    let right = body
        .get("rightTeam")
        .and_then(Value::as_object)
        .ok_or("rightTeam must be an object")?;
    let t = tables();
    Ok(json!({
        "groupCode": "PREVIEW",
        "isRunning": true,
        "map": "Sunset",
        "ranksEnabled": false,
        "roundNumber": 1,
        "roundPhase": "combat",
        "spikeState": {"planted": false, "defused": false, "detonated": false},
        "switchRound": 6,
        "teams": [team(left, &t.preview_left), team(right, &t.preview_right)],
        "timeoutState": {"leftTeam": false, "rightTeam": false, "techPause": false, "timeRemaining": 0},
        // The playercam secret is not handed out (QUIRK P2: the original returned it verbatim).
        "tools": tools::BroadcastView(&tools::merge(body.get("toolsData"))),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(preview_code(Some(&json!("abc123"))), "abc123");
        let fresh = preview_code(None);
        assert_eq!(fresh.len(), 6);
        assert!(fresh.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(preview_code(Some(&json!("ABC"))).len(), 6);
    }

    #[test]
    fn preview_shape() {
        let body = json!({"leftTeam": {"name": "L", "tricode": "LL", "url": "u"}, "rightTeam": {"name": "R", "tricode": "RR", "url": "v", "attackStart": false}, "toolsData": {"timeoutDuration": 30}});
        let p = build(body.as_object().expect("object")).expect("preview");
        assert_eq!(p["teams"][0].get("isAttacking"), None);
        assert_eq!(p["teams"][1]["isAttacking"], json!(false));
        assert_eq!(p["teams"][0]["players"].as_array().map(Vec::len), Some(5));
        assert_eq!(p["teams"][0]["players"][0]["name"], json!("Voodoo One"));
        assert_eq!(p["tools"]["timeoutDuration"], json!(30));
        let keys: Vec<&String> = p
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys[0], "groupCode");
        assert_eq!(keys[10], "tools");
        assert!(build(json!({"leftTeam": {}}).as_object().expect("object")).is_err());
    }
}
