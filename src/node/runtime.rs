//! Starts the shards: one glommio executor per shard, each binding all three ports with
//! SO_REUSEPORT and running its accept loops, inbox and broadcast tick.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use glommio::net::TcpListener;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

use crate::config::{Config, TlsMode};
use crate::shard::{Global, Mesh, Shard, Wiring};
use crate::site::{Port, serve};

/// The running server: join it to wait forever, or shut it down.
pub struct Running {
    handles: Vec<ExecutorJoinHandle<()>>,
    pub global: Arc<Global>,
    mesh: Arc<Mesh>,
    /// The certificate of the TLS listeners (None on plain HTTP).
    pub tls: Option<Arc<crate::transport::tls::CertStore>>,
    /// The node's cluster handle (cluster mode).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Running {
    pub fn join(self) {
        for h in self.handles {
            let _ = h.join();
        }
    }

    /// Graceful shutdown within `bound` (see `node::shutdown`); false when a shard did not
    /// finish in time.
    pub fn shutdown(&self, bound: std::time::Duration) -> bool {
        let deadline = Instant::now() + bound;
        // In a cluster the matches are handed over (`../shared/spec/cluster.md` §6.6): marked
        // draining first, released once the shards have closed their clients and every event
        // they took is in the match's log.
        if let Some(cluster) = &self.cluster {
            cluster.drain(true, deadline);
        }
        let done = super::shutdown::run(&self.mesh, deadline);
        if let Some(cluster) = &self.cluster {
            match cluster.drain(false, deadline) {
                Some(n) if n > 0 => {
                    tracing::info!("cluster: {n} match(es) released to the cluster")
                }
                Some(_) => {}
                None => tracing::warn!("cluster: the matches were not all released in time"),
            }
        }
        done
    }
}

/// Refuses to start when a port is taken by another program (SO_REUSEPORT would otherwise let a
/// second server silently share the ports with the first).
/// Two services named on one port would share it the same way (each connection to one of them at
/// random), so that is refused too; `--port` is the way to serve everything on one port.
fn check_ports_free(config: &Config, ports: &[(Port, u16)]) -> Result<(), String> {
    for (i, (name, port)) in ports.iter().enumerate() {
        if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
            return Err(format!(
                "the {other} port and the {name} port are both {port}: give each its own port, or use --port (PORT) to serve everything on one"
            ));
        }
    }
    // The probes stay bound until all are checked.
    let mut probes = Vec::with_capacity(ports.len());
    for (name, port) in ports {
        let addr = SocketAddr::new(config.bind, *port);
        // SO_REUSEADDR without SO_REUSEPORT: conflicts with a live listener, not with TIME_WAIT.
        let probe = new_socket(addr)
            .and_then(|s| s.bind(&addr.into()).map(|()| s))
            .map_err(|e| format!("cannot listen on {addr} ({name} port): {e}"))?;
        probes.push(probe);
    }
    Ok(())
}

/// Starts Spectra: every shard serves ingest, REST and broadcast (three ports, or one).
pub fn start(config: Config) -> Result<Running, String> {
    // Replay logs and the generated TLS key hold secrets (group secrets, the private key): what
    // the server creates is readable by its own user only.
    // SAFETY: umask has no preconditions; it runs before any thread of ours is started.
    unsafe { libc::umask(0o077) };
    if let Some(dir) = &config.replay_dir {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(dir) {
            // An existing directory is the operator's: warned about, not changed.
            Ok(m) if m.permissions().mode() & 0o077 != 0 => tracing::warn!(
                "replay logs: {} is open to other users (mode {:o}); its files hold group secrets: chmod 700 it",
                dir.display(),
                m.permissions().mode() & 0o777
            ),
            Ok(_) => {}
            // Created by us: 0700 through the umask.
            Err(_) => {
                if let Err(e) = std::fs::create_dir_all(dir) {
                    // Robust where the original crashed: matches run, without logs (R1).
                    tracing::error!(
                        "replay logs: cannot create {}: {e}; matches will run without replay logs",
                        dir.display()
                    );
                }
            }
        }
    }
    let ports = match config.single_port {
        Some(port) => vec![(Port::Single, port)],
        None => vec![
            (Port::Ingest, config.ingest_port),
            (Port::Rest, config.rest_port),
            (Port::Broadcast, config.broadcast_port),
        ],
    };
    start_with(config, ports)
}

fn start_with(config: Config, ports: Vec<(Port, u16)>) -> Result<Running, String> {
    check_ports_free(&config, &ports)?;
    let tls = match &config.tls {
        TlsMode::Plain => None,
        TlsMode::Tls { key, cert } => Some(crate::transport::tls::server_config(
            key,
            cert,
            "spectra",
            &config.tls_resumption,
        )?),
    };
    let shards = config.shards;
    let global = Arc::new(Global::new(shards, config.limits.clone()));
    let (tls, tls_store) = match tls {
        Some(t) => {
            let _ = global.metrics.tls.set(crate::metrics::TlsInfo {
                tickets: t.tickets,
                kernel_tls: kernel_tls(config.kernel_tls),
            });
            (Some(t.config), Some(t.store))
        }
        None => (None, None),
    };
    let backend = config
        .backend
        .enabled
        .then(|| crate::backend::Backend::start(config.backend.clone(), global.metrics.clone()));
    if config.public_code_key.is_some() {
        match &config.replay_dir {
            Some(dir) if !dir.join("public-code.key").exists() => tracing::warn!(
                "spectator delay: the public-code key could not be kept in {}; public codes change \
                 at the next start (set PUBLIC_CODE_KEY)",
                dir.display()
            ),
            None => tracing::warn!(
                "spectator delay: replay logs are off, so public codes change at the next start \
                 (set PUBLIC_CODE_KEY)"
            ),
            _ => {}
        }
    }
    let config = Arc::new(config);
    let (mesh, inboxes) = Mesh::new(shards);
    let cluster = config.cluster.clone().map(|c| {
        tracing::info!(
            "cluster mode: node {} on NATS {} (prefix {})",
            c.node_id,
            c.url.rsplit('@').next().unwrap_or_default(),
            c.prefix
        );
        crate::cluster::Cluster::start(c, shards, mesh.clone(), global.metrics.clone())
    });
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(shards);
    let ring_depth = super::preflight::ring_depth();
    for (id, inbox) in inboxes.into_iter().enumerate() {
        let backend = backend.clone();
        let cluster = cluster.clone();
        let ports = ports.clone();
        let (config, mesh, global, tls, ready) = (
            config.clone(),
            mesh.clone(),
            global.clone(),
            tls.clone(),
            ready_tx.clone(),
        );
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("shard-{id}"))
            .io_memory(1 << 20)
            .ring_depth(ring_depth)
            .spawn(move || async move {
                if let Some(stats) = global.metrics.shards.get(id) {
                    crate::metrics::set_local(stats.clone());
                }
                let limits = global.limits.clone();
                let services_mesh = mesh.clone();
                let shard = Shard::new(
                    id,
                    config.clone(),
                    mesh,
                    global,
                    backend,
                    Wiring {
                        fanout: match &cluster {
                            Some(c) => Box::new(crate::cluster::NatsFanout { cluster: c.clone() }),
                            None => Box::new(crate::fanout::LocalFanout),
                        },
                        dispatch: super::router::dispatch,
                    },
                    |me| {
                        let services = super::sessions::ShardServices {
                            shard: me,
                            mesh: services_mesh,
                        };
                        crate::app::SpectraApp::new(Box::new(services), limits)
                    },
                );
                if let Some(c) = cluster {
                    crate::cluster::install(&shard, c);
                }
                crate::registry::recover(&shard);
                let mut listeners = Vec::new();
                for (port, number) in ports {
                    match bind_shared(SocketAddr::new(config.bind, number)) {
                        Ok(l) => listeners.push((port, l)),
                        Err(e) => {
                            let _ =
                                ready.send(Err(format!("shard {id}: cannot bind {number}: {e}")));
                            return;
                        }
                    }
                }
                for (port, listener) in listeners {
                    let task =
                        glommio::spawn_local(serve(shard.clone(), listener, port, tls.clone()))
                            .detach();
                    shard.listeners.borrow_mut().push(task);
                }
                glommio::spawn_local(super::router::run_inbox(shard.clone(), inbox)).detach();
                glommio::spawn_local(ticker(shard.clone())).detach();
                let _ = ready.send(Ok(()));
                drop(ready);
                futures_lite::future::pending::<()>().await;
            })
            .map_err(|e| format!("cannot start shard {id}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a shard stopped during start-up".into()),
        }
    }
    Ok(Running {
        handles,
        global,
        mesh,
        tls: tls_store,
        cluster,
    })
}

fn new_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    Ok(socket)
}

/// A listener that every shard binds to the same port (SO_REUSEPORT: the kernel spreads
/// connections over the shards; SO_REUSEADDR: restarts are not blocked by TIME_WAIT).
fn bind_shared(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = new_socket(addr)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    // SAFETY: the descriptor is a listening TCP socket we own and hand over exactly once.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// The 100 ms broadcast tick of the matches this shard owns (drift-free schedule).
async fn ticker(shard: Rc<Shard>) {
    let period = shard.config.tick;
    let mut next = Instant::now() + period;
    loop {
        let now = Instant::now();
        if next > now {
            glommio::timer::sleep(next - now).await;
        }
        crate::registry::tick(&shard);
        next += period;
        let now = Instant::now();
        if next + period < now {
            next = now + period; // fell far behind: do not burst
        }
    }
}

/// Probes kernel TLS, turns the hand-off to it on when it is there and wanted, and says what
/// it found (once, at start). Whether the kernel offers it.
fn kernel_tls(wanted: bool) -> bool {
    match crate::transport::tls::kernel_tls() {
        crate::transport::tls::KernelTls::Available => {
            crate::transport::ktls::set_enabled(wanted);
            if wanted {
                tracing::info!(
                    "tls: kernel TLS (kTLS) is available: TLS 1.3 connections hand their records to the kernel after the handshake (KERNEL_TLS=off keeps them in user space)"
                );
            } else {
                tracing::info!(
                    "tls: kernel TLS (kTLS) is available but KERNEL_TLS=off: TLS records are sealed in user space"
                );
            }
            true
        }
        crate::transport::tls::KernelTls::Missing(why) => {
            tracing::info!("tls: no kernel TLS ({why}); TLS records are sealed in user space");
            false
        }
    }
}
