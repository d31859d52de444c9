//! Ingest events on arbitrary input: each line is parsed as an event (simd-json, as `obs_data`
//! is) and applied to one match, then the match advances its timers and serialises its snapshot —
//! the whole engine path an observer can reach. Nothing may panic, and the snapshot must stay
//! valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use spectra::engine::Match;
use spectra::ingest::ObsLogon;
use spectra::ingest::parse::parse_event;

fn new_match() -> Match {
    let data = json!({
        "type": "authenticate", "clientVersion": "0.3.3", "obsName": "Fuzz", "groupCode": "FUZZ",
        "leftTeam": {"name": "L", "tricode": "LLL", "url": "", "attackStart": true},
        "rightTeam": {"name": "R", "tricode": "RRR", "url": "", "attackStart": false},
        "toolsData": {"timeoutCounter": {"max": 2, "left": 2, "right": 2}},
    });
    let Value::Object(data) = data else {
        unreachable!("a JSON object literal")
    };
    let logon = ObsLogon {
        group_code: "FUZZ".into(),
        group_secret: String::new(),
        obs_name: "Fuzz".into(),
        data,
        is_supporter: false,
        organization_id: String::new(),
    };
    Match::new(&logon).expect("a valid logon")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut game = new_match();
    let mut now = 1_700_000_000_000u64;
    for line in text.lines().take(64) {
        let Ok(Value::Object(mut event)) = parse_event(line) else {
            continue;
        };
        now += 250;
        event.insert("timestamp".into(), json!(now));
        let _ = game.apply(&event);
        game.advance(now);
    }
    let snapshot = game.snapshot_json();
    assert!(
        serde_json::from_str::<Value>(&snapshot).is_ok(),
        "snapshot is JSON"
    );
});
