//! The node's NATS thread: the official `async-nats` client on a tokio runtime of its own,
//! bridged to the glommio shards by channels (commands in, `ShardMsg`s out through the mesh).
//! It publishes the frames of the matches this node owns, subscribes to other nodes' matches
//! while this node has viewers of them (and keeps their newest frames), answers other nodes'
//! snapshot requests through the owner shard, keeps the ownership records (KV
//! `<prefix>_matches`) and this node's liveness (KV `<prefix>_nodes`, refreshed every 2 s, gone
//! 10 s after the last refresh). Never touches shard state: everything for a shard is a message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::subjects::{EPOCH_HEADER, Kind, NODE_HEADER, SENT_HEADER, Subjects};
use super::{CLAIM_TIMEOUT, Claim, Command, Shared};
use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::shard::messages::{FrameSet, MatchMsg, NodeMsg, RemoteMsg, RoomFrame, ShardMsg};
use crate::shard::{Mesh, owner_of};

/// How often a node refreshes its liveness record, and when it expires.
const LIVENESS_REFRESH: Duration = Duration::from_secs(2);
const LIVENESS_TTL: Duration = Duration::from_secs(10);

/// The KV buckets and the event log stream, once NATS answered.
#[derive(Clone)]
struct Stores {
    js: jetstream::Context,
    matches: kv::Store,
    nodes: kv::Store,
    events: jetstream::stream::Stream,
    previews: kv::Store,
    teaminfo: kv::Store,
    matchids: kv::Store,
}

impl Stores {
    fn shared(&self, shared: Shared) -> &kv::Store {
        match shared {
            Shared::Previews => &self.previews,
            Shared::TeamInfo => &self.teaminfo,
            Shared::MatchIds => &self.matchids,
        }
    }
}

/// How long the event log keeps a match's events (a match is removed after
/// `MATCH_IDLE_SECONDS` without events; its log is purged when it ends).
const EVENT_LOG_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a request to another node (a snapshot) waits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What the thread's tasks share.
struct Node {
    config: ClusterConfig,
    /// Every subject, key and header name (client text never reaches NATS as is).
    subjects: Subjects,
    shards: usize,
    mesh: Arc<Mesh>,
    metrics: Arc<Metrics>,
    client: async_nats::Client,
    stores: Mutex<Option<Stores>>,
    /// The newest overlay frames of each remote match this node subscribes to.
    latest: Mutex<HashMap<String, Option<FrameSet>>>,
    /// The epoch of each match this node owns, from its claim (stamped on what it publishes).
    owned: Mutex<HashMap<String, u64>>,
    /// The highest epoch seen per remote match this node subscribes to (older frames are
    /// dropped: a fenced origin never reaches a viewer).
    seen_epochs: Mutex<HashMap<String, u64>>,
    /// Forwarded messages waiting for the origin's acknowledgement, by reply token.
    pending: Mutex<HashMap<u64, (MatchMsg, usize)>>,
    /// The event-log writer of each match this node owns (§6.2: one append at a time, fenced).
    writers: Mutex<HashMap<String, Writer>>,
    /// Where the log of a match taken over ends (its writer's first expected sequence).
    log_ends: Mutex<HashMap<String, u64>>,
    /// Matches this node stepped down from: events still arriving for them are orphaned.
    stepped: Mutex<HashSet<String>>,
    /// Bumped at every loss of NATS; `verified` catches up once the records of every owned
    /// match were read again after the reconnect (§6.3). Until then nothing owned is published,
    /// answered or appended.
    cuts: Arc<AtomicU64>,
    verified: AtomicU64,
    /// SIGTERM: this node hands its matches over (§6.6); it answers no snapshot request.
    draining: std::sync::atomic::AtomicBool,
    /// The epoch of matches that ended here (released), for their last frames.
    ended: Mutex<HashMap<String, u64>>,
}

/// Ended matches whose epoch is kept for their last frames, and matches stepped down from
/// (events still arriving for them are counted as orphaned): each forgotten all at once beyond.
const MAX_ENDED: usize = 10_000;

/// Events of one match held for its log while NATS is away (a whole match is a few thousand
/// events; aux clients multiply that by up to ten).
const MAX_UNLOGGED: u64 = 100_000;

/// The event-log writer of one owned match: its queue and how many events wait in it.
struct Writer {
    queue: tokio::sync::mpsc::UnboundedSender<LogItem>,
    waiting: Arc<AtomicU64>,
}

/// One append to a match's event log (`first`: the header of a new match, after a purge).
struct LogItem {
    payload: Bytes,
    first: bool,
}

impl Node {
    fn stores(&self) -> Option<Stores> {
        self.stores.lock().ok().and_then(|s| s.clone())
    }

    /// Whether NATS was lost since the owned records were last read (nothing owned goes out).
    fn unverified(&self) -> bool {
        self.cuts.load(Ordering::Acquire) != self.verified.load(Ordering::Acquire)
    }

    /// The epoch this node owns `code` under (`None`: not this node's).
    fn epoch_of(&self, code: &str) -> Option<u64> {
        self.owned.lock().ok().and_then(|o| o.get(code).copied())
    }

    /// Another node took `code` over (§6.4): this node stops being its origin. The owner shard
    /// stops the match (ingest clients disconnected with `why`, local viewers kept as an
    /// edge's); events not yet in the log are counted as orphaned; the new origin's frames are
    /// asked for at once so local viewers converge without waiting for its next broadcast.
    fn step_down(self: &Arc<Self>, code: &str, why: &str) {
        let was_owned = self.owned.lock().ok().and_then(|mut o| o.remove(code));
        let Some(epoch) = was_owned else {
            return;
        };
        if let Ok(mut stepped) = self.stepped.lock() {
            if stepped.len() >= MAX_ENDED {
                stepped.clear();
            }
            stepped.insert(code.to_string());
        }
        let waiting = self
            .writers
            .lock()
            .ok()
            .and_then(|mut w| w.remove(code))
            .map_or(0, |w| w.waiting.load(Ordering::Acquire));
        self.metrics
            .cluster
            .stepdowns
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!("cluster: match {code}: stepping down as its origin (epoch {epoch}): {why}");
        self.orphaned(code, waiting);
        self.mesh.send(
            owner_of(code, self.shards),
            ShardMsg::Remote(RemoteMsg::StepDown {
                code: code.to_string(),
                reason: format!("Group code {code} was taken over by another node; log on again."),
            }),
        );
        tokio::spawn(ask_snapshot(self.clone(), code.to_string()));
    }

    /// `n` accepted events of `code` that its new origin never saw (§6.5): counted and logged.
    fn orphaned(&self, code: &str, n: u64) {
        if n == 0 {
            return;
        }
        self.metrics
            .cluster
            .events_orphaned
            .fetch_add(n, Ordering::Relaxed);
        tracing::error!(
            "cluster: match {code}: {n} events accepted here were never written to its event log (orphaned: another node took the match over while this one was cut off)"
        );
    }

    /// An event (or a new match's header) for the log of `code`: queued for the match's
    /// writer, which appends one at a time, fenced (§6.2).
    fn log(self: &Arc<Self>, code: String, item: LogItem) {
        let Some(epoch) = self.epoch_of(&code) else {
            if self.stepped.lock().is_ok_and(|s| s.contains(&code)) {
                self.orphaned(&code, 1);
            } else {
                tracing::warn!(
                    "cluster: an event of {code} not logged: the match is not this node's"
                );
            }
            return;
        };
        let Ok(mut writers) = self.writers.lock() else {
            return;
        };
        let writer = writers.entry(code.clone()).or_insert_with(|| {
            let (queue, rx) = tokio::sync::mpsc::unbounded_channel();
            let waiting = Arc::new(AtomicU64::new(0));
            let start = self.log_ends.lock().ok().and_then(|mut e| e.remove(&code));
            tokio::spawn(write_log(
                self.clone(),
                code.clone(),
                epoch,
                rx,
                start,
                waiting.clone(),
            ));
            Writer { queue, waiting }
        });
        if writer.waiting.load(Ordering::Acquire) >= MAX_UNLOGGED {
            // Cut off for very long: beyond the bound the cluster's log loses events (the
            // replay log on disk keeps them); counted and logged, never silent.
            drop(writers);
            self.orphaned(&code, 1);
            return;
        }
        writer.waiting.fetch_add(1, Ordering::AcqRel);
        if writer.queue.send(item).is_err() {
            writer.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A room frame from another node: to every shard (each writes it to its own subscribers),
    /// and its overlay frames kept for overlays that arrive later.
    fn deliver(&self, code: &str, msg: &async_nats::Message) {
        let headers = msg.headers.as_ref();
        // Only frames another node of this cluster published: they name it. Anything else (a
        // client that reached NATS, a tool) is dropped and counted.
        match sender(msg) {
            Some(n) if n == self.config.node_id => return,
            Some(_) => {}
            None => {
                self.untrusted(code, "a frame without its node");
                return;
            }
        }
        let Some(epoch) = headers
            .and_then(|h| h.get(EPOCH_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok())
        else {
            self.untrusted(code, "a frame without its epoch");
            return;
        };
        // A match this node owns under epoch E: another node's frame of E or older is stale
        // (or forged); a newer one means the match was taken over.
        let own = self
            .owned
            .lock()
            .ok()
            .and_then(|o| o.get(code).copied().map(|e| e + 1));
        if let Ok(mut seen) = self.seen_epochs.lock() {
            let newest = seen.entry(code.to_string()).or_insert(epoch);
            *newest = (*newest).max(own.unwrap_or(0));
            if epoch < *newest {
                let n = self
                    .metrics
                    .cluster
                    .stale_frames_dropped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n == 0 || n.is_power_of_two() {
                    tracing::warn!(
                        "cluster: dropped a frame of {code} from epoch {epoch} (newest seen {newest}; {} dropped so far)",
                        n + 1
                    );
                }
                return;
            }
            *newest = epoch;
        }
        let frame: RoomFrame = match postcard::from_bytes(&msg.payload) {
            Ok(f) => f,
            Err(_) => {
                self.untrusted(code, "an undecodable frame");
                return;
            }
        };
        let c = &self.metrics.cluster;
        c.frames_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.bytes_received.fetch_add(
            msg.payload.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(sent) = headers
            .and_then(|h| h.get(SENT_HEADER))
            .and_then(|v| v.as_str().parse::<u64>().ok())
        {
            let lag = now_us().saturating_sub(sent);
            c.lag_micros
                .fetch_add(lag, std::sync::atomic::Ordering::Relaxed);
        }
        if let RoomFrame::State {
            overlay: Some(frames),
            ..
        } = &frame
            && let Ok(mut latest) = self.latest.lock()
            && latest.contains_key(code)
        {
            latest.insert(code.to_string(), Some(frames.clone()));
        }
        for s in 0..self.shards {
            self.mesh.send(
                s,
                ShardMsg::Room {
                    code: code.to_string(),
                    frame: frame.clone(),
                },
            );
        }
    }
}

/// The node that sent a message (its `Spectra-Node` header; `None`: none, or empty).
fn sender(msg: &async_nats::Message) -> Option<&str> {
    msg.headers
        .as_ref()?
        .get(NODE_HEADER)
        .map(|v| v.as_str())
        .filter(|n| !n.is_empty())
}

impl Node {
    /// The headers every message this node publishes carries: its id.
    fn headers(&self) -> async_nats::HeaderMap {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NODE_HEADER, self.config.node_id.as_str());
        headers
    }

    /// This node holds the record of `code` under `epoch` (what it publishes carries it).
    fn own(&self, code: &str, epoch: u64) -> Claim {
        if let Ok(mut owned) = self.owned.lock() {
            owned.insert(code.to_string(), epoch);
        }
        if let Ok(mut stepped) = self.stepped.lock() {
            stepped.remove(code);
        }
        if let Ok(mut ended) = self.ended.lock() {
            ended.remove(code);
        }
        // A writer of an earlier epoch ends; the next event starts one under this epoch.
        if let Ok(mut writers) = self.writers.lock() {
            writers.remove(code);
        }
        Claim::Mine(epoch)
    }

    /// The headers of a frame of `code`: the node and the epoch it owns the match under (0 for
    /// a match it holds without a claim, e.g. recovered at start-up).
    fn frame_headers(&self, code: &str) -> async_nats::HeaderMap {
        let epoch = self
            .epoch_of(code)
            .or_else(|| self.ended.lock().ok().and_then(|e| e.get(code).copied()))
            .unwrap_or(0);
        let mut headers = self.headers();
        headers.insert(EPOCH_HEADER, epoch.to_string());
        headers
    }

    /// A message that did not come from a node of this cluster as nodes send them: dropped,
    /// counted (`spectra_cluster_untrusted_dropped_total`), logged at most once a second.
    fn untrusted(&self, code: &str, what: &str) {
        let c = &self.metrics.cluster;
        let n = c
            .untrusted_dropped
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = now_us() / 1_000_000;
        let last = c
            .untrusted_logged_at
            .swap(now, std::sync::atomic::Ordering::Relaxed);
        if last != now {
            tracing::warn!(
                "cluster: dropped {what} for {code} ({} dropped so far)",
                n + 1
            );
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(super) fn spawn(
    config: ClusterConfig,
    shards: usize,
    mesh: Arc<Mesh>,
    metrics: Arc<Metrics>,
    commands: flume::Receiver<Command>,
    again: flume::Sender<Command>,
) {
    let started = std::thread::Builder::new()
        .name("cluster-nats".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(rt) => rt.block_on(run(config, shards, mesh, metrics, commands, again)),
                Err(e) => tracing::error!("cluster: cannot start the NATS runtime: {e}"),
            }
        });
    if let Err(e) = started {
        tracing::error!("cluster: cannot start the NATS thread: {e}");
    }
}

async fn run(
    config: ClusterConfig,
    shards: usize,
    mesh: Arc<Mesh>,
    metrics: Arc<Metrics>,
    commands: flume::Receiver<Command>,
    again: flume::Sender<Command>,
) {
    let events_metrics = metrics.clone();
    let url = config.url.clone();
    let cuts = Arc::new(AtomicU64::new(0));
    let cuts_seen = cuts.clone();
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("spectra-server {}", config.node_id))
        .no_echo()
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Back within a second or two of a healed link (the default waits up to 8 s).
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 250).min(2000))
        })
        .request_timeout(Some(REQUEST_TIMEOUT))
        // A link that goes silent (no reset) is noticed within about two pings (default 60 s).
        .ping_interval(Duration::from_secs(5))
        .event_callback(move |event| {
            let metrics = events_metrics.clone();
            let url = url.clone();
            let again = again.clone();
            let cuts = cuts_seen.clone();
            async move {
                let connected = &metrics.cluster.connected;
                match event {
                    async_nats::Event::Connected => {
                        connected.store(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!("cluster: connected to NATS at {}", redact(&url));
                        // The owned records are read again before anything owned goes out.
                        let _ = again.send(Command::Reconnected);
                    }
                    async_nats::Event::Disconnected => {
                        cuts.fetch_add(1, Ordering::AcqRel);
                        connected.store(0, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            "cluster: lost NATS; serving this node's own matches until it is back"
                        );
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        // NATS dropped frames for this node: the edges catch up at once.
                        tracing::warn!("cluster: NATS dropped messages for this slow node");
                        let _ = again.send(Command::Resnapshot);
                    }
                    other => tracing::info!("cluster: NATS: {other}"),
                }
            }
        });
    if let Some(creds) = &config.creds {
        options = match options.credentials_file(creds).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(
                    "cluster: cannot read the NATS credentials {}: {e}; cluster mode is off",
                    creds.display()
                );
                return;
            }
        };
    }
    let client = match options.connect(config.url.as_str()).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(
                "cluster: cannot use NATS at {}: {e}; cluster mode is off",
                redact(&config.url)
            );
            return;
        }
    };
    let node = Arc::new(Node {
        subjects: Subjects::new(&config.prefix, &config.node_id),
        config,
        shards,
        mesh,
        metrics,
        client,
        stores: Mutex::new(None),
        latest: Mutex::new(HashMap::new()),
        owned: Mutex::new(HashMap::new()),
        seen_epochs: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        writers: Mutex::new(HashMap::new()),
        log_ends: Mutex::new(HashMap::new()),
        stepped: Mutex::new(HashSet::new()),
        cuts,
        verified: AtomicU64::new(0),
        draining: std::sync::atomic::AtomicBool::new(false),
        ended: Mutex::new(HashMap::new()),
    });
    tokio::spawn(keep_stores_and_liveness(node.clone()));
    tokio::spawn(answer_snapshot_requests(node.clone()));
    tokio::spawn(take_ingest(node.clone()));
    tokio::spawn(take_node_messages(node.clone()));
    tokio::spawn(take_acks(node.clone()));
    tokio::spawn(watch_records(node.clone()));
    let mut next_token: u64 = 0;
    let mut edges: HashMap<String, (usize, tokio::task::JoinHandle<()>)> = HashMap::new();
    while let Ok(command) = commands.recv_async().await {
        match command {
            Command::Publish { code, payload } => {
                if node.unverified() {
                    // Cut off, or back but not yet sure the match is still ours (§6.3): the
                    // next broadcast after the check goes out.
                    continue;
                }
                let mut headers = node.frame_headers(&code);
                headers.insert(SENT_HEADER, now_us().to_string());
                let subject = node.subjects.of(Kind::Frames, &code);
                let len = payload.len() as u64;
                if node
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .is_ok()
                {
                    let c = &node.metrics.cluster;
                    c.frames_published
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    c.bytes_published
                        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Command::Interest { code, on: true } => match edges.get_mut(&code) {
                Some((n, _)) => *n += 1,
                None => {
                    if let Ok(mut latest) = node.latest.lock() {
                        latest.insert(code.clone(), None);
                    }
                    let task = tokio::spawn(edge(node.clone(), code.clone()));
                    edges.insert(code, (1, task));
                    node.metrics
                        .cluster
                        .subscriptions
                        .store(edges.len() as i64, std::sync::atomic::Ordering::Relaxed);
                }
            },
            Command::Interest { code, on: false } => {
                let gone = match edges.get_mut(&code) {
                    Some((n, _)) => {
                        *n = n.saturating_sub(1);
                        *n == 0
                    }
                    None => false,
                };
                if gone && let Some((_, task)) = edges.remove(&code) {
                    task.abort(); // drops the subscription
                    if let Ok(mut latest) = node.latest.lock() {
                        latest.remove(&code);
                    }
                    if let Ok(mut seen) = node.seen_epochs.lock() {
                        seen.remove(&code);
                    }
                    node.metrics
                        .cluster
                        .subscriptions
                        .store(edges.len() as i64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Command::Log {
                code,
                payload,
                first,
            } => node.log(code, LogItem { payload, first }),
            Command::Reconnected => {
                tokio::spawn(verify_records(node.clone()));
            }
            Command::Drain { begin, left, done } => {
                let node = node.clone();
                tokio::spawn(async move {
                    let _ = done.send(drain(node, begin, left).await);
                });
            }
            Command::Claim {
                code,
                secret_hash,
                presented,
                reply,
            } => {
                let node = node.clone();
                tokio::spawn(async move {
                    let answer = tokio::time::timeout(
                        CLAIM_TIMEOUT,
                        claim(&node, &code, &secret_hash, presented.as_deref()),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Claim::Unavailable("the cluster did not answer in time".into())
                    });
                    let _ = reply.send(answer);
                });
            }
            Command::Release { code } => {
                if let Some(epoch) = node.owned.lock().ok().and_then(|mut o| o.remove(&code))
                    && let Ok(mut ended) = node.ended.lock()
                {
                    // The match's last frames (its final state, the room's end) may go out
                    // after its record: they keep its epoch, or edges would drop them.
                    if ended.len() >= MAX_ENDED {
                        ended.clear();
                    }
                    ended.insert(code.clone(), epoch);
                }
                if let Ok(mut writers) = node.writers.lock() {
                    writers.remove(&code);
                }
                if let Ok(mut ends) = node.log_ends.lock() {
                    ends.remove(&code);
                }
                tokio::spawn(release(node.clone(), code));
            }
            Command::Latest { code, shard, sid } => {
                let frames = node
                    .latest
                    .lock()
                    .ok()
                    .and_then(|l| l.get(&code).cloned().flatten());
                if let Some(frames) = frames {
                    node.mesh
                        .send(shard, ShardMsg::Remote(RemoteMsg::Frames { sid, frames }));
                }
            }
            Command::Reply {
                subject,
                payload,
                code,
            } => {
                // Snapshot replies are frames: they name their node and epoch like every
                // published one; none while this node is not sure it still owns the match.
                if code.is_some() && (node.unverified() || node.draining.load(Ordering::Acquire)) {
                    continue;
                }
                let headers = match &code {
                    Some(code) => node.frame_headers(code),
                    None => node.headers(),
                };
                let _ = node
                    .client
                    .publish_with_headers(subject, headers, payload)
                    .await;
            }
            Command::Forward { code, msg, from } => {
                let Ok(payload) = serde_json::to_vec(&msg) else {
                    continue;
                };
                next_token += 1;
                let token = next_token;
                if let Ok(mut p) = node.pending.lock() {
                    p.insert(token, (msg, from));
                }
                // JSON, not postcard: an event carries arbitrary JSON values (postcard cannot
                // read those back). Published from this loop, so the origin gets one node's
                // forwards in order.
                let reply = node.subjects.ack(token);
                let sent = node
                    .client
                    .publish_with_reply_and_headers(
                        node.subjects.of(Kind::Ingest, &code),
                        reply,
                        node.headers(),
                        payload.into(),
                    )
                    .await;
                let waiter = node.clone();
                tokio::spawn(async move {
                    if sent.is_ok() {
                        tokio::time::sleep(FORWARD_TIMEOUT).await;
                    }
                    let unanswered = waiter
                        .pending
                        .lock()
                        .ok()
                        .and_then(|mut p| p.remove(&token));
                    if let Some((msg, from)) = unanswered {
                        waiter
                            .mesh
                            .send(from, ShardMsg::Remote(RemoteMsg::Unanswered { msg }));
                    }
                });
            }
            Command::Put { shared, key, value } => {
                if let Some(stores) = node.stores() {
                    tokio::spawn(async move {
                        if let Err(e) = stores.shared(shared).put(Subjects::key(&key), value).await
                        {
                            tracing::warn!("cluster: {shared:?} {key:?} not shared: {e}");
                        }
                    });
                }
            }
            Command::Get { shared, key, reply } => match node.stores() {
                Some(stores) => {
                    tokio::spawn(async move {
                        let value = stores
                            .shared(shared)
                            .get(Subjects::key(&key))
                            .await
                            .ok()
                            .flatten();
                        let _ = reply.send(value);
                    });
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            Command::Resnapshot => {
                for code in edges.keys() {
                    tokio::spawn(ask_snapshot(node.clone(), code.clone()));
                }
            }
            Command::Direct { node: to, msg } => {
                if let Ok(payload) = postcard::to_stdvec(&msg) {
                    let _ = node
                        .client
                        .publish_with_headers(
                            node.subjects.node(&to),
                            node.headers(),
                            payload.into(),
                        )
                        .await;
                }
            }
        }
    }
}

/// How long a forwarded message waits for the origin's acknowledgement.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages other nodes forward to the owner of a match (`<prefix>.ingest.<code>`): to the
/// owner shard of the code here, which handles and acknowledges them when the match lives here.
async fn take_ingest(node: Arc<Node>) {
    let Some(mut sub) = subscribe(&node, &node.subjects.every(Kind::Ingest)).await else {
        return;
    };
    while let Some(msg) = sub.next().await {
        let Some(code) = node.subjects.code_of(Kind::Ingest, &msg.subject) else {
            node.untrusted("an invalid code", "a forwarded message");
            continue;
        };
        let Some(reply) = msg.reply.as_ref() else {
            node.untrusted(&code, "a forwarded message without a reply subject");
            continue;
        };
        if sender(&msg).is_none() {
            node.untrusted(&code, "a forwarded message without its node");
            continue;
        }
        let forwarded = match serde_json::from_slice::<MatchMsg>(&msg.payload) {
            Ok(m) if forwardable(&m, &code) => m,
            Ok(_) => {
                node.untrusted(&code, "a message of a kind nodes do not forward");
                continue;
            }
            Err(_) => {
                node.untrusted(&code, "an undecodable forwarded message");
                continue;
            }
        };
        node.mesh.send(
            owner_of(&code, node.shards),
            ShardMsg::Remote(RemoteMsg::Ingest {
                msg: forwarded,
                reply: reply.to_string(),
            }),
        );
    }
}

/// Whether a message arriving on `<prefix>.ingest.<code>` is one a node forwards there: a kind
/// that `registry` forwards to an origin, about the subject's own code (a logon, a match-id
/// search or a snapshot request for a session never travel between nodes).
fn forwardable(msg: &MatchMsg, code: &str) -> bool {
    let kind_ok = matches!(
        msg,
        MatchMsg::Event { .. }
            | MatchMsg::AuxDisconnected { .. }
            | MatchMsg::PlayerPresence { .. }
            | MatchMsg::SpectatorJoin { .. }
            | MatchMsg::SpectatorLeave { .. }
            | MatchMsg::StreamJoin { .. }
            | MatchMsg::StreamLeave { .. }
    );
    kind_ok && msg.code() == Some(code)
}

/// Messages for connections of this node from the owners of their matches elsewhere.
async fn take_node_messages(node: Arc<Node>) {
    let subject = node.subjects.own_node();
    let Some(mut sub) = subscribe(&node, &subject).await else {
        return;
    };
    while let Some(msg) = sub.next().await {
        if sender(&msg).is_none() {
            node.untrusted("this node", "a message without its node");
            continue;
        }
        match postcard::from_bytes::<NodeMsg>(&msg.payload) {
            Ok(m) => {
                let (shard, msg) = m.into_shard_msg();
                if shard < node.shards {
                    node.mesh.send(shard, msg);
                }
            }
            Err(e) => tracing::warn!("cluster: an undecodable message for this node: {e}"),
        }
    }
}

/// The origins' acknowledgements of this node's forwarded messages.
async fn take_acks(node: Arc<Node>) {
    let Some(mut sub) = subscribe(&node, &node.subjects.acks()).await else {
        return;
    };
    while let Some(msg) = sub.next().await {
        let Some(token) = node.subjects.ack_number(&msg.subject) else {
            continue;
        };
        // NATS itself answers "no responders" (503) when no node listens on the origin's
        // subject (every other node is cut off or down): that is no acknowledgement — the
        // message comes back now as unanswered (not after the timeout, and never lost).
        let refused = msg.status == Some(async_nats::StatusCode::NO_RESPONDERS);
        if !refused && sender(&msg).is_none() {
            node.untrusted("this node", "an acknowledgement without its node");
            continue;
        }
        let waiting = node.pending.lock().ok().and_then(|mut p| p.remove(&token));
        if refused && let Some((msg, from)) = waiting {
            node.mesh
                .send(from, ShardMsg::Remote(RemoteMsg::Unanswered { msg }));
        }
    }
}

/// Subscribes, retrying while NATS is away.
async fn subscribe(node: &Node, subject: &str) -> Option<async_nats::Subscriber> {
    loop {
        match node.client.subscribe(subject.to_string()).await {
            Ok(s) => return Some(s),
            Err(e) => {
                tracing::warn!("cluster: cannot subscribe to {subject}: {e}");
                tokio::time::sleep(LIVENESS_REFRESH).await;
            }
        }
    }
}

/// The URL without its credentials, for logs.
fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((scheme_user, host)) => match scheme_user.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{host}"),
            None => format!("***@{host}"),
        },
        None => url.to_string(),
    }
}

/// Opens the KV buckets once NATS answers, then refreshes this node's liveness and the count of
/// the cluster's live matches every 2 s.
async fn keep_stores_and_liveness(node: Arc<Node>) {
    let js = async_nats::jetstream::new(node.client.clone());
    let prefix = node.subjects.prefix().to_string();
    let replicas = node.config.replicas;
    loop {
        let opened = async {
            let (hour, minutes) = (Duration::from_secs(3600), Duration::from_secs(600));
            Ok::<_, String>(Stores {
                js: js.clone(),
                matches: bucket(&js, &prefix, "matches", None, replicas).await?,
                nodes: bucket(&js, &prefix, "nodes", Some(LIVENESS_TTL), replicas).await?,
                previews: bucket(&js, &prefix, "previews", Some(minutes), replicas).await?,
                teaminfo: bucket(&js, &prefix, "teaminfo", Some(hour), replicas).await?,
                matchids: bucket(&js, &prefix, "matchids", Some(6 * hour), replicas).await?,
                events: js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: format!("{prefix}_events"),
                        subjects: vec![node.subjects.every(Kind::Events)],
                        max_age: EVENT_LOG_MAX_AGE,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?,
            })
        };
        match opened.await {
            Ok(stores) => {
                if let Ok(mut s) = node.stores.lock() {
                    *s = Some(stores);
                }
                node.metrics
                    .cluster
                    .ready
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    "cluster: KV buckets open; node {} is ready",
                    node.config.node_id
                );
                break;
            }
            Err(e) => {
                if replicas > 1 {
                    tracing::warn!(
                        "cluster: the KV buckets are not available yet (CLUSTER_REPLICAS={replicas}: NATS needs that many JetStream servers): {e}"
                    );
                } else {
                    tracing::warn!("cluster: the KV buckets are not available yet: {e}");
                }
                tokio::time::sleep(LIVENESS_REFRESH).await;
            }
        }
    }
    loop {
        if let Some(stores) = node.stores() {
            let record = json!({ "node": node.config.node_id, "at": now_us() / 1000 }).to_string();
            if let Err(e) = stores
                .nodes
                .put(Subjects::key(&node.config.node_id), record.into())
                .await
            {
                tracing::debug!("cluster: liveness not refreshed: {e}");
            }
            if let Ok(keys) = stores.matches.keys().await {
                let n = keys.filter(|k| std::future::ready(k.is_ok())).count().await;
                node.metrics
                    .cluster
                    .matches
                    .store(n as i64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        tokio::time::sleep(LIVENESS_REFRESH).await;
    }
}

/// The KV bucket `<prefix>_<name>` (one value per key; entries expire after `max_age`), created
/// if no node made it yet.
async fn bucket(
    js: &async_nats::jetstream::Context,
    prefix: &str,
    name: &str,
    max_age: Option<Duration>,
    replicas: usize,
) -> Result<kv::Store, String> {
    let name = format!("{prefix}_{name}");
    let config = kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age: max_age.unwrap_or_default(),
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(create) => js
            .get_key_value(name)
            .await
            .map_err(|e| format!("{create}; {e}")),
    }
}

/// Other nodes ask `<prefix>.snapshot.<code>` for the current frames: the owner shard of the
/// code answers when this node is the match's origin (others stay silent).
async fn answer_snapshot_requests(node: Arc<Node>) {
    let Some(mut sub) = subscribe(&node, &node.subjects.every(Kind::Snapshot)).await else {
        return;
    };
    while let Some(msg) = sub.next().await {
        let (Some(reply), Some(code)) = (
            msg.reply.as_ref(),
            node.subjects.code_of(Kind::Snapshot, &msg.subject),
        ) else {
            node.untrusted("an invalid code", "a snapshot request");
            continue;
        };
        node.mesh.send(
            owner_of(&code, node.shards),
            ShardMsg::Remote(RemoteMsg::SnapshotAsk {
                code,
                reply: reply.to_string(),
            }),
        );
    }
}

/// This node has viewers of a match of another node: its frames, and at first the current ones.
async fn edge(node: Arc<Node>, code: String) {
    let subject = node.subjects.of(Kind::Frames, &code);
    let mut sub = match node.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cluster: cannot subscribe to {subject}: {e}");
            return;
        }
    };
    // The origin's current frames, for the viewers that arrive before its next broadcast.
    tokio::spawn(ask_snapshot(node.clone(), code.clone()));
    while let Some(msg) = sub.next().await {
        node.deliver(&code, &msg);
    }
}

/// Asks the origin of `code` for its current frames and delivers them here.
async fn ask_snapshot(node: Arc<Node>, code: String) {
    let subject = node.subjects.of(Kind::Snapshot, &code);
    if let Ok(msg) = node.client.request(subject, Bytes::new()).await
        && !msg.payload.is_empty()
    {
        node.deliver(&code, &msg);
    }
}

/// The ownership record of `code`: created when there is none; see `Claim`.
async fn claim(node: &Node, code: &str, secret_hash: &str, presented: Option<&str>) -> Claim {
    let Some(stores) = node.stores() else {
        return Claim::Unavailable("the cluster's NATS is not reachable".into());
    };
    if node.client.connection_state() != async_nats::connection::State::Connected {
        return Claim::Unavailable("the cluster's NATS is not reachable".into());
    }
    let me = &node.config.node_id;
    let record_with = |epoch: u64| {
        json!({
            "node": me,
            "epoch": epoch,
            "secretHash": secret_hash,
            "createdAt": now_us() / 1000,
        })
        .to_string()
    };
    let record = record_with(1);
    let key = Subjects::key(code);
    match stores.matches.create(&key, record.clone().into()).await {
        Ok(_) => return node.own(code, 1),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Claim::Unavailable(e.to_string()),
    }
    let entry = match stores.matches.entry(&key).await {
        Ok(Some(entry)) => entry,
        // Deleted meanwhile: try once more.
        Ok(None) => {
            return match stores.matches.create(&key, record.into()).await {
                Ok(_) => node.own(code, 1),
                Err(e) => Claim::Unavailable(e.to_string()),
            };
        }
        Err(e) => return Claim::Unavailable(e.to_string()),
    };
    let mut entry = entry;
    let mut record_value = serde_json::from_slice::<Value>(&entry.value).unwrap_or(Value::Null);
    // Its node is shutting down (§6.6): it releases the record once the match's event log is
    // complete; wait for that (briefly) rather than refuse or take an unfinished log.
    let until = tokio::time::Instant::now() + DRAIN_WAIT;
    while flag(&record_value, "draining")
        && record_value.get("node").and_then(Value::as_str) != Some(me.as_str())
        && tokio::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match stores.matches.entry(&key).await {
            Ok(Some(e)) => {
                record_value = serde_json::from_slice::<Value>(&e.value).unwrap_or(Value::Null);
                entry = e;
            }
            Ok(None) => {
                return match stores.matches.create(&key, record.into()).await {
                    Ok(_) => node.own(code, 1),
                    Err(e) => Claim::Unavailable(e.to_string()),
                };
            }
            Err(e) => return Claim::Unavailable(e.to_string()),
        }
    }
    let owner = record_value
        .get("node")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    // Every new holder of a record gets the next epoch: what an earlier holder (or an earlier
    // run of this node) still publishes is older, and edges drop it.
    let next_epoch = record_value
        .get("epoch")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        + 1;
    let recorded_hash = record_value.get("secretHash").and_then(Value::as_str);
    let with_secret = presented.is_some() && presented == recorded_hash;
    if &owner == me && !with_secret {
        // Ours (this node's match ended without its record going, or a restart that recovers
        // it from its replay log): take it again.
        let _ = stores
            .matches
            .update(&key, record_with(next_epoch).into(), entry.revision)
            .await;
        return node.own(code, next_epoch);
    }
    // Another node's record: is the match live there? (A record outlives its match when its
    // node stopped, or when NATS was away as the match ended.)
    // A released record (its node drained, §6.6) is served by no node: no need to ask.
    let subject = node.subjects.of(Kind::Snapshot, code);
    let live = &owner != me
        && !flag(&record_value, "released")
        && matches!(
            tokio::time::timeout(Duration::from_secs(1), node.client.request(subject, Bytes::new())).await,
            Ok(Ok(msg)) if !msg.payload.is_empty()
        );
    if live {
        return Claim::Live(owner);
    }
    let alive = matches!(stores.nodes.entry(Subjects::key(&owner)).await, Ok(Some(_)));
    // (Its observer with the secret, also on this node after a restart that lost the match:
    // the match goes on from its event log, not from nothing.)
    if with_secret {
        // The observer of the match is back, on this node: take the match over with its state
        // (compare-and-set: of several nodes trying at once, one wins).
        let epoch = next_epoch;
        let taken = json!({
            "node": me,
            "epoch": epoch,
            "secretHash": recorded_hash,
            "createdAt": record_value.get("createdAt"),
        })
        .to_string();
        if stores
            .matches
            .update(&key, taken.into(), entry.revision)
            .await
            .is_err()
        {
            return Claim::Live(owner);
        }
        tracing::info!(
            "cluster: taking {code} over from {owner} ({}), epoch {epoch}",
            if alive { "alive" } else { "gone" }
        );
        return match read_log(node, &stores, code).await {
            Ok(replay) => {
                node.own(code, epoch);
                Claim::Takeover(replay, epoch)
            }
            Err(e) => {
                let _ = release_record(&stores, me, code).await;
                Claim::Unavailable(format!("the match's event log cannot be read: {e}"))
            }
        };
    }
    // No node serves it: the code is free again (compare-and-set: one claimer wins).
    match stores
        .matches
        .update(&key, record_with(next_epoch).into(), entry.revision)
        .await
    {
        Ok(_) => {
            tracing::info!(
                "cluster: {code} was {owner}'s ({}), no node serves it: now this node's, epoch {next_epoch}",
                if alive { "alive" } else { "gone" }
            );
            node.own(code, next_epoch)
        }
        Err(_) => Claim::Live(owner),
    }
}

/// The match's event log as replay text: the header, then one event per line.
async fn read_log(node: &Node, stores: &Stores, code: &str) -> Result<String, String> {
    use jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let consumer = stores
        .events
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            filter_subject: node.subjects.of(Kind::Events, code),
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let total = consumer.cached_info().num_pending as usize;
    let mut lines: Vec<String> = Vec::with_capacity(total);
    let mut end = 0;
    while lines.len() < total {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let before = lines.len();
        while let Some(msg) = batch.next().await {
            let msg = msg.map_err(|e| e.to_string())?;
            if let Ok(info) = msg.info() {
                end = info.stream_sequence;
            }
            lines.push(String::from_utf8_lossy(&msg.payload).into_owned());
        }
        if lines.len() == before {
            return Err(format!("{} of {total} events read", lines.len()));
        }
    }
    if lines.is_empty() {
        return Err("the log is empty".into());
    }
    // This node's first append expects the log to end where it was read (§6.2).
    if let Ok(mut ends) = node.log_ends.lock() {
        ends.insert(code.to_string(), end);
    }
    Ok(lines.join(",\n"))
}

/// The match of `code` ended on this node: its ownership record goes, if it is still ours,
/// and so does its event log.
async fn release(node: Arc<Node>, code: String) {
    let Some(stores) = node.stores() else {
        return;
    };
    if release_record(&stores, &node.config.node_id, &code).await {
        let _ = stores
            .events
            .purge()
            .filter(node.subjects.of(Kind::Events, &code))
            .await;
    }
}

/// How long a claim waits for a draining node to release a match's record.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Whether a record carries a true `name` flag (`draining`, `released`).
fn flag(record: &Value, name: &str) -> bool {
    record.get(name).and_then(Value::as_bool) == Some(true)
}

/// SIGTERM in cluster mode (§6.6), in two steps around the shards' own shutdown. `begin`: each
/// owned match's record is marked `draining` (claims elsewhere wait for the release instead of
/// being refused) and snapshot requests are no longer answered. Then (`begin == false`, after
/// the shards closed their connections and applied what they had read): every event is in the
/// log, and each record is marked `released` with its epoch kept, so the observer's next logon
/// on any node takes the match over at once. Answers with the number of matches handled.
async fn drain(node: Arc<Node>, begin: bool, left: Duration) -> usize {
    let until = tokio::time::Instant::now() + left;
    node.draining.store(true, Ordering::Release);
    let Some(stores) = node.stores() else {
        return 0;
    };
    if !begin {
        // The shards' last events reach this thread's queue before this command.
        while tokio::time::Instant::now() < until {
            let waiting: u64 = node
                .writers
                .lock()
                .map(|w| w.values().map(|w| w.waiting.load(Ordering::Acquire)).sum())
                .unwrap_or(0);
            if waiting == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let owned: Vec<(String, u64)> = node
        .owned
        .lock()
        .map(|o| o.iter().map(|(c, e)| (c.clone(), *e)).collect())
        .unwrap_or_default();
    let mut done = 0;
    for (code, epoch) in owned {
        let key = Subjects::key(&code);
        let Ok(Some(entry)) = stores.matches.entry(&key).await else {
            continue;
        };
        if taken_from(&node.config.node_id, epoch, &entry.value).is_some() {
            continue;
        }
        let Ok(Value::Object(mut record)) = serde_json::from_slice::<Value>(&entry.value) else {
            continue;
        };
        record.insert("draining".into(), Value::Bool(begin));
        if !begin {
            record.insert("released".into(), Value::Bool(true));
        }
        let value = Value::Object(record).to_string();
        if stores
            .matches
            .update(&key, value.into(), entry.revision)
            .await
            .is_ok()
        {
            done += 1;
            if !begin {
                if let Ok(mut o) = node.owned.lock() {
                    o.remove(&code);
                }
                tracing::info!(
                    "cluster: match {code} released (epoch {epoch}): its observer may log on to any node"
                );
            }
        }
    }
    done
}

/// Deletes the ownership record of `code` if `me` holds it; whether it did.
async fn release_record(stores: &Stores, me: &str, code: &str) -> bool {
    let key = Subjects::key(code);
    let Ok(Some(entry)) = stores.matches.entry(&key).await else {
        return false;
    };
    let owner = serde_json::from_slice::<Value>(&entry.value)
        .ok()
        .and_then(|v| v.get("node").and_then(Value::as_str).map(String::from));
    owner.as_deref() == Some(me)
        && stores
            .matches
            .delete_expect_revision(&key, Some(entry.revision))
            .await
            .is_ok()
}

/// Why the ownership record `value` of a match this node owns under `epoch` says it is not
/// this node's any more (`None`: it still is).
fn taken_from(me: &str, epoch: u64, value: &[u8]) -> Option<String> {
    let record = serde_json::from_slice::<Value>(value).ok()?;
    let node = record
        .get("node")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let theirs = record.get("epoch").and_then(Value::as_u64).unwrap_or(0);
    if node != me {
        Some(format!("its record names node {node:?}, epoch {theirs}"))
    } else if theirs > epoch {
        Some(format!("its record has a newer epoch ({theirs})"))
    } else {
        None
    }
}

/// After every (re)connection: the record of each owned match is read again before anything
/// of it is published, answered or appended (§6.3); a match another node took over while this
/// one was cut off is stepped down from.
async fn verify_records(node: Arc<Node>) {
    let cut = node.cuts.load(Ordering::Acquire);
    loop {
        if node.cuts.load(Ordering::Acquire) != cut {
            return; // lost again: the next connection checks
        }
        let Some(stores) = node.stores() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let owned: Vec<(String, u64)> = node
            .owned
            .lock()
            .map(|o| o.iter().map(|(c, e)| (c.clone(), *e)).collect())
            .unwrap_or_default();
        let mut complete = true;
        for (code, epoch) in owned {
            match stores.matches.entry(Subjects::key(&code)).await {
                Ok(Some(entry)) => {
                    if let Some(why) = taken_from(&node.config.node_id, epoch, &entry.value) {
                        node.step_down(&code, &why);
                    }
                }
                // No record: nobody took it; this node still serves it.
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!("cluster: the record of {code} not read yet: {e}");
                    complete = false;
                    break;
                }
            }
        }
        if complete {
            if node.cuts.load(Ordering::Acquire) == cut {
                node.verified.store(cut, Ordering::Release);
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Watches every ownership record (KV watch): a record of a match this node owns that names
/// another node or a newer epoch means the match was taken over — step down (§6.3). The watch
/// is opened again whenever it ends.
async fn watch_records(node: Arc<Node>) {
    loop {
        let Some(stores) = node.stores() else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut watch = match stores.matches.watch_all().await {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("cluster: cannot watch the match records: {e}");
                tokio::time::sleep(LIVENESS_REFRESH).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else {
                break;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Some(code) = Subjects::code_of_key(&entry.key) else {
                continue;
            };
            let Some(epoch) = node.epoch_of(&code) else {
                continue;
            };
            if let Some(why) = taken_from(&node.config.node_id, epoch, &entry.value) {
                node.step_down(&code, &why);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The writer of one owned match's event log (§6.2): appends one event at a time, each with
/// `Nats-Expected-Last-Subject-Sequence` (the last sequence this node appended or read) and a
/// `Nats-Msg-Id` that makes a retried append idempotent. While NATS is away or the record is
/// not checked again yet, events wait here (in order, none dropped). A refused append (another
/// node has written) makes this node step down; what still waits is counted as orphaned.
async fn write_log(
    node: Arc<Node>,
    code: String,
    epoch: u64,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<LogItem>,
    mut last: Option<u64>,
    waiting: Arc<AtomicU64>,
) {
    use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
    let subject = node.subjects.of(Kind::Events, &code);
    let writer = crate::random::random_string(b"0123456789abcdef", 12);
    let mut n: u64 = 0;
    let mut failures: u32 = 0;
    while let Some(item) = queue.recv().await {
        let msg_id = node.subjects.log_message_id(&code, epoch, &writer, n);
        let mut first = item.first;
        loop {
            if node.epoch_of(&code) != Some(epoch) {
                // Stepped down or released meanwhile (a step-down counted what waited).
                return;
            }
            let stores = match node.stores() {
                Some(s) if !node.unverified() => s,
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if first {
                // A new match with this code: the log of an earlier one goes.
                if stores.events.purge().filter(subject.clone()).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                first = false;
                last = Some(0);
            }
            let expected = match last {
                Some(seq) => seq,
                None => match stores
                    .events
                    .get_last_raw_message_by_subject(&subject)
                    .await
                {
                    Ok(m) => m.sequence,
                    Err(e)
                        if e.kind()
                            == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                    {
                        0
                    }
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                },
            };
            let mut headers = node.headers();
            headers.insert(EPOCH_HEADER, epoch.to_string());
            headers.insert(NATS_MESSAGE_ID, msg_id.as_str());
            headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string());
            let acked = match stores
                .js
                .publish_with_headers(subject.clone(), headers, item.payload.clone())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(ack) => {
                    last = Some(ack.sequence);
                    failures = 0;
                    break;
                }
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    // Ours after all (a retry of an append that was stored)? Else another
                    // node has written this log: it is not ours any more.
                    match stores
                        .events
                        .get_last_raw_message_by_subject(&subject)
                        .await
                    {
                        Ok(m)
                            if m.headers.get(NATS_MESSAGE_ID).map(|v| v.as_str())
                                == Some(msg_id.as_str()) =>
                        {
                            last = Some(m.sequence);
                            break;
                        }
                        Ok(_) => {
                            // (The refused event still counts as waiting: orphaned with the rest.)
                            node.step_down(&code, "another node appended to the match's event log");
                            return;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(
                            "cluster: an event of {code} not logged yet ({e}); {} waiting, retrying",
                            waiting.load(Ordering::Acquire)
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        n += 1;
        waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::{flag, taken_from};
    use serde_json::json;

    /// A record still names this node under its epoch → no step-down; another node, or a newer
    /// epoch of this node (a restart that claimed again), → step down; junk is not a takeover.
    #[test]
    fn a_record_says_when_the_match_was_taken_over() {
        let record = |node: &str, epoch: u64| json!({"node": node, "epoch": epoch}).to_string();
        assert_eq!(taken_from("a", 3, record("a", 3).as_bytes()), None);
        assert_eq!(taken_from("a", 3, record("a", 2).as_bytes()), None);
        assert!(taken_from("a", 3, record("b", 4).as_bytes()).is_some());
        assert!(taken_from("a", 3, record("b", 1).as_bytes()).is_some());
        assert!(taken_from("a", 3, record("a", 4).as_bytes()).is_some());
        assert_eq!(taken_from("a", 3, b"not json"), None);
        let released = json!({"node": "a", "epoch": 3, "released": true});
        assert!(flag(&released, "released"));
        assert!(!flag(&released, "draining"));
        assert!(!flag(&json!({"released": "yes"}), "released"));
    }
}
