//! TLS set-up: loads the PEM key and certificate (or generates a self-signed pair the way the
//! original's Docker entrypoint does) and builds the rustls server configuration shared by all
//! listeners. The certificate sits in a `CertStore` that a reload (SIGHUP, or a change of the
//! files) swaps for new handshakes; connections already open keep theirs. Must not touch
//! sockets; `stream.rs` wraps connections with the acceptor.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate in use, swapped by `reload`. Read once per TLS handshake (never per message).
#[derive(Debug)]
pub struct CertStore {
    key: PathBuf,
    cert: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Modification times of the files last tried, so a change is noticed once.
    seen: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl CertStore {
    /// Loads the pair again. On success new handshakes use it; on failure the old pair stays in
    /// use and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        self.note_seen();
        let fresh = load(&self.key, &self.cert)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(fresh);
        }
        Ok(())
    }

    /// True when either file changed since it was last loaded or tried.
    pub fn files_changed(&self) -> bool {
        let now = (modified(&self.key), modified(&self.cert));
        self.seen.read().is_ok_and(|seen| *seen != now)
    }

    fn note_seen(&self) {
        if let Ok(mut seen) = self.seen.write() {
            *seen = (modified(&self.key), modified(&self.cert));
        }
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

pub use crate::tickets::Tickets;

/// The rustls configuration of every listener, the store its certificate comes from and its
/// session tickets.
pub struct Tls {
    pub config: Arc<ServerConfig>,
    pub store: Arc<CertStore>,
    pub tickets: Option<Arc<Tickets>>,
}

/// How a returning client skips the full handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumption {
    /// Session tickets whose keys rotate every this long (a ticket is accepted for one to two
    /// periods); `None`: no tickets.
    pub ticket_period: Option<std::time::Duration>,
    /// Sessions remembered by id (TLS 1.2 clients without tickets, and TLS 1.3 when tickets
    /// are off); 0: none. A bounded cache: the oldest are forgotten first.
    pub cache_entries: usize,
}

/// Loads `key`/`cert`; when neither file exists, generates a self-signed certificate for
/// `CN=<name>` (and `localhost`), writes both files and uses them.
pub fn server_config(
    key: &Path,
    cert: &Path,
    name: &str,
    resumption: &Resumption,
) -> Result<Tls, String> {
    if !key.exists() && !cert.exists() {
        generate_self_signed(key, cert, name)?;
        tracing::info!(
            "tls: generated a self-signed certificate at {} (key {})",
            cert.display(),
            key.display()
        );
    }
    let store = Arc::new(CertStore {
        key: key.to_path_buf(),
        cert: cert.to_path_buf(),
        current: RwLock::new(Arc::new(load(key, cert)?)),
        seen: RwLock::new((None, None)),
    });
    store.note_seen();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store.clone());
    // A TLS 1.3 connection's keys are taken from rustls once its handshake is done (`handoff`).
    config.enable_secret_extraction = true;
    let tickets = resumption
        .ticket_period
        .map(|period| Arc::new(Tickets::new(period)));
    if let Some(t) = &tickets {
        config.ticketer = t.clone();
    }
    config.session_storage = if resumption.cache_entries > 0 {
        rustls::server::ServerSessionMemoryCache::new(resumption.cache_entries)
    } else {
        Arc::new(rustls::server::NoServerSessionStorage {})
    };
    Ok(Tls {
        config: Arc::new(config),
        store,
        tickets,
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks one key/certificate pair.
fn load(key: &Path, cert: &Path) -> Result<CertifiedKey, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read SERVER_CERT {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read SERVER_KEY {}: {e}", key.display()))?;
    CertifiedKey::from_der(certs, key_der, &provider())
        .map_err(|e| format!("tls: key and certificate do not match: {e}"))
}

fn generate_self_signed(key: &Path, cert: &Path, name: &str) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(vec![name.into(), "localhost".into()])
        .map_err(|e| format!("tls: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pair = rcgen::KeyPair::generate().map_err(|e| format!("tls: {e}"))?;
    let certificate = params.self_signed(&pair).map_err(|e| format!("tls: {e}"))?;
    for path in [key, cert] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    std::fs::write(key, pair.serialize_pem())
        .map_err(|e| format!("cannot write {}: {e}", key.display()))?;
    std::fs::write(cert, certificate.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    Ok(())
}

/// Whether the kernel can take over TLS records (kTLS: the `tls` upper-layer protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelTls {
    Available,
    /// Why not (the errno of the probe, or what could not be probed).
    Missing(String),
}

/// Probes for kernel TLS the way it is used: `TCP_ULP` "tls" on an established loopback TCP
/// connection (which also loads the module when the kernel has it as one).
pub fn kernel_tls() -> KernelTls {
    use std::os::fd::AsRawFd;
    let loaded = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
        .is_ok_and(|ulps| ulps.split_whitespace().any(|u| u == "tls"));
    if loaded {
        return KernelTls::Available;
    }
    let probe = || -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
        crate::ktls::attach(stream.as_raw_fd())
    };
    match probe() {
        Ok(()) => KernelTls::Available,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            KernelTls::Missing("this kernel has no `tls` module (CONFIG_TLS)".into())
        }
        Err(e) => KernelTls::Missing(format!("TCP_ULP tls: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let (k, c) = (
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}.crt")),
        );
        generate_self_signed(&k, &c, "test").expect("generate");
        (k, c)
    }

    #[test]
    fn a_mismatched_pair_is_refused_and_the_old_one_stays() {
        let dir = std::env::temp_dir().join(format!("transport-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (k1, c1) = pair(&dir, "a");
        let (k2, _c2) = pair(&dir, "b");
        let tls = server_config(
            &k1,
            &c1,
            "test",
            &Resumption {
                ticket_period: None,
                cache_entries: 0,
            },
        )
        .expect("first pair loads");
        let before = tls.store.current.read().expect("lock").clone();
        assert!(!tls.store.files_changed());
        std::fs::copy(&k2, &k1).expect("copy"); // key of b, certificate of a
        let err = tls.store.reload().expect_err("mismatch refused");
        assert!(err.contains("do not match"), "{err}");
        let after = tls.store.current.read().expect("lock").clone();
        assert!(Arc::ptr_eq(&before, &after));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
