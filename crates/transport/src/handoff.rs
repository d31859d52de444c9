//! A TLS connection from its first byte on: rustls makes the handshake (certificate, session
//! resumption, tickets) over `HandshakeIo`, which hands it whole records only, so that when the
//! handshake is done nothing the client sent is half inside rustls. A TLS 1.3 connection is then
//! handed off (`Sealed`): rustls's secrets become two AEAD keys (`records`), the rustls connection
//! and its buffers are dropped, and what is in transit is held only while it is (an idle
//! connection keeps its keys and nothing else). A TLS 1.2 connection stays with rustls.
//!
//! Owns: the hand-off and the reads and writes of a handed-off connection (a record still
//! arriving, what the socket did not take). Must not touch: HTTP or WebSocket (the layers above),
//! certificates or ticket keys (`tls`, `tickets`), the record format (`records`).

use std::cell::RefCell;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::HandshakeKind;

use crate::records::{HEADER, MAX_PLAIN, OVERHEAD, Records};
use crate::stream::Stream;

/// Largest record a client may send during the handshake (TLS 1.2's ciphertext bound).
const MAX_HANDSHAKE_RECORD: usize = MAX_PLAIN + 2048;
/// Plaintext sealed per write call (four records).
const MAX_WRITE: usize = 4 * MAX_PLAIN;

thread_local! {
    /// Records are sealed here and sent from here; only what the socket does not take is
    /// copied into the connection (one buffer per thread, as for reads).
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A vectored write's slices, gathered to be sealed as one.
    static GATHERED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Makes the TLS handshake on `tcp`; a TLS 1.3 connection is handed off when the config allows
/// secret extraction (`tls::server_config` does). Returns the stream and how the handshake went.
pub async fn accept(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> io::Result<(Stream, Option<HandshakeKind>)> {
    let handoff = config.enable_secret_extraction;
    let mut tls = futures_rustls::TlsAcceptor::from(config)
        .accept(HandshakeIo::new(tcp))
        .await?;
    let conn = tls.get_ref().1;
    let kind = conn.handshake_kind();
    let limit = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.tls13())
        .map(|s| s.common.confidentiality_limit);
    let Some(limit) = limit.filter(|_| handoff) else {
        tls.get_mut().0.whole = false;
        return Ok((Stream::Tls(Box::new(tls)), kind));
    };
    let (io, mut conn) = tls.into_inner();
    // What rustls already opened (a client's first request may come right behind its Finished).
    let state = conn.process_new_packets().map_err(io::Error::other)?;
    let mut plain = Vec::new();
    match conn.reader().read_to_end(&mut plain) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let secrets = conn.dangerous_extract_secrets().map_err(io::Error::other)?;
    let records = Records::new(&secrets, limit).map_err(io::Error::other)?;
    let HandshakeIo { tcp, buf, at, .. } = io;
    let incoming = if at < buf.len() {
        buf[at..].to_vec()
    } else {
        Vec::new()
    };
    Ok((
        Stream::Sealed(Box::new(Sealed {
            tcp,
            records,
            incoming,
            plain,
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            eof: state.peer_has_closed(),
            closing: false,
        })),
        kind,
    ))
}

/// The socket under rustls during the handshake: reads hand over one whole record at a time
/// (bytes of the next are kept here), so rustls never holds part of a record when the handshake
/// ends. After a TLS 1.2 handshake (`whole = false`) it passes reads through.
pub struct HandshakeIo {
    tcp: TcpStream,
    buf: Vec<u8>,
    /// Next byte of `buf` to hand over.
    at: usize,
    /// End of the record being handed over.
    record_end: usize,
    whole: bool,
}

impl HandshakeIo {
    fn new(tcp: TcpStream) -> Self {
        HandshakeIo {
            tcp,
            buf: Vec::new(),
            at: 0,
            record_end: 0,
            whole: true,
        }
    }
}

impl AsyncRead for HandshakeIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            let end = if this.whole {
                this.record_end
            } else {
                this.buf.len()
            };
            if this.at < end {
                let n = (end - this.at).min(out.len());
                out[..n].copy_from_slice(&this.buf[this.at..this.at + n]);
                this.at += n;
                if this.at == this.buf.len() {
                    this.buf = Vec::new();
                    this.at = 0;
                    this.record_end = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if !this.whole {
                return Pin::new(&mut this.tcp).poll_read(cx, out);
            }
            if let Some(len) = Records::record_len(&this.buf[this.at..]) {
                if len > HEADER + MAX_HANDSHAKE_RECORD {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a TLS record longer than TLS allows",
                    )));
                }
                if this.buf.len() - this.at >= len {
                    this.record_end = this.at + len;
                    continue;
                }
            }
            let mut chunk = [0u8; 4096];
            let n = ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut chunk))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            this.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl AsyncWrite for HandshakeIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_close(cx)
    }
}

/// A handed-off TLS 1.3 connection: its socket, its keys, and what is in transit.
pub struct Sealed {
    tcp: TcpStream,
    records: Records,
    /// The start of a record still arriving (empty while none is).
    incoming: Vec<u8>,
    /// Opened plaintext the reader has not taken yet, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Sealed records the socket has not taken yet, from `out_at`.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer sent close_notify.
    eof: bool,
    /// This side's close_notify is sealed.
    closing: bool,
}

impl Sealed {
    /// Sends `frame` from a broadcasting task: sealed in this thread's buffer, handed to `send`
    /// (a non-blocking send returning what the socket took), the rest kept for the writer.
    /// Only while nothing else waits to be sent, so the order stays the writer's. Returns the
    /// bytes of `frame` taken and whether sealed bytes wait for the writer's flush.
    pub fn send_now(&mut self, frame: &[u8], send: impl FnOnce(&[u8]) -> usize) -> (usize, bool) {
        if self.out_at < self.outgoing.len() || frame.is_empty() || self.closing {
            return (0, false);
        }
        SEALED.with(|sealed| {
            let mut sealed = sealed.borrow_mut();
            sealed.clear();
            if self.records.seal(frame, &mut sealed).is_err() {
                return (0, false); // the writer meets the same condition and ends the connection
            }
            let sent = send(&sealed).min(sealed.len());
            self.keep(&sealed[sent..]);
            (frame.len(), sent < sealed.len())
        })
    }

    fn keep(&mut self, rest: &[u8]) {
        if !rest.is_empty() {
            self.outgoing.extend_from_slice(rest);
        }
    }

    /// Sends what waits in `outgoing`; ready when it is all on the socket.
    fn flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_at += n;
        }
        if self.out_at > 0 || self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new(); // an idle connection keeps no buffer
            self.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Seals `plain` (at most `MAX_WRITE` of it) and sends what the socket takes now.
    fn write_plain(&mut self, cx: &mut Context<'_>, plain: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.flush_out(cx))?;
        if plain.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let take = plain.len().min(MAX_WRITE);
        SEALED.with(|sealed| {
            let mut sealed = sealed.borrow_mut();
            sealed.clear();
            self.records.seal(&plain[..take], &mut sealed)?;
            let sent = match Pin::new(&mut self.tcp).poll_write(cx, &sealed) {
                Poll::Ready(Ok(n)) => n.min(sealed.len()),
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => 0, // woken when it can take more; the flush sends the rest
            };
            self.keep(&sealed[sent..]);
            Ok(())
        })?;
        Poll::Ready(Ok(take))
    }

    fn read(&mut self, cx: &mut Context<'_>, out: &mut [u8]) -> Poll<io::Result<usize>> {
        loop {
            if self.plain_at < self.plain.len() {
                let n = (self.plain.len() - self.plain_at).min(out.len());
                out[..n].copy_from_slice(&self.plain[self.plain_at..self.plain_at + n]);
                self.plain_at += n;
                if self.plain_at == self.plain.len() {
                    self.plain = Vec::new();
                    self.plain_at = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if self.eof || out.is_empty() {
                return Poll::Ready(Ok(0));
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, out))?;
            if n == 0 {
                if self.incoming.is_empty() {
                    return Poll::Ready(Ok(0)); // closed without close_notify, between records
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed in the middle of a TLS record",
                )));
            }
            if self.incoming.is_empty() {
                // The usual case: whole records, opened where they were read.
                let opened = self.records.open(&mut out[..n]).map_err(record_error)?;
                self.eof = opened.closed;
                if !opened.closed && opened.consumed < n {
                    self.incoming = out[opened.consumed..n].to_vec();
                }
                if opened.plain > 0 {
                    return Poll::Ready(Ok(opened.plain));
                }
            } else {
                // A record begun in an earlier read: completed and opened here.
                self.incoming.extend_from_slice(&out[..n]);
                let opened = self
                    .records
                    .open(&mut self.incoming)
                    .map_err(record_error)?;
                self.eof = opened.closed;
                self.plain = self.incoming[..opened.plain].to_vec();
                if opened.closed {
                    self.incoming = Vec::new();
                } else {
                    self.incoming.drain(..opened.consumed);
                    if self.incoming.is_empty() {
                        self.incoming = Vec::new();
                    }
                }
            }
        }
    }
}

/// Counts a record the peer could not have sent correctly (the connection ends with it).
fn record_error(e: io::Error) -> io::Error {
    crate::stats::bump(|s| &s.tls_record_errors);
    e
}

impl AsyncRead for Sealed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().read(cx, buf)
    }
}

impl AsyncWrite for Sealed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_plain(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        GATHERED.with(|gathered| {
            let mut gathered = gathered.borrow_mut();
            gathered.clear();
            for buf in bufs {
                let room = MAX_WRITE - gathered.len();
                gathered.extend_from_slice(&buf[..buf.len().min(room)]);
                if gathered.len() == MAX_WRITE {
                    break;
                }
            }
            this.write_plain(cx, &gathered)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.closing = true;
            let mut notify = Vec::with_capacity(OVERHEAD + 2);
            if this.records.seal_close_notify(&mut notify).is_ok() {
                this.keep(&notify);
            }
        }
        ready!(this.flush_out(cx))?;
        Pin::new(&mut this.tcp).poll_close(cx)
    }
}
