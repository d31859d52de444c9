//! Spectators on the broadcast port (`/ws`, `/v2/ws`): a plain-WebSocket JSON protocol
//! (`spectator-protocol.md`). This file owns spectator connections on their shard — reading and
//! validating their messages, heartbeats, and writing room frames to them. The room itself lives
//! with the match on its owner shard (`room.rs`).

pub mod room;
pub mod wire;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite};
use serde_json::Value;

use crate::fanout::subscribers::SpectatorSink;
use crate::shard::Shard;
use crate::shard::messages::{Joined, LeaveReason, SpectatorInfo};
use crate::shard::messages::{MatchMsg, ShardMsg};
use crate::transport::http::{Reader, Request, Response, write_response};
use crate::transport::outbound::{FrameKind, OutQueue, run_writer};
use crate::transport::websocket::{self, Incoming, MessageReader, close_code};

struct Local {
    queue: Rc<OutQueue>,
    deflate: bool,
    /// A join was sent to the room and is not answered yet. Once in a room, the connection is
    /// a subscriber of it (`fanout::subscribers` keeps the membership).
    pending: bool,
    /// Joins and leaves of this connection (see `MEMBERSHIP_INTERVAL`).
    changes: crate::budget::Budget,
    /// Joins and leaves refused by that budget.
    refused_changes: u32,
    /// Full states asked for with `Resync` (see `RESYNC_INTERVAL`).
    resyncs: crate::budget::Budget,
}

/// A connection may ask for a full state (`Resync`) on average once per this interval
/// (`RESYNC_BURST` in quick succession): a client that lost track needs one, and each costs a
/// whole snapshot of egress. Faster requests get `RATE_LIMITED`.
const RESYNC_INTERVAL: Duration = Duration::from_secs(1);
const RESYNC_BURST: f64 = 3.0;

/// A connection may join or leave on average once per this interval (`MEMBERSHIP_BURST` in quick
/// succession): a real viewer joins once. Faster requests get `RATE_LIMITED`.
const MEMBERSHIP_INTERVAL: Duration = Duration::from_secs(1);
const MEMBERSHIP_BURST: f64 = 5.0;
/// Refused joins/leaves after which the connection is closed (1008, policy violation).
const MAX_REFUSED_CHANGES: u32 = 20;

/// The spectator connections of one shard.
#[derive(Default)]
pub struct Spectators {
    next: u64,
    conns: HashMap<u64, Local>,
}

/// This shard's spectator connections (the spectator service's shard-local state).
pub fn spectators(shard: &Shard) -> Rc<std::cell::RefCell<Spectators>> {
    shard.state()
}

impl Spectators {
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// Player actions a spectator may not take.
const PLAYER_ACTIONS: &[&str] = &[
    "GameData",
    "PlayerReady",
    "AuthorityRequest",
    "JoinRoom",
    "CreateRoom",
    "LeaveRoom",
    "StartGame",
    "KickPlayer",
];

fn send_text(queue: &OutQueue, text: &str) {
    queue.push(websocket::text_frame(text.as_bytes()), FrameKind::Normal);
}

/// Serves one spectator WebSocket until it closes.
pub async fn run<R, W>(shard: &Rc<Shard>, req: Request, reader: &mut Reader<R>, mut writer: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let direct_socket = req.direct.clone();
    let neg = {
        // The request and the 101 answer are let go once answered: a spectator stays long.
        let (resp, neg) = match websocket::accept(&req) {
            Ok(v) => v,
            Err(msg) => {
                let _ = write_response(&mut writer, &Response::text(400, msg), false).await;
                return;
            }
        };
        drop(req);
        // Which shard serves this spectator (for operators and tests).
        let resp = resp.with_header("X-Spectra-Shard", shard.id.to_string());
        if write_response(&mut writer, &resp, true).await.is_err() {
            return;
        }
        neg
    };
    let queue = OutQueue::new();
    // (dropped when this returns, before the connection's socket can close)
    let _direct = direct_socket.map(|socket| queue.send_directly(socket));
    glommio::spawn_local(run_writer(queue.clone(), writer)).detach();
    let conn = {
        let sp_cell = spectators(shard);
        let mut sp = sp_cell.borrow_mut();
        sp.next += 1;
        let id = sp.next;
        sp.conns.insert(
            id,
            Local {
                queue: queue.clone(),
                deflate: neg.deflate,
                pending: false,
                changes: crate::budget::Budget::with_burst(Instant::now(), MEMBERSHIP_BURST),
                resyncs: crate::budget::Budget::with_burst(Instant::now(), RESYNC_BURST),
                refused_changes: 0,
            },
        );
        id
    };
    crate::metrics::gauge(|s| &s.spectators, 1);
    let mut messages = MessageReader::new(neg, shard.config.spectator_max_message);
    let idle_limit = shard.config.ping_interval + shard.config.ping_timeout;
    let mut last_activity = Instant::now();
    let mut pinged = false;
    loop {
        match messages.next(&mut reader.buf) {
            Ok(Some(msg)) if !queue.is_open() => {
                // The server closed this connection (its close frame is queued): what the peer
                // still sends is read and dropped until it answers the close, so the socket is
                // not reset under the close frame (the peer would see 1006 instead).
                if matches!(msg, Incoming::Close(_)) {
                    break;
                }
            }
            Ok(Some(msg)) => {
                last_activity = Instant::now();
                pinged = false;
                match msg {
                    Incoming::Text(t) => on_text(shard, conn, &queue, &t),
                    Incoming::Binary(_) => send_text(
                        &queue,
                        &wire::error("INVALID_INPUT", "Invalid client message"),
                    ),
                    Incoming::Ping(p) => {
                        queue.push(websocket::pong_frame(&p), FrameKind::Normal);
                    }
                    Incoming::Pong => {}
                    Incoming::Close(_) => {
                        queue.close_with(Some(websocket::close_frame(close_code::NORMAL, "")));
                        break;
                    }
                }
            }
            Ok(None) => {
                let wait = if pinged {
                    idle_limit.saturating_sub(last_activity.elapsed())
                } else {
                    shard
                        .config
                        .ping_interval
                        .saturating_sub(last_activity.elapsed())
                };
                let stopped = futures_lite::future::or(
                    async {
                        queue.stopped().await;
                        true
                    },
                    async {
                        glommio::timer::sleep(wait.max(Duration::from_millis(1))).await;
                        false
                    },
                );
                let filled =
                    futures_lite::future::or(async { Some(Ok(reader.fill().await)) }, async {
                        stopped.await.then_some(Err(()))
                    })
                    .await;
                let filled = match filled {
                    Some(Err(())) => {
                        // Stopped by the server and the peer did not answer: give it up (this
                        // also ends a writer blocked on a peer that does not read).
                        queue.mark_dead();
                        break;
                    }
                    Some(Ok(r)) => Some(r),
                    None => None,
                };
                match filled {
                    Some(Ok(n)) if n > 0 => {}
                    Some(_) => {
                        queue.mark_dead();
                        break;
                    }
                    None if last_activity.elapsed() >= idle_limit => {
                        queue.close_with(Some(websocket::close_frame(
                            close_code::GOING_AWAY,
                            "idle timeout",
                        )));
                        break;
                    }
                    None if !pinged && last_activity.elapsed() >= shard.config.ping_interval => {
                        queue.push(websocket::ping_frame(), FrameKind::Normal);
                        pinged = true;
                    }
                    None => {}
                }
            }
            Err(e) => {
                if e.code == close_code::TOO_BIG {
                    send_text(
                        &queue,
                        &wire::error("MESSAGE_TOO_LARGE", "Message too large"),
                    );
                }
                queue.close_with(Some(websocket::close_frame(e.code, e.reason)));
                break;
            }
        }
    }
    disconnected(shard, conn);
}

/// Server shutdown: every spectator connection of this shard gets a 1001 close frame after what
/// is already queued; returns the queues to wait for.
pub fn close_all(shard: &Rc<Shard>) -> Vec<Rc<OutQueue>> {
    let queues: Vec<Rc<OutQueue>> = spectators(shard)
        .borrow()
        .conns
        .values()
        .map(|c| c.queue.clone())
        .collect();
    for queue in &queues {
        queue.close_with(Some(websocket::close_frame(
            close_code::GOING_AWAY,
            "server shutting down",
        )));
    }
    queues
}

fn on_text(shard: &Rc<Shard>, conn: u64, queue: &OutQueue, text: &str) {
    let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(text).ok();
    let Some(msg) = parsed else {
        return send_text(
            queue,
            &wire::error("INVALID_INPUT", "Invalid client message"),
        );
    };
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "Ping" => send_text(queue, r#"{"type":"Pong"}"#),
        "JoinAsSpectator" => join(shard, conn, queue, msg.get("data")),
        "LeaveSpectator" => leave(shard, conn, queue),
        "Resync" => resync(shard, conn, queue),
        k if PLAYER_ACTIONS.contains(&k) => send_text(
            queue,
            &wire::error(
                "SPECTATOR_READ_ONLY",
                "Spectators are read-only and cannot do that.",
            ),
        ),
        _ => send_text(
            queue,
            &wire::error("INVALID_INPUT", "Invalid client message"),
        ),
    }
}

/// `Resync`: the newest full state of the connection's room, within its resync budget.
fn resync(shard: &Rc<Shard>, conn: u64, queue: &OutQueue) {
    let allowed = spectators(shard)
        .borrow_mut()
        .conns
        .get_mut(&conn)
        .is_some_and(|l| l.resyncs.take(Instant::now(), RESYNC_INTERVAL));
    if !allowed {
        return send_text(
            queue,
            &wire::error("RATE_LIMITED", "Too many Resync requests; wait a second."),
        );
    }
    let spectating = crate::fanout::subscribers::of(shard)
        .borrow_mut()
        .resync(conn);
    if !spectating {
        send_text(
            queue,
            &wire::error("INVALID_INPUT", "Not spectating a room."),
        );
    }
}

/// Spends one membership change of the connection, or refuses it (and closes a connection that
/// keeps trying).
fn membership_change_allowed(shard: &Rc<Shard>, conn: u64, queue: &OutQueue) -> bool {
    let refused = {
        let sp_cell = spectators(shard);
        let mut sp = sp_cell.borrow_mut();
        let Some(local) = sp.conns.get_mut(&conn) else {
            return false;
        };
        if local.changes.take(Instant::now(), MEMBERSHIP_INTERVAL) {
            return true;
        }
        local.refused_changes += 1;
        local.refused_changes
    };
    send_text(
        queue,
        &wire::error(
            "RATE_LIMITED",
            "Too many join/leave requests; wait a second.",
        ),
    );
    if refused >= MAX_REFUSED_CHANGES {
        tracing::warn!("spectator: connection {conn} closed: join/leave flood");
        queue.close_with(Some(websocket::close_frame(
            close_code::POLICY,
            "join/leave flood",
        )));
    }
    false
}

fn valid_name(name: &str) -> bool {
    let n = name.trim();
    let len = n.chars().count();
    (1..=32).contains(&len) && !n.chars().any(char::is_control)
}

fn join(shard: &Rc<Shard>, conn: u64, queue: &OutQueue, data: Option<&Value>) {
    let field = |k: &str| data.and_then(|d| d.get(k)).and_then(Value::as_str);
    let fail = |code: &str, reason: &str| send_text(queue, &wire::join_failed(code, reason));
    let (Some(game), Some(code), Some(name)) = (
        field("game_name"),
        field("room_code"),
        field("spectator_name"),
    ) else {
        return fail(
            "INVALID_INPUT",
            "game_name, room_code and spectator_name are required.",
        );
    };
    if game.trim().is_empty() || code.trim().is_empty() || !valid_name(name) {
        return fail(
            "INVALID_INPUT",
            "game_name, room_code and spectator_name must be valid.",
        );
    }
    let code = code.trim().to_uppercase();
    if !crate::code::valid_group_code(&code) {
        return fail("INVALID_INPUT", crate::code::INVALID_GROUP_CODE);
    }
    if !shard.config.allow_spectators {
        return fail(
            "SPECTATOR_NOT_ALLOWED",
            "Spectating is disabled on this server.",
        );
    }
    // A valid join reaches the room: it spends the connection's membership budget.
    if !membership_change_allowed(shard, conn, queue) {
        return;
    }
    {
        let sp_cell = spectators(shard);
        let mut sp = sp_cell.borrow_mut();
        let Some(local) = sp.conns.get_mut(&conn) else {
            return;
        };
        if local.pending
            || crate::fanout::subscribers::of(shard)
                .borrow()
                .is_spectating(conn)
        {
            drop(sp);
            return fail(
                "ALREADY_SPECTATING",
                "This connection is already spectating a room.",
            );
        }
        if !game.eq_ignore_ascii_case(&shard.config.game_name) {
            drop(sp);
            return fail("ROOM_NOT_FOUND", "The requested room could not be found.");
        }
        local.pending = true;
    }
    let delta = data.and_then(|d| d.get("delta")).and_then(Value::as_bool) == Some(true);
    let spectator = SpectatorInfo {
        id: crate::util::uuid_v4(),
        name: name.trim().to_string(),
        connected_at: crate::util::now_rfc3339(),
        shard: shard.id,
        conn,
        delta,
        node: crate::cluster::node_id(shard),
    };
    let owner = shard.owner_of(&code);
    shard.send_to(
        owner,
        ShardMsg::Match(MatchMsg::SpectatorJoin {
            code,
            spectator,
            via_public: false,
        }),
    );
}

fn leave(shard: &Rc<Shard>, conn: u64, queue: &OutQueue) {
    let member = crate::fanout::subscribers::of(shard)
        .borrow()
        .is_spectating(conn);
    if member && !membership_change_allowed(shard, conn, queue) {
        return;
    }
    let left = take_membership(shard, conn);
    match left {
        Some((code, spectator_id)) => send_leave(shard, code, spectator_id, LeaveReason::Voluntary),
        None => send_text(
            queue,
            &wire::error("INVALID_INPUT", "Not spectating a room."),
        ),
    }
}

/// Takes a connection out of its room; returns the room and its spectator id there.
fn take_membership(shard: &Rc<Shard>, conn: u64) -> Option<(String, String)> {
    crate::fanout::subscribers::of(shard)
        .borrow_mut()
        .remove_spectator(conn)
}

fn send_leave(shard: &Rc<Shard>, code: String, spectator_id: String, reason: LeaveReason) {
    shard.send_to(
        shard.owner_of(&code),
        ShardMsg::Match(MatchMsg::SpectatorLeave {
            code,
            spectator_id,
            reason,
        }),
    );
}

fn disconnected(shard: &Rc<Shard>, conn: u64) {
    crate::metrics::gauge(|s| &s.spectators, -1);
    if let Some((code, spectator_id)) = take_membership(shard, conn) {
        send_leave(shard, code, spectator_id, LeaveReason::Disconnected);
    }
    spectators(shard).borrow_mut().conns.remove(&conn);
}

/// Messages for one spectator connection of this shard (join answers, leave confirmation).
pub fn deliver_local(shard: &Rc<Shard>, conn: u64, texts: Vec<Bytes>, joined: Option<Joined>) {
    let sp_cell = spectators(shard);
    let mut sp = sp_cell.borrow_mut();
    let Some(local) = sp.conns.get_mut(&conn) else {
        drop(sp);
        // The connection went away while joining: the room must forget it again. Through the
        // inbox even when the owner is this shard (the owner's registry is borrowed right now).
        if let Some(j) = joined {
            let owner = shard.owner_of(&j.code);
            shard.mesh.send(
                owner,
                ShardMsg::Match(MatchMsg::SpectatorLeave {
                    code: j.code,
                    spectator_id: j.spectator_id,
                    reason: LeaveReason::Disconnected,
                }),
            );
        }
        return;
    };
    let queue = local.queue.clone();
    let deflate = local.deflate;
    // Answered: joined (the connection subscribes to the room) or refused.
    local.pending = false;
    drop(sp);
    if let Some(j) = &joined {
        crate::fanout::subscribers::of(shard)
            .borrow_mut()
            .add_spectator(
                &j.code,
                conn,
                SpectatorSink {
                    queue: queue.clone(),
                    deflate,
                    spectator_id: j.spectator_id.clone(),
                    delta: j.delta,
                    seq: std::cell::Cell::new(j.seq),
                },
            );
    }
    for t in texts {
        queue.push(websocket::text_frame(&t), FrameKind::Normal);
    }
    if let Some(j) = joined
        && let Some(data) = j.game_data
    {
        let frame = websocket::text_frame(&data);
        queue.push(frame.clone(), FrameKind::Snapshot);
        let frames = crate::shard::messages::WsFrames {
            plain: frame,
            deflate: None,
        };
        crate::fanout::subscribers::of(shard)
            .borrow_mut()
            .note_latest(&j.code, j.seq, frames);
    }
}
