//! Engine benchmarks: events applied per second (the reference match replayed through the
//! engine) and the per-tick cost of serialising a full snapshot and framing it (plain and
//! permessage-deflate, at the levels compared), and the ingest parse of every event with and
//! without the size/depth limits (`parse_event` against the bare simd-json parse it wraps), and
//! the replay log's line per event: together the per-event path (parse, apply, log) apart from
//! the per-broadcast one (snapshot, packet, frames). Run: `cargo bench --bench engine`.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use spectra::engine::Match;
use spectra::engine::{Event, Logon};
use spectra::transport::{packets, websocket};

fn replay() -> (Logon, Vec<Event>) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    (file.engine_logon("BENCH"), file.events)
}

fn bench(c: &mut Criterion) {
    let (logon, events) = replay();
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("apply_whole_match", |b| {
        b.iter(|| {
            let mut m = Match::new(&logon).expect("match");
            for e in &events {
                m.apply(e);
            }
            m.event_number()
        })
    });
    group.finish();

    // The whole match's events as their observers send them (JSON text), parsed at the edge.
    let texts: Vec<String> = events
        .iter()
        .map(|e| Value::Object(e.envelope().clone()).to_string())
        .collect();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("simd_json_only", |b| {
        b.iter(|| {
            texts
                .iter()
                .filter(|t| {
                    let mut buf = t.as_bytes().to_vec();
                    simd_json::serde::from_slice::<Value>(&mut buf).is_ok()
                })
                .count()
        })
    });
    group.bench_function("parse_event_with_limits", |b| {
        b.iter(|| {
            texts
                .iter()
                .filter(|t| spectra::parse::parse_event(t).is_ok())
                .count()
        })
    });
    group.finish();

    // What the replay log does per accepted event (`ReplayLog::append`: the event's JSON
    // appended to the log's buffer; the file write is the writer task's, batched).
    let envelopes: Vec<_> = events.iter().map(|e| e.envelope().clone()).collect();
    let mut group = c.benchmark_group("replay_log");
    group.throughput(Throughput::Elements(envelopes.len() as u64));
    group.bench_function("append_line_per_event", |b| {
        let mut buf = Vec::with_capacity(1 << 20);
        b.iter(|| {
            buf.clear();
            for e in &envelopes {
                buf.extend_from_slice(b",\n");
                let _ = serde_json::to_writer(&mut buf, e);
            }
            buf.len()
        })
    });
    group.finish();

    // A mid-match state with 10 players (about 13 KB of JSON).
    let mut m = Match::new(&logon).expect("match");
    for e in events.iter().take(events.len() / 2) {
        m.apply(e);
    }
    let json = m.snapshot_json();
    let mut group = c.benchmark_group("tick");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("snapshot_value", |b| b.iter(|| m.snapshot()));
    group.bench_function("snapshot_json", |b| b.iter(|| m.snapshot_json()));
    let packet = packets::event_packet("match_data", &json);
    group.bench_function("event_packet", |b| {
        b.iter(|| packets::event_packet("match_data", &json))
    });
    group.bench_function("snapshot_json_then_event_packet", |b| {
        b.iter(|| packets::event_packet("match_data", &m.snapshot_json()))
    });
    group.bench_function("snapshot_json_and_event_packet_one_pass", |b| {
        b.iter(|| packets::event_packet_of("match_data", &m.snapshot_serialize(), None, json.len()))
    });
    group.bench_function("ws_frame_plain", |b| {
        b.iter(|| websocket::text_frame(&packet))
    });
    let mut compressor = websocket::new_compressor();
    let deflated = websocket::compressed_text_frame(&mut compressor, &packet);
    eprintln!(
        "snapshot {} B of JSON, packet {} B, deflated frame {} B",
        json.len(),
        packet.len(),
        deflated.len()
    );
    group.bench_function("ws_frame_deflate", |b| {
        b.iter(|| websocket::compressed_text_frame(&mut compressor, &packet))
    });
    for level in [1u32, 2, 4] {
        let mut c = websocket::compressor_at(level);
        let n = websocket::compressed_text_frame(&mut c, &packet).len();
        eprintln!("level {level}: {n} B");
        group.bench_function(format!("ws_frame_deflate_level{level}"), |b| {
            b.iter(|| websocket::compressed_text_frame(&mut c, &packet))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
