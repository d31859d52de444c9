//! The subscribers of each room on this shard — overlays (Engine.IO sessions, on WebSocket or
//! long-polling), spectators (`/ws` connections) and HTTP event streams — in one registry, and
//! the delivery of a room frame to them: one pipeline for every protocol. A spectator or stream
//! subscribes with its sink (its output queue, whether it negotiated deflate, whether it takes
//! deltas, and the seq of the last state it was given), so delivery needs nothing of the
//! spectator or stream services; the registry is where their room membership is kept. Must not
//! encode anything; what a subscriber gets was built by the match owner.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use bytes::Bytes;

use crate::app::SessionLink;
use crate::shard::Shard;
use crate::shard::messages::{RoomFrame, ViewerFrames, WsFrames};
use crate::transport::outbound::{DirectSends, FrameKind, OutQueue};

/// Where a spectator subscribed to a room receives its frames.
pub struct SpectatorSink {
    pub queue: Rc<OutQueue>,
    pub deflate: bool,
    /// Its id in the room (room messages may leave one spectator out).
    pub spectator_id: String,
    /// Takes `GameDataDelta` frames.
    pub delta: bool,
    /// The seq of the last state queued to it (a delta applies only on top of that).
    pub seq: Cell<u64>,
}

/// Where an HTTP event stream subscribed to a room receives its events.
pub struct StreamSink {
    pub queue: Rc<OutQueue>,
    pub seq: Cell<u64>,
}

#[derive(Default)]
struct Room {
    /// Overlay sessions by Engine.IO id, each with its link (delivery needs no lookup).
    overlays: HashMap<String, SessionLink>,
    /// Spectator connections by their shard-local number.
    spectators: HashMap<u64, SpectatorSink>,
    /// HTTP event streams by their shard-local number.
    streams: HashMap<u64, StreamSink>,
    /// The newest state delivered here (answers a spectator's `Resync`).
    latest: Option<(u64, WsFrames)>,
}

impl Room {
    fn is_empty(&self) -> bool {
        self.overlays.is_empty() && self.spectators.is_empty() && self.streams.is_empty()
    }
}

/// Queues a state to one viewer: the delta when it applies on top of what the viewer was
/// given last, else the full state (latest wins either way).
fn queue_state(
    queue: &OutQueue,
    seq: &Cell<u64>,
    new_seq: u64,
    delta: Option<&Bytes>,
    full: &Bytes,
) {
    match delta {
        Some(d) if applies(seq, new_seq) => {
            queue.push_delta(d.clone(), full.clone());
        }
        _ => {
            queue.push(full.clone(), FrameKind::Snapshot);
        }
    }
    seq.set(new_seq);
}

/// A delta to `new_seq` applies for a sink given `seq` last (and something before it).
fn applies(seq: &Cell<u64>, new_seq: u64) -> bool {
    seq.get() + 1 == new_seq && seq.get() > 0
}

fn pick(frames: &WsFrames, deflate: bool) -> &Bytes {
    match &frames.deflate {
        Some(d) if deflate => d,
        _ => &frames.plain,
    }
}

/// The rooms of this shard and who subscribes to them.
#[derive(Default)]
pub struct Subscribers {
    rooms: HashMap<String, Room>,
    /// The room of each subscribed spectator connection.
    spectator_rooms: HashMap<u64, String>,
    /// Told when this shard's first subscriber of a room arrives (`true`) and its last leaves
    /// (`false`): in a cluster, the node then receives the room's frames from other nodes.
    interest: Option<InterestFn>,
}

/// Told of a room code and whether this shard now has subscribers of it (see `on_interest`).
pub type InterestFn = Box<dyn Fn(&str, bool)>;

/// This shard's subscriber registry (shard-local state of the fan-out).
pub fn of(shard: &Shard) -> Rc<std::cell::RefCell<Subscribers>> {
    shard.state()
}

impl Subscribers {
    /// The overlay session `sid` of this shard subscribes to `room`; nothing when the session is
    /// not (or no longer) here.
    pub fn add_overlay(&mut self, shard: &Shard, room: &str, sid: &str) {
        match shard.eio.link(sid) {
            Some(link) => {
                self.room(room).overlays.insert(sid.to_string(), link);
            }
            None => tracing::debug!("overlay {sid} is not on this shard: not subscribed to {room}"),
        }
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

    /// A spectator asks for a full state (`Resync`): the newest one this shard delivered of its
    /// room is queued to it. `false` when it is in no room.
    pub fn resync(&mut self, conn: u64) -> bool {
        let Some(code) = self.spectator_rooms.get(&conn) else {
            return false;
        };
        let Some(room) = self.rooms.get(code) else {
            return false;
        };
        if let (Some(sink), Some((seq, frames))) = (room.spectators.get(&conn), &room.latest) {
            sink.queue
                .push(pick(frames, sink.deflate).clone(), FrameKind::Snapshot);
            sink.seq.set(*seq);
        }
        true
    }

    /// An HTTP event stream subscribes to `room`, having been given the state of `seq`.
    pub fn add_stream(&mut self, room: &str, conn: u64, sink: StreamSink) {
        self.room(room).streams.insert(conn, sink);
    }

    /// An HTTP event stream ends.
    pub fn remove_stream(&mut self, room: &str, conn: u64) {
        self.forget(room, |r| {
            r.streams.remove(&conn);
        });
    }

    /// The newest state delivered here of a room, for a spectator that joined with an older
    /// one (join answers and room frames travel apart).
    pub fn note_latest(&mut self, room: &str, seq: u64, frames: WsFrames) {
        if let Some(r) = self.rooms.get_mut(room)
            && r.latest.as_ref().is_none_or(|(s, _)| *s < seq)
        {
            r.latest = Some((seq, frames));
        }
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

    /// Installs who is told of rooms that get their first or lose their last subscriber here.
    pub fn on_interest(&mut self, interest: InterestFn) {
        self.interest = Some(interest);
    }

    fn room(&mut self, room: &str) -> &mut Room {
        if !self.rooms.contains_key(room)
            && let Some(tell) = &self.interest
        {
            tell(room, true);
        }
        self.rooms.entry(room.to_string()).or_default()
    }

    fn forget(&mut self, room: &str, change: impl FnOnce(&mut Room)) {
        if let Some(r) = self.rooms.get_mut(room) {
            change(r);
            if r.is_empty() {
                self.rooms.remove(room);
                if let Some(tell) = &self.interest {
                    tell(room, false);
                }
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
        RoomFrame::State { overlay, viewers } => {
            // Writing to a session or a queue only queues bytes (no shard state is touched), so
            // the registry stays borrowed while every subscriber gets the same frames.
            let started = std::time::Instant::now();
            if let Some(overlay) = overlay {
                crate::transport::engineio::send_frames_to_links(room.overlays.values(), overlay);
            }
            if let Some(v) = viewers {
                deliver_viewers(room, v);
            }
            let took = started.elapsed().as_secs_f64();
            crate::metrics::local(|s| s.fanout.observe(took));
        }
        RoomFrame::Message {
            frames,
            except,
            close_room,
            stream,
        } => {
            send_message(room, frames, except.as_deref());
            if *close_room {
                // The room ended: its spectators are in no room any more; its streams end.
                for sink in room.streams.values() {
                    if let Some(end) = stream {
                        sink.queue.push(end.clone(), FrameKind::Normal);
                    }
                    sink.queue.close_with(None);
                }
                room.streams.clear();
                let conns: Vec<u64> = room.spectators.drain().map(|(conn, _)| conn).collect();
                if room.is_empty() {
                    subs.rooms.remove(code);
                    if let Some(tell) = &subs.interest {
                        tell(code, false);
                    }
                }
                for conn in conns {
                    subs.spectator_rooms.remove(&conn);
                }
            }
        }
    }
}

/// A room message to every spectator but `except`, in two passes like a state (see
/// `DirectSends`); never replaced in a queue.
fn send_message(room: &Room, frames: &WsFrames, except: Option<&str>) {
    let mut direct = DirectSends::messages(room.spectators.len());
    for sink in room.spectators.values() {
        if except == Some(sink.spectator_id.as_str()) {
            continue;
        }
        let frame = pick(frames, sink.deflate);
        match sink.queue.direct_target() {
            Some(fd) => direct.add(fd, frame, &sink.queue),
            None => {
                sink.queue.push(frame.clone(), FrameKind::Normal);
            }
        }
    }
    let kind = direct.kind();
    for (queue, frame, sent) in direct.send() {
        queue.after_direct_send(frame.clone(), sent, kind);
    }
}

fn deliver_viewers(room: &mut Room, v: &ViewerFrames) {
    // Messages released with this state go before it in the same write: each variant of the
    // state (full or delta, plain or deflated) is joined to them once here, not per spectator.
    let joined = v.lead.as_ref().map(|lead| Joined::new(lead, v));
    // Two passes (see `DirectSends`): every sink is looked at first, the sockets that can take
    // the frame at once are noted, then those get it in a tight loop of sends.
    let mut direct = DirectSends::with_capacity(room.spectators.len());
    for sink in room.spectators.values() {
        let delta = v
            .delta
            .as_ref()
            .filter(|_| sink.delta)
            .map(|d| pick(d, sink.deflate));
        let full = pick(&v.full, sink.deflate);
        match sink.queue.direct_target() {
            // Nothing waits in its queue: the delta applies when it was given the state before.
            Some(fd) => {
                let use_delta = delta.is_some() && applies(&sink.seq, v.seq);
                let state = match delta {
                    Some(d) if use_delta => d,
                    _ => full,
                };
                sink.seq.set(v.seq);
                let frame = match &joined {
                    Some(j) => j.pick(use_delta, sink.deflate),
                    None => state,
                };
                direct.add(fd, frame, (&sink.queue, state));
            }
            None => {
                if let Some(lead) = &v.lead {
                    sink.queue.push(lead.clone(), FrameKind::Normal);
                }
                queue_state(&sink.queue, &sink.seq, v.seq, delta, full)
            }
        }
    }
    if let Some(full) = &v.sse_full {
        for sink in room.streams.values() {
            queue_state(&sink.queue, &sink.seq, v.seq, v.sse_delta.as_ref(), full);
        }
    }
    let lead_len = v.lead.as_ref().map_or(0, Bytes::len);
    for ((queue, state), _, sent) in direct.send() {
        if sent < lead_len {
            // Not even the messages went whole: their rest, then the state, through the queue.
            if let Some(lead) = &v.lead {
                queue.push(lead.slice(sent..), FrameKind::Normal);
            }
            queue.push(state.clone(), FrameKind::Snapshot);
        } else {
            queue.after_direct_send(state.clone(), sent - lead_len, FrameKind::Snapshot);
        }
    }
    if !room.spectators.is_empty() {
        room.latest = Some((v.seq, v.full.clone()));
    }
}

/// A state's frames, each joined once to the messages that go before it.
struct Joined {
    full_plain: Bytes,
    full_deflate: Option<Bytes>,
    delta_plain: Option<Bytes>,
    delta_deflate: Option<Bytes>,
}

impl Joined {
    fn new(lead: &Bytes, v: &ViewerFrames) -> Joined {
        let join = |frame: &Bytes| {
            let mut b = Vec::with_capacity(lead.len() + frame.len());
            b.extend_from_slice(lead);
            b.extend_from_slice(frame);
            Bytes::from(b)
        };
        Joined {
            full_plain: join(&v.full.plain),
            full_deflate: v.full.deflate.as_ref().map(join),
            delta_plain: v.delta.as_ref().map(|d| join(&d.plain)),
            delta_deflate: v.delta.as_ref().and_then(|d| d.deflate.as_ref()).map(join),
        }
    }

    /// The joined frame `pick` would choose for a sink (the delta only when it applies).
    fn pick(&self, delta: bool, deflate: bool) -> &Bytes {
        let (plain, deflated) = if delta {
            match &self.delta_plain {
                Some(p) => (p, &self.delta_deflate),
                None => (&self.full_plain, &self.full_deflate),
            }
        } else {
            (&self.full_plain, &self.full_deflate)
        };
        match deflated {
            Some(d) if deflate => d,
            _ => plain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_viewer_gets_a_delta_only_on_top_of_the_state_it_was_given() {
        let queue = OutQueue::new();
        let seq = Cell::new(4);
        // 5 applies on 4: the delta.
        queue_state(&queue, &seq, 5, Some(&b("d5")), &b("f5"));
        // 6 applies on 5, but 5 still waits in the queue (the reader is slow): the full 6
        // replaces it.
        queue_state(&queue, &seq, 6, Some(&b("d6")), &b("f6"));
        // 8 does not apply on 6 (7 never came here): full.
        queue_state(&queue, &seq, 8, Some(&b("d8")), &b("f8"));
        assert_eq!(seq.get(), 8);
        assert_eq!(queue.skipped(), 2);
        // A viewer given nothing yet (seq 0) gets a full state even for a delta on 0.
        let fresh = OutQueue::new();
        let s0 = Cell::new(0);
        queue_state(&fresh, &s0, 1, Some(&b("d1")), &b("f1"));
        assert_eq!(s0.get(), 1);
    }

    /// A spectator in a room, on one end of a socket pair (the other end is returned).
    fn sink_on_socket(
        room: &mut Room,
        conn: u64,
        id: &str,
    ) -> (
        Rc<OutQueue>,
        std::os::unix::net::UnixStream,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        let queue = OutQueue::new();
        room.spectators.insert(
            conn,
            SpectatorSink {
                queue: queue.clone(),
                deflate: false,
                spectator_id: id.into(),
                delta: false,
                seq: Cell::new(0),
            },
        );
        (queue, ours, peer)
    }

    /// Drains `queue` into `ours` with its writer while a thread reads `peer` to its end.
    fn written(
        queue: Rc<OutQueue>,
        ours: std::os::unix::net::UnixStream,
        peer: std::os::unix::net::UnixStream,
    ) -> Vec<u8> {
        use std::io::Read;
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&peer).read_to_end(&mut got).map(|_| got)
        });
        queue.close_with(None);
        let io = futures_lite::io::AssertAsync::new(ours);
        futures_lite::future::block_on(crate::transport::outbound::run_writer(queue, io));
        reader.join().expect("reader").expect("read")
    }

    /// A room message reaches every spectator but the one left out, whole, even when a socket
    /// takes only part of it at once — and a state after it neither replaces nor overtakes it.
    #[test]
    fn a_room_message_is_sent_whole_and_never_replaced() {
        use std::os::fd::AsRawFd;
        let mut room = Room::default();
        let (q1, ours1, peer1) = sink_on_socket(&mut room, 1, "a");
        let (q2, ours2, peer2) = sink_on_socket(&mut room, 2, "b");
        let (q3, ours3, peer3) = sink_on_socket(&mut room, 3, "c");
        let _g1 = q1.send_directly(crate::transport::outbound::DirectSocket::Plain(
            ours1.as_raw_fd(),
        ));
        let _g2 = q2.send_directly(crate::transport::outbound::DirectSocket::Plain(
            ours2.as_raw_fd(),
        ));
        let _g3 = q3.send_directly(crate::transport::outbound::DirectSocket::Plain(
            ours3.as_raw_fd(),
        ));
        // The third one's socket is full already (its queue empty): it takes nothing at once.
        let mut filler = Vec::new();
        ours3.set_nonblocking(true).expect("non-blocking");
        while let Ok(n) = std::io::Write::write(&mut &ours3, &[9u8; 4096]) {
            filler.extend_from_slice(&[9u8; 4096][..n]);
        }
        ours3.set_nonblocking(false).expect("blocking");
        // More than a socket buffer holds, less than a queue's byte budget.
        let message = Bytes::from(vec![5u8; 1 << 20]);
        let frames = WsFrames {
            plain: message.clone(),
            deflate: None,
        };
        send_message(&room, &frames, Some("b"));
        let state = b("state");
        queue_state(&q1, &Cell::new(0), 1, None, &state);
        queue_state(&q3, &Cell::new(0), 1, None, &state);
        let mut expected = message.to_vec();
        expected.extend_from_slice(&state);
        drop((_g1, _g2, _g3));
        assert!(
            written(q1, ours1, peer1) == expected,
            "message whole, then the state"
        );
        assert!(
            written(q2, ours2, peer2).is_empty(),
            "the one left out gets nothing"
        );
        filler.extend_from_slice(&expected);
        assert!(
            written(q3, ours3, peer3) == filler,
            "queued whole, not replaced"
        );
    }

    /// Room messages released with a state reach a spectator whole and right before it,
    /// whatever part of the joined frame its socket takes at once: all of it, part of the state,
    /// part of the messages, or nothing (its queue was busy).
    #[test]
    fn messages_go_whole_before_their_state_whatever_the_socket_takes() {
        use std::os::fd::AsRawFd;
        const BIG: usize = 1 << 20; // more than a socket buffer holds, within a queue's budget
        for (lead_len, state_len, busy) in [
            (40, 300, false),
            (40, BIG, false),
            (BIG, 300, false),
            (40, 300, true),
        ] {
            let mut room = Room::default();
            let (queue, ours, peer) = sink_on_socket(&mut room, 1, "s");
            let guard = queue.send_directly(crate::transport::outbound::DirectSocket::Plain(
                ours.as_raw_fd(),
            ));
            let mut expected = Vec::new();
            if busy {
                // Taken in part: its rest waits in the queue, so the state cannot go directly.
                let before = Bytes::from(vec![1u8; BIG]);
                queue.push(before.clone(), FrameKind::Normal);
                assert!(queue.direct_target().is_none(), "the socket took it all");
                expected.extend_from_slice(&before);
            }
            let lead = Bytes::from(vec![2u8; lead_len]);
            let state = Bytes::from(vec![3u8; state_len]);
            expected.extend_from_slice(&lead);
            expected.extend_from_slice(&state);
            let frames = ViewerFrames {
                seq: 1,
                lead: Some(lead),
                full: WsFrames {
                    plain: state,
                    deflate: None,
                },
                delta: None,
                sse_full: None,
                sse_delta: None,
            };
            deliver_viewers(&mut room, &frames);
            // Only now does the peer read; the writer sends whatever was queued.
            drop(guard);
            let got = written(queue, ours, peer);
            assert_eq!(
                got.len(),
                expected.len(),
                "lead {lead_len}, state {state_len}"
            );
            assert!(
                got == expected,
                "lead {lead_len}, state {state_len}, busy {busy}: bytes out of order"
            );
        }
    }
}
