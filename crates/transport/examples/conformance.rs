//! The conformance server: the transport crate alone (`spectra-transport`: HTTP, WebSocket,
//! Engine.IO and Socket.IO), configured as the official test suites expect, so that they can be
//! run against the very code that serves Spectra's ports. Nothing of the Spectra server is used.
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
//! `scripts/conformance` runs the suites. With several shards (executor threads on one
//! SO_REUSEPORT port) session messages cross between them on channels, as in the server.

use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use serde_json::{Value, json};
use spectra_transport::engineio::{self, App, EioConfig, EngineMessage, SessionMsg};
use spectra_transport::http::{Reader, Request, Response};
use spectra_transport::server::{self, Reply, Site, preflight};
use spectra_transport::socketio::{SioEvent, ack_on, emit_on};
use spectra_transport::{echo, websocket};

#[derive(Parser)]
#[command(about = "Transport conformance server (Engine.IO, Socket.IO, Autobahn echo)")]
struct Options {
    /// Port of the conformance listener.
    #[arg(long, default_value_t = 3000)]
    port: u16,
    /// Shards (executor threads); the suites expect one process, any shard count works.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Socket.IO connection state recovery window in milliseconds (0: off, as the suites
    /// expect).
    #[arg(long, default_value_t = 0)]
    recovery_ms: u64,
}

/// How long after the CONNECT ack the `auth` event follows.
const AUTH_DELAY: Duration = Duration::from_millis(5);
const MAX_PAYLOAD: usize = 1_000_000;

type Eio = engineio::Eio<Conformance>;

/// What a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Engine,
    Socket,
}

/// The echo handlers the suites talk to.
struct Conformance {
    /// Every shard's inbox of session messages.
    mesh: Arc<Vec<flume::Sender<SessionMsg<Conformance>>>>,
}

impl App for Conformance {
    type Kind = Kind;
    type Data = ();
    type Action = ();
    type PollingSlot = ();

    fn socketio(&self, kind: Kind) -> bool {
        kind == Kind::Socket
    }

    fn new_data(&self, _kind: Kind) {}

    fn polling_slot(&self, _peer: Option<IpAddr>) -> Result<(), String> {
        Ok(())
    }

    fn send(&self, shard: usize, msg: SessionMsg<Self>) {
        if let Some(tx) = self.mesh.get(shard) {
            let _ = tx.send(msg);
        }
    }

    fn has_namespace(&self, _kind: Kind, nsp: &str) -> bool {
        nsp == "/" || nsp == "/custom"
    }

    fn accepts_binary(&self, _kind: Kind) -> bool {
        true
    }

    fn on_engine_message(&self, eio: &Rc<Eio>, sid: &str, message: EngineMessage) {
        match message {
            EngineMessage::Text(text) => engineio::send_message(eio, sid, &text),
            EngineMessage::Binary(data) => engineio::send_binary(eio, sid, &data),
        }
    }

    fn on_connect(&self, eio: &Rc<Eio>, sid: &str, _kind: Kind, nsp: &str, auth: Value) {
        // The suites read the CONNECT ack and this event with two successive one-shot
        // listeners of a ws 8.5 client, which dispatches every message of one TCP read at
        // once: the event must not share a segment with the ack. The reference server writes
        // one packet at a time; here the event simply follows a moment later.
        let (eio, sid, nsp) = (eio.clone(), sid.to_string(), nsp.to_string());
        glommio::spawn_local(async move {
            glommio::timer::sleep(AUTH_DELAY).await;
            emit_on(&eio, &sid, &nsp, &json!(["auth", auth]), &[]);
        })
        .detach();
    }

    fn on_event(&self, eio: &Rc<Eio>, sid: &str, _kind: Kind, event: SioEvent) {
        if !event.is_event {
            return;
        }
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
                    eio,
                    sid,
                    &event.nsp,
                    &Value::Array(data),
                    &event.attachments,
                );
            }
            Some("message-with-ack") => {
                if let Some(id) = event.ack {
                    ack_on(
                        eio,
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

    fn on_disconnect(&self, _eio: &Rc<Eio>, _sid: &str, _data: &mut ()) {}
    fn on_detach(&self, _sid: &str, _data: &()) {}
    fn on_attach(&self, _sid: &str, _data: &()) {}
    fn on_action(&self, _eio: &Rc<Eio>, _sid: &str, _action: ()) {}
    fn on_recover(&self, eio: &Rc<Eio>, sid: &str, _kind: Kind, offset: Option<&str>) {
        emit_on(eio, sid, "/", &json!(["recovered", offset]), &[]);
    }
}

/// What the listener serves: Engine.IO, Socket.IO, the echo; anything else is 404.
struct ConformanceSite {
    eio: Rc<Eio>,
    compressor: RefCell<flate2::Compress>,
}

impl Site for ConformanceSite {
    type Guard = ();

    fn open(&self, _peer: Option<IpAddr>) -> Result<(), Response> {
        Ok(())
    }

    fn max_body(&self) -> usize {
        MAX_PAYLOAD + 1024
    }

    async fn request<R, W>(
        &self,
        _guard: &mut (),
        req: Request,
        reader: &mut Reader<R>,
        writer: &mut Option<W>,
    ) -> Reply
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + 'static,
    {
        let kind = match req.path.as_str() {
            "/engine.io/" | "/engine.io" => Some(Kind::Engine),
            "/socket.io/" | "/socket.io" => Some(Kind::Socket),
            _ => None,
        };
        let response = if req.method == "OPTIONS" {
            preflight(&req)
        } else if req.path == "/echo" && req.is_websocket_upgrade() {
            if let Some(w) = writer.take() {
                echo::run(&self.compressor, &req, reader, w).await;
            }
            return Reply::Taken;
        } else if let Some(kind) = kind {
            match engineio::handle_request(&self.eio, kind, req, reader, writer).await {
                Some(resp) => resp,
                None => return Reply::Taken,
            }
        } else {
            Response::text(404, "Not found")
        };
        Reply::Respond {
            response,
            keep_alive: true,
        }
    }
}

/// A listener every shard binds to the same port (SO_REUSEPORT spreads connections).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a listening TCP socket we own and hand over exactly once.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

fn main() {
    let options = Options::parse();
    let shards = options.shards.max(1);
    let addr = SocketAddr::new(options.bind, options.port);
    let config = EioConfig {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(1000),
        max_payload: MAX_PAYLOAD,
        recovery_window: (options.recovery_ms > 0)
            .then(|| Duration::from_millis(options.recovery_ms)),
        max_held: 1000,
    };
    let (senders, inboxes): (Vec<_>, Vec<_>) = (0..shards).map(|_| flume::unbounded()).unzip();
    let mesh = Arc::new(senders);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::new();
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let (mesh, config, ready) = (mesh.clone(), config.clone(), ready_tx.clone());
        let spawned = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("conformance-{id}"))
            .io_memory(1 << 20)
            .spawn(move || async move {
                let eio = Rc::new(Eio::new(id, shards, config, Conformance { mesh }));
                let listener = match listen(addr) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(format!("cannot listen on {addr}: {e}")));
                        return;
                    }
                };
                let inbox_eio = eio.clone();
                glommio::spawn_local(async move {
                    while let Ok(msg) = inbox.recv_async().await {
                        engineio::on_shard_msg(&inbox_eio, msg);
                    }
                })
                .detach();
                let site = Rc::new(ConformanceSite {
                    eio,
                    compressor: RefCell::new(websocket::new_compressor()),
                });
                let _ = ready.send(Ok(()));
                server::serve(site, listener, None).await;
            });
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                eprintln!("conformance: cannot start shard {id}: {e}");
                std::process::exit(1);
            }
        }
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("conformance: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("conformance: a shard stopped during start-up");
                std::process::exit(1);
            }
        }
    }
    println!(
        "conformance server ready on {addr} ({shards} shard(s)): /engine.io/, /socket.io/, /echo"
    );
    for handle in handles {
        let _ = handle.join();
    }
}
