//! Replays a `.replay` file (the original's format, or ours) into any Spectra server's ingest port,
//! like the original's replay scripts: logs on as an observer with the header's `obsName`,
//! `groupCode`, teams, `toolsData` and `clientVersion`, then sends every event as `obs_data` —
//! at once (`instant`), with a fixed delay (`delay`), or with the original gaps between the
//! events' timestamps (`timestamps`, optionally sped up). Stops after the event that ends the game
//! (unless `--past-end`). Prints a JSON summary on stdout (`sent`, `groupCode`, the group secret
//! the server gave, why it stopped). Bounded: it ends when the file ends.
//!
//! Example: `cargo run --release --bin replay -- --file replays/Match_X_1.replay --key KEY --mode delay --delay-ms 50`

#[path = "../loadgen/tls.rs"]
mod tls;
#[path = "../loadgen/ws.rs"]
#[allow(dead_code)] // shared with the load generator, which uses all of it
mod ws;

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{Map, Value, json};
use spectra::engine::{Event, Kind, ObsKind};
use spectra::transport::websocket::Incoming;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Every event as fast as the connection takes it.
    Instant,
    /// A fixed pause between events (`--delay-ms`).
    Delay,
    /// The gaps between the events' recorded timestamps, divided by `--speed`.
    Timestamps,
}

#[derive(Parser, Debug)]
#[command(about = "Replay a .replay file into a Spectra server's ingest port")]
struct Args {
    /// The replay file (`Match_<code>_<ms>.replay`).
    #[arg(long)]
    file: String,
    /// Ingest address of the server.
    #[arg(long, default_value = "127.0.0.1:5100")]
    server: SocketAddr,
    /// Access key for the logon.
    #[arg(long, default_value = "")]
    key: String,
    /// Connect over TLS, trusting the certificate(s) in this PEM file.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Connect over TLS and accept any server certificate (a self-signed one).
    #[arg(long)]
    insecure: bool,
    /// The name asked for and checked over TLS.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Group code to use instead of the header's.
    #[arg(long)]
    group: Option<String>,
    /// Group secret, to rejoin a live match (e.g. after a restart; see `--from`).
    #[arg(long, default_value = "")]
    secret: String,
    /// Pacing of the events.
    #[arg(long, value_enum, default_value = "instant")]
    mode: Mode,
    /// Pause between events in `delay` mode (ms).
    #[arg(long, default_value_t = 100)]
    delay_ms: u64,
    /// Speed factor in `timestamps` mode (2 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// Skip the first N events (continue a match that already has them).
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// Send at most N events.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep sending after the event that ends the game.
    #[arg(long)]
    past_end: bool,
}

fn fail(why: impl std::fmt::Display) -> ! {
    eprintln!("replay: {why}");
    std::process::exit(1);
}

/// Whether an event ends the game (`round_info` with phase `game_end`; the original's replay
/// stopped after it too).
fn ends_game(event: &Event) -> bool {
    event.kind() == Kind::Obs(ObsKind::RoundInfo)
        && event
            .data()
            .and_then(|d| d.get("roundPhase"))
            .and_then(Value::as_str)
            == Some("game_end")
}

/// The logon object from the file's header.
fn logon(header: &Map<String, Value>, args: &Args, code: &str) -> String {
    let mut auth = Map::new();
    auth.insert("type".into(), json!("authenticate"));
    for key in [
        "clientVersion",
        "obsName",
        "leftTeam",
        "rightTeam",
        "toolsData",
    ] {
        if let Some(v) = header.get(key) {
            auth.insert(key.into(), v.clone());
        }
    }
    auth.insert("key".into(), json!(args.key));
    auth.insert("groupCode".into(), json!(code));
    auth.insert("groupSecret".into(), json!(args.secret));
    format!(
        "42[\"obs_logon\",{}]",
        Value::String(Value::Object(auth).to_string())
    )
}

async fn run(args: Args) {
    let text =
        std::fs::read_to_string(&args.file).unwrap_or_else(|e| fail(format!("{}: {e}", args.file)));
    let file =
        spectra::replay::parse(&text).unwrap_or_else(|e| fail(format!("{}: {e}", args.file)));
    if file.skipped > 0 {
        eprintln!("replay: {} unreadable line(s) skipped", file.skipped);
    }
    let code = args
        .group
        .clone()
        .or_else(|| file.group_code().map(str::to_string))
        .unwrap_or_else(|| fail("the header has no groupCode; pass --group"));
    let obs_name = file
        .header
        .get("obsName")
        .cloned()
        .unwrap_or(json!("Replay"));

    let tls = (args.ca.is_some() || args.insecure).then(|| {
        tls::Tls::new(args.ca.as_deref(), args.insecure, &args.server_name)
            .unwrap_or_else(|e| fail(e))
            .for_client()
    });
    let mut ws = ws::Client::connect(
        args.server,
        "/socket.io/?EIO=4&transport=websocket",
        false,
        tls.as_ref(),
    )
    .await
    .unwrap_or_else(|e| fail(e));
    let handshake = ws.handshake;
    let logon = logon(&file.header, &args, &code);
    let ack = ws.obs_logon(&logon).await.unwrap_or_else(|e| fail(e));
    let reason = ack.get("reason").and_then(Value::as_str).unwrap_or("");
    if ack.get("value") != Some(&json!(true)) {
        fail(format!("logon refused: {reason}"));
    }
    // A rejoin answers "reconnected"; the secret is then the one we gave.
    let secret = if reason == "reconnected" {
        args.secret.clone()
    } else {
        reason.to_string()
    };
    eprintln!("replay: logged on to {code} (secret {secret})");

    // Pings are answered between events; a reader task counts them.
    let (mut reader, mut ws) = ws.split();
    let pings = Rc::new(std::cell::Cell::new(0u32));
    let closed = Rc::new(std::cell::Cell::new(false));
    let (pings_seen, closed_seen) = (pings.clone(), closed.clone());
    glommio::spawn_local(async move {
        while let Some(msg) = reader.next_any().await {
            if matches!(&msg, Incoming::Text(t) if t == "2") {
                pings_seen.set(pings_seen.get() + 1);
            }
        }
        closed_seen.set(true);
    })
    .detach();

    let started = Instant::now();
    let first_ts = file
        .events
        .get(args.from)
        .and_then(|e| e.envelope().get("timestamp"))
        .and_then(Value::as_u64);
    let mut sent = 0usize;
    let mut stop = "end of file";
    for event in file.events.iter().skip(args.from) {
        if args.limit.is_some_and(|n| sent >= n) {
            stop = "limit";
            break;
        }
        if closed.get() {
            stop = "server closed the connection";
            break;
        }
        match args.mode {
            Mode::Instant => {}
            Mode::Delay if sent > 0 => {
                glommio::timer::sleep(Duration::from_millis(args.delay_ms)).await
            }
            Mode::Delay => {}
            Mode::Timestamps => {
                if let (Some(t0), Some(t)) = (
                    first_ts,
                    event.envelope().get("timestamp").and_then(Value::as_u64),
                ) {
                    let due = Duration::from_secs_f64(
                        t.saturating_sub(t0) as f64 / 1000.0 / args.speed.max(0.001),
                    );
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        glommio::timer::sleep(due - elapsed).await;
                    }
                }
            }
        }
        for _ in 0..pings.replace(0) {
            let _ = ws.send_text("3").await;
        }
        let mut out = event.envelope().clone();
        out.remove("timestamp"); // the server stamps its own
        out.insert("groupCode".into(), json!(code));
        if !out.contains_key("obsName") && !out.contains_key("playerId") {
            out.insert("obsName".into(), obs_name.clone());
        }
        let packet = format!(
            "42[\"obs_data\",{}]",
            Value::String(Value::Object(out).to_string())
        );
        if ws.send_text(&packet).await.is_err() {
            stop = "write failed";
            break;
        }
        sent += 1;
        if !args.past_end && ends_game(event) {
            stop = "game_end";
            break;
        }
    }
    // Give the server a moment to read the last events before the socket closes.
    glommio::timer::sleep(Duration::from_millis(200)).await;
    println!(
        "{}",
        json!({
            "file": args.file, "groupCode": code, "groupSecret": secret, "sent": sent,
            "from": args.from, "stopReason": stop, "seconds": started.elapsed().as_secs_f64(),
            "tls": handshake.map(|h| json!({
                "handshakeMs": h.time.as_secs_f64() * 1000.0, "resumed": h.resumed,
                "cipherSuite": h.suite.map(|c| format!("{c:?}")),
            })),
        })
    );
}

fn main() {
    let args = Args::parse();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("replay")
        .io_memory(1 << 20)
        .spawn(move || run(args))
        .unwrap_or_else(|e| fail(format!("cannot start the executor: {e}")));
    let _ = handle.join();
}
