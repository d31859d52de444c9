//! Socket.IO v5 on top of an Engine.IO session: namespace connect/disconnect and events for the
//! main namespace `/`. Other namespaces get CONNECT_ERROR; acknowledgements and binary packets
//! are not part of the Spectra protocol and are ignored (logged), never fatal.

use std::rc::Rc;

use bytes::Bytes;
use serde_json::json;

use super::engineio::{close_session, send_packets};
use super::packets::{SioPacket, SioType, event_name_and_arg};
use crate::shard::Shard;

fn new_socket_id() -> String {
    crate::random::random_string(crate::random::BASE64URL, 20)
}

/// Handles the Socket.IO packet inside an Engine.IO message.
pub fn on_message(shard: &Rc<Shard>, sid: &str, text: &str) {
    let Some(packet) = SioPacket::parse(text) else {
        eprintln!("socket.io: unparsable packet from {sid}; closing");
        close_session(shard, sid, "invalid socket.io packet");
        return;
    };
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    match packet.kind {
        SioType::Connect if packet.nsp == "/" => {
            let new_id = {
                let mut s = cell.borrow_mut();
                if s.sio_sid.is_some() {
                    None
                } else {
                    let id = new_socket_id();
                    s.sio_sid = Some(id.clone());
                    s.ever_connected = true;
                    Some(id)
                }
            };
            if let Some(id) = new_id {
                let ack = format!("40{}", json!({ "sid": id }));
                send_packets(shard, sid, vec![Bytes::from(ack)]);
            }
        }
        SioType::Connect => {
            let err = format!(
                "44{},{}",
                packet.nsp,
                json!({ "message": "Invalid namespace" })
            );
            send_packets(shard, sid, vec![Bytes::from(err)]);
        }
        SioType::Disconnect if packet.nsp == "/" => {
            let mut s = cell.borrow_mut();
            if s.sio_sid.take().is_some() {
                let sid = s.sid.clone();
                crate::app::on_disconnect(shard, &sid, &mut s.app);
            }
        }
        SioType::Event if packet.nsp == "/" => {
            if cell.borrow().sio_sid.is_none() {
                return;
            }
            drop(cell);
            match event_name_and_arg(packet.data) {
                Some((name, arg)) => crate::app::on_event(shard, sid, &name, arg.as_deref()),
                None => eprintln!("socket.io: malformed event data from {sid}; ignored"),
            }
        }
        SioType::Ack | SioType::BinaryEvent | SioType::BinaryAck => {
            eprintln!(
                "socket.io: {:?} packet from {sid} is not supported; ignored",
                packet.kind
            );
        }
        _ => {}
    }
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
