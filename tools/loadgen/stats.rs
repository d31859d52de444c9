//! What the load generator counts, the server's /proc figures and the final report.

use serde_json::{Value, json};

/// Counters of one load-generator thread (merged at the end).
#[derive(Default, Clone)]
pub struct Stats {
    /// State messages (`match_data` / `GameData`) received in the measured window.
    pub deliveries: u64,
    /// Bytes of those states: as parsed by probes, as sent (frame payload) by the others.
    pub bytes: u64,
    /// Event send → first receipt of a state that contains it, per event and client (µs).
    pub latencies_us: Vec<u32>,
    /// With `--latency-log`: each latency sample's event, client, send and receipt time (µs
    /// since the epoch).
    pub latency_log: Vec<(u32, u32, u64, u64)>,
    /// Connections the server ended during the run.
    pub drops: u64,
    pub connect_failures: u64,
    pub events_sent: u64,
    /// Events sent during the measurement window (each with its latency marker: two packets).
    pub events_in_window: u64,
    /// `--tls`: each overlay's and spectator's handshake (TCP connect to TLS done, µs) and how
    /// many of them resumed a session.
    pub handshake_us: Vec<u32>,
    pub resumed: u64,
    /// The cipher suite the last handshake negotiated.
    pub suite: Option<String>,
    /// `--storm`: per client, the time from the reset to its first state again (µs), its new
    /// handshake (µs) and whether it resumed; clients that could not come back.
    pub storm_recovery_us: Vec<u32>,
    pub storm_handshake_us: Vec<u32>,
    pub storm_resumed: u64,
    pub storm_failures: u64,
}

/// `--storm`: how many took part, how long until the last had a state again, the server's CPU.
pub struct StormFacts {
    pub participants: usize,
    pub secs: f64,
    pub server_cpu_secs: Option<f64>,
    /// The generator's own CPU over the storm (its handshakes and logons).
    pub generator_cpu_secs: Option<f64>,
    /// `--peer-pid` processes' CPU over the storm.
    pub peer_cpu_secs: Option<f64>,
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        self.deliveries += other.deliveries;
        self.bytes += other.bytes;
        self.latencies_us.extend(other.latencies_us);
        self.latency_log.extend(other.latency_log);
        self.drops += other.drops;
        self.connect_failures += other.connect_failures;
        self.events_sent += other.events_sent;
        self.events_in_window += other.events_in_window;
        self.handshake_us.extend(other.handshake_us);
        self.resumed += other.resumed;
        self.suite = self.suite.take().or(other.suite);
        self.storm_recovery_us.extend(other.storm_recovery_us);
        self.storm_handshake_us.extend(other.storm_handshake_us);
        self.storm_resumed += other.storm_resumed;
        self.storm_failures += other.storm_failures;
    }
}

/// Overlays per match that stop reading.
pub fn stalled_count(overlays: usize, share: f64) -> usize {
    ((overlays as f64) * share.clamp(0.0, 1.0)).round() as usize
}

/// What some CPUs did, in clock ticks, from /proc/stat: everything but idle and I/O wait, and the
/// part of it in softirqs (receive processing: on loopback with receive packet steering it runs on
/// the generator's cores, and with tick-based accounting it is charged to no process, so the
/// generator's own CPU figure does not include it).
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreSample {
    pub busy: u64,
    pub softirq: u64,
    pub total: u64,
}

impl CoreSample {
    pub fn read(cpus: &[usize]) -> Option<CoreSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut sample = CoreSample::default();
        for line in stat.lines() {
            let mut fields = line.split_whitespace();
            let Some(cpu) = fields.next().and_then(|n| n.strip_prefix("cpu")) else {
                continue;
            };
            if !cpu.parse::<usize>().is_ok_and(|c| cpus.contains(&c)) {
                continue;
            }
            // user nice system idle iowait irq softirq steal …
            let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
            if v.len() < 8 {
                return None;
            }
            let total: u64 = v.iter().sum();
            sample.total += total;
            sample.busy += total - v[3] - v[4];
            sample.softirq += v[6];
        }
        (sample.total > 0).then_some(sample)
    }

    /// Busy and softirq shares (%) between two samples.
    pub fn shares(before: CoreSample, after: CoreSample) -> Option<(f64, f64)> {
        let total = after.total.checked_sub(before.total).filter(|t| *t > 0)? as f64;
        let busy = after.busy.saturating_sub(before.busy) as f64;
        let softirq = after.softirq.saturating_sub(before.softirq) as f64;
        Some((busy * 100.0 / total, softirq * 100.0 / total))
    }
}

/// Packet loss on the way: TCP segments retransmitted in this network namespace
/// (`RetransSegs` in /proc/net/snmp) and packets the kernel dropped because a CPU's input
/// backlog was full (`netdev_max_backlog`; second column of /proc/net/softnet_stat, all CPUs,
/// machine-wide). On loopback with receive packet steering a burst of sends to thousands of
/// sockets can overflow the receiving CPU's backlog; each drop costs a retransmission and delays
/// that connection's frame by the retransmission timer — the network's latency, not the
/// server's.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossSample {
    pub retransmits: u64,
    pub backlog_drops: u64,
}

impl LossSample {
    pub fn read() -> LossSample {
        LossSample {
            retransmits: std::fs::read_to_string("/proc/net/snmp")
                .ok()
                .and_then(|t| snmp_field(&t, "Tcp:", "RetransSegs"))
                .unwrap_or(0),
            backlog_drops: std::fs::read_to_string("/proc/net/softnet_stat")
                .map(|t| {
                    t.lines()
                        .filter_map(|l| l.split_whitespace().nth(1))
                        .filter_map(|h| u64::from_str_radix(h, 16).ok())
                        .sum()
                })
                .unwrap_or(0),
        }
    }

    pub fn since(self, before: LossSample) -> LossSample {
        LossSample {
            retransmits: self.retransmits.saturating_sub(before.retransmits),
            backlog_drops: self.backlog_drops.saturating_sub(before.backlog_drops),
        }
    }
}

/// A counter of /proc/net/snmp: the header line of `section` names the fields, the next line
/// of that section holds the values.
fn snmp_field(text: &str, section: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(section));
    let names = lines.next()?;
    let values = lines.next()?;
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// The CPUs this process may run on (`Cpus_allowed_list` in /proc/self/status, e.g. `1` or
/// `0-1,4`).
pub fn allowed_cpus() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        let mut ends = part
            .split('-')
            .filter_map(|n| n.trim().parse::<usize>().ok());
        match (ends.next(), ends.next()) {
            (Some(a), Some(b)) if b >= a && b - a < 4096 => cpus.extend(a..=b),
            (Some(a), None) => cpus.push(a),
            _ => {}
        }
    }
    cpus
}

/// What the server's `/metrics` says (the parts the report uses).
#[derive(Clone, Debug, Default)]
pub struct ServerMetrics {
    pub deliveries: u64,
    /// `spectra_skipped_frames_total`: states replaced in a queue by a newer one.
    pub skipped: u64,
    /// `spectra_fanout_seconds`: (upper bound in seconds, cumulative count) per bucket, summed
    /// over the server's shards; then its sum (seconds) and count.
    pub fanout_buckets: Vec<(f64, f64)>,
    pub fanout_sum: f64,
    pub fanout_count: f64,
}

/// The server's fan-out time per state during the window: mean, and the bucket bound the 99th
/// percentile lies under (milliseconds), over `count` states.
#[derive(Clone, Copy, Debug)]
pub struct Fanout {
    pub mean_ms: f64,
    pub p99_at_most_ms: Option<f64>,
    pub count: f64,
}

impl ServerMetrics {
    pub fn parse(text: &str) -> ServerMetrics {
        let mut m = ServerMetrics::default();
        let value = |l: &str| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        for line in text.lines() {
            if line.starts_with("spectra_deliveries_total") {
                m.deliveries += value(line).unwrap_or(0.0) as u64;
            } else if line.starts_with("spectra_skipped_frames_total") {
                m.skipped += value(line).unwrap_or(0.0) as u64;
            } else if let Some(rest) = line.strip_prefix("spectra_fanout_seconds_bucket{le=\"") {
                let bound = rest.split('"').next().and_then(|b| b.parse::<f64>().ok());
                if let (Some(bound), Some(n)) = (bound, value(line)) {
                    m.fanout_buckets.push((bound, n));
                }
            } else if line.starts_with("spectra_fanout_seconds_sum") {
                m.fanout_sum = value(line).unwrap_or(0.0);
            } else if line.starts_with("spectra_fanout_seconds_count") {
                m.fanout_count = value(line).unwrap_or(0.0);
            }
        }
        m
    }

    /// The fan-out figures between `before` and this sample.
    pub fn fanout_since(&self, before: &ServerMetrics) -> Option<Fanout> {
        let count = self.fanout_count - before.fanout_count;
        if count <= 0.0 {
            return None;
        }
        let p99_at_most_ms = self
            .fanout_buckets
            .iter()
            .zip(&before.fanout_buckets)
            .find(|((_, after), (_, earlier))| after - earlier >= 0.99 * count)
            .map(|((bound, _), _)| bound * 1e3);
        Some(Fanout {
            mean_ms: (self.fanout_sum - before.fanout_sum) * 1e3 / count,
            p99_at_most_ms,
            count,
        })
    }
}

/// CPU time and RSS of a process, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel.
    pub sys_secs: f64,
    pub rss_kb: u64,
}

impl ProcSample {
    pub fn read(pid: u32) -> Option<ProcSample> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kb = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())?;
        Some(ProcSample {
            cpu_secs: (utime + stime) / ticks,
            sys_secs: stime / ticks,
            rss_kb,
        })
    }
}

pub struct RunFacts {
    pub matches: usize,
    pub overlays: usize,
    pub spectators: usize,
    pub stalled: usize,
    pub rate: f64,
    pub connect_secs: f64,
    /// Wait for the server to go quiet after connecting, before the events start.
    pub settle_secs: f64,
    pub window_secs: f64,
    /// Before any connection was opened.
    pub baseline: Option<ProcSample>,
    /// All connections open, before the replay starts.
    pub idle: Option<ProcSample>,
    pub before: Option<ProcSample>,
    pub after: Option<ProcSample>,
    pub rss_max_kb: u64,
    /// CPU seconds the generator itself used during the window.
    pub generator_cpu_secs: Option<f64>,
    /// Cores the generator may run on.
    pub generator_cores: usize,
    /// Busy and softirq shares (%) of those cores during the window, whoever used them.
    pub generator_cores_busy: Option<(f64, f64)>,
    /// Executor threads of the generator (with the probe thread, if any).
    pub generator_threads: usize,
    /// Above this share (%) of its cores, the run is invalid.
    pub max_generator_share: f64,
    /// The server's own count of deliveries during the window (`/metrics`).
    pub server_deliveries: Option<u64>,
    /// Retransmitted segments and full-backlog drops during the window.
    pub loss: LossSample,
    /// States the server replaced in a queue by a newer one during the window.
    pub server_skipped: Option<u64>,
    /// The server's own time per state handed to a shard's subscribers, in the window.
    pub server_fanout: Option<Fanout>,
    /// Clients that inflate, parse and measure latency (the rest count by frame headers).
    pub probes: usize,
    /// How long counting connections wait between reads (0: they read as data arrives).
    pub count_pace_secs: f64,
    pub storm: Option<StormFacts>,
}

/// Whether the generator counted what the server sent in the window: the two counts may differ
/// by what was in flight at the window's edges (a pace's worth of deliveries, and a tenth of a
/// second) and 2 %; a larger gap means the generator did not keep up (the server queued what
/// it could not send) or lost connections.
fn counts_agree(
    counted: u64,
    server: Option<u64>,
    expected_per_sec: f64,
    pace_secs: f64,
) -> Option<bool> {
    let server = server?;
    let edge = expected_per_sec * (pace_secs + 0.1) + server as f64 * 0.02;
    Some((counted as f64 - server as f64).abs() <= edge)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

pub fn report(stats: &Stats, f: RunFacts) -> Value {
    let mut lat = stats.latencies_us.clone();
    lat.sort_unstable();
    let receivers = f.matches * (f.overlays + f.spectators) - f.stalled;
    let expected_per_sec = f.rate * receivers as f64;
    let deliveries_per_sec = stats.deliveries as f64 / f.window_secs;
    let cpu = match (f.before, f.after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let sys = match (f.before, f.after) {
        (Some(b), Some(a)) => Some(a.sys_secs - b.sys_secs),
        _ => None,
    };
    let per_delivery = |s: Option<f64>| {
        s.filter(|_| stats.deliveries > 0)
            .map(|c| c * 1e6 / stats.deliveries as f64)
    };
    let cpu_per_delivery_us = per_delivery(cpu);
    let connections = f.matches * (f.overlays + f.spectators + 1);
    // Growth of the server's RSS from before the first connection to all connections open and
    // idle (no match traffic yet), per connection.
    let rss_per_conn_kb = match (f.baseline, f.idle) {
        (Some(b), Some(i)) if connections > 0 => {
            Some((i.rss_kb as f64 - b.rss_kb as f64) / connections as f64)
        }
        _ => None,
    };
    let generator_pct = f
        .generator_cpu_secs
        .map(|c| c * 100.0 / f.window_secs / f.generator_cores.max(1) as f64);
    let agree = counts_agree(
        stats.deliveries,
        f.server_deliveries,
        expected_per_sec,
        f.count_pace_secs,
    );
    json!({
        "valid": generator_pct.map(|p| p <= f.max_generator_share && agree != Some(false)),
        "counts_agree": agree,
        "generator_cpu_s": f.generator_cpu_secs.map(round),
        "generator_cores": f.generator_cores,
        "generator_threads": f.generator_threads,
        "generator_cpu_pct": generator_pct.map(round),
        "generator_cores_busy_pct": f.generator_cores_busy.map(|b| round(b.0)),
        "generator_cores_softirq_pct": f.generator_cores_busy.map(|b| round(b.1)),
        "server_deliveries": f.server_deliveries,
        "tcp_retransmits": f.loss.retransmits,
        "backlog_drops": f.loss.backlog_drops,
        "server_skipped": f.server_skipped,
        "server_fanout_ms": f.server_fanout.map(|x| json!({
            "mean": round(x.mean_ms),
            "p99_at_most": x.p99_at_most_ms,
            "states": x.count,
        })),
        "probes": f.probes,
        "matches": f.matches,
        "overlays_per_match": f.overlays,
        "spectators_per_match": f.spectators,
        "stalled": f.stalled,
        "rate": f.rate,
        "connect_s": round(f.connect_secs),
        "settle_s": round(f.settle_secs),
        "window_s": round(f.window_secs),
        "events_sent": stats.events_sent,
        "events_in_window": stats.events_in_window,
        "server_cpu_per_event_us": cpu.filter(|_| stats.events_in_window > 0)
            .map(|c| round(c * 1e6 / stats.events_in_window as f64)),
        "deliveries": stats.deliveries,
        "deliveries_per_s": round(deliveries_per_sec),
        "expected_per_s": round(expected_per_sec),
        "latency_samples": lat.len(),
        "latency_ms": {
            "p50": round(percentile(&lat, 0.50)),
            "p99": round(percentile(&lat, 0.99)),
            "p999": round(percentile(&lat, 0.999)),
            "max": round(percentile(&lat, 1.0)),
        },
        "drops": stats.drops,
        "connect_failures": stats.connect_failures,
        "server_cpu_s": cpu.map(round),
        "server_cpu_per_delivery_us": cpu_per_delivery_us.map(round),
        // Of which in the kernel (the rest is the server's own code).
        "server_system_per_delivery_us": per_delivery(sys).map(round),
        "server_rss_mb": f.after.map(|a| round(a.rss_kb as f64 / 1024.0)),
        "server_rss_idle_connected_mb": f.idle.map(|a| round(a.rss_kb as f64 / 1024.0)),
        "server_rss_max_mb": round(f.rss_max_kb as f64 / 1024.0),
        "server_rss_per_idle_connection_kb": rss_per_conn_kb.map(round),
        "payload_mb_per_s": round(stats.bytes as f64 / f.window_secs / 1e6),
        "tls": tls_report(stats),
        "storm": f.storm.as_ref().map(|s| storm_report(stats, s)),
    })
}

/// The reconnect storm: recovery times (ms from the reset), handshakes, the server's CPU.
fn storm_report(stats: &Stats, facts: &StormFacts) -> Value {
    let mut rec = stats.storm_recovery_us.clone();
    rec.sort_unstable();
    let mut hs = stats.storm_handshake_us.clone();
    hs.sort_unstable();
    let reconnects = rec.len();
    json!({
        "clients": facts.participants,
        "recovered": reconnects,
        "failed": stats.storm_failures,
        "all_recovered_s": round(facts.secs),
        "recovery_ms": {
            "p50": round(percentile(&rec, 0.50)),
            "p99": round(percentile(&rec, 0.99)),
            "max": round(percentile(&rec, 1.0)),
        },
        "handshake_ms": (!hs.is_empty()).then(|| json!({
            "p50": round(percentile(&hs, 0.50)),
            "p99": round(percentile(&hs, 0.99)),
        })),
        "resumed_share": (!hs.is_empty()).then(|| round(stats.storm_resumed as f64 / hs.len() as f64)),
        "server_cpu_s": facts.server_cpu_secs.map(round),
        "server_cpu_pct": facts.server_cpu_secs.map(|c| round(c * 100.0 / facts.secs.max(1e-9))),
        "generator_cpu_s": facts.generator_cpu_secs.map(round),
        "generator_cpu_pct": facts.generator_cpu_secs.map(|c| round(c * 100.0 / facts.secs.max(1e-9))),
        "server_cpu_per_reconnect_us": facts.server_cpu_secs
            .filter(|_| reconnects > 0)
            .map(|c| round(c * 1e6 / reconnects as f64)),
        "peer_cpu_s": facts.peer_cpu_secs.map(round),
        "peer_cpu_per_reconnect_us": facts.peer_cpu_secs
            .filter(|_| reconnects > 0)
            .map(|c| round(c * 1e6 / reconnects as f64)),
    })
}

/// Handshake times (ms) and the share of resumed sessions; `null` without TLS.
pub fn tls_report(stats: &Stats) -> Value {
    if stats.handshake_us.is_empty() {
        return Value::Null;
    }
    let mut hs = stats.handshake_us.clone();
    hs.sort_unstable();
    json!({
        "handshakes": hs.len(),
        "handshake_ms": {
            "p50": round(percentile(&hs, 0.50)),
            "p99": round(percentile(&hs, 0.99)),
            "max": round(percentile(&hs, 1.0)),
        },
        "resumed_share": round(stats.resumed as f64 / hs.len() as f64),
        "cipher_suite": stats.suite,
    })
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn human(r: &Value) -> String {
    let g = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    let l = |k: &str| r["latency_ms"].get(k).cloned().unwrap_or(Value::Null);
    format!(
        "matches {} × (overlays {} + spectators {}), stalled {}, {} events/s per match\n\
         connect {} s, settle {} s, window {} s, events sent {}\n\
         deliveries {} ({} /s, expected {} /s), payload {} MB/s\n\
         latency ms p50 {} p99 {} p999 {} max {} ({} samples)\n\
         drops {}, connect failures {}\n\
         server CPU {} s ({} µs per delivery), RSS {} MB (max {} MB, {} KB per idle connection)\n\
         server's own deliveries count {} (agrees with the count above: {}), states skipped in queues {}, fan-out per state {} ms\n\
         TCP retransmits {}, packets dropped at a full CPU backlog {}\n\
         generator CPU {} s = {} % of its {} core(s): valid {}\n\
         generator's core(s) busy {} % (softirq {} %), whoever used them\n\
         TLS {}\n\
         storm {}",
        g("matches"),
        g("overlays_per_match"),
        g("spectators_per_match"),
        g("stalled"),
        g("rate"),
        g("connect_s"),
        g("settle_s"),
        g("window_s"),
        g("events_sent"),
        g("deliveries"),
        g("deliveries_per_s"),
        g("expected_per_s"),
        g("payload_mb_per_s"),
        l("p50"),
        l("p99"),
        l("p999"),
        l("max"),
        g("latency_samples"),
        g("drops"),
        g("connect_failures"),
        g("server_cpu_s"),
        g("server_cpu_per_delivery_us"),
        g("server_rss_mb"),
        g("server_rss_max_mb"),
        g("server_rss_per_idle_connection_kb"),
        g("server_deliveries"),
        g("counts_agree"),
        g("server_skipped"),
        g("server_fanout_ms"),
        g("tcp_retransmits"),
        g("backlog_drops"),
        g("generator_cpu_s"),
        g("generator_cpu_pct"),
        g("generator_cores"),
        g("valid"),
        g("generator_cores_busy_pct"),
        g("generator_cores_softirq_pct"),
        g("tls"),
        g("storm"),
    )
}
