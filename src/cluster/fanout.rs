//! The fan-out of a node in a cluster: the in-process fan-out to this node's shards, then the
//! same frame once to NATS for the edges (`<prefix>.frames.<code>`). Frames that arrive from
//! NATS are not published again: they reach the shards as `ShardMsg::Room` directly.

use std::rc::Rc;
use std::sync::Arc;

use super::Cluster;
use crate::fanout::LocalFanout;
use crate::shard::messages::RoomFrame;
use crate::shard::{Fanout, Shard};

pub struct NatsFanout {
    pub cluster: Arc<Cluster>,
}

impl Fanout for NatsFanout {
    fn publish(&self, shard: &Rc<Shard>, room: &str, frame: RoomFrame) {
        self.cluster.publish(room, &frame);
        LocalFanout.publish(shard, room, frame);
    }
}
