//! Engine.IO v4 sessions on one shard: the handshake, both transports (HTTP long-polling and
//! WebSocket), the polling → WebSocket upgrade, heartbeats and close. The Socket.IO layer on top
//! lives in `socketio.rs`; applications (ingest, broadcast) only see Socket.IO events.
//!
//! A session lives on one shard. Its id starts with that shard's number, so a polling request that
//! lands on another shard (SO_REUSEPORT spreads connections) is forwarded through the mesh. When a
//! session upgrades to a WebSocket that landed elsewhere, the session moves to the WebSocket's
//! shard; the old shard remembers where it went for a while and forwards actions there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::io::{AsyncRead, AsyncWrite};
use serde_json::json;

use super::http::{Reader, Request, Response, write_response};
use super::outbound::{FrameKind, OutQueue, run_writer};
use super::packets::{EioPacket, SEPARATOR, binary_payload_packet, decode_binary_payload};
use super::polling::PollBuffer;
use super::socketio;
use super::websocket::{self, Incoming, MessageReader, close_code};
use crate::shard::Shard;
use crate::shard::messages::{SessionAction, SessionMsg, ShardMsg};
use crate::transport::outbound::FrameSet;

/// Which application a session belongs to (decided by the route it connected to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Ingest,
    Broadcast,
    /// Single-port mode: ingest or overlay, decided by the session's first event.
    Spectra,
    /// A `Port::Service` session: plain Engine.IO (`/engine.io/`) or Socket.IO (`/socket.io/`).
    Service {
        socketio: bool,
    },
}

impl PortKind {
    /// Sessions of this kind speak Socket.IO (and so must join a namespace in time).
    pub fn socketio(self) -> bool {
        !matches!(self, PortKind::Service { socketio: false })
    }
}

/// Application state carried by a session (moves with it between shards).
#[derive(Debug, Clone)]
pub enum AppState {
    Ingest(crate::ingest::IngestState),
    Broadcast(crate::broadcast::OverlayState),
    /// A single-port session before its first event says what it is.
    Undecided,
    /// State lives in the `Service` itself.
    Service,
}

impl AppState {
    fn new(kind: PortKind) -> AppState {
        match kind {
            PortKind::Ingest => AppState::Ingest(Default::default()),
            PortKind::Broadcast => AppState::Broadcast(Default::default()),
            PortKind::Spectra => AppState::Undecided,
            PortKind::Service { .. } => AppState::Service,
        }
    }
}

enum Transport {
    Polling {
        buffer: PollBuffer,
        waiting: Option<oneshot::Sender<Response>>,
        /// A GET or POST came for this session after its handshake.
        polled: bool,
        /// Counts against `MAX_POLLING_SESSIONS` until the session upgrades or ends.
        _slot: crate::limits::PollingSlot,
    },
    WebSocket {
        queue: Rc<OutQueue>,
        deflate: bool,
    },
}

pub struct Session {
    pub sid: String,
    pub kind: PortKind,
    /// Socket.IO id while connected to the main namespace.
    pub sio_sid: Option<String>,
    /// Other namespaces the socket joined (services only; Spectra serves `/` alone).
    pub namespaces: Vec<String>,
    /// A binary event or ack waiting for its attachments.
    pub(crate) partial: Option<super::socketio::PartialBinary>,
    pub app: AppState,
    transport: Transport,
    /// The client's address (from the connection that opened the session).
    pub peer: Option<std::net::IpAddr>,
    /// Joined a namespace at least once (the connect timeout no longer applies).
    pub(crate) ever_connected: bool,
    /// A WebSocket probe arrived: polls are answered at once (noop) so the client can pause.
    upgrading: bool,
    pong_pending: bool,
    /// The heartbeat task waiting for this session's pong.
    pong_waker: Option<std::task::Waker>,
}

/// What moves when a session changes shard.
#[derive(Debug)]
pub struct SessionState {
    pub sid: String,
    pub peer: Option<std::net::IpAddr>,
    pub kind: PortKind,
    pub sio_sid: Option<String>,
    pub namespaces: Vec<String>,
    pub app: AppState,
    pub buffered: Vec<Bytes>,
}

/// The sessions of one shard.
#[derive(Default)]
pub struct Sessions {
    map: HashMap<String, Rc<RefCell<Session>>>,
    /// Sessions that moved to another shard, with when they moved.
    moved: HashMap<String, (usize, Instant)>,
    /// Sessions on their way here (upgrade in progress) and the actions that arrived for them
    /// before they did.
    incoming: HashMap<String, Vec<SessionAction>>,
    /// Polling sessions closed by a shutdown while no poll was waiting: their next poll gets
    /// CLOSE instead of "Session ID unknown".
    farewell: std::collections::HashSet<String>,
}

impl Sessions {
    pub fn get(&self, sid: &str) -> Option<Rc<RefCell<Session>>> {
        self.map.get(sid).cloned()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Session ids whose application state matches `pred`.
    pub fn select(&self, mut pred: impl FnMut(&Session) -> bool) -> Vec<String> {
        self.map
            .values()
            .filter(|s| pred(&s.borrow()))
            .map(|s| s.borrow().sid.clone())
            .collect()
    }
}

const MOVED_MEMORY: Duration = Duration::from_secs(120);

fn new_sid(shard: usize) -> String {
    format!(
        "{:02x}{}",
        shard % 256,
        crate::random::random_string(crate::random::BASE64URL, 18)
    )
}

/// The shard a session id was created on.
pub fn shard_of_sid(sid: &str) -> Option<usize> {
    sid.get(0..2)
        .and_then(|h| usize::from_str_radix(h, 16).ok())
}

fn error_response(code: u8, message: &str) -> Response {
    Response::json(400, json!({ "code": code, "message": message }).to_string())
        .with_header("Access-Control-Allow-Origin", "*")
}

fn payload_response(body: Bytes) -> Response {
    Response::new(200, "text/plain; charset=UTF-8", body)
        .with_header("Access-Control-Allow-Origin", "*")
        .with_header("cache-control", "no-store")
}

fn ok_response() -> Response {
    Response::new(200, "text/html", Bytes::from_static(b"ok"))
        .with_header("Access-Control-Allow-Origin", "*")
        .with_header("cache-control", "no-store")
}

fn open_packet(sid: &str, upgrades: bool, shard: &Shard) -> Bytes {
    let c = &shard.config;
    let open = json!({
        "sid": sid,
        "upgrades": if upgrades { vec!["websocket"] } else { vec![] },
        "pingInterval": c.ping_interval.as_millis() as u64,
        "pingTimeout": c.ping_timeout.as_millis() as u64,
        "maxPayload": c.max_payload,
    });
    Bytes::from(format!("0{open}"))
}

/// Validates the Engine.IO query of a `/socket.io/` request: `Ok(Some(sid))`, `Ok(None)` for a
/// handshake, or the error response.
fn check_query(req: &Request) -> Result<(bool, Option<String>), Response> {
    if req.query_param("EIO").as_deref() != Some("4") {
        return Err(error_response(5, "Unsupported protocol version"));
    }
    let websocket = match req.query_param("transport").as_deref() {
        Some("polling") => false,
        Some("websocket") => true,
        _ => return Err(error_response(0, "Transport unknown")),
    };
    Ok((websocket, req.query_param("sid")))
}

/// Handles one `/socket.io/` request. Returns `None` when the connection was taken over by a
/// WebSocket (and is finished when this returns).
pub async fn handle_request<R, W>(
    shard: &Rc<Shard>,
    kind: PortKind,
    req: Request,
    reader: &mut Reader<R>,
    writer: &mut Option<W>,
) -> Option<Response>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let (is_ws, sid) = match check_query(&req) {
        Ok(v) => v,
        Err(resp) => return Some(resp),
    };
    if is_ws {
        if !req.is_websocket_upgrade() {
            return Some(error_response(3, "Bad request"));
        }
        let Some(w) = writer.take() else {
            return Some(error_response(3, "Bad request"));
        };
        run_websocket(shard, kind, &req, reader, w, sid).await;
        return None;
    }
    Some(match (req.method.as_str(), sid) {
        ("GET", None) => handshake_polling(shard, kind, req.peer),
        (_, None) => error_response(2, "Bad handshake method"),
        (method @ ("GET" | "POST"), Some(sid)) => {
            let post = (method == "POST").then(|| req.body.clone());
            forward_poll(shard, sid, post).await
        }
        _ => error_response(2, "Bad handshake method"),
    })
}

fn handshake_polling(
    shard: &Rc<Shard>,
    kind: PortKind,
    peer: Option<std::net::IpAddr>,
) -> Response {
    let slot = match shard.global.limits.polling_slot(peer) {
        Ok(slot) => slot,
        Err(refusal) => {
            let message = match refusal {
                crate::limits::Refusal::Total => {
                    "Too many polling sessions; connect with the websocket transport or try again later"
                }
                crate::limits::Refusal::PerAddress => {
                    "Too many polling sessions from your address; connect with the websocket transport or try again later"
                }
            };
            crate::metrics::bump(|s| &s.connections_refused);
            return Response::json(503, json!({"code": 3, "message": message}).to_string())
                .with_header("Access-Control-Allow-Origin", "*");
        }
    };
    let sid = new_sid(shard.id);
    let open = open_packet(&sid, true, shard);
    glommio::spawn_local(unused_handshake(shard.clone(), sid.clone())).detach();
    insert_session(
        shard,
        Session {
            sid,
            kind,
            sio_sid: None,
            namespaces: Vec::new(),
            partial: None,
            app: AppState::new(kind),
            transport: Transport::Polling {
                buffer: PollBuffer::default(),
                waiting: None,
                polled: false,
                _slot: slot,
            },
            peer,
            ever_connected: false,
            upgrading: false,
            pong_pending: false,
            pong_waker: None,
        },
    );
    payload_response(open)
}

/// A polling session nobody polls within this long after its handshake is closed: real clients
/// poll at once, and an unused handshake must not hold a polling slot for the connect timeout.
const UNUSED_HANDSHAKE: Duration = Duration::from_secs(10);

async fn unused_handshake(shard: Rc<Shard>, sid: String) {
    glommio::timer::sleep(UNUSED_HANDSHAKE).await;
    let unused = shard.sessions.borrow().get(&sid).is_some_and(|cell| {
        matches!(
            cell.borrow().transport,
            Transport::Polling { polled: false, .. }
        )
    });
    if unused {
        close_session(&shard, &sid, "handshake not used");
    }
}

fn insert_session(shard: &Rc<Shard>, session: Session) {
    let sid = session.sid.clone();
    let cell = Rc::new(RefCell::new(session));
    let weak = Rc::downgrade(&cell);
    let (connected, socketio) = {
        let s = cell.borrow();
        (s.sio_sid.is_some() || s.ever_connected, s.kind.socketio())
    };
    shard.sessions.borrow_mut().map.insert(sid.clone(), cell);
    crate::metrics::gauge(|s| &s.sessions, 1);
    if socketio && !connected {
        glommio::spawn_local(connect_deadline(shard.clone(), sid.clone(), weak.clone())).detach();
    }
    glommio::spawn_local(keepalive(shard.clone(), sid, weak)).detach();
}

async fn forward_poll(shard: &Rc<Shard>, sid: String, post: Option<Bytes>) -> Response {
    let Some(home) = shard_of_sid(&sid).filter(|h| *h < shard.shards()) else {
        return error_response(1, "Session ID unknown");
    };
    let (tx, rx) = oneshot::channel();
    if home == shard.id {
        poll_local(shard, &sid, post, tx);
    } else {
        shard.mesh.send(
            home,
            ShardMsg::Session(SessionMsg::Poll {
                sid,
                post,
                reply: tx,
            }),
        );
    }
    rx.await
        .unwrap_or_else(|_| error_response(1, "Session ID unknown"))
}

/// A message from another shard for the sessions of this one.
pub fn on_shard_msg(shard: &Rc<Shard>, msg: SessionMsg) {
    match msg {
        SessionMsg::Poll { sid, post, reply } => poll_local(shard, &sid, post, reply),
        SessionMsg::Probe { sid } => probe_local(shard, &sid),
        SessionMsg::Migrate { sid, to, reply } => {
            let _ = reply.send(detach_local(shard, &sid, to));
        }
        SessionMsg::Deliver { sid, action } => deliver_local(shard, &sid, action),
    }
}

/// Serves a polling GET or POST for a session of this shard.
pub fn poll_local(
    shard: &Rc<Shard>,
    sid: &str,
    post: Option<Bytes>,
    reply: oneshot::Sender<Response>,
) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        let farewell = post.is_none() && shard.sessions.borrow_mut().farewell.remove(sid);
        let _ = reply.send(if farewell {
            payload_response(Bytes::from_static(b"1"))
        } else {
            error_response(1, "Session ID unknown")
        });
        return;
    };
    if let Transport::Polling { polled, .. } = &mut cell.borrow_mut().transport {
        *polled = true;
    }
    if let Some(body) = post {
        if !matches!(cell.borrow().transport, Transport::Polling { .. }) {
            let _ = reply.send(error_response(3, "Bad request"));
            return;
        }
        for packet in body.split(|b| *b == SEPARATOR) {
            let valid = match std::str::from_utf8(packet) {
                Ok(text) => match text.strip_prefix('b') {
                    Some(b64) => match decode_binary_payload(b64) {
                        Some(data) => {
                            on_binary(shard, sid, data);
                            true
                        }
                        None => false,
                    },
                    None => on_packet(shard, sid, text),
                },
                Err(_) => false,
            };
            if !valid {
                close_session(shard, sid, "invalid packet in payload");
                let _ = reply.send(error_response(3, "Bad request"));
                return;
            }
        }
        let _ = reply.send(ok_response());
        return;
    }
    let overlap = {
        let mut s = cell.borrow_mut();
        let upgrading = s.upgrading;
        match &mut s.transport {
            Transport::WebSocket { .. } => {
                let _ = reply.send(error_response(3, "Bad request"));
                return;
            }
            Transport::Polling {
                buffer, waiting, ..
            } => {
                if waiting.is_some() {
                    true
                } else if !buffer.is_empty() {
                    let _ = reply.send(payload_response(buffer.take_payload()));
                    return;
                } else {
                    *waiting = Some(reply);
                    if upgrading {
                        // A poll during an upgrade is held briefly and then ends with a noop;
                        // if the upgrade completes first, it is refused (see `detach_local`).
                        let weak = Rc::downgrade(&cell);
                        glommio::spawn_local(release_upgrading_poll(weak)).detach();
                    }
                    return;
                }
            }
        }
    };
    if overlap {
        close_session(shard, sid, "overlapping polling requests");
        let _ = reply.send(error_response(3, "Bad request"));
    }
}

/// How long a poll that arrives during an upgrade is held before it gets a noop.
const UPGRADE_POLL_HOLD: Duration = Duration::from_millis(100);

async fn release_upgrading_poll(session: Weak<RefCell<Session>>) {
    glommio::timer::sleep(UPGRADE_POLL_HOLD).await;
    if let Some(cell) = session.upgrade() {
        release_poll(&mut cell.borrow_mut().transport);
    }
}

/// Ends a waiting poll with what is buffered, or with a noop when nothing is.
fn release_poll(transport: &mut Transport) {
    if let Transport::Polling {
        buffer, waiting, ..
    } = transport
        && let Some(tx) = waiting.take()
    {
        if buffer.is_empty() {
            buffer.push(Bytes::from_static(b"6"));
        }
        let _ = tx.send(payload_response(buffer.take_payload()));
    }
}

/// A probe arrived on a WebSocket: release the pending poll so the client can pause polling.
pub fn probe_local(shard: &Rc<Shard>, sid: &str) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let mut s = cell.borrow_mut();
    s.upgrading = true;
    release_poll(&mut s.transport);
}

/// Takes a polling session out of this shard for an upgrade; `to` is the shard it moves to.
pub fn detach_local(shard: &Rc<Shard>, sid: &str, to: usize) -> Option<SessionState> {
    let cell = shard.sessions.borrow().get(sid)?;
    if !matches!(cell.borrow().transport, Transport::Polling { .. }) {
        return None;
    }
    if shard.sessions.borrow_mut().map.remove(sid).is_some() {
        crate::metrics::gauge(|s| &s.sessions, -1);
    }
    if to != shard.id {
        let mut sessions = shard.sessions.borrow_mut();
        sessions
            .moved
            .retain(|_, (_, at)| at.elapsed() < MOVED_MEMORY);
        sessions.moved.insert(sid.to_string(), (to, Instant::now()));
    }
    let mut s = cell.borrow_mut();
    let buffered = match &mut s.transport {
        Transport::Polling {
            buffer, waiting, ..
        } => {
            if let Some(tx) = waiting.take() {
                // Real clients pause polling before they send `5`: a poll still open here was
                // sent after the probe and is refused, as after the upgrade.
                let _ = tx.send(error_response(3, "Bad request"));
            }
            buffer.take()
        }
        Transport::WebSocket { .. } => Vec::new(),
    };
    crate::app::on_detach(shard, &s.sid, &s.app);
    Some(SessionState {
        sid: s.sid.clone(),
        peer: s.peer,
        kind: s.kind,
        sio_sid: s.sio_sid.clone(),
        namespaces: s.namespaces.clone(),
        app: s.app.clone(),
        buffered,
    })
}

async fn run_websocket<R, W>(
    shard: &Rc<Shard>,
    kind: PortKind,
    req: &Request,
    reader: &mut Reader<R>,
    mut writer: W,
    sid: Option<String>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let (resp, neg) = match websocket::accept(req) {
        Ok(v) => v,
        Err(msg) => {
            let _ = write_response(&mut writer, &error_response(3, msg), false).await;
            return;
        }
    };
    if write_response(&mut writer, &resp, true).await.is_err() {
        return;
    }
    let queue = OutQueue::new();
    glommio::spawn_local(run_writer(queue.clone(), writer)).detach();
    let mut messages = MessageReader::new(neg, shard.config.max_payload);
    let text = |s: &str| websocket::text_frame(s.as_bytes());

    let sid = match sid {
        None => {
            let sid = new_sid(shard.id);
            queue.push(
                text(std::str::from_utf8(&open_packet(&sid, false, shard)).unwrap_or("0")),
                FrameKind::Normal,
            );
            insert_session(
                shard,
                Session {
                    sid: sid.clone(),
                    kind,
                    sio_sid: None,
                    namespaces: Vec::new(),
                    partial: None,
                    app: AppState::new(kind),
                    transport: Transport::WebSocket {
                        queue: queue.clone(),
                        deflate: neg.deflate,
                    },
                    peer: req.peer,
                    ever_connected: false,
                    upgrading: false,
                    pong_pending: false,
                    pong_waker: None,
                },
            );
            sid
        }
        Some(sid) => {
            match upgrade(
                shard,
                kind,
                &sid,
                reader,
                &mut messages,
                &queue,
                neg.deflate,
            )
            .await
            {
                true => sid,
                false => {
                    queue.close_with(Some(websocket::close_frame(close_code::NORMAL, "")));
                    return;
                }
            }
        }
    };

    // Main loop: Engine.IO packets arrive as text messages.
    loop {
        let next = messages.next(&mut reader.buf);
        match next {
            Ok(Some(Incoming::Text(t))) => {
                on_packet(shard, &sid, &t);
            }
            Ok(Some(Incoming::Binary(data))) => on_binary(shard, &sid, data),
            Ok(Some(Incoming::Ping(p))) => {
                queue.push(websocket::pong_frame(&p), FrameKind::Normal);
            }
            Ok(Some(Incoming::Pong)) => {}
            Ok(Some(Incoming::Close(_))) => {
                queue.close_with(Some(websocket::close_frame(close_code::NORMAL, "")));
                break;
            }
            Ok(None) => {
                // Read until the peer closes, or until the server stopped this connection (ping
                // timeout, slow consumer, shutdown) and the peer did not answer in time.
                let filled = futures_lite::future::or(async { Some(reader.fill().await) }, async {
                    queue.stopped().await;
                    None
                })
                .await;
                match filled {
                    Some(Ok(n)) if n > 0 => {}
                    // EOF, an error, or the peer did not answer the server's close in time.
                    _ => {
                        queue.mark_dead();
                        break;
                    }
                }
            }
            Err(e) => {
                queue.close_with(Some(websocket::close_frame(e.code, e.reason)));
                break;
            }
        }
    }
    // The session ends with its WebSocket (unless it already ended).
    let ours = shard.sessions.borrow().get(&sid).is_some_and(|cell| {
        matches!(&cell.borrow().transport, Transport::WebSocket { queue: q, .. } if Rc::ptr_eq(q, &queue))
    });
    if ours {
        close_session(shard, &sid, "transport close");
    }
}

/// The upgrade dance on a new WebSocket for an existing polling session:
/// `2probe` → `3probe`, then `5` moves the session onto this WebSocket.
async fn upgrade<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    kind: PortKind,
    sid: &str,
    reader: &mut Reader<R>,
    messages: &mut MessageReader,
    queue: &Rc<OutQueue>,
    deflate: bool,
) -> bool {
    let Some(home) = shard_of_sid(sid).filter(|h| *h < shard.shards()) else {
        return false;
    };
    let deadline = Instant::now() + shard.config.ping_timeout;
    loop {
        let msg = match messages.next(&mut reader.buf) {
            Ok(Some(m)) => m,
            Ok(None) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let filled = futures_lite::future::or(async { Some(reader.fill().await) }, async {
                    glommio::timer::sleep(timeout).await;
                    None
                })
                .await;
                match filled {
                    Some(Ok(n)) if n > 0 => continue,
                    _ => return false,
                }
            }
            Err(_) => return false,
        };
        match msg {
            Incoming::Text(t) if t == "2probe" => {
                queue.push(websocket::text_frame(b"3probe"), FrameKind::Normal);
                if home == shard.id {
                    probe_local(shard, sid);
                } else {
                    shard.mesh.send(
                        home,
                        ShardMsg::Session(SessionMsg::Probe {
                            sid: sid.to_string(),
                        }),
                    );
                }
            }
            Incoming::Text(t) if t == "5" => {
                let state = if home == shard.id {
                    detach_local(shard, sid, shard.id)
                } else {
                    shard
                        .sessions
                        .borrow_mut()
                        .incoming
                        .insert(sid.to_string(), Vec::new());
                    let (tx, rx) = oneshot::channel();
                    shard.mesh.send(
                        home,
                        ShardMsg::Session(SessionMsg::Migrate {
                            sid: sid.to_string(),
                            to: shard.id,
                            reply: tx,
                        }),
                    );
                    rx.await.ok().flatten()
                };
                let early = shard.sessions.borrow_mut().incoming.remove(sid);
                let Some(state) = state else {
                    return false;
                };
                if state.kind != kind {
                    return false;
                }
                install(shard, state, queue.clone(), deflate);
                for action in early.unwrap_or_default() {
                    deliver_local(shard, sid, action);
                }
                return true;
            }
            Incoming::Ping(p) => {
                queue.push(websocket::pong_frame(&p), FrameKind::Normal);
            }
            Incoming::Pong => {}
            _ => return false,
        }
    }
}

fn install(shard: &Rc<Shard>, state: SessionState, queue: Rc<OutQueue>, deflate: bool) {
    for packet in &state.buffered {
        queue.push(ws_frame_of_packet(packet), FrameKind::Normal);
    }
    let connected = state.sio_sid.is_some() || !state.namespaces.is_empty();
    let session = Session {
        sid: state.sid.clone(),
        kind: state.kind,
        sio_sid: state.sio_sid,
        namespaces: state.namespaces,
        partial: None,
        app: state.app,
        transport: Transport::WebSocket { queue, deflate },
        peer: state.peer,
        ever_connected: connected,
        upgrading: false,
        pong_pending: false,
        pong_waker: None,
    };
    crate::app::on_attach(shard, &session.sid, &session.app);
    insert_session(shard, session);
}

/// The WebSocket frame of a packet buffered for polling (`b<base64>` becomes a binary frame).
fn ws_frame_of_packet(packet: &Bytes) -> Bytes {
    match packet.strip_prefix(b"b") {
        Some(b64) => std::str::from_utf8(b64)
            .ok()
            .and_then(decode_binary_payload)
            .map(|data| websocket::binary_frame(&data))
            .unwrap_or_else(|| websocket::text_frame(packet)),
        None => websocket::text_frame(packet),
    }
}

/// The service behind a session of a `Port::Service` listener, when the session is one.
fn service_of(shard: &Rc<Shard>, sid: &str) -> Option<(bool, Rc<dyn super::service::Service>)> {
    let kind = shard.sessions.borrow().get(sid)?.borrow().kind;
    match kind {
        PortKind::Service { socketio } => Some((socketio, shard.service()?)),
        _ => None,
    }
}

/// Handles one Engine.IO binary message from a client.
pub fn on_binary(shard: &Rc<Shard>, sid: &str, data: Bytes) {
    match service_of(shard, sid) {
        Some((false, service)) => {
            service.on_engine_message(shard, sid, super::service::EngineMessage::Binary(data))
        }
        _ => socketio::on_binary(shard, sid, data),
    }
}

/// Handles one Engine.IO packet from a client. Returns false when the packet was not Engine.IO
/// (the session is then closed).
pub fn on_packet(shard: &Rc<Shard>, sid: &str, text: &str) -> bool {
    match EioPacket::parse(text) {
        Some(EioPacket::Message(msg)) => match service_of(shard, sid) {
            Some((false, service)) => service.on_engine_message(
                shard,
                sid,
                super::service::EngineMessage::Text(msg.to_string()),
            ),
            _ => socketio::on_message(shard, sid, msg),
        },
        Some(EioPacket::Pong(_)) => {
            if let Some(cell) = shard.sessions.borrow().get(sid) {
                let mut s = cell.borrow_mut();
                s.pong_pending = false;
                if let Some(w) = s.pong_waker.take() {
                    w.wake();
                }
            }
        }
        Some(EioPacket::Ping(data)) => {
            // Clients of v4 do not ping, but answering costs nothing.
            send_packets(shard, sid, vec![Bytes::from(format!("3{data}"))]);
        }
        Some(EioPacket::Close) => close_session(shard, sid, CLIENT_CLOSE),
        Some(EioPacket::Noop) | Some(EioPacket::Upgrade) | Some(EioPacket::Open) => {}
        None => {
            // A packet type that does not exist: the client is not speaking Engine.IO.
            close_session(shard, sid, "parse error");
            return false;
        }
    }
    true
}

/// Sends an Engine.IO message (`4` + text) to a session of this shard.
pub fn send_message(shard: &Rc<Shard>, sid: &str, text: &str) {
    let mut packet = String::with_capacity(text.len() + 1);
    packet.push('4');
    packet.push_str(text);
    send_packets(shard, sid, vec![Bytes::from(packet)]);
}

/// Sends an Engine.IO binary message: a binary frame on a WebSocket, `b<base64>` when polling.
pub fn send_binary(shard: &Rc<Shard>, sid: &str, data: &[u8]) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let over_budget = {
        let mut s = cell.borrow_mut();
        match &mut s.transport {
            Transport::WebSocket { queue, .. } => {
                !queue.push(websocket::binary_frame(data), FrameKind::Normal) && queue.is_open()
            }
            Transport::Polling { .. } => push_packets(&mut s, vec![binary_payload_packet(data)]),
        }
    };
    if over_budget {
        close_session(shard, sid, "slow consumer");
    }
}

/// Sends Engine.IO packets to a session of this shard.
pub fn send_packets(shard: &Rc<Shard>, sid: &str, packets: Vec<Bytes>) {
    let Some(cell) = shard.sessions.borrow().get(sid) else {
        return;
    };
    let over_budget = {
        let mut s = cell.borrow_mut();
        push_packets(&mut s, packets)
    };
    if over_budget {
        close_session(shard, sid, "slow consumer");
    }
}

/// Answers a waiting poll with everything buffered. Returns true when the buffer is over its
/// budget (nobody polls it) and the session must be closed.
fn flush_waiting_poll(
    buffer: &mut PollBuffer,
    waiting: &mut Option<oneshot::Sender<Response>>,
) -> bool {
    if let Some(tx) = waiting.take() {
        let _ = tx.send(payload_response(buffer.take_payload()));
    }
    buffer.bytes() > super::outbound::BYTE_BUDGET
}

/// Returns true when the session is over its buffer budget and must be closed.
fn push_packets(s: &mut Session, packets: Vec<Bytes>) -> bool {
    match &mut s.transport {
        Transport::Polling {
            buffer, waiting, ..
        } => {
            for p in packets {
                buffer.push(p);
            }
            flush_waiting_poll(buffer, waiting)
        }
        Transport::WebSocket { queue, .. } => {
            for p in packets {
                if !queue.push(websocket::text_frame(&p), FrameKind::Normal) {
                    return queue.is_open();
                }
            }
            false
        }
    }
}

/// Sends a pre-encoded broadcast to a session of this shard (the hot path: no encoding here).
pub fn send_frames(session: &RefCell<Session>, frames: &FrameSet) {
    let mut s = session.borrow_mut();
    match &mut s.transport {
        Transport::WebSocket { queue, deflate } => {
            let frame = if *deflate {
                frames.ws_deflate.clone()
            } else {
                frames.ws_plain.clone()
            };
            queue.push(frame, FrameKind::Snapshot);
        }
        Transport::Polling {
            buffer, waiting, ..
        } => {
            // Long-polling clients get the same packet bytes; the newest state replaces an
            // older one still waiting in the buffer.
            if buffer.push_state(frames.packet.clone()) {
                crate::transport::stats::bump(|s| &s.skipped);
            }
            crate::transport::stats::bump(|s| &s.deliveries);
            // (a state alone never makes a session go over budget: it replaces the older one)
            let _ = flush_waiting_poll(buffer, waiting);
        }
    }
}

/// Applies an action to a session of this shard, or forwards it to where the session moved.
pub fn deliver_local(shard: &Rc<Shard>, sid: &str, action: SessionAction) {
    let cell = shard.sessions.borrow().get(sid);
    let Some(cell) = cell else {
        if let Some(early) = shard.sessions.borrow_mut().incoming.get_mut(sid) {
            early.push(action);
            return;
        }
        let moved = shard.sessions.borrow().moved.get(sid).map(|(to, _)| *to);
        if let Some(to) = moved.filter(|to| *to != shard.id) {
            shard.deliver(to, sid, action);
        }
        return;
    };
    match action {
        SessionAction::Packets(p) => send_packets(shard, sid, p),
        SessionAction::Frames(f) => send_frames(&cell, &f),
        SessionAction::LogonResult {
            ack,
            auth,
            disconnect,
            credential_failure,
        } => {
            if let Some(key) = credential_failure {
                shard.global.limits.logon_failed(cell.borrow().peer, key);
            }
            if let Some(auth) = auth
                && let AppState::Ingest(state) = &mut cell.borrow_mut().app
            {
                state.auth = Some(auth);
            }
            send_packets(shard, sid, vec![ack]);
            if disconnect {
                socketio::disconnect(shard, sid);
            }
        }
        SessionAction::Kick => socketio::disconnect(shard, sid),
    }
}

/// The reason given when the client itself sent a CLOSE packet.
const CLIENT_CLOSE: &str = "client close";

/// The reason sessions end with when the server shuts down (WebSocket close code 1001).
pub const SERVER_SHUTDOWN: &str = "server shutting down";

/// Server shutdown: ends every session of this shard (after what is already queued) and returns
/// their WebSocket queues, to wait until they are written.
pub fn close_all(shard: &Rc<Shard>) -> Vec<Rc<OutQueue>> {
    shard.sessions.borrow_mut().farewell.clear();
    let sessions: Vec<(String, Rc<RefCell<Session>>)> = shard
        .sessions
        .borrow()
        .map
        .iter()
        .map(|(sid, cell)| (sid.clone(), cell.clone()))
        .collect();
    let mut queues = Vec::new();
    for (sid, cell) in sessions {
        if let Transport::WebSocket { queue, .. } = &cell.borrow().transport {
            queues.push(queue.clone());
        }
        close_session(shard, &sid, SERVER_SHUTDOWN);
    }
    queues
}

/// Polling sessions closed by the shutdown that have not collected their CLOSE yet.
pub fn farewells_pending(shard: &Shard) -> usize {
    shard.sessions.borrow().farewell.len()
}

/// Ends a session: tells the application, releases a pending poll, closes the WebSocket.
/// A pending poll gets CLOSE (`1`), or NOOP (`6`) when the client asked to close: it already
/// knows, and the poll only has to end cleanly.
pub fn close_session(shard: &Rc<Shard>, sid: &str, reason: &str) {
    let Some(cell) = shard.sessions.borrow_mut().map.remove(sid) else {
        return;
    };
    crate::metrics::gauge(|s| &s.sessions, -1);
    let mut guard = cell.borrow_mut();
    let s = &mut *guard;
    if s.sio_sid.take().is_some() {
        crate::app::on_disconnect(shard, &s.sid, &mut s.app);
    }
    crate::app::on_detach(shard, &s.sid, &s.app);
    match &mut s.transport {
        Transport::Polling { waiting, .. } => {
            if let Some(tx) = waiting.take() {
                let packet: &'static [u8] = if reason == CLIENT_CLOSE { b"6" } else { b"1" };
                let _ = tx.send(payload_response(Bytes::from_static(packet)));
            } else if reason == SERVER_SHUTDOWN {
                shard.sessions.borrow_mut().farewell.insert(s.sid.clone());
            }
        }
        Transport::WebSocket { queue, .. } => {
            let code = if reason == SERVER_SHUTDOWN {
                close_code::GOING_AWAY
            } else {
                close_code::NORMAL
            };
            queue.close_with(Some(websocket::close_frame(code, "")));
        }
    }
}

/// Closes a session that has not joined a namespace within the connect timeout.
async fn connect_deadline(shard: Rc<Shard>, sid: String, session: Weak<RefCell<Session>>) {
    glommio::timer::sleep(shard.config.connect_timeout).await;
    let Some(cell) = session.upgrade() else {
        return;
    };
    let never_connected = cell.borrow().sio_sid.is_none() && !cell.borrow().ever_connected;
    drop(cell);
    if never_connected {
        close_session(&shard, &sid, "connect timeout");
    }
}

/// Heartbeat of one session; ends when the session ends or moves.
async fn keepalive(shard: Rc<Shard>, sid: String, session: Weak<RefCell<Session>>) {
    let interval = shard.config.ping_interval;
    let timeout = shard.config.ping_timeout;
    loop {
        glommio::timer::sleep(interval).await;
        let Some(cell) = session.upgrade() else {
            return;
        };
        {
            let mut s = cell.borrow_mut();
            s.pong_pending = true;
        }
        drop(cell);
        send_packets(&shard, &sid, vec![Bytes::from_static(b"2")]);
        // The next ping is scheduled from the pong (as engine.io does), not from the ping.
        let pong = std::future::poll_fn(|cx| match session.upgrade() {
            None => std::task::Poll::Ready(()),
            Some(cell) => {
                let mut s = cell.borrow_mut();
                if s.pong_pending {
                    s.pong_waker = Some(cx.waker().clone());
                    std::task::Poll::Pending
                } else {
                    std::task::Poll::Ready(())
                }
            }
        });
        futures_lite::future::or(pong, async {
            glommio::timer::sleep(timeout).await;
        })
        .await;
        let Some(cell) = session.upgrade() else {
            return;
        };
        let missed = cell.borrow().pong_pending;
        if missed {
            close_session(&shard, &sid, "ping timeout");
            return;
        }
    }
}
