//! Operational counters and the Prometheus text exposition of `/metrics` (REST port).
//!
//! Every shard writes only its own `ShardStats` (relaxed atomics on a cache line of their own: no
//! lock, no sharing on a per-message path); a scrape on any shard reads all of them. Code that runs
//! on a shard thread reaches its stats through `local()`. Owns no behaviour of the server.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The listening ports, for per-port connection gauges.
pub const PORTS: [&str; 4] = ["ingest", "rest", "broadcast", "single"];

/// One shard's counters (counters only grow; gauges go up and down).
#[repr(align(64))]
#[derive(Default)]
pub struct ShardStats {
    /// Open TCP connections, by `PORTS` index (gauge).
    pub connections: [AtomicI64; 4],
    /// Connections refused by a connection limit.
    pub connections_refused: AtomicU64,
    /// Spectator connections on this shard (gauge).
    pub spectators: AtomicI64,
    /// HTTP event streams (`/matches/{code}/stream`) on this shard (gauge).
    pub streams: AtomicI64,
    /// Live matches owned by this shard (gauge).
    pub matches: AtomicI64,
    /// Ingest events applied to this shard's matches.
    pub events: AtomicU64,
    /// What the transport wrote and refused on this shard (deliveries, frames and bytes out,
    /// skipped and dropped frames, slow-consumer disconnects).
    pub io: Arc<crate::transport::stats::IoStats>,
    /// Logons refused because an address made too many attempts.
    pub logons_throttled: AtomicU64,
    /// Bytes written to replay logs.
    pub replay_bytes: AtomicU64,
    /// Ingest events refused (malformed, over a limit, or not permitted to the sender).
    pub events_refused: AtomicU64,
    /// Replay logs that stopped (write failure, stalled disk) and were marked incomplete.
    pub replay_incomplete: AtomicU64,
    /// The shard thread's kernel id (for CPU time from `/proc/self/task`).
    pub tid: AtomicI64,
    /// Time from the start of handing a room state to this shard's subscribers to the last send.
    pub fanout: Histogram<FanoutBounds>,
}

/// The upper bounds (seconds) of a histogram's buckets.
pub trait Bounds: Default {
    const BOUNDS: [f64; 10];
}

/// Backend requests: milliseconds to seconds.
#[derive(Default)]
pub struct BackendBounds;

impl Bounds for BackendBounds {
    const BOUNDS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
}

/// One shard handing one room state to its subscribers: half a millisecond to a tenth of a second
/// (thousands of subscribers take tens of milliseconds).
#[derive(Default)]
pub struct FanoutBounds;

impl Bounds for FanoutBounds {
    const BOUNDS: [f64; 10] = [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1,
    ];
}

/// A fixed-bucket latency histogram (relaxed atomics: written by one thread, read by scrapes).
#[derive(Default)]
pub struct Histogram<B: Bounds> {
    buckets: [AtomicU64; 10],
    count: AtomicU64,
    sum_micros: AtomicU64,
    _bounds: std::marker::PhantomData<B>,
}

impl<B: Bounds> Histogram<B> {
    pub fn observe(&self, seconds: f64) {
        for (bound, bucket) in B::BOUNDS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

/// Every shard's stats plus process-wide ones.
pub struct Metrics {
    pub shards: Vec<Arc<ShardStats>>,
    pub backend_latency: Histogram<BackendBounds>,
    /// Cluster mode (written by the NATS thread; `node` set once at start).
    pub cluster: ClusterStats,
    /// Set once at start when the listeners speak TLS.
    pub tls: std::sync::OnceLock<TlsInfo>,
}

/// What `/metrics` says about TLS beyond the per-shard handshake counters.
pub struct TlsInfo {
    /// The session ticketer (`None`: TLS_TICKET_SECONDS=0).
    pub tickets: Option<Arc<crate::transport::tls::Tickets>>,
    /// Whether the kernel offers TLS offload (kTLS), probed at start.
    pub kernel_tls: bool,
}

/// What the cluster's NATS thread reports (`cluster.md` §3.6, issue #16).
#[derive(Default)]
pub struct ClusterStats {
    pub node: std::sync::OnceLock<String>,
    /// 1 while connected to NATS.
    pub connected: AtomicI64,
    /// 1 once the KV buckets are open (ownership can be checked).
    pub ready: AtomicI64,
    /// Codes this node's edge subscribes to.
    pub subscriptions: AtomicI64,
    /// Frames published / received over NATS.
    pub frames_published: AtomicU64,
    pub frames_received: AtomicU64,
    /// Bytes of those frames (NATS payloads).
    pub bytes_published: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Sum of received frames' lag (publisher's clock to ours), microseconds.
    pub lag_micros: AtomicU64,
    /// Live matches in the cluster (ownership records), refreshed every 2 s.
    pub matches: AtomicI64,
    /// Messages dropped because they did not come from a node of the cluster as nodes send
    /// them (no node header, undecodable, an invalid code, a kind nodes do not forward).
    pub untrusted_dropped: AtomicU64,
    /// The second (Unix time) of the last log line about such a message.
    pub untrusted_logged_at: AtomicU64,
    /// Frames dropped because an edge had seen a newer epoch of their match (a fenced origin).
    pub stale_frames_dropped: AtomicU64,
    /// Matches this node stopped serving as origin because another node took them over.
    pub stepdowns: AtomicU64,
    /// Events this node accepted as origin that the match's new origin never saw (accepted
    /// while cut off from NATS, then the match was taken over).
    pub events_orphaned: AtomicU64,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| Arc::default()).collect(),
            backend_latency: Histogram::default(),
            cluster: ClusterStats::default(),
            tls: std::sync::OnceLock::new(),
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<ShardStats>>> = const { RefCell::new(None) };
}

/// Makes `stats` this thread's (called once by each shard at start-up).
pub fn set_local(stats: Arc<ShardStats>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    stats.tid.store(i64::from(tid), Ordering::Relaxed);
    crate::transport::stats::set_local(stats.io.clone());
    LOCAL.with(|l| *l.borrow_mut() = Some(stats));
}

/// Runs `f` on this shard's stats (a no-op on threads that are not shards).
pub fn local(f: impl FnOnce(&ShardStats)) {
    LOCAL.with(|l| {
        if let Some(s) = l.borrow().as_ref() {
            f(s)
        }
    });
}

/// Adds one to a counter of this shard.
pub fn bump(counter: fn(&ShardStats) -> &AtomicU64) {
    local(|s| {
        counter(s).fetch_add(1, Ordering::Relaxed);
    });
}

/// Moves a gauge of this shard by `delta`.
pub fn gauge(counter: fn(&ShardStats) -> &AtomicI64, delta: i64) {
    local(|s| {
        counter(s).fetch_add(delta, Ordering::Relaxed);
    });
}

/// CPU seconds (user + system) of a thread of this process, from `/proc/self/task/<tid>/stat`.
pub fn thread_cpu_seconds(tid: i64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// Resident set size of the process in bytes.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn render_tls(f: &mut Family<'_>, metrics: &Metrics, tls: &TlsInfo) {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let name = "spectra_tls_handshakes_total";
    f.header(
        name,
        "counter",
        "TLS handshakes completed by kind (full: certificate and key exchange; resumed: a session ticket or cached session) and shard.",
    );
    for (i, s) in metrics.shards.iter().enumerate() {
        for (kind, n) in [("full", &s.io.tls_full), ("resumed", &s.io.tls_resumed)] {
            let _ = writeln!(f.out, "{name}{{kind=\"{kind}\",shard=\"{i}\"}} {}", load(n));
        }
    }
    f.per_shard(
        metrics,
        "spectra_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed, were abandoned or timed out.",
        |s| load(&s.io.tls_failed) as i64,
    );
    f.per_shard(
        metrics,
        "spectra_tls_handoffs_total",
        "counter",
        "TLS 1.3 connections handed off after their handshake: their records sealed and opened with their own traffic keys, no rustls connection kept (TLS 1.2 connections stay with rustls).",
        |s| load(&s.io.tls_handed_off) as i64,
    );
    f.per_shard(
        metrics,
        "spectra_tls_record_errors_total",
        "counter",
        "Handed-off TLS connections closed on a record the client could not have sent correctly (tampered, oversized, unencrypted, a fatal alert, a KeyUpdate).",
        |s| load(&s.io.tls_record_errors) as i64,
    );
    f.per_shard(
        metrics,
        "spectra_tls_kernel_total",
        "counter",
        "Handed-off TLS 1.3 connections whose records the kernel seals (and opens, unless a record had begun arriving with the handshake's end): kTLS.",
        |s| load(&s.io.tls_kernel) as i64,
    );
    f.header(
        "spectra_tls_kernel_available",
        "gauge",
        "1 when the kernel offers TLS offload (kTLS: the tls upper-layer protocol), probed at start; with KERNEL_TLS=auto TLS 1.3 connections then hand their records to it (spectra_tls_kernel_total).",
    );
    let _ = writeln!(
        f.out,
        "spectra_tls_kernel_available {}",
        u8::from(tls.kernel_tls)
    );
    if let Some(tickets) = &tls.tickets {
        f.header(
            "spectra_tls_tickets_refused_total",
            "counter",
            "Session tickets presented but not accepted (their key expired: older than two TLS_TICKET_SECONDS periods; or not this process's); the client made a full handshake.",
        );
        let _ = writeln!(
            f.out,
            "spectra_tls_tickets_refused_total {}",
            tickets.refused()
        );
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn per_shard(
        &mut self,
        metrics: &Metrics,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&ShardStats) -> i64,
    ) {
        self.header(name, kind, help);
        for (i, s) in metrics.shards.iter().enumerate() {
            let _ = writeln!(self.out, "{name}{{shard=\"{i}\"}} {}", value(s));
        }
    }

    /// One histogram: the sum of `parts` (e.g. every shard's).
    fn histogram<'h, B: Bounds + 'h>(
        &mut self,
        name: &str,
        help: &str,
        parts: impl Iterator<Item = &'h Histogram<B>>,
    ) {
        let (mut buckets, mut count, mut sum_micros) = ([0u64; 10], 0u64, 0u64);
        for h in parts {
            for (total, bucket) in buckets.iter_mut().zip(&h.buckets) {
                *total += bucket.load(Ordering::Relaxed);
            }
            count += h.count.load(Ordering::Relaxed);
            sum_micros += h.sum_micros.load(Ordering::Relaxed);
        }
        self.header(name, "histogram", help);
        for (bound, n) in B::BOUNDS.iter().zip(buckets) {
            let _ = writeln!(self.out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(self.out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(self.out, "{name}_sum {}", sum_micros as f64 / 1e6);
        let _ = writeln!(self.out, "{name}_count {count}");
    }
}

/// The Prometheus text exposition (format 0.0.4).
pub fn render(metrics: &Metrics, backend: bool) -> String {
    let mut out = String::with_capacity(8192);
    let mut f = Family { out: &mut out };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as i64;
    f.header(
        "spectra_connections",
        "gauge",
        "Open TCP connections by port and shard.",
    );
    for (i, s) in metrics.shards.iter().enumerate() {
        for (p, port) in PORTS.iter().enumerate() {
            let _ = writeln!(
                f.out,
                "spectra_connections{{port=\"{port}\",shard=\"{i}\"}} {}",
                s.connections[p].load(Ordering::Relaxed)
            );
        }
    }
    f.per_shard(
        metrics,
        "spectra_connections_refused_total",
        "counter",
        "Connections refused by a connection limit.",
        |s| load(&s.connections_refused),
    );
    f.per_shard(
        metrics,
        "spectra_sessions",
        "gauge",
        "Engine.IO sessions (observers, aux clients, overlays) by shard.",
        |s| s.io.sessions.load(Ordering::Relaxed),
    );
    f.per_shard(
        metrics,
        "spectra_sessions_held",
        "gauge",
        "Dropped Socket.IO sockets held for connection state recovery, by shard.",
        |s| s.io.sessions_held.load(Ordering::Relaxed),
    );
    f.per_shard(
        metrics,
        "spectra_sessions_recovered_total",
        "counter",
        "Sockets recovered by their client within RECOVERY_WINDOW_MS.",
        |s| load(&s.io.recovered),
    );
    f.per_shard(
        metrics,
        "spectra_sessions_recovery_expired_total",
        "counter",
        "Held sockets let go without a recovery (window closed, limit, match ended).",
        |s| load(&s.io.recovery_expired),
    );
    f.per_shard(
        metrics,
        "spectra_spectators",
        "gauge",
        "Spectator WebSocket connections by shard.",
        |s| s.spectators.load(Ordering::Relaxed),
    );
    f.per_shard(
        metrics,
        "spectra_streams",
        "gauge",
        "HTTP event streams (Server-Sent Events of /matches/{code}/stream) by shard.",
        |s| s.streams.load(Ordering::Relaxed),
    );
    f.per_shard(
        metrics,
        "spectra_matches",
        "gauge",
        "Live matches by owner shard.",
        |s| s.matches.load(Ordering::Relaxed),
    );
    f.per_shard(
        metrics,
        "spectra_events_total",
        "counter",
        "Ingest events applied to matches (rate() gives events per second).",
        |s| load(&s.events),
    );
    f.per_shard(
        metrics,
        "spectra_deliveries_total",
        "counter",
        "Snapshots written to overlays and spectators (rate() gives deliveries per second).",
        |s| load(&s.io.deliveries),
    );
    f.per_shard(
        metrics,
        "spectra_frames_sent_total",
        "counter",
        "WebSocket frames written.",
        |s| load(&s.io.frames_out),
    );
    f.per_shard(
        metrics,
        "spectra_bytes_sent_total",
        "counter",
        "Bytes of WebSocket frames written.",
        |s| load(&s.io.bytes_out),
    );
    f.per_shard(
        metrics,
        "spectra_skipped_frames_total",
        "counter",
        "Snapshots replaced by a newer one before a slow connection took them (latest wins).",
        |s| load(&s.io.skipped),
    );
    f.per_shard(
        metrics,
        "spectra_dropped_frames_total",
        "counter",
        "Frames not sent because the connection was closing or gone.",
        |s| load(&s.io.dropped),
    );
    f.per_shard(
        metrics,
        "spectra_slow_consumer_disconnects_total",
        "counter",
        "Connections closed for exceeding their outbound byte budget.",
        |s| load(&s.io.slow_disconnects),
    );
    if let Some(tls) = metrics.tls.get() {
        render_tls(&mut f, metrics, tls);
    }
    f.per_shard(
        metrics,
        "spectra_logons_throttled_total",
        "counter",
        "Logons refused because the address made too many attempts.",
        |s| load(&s.logons_throttled),
    );
    f.per_shard(
        metrics,
        "spectra_events_refused_total",
        "counter",
        "Ingest events refused: malformed, over a size or depth limit, or not permitted to the sender (aux clients).",
        |s| load(&s.events_refused),
    );
    f.per_shard(
        metrics,
        "spectra_replay_incomplete_total",
        "counter",
        "Replay logs that stopped on a write failure or a stalled disk and were renamed .replay.incomplete (not recovered).",
        |s| load(&s.replay_incomplete),
    );
    f.per_shard(
        metrics,
        "spectra_replay_bytes_total",
        "counter",
        "Bytes written to replay logs.",
        |s| load(&s.replay_bytes),
    );
    f.header(
        "spectra_shard_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of each shard thread.",
    );
    for (i, s) in metrics.shards.iter().enumerate() {
        let cpu = thread_cpu_seconds(s.tid.load(Ordering::Relaxed)).unwrap_or(0.0);
        let _ = writeln!(
            f.out,
            "spectra_shard_cpu_seconds_total{{shard=\"{i}\"}} {cpu}"
        );
    }
    f.header(
        "spectra_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    let _ = writeln!(
        f.out,
        "spectra_resident_memory_bytes {}",
        rss_bytes().unwrap_or(0)
    );
    f.histogram(
        "spectra_fanout_seconds",
        "Time a shard takes to hand one room state to its subscribers on that shard (overlays, spectators, streams): from the first to the last send or queue push. Latency a viewer sees beyond this is the network's and the viewer's.",
        metrics.shards.iter().map(|s| &s.fanout),
    );
    if backend {
        f.histogram(
            "spectra_backend_request_seconds",
            "Latency of backend HTTP requests (backend mode).",
            std::iter::once(&metrics.backend_latency),
        );
    }
    if let Some(node) = metrics.cluster.node.get() {
        let c = &metrics.cluster;
        let node = node.replace(['\\', '"'], "_");
        let gauge = |a: &AtomicI64| a.load(Ordering::Relaxed).to_string();
        let count = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        let families = [
            (
                "spectra_cluster_connected",
                "gauge",
                "1 while this node is connected to the cluster's NATS.",
                gauge(&c.connected),
            ),
            (
                "spectra_cluster_ready",
                "gauge",
                "1 once this node opened the cluster's KV buckets (match ownership can be checked).",
                gauge(&c.ready),
            ),
            (
                "spectra_cluster_matches",
                "gauge",
                "Live matches in the whole cluster (ownership records).",
                gauge(&c.matches),
            ),
            (
                "spectra_cluster_subscriptions",
                "gauge",
                "Matches whose frames this node receives from NATS for its local viewers.",
                gauge(&c.subscriptions),
            ),
            (
                "spectra_cluster_frames_published_total",
                "counter",
                "Room frames this node published to NATS (one per broadcast of a match it owns).",
                count(&c.frames_published),
            ),
            (
                "spectra_cluster_frames_received_total",
                "counter",
                "Room frames this node received from NATS for its local viewers.",
                count(&c.frames_received),
            ),
            (
                "spectra_cluster_bytes_published_total",
                "counter",
                "Bytes of the room frames this node published to NATS.",
                count(&c.bytes_published),
            ),
            (
                "spectra_cluster_bytes_received_total",
                "counter",
                "Bytes of the room frames this node received from NATS.",
                count(&c.bytes_received),
            ),
            (
                "spectra_cluster_untrusted_dropped_total",
                "counter",
                "Messages from NATS dropped as not sent by a node of this cluster (no node header, undecodable, an invalid code, a kind nodes do not forward).",
                count(&c.untrusted_dropped),
            ),
            (
                "spectra_cluster_stale_frames_dropped_total",
                "counter",
                "Frames from NATS dropped because a newer ownership epoch of their match was seen (an origin that was taken over).",
                count(&c.stale_frames_dropped),
            ),
            (
                "spectra_cluster_stepdowns_total",
                "counter",
                "Matches this node stopped serving as their origin because another node took them over (its record names another node or a newer epoch, or the event log took another writer's append).",
                count(&c.stepdowns),
            ),
            (
                "spectra_cluster_events_orphaned_total",
                "counter",
                "Events this node accepted for a match that another node then took over without them (accepted while cut off from NATS); each is also logged with its match.",
                count(&c.events_orphaned),
            ),
            (
                "spectra_cluster_frame_lag_seconds_total",
                "counter",
                "Summed lag of the received frames (publisher's clock to this node's); divide by frames received.",
                (c.lag_micros.load(Ordering::Relaxed) as f64 / 1e6).to_string(),
            ),
        ];
        for (name, kind, help, value) in families {
            f.header(name, kind, help);
            let _ = writeln!(f.out, "{name}{{node=\"{node}\"}} {value}");
        }
    }
    out
}
