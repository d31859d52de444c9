//! Shards: one glommio executor per core, each with its own sessions, rooms and matches.
//!
//! `Shard` is the shard-local state (reached through `Rc`, never shared between threads);
//! `Mesh` is the only thing shared: one inbox per shard. A match lives on the shard
//! `owner_of(code)`; everything else reaches it through the mesh.

pub mod messages;
pub mod router;
pub mod runtime;
pub mod shutdown;
pub mod signals;

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::config::Config;
use crate::registry::Registry;
use messages::{SessionAction, ShardMsg};
use std::rc::Rc;

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

/// Shard-local state.
pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    pub mesh: Arc<Mesh>,
    pub global: Arc<Global>,
    /// The Engine.IO/Socket.IO sessions of this shard (the transport's session layer with
    /// Spectra's application behind it).
    pub eio: Rc<crate::app::Sessions>,
    /// Who subscribes to which room on this shard (overlays and spectators).
    pub subscribers: RefCell<crate::fanout::subscribers::Subscribers>,
    /// Where match owners publish their rooms' frames.
    pub fanout: Box<dyn crate::fanout::Fanout>,
    pub matches: RefCell<Registry>,
    pub spectators: RefCell<crate::spectator::Spectators>,
    pub previews: RefCell<crate::rest::preview::Previews>,
    /// The backend worker pool, in backend mode.
    pub backend: Option<Arc<crate::backend::Backend>>,
    pub compressor: RefCell<flate2::Compress>,
    /// The accept loops (cancelled at the end of a shutdown).
    pub listeners: RefCell<Vec<glommio::task::JoinHandle<()>>>,
    /// Shutting down: new sessions, upgrades and REST requests get 503.
    pub stopping: std::cell::Cell<bool>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        mesh: Arc<Mesh>,
        global: Arc<Global>,
        backend: Option<Arc<crate::backend::Backend>>,
    ) -> Rc<Shard> {
        let eio_config = crate::transport::engineio::EioConfig {
            ping_interval: config.ping_interval,
            ping_timeout: config.ping_timeout,
            connect_timeout: config.connect_timeout,
            max_payload: config.max_payload,
            recovery_window: config.recovery_window,
            max_held: config.recovery_max_held,
        };
        Rc::new_cyclic(|me| {
            let app = crate::app::SpectraApp::new(me.clone(), mesh.clone(), global.limits.clone());
            Shard {
                id,
                eio: Rc::new(crate::transport::engineio::Eio::new(
                    id,
                    mesh.len(),
                    eio_config,
                    app,
                )),
                config,
                mesh,
                global,
                subscribers: RefCell::new(Default::default()),
                fanout: Box::new(crate::fanout::LocalFanout),
                matches: RefCell::new(Registry::default()),
                spectators: RefCell::new(Default::default()),
                previews: RefCell::new(Default::default()),
                backend,
                compressor: RefCell::new(crate::transport::websocket::new_compressor()),
                listeners: RefCell::new(Vec::new()),
                stopping: std::cell::Cell::new(false),
            }
        })
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
            router::dispatch(self, msg);
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
