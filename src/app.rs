//! Spectra's application behind the Engine.IO/Socket.IO sessions (`transport::engineio::App`):
//! what a session is (`PortKind`: ingest, overlay, or single-port), what it carries (`AppState`),
//! and where its events go — ingest on 5100, broadcast on 5200; on a single port the first event
//! decides (`obs_logon`/`aux_logon` make an ingest client, `logon` an overlay). Cross-shard session messages travel in `ShardMsg::Session`. Handlers here must
//! not borrow the session itself: the transport may hold it.

use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::shard::messages::ShardMsg;
use crate::shard::{Mesh, Shard};
use crate::transport::engineio::{self, App, Eio, EngineMessage, SessionMsg};
use crate::transport::packets::event_from_value;
use crate::transport::socketio::{self, SioEvent};

/// Which application a session belongs to (decided by the route it connected to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Ingest,
    Broadcast,
    /// Single-port mode: ingest or overlay, decided by the session's first event.
    Spectra,
}

/// Application state carried by a session (moves with it between shards).
#[derive(Debug, Clone)]
pub enum AppState {
    Ingest(crate::ingest::IngestState),
    Broadcast(crate::broadcast::OverlayState),
    /// A single-port session before its first event says what it is.
    Undecided,
}

/// What the application asks of a session wherever it lives.
#[derive(Debug)]
pub enum SpectraAction {
    /// The outcome of a logon: send the ack, record the authentication, maybe disconnect.
    LogonResult {
        ack: Bytes,
        auth: Option<crate::ingest::AuthRecord>,
        disconnect: bool,
        /// A wrong access key or group secret, with the access key it came with
        /// (`limits::key_id`): counts against the address's logon attempts with that key.
        credential_failure: Option<u64>,
    },
}

/// The application of one shard's sessions.
pub struct SpectraApp {
    shard: Weak<Shard>,
    mesh: Arc<Mesh>,
    limits: Arc<crate::limits::Limits>,
}

/// The session layer of Spectra's shards.
pub type Sessions = Eio<SpectraApp>;
pub type SessionAction = engineio::SessionAction<SpectraApp>;

impl SpectraApp {
    pub fn new(shard: Weak<Shard>, mesh: Arc<Mesh>, limits: Arc<crate::limits::Limits>) -> Self {
        SpectraApp {
            shard,
            mesh,
            limits,
        }
    }
}

impl App for SpectraApp {
    type Kind = PortKind;
    type Data = AppState;
    type Action = SpectraAction;
    type PollingSlot = crate::limits::PollingSlot;

    fn socketio(&self, _kind: PortKind) -> bool {
        true
    }

    fn new_data(&self, kind: PortKind) -> AppState {
        match kind {
            PortKind::Ingest => AppState::Ingest(Default::default()),
            PortKind::Broadcast => AppState::Broadcast(Default::default()),
            PortKind::Spectra => AppState::Undecided,
        }
    }

    fn polling_slot(&self, peer: Option<IpAddr>) -> Result<crate::limits::PollingSlot, String> {
        self.limits.polling_slot(peer).map_err(|refusal| {
            crate::metrics::bump(|s| &s.connections_refused);
            match refusal {
                crate::limits::Refusal::Total => "Too many polling sessions; connect with the websocket transport or try again later",
                crate::limits::Refusal::PerAddress => "Too many polling sessions from your address; connect with the websocket transport or try again later",
            }
            .to_string()
        })
    }

    fn send(&self, shard: usize, msg: SessionMsg<Self>) {
        self.mesh.send(shard, ShardMsg::Session(msg));
    }

    fn has_namespace(&self, _kind: PortKind, nsp: &str) -> bool {
        nsp == "/"
    }

    fn accepts_binary(&self, _kind: PortKind) -> bool {
        false // Spectra's clients never send binary packets: refused before anything is buffered
    }

    fn on_engine_message(&self, _eio: &Rc<Sessions>, _sid: &str, _message: EngineMessage) {
        // (every Spectra session speaks Socket.IO)
    }

    fn on_connect(
        &self,
        _eio: &Rc<Sessions>,
        _sid: &str,
        _kind: PortKind,
        _nsp: &str,
        _auth: Value,
    ) {
    }

    fn on_event(&self, _eio: &Rc<Sessions>, sid: &str, _kind: PortKind, event: SioEvent) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        if !event.is_event || !event.attachments.is_empty() {
            tracing::debug!("socket.io: acks and binary events are not part of Spectra; ignored");
            return;
        }
        if let Some((name, arg)) = event_from_value(event.data) {
            on_named_event(&shard, sid, &name, arg.as_deref());
        }
    }

    fn on_disconnect(&self, _eio: &Rc<Sessions>, sid: &str, data: &mut AppState) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        // The state is reset: a new namespace connection starts as a new socket.
        match data {
            AppState::Ingest(state) => {
                crate::ingest::on_disconnect(&shard, state);
                *state = Default::default();
            }
            AppState::Broadcast(state) => {
                crate::broadcast::leave(&shard, sid, state);
                *state = Default::default();
            }
            AppState::Undecided => {}
        }
    }

    fn on_detach(&self, sid: &str, data: &AppState) {
        if let (AppState::Broadcast(state), Some(shard)) = (data, self.shard.upgrade())
            && let Some(room) = &state.room
        {
            shard.subscribers.borrow_mut().remove_overlay(room, sid);
        }
    }

    fn on_attach(&self, sid: &str, data: &AppState) {
        if let (AppState::Broadcast(state), Some(shard)) = (data, self.shard.upgrade())
            && let Some(room) = &state.room
        {
            shard.subscribers.borrow_mut().add_overlay(room, sid);
        }
    }

    fn on_recover(&self, _eio: &Rc<Sessions>, sid: &str, _kind: PortKind, offset: Option<&str>) {
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        // The socket keeps its logon and its room; the match never saw it leave.
        let room = shard.eio.with_data(sid, |data, _| match data {
            AppState::Ingest(state) => {
                crate::ingest::on_recover(state);
                None
            }
            AppState::Broadcast(state) => {
                state.recovered = true;
                state.room.clone()
            }
            AppState::Undecided => None,
        });
        tracing::debug!("socket.io: session {sid} recovered (offset {offset:?})");
        if let Some(code) = room.flatten() {
            // States are complete: the newest one replaces every one it missed.
            crate::broadcast::request_snapshot(&shard, sid, code);
        }
    }

    fn on_action(&self, eio: &Rc<Sessions>, sid: &str, action: SpectraAction) {
        match action {
            SpectraAction::LogonResult {
                ack,
                auth,
                disconnect,
                credential_failure,
            } => {
                let peer = eio.with_data(sid, |data, peer| {
                    if let (Some(auth), AppState::Ingest(state)) = (auth, data) {
                        state.auth = Some(auth);
                        // A recovered socket that logs on again gets this answer again.
                        state.logon_ack = Some(ack.clone());
                    }
                    peer
                });
                if let Some(key) = credential_failure {
                    self.limits.logon_failed(peer.flatten(), key);
                }
                engineio::send_packets(eio, sid, vec![ack]);
                if disconnect {
                    socketio::disconnect(eio, sid);
                }
            }
        }
    }
}

/// A Socket.IO event on the main namespace of a Spectra session.
fn on_named_event(shard: &Rc<Shard>, sid: &str, name: &str, arg: Option<&str>) {
    let ingest = shard.eio.with_data(sid, |data, _| {
        if matches!(data, AppState::Undecided) {
            match name {
                "obs_logon" | "aux_logon" => *data = AppState::Ingest(Default::default()),
                "logon" => *data = AppState::Broadcast(Default::default()),
                _ => return None, // nothing else means anything before a logon
            }
        }
        match data {
            AppState::Ingest(_) => Some(true),
            AppState::Broadcast(_) => Some(false),
            AppState::Undecided => None,
        }
    });
    match ingest.flatten() {
        Some(true) => crate::ingest::on_event(shard, sid, name, arg),
        Some(false) => crate::broadcast::on_event(shard, sid, name, arg),
        None => {}
    }
}
