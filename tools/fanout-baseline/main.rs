//! The physical-limit reference for fan-out: one pre-built WebSocket frame (the server's own
//! mid-match snapshot, deflated exactly as it broadcasts it) written to N sockets at a fixed
//! rate with nothing else — no sessions, no queues, no executor, one plain `write` per socket
//! per broadcast. Reports its own CPU time per delivery from `/proc/self/stat`.
//!
//! With `--per-room K`, every K sockets are a room broadcasting on its own (many small matches:
//! the floor of B4's sends and wake-ups, without the events that cause them).
//!
//! Run it, then drain it with the load generator in raw mode:
//!   target/release/fanout-baseline --port 5300 --connections 1000 --duration 10 &
//!   target/release/loadgen --raw --broadcast 127.0.0.1:5300 --overlays 1000 --duration 10
//! Bounded in time; stops by itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use spectra::engine::Match;
use spectra::transport::{packets, websocket};

#[derive(Parser)]
#[command(about = "Bare fan-out baseline: one frame to N sockets, nothing else")]
struct Args {
    /// Port to listen on (0: any free one; the "ready" line names it).
    #[arg(long, default_value_t = 5300)]
    port: u16,
    /// Connections to wait for before broadcasting.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Broadcasts per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds of broadcasting (after all connections arrived).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value = "../shared/kit/reference/match.replay")]
    replay: PathBuf,
    /// Cache lines of per-connection memory (a separate allocation per connection) to write
    /// before each send, standing in for a server's own per-delivery state: shows what cold
    /// user-side memory per delivery costs, in user time and in the kernel's sends after it.
    #[arg(long, default_value_t = 0)]
    touch_lines: usize,
    /// Sockets per room (0: one room of all): each room of this many (in the order they
    /// connected) gets its own broadcast `rate` times a second, the rooms' broadcasts spread
    /// evenly over the period — many small matches (B4), where every broadcast pays for a
    /// wake-up of its own.
    #[arg(long, default_value_t = 0)]
    per_room: usize,
}

fn snapshot_frames(path: &PathBuf) -> Result<(Vec<u8>, Vec<u8>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file = spectra::replay::parse(&text)?;
    let mut m = Match::new(&file.engine_logon("BASE")).map_err(|e| format!("{e:?}"))?;
    for e in file.events.iter().take(file.events.len().div_ceil(2)) {
        m.apply(e);
    }
    let packet = packets::event_packet("match_data", &m.snapshot_json());
    let plain = websocket::text_frame(&packet).to_vec();
    let deflated =
        websocket::compressed_text_frame(&mut websocket::new_compressor(), &packet).to_vec();
    Ok((plain, deflated))
}

/// Reads the upgrade request and answers 101 (with permessage-deflate when offered).
fn upgrade(mut s: TcpStream) -> Option<(TcpStream, bool)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let deflate = head.to_ascii_lowercase().contains("permessage-deflate");
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let ext = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
    } else {
        ""
    };
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{ext}\r\n"
    );
    s.write_all(resp.as_bytes()).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_nonblocking(true).ok()?;
    Some((s, deflate))
}

/// This process's CPU seconds so far: (user, system).
fn cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let Some(end) = stat.rfind(')') else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = stat[end + 2..].split_whitespace().collect();
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (get(11) / ticks, get(12) / ticks)
}

fn main() {
    let args = Args::parse();
    let (plain, deflated) = match snapshot_frames(&args.replay) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fanout-baseline: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", args.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fanout-baseline: cannot listen on {}: {e}", args.port);
            std::process::exit(2);
        }
    };
    println!(
        "fanout-baseline ready on 127.0.0.1:{} (frame {} bytes, {} deflated)",
        listener.local_addr().map_or(args.port, |a| a.port()),
        plain.len(),
        deflated.len()
    );
    let sockets: Arc<Mutex<Vec<(TcpStream, bool)>>> = Arc::new(Mutex::new(Vec::new()));
    let accepted = sockets.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            if let Some(c) = upgrade(s)
                && let Ok(mut v) = accepted.lock()
            {
                v.push(c);
            }
        }
    });
    let wait_until = Instant::now() + Duration::from_secs(120);
    while sockets.lock().map(|v| v.len()).unwrap_or(0) < args.connections {
        if Instant::now() > wait_until {
            eprintln!("fanout-baseline: not all connections arrived; broadcasting anyway");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut conns = std::mem::take(&mut *sockets.lock().unwrap_or_else(|e| e.into_inner()));
    // One allocation per connection, made in between other allocations so they do not sit
    // next to each other (like sessions created over time).
    let mut spacers = Vec::new();
    let mut state: Vec<Vec<u8>> = (0..conns.len())
        .map(|_| {
            spacers.push(vec![0u8; 256]);
            vec![0u8; args.touch_lines * 64]
        })
        .collect();
    let period = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let per_room = if args.per_room == 0 {
        conns.len().max(1)
    } else {
        args.per_room
    };
    let rooms = conns.len().div_ceil(per_room).max(1);
    // The rooms take turns: room i broadcasts at i/rooms of each period.
    let step = period / rooms as u32;
    let start = Instant::now();
    let cpu0 = cpu_secs();
    let (mut deliveries, mut blocked) = (0u64, 0u64);
    let mut next = start;
    let mut room = 0;
    while start.elapsed() < Duration::from_secs(args.duration) {
        let from = (room * per_room).min(conns.len());
        let to = (from + per_room).min(conns.len());
        for ((s, deflate), mine) in conns[from..to].iter_mut().zip(state[from..to].iter_mut()) {
            for line in mine.chunks_mut(64) {
                line[0] = line[0].wrapping_add(1);
            }
            let frame = if *deflate { &deflated } else { &plain };
            match s.write(frame) {
                Ok(n) if n == frame.len() => deliveries += 1,
                _ => blocked += 1,
            }
        }
        room = (room + 1) % rooms;
        next += step;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let cpu1 = cpu_secs();
    let (user, sys) = (cpu1.0 - cpu0.0, cpu1.1 - cpu0.1);
    let cpu = user + sys;
    let secs = start.elapsed().as_secs_f64();
    let per = |s: f64| {
        if deliveries > 0 {
            s * 1e6 / deliveries as f64
        } else {
            0.0
        }
    };
    drop(spacers);
    println!(
        "{{\"connections\":{},\"deliveries\":{deliveries},\"deliveries_per_s\":{:.1},\"blocked\":{blocked},\"cpu_s\":{cpu:.3},\"cpu_per_delivery_us\":{:.3},\"user_per_delivery_us\":{:.3},\"system_per_delivery_us\":{:.3}}}",
        conns.len(),
        deliveries as f64 / secs,
        per(cpu),
        per(user),
        per(sys)
    );
}
