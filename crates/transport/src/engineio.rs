//! Engine.IO v4 sessions on one shard (thread): the handshake, both transports (HTTP
//! long-polling and WebSocket), the polling → WebSocket upgrade, heartbeats and close. The
//! Socket.IO layer on top lives in `socketio.rs`. Generic over an `App`: it decides what a session
//! is (`Kind`), what it carries (`Data`, which moves with the session), receives its messages and
//! events, and carries `SessionMsg`s to other shards; this file names no application.
//!
//! A session lives on one shard. Its id starts with that shard's number, so a polling request that
//! lands on another shard (SO_REUSEPORT spreads connections) is forwarded there (`App::send`).
//! When a session upgrades to a WebSocket that landed elsewhere, the session moves to the
//! WebSocket's shard; the old shard remembers where it went for a while and forwards actions
//! there.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use futures_lite::io::{AsyncRead, AsyncWrite};
use serde_json::{Value, json};

use crate::http::{Reader, Request, Response, write_response};
use crate::outbound::{DirectSends, FrameKind, FrameSet, OutQueue, run_writer};
use crate::packets::{EioPacket, SEPARATOR, binary_payload_packet, decode_binary_payload};
use crate::polling::PollBuffer;
use crate::socketio::{self, SioEvent};
use crate::websocket::{self, Incoming, MessageReader, close_code};

/// An Engine.IO message (the payload of a `4` packet, or a binary message) of a session that
/// does not speak Socket.IO.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineMessage {
    Text(String),
    Binary(Bytes),
}

/// The application behind the sessions. Callbacks run on the session's shard and must not
/// borrow the session (the transport may hold it): use the functions of this module and of
/// `socketio` to answer.
pub trait App: Sized + 'static {
    /// What a route says a new session is (which application serves it); stays with it.
    type Kind: Copy + Eq + std::fmt::Debug + Send + 'static;
    /// The application's data of one session; moves with it between shards.
    type Data: Clone + std::fmt::Debug + Send + 'static;
    /// Application actions for one session, delivered wherever it lives (`deliver`).
    type Action: std::fmt::Debug + Send + 'static;
    /// Held while a session is on long-polling (an admission limit); dropped when the session
    /// upgrades or ends.
    type PollingSlot: 'static;

    /// Sessions of this kind speak Socket.IO (else plain Engine.IO messages).
    fn socketio(&self, kind: Self::Kind) -> bool;
    /// The data a new session of this kind starts with.
    fn new_data(&self, kind: Self::Kind) -> Self::Data;
    /// A polling slot for a client, or the reason (a `503` answer) why there is none.
    fn polling_slot(&self, peer: Option<IpAddr>) -> Result<Self::PollingSlot, String>;
    /// Carries a message to the sessions of another shard (`on_shard_msg` there).
    fn send(&self, shard: usize, msg: SessionMsg<Self>);

    /// Whether a Socket.IO namespace exists for sessions of this kind.
    fn has_namespace(&self, kind: Self::Kind, nsp: &str) -> bool;
    /// Whether sessions of this kind may send binary packets (else they are closed).
    fn accepts_binary(&self, kind: Self::Kind) -> bool;
    /// A message of a session that does not speak Socket.IO.
    fn on_engine_message(&self, eio: &Rc<Eio<Self>>, sid: &str, message: EngineMessage);
    /// A socket joined `nsp` (the CONNECT ack was already sent); `auth` is the CONNECT payload.
    fn on_connect(&self, eio: &Rc<Eio<Self>>, sid: &str, kind: Self::Kind, nsp: &str, auth: Value);
    /// An EVENT or ACK (a BINARY_* one once all attachments arrived) on a joined namespace.
    fn on_event(&self, eio: &Rc<Eio<Self>>, sid: &str, kind: Self::Kind, event: SioEvent);
    /// The socket left the main namespace (client or server side, or the session ended).
    fn on_disconnect(&self, eio: &Rc<Eio<Self>>, sid: &str, data: &mut Self::Data);
    /// The session leaves this shard (closed or moving): drop shard-local references to it.
    fn on_detach(&self, sid: &str, data: &Self::Data);
    /// The session arrived on this shard: restore shard-local references.
    fn on_attach(&self, sid: &str, data: &Self::Data);
    /// An application action for a session of this shard.
    fn on_action(&self, eio: &Rc<Eio<Self>>, sid: &str, action: Self::Action);
    /// A socket was recovered (connection state recovery): it has its old socket id and data
    /// again (after `on_attach`), on a new Engine.IO session `sid`. `offset` is the last event
    /// offset the client saw, if it sent one. It did not pass through `on_disconnect`, and
    /// `on_connect` is not called.
    fn on_recover(
        &self,
        _eio: &Rc<Eio<Self>>,
        _sid: &str,
        _kind: Self::Kind,
        _offset: Option<&str>,
    ) {
    }
}

/// Heartbeat and size settings of the sessions.
#[derive(Debug, Clone)]
pub struct EioConfig {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// How long a Socket.IO session may stay without joining a namespace.
    pub connect_timeout: Duration,
    /// Largest message a client may send (`maxPayload`).
    pub max_payload: usize,
    /// Socket.IO connection state recovery: how long a socket whose connection dropped is held
    /// for the client to come back to (`None`: off; no `pid` is offered).
    pub recovery_window: Option<Duration>,
    /// Most sockets held for recovery on one shard; beyond it the oldest is let go.
    pub max_held: usize,
}

/// The Engine.IO sessions of one shard and the application behind them.
pub struct Eio<A: App> {
    /// This shard's number (the first byte of the session ids it creates).
    pub id: usize,
    pub shards: usize,
    pub config: EioConfig,
    pub app: A,
    sessions: RefCell<Sessions<A>>,
}

/// Something to do to a session, wherever it lives now.
#[derive(Debug)]
pub enum SessionAction<A: App> {
    /// Send these Engine.IO packets.
    Packets(Vec<Bytes>),
    /// A state for this session only (latest wins).
    Frames(FrameSet),
    /// Socket.IO namespace disconnect (`41`).
    Disconnect,
    /// For the application (`App::on_action`).
    App(A::Action),
    /// The answer to a recovery request (`SessionMsg::Reclaim`): the held socket, or `None`
    /// (unknown or expired: the socket connects afresh). Finishes the pending CONNECT.
    Restore {
        held: Option<Box<Held<A>>>,
        offset: Option<String>,
    },
}

/// Messages for the sessions of another shard.
pub enum SessionMsg<A: App> {
    /// A long-polling request for a session that lives on the receiving shard.
    Poll {
        sid: String,
        post: Option<Bytes>,
        reply: oneshot::Sender<Response>,
    },
    /// A WebSocket probe arrived elsewhere: release the session's pending poll with a noop.
    Probe { sid: String },
    /// Hand the session over to the shard holding its new WebSocket.
    Migrate {
        sid: String,
        to: usize,
        reply: oneshot::Sender<Option<SessionState<A>>>,
    },
    /// Apply an action to a session of the receiving shard (or forward it where it moved).
    Deliver {
        sid: String,
        action: SessionAction<A>,
    },
    /// Connection state recovery: hold this socket here, the shard its `pid` names (it dropped
    /// on another shard), so a reconnect on any shard finds it.
    Hold { held: Box<Held<A>> },
    /// Connection state recovery: a socket held here (its `pid` names this shard) reconnected
    /// on session `sid` of shard `to`; answered with `SessionAction::Restore` to that session.
    Reclaim {
        pid: String,
        offset: Option<String>,
        to: usize,
        sid: String,
    },
}

enum Transport<A: App> {
    Polling {
        buffer: PollBuffer,
        waiting: Option<oneshot::Sender<Response>>,
        /// A GET or POST came for this session after its handshake.
        polled: bool,
        /// Counts against the application's polling limit until the session upgrades or ends.
        _slot: A::PollingSlot,
    },
    WebSocket {
        queue: Rc<OutQueue>,
        deflate: bool,
    },
}

pub struct Session<A: App> {
    pub sid: String,
    pub kind: A::Kind,
    /// Socket.IO id while connected to the main namespace.
    pub sio_sid: Option<String>,
    /// Private session id of the main-namespace socket (connection state recovery).
    pub pid: Option<String>,
    /// A CONNECT waits for the answer of a recovery request on another shard; its payload
    /// (for `on_connect` if the socket connects afresh).
    pub(crate) connecting: Option<Value>,
    /// Other namespaces the socket joined.
    pub namespaces: Vec<String>,
    /// A binary event or ack waiting for its attachments.
    pub(crate) partial: Option<socketio::PartialBinary>,
    pub data: A::Data,
    transport: Transport<A>,
    /// The client's address (from the connection that opened the session).
    pub peer: Option<IpAddr>,
    /// Joined a namespace at least once (the connect timeout no longer applies).
    pub(crate) ever_connected: bool,
    /// A WebSocket probe arrived: polls are answered at once (noop) so the client can pause.
    upgrading: bool,
    pong_pending: bool,
    /// The heartbeat task waiting for this session's pong.
    pong_waker: Option<std::task::Waker>,
    /// The server is shutting down and sent this WebSocket its close frame: what the client
    /// sent before it saw the close is still read and handled; the session ends when the
    /// client answers (or the close times out).
    shutting: bool,
}

/// What moves when a session changes shard.
#[derive(Debug)]
pub struct SessionState<A: App> {
    pub sid: String,
    pub peer: Option<IpAddr>,
    pub kind: A::Kind,
    pub sio_sid: Option<String>,
    pub pid: Option<String>,
    pub namespaces: Vec<String>,
    pub data: A::Data,
    pub buffered: Vec<Bytes>,
}

/// A socket whose connection dropped, held for the client to recover it (`pid` → this).
#[derive(Debug)]
pub struct Held<A: App> {
    /// Its Engine.IO session id when it dropped (what the application knew it by).
    pub sid: String,
    pub sio_sid: String,
    pub pid: String,
    pub kind: A::Kind,
    pub data: A::Data,
    /// When the window closes.
    pub expires: Instant,
}

/// The sessions of one shard.
struct Sessions<A: App> {
    map: HashMap<String, Rc<RefCell<Session<A>>>>,
    /// Sessions that moved to another shard, with when they moved.
    moved: HashMap<String, (usize, Instant)>,
    /// Sessions on their way here (upgrade in progress) and the actions that arrived for them
    /// before they did.
    incoming: HashMap<String, Vec<SessionAction<A>>>,
    /// Polling sessions closed by a shutdown while no poll was waiting: their next poll gets
    /// CLOSE instead of "Session ID unknown".
    farewell: std::collections::HashSet<String>,
    /// Sockets held for connection state recovery, by `pid`.
    held: HashMap<String, Held<A>>,
    /// The task that lets held sockets go when their window closes is running.
    expiry_running: bool,
}

impl<A: App> Default for Sessions<A> {
    fn default() -> Self {
        Sessions {
            map: HashMap::new(),
            moved: HashMap::new(),
            incoming: HashMap::new(),
            farewell: Default::default(),
            held: HashMap::new(),
            expiry_running: false,
        }
    }
}

impl<A: App> Eio<A> {
    pub fn new(id: usize, shards: usize, config: EioConfig, app: A) -> Eio<A> {
        Eio {
            id,
            shards,
            config,
            app,
            sessions: RefCell::new(Sessions::default()),
        }
    }

    /// Sessions living on this shard.
    pub fn len(&self) -> usize {
        self.sessions.borrow().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Session ids whose data matches `pred`.
    pub fn select(&self, mut pred: impl FnMut(&A::Data) -> bool) -> Vec<String> {
        self.sessions
            .borrow()
            .map
            .values()
            .filter(|s| pred(&s.borrow().data))
            .map(|s| s.borrow().sid.clone())
            .collect()
    }

    /// Runs `f` on a session's data and its client address; `None` when it is not here.
    pub fn with_data<R>(
        &self,
        sid: &str,
        f: impl FnOnce(&mut A::Data, Option<IpAddr>) -> R,
    ) -> Option<R> {
        let cell = self.sessions.borrow().map.get(sid).cloned()?;
        let mut s = cell.borrow_mut();
        let peer = s.peer;
        Some(f(&mut s.data, peer))
    }

    /// The kind of a session of this shard.
    pub fn kind_of(&self, sid: &str) -> Option<A::Kind> {
        let cell = self.sessions.borrow().map.get(sid).cloned()?;
        let kind = cell.borrow().kind;
        Some(kind)
    }

    /// A link to a session of this shard, for the broadcast hot path (see `SessionLink`).
    pub fn link(&self, sid: &str) -> Option<SessionLink<A>> {
        let sessions = self.sessions.borrow();
        sessions
            .map
            .get(sid)
            .map(|cell| SessionLink(Rc::downgrade(cell)))
    }

    pub(crate) fn get(&self, sid: &str) -> Option<Rc<RefCell<Session<A>>>> {
        self.sessions.borrow().map.get(sid).cloned()
    }
}

/// A session as a subscriber holds it, for the broadcast hot path: a delivery through it reaches
/// the session without looking its id up among the shard's sessions (one hash of the id and two
/// cache misses fewer per delivery). It does not keep the session alive: once the session is gone
/// (closed, or moved to another shard), deliveries through it do nothing.
pub struct SessionLink<A: App>(Weak<RefCell<Session<A>>>);

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

fn open_packet(sid: &str, upgrades: bool, c: &EioConfig) -> Bytes {
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
pub async fn handle_request<A: App, R, W>(
    eio: &Rc<Eio<A>>,
    kind: A::Kind,
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
        run_websocket(eio, kind, req, reader, w, sid).await;
        return None;
    }
    Some(match (req.method.as_str(), sid) {
        ("GET", None) => handshake_polling(eio, kind, req.peer),
        (_, None) => error_response(2, "Bad handshake method"),
        (method @ ("GET" | "POST"), Some(sid)) => {
            let post = (method == "POST").then(|| req.body.clone());
            forward_poll(eio, sid, post).await
        }
        _ => error_response(2, "Bad handshake method"),
    })
}

fn handshake_polling<A: App>(
    eio: &Rc<Eio<A>>,
    kind: A::Kind,
    peer: Option<std::net::IpAddr>,
) -> Response {
    let slot = match eio.app.polling_slot(peer) {
        Ok(slot) => slot,
        Err(message) => {
            return Response::json(503, json!({"code": 3, "message": message}).to_string())
                .with_header("Access-Control-Allow-Origin", "*");
        }
    };
    let sid = new_sid(eio.id);
    let open = open_packet(&sid, true, &eio.config);
    glommio::spawn_local(unused_handshake(eio.clone(), sid.clone())).detach();
    insert_session(
        eio,
        Session {
            sid,
            kind,
            sio_sid: None,
            pid: None,
            connecting: None,
            namespaces: Vec::new(),
            partial: None,
            data: eio.app.new_data(kind),
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
            shutting: false,
        },
    );
    payload_response(open)
}

/// A polling session nobody polls within this long after its handshake is closed: real clients
/// poll at once, and an unused handshake must not hold a polling slot for the connect timeout.
const UNUSED_HANDSHAKE: Duration = Duration::from_secs(10);

async fn unused_handshake<A: App>(eio: Rc<Eio<A>>, sid: String) {
    glommio::timer::sleep(UNUSED_HANDSHAKE).await;
    let unused = eio.get(&sid).is_some_and(|cell| {
        matches!(
            cell.borrow().transport,
            Transport::Polling { polled: false, .. }
        )
    });
    if unused {
        close_session(&eio, &sid, "handshake not used");
    }
}

fn insert_session<A: App>(eio: &Rc<Eio<A>>, session: Session<A>) -> Rc<RefCell<Session<A>>> {
    let sid = session.sid.clone();
    let cell = Rc::new(RefCell::new(session));
    let weak = Rc::downgrade(&cell);
    let (connected, socketio) = {
        let s = cell.borrow();
        (
            s.sio_sid.is_some() || s.ever_connected,
            eio.app.socketio(s.kind),
        )
    };
    eio.sessions
        .borrow_mut()
        .map
        .insert(sid.clone(), cell.clone());
    crate::stats::gauge(|s| &s.sessions, 1);
    let connect_by = (socketio && !connected).then(|| Instant::now() + eio.config.connect_timeout);
    glommio::spawn_local(keepalive(eio.clone(), sid, weak, connect_by)).detach();
    cell
}

async fn forward_poll<A: App>(eio: &Rc<Eio<A>>, sid: String, post: Option<Bytes>) -> Response {
    let Some(home) = shard_of_sid(&sid).filter(|h| *h < eio.shards) else {
        return error_response(1, "Session ID unknown");
    };
    let (tx, rx) = oneshot::channel();
    if home == eio.id {
        poll_local(eio, &sid, post, tx);
    } else {
        eio.app.send(
            home,
            SessionMsg::Poll {
                sid,
                post,
                reply: tx,
            },
        );
    }
    rx.await
        .unwrap_or_else(|_| error_response(1, "Session ID unknown"))
}

/// A message from another shard for the sessions of this one.
pub fn on_shard_msg<A: App>(eio: &Rc<Eio<A>>, msg: SessionMsg<A>) {
    match msg {
        SessionMsg::Poll { sid, post, reply } => poll_local(eio, &sid, post, reply),
        SessionMsg::Probe { sid } => probe_local(eio, &sid),
        SessionMsg::Migrate { sid, to, reply } => {
            let _ = reply.send(detach_local(eio, &sid, to));
        }
        SessionMsg::Deliver { sid, action } => deliver_local(eio, &sid, action),
        SessionMsg::Hold { held } => hold(eio, *held),
        SessionMsg::Reclaim {
            pid,
            offset,
            to,
            sid,
        } => {
            let held = take_held(eio, &pid).map(Box::new);
            deliver(eio, to, &sid, SessionAction::Restore { held, offset });
        }
    }
}

/// Serves a polling GET or POST for a session of this shard.
pub fn poll_local<A: App>(
    eio: &Rc<Eio<A>>,
    sid: &str,
    post: Option<Bytes>,
    reply: oneshot::Sender<Response>,
) {
    let Some(cell) = eio.get(sid) else {
        let farewell = post.is_none() && eio.sessions.borrow_mut().farewell.remove(sid);
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
                            on_binary(eio, sid, data);
                            true
                        }
                        None => false,
                    },
                    None => on_packet(eio, sid, text),
                },
                Err(_) => false,
            };
            if !valid {
                close_session(eio, sid, "invalid packet in payload");
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
        close_session(eio, sid, "overlapping polling requests");
        let _ = reply.send(error_response(3, "Bad request"));
    }
}

/// How long a poll that arrives during an upgrade is held before it gets a noop.
const UPGRADE_POLL_HOLD: Duration = Duration::from_millis(100);

async fn release_upgrading_poll<A: App>(session: Weak<RefCell<Session<A>>>) {
    glommio::timer::sleep(UPGRADE_POLL_HOLD).await;
    if let Some(cell) = session.upgrade() {
        release_poll(&mut cell.borrow_mut().transport);
    }
}

/// Ends a waiting poll with what is buffered, or with a noop when nothing is.
fn release_poll<A: App>(transport: &mut Transport<A>) {
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
pub fn probe_local<A: App>(eio: &Rc<Eio<A>>, sid: &str) {
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let mut s = cell.borrow_mut();
    s.upgrading = true;
    release_poll(&mut s.transport);
}

/// Takes a polling session out of this shard for an upgrade; `to` is the shard it moves to.
pub fn detach_local<A: App>(eio: &Rc<Eio<A>>, sid: &str, to: usize) -> Option<SessionState<A>> {
    let cell = eio.get(sid)?;
    if !matches!(cell.borrow().transport, Transport::Polling { .. }) {
        return None;
    }
    if eio.sessions.borrow_mut().map.remove(sid).is_some() {
        crate::stats::gauge(|s| &s.sessions, -1);
    }
    if to != eio.id {
        let mut sessions = eio.sessions.borrow_mut();
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
    eio.app.on_detach(&s.sid, &s.data);
    Some(SessionState {
        sid: s.sid.clone(),
        peer: s.peer,
        kind: s.kind,
        sio_sid: s.sio_sid.clone(),
        pid: s.pid.clone(),
        namespaces: s.namespaces.clone(),
        data: s.data.clone(),
        buffered,
    })
}

async fn run_websocket<A: App, R, W>(
    eio: &Rc<Eio<A>>,
    kind: A::Kind,
    req: Request,
    reader: &mut Reader<R>,
    mut writer: W,
    sid: Option<String>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let (peer, direct_socket) = (req.peer, req.direct.clone());
    let neg = {
        // The request and the 101 answer are let go once answered: a WebSocket lives long.
        let (resp, neg) = match websocket::accept(&req) {
            Ok(v) => v,
            Err(msg) => {
                let _ = write_response(&mut writer, &error_response(3, msg), false).await;
                return;
            }
        };
        drop(req);
        if write_response(&mut writer, &resp, true).await.is_err() {
            return;
        }
        neg
    };
    let queue = OutQueue::new();
    // (dropped when this returns, before the connection's socket can close)
    let _direct = direct_socket.map(|socket| queue.send_directly(socket));
    glommio::spawn_local(run_writer(queue.clone(), writer)).detach();
    let mut messages = MessageReader::new(neg, eio.config.max_payload);
    let text = |s: &str| websocket::text_frame(s.as_bytes());

    let sid = match sid {
        None => {
            let sid = new_sid(eio.id);
            queue.push(
                text(std::str::from_utf8(&open_packet(&sid, false, &eio.config)).unwrap_or("0")),
                FrameKind::Normal,
            );
            insert_session(
                eio,
                Session {
                    sid: sid.clone(),
                    kind,
                    sio_sid: None,
                    pid: None,
                    connecting: None,
                    namespaces: Vec::new(),
                    partial: None,
                    data: eio.app.new_data(kind),
                    transport: Transport::WebSocket {
                        queue: queue.clone(),
                        deflate: neg.deflate,
                    },
                    peer,
                    ever_connected: false,
                    upgrading: false,
                    pong_pending: false,
                    pong_waker: None,
                    shutting: false,
                },
            );
            sid
        }
        Some(sid) => {
            match upgrade(eio, kind, &sid, reader, &mut messages, &queue, neg.deflate).await {
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
                on_packet(eio, &sid, &t);
            }
            Ok(Some(Incoming::Binary(data))) => on_binary(eio, &sid, data),
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
    let (ours, shutting) = eio.get(&sid).map_or((false, false), |cell| {
        let s = cell.borrow();
        let ours =
            matches!(&s.transport, Transport::WebSocket { queue: q, .. } if Rc::ptr_eq(q, &queue));
        (ours, s.shutting)
    });
    if ours {
        let reason = if shutting {
            SERVER_SHUTDOWN
        } else {
            "transport close"
        };
        close_session(eio, &sid, reason);
    }
}

/// The upgrade dance on a new WebSocket for an existing polling session:
/// `2probe` → `3probe`, then `5` moves the session onto this WebSocket.
async fn upgrade<A: App, R: AsyncRead + Unpin>(
    eio: &Rc<Eio<A>>,
    kind: A::Kind,
    sid: &str,
    reader: &mut Reader<R>,
    messages: &mut MessageReader,
    queue: &Rc<OutQueue>,
    deflate: bool,
) -> bool {
    let Some(home) = shard_of_sid(sid).filter(|h| *h < eio.shards) else {
        return false;
    };
    let deadline = Instant::now() + eio.config.ping_timeout;
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
                if home == eio.id {
                    probe_local(eio, sid);
                } else {
                    eio.app.send(
                        home,
                        SessionMsg::Probe {
                            sid: sid.to_string(),
                        },
                    );
                }
            }
            Incoming::Text(t) if t == "5" => {
                let state = if home == eio.id {
                    detach_local(eio, sid, eio.id)
                } else {
                    eio.sessions
                        .borrow_mut()
                        .incoming
                        .insert(sid.to_string(), Vec::new());
                    let (tx, rx) = oneshot::channel();
                    eio.app.send(
                        home,
                        SessionMsg::Migrate {
                            sid: sid.to_string(),
                            to: eio.id,
                            reply: tx,
                        },
                    );
                    rx.await.ok().flatten()
                };
                let early = eio.sessions.borrow_mut().incoming.remove(sid);
                let Some(state) = state else {
                    return false;
                };
                if state.kind != kind {
                    return false;
                }
                install(eio, state, queue.clone(), deflate);
                for action in early.unwrap_or_default() {
                    deliver_local(eio, sid, action);
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

fn install<A: App>(eio: &Rc<Eio<A>>, state: SessionState<A>, queue: Rc<OutQueue>, deflate: bool) {
    for packet in &state.buffered {
        queue.push(ws_frame_of_packet(packet), FrameKind::Normal);
    }
    let connected = state.sio_sid.is_some() || !state.namespaces.is_empty();
    let session = Session {
        sid: state.sid.clone(),
        kind: state.kind,
        sio_sid: state.sio_sid,
        pid: state.pid,
        connecting: None,
        namespaces: state.namespaces,
        partial: None,
        data: state.data,
        transport: Transport::WebSocket { queue, deflate },
        peer: state.peer,
        ever_connected: connected,
        upgrading: false,
        pong_pending: false,
        pong_waker: None,
        shutting: false,
    };
    // In the shard's sessions first: what `on_attach` restores may link to the session.
    let cell = insert_session(eio, session);
    let s = cell.borrow();
    eio.app.on_attach(&s.sid, &s.data);
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

/// Whether a session of this shard speaks plain Engine.IO (no Socket.IO).
fn plain_engineio<A: App>(eio: &Rc<Eio<A>>, sid: &str) -> bool {
    eio.kind_of(sid).is_some_and(|kind| !eio.app.socketio(kind))
}

/// Handles one Engine.IO binary message from a client.
pub fn on_binary<A: App>(eio: &Rc<Eio<A>>, sid: &str, data: Bytes) {
    if plain_engineio(eio, sid) {
        eio.app
            .on_engine_message(eio, sid, EngineMessage::Binary(data))
    } else {
        socketio::on_binary(eio, sid, data)
    }
}

/// Handles one Engine.IO packet from a client. Returns false when the packet was not Engine.IO
/// (the session is then closed).
pub fn on_packet<A: App>(eio: &Rc<Eio<A>>, sid: &str, text: &str) -> bool {
    match EioPacket::parse(text) {
        Some(EioPacket::Message(msg)) => {
            if plain_engineio(eio, sid) {
                eio.app
                    .on_engine_message(eio, sid, EngineMessage::Text(msg.to_string()))
            } else {
                socketio::on_message(eio, sid, msg)
            }
        }
        Some(EioPacket::Pong(_)) => {
            if let Some(cell) = eio.get(sid) {
                let mut s = cell.borrow_mut();
                s.pong_pending = false;
                if let Some(w) = s.pong_waker.take() {
                    w.wake();
                }
            }
        }
        Some(EioPacket::Ping(data)) => {
            // Clients of v4 do not ping, but answering costs nothing.
            send_packets(eio, sid, vec![Bytes::from(format!("3{data}"))]);
        }
        Some(EioPacket::Close) => close_session(eio, sid, CLIENT_CLOSE),
        Some(EioPacket::Noop) | Some(EioPacket::Upgrade) | Some(EioPacket::Open) => {}
        None => {
            // A packet type that does not exist: the client is not speaking Engine.IO.
            close_session(eio, sid, "parse error");
            return false;
        }
    }
    true
}

/// Sends an Engine.IO message (`4` + text) to a session of this shard.
pub fn send_message<A: App>(eio: &Rc<Eio<A>>, sid: &str, text: &str) {
    let mut packet = String::with_capacity(text.len() + 1);
    packet.push('4');
    packet.push_str(text);
    send_packets(eio, sid, vec![Bytes::from(packet)]);
}

/// Sends an Engine.IO binary message: a binary frame on a WebSocket, `b<base64>` when polling.
pub fn send_binary<A: App>(eio: &Rc<Eio<A>>, sid: &str, data: &[u8]) {
    let Some(cell) = eio.get(sid) else {
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
        close_session(eio, sid, "slow consumer");
    }
}

/// Sends Engine.IO packets to a session of this shard.
pub fn send_packets<A: App>(eio: &Rc<Eio<A>>, sid: &str, packets: Vec<Bytes>) {
    let Some(cell) = eio.get(sid) else {
        return;
    };
    let over_budget = {
        let mut s = cell.borrow_mut();
        push_packets(&mut s, packets)
    };
    if over_budget {
        close_session(eio, sid, "slow consumer");
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
    buffer.bytes() > crate::outbound::BYTE_BUDGET
}

/// Returns true when the session is over its buffer budget and must be closed.
fn push_packets<A: App>(s: &mut Session<A>, packets: Vec<Bytes>) -> bool {
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

/// Sends one pre-encoded state to many sessions of this shard (a room's overlays) in two passes:
/// first every session is looked at — no system call in between, so the memory of thousands of
/// sessions is fetched back to back and the code stays in cache — and those that can take the
/// frame at once (a WebSocket with nothing queued) are noted by socket; then those sockets get
/// the frame in a tight loop of `send`s, like the bare fan-out baseline. What a socket does not
/// take is queued as `send_frames` would. Nothing yields in between, so every noted socket is
/// still the session's open one when it is written.
pub fn send_frames_to_links<'a, A: App + 'a>(
    links: impl IntoIterator<Item = &'a SessionLink<A>>,
    frames: &FrameSet,
) {
    let links = links.into_iter();
    let mut direct = DirectSends::with_capacity(links.size_hint().0);
    for link in links {
        let Some(cell) = link.0.upgrade() else {
            continue;
        };
        let target = match &cell.borrow().transport {
            Transport::WebSocket { queue, deflate } => {
                queue.direct_target().map(|fd| (fd, *deflate))
            }
            Transport::Polling { .. } => None,
        };
        match target {
            Some((fd, true)) => direct.add(fd, &frames.ws_deflate, link),
            Some((fd, false)) => direct.add(fd, &frames.ws_plain, link),
            None => send_frames(&cell, frames),
        }
    }
    for (link, frame, sent) in direct.send() {
        let Some(cell) = link.0.upgrade() else {
            continue;
        };
        if let Transport::WebSocket { queue, .. } = &cell.borrow().transport {
            queue.after_direct_send(frame.clone(), sent, FrameKind::Snapshot);
        }
    }
}

/// Sends a pre-encoded broadcast to a session of this shard (the hot path: no encoding here).
pub fn send_frames<A: App>(session: &RefCell<Session<A>>, frames: &FrameSet) {
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
                crate::stats::bump(|s| &s.skipped);
            }
            crate::stats::bump(|s| &s.deliveries);
            // (a state alone never makes a session go over budget: it replaces the older one)
            let _ = flush_waiting_poll(buffer, waiting);
        }
    }
}

/// Applies an action to a session: here, or on the shard it lives on.
pub fn deliver<A: App>(eio: &Rc<Eio<A>>, shard: usize, sid: &str, action: SessionAction<A>) {
    if shard == eio.id {
        deliver_local(eio, sid, action);
    } else {
        eio.app.send(
            shard,
            SessionMsg::Deliver {
                sid: sid.to_string(),
                action,
            },
        );
    }
}

/// Applies an action to a session of this shard, or forwards it to where the session moved.
pub fn deliver_local<A: App>(eio: &Rc<Eio<A>>, sid: &str, action: SessionAction<A>) {
    let cell = eio.get(sid);
    let Some(cell) = cell else {
        if let Some(early) = eio.sessions.borrow_mut().incoming.get_mut(sid) {
            early.push(action);
            return;
        }
        let moved = eio.sessions.borrow().moved.get(sid).map(|(to, _)| *to);
        if let Some(to) = moved.filter(|to| *to != eio.id) {
            deliver(eio, to, sid, action);
        }
        return;
    };
    match action {
        SessionAction::Packets(p) => send_packets(eio, sid, p),
        SessionAction::Frames(f) => send_frames(&cell, &f),
        SessionAction::Disconnect => socketio::disconnect(eio, sid),
        SessionAction::App(action) => {
            drop(cell);
            eio.app.on_action(eio, sid, action);
        }
        SessionAction::Restore { held, offset } => {
            drop(cell);
            socketio::finish_recovery(eio, sid, held.map(|h| *h), offset);
        }
    }
}

/// The reason given when the client itself sent a CLOSE packet.
const CLIENT_CLOSE: &str = "client close";

/// The reason sessions end with when the server shuts down (WebSocket close code 1001).
pub const SERVER_SHUTDOWN: &str = "server shutting down";

/// Server shutdown: ends every session of this shard (after what is already queued) and returns
/// their WebSocket queues, to wait until they are written.
pub fn close_all<A: App>(eio: &Rc<Eio<A>>) -> Vec<Rc<OutQueue>> {
    eio.sessions.borrow_mut().farewell.clear();
    let sessions: Vec<(String, Rc<RefCell<Session<A>>>)> = eio
        .sessions
        .borrow()
        .map
        .iter()
        .map(|(sid, cell)| (sid.clone(), cell.clone()))
        .collect();
    let mut queues = Vec::new();
    for (sid, cell) in sessions {
        let mut session = cell.borrow_mut();
        if let Transport::WebSocket { queue, .. } = &session.transport {
            // The close frame goes now; the session lives on until the client answers it, so
            // a message the client sent before it saw the close (an observer's event in
            // flight) is still handled, not lost with the connection.
            queues.push(queue.clone());
            queue.close_with(Some(websocket::close_frame(close_code::GOING_AWAY, "")));
            session.shutting = true;
            continue;
        }
        drop(session);
        close_session(eio, &sid, SERVER_SHUTDOWN);
    }
    queues
}

/// WebSocket sessions the shutdown closed whose client has not answered yet.
pub fn shutting_pending<A: App>(eio: &Eio<A>) -> usize {
    eio.sessions
        .borrow()
        .map
        .values()
        .filter(|cell| cell.try_borrow().is_ok_and(|s| s.shutting))
        .count()
}

/// Polling sessions closed by the shutdown that have not collected their CLOSE yet.
pub fn farewells_pending<A: App>(eio: &Eio<A>) -> usize {
    eio.sessions.borrow().farewell.len()
}

/// Ends a session: tells the application, releases a pending poll, closes the WebSocket.
/// A pending poll gets CLOSE (`1`), or NOOP (`6`) when the client asked to close: it already
/// knows, and the poll only has to end cleanly.
pub fn close_session<A: App>(eio: &Rc<Eio<A>>, sid: &str, reason: &str) {
    let Some(cell) = eio.sessions.borrow_mut().map.remove(sid) else {
        return;
    };
    crate::stats::gauge(|s| &s.sessions, -1);
    let mut guard = cell.borrow_mut();
    let s = &mut *guard;
    let window = eio.config.recovery_window.filter(|_| recoverable(reason));
    match (s.sio_sid.take(), s.pid.take(), window) {
        (Some(sio_sid), Some(pid), Some(window)) => {
            eio.app.on_detach(&s.sid, &s.data);
            let held = Held {
                sid: s.sid.clone(),
                sio_sid,
                pid,
                kind: s.kind,
                data: s.data.clone(),
                expires: Instant::now() + window,
            };
            match shard_of_sid(&held.pid).filter(|home| *home != eio.id && *home < eio.shards) {
                Some(home) => eio.app.send(
                    home,
                    SessionMsg::Hold {
                        held: Box::new(held),
                    },
                ),
                None => hold(eio, held),
            }
        }
        (Some(_), _, _) => {
            eio.app.on_disconnect(eio, &s.sid, &mut s.data);
            eio.app.on_detach(&s.sid, &s.data);
        }
        (None, _, _) => eio.app.on_detach(&s.sid, &s.data),
    }
    match &mut s.transport {
        Transport::Polling { waiting, .. } => {
            if let Some(tx) = waiting.take() {
                let packet: &'static [u8] = if reason == CLIENT_CLOSE { b"6" } else { b"1" };
                let _ = tx.send(payload_response(Bytes::from_static(packet)));
            } else if reason == SERVER_SHUTDOWN {
                eio.sessions.borrow_mut().farewell.insert(s.sid.clone());
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

/// Why a session ended decides whether its socket may be recovered: a dropped connection
/// (the client's transport closed, it sent CLOSE, it stopped answering pings or reading) may; a
/// namespace disconnect (either side), a protocol error or a shutdown may not.
fn recoverable(reason: &str) -> bool {
    matches!(
        reason,
        "transport close" | CLIENT_CLOSE | "ping timeout" | "slow consumer"
    )
}

/// A new private session id naming this shard (as session ids do), so a recovery request that
/// lands elsewhere finds where the socket is held.
pub(crate) fn new_pid(shard: usize) -> String {
    new_sid(shard)
}

/// Holds a socket for recovery on this shard (the one its `pid` names). When the shard already
/// holds `max_held`, the socket whose window closes first is let go now.
fn hold<A: App>(eio: &Rc<Eio<A>>, held: Held<A>) {
    let (evicted, start_expiry) = {
        let mut sessions = eio.sessions.borrow_mut();
        let mut evicted = None;
        if sessions.held.len() >= eio.config.max_held.max(1) {
            let oldest = sessions
                .held
                .iter()
                .min_by_key(|(_, h)| h.expires)
                .map(|(pid, _)| pid.clone());
            evicted = oldest.and_then(|pid| sessions.held.remove(&pid));
        }
        sessions.held.insert(held.pid.clone(), held);
        let start = !sessions.expiry_running;
        sessions.expiry_running = true;
        (evicted, start)
    };
    crate::stats::gauge(|s| &s.sessions_held, 1);
    if let Some(h) = evicted {
        crate::stats::gauge(|s| &s.sessions_held, -1);
        let_go(eio, h);
    }
    if start_expiry {
        glommio::spawn_local(expire_held(eio.clone())).detach();
    }
}

/// Takes a held socket out of this shard (it is being recovered); `None` when it is unknown or
/// its window closed (then it is let go now, if the expiry task had not yet).
pub(crate) fn take_held<A: App>(eio: &Rc<Eio<A>>, pid: &str) -> Option<Held<A>> {
    let held = eio.sessions.borrow_mut().held.remove(pid)?;
    crate::stats::gauge(|s| &s.sessions_held, -1);
    if held.expires <= Instant::now() {
        let_go(eio, held);
        return None;
    }
    Some(held)
}

/// A socket that was held (and is no longer) will not come back: the application sees it
/// disconnect now.
pub(crate) fn let_go<A: App>(eio: &Rc<Eio<A>>, mut held: Held<A>) {
    crate::stats::bump(|s| &s.recovery_expired);
    eio.app.on_disconnect(eio, &held.sid, &mut held.data);
}

/// Lets held sockets go when their window closes; runs while any is held.
async fn expire_held<A: App>(eio: Rc<Eio<A>>) {
    loop {
        let next = {
            let mut sessions = eio.sessions.borrow_mut();
            match sessions.held.values().map(|h| h.expires).min() {
                Some(at) => at,
                None => {
                    sessions.expiry_running = false;
                    return;
                }
            }
        };
        glommio::timer::sleep(next.saturating_duration_since(Instant::now())).await;
        let now = Instant::now();
        let_go_where(&eio, |h| h.expires <= now);
    }
}

/// Takes the held sockets `pred` picks out of this shard and lets them go.
fn let_go_where<A: App>(eio: &Rc<Eio<A>>, mut pred: impl FnMut(&Held<A>) -> bool) {
    let gone: Vec<Held<A>> = eio
        .sessions
        .borrow_mut()
        .held
        .extract_if(|_, h| pred(h))
        .map(|(_, h)| h)
        .collect();
    for held in gone {
        crate::stats::gauge(|s| &s.sessions_held, -1);
        let_go(eio, held);
    }
}

/// Lets go now of the held sockets whose data matches `pred` (they may not come back, e.g. the
/// application ended what they belong to).
pub fn forget_held<A: App>(eio: &Rc<Eio<A>>, mut pred: impl FnMut(&A::Data) -> bool) {
    let_go_where(eio, |h| pred(&h.data));
}

/// Sockets held for recovery on this shard.
pub fn held_len<A: App>(eio: &Eio<A>) -> usize {
    eio.sessions.borrow().held.len()
}

/// Heartbeat of one session and, until it joins a namespace, its Socket.IO connect deadline
/// (`connect_by`): one task per session for both; ends when the session ends or moves.
async fn keepalive<A: App>(
    eio: Rc<Eio<A>>,
    sid: String,
    session: Weak<RefCell<Session<A>>>,
    mut connect_by: Option<Instant>,
) {
    let interval = eio.config.ping_interval;
    let timeout = eio.config.ping_timeout;
    loop {
        let ping_at = Instant::now() + interval;
        // A deadline that passed while a pong was awaited is checked at once.
        if let Some(at) = connect_by.filter(|at| *at < ping_at) {
            glommio::timer::sleep(at.saturating_duration_since(Instant::now())).await;
            connect_by = None;
            let Some(cell) = session.upgrade() else {
                return;
            };
            let never_connected = cell.borrow().sio_sid.is_none() && !cell.borrow().ever_connected;
            drop(cell);
            if never_connected {
                close_session(&eio, &sid, "connect timeout");
                return;
            }
        }
        glommio::timer::sleep(ping_at.saturating_duration_since(Instant::now())).await;
        let Some(cell) = session.upgrade() else {
            return;
        };
        {
            let mut s = cell.borrow_mut();
            s.pong_pending = true;
        }
        drop(cell);
        send_packets(&eio, &sid, vec![Bytes::from_static(b"2")]);
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
            close_session(&eio, &sid, "ping timeout");
            return;
        }
    }
}
