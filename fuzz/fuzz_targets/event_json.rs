//! Ingest events on arbitrary input: each line is parsed as an event (simd-json, as `obs_data`
//! is) and applied to one match, then the match advances its timers and serialises its snapshot —
//! the whole engine path an observer can reach. Nothing may panic, and the snapshot must stay
//! valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::new_match;
use serde_json::{Value, json};
use spectra::parse::parse_event;

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
        let _ = game.apply(&spectra::engine::Event::new(event));
        game.advance(now);
    }
    let snapshot = game.snapshot_json();
    assert!(
        serde_json::from_str::<Value>(&snapshot).is_ok(),
        "snapshot is JSON"
    );
});
