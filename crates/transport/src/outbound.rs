//! The outbound queue of one WebSocket connection and the task that drains it into the socket.
//!
//! Frames are shared `Bytes` (a broadcast frame is built once and cloned by reference count).
//! A connection that falls behind never queues snapshots: a new snapshot replaces one that is
//! still waiting (latest wins). Other frames count against a byte budget; a connection over it is
//! closed as a slow consumer. Must not know about Engine.IO or matches.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_lite::io::{AsyncWrite, AsyncWriteExt};

/// Bytes a connection may have queued before it is closed as a slow consumer.
pub const BYTE_BUDGET: usize = 4 * 1024 * 1024;

/// One state for Engine.IO sessions, encoded once for every way a session can receive it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrameSet {
    /// The Engine.IO packet text (`42["event","…"]`), for long-polling payloads.
    pub packet: Bytes,
    /// The same packet as an uncompressed WebSocket text frame.
    pub ws_plain: Bytes,
    /// The same packet as a permessage-deflate frame (no context takeover).
    pub ws_deflate: Bytes,
}

impl FrameSet {
    /// A packet's frames: the plain frame shares the packet's buffer, the deflated frame is
    /// compressed into its own (one allocation each, no copy of the packet).
    pub fn of_packet(
        packet: crate::websocket::FrameBuf,
        compressor: &mut flate2::Compress,
    ) -> FrameSet {
        let ws_deflate = crate::websocket::compressed_text_frame(compressor, packet.message());
        let (ws_plain, packet) = packet.into_text_frame();
        FrameSet {
            packet,
            ws_plain,
            ws_deflate,
        }
    }
}

/// Whether a frame may be replaced by a newer one of the same kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Normal,
    /// A full-state snapshot: only the newest one matters.
    Snapshot,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<(Bytes, FrameKind)>,
    bytes: usize,
    waker: Option<Waker>,
    /// No more frames are accepted; the writer drains what is queued and shuts the socket.
    closing: bool,
    /// The socket is gone (write failed or closed).
    dead: bool,
    skipped: u64,
    /// Bytes that may be queued (see `BYTE_BUDGET`).
    budget: usize,
    /// The writer has finished and closed the socket.
    finished: bool,
    /// The reader waiting in `stopped` for the queue to stop.
    stop_waker: Option<Waker>,
    /// When the queue first stopped (closing or dead).
    stopped_at: Option<std::time::Instant>,
    /// The socket, while frames may be sent on it directly (see `send_directly`).
    direct: Option<DirectSocket>,
    /// The writer holds a batch it has not finished writing.
    busy: bool,
    /// Since when what is queued or being written has waited without the writer finishing a
    /// batch (meaningful while `items` is not empty or `busy`; see `stalled_for`).
    waiting_since: Option<std::time::Instant>,
}

impl Inner {
    fn wake_all(&mut self) {
        if self.stopped_at.is_none() && (self.closing || self.dead) {
            self.stopped_at = Some(std::time::Instant::now());
        }
        if let Some(w) = self.waker.take() {
            w.wake();
        }
        if let Some(w) = self.stop_waker.take() {
            w.wake();
        }
    }
}

/// How long a connection's reader waits for the peer after the server stopped the connection
/// (ping timeout, slow consumer, close frame sent) before it gives the connection up: it marks the
/// queue dead, which also ends a writer blocked on a peer that stopped reading, so a peer that
/// never answers holds neither a file descriptor nor a connection slot.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Shared between the connection's writer task and whoever sends to the connection.
#[derive(Default)]
pub struct OutQueue {
    inner: RefCell<Inner>,
}

impl OutQueue {
    pub fn new() -> Rc<OutQueue> {
        OutQueue::with_budget(BYTE_BUDGET)
    }

    /// A queue with another byte budget than `BYTE_BUDGET`.
    pub fn with_budget(budget: usize) -> Rc<OutQueue> {
        let queue = OutQueue::default();
        queue.inner.borrow_mut().budget = budget;
        Rc::new(queue)
    }

    /// Queues a frame; returns false when the connection is closing, dead or over budget (it is
    /// then marked closing).
    pub fn push(&self, mut frame: Bytes, mut kind: FrameKind) -> bool {
        let mut inner = self.inner.borrow_mut();
        if inner.closing || inner.dead {
            crate::stats::bump(|s| &s.dropped);
            return false;
        }
        if let Some(target) = inner.direct.as_ref()
            && inner.items.is_empty()
            && !inner.busy
        {
            // Nothing waits and the writer is not writing: the frame goes out now, without a
            // wake-up of the writer task. What the socket does not take is queued as usual.
            let sent = target.send_now(&frame);
            if sent.taken > 0 {
                crate::stats::add(|s| &s.bytes_out, sent.taken as u64);
                if kind == FrameKind::Snapshot {
                    crate::stats::bump(|s| &s.deliveries);
                }
                if sent.whole(&frame) {
                    crate::stats::bump(|s| &s.frames_out);
                    return true;
                }
                // Part of it is on its way: the rest must follow as it is, never replaced (over
                // TLS the rest may be nothing but ciphertext the writer's flush sends).
                frame = frame.slice(sent.taken..);
                kind = FrameKind::Normal;
            }
        }
        if kind == FrameKind::Snapshot
            && let Some(slot) = inner
                .items
                .iter_mut()
                .rev()
                .find(|(_, k)| *k == FrameKind::Snapshot)
        {
            let old = std::mem::replace(&mut slot.0, frame);
            let new_len = slot.0.len();
            inner.bytes = inner.bytes + new_len - old.len();
            inner.skipped += 1;
            crate::stats::bump(|s| &s.skipped);
            return true;
        }
        if inner.bytes + frame.len() > inner.budget {
            crate::stats::bump(|s| &s.slow_disconnects);
            tracing::info!(
                "connection closed as a slow consumer: over its {} byte budget",
                inner.budget
            );
            inner.closing = true;
            inner.items.clear();
            inner.bytes = 0;
            inner.wake_all();
            return false;
        }
        if inner.items.is_empty() && !inner.busy {
            inner.waiting_since = Some(std::time::Instant::now());
        }
        inner.bytes += frame.len();
        inner.items.push_back((frame, kind));
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
        true
    }

    /// Queues a frame that only makes sense on top of the state frame sent before it (a delta):
    /// when a state frame is still waiting in the queue, the peer would never see the state the
    /// delta applies to, so that waiting frame is replaced by `full` (the same state, complete)
    /// instead. Either way the queued frame is replaceable like a snapshot. Returns whether the
    /// delta itself was queued.
    pub fn push_delta(&self, delta: Bytes, full: Bytes) -> bool {
        let waiting = self
            .inner
            .borrow()
            .items
            .iter()
            .any(|(_, k)| *k == FrameKind::Snapshot);
        if waiting {
            self.push(full, FrameKind::Snapshot);
            false
        } else {
            self.push(delta, FrameKind::Snapshot)
        }
    }

    /// Queues a last frame (e.g. a close frame) and stops accepting more.
    pub fn close_with(&self, last: Option<Bytes>) {
        let mut inner = self.inner.borrow_mut();
        if inner.closing || inner.dead {
            return;
        }
        if let Some(frame) = last {
            inner.bytes += frame.len();
            inner.items.push_back((frame, FrameKind::Normal));
        }
        inner.closing = true;
        inner.wake_all();
    }

    pub fn is_open(&self) -> bool {
        let inner = self.inner.borrow();
        !inner.closing && !inner.dead
    }

    /// The writer has written everything (or given up) and closed the socket.
    pub fn is_finished(&self) -> bool {
        self.inner.borrow().finished
    }

    /// How long the peer has taken nothing: the time since the writer last finished a batch
    /// (or since the first frame was queued for an idle writer) while frames wait or are being
    /// written; zero when nothing waits. A peer that stopped reading shows it growing.
    pub fn stalled_for(&self) -> Duration {
        let inner = self.inner.borrow();
        match inner.waiting_since {
            Some(at) if !inner.items.is_empty() || inner.busy => at.elapsed(),
            _ => Duration::ZERO,
        }
    }

    pub fn skipped(&self) -> u64 {
        self.inner.borrow().skipped
    }

    /// Marks the socket as gone (reader saw EOF/error).
    pub fn mark_dead(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.dead = true;
        inner.items.clear();
        inner.wake_all();
    }

    /// Resolves `CLOSE_GRACE` after the queue first stopped taking frames (closing or dead). A
    /// reader races its socket read against this and ends when it wins; the grace does not start
    /// again while the peer keeps sending.
    pub async fn stopped(&self) {
        let since = poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.closing || inner.dead {
                let at = *inner.stopped_at.get_or_insert_with(std::time::Instant::now);
                return Poll::Ready(at);
            }
            inner.stop_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        glommio::timer::sleep(CLOSE_GRACE.saturating_sub(since.elapsed())).await;
    }

    /// From now on, a frame pushed while nothing waits and the writer is idle is sent on
    /// `socket` at once (a non-blocking `send` from the pushing task — over TLS after encrypting
    /// it into the connection —: one system call, no task wake-up); only what the socket does
    /// not take goes through the queue and the writer. For sockets whose writer writes frames
    /// unchanged but for TLS. The returned guard ends it; it must be dropped before the socket
    /// can be closed, so a reused descriptor is never written to.
    pub fn send_directly(self: &Rc<Self>, socket: DirectSocket) -> DirectGuard {
        self.inner.borrow_mut().direct = Some(socket);
        DirectGuard(self.clone())
    }

    /// The socket a frame may be sent on at once (see `send_directly`): set, and nothing queued,
    /// being written or stopping. Valid until the caller next yields to the executor.
    pub fn direct_target(&self) -> Option<DirectSocket> {
        let inner = self.inner.borrow();
        if inner.closing || inner.dead || inner.busy || !inner.items.is_empty() {
            return None;
        }
        inner.direct.clone()
    }

    /// After a direct send of a `kind` frame on `direct_target()` took only `sent` bytes of
    /// `frame`: a started frame's rest follows as it is (never replaced); one not started is
    /// queued as it would have been. Counts what `push` would have counted for the part sent.
    /// (Over TLS `sent` may be the whole frame with ciphertext left in the connection: the empty
    /// rest then wakes the writer, whose flush sends it.)
    pub fn after_direct_send(&self, frame: Bytes, sent: usize, kind: FrameKind) {
        if sent == 0 {
            self.push(frame, kind);
            return;
        }
        if kind == FrameKind::Snapshot {
            crate::stats::bump(|s| &s.deliveries);
        }
        self.push(frame.slice(sent.min(frame.len())..), FrameKind::Normal);
    }

    /// Waits for queued frames; `None` once closing with nothing left, or dead.
    async fn next_batch(&self, batch: &mut Vec<Bytes>) -> bool {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            // (the previous batch, if any, is written: the writer is back here)
            if inner.busy {
                inner.waiting_since = Some(std::time::Instant::now());
            }
            inner.busy = false;
            if inner.dead {
                return Poll::Ready(false);
            }
            if !inner.items.is_empty() {
                while let Some((frame, kind)) = inner.items.pop_front() {
                    inner.bytes -= frame.len();
                    if kind == FrameKind::Snapshot {
                        crate::stats::bump(|s| &s.deliveries);
                    }
                    batch.push(frame);
                    if batch.len() >= 64 {
                        break;
                    }
                }
                inner.busy = true;
                return Poll::Ready(true);
            }
            if inner.closing {
                return Poll::Ready(false);
            }
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Resolves once the queue is dead (the writer then abandons a blocked write).
    async fn dead(&self) {
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.dead {
                return Poll::Ready(());
            }
            inner.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// One broadcast's frames for many connections, sent in a tight loop of `send`s after the caller
/// has looked at every connection (`OutQueue::direct_target`): no system call between the
/// lookups, so the memory of thousands of connections is fetched back to back and the code stays
/// in cache; then the sends run like the bare fan-out baseline. `H` is how the caller finds a
/// connection again when its socket did not take the whole frame. Nothing may yield to the
/// executor between `add` and `send` (a noted socket must still be the connection's open one).
pub struct DirectSends<'a, H> {
    items: Vec<(DirectSocket, &'a Bytes, H)>,
    kind: FrameKind,
}

impl<'a, H> DirectSends<'a, H> {
    /// For snapshots (each counted as a delivery).
    pub fn with_capacity(n: usize) -> Self {
        DirectSends {
            items: Vec::with_capacity(n),
            kind: FrameKind::Snapshot,
        }
    }

    /// For other frames (room messages: never replaced, not counted as deliveries).
    pub fn messages(n: usize) -> Self {
        DirectSends {
            items: Vec::with_capacity(n),
            kind: FrameKind::Normal,
        }
    }

    /// What the noted frames are (for `OutQueue::after_direct_send`).
    pub fn kind(&self) -> FrameKind {
        self.kind
    }

    /// Notes `frame` for `socket` (from `OutQueue::direct_target`, just now).
    pub fn add(&mut self, socket: DirectSocket, frame: &'a Bytes, handle: H) {
        self.items.push((socket, frame, handle));
    }

    /// Sends every noted frame; returns the connections whose socket took less than the whole
    /// frame, with how much it took: the caller hands each to its queue's `after_direct_send`.
    ///
    /// In batches: the TLS connections of a batch are sealed first, then the batch's sends run
    /// back to back as plain ones do — a receiver that drained the last send before the next
    /// arrives must be woken again (on loopback with receive steering, an interrupt to its CPU
    /// paid by the sender), and sealing between sends spaced them out.
    pub fn send(self) -> Vec<(H, &'a Bytes, usize)> {
        let (mut whole, mut bytes) = (0u64, 0u64);
        let mut short = Vec::new();
        let mut items = self.items.into_iter();
        let mut records = Vec::with_capacity(BATCH_ITEMS.min(items.len()));
        BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            while !items.as_slice().is_empty() {
                batch.clear();
                records.clear();
                let pending = items.as_slice();
                for (at, (socket, frame, _)) in pending.iter().enumerate() {
                    if at == BATCH_ITEMS || batch.len() >= BATCH_BYTES {
                        break;
                    }
                    // Sealing first touches the connection's memory (the shared cell, then the
                    // sealed state and key behind it): loaded ahead, in two steps.
                    if let Some((next, _, _)) = pending.get(at + PREFETCH_CELL) {
                        next.prefetch(false);
                    }
                    if let Some((next, _, _)) = pending.get(at + PREFETCH_STATE) {
                        next.prefetch(true);
                    }
                    records.push(socket.seal(frame, &mut batch));
                }
                for sealed in &records {
                    let Some((socket, frame, handle)) = items.next() else {
                        break;
                    };
                    let sent = match sealed {
                        Some(range) => socket.send_sealed(&batch[range.clone()], frame.len()),
                        None => socket.send_now(frame),
                    };
                    bytes += sent.taken as u64;
                    if sent.whole(frame) {
                        whole += 1;
                    } else {
                        short.push((handle, frame, sent.taken));
                    }
                }
            }
            if batch.capacity() > 4 * BATCH_BYTES {
                *batch = Vec::new(); // after a broadcast of very large frames
            }
        });
        if self.kind == FrameKind::Snapshot {
            crate::stats::add(|s| &s.deliveries, whole);
        }
        crate::stats::add(|s| &s.frames_out, whole);
        crate::stats::add(|s| &s.bytes_out, bytes);
        short
    }
}

thread_local! {
    /// A batch's sealed records (`DirectSends::send`): one buffer per thread.
    static BATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A batch of `DirectSends::send`: at most this many connections, and it ends once its sealed
/// records reach `BATCH_BYTES` (so they are still in cache when sent).
const BATCH_ITEMS: usize = 32;
const BATCH_BYTES: usize = 128 * 1024;

/// How many sends ahead a connection's shared cell, then its sealed state, is loaded.
const PREFETCH_CELL: usize = 3;
const PREFETCH_STATE: usize = 1;

/// Asks the CPU to load `len` bytes from `start` into its cache (a hint: never faults).
fn prefetch_lines(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..len).step_by(64) {
        // SAFETY: a prefetch is only a hint; it reads nothing and never faults, whatever the
        // address.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                start.wrapping_add(offset).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Ends direct sends on a queue's socket when dropped (see `OutQueue::send_directly`).
pub struct DirectGuard(Rc<OutQueue>);

impl Drop for DirectGuard {
    fn drop(&mut self) {
        self.0.inner.borrow_mut().direct = None;
    }
}

/// A connection's socket that frames may be sent on directly from the broadcasting task: plain
/// TCP, or TLS over TCP (the frame is encrypted into the connection shared by its halves, then
/// sent on the socket).
#[derive(Clone)]
pub enum DirectSocket {
    Plain(std::os::fd::RawFd),
    Tls(std::os::fd::RawFd, Rc<RefCell<crate::stream::Stream>>),
}

/// What a direct send did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    /// Bytes of the frame taken: on the wire (plain), or encrypted into the connection (TLS).
    taken: usize,
    /// Ciphertext is left in the TLS connection: the writer's flush must send it.
    flush: bool,
}

impl Sent {
    const NOTHING: Sent = Sent {
        taken: 0,
        flush: false,
    };

    fn whole(&self, frame: &[u8]) -> bool {
        self.taken == frame.len() && !self.flush
    }
}

impl std::fmt::Debug for DirectSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectSocket::Plain(fd) => write!(f, "Plain({fd})"),
            DirectSocket::Tls(fd, _) => write!(f, "Tls({fd})"),
        }
    }
}

impl DirectSocket {
    /// Starts loading what `send_now` will touch: the connection's shared cell, or (`deep`,
    /// once that is loaded) the sealed state behind it. Nothing for plain TCP (the fd is here).
    fn prefetch(&self, deep: bool) {
        let DirectSocket::Tls(_, stream) = self else {
            return;
        };
        if !deep {
            prefetch_lines(stream.as_ptr().cast::<u8>().cast_const(), 64);
            return;
        }
        if let Ok(stream) = stream.try_borrow()
            && let crate::stream::Stream::Sealed(sealed) = &*stream
        {
            let state: *const crate::handoff::Sealed = &**sealed;
            prefetch_lines(state.cast(), std::mem::size_of::<crate::handoff::Sealed>());
        }
    }

    /// Over a handed-off TLS connection: seals `frame` onto `batch` for `send_sealed`; the
    /// range of its records, or None (plain TCP, TLS through rustls, or the frame must wait for
    /// the writer: `send_now` says so).
    fn seal(&self, frame: &[u8], batch: &mut Vec<u8>) -> Option<std::ops::Range<usize>> {
        let DirectSocket::Tls(_, stream) = self else {
            return None;
        };
        let Ok(mut stream) = stream.try_borrow_mut() else {
            return None;
        };
        let crate::stream::Stream::Sealed(sealed) = &mut *stream else {
            return None;
        };
        let start = batch.len();
        sealed.seal_now(frame, batch).then_some(start..batch.len())
    }

    /// Sends `records` (a frame of `frame_len` bytes sealed by `seal` since the executor last
    /// ran): what the socket does not take waits in the connection for the writer's flush.
    fn send_sealed(&self, records: &[u8], frame_len: usize) -> Sent {
        let DirectSocket::Tls(fd, stream) = self else {
            return Sent::NOTHING;
        };
        // No one else holds the connection between `seal` and here (nothing yields); were it
        // otherwise, the records would be lost and the peer would end the connection at the next.
        let Ok(mut stream) = stream.try_borrow_mut() else {
            debug_assert!(false, "a connection held between its seal and its send");
            return Sent::NOTHING;
        };
        let crate::stream::Stream::Sealed(sealed) = &mut *stream else {
            return Sent::NOTHING;
        };
        let flush = sealed.send_sealed(records, |records| send_now(*fd, records));
        Sent {
            taken: frame_len,
            flush,
        }
    }

    /// Sends what the socket takes of `frame` now, without blocking.
    fn send_now(&self, frame: &[u8]) -> Sent {
        match self {
            DirectSocket::Plain(fd) => Sent {
                taken: send_now(*fd, frame),
                flush: false,
            },
            DirectSocket::Tls(fd, stream) => tls_send_now(*fd, stream, frame),
        }
    }
}

/// Over TLS: encrypts `frame` (only when nothing else waits in the connection, so the order stays
/// the writer's) and writes what the socket takes of the ciphertext; the rest waits in the
/// connection for the writer's flush.
fn tls_send_now(
    fd: std::os::fd::RawFd,
    stream: &RefCell<crate::stream::Stream>,
    frame: &[u8],
) -> Sent {
    let Ok(mut stream) = stream.try_borrow_mut() else {
        return Sent::NOTHING;
    };
    let tls = match &mut *stream {
        crate::stream::Stream::Sealed(sealed) => {
            let (taken, flush) = sealed.send_now(frame, |sealed| send_now(fd, sealed));
            return Sent { taken, flush };
        }
        crate::stream::Stream::Tls(tls) => tls,
        crate::stream::Stream::Plain(_) => return Sent::NOTHING,
    };
    let conn = tls.get_mut().1;
    if conn.wants_write() || frame.is_empty() {
        return Sent::NOTHING;
    }
    let Ok(taken) = std::io::Write::write(&mut conn.writer(), frame) else {
        return Sent::NOTHING;
    };
    let mut socket = NonBlockingSocket(fd);
    while conn.wants_write() {
        match conn.write_tls(&mut socket) {
            Ok(n) if n > 0 => {}
            _ => break, // full (or failed: the writer meets the same condition)
        }
    }
    Sent {
        taken,
        flush: conn.wants_write(),
    }
}

/// `std::io::Write` on a socket with non-blocking `send`s (`WouldBlock` when it is full).
struct NonBlockingSocket(std::os::fd::RawFd);

impl std::io::Write for NonBlockingSocket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: as in `send_now`.
        let n = unsafe {
            libc::send(
                self.0,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends what a non-blocking `send` takes of `frame` on `fd` now; 0 when it takes nothing (the
/// socket is full, or failed: the writer then meets the same condition and handles it).
fn send_now(fd: std::os::fd::RawFd, frame: &[u8]) -> usize {
    // SAFETY: `fd` is the connection's open socket (the `DirectGuard` ends direct sends before
    // it can be closed, and callers send before yielding to the executor); the buffer is valid
    // for `frame.len()` bytes.
    let n = unsafe {
        libc::send(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    usize::try_from(n).unwrap_or(0)
}

/// How far the peer of a TCP socket has read: the bytes it acknowledged so far and the bytes
/// the kernel still holds for it (sent and not acknowledged, or not sent yet). `None` when the
/// kernel does not say (not a TCP socket). A peer that stopped reading shows bytes held and an
/// acknowledged count that no longer moves, however small the kernel's buffers fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProgress {
    pub acked: u64,
    pub held: u64,
}

pub fn peer_progress(fd: std::os::fd::RawFd) -> Option<PeerProgress> {
    // SAFETY: `tcp_info` is plain data (zeroed is valid); `getsockopt` writes at most `len`
    // bytes into it and `ioctl(SIOCOUTQ)` one int; `fd` is the caller's open socket.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let got = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        let mut held: libc::c_int = 0;
        if got != 0 || libc::ioctl(fd, libc::TIOCOUTQ, &mut held) != 0 {
            return None;
        }
        Some(PeerProgress {
            acked: info.tcpi_bytes_acked,
            held: u64::try_from(held).unwrap_or(0),
        })
    }
}

/// Drains `queue` into `io` until the queue closes or a write fails; then closes `io`. A write
/// the peer does not take (it stopped reading: the kernel's send buffer is full) is abandoned
/// when the queue is marked dead — by the reader, `CLOSE_GRACE` after the server stopped the
/// connection (a peer that does not read does not answer pings either) — so such a peer holds
/// neither the writer nor the socket. No timer per write.
pub async fn run_writer<W: AsyncWrite + Unpin>(queue: Rc<OutQueue>, mut io: W) {
    let mut batch = Vec::new(); // allocated on the first burst, not up front for every connection
    while queue.next_batch(&mut batch).await {
        let (frames, bytes) = (batch.len(), batch.iter().map(Bytes::len).sum::<usize>());
        let written = futures_lite::future::or(
            async {
                for frame in batch.drain(..) {
                    io.write_all(&frame).await?;
                }
                io.flush().await.map(|()| true)
            },
            async {
                queue.dead().await;
                Ok(false)
            },
        )
        .await;
        batch.clear();
        crate::stats::add(|s| &s.frames_out, frames as u64);
        crate::stats::add(|s| &s.bytes_out, bytes as u64);
        match written {
            Ok(true) => {}
            Ok(false) => {
                crate::stats::bump(|s| &s.slow_disconnects);
                tracing::info!("connection dropped: the peer stopped reading (write abandoned)");
                break;
            }
            Err(_) => {
                queue.mark_dead();
                break;
            }
        }
    }
    if !queue.inner.borrow().dead {
        futures_lite::future::or(async { drop(io.close().await) }, queue.dead()).await;
    }
    queue.inner.borrow_mut().finished = true;
    queue.inner.borrow_mut().wake_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a socket to send on directly, a frame pushed while nothing waits goes out at once
    /// (no writer involved); when the socket takes only part of it, the rest waits in the queue
    /// and is never replaced by a newer snapshot; after the guard, nothing is sent directly.
    #[test]
    fn direct_sends_and_what_the_socket_does_not_take() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (ours, mut peer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        peer.set_nonblocking(true).expect("non-blocking");
        let q = OutQueue::new();
        let guard = q.send_directly(DirectSocket::Plain(ours.as_raw_fd()));
        assert!(q.push(Bytes::from_static(b"hello"), FrameKind::Snapshot));
        let mut got = [0u8; 16];
        assert_eq!(peer.read(&mut got).expect("sent at once"), 5);
        assert_eq!(&got[..5], b"hello");
        // Fill the socket: the last frame is taken in part or not at all and queued.
        let big = Bytes::from(vec![7u8; 64 * 1024]);
        let mut pushes = 0;
        while q.inner.borrow().items.is_empty() {
            assert!(q.push(big.clone(), FrameKind::Snapshot));
            pushes += 1;
            assert!(pushes < 10_000, "the socket never filled");
        }
        let waiting = q.inner.borrow().items.front().map(|(f, k)| (f.len(), *k));
        let (len, kind) = waiting.expect("queued");
        assert!(len <= big.len());
        if len < big.len() {
            assert_eq!(
                kind,
                FrameKind::Normal,
                "a partly sent frame is never replaced"
            );
        }
        // A newer snapshot queues behind it (or replaces it only when nothing of it was sent).
        assert!(q.push(Bytes::from_static(b"newer"), FrameKind::Snapshot));
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(q.next_batch(&mut batch)));
        assert_eq!(batch.last().map(|b| &b[..]), Some(&b"newer"[..]));
        if len < big.len() {
            assert_eq!(batch.len(), 2);
            assert_eq!(batch[0].len(), len);
        }
        // The writer holds a batch: pushes queue, nothing is sent directly.
        while peer.read(&mut vec![0u8; 1 << 20]).is_ok() {}
        assert!(q.push(Bytes::from_static(b"queued"), FrameKind::Normal));
        assert_eq!(q.inner.borrow().items.len(), 1);
        drop(guard);
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(q.next_batch(&mut batch)));
        assert!(q.push(Bytes::from_static(b"after"), FrameKind::Normal));
        assert_eq!(
            q.inner.borrow().items.len(),
            1,
            "no direct send after the guard"
        );
    }

    #[test]
    fn snapshots_replace_each_other() {
        let q = OutQueue::new();
        assert!(q.push(Bytes::from_static(b"a"), FrameKind::Normal));
        assert!(q.push(Bytes::from_static(b"s1"), FrameKind::Snapshot));
        assert!(q.push(Bytes::from_static(b"b"), FrameKind::Normal));
        assert!(q.push(Bytes::from_static(b"s2"), FrameKind::Snapshot));
        assert_eq!(q.skipped(), 1);
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(q.next_batch(&mut batch)));
        assert_eq!(batch, vec![&b"a"[..], &b"s2"[..], &b"b"[..]]);
    }

    #[test]
    fn a_delta_behind_a_waiting_state_becomes_the_full_state() {
        let q = OutQueue::new();
        // Nothing waiting: the delta is queued.
        assert!(q.push_delta(Bytes::from_static(b"d1"), Bytes::from_static(b"f1")));
        // d1 still waits: d2 could not be applied by a peer that will never see s1 alone, so
        // the waiting frame becomes the full state 2.
        assert!(!q.push_delta(Bytes::from_static(b"d2"), Bytes::from_static(b"f2")));
        assert!(q.push(Bytes::from_static(b"m"), FrameKind::Normal));
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(q.next_batch(&mut batch)));
        assert_eq!(batch, vec![&b"f2"[..], &b"m"[..]]);
        // Taken by the writer: the next delta applies on top of it.
        batch.clear();
        assert!(q.push_delta(Bytes::from_static(b"d3"), Bytes::from_static(b"f3")));
        assert!(futures_lite::future::block_on(q.next_batch(&mut batch)));
        assert_eq!(batch, vec![&b"d3"[..]]);
    }

    /// A peer that never takes a byte: every write stays pending.
    struct Stalled;
    impl AsyncWrite for Stalled {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_stalled_peer_ends_the_writer_once_the_reader_gives_up() {
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(|| async {
                let q = OutQueue::new();
                let writer = glommio::spawn_local(run_writer(q.clone(), Stalled));
                assert!(q.push(Bytes::from_static(b"frame"), FrameKind::Normal));
                glommio::timer::sleep(Duration::from_millis(50)).await;
                assert!(!q.is_finished(), "the write is blocked");
                // The server stops the connection (ping timeout): the reader waits the grace,
                // then gives up, and the blocked writer ends with it.
                let started = std::time::Instant::now();
                q.close_with(None);
                q.stopped().await;
                let waited = started.elapsed();
                assert!(
                    waited >= CLOSE_GRACE - Duration::from_millis(5),
                    "{waited:?}"
                );
                assert!(!q.is_finished(), "still blocked until the reader gives up");
                q.mark_dead();
                writer.await;
                assert!(q.is_finished(), "the writer let go of the socket");
            })
            .expect("executor");
        handle.join().expect("join");
    }

    /// Over TLS, frames are encrypted into the connection and sent from the pushing task; when
    /// the socket fills in the middle of a frame, the ciphertext left in the connection goes out
    /// with the writer's flush, before anything queued after it: a TLS client that stops reading
    /// and comes back gets every byte, in order, through a real TLS session — handed off after a
    /// TLS 1.3 handshake (`handoff::Sealed`), and with rustls throughout (TLS 1.2).
    #[test]
    fn tls_direct_sends_leave_the_rest_to_the_writer_in_order() {
        tls_direct_sends(&rustls::version::TLS13, true);
    }

    #[test]
    fn tls12_direct_sends_leave_the_rest_to_the_writer_in_order() {
        tls_direct_sends(&rustls::version::TLS12, false);
    }

    /// One broadcast to more handed-off TLS connections than a batch holds (by count, then by
    /// bytes), one of whose sockets fills: every client reads exactly its frames, in order —
    /// the records sealed ahead of their sends are sent or kept for the writer, never lost or
    /// reordered.
    #[test]
    fn batched_tls_direct_sends_reach_every_connection_in_order() {
        use std::io::Read;
        use std::sync::Arc;
        const CLIENTS: usize = 40;
        const BIG: usize = 8 << 20; // more than a socket takes at once
        let (server_config, client_config) =
            crate::records::tests::configs(None, &rustls::version::TLS13);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        // Round 1: 8 KB each (batches end by bytes), client 0 gets `BIG`; round 2: 100 B each
        // (batches end by count).
        let frame = |round: usize, i: usize| -> Vec<u8> {
            let len = match (round, i) {
                (1, 0) => BIG,
                (1, _) => 8 << 10,
                _ => 100,
            };
            (0..len).map(|j| (i * 7 + round * 31 + j) as u8).collect()
        };
        let expected: Vec<Vec<u8>> = (0..CLIENTS)
            .map(|i| [frame(1, i), frame(2, i)].concat())
            .collect();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let config = client_config.clone();
                std::thread::spawn(move || {
                    let mut tls = crate::records::tests::tls_client(addr, config);
                    // Until the server closes (a failure to open a record ends it early: the
                    // bytes then differ).
                    let mut got = Vec::new();
                    let _ = tls.read_to_end(&mut got);
                    got
                })
            })
            .collect();
        let server_config = Arc::new(server_config);
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("listen");
                let mut conns = Vec::new();
                for _ in 0..CLIENTS {
                    let tcp = listener.accept().await.expect("accept");
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                    let (tls, _) = crate::handoff::accept(tcp, server_config.clone())
                        .await
                        .expect("handshake");
                    assert!(matches!(tls, crate::stream::Stream::Sealed(_)));
                    let (r, w) = crate::stream::split(tls);
                    let q = OutQueue::with_budget(256 << 20);
                    let guard = q.send_directly(DirectSocket::Tls(fd, r.shared()));
                    let writer = glommio::spawn_local(run_writer(q.clone(), w));
                    conns.push((q, guard, writer, r));
                }
                // Connections in accept order: the bytes of each, not its number, identify it.
                let mut short_total = 0;
                for round in [1, 2] {
                    let frames: Vec<Bytes> =
                        (0..CLIENTS).map(|i| Bytes::from(frame(round, i))).collect();
                    let mut direct = DirectSends::with_capacity(CLIENTS);
                    for (i, (q, ..)) in conns.iter().enumerate() {
                        match q.direct_target() {
                            Some(socket) => direct.add(socket, &frames[i], i),
                            None => assert!(q.push(frames[i].clone(), FrameKind::Snapshot)),
                        }
                    }
                    for (i, frame, sent) in direct.send() {
                        short_total += 1;
                        conns[i]
                            .0
                            .after_direct_send(frame.clone(), sent, FrameKind::Snapshot);
                    }
                }
                assert!(short_total >= 1, "the big frame filled its socket");
                for (q, ..) in &conns {
                    while !q.inner.borrow().items.is_empty() || q.inner.borrow().busy {
                        glommio::timer::sleep(Duration::from_millis(5)).await;
                    }
                }
                for (q, guard, writer, _r) in conns {
                    drop(guard);
                    q.close_with(None);
                    writer.await;
                }
            })
            .expect("executor");
        handle.join().expect("join");
        let mut got: Vec<Vec<u8>> = clients
            .into_iter()
            .map(|c| c.join().expect("client"))
            .collect();
        // Clients connected in any order: compare as sets of byte strings.
        let mut want = expected;
        got.sort();
        want.sort();
        assert!(
            got == want,
            "every connection got exactly its frames, in order"
        );
    }

    fn tls_direct_sends(version: &'static rustls::SupportedProtocolVersion, sealed: bool) {
        use std::io::Read;
        use std::sync::Arc;
        let (server_config, client_config) = crate::records::tests::configs(None, version);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let (read_now_tx, read_now) = std::sync::mpsc::channel::<usize>();
        // The client: handshake, then reads nothing until told how much to expect.
        let client = std::thread::spawn(move || {
            let mut tls = crate::records::tests::tls_client(addr, client_config);
            let expected = read_now.recv().expect("told");
            let mut got = vec![0u8; expected];
            tls.read_exact(&mut got).expect("every byte arrives");
            got
        });
        let handle = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind(addr).expect("listen");
                let tcp = listener.accept().await.expect("accept");
                let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
                let (tls, _) = crate::handoff::accept(tcp, Arc::new(server_config))
                    .await
                    .expect("handshake");
                assert_eq!(
                    matches!(tls, crate::stream::Stream::Sealed(_)),
                    sealed,
                    "TLS 1.3 is handed off, TLS 1.2 is not"
                );
                let (r, w) = crate::stream::split(tls);
                let q = OutQueue::with_budget(256 << 20);
                let guard = q.send_directly(DirectSocket::Tls(fd, r.shared()));
                let writer = glommio::spawn_local(run_writer(q.clone(), w));
                // Distinct frames until the socket is full (something had to be queued).
                let mut sent = Vec::new();
                let mut i = 0u8;
                while q.inner.borrow().items.is_empty() {
                    let frame = Bytes::from(vec![i; 50_000]);
                    assert!(q.push(frame.clone(), FrameKind::Normal));
                    sent.extend_from_slice(&frame);
                    i = i.wrapping_add(1);
                    assert!(sent.len() < 200 << 20, "the socket never filled");
                }
                // What waits is the rest of the frame the socket filled on: ciphertext left in the
                // connection (an empty marker that wakes the writer) or plaintext TLS did not take.
                let rest = q.inner.borrow().items.front().map(|(f, _)| f.len());
                assert!(rest.is_some_and(|n| n < 50_000), "{rest:?}");
                // Queued behind the rest of the last direct send.
                let tail = Bytes::from_static(b"tail");
                assert!(q.push(tail.clone(), FrameKind::Normal));
                sent.extend_from_slice(&tail);
                read_now_tx.send(sent.len()).expect("tell");
                while !q.inner.borrow().items.is_empty() || q.inner.borrow().busy {
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
                drop(guard);
                q.close_with(None);
                writer.await;
                sent
            })
            .expect("executor");
        let sent = handle.join().expect("join");
        let got = client.join().expect("client");
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes arrive as sent, in order");
    }

    #[test]
    fn over_budget_closes() {
        let q = OutQueue::new();
        let big = Bytes::from(vec![0u8; BYTE_BUDGET / 2 + 1]);
        assert!(q.push(big.clone(), FrameKind::Normal));
        assert!(!q.push(big, FrameKind::Normal));
        assert!(!q.is_open());
    }
}
