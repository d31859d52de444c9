//! WebSocket (RFC 6455) with permessage-deflate (RFC 7692): the upgrade handshake, reading client
//! frames into messages (defragmented, unmasked, inflated, size-limited) and building server
//! frames. Header parsing and the accept key come from tungstenite; I/O stays with the caller so
//! one pre-built frame (`Bytes`) can be written to many connections.
//!
//! Server frames are compressed with `server_no_context_takeover`, so every compressed message is
//! self-contained and one compressed frame serves every recipient. Clients are asked for
//! `client_no_context_takeover` too (RFC 7692 §7.1.1.2 lets a server add it to any accepted
//! offer), so their messages are inflated by one inflater per thread: no connection keeps an
//! inflater's ~40 KB of state and window while it is idle.

use std::io::Cursor;

use bytes::{Buf, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use super::http::{Request, Response};

/// Close codes used by the server.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
}

/// What the handshake agreed on.
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    pub deflate: bool,
    /// The client promised to reset its compressor after every message.
    pub client_no_context_takeover: bool,
}

/// Validates an upgrade request and builds the `101` response.
pub fn accept(req: &Request) -> Result<(Response, Negotiated), &'static str> {
    if req.method != "GET" {
        return Err("WebSocket upgrade needs GET");
    }
    if req.header("sec-websocket-version") != Some("13") {
        return Err("Unsupported WebSocket version");
    }
    let key = req
        .header("sec-websocket-key")
        .filter(|k| !k.is_empty())
        .ok_or("Missing Sec-WebSocket-Key")?;
    let mut resp = Response {
        status: 101,
        headers: vec![
            ("Upgrade", "websocket".into()),
            ("Connection", "Upgrade".into()),
            (
                "Sec-WebSocket-Accept",
                tungstenite::handshake::derive_accept_key(key.as_bytes()),
            ),
        ],
        body: Bytes::new(),
    };
    let mut negotiated = Negotiated {
        deflate: false,
        client_no_context_takeover: false,
    };
    if let Some(offers) = req.header("sec-websocket-extensions") {
        for offer in offers.split(',') {
            let mut params = offer.split(';').map(str::trim);
            if params.next() != Some("permessage-deflate") {
                continue;
            }
            let mut ok = true;
            for p in params {
                let name = p.split('=').next().unwrap_or("").trim();
                match name {
                    "client_no_context_takeover"
                    | "server_no_context_takeover"
                    | "client_max_window_bits" => {}
                    // We always use a 15-bit window; an offer that limits ours is declined.
                    "server_max_window_bits" => {
                        ok = p.split('=').nth(1).map(|v| v.trim().trim_matches('"')) == Some("15")
                    }
                    _ => ok = false,
                }
            }
            if ok {
                // Offered or not, the client is asked to compress each message alone.
                negotiated.deflate = true;
                negotiated.client_no_context_takeover = true;
                resp.headers.push((
                    "Sec-WebSocket-Extensions",
                    "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                        .into(),
                ));
                break;
            }
        }
    }
    resp.headers
        .push(("Access-Control-Allow-Origin", "*".into()));
    Ok((resp, negotiated))
}

/// Something a client sent, as a whole message.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Text(String),
    Binary(Bytes),
    Ping(Bytes),
    Pong,
    /// A valid close frame, with its status code if it had one.
    Close(Option<u16>),
}

/// A protocol violation: the connection is closed with this code and reason.
#[derive(Debug, PartialEq)]
pub struct WsError {
    pub code: u16,
    pub reason: &'static str,
}

fn err(code: u16, reason: &'static str) -> WsError {
    WsError { code, reason }
}

/// Reassembles client frames into messages.
pub struct MessageReader {
    /// Frames come from a client (masked) — or, for load tools, from a server (unmasked).
    from_client: bool,
    deflate: bool,
    reset_after_message: bool,
    max_message: usize,
    inflater: Option<Decompress>,
    partial: Option<Partial>,
}

struct Partial {
    text: bool,
    compressed: bool,
    data: BytesMut,
}

impl MessageReader {
    pub fn new(neg: Negotiated, max_message: usize) -> Self {
        MessageReader {
            from_client: true,
            deflate: neg.deflate,
            reset_after_message: neg.client_no_context_takeover,
            max_message,
            inflater: None,
            partial: None,
        }
    }

    /// A reader of a server's frames (unmasked); with permessage-deflate, `no_context_takeover`
    /// says whether the server agreed to `server_no_context_takeover` (each message compressed
    /// alone, as this crate's server does) or keeps its window across messages (as the `ws`
    /// library does by default). Used by client tools such as `tools/loadgen`.
    pub fn for_server_frames(deflate: bool, no_context_takeover: bool, max_message: usize) -> Self {
        MessageReader {
            from_client: false,
            deflate,
            reset_after_message: no_context_takeover,
            max_message,
            inflater: None,
            partial: None,
        }
    }

    /// Takes the next complete message out of `buf`, or `Ok(None)` when more bytes are needed.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, WsError> {
        loop {
            let mut cursor = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(err(close_code::PROTOCOL, "bad frame header")),
            };
            let head_len = cursor.position() as usize;
            if len > self.max_message as u64 {
                return Err(err(close_code::TOO_BIG, "message too large"));
            }
            let len = len as usize;
            if buf.len() < head_len + len {
                return Ok(None);
            }
            let mask = match (header.mask, self.from_client) {
                (Some(mask), true) => Some(mask),
                (None, false) => None,
                (None, true) => {
                    return Err(err(close_code::PROTOCOL, "client frames must be masked"));
                }
                (Some(_), false) => {
                    return Err(err(
                        close_code::PROTOCOL,
                        "server frames must not be masked",
                    ));
                }
            };
            if header.rsv2 || header.rsv3 || (header.rsv1 && !self.deflate) {
                return Err(err(close_code::PROTOCOL, "reserved bits set"));
            }
            buf.advance(head_len);
            let mut payload = buf.split_to(len);
            if let Some(mask) = mask {
                unmask(&mut payload, mask);
            }
            match header.opcode {
                OpCode::Control(c) => {
                    if !header.is_final || len > 125 || header.rsv1 {
                        return Err(err(close_code::PROTOCOL, "bad control frame"));
                    }
                    match c {
                        Control::Ping => return Ok(Some(Incoming::Ping(payload.freeze()))),
                        Control::Pong => return Ok(Some(Incoming::Pong)),
                        Control::Close => return check_close(&payload).map(Some),
                        Control::Reserved(_) => {
                            return Err(err(close_code::PROTOCOL, "reserved opcode"));
                        }
                    }
                }
                OpCode::Data(Data::Reserved(_)) => {
                    return Err(err(close_code::PROTOCOL, "reserved opcode"));
                }
                OpCode::Data(Data::Continue) => {
                    let Some(p) = self.partial.as_mut() else {
                        return Err(err(close_code::PROTOCOL, "unexpected continuation"));
                    };
                    if header.rsv1 {
                        return Err(err(close_code::PROTOCOL, "rsv1 on continuation"));
                    }
                    if p.data.len() + payload.len() > self.max_message {
                        return Err(err(close_code::TOO_BIG, "message too large"));
                    }
                    p.data.extend_from_slice(&payload);
                }
                OpCode::Data(d) => {
                    if self.partial.is_some() {
                        return Err(err(close_code::PROTOCOL, "expected continuation"));
                    }
                    self.partial = Some(Partial {
                        text: d == Data::Text,
                        compressed: header.rsv1,
                        data: payload,
                    });
                }
            }
            if header.is_final
                && let Some(p) = self.partial.take()
            {
                return self.finish(p).map(Some);
            }
        }
    }

    fn finish(&mut self, p: Partial) -> Result<Incoming, WsError> {
        let data = if p.compressed {
            self.inflate(&p.data)?
        } else {
            p.data.freeze()
        };
        if p.text {
            match String::from_utf8(data.to_vec()) {
                Ok(s) => Ok(Incoming::Text(s)),
                Err(_) => Err(err(close_code::INVALID_DATA, "invalid UTF-8")),
            }
        } else {
            Ok(Incoming::Binary(data))
        }
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Bytes, WsError> {
        if self.reset_after_message {
            // Each message stands alone: the thread's inflater serves every connection (a
            // message is inflated whole, in one call, so no two uses overlap).
            return SHARED_INFLATER.with(|cell| {
                let mut inflater = cell.borrow_mut();
                inflater.reset(false);
                inflate_message(&mut inflater, input, self.max_message)
            });
        }
        let inflater = self.inflater.get_or_insert_with(|| Decompress::new(false));
        inflate_message(inflater, input, self.max_message)
    }
}

thread_local! {
    static SHARED_INFLATER: std::cell::RefCell<Decompress> =
        std::cell::RefCell::new(Decompress::new(false));
}

/// Inflates one permessage-deflate message with `inflater` (its window carries over from the
/// messages before unless the caller reset it), at most `max_message` bytes.
///
/// A peer may end a message with a block whose `BFINAL` bit is set (RFC 7692 §7.2.3.4): the
/// DEFLATE stream ends there, the appended `00 00 ff ff` is not read, and the inflater is reset
/// so the next message starts a stream of its own. Data after the final block is refused.
fn inflate_message(
    inflater: &mut Decompress,
    input: &[u8],
    max_message: usize,
) -> Result<Bytes, WsError> {
    {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let tail = [0u8, 0, 0xff, 0xff];
        let mut ended = false;
        for (chunk, appended) in [(input, false), (&tail[..], true)] {
            if ended {
                break;
            }
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= max_message {
                        return Err(err(close_code::TOO_BIG, "message too large"));
                    }
                    out.reserve(out.len().max(4096));
                }
                let (before_in, before_out) = (inflater.total_in(), out.len());
                let status = inflater
                    .decompress_vec(&chunk[pos..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| err(close_code::INVALID_DATA, "bad deflate data"))?;
                let consumed = (inflater.total_in() - before_in) as usize;
                pos += consumed;
                if out.len() > max_message {
                    return Err(err(close_code::TOO_BIG, "message too large"));
                }
                if matches!(status, Status::StreamEnd) {
                    if !appended && pos < chunk.len() {
                        return Err(err(close_code::INVALID_DATA, "data after the final block"));
                    }
                    ended = true;
                    break;
                }
                // Output may still be pending inside the inflater (an interrupted match copy)
                // even when all input is consumed: stop only once a call had room to spare.
                let room_left = out.len() < out.capacity();
                let progressed = consumed > 0 || out.len() > before_out;
                if room_left && (pos >= chunk.len() || !progressed) {
                    break;
                }
            }
        }
        if ended {
            inflater.reset(false);
        }
        Ok(Bytes::from(out))
    }
}

/// Validates a close frame's payload (RFC 6455 §5.5.1, §7.4): empty, or a code a peer may send
/// followed by UTF-8.
fn check_close(payload: &[u8]) -> Result<Incoming, WsError> {
    match payload {
        [] => Ok(Incoming::Close(None)),
        [_] => Err(err(close_code::PROTOCOL, "close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let allowed = matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999);
            if !allowed {
                return Err(err(close_code::PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(err(
                    close_code::INVALID_DATA,
                    "invalid UTF-8 in close reason",
                ));
            }
            Ok(Incoming::Close(Some(code)))
        }
    }
}

fn unmask(data: &mut [u8], mask: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Room for the largest header of an unmasked frame (2 bytes, then an 8-byte length).
const HEADROOM: usize = 10;

/// A message being written after room for its frame header: once written, its frame and the
/// message itself are two views of one buffer (`into_frame`), not a copy of it.
pub struct FrameBuf(Vec<u8>);

impl FrameBuf {
    /// Room for a message of about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> FrameBuf {
        let mut buf = Vec::with_capacity(HEADROOM + capacity);
        buf.resize(HEADROOM, 0);
        FrameBuf(buf)
    }

    /// The message written so far.
    pub fn message(&self) -> &[u8] {
        &self.0[HEADROOM..]
    }

    /// Appends to the message. (Writers given this buffer only append, or truncate back to a
    /// length they saw: never into the header's room.)
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The message alone.
    pub fn into_message(self) -> Bytes {
        Bytes::from(self.0).slice(HEADROOM..)
    }

    /// The message's uncompressed text frame and the message, sharing one buffer.
    pub fn into_text_frame(self) -> (Bytes, Bytes) {
        self.into_frame(OpCode::Data(Data::Text), false)
    }

    /// The message's unmasked frame and the message, sharing one buffer.
    fn into_frame(mut self, opcode: OpCode, compressed: bool) -> (Bytes, Bytes) {
        if self.0.len() < HEADROOM {
            // Only a writer that broke the rule above; the frame of what is left, copied.
            let message = Bytes::from(self.0);
            return (frame(opcode, &message, compressed), message);
        }
        let len = self.0.len() - HEADROOM;
        let mut header = [0u8; HEADROOM];
        let mut at = Cursor::new(&mut header[..]);
        // The largest header fits the room.
        let _ = header_of(opcode, compressed).format(len as u64, &mut at);
        let n = at.position() as usize;
        let start = HEADROOM - n;
        self.0[start..HEADROOM].copy_from_slice(&header[..n]);
        let whole = Bytes::from(self.0);
        (whole.slice(start..), whole.slice(HEADROOM..))
    }
}

fn header_of(opcode: OpCode, compressed: bool) -> FrameHeader {
    FrameHeader {
        is_final: true,
        rsv1: compressed,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    }
}

/// An unmasked server frame.
pub fn frame(opcode: OpCode, payload: &[u8], compressed: bool) -> Bytes {
    let header = header_of(opcode, compressed);
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A masked client frame (client tools; servers never send these).
pub fn client_frame(opcode: OpCode, payload: &[u8], mask: [u8; 4]) -> Bytes {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(mask),
    };
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    let _ = header.format(payload.len() as u64, &mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], mask);
    Bytes::from(out)
}

pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(Data::Text), payload, false)
}

pub fn binary_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(Data::Binary), payload, false)
}

pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(120)]);
    frame(OpCode::Control(Control::Close), &payload, false)
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload, false)
}

pub fn ping_frame() -> Bytes {
    frame(OpCode::Control(Control::Ping), b"", false)
}

/// Compresses one whole message for permessage-deflate without context takeover (a fresh
/// compressor state per message). Returns the payload of a frame with RSV1 set.
pub fn deflate_message(compressor: &mut Compress, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    deflate_onto(compressor, payload, &mut out);
    out
}

/// `deflate_message`, appended to `out`.
fn deflate_onto(compressor: &mut Compress, payload: &[u8], out: &mut Vec<u8>) {
    compressor.reset();
    let start = out.len();
    let mut pos = 0;
    loop {
        // Keep room to spare: a sync flush that runs out of space stops part-way.
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(1024));
        }
        let (before_in, before_out) = (compressor.total_in(), out.len());
        // A Vec-backed deflate cannot fail; the status only tells whether more room is needed.
        let _ = compressor.compress_vec(&payload[pos..], out, FlushCompress::Sync);
        let consumed = (compressor.total_in() - before_in) as usize;
        pos += consumed;
        // Done once all input is in and the flush completed (it ends with the empty stored
        // block 00 00 ff ff) with output room left over; a call that moved nothing also ends.
        let flushed =
            out.ends_with(&[0, 0, 0xff, 0xff]) || (consumed == 0 && out.len() == before_out);
        if pos >= payload.len() && out.len() < out.capacity() && flushed {
            break;
        }
    }
    if out.len() >= start + 4 && out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
}

/// A compressor for broadcast frames (raw deflate, 15-bit window, level 3).
pub fn new_compressor() -> Compress {
    compressor_at(3)
}

/// A compressor for broadcast frames at deflate `level` (1 fastest … 9 smallest; clamped).
pub fn compressor_at(level: u32) -> Compress {
    Compress::new(Compression::new(level.clamp(1, 9)), false)
}

/// A text message as one compressed frame.
pub fn compressed_text_frame(compressor: &mut Compress, payload: &[u8]) -> Bytes {
    compressed_frame(OpCode::Data(Data::Text), compressor, payload)
}

/// A binary message as one compressed frame.
pub fn compressed_binary_frame(compressor: &mut Compress, payload: &[u8]) -> Bytes {
    compressed_frame(OpCode::Data(Data::Binary), compressor, payload)
}

/// Compressed into the frame's own buffer, its header put in front (no copy).
fn compressed_frame(opcode: OpCode, compressor: &mut Compress, payload: &[u8]) -> Bytes {
    let mut out = FrameBuf::with_capacity(payload.len() / 2 + 64);
    deflate_onto(compressor, payload, out.buf());
    out.into_frame(opcode, true).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(opcode: u8, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        out
    }

    fn neg(deflate: bool) -> Negotiated {
        Negotiated {
            deflate,
            client_no_context_takeover: false,
        }
    }

    /// A frame written in the message's own buffer equals the frame built by copying, for every
    /// size of header (2, 4 and 10 bytes), and the message beside it is the message.
    #[test]
    fn frames_built_in_place_equal_frames_built_by_copying() {
        let mut compressor = compressor_at(1);
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let message: Vec<u8> = (0..len).map(|i| b"ab\"{}:,0123"[i % 11]).collect();
            let mut buf = FrameBuf::with_capacity(len / 2);
            buf.buf().extend_from_slice(&message);
            assert_eq!(buf.message(), &message[..]);
            let (plain, packet) = buf.into_text_frame();
            assert_eq!(packet, message, "message of {len} bytes");
            assert_eq!(plain, text_frame(&message), "plain frame of {len} bytes");
            let deflated = deflate_message(&mut compressor, &message);
            assert_eq!(
                compressed_text_frame(&mut compressor, &message),
                frame(OpCode::Data(Data::Text), &deflated, true),
                "deflated frame of {len} bytes"
            );
            assert_eq!(
                compressed_binary_frame(&mut compressor, &message),
                frame(OpCode::Data(Data::Binary), &deflated, true),
                "deflated binary frame of {len} bytes"
            );
        }
    }

    #[test]
    fn reads_fragmented_text_with_interleaved_ping() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&client_frame(1, false, false, b"hel"));
        buf.extend_from_slice(&client_frame(9, true, false, b"p"));
        buf.extend_from_slice(&client_frame(0, true, false, b"lo"));
        let mut r = MessageReader::new(neg(false), 100);
        assert_eq!(
            r.next(&mut buf),
            Ok(Some(Incoming::Ping(Bytes::from_static(b"p"))))
        );
        assert_eq!(r.next(&mut buf), Ok(Some(Incoming::Text("hello".into()))));
        assert_eq!(r.next(&mut buf), Ok(None));
    }

    #[test]
    fn compressed_round_trip() {
        let text = "42[\"state\",\"{}\"]".repeat(100);
        let mut c = new_compressor();
        let deflated = deflate_message(&mut c, text.as_bytes());
        assert!(deflated.len() < text.len() / 4);
        let mut buf = BytesMut::from(&client_frame(1, true, true, &deflated)[..]);
        let mut r = MessageReader::new(neg(true), 1_000_000);
        assert_eq!(r.next(&mut buf), Ok(Some(Incoming::Text(text.clone()))));
        // The same compressed bytes decode again: no context carried between messages.
        let mut buf = BytesMut::from(&client_frame(1, true, true, &deflated)[..]);
        assert_eq!(r.next(&mut buf), Ok(Some(Incoming::Text(text))));
    }

    /// Every accepted deflate offer is answered with `client_no_context_takeover`, so clients'
    /// messages stand alone and one inflater per thread serves every connection — even after
    /// another connection sent data that is not deflate at all.
    #[test]
    fn client_messages_share_one_inflater() {
        let req = Request {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            body: Bytes::new(),
            keep_alive: true,
            peer: None,
            direct: None,
            tcp_socket: None,
            headers: vec![
                ("sec-websocket-version".into(), "13".into()),
                (
                    "sec-websocket-key".into(),
                    "dGhlIHNhbXBsZSBub25jZQ==".into(),
                ),
                (
                    "sec-websocket-extensions".into(),
                    "permessage-deflate; client_max_window_bits".into(),
                ),
            ],
        };
        let (resp, negotiated) = accept(&req).expect("accepted");
        let ext = resp
            .headers
            .iter()
            .find(|(n, _)| *n == "Sec-WebSocket-Extensions")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            ext,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert!(negotiated.deflate && negotiated.client_no_context_takeover);
        let (a_text, b_text) = (
            "42[\"logon\",\"a\"]".repeat(30),
            "{\"type\":\"b\"}".repeat(30),
        );
        let a_msg = deflate_message(&mut new_compressor(), a_text.as_bytes());
        let b_msg = deflate_message(&mut new_compressor(), b_text.as_bytes());
        let mut a = MessageReader::new(negotiated, 1_000_000);
        let mut b = MessageReader::new(negotiated, 1_000_000);
        let mut bad = MessageReader::new(negotiated, 1_000_000);
        for _ in 0..3 {
            let mut buf = BytesMut::from(&client_frame(1, true, true, &a_msg)[..]);
            assert_eq!(a.next(&mut buf), Ok(Some(Incoming::Text(a_text.clone()))));
            let mut buf = BytesMut::from(&client_frame(1, true, true, &[0xff; 40])[..]);
            assert!(bad.next(&mut buf).is_err());
            let mut buf = BytesMut::from(&client_frame(1, true, true, &b_msg)[..]);
            assert_eq!(b.next(&mut buf), Ok(Some(Incoming::Text(b_text.clone()))));
        }
        assert!(
            a.inflater.is_none() && b.inflater.is_none(),
            "no inflater per connection"
        );
    }

    /// Server frames compressed with context takeover (the `ws` library's default): the second
    /// message refers back into the first, so a reader must keep its window — and must reset it
    /// when the server agreed to `server_no_context_takeover`.
    #[test]
    fn server_frames_with_context_takeover() {
        let text = "42[\"match_data\",\"{\\\"round\\\":1}\"]".repeat(20);
        let mut c = new_compressor();
        let mut messages = Vec::new();
        for _ in 0..2 {
            let mut out = Vec::with_capacity(text.len() + 64);
            let _ = c.compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync);
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
            out.truncate(out.len() - 4);
            messages.push(out);
        }
        assert!(
            messages[1].len() < messages[0].len(),
            "the second refers back"
        );
        let server_frame = |payload: &[u8]| {
            let mut f = vec![0xc1u8, 126];
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut keeping = MessageReader::for_server_frames(true, false, 1_000_000);
        for m in &messages {
            let mut buf = BytesMut::from(&server_frame(m)[..]);
            assert_eq!(
                keeping.next(&mut buf),
                Ok(Some(Incoming::Text(text.clone())))
            );
        }
        let mut resetting = MessageReader::for_server_frames(true, true, 1_000_000);
        let mut buf = BytesMut::from(&server_frame(&messages[0])[..]);
        assert_eq!(
            resetting.next(&mut buf),
            Ok(Some(Incoming::Text(text.clone())))
        );
        let mut buf = BytesMut::from(&server_frame(&messages[1])[..]);
        assert_ne!(resetting.next(&mut buf), Ok(Some(Incoming::Text(text))));
    }

    /// A client may end a message with a final block (RFC 7692 §7.2.3.4): the stream ends
    /// there, what follows it inside the message is refused, and a reader that keeps its context
    /// starts the next message afresh.
    #[test]
    fn a_final_block_ends_the_message() {
        let mut c = Compress::new(Compression::new(3), false);
        let mut one = Vec::with_capacity(64);
        let _ = c.compress_vec(b"hello", &mut one, FlushCompress::Finish);
        let mut twice = one.clone();
        twice.extend_from_slice(&one);
        let mut r = MessageReader::new(neg(true), 1000);
        let mut buf = BytesMut::from(&client_frame(1, true, true, &twice)[..]);
        assert_eq!(
            r.next(&mut buf).map_err(|e| e.code),
            Err(close_code::INVALID_DATA)
        );
        let mut r = MessageReader::new(neg(true), 1000);
        for _ in 0..2 {
            let mut buf = BytesMut::from(&client_frame(1, true, true, &one)[..]);
            assert_eq!(r.next(&mut buf), Ok(Some(Incoming::Text("hello".into()))));
        }
    }

    #[test]
    fn limits_and_violations() {
        let mut r = MessageReader::new(neg(false), 10);
        let mut buf = BytesMut::from(&client_frame(1, true, false, &[b'a'; 20])[..]);
        assert_eq!(
            r.next(&mut buf).map_err(|e| e.code),
            Err(close_code::TOO_BIG)
        );
        let mut r = MessageReader::new(neg(false), 10);
        let mut buf = BytesMut::from(&client_frame(1, true, true, b"x")[..]);
        assert_eq!(
            r.next(&mut buf).map_err(|e| e.code),
            Err(close_code::PROTOCOL)
        );
        let mut r = MessageReader::new(neg(false), 10);
        let mut buf = BytesMut::from(&client_frame(1, true, false, &[0xff, 0xfe])[..]);
        assert_eq!(
            r.next(&mut buf).map_err(|e| e.code),
            Err(close_code::INVALID_DATA)
        );
        // A zip bomb is cut off at the limit.
        let big = vec![b'a'; 100_000];
        let deflated = deflate_message(&mut new_compressor(), &big);
        let mut r = MessageReader::new(neg(true), 1000);
        let mut buf = BytesMut::from(&client_frame(2, true, true, &deflated)[..]);
        assert_eq!(
            r.next(&mut buf).map_err(|e| e.code),
            Err(close_code::TOO_BIG)
        );
    }
}

#[cfg(test)]
mod deflate_sizes {
    use super::*;

    /// Deterministic data that alternates incompressible runs with repetitive text (like a PDF
    /// or a snapshot with embedded images): the mix that once left a sync flush unfinished.
    fn mixed(seed: u64, size: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let text = b"endobj 12 0 obj <</Type/Page/Parent 3 0 R>>\n";
        let mut out = Vec::with_capacity(size);
        while out.len() < size {
            let r = next();
            let n = 500 + (r % 12_000) as usize;
            if r % 3 == 0 {
                let shift = (r >> 8) as usize;
                out.extend((0..n).map(|i| text[(i + shift) % text.len()]));
            } else {
                out.extend((0..n).map(|_| next() as u8));
            }
        }
        out.truncate(size);
        out
    }

    fn inflate_all(deflated: &[u8]) -> Vec<u8> {
        let mut r = MessageReader::new(
            Negotiated {
                deflate: true,
                client_no_context_takeover: false,
            },
            usize::MAX / 2,
        );
        let mut buf = BytesMut::new();
        let mut header = Vec::new();
        FrameHeader {
            is_final: true,
            rsv1: true,
            rsv2: false,
            rsv3: false,
            opcode: OpCode::Data(Data::Binary),
            mask: Some([0, 0, 0, 0]),
        }
        .format(deflated.len() as u64, &mut header)
        .unwrap();
        buf.extend_from_slice(&header);
        buf.extend_from_slice(deflated);
        match r.next(&mut buf) {
            Ok(Some(Incoming::Binary(b))) => b.to_vec(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_level_round_trips_and_a_faster_level_sends_more_bytes() {
        let data = mixed(7, 60_000);
        let mut sizes = Vec::new();
        for level in [0, 1, 3, 9, 12] {
            let deflated = deflate_message(&mut compressor_at(level), &data);
            assert!(inflate_all(&deflated) == data, "level {level}");
            sizes.push(deflated.len());
        }
        // 0 and 12 are clamped to 1 and 9.
        assert_eq!(sizes[0], sizes[1]);
        assert_eq!(sizes[3], sizes[4]);
        assert!(sizes[1] >= sizes[2] && sizes[2] >= sizes[3], "{sizes:?}");
    }

    #[test]
    fn round_trips_at_every_compressibility() {
        let mut compressor = new_compressor();
        for seed in 0..1000u64 {
            let size = 20_000 + (seed as usize * 7919) % 120_000;
            let data = mixed(seed, size);
            let back = inflate_all(&deflate_message(&mut compressor, &data));
            assert!(
                back == data,
                "seed {seed} size {size}: got {} bytes",
                back.len()
            );
        }
        let random: Vec<u8> = (0..70_000).map(|_| rand::random::<u8>()).collect();
        assert!(inflate_all(&deflate_message(&mut compressor, &random)) == random);
        // Ratio far above 4: the inflater's output fills before its input is used up.
        let flat = vec![7u8; 2_000_000];
        assert!(inflate_all(&deflate_message(&mut compressor, &flat)) == flat);
    }
}
