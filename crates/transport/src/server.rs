//! The HTTP/1.1 connection loop under any application: accept, the TLS handshake (bounded),
//! requests read with an idle limit, a malformed request answered and the connection closed with
//! a lingering close, `HEAD`, keep-alive, and a connection handed over for good (a WebSocket).
//! What a connection may do and what a request means is the `Site`'s.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rustls::HandshakeKind;

use crate::http::{ReadError, Reader, Request, Response, write_response};
use crate::outbound::DirectSocket;
use crate::stats;
use crate::stream::Stream;

/// How long a keep-alive connection may sit idle between requests, and the TLS handshake bound.
const IDLE: Duration = Duration::from_secs(120);
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
/// How long and how much of a refused request is read and dropped before the socket closes.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 4 << 20;

/// What one request came to.
pub enum Reply {
    /// Answer it; the connection stays open when the request and `keep_alive` allow.
    Respond {
        response: Response,
        keep_alive: bool,
    },
    /// The handler took the connection (a WebSocket) and is finished with it.
    Taken,
}

/// The application side of a listener.
pub trait Site: 'static {
    /// Held for as long as a connection is open (admission, counting).
    type Guard;

    /// A new connection from `peer`: admitted, or refused with an answer (written on plain
    /// connections after the request was read; a TLS connection is just closed).
    fn open(&self, peer: Option<IpAddr>) -> Result<Self::Guard, Response>;

    /// Largest request body accepted on this listener.
    fn max_body(&self) -> usize;

    /// One request (its `peer` is the connection's). Takes `writer` when it keeps the
    /// connection (then returns `Reply::Taken`).
    fn request<R, W>(
        &self,
        guard: &mut Self::Guard,
        req: Request,
        reader: &mut Reader<R>,
        writer: &mut Option<W>,
    ) -> impl std::future::Future<Output = Reply>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin + 'static;
}

/// Accepts connections until the task is dropped; each runs on its own task.
pub async fn serve<S: Site>(
    site: Rc<S>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    loop {
        match listener.accept().await {
            Ok(tcp) => {
                glommio::spawn_local(connection(site.clone(), tcp, tls.clone())).detach();
            }
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// `fut`, or `None` after `limit`.
pub async fn with_timeout<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

async fn connection<S: Site>(site: Rc<S>, tcp: TcpStream, tls: Option<Arc<rustls::ServerConfig>>) {
    let peer = tcp.peer_addr().ok().map(|a| a.ip());
    let mut guard = match site.open(peer) {
        Ok(guard) => guard,
        Err(resp) => {
            if tls.is_none() {
                let mut tcp = tcp;
                // Read the request first (briefly), so the client gets the answer, not a reset.
                {
                    let mut reader = Reader::new(&mut tcp);
                    let _ = with_timeout(Duration::from_secs(2), Box::pin(reader.read_request(0)))
                        .await;
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
    let _ = tcp.set_nodelay(true);
    let tcp_socket = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    let is_tls = tls.is_some();
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(cfg) => {
            // Boxed: the handshake's state (a whole rustls connection) would otherwise be part
            // of every connection's task for as long as the connection lives, plain or not.
            match with_timeout(TLS_HANDSHAKE, Box::pin(crate::handoff::accept(tcp, cfg))).await {
                Some(Ok((stream, kind))) => {
                    stats::bump(if kind == Some(HandshakeKind::Resumed) {
                        |s| &s.tls_resumed
                    } else {
                        |s| &s.tls_full
                    });
                    if matches!(stream, Stream::Sealed(_)) {
                        stats::bump(|s| &s.tls_handed_off);
                    }
                    stream
                }
                _ => {
                    stats::bump(|s| &s.tls_failed);
                    return;
                }
            }
        }
    };
    let (r, w) = crate::stream::split(stream);
    let direct = if is_tls {
        DirectSocket::Tls(tcp_socket, r.shared())
    } else {
        DirectSocket::Plain(tcp_socket)
    };
    let mut reader = Reader::new(r);
    let mut writer = Some(w);
    let max_body = site.max_body();
    loop {
        // Reading a request takes ~2 KB of future: boxed, so a connection that has moved on
        // (a WebSocket, for as long as it lives) does not keep that space in its task.
        let mut req = match with_timeout(IDLE, Box::pin(reader.read_request(max_body))).await {
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
        req.peer = peer;
        req.direct = Some(direct.clone());
        req.tcp_socket = Some(tcp_socket);
        let head_only = req.method == "HEAD";
        let wants_keep_alive = req.keep_alive;
        let (mut resp, keep_alive) = match site
            .request(&mut guard, req, &mut reader, &mut writer)
            .await
        {
            Reply::Taken => return,
            Reply::Respond {
                response,
                keep_alive,
            } => (response, keep_alive && wants_keep_alive),
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
