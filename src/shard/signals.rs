//! SIGTERM and SIGINT for the main thread: blocked in every thread before the shards start (the
//! shard threads inherit the mask), then taken synchronously with `sigwait`, so no handler runs
//! inside an executor.

use std::mem::MaybeUninit;

/// The signals that ask for a graceful shutdown.
pub struct ShutdownSignals {
    set: libc::sigset_t,
}

impl ShutdownSignals {
    /// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts afterwards.
    pub fn block() -> ShutdownSignals {
        // SAFETY: sigemptyset initialises the set before it is read; the calls only touch it
        // and the calling thread's signal mask.
        unsafe {
            let mut set = MaybeUninit::<libc::sigset_t>::zeroed();
            libc::sigemptyset(set.as_mut_ptr());
            libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
            libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
            let set = set.assume_init();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            ShutdownSignals { set }
        }
    }

    /// Waits for SIGTERM or SIGINT; returns its name.
    pub fn wait(&self) -> &'static str {
        let mut sig: libc::c_int = 0;
        loop {
            // SAFETY: `set` is initialised and `sig` is a valid out pointer.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
            }
        }
    }
}
