//! The load generator's WebSocket client: the upgrade request (permessage-deflate offered like a
//! browser), masked client frames out, server frames in through the server's own
//! `MessageReader` (unmasked, inflated) — or, for connections that only count what they get,
//! by their headers alone (`next_frame`: payloads skipped, never inflated or parsed). Over plain
//! TCP or TLS (`Conn`). Knows nothing about Socket.IO.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use std::task::Poll;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;

use crate::tls::{ClientTls, Handshake, TlsStream};
use spectra::transport::handoff::Sealed;
use spectra::transport::websocket::{self, Incoming, MessageReader};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Largest server message accepted (a snapshot is about 15 KB).
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

pub struct Client {
    reader: ClientReader,
    writer: ClientWriter,
    /// The TLS handshake, when the connection is TLS.
    pub handshake: Option<Handshake>,
    /// The socket (for `reset`).
    fd: std::os::fd::RawFd,
}

/// A connection's byte stream: plain TCP or TLS.
pub enum Conn {
    Plain(TcpStream),
    /// TLS until the upgrade response is read (the handshake and the server's tickets).
    Tls(Box<TlsStream>),
    /// TLS 1.3 after that: records opened in place, many per read.
    Sealed(Box<Sealed>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Sealed(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Sealed(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Sealed(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => std::pin::Pin::new(s).poll_close(cx),
            Conn::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_close(cx),
            Conn::Sealed(s) => std::pin::Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// The reading half: whole server messages.
pub struct ClientReader {
    half: ReadHalf<Conn>,
    buf: BytesMut,
    messages: MessageReader,
    /// Payload bytes of the current frame still to skip (header-only reading).
    skip: usize,
    /// Wait this long before each read (counting connections: fewer, larger reads).
    pace: Option<Duration>,
    /// The last read filled the whole scratch buffer (or, over TLS, returned anything: a TLS
    /// read returns about one record at a time): more may be waiting, so the next read tries
    /// at once and waits for the pace only when nothing is there (a paced reader takes
    /// everything that arrived in a pace, however much that is, and never lets the server's
    /// queue grow).
    more: bool,
    tls: bool,
}

thread_local! {
    /// Every connection of a generator thread reads through this buffer (`ClientReader::fill`).
    static SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 64 * 1024].into_boxed_slice());
}

/// Largest data payload a header-only reader still reads (to see an Engine.IO ping, `2`).
const SMALL: usize = 16;

/// One server frame as a header-only reader sees it.
pub enum Frame {
    /// A data frame of `len` payload bytes (as sent: compressed or not); `small` is its payload
    /// when it is at most `SMALL` bytes and not compressed.
    Data { len: usize, small: Option<Vec<u8>> },
}

/// The writing half: masked client frames.
pub struct ClientWriter {
    half: WriteHalf<Conn>,
}

impl Client {
    /// Connects (over TLS with `tls`) and upgrades `path`; `deflate` offers permessage-deflate.
    pub async fn connect(
        addr: SocketAddr,
        path: &str,
        deflate: bool,
        tls: Option<&ClientTls>,
    ) -> Result<Client, String> {
        let started = std::time::Instant::now();
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
        let tls_used = tls.is_some();
        let (mut stream, handshake) = match tls {
            None => (Conn::Plain(tcp), None),
            Some(tls) => {
                let (s, h) = tls.handshake(tcp, started).await?;
                (Conn::Tls(Box::new(s)), Some(h))
            }
        };
        let ext = if deflate {
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("upgrade write: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("upgrade response too large".into());
            }
            let mut chunk = [0u8; 2048];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("upgrade read: {e}"))?;
            if n == 0 {
                return Err("closed during upgrade".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            let line = head.lines().next().unwrap_or("").to_string();
            return Err(format!("upgrade refused: {line}"));
        }
        let deflate = head.contains("permessage-deflate");
        // Spectra compresses each message alone; the original's `ws` keeps its window.
        let no_takeover = head.contains("server_no_context_takeover");
        let _ = buf.split_to(head_end);
        // The server's tickets came before its response: rustls has stored them, and the
        // connection's records are opened without it from here on.
        let stream = match stream {
            Conn::Tls(tls) => match spectra::transport::handoff::hand_off_client(*tls)
                .map_err(|e| format!("tls hand-off: {e}"))?
            {
                Ok(sealed) => Conn::Sealed(Box::new(sealed)),
                Err(tls) => Conn::Tls(Box::new(tls)),
            },
            plain => plain,
        };
        let (r, w) = futures_lite::io::split(stream);
        Ok(Client {
            reader: ClientReader {
                half: r,
                buf,
                messages: MessageReader::for_server_frames(deflate, no_takeover, MAX_MESSAGE),
                skip: 0,
                pace: None,
                more: false,
                tls: tls_used,
            },
            writer: ClientWriter { half: w },
            handshake,
            fd,
        })
    }

    /// Observer logon over Socket.IO: joins the main namespace, sends the `obs_logon` packet
    /// `logon` and returns the `obs_logon_ack` payload (`{type, value, reason}`), whatever its value.
    pub async fn obs_logon(&mut self, logon: &str) -> Result<serde_json::Value, String> {
        while let Some(msg) = self.next().await {
            let Incoming::Text(text) = msg else { continue };
            if text.starts_with('0') {
                self.send_text("40").await?;
            } else if text.starts_with("40") {
                self.send_text(logon).await?;
            } else if text == "2" {
                self.send_text("3").await?;
            } else if let Some(body) = text.strip_prefix("42")
                && let Some((name, Some(arg))) =
                    spectra::transport::packets::event_name_and_arg(body)
                && name == "obs_logon_ack"
            {
                return serde_json::from_str(&arg).map_err(|e| format!("bad logon ack: {e}"));
            }
        }
        Err("the connection closed before the logon ack".into())
    }

    /// Ends the connection with a reset (RST: linger 0), as a network failure would, not with a
    /// WebSocket or TLS close.
    pub fn reset(self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: `fd` is this client's open socket (closed when `self` drops, just after);
        // `linger` is a valid `struct linger` of the given size.
        unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(self);
    }

    /// Reads at most once per `pace` from now on (`None`: as data arrives).
    pub fn pace_reads(&mut self, pace: Option<Duration>) {
        self.reader.pace = pace;
    }

    pub fn split(self) -> (ClientReader, ClientWriter) {
        (self.reader, self.writer)
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.writer.send_text(text).await
    }

    /// The next text or binary message; pings are answered, `None` when the connection ends.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            match self.reader.next_any().await? {
                Incoming::Ping(p) => {
                    self.writer.pong(&p).await.ok()?;
                }
                Incoming::Pong => {}
                m => return Some(m),
            }
        }
    }

    /// The next data frame, read by its header only (pings are answered; `None` when the
    /// connection ends). For connections that count deliveries without inflating or parsing.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.reader.next_raw().await? {
                Raw::Data(frame) => return Some(frame),
                Raw::Ping(p) => {
                    self.writer.pong(&p).await.ok()?;
                }
                Raw::Other => {}
            }
        }
    }
}

enum Raw {
    Data(Frame),
    Ping(Vec<u8>),
    Other,
}

impl ClientWriter {
    async fn send(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), String> {
        let mask: [u8; 4] = rand::random();
        let frame = websocket::client_frame(opcode, payload, mask);
        self.half
            .write_all(&frame)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send(OpCode::Data(Data::Text), text.as_bytes()).await
    }

    /// Sends several text messages in one write (they reach the server together).
    pub async fn send_texts(&mut self, texts: &[String]) -> Result<(), String> {
        let mut frames = Vec::new();
        for text in texts {
            let mask: [u8; 4] = rand::random();
            frames.extend_from_slice(&websocket::client_frame(
                OpCode::Data(Data::Text),
                text.as_bytes(),
                mask,
            ));
        }
        self.half
            .write_all(&frames)
            .await
            .map_err(|e| format!("write: {e}"))
    }

    /// Answers a server ping.
    async fn pong(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send(OpCode::Control(Control::Pong), payload).await
    }
}

impl ClientReader {
    /// The next message of any kind (control frames included); `None` when the connection ends.
    pub async fn next_any(&mut self) -> Option<Incoming> {
        loop {
            match self.messages.next(&mut self.buf) {
                Ok(Some(Incoming::Close(_))) | Err(_) => return None,
                Ok(Some(m)) => return Some(m),
                Ok(None) => {
                    if !self.fill().await {
                        return None;
                    }
                }
            }
        }
    }

    /// Reads what arrived (through the thread's buffer: connections hold none while they
    /// wait); payload bytes still to skip are dropped there, the rest appended to `buf`. False
    /// when the connection ended.
    async fn fill(&mut self) -> bool {
        if let Some(pace) = self.pace {
            if self.more
                && let Some(got) = futures_lite::future::poll_once(self.read_once()).await
            {
                return got;
            }
            glommio::timer::sleep(pace).await;
        }
        self.read_once().await
    }

    /// One read of what arrived (waits for data).
    async fn read_once(&mut self) -> bool {
        let (half, buf, skip, more, tls) = (
            &mut self.half,
            &mut self.buf,
            &mut self.skip,
            &mut self.more,
            self.tls,
        );
        std::future::poll_fn(|cx| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                match std::pin::Pin::new(&mut *half).poll_read(cx, &mut scratch[..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(false),
                    Poll::Ready(Ok(n)) => {
                        *more = n == scratch.len() || tls;
                        // `skip` counts bytes after what `buf` holds.
                        let dropped = if buf.is_empty() { (*skip).min(n) } else { 0 };
                        *skip -= dropped;
                        buf.extend_from_slice(&scratch[dropped..n]);
                        Poll::Ready(true)
                    }
                    Poll::Pending => Poll::Pending,
                }
            })
        })
        .await
    }

    /// The next frame by its header: data payloads above `SMALL` bytes (or compressed) are
    /// skipped as they arrive, never buffered whole.
    async fn next_raw(&mut self) -> Option<Raw> {
        loop {
            while self.skip > 0 {
                if self.buf.is_empty() && !self.fill().await {
                    return None;
                }
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
            }
            let Some((head, len, opcode, compressed)) = frame_header(&self.buf) else {
                if !self.fill().await {
                    return None;
                }
                continue;
            };
            let whole = opcode >= 0x8 || (len <= SMALL && !compressed);
            if !whole {
                self.buf.advance(head);
                self.skip = len;
                return Some(Raw::Data(Frame::Data { len, small: None }));
            }
            while self.buf.len() < head + len {
                if !self.fill().await {
                    return None;
                }
            }
            let frame = self.buf.split_to(head + len);
            let payload = frame[head..].to_vec();
            return Some(match opcode {
                0x8 => return None,
                0x9 => Raw::Ping(payload),
                0xA => Raw::Other,
                _ => Raw::Data(Frame::Data {
                    len,
                    small: Some(payload),
                }),
            });
        }
    }
}

/// A server frame's header at the start of `buf`: its length, the payload length, the opcode
/// and whether RSV1 (compressed) is set; `None` until the whole header is there.
fn frame_header(buf: &[u8]) -> Option<(usize, usize, u8, bool)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let (head, len) = match b1 & 0x7f {
        126 => (4, u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize),
        127 => {
            let bytes: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (
                10,
                u64::from_be_bytes(bytes).min(usize::MAX as u64) as usize,
            )
        }
        n => (2, n as usize),
    };
    // Server frames are never masked.
    Some((head, len, b0 & 0x0f, b0 & 0x40 != 0))
}
