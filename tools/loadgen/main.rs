//! Load generator for a Spectra server (ours or the original): M observers replay
//! `../shared/kit/reference/match.replay` at a fixed rate with the kit's latency marker
//! (`game_mode` = `bomb#kit:<seq>:<send ms>` after every event), N overlays per match (Socket.IO
//! over WebSocket, permessage-deflate offered like browsers) and S native spectators per match
//! receive the broadcasts. Reports deliveries/s, latency from event send to receipt for every
//! event × every client (p50/p99/p999), drops, and the server's CPU seconds and RSS from
//! `/proc/<pid>`. Runs on glommio executors (`--threads`); bounded in time, stops by itself.
//!
//! Example: `cargo run --release --bin loadgen -- --overlays 1000 --duration 20 --server-pid PID`

#![recursion_limit = "256"]

mod polling;
mod stats;
mod tls;
mod ws;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{Map, Value};
use spectra::transport::websocket::Incoming;

use stats::{ProcSample, Stats};

#[derive(Parser, Debug, Clone)]
#[command(about = "Spectra load generator: observers, overlays and spectators over real sockets")]
struct Args {
    /// Ingest address (observers).
    #[arg(long, default_value = "127.0.0.1:5100")]
    ingest: SocketAddr,
    /// Broadcast address (overlays and spectators).
    #[arg(long, default_value = "127.0.0.1:5200")]
    broadcast: SocketAddr,
    /// Access key of the observers.
    #[arg(long, default_value = "")]
    key: String,
    /// Matches (one observer each).
    #[arg(long, default_value_t = 1)]
    matches: usize,
    /// Overlays per match.
    #[arg(long, default_value_t = 100)]
    overlays: usize,
    /// Native spectators per match.
    #[arg(long, default_value_t = 0)]
    spectators: usize,
    /// Share of the spectators that join with `"delta": true` (they get `GameDataDelta`
    /// frames after the first full state), 0..1.
    #[arg(long, default_value_t = 0.0)]
    delta_share: f64,
    /// Events per second per match (10 = one state change per 100 ms tick).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Random extra delay per event, uniform in [0, jitter) ms (the kit's realistic pace is
    /// `--rate 10 --jitter-ms 200`: 100–300 ms between events).
    #[arg(long, default_value_t = 0.0)]
    jitter_ms: f64,
    /// Seconds of replay measured (after the warm-up).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of replay before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Share of overlays that stop reading after logon (stalled consumers), 0..1.
    #[arg(long, default_value_t = 0.0)]
    stall_share: f64,
    /// Share of the (reading) overlays that stay on Engine.IO long-polling, 0..1 (browsers that
    /// cannot upgrade); the rest use Socket.IO over WebSocket.
    #[arg(long, default_value_t = 0.0)]
    polling_share: f64,
    /// Connect over TLS (`wss://`, and to the observers' ingest port too); with `--ca FILE`
    /// or `--insecure`. The report adds handshake times and the share of resumed sessions.
    #[arg(long)]
    tls: bool,
    /// PEM certificate(s) the server's certificate must chain to (`--tls`).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any server certificate (`--tls`; the handshake signature is still checked).
    #[arg(long)]
    insecure: bool,
    /// The name the client asks for (SNI) and checks the certificate against (`--tls`).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Reconnect storm: after the warm-up every overlay's and spectator's connection is reset at
    /// once (RST, as in a network blip; the server keeps running) and reconnects — over TLS
    /// with the session ticket it holds — logs on again and waits for a state. The report's
    /// `storm` gives the time from the reset until each had a state again, the handshakes and
    /// the server's CPU until the last one recovered (at most 60 s). Then the window runs.
    #[arg(long)]
    storm: bool,
    /// Decline permessage-deflate on overlays and spectators.
    #[arg(long)]
    no_deflate: bool,
    /// Connections that only count (not probes) read at most once per this many ms, taking
    /// what arrived meanwhile in one read (0: as data arrives). Fewer reads and wake-ups per
    /// delivery for the generator; latency is measured on probes, which are never paced.
    #[arg(long, default_value_t = 0)]
    count_pace_ms: u64,
    /// Executor threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// One more executor thread that runs only the observers and the probes, so that a probe's
    /// latency never includes the time its thread spends reading the counting connections'
    /// burst after each broadcast (queueing inside the generator, not the server's). It is
    /// pinned like the others (to the next CPU of `--cpus`, round robin).
    #[arg(long)]
    probe_thread: bool,
    /// Pin the generator's threads to these CPUs (comma-separated; thread t on the t-th, round
    /// robin); the generator's CPU share is then taken over these cores.
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Share of the WebSocket overlays and spectators that are probes: they inflate and parse
    /// every state and measure latency. The others count states and bytes from the frame
    /// headers alone (every data frame above 16 bytes is a state; `2` pings are answered), so
    /// the generator stays far from its limit. At least `--min-probes` probes.
    #[arg(long, default_value_t = 0.05)]
    probe_share: f64,
    #[arg(long, default_value_t = 20)]
    min_probes: usize,
    /// Connections opened at once per thread.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// PID of the server, for CPU and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Other processes on the server's side (e.g. a TLS terminator in front of it): their CPU
    /// over the storm is reported beside the server's (`--storm`). Repeatable.
    #[arg(long)]
    peer_pid: Vec<u32>,
    /// The server's `/metrics` URL (e.g. `http://127.0.0.1:5101/metrics`): its
    /// `spectra_deliveries_total` over the window is reported beside the generator's count.
    #[arg(long)]
    metrics: Option<String>,
    /// The run is marked invalid when the generator used more than this share (%) of the cores
    /// it may run on: beyond it the generator, not the server, may be what limits the figures.
    #[arg(long, default_value_t = 70.0)]
    max_generator_share: f64,
    /// Longest wait, after every client is connected, for the server to go quiet (no state
    /// for `--settle-quiet-ms`) before the events start: a server that sends each logon's
    /// state to the whole room has a backlog to drain first.
    #[arg(long, default_value_t = 300)]
    settle_max_s: u64,
    #[arg(long, default_value_t = 500)]
    settle_quiet_ms: u64,
    /// The replay file.
    #[arg(long, default_value = "../shared/kit/reference/match.replay")]
    replay: String,
    /// Raw mode, for `fanout-baseline`: overlays are plain WebSocket clients of `--broadcast`
    /// that only count the frames they receive (no observer, no logon, no latency).
    #[arg(long)]
    raw: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Write every latency sample to this file, one line each: event number, client number,
    /// send and receipt time (µs since the epoch) — to see which states make a tail.
    #[arg(long)]
    latency_log: Option<PathBuf>,
}

/// State shared by all load-generator threads (atomics only).
struct Control {
    phase: AtomicUsize,
    observers_ready: AtomicUsize,
    clients_ready: AtomicUsize,
    /// Start of the measured window, µs since the epoch (0 until known).
    window_start_us: AtomicU64,
    /// When a client last received a state while connecting, µs since the epoch: the run starts
    /// once the server has gone quiet (the original re-broadcasts to the room on every logon).
    last_connect_rx_us: AtomicU64,
    /// Send time per match and event sequence number, µs since the epoch.
    sent: Vec<Vec<AtomicU64>>,
    /// `--tls`: how clients speak TLS.
    tls: Option<tls::Tls>,
    /// `--storm`: when every connection was reset (µs since the epoch; 0 before), how many
    /// clients take part and how many have a state again (or gave up).
    storm_start_us: AtomicU64,
    storm_participants: AtomicUsize,
    storm_recovered: AtomicUsize,
}

impl Control {
    /// A client's own TLS (its own session tickets), when `--tls`.
    fn client_tls(&self) -> Option<tls::ClientTls> {
        self.tls.as_ref().map(tls::Tls::for_client)
    }
}

/// Notes a client's TLS handshake (time, resumed or not).
fn note_handshake(stats: &std::cell::RefCell<Stats>, handshake: Option<tls::Handshake>) {
    if let Some(h) = handshake {
        let mut s = stats.borrow_mut();
        s.handshake_us
            .push(h.time.as_micros().min(u32::MAX as u128) as u32);
        s.resumed += u64::from(h.resumed);
        if s.suite.is_none() {
            s.suite = h.suite.map(|c| format!("{c:?}"));
        }
    }
}

const CONNECTING: usize = 0;
const RUNNING: usize = 1;
const STOPPED: usize = 2;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn load_replay(path: &str) -> Result<(Map<String, Value>, Vec<Value>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let all: Vec<Value> =
        serde_json::from_str(&format!("[{text}]")).map_err(|e| format!("{path}: {e}"))?;
    let mut it = all.into_iter();
    let header = it
        .next()
        .and_then(|h| h.as_object().cloned())
        .ok_or("replay has no header")?;
    Ok((header, it.collect()))
}

/// The marker's sequence number in a received message, if any.
fn marker_seq(text: &str) -> Option<usize> {
    let i = text.find("#kit:")?;
    let digits: String = text[i + 5..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// From the server's `/metrics`: `spectra_deliveries_total` summed over its shards, and its
/// `spectra_fanout_seconds` histogram (time per state handed to a shard's subscribers).
fn server_metrics(url: &str, args: &Args) -> Option<stats::ServerMetrics> {
    // Over https (a TLS server's REST port), the same trust as the clients': `--ca` or
    // `--insecure`.
    let mut tls = ureq::tls::TlsConfig::builder().disable_verification(args.insecure);
    if let Some(ca) = &args.ca {
        let pem = std::fs::read(ca).ok()?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c.to_owned()),
                _ => None,
            })
            .collect();
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .tls_config(tls.build())
        .build()
        .into();
    let text = match agent.get(url).call() {
        Ok(mut resp) => resp.body_mut().read_to_string().ok()?,
        Err(e) => {
            eprintln!("loadgen: cannot read {url}: {e}");
            return None;
        }
    };
    Some(stats::ServerMetrics::parse(&text))
}

/// `--storm`: resets every connection at once and waits until each client has a state again
/// (or gave up), at most 60 s; the server's CPU over that time.
fn run_storm(args: &Args, control: &Control) -> stats::StormFacts {
    let before = args.server_pid.and_then(ProcSample::read);
    let generator_before = ProcSample::read(std::process::id());
    let peers = || -> Option<f64> {
        args.peer_pid
            .iter()
            .map(|p| ProcSample::read(*p).map(|s| s.cpu_secs))
            .sum()
    };
    let peers_before = peers();
    let started = Instant::now();
    control.storm_start_us.store(now_us(), Ordering::SeqCst);
    let participants = control.storm_participants.load(Ordering::Relaxed);
    while control.storm_recovered.load(Ordering::Relaxed) < participants
        && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = started.elapsed().as_secs_f64();
    let after = args.server_pid.and_then(ProcSample::read);
    let generator_after = ProcSample::read(std::process::id());
    let peers_after = peers();
    let cpu = |b: Option<ProcSample>, a: Option<ProcSample>| match (b, a) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    stats::StormFacts {
        participants,
        secs,
        server_cpu_secs: cpu(before, after),
        generator_cpu_secs: cpu(generator_before, generator_after),
        peer_cpu_secs: match (peers_before, peers_after) {
            (Some(b), Some(a)) if !args.peer_pid.is_empty() => Some(a - b),
            _ => None,
        },
    }
}

fn main() {
    let args = Args::parse();
    let (header, events) = match load_replay(&args.replay) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let tls = match (args.tls, args.polling_share > 0.0) {
        (false, _) => None,
        (true, true) => {
            eprintln!("loadgen: --tls does not drive long-polling overlays (--polling-share)");
            std::process::exit(2);
        }
        (true, false) => {
            match tls::Tls::new(args.ca.as_deref(), args.insecure, &args.server_name) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    std::process::exit(2);
                }
            }
        }
    };
    let run_id: u32 = rand::random::<u32>() % 100_000;
    let codes: Vec<String> = (0..args.matches)
        .map(|m| format!("LG{run_id}M{m}"))
        .collect();
    let control = Arc::new(Control {
        phase: AtomicUsize::new(CONNECTING),
        observers_ready: AtomicUsize::new(if args.raw { args.matches } else { 0 }),
        clients_ready: AtomicUsize::new(0),
        window_start_us: AtomicU64::new(0),
        last_connect_rx_us: AtomicU64::new(0),
        sent: (0..args.matches)
            .map(|_| (0..events.len() + 2).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        tls,
        storm_start_us: AtomicU64::new(0),
        storm_participants: AtomicUsize::new(0),
        storm_recovered: AtomicUsize::new(0),
    });
    let threads = args.threads.max(1);
    let executors = threads + usize::from(args.probe_thread);
    let baseline = args.server_pid.and_then(ProcSample::read);
    let header = Arc::new(header);
    let events = Arc::new(events);
    let codes = Arc::new(codes);
    let mut handles = Vec::new();
    for t in 0..executors {
        let (args, control, header, events, codes) = (
            args.clone(),
            control.clone(),
            header.clone(),
            events.clone(),
            codes.clone(),
        );
        let placement = match args.cpus.get(t % args.cpus.len().max(1)) {
            Some(cpu) => Placement::Fixed(*cpu),
            None => Placement::Unbound,
        };
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("loadgen-{t}"))
            .io_memory(1 << 20)
            // Thousands of connections each waiting to read: the server's ring size, for the
            // same reason (the kernel's cancel table, see `preflight::ring_depth`).
            .ring_depth(spectra::node::preflight::ring_depth())
            .spawn(move || async move {
                run_thread(t, threads, args, control, header, events, codes).await
            })
            .unwrap_or_else(|e| {
                eprintln!("loadgen: cannot start thread {t}: {e}");
                std::process::exit(2);
            });
        handles.push(handle);
    }

    // Wait for connections, then run the window.
    let total_clients = args.matches * (args.overlays + args.spectators);
    let connect_started = Instant::now();
    while control.observers_ready.load(Ordering::Relaxed) < args.matches
        || control.clients_ready.load(Ordering::Relaxed) < total_clients
    {
        if connect_started.elapsed() > Duration::from_secs(120) {
            eprintln!(
                "loadgen: only {} of {} clients ready after 120 s; running anyway",
                control.clients_ready.load(Ordering::Relaxed),
                total_clients
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let settle_started = Instant::now();
    let quiet_us = args.settle_quiet_ms * 1000;
    // A raw source (`fanout-baseline`) broadcasts without pause from its last connection on:
    // waiting for quiet would wait until it stopped and measure an empty window.
    while !args.raw
        && now_us().saturating_sub(control.last_connect_rx_us.load(Ordering::Relaxed)) < quiet_us
        && settle_started.elapsed() < Duration::from_secs(args.settle_max_s)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let settle_secs = settle_started.elapsed().as_secs_f64();
    // Connected, quiet, no events yet: what idle connections cost the server.
    let idle = args.server_pid.and_then(ProcSample::read);
    control.phase.store(RUNNING, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(args.warmup));
    let storm = args.storm.then(|| run_storm(&args, &control));
    control.window_start_us.store(now_us(), Ordering::SeqCst);
    let before = args.server_pid.and_then(ProcSample::read);
    let generator_before = ProcSample::read(std::process::id());
    let generator_cpus = match args.cpus.len() {
        0 => stats::allowed_cpus(),
        _ => args.cpus.clone(),
    };
    let cores_before = stats::CoreSample::read(&generator_cpus);
    let loss_before = stats::LossSample::read();
    let server_metrics_before = args
        .metrics
        .as_deref()
        .and_then(|url| server_metrics(url, &args));
    let window = Instant::now();
    let mut rss_max_kb = 0;
    while window.elapsed() < Duration::from_secs(args.duration) {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(s) = args.server_pid.and_then(ProcSample::read) {
            rss_max_kb = rss_max_kb.max(s.rss_kb);
        }
    }
    let after = args.server_pid.and_then(ProcSample::read);
    let generator_after = ProcSample::read(std::process::id());
    let cores_after = stats::CoreSample::read(&generator_cpus);
    let loss = stats::LossSample::read().since(loss_before);
    let server_metrics_after = args
        .metrics
        .as_deref()
        .and_then(|url| server_metrics(url, &args));
    let window_secs = window.elapsed().as_secs_f64();
    control.phase.store(STOPPED, Ordering::SeqCst);

    let mut total = Stats::default();
    for h in handles {
        match h.join() {
            Ok(s) => total.merge(s),
            Err(e) => eprintln!("loadgen: a thread failed: {e}"),
        }
    }
    if let Some(path) = &args.latency_log {
        let mut lines = String::new();
        for (e, c, sent, got) in &total.latency_log {
            lines.push_str(&format!("{e} {c} {sent} {got}\n"));
        }
        if let Err(e) = std::fs::write(path, lines) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    let report = stats::report(
        &total,
        stats::RunFacts {
            matches: args.matches,
            overlays: args.overlays,
            spectators: args.spectators,
            stalled: stats::stalled_count(args.overlays, args.stall_share) * args.matches,
            // Mean events per second: period plus half the jitter on average.
            rate: 1.0 / (1.0 / args.rate.max(0.1) + args.jitter_ms / 2000.0),
            connect_secs,
            settle_secs,
            window_secs,
            baseline,
            idle,
            before,
            after,
            rss_max_kb,
            generator_cpu_secs: match (generator_before, generator_after) {
                (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
                _ => None,
            },
            // The cores this process may run on: the pinned ones, else its affinity mask (e.g.
            // `taskset -c 1`).
            generator_cores: match args.cpus.len() {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                _ => args
                    .cpus
                    .iter()
                    .collect::<std::collections::HashSet<_>>()
                    .len(),
            },
            generator_cores_busy: match (cores_before, cores_after) {
                (Some(b), Some(a)) => stats::CoreSample::shares(b, a),
                _ => None,
            },
            generator_threads: executors,
            probes: probe_count(&args),
            max_generator_share: args.max_generator_share,
            count_pace_secs: args.count_pace_ms as f64 / 1000.0,
            server_deliveries: match (&server_metrics_before, &server_metrics_after) {
                (Some(b), Some(a)) => Some(a.deliveries.saturating_sub(b.deliveries)),
                _ => None,
            },
            loss,
            server_skipped: match (&server_metrics_before, &server_metrics_after) {
                (Some(b), Some(a)) => Some(a.skipped.saturating_sub(b.skipped)),
                _ => None,
            },
            server_fanout: match (&server_metrics_before, &server_metrics_after) {
                (Some(b), Some(a)) => a.fanout_since(b),
                _ => None,
            },
            storm,
        },
    );
    if report["valid"] == Value::Bool(false) {
        if report["counts_agree"] == Value::Bool(false) {
            eprintln!(
                "loadgen: INVALID run: the generator counted {} deliveries, the server sent {}: the generator did not keep up",
                report["deliveries"], report["server_deliveries"]
            );
        } else {
            eprintln!(
                "loadgen: INVALID run: the generator used {}% of its {} core(s) (limit {}%); the figures may measure the generator",
                report["generator_cpu_pct"], report["generator_cores"], args.max_generator_share
            );
        }
    }
    if args.json {
        println!("{report}");
    } else {
        println!("{}", stats::human(&report));
    }
}

async fn run_thread(
    t: usize,
    threads: usize,
    args: Args,
    control: Arc<Control>,
    header: Arc<Map<String, Value>>,
    events: Arc<Vec<Value>>,
    codes: Arc<Vec<String>>,
) -> Stats {
    let stats = Rc::new(std::cell::RefCell::new(Stats::default()));
    glommio::spawn_local(watch_stop(control.clone())).detach();
    // Observers live on the probe thread, else on thread 0: they create the matches before
    // anyone joins.
    let probe_thread = args.probe_thread && t == threads;
    let observer_thread = if args.probe_thread { threads } else { 0 };
    let mut observers = Vec::new();
    if t == observer_thread && !args.raw {
        for (m, code) in codes.iter().enumerate() {
            let task = glommio::spawn_local(observer(
                args.clone(),
                control.clone(),
                header.clone(),
                events.clone(),
                m,
                code.clone(),
                stats.clone(),
            ));
            observers.push(task);
        }
    }
    while control.observers_ready.load(Ordering::Relaxed) < args.matches {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    let gate = Rc::new(glommio::sync::Semaphore::new(
        args.connect_concurrency as u64,
    ));
    let stalled_per_match = stats::stalled_count(args.overlays, args.stall_share);
    let mut clients = Vec::new();
    let per_match = args.overlays + args.spectators;
    let delta_per_match =
        (args.spectators as f64 * args.delta_share.clamp(0.0, 1.0)).round() as usize;
    let stride = probe_stride(&args);
    let mine = |i: &usize| match (args.probe_thread, is_probe(&args, *i, stride)) {
        (false, _) => i % threads == t,
        (true, true) => probe_thread,
        (true, false) => !probe_thread && i % threads == t,
    };
    for i in (0..args.matches * per_match).filter(mine) {
        let (m, k) = (i / per_match, i % per_match);
        let polling_per_match = ((args.overlays - stalled_per_match) as f64
            * args.polling_share.clamp(0.0, 1.0))
        .round() as usize;
        let kind = if k < args.overlays {
            if k < stalled_per_match {
                Kind::StalledOverlay
            } else if k < stalled_per_match + polling_per_match {
                Kind::PollingOverlay
            } else {
                Kind::Overlay
            }
        } else if k - args.overlays < delta_per_match {
            Kind::DeltaSpectator
        } else {
            Kind::Spectator
        };
        clients.push(glommio::spawn_local(client(
            args.clone(),
            control.clone(),
            kind,
            m,
            codes[m].clone(),
            i,
            gate.clone(),
            stats.clone(),
        )));
    }
    for c in clients {
        c.await;
    }
    for o in observers {
        o.await;
    }
    stats.take()
}

/// Every how many-th WebSocket client is a probe (at least `--min-probes` of them).
fn probe_stride(args: &Args) -> usize {
    let total = args.matches * (args.overlays + args.spectators);
    let wanted = ((total as f64 * args.probe_share.clamp(0.0, 1.0)).ceil() as usize)
        .max(args.min_probes)
        .clamp(1, total.max(1));
    (total / wanted).max(1)
}

/// Whether client `i` is a probe (inflates, parses, measures latency); `stride` is
/// `probe_stride(args)`.
fn is_probe(args: &Args, i: usize, stride: usize) -> bool {
    !args.raw && i.is_multiple_of(stride)
}

/// How many clients are probes.
fn probe_count(args: &Args) -> usize {
    let total = args.matches * (args.overlays + args.spectators);
    let stride = probe_stride(args);
    (0..total).filter(|i| i.is_multiple_of(stride)).count()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Overlay,
    StalledOverlay,
    /// An overlay on the long-polling transport.
    PollingOverlay,
    Spectator,
    /// A spectator that takes delta frames.
    DeltaSpectator,
}

/// Per-client receipt bookkeeping: counts a state message in the window and records the
/// latency of every event it is the first to contain.
struct Receipts<'a> {
    control: &'a Control,
    m: usize,
    raw: bool,
    stats: &'a std::cell::RefCell<Stats>,
    last_seq: usize,
    /// Keep each sample's event, client and times (`--latency-log`).
    log: bool,
    client: usize,
}

impl Receipts<'_> {
    fn state(&mut self, text: &str) {
        note_connecting_rx(self.control);
        let now = now_us();
        let window_start = self.control.window_start_us.load(Ordering::Relaxed);
        let in_window = window_start > 0 && self.control.phase.load(Ordering::Relaxed) == RUNNING;
        if self.raw {
            if in_window {
                let mut s = self.stats.borrow_mut();
                s.deliveries += 1;
                s.bytes += text.len() as u64;
            }
            return;
        }
        let Some(seq) = marker_seq(text) else {
            return;
        };
        let mut s = self.stats.borrow_mut();
        if in_window {
            s.deliveries += 1;
            s.bytes += text.len() as u64;
        }
        if seq > self.last_seq {
            for e in self.last_seq + 1..=seq {
                let sent = self.control.sent[self.m]
                    .get(e)
                    .map(|a| a.load(Ordering::Relaxed))
                    .unwrap_or(0);
                if in_window && sent >= window_start {
                    s.latencies_us
                        .push(now.saturating_sub(sent).min(u32::MAX as u64) as u32);
                    if self.log {
                        s.latency_log
                            .push((e as u32, self.client as u32, sent, now));
                    }
                }
            }
            self.last_seq = seq;
        }
    }
}

/// Notes a state received before the events start (see `Control::last_connect_rx_us`).
fn note_connecting_rx(control: &Control) {
    if control.phase.load(Ordering::Relaxed) == CONNECTING {
        control
            .last_connect_rx_us
            .store(now_us(), Ordering::Relaxed);
    }
}

/// A state a header-only client received (`len` bytes as sent), counted in the window.
fn count_state(control: &Control, stats: &std::cell::RefCell<Stats>, len: usize) {
    note_connecting_rx(control);
    let in_window = control.window_start_us.load(Ordering::Relaxed) > 0
        && control.phase.load(Ordering::Relaxed) == RUNNING;
    if in_window {
        let mut s = stats.borrow_mut();
        s.deliveries += 1;
        s.bytes += len as u64;
    }
}

thread_local! {
    /// Closed when the run stops: every task of this thread waiting for the end waits on it,
    /// so only one task per thread looks at the clock (`watch_stop`).
    static STOP: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(0));
    /// Closed when the storm starts (`--storm`), like `STOP`.
    static STORM: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(0));
}

/// Closes this thread's `STOP` once the run stops (one timer per thread, not per connection).
async fn watch_stop(control: Arc<Control>) {
    while control.phase.load(Ordering::Relaxed) != STOPPED {
        if control.storm_start_us.load(Ordering::Relaxed) > 0 {
            STORM.with(|s| s.close());
        }
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    STORM.with(|s| s.close());
    STOP.with(|s| s.close());
}

/// Waits until the storm starts.
async fn until_storm() {
    let storm = STORM.with(Rc::clone);
    let _ = storm.acquire(1).await;
}

/// Waits until the run stops.
async fn until_stopped(_control: &Control) {
    let stop = STOP.with(Rc::clone);
    // Never granted: it fails when `watch_stop` closes the semaphore.
    let _ = stop.acquire(1).await;
}

#[allow(clippy::too_many_arguments)]
async fn client(
    args: Args,
    control: Arc<Control>,
    kind: Kind,
    m: usize,
    code: String,
    i: usize,
    gate: Rc<glommio::sync::Semaphore>,
    stats: Rc<std::cell::RefCell<Stats>>,
) {
    if kind == Kind::PollingOverlay {
        return polling_overlay(&args, &control, m, &code, &gate, &stats).await;
    }
    // Its own TLS session store, kept across a reconnect (`--storm`).
    let tls = control.client_tls();
    let Some(mut ws) = open(&args, kind, &code, i, &gate, &stats, tls.as_ref()).await else {
        return;
    };
    control.clients_ready.fetch_add(1, Ordering::Relaxed);
    if kind == Kind::StalledOverlay {
        until_stopped(&control).await;
        return;
    }
    // Raw clients (against `fanout-baseline`) only count: by frame headers, as non-probes do.
    let probe = is_probe(&args, i, probe_stride(&args));
    let pace =
        (!probe && args.count_pace_ms > 0).then(|| Duration::from_millis(args.count_pace_ms));
    let mut receipts = Receipts {
        control: &control,
        m,
        raw: args.raw,
        stats: &stats,
        last_seq: 0,
        log: args.latency_log.is_some(),
        client: i,
    };
    let mut stormed = !args.storm;
    if args.storm {
        control.storm_participants.fetch_add(1, Ordering::Relaxed);
    }
    loop {
        ws.pace_reads(pace);
        let receive = async {
            if probe {
                receive_states(&mut ws, &mut receipts).await;
            } else {
                count_states(&mut ws, &control, &stats).await;
            }
            Outcome::Ended
        };
        let stop = async {
            until_stopped(&control).await;
            Outcome::Stopped
        };
        let storm = async {
            if stormed {
                std::future::pending::<()>().await;
            }
            until_storm().await;
            Outcome::Storm
        };
        let outcome =
            futures_lite::future::or(receive, futures_lite::future::or(stop, storm)).await;
        match outcome {
            Outcome::Stopped => return,
            Outcome::Ended => {
                // The server ended the connection during the run.
                if control.phase.load(Ordering::Relaxed) != STOPPED {
                    stats.borrow_mut().drops += 1;
                }
                return;
            }
            Outcome::Storm => {
                stormed = true;
                ws.reset();
                let Some(again) =
                    reconnect(&args, &control, kind, &code, i, &gate, &stats, tls.as_ref()).await
                else {
                    return;
                };
                ws = again;
            }
        }
    }
}

enum Outcome {
    Ended,
    Stopped,
    Storm,
}

/// Connects and logs on (overlay) or joins (spectator); `None` (counted as a connect failure)
/// when that fails.
#[allow(clippy::too_many_arguments)]
async fn open(
    args: &Args,
    kind: Kind,
    code: &str,
    i: usize,
    gate: &glommio::sync::Semaphore,
    stats: &std::cell::RefCell<Stats>,
    tls: Option<&tls::ClientTls>,
) -> Option<ws::Client> {
    let path = match kind {
        _ if args.raw => "/",
        Kind::Spectator | Kind::DeltaSpectator => "/ws",
        _ => "/socket.io/?EIO=4&transport=websocket",
    };
    let failed = |e: String| {
        let mut s = stats.borrow_mut();
        s.connect_failures += 1;
        if s.connect_failures <= 3 {
            eprintln!("loadgen: {e}");
        }
    };
    let mut ws = {
        let _permit = gate.acquire_permit(1).await.ok()?;
        match ws::Client::connect(args.broadcast, path, !args.no_deflate, tls).await {
            Ok(ws) => {
                note_handshake(stats, ws.handshake);
                ws
            }
            Err(e) => {
                failed(e);
                return None;
            }
        }
    };
    let logged_on = futures_lite::future::or(
        async {
            let ok = match kind {
                _ if args.raw => true,
                Kind::Spectator => join_spectator(&mut ws, code, i, false).await,
                Kind::DeltaSpectator => join_spectator(&mut ws, code, i, true).await,
                _ => logon_overlay(&mut ws, code).await,
            };
            Some(ok)
        },
        async {
            glommio::timer::sleep(Duration::from_secs(60)).await;
            None
        },
    )
    .await;
    if logged_on != Some(true) {
        failed(format!("logon or join failed (client {i})"));
        return None;
    }
    Some(ws)
}

/// After the storm's reset: connects and logs on again with the same TLS session store, waits
/// for the first state and notes how long that took from the storm's start.
#[allow(clippy::too_many_arguments)]
async fn reconnect(
    args: &Args,
    control: &Control,
    kind: Kind,
    code: &str,
    i: usize,
    gate: &glommio::sync::Semaphore,
    stats: &std::cell::RefCell<Stats>,
    tls: Option<&tls::ClientTls>,
) -> Option<ws::Client> {
    let failed = || {
        stats.borrow_mut().storm_failures += 1;
        control.storm_recovered.fetch_add(1, Ordering::Relaxed);
    };
    let Some(mut ws) = open(args, kind, code, i, gate, stats, tls).await else {
        failed();
        return None;
    };
    // Read whole (not by headers): the connection goes on as a probe or a counter after it.
    let got_state = loop {
        match ws.next().await {
            Some(Incoming::Text(t)) if t == "2" => {
                if ws.send_text("3").await.is_err() {
                    break false;
                }
            }
            Some(Incoming::Text(t)) if is_state(&t) => break true,
            Some(_) => {}
            None => break false,
        }
    };
    if !got_state {
        failed();
        return None;
    }
    let since = now_us().saturating_sub(control.storm_start_us.load(Ordering::Relaxed));
    let mut s = stats.borrow_mut();
    s.storm_recovery_us.push(since.min(u32::MAX as u64) as u32);
    if let Some(h) = ws.handshake {
        s.storm_handshake_us
            .push(h.time.as_micros().min(u32::MAX as u128) as u32);
        s.storm_resumed += u64::from(h.resumed);
    }
    drop(s);
    control.storm_recovered.fetch_add(1, Ordering::Relaxed);
    Some(ws)
}

/// A probe: inflates and parses every message, answers pings, notes states; returns when the
/// connection ends.
async fn receive_states(ws: &mut ws::Client, receipts: &mut Receipts<'_>) {
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Incoming::Text(t) => t,
            _ => continue,
        };
        if text == "2" {
            if ws.send_text("3").await.is_err() {
                break;
            }
            continue;
        }
        if is_state(&text) {
            receipts.state(&text);
        }
    }
}

/// Whether a message is a state (an overlay's `match_data`, a spectator's full or delta state).
fn is_state(text: &str) -> bool {
    text.starts_with("42[\"match_data\"")
        || text.starts_with("{\"type\":\"GameData\"")
        || text.starts_with("{\"type\":\"GameDataDelta\"")
}

/// A counting connection: states by their frame headers; returns when the connection ends.
async fn count_states(ws: &mut ws::Client, control: &Control, stats: &std::cell::RefCell<Stats>) {
    while let Some(ws::Frame::Data { len, small }) = ws.next_frame().await {
        match small {
            Some(p) if p == b"2" => {
                if ws.send_text("3").await.is_err() {
                    break;
                }
            }
            Some(_) => {}
            None => count_state(control, stats, len),
        }
    }
}

/// An overlay that stays on long-polling: connect, log on, then poll until the run stops.
async fn polling_overlay(
    args: &Args,
    control: &Control,
    m: usize,
    code: &str,
    gate: &glommio::sync::Semaphore,
    stats: &Rc<std::cell::RefCell<Stats>>,
) {
    let Ok(permit) = gate.acquire_permit(1).await else {
        return;
    };
    let failed = |e: String| {
        let mut s = stats.borrow_mut();
        s.connect_failures += 1;
        if s.connect_failures <= 3 {
            eprintln!("loadgen: polling overlay: {e}");
        }
    };
    let mut client = match polling::PollingClient::connect(args.broadcast).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let logon = format!(
        "42[\"logon\",{}]",
        Value::String(serde_json::json!({ "groupCode": code }).to_string())
    );
    if let Err(e) = client.send(&["40"]).await {
        return failed(e);
    }
    let mut logged_on = false;
    while !logged_on {
        let packets = match client.poll().await {
            Ok(p) => p,
            Err(e) => return failed(e),
        };
        for p in packets {
            if p.starts_with("40") {
                if let Err(e) = client.send(&[&logon]).await {
                    return failed(e);
                }
            } else if p == "2" {
                let _ = client.send(&["3"]).await;
            } else if p.starts_with("42[\"logon_success\"") {
                logged_on = true;
            }
        }
    }
    drop(permit);
    control.clients_ready.fetch_add(1, Ordering::Relaxed);
    let receive = async {
        let mut receipts = Receipts {
            control,
            m,
            raw: false,
            stats,
            last_seq: 0,
            log: args.latency_log.is_some(),
            client: usize::MAX,
        };
        loop {
            let packets = match client.poll().await {
                Ok(p) => p,
                Err(_) => break,
            };
            for p in packets {
                if p == "2" {
                    let _ = client.send(&["3"]).await;
                } else if p.starts_with("42[\"match_data\"") {
                    receipts.state(&p);
                }
            }
        }
        if control.phase.load(Ordering::Relaxed) != STOPPED {
            stats.borrow_mut().drops += 1;
        }
    };
    futures_lite::future::or(receive, until_stopped(control)).await;
}

async fn logon_overlay(ws: &mut ws::Client, code: &str) -> bool {
    while let Some(msg) = ws.next().await {
        let Incoming::Text(text) = msg else { continue };
        let reply = if text.starts_with('0') {
            "40".to_string()
        } else if text.starts_with("40") {
            let arg = serde_json::json!({ "groupCode": code }).to_string();
            format!("42[\"logon\",{}]", Value::String(arg))
        } else if text == "2" {
            "3".to_string()
        } else if text.starts_with("42[\"logon_success\"") {
            return true;
        } else {
            continue;
        };
        if ws.send_text(&reply).await.is_err() {
            return false;
        }
    }
    false
}

async fn join_spectator(ws: &mut ws::Client, code: &str, i: usize, delta: bool) -> bool {
    let join = serde_json::json!({
        "type": "JoinAsSpectator",
        "data": { "game_name": "valorant", "room_code": code, "spectator_name": format!("lg{i}"),
                  "delta": delta }
    });
    if ws.send_text(&join.to_string()).await.is_err() {
        return false;
    }
    while let Some(msg) = ws.next().await {
        let Incoming::Text(text) = msg else { continue };
        if text.contains("\"SpectatorJoined\"") {
            return true;
        }
        if text.contains("\"Error\"") {
            eprintln!("loadgen: spectator join refused: {text}");
            return false;
        }
    }
    false
}

async fn observer(
    args: Args,
    control: Arc<Control>,
    header: Arc<Map<String, Value>>,
    events: Arc<Vec<Value>>,
    m: usize,
    code: String,
    stats: Rc<std::cell::RefCell<Stats>>,
) {
    let fail = |why: String| {
        eprintln!("loadgen: observer {code}: {why}");
        std::process::exit(1);
    };
    let mut ws = match ws::Client::connect(
        args.ingest,
        "/socket.io/?EIO=4&transport=websocket",
        false,
        control.client_tls().as_ref(),
    )
    .await
    {
        Ok(ws) => ws,
        Err(e) => return fail(e),
    };
    let mut auth = (*header).clone();
    auth.insert("groupCode".into(), Value::String(code.clone()));
    auth.insert("obsName".into(), Value::String(format!("LoadObserver{m}")));
    auth.insert("key".into(), Value::String(args.key.clone()));
    auth.insert("type".into(), Value::String("authenticate".into()));
    let logon = format!(
        "42[\"obs_logon\",{}]",
        Value::String(Value::Object(auth).to_string())
    );
    match ws.obs_logon(&logon).await {
        Ok(ack) if ack.get("value") == Some(&Value::Bool(true)) => {}
        Ok(ack) => return fail(format!("logon refused: {ack}")),
        Err(e) => return fail(e),
    }
    control.observers_ready.fetch_add(1, Ordering::Relaxed);
    // From here a reader task counts the server's pings; the sender answers them between events.
    let (mut reader, mut ws) = ws.split();
    let pings = Rc::new(std::cell::Cell::new(0u32));
    let pings_seen = pings.clone();
    let reader_task = glommio::spawn_local(async move {
        while let Some(msg) = reader.next_any().await {
            if matches!(&msg, Incoming::Text(t) if t == "2") {
                pings_seen.set(pings_seen.get() + 1);
            }
        }
    })
    .detach();
    let answer_pings = |pings: &std::cell::Cell<u32>| {
        let n = pings.get();
        pings.set(0);
        n
    };
    while control.phase.load(Ordering::Relaxed) == CONNECTING {
        for _ in 0..answer_pings(&pings) {
            let _ = ws.send_text("3").await;
        }
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut next = Instant::now();
    let mut game_mode = "bomb".to_string();
    let mut seq = 0usize;
    for e in events.iter() {
        if control.phase.load(Ordering::Relaxed) == STOPPED {
            break;
        }
        let (Some(kind), Some(data)) = (e.get("type").and_then(Value::as_str), e.get("data"))
        else {
            continue;
        };
        if kind == "round_info"
            && data.get("roundPhase").and_then(Value::as_str) == Some("game_end")
        {
            break; // the match would end: the run keeps it alive instead
        }
        if kind == "game_mode"
            && let Some(g) = data.as_str()
        {
            game_mode = g.to_string();
        }
        seq += 1;
        let event = serde_json::json!({ "obsName": format!("LoadObserver{m}"), "groupCode": code, "type": kind, "data": data });
        let sent = now_us();
        if let Some(slot) = control.sent[m].get(seq) {
            slot.store(sent, Ordering::Relaxed);
        }
        let marker = serde_json::json!({
            "obsName": format!("LoadObserver{m}"), "groupCode": code, "type": "game_mode",
            "data": format!("{game_mode}#kit:{seq}:{:.3}", sent as f64 / 1000.0),
        });
        // One write, as the kit's client sends them together: a generator thread busy with
        // probes between two writes must not split an event from its marker.
        let packets: Vec<String> = [event, marker]
            .iter()
            .map(|p| format!("42[\"obs_data\",{}]", Value::String(p.to_string())))
            .collect();
        if ws.send_texts(&packets).await.is_err() {
            stats.borrow_mut().drops += 1;
            return;
        }
        {
            let mut s = stats.borrow_mut();
            s.events_sent += 1;
            if control.window_start_us.load(Ordering::Relaxed) > 0
                && control.phase.load(Ordering::Relaxed) == RUNNING
            {
                s.events_in_window += 1;
            }
        }
        next += period;
        if args.jitter_ms > 0.0 {
            next += Duration::from_secs_f64(rand::random::<f64>() * args.jitter_ms / 1000.0);
        }
        for _ in 0..answer_pings(&pings) {
            let _ = ws.send_text("3").await;
        }
        let now = Instant::now();
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
    }
    while control.phase.load(Ordering::Relaxed) != STOPPED {
        for _ in 0..answer_pings(&pings) {
            let _ = ws.send_text("3").await;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    drop(reader_task);
}
