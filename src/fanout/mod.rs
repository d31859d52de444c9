//! The in-process side of the fan-out seam (`shard::Fanout`: the owner of a match publishes what
//! the subscribers of its room receive — a `RoomFrame`, encoded once per protocol — and never
//! names who receives it). `LocalFanout` hands the same bytes to every other shard of this
//! process and delivers them to this shard's subscribers (`subscribers::deliver`); a cluster
//! implementation (NATS) plugs in beside it. Owns no encoding (the owner builds the bytes) and
//! no session state.

pub mod subscribers;

use std::rc::Rc;

use crate::shard::messages::{RoomFrame, ShardMsg};
use crate::shard::{Fanout, Shard};

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
