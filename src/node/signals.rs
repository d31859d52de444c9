//! SIGTERM, SIGINT and SIGHUP for the main thread: blocked in every thread before the shards
//! start (the shard threads inherit the mask), then taken synchronously with `sigtimedwait`, so
//! no handler runs inside an executor.

use std::mem::MaybeUninit;
use std::time::Duration;

/// The signals the main thread acts on.
pub struct Signals {
    set: libc::sigset_t,
}

/// What the main thread was woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: graceful shutdown.
    Shutdown(&'static str),
    /// SIGHUP: reload the TLS key and certificate.
    Reload,
    /// Nothing arrived within the wait.
    Timeout,
}

impl Signals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts
    /// afterwards.
    pub fn block() -> Signals {
        // SAFETY: sigemptyset initialises the set before it is read; the calls only touch it
        // and the calling thread's signal mask.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGHUP);
            let set = set.assume_init();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// Waits for one of the signals, at most `limit` (forever when None).
    pub fn wait(&self, limit: Option<Duration>) -> Signal {
        loop {
            let sig = match limit {
                None => {
                    let mut sig: libc::c_int = 0;
                    // SAFETY: `set` is initialised and `sig` is a valid out pointer.
                    let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
                    if rc != 0 {
                        continue;
                    }
                    sig
                }
                Some(limit) => {
                    let ts = libc::timespec {
                        tv_sec: limit.as_secs() as libc::time_t,
                        tv_nsec: limit.subsec_nanos() as libc::c_long,
                    };
                    // SAFETY: `set` and `ts` are initialised; a null siginfo pointer is allowed.
                    let rc = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
                    if rc < 0 {
                        if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
                            return Signal::Timeout;
                        }
                        continue; // EINTR
                    }
                    rc
                }
            };
            return match sig {
                libc::SIGHUP => Signal::Reload,
                libc::SIGINT => Signal::Shutdown("SIGINT"),
                _ => Signal::Shutdown("SIGTERM"),
            };
        }
    }
}
