//! One accepted connection's byte stream: plain TCP, TLS 1.3 handed off after its handshake
//! (`handoff::Sealed`: its keys, no rustls connection) or TLS with rustls (1.2), behind one type
//! so the HTTP, Engine.IO and WebSocket layers never care which, and its two halves (`split`): one
//! executor thread owns the connection, so the halves share it without a lock, and a
//! broadcasting task may encrypt a frame into it between their polls (`outbound::DirectSocket`).
//! Owns nothing but the socket.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

pub enum Stream {
    Plain(TcpStream),
    Sealed(Box<crate::handoff::Sealed>),
    Tls(Box<futures_rustls::server::TlsStream<crate::handoff::HandshakeIo>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Sealed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Sealed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Sealed(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Sealed(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Sealed(s) => Pin::new(s.as_mut()).poll_close(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// Splits `stream` into a reading and a writing half sharing it (see the module comment).
pub fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    let shared = Rc::new(RefCell::new(stream));
    (ReadHalf(shared.clone()), WriteHalf(shared))
}

/// The reading half of a split `Stream`.
pub struct ReadHalf(Rc<RefCell<Stream>>);

/// The writing half of a split `Stream`.
pub struct WriteHalf(Rc<RefCell<Stream>>);

impl ReadHalf {
    /// The stream both halves share.
    pub fn shared(&self) -> Rc<RefCell<Stream>> {
        self.0.clone()
    }
}

/// A half polled while the stream is borrowed elsewhere (never: every borrow ends within a
/// poll on this thread) reports it instead of panicking.
fn busy() -> io::Error {
    io::Error::other("stream in use")
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.try_borrow_mut() {
            Ok(mut s) => Pin::new(&mut *s).poll_read(cx, buf),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.0.try_borrow_mut() {
            Ok(mut s) => Pin::new(&mut *s).poll_write(cx, buf),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.0.try_borrow_mut() {
            Ok(mut s) => Pin::new(&mut *s).poll_write_vectored(cx, bufs),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut s) => Pin::new(&mut *s).poll_flush(cx),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.try_borrow_mut() {
            Ok(mut s) => Pin::new(&mut *s).poll_close(cx),
            Err(_) => Poll::Ready(Err(busy())),
        }
    }
}
