//! Engine.IO and Socket.IO packet parsers on arbitrary input, the way the server reads a
//! long-polling body: split at the record separator, each record an Engine.IO packet (or `b` +
//! base64 binary), each message a Socket.IO packet whose EVENT data is read as `[name, arg]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spectra_transport::packets::{
    EioPacket, SEPARATOR, SioPacket, SioType, decode_binary_payload, encode_sio, event_name_and_arg,
};

fuzz_target!(|data: &[u8]| {
    for record in data.split(|b| *b == SEPARATOR) {
        let Ok(text) = std::str::from_utf8(record) else {
            continue;
        };
        if let Some(b64) = text.strip_prefix('b') {
            let _ = decode_binary_payload(b64);
            continue;
        }
        if let Some(EioPacket::Message(msg)) = EioPacket::parse(text)
            && let Some(p) = SioPacket::parse(msg)
        {
            if matches!(p.kind, SioType::Event | SioType::BinaryEvent) {
                let _ = event_name_and_arg(p.data);
            }
            // A packet with JSON data (every real one) encodes back into the same packet.
            if !p.data.is_empty() && serde_json::from_str::<serde_json::Value>(p.data).is_err() {
                continue;
            }
            let again = encode_sio(p.kind, p.nsp, p.id, p.data, p.attachments);
            let again = std::str::from_utf8(&again).expect("encode_sio writes UTF-8");
            let reparsed = again
                .strip_prefix('4')
                .and_then(SioPacket::parse)
                .expect("an encoded packet parses");
            assert_eq!(reparsed.nsp, p.nsp);
            assert_eq!(reparsed.id, p.id);
            assert_eq!(reparsed.data, p.data);
        }
    }
});
