//! Everything one shard asks of another. Messages are plain `Send` values; replies travel on
//! oneshot channels or come back as new messages. Owns no behaviour: `router.rs` dispatches them.

use bytes::Bytes;
use futures_channel::oneshot;

use crate::fanout::RoomFrame;
use crate::ingest::ObsLogon;
use crate::transport::http::Response;

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
        joined: Option<crate::spectator::Joined>,
    },
    /// A REST question for the shard owning a code.
    Rest {
        query: crate::rest::RestQuery,
        reply: oneshot::Sender<Response>,
    },
    /// Graceful shutdown, one phase at a time on every shard; the shard answers with its id.
    Shutdown {
        phase: super::shutdown::Phase,
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
        reply: oneshot::Sender<Vec<crate::registry::MatchIdClaim>>,
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
        join: Option<crate::spectator::room::PlayerInfo>,
        leave: Option<String>,
    },
    /// A spectator asks to join the room of the match.
    SpectatorJoin {
        code: String,
        spectator: crate::spectator::room::SpectatorInfo,
    },
    /// A spectator left (voluntarily or by disconnecting).
    SpectatorLeave {
        code: String,
        spectator_id: String,
        reason: &'static str,
    },
}
