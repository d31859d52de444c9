//! Everything one shard asks of another, typed by the domain that handles it. What a domain
//! message carries is plain data (`Serialize`/`Deserialize`: a cluster sends the same between
//! nodes); a question carries its `RequestRef` and its answer comes back as a `Reply` message, not
//! on a channel inside the message. Only the process-local messages (`Session`: polls and
//! migrations of Engine.IO sessions; `Shutdown`) hold channels. Owns no behaviour:
//! `node/router.rs` dispatches them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use crate::transport::outbound::FrameSet;
use crate::util::{now_rfc3339, uuid_v4};

/// Where a session can be reached: the shard it was last known on and its Engine.IO id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    KickGroup {
        code: String,
        /// Told to each client before it is disconnected (a Socket.IO `message`).
        reason: Option<String>,
    },
    /// Messages for one spectator connection of the receiving shard.
    SpectatorDirect {
        conn: u64,
        texts: Vec<Bytes>,
        joined: Option<Joined>,
    },
    /// The owner's answer to an HTTP stream's join (`MatchMsg::StreamJoin`) for the stream
    /// connection `conn` of the receiving shard; `None`: no live match has that code.
    StreamStart {
        conn: u64,
        start: Option<StreamStart>,
    },
    /// From the cluster (this node's NATS thread).
    Remote(RemoteMsg),
    /// A REST question for the shard owning a code; answered with `Reply`.
    Rest { query: RestQuery, from: RequestRef },
    /// The answer to request `id` of the receiving shard (`Shard::request`).
    Reply { id: u64, body: ReplyBody },
    /// Graceful shutdown, one phase at a time on every shard; the shard answers with its id.
    Shutdown {
        phase: Phase,
        deadline: std::time::Instant,
        done: flume::Sender<usize>,
    },
}

/// What the cluster (the node's NATS thread, `cluster`) asks of a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RemoteMsg {
    /// Another node wants the current frames of `code`; the shard that owns the match here (if
    /// this node is its origin) answers to the NATS inbox `reply`.
    SnapshotAsk { code: String, reply: String },
    /// The newest frames of a match of another node, for one overlay session of this shard.
    Frames { sid: String, frames: FrameSet },
    /// A message for the owner of a match, from another node (a spectator's join or leave, an
    /// HTTP stream's start): handled when the match lives here, then acknowledged to `reply`.
    Ingest { msg: MatchMsg, reply: String },
    /// No node has the match this shard forwarded a message for (`Cluster::forward`).
    Unanswered { msg: MatchMsg },
    /// Another node took the match of `code` over (`../shared/spec/cluster.md` §6.4): this
    /// node is no longer its origin; `reason` is what its observer is told.
    StepDown { code: String, reason: String },
}

/// What the owner of a match sends to one connection on another node (cluster mode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeMsg {
    /// `ShardMsg::SpectatorDirect` for shard `shard` of that node.
    SpectatorDirect {
        shard: usize,
        conn: u64,
        texts: Vec<Bytes>,
        joined: Option<Joined>,
    },
    /// `ShardMsg::StreamStart` for shard `shard` of that node.
    StreamStart {
        shard: usize,
        conn: u64,
        start: Option<StreamStart>,
    },
}

impl NodeMsg {
    /// The message for the receiving node's shard, and which shard.
    pub fn into_shard_msg(self) -> (usize, ShardMsg) {
        match self {
            NodeMsg::SpectatorDirect {
                shard,
                conn,
                texts,
                joined,
            } => (
                shard,
                ShardMsg::SpectatorDirect {
                    conn,
                    texts,
                    joined,
                },
            ),
            NodeMsg::StreamStart { shard, conn, start } => {
                (shard, ShardMsg::StreamStart { conn, start })
            }
        }
    }
}

/// For the owner of a match (the receiving shard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MatchMsg {
    /// Create or rejoin the match of an observer logon.
    Create {
        logon: Box<ObsLogon>,
        from: SessionRef,
        /// The key and address the match counts against (see `limits::match_slot`).
        owner: crate::limits::MatchOwner,
    },
    /// Which live match of the receiving shard has this Valorant match id (creation order, code).
    FindMatchId { match_id: String, from: RequestRef },
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
    /// A spectator asks to join the room of the match. `via_public`: `code` is the group code
    /// the match's public code named (resolved by the shard that keeps the public code); a
    /// viewer's own code never is (with a spectator delay it must be a public code).
    SpectatorJoin {
        code: String,
        spectator: SpectatorInfo,
        #[serde(default)]
        via_public: bool,
    },
    /// A spectator left (voluntarily or by disconnecting).
    SpectatorLeave {
        code: String,
        spectator_id: String,
        reason: LeaveReason,
    },
    /// An HTTP event stream (`GET /matches/{code}/stream`) of connection `conn` on `shard`
    /// starts; `last_seq`: the `Last-Event-ID` it resumes from. Answered with
    /// `ShardMsg::StreamStart`.
    StreamJoin {
        code: String,
        shard: usize,
        conn: u64,
        last_seq: Option<u64>,
        /// The node of the stream's connection (cluster mode; empty: this node).
        #[serde(default)]
        node: String,
        /// As `SpectatorJoin::via_public`.
        #[serde(default)]
        via_public: bool,
    },
    /// An HTTP event stream of the match ended.
    StreamLeave { code: String },
    /// With a spectator delay: the match `group` (whose room is `room`) has the public code
    /// `public`, for the shard that keeps public codes (the owner of `public`); `group: None`
    /// forgets it (only if it still names `room`).
    Alias {
        public: String,
        group: Option<String>,
        room: String,
    },
}

/// The group code field of a `MatchMsg` (by reference or by mutable reference, as `$msg` is).
macro_rules! code_field {
    ($msg:expr) => {
        match $msg {
            MatchMsg::Create { .. } | MatchMsg::FindMatchId { .. } | MatchMsg::Alias { .. } => None,
            MatchMsg::Event { code, .. }
            | MatchMsg::AuxDisconnected { code, .. }
            | MatchMsg::SnapshotRequest { code, .. }
            | MatchMsg::PlayerPresence { code, .. }
            | MatchMsg::SpectatorJoin { code, .. }
            | MatchMsg::SpectatorLeave { code, .. }
            | MatchMsg::StreamJoin { code, .. }
            | MatchMsg::StreamLeave { code } => Some(code),
        }
    };
}

impl MatchMsg {
    /// The group code the message is about, to change (`None`: a logon or a match-id search).
    pub fn code_mut(&mut self) -> Option<&mut String> {
        code_field!(self)
    }

    /// The group code the message is about (`None`: a logon or a match-id search).
    pub fn code(&self) -> Option<&str> {
        code_field!(self).map(String::as_str)
    }
}

// ---- What the messages carry: plain data. ----

/// One message to WebSocket subscribers: a plain text frame and, when built, its
/// permessage-deflate form (no context takeover, so one frame serves every connection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WsFrames {
    pub plain: Bytes,
    pub deflate: Option<Bytes>,
}

/// One released state as viewers (native spectators, HTTP streams) receive it, built once by
/// the owner (`viewer::stream`): the full `GameData` for everyone, the `GameDataDelta` against
/// `seq - 1` for delta spectators (when any, and when there is a previous state), and the
/// Server-Sent Events forms for HTTP streams (when any).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewerFrames {
    pub seq: u64,
    /// Room messages released just before this state (plain WebSocket text frames back to
    /// back, e.g. `LobbyStateChanged` and `GameStarting`): every spectator gets them right
    /// before the state, in the same write. Not part of the state (a `Resync` repeats none).
    pub lead: Option<Bytes>,
    pub full: WsFrames,
    pub delta: Option<WsFrames>,
    pub sse_full: Option<Bytes>,
    pub sse_delta: Option<Bytes>,
}

/// What a room's subscribers receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RoomFrame {
    /// A new state of the match: overlays get `overlay`; viewers get `viewers`. Either may be
    /// absent: viewers get nothing when the room has none, and with a spectator delay the
    /// overlays' state and the viewers' (older) state are published apart.
    State {
        overlay: Option<FrameSet>,
        viewers: Option<Box<ViewerFrames>>,
    },
    /// A message for the room's spectators (presence, authority), to all but `except` (a
    /// spectator id); `close_room`: the room ends with it.
    Message {
        frames: WsFrames,
        except: Option<String>,
        close_room: bool,
        /// What HTTP event streams get of it (the room's `end`).
        stream: Option<Bytes>,
    },
}

/// A validated observer logon, sent to the owner shard to create or rejoin the match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectatorInfo {
    pub id: String,
    pub name: String,
    pub connected_at: String,
    pub shard: usize,
    pub conn: u64,
    /// Receives `GameDataDelta` frames (joined with `"delta": true`).
    #[serde(default)]
    pub delta: bool,
    /// The node of its connection (cluster mode; empty: the match's own node).
    #[serde(default)]
    pub node: String,
}

impl SpectatorInfo {
    pub fn json(&self) -> Value {
        json!({"id": self.id, "name": self.name, "connected_at": self.connected_at})
    }
}

/// A successful join, as the owner reports it to the spectator's shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Joined {
    pub code: String,
    pub spectator_id: String,
    pub room_id: String,
    /// The `GameData` message of the state viewers see now (JSON text) and its seq; `None`
    /// while a delayed room has released no state yet.
    pub game_data: Option<Bytes>,
    pub seq: u64,
    /// The spectator takes deltas.
    #[serde(default)]
    pub delta: bool,
}

/// Where an HTTP event stream starts: the room's code as the match spells it, the seq of the
/// newest released state and the events that bring the stream there (a snapshot, or the
/// deltas after its `Last-Event-ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStart {
    pub code: String,
    pub seq: u64,
    pub events: Vec<Bytes>,
    /// `events` are deltas (else at most one snapshot).
    pub resumed: bool,
}

/// A question for the shard that owns a group code or preview code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RestQuery {
    TeamInfo(String),
    PreviewGet(String),
    PreviewPut(String, Value),
    /// The receiving shard's part of the live status (`status::shard_part`).
    Live,
    /// The state viewers see now of a live match (`GET /matches/{code}`).
    Snapshot(String),
    /// With a spectator delay: the group code a public code names (200 with the code as the
    /// body, or 404), asked of the shard that keeps it.
    Public(String),
    /// The receiving shard's live matches and viewers (`GET /matches`).
    Matches,
}

/// A live match that reported a Valorant match id: when it did, whether it is being observed
/// (a change within `CLAIM_ACTIVE`), its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchIdClaim {
    pub claimed: u64,
    pub active: bool,
    pub group_code: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Quiesce,
    Close,
    /// Answered at once: what shards sent each other before they finished `Close` (an event
    /// for its match's owner) is handled before this (the cluster's drain comes after).
    Settle,
}

/// Where the answer to a request goes: the shard that asked and its request number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRef {
    pub shard: usize,
    pub id: u64,
}

/// Answers to requests (`ShardMsg::Reply`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ReplyBody {
    MatchIdClaims(Vec<MatchIdClaim>),
    Rest(RestAnswer),
}

/// A REST answer from the shard that holds the data: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestAnswer {
    pub status: u16,
    pub body: String,
    /// The version of the body (`GET /matches/{code}`: the state's seq).
    #[serde(default)]
    pub etag: Option<u64>,
}

impl RestAnswer {
    pub fn ok(body: String) -> RestAnswer {
        RestAnswer {
            status: 200,
            body,
            etag: None,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> RestAnswer {
        RestAnswer {
            status,
            body: json!({ "error": message }).to_string(),
            etag: None,
        }
    }
}

/// Why a spectator left its room (the `reason` of `SpectatorDisconnected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveReason {
    Voluntary,
    Disconnected,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Voluntary => "voluntary_leave",
            LeaveReason::Disconnected => "disconnected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain message survives a trip through JSON unchanged (what a cluster will do
    /// between nodes).
    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(v: T) {
        let text = serde_json::to_string(&v).expect("serialise");
        let back: T = serde_json::from_str(&text).expect("deserialise");
        assert_eq!(back, v, "{text}");
    }

    #[test]
    fn domain_messages_are_plain_data() {
        let from = SessionRef {
            shard: 1,
            sid: "01abc".into(),
        };
        let mut data = Map::new();
        data.insert("groupCode".into(), json!("G"));
        let logon = ObsLogon {
            group_code: "G".into(),
            group_secret: "s".into(),
            obs_name: "Main".into(),
            data: data.clone(),
            is_supporter: false,
            organization_id: String::new(),
        };
        let mut envelope = Map::new();
        envelope.insert("type".into(), json!("score"));
        envelope.insert("data".into(), json!({"team_0": 1}));
        let spectator = SpectatorInfo {
            id: uuid_v4(),
            name: "V".into(),
            connected_at: now_rfc3339(),
            shard: 0,
            conn: 7,
            delta: true,
            node: "n2".into(),
        };
        let request = RequestRef { shard: 1, id: 9 };
        for msg in [
            MatchMsg::Create {
                logon: Box::new(logon),
                from: from.clone(),
                owner: crate::limits::MatchOwner::new(Some("key"), None),
            },
            MatchMsg::FindMatchId {
                match_id: "m".into(),
                from: request,
            },
            MatchMsg::Event {
                code: "G".into(),
                event: spectra_engine::Event::new(envelope),
            },
            MatchMsg::AuxDisconnected {
                code: "G".into(),
                player_id: "p".into(),
            },
            MatchMsg::SnapshotRequest {
                code: "G".into(),
                from,
            },
            MatchMsg::PlayerPresence {
                code: "G".into(),
                join: Some(PlayerInfo::new("Main", true)),
                leave: Some("x".into()),
            },
            MatchMsg::SpectatorJoin {
                code: "G".into(),
                spectator,
                via_public: true,
            },
            MatchMsg::SpectatorLeave {
                code: "G".into(),
                spectator_id: "s".into(),
                reason: LeaveReason::Voluntary,
            },
            MatchMsg::StreamJoin {
                code: "G".into(),
                shard: 1,
                conn: 4,
                last_seq: Some(17),
                node: "n2".into(),
                via_public: false,
            },
            MatchMsg::StreamLeave { code: "G".into() },
            MatchMsg::Alias {
                public: "PUB-0A".into(),
                group: Some("G".into()),
                room: "r".into(),
            },
        ] {
            round_trip(msg);
        }
        let frames = WsFrames {
            plain: Bytes::from_static(b"\x81\x02{}"),
            deflate: Some(Bytes::from_static(&[0xc1, 0x01, 0x00])),
        };
        round_trip(RoomFrame::State {
            overlay: Some(FrameSet {
                packet: Bytes::from_static(b"42[\"match_data\",\"{}\"]"),
                ws_plain: Bytes::from_static(b"\x81\x01x"),
                ws_deflate: Bytes::from_static(b"\xc1\x01y"),
            }),
            viewers: Some(Box::new(ViewerFrames {
                seq: 3,
                lead: Some(Bytes::from_static(b"\x81\x02{}")),
                full: frames.clone(),
                delta: Some(frames.clone()),
                sse_full: Some(Bytes::from_static(b"id: 3\n")),
                sse_delta: None,
            })),
        });
        round_trip(StreamStart {
            code: "G".into(),
            seq: 3,
            events: vec![Bytes::from_static(b"event: snapshot\n")],
            resumed: false,
        });
        round_trip(RoomFrame::Message {
            frames,
            except: Some("s".into()),
            close_room: true,
            stream: Some(Bytes::from_static(b"event: end\n\n")),
        });
        round_trip(Joined {
            code: "G".into(),
            spectator_id: "s".into(),
            room_id: "r".into(),
            game_data: Some(Bytes::from_static(b"{}")),
            seq: 2,
            delta: true,
        });
        round_trip(RestQuery::PreviewPut("P".into(), json!({"a": [1, 2]})));
        round_trip(ReplyBody::MatchIdClaims(vec![MatchIdClaim {
            claimed: 3,
            active: true,
            group_code: "G".into(),
        }]));
        round_trip(ReplyBody::Rest(RestAnswer::error(404, "Preview not found")));
    }
}
