//! Replays the kit's reference match through the match engine `N` times (default 20) and prints
//! the final counter: a deterministic workload for instruction counts of the engine, e.g.
//! `valgrind --tool=callgrind target/release/examples/engine_replay 20` before and after a
//! change (criterion timings on a shared 2-core machine vary by ±20 %; instruction counts do not).

use serde_json::{Map, Value};
use spectra::engine::Logon;
use spectra::engine::Match;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(&path).expect("../shared/kit/reference/match.replay");
    let all: Vec<Value> = serde_json::from_str(&format!("[{text}]")).expect("replay");
    let header = all[0].as_object().cloned().expect("header");
    let logon = Logon {
        group_code: "BENCH".into(),
        data: header,
        is_supporter: false,
        organization_id: String::new(),
    };
    let events: Vec<Map<String, Value>> = all[1..]
        .iter()
        .filter_map(|e| e.as_object().cloned())
        .collect();
    let mut total = 0;
    for _ in 0..runs {
        let mut m = Match::new(&logon).expect("match");
        for e in &events {
            m.apply(e);
        }
        total += m.event_number();
    }
    println!(
        "{runs} replays of {} events: counter sum {total}",
        events.len()
    );
}
