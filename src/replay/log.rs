//! One match's replay log writer. `append` only copies bytes into a shared buffer (never blocks
//! the shard); a task per log writes whatever has accumulated with glommio's buffered file I/O
//! (io_uring) as soon as the previous write is done, so an accepted event reaches the kernel within
//! one write round trip (well under the 100 ms bound) and survives a crash of the process.
//! Write failures are logged once; the match goes on without its log (ingest spec R1), and the
//! file is renamed to `….replay.incomplete` (counted in `/metrics`) so that crash recovery never
//! restores a state older than the one the match had: an incomplete log is not recovered.

use std::cell::RefCell;
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::io::{BufferedFile, OpenOptions};

/// Bytes a log may hold waiting for the disk before it gives up (a stalled disk must not grow the
/// server's memory without bound).
const MAX_BACKLOG: usize = 64 << 20;

/// State shared by the match (producer) and its writer task.
#[derive(Default)]
struct Shared {
    buf: Vec<u8>,
    closed: bool,
    failed: bool,
    finished: bool,
    writer: Option<Waker>,
    waiting_finish: Vec<Waker>,
}

/// A match's replay log.
pub struct ReplayLog {
    shared: Rc<RefCell<Shared>>,
    pub path: PathBuf,
}

impl ReplayLog {
    /// Starts a new file with `header`; events appended before it is open are kept in order.
    pub fn create(path: PathBuf, header: &serde_json::Value) -> ReplayLog {
        let log = ReplayLog::start(path, None);
        log.shared.borrow_mut().buf = header.to_string().into_bytes();
        log
    }

    /// Continues an existing file after its first `valid_len` bytes (a match recovered after a
    /// crash; a record the crash cut short is dropped).
    pub fn resume(path: PathBuf, valid_len: u64) -> ReplayLog {
        ReplayLog::start(path, Some(valid_len))
    }

    fn start(path: PathBuf, append: Option<u64>) -> ReplayLog {
        let shared = Rc::new(RefCell::new(Shared::default()));
        glommio::spawn_local(write_loop(path.clone(), shared.clone(), append)).detach();
        ReplayLog { shared, path }
    }

    /// Appends one event (`,\n` then its JSON).
    pub fn append(&self, event: &serde_json::Map<String, serde_json::Value>) {
        let mut s = self.shared.borrow_mut();
        if s.failed || s.closed {
            return;
        }
        if s.buf.len() > MAX_BACKLOG {
            // The disk has not taken a write for a long time: memory matters more than the log.
            tracing::error!(
                "replay log {}: {} MiB waiting for the disk; logging stops for this match",
                self.path.display(),
                MAX_BACKLOG >> 20
            );
            s.failed = true;
            s.buf = Vec::new();
            return;
        }
        s.buf.extend_from_slice(b",\n");
        if serde_json::to_writer(&mut s.buf, event).is_err() {
            // A map of JSON values always serialises; nothing to undo but the separator.
            let len = s.buf.len() - 2;
            s.buf.truncate(len);
        }
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }

    /// No more events: the writer writes what is left and closes the file.
    pub fn close(&self) {
        let mut s = self.shared.borrow_mut();
        s.closed = true;
        if let Some(w) = s.writer.take() {
            w.wake();
        }
    }

    /// Resolves once everything appended before `close` is written (or writing failed).
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + use<> {
        let shared = self.shared.clone();
        poll_fn(move |cx| {
            let mut s = shared.borrow_mut();
            if s.finished {
                Poll::Ready(())
            } else {
                s.waiting_finish.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

impl Drop for ReplayLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Takes the pending bytes, waiting until there are some or the log is closed.
async fn next_batch(shared: &Rc<RefCell<Shared>>) -> (Vec<u8>, bool) {
    poll_fn(|cx| {
        let mut s = shared.borrow_mut();
        if !s.buf.is_empty() || s.closed {
            Poll::Ready((std::mem::take(&mut s.buf), s.closed))
        } else {
            s.writer = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

async fn open(path: &PathBuf, resume_at: Option<u64>) -> glommio::Result<(BufferedFile, u64), ()> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(resume_at.is_none())
        .buffered_open(path)
        .await?;
    let pos = resume_at.unwrap_or(0);
    if file.file_size().await? > pos {
        file.truncate(pos).await?;
    }
    Ok((file, pos))
}

async fn write_all(file: &BufferedFile, mut bytes: Vec<u8>, pos: &mut u64) -> Result<(), String> {
    while !bytes.is_empty() {
        let n = file
            .write_at(bytes.clone(), *pos)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the disk accepted no bytes".into());
        }
        *pos += n as u64;
        crate::metrics::local(|s| {
            s.replay_bytes
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        });
        bytes.drain(..n.min(bytes.len()));
    }
    Ok(())
}

async fn write_loop(path: PathBuf, shared: Rc<RefCell<Shared>>, resume_at: Option<u64>) {
    // (Spawned while the caller may hold shard state: touch nothing before the first await.)
    let opened = open(&path, resume_at).await;
    let mut failure = None;
    match opened {
        Ok((file, mut pos)) => {
            loop {
                let (batch, closed) = next_batch(&shared).await;
                if !batch.is_empty()
                    && let Err(e) = write_all(&file, batch, &mut pos).await
                {
                    failure = Some(e);
                    break;
                }
                if shared.borrow().failed {
                    failure = Some(format!(
                        "over {} MiB waiting for the disk",
                        MAX_BACKLOG >> 20
                    ));
                    break;
                }
                if closed {
                    break;
                }
            }
            let _ = file.close().await;
        }
        Err(e) => failure = Some(e.to_string()),
    }
    if let Some(e) = &failure {
        crate::metrics::bump(|s| &s.replay_incomplete);
        let incomplete = PathBuf::from(format!("{}.incomplete", path.display()));
        let renamed = match std::fs::rename(&path, &incomplete) {
            Ok(()) => format!(
                "renamed to {}; it will not be recovered",
                incomplete.display()
            ),
            Err(r) => format!("could not be renamed ({r}); recovery may restore an older state"),
        };
        tracing::error!(
            "replay log {}: {e}; the match goes on without its log; the log is incomplete: {renamed}",
            path.display()
        );
    }
    let mut s = shared.borrow_mut();
    s.failed = failure.is_some();
    s.finished = true;
    s.buf = Vec::new();
    for w in s.waiting_finish.drain(..) {
        w.wake();
    }
}
