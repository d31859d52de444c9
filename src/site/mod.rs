//! What Spectra's listeners serve: the `Site` of a shard's listener for the transport's
//! connection loop (`transport::server`) — who may connect (connection limits, trusted proxies,
//! counted per port), and which protocol serves a request (`routes`): Engine.IO/Socket.IO
//! sessions, spectators, REST. A connection that upgrades to a WebSocket
//! is handed over for good.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpListener;

pub mod routes;

use crate::shard::Shard;
use crate::transport::engineio;
use crate::transport::http::{Reader, Request, Response};
use crate::transport::server::{Reply, Site, preflight};
use routes::{Route, Routes};

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    Ingest,
    Broadcast,
    Rest,
    /// Single-port mode: ingest, overlays, spectators and REST on one listener.
    Single,
}

impl Port {
    /// The index of this port in `metrics::PORTS`.
    fn metrics_index(self) -> usize {
        match self {
            Port::Ingest => 0,
            Port::Rest => 1,
            Port::Broadcast => 2,
            Port::Single => 3,
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
            Port::Single => "single",
        })
    }
}

/// Request body limit on the REST port (the original's JSON body limit).
const REST_MAX_BODY: usize = 100 * 1024;

/// Serves one listener of this shard until the task is dropped.
pub async fn serve(
    shard: Rc<Shard>,
    listener: TcpListener,
    port: Port,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let site = Rc::new(SpectraSite {
        routes: Routes::of(port),
        shard,
        port,
    });
    crate::transport::server::serve(site, listener, tls).await;
}

/// What one listener of a shard serves (its `Routes`), and who may connect.
struct SpectraSite {
    shard: Rc<Shard>,
    port: Port,
    routes: Routes,
}

/// What a connection holds while it is open.
struct Guard {
    _admitted: crate::limits::Admitted,
    _counted: Counted,
    /// From a trusted proxy: the per-address limits apply to the forwarded client, per request.
    proxied: bool,
    /// The forwarded client this proxy connection serves now, and its admission.
    client: Option<(IpAddr, crate::limits::Admitted)>,
}

impl Site for SpectraSite {
    type Guard = Guard;

    fn open(&self, peer: Option<IpAddr>) -> Result<Guard, Response> {
        let shard = &self.shard;
        let proxied = peer.is_some_and(|ip| shard.config.trusted_proxies.contains(ip));
        match shard.global.limits.admit(if proxied { None } else { peer }) {
            Ok(admitted) => Ok(Guard {
                _admitted: admitted,
                _counted: Counted::new(self.port),
                proxied,
                client: None,
            }),
            Err(refusal) => {
                crate::metrics::bump(|s| &s.connections_refused);
                Err(Response::text(503, refusal.message())
                    .with_header("Access-Control-Allow-Origin", "*"))
            }
        }
    }

    fn max_body(&self) -> usize {
        match self.port {
            Port::Rest => REST_MAX_BODY,
            _ => self.shard.config.max_payload + 1024,
        }
    }

    async fn request<R, W>(
        &self,
        guard: &mut Guard,
        mut req: Request,
        reader: &mut Reader<R>,
        writer: &mut Option<W>,
    ) -> Reply
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + 'static,
    {
        let shard = &self.shard;
        if let (true, Some(direct)) = (guard.proxied, req.peer) {
            let client = shard.config.trusted_proxies.client(direct, &req.headers);
            req.peer = Some(client);
            if guard.client.as_ref().is_none_or(|(ip, _)| *ip != client) {
                drop(guard.client.take()); // the previous client of this proxy connection
                match shard.global.limits.admit_address(client) {
                    Ok(slot) => guard.client = Some((client, slot)),
                    Err(refusal) => {
                        crate::metrics::bump(|s| &s.connections_refused);
                        return Reply::Respond {
                            response: Response::text(503, refusal.message())
                                .with_header("Access-Control-Allow-Origin", "*"),
                            keep_alive: false,
                        };
                    }
                }
            }
        }
        let stopping = shard.stopping.get();
        // Shutting down: only polls of existing sessions are served (they collect their CLOSE).
        if stopping && (req.query_param("sid").is_none() || req.is_websocket_upgrade()) {
            return Reply::Respond {
                response: Response::text(503, "Server shutting down")
                    .with_header("Access-Control-Allow-Origin", "*"),
                keep_alive: false,
            };
        }
        let response = match self.routes.route(&req.path, req.is_websocket_upgrade()) {
            // (a single port reads bodies up to the Engine.IO limit; REST keeps its own)
            Route::Rest if req.body.len() > REST_MAX_BODY => {
                Response::text(413, "Payload Too Large")
                    .with_header("Access-Control-Allow-Origin", "*")
            }
            Route::Rest
                if req.method == "GET" && crate::viewer::sse::stream_code(&req.path).is_some() =>
            {
                if let Some(w) = writer.take() {
                    crate::viewer::sse::run(shard, &req, reader, w).await;
                }
                return Reply::Taken;
            }
            Route::Rest => crate::rest::handle(shard, &req).await,
            _ if req.method == "OPTIONS" => preflight(&req),
            Route::Spectators => {
                if let Some(w) = writer.take() {
                    crate::spectator::run(shard, req, reader, w).await;
                }
                return Reply::Taken;
            }
            Route::EngineIo(kind) => {
                match engineio::handle_request(&shard.eio, kind, req, reader, writer).await {
                    Some(resp) => resp,
                    None => return Reply::Taken, // the WebSocket owned the connection
                }
            }
            Route::NotFound(text) => {
                Response::text(404, text).with_header("Access-Control-Allow-Origin", "*")
            }
        };
        Reply::Respond {
            response,
            keep_alive: !stopping,
        }
    }
}
