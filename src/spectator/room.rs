//! A match's spectator room, kept on the match's owner shard: its players (the connected ingest
//! clients), its spectators in join order, its lobby state, and its viewer stream (states by seq,
//! deltas, the spectator delay: `viewer::stream`). Builds every room message once and publishes
//! it through the fan-out (`RoomFrame`); each shard writes to its own spectators and HTTP
//! streams. What derives from the match (states, players, lobby, the room's end) goes through
//! the viewer stream and so waits out the delay; spectator presence does not. Must not touch
//! sockets.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::wire::{self, message};
use crate::budget::Budget;
use crate::shard::Shard;
use crate::shard::messages::{NodeMsg, PlayerInfo, ShardMsg, SpectatorInfo, StreamStart};
use crate::shard::messages::{RoomFrame, ViewerFrames, WsFrames};
use crate::transport::websocket;
use crate::util::uuid_v4;
use crate::viewer::stream::{Audience, Out, SSE_END, ViewerStream};

/// Spectator presence notices (`NewSpectatorJoined`, `SpectatorDisconnected`) a room sends on
/// average at most once per this interval (`PRESENCE_BURST` in quick succession). Each carries the whole
/// current list, so when joins and leaves come faster, only the newest notice is sent — on the
/// next tick the budget allows — and a join/leave storm cannot multiply into every spectator's
/// socket.
pub const PRESENCE_INTERVAL: Duration = Duration::from_millis(250);
const PRESENCE_BURST: f64 = 4.0;

/// A presence notice waiting for the room's presence budget.
#[derive(Debug)]
enum Presence {
    Joined(SpectatorInfo),
    Left { id: String, reason: String },
}

/// Players a room lists (observer and aux clients of one match: ten players and their
/// observers fit many times over). Ingest clients beyond it stay connected and are not listed:
/// what a delayed room holds per message stays small however many aux clients churn.
pub const MAX_ROOM_PLAYERS: usize = 32;

/// What spectators are told of the players and the lobby (as of the released messages). The
/// player list is shared by every message that tells of the same list (one copy per change).
#[derive(Debug, Clone)]
struct RoomView {
    players: Rc<[Value]>,
    /// Bytes of `players` as JSON (what a waiting message counts against the delay's bound).
    bytes: usize,
    lobby: &'static str,
}

/// A room message derived from the match, waiting in the viewer stream.
struct Note {
    text: String,
    view: RoomView,
}

impl Note {
    /// What the note holds: its text and the player list it carries (counted whole even when
    /// shared with the note before it, so the delay's byte bound errs on the safe side).
    fn bytes(&self) -> usize {
        self.text.len() + self.view.bytes
    }
}

pub struct Room {
    pub id: String,
    /// With a spectator delay, the match's public code (`crate::code::public_code`): the only
    /// code public viewers see, in the room's messages and as the states' `groupCode`.
    public: Option<String>,
    players: Vec<PlayerInfo>,
    /// The players as spectators are told of them, built once per change of `players`.
    players_view: Option<(Rc<[Value]>, usize)>,
    spectators: Vec<SpectatorInfo>,
    lobby: &'static str,
    presence_budget: Budget,
    /// The newest presence notice not sent yet (see `PRESENCE_INTERVAL`).
    pending_presence: Option<Presence>,
    viewers: ViewerStream<Note>,
    /// Players and lobby as the released messages told them (what a joining spectator gets).
    view: RoomView,
    /// Spectators that take deltas.
    delta_spectators: usize,
    /// HTTP event streams of the room (on every shard).
    streams: usize,
    /// When the last HTTP stream left (it may come back with its `Last-Event-ID`).
    stream_left: Option<Instant>,
    /// In a cluster, a match taken over from another node: viewers of the old origin's room on
    /// other nodes are not in this room's presence, yet still subscribed to the match, so its
    /// viewer frames (full and delta) are built as if they were.
    inherited: bool,
}

/// How long after the last HTTP stream left the room keeps building deltas, so that a stream
/// that reconnects resumes with deltas instead of a snapshot.
const RESUME_WINDOW: Duration = Duration::from_secs(60);

/// A spectator's join request as the owner receives it.
pub struct JoinRequest {
    pub spectator: SpectatorInfo,
}

impl Room {
    /// A room whose viewers see the match `delay` after the overlays.
    pub fn new(delay: Duration) -> Room {
        Room {
            id: uuid_v4(),
            public: None,
            players: Vec::new(),
            players_view: None,
            spectators: Vec::new(),
            lobby: "waiting",
            presence_budget: Budget::with_burst(Instant::now(), PRESENCE_BURST),
            pending_presence: None,
            viewers: ViewerStream::new(delay),
            view: RoomView {
                players: Rc::from(Vec::new()),
                bytes: 0,
                lobby: "waiting",
            },
            delta_spectators: 0,
            streams: 0,
            stream_left: None,
            inherited: false,
        }
    }

    /// In a cluster: the epoch this node owns the match under (its viewers' seqs go on from it,
    /// see `ViewerStream::fence`).
    pub fn fence(&mut self, epoch: u64) {
        self.viewers.fence(epoch);
    }

    /// Gives the room its public code (with a spectator delay).
    pub fn set_public(&mut self, public: String) {
        self.public = Some(public);
    }

    pub fn public(&self) -> Option<&str> {
        self.public.as_deref()
    }

    /// The code viewers are shown for the match `code`: its public code when it has one.
    fn shown<'a>(&'a self, code: &'a str) -> &'a str {
        self.public.as_deref().unwrap_or(code)
    }

    fn audience(&self) -> Audience {
        Audience {
            spectators: !self.spectators.is_empty() || self.inherited,
            delta_spectators: self.delta_spectators > 0 || self.inherited,
            streams: self.streams > 0,
        }
    }

    /// The match was taken over from another node (see `inherited`).
    pub fn inherit_viewers(&mut self) {
        self.inherited = true;
    }

    /// A new state of the match. Without a delay its viewer frames are returned, to go out in one
    /// publication with the overlays' state; with one, it waits and is published when due.
    pub fn push_state(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        value: impl FnOnce() -> Rc<Value>,
        json: Rc<str>,
    ) -> Option<Box<ViewerFrames>> {
        let now = Instant::now();
        let wants_patch = self.delta_spectators > 0
            || self.inherited
            || self.streams > 0
            || self
                .stream_left
                .is_some_and(|at| now.duration_since(at) < RESUME_WINDOW);
        let from = self.authority();
        match &self.public {
            // Public viewers never see the group code: their states carry the public code, set
            // in the value a delayed match builds anyway; the viewers' JSON is written only
            // for a state kept whole (the others travel as patches of that value).
            Some(public) => {
                let mut v = Rc::try_unwrap(value()).unwrap_or_else(|rc| (*rc).clone());
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("groupCode".into(), Value::String(public.clone()));
                }
                let v = Rc::new(v);
                self.viewers.push_state_with(
                    now,
                    move || v,
                    |v| Rc::from(v.map(Value::to_string).unwrap_or_default()),
                    from,
                    wants_patch,
                );
            }
            None => self.viewers.push_state(now, value, json, from, wants_patch),
        }
        if !self.viewers.delay().is_zero() {
            self.release(shard, code);
            return None;
        }
        let audience = self.audience();
        let out = self
            .viewers
            .release_due(now, audience, Note::bytes, &mut |b| encode(shard, b));
        // This state is the last item released: it goes out with the overlays' state.
        self.emit(shard, code, out)
    }

    /// Publishes what the viewer stream has due (called on every change and every tick).
    pub fn release(&mut self, shard: &Rc<Shard>, code: &str) {
        if !self.viewers.has_waiting() {
            return;
        }
        let audience = self.audience();
        let out = self
            .viewers
            .release_due(Instant::now(), audience, Note::bytes, &mut |b| {
                encode(shard, b)
            });
        if let Some(frames) = self.emit(shard, code, out) {
            publish_viewers(shard, code, frames);
        }
    }

    /// Publishes what the viewer stream released, in order, but the last state, which is
    /// returned (the caller publishes it). Messages released together go out as one frame
    /// sequence: before the state that follows them, in the same write to each spectator
    /// (`ViewerFrames::lead`), else on their own.
    fn emit(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        out: Vec<Out<Note>>,
    ) -> Option<Box<ViewerFrames>> {
        let mut lead: Vec<u8> = Vec::new();
        let mut held: Option<Box<ViewerFrames>> = None;
        for o in out {
            if let Some(frames) = held.take() {
                publish_viewers(shard, code, frames);
            }
            match o {
                Out::State(Some(mut frames)) => {
                    if !lead.is_empty() {
                        frames.lead = Some(Bytes::from(std::mem::take(&mut lead)));
                    }
                    held = Some(frames);
                }
                Out::State(None) => self.send_lead(shard, code, &mut lead),
                Out::Message(note) => {
                    self.view = note.view;
                    if !self.spectators.is_empty() {
                        lead.extend_from_slice(&websocket::text_frame(note.text.as_bytes()));
                    }
                }
                Out::Close => {
                    self.send_lead(shard, code, &mut lead);
                    self.close_now(shard, code);
                }
            }
        }
        self.send_lead(shard, code, &mut lead);
        held
    }

    /// Sends released messages that no state follows, as one room message.
    fn send_lead(&self, shard: &Rc<Shard>, code: &str, lead: &mut Vec<u8>) {
        if !lead.is_empty() {
            broadcast(shard, code, Bytes::from(std::mem::take(lead)), None, false);
        }
    }

    /// Whether the viewer stream still holds something back (a removed match's room lives on
    /// until it is all out).
    pub fn next_due(&self) -> Option<Instant> {
        self.viewers.next_due()
    }

    /// The seq and snapshot JSON viewers see now (`GET /matches/{code}`).
    pub fn released(&self) -> Option<(u64, &str)> {
        self.viewers.released()
    }

    /// Bytes the viewer stream holds back now and at most so far.
    pub fn waiting_bytes(&self) -> (usize, usize) {
        self.viewers.waiting_bytes()
    }

    pub fn stream_count(&self) -> usize {
        self.streams
    }

    /// An HTTP event stream joins: it is told where it starts (on its own shard).
    pub fn stream_join(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        to: (usize, u64, String),
        last_seq: Option<u64>,
    ) {
        self.streams += 1;
        let (seq, events, resumed) = self.viewers.stream_start(last_seq);
        let start = Some(StreamStart {
            code: code.to_string(),
            seq,
            events,
            resumed,
        });
        match crate::cluster::of(shard).filter(|c| c.is_other(&to.2)) {
            Some(cluster) => cluster.direct(
                &to.2,
                NodeMsg::StreamStart {
                    shard: to.0,
                    conn: to.1,
                    start,
                },
            ),
            None => shard.send_to(to.0, ShardMsg::StreamStart { conn: to.1, start }),
        }
    }

    pub fn stream_leave(&mut self) {
        self.streams = self.streams.saturating_sub(1);
        if self.streams == 0 {
            self.stream_left = Some(Instant::now());
        }
    }

    fn live_view(&mut self) -> RoomView {
        let (players, bytes) = self
            .players_view
            .get_or_insert_with(|| {
                let list: Vec<Value> = self.players.iter().map(PlayerInfo::json).collect();
                let bytes = list.iter().map(|v| v.to_string().len() + 1).sum();
                (Rc::from(list), bytes)
            })
            .clone();
        RoomView {
            players,
            bytes,
            lobby: self.lobby,
        }
    }

    pub fn spectator_count(&self) -> usize {
        self.spectators.len()
    }

    pub fn authority(&self) -> Value {
        self.players
            .iter()
            .find(|p| p.is_authority)
            .map_or(Value::Null, |p| Value::String(p.id.clone()))
    }

    fn spectator_list(&self, limit: usize) -> Value {
        Value::Array(
            self.spectators
                .iter()
                .take(limit)
                .map(SpectatorInfo::json)
                .collect(),
        )
    }

    /// Sends a message derived from the match to every spectator of the room (on every shard),
    /// through the viewer stream (it waits out the delay); the players and lobby it tells of
    /// become what joining spectators are told when it is released.
    fn send_all(&mut self, shard: &Rc<Shard>, code: &str, text: String) {
        self.hold_for_state(text);
        self.release(shard, code);
    }

    /// Like `send_all`, but the message waits in the viewer stream for the match's next state
    /// (its owner has one scheduled), to go out in the same write as that state.
    fn hold_for_state(&mut self, text: String) {
        let note = Note {
            text,
            view: self.live_view(),
        };
        self.viewers.push_message(Instant::now(), note, Note::bytes);
    }

    /// Sends a presence notice to the spectators now (never delayed).
    fn send_presence(&self, shard: &Rc<Shard>, code: &str, text: String, except: Option<&str>) {
        if self.spectators.is_empty() {
            return;
        }
        let frame = websocket::text_frame(text.as_bytes());
        broadcast(shard, code, frame, except, false);
    }

    pub fn player_joined(&mut self, shard: &Rc<Shard>, code: &str, player: PlayerInfo) {
        if self.players.len() >= MAX_ROOM_PLAYERS {
            tracing::debug!(
                "match {code}: ingest client not listed to spectators (over {MAX_ROOM_PLAYERS})"
            );
            return;
        }
        self.players_view = None;
        let authority = player.is_authority;
        if authority {
            for p in &mut self.players {
                p.is_authority = false;
            }
        }
        let text = message("PlayerJoined", json!({ "player": player.json() }));
        let id = player.id.clone();
        self.players.push(player);
        self.send_all(shard, code, text);
        if authority {
            let text = message(
                "AuthorityChanged",
                json!({"authority_player": id, "you_are_authority": false}),
            );
            self.send_all(shard, code, text);
        }
    }

    pub fn player_left(&mut self, shard: &Rc<Shard>, code: &str, id: &str) {
        let Some(pos) = self.players.iter().position(|p| p.id == id) else {
            return;
        };
        let player = self.players.remove(pos);
        self.players_view = None;
        let text = message("PlayerLeft", json!({ "player_id": player.id }));
        self.send_all(shard, code, text);
        if player.is_authority {
            let text = message(
                "AuthorityChanged",
                json!({"authority_player": null, "you_are_authority": false}),
            );
            self.send_all(shard, code, text);
        }
    }

    /// The match's lobby state after an event; announces a change (and the game start).
    /// `state_follows`: the owner has a publication of the match scheduled, and the messages go
    /// out with it (one write per spectator for the messages and the state, instead of one more
    /// round of writes before it).
    pub fn lobby_state(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        state: &'static str,
        match_id: &str,
        state_follows: bool,
    ) {
        if state == self.lobby {
            return;
        }
        self.lobby = state;
        self.hold_for_state(message(
            "LobbyStateChanged",
            json!({ "lobby_state": state }),
        ));
        if state == "finalized" {
            let peers: Vec<Value> = self
                .players
                .iter()
                .map(|p| json!({"player_id": p.id, "player_name": p.name, "is_authority": p.is_authority}))
                .collect();
            self.hold_for_state(message(
                "GameStarting",
                json!({"match_id": match_id, "peer_connections": peers}),
            ));
        }
        if !state_follows {
            self.release(shard, code);
        }
    }

    /// A join: answers the joiner (`SpectatorJoined` then `GameData`) or fails it, then tells the
    /// others while the room is small enough.
    pub fn join(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        req: JoinRequest,
        current: impl FnOnce(&Room) -> Bytes,
    ) {
        let cfg = &shard.config;
        let s = req.spectator;
        if cfg.max_spectators_per_room > 0 && self.spectators.len() >= cfg.max_spectators_per_room {
            direct(
                shard,
                &s,
                vec![wire::join_failed(
                    "TOO_MANY_SPECTATORS",
                    "The room is full of spectators.",
                )],
                None,
            );
            return;
        }
        if s.delta {
            self.delta_spectators += 1;
        }
        self.spectators.push(s.clone());
        let limit = cfg.spectator_list_limit;
        let delay = self.viewers.delay();
        let joined = message(
            "SpectatorJoined",
            json!({
                "room_id": self.id,
                "room_code": self.shown(code),
                "spectator_id": s.id,
                "game_name": cfg.game_name,
                "current_players": &*self.view.players,
                "current_spectators": self.spectator_list(limit),
                "spectator_count": self.spectators.len(),
                "lobby_state": self.view.lobby,
                "delay_ms": delay.as_millis() as u64,
                "delta": s.delta,
            }),
        );
        // The state viewers see now; before the first broadcast of a live room, the current
        // one (seq 0: the next state comes whole). A delayed room shows nothing newer.
        let (seq, data) = match self.viewers.released_game_data() {
            Some((seq, data)) => (seq, Some(data)),
            None if delay.is_zero() => (0, Some(current(self))),
            None => (0, None),
        };
        direct(
            shard,
            &s,
            vec![joined],
            Some(super::Joined {
                code: code.to_string(),
                spectator_id: s.id.clone(),
                room_id: self.id.clone(),
                game_data: data,
                seq,
                delta: s.delta,
            }),
        );
        self.presence(shard, code, Presence::Joined(s));
    }

    /// Tells the other spectators of a join or leave while the room is small enough, within the
    /// room's presence budget; otherwise the notice waits (replacing an older waiting one).
    fn presence(&mut self, shard: &Rc<Shard>, code: &str, notice: Presence) {
        if self.spectators.len() > shard.config.spectator_presence_limit {
            self.pending_presence = None;
            return;
        }
        self.pending_presence = Some(notice);
        self.flush_presence(shard, code);
    }

    /// Sends the waiting presence notice if the budget allows (also called by the match tick).
    pub fn flush_presence(&mut self, shard: &Rc<Shard>, code: &str) {
        if self.pending_presence.is_none()
            || !self.presence_budget.take(Instant::now(), PRESENCE_INTERVAL)
        {
            return;
        }
        let Some(notice) = self.pending_presence.take() else {
            return;
        };
        let cfg = &shard.config;
        if self.spectators.len() > cfg.spectator_presence_limit {
            return;
        }
        let list = self.spectator_list(cfg.spectator_list_limit);
        let count = self.spectators.len();
        match notice {
            Presence::Joined(s) => {
                let text = message(
                    "NewSpectatorJoined",
                    json!({"spectator": s.json(), "current_spectators": list, "spectator_count": count}),
                );
                self.send_presence(shard, code, text, Some(&s.id));
            }
            Presence::Left { id, reason } => {
                let text = message(
                    "SpectatorDisconnected",
                    json!({"spectator_id": id, "reason": reason, "current_spectators": list,
                           "spectator_count": count}),
                );
                self.send_presence(shard, code, text, None);
            }
        }
    }

    /// A spectator left (`voluntary_leave` or `disconnected`).
    pub fn leave(&mut self, shard: &Rc<Shard>, code: &str, spectator_id: &str, reason: &str) {
        let Some(pos) = self.spectators.iter().position(|s| s.id == spectator_id) else {
            return;
        };
        let s = self.spectators.remove(pos);
        if s.delta {
            self.delta_spectators = self.delta_spectators.saturating_sub(1);
        }
        if reason == "voluntary_leave" {
            let text = message(
                "SpectatorLeft",
                json!({"room_id": self.id, "room_code": self.shown(code), "reason": reason,
                       "current_spectators": [], "spectator_count": self.spectators.len()}),
            );
            direct(shard, &s, vec![text], None);
        }
        let notice = Presence::Left {
            id: s.id,
            reason: reason.to_string(),
        };
        self.presence(shard, code, notice);
    }

    /// The match ended or expired: after what the delay still holds, everyone gets
    /// `SpectatorLeft` (`room_closed`) and HTTP streams their `end`. Returns whether the room
    /// still holds something back (its owner keeps it until `next_due` passes).
    pub fn close(&mut self, shard: &Rc<Shard>, code: &str) -> bool {
        self.viewers.push_close(Instant::now());
        self.release(shard, code);
        self.viewers.has_waiting()
    }

    fn close_now(&mut self, shard: &Rc<Shard>, code: &str) {
        if self.spectators.is_empty() && self.streams == 0 {
            return;
        }
        let text = message(
            "SpectatorLeft",
            json!({"room_id": self.id, "room_code": self.shown(code), "reason": "room_closed",
                   "current_spectators": [], "spectator_count": 0}),
        );
        let frame = websocket::text_frame(text.as_bytes());
        broadcast(shard, code, frame, None, true);
        self.spectators.clear();
        self.delta_spectators = 0;
        self.streams = 0;
    }
}

/// A text message as WebSocket frames, plain and deflated.
fn encode(shard: &Shard, text: &[u8]) -> WsFrames {
    WsFrames {
        plain: websocket::text_frame(text),
        deflate: Some(websocket::compressed_text_frame(
            &mut shard.compressor.borrow_mut(),
            text,
        )),
    }
}

/// Publishes a released state to the room's viewers on every shard (through the fan-out).
fn publish_viewers(shard: &Rc<Shard>, code: &str, frames: Box<ViewerFrames>) {
    shard.fanout.publish(
        shard,
        code,
        RoomFrame::State {
            overlay: None,
            viewers: Some(frames),
        },
    );
}

/// Publishes a message to the room's spectators on every shard (through the fan-out); the one
/// that closes the room also ends its HTTP streams.
fn broadcast(shard: &Rc<Shard>, code: &str, plain: Bytes, except: Option<&str>, close_room: bool) {
    shard.fanout.publish(
        shard,
        code,
        RoomFrame::Message {
            frames: WsFrames {
                plain,
                deflate: None,
            },
            except: except.map(String::from),
            close_room,
            stream: close_room.then(|| Bytes::from_static(SSE_END)),
        },
    );
}

/// Sends messages to one spectator's connection (on its shard).
pub fn direct(
    shard: &Rc<Shard>,
    s: &SpectatorInfo,
    texts: Vec<String>,
    joined: Option<super::Joined>,
) {
    let frames: Vec<Bytes> = texts.into_iter().map(Bytes::from).collect();
    if let Some(cluster) = crate::cluster::of(shard).filter(|c| c.is_other(&s.node)) {
        // A spectator on another node of the cluster.
        cluster.direct(
            &s.node,
            NodeMsg::SpectatorDirect {
                shard: s.shard,
                conn: s.conn,
                texts: frames,
                joined,
            },
        );
        return;
    }
    if s.shard == shard.id {
        super::deliver_local(shard, s.conn, frames, joined);
    } else {
        shard.mesh.send(
            s.shard,
            ShardMsg::SpectatorDirect {
                conn: s.conn,
                texts: frames,
                joined,
            },
        );
    }
}
