//! Spectra's services behind the session layer (`app::Services`): ingest events go to `ingest`,
//! overlay events to `broadcast`, disconnects to both, an overlay's room subscription follows its
//! session between shards (`fanout::subscribers`), and session messages for other shards ride in
//! `ShardMsg::Session`.

use std::rc::{Rc, Weak};
use std::sync::Arc;

use crate::app::{AppState, Services, SpectraApp};
use crate::shard::messages::ShardMsg;
use crate::shard::{Mesh, Shard};
use crate::transport::engineio::SessionMsg;

pub struct ShardServices {
    pub shard: Weak<Shard>,
    pub mesh: Arc<Mesh>,
}

impl ShardServices {
    fn shard(&self) -> Option<Rc<Shard>> {
        self.shard.upgrade()
    }
}

impl Services for ShardServices {
    fn send(&self, shard: usize, msg: SessionMsg<SpectraApp>) {
        self.mesh.send(shard, ShardMsg::Session(msg));
    }

    fn on_event(&self, sid: &str, ingest: bool, name: &str, arg: Option<&str>) {
        let Some(shard) = self.shard() else {
            return;
        };
        if ingest {
            crate::ingest::on_event(&shard, sid, name, arg);
        } else {
            crate::broadcast::on_event(&shard, sid, name, arg);
        }
    }

    fn on_disconnect(&self, sid: &str, data: &AppState) {
        let Some(shard) = self.shard() else {
            return;
        };
        match data {
            AppState::Ingest(state) => crate::ingest::on_disconnect(&shard, state),
            AppState::Broadcast(state) => crate::broadcast::leave(&shard, sid, state),
            AppState::Undecided => {}
        }
    }

    fn on_overlay_moved(&self, sid: &str, room: &str, here: bool) {
        let Some(shard) = self.shard() else {
            return;
        };
        let subscribers = crate::fanout::subscribers::of(&shard);
        let mut subscribers = subscribers.borrow_mut();
        if here {
            subscribers.add_overlay(&shard, room, sid);
        } else {
            subscribers.remove_overlay(room, sid);
        }
    }

    fn request_snapshot(&self, sid: &str, room: String) {
        if let Some(shard) = self.shard() {
            crate::broadcast::request_snapshot(&shard, sid, room);
        }
    }
}
