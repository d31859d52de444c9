//! TLS set-up: loads the PEM key and certificate (or generates a self-signed pair the way the
//! original's Docker entrypoint does) and builds the rustls server configuration shared by all
//! listeners. Must not touch sockets; `stream.rs` wraps connections with the acceptor.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Loads `key`/`cert`; when neither file exists, generates a self-signed certificate for
/// `CN=spectra` (and `localhost`), writes both files and uses them.
pub fn server_config(key: &Path, cert: &Path) -> Result<Arc<ServerConfig>, String> {
    if !key.exists() && !cert.exists() {
        generate_self_signed(key, cert)?;
        tracing::info!(
            "tls: generated a self-signed certificate at {} (key {})",
            cert.display(),
            key.display()
        );
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read SERVER_CERT {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read SERVER_KEY {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| format!("tls: key and certificate do not match: {e}"))?;
    Ok(Arc::new(config))
}

fn generate_self_signed(key: &Path, cert: &Path) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(vec!["spectra".into(), "localhost".into()])
        .map_err(|e| format!("tls: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "spectra");
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
