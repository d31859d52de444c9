//! The incremental one-pass `match_data` encoder against a full encode over the whole reference
//! match (`../shared/kit/reference/match.replay`), state by state: after every event, the
//! snapshot serialised once into its JSON text and its Socket.IO packet — unchanged players
//! copied from the JSON kept for them — must equal the snapshot built from scratch as a value
//! (no cache) and written as JSON, and the packet `event_packet` escapes from that, byte for
//! byte; with and without the recovery offset.

use std::path::PathBuf;

use spectra::engine::Match;
use spectra::transport::packets::{event_packet, event_packet_escaped, event_packet_with_offset};

#[test]
fn one_pass_encoding_equals_serialise_then_escape_for_every_state_of_the_reference_match() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/kit/reference/match.replay");
    let text = std::fs::read_to_string(path).expect("../shared/kit/reference/match.replay");
    let file = spectra::replay::parse(&text).expect("replay");
    let mut m = Match::new(&file.engine_logon("ENCODE")).expect("match");
    let mut states = 0;
    for (i, e) in file.events.iter().enumerate() {
        m.apply(e);
        // From scratch: the snapshot as a value (never cached), then its JSON text.
        let json = m.snapshot().to_string();
        let offset = (i % 2 == 1).then(|| i.to_string());
        let mut escaped = Vec::new();
        let one_pass_json = m.snapshot_json_both(&mut escaped, 0).expect("serialisable");
        let packet = event_packet_escaped("match_data", &escaped, offset.as_deref());
        assert_eq!(one_pass_json, json, "JSON after event {i}");
        let two_pass = match &offset {
            Some(o) => event_packet_with_offset("match_data", &json, o),
            None => event_packet("match_data", &json),
        };
        assert_eq!(packet, two_pass, "packet after event {i}");
        assert_eq!(m.snapshot_json(), json, "snapshot_json after event {i}");
        states += 1;
    }
    assert!(states > 2000, "{states} states compared");
}
