//! Spectra's application behind the Engine.IO/Socket.IO sessions (`transport::engineio::App`):
//! what a session is (`PortKind`: ingest, overlay, or single-port), what it carries (`AppState`),
//! and where its events go — ingest on 5100, broadcast on 5200; on a single port the first event
//! decides (`obs_logon`/`aux_logon` make an ingest client, `logon` an overlay). What the services
//! do with sessions comes in through the `Services` trait; this file names no service and no
//! shard. Handlers here must not borrow the session itself: the transport may hold it.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

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
    Ingest(IngestState),
    Broadcast(OverlayState),
    /// A single-port session before its first event says what it is.
    Undecided,
}

// ---- The data a session carries, by application. ----

/// A successful logon of this socket (the original's "authenticated clients" record).
#[derive(Debug, Clone)]
pub struct AuthRecord {
    pub name: String,
    pub group_code: String,
    pub is_aux: bool,
    pub player_id: String,
    /// This client's id in the spectator room (`current_players[].id`).
    pub client_id: String,
}

/// Per-socket ingest state.
#[derive(Debug, Clone, Default)]
pub struct IngestState {
    pub obs_logon_used: bool,
    pub aux_logon_used: bool,
    pub auth: Option<AuthRecord>,
    /// The successful logon's answer (Socket.IO packet), sent again when a recovered socket
    /// logs on again.
    pub logon_ack: Option<bytes::Bytes>,
    /// Recovered by connection state recovery and not logged on again since.
    pub recovered: bool,
}

/// The socket was recovered: it keeps its logon; its next logon is answered with the same ack.
impl IngestState {
    pub fn on_recover(&mut self) {
        self.recovered = true;
    }
}

/// Per-overlay state.
#[derive(Debug, Clone, Default)]
pub struct OverlayState {
    pub logon_used: bool,
    /// Its room; a recovered socket's next logon is answered with the same `logon_success`.
    pub room: Option<String>,
    /// Recovered by connection state recovery: its next `logon` is answered again.
    pub recovered: bool,
}

/// What the application asks of a session wherever it lives.
#[derive(Debug)]
pub enum SpectraAction {
    /// The outcome of a logon: send the ack, record the authentication, maybe disconnect.
    LogonResult {
        ack: Bytes,
        auth: Option<AuthRecord>,
        disconnect: bool,
        /// A wrong access key or group secret, with the access key it came with
        /// (`limits::key_id`): counts against the address's logon attempts with that key.
        credential_failure: Option<u64>,
    },
}

/// What Spectra's services do for its sessions. The node installs it (`node::sessions`); the
/// session layer pushes into it and never names a service.
pub trait Services {
    /// Carries a session message to the sessions of another shard.
    fn send(&self, shard: usize, msg: SessionMsg<SpectraApp>);
    /// An event of an ingest client (`ingest`) or else of an overlay, on its main namespace.
    fn on_event(&self, sid: &str, ingest: bool, name: &str, arg: Option<&str>);
    /// The socket left (a namespace disconnect, its session ended, or its recovery window
    /// closed); its data is reset afterwards.
    fn on_disconnect(&self, sid: &str, data: &AppState);
    /// An overlay session subscribed to `room` leaves this shard (`here` false) or arrives on
    /// it: its subscription follows it.
    fn on_overlay_moved(&self, sid: &str, room: &str, here: bool);
    /// An overlay wants the newest state of its room, to itself only.
    fn request_snapshot(&self, sid: &str, room: String);
}

/// The application of one shard's sessions.
pub struct SpectraApp {
    services: Box<dyn Services>,
    limits: Arc<crate::limits::Limits>,
}

/// The session layer of Spectra's shards.
pub type Sessions = Eio<SpectraApp>;
pub type SessionAction = engineio::SessionAction<SpectraApp>;
/// A session as the fan-out holds it (no lookup by id per delivery).
pub type SessionLink = engineio::SessionLink<SpectraApp>;

impl SpectraApp {
    pub fn new(services: Box<dyn Services>, limits: Arc<crate::limits::Limits>) -> Self {
        SpectraApp { services, limits }
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
        self.services.send(shard, msg);
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

    fn on_event(&self, eio: &Rc<Sessions>, sid: &str, _kind: PortKind, event: SioEvent) {
        if !event.is_event || !event.attachments.is_empty() {
            tracing::debug!("socket.io: acks and binary events are not part of Spectra; ignored");
            return;
        }
        let Some((name, arg)) = event_from_value(event.data) else {
            return;
        };
        // A single-port session is decided by its first logon.
        let ingest = eio.with_data(sid, |data, _| {
            if matches!(data, AppState::Undecided) {
                match name.as_str() {
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
        if let Some(ingest) = ingest.flatten() {
            self.services.on_event(sid, ingest, &name, arg.as_deref());
        }
    }

    fn on_disconnect(&self, _eio: &Rc<Sessions>, sid: &str, data: &mut AppState) {
        self.services.on_disconnect(sid, data);
        // The state is reset: a new namespace connection starts as a new socket.
        match data {
            AppState::Ingest(state) => *state = Default::default(),
            AppState::Broadcast(state) => *state = Default::default(),
            AppState::Undecided => {}
        }
    }

    fn on_detach(&self, sid: &str, data: &AppState) {
        if let AppState::Broadcast(OverlayState {
            room: Some(room), ..
        }) = data
        {
            self.services.on_overlay_moved(sid, room, false);
        }
    }

    fn on_attach(&self, sid: &str, data: &AppState) {
        if let AppState::Broadcast(OverlayState {
            room: Some(room), ..
        }) = data
        {
            self.services.on_overlay_moved(sid, room, true);
        }
    }

    fn on_recover(&self, eio: &Rc<Sessions>, sid: &str, _kind: PortKind, offset: Option<&str>) {
        // The socket keeps its logon and its room; the match never saw it leave.
        let room = eio.with_data(sid, |data, _| match data {
            AppState::Ingest(state) => {
                state.on_recover();
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
            self.services.request_snapshot(sid, code);
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
