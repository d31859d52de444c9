//! The conformance server: the project's own HTTP, WebSocket, Engine.IO and Socket.IO modules,
//! configured as the official test suites expect, so that they can be run against it.
//!
//! - `socketio/engine.io-protocol` test-suite: Engine.IO on `/engine.io/`, every message echoed.
//! - `socketio/socket.io-protocol` test-suite: Socket.IO on `/socket.io/`, namespaces `/` and
//!   `/custom`; on connect the server emits `auth` with the CONNECT payload; `message` is
//!   answered with `message-back` (same arguments and attachments), `message-with-ack` is
//!   acknowledged with its arguments.
//! - Autobahn TestSuite: a WebSocket echo on `/echo` (same frame reader/writer and deflate).
//!
//! Port 3000, pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1,000,000, connectTimeout
//! 1000 ms. Run: `cargo run --release --example conformance [-- --port 3000 --shards 1]`;
//! `scripts/conformance` runs the suites. Nothing here is used by the Spectra server.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use serde_json::{Value, json};
use spectra::config::{Args, Config};
use spectra::shard::Shard;
use spectra::transport::engineio::{send_binary, send_message};
use spectra::transport::service::{EngineMessage, Service, SioEvent};
use spectra::transport::socketio::{ack_on, emit_on};

#[derive(Parser)]
#[command(about = "Spectra transport conformance server (Engine.IO, Socket.IO, Autobahn echo)")]
struct Options {
    /// Port of the conformance listener.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Shards (executor threads); the suites expect one process, any shard count works.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
}

/// How long after the CONNECT ack the `auth` event follows.
const AUTH_DELAY: Duration = Duration::from_millis(5);

/// The echo handlers the suites talk to.
struct Conformance;

impl Service for Conformance {
    fn on_engine_message(&self, shard: &Rc<Shard>, sid: &str, message: EngineMessage) {
        match message {
            EngineMessage::Text(text) => send_message(&shard.eio, sid, &text),
            EngineMessage::Binary(data) => send_binary(&shard.eio, sid, &data),
        }
    }

    fn has_namespace(&self, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    fn on_connect(&self, shard: &Rc<Shard>, sid: &str, nsp: &str, auth: Value) {
        // The suites read the CONNECT ack and this event with two successive one-shot
        // listeners of a ws 8.5 client, which dispatches every message of one TCP read at
        // once: the event must not share a segment with the ack. The reference server writes
        // one packet at a time; here the event simply follows a moment later.
        let (shard, sid, nsp) = (shard.clone(), sid.to_string(), nsp.to_string());
        glommio::spawn_local(async move {
            glommio::timer::sleep(AUTH_DELAY).await;
            emit_on(&shard.eio, &sid, &nsp, &json!(["auth", auth]), &[]);
        })
        .detach();
    }

    fn on_event(&self, shard: &Rc<Shard>, sid: &str, event: SioEvent) {
        let Value::Array(items) = event.data else {
            return;
        };
        let mut items = items.into_iter();
        let name = items.next();
        let args: Vec<Value> = items.collect();
        match name.as_ref().and_then(Value::as_str) {
            Some("message") => {
                let mut data = vec![Value::from("message-back")];
                data.extend(args);
                emit_on(
                    &shard.eio,
                    sid,
                    &event.nsp,
                    &Value::Array(data),
                    &event.attachments,
                );
            }
            Some("message-with-ack") => {
                if let Some(id) = event.ack {
                    ack_on(
                        &shard.eio,
                        sid,
                        &event.nsp,
                        id,
                        &Value::Array(args),
                        &event.attachments,
                    );
                }
            }
            _ => {}
        }
    }
}

fn main() {
    let options = Options::parse();
    let shards = options.shards.max(1).to_string();
    let args = Args::parse_from([
        "conformance",
        "--shards",
        &shards,
        "--bind",
        &options.bind,
        "--ping-interval-ms",
        "300",
        "--ping-timeout-ms",
        "200",
        "--connect-timeout-ms",
        "1000",
    ]);
    let mut config = Config::from_args(args);
    config.max_payload = 1_000_000;
    config.tls = spectra::config::TlsMode::Plain;
    config.replay_dir = None; // echo services have no matches
    let service: spectra::shard::runtime::ServiceFactory =
        Arc::new(|| Rc::new(Conformance) as Rc<dyn Service>);
    match spectra::shard::runtime::start_service(config, options.port, service) {
        Ok(running) => {
            println!(
                "conformance server ready on {}:{} ({} shard(s)): /engine.io/, /socket.io/, /echo",
                options.bind, options.port, shards
            );
            running.join();
        }
        Err(e) => {
            eprintln!("conformance: {e}");
            std::process::exit(1);
        }
    }
}
