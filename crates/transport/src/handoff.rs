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

use crate::records::{HEADER, MAX_CIPHER, MAX_PLAIN, OVERHEAD, Records};
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
    accept_with(tcp, config, crate::ktls::enabled()).await
}

/// `accept`, with the records given to the kernel (`kernel`) where it takes them.
async fn accept_with(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    kernel: bool,
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
    let (io, conn) = tls.into_inner();
    let sealed = hand_off(io, conn.into(), limit, kernel)?;
    Ok((Stream::Sealed(Box::new(sealed)), kind))
}

/// A client's TLS stream over `HandshakeIo` (`HandshakeIo::new`, then
/// `futures_rustls::TlsConnector::connect`).
pub type ClientTlsStream = futures_rustls::client::TlsStream<HandshakeIo>;

/// Hands a client's TLS 1.3 connection off (as `accept` does a server's) once the server's
/// post-handshake messages (its session tickets) have been read, e.g. after a first response:
/// a handshake message after the hand-off ends the connection. The config must allow secret
/// extraction (`ClientConfig::enable_secret_extraction`; without it, an error). Gives a TLS 1.2
/// stream back unchanged, reading through rustls as before.
pub fn hand_off_client(tls: ClientTlsStream) -> io::Result<Result<Sealed, ClientTlsStream>> {
    let limit = tls
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .and_then(|s| s.tls13())
        .map(|s| s.common.confidentiality_limit);
    let Some(limit) = limit else {
        let mut tls = tls;
        tls.get_mut().0.whole = false;
        return Ok(Err(tls));
    };
    let (io, conn) = tls.into_inner();
    hand_off(io, conn.into(), limit, false).map(Ok)
}

/// rustls's connection (its handshake done, over `io`, which kept whole records from it) into
/// a `Sealed` one: what rustls already opened is kept for the reader, then the keys are taken
/// (and given to the kernel, with `kernel`, where it takes them).
fn hand_off(
    io: HandshakeIo,
    mut conn: rustls::Connection,
    limit: u64,
    kernel: bool,
) -> io::Result<Sealed> {
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
    Ok(Sealed {
        tcp,
        records,
        incoming,
        plain,
        plain_at: 0,
        outgoing: Vec::new(),
        out_at: 0,
        eof: state.peer_has_closed(),
        closing: false,
        kernel_tx: false,
        kernel_rx: false,
    })
    .map(|mut sealed| {
        if kernel {
            sealed.hand_to_kernel();
        }
        sealed
    })
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
    /// Under a handshake on `tcp` (the server's `accept`, or a client's before `hand_off_client`).
    pub fn new(tcp: TcpStream) -> Self {
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
    /// The kernel seals what is sent (`ktls`): `outgoing` then holds plaintext.
    kernel_tx: bool,
    /// The kernel opens what is received (`ktls`): reads return plaintext.
    kernel_rx: bool,
}

impl Sealed {
    /// Sends `frame` from a broadcasting task: sealed in this thread's buffer, handed to `send`
    /// (a non-blocking send returning what the socket took), the rest kept for the writer.
    /// Only while nothing else waits to be sent, so the order stays the writer's. Returns the
    /// bytes of `frame` taken and whether sealed bytes wait for the writer's flush.
    pub fn send_now(&mut self, frame: &[u8], send: impl FnOnce(&[u8]) -> usize) -> (usize, bool) {
        if self.kernel_tx {
            if self.out_at < self.outgoing.len()
                || frame.is_empty()
                || self.closing
                || self.records.sealed_by_kernel(0).is_err()
            {
                return (0, false); // (the writer meets the limit and ends the connection)
            }
            return (frame.len(), self.send_sealed(frame, send));
        }
        SEALED.with(|sealed| {
            let mut sealed = sealed.borrow_mut();
            sealed.clear();
            if !self.seal_now(frame, &mut sealed) {
                return (0, false);
            }
            (frame.len(), self.send_sealed(&sealed, send))
        })
    }

    /// The first half of `send_now`, for many connections sealed before any is sent: appends
    /// `frame`'s records to `out`; false (nothing appended) when the frame must wait for the
    /// writer — something else waits to be sent, the connection is closing, or sealing failed
    /// (the writer then meets the same condition and ends the connection). Records appended here
    /// must be given to `send_sealed` before the executor runs again: they are this connection's
    /// next records.
    pub fn seal_now(&mut self, frame: &[u8], out: &mut Vec<u8>) -> bool {
        if self.kernel_tx || self.out_at < self.outgoing.len() || frame.is_empty() || self.closing {
            return false;
        }
        let start = out.len();
        if self.records.seal(frame, out).is_err() {
            out.truncate(start);
            return false;
        }
        true
    }

    /// The second half of `send_now`: `sealed` (records from `seal_now`, or with the kernel
    /// sealing, the frame itself) handed to `send`, or
    /// kept whole behind what already waits (an earlier frame of the same batch the socket did
    /// not take whole); what the socket does not take is kept for the writer. Whether sealed
    /// bytes wait for the writer's flush.
    pub fn send_sealed(&mut self, sealed: &[u8], send: impl FnOnce(&[u8]) -> usize) -> bool {
        if self.out_at < self.outgoing.len() {
            self.keep(sealed);
            return true;
        }
        let sent = send(sealed).min(sealed.len());
        if self.kernel_tx {
            let _ = self.records.sealed_by_kernel(sent); // the next write meets the limit
        }
        self.keep(&sealed[sent..]);
        sent < sealed.len()
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
            if self.kernel_tx {
                self.records.sealed_by_kernel(n)?;
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
        if self.kernel_tx {
            self.records.sealed_by_kernel(0)?;
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, plain))?;
            self.records.sealed_by_kernel(n)?;
            return Poll::Ready(Ok(n));
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
            if self.kernel_rx {
                return match ready!(Pin::new(&mut self.tcp).poll_read(cx, out)) {
                    // A record that is not application data: the peer's close_notify (or a
                    // key update, which ends the connection here as it does in user space).
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        self.eof = true;
                        Poll::Ready(Ok(0))
                    }
                    read => Poll::Ready(read),
                };
            }
            let carried = self.incoming.len();
            if Records::record_len(&self.incoming).is_some_and(|len| carried >= len) {
                // Whole records already here (read together with the end of the handshake):
                // opened before waiting for the socket, which may have nothing more to say.
                self.open_incoming()?;
                continue;
            }
            if carried > 0 && out.len() < carried + HEADER + MAX_CIPHER {
                // A record begun in an earlier read, and a buffer too small to carry it to:
                // completed and opened here.
                let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, out))?;
                if n == 0 {
                    return Poll::Ready(Err(eof_in_record()));
                }
                self.incoming.extend_from_slice(&out[..n]);
                self.open_incoming()?;
                continue;
            }
            // The usual case: whole records, opened where they were read — a record begun in
            // an earlier read is carried to the front of the buffer first (a reader taking many
            // records per read copies only the one it ended inside).
            out[..carried].copy_from_slice(&self.incoming);
            let n = ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut out[carried..]))?;
            if n == 0 {
                if carried == 0 {
                    return Poll::Ready(Ok(0)); // closed without close_notify, between records
                }
                return Poll::Ready(Err(eof_in_record()));
            }
            let total = carried + n;
            let opened = self.records.open(&mut out[..total]).map_err(record_error)?;
            self.eof = opened.closed;
            self.incoming = if !opened.closed && opened.consumed < total {
                out[opened.consumed..total].to_vec()
            } else {
                Vec::new()
            };
            if opened.plain > 0 {
                return Poll::Ready(Ok(opened.plain));
            }
        }
    }

    /// Gives the records to the kernel (`ktls`), each direction that it takes: sending always
    /// can, receiving once the records read with the handshake's end are opened here (a record
    /// begun in that read keeps receiving in user space). A connection the kernel refuses stays
    /// as it was.
    fn hand_to_kernel(&mut self) {
        use std::os::fd::AsRawFd;
        let fd = self.tcp.as_raw_fd();
        if crate::ktls::attach(fd).is_err() {
            return;
        }
        self.kernel_tx = crate::ktls::set_key(fd, true, &self.records.kernel_key(true)).is_ok();
        if Records::record_len(&self.incoming).is_some_and(|len| self.incoming.len() >= len) {
            let before = std::mem::take(&mut self.plain);
            let opened = self.open_incoming();
            let after = std::mem::replace(&mut self.plain, before);
            self.plain.extend_from_slice(&after);
            if opened.is_err() {
                return;
            }
        }
        if self.incoming.is_empty() && !self.eof {
            self.kernel_rx =
                crate::ktls::set_key(fd, false, &self.records.kernel_key(false)).is_ok();
        }
        if self.kernel_tx || self.kernel_rx {
            crate::stats::bump(|s| &s.tls_kernel);
        }
    }

    /// Whether the kernel seals what is sent and opens what is received (`ktls`).
    pub fn in_kernel(&self) -> (bool, bool) {
        (self.kernel_tx, self.kernel_rx)
    }

    /// Opens the whole records at the start of `incoming`: their plaintext for the reader, the
    /// start of a record still arriving kept.
    fn open_incoming(&mut self) -> io::Result<()> {
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
        Ok(())
    }
}

fn eof_in_record() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed in the middle of a TLS record",
    )
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
        if !this.closing && this.kernel_tx {
            ready!(this.flush_out(cx))?;
            this.closing = true;
            let _ = crate::ktls::send_close_notify(std::os::fd::AsRawFd::as_raw_fd(&this.tcp));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server sends after its first message: sizes around the record size and the
    /// carried-record boundary, many records per read on the client.
    fn messages() -> Vec<Vec<u8>> {
        [
            1usize, 100, 3_400, 16_383, 16_384, 16_385, 40_000, 7, 65_536, 3_400,
        ]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j % 251) as u8).collect())
        .collect()
    }

    /// Reads exactly `n` bytes, or panics naming `what` when they do not come within 5 s.
    async fn read_within<R: AsyncRead + Unpin>(r: &mut R, n: usize, what: &str) -> Vec<u8> {
        let mut buf = vec![0u8; n];
        let read = async {
            r.read_exact(&mut buf).await.expect("read");
        };
        let late = async {
            glommio::timer::sleep(std::time::Duration::from_secs(5)).await;
            panic!("{what}");
        };
        futures_lite::future::or(read, late).await;
        buf
    }

    /// With the hand-off to the kernel asked for: where the kernel has TLS (`tls::kernel_tls`)
    /// it seals what the server sends and opens what it receives, elsewhere the records stay in
    /// user space — either way a rustls client reads every message the server sends (through
    /// `write` and through `send_now`, as a broadcast does), the server reads what the client
    /// sends after them, the client's close_notify is the server's end of stream, and the
    /// server's close_notify the client's.
    #[test]
    fn kernel_tls_where_the_kernel_has_it() {
        use std::io::{Read, Write};
        let available = crate::tls::kernel_tls() == crate::tls::KernelTls::Available;
        let (server_config, client_config) =
            crate::records::tests::configs(None, &rustls::version::TLS13);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let sent: Vec<Vec<u8>> = messages();
        let expected: Vec<u8> = sent.concat();
        let reply: Vec<u8> = (0..50_000).map(|i| (i % 253) as u8).collect();
        let client_reply = reply.clone();
        let client = std::thread::spawn(move || {
            let mut tls = crate::records::tests::tls_client(addr, client_config);
            let mut got = vec![0u8; expected.len()];
            tls.read_exact(&mut got).expect("every message arrives");
            assert!(got == expected, "the messages arrive as sent");
            tls.write_all(&client_reply).expect("reply");
            tls.conn.send_close_notify();
            tls.flush().expect("close_notify");
            let mut rest = Vec::new();
            let end = tls.read_to_end(&mut rest);
            assert!(
                end.is_ok(),
                "the server's close_notify ends the stream: {end:?}"
            );
            assert!(rest.is_empty());
        });
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("listen");
                let tcp = listener.accept().await.expect("accept");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                let (stream, _) = accept_with(tcp, Arc::new(server_config), true)
                    .await
                    .expect("handshake");
                let Stream::Sealed(mut sealed) = stream else {
                    panic!("TLS 1.3 is handed off");
                };
                let (tx, rx) = sealed.in_kernel();
                assert_eq!(tx, available, "the kernel seals where it has TLS");
                if !available {
                    assert!(!rx);
                }
                for (i, m) in sent.iter().enumerate() {
                    if i % 2 == 0 {
                        sealed.write_all(m).await.expect("write");
                        sealed.flush().await.expect("flush");
                        continue;
                    }
                    // As a broadcast sends: at once, what the socket does not take left to
                    // the writer's flush.
                    let (taken, _) = sealed.send_now(m, |bytes| {
                        // SAFETY: `fd` is the connection's open socket; `bytes` is valid.
                        let n = unsafe {
                            libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT)
                        };
                        usize::try_from(n).unwrap_or(0)
                    });
                    if taken == 0 {
                        sealed.write_all(m).await.expect("write");
                    }
                    sealed.flush().await.expect("flush");
                }
                let mut got = Vec::new();
                sealed
                    .read_to_end(&mut got)
                    .await
                    .expect("the client's close_notify ends it");
                assert!(got == reply, "the client's bytes arrive as sent");
                sealed.close().await.expect("close");
                (tx, rx)
            })
            .expect("executor");
        let (tx, rx) = handle.join().expect("server");
        client.join().expect("client");
        eprintln!("kernel TLS available: {available}; kernel sealed: {tx}, opened: {rx}");
    }

    /// Both sides handed off, each with whole records left from the handshake's last read: the
    /// server gets the client's Finished and its first request in one write, the client gets
    /// the server's first answer as two records in one write (the second one whole behind the
    /// one rustls opened). Neither waits for the socket to say more before opening them. Then
    /// the client reads everything the server sends through `Sealed`, with large reads (records
    /// carried to the front of the next read) and small ones (completed apart); writes back
    /// through it; sees the server's close_notify as the end; and its next connection resumes
    /// the session with the tickets rustls kept before the hand-off.
    #[test]
    fn a_client_handed_off_reads_writes_and_resumes() {
        let (server_config, client_config) =
            crate::records::tests::configs(None, &rustls::version::TLS13);
        let mut client_config = (*client_config).clone();
        client_config.enable_secret_extraction = true;
        let client_config = Arc::new(client_config);
        let server_config = Arc::new(server_config);
        // The server's first answer: one whole record and 10 bytes in a second.
        let first: Vec<u8> = (0..MAX_PLAIN + 10).map(|i| (i % 253) as u8).collect();
        let first_server = first.clone();
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("listen");
                let addr = listener.local_addr().expect("addr");
                let server = glommio::spawn_local(async move {
                    for _ in 0..2 {
                        let tcp = listener.accept().await.expect("accept");
                        let (mut tls, _) = accept(tcp, server_config.clone()).await.expect("tls");
                        let hello = read_within(
                            &mut tls,
                            5,
                            "the server waited for more than the request sent with Finished",
                        )
                        .await;
                        assert_eq!(&hello, b"hello");
                        tls.write_all(&first_server).await.expect("first");
                        let ready = read_within(&mut tls, 5, "no ready").await;
                        assert_eq!(&ready, b"ready");
                        for m in messages() {
                            tls.write_all(&m).await.expect("message");
                            tls.flush().await.expect("flush");
                        }
                        let pong = read_within(&mut tls, 4, "no pong").await;
                        assert_eq!(&pong, b"pong");
                        tls.close().await.expect("close");
                    }
                });
                let mut kinds = Vec::new();
                for _ in 0..2 {
                    let tcp = glommio::net::TcpStream::connect(addr)
                        .await
                        .expect("connect");
                    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                    // Written before the handshake ends: it goes out with the client's Finished.
                    let mut tls = futures_rustls::TlsConnector::from(client_config.clone())
                        .connect_with(name, HandshakeIo::new(tcp), |conn| {
                            std::io::Write::write_all(&mut conn.writer(), b"hello")
                                .expect("early write");
                        })
                        .await
                        .expect("handshake");
                    kinds.push(tls.get_ref().1.handshake_kind());
                    let mut head = vec![0u8; MAX_PLAIN];
                    tls.read_exact(&mut head).await.expect("first record");
                    assert!(head == first[..MAX_PLAIN]);
                    let Ok(mut sealed) = hand_off_client(tls).expect("hand-off") else {
                        panic!("a TLS 1.3 client is handed off");
                    };
                    let tail = read_within(
                        &mut sealed,
                        10,
                        "the client waited for more than the whole record it had",
                    )
                    .await;
                    assert!(tail == first[MAX_PLAIN..]);
                    sealed.write_all(b"ready").await.expect("ready");
                    sealed.flush().await.expect("flush");
                    let expected: Vec<u8> = messages().concat();
                    let mut got = Vec::new();
                    let mut big = vec![0u8; 64 * 1024];
                    let mut small = [0u8; 100];
                    let mut turn = 0;
                    while got.len() < expected.len() {
                        turn += 1;
                        let buf: &mut [u8] = if turn % 4 == 0 { &mut small } else { &mut big };
                        let n = AsyncReadExt::read(&mut sealed, buf).await.expect("read");
                        assert!(
                            n > 0,
                            "ended after {} of {} bytes",
                            got.len(),
                            expected.len()
                        );
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert!(got == expected, "the bytes differ");
                    sealed.write_all(b"pong").await.expect("pong");
                    sealed.flush().await.expect("flush");
                    let mut rest = [0u8; 16];
                    let n = AsyncReadExt::read(&mut sealed, &mut rest)
                        .await
                        .expect("close_notify");
                    assert_eq!(n, 0, "close_notify ends the stream");
                }
                server.await;
                assert_eq!(
                    kinds,
                    vec![Some(HandshakeKind::Full), Some(HandshakeKind::Resumed)],
                    "the tickets read before the hand-off resume the next connection"
                );
            })
            .expect("executor");
        handle.join().expect("join");
    }
}
