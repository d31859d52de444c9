//! HTTP/1.1 on one connection: reads requests with httparse (bounded header and body sizes) and
//! writes responses. Knows nothing about Engine.IO or REST routes; those live in `engineio.rs`
//! and `rest/`.

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Marks a chunked body in place of a length.
const CHUNKED: usize = usize::MAX;

/// Largest request head (request line plus headers).
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed request with its body fully read.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub keep_alive: bool,
    /// The client's address (set by the connection loop).
    pub peer: Option<std::net::IpAddr>,
    /// The connection's socket, plain or TLS (set by the connection loop): a WebSocket may send
    /// on it directly while its writer has nothing to write (`OutQueue::send_directly`).
    pub direct: Option<crate::outbound::DirectSocket>,
    /// The connection's TCP socket, plain or under TLS (set by the connection loop): only to
    /// ask the kernel how far the peer has read (`outbound::peer_progress`), never to write.
    pub tcp_socket: Option<std::os::fd::RawFd>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a query parameter, percent-decoded.
    pub fn query_all(&self, name: &str) -> Vec<String> {
        query_pairs(&self.query)
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v)
            .collect()
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn is_websocket_upgrade(&self) -> bool {
        self.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }
}

/// Why a request could not be read; the connection is answered (when possible) and closed.
#[derive(Debug)]
pub enum ReadError {
    /// Peer closed or the socket failed: nothing to answer.
    Closed,
    /// Malformed or oversized: answer with this status and message, then close.
    Bad(u16, &'static str),
}

thread_local! {
    /// Every connection of a thread reads through this buffer (see `Reader::fill`).
    static READ_SCRATCH: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
}

/// The read side of a connection with its carry-over buffer (bytes read past one request stay
/// here for the next request or for the WebSocket that follows an upgrade).
pub struct Reader<R> {
    pub io: R,
    pub buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R) -> Self {
        Reader {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Reads more bytes into `buf`; `Ok(0)` means the peer closed. The read goes through one
    /// buffer per thread and only what arrived is copied into `buf`, so a connection that waits
    /// holds no read buffer: an idle connection's `buf` is empty (its storage given back once
    /// everything in it was consumed).
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        let (io, buf) = (&mut self.io, &mut self.buf);
        std::future::poll_fn(|cx| {
            READ_SCRATCH.with(|scratch| {
                // Borrowed only inside this poll: a read never waits while holding it.
                let mut scratch = scratch.borrow_mut();
                match std::pin::Pin::new(&mut *io).poll_read(cx, &mut scratch[..]) {
                    std::task::Poll::Ready(Ok(n)) => {
                        buf.extend_from_slice(&scratch[..n]);
                        std::task::Poll::Ready(Ok(n))
                    }
                    other => other,
                }
            })
        })
        .await
    }

    /// Reads and drops what the peer still sends, up to `max` bytes or its end (a lingering
    /// close: see `server`).
    pub async fn discard(&mut self, max: usize) {
        let mut seen = 0;
        loop {
            self.buf.clear();
            match self.fill().await {
                Ok(n) if n > 0 && seen + n <= max => seen += n,
                _ => return,
            }
        }
    }

    /// Reads one request. `max_body` bounds the body (413 beyond it).
    pub async fn read_request(&mut self, max_body: usize) -> Result<Request, ReadError> {
        loop {
            if let Some(req) = self.try_parse(max_body)? {
                let (mut req, body_len) = req;
                if body_len == CHUNKED {
                    req.body = self.read_chunked(max_body).await?;
                    return Ok(req);
                }
                while self.buf.len() < body_len {
                    match self.fill().await {
                        Ok(0) | Err(_) => return Err(ReadError::Closed),
                        Ok(_) => {}
                    }
                }
                req.body = self.buf.split_to(body_len).freeze();
                return Ok(req);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(ReadError::Bad(431, "Request header fields too large"));
            }
            match self.fill().await {
                Ok(0) | Err(_) => return Err(ReadError::Closed),
                Ok(_) => {}
            }
        }
    }

    /// Reads a `Transfer-Encoding: chunked` body (trailers are read and dropped).
    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, ReadError> {
        let mut body = BytesMut::new();
        loop {
            let (skip, size) = loop {
                match httparse::parse_chunk_size(&self.buf) {
                    Ok(httparse::Status::Complete((skip, size))) => break (skip, size),
                    Ok(httparse::Status::Partial) if self.buf.len() < 1024 => {
                        match self.fill().await {
                            Ok(0) | Err(_) => return Err(ReadError::Closed),
                            Ok(_) => {}
                        }
                    }
                    _ => return Err(ReadError::Bad(400, "Malformed chunked body")),
                }
            };
            let size = usize::try_from(size).unwrap_or(usize::MAX);
            if size > max_body.saturating_sub(body.len()) {
                return Err(ReadError::Bad(413, "Payload too large"));
            }
            self.buf.advance(skip);
            if size == 0 {
                // Trailer section: lines until an empty one.
                loop {
                    if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        let empty = pos == 0;
                        self.buf.advance(pos + 2);
                        if empty {
                            return Ok(body.freeze());
                        }
                    } else if self.buf.len() > MAX_HEAD {
                        return Err(ReadError::Bad(431, "Trailers too large"));
                    } else {
                        match self.fill().await {
                            Ok(0) | Err(_) => return Err(ReadError::Closed),
                            Ok(_) => {}
                        }
                    }
                }
            }
            while self.buf.len() < size + 2 {
                match self.fill().await {
                    Ok(0) | Err(_) => return Err(ReadError::Closed),
                    Ok(_) => {}
                }
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadError::Bad(400, "Malformed chunked body"));
            }
            self.buf.advance(size + 2);
        }
    }

    fn try_parse(&mut self, max_body: usize) -> Result<Option<(Request, usize)>, ReadError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let head_len = match parsed.parse(&self.buf) {
            // (a read may bring more than MAX_HEAD at once: the head itself is measured)
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
                return Err(ReadError::Bad(431, "Request header fields too large"));
            }
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Bad(431, "Too many headers"));
            }
            Err(_) => return Err(ReadError::Bad(400, "Malformed HTTP request")),
        };
        let method = parsed.method.unwrap_or("GET").to_string();
        let target = parsed.path.unwrap_or("/");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.to_string(), String::new()),
        };
        let version = parsed.version.unwrap_or(1);
        let mut header_list = Vec::with_capacity(parsed.headers.len());
        for h in parsed.headers.iter() {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            header_list.push((h.name.to_ascii_lowercase(), value));
        }
        let find = |name: &str| {
            header_list
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let body_len = body_length(&header_list)?;
        if body_len > max_body && body_len != CHUNKED {
            return Err(ReadError::Bad(413, "Payload too large"));
        }
        let connection = find("connection").map(|v| v.to_ascii_lowercase());
        let keep_alive = match connection.as_deref() {
            Some(c) if c.contains("close") => false,
            Some(c) if c.contains("keep-alive") => true,
            _ => version >= 1,
        };
        self.buf.advance(head_len);
        Ok(Some((
            Request {
                method,
                path,
                query,
                headers: header_list,
                body: Bytes::new(),
                keep_alive,
                peer: None,
                direct: None,
                tcp_socket: None,
            },
            body_len,
        )))
    }
}

/// The body framing of a request, strictly as RFC 9112 §6 asks of a server that may sit behind a
/// proxy: `Transfer-Encoding` only as a single `chunked`, never together with `Content-Length`;
/// `Content-Length` only as digits, repeated only with the same value. Anything else is a `400`
/// and the connection closes (request smuggling lives in the differences between two parsers).
fn body_length(headers: &[(String, String)]) -> Result<usize, ReadError> {
    let all = |name: &'static str| -> Vec<&String> {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v)
            .collect()
    };
    let te = all("transfer-encoding");
    let cl = all("content-length");
    match (te.as_slice(), cl.is_empty()) {
        ([], _) => {}
        ([one], true) if one.eq_ignore_ascii_case("chunked") => return Ok(CHUNKED),
        ([_], true) => return Err(ReadError::Bad(400, "Unsupported Transfer-Encoding")),
        ([_], false) => {
            return Err(ReadError::Bad(
                400,
                "Transfer-Encoding together with Content-Length",
            ));
        }
        _ => return Err(ReadError::Bad(400, "Repeated Transfer-Encoding")),
    }
    let mut length = None;
    for v in cl {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ReadError::Bad(400, "Bad Content-Length"));
        }
        let n = v
            .parse::<usize>()
            .map_err(|_| ReadError::Bad(400, "Bad Content-Length"))?;
        if length.is_some_and(|l| l != n) {
            return Err(ReadError::Bad(400, "Conflicting Content-Length"));
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// A response to be written.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "application/json; charset=utf-8", body)
    }

    pub fn text(status: u16, body: impl Into<Bytes>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Serialises status line, headers and body.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n".as_slice()
        } else {
            b"Connection: close\r\n\r\n".as_slice()
        });
        out.extend_from_slice(&self.body);
        out
    }
}

pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: &Response,
    keep_alive: bool,
) -> std::io::Result<()> {
    w.write_all(&resp.encode(keep_alive)).await?;
    w.flush().await
}

pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Splits a query string into percent-decoded pairs.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// Decodes `%XX` escapes and `+` (as a space); invalid escapes are kept literally.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("abc%"), "abc%");
        assert_eq!(percent_decode("abc%4"), "abc%4");
        assert_eq!(percent_decode("%41"), "A");
    }

    #[test]
    fn parses_request_with_body() {
        let raw = b"POST /x?a=1&b=%41 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n40rest";
        let mut r = Reader::new(futures_lite::io::Cursor::new(raw.to_vec()));
        let req = futures_lite::future::block_on(r.read_request(100)).expect("request");
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/x");
        assert_eq!(req.query_param("b").as_deref(), Some("A"));
        assert_eq!(&req.body[..], b"40");
        assert!(req.keep_alive);
        assert_eq!(&r.buf[..], b"rest");
    }

    #[test]
    fn reads_chunked_body() {
        let raw = b"PUT /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\nNEXT";
        let mut r = Reader::new(futures_lite::io::Cursor::new(raw.to_vec()));
        let req = futures_lite::future::block_on(r.read_request(100)).expect("request");
        assert_eq!(&req.body[..], b"abcde");
        assert_eq!(&r.buf[..], b"NEXT");
        let raw = b"PUT /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n";
        let mut r = Reader::new(futures_lite::io::Cursor::new(raw.to_vec()));
        let err = futures_lite::future::block_on(r.read_request(100));
        assert!(matches!(err, Err(ReadError::Bad(413, _))));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        let bad = [
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: +5",
            "Content-Length: 5, 5",
            "Content-Length: -1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: identity",
        ];
        for head in bad {
            let raw = format!("POST / HTTP/1.1\r\n{head}\r\n\r\n0\r\n\r\n");
            let mut r = Reader::new(futures_lite::io::Cursor::new(raw.into_bytes()));
            let err = futures_lite::future::block_on(r.read_request(100));
            assert!(matches!(err, Err(ReadError::Bad(400, _))), "{head}");
        }
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        let mut r = Reader::new(futures_lite::io::Cursor::new(raw.to_vec()));
        let req = futures_lite::future::block_on(r.read_request(100)).expect("same value twice");
        assert_eq!(&req.body[..], b"ok");
    }

    #[test]
    fn rejects_oversized_body() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 200\r\n\r\n";
        let mut r = Reader::new(futures_lite::io::Cursor::new(raw.to_vec()));
        let err = futures_lite::future::block_on(r.read_request(100));
        assert!(matches!(err, Err(ReadError::Bad(413, _))));
    }
}
