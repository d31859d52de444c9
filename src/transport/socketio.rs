//! Socket.IO v5 on top of an Engine.IO session: namespace connect/disconnect, events, acks and
//! binary attachments. Spectra's own ports (ingest, broadcast) serve the main namespace `/` only
//! and hand events to `app`; a `Service` session (see `service.rs`) decides its namespaces and
//! gets events with their ack ids and attachments. A packet that is not valid Socket.IO closes
//! the session, as the reference server does.

use std::rc::Rc;

use bytes::Bytes;
use serde_json::{Value, json};

use super::engineio::{PortKind, close_session, send_binary, send_packets};
use super::packets::{SioPacket, SioType, encode_sio, event_from_value, is_event_payload};
use super::service::SioEvent;
use crate::shard::Shard;

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

fn protocol_error(shard: &Rc<Shard>, sid: &str, what: &str) {
    tracing::info!("socket.io: {what} from {sid}; closing");
    close_session(shard, sid, what);
}

/// Handles the Socket.IO packet inside an Engine.IO text message.
pub fn on_message(shard: &Rc<Shard>, sid: &str, text: &str) {
    let Some(packet) = SioPacket::parse(text) else {
        protocol_error(shard, sid, "invalid socket.io packet");
        return;
    };
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let kind = cell.borrow().kind;
    if cell.borrow().partial.is_some() {
        drop(cell);
        protocol_error(shard, sid, "packet before the announced attachments");
        return;
    }
    match packet.kind {
        SioType::Connect => {
            let allowed = match kind {
                PortKind::Service { .. } => {
                    shard.service().is_some_and(|s| s.has_namespace(packet.nsp))
                }
                _ => packet.nsp == "/",
            };
            let auth = match packet.data {
                "" => Value::Object(Default::default()),
                data => match serde_json::from_str::<Value>(data) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        drop(cell);
                        protocol_error(shard, sid, "invalid CONNECT payload");
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
                send_packets(shard, sid, vec![err]);
                return;
            }
            let joined = {
                let mut s = cell.borrow_mut();
                let already = if packet.nsp == "/" {
                    s.sio_sid.is_some()
                } else {
                    s.namespaces.iter().any(|n| n == packet.nsp)
                };
                if already {
                    None
                } else {
                    let id = new_socket_id();
                    if packet.nsp == "/" {
                        s.sio_sid = Some(id.clone());
                    } else {
                        s.namespaces.push(packet.nsp.to_string());
                    }
                    s.ever_connected = true;
                    Some(id)
                }
            };
            drop(cell);
            if let Some(id) = joined {
                let ack = encode_sio(
                    SioType::Connect,
                    packet.nsp,
                    None,
                    &json!({ "sid": id }).to_string(),
                    0,
                );
                send_packets(shard, sid, vec![ack]);
                if let PortKind::Service { .. } = kind
                    && let Some(service) = shard.service()
                {
                    service.on_connect(shard, sid, packet.nsp, auth);
                }
            }
        }
        SioType::Disconnect => {
            let mut s = cell.borrow_mut();
            if packet.nsp != "/" {
                s.namespaces.retain(|n| n != packet.nsp);
            } else if s.sio_sid.take().is_some() {
                let sid = s.sid.clone();
                crate::app::on_disconnect(shard, &sid, &mut s.app);
            }
        }
        SioType::Event | SioType::BinaryEvent | SioType::Ack | SioType::BinaryAck => {
            let is_event = matches!(packet.kind, SioType::Event | SioType::BinaryEvent);
            let data = match serde_json::from_str::<Value>(packet.data) {
                Ok(v) if is_event && is_event_payload(&v) => v,
                Ok(v @ Value::Array(_)) if !is_event && packet.id.is_some() => v,
                _ => {
                    drop(cell);
                    protocol_error(shard, sid, "invalid socket.io payload");
                    return;
                }
            };
            // Spectra's own ports never use binary packets: refused before anything is
            // buffered. Other services get a bounded number and size of attachments.
            if packet.attachments > 0 && !matches!(kind, PortKind::Service { .. }) {
                drop(cell);
                protocol_error(shard, sid, "binary packet on a port that takes none");
                return;
            }
            if packet.attachments > MAX_ATTACHMENTS {
                drop(cell);
                protocol_error(shard, sid, "too many binary attachments");
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
                dispatch(shard, sid, kind, partial);
            }
        }
        SioType::ConnectError => {
            drop(cell);
            protocol_error(shard, sid, "CONNECT_ERROR sent by a client");
        }
    }
}

/// Handles an Engine.IO binary message: the next attachment of the pending binary packet.
pub fn on_binary(shard: &Rc<Shard>, sid: &str, data: Bytes) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
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
                    protocol_error(shard, sid, "binary attachments over 1 MB");
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
        Some(partial) => dispatch(shard, sid, kind, partial),
        None => protocol_error(shard, sid, "unexpected binary message"),
    }
}

/// A complete event or ack goes to its application.
fn dispatch(shard: &Rc<Shard>, sid: &str, kind: PortKind, packet: PartialBinary) {
    let joined = shard.sessions.borrow().get(sid).is_some_and(|cell| {
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
    match kind {
        PortKind::Service { .. } => {
            if let (true, Some(service)) = (is_event, shard.service()) {
                service.on_event(
                    shard,
                    sid,
                    SioEvent {
                        nsp: packet.nsp,
                        ack: packet.id,
                        data: packet.data,
                        attachments: packet.attachments,
                    },
                );
            }
        }
        PortKind::Ingest | PortKind::Broadcast | PortKind::Spectra => {
            if !is_event || !packet.attachments.is_empty() {
                tracing::debug!(
                    "socket.io: acks and binary events are not part of Spectra; ignored"
                );
                return;
            }
            if let Some((name, arg)) = event_from_value(packet.data) {
                crate::app::on_event(shard, sid, &name, arg.as_deref());
            }
        }
    }
}

/// Sends a packet, then its attachments as binary messages.
fn send_with_attachments(
    shard: &Rc<Shard>,
    sid: &str,
    kind: SioType,
    nsp: &str,
    id: Option<u64>,
    data: &Value,
    attachments: &[Bytes],
) {
    let packet = encode_sio(kind, nsp, id, &data.to_string(), attachments.len());
    send_packets(shard, sid, vec![packet]);
    for a in attachments {
        send_binary(shard, sid, a);
    }
}

/// Emits an event (`data` = `["name", args...]`) on a namespace, with binary attachments.
pub fn emit_on(shard: &Rc<Shard>, sid: &str, nsp: &str, data: &Value, attachments: &[Bytes]) {
    send_with_attachments(shard, sid, SioType::Event, nsp, None, data, attachments);
}

/// Answers an event's acknowledgement id with `args` (a JSON array) and binary attachments.
pub fn ack_on(
    shard: &Rc<Shard>,
    sid: &str,
    nsp: &str,
    id: u64,
    args: &Value,
    attachments: &[Bytes],
) {
    send_with_attachments(shard, sid, SioType::Ack, nsp, Some(id), args, attachments);
}

/// Server-side namespace disconnect (`41`): the client sees `io server disconnect` and does not
/// reconnect by itself. The Engine.IO session stays for the client to close.
pub fn disconnect(shard: &Rc<Shard>, sid: &str) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let was_connected = {
        let mut s = cell.borrow_mut();
        if s.sio_sid.take().is_some() {
            let sid = s.sid.clone();
            crate::app::on_disconnect(shard, &sid, &mut s.app);
            true
        } else {
            false
        }
    };
    if was_connected {
        send_packets(shard, sid, vec![Bytes::from_static(b"41")]);
    }
}

/// Emits an event with one JSON-string argument to a session of this shard.
pub fn emit(shard: &Rc<Shard>, sid: &str, event: &str, payload: &str) {
    send_packets(
        shard,
        sid,
        vec![super::packets::event_packet(event, payload)],
    );
}
