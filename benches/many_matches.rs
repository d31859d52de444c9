//! Many small matches on one core without sockets: an event applied to one of 1,000 live
//! matches in turn, then that match's snapshot encoded as a broadcast (JSON and the Socket.IO
//! packet in one pass, its frames built, the deflated one at level 1) — the per-event and
//! per-broadcast work of B4 with each match's state as cold in the CPU caches as it is there,
//! which a benchmark of one match (`engine`'s `tick/*`, always hot) does not show.
//! Run: `taskset -c 1 cargo bench --bench many_matches`.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use spectra::engine::Match;
use spectra::transport::outbound::FrameSet;
use spectra::transport::{packets, websocket};
use tungstenite::protocol::frame::coding::{Data, OpCode};

const MATCHES: usize = 1000;

fn bench(c: &mut Criterion) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    let logon = file.engine_logon("BENCH");
    let events = file.events;
    // Each match somewhere in the first half of the reference match, so every one has events
    // left for the whole run; each encoded once, as after its previous broadcast.
    let mut matches: Vec<(Match, usize)> = (0..MATCHES)
        .map(|i| {
            let mut m = Match::new(&logon).expect("match");
            let start = 100 + (i * 7) % (events.len() / 2);
            for e in &events[..start] {
                m.apply(e);
            }
            let _ = packets::event_packet_of("match_data", &m.snapshot_serialize(), None, 0);
            (m, start)
        })
        .collect();
    let mut compressor = websocket::compressor_at(1);
    let mut group = c.benchmark_group("many_matches");
    // `kept escapes`: the kept parts' escaped text copied into the packet (as the server does);
    // without, every part's JSON escaped again at each broadcast (as before session 20).
    // `copied frames`: the plain frame a copy of the packet and the deflated frame a copy of the
    // deflate's output (as before session 21); without, `FrameSet::of_packet` (one buffer each).
    for (deflate, kept_escapes, copied_frames) in [
        (false, false, false),
        (false, true, false),
        (true, false, false),
        (true, true, false),
        (true, true, true),
    ] {
        let name = format!(
            "event_then_broadcast_1000_matches_{}{}{}",
            if deflate { "deflate1" } else { "no_deflate" },
            if kept_escapes { "_kept_escapes" } else { "" },
            if copied_frames { "_copied_frames" } else { "" }
        );
        let mut k = 0;
        group.bench_function(name, |b| {
            b.iter(|| {
                let (m, next) = &mut matches[k % MATCHES];
                k += 1;
                if let Some(e) = events.get(*next) {
                    m.apply(e);
                    *next += 1;
                }
                let m = &*m;
                let known = |fragment: &str| {
                    if kept_escapes {
                        m.escaped_part(fragment)
                    } else {
                        None
                    }
                };
                let (packet, json) = packets::event_packet_of_known(
                    "match_data",
                    &m.snapshot_serialize(),
                    None,
                    16_384,
                    &known,
                )
                .expect("serialisable");
                let frames = match (deflate, copied_frames) {
                    (false, _) => packet.into_text_frame().0.len(),
                    (true, false) => FrameSet::of_packet(packet, &mut compressor)
                        .ws_deflate
                        .len(),
                    (true, true) => {
                        let packet = packet.into_message();
                        let plain = websocket::text_frame(&packet);
                        let deflated = websocket::deflate_message(&mut compressor, &packet);
                        let deflated = websocket::frame(OpCode::Data(Data::Text), &deflated, true);
                        plain.len() + deflated.len()
                    }
                };
                (json.len(), frames)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
