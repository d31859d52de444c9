//! What the transport wrote and refused, counted per thread (a shard): relaxed atomics on a
//! cache line of their own, written only by their thread, read by anyone (the application's
//! metrics endpoint). A thread that never called `set_local` counts nothing.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[repr(align(64))]
#[derive(Default, Debug)]
pub struct IoStats {
    /// Engine.IO sessions living on this thread (gauge).
    pub sessions: AtomicI64,
    /// Sockets held for connection state recovery on this thread (gauge).
    pub sessions_held: AtomicI64,
    /// Sockets recovered by their client within the window.
    pub recovered: AtomicU64,
    /// Held sockets whose window closed (or that were let go) without a recovery.
    pub recovery_expired: AtomicU64,
    /// States (latest-wins frames) handed to connection writers.
    pub deliveries: AtomicU64,
    /// WebSocket frames and their bytes written to sockets.
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// States replaced by a newer one before they were written (latest wins).
    pub skipped: AtomicU64,
    /// Frames refused because the connection was closing or gone.
    pub dropped: AtomicU64,
    /// Connections closed for exceeding their output byte budget or for not reading.
    pub slow_disconnects: AtomicU64,
    /// TLS handshakes completed in full, resumed (session ticket or cache), and failed or
    /// abandoned (including those that timed out).
    pub tls_full: AtomicU64,
    pub tls_resumed: AtomicU64,
    pub tls_failed: AtomicU64,
    /// TLS 1.3 connections handed off after their handshake (`handoff`): their own keys, no
    /// rustls connection kept.
    pub tls_handed_off: AtomicU64,
    /// Handed-off connections ended by a record the peer could not have sent correctly
    /// (tampered, oversized, unencrypted, a fatal alert, a KeyUpdate).
    pub tls_record_errors: AtomicU64,
    /// Handed-off connections whose records the kernel seals or opens (`ktls`).
    pub tls_kernel: AtomicU64,
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<IoStats>>> = const { RefCell::new(None) };
}

/// Makes `stats` the counters of the calling thread.
pub fn set_local(stats: Arc<IoStats>) {
    LOCAL.with(|l| *l.borrow_mut() = Some(stats));
}

/// Adds `n` to a counter of this thread.
pub fn add(counter: fn(&IoStats) -> &AtomicU64, n: u64) {
    LOCAL.with(|l| {
        if let Some(s) = l.borrow().as_ref() {
            counter(s).fetch_add(n, Ordering::Relaxed);
        }
    });
}

/// Adds one to a counter of this thread.
pub fn bump(counter: fn(&IoStats) -> &AtomicU64) {
    add(counter, 1);
}

/// Moves a gauge of this thread by `delta`.
pub fn gauge(counter: fn(&IoStats) -> &AtomicI64, delta: i64) {
    LOCAL.with(|l| {
        if let Some(s) = l.borrow().as_ref() {
            counter(s).fetch_add(delta, Ordering::Relaxed);
        }
    });
}
