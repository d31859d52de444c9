//! Memory of one match under hostile events: the input is a program of events (a type, numbers
//! anywhere in the i64/f64 range, strings up to 256 KB, repeated up to thousands of times), the
//! shapes the real event types take but with the values an attacker chooses. Whatever it does,
//! the match's snapshot stays under `SNAPSHOT_BOUND` and nothing panics; `scripts/fuzz` runs it
//! with a low `-rss_limit_mb` / `-malloc_limit_mb`, so a value that sizes an allocation (a round
//! number, a counter, a list) fails the run.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::new_match;
use serde_json::{Map, Value, json};

/// What a match may hold in all, from any events (the bounded fields of the engine: ten players,
/// their strings and per-key counters, the round record up to its round limit).
const SNAPSHOT_BOUND: usize = 1 << 20;

const TYPES: [&str; 16] = [
    "roster",
    "scoreboard",
    "killfeed",
    "round_info",
    "score",
    "match_start",
    "map",
    "toast",
    "game_mode",
    "left_timeout",
    "observing",
    "aux_scoreboard",
    "aux_scoreboard_team",
    "aux_abilities",
    "aux_health",
    "spike_planted",
];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        *b
    }
    fn number(&mut self) -> Value {
        let mut raw = [0u8; 8];
        for b in &mut raw {
            *b = self.byte();
        }
        match self.byte() % 4 {
            0 => json!(i64::from_le_bytes(raw)),
            1 => serde_json::Number::from_f64(f64::from_le_bytes(raw))
                .map_or(Value::Null, Value::Number),
            2 => json!(i64::from(raw[0]) - 2),
            _ => json!(10f64.powi(i32::from(raw[0] % 20))),
        }
    }
    fn text(&mut self) -> String {
        let len = match self.byte() % 4 {
            0 => usize::from(self.byte() % 16),
            1 => usize::from(self.byte()) * 16,
            2 => usize::from(self.byte()) * 1024,
            _ => 1,
        };
        let c = char::from(b'a' + self.byte() % 26);
        std::iter::repeat_n(c, len).collect()
    }
    fn value(&mut self) -> Value {
        match self.byte() % 5 {
            0 => self.number(),
            1 => Value::String(self.text()),
            2 => Value::Bool(self.byte().is_multiple_of(2)),
            3 => json!([self.number(), self.text()]),
            _ => Value::Null,
        }
    }
}

fn event(kind: &str, input: &mut Input<'_>) -> Value {
    let player = format!("p{}", input.byte() % 12);
    let line = |input: &mut Input<'_>| {
        json!({"name": input.text(), "tagline": input.text(), "playerId": player, "startTeam": input.byte() % 3,
               "agentInternal": input.value(), "isAlive": input.value(), "initialArmor": input.value(),
               "scoreboardWeaponInternal": input.value(), "currUltPoints": input.number(),
               "maxUltPoints": input.number(), "hasSpike": input.value(), "money": input.number(),
               "kills": input.number(), "deaths": input.number(), "assists": input.number(),
               "position": input.value(), "locked": input.value()})
    };
    match kind {
        "roster" | "scoreboard" | "aux_scoreboard" => line(input),
        "aux_scoreboard_team" => Value::String(json!([line(input), line(input)]).to_string()),
        "killfeed" => json!({"attacker": format!("{}", input.byte() % 12), "victim": input.text(),
                             "weaponKillfeedInternal": input.text(), "headshotKill": input.value(),
                             "assists": [input.text()], "isTeamkill": input.value()}),
        "round_info" => {
            let phase = ["shopping", "combat", "end", "LOBBY"][usize::from(input.byte() % 4)];
            json!({"roundNumber": input.number(), "roundPhase": phase})
        }
        "score" => json!({"team_0": input.number(), "team_1": input.number()}),
        "toast" => {
            json!({"title": input.text(), "message": input.text(), "duration": input.number()})
        }
        "aux_abilities" => {
            json!({"grenade": input.value(), "ability_1": input.value(), "ability_2": input.value()})
        }
        "aux_health" => input.number(),
        _ => input.value(),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut game = new_match();
    let mut now = 1_700_000_000_000u64;
    while !input.0.is_empty() {
        let kind = TYPES[usize::from(input.byte()) % TYPES.len()];
        let repeat = 1 + usize::from(input.byte() % 4) * 500;
        let data = event(kind, &mut input);
        let mut e = Map::new();
        e.insert("type".into(), json!(kind));
        e.insert("playerId".into(), json!(format!("p{}", input.byte() % 12)));
        e.insert("data".into(), data);
        let mut e = spectra::engine::Event::new(e);
        for _ in 0..repeat {
            now += 100;
            e.set("timestamp", json!(now));
            let _ = game.apply(&e);
        }
        game.advance(now);
    }
    let snapshot = game.snapshot_json();
    assert!(
        snapshot.len() < SNAPSHOT_BOUND,
        "snapshot of {} bytes",
        snapshot.len()
    );
});
