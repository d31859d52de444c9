//! Start-up checks, run before any shard starts: a configuration that cannot work (a cluster
//! whose nodes would each generate their own access key), what this host must allow for the shards to run
//! (io_uring not blocked, a kernel that has what glommio needs, enough locked memory) and what it
//! should allow (enough file descriptors for `MAX_CONNECTIONS`). A failed check is one paragraph
//! naming the cause and the fix, and the process exits with 78 (`EX_CONFIG`) — never a panic in
//! a shard thread with a backtrace about a kernel that is in fact new enough.
//!
//! Owns: probing the host (uname, one `io_uring_setup`, rlimits, procfs). Must not touch: the
//! shards, the network, the configuration beyond reading it.

use crate::config::Config;

/// The exit code of a failed start-up check (`EX_CONFIG` in sysexits.h).
pub const EXIT_CONFIG: i32 = 78;

/// The oldest kernel glommio runs on (its io_uring probe needs 5.8).
const MIN_KERNEL: (u32, u32) = (5, 8);

/// Locked memory glommio needs to start, whatever the number of shards (measured: every shard
/// count fails at 511 KiB and starts at 512 KiB).
pub const MIN_MEMLOCK_KIB: u64 = 512;

/// File descriptors a node uses besides its connections (listeners, rings, logs, NATS, …).
const FD_OVERHEAD: u64 = 256;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The node cannot run here: which check, and the paragraph for the operator.
    Fatal {
        check: &'static str,
        message: String,
    },
    /// It runs, with a limit the operator should know about.
    Warning {
        check: &'static str,
        message: String,
    },
}

/// Every check, in order; fatal findings first stop the start.
pub fn run(config: &Config) -> Vec<Finding> {
    let mut found = Vec::new();
    if config.cluster.is_some()
        && config.require_auth_key
        && config.auth_key_generated
        && !config.backend.enabled
    {
        found.push(Finding::Fatal {
            check: "cluster_key",
            message: "cluster mode (CLUSTER_NATS_URL) without AUTH_KEY: each node would generate a key of its own and refuse observers that log on with another node's. Give every node the same AUTH_KEY (or USE_BACKEND=true, or REQUIRE_AUTH_KEY=false).".to_string(),
        });
        return found;
    }
    let kernel = kernel_release();
    if let Some((major, minor)) = kernel.as_deref().and_then(parse_release)
        && (major, minor) < MIN_KERNEL
    {
        found.push(Finding::Fatal {
            check: "kernel",
            message: format!(
                "this kernel is {} (Linux {major}.{minor}); spectra-server needs Linux {}.{} or newer for io_uring. Run it on a newer kernel (in a container: the host's kernel is the one that counts).",
                kernel.as_deref().unwrap_or("?"),
                MIN_KERNEL.0,
                MIN_KERNEL.1
            ),
        });
        return found;
    }
    if let Err(errno) = probe_io_uring() {
        found.push(Finding::Fatal {
            check: "io_uring",
            message: io_uring_refused(errno),
        });
        return found;
    }
    if let Some(limit) = rlimit_kib(libc::RLIMIT_MEMLOCK)
        && limit < MIN_MEMLOCK_KIB
    {
        found.push(Finding::Fatal {
            check: "memlock",
            message: format!(
                "the locked-memory limit (RLIMIT_MEMLOCK) is {limit} KiB; spectra-server needs at least {MIN_MEMLOCK_KIB} KiB for its io_uring buffers. Raise it: `ulimit -l {MIN_MEMLOCK_KIB}` (or more) in the shell that starts it, Docker `--ulimit memlock=-1` (compose: `ulimits: memlock: -1`), systemd `LimitMEMLOCK=infinity` in the unit, Kubernetes: the container runtime's default ulimits on the node."
            ),
        });
        return found;
    }
    let needed = config.limits.max_connections as u64 + FD_OVERHEAD;
    let files = raise_open_files();
    if let Some(limit) = files
        && limit < needed
    {
        found.push(Finding::Warning {
            check: "open_files",
            message: format!(
                "the open-file limit (RLIMIT_NOFILE) is {limit}; MAX_CONNECTIONS={} needs about {needed}: connections beyond about {} are refused by the kernel (EMFILE). Raise it (`ulimit -n {needed}`, Docker `--ulimit nofile={needed}`, systemd `LimitNOFILE={needed}`) or lower MAX_CONNECTIONS.",
                config.limits.max_connections,
                limit.saturating_sub(FD_OVERHEAD)
            ),
        });
    }
    found
}

/// Submission entries of each io_uring a shard opens (glommio opens three). Large rings for a
/// reason beyond queueing: the kernel sizes the table it searches to cancel a request (glommio
/// cancels a poll or a timeout on every sleep and wake-up) from the ring's size — 8 buckets at
/// glommio's default of 128 entries, so with thousands of connections each waiting to read, each
/// cancel walked hundreds of entries (`io_poll_find`, 4.8 % of a shard at 300 matches × 2 overlays;
/// 0.65 % at 4,096 entries, the size that gets the largest table, 256 buckets; BENCHMARKS.md).
/// Only where ring memory is not locked memory (Linux 5.12 on: memcg accounts it): on older
/// kernels the three rings (~1.2 MB) would come out of RLIMIT_MEMLOCK, so glommio's default stays.
pub fn ring_depth() -> usize {
    let release = kernel_release();
    ring_depth_for(release.as_deref().and_then(parse_release))
}

fn ring_depth_for(kernel: Option<(u32, u32)>) -> usize {
    match kernel {
        Some(version) if version >= (5, 12) => 4096,
        _ => 128,
    }
}

/// "6.18.44-fc" → (6, 18).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    Some((major, minor))
}

/// The running kernel's release (`uname -r`).
fn kernel_release() -> Option<String> {
    // SAFETY: uname fills the zeroed struct it is given; its fields are NUL-terminated.
    unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return None;
        }
        let release = std::ffi::CStr::from_ptr(name.release.as_ptr());
        Some(release.to_string_lossy().into_owned())
    }
}

/// Sets up (and closes) one small io_uring, as the shards will: the errno when refused.
fn probe_io_uring() -> Result<(), i32> {
    // struct io_uring_params is 120 bytes; all zero asks for the defaults.
    let mut params = [0u32; 30];
    // SAFETY: io_uring_setup reads and writes the params struct it is given (120 bytes here)
    // and returns a file descriptor, which is closed at once.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned, owned here.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// The paragraph for an io_uring the host refused with `errno`.
fn io_uring_refused(errno: i32) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    let seccomp = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Seccomp:").map(|v| v.trim() == "2"))
        })
        .unwrap_or(false);
    match errno {
        libc::EPERM if sysctl == 2 => "io_uring is disabled on this host (sysctl kernel.io_uring_disabled = 2); spectra-server needs it. Set `sysctl kernel.io_uring_disabled=0` on the host.".to_string(),
        libc::EPERM if sysctl == 1 && !seccomp => "io_uring is limited to one group on this host (sysctl kernel.io_uring_disabled = 1) and this process is not in it; spectra-server needs it. Add the service's user to the group named by kernel.io_uring_group, or set `sysctl kernel.io_uring_disabled=0` on the host.".to_string(),
        libc::EPERM | libc::ENOSYS => format!(
            "io_uring is blocked by a seccomp policy (io_uring_setup returned {}{}{}); spectra-server needs io_uring_setup, io_uring_enter and io_uring_register. The default seccomp profiles of Docker 25 and later, containerd 2.0 and later and so Kubernetes `RuntimeDefault` block them: run the container with a profile that allows those three calls besides the runtime's default list — the project ships one, deploy/docker/seccomp-io_uring.json (Docker: `--security-opt seccomp=deploy/docker/seccomp-io_uring.json`; Kubernetes: `securityContext.seccompProfile` of type `Localhost`, see docs/deploy.md), or, for a test, `--security-opt seccomp=unconfined`.",
            if errno == libc::EPERM { "EPERM" } else { "ENOSYS" },
            if seccomp { "; a seccomp filter is active in this process" } else { "" },
            if errno == libc::ENOSYS && !seccomp { "; or the kernel was built without io_uring" } else { "" }
        ),
        libc::ENOMEM => format!(
            "io_uring_setup ran out of locked memory (ENOMEM); raise RLIMIT_MEMLOCK to at least {MIN_MEMLOCK_KIB} KiB (`ulimit -l`, Docker `--ulimit memlock=-1`, systemd `LimitMEMLOCK=infinity`)."
        ),
        other => format!(
            "io_uring_setup failed ({}); spectra-server needs io_uring.",
            std::io::Error::from_raw_os_error(other)
        ),
    }
}

/// A soft limit in KiB (`None`: unlimited or unknown).
fn rlimit_kib(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(resource, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(limit.rlim_cur / 1024)
}

/// Raises the soft open-file limit to the hard one (as most servers do) and returns it.
fn raise_open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and fill the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("5.8.0"), Some((5, 8)));
        assert_eq!(ring_depth_for(Some((6, 18))), 4096);
        assert_eq!(ring_depth_for(Some((5, 12))), 4096);
        assert_eq!(ring_depth_for(Some((5, 11))), 128);
        assert_eq!(ring_depth_for(None), 128);
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("4.19"), Some((4, 19)));
        assert_eq!(parse_release("5.10rc1"), Some((5, 10)));
        assert_eq!(parse_release("junk"), None);
        assert!((5, 4) < MIN_KERNEL && (5, 8) >= MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }

    #[test]
    fn refusals_name_the_cause_and_the_fix() {
        let seccomp = io_uring_refused(libc::EPERM);
        // (On a host with the sysctl set, the sysctl is named instead.)
        assert!(seccomp.contains("seccomp") || seccomp.contains("io_uring_disabled"));
        assert!(
            io_uring_refused(libc::ENOSYS)
                .contains("io_uring_setup, io_uring_enter and io_uring_register")
        );
        assert!(io_uring_refused(libc::ENOMEM).contains("RLIMIT_MEMLOCK"));
    }
}
