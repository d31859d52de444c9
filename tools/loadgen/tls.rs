//! The load generator's TLS client (`--tls`): a rustls client configuration trusting `--ca` (or,
//! with `--insecure`, any certificate whose handshake signature checks out), and per-client
//! session tickets so that a client that reconnects can resume its own session, as a browser
//! would. The handshake runs over the transport's `HandshakeIo` (whole records into rustls), so
//! that the connection can be handed off once the server's tickets are in (`ws::Client::connect`):
//! from then on records are opened in place, many per read, without rustls's buffers — a
//! generator counting 50,000 states a second must not spend its core reading 4 KB at a time.
//! Knows nothing about WebSocket or Socket.IO.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};

pub type TlsStream = spectra::transport::handoff::ClientTlsStream;

/// How clients speak TLS: one shared configuration, cloned per client with its own ticket
/// store (`for_client`).
#[derive(Clone)]
pub struct Tls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// One client's TLS: its configuration (its own session store) and the server's name.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

/// What one handshake cost the client, and whether it resumed a session.
#[derive(Clone, Copy, Debug)]
pub struct Handshake {
    pub time: Duration,
    pub resumed: bool,
    /// The cipher suite negotiated.
    pub suite: Option<rustls::CipherSuite>,
}

/// ring's suites, TLS 1.3 in the order browsers offer them (Chromium, which runs OBS browser
/// sources, and Firefox: AES-128-GCM first), so the server negotiates what an overlay would.
fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    Arc::new(provider)
}

impl Tls {
    /// Trusts the certificates in the PEM file `ca`, or with `insecure` any certificate.
    pub fn new(ca: Option<&Path>, insecure: bool, name: &str) -> Result<Tls, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("tls: {e}"))?;
        let mut config = match (ca, insecure) {
            (Some(path), _) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read --ca {}: {e}", path.display()))?
                {
                    let cert = cert.map_err(|e| format!("bad certificate in --ca: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--ca {}: {e}", path.display()))?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider().signature_verification_algorithms,
                )))
                .with_no_client_auth(),
            (None, false) => return Err("--tls needs --ca FILE or --insecure".into()),
        };
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("--server-name {name}: {e}"))?;
        // The reader hands the connection off after its upgrade response (`ws::Client`).
        config.enable_secret_extraction = true;
        Ok(Tls {
            config: Arc::new(config),
            name,
        })
    }

    /// A client's own copy: its tickets are its own (a browser tab reconnecting).
    pub fn for_client(&self) -> ClientTls {
        let mut config = (*self.config).clone();
        config.resumption = Resumption::store(Arc::new(ClientSessionMemoryCache::new(1)));
        ClientTls {
            config: Arc::new(config),
            name: self.name.clone(),
        }
    }
}

impl ClientTls {
    /// The TLS handshake over `tcp`, timed from `started` (the TCP connect's start).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        started: Instant,
    ) -> Result<(TlsStream, Handshake), String> {
        let connector = futures_rustls::TlsConnector::from(self.config.clone());
        let stream = connector
            .connect(
                self.name.clone(),
                spectra::transport::handoff::HandshakeIo::new(tcp),
            )
            .await
            .map_err(|e| format!("tls handshake: {e}"))?;
        let conn = stream.get_ref().1;
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
        Ok((
            stream,
            Handshake {
                time: started.elapsed(),
                resumed,
                suite,
            },
        ))
    }
}

/// `--insecure`: any certificate, but the handshake's signature must still be valid for it.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
