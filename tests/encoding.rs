//! The one-pass `match_data` encoder against the two-pass one over the whole reference match
//! (`../shared/kit/reference/match.replay`), state by state: after every event, the snapshot
//! serialised once into its JSON text and its Socket.IO packet must equal the JSON from
//! `snapshot_json` and the packet `event_packet` escapes from it, byte for byte — with and
//! without the recovery offset. And the parts kept with their JSON between broadcasts (players,
//! `engine::cached`) must give what a full encode of the same state gives: a copy of the match
//! keeps no JSON, so its snapshot is serialised from the values alone — also when the kept
//! parts' escaped text is copied into the packet (`Match::escaped_part`), and the frames built
//! in place (`FrameSet::of_packet`) must equal frames built by copying.

use std::path::PathBuf;

use spectra::engine::Match;
use spectra::transport::outbound::FrameSet;
use spectra::transport::packets::{
    event_packet, event_packet_of, event_packet_of_known, event_packet_with_offset,
};
use spectra::transport::websocket;
use tungstenite::protocol::frame::coding::{Data, OpCode};

#[test]
fn one_pass_and_kept_encodings_equal_a_full_encode_for_every_state_of_the_reference_match() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    let mut m = Match::new(&file.engine_logon("ENCODE")).expect("match");
    let mut states = 0;
    let mut most_hits = 0;
    let mut compressor = websocket::compressor_at(1);
    for (i, e) in file.events.iter().enumerate() {
        m.apply(e);
        let json = m.snapshot_json();
        assert_eq!(json, m.clone().snapshot_json(), "kept JSON after event {i}");
        let offset = (i % 2 == 1).then(|| i.to_string());
        let (packet, one_pass_json) =
            event_packet_of("match_data", &m.snapshot_serialize(), offset.as_deref(), 0)
                .expect("serialisable");
        assert_eq!(one_pass_json, json, "JSON after event {i}");
        let two_pass = match &offset {
            Some(o) => event_packet_with_offset("match_data", &json, o),
            None => event_packet("match_data", &json),
        };
        assert_eq!(packet, two_pass, "packet after event {i}");
        // The kept parts' escaped text, copied instead of escaped again: the same packet.
        let hits = std::cell::Cell::new(0);
        let (known_packet, known_json) = event_packet_of_known(
            "match_data",
            &m.snapshot_serialize(),
            offset.as_deref(),
            0,
            &|fragment| {
                let escaped = m.escaped_part(fragment);
                hits.set(hits.get() + usize::from(escaped.is_some()));
                escaped
            },
        )
        .expect("serialisable");
        assert_eq!(known_json, json, "JSON with kept escapes after event {i}");
        // Its frames, built in the packet's own buffer and the deflate's, equal frames built
        // by copying: the plain frame is the packet behind its header, the deflated one the
        // same deflate behind its own.
        let frames = FrameSet::of_packet(known_packet, &mut compressor);
        assert_eq!(
            frames.packet, two_pass,
            "packet with kept escapes after event {i}"
        );
        assert_eq!(
            frames.ws_plain,
            websocket::text_frame(&two_pass),
            "plain frame after event {i}"
        );
        let deflated = websocket::deflate_message(&mut compressor, &two_pass);
        assert_eq!(
            frames.ws_deflate,
            websocket::frame(OpCode::Data(Data::Text), &deflated, true),
            "deflated frame after event {i}"
        );
        assert!(hits.get() > 0, "no kept escape used after event {i}");
        most_hits = most_hits.max(hits.get());
        states += 1;
    }
    assert!(states > 2000, "{states} states compared");
    // Ten players, both teams' round records and the tools.
    assert!(
        most_hits >= 13,
        "at most {most_hits} kept escapes used in a state"
    );
}
