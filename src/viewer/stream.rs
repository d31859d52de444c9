//! The viewer stream of one room, kept with the match on its owner shard. It numbers every state
//! viewers get (`seq`, +1 per broadcast), builds the RFC 6902 JSON Patch from one state to the
//! next once per room (the `json-patch` crate), holds everything derived from the match for the
//! spectator delay and releases it in order, and keeps the recent deltas an HTTP stream may
//! resume from. It builds frames and returns what is due; publishing is the room's job. No
//! sockets, no shard state.
//!
//! Memory with a delay: a waiting state is kept as its patch against the one before (the first
//! one whole), and a released state is rebuilt by applying the patch to the state released
//! before it. `MAX_WAITING_BYTES` bounds what waits; beyond it the oldest states are applied
//! without being sent (viewers then get a full state instead of a delta).

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::shard::messages::{ViewerFrames, WsFrames};

/// Bytes of patches and messages a delayed room keeps waiting (see the module comment).
pub const MAX_WAITING_BYTES: usize = 8 * 1024 * 1024;
/// Released deltas kept for HTTP streams that resume (`Last-Event-ID`).
const HISTORY_ENTRIES: usize = 600;
const HISTORY_BYTES: usize = 2 * 1024 * 1024;

/// What viewers see now.
struct Released {
    seq: u64,
    json: Rc<str>,
    /// The state as a value (kept only with a delay: the next patch applies to it).
    value: Option<Value>,
    from_player: Value,
}

enum Item<M> {
    State {
        seq: u64,
        from_player: Value,
        /// The JSON Patch from the state before (`None`: the first state, sent whole).
        patch: Option<String>,
        /// The state itself, kept when it is released at once or when there is no patch (its
        /// value only when it was built: a delay or a delta listener).
        full: Option<(Rc<str>, Option<Rc<Value>>)>,
    },
    Message(M),
    Close,
}

impl<M> Item<M> {
    fn bytes(&self, message_bytes: impl Fn(&M) -> usize) -> usize {
        match self {
            Item::State { patch, full, .. } => {
                patch.as_ref().map_or(0, String::len) + full.as_ref().map_or(0, |(j, _)| j.len())
            }
            Item::Message(m) => message_bytes(m),
            Item::Close => 0,
        }
    }
}

/// Something due for the room's viewers, in order.
pub enum Out<M> {
    /// A state; the frames only when the room has viewers to send them to.
    State(Option<Box<ViewerFrames>>),
    Message(M),
    Close,
}

/// Who the frames of a state are built for.
#[derive(Clone, Copy, Default)]
pub struct Audience {
    /// Native spectators (any): the full `GameData`.
    pub spectators: bool,
    /// Spectators that take deltas: the `GameDataDelta`.
    pub delta_spectators: bool,
    /// HTTP event streams: the Server-Sent Events forms.
    pub streams: bool,
}

impl Audience {
    fn any(self) -> bool {
        self.spectators || self.streams
    }
}

pub struct ViewerStream<M> {
    delay: Duration,
    /// The seq of the newest state pushed.
    seq: u64,
    /// The newest state pushed: the next patch is computed from it.
    head: Option<Rc<Value>>,
    released: Option<Released>,
    waiting: VecDeque<(Instant, Item<M>)>,
    waiting_bytes: usize,
    /// Released deltas as the HTTP streams' `delta` records, by seq, oldest first: built once,
    /// shared by every stream that gets them live or resumes from them (no copy per request).
    history: VecDeque<(u64, Bytes)>,
    history_bytes: usize,
    /// Peak of `waiting_bytes` (for measurements).
    peak_waiting_bytes: usize,
}

impl<M> ViewerStream<M> {
    /// In a cluster, the ownership epoch of the match here (`../shared/spec/cluster.md` §6.1):
    /// seqs go on from `epoch << 32`, so a state of a newer origin always has a higher seq than
    /// any state an older one published, and no seq is reused within the match across a
    /// takeover. A single node (epoch 0) counts from 1 as before.
    pub fn fence(&mut self, epoch: u64) {
        self.seq = self.seq.max(epoch << 32);
    }

    pub fn new(delay: Duration) -> Self {
        ViewerStream {
            delay,
            seq: 0,
            head: None,
            released: None,
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            history: VecDeque::new(),
            history_bytes: 0,
            peak_waiting_bytes: 0,
        }
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Whether something is still held back.
    pub fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// When the oldest held-back item is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.waiting.front().map(|(at, _)| *at)
    }

    /// Bytes held back now and at most so far.
    pub fn waiting_bytes(&self) -> (usize, usize) {
        (self.waiting_bytes, self.peak_waiting_bytes)
    }

    /// The seq and snapshot JSON viewers see now.
    pub fn released(&self) -> Option<(u64, &str)> {
        self.released.as_ref().map(|r| (r.seq, &*r.json))
    }

    /// The `GameData` message of the state viewers see now.
    pub fn released_game_data(&self) -> Option<(u64, Bytes)> {
        let r = self.released.as_ref()?;
        Some((r.seq, game_data(&r.from_player, &r.json, r.seq)))
    }

    /// A new state of the match (after the overlays got it). `wants_patch`: a delta spectator or
    /// HTTP stream is listening (with a delay every state is kept as a patch anyway). `value`
    /// builds the state as a value; it is called only when a patch is due or the state is kept.
    pub fn push_state(
        &mut self,
        now: Instant,
        value: impl FnOnce() -> Rc<Value>,
        json: Rc<str>,
        from_player: Value,
        wants_patch: bool,
    ) {
        self.push_state_with(now, value, move |_| json, from_player, wants_patch);
    }

    /// `push_state` with the state's JSON built only when it is kept whole (the first state, or
    /// without a delay); otherwise the state travels as its patch and its JSON is never written.
    /// `json` gets the value when one was built.
    pub fn push_state_with(
        &mut self,
        now: Instant,
        value: impl FnOnce() -> Rc<Value>,
        json: impl FnOnce(Option<&Value>) -> Rc<str>,
        from_player: Value,
        wants_patch: bool,
    ) {
        self.seq += 1;
        let delayed = !self.delay.is_zero();
        let value = (delayed || wants_patch).then(value);
        if value.is_some() && self.head.is_none() {
            // The first listener since the last state went out: the patch applies to that state.
            self.head = self.released_value(self.seq - 1);
        }
        let patch = match (&self.head, &value) {
            (Some(head), Some(value)) => serde_json::to_string(&json_patch::diff(head, value)).ok(),
            _ => None,
        };
        let full = (!delayed || patch.is_none()).then(|| (json(value.as_deref()), value.clone()));
        self.head = value;
        self.push(
            now,
            Item::State {
                seq: self.seq,
                from_player,
                patch,
                full,
            },
            |_| 0,
        );
    }

    /// The released state of `seq` as a value, read back from its JSON.
    fn released_value(&self, seq: u64) -> Option<Rc<Value>> {
        let r = self.released.as_ref().filter(|r| r.seq == seq)?;
        serde_json::from_str(&r.json).ok().map(Rc::new)
    }

    /// A message derived from the match (`message_bytes`: its size, for the bound).
    pub fn push_message(&mut self, now: Instant, message: M, message_bytes: impl Fn(&M) -> usize) {
        self.push(now, Item::Message(message), message_bytes);
    }

    /// The match ended: after everything before it, the room closes.
    pub fn push_close(&mut self, now: Instant) {
        self.push(now, Item::Close, |_| 0);
    }

    fn push(&mut self, now: Instant, item: Item<M>, message_bytes: impl Fn(&M) -> usize) {
        let size = item.bytes(&message_bytes);
        self.waiting.push_back((now + self.delay, item));
        self.waiting_bytes += size;
        self.peak_waiting_bytes = self.peak_waiting_bytes.max(self.waiting_bytes);
    }

    /// Everything due at `now`, in order, with the frames built for `audience`. Over
    /// `MAX_WAITING_BYTES`, the oldest items are released early without frames.
    pub fn release_due(
        &mut self,
        now: Instant,
        audience: Audience,
        message_bytes: impl Fn(&M) -> usize,
        encode: &mut dyn FnMut(&[u8]) -> WsFrames,
    ) -> Vec<Out<M>> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.waiting.front() {
            let over = self.waiting_bytes > MAX_WAITING_BYTES;
            if *at > now && !over {
                break;
            }
            let Some((_, item)) = self.waiting.pop_front() else {
                break;
            };
            self.waiting_bytes = self
                .waiting_bytes
                .saturating_sub(item.bytes(&message_bytes));
            match item {
                Item::State {
                    seq,
                    from_player,
                    patch,
                    full,
                } => {
                    let audience = if over { Audience::default() } else { audience };
                    if over {
                        // Skipped: the chain of deltas breaks here.
                        self.history.clear();
                        self.history_bytes = 0;
                    }
                    let frames =
                        self.release_state(seq, from_player, patch, full, audience, encode);
                    out.push(Out::State(frames));
                }
                Item::Message(m) => out.push(Out::Message(m)),
                Item::Close => out.push(Out::Close),
            }
        }
        out
    }

    fn release_state(
        &mut self,
        seq: u64,
        from_player: Value,
        patch: Option<String>,
        full: Option<(Rc<str>, Option<Rc<Value>>)>,
        audience: Audience,
        encode: &mut dyn FnMut(&[u8]) -> WsFrames,
    ) -> Option<Box<ViewerFrames>> {
        let delayed = !self.delay.is_zero();
        let base = self.released.as_ref().map(|r| r.seq);
        let json: Rc<str> = match full {
            Some((json, value)) => {
                let kept = value.filter(|_| delayed).map(|v| (*v).clone());
                self.released = Some(Released {
                    seq,
                    json: json.clone(),
                    value: kept,
                    from_player: from_player.clone(),
                });
                json
            }
            None => {
                // A delayed state: the one released before, patched.
                let r = self.released.as_mut()?;
                let value = r.value.as_mut()?;
                let ops: json_patch::Patch = serde_json::from_str(patch.as_deref()?).ok()?;
                if let Err(e) = json_patch::patch(value, &ops) {
                    tracing::error!("viewer stream: a delayed patch did not apply: {e}");
                    return None;
                }
                let json: Rc<str> = Rc::from(value.to_string());
                r.seq = seq;
                r.json = json.clone();
                r.from_player = from_player.clone();
                json
            }
        };
        let delta = match (&patch, base) {
            (Some(ops), Some(b)) if b + 1 == seq => {
                let text = format!(r#"{{"seq":{seq},"base_seq":{b},"patch":{ops}}}"#);
                let record = sse_delta(seq, &text);
                self.remember(seq, record.clone());
                Some((text, record))
            }
            _ => {
                self.history.clear();
                self.history_bytes = 0;
                None
            }
        };
        if !audience.any() {
            return None;
        }
        let full_text = game_data(&from_player, &json, seq);
        let frames = ViewerFrames {
            seq,
            lead: None,
            full: encode(&full_text),
            delta: delta
                .as_ref()
                .filter(|_| audience.delta_spectators)
                .map(|(d, _)| encode(delta_message(d).as_bytes())),
            sse_full: audience.streams.then(|| sse_snapshot(seq, &json)),
            sse_delta: delta.filter(|_| audience.streams).map(|(_, record)| record),
        };
        Some(Box::new(frames))
    }

    fn remember(&mut self, seq: u64, record: Bytes) {
        self.history_bytes += record.len();
        self.history.push_back((seq, record));
        while self.history.len() > HISTORY_ENTRIES || self.history_bytes > HISTORY_BYTES {
            match self.history.pop_front() {
                Some((_, d)) => self.history_bytes -= d.len(),
                None => break,
            }
        }
    }

    /// Where an HTTP stream that saw `last_seq` starts: the seq it will be at and its first
    /// events (the deltas after `last_seq` when they are all kept, else the snapshot), and
    /// whether those are deltas.
    pub fn stream_start(&self, last_seq: Option<u64>) -> (u64, Vec<Bytes>, bool) {
        let Some(r) = &self.released else {
            return (0, Vec::new(), false);
        };
        if let Some(last) = last_seq {
            if last == r.seq {
                return (r.seq, Vec::new(), true);
            }
            let first = self.history.front().map(|(s, _)| *s);
            if last < r.seq && first.is_some_and(|f| f <= last + 1) {
                let events = self
                    .history
                    .iter()
                    .filter(|(s, _)| *s > last)
                    .map(|(_, record)| record.clone())
                    .collect();
                return (r.seq, events, true);
            }
        }
        (r.seq, vec![sse_snapshot(r.seq, &r.json)], false)
    }
}

/// `{"type":"GameData","data":{"from_player":…,"data":<snapshot>,"seq":N}}` around an already
/// serialised snapshot (no re-serialisation).
pub fn game_data(from_player: &Value, snapshot_json: &str, seq: u64) -> Bytes {
    let mut out = String::with_capacity(snapshot_json.len() + 112);
    out.push_str(r#"{"type":"GameData","data":{"from_player":"#);
    out.push_str(&from_player.to_string());
    out.push_str(r#","data":"#);
    out.push_str(snapshot_json);
    out.push_str(r#","seq":"#);
    out.push_str(&seq.to_string());
    out.push_str("}}");
    Bytes::from(out)
}

fn delta_message(delta: &str) -> String {
    format!(r#"{{"type":"GameDataDelta","data":{delta}}}"#)
}

/// A Server-Sent Events record (the JSON has no raw line breaks).
fn sse_event(kind: &str, seq: u64, data: &str) -> Bytes {
    Bytes::from(format!("id: {seq}\nevent: {kind}\ndata: {data}\n\n"))
}

fn sse_snapshot(seq: u64, json: &str) -> Bytes {
    sse_event("snapshot", seq, json)
}

fn sse_delta(seq: u64, delta: &str) -> Bytes {
    sse_event("delta", seq, delta)
}

/// The HTTP streams' record for the end of the match.
pub const SSE_END: &[u8] = b"event: end\ndata: {}\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plain(b: &[u8]) -> WsFrames {
        WsFrames {
            plain: Bytes::copy_from_slice(b),
            deflate: None,
        }
    }

    fn state(n: i64) -> (Rc<Value>, Rc<str>) {
        let v = json!({"round": n, "players": (0..n % 4).collect::<Vec<_>>(), "fixed": "x"});
        let j: Rc<str> = Rc::from(v.to_string());
        (Rc::new(v), j)
    }

    fn all() -> Audience {
        Audience {
            spectators: true,
            delta_spectators: true,
            streams: true,
        }
    }

    fn released_states<M>(out: Vec<Out<M>>) -> Vec<ViewerFrames> {
        out.into_iter()
            .filter_map(|o| match o {
                Out::State(f) => f.map(|f| *f),
                _ => None,
            })
            .collect()
    }

    fn data_of(frame: &WsFrames) -> Value {
        let v: Value = serde_json::from_slice(&frame.plain).expect("json");
        v["data"].clone()
    }

    #[test]
    fn live_states_carry_seq_and_patches_that_rebuild_them() {
        let mut s: ViewerStream<()> = ViewerStream::new(Duration::ZERO);
        let now = Instant::now();
        let mut applied: Option<Value> = None;
        for n in 1..=9 {
            let (v, j) = state(n);
            s.push_state(now, || v.clone(), j, json!("p"), true);
            let frames = released_states(s.release_due(now, all(), |_| 0, &mut plain));
            assert_eq!(frames.len(), 1);
            let f = &frames[0];
            assert_eq!(f.seq, n as u64);
            let full = data_of(&f.full);
            assert_eq!(full["seq"], json!(n));
            assert_eq!(full["data"], *v);
            match (&f.delta, applied.as_mut()) {
                (Some(d), Some(doc)) => {
                    let d = data_of(d);
                    assert_eq!(d["base_seq"], json!(n - 1));
                    let ops: json_patch::Patch =
                        serde_json::from_value(d["patch"].clone()).expect("patch");
                    json_patch::patch(doc, &ops).expect("applies");
                    assert_eq!(*doc, *v);
                }
                (None, None) => applied = Some((*v).clone()),
                other => panic!("seq {n}: unexpected {:?}", other.0.is_some()),
            }
        }
        assert_eq!(s.released().map(|r| r.0), Some(9));
    }

    #[test]
    fn the_value_is_built_only_for_listeners_and_the_first_patch_applies_to_the_last_state() {
        let mut s: ViewerStream<()> = ViewerStream::new(Duration::ZERO);
        let now = Instant::now();
        let built = std::cell::Cell::new(0);
        let push = |s: &mut ViewerStream<()>, n: i64, wants_patch: bool| {
            let (v, j) = state(n);
            let value = || {
                built.set(built.get() + 1);
                v.clone()
            };
            s.push_state(now, value, j, json!("p"), wants_patch);
            released_states(s.release_due(now, all(), |_| 0, &mut plain))
        };
        for n in 1..=3 {
            let frames = push(&mut s, n, false);
            assert!(frames[0].delta.is_none(), "no listener, no patch");
        }
        assert_eq!(built.get(), 0, "nobody wanted a patch: no value built");
        // A delta listener arrives after state 3 went out: state 4 comes as a patch on 3.
        let frames = push(&mut s, 4, true);
        assert_eq!(built.get(), 1);
        let d = data_of(
            frames[0]
                .delta
                .as_ref()
                .expect("a patch on the released state"),
        );
        assert_eq!(d["base_seq"], json!(3));
        let mut doc = (*state(3).0).clone();
        let ops: json_patch::Patch = serde_json::from_value(d["patch"].clone()).expect("patch");
        json_patch::patch(&mut doc, &ops).expect("applies");
        assert_eq!(doc, *state(4).0);
    }

    #[test]
    fn a_delay_holds_states_and_messages_in_order_and_rebuilds_them_from_patches() {
        let delay = Duration::from_secs(2);
        let mut s: ViewerStream<&'static str> = ViewerStream::new(delay);
        let t0 = Instant::now();
        for n in 1..=5 {
            let (v, j) = state(n);
            s.push_state(
                t0 + Duration::from_millis(100 * n as u64),
                || v,
                j,
                json!(null),
                false,
            );
            if n == 3 {
                s.push_message(t0 + Duration::from_millis(350), "joined", |m| m.len());
            }
        }
        s.push_close(t0 + Duration::from_millis(600));
        assert!(
            s.release_due(
                t0 + Duration::from_millis(1999),
                all(),
                |m| m.len(),
                &mut plain
            )
            .is_empty()
        );
        assert!(s.released().is_none(), "nothing is public before the delay");
        let out = s.release_due(
            t0 + Duration::from_millis(2350),
            all(),
            |m| m.len(),
            &mut plain,
        );
        let kinds: Vec<String> = out
            .iter()
            .map(|o| match o {
                Out::State(Some(f)) => format!("s{}", f.seq),
                Out::State(None) => "s?".into(),
                Out::Message(m) => m.to_string(),
                Out::Close => "close".into(),
            })
            .collect();
        assert_eq!(kinds, ["s1", "s2", "s3", "joined"]);
        let out = s.release_due(t0 + Duration::from_secs(3), all(), |m| m.len(), &mut plain);
        let states = released_states(out);
        assert_eq!(states.iter().map(|f| f.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(data_of(&states[1].full)["data"], *state(5).0);
        assert!(states[1].delta.is_some() && states[1].sse_delta.is_some());
        assert!(!s.has_waiting());
        // Resuming an HTTP stream from seq 2: the deltas 3..5.
        let (seq, events, deltas) = s.stream_start(Some(2));
        assert_eq!((seq, events.len(), deltas), (5, 3, true));
        assert!(events[0].starts_with(b"id: 3\nevent: delta\n"));
        // Every resume (and the live stream) shares the history's bytes: no copy per request.
        let (_, again, _) = s.stream_start(Some(2));
        assert!(
            events
                .iter()
                .zip(&again)
                .all(|(a, b)| a.as_ptr() == b.as_ptr())
        );
        let live = states[1].sse_delta.as_ref().expect("live delta record");
        assert_eq!(live.as_ptr(), events[2].as_ptr());
        // From an unknown seq: the snapshot.
        let (_, events, deltas) = s.stream_start(Some(99));
        assert_eq!((events.len(), deltas), (1, false));
    }

    #[test]
    fn waiting_memory_is_bounded() {
        let mut s: ViewerStream<()> = ViewerStream::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let big = "x".repeat(64 * 1024);
        for n in 0..400 {
            let v = json!({"n": n, "blob": format!("{big}{n}")});
            let j: Rc<str> = Rc::from(v.to_string());
            s.push_state(t0, || Rc::new(v), j, json!(null), false);
            s.release_due(t0, all(), |_| 0, &mut plain);
        }
        let (now, _) = s.waiting_bytes();
        assert!(now <= MAX_WAITING_BYTES + 70 * 1024, "{now}");
        assert!(s.released().is_some(), "the oldest were released early");
    }
}
