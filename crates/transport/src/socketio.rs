//! Socket.IO v5 on top of an Engine.IO session: namespace connect/disconnect, events, acks and
//! binary attachments. The application (`engineio::App`) decides which namespaces exist and
//! whether binary packets are taken, and gets every event with its ack id and attachments. A
//! packet that is not valid Socket.IO closes the session, as the reference server does.

use std::rc::Rc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::engineio::{
    App, Eio, Held, SessionMsg, close_session, let_go, new_pid, send_binary, send_packets,
    shard_of_sid, take_held,
};
use crate::packets::{SioPacket, SioType, encode_sio, is_event_payload};

/// A Socket.IO event or acknowledgement received on a namespace, with its binary attachments
/// (the JSON keeps its `{"_placeholder":true,"num":n}` markers).
#[derive(Debug, Clone, PartialEq)]
pub struct SioEvent {
    pub nsp: String,
    /// The acknowledgement id the client asked for (of an event), or answers (of an ack).
    pub ack: Option<u64>,
    /// An EVENT or BINARY_EVENT (else an ACK or BINARY_ACK).
    pub is_event: bool,
    /// The JSON array: `["name", args...]` of an event, the arguments of an ack.
    pub data: serde_json::Value,
    pub attachments: Vec<Bytes>,
}

/// Most attachments one binary packet may announce.
const MAX_ATTACHMENTS: usize = 64;
/// Most bytes the attachments of one binary packet may hold together (the Engine.IO
/// `maxPayload` of one message): what arrives beyond it closes the session.
pub const MAX_ATTACHMENT_BYTES: usize = 1_000_000;

fn new_socket_id() -> String {
    crate::random::random_string(crate::random::BASE64URL, 20)
}

/// A BINARY_EVENT / BINARY_ACK whose attachments are still arriving.
#[derive(Debug, Clone)]
pub struct PartialBinary {
    kind: SioType,
    nsp: String,
    id: Option<u64>,
    data: Value,
    expected: usize,
    attachments: Vec<Bytes>,
    /// Bytes of `attachments` so far.
    bytes: usize,
}

fn protocol_error<A: App>(eio: &Rc<Eio<A>>, sid: &str, what: &str) {
    tracing::info!("socket.io: {what} from {sid}; closing");
    close_session(eio, sid, what);
}

/// Handles the Socket.IO packet inside an Engine.IO text message.
pub fn on_message<A: App>(eio: &Rc<Eio<A>>, sid: &str, text: &str) {
    let Some(packet) = SioPacket::parse(text) else {
        protocol_error(eio, sid, "invalid socket.io packet");
        return;
    };
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let kind = cell.borrow().kind;
    if cell.borrow().partial.is_some() {
        drop(cell);
        protocol_error(eio, sid, "packet before the announced attachments");
        return;
    }
    match packet.kind {
        SioType::Connect => {
            let allowed = eio.app.has_namespace(kind, packet.nsp);
            let auth = match packet.data {
                "" => Value::Object(Default::default()),
                data => match serde_json::from_str::<Value>(data) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        drop(cell);
                        protocol_error(eio, sid, "invalid CONNECT payload");
                        return;
                    }
                },
            };
            if !allowed {
                let err = encode_sio(
                    SioType::ConnectError,
                    packet.nsp,
                    None,
                    &json!({ "message": "Invalid namespace" }).to_string(),
                    0,
                );
                send_packets(eio, sid, vec![err]);
                return;
            }
            let already = {
                let s = cell.borrow();
                s.connecting.is_some()
                    || if packet.nsp == "/" {
                        s.sio_sid.is_some()
                    } else {
                        s.namespaces.iter().any(|n| n == packet.nsp)
                    }
            };
            drop(cell);
            if already {
                return;
            }
            if packet.nsp == "/" && eio.config.recovery_window.is_some() {
                let text = |key: &str| {
                    auth.get(key)
                        .and_then(Value::as_str)
                        .filter(|v| !v.is_empty() && v.len() <= MAX_RECOVERY_ID)
                        .map(String::from)
                };
                if let Some(pid) = text("pid") {
                    let offset = text("offset");
                    if let Some(held) = take_held(eio, &pid) {
                        finish_recovery(eio, sid, Some(held), offset);
                        return;
                    }
                    let home = shard_of_sid(&pid).filter(|h| *h != eio.id && *h < eio.shards);
                    if let (Some(home), Some(cell)) = (home, eio.get(sid)) {
                        cell.borrow_mut().connecting = Some(auth);
                        eio.app.send(
                            home,
                            SessionMsg::Reclaim {
                                pid,
                                offset,
                                to: eio.id,
                                sid: sid.to_string(),
                            },
                        );
                        return;
                    }
                }
            }
            connect_fresh(eio, sid, kind, packet.nsp, auth);
        }
        SioType::Disconnect => {
            let mut s = cell.borrow_mut();
            if packet.nsp != "/" {
                s.namespaces.retain(|n| n != packet.nsp);
            } else if s.sio_sid.take().is_some() {
                let sid = s.sid.clone();
                eio.app.on_disconnect(eio, &sid, &mut s.data);
            }
        }
        SioType::Event | SioType::BinaryEvent | SioType::Ack | SioType::BinaryAck => {
            let is_event = matches!(packet.kind, SioType::Event | SioType::BinaryEvent);
            let data = match serde_json::from_str::<Value>(packet.data) {
                Ok(v) if is_event && is_event_payload(&v) => v,
                Ok(v @ Value::Array(_)) if !is_event && packet.id.is_some() => v,
                _ => {
                    drop(cell);
                    protocol_error(eio, sid, "invalid socket.io payload");
                    return;
                }
            };
            // Sessions whose application takes no binary packets: refused before anything is
            // buffered. Others get a bounded number and size of attachments.
            if packet.attachments > 0 && !eio.app.accepts_binary(kind) {
                drop(cell);
                protocol_error(eio, sid, "binary packet on a port that takes none");
                return;
            }
            if packet.attachments > MAX_ATTACHMENTS {
                drop(cell);
                protocol_error(eio, sid, "too many binary attachments");
                return;
            }
            let partial = PartialBinary {
                kind: packet.kind,
                nsp: packet.nsp.to_string(),
                id: packet.id,
                data,
                expected: packet.attachments,
                attachments: Vec::new(),
                bytes: 0,
            };
            if partial.expected > 0 {
                cell.borrow_mut().partial = Some(partial);
            } else {
                drop(cell);
                dispatch(eio, sid, kind, partial);
            }
        }
        SioType::ConnectError => {
            drop(cell);
            protocol_error(eio, sid, "CONNECT_ERROR sent by a client");
        }
    }
}

/// Longest `pid` / `offset` a CONNECT may carry (ours are 20 characters).
const MAX_RECOVERY_ID: usize = 64;

/// Joins a namespace as a new socket: a new socket id (and, on the main namespace with recovery
/// on, a new private session id), the CONNECT ack, then the application's `on_connect`.
fn connect_fresh<A: App>(eio: &Rc<Eio<A>>, sid: &str, kind: A::Kind, nsp: &str, auth: Value) {
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let id = new_socket_id();
    let pid = (nsp == "/" && eio.config.recovery_window.is_some()).then(|| new_pid(eio.id));
    {
        let mut s = cell.borrow_mut();
        if nsp == "/" {
            s.sio_sid = Some(id.clone());
            s.pid = pid.clone();
        } else {
            s.namespaces.push(nsp.to_string());
        }
        s.ever_connected = true;
    }
    drop(cell);
    let data = match pid {
        Some(pid) => json!({ "sid": id, "pid": pid }),
        None => json!({ "sid": id }),
    };
    let ack = encode_sio(SioType::Connect, nsp, None, &data.to_string(), 0);
    send_packets(eio, sid, vec![ack]);
    eio.app.on_connect(eio, sid, kind, nsp, auth);
}

/// Finishes a CONNECT that asked for a recovery: with the held socket, the session takes its
/// socket id, private session id and data back and the client sees `recovered`; without it
/// (unknown, expired, or of another kind of session), it connects as a new socket.
pub(crate) fn finish_recovery<A: App>(
    eio: &Rc<Eio<A>>,
    sid: &str,
    held: Option<Held<A>>,
    offset: Option<String>,
) {
    let Some(cell) = eio.get(sid) else {
        // The new session ended while the answer travelled: the socket is let go.
        if let Some(held) = held {
            let_go(eio, held);
        }
        return;
    };
    let (kind, auth) = {
        let mut s = cell.borrow_mut();
        let auth = s.connecting.take();
        (
            s.kind,
            auth.unwrap_or_else(|| Value::Object(Default::default())),
        )
    };
    let held = match held {
        Some(h) if h.kind == kind => h,
        other => {
            drop(cell);
            if let Some(h) = other {
                let_go(eio, h);
            }
            connect_fresh(eio, sid, kind, "/", auth);
            return;
        }
    };
    {
        let mut s = cell.borrow_mut();
        s.sio_sid = Some(held.sio_sid.clone());
        s.pid = Some(held.pid.clone());
        s.data = held.data;
        s.ever_connected = true;
    }
    let ack = encode_sio(
        SioType::Connect,
        "/",
        None,
        &json!({ "sid": held.sio_sid, "pid": held.pid }).to_string(),
        0,
    );
    send_packets(eio, sid, vec![ack]);
    {
        let s = cell.borrow();
        eio.app.on_attach(sid, &s.data);
    }
    drop(cell);
    crate::stats::bump(|s| &s.recovered);
    tracing::debug!("socket.io: socket {} recovered on {sid}", held.sio_sid);
    eio.app.on_recover(eio, sid, kind, offset.as_deref());
}

/// Handles an Engine.IO binary message: the next attachment of the pending binary packet.
pub fn on_binary<A: App>(eio: &Rc<Eio<A>>, sid: &str, data: Bytes) {
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let (kind, complete) = {
        let mut s = cell.borrow_mut();
        let kind = s.kind;
        match s.partial.as_mut() {
            None => (kind, None),
            Some(p) => {
                p.bytes += data.len();
                if p.bytes > MAX_ATTACHMENT_BYTES {
                    s.partial = None;
                    drop(s);
                    drop(cell);
                    protocol_error(eio, sid, "binary attachments over 1 MB");
                    return;
                }
                p.attachments.push(data);
                if p.attachments.len() == p.expected {
                    (kind, s.partial.take())
                } else {
                    return;
                }
            }
        }
    };
    drop(cell);
    match complete {
        Some(partial) => dispatch(eio, sid, kind, partial),
        None => protocol_error(eio, sid, "unexpected binary message"),
    }
}

/// A complete event or ack goes to its application.
fn dispatch<A: App>(eio: &Rc<Eio<A>>, sid: &str, kind: A::Kind, packet: PartialBinary) {
    let joined = eio.get(sid).is_some_and(|cell| {
        let s = cell.borrow();
        if packet.nsp == "/" {
            s.sio_sid.is_some()
        } else {
            s.namespaces.contains(&packet.nsp)
        }
    });
    if !joined {
        return; // a namespace the socket is not in: ignored, as the reference server does
    }
    let is_event = matches!(packet.kind, SioType::Event | SioType::BinaryEvent);
    eio.app.on_event(
        eio,
        sid,
        kind,
        SioEvent {
            nsp: packet.nsp,
            ack: packet.id,
            is_event,
            data: packet.data,
            attachments: packet.attachments,
        },
    );
}

/// Sends a packet, then its attachments as binary messages.
fn send_with_attachments<A: App>(
    eio: &Rc<Eio<A>>,
    sid: &str,
    kind: SioType,
    nsp: &str,
    id: Option<u64>,
    data: &Value,
    attachments: &[Bytes],
) {
    let packet = encode_sio(kind, nsp, id, &data.to_string(), attachments.len());
    send_packets(eio, sid, vec![packet]);
    for a in attachments {
        send_binary(eio, sid, a);
    }
}

/// Emits an event (`data` = `["name", args...]`) on a namespace, with binary attachments.
pub fn emit_on<A: App>(
    eio: &Rc<Eio<A>>,
    sid: &str,
    nsp: &str,
    data: &Value,
    attachments: &[Bytes],
) {
    send_with_attachments(eio, sid, SioType::Event, nsp, None, data, attachments);
}

/// Answers an event's acknowledgement id with `args` (a JSON array) and binary attachments.
pub fn ack_on<A: App>(
    eio: &Rc<Eio<A>>,
    sid: &str,
    nsp: &str,
    id: u64,
    args: &Value,
    attachments: &[Bytes],
) {
    send_with_attachments(eio, sid, SioType::Ack, nsp, Some(id), args, attachments);
}

/// Server-side namespace disconnect (`41`): the client sees `io server disconnect` and does not
/// reconnect by itself. The Engine.IO session stays for the client to close.
pub fn disconnect<A: App>(eio: &Rc<Eio<A>>, sid: &str) {
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let was_connected = {
        let mut s = cell.borrow_mut();
        if s.sio_sid.take().is_some() {
            let sid = s.sid.clone();
            eio.app.on_disconnect(eio, &sid, &mut s.data);
            true
        } else {
            false
        }
    };
    if was_connected {
        send_packets(eio, sid, vec![Bytes::from_static(b"41")]);
    }
}

/// Emits an event with one JSON-string argument to a session of this shard.
pub fn emit<A: App>(eio: &Rc<Eio<A>>, sid: &str, event: &str, payload: &str) {
    send_packets(eio, sid, vec![crate::packets::event_packet(event, payload)]);
}
