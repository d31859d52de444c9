//! HTTP event streams: `GET /matches/{code}/stream` on the REST port, as Server-Sent Events
//! (`viewer-streams.md` §3). This file owns the stream connections of its shard: it asks the
//! match's owner where the stream starts (`MatchMsg::StreamJoin`, answered with
//! `ShardMsg::StreamStart`), subscribes the connection to the room (`fanout::subscribers`, which
//! then writes the owner's `snapshot`/`delta` events and the `end` to it), and keeps it alive with
//! comment lines. A slow reader is bounded like a slow spectator (latest state wins, byte budget,
//! then disconnected). Builds no event: they come encoded from the owner.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use serde_json::json;

use crate::fanout::subscribers::{self, StreamSink};
use crate::shard::Shard;
use crate::shard::messages::{MatchMsg, ShardMsg, StreamStart};
use crate::transport::http::{Reader, Request, Response, percent_decode, write_response};
use crate::transport::outbound::{CLOSE_GRACE, FrameKind, OutQueue, peer_progress, run_writer};

/// How long a stream waits for the match's owner to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes a stream client may send after its request (it has nothing to say) before it is closed.
const MAX_CLIENT_BYTES: usize = 64 * 1024;

struct Local {
    queue: Rc<OutQueue>,
    /// Told the room's code once the owner answered (`None`: no such match).
    started: Option<flume::Sender<Option<String>>>,
}

/// The HTTP event streams of one shard.
#[derive(Default)]
pub struct Streams {
    next: u64,
    conns: HashMap<u64, Local>,
}

fn streams(shard: &Shard) -> Rc<std::cell::RefCell<Streams>> {
    shard.state()
}

/// The group code of a stream request path (`/matches/{code}/stream`).
pub fn stream_code(path: &str) -> Option<&str> {
    path.strip_prefix("/matches/")?.strip_suffix("/stream")
}

/// Serves one event stream until the match ends, the client goes or the server stops it.
pub async fn run<R, W>(shard: &Rc<Shard>, req: &Request, reader: &mut Reader<R>, mut writer: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let code = stream_code(&req.path)
        .map(percent_decode)
        .map(|c| c.trim().to_uppercase())
        .unwrap_or_default();
    if !crate::code::valid_group_code(&code) {
        let resp = error(400, crate::code::INVALID_GROUP_CODE);
        let _ = write_response(&mut writer, &resp, false).await;
        return;
    }
    let last_seq = req
        .header("last-event-id")
        .map(str::to_string)
        .or_else(|| req.query_param("lastEventId"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    let queue = OutQueue::new();
    let (tx, rx) = flume::bounded(1);
    let conn = {
        let cell = streams(shard);
        let mut s = cell.borrow_mut();
        s.next += 1;
        let id = s.next;
        s.conns.insert(
            id,
            Local {
                queue: queue.clone(),
                started: Some(tx),
            },
        );
        id
    };
    shard.send_to(
        shard.owner_of(&code),
        ShardMsg::Match(MatchMsg::StreamJoin {
            code,
            shard: shard.id,
            conn,
            last_seq,
            node: crate::cluster::node_id(shard),
            via_public: false,
        }),
    );
    let started = futures_lite::future::or(async { rx.recv_async().await.ok().flatten() }, async {
        glommio::timer::sleep(START_TIMEOUT).await;
        None
    })
    .await;
    let Some(room) = started else {
        streams(shard).borrow_mut().conns.remove(&conn);
        let resp = error(404, crate::code::NO_LIVE_MATCH);
        let _ = write_response(&mut writer, &resp, false).await;
        return;
    };
    crate::metrics::gauge(|s| &s.streams, 1);
    let head = "HTTP/1.1 200 OK\r\n\
        Content-Type: text/event-stream; charset=utf-8\r\n\
        Cache-Control: no-cache\r\n\
        Access-Control-Allow-Origin: *\r\n\
        X-Accel-Buffering: no\r\n\
        Connection: close\r\n\r\n\
        retry: 2000\n\n";
    if writer.write_all(head.as_bytes()).await.is_ok() && writer.flush().await.is_ok() {
        let mut writer_task = glommio::spawn_local(run_writer(queue.clone(), writer));
        serve(shard, reader, &queue, req.tcp_socket).await;
        // What is queued (the `end` of a finished match) goes out, unless the peer takes no more.
        queue.close_with(None);
        let finished = futures_lite::future::or(
            async {
                (&mut writer_task).await;
                true
            },
            async {
                glommio::timer::sleep(CLOSE_GRACE).await;
                false
            },
        )
        .await;
        if !finished {
            queue.mark_dead();
            writer_task.await;
        }
    }
    queue.mark_dead();
    crate::metrics::gauge(|s| &s.streams, -1);
    streams(shard).borrow_mut().conns.remove(&conn);
    subscribers::of(shard)
        .borrow_mut()
        .remove_stream(&room, conn);
    shard.send_to(
        shard.owner_of(&room),
        ShardMsg::Match(MatchMsg::StreamLeave { code: room }),
    );
}

/// Keeps a started stream: heartbeats while idle, until the peer goes, the queue stops or the
/// peer has read nothing for ping interval + ping timeout — a stream that stopped reading is
/// closed like a spectator that stopped answering pings. An event stream's client never sends,
/// so "read nothing" is asked of the kernel (`peer_progress`: bytes held for the peer while
/// its acknowledged count stands still) and of the queue (frames waiting on a blocked writer).
async fn serve<R: AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    reader: &mut Reader<R>,
    queue: &OutQueue,
    socket: Option<std::os::fd::RawFd>,
) {
    let heartbeat = shard.config.stream_heartbeat;
    let stall_limit = shard.config.ping_interval + shard.config.ping_timeout;
    // Checked at least four times within the limit, whatever the heartbeat.
    let tick = heartbeat
        .min(stall_limit / 4)
        .max(Duration::from_millis(10));
    let mut last_beat = std::time::Instant::now();
    // The peer's acknowledged bytes when they last moved (or nothing was held for it).
    let mut progress = (0u64, std::time::Instant::now());
    let mut received = 0usize;
    loop {
        enum Step {
            Read(std::io::Result<usize>),
            Beat,
            Stopped,
        }
        let step = futures_lite::future::or(
            async { Step::Read(reader.fill().await) },
            futures_lite::future::or(
                async {
                    glommio::timer::sleep(tick).await;
                    Step::Beat
                },
                async {
                    queue.stopped().await;
                    Step::Stopped
                },
            ),
        )
        .await;
        match step {
            Step::Read(Ok(n)) if n > 0 => {
                received += n;
                reader.buf.clear();
                if received > MAX_CLIENT_BYTES {
                    return;
                }
            }
            Step::Read(_) | Step::Stopped => return,
            Step::Beat => {
                if queue.is_finished() {
                    return;
                }
                let now = std::time::Instant::now();
                match socket.and_then(peer_progress) {
                    Some(p) if p.held > 0 && p.acked == progress.0 => {}
                    Some(p) => progress = (p.acked, now),
                    None => progress.1 = now,
                }
                if now.duration_since(progress.1) >= stall_limit
                    || queue.stalled_for() >= stall_limit
                {
                    tracing::info!("stream: closed, the client read nothing for {stall_limit:?}");
                    queue.mark_dead();
                    return;
                }
                if last_beat.elapsed() >= heartbeat {
                    last_beat = std::time::Instant::now();
                    queue.push(Bytes::from_static(b": keep-alive\n\n"), FrameKind::Normal);
                }
            }
        }
    }
}

fn error(status: u16, message: &str) -> Response {
    Response::json(status, json!({ "error": message }).to_string())
        .with_header("Access-Control-Allow-Origin", "*")
}

/// The owner answered a stream of this shard: it subscribes to the room and gets its first
/// events, before any later frame of the room can arrive (both come through this shard's inbox,
/// in order, or at once when the owner is this shard).
pub fn on_start(shard: &Rc<Shard>, conn: u64, start: Option<StreamStart>) {
    let local = {
        let cell = streams(shard);
        let mut s = cell.borrow_mut();
        s.conns
            .get_mut(&conn)
            .and_then(|l| l.started.take().map(|tx| (l.queue.clone(), tx)))
    };
    let Some((queue, tx)) = local else {
        // The stream went away meanwhile: the room must not count it. Through the inbox (the
        // owner may be this shard, its registry borrowed right now).
        if let Some(st) = start {
            shard.mesh.send(
                shard.owner_of(&st.code),
                ShardMsg::Match(MatchMsg::StreamLeave { code: st.code }),
            );
        }
        return;
    };
    let Some(st) = start else {
        let _ = tx.try_send(None);
        return;
    };
    subscribers::of(shard).borrow_mut().add_stream(
        &st.code,
        conn,
        StreamSink {
            queue: queue.clone(),
            seq: std::cell::Cell::new(st.seq),
        },
    );
    let kind = if st.resumed {
        FrameKind::Normal
    } else {
        FrameKind::Snapshot
    };
    for event in st.events {
        queue.push(event, kind);
    }
    let _ = tx.try_send(Some(st.code));
}
