//! Replays the kit's reference match through the match engine `N` times (default 20) and prints
//! the final counter: a deterministic workload for instruction counts of the engine, e.g.
//! `valgrind --tool=callgrind target/release/examples/engine_replay 20` before and after a
//! change (criterion timings on a shared 2-core machine vary by ±20 %; instruction counts do not).

use spectra::engine::Match;

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(&path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    let (logon, events) = (file.engine_logon("BENCH"), file.events);
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
