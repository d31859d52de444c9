//! A WebSocket echo on the production frame path (handshake, `MessageReader`, deflate with the
//! caller's compressor, `OutQueue` writer): what the Autobahn TestSuite talks to in the
//! conformance example.

use std::cell::RefCell;

use futures_lite::io::{AsyncRead, AsyncWrite};

use crate::http::{Reader, Request, write_response};
use crate::outbound::{FrameKind, OutQueue, run_writer};
use crate::websocket::{self, Incoming, MessageReader, close_code};

/// Largest message the echo accepts: Autobahn's biggest cases (9.x) send 16 MiB.
pub const ECHO_MAX_MESSAGE: usize = 16 * 1024 * 1024 + 64 * 1024;

/// Runs one echo connection until it closes.
pub async fn run<R, W>(
    compressor: &RefCell<flate2::Compress>,
    req: &Request,
    reader: &mut Reader<R>,
    mut writer: W,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let (resp, neg) = match websocket::accept(req) {
        Ok(v) => v,
        Err(msg) => {
            let resp = crate::http::Response::text(400, msg);
            let _ = write_response(&mut writer, &resp, false).await;
            return;
        }
    };
    if write_response(&mut writer, &resp, true).await.is_err() {
        return;
    }
    let queue = OutQueue::with_budget(4 * ECHO_MAX_MESSAGE);
    let writer_task = glommio::spawn_local(run_writer(queue.clone(), writer));
    let mut messages = MessageReader::new(neg, ECHO_MAX_MESSAGE);
    loop {
        match messages.next(&mut reader.buf) {
            Ok(Some(Incoming::Text(t))) => {
                let frame = if neg.deflate {
                    websocket::compressed_text_frame(&mut compressor.borrow_mut(), t.as_bytes())
                } else {
                    websocket::text_frame(t.as_bytes())
                };
                queue.push(frame, FrameKind::Normal);
            }
            Ok(Some(Incoming::Binary(b))) => {
                let frame = if neg.deflate {
                    websocket::compressed_binary_frame(&mut compressor.borrow_mut(), &b)
                } else {
                    websocket::binary_frame(&b)
                };
                queue.push(frame, FrameKind::Normal);
            }
            Ok(Some(Incoming::Ping(p))) => {
                queue.push(websocket::pong_frame(&p), FrameKind::Normal);
            }
            Ok(Some(Incoming::Pong)) => {}
            Ok(Some(Incoming::Close(code))) => {
                let code = code.unwrap_or(close_code::NORMAL);
                queue.close_with(Some(websocket::close_frame(code, "")));
                break;
            }
            Ok(None) => match reader.fill().await {
                Ok(0) | Err(_) => {
                    queue.mark_dead();
                    break;
                }
                Ok(_) => {}
            },
            Err(e) => {
                queue.close_with(Some(websocket::close_frame(e.code, e.reason)));
                break;
            }
        }
    }
    writer_task.await;
}
