//! The subscribers of each room on this shard — overlays (Engine.IO sessions, on WebSocket or
//! long-polling) and spectators (`/ws` connections) — in one registry, and the delivery of a
//! room frame to them: one pipeline for every protocol. Must not encode anything; what a
//! subscriber gets was built by the match owner.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::RoomFrame;
use crate::shard::Shard;

#[derive(Default)]
struct Room {
    /// Overlay sessions by Engine.IO id.
    overlays: HashSet<String>,
    /// Spectator connections by their shard-local number.
    spectators: HashSet<u64>,
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

    pub fn add_spectator(&mut self, room: &str, conn: u64) {
        self.room(room).spectators.insert(conn);
    }

    pub fn remove_spectator(&mut self, room: &str, conn: u64) {
        self.forget(room, |r| {
            r.spectators.remove(&conn);
        });
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
    match frame {
        RoomFrame::State {
            overlay,
            spectators,
        } => {
            let conns: Vec<u64> = {
                let subs = shard.subscribers.borrow();
                let Some(room) = subs.rooms.get(code) else {
                    return;
                };
                // Writing to a session only queues bytes (no shard state is touched), so the
                // registry stays borrowed while every overlay gets the same frames.
                shard.eio.send_frames_to(room.overlays.iter(), overlay);
                match spectators {
                    Some(_) => room.spectators.iter().copied().collect(),
                    None => Vec::new(),
                }
            };
            if let Some(frames) = spectators {
                crate::spectator::write(shard, &conns, frames, None, true, false);
            }
        }
        RoomFrame::Message {
            frames,
            except,
            close_room,
        } => {
            let conns: Vec<u64> = {
                let mut subs = shard.subscribers.borrow_mut();
                let Some(room) = subs.rooms.get_mut(code) else {
                    return;
                };
                if *close_room {
                    let conns = room.spectators.drain().collect();
                    if room.is_empty() {
                        subs.rooms.remove(code);
                    }
                    conns
                } else {
                    room.spectators.iter().copied().collect()
                }
            };
            crate::spectator::write(shard, &conns, frames, except.as_deref(), false, *close_room);
        }
    }
}
