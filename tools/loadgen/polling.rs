//! The load generator's Engine.IO long-polling client (a browser that cannot upgrade): one
//! keep-alive HTTP/1.1 connection for the GET polls and one for the POSTs, as browsers use, so a
//! pending poll never holds up a packet the client sends. Knows Engine.IO payload framing, not
//! Socket.IO.

use std::net::SocketAddr;

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

/// Record separator between the packets of a payload.
const SEPARATOR: char = '\u{1e}';

/// One keep-alive HTTP connection.
struct Http {
    addr: SocketAddr,
    stream: TcpStream,
    buf: BytesMut,
}

impl Http {
    async fn connect(addr: SocketAddr) -> Result<Http, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(Http {
            addr,
            stream,
            buf: BytesMut::with_capacity(4096),
        })
    }

    /// Sends one request and reads its answer (status and body).
    async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        self.stream
            .write_all(format!("{head}{body}").as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head_len)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap_or(0);
                let length = resp
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if self.buf.len() >= head_len + length {
                    let _ = self.buf.split_to(head_len);
                    let body = self.buf.split_to(length);
                    return Ok((status, String::from_utf8_lossy(&body).into_owned()));
                }
            }
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// An Engine.IO session on the polling transport.
pub struct PollingClient {
    poll: Http,
    post: Http,
    path: String,
}

impl PollingClient {
    /// Handshakes; returns the client and the packets that came with the OPEN packet.
    pub async fn connect(addr: SocketAddr) -> Result<PollingClient, String> {
        let mut poll = Http::connect(addr).await?;
        let (status, body) = poll
            .request("GET", "/socket.io/?EIO=4&transport=polling", "")
            .await?;
        if status != 200 {
            return Err(format!("handshake answered {status}: {body}"));
        }
        let open = body.split(SEPARATOR).next().unwrap_or("");
        let sid = open
            .strip_prefix('0')
            .and_then(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .and_then(|v| v.get("sid").and_then(|s| s.as_str()).map(str::to_string))
            .ok_or_else(|| format!("no sid in the handshake: {body}"))?;
        let post = Http::connect(addr).await?;
        Ok(PollingClient {
            poll,
            post,
            path: format!("/socket.io/?EIO=4&transport=polling&sid={sid}"),
        })
    }

    /// Sends packets in one POST.
    pub async fn send(&mut self, packets: &[&str]) -> Result<(), String> {
        let body = packets.join(&SEPARATOR.to_string());
        let (status, answer) = self.post.request("POST", &self.path, &body).await?;
        if status != 200 {
            return Err(format!("POST answered {status}: {answer}"));
        }
        Ok(())
    }

    /// One long poll: the packets the server had or gets next.
    pub async fn poll(&mut self) -> Result<Vec<String>, String> {
        let (status, body) = self.poll.request("GET", &self.path, "").await?;
        if status != 200 {
            return Err(format!("poll answered {status}: {body}"));
        }
        Ok(body.split(SEPARATOR).map(str::to_string).collect())
    }
}
