//! A match's spectator room, kept on the match's owner shard: its players (the connected ingest
//! clients), its spectators in join order, and its lobby state. Builds every room message once
//! and publishes it through the fan-out (`RoomFrame::Message`); each shard writes to its own
//! spectators. Must not touch sockets.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};

use super::wire::{self, message};
use crate::budget::Budget;
use crate::shard::Shard;
use crate::shard::messages::{PlayerInfo, ShardMsg, SpectatorInfo};
use crate::shard::messages::{RoomFrame, WsFrames};
use crate::transport::websocket;
use crate::util::uuid_v4;

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

#[derive(Debug)]
pub struct Room {
    pub id: String,
    players: Vec<PlayerInfo>,
    spectators: Vec<SpectatorInfo>,
    lobby: &'static str,
    presence_budget: Budget,
    /// The newest presence notice not sent yet (see `PRESENCE_INTERVAL`).
    pending_presence: Option<Presence>,
}

/// A spectator's join request as the owner receives it.
pub struct JoinRequest {
    pub spectator: SpectatorInfo,
}

impl Room {
    pub fn new() -> Room {
        Room {
            id: uuid_v4(),
            players: Vec::new(),
            spectators: Vec::new(),
            lobby: "waiting",
            presence_budget: Budget::with_burst(Instant::now(), PRESENCE_BURST),
            pending_presence: None,
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

    /// Sends a small message to every spectator of the room (on every shard).
    fn send_all(&self, shard: &Rc<Shard>, code: &str, text: String, except: Option<&str>) {
        if self.spectators.is_empty() {
            return;
        }
        let frame = websocket::text_frame(text.as_bytes());
        broadcast(shard, code, frame, except, false);
    }

    pub fn player_joined(&mut self, shard: &Rc<Shard>, code: &str, player: PlayerInfo) {
        let authority = player.is_authority;
        if authority {
            for p in &mut self.players {
                p.is_authority = false;
            }
        }
        let text = message("PlayerJoined", json!({ "player": player.json() }));
        let id = player.id.clone();
        self.players.push(player);
        self.send_all(shard, code, text, None);
        if authority {
            let text = message(
                "AuthorityChanged",
                json!({"authority_player": id, "you_are_authority": false}),
            );
            self.send_all(shard, code, text, None);
        }
    }

    pub fn player_left(&mut self, shard: &Rc<Shard>, code: &str, id: &str) {
        let Some(pos) = self.players.iter().position(|p| p.id == id) else {
            return;
        };
        let player = self.players.remove(pos);
        let text = message("PlayerLeft", json!({ "player_id": player.id }));
        self.send_all(shard, code, text, None);
        if player.is_authority {
            let text = message(
                "AuthorityChanged",
                json!({"authority_player": null, "you_are_authority": false}),
            );
            self.send_all(shard, code, text, None);
        }
    }

    /// The match's lobby state after an event; announces a change (and the game start).
    pub fn lobby_state(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        state: &'static str,
        match_id: &str,
    ) {
        if state == self.lobby {
            return;
        }
        self.lobby = state;
        let text = message("LobbyStateChanged", json!({ "lobby_state": state }));
        self.send_all(shard, code, text, None);
        if state == "finalized" {
            let peers: Vec<Value> = self
                .players
                .iter()
                .map(|p| json!({"player_id": p.id, "player_name": p.name, "is_authority": p.is_authority}))
                .collect();
            let text = message(
                "GameStarting",
                json!({"match_id": match_id, "peer_connections": peers}),
            );
            self.send_all(shard, code, text, None);
        }
    }

    /// A join: answers the joiner (`SpectatorJoined` then `GameData`) or fails it, then tells the
    /// others while the room is small enough.
    pub fn join(
        &mut self,
        shard: &Rc<Shard>,
        code: &str,
        req: JoinRequest,
        game_data: impl FnOnce(&Room) -> Bytes,
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
        self.spectators.push(s.clone());
        let limit = cfg.spectator_list_limit;
        let joined = message(
            "SpectatorJoined",
            json!({
                "room_id": self.id,
                "room_code": code,
                "spectator_id": s.id,
                "game_name": cfg.game_name,
                "current_players": self.players.iter().map(PlayerInfo::json).collect::<Vec<_>>(),
                "current_spectators": self.spectator_list(limit),
                "spectator_count": self.spectators.len(),
                "lobby_state": self.lobby,
            }),
        );
        let data = game_data(self);
        direct(
            shard,
            &s,
            vec![joined],
            Some(super::Joined {
                code: code.to_string(),
                spectator_id: s.id.clone(),
                room_id: self.id.clone(),
                game_data: data,
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
                self.send_all(shard, code, text, Some(&s.id));
            }
            Presence::Left { id, reason } => {
                let text = message(
                    "SpectatorDisconnected",
                    json!({"spectator_id": id, "reason": reason, "current_spectators": list,
                           "spectator_count": count}),
                );
                self.send_all(shard, code, text, None);
            }
        }
    }

    /// A spectator left (`voluntary_leave` or `disconnected`).
    pub fn leave(&mut self, shard: &Rc<Shard>, code: &str, spectator_id: &str, reason: &str) {
        let Some(pos) = self.spectators.iter().position(|s| s.id == spectator_id) else {
            return;
        };
        let s = self.spectators.remove(pos);
        if reason == "voluntary_leave" {
            let text = message(
                "SpectatorLeft",
                json!({"room_id": self.id, "room_code": code, "reason": reason,
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

    /// The match ended or expired: everyone gets `SpectatorLeft` (`room_closed`).
    pub fn close(&mut self, shard: &Rc<Shard>, code: &str) {
        if self.spectators.is_empty() {
            return;
        }
        let text = message(
            "SpectatorLeft",
            json!({"room_id": self.id, "room_code": code, "reason": "room_closed",
                   "current_spectators": [], "spectator_count": 0}),
        );
        let frame = websocket::text_frame(text.as_bytes());
        broadcast(shard, code, frame, None, true);
        self.spectators.clear();
    }
}

impl Default for Room {
    fn default() -> Self {
        Room::new()
    }
}

/// Publishes a message to the room's spectators on every shard (through the fan-out).
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
