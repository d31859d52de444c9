//! What every service of a shard gets: the `Shard` (its number, settings, the mesh, the session
//! layer, the fan-out, and a place for each service's shard-local state), the mesh of inboxes,
//! typed cross-shard messages (`messages`), and placement (`owner_of`). One glommio executor per
//! core runs one shard (`node` starts them); a `Shard` is reached through `Rc`, never shared
//! between threads; `Mesh` is the only thing shared: one inbox per shard. A match lives on the
//! shard `owner_of(code)`; everything else reaches it through the mesh. Names no service: the
//! node installs what dispatches messages (`Wiring`) and the fan-out implementation.

pub mod messages;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Config;
use messages::{ReplyBody, RequestRef, RoomFrame, SessionAction, ShardMsg};
use std::rc::{Rc, Weak};

/// The shard that owns a group code's match: FNV-1a of the code modulo the shard count.
pub fn owner_of(code: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in code.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    (hash % shards.max(1) as u64) as usize
}

/// The inboxes of all shards.
pub struct Mesh {
    inboxes: Vec<flume::Sender<ShardMsg>>,
}

impl Mesh {
    pub fn new(shards: usize) -> (Arc<Mesh>, Vec<flume::Receiver<ShardMsg>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::unbounded()).unzip();
        (Arc::new(Mesh { inboxes: tx }), rx)
    }

    pub fn len(&self) -> usize {
        self.inboxes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inboxes.is_empty()
    }

    /// Sends a message built by `make` to every shard but `from`.
    pub fn send_to_others(&self, from: usize, make: impl Fn() -> ShardMsg) {
        for shard in (0..self.inboxes.len()).filter(|s| *s != from) {
            self.send(shard, make());
        }
    }

    /// Sends to a shard's inbox. Inboxes live as long as the process, so a failure only happens
    /// during shutdown and is ignored.
    pub fn send(&self, shard: usize, msg: ShardMsg) {
        if let Some(tx) = self.inboxes.get(shard) {
            let _ = tx.send(msg);
        }
    }
}

/// Process-wide counters (atomics; never on a per-message path).
pub struct Global {
    /// Per-shard operational counters (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// When the server started (status page).
    pub started: std::time::Instant,
    /// Connection, polling and logon limits (shared; never per message).
    pub limits: Arc<crate::limits::Limits>,
    pub matches_running: AtomicUsize,
    pub match_seq: AtomicU64,
    /// Cached support packages and when they were fetched (backend mode; REST only).
    pub support_cache: std::sync::Mutex<Option<(serde_json::Value, std::time::Instant)>>,
}

impl Global {
    pub fn new(shards: usize, limits: crate::limits::LimitConfig) -> Global {
        Global {
            limits: crate::limits::Limits::new(limits),
            metrics: Arc::new(crate::metrics::Metrics::new(shards)),
            started: std::time::Instant::now(),
            matches_running: AtomicUsize::new(0),
            match_seq: AtomicU64::new(0),
            support_cache: std::sync::Mutex::new(None),
        }
    }

    pub fn matches_running(&self) -> usize {
        self.matches_running.load(Ordering::Relaxed)
    }
}

/// The requests a shard is waiting on.
#[derive(Default)]
struct Requests {
    next: u64,
    pending: std::collections::HashMap<u64, futures_channel::oneshot::Sender<ReplyBody>>,
}

/// Where the owner of a match publishes its room's frames (the fan-out seam): the in-process
/// implementation is `fanout::LocalFanout`; a cluster one sits beside it.
pub trait Fanout {
    fn publish(&self, shard: &Rc<Shard>, room: &str, frame: RoomFrame);
}

/// What the node installs in every shard: the fan-out implementation, and who handles a
/// message for this shard.
pub struct Wiring {
    pub fanout: Box<dyn Fanout>,
    pub dispatch: fn(&Rc<Shard>, ShardMsg),
}

/// Shard-local state.
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub global: Arc<Global>,
    /// The Engine.IO/Socket.IO sessions of this shard (the transport's session layer with
    /// Spectra's application behind it).
    pub eio: Rc<crate::app::Sessions>,
    /// Where match owners publish their rooms' frames.
    pub fanout: Box<dyn Fanout>,
    dispatch: fn(&Rc<Shard>, ShardMsg),
    /// Each service's shard-local state, created on first use and reached only through that
    /// service (`state`): live matches (`registry`), room subscribers (`fanout`), spectator
    /// connections (`spectator`), previews (`rest`). The shard holds them; it names none.
    states: RefCell<Vec<Rc<dyn std::any::Any>>>,
    /// Questions this shard asked other shards, by request number, waiting for their
    /// `ShardMsg::Reply` (messages carry the request's number, never a channel).
    requests: RefCell<Requests>,
    /// The backend worker pool, in backend mode.
    pub backend: Option<Arc<crate::backend::Backend>>,
    pub compressor: RefCell<flate2::Compress>,
    /// The accept loops (cancelled at the end of a shutdown).
    pub listeners: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// Shutting down: new sessions, upgrades and REST requests get 503.
    pub stopping: std::cell::Cell<bool>,
}

impl Shard {
    /// A shard whose session layer is the application `make_app` builds (given the shard to
    /// come back to), wired to the rest of the node by `wiring`.
    pub fn new(
        id: usize,
        config: Arc<Config>,
        mesh: Arc<Mesh>,
        global: Arc<Global>,
        backend: Option<Arc<crate::backend::Backend>>,
        wiring: Wiring,
        make_app: impl FnOnce(Weak<Shard>) -> crate::app::SpectraApp,
    ) -> Rc<Shard> {
        let eio_config = crate::transport::engineio::EioConfig {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            connect_timeout: config.connect_timeout,
            max_payload: config.max_payload,
            recovery_window: config.recovery_window,
            max_held: config.recovery_max_held,
        };
        let deflate_level = config.deflate_level;
        Rc::new_cyclic(|me| Shard {
            id,
            eio: Rc::new(crate::transport::engineio::Eio::new(
                id,
                mesh.len(),
                eio_config,
                make_app(me.clone()),
            )),
            config,
            mesh,
            global,
            fanout: wiring.fanout,
            dispatch: wiring.dispatch,
            states: RefCell::new(Vec::new()),
            requests: RefCell::new(Requests::default()),
            backend,
            compressor: RefCell::new(crate::transport::websocket::compressor_at(deflate_level)),
            listeners: RefCell::new(Vec::new()),
            stopping: std::cell::Cell::new(false),
        })
    }

    /// This shard's instance of a service's state `T` (created with `T::default()` on first
    /// use). Each state type is private to its service, which wraps this in its own accessor.
    pub fn state<T: Default + 'static>(&self) -> Rc<T> {
        if let Some(found) = self
            .states
            .borrow()
            .iter()
            .find(|s| s.is::<T>())
            .and_then(|s| s.clone().downcast::<T>().ok())
        {
            return found;
        }
        let new = Rc::new(T::default());
        self.states.borrow_mut().push(new.clone());
        new
    }

    /// A new request of this shard: where its answer goes, and where it arrives.
    pub fn request(&self) -> (RequestRef, futures_channel::oneshot::Receiver<ReplyBody>) {
        let (tx, rx) = futures_channel::oneshot::channel();
        let mut requests = self.requests.borrow_mut();
        requests.next += 1;
        let id = requests.next;
        requests.pending.insert(id, tx);
        (RequestRef { shard: self.id, id }, rx)
    }

    /// Answers a request of any shard (this one included).
    pub fn reply(self: &Rc<Self>, to: RequestRef, body: ReplyBody) {
        self.send_to(to.shard, ShardMsg::Reply { id: to.id, body });
    }

    /// The answer to one of this shard's requests arrived (an unknown number is ignored).
    pub fn on_reply(&self, id: u64, body: ReplyBody) {
        let waiting = self.requests.borrow_mut().pending.remove(&id);
        if let Some(tx) = waiting {
            let _ = tx.send(body);
        }
    }

    pub fn shards(&self) -> usize {
        self.mesh.len()
    }

    pub fn owner_of(&self, code: &str) -> usize {
        owner_of(code, self.shards())
    }

    /// Hands a message to a shard: dispatched at once when it is this shard, else through the
    /// mesh. Callers must not hold a borrow of shard state the handler needs.
    pub fn send_to(self: &std::rc::Rc<Self>, shard: usize, msg: ShardMsg) {
        if shard == self.id {
            (self.dispatch)(self, msg);
        } else {
            self.mesh.send(shard, msg);
        }
    }

    /// Applies `action` to a session: here, or on the shard it lives on.
    pub fn deliver(&self, shard: usize, sid: &str, action: SessionAction) {
        crate::transport::engineio::deliver(&self.eio, shard, sid, action);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of("ABC", 1), 0);
        assert_eq!(owner_of("ABC", 4), owner_of("ABC", 4));
        let owners: std::collections::HashSet<_> =
            (0..50).map(|i| owner_of(&format!("G{i}"), 2)).collect();
        assert_eq!(owners.len(), 2);
    }
}
