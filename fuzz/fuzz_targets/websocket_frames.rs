//! The WebSocket frame reader on arbitrary bytes, as a client would send them: masked frames,
//! fragmentation, control frames, close codes, permessage-deflate (one byte of the input picks
//! the negotiated extension and the message limit). Every outcome must be a message, a need for
//! more bytes, or a protocol error with a close code — never a panic or an unbounded buffer.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use spectra_transport::websocket::{Incoming, MessageReader, Negotiated};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frames)) = data.split_first() else {
        return;
    };
    let neg = Negotiated {
        deflate: mode & 1 == 1,
        client_no_context_takeover: mode & 2 == 2,
    };
    let limit = if mode & 4 == 4 { 64 } else { 1 << 20 };
    let mut reader = MessageReader::new(neg, limit);
    // Feed in chunks of varying size, as a socket would deliver them.
    let mut buf = BytesMut::new();
    let step = usize::from(mode >> 3).max(1);
    for chunk in frames.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match reader.next(&mut buf) {
                Ok(Some(msg)) => {
                    let len = match &msg {
                        Incoming::Text(t) => t.len(),
                        Incoming::Binary(b) => b.len(),
                        _ => 0,
                    };
                    assert!(len <= limit, "a message over the limit was delivered");
                }
                Ok(None) => break,
                Err(e) => {
                    assert!((1000..=1011).contains(&e.code), "close code {}", e.code);
                    return;
                }
            }
        }
    }
});
