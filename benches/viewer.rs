//! Viewer-stream benchmarks over the reference match (`../shared/kit/reference/match.replay`,
//! one state after every event, as when each event gets its own broadcast):
//! - the CPU per broadcast to build the JSON Patch from the previous state (`json_patch::diff`
//!   and its serialisation), beside building the full snapshot it is compared with, and what a
//!   delayed match's public code adds (its `groupCode` replaced, the viewers' JSON written);
//! - printed before the timings: bytes per delivery of a full `GameData` and of a
//!   `GameDataDelta`, plain and permessage-deflated, summed over the match, and the memory the
//!   spectator-delay buffer holds after 180 s at 10 broadcasts per second (1,800 states).
//!
//! Run: `cargo bench --bench viewer`.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use spectra::engine::Match;
use spectra::transport::websocket;
use spectra::viewer::stream::{ViewerStream, game_data};

fn states() -> Vec<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    let mut m = Match::new(&file.engine_logon("BENCH")).expect("match");
    let mut out = Vec::with_capacity(file.events.len());
    let mut last = u64::MAX;
    for e in &file.events {
        m.apply(e);
        if m.event_number() != last {
            last = m.event_number();
            out.push(m.snapshot());
        }
    }
    out
}

fn report(states: &[Value]) {
    let mut compressor = websocket::new_compressor();
    let (mut full_plain, mut full_deflate, mut delta_plain, mut delta_deflate) = (0, 0, 0, 0);
    for (i, s) in states.iter().enumerate() {
        let full = game_data(&Value::Null, &s.to_string(), i as u64 + 1);
        full_plain += websocket::text_frame(&full).len();
        full_deflate += websocket::compressed_text_frame(&mut compressor, &full).len();
        let delta = if i == 0 {
            full.to_vec()
        } else {
            let patch = serde_json::to_string(&json_patch::diff(&states[i - 1], s)).expect("patch");
            format!(
                r#"{{"type":"GameDataDelta","data":{{"seq":{},"base_seq":{},"patch":{patch}}}}}"#,
                i + 1,
                i
            )
            .into_bytes()
        };
        delta_plain += websocket::text_frame(&delta).len();
        delta_deflate += websocket::compressed_text_frame(&mut compressor, &delta).len();
    }
    let n = states.len();
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b as f64;
    println!(
        "viewer bytes over {n} states: full {full_plain} B plain ({} B/delivery), {full_deflate} B deflated ({} B/delivery); \
         delta {delta_plain} B plain ({:.1} %), {delta_deflate} B deflated ({:.1} % of full deflated, {} B/delivery)",
        full_plain / n,
        full_deflate / n,
        pct(delta_plain, full_plain),
        pct(delta_deflate, full_deflate),
        delta_deflate / n,
    );
    // The delay buffer after 180 s at 10 broadcasts/s: the first state whole, then patches.
    let mut stream: ViewerStream<()> = ViewerStream::new(Duration::from_secs(180));
    let t0 = Instant::now();
    for (i, s) in states.iter().cycle().take(1800).enumerate() {
        let json: Rc<str> = Rc::from(s.to_string());
        let at = t0 + Duration::from_millis(100 * i as u64);
        stream.push_state(at, || Rc::new(s.clone()), json, Value::Null, false);
    }
    let (now, peak) = stream.waiting_bytes();
    println!(
        "delay buffer at 180 s (1,800 states waiting): {now} B of patches ({:.2} MB; peak {peak} B), bound {} MB",
        now as f64 / 1e6,
        spectra::viewer::stream::MAX_WAITING_BYTES / (1024 * 1024)
    );
}

fn bench(c: &mut Criterion) {
    let states = states();
    report(&states);
    let mut group = c.benchmark_group("viewer");
    group.throughput(Throughput::Elements(states.len() as u64 - 1));
    group.bench_function("patch_per_broadcast_whole_match", |b| {
        b.iter(|| {
            states
                .windows(2)
                .map(|w| {
                    serde_json::to_string(&json_patch::diff(&w[0], &w[1])).map_or(0, |t| t.len())
                })
                .sum::<usize>()
        })
    });
    group.bench_function("snapshot_json_whole_match", |b| {
        b.iter(|| states.iter().map(|s| s.to_string().len()).sum::<usize>())
    });
    // What a public code adds per broadcast of a delayed match (`Room::push_state`): the
    // state's `groupCode` replaced in the value the delay builds anyway (its JSON is written
    // only for a state kept whole, not per broadcast). The clone is set-up, not measured.
    group.bench_function("public_code_per_broadcast_whole_match", |b| {
        b.iter_batched_ref(
            || states.clone(),
            |owned| {
                for s in owned.iter_mut() {
                    if let Some(obj) = s.as_object_mut() {
                        obj.insert("groupCode".into(), Value::String("PUB-0123".into()));
                    }
                }
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
