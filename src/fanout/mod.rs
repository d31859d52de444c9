//! The fan-out seam. The owner of a match publishes what the subscribers of its room receive —
//! a `RoomFrame`, encoded once per protocol — to a `Fanout`, and never names who receives it.
//! `LocalFanout` hands the same bytes to every other shard of this process and delivers them to
//! this shard's subscribers (`subscribers::deliver`); a cluster implementation (NATS) plugs in
//! behind the same trait. Owns no encoding (the owner builds the bytes) and no session state.

pub mod subscribers;

use std::rc::Rc;

use bytes::Bytes;

use crate::shard::Shard;
use crate::shard::messages::ShardMsg;

/// One broadcast to overlays (Engine.IO sessions), encoded once for every way they receive it.
pub use crate::transport::outbound::FrameSet;

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

/// Where the owner of a match publishes its room's frames.
pub trait Fanout {
    fn publish(&self, shard: &Rc<Shard>, room: &str, frame: RoomFrame);
}

/// The in-process implementation: every other shard through the mesh, then this shard.
pub struct LocalFanout;

impl Fanout for LocalFanout {
    fn publish(&self, shard: &Rc<Shard>, room: &str, frame: RoomFrame) {
        shard.mesh.send_to_others(shard.id, || ShardMsg::Room {
            code: room.to_string(),
            frame: frame.clone(),
        });
        subscribers::deliver(shard, room, &frame);
    }
}
