//! Accept loops and the per-connection HTTP loop of all three ports: TLS (when configured), then
//! requests dispatched to Engine.IO (5100/5200, path `/socket.io/`) or to REST (5101). A
//! connection that upgrades to a WebSocket is handed to Engine.IO for good.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::AsyncWriteExt;
use glommio::net::{TcpListener, TcpStream};

use super::engineio;
use super::http::{ReadError, Reader, Request, Response, write_response};
use super::routes::{Route, Routes};
use super::stream::Stream;
use crate::shard::Shard;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Ingest,
    Broadcast,
    Rest,
    /// Single-port mode: ingest, overlays, spectators and REST on one listener.
    Single,
    /// A `Service` (the conformance example): Engine.IO on `/engine.io/`, Socket.IO on
    /// `/socket.io/`, a WebSocket echo on `/echo`.
    Service,
}

impl Port {
    /// The index of this port in `metrics::PORTS`.
    fn metrics_index(self) -> usize {
        match self {
            Port::Ingest => 0,
            Port::Rest => 1,
            Port::Broadcast => 2,
            Port::Service => 3,
            Port::Single => 4,
        }
    }
}

/// Counts an open connection in `/metrics` for as long as it lives.
struct Counted(usize);

impl Counted {
    fn new(port: Port) -> Counted {
        let i = port.metrics_index();
        crate::metrics::local(|s| {
            s.connections[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        Counted(i)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let i = self.0;
        crate::metrics::local(|s| {
            s.connections[i].fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

impl std::fmt::Display for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Port::Ingest => "ingest",
            Port::Broadcast => "broadcast",
            Port::Rest => "rest",
            Port::Service => "service",
            Port::Single => "single",
        })
    }
}

/// How long a keep-alive connection may sit idle between requests, and the TLS handshake bound.
const IDLE: Duration = Duration::from_secs(120);
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// How long and how much of a refused request is read and dropped before the socket closes.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;
/// Request body limit on the REST port (the original's JSON body limit).
const REST_MAX_BODY: usize = 100 * 1024;

pub async fn serve(
    shard: Rc<Shard>,
    listener: TcpListener,
    port: Port,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    loop {
        match listener.accept().await {
            Ok(tcp) => {
                glommio::spawn_local(connection(shard.clone(), tcp, port, tls.clone())).detach();
            }
            Err(e) => {
                tracing::warn!("shard {}: accept on {port:?} failed: {e}", shard.id);
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn with_timeout<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

async fn connection(
    shard: Rc<Shard>,
    tcp: TcpStream,
    port: Port,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let peer = tcp.peer_addr().ok().map(|a| a.ip());
    // Behind a trusted proxy the per-address limits apply to the forwarded client, per request.
    let proxied = peer.is_some_and(|ip| shard.config.trusted_proxies.contains(ip));
    let mut client_slot: Option<(std::net::IpAddr, crate::limits::Admitted)> = None;
    let _admitted = match shard.global.limits.admit(if proxied { None } else { peer }) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            crate::metrics::bump(|s| &s.connections_refused);
            if tls.is_none() {
                let resp = Response::text(503, refusal.message())
                    .with_header("Access-Control-Allow-Origin", "*");
                let mut tcp = tcp;
                // Read the request first (briefly), so the client gets the answer, not a reset.
                {
                    let mut reader = Reader::new(&mut tcp);
                    let _ = with_timeout(Duration::from_secs(2), reader.read_request(0)).await;
                }
                let _ = with_timeout(
                    Duration::from_secs(1),
                    write_response(&mut tcp, &resp, false),
                )
                .await;
            }
            return; // (with TLS, a plain answer would be noise: the socket is just closed)
        }
    };
    let _counted = Counted::new(port);
    let _ = tcp.set_nodelay(true);
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(cfg) => {
            let acceptor = futures_rustls::TlsAcceptor::from(cfg);
            match with_timeout(TLS_HANDSHAKE, acceptor.accept(tcp)).await {
                Some(Ok(s)) => Stream::Tls(Box::new(s)),
                _ => return,
            }
        }
    };
    let (r, w) = futures_lite::io::split(stream);
    let mut reader = Reader::new(r);
    let mut writer = Some(w);
    let max_body = match port {
        Port::Rest => REST_MAX_BODY,
        _ => shard.config.max_payload + 1024,
    };
    let routes = Routes::of(port);
    loop {
        let req = match with_timeout(IDLE, reader.read_request(max_body)).await {
            Some(Ok(req)) => req,
            Some(Err(ReadError::Bad(status, msg))) => {
                if let Some(w) = writer.as_mut() {
                    let resp =
                        Response::text(status, msg).with_header("Access-Control-Allow-Origin", "*");
                    let _ = write_response(w, &resp, false).await;
                    let _ = w.close().await;
                }
                // Lingering close (RFC 9112 §9.6): the client may still be sending the body
                // that was refused; closing with it unread would make the kernel answer with a
                // reset that can destroy the response. Read and drop it for a moment, bounded.
                let _ = with_timeout(LINGER, reader.discard(LINGER_BYTES)).await;
                break;
            }
            Some(Err(ReadError::Closed)) | None => break,
        };
        let mut req = req;
        req.peer = peer;
        if let (true, Some(direct)) = (proxied, peer) {
            let client = shard.config.trusted_proxies.client(direct, &req.headers);
            req.peer = Some(client);
            if client_slot.as_ref().is_none_or(|(ip, _)| *ip != client) {
                drop(client_slot.take()); // the previous client of this proxy connection
                match shard.global.limits.admit_address(client) {
                    Ok(slot) => client_slot = Some((client, slot)),
                    Err(refusal) => {
                        crate::metrics::bump(|s| &s.connections_refused);
                        if let Some(w) = writer.as_mut() {
                            let resp = Response::text(503, refusal.message())
                                .with_header("Access-Control-Allow-Origin", "*");
                            let _ = write_response(w, &resp, false).await;
                        }
                        break;
                    }
                }
            }
        }
        let keep_alive = req.keep_alive && !shard.stopping.get();
        let head_only = req.method == "HEAD";
        // Shutting down: only polls of existing sessions are served (they collect their CLOSE).
        let refused = shard.stopping.get()
            && (req.query_param("sid").is_none() || req.is_websocket_upgrade());
        let mut resp = if refused {
            Response::text(503, "Server shutting down")
                .with_header("Access-Control-Allow-Origin", "*")
        } else {
            match routes.route(&req.path, req.is_websocket_upgrade()) {
                // (a single port reads bodies up to the Engine.IO limit; REST keeps its own)
                Route::Rest if req.body.len() > REST_MAX_BODY => {
                    Response::text(413, "Payload Too Large")
                        .with_header("Access-Control-Allow-Origin", "*")
                }
                Route::Rest => crate::rest::handle(&shard, &req).await,
                _ if req.method == "OPTIONS" => preflight(&req),
                Route::Spectators => {
                    if let Some(w) = writer.take() {
                        crate::spectator::run(&shard, &req, &mut reader, w).await;
                    }
                    return;
                }
                Route::Echo => {
                    if let Some(w) = writer.take() {
                        super::echo::run(&shard, &req, &mut reader, w).await;
                    }
                    return;
                }
                Route::EngineIo(kind) => {
                    match engineio::handle_request(&shard.eio, kind, req, &mut reader, &mut writer)
                        .await
                    {
                        Some(resp) => resp,
                        None => return, // the WebSocket owned the connection and is done
                    }
                }
                Route::NotFound(text) => {
                    Response::text(404, text).with_header("Access-Control-Allow-Origin", "*")
                }
            }
        };
        if head_only {
            resp.body = bytes::Bytes::new();
        }
        let Some(w) = writer.as_mut() else {
            break;
        };
        if write_response(w, &resp, keep_alive).await.is_err() || !keep_alive {
            break;
        }
    }
    if let Some(mut w) = writer {
        let _ = w.close().await;
    }
}

/// CORS preflight answer (the `cors` middleware's defaults with origin `*`).
pub fn preflight(req: &Request) -> Response {
    let mut resp = Response {
        status: 204,
        headers: vec![
            ("Access-Control-Allow-Origin", "*".into()),
            (
                "Access-Control-Allow-Methods",
                "GET,HEAD,PUT,PATCH,POST,DELETE".into(),
            ),
        ],
        body: bytes::Bytes::new(),
    };
    if let Some(h) = req.header("access-control-request-headers") {
        resp.headers
            .push(("Access-Control-Allow-Headers", h.to_string()));
        resp.headers
            .push(("Vary", "Access-Control-Request-Headers".into()));
    }
    resp
}
