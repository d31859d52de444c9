//! Everything one shard asks of another. Messages are plain `Send` values; replies travel on
//! oneshot channels or come back as new messages. Owns no behaviour: `router.rs` dispatches them.

use bytes::Bytes;
use futures_channel::oneshot;
use serde_json::{Map, Value, json};

use crate::transport::http::Response;
pub use crate::transport::outbound::FrameSet;
use crate::util::{now_rfc3339, uuid_v4};

/// Where a session can be reached: the shard it was last known on and its Engine.IO id.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub shard: usize,
    pub sid: String,
}

/// Something to do to a session, wherever it lives now.
pub type SessionAction = crate::app::SessionAction;
/// For the Engine.IO sessions of the receiving shard.
pub type SessionMsg = crate::transport::engineio::SessionMsg<crate::app::SpectraApp>;

/// Everything a shard receives, by the domain that handles it; each domain dispatches its own
/// messages (`router.rs` only picks the domain).
pub enum ShardMsg {
    /// Engine.IO sessions of the receiving shard (`transport::engineio::on_shard_msg`).
    Session(SessionMsg),
    /// Matches owned by the receiving shard (`registry::on_shard_msg`).
    Match(MatchMsg),
    /// A frame for every subscriber of the room on the receiving shard (see `fanout`).
    Room { code: String, frame: RoomFrame },
    /// The match was removed: namespace-disconnect the receiving shard's ingest clients of it.
    KickGroup { code: String },
    /// Messages for one spectator connection of the receiving shard.
    SpectatorDirect {
        conn: u64,
        texts: Vec<Bytes>,
        joined: Option<Joined>,
    },
    /// A REST question for the shard owning a code.
    Rest {
        query: RestQuery,
        reply: oneshot::Sender<Response>,
    },
    /// Graceful shutdown, one phase at a time on every shard; the shard answers with its id.
    Shutdown {
        phase: Phase,
        deadline: std::time::Instant,
        done: flume::Sender<usize>,
    },
}

/// For the owner of a match (the receiving shard).
pub enum MatchMsg {
    /// Create or rejoin the match of an observer logon.
    Create {
        logon: Box<ObsLogon>,
        from: SessionRef,
        /// The key and address the match counts against (see `limits::match_slot`).
        owner: crate::limits::MatchOwner,
    },
    /// Which live match of the receiving shard has this Valorant match id (creation order, code).
    FindMatchId {
        match_id: String,
        reply: oneshot::Sender<Vec<MatchIdClaim>>,
    },
    /// An accepted ingest event.
    Event {
        code: String,
        event: spectra_engine::Event,
    },
    /// An auxiliary client of this match went away.
    AuxDisconnected { code: String, player_id: String },
    /// An overlay logged on: send it the current snapshot, if the match exists.
    SnapshotRequest { code: String, from: SessionRef },
    /// An ingest client of the match connected (`join`) or went away (`leave` = its id).
    PlayerPresence {
        code: String,
        join: Option<PlayerInfo>,
        leave: Option<String>,
    },
    /// A spectator asks to join the room of the match.
    SpectatorJoin {
        code: String,
        spectator: SpectatorInfo,
    },
    /// A spectator left (voluntarily or by disconnecting).
    SpectatorLeave {
        code: String,
        spectator_id: String,
        reason: &'static str,
    },
}

// ---- What the messages carry: plain data. ----

/// One message to WebSocket subscribers: a plain text frame and, when built, its
/// permessage-deflate form (no context takeover, so one frame serves every connection).
#[derive(Clone, Debug)]
pub struct WsFrames {
    pub plain: Bytes,
    pub deflate: Option<Bytes>,
}

/// What a room's subscribers receive.
#[derive(Clone, Debug)]
pub enum RoomFrame {
    /// A new state of the match: overlays get `overlay`; spectators get `spectators` (the
    /// `GameData` message; `None` when the room had no spectator, so it was not built).
    State {
        overlay: FrameSet,
        spectators: Option<WsFrames>,
    },
    /// A message for the room's spectators (presence, authority), to all but `except` (a
    /// spectator id); `close_room`: the room ends with it.
    Message {
        frames: WsFrames,
        except: Option<String>,
        close_room: bool,
    },
}

/// A validated observer logon, sent to the owner shard to create or rejoin the match.
#[derive(Debug, Clone)]
pub struct ObsLogon {
    pub group_code: String,
    pub group_secret: String,
    pub obs_name: String,
    /// The whole logon object as the client sent it.
    pub data: Map<String, Value>,
    pub is_supporter: bool,
    /// The key's organisation (backend mode); never taken from the client (QUIRK S3).
    pub organization_id: String,
}

impl ObsLogon {
    /// What the match engine is built from.
    pub fn match_logon(&self) -> crate::engine::Logon {
        crate::engine::Logon {
            group_code: self.group_code.clone(),
            data: self.data.clone(),
            is_supporter: self.is_supporter,
            organization_id: self.organization_id.clone(),
        }
    }
}

/// A connected ingest client of the match.
#[derive(Debug, Clone)]
pub struct PlayerInfo {
    pub id: String,
    pub name: String,
    pub is_authority: bool,
    pub connected_at: String,
}

impl PlayerInfo {
    pub fn new(name: &str, is_authority: bool) -> PlayerInfo {
        PlayerInfo {
            id: uuid_v4(),
            name: name.to_string(),
            is_authority,
            connected_at: now_rfc3339(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "is_authority": self.is_authority,
               "is_ready": true, "connected_at": self.connected_at})
    }
}

/// A spectator as the room knows it (where its connection lives, too).
#[derive(Debug, Clone)]
pub struct SpectatorInfo {
    pub id: String,
    pub name: String,
    pub connected_at: String,
    pub shard: usize,
    pub conn: u64,
}

impl SpectatorInfo {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "connected_at": self.connected_at})
    }
}

/// A successful join, as the owner reports it to the spectator's shard.
#[derive(Debug)]
pub struct Joined {
    pub code: String,
    pub spectator_id: String,
    pub room_id: String,
    /// The current `GameData` message (JSON text).
    pub game_data: Bytes,
}

/// A question for the shard that owns a group code or preview code.
#[derive(Debug)]
pub enum RestQuery {
    TeamInfo(String),
    PreviewGet(String),
    PreviewPut(String, Value),
    /// The receiving shard's part of the live status (`status::shard_part`).
    Live,
}

/// A live match that reported a Valorant match id: when it did, whether it is being observed
/// (a change within `CLAIM_ACTIVE`), its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchIdClaim {
    pub claimed: u64,
    pub active: bool,
    pub group_code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Quiesce,
    Close,
}
