//! The subscribers of each room on this shard — overlays (Engine.IO sessions, on WebSocket or
//! long-polling) and spectators (`/ws` connections) — in one registry, and the delivery of a
//! room frame to them: one pipeline for every protocol. A spectator subscribes with its sink (its
//! output queue and whether it negotiated deflate), so delivery needs nothing of the spectator
//! service; the registry is where a spectator's room membership is kept. Must not encode
//! anything; what a subscriber gets was built by the match owner.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use crate::shard::Shard;
use crate::shard::messages::RoomFrame;
use crate::transport::outbound::{FrameKind, OutQueue};

/// Where a spectator subscribed to a room receives its frames.
pub struct SpectatorSink {
    pub queue: Rc<OutQueue>,
    pub deflate: bool,
    /// Its id in the room (room messages may leave one spectator out).
    pub spectator_id: String,
}

#[derive(Default)]
struct Room {
    /// Overlay sessions by Engine.IO id.
    overlays: HashSet<String>,
    /// Spectator connections by their shard-local number.
    spectators: HashMap<u64, SpectatorSink>,
}

impl Room {
    fn is_empty(&self) -> bool {
        self.overlays.is_empty() && self.spectators.is_empty()
    }
}

/// The rooms of this shard and who subscribes to them.
#[derive(Default)]
pub struct Subscribers {
    rooms: HashMap<String, Room>,
    /// The room of each subscribed spectator connection.
    spectator_rooms: HashMap<u64, String>,
}

/// This shard's subscriber registry (shard-local state of the fan-out).
pub fn of(shard: &Shard) -> Rc<std::cell::RefCell<Subscribers>> {
    shard.state()
}

impl Subscribers {
    pub fn add_overlay(&mut self, room: &str, sid: &str) {
        self.room(room).overlays.insert(sid.to_string());
    }

    pub fn remove_overlay(&mut self, room: &str, sid: &str) {
        self.forget(room, |r| {
            r.overlays.remove(sid);
        });
    }

    /// A spectator connection joined `room` (a connection is in at most one room).
    pub fn add_spectator(&mut self, room: &str, conn: u64, sink: SpectatorSink) {
        self.remove_spectator(conn);
        self.room(room).spectators.insert(conn, sink);
        self.spectator_rooms.insert(conn, room.to_string());
    }

    /// A spectator connection leaves its room: the room code and its spectator id.
    pub fn remove_spectator(&mut self, conn: u64) -> Option<(String, String)> {
        let room = self.spectator_rooms.remove(&conn)?;
        let mut left = None;
        self.forget(&room, |r| left = r.spectators.remove(&conn));
        left.map(|sink| (room, sink.spectator_id))
    }

    /// Whether a spectator connection is in a room.
    pub fn is_spectating(&self, conn: u64) -> bool {
        self.spectator_rooms.contains_key(&conn)
    }

    /// Overlays per room on this shard.
    pub fn overlay_counts(&self) -> Vec<(String, usize)> {
        self.rooms
            .iter()
            .filter(|(_, r)| !r.overlays.is_empty())
            .map(|(code, r)| (code.clone(), r.overlays.len()))
            .collect()
    }

    pub fn overlays_total(&self) -> usize {
        self.rooms.values().map(|r| r.overlays.len()).sum()
    }

    fn room(&mut self, room: &str) -> &mut Room {
        self.rooms.entry(room.to_string()).or_default()
    }

    fn forget(&mut self, room: &str, change: impl FnOnce(&mut Room)) {
        if let Some(r) = self.rooms.get_mut(room) {
            change(r);
            if r.is_empty() {
                self.rooms.remove(room);
            }
        }
    }
}

/// Writes one room frame to this shard's subscribers of `code`.
pub fn deliver(shard: &Rc<Shard>, code: &str, frame: &RoomFrame) {
    let subs = of(shard);
    let mut subs = subs.borrow_mut();
    let Some(room) = subs.rooms.get_mut(code) else {
        return;
    };
    match frame {
        RoomFrame::State {
            overlay,
            spectators,
        } => {
            // Writing to a session or a queue only queues bytes (no shard state is touched), so
            // the registry stays borrowed while every subscriber gets the same frames.
            shard.eio.send_frames_to(room.overlays.iter(), overlay);
            if let Some(frames) = spectators {
                for sink in room.spectators.values() {
                    let frame = match &frames.deflate {
                        Some(d) if sink.deflate => d.clone(),
                        _ => frames.plain.clone(),
                    };
                    sink.queue.push(frame, FrameKind::Snapshot);
                }
            }
        }
        RoomFrame::Message {
            frames,
            except,
            close_room,
        } => {
            for sink in room.spectators.values() {
                if except.as_deref() == Some(sink.spectator_id.as_str()) {
                    continue;
                }
                let frame = match &frames.deflate {
                    Some(d) if sink.deflate => d.clone(),
                    _ => frames.plain.clone(),
                };
                sink.queue.push(frame, FrameKind::Normal);
            }
            if *close_room {
                // The room ended: its spectators are in no room any more.
                let conns: Vec<u64> = room.spectators.drain().map(|(conn, _)| conn).collect();
                if room.is_empty() {
                    subs.rooms.remove(code);
                }
                for conn in conns {
                    subs.spectator_rooms.remove(&conn);
                }
            }
        }
    }
}
