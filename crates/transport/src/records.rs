//! TLS 1.3 application records after the handshake (RFC 8446 §5), with the traffic keys rustls
//! derived: the same hand-off as kernel TLS (`rustls::ExtractedSecrets`), done in user space.
//! A connection then keeps two AEAD keys, their sequence numbers and nothing else: no rustls
//! connection with its buffers (an idle `wss` connection's memory is the keys).
//!
//! Owns: record framing, nonces, sequence numbers and their limit, the inner content type, the
//! alerts a peer may send. Must not touch: the handshake, certificates, tickets, the key schedule
//! (all rustls's), sockets or buffers (the caller's: see `handoff`).

use std::io;

use ring::aead::{
    AES_128_GCM, AES_256_GCM, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey,
};
use rustls::ConnectionTrafficSecrets;

/// A record's header: content type, legacy version, length.
pub const HEADER: usize = 5;
/// The AEAD tag every record ends with (all three TLS 1.3 AEADs).
const TAG: usize = 16;
/// Largest plaintext of one record.
pub const MAX_PLAIN: usize = 1 << 14;
/// Largest ciphertext of one record (RFC 8446 §5.2: plaintext, content type, padding, tag).
pub const MAX_CIPHER: usize = MAX_PLAIN + 256;
/// What sealing adds to each record: header, inner content type, tag.
pub const OVERHEAD: usize = HEADER + 1 + TAG;

const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;
/// Handshake message type of a TLS 1.3 KeyUpdate.
const KEY_UPDATE: u8 = 24;

/// One direction's key (as rustls derived it), its static IV and the next record's sequence
/// number.
struct Secret {
    alg: &'static ring::aead::Algorithm,
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Secret {
    fn new(seq: u64, secrets: &ConnectionTrafficSecrets) -> Result<Self, String> {
        let (alg, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&CHACHA20_POLY1305, key, iv),
            _ => return Err("a cipher suite this server does not hand off".into()),
        };
        let key = key.as_ref();
        if key.len() != alg.key_len() || key.len() > 32 {
            return Err("a key of the wrong length".into());
        }
        let mut bytes = [0u8; 32];
        bytes[..key.len()].copy_from_slice(key);
        let iv: [u8; 12] = iv
            .as_ref()
            .try_into()
            .map_err(|_| "an IV of the wrong length")?;
        Ok(Secret {
            alg,
            key: bytes,
            iv,
            seq,
        })
    }

    /// The expanded key (AES round keys and GHASH tables: 544 bytes).
    fn expand(&self) -> io::Result<LessSafeKey> {
        UnboundKey::new(self.alg, &self.key[..self.alg.key_len()])
            .map(LessSafeKey::new)
            .map_err(|_| bad("a key of the wrong length"))
    }

    /// The per-record nonce (RFC 8446 §5.3): the IV xor the sequence number, left-padded.
    fn nonce(&self) -> Nonce {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        Nonce::assume_unique_for_key(nonce)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Not left behind in freed memory (best effort: no compiler barrier is promised).
        for b in self.key.iter_mut() {
            // SAFETY: a valid, aligned pointer to a byte of `self.key`.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// A connection's two directions after its TLS 1.3 handshake.
pub struct Records {
    /// Sending: expanded once (every delivery uses it).
    tx: Secret,
    tx_key: LessSafeKey,
    /// Receiving: expanded while records are opened only (a client sends little — a ping now
    /// and then), so an idle connection holds one expanded key, not two.
    rx: Secret,
    /// Records this side may seal with one key (the suite's confidentiality limit); beyond it the
    /// connection ends (the client reconnects, resuming its session) instead of reusing nonces'
    /// key past its safe use.
    limit: u64,
}

/// What `Records::open` found in a buffer of records.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    /// Plaintext bytes now at the start of the buffer.
    pub plain: usize,
    /// Bytes of whole records used; the rest is the start of a record still arriving.
    pub consumed: usize,
    /// The peer sent close_notify: nothing after it counts.
    pub closed: bool,
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Records {
    /// From what rustls extracted once the handshake was done (`dangerous_extract_secrets`) and
    /// the suite's confidentiality limit.
    pub fn new(secrets: &rustls::ExtractedSecrets, limit: u64) -> Result<Records, String> {
        let tx = Secret::new(secrets.tx.0, &secrets.tx.1)?;
        let tx_key = tx.expand().map_err(|e| e.to_string())?;
        Ok(Records {
            tx,
            tx_key,
            rx: Secret::new(secrets.rx.0, &secrets.rx.1)?,
            limit,
        })
    }

    /// One direction's key as the kernel takes it (`ktls`): the next record's sequence number
    /// is where the kernel goes on from.
    pub(crate) fn kernel_key(&self, tx: bool) -> crate::ktls::KernelKey<'_> {
        use crate::ktls::Cipher;
        let secret = if tx { &self.tx } else { &self.rx };
        let cipher = if secret.alg == &AES_128_GCM {
            Cipher::Aes128Gcm
        } else if secret.alg == &AES_256_GCM {
            Cipher::Aes256Gcm
        } else {
            Cipher::Chacha20Poly1305
        };
        crate::ktls::KernelKey {
            cipher,
            key: &secret.key[..secret.alg.key_len()],
            iv: &secret.iv,
            seq: secret.seq,
        }
    }

    /// Counts the records the kernel sealed for a `send` of `sent` plaintext bytes (at most one
    /// per `MAX_PLAIN` begun: each `send` ends its last record), so the key's limit holds there
    /// too; an error once it is reached (or before a send, with `sent` 0).
    pub(crate) fn sealed_by_kernel(&mut self, sent: usize) -> io::Result<()> {
        self.tx.seq = self.tx.seq.saturating_add(sent.div_ceil(MAX_PLAIN) as u64);
        if self.tx.seq >= self.limit {
            return Err(bad("the key's record limit is reached; reconnect"));
        }
        Ok(())
    }

    /// Appends `plain` to `out` as application-data records (each ≤ `MAX_PLAIN` of it).
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.reserve(plain.len() + plain.len().div_ceil(MAX_PLAIN).max(1) * OVERHEAD);
        let mut chunks = plain.chunks(MAX_PLAIN);
        let first = chunks.next().unwrap_or(&[]);
        self.seal_one(APPLICATION_DATA, first, out)?;
        for chunk in chunks {
            self.seal_one(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// Appends a close_notify alert (the last record this side sends).
    pub fn seal_close_notify(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.seal_one(ALERT, &[1, 0], out)
    }

    fn seal_one(&mut self, inner_type: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.tx.seq >= self.limit {
            return Err(bad("the key's record limit is reached; reconnect"));
        }
        let len = plain.len() + 1 + TAG;
        let [hi, lo] = u16::try_from(len)
            .map_err(|_| bad("a record too long"))?
            .to_be_bytes();
        let header = [APPLICATION_DATA, 3, 3, hi, lo];
        out.extend_from_slice(&header);
        let start = out.len();
        out.extend_from_slice(plain);
        out.push(inner_type);
        let tag = self
            .tx_key
            .seal_in_place_separate_tag(self.tx.nonce(), Aad::from(header), &mut out[start..])
            .map_err(|_| bad("sealing failed"))?;
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        Ok(())
    }

    /// Opens every whole record at the start of `buf` in place: their plaintext ends up at the
    /// start of `buf` (in order), alerts and handshake messages are handled. A record the peer
    /// could not have sent correctly (tampered, oversized, an unexpected type) is an error: the
    /// connection cannot continue.
    pub fn open(&mut self, buf: &mut [u8]) -> io::Result<Opened> {
        let mut at = 0;
        let mut plain = 0;
        let mut key = None;
        while buf.len() - at >= HEADER {
            let header: [u8; HEADER] =
                [buf[at], buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]];
            if header[0] != APPLICATION_DATA {
                return Err(bad("a record that is not encrypted application data"));
            }
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if len > MAX_CIPHER {
                return Err(bad("a record longer than TLS allows"));
            }
            if len <= TAG {
                return Err(bad("a record too short to hold its tag"));
            }
            if buf.len() - at - HEADER < len {
                break; // the rest of it has not arrived
            }
            let body = &mut buf[at + HEADER..at + HEADER + len];
            let key = match &mut key {
                Some(key) => key,
                None => key.insert(self.rx.expand()?),
            };
            let opened = key
                .open_in_place(self.rx.nonce(), Aad::from(header), body)
                .map_err(|_| bad("a record that does not authenticate"))?;
            self.rx.seq += 1;
            // The inner plaintext: content, its type, zero padding (RFC 8446 §5.4).
            let Some(type_at) = opened.iter().rposition(|&b| b != 0) else {
                return Err(bad("a record without a content type"));
            };
            let inner_type = opened[type_at];
            let content = at + HEADER..at + HEADER + type_at;
            at += HEADER + len;
            let first = (!content.is_empty()).then(|| buf[content.start]);
            match inner_type {
                APPLICATION_DATA => {
                    let n = content.len();
                    buf.copy_within(content, plain);
                    plain += n;
                }
                ALERT => {
                    // close_notify (description 0) ends the stream; any other alert is fatal.
                    if content.len() == 2 && buf[content.start + 1] == 0 {
                        return Ok(Opened {
                            plain,
                            consumed: at,
                            closed: true,
                        });
                    }
                    return Err(bad("the peer sent a TLS alert"));
                }
                HANDSHAKE if first == Some(KEY_UPDATE) => {
                    return Err(bad(
                        "the peer updated its TLS keys (KeyUpdate), which this server does not follow",
                    ));
                }
                _ => return Err(bad("an unexpected TLS message after the handshake")),
            }
        }
        Ok(Opened {
            plain,
            consumed: at,
            closed: false,
        })
    }

    /// The length of the whole record starting `buf` (when its header has arrived).
    pub fn record_len(buf: &[u8]) -> Option<usize> {
        let header = buf.get(..HEADER)?;
        Some(HEADER + usize::from(u16::from_be_bytes([header[3], header[4]])))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::ops::DerefMut;
    use std::sync::Arc;

    /// A blocking rustls client of a test server at `addr` (retried until it listens, 10 s),
    /// its handshake done, reads timing out after 20 s.
    pub(crate) fn tls_client(
        addr: std::net::SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        use std::time::{Duration, Instant};
        let started = Instant::now();
        let mut tcp = loop {
            match std::net::TcpStream::connect(addr) {
                Ok(tcp) => break tcp,
                Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        tcp.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut conn = rustls::ClientConnection::new(config, name).expect("client");
        while conn.is_handshaking() {
            conn.complete_io(&mut tcp).expect("handshake");
        }
        rustls::StreamOwned::new(conn, tcp)
    }

    /// A server config for a fresh self-signed "localhost" certificate, allowing secret
    /// extraction (as `tls::server_config` does), and a client config trusting it that speaks
    /// only `version` (and only `suite`, when given).
    pub(crate) fn configs(
        suite: Option<rustls::SupportedCipherSuite>,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (rustls::ServerConfig, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(suite) = suite {
            provider.cipher_suites = vec![suite];
        }
        let provider = Arc::new(provider);
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        server.enable_secret_extraction = true;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        (server, Arc::new(client))
    }

    /// A rustls client and server that finished a TLS 1.3 handshake in memory.
    fn handshake(
        suite: Option<rustls::SupportedCipherSuite>,
    ) -> (rustls::ClientConnection, rustls::ServerConnection) {
        let (server, client) = configs(suite, &rustls::version::TLS13);
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let mut c = rustls::ClientConnection::new(client, name).expect("client");
        let mut s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
        for _ in 0..10 {
            pump(c.deref_mut(), s.deref_mut());
            pump(s.deref_mut(), c.deref_mut());
        }
        assert!(!c.is_handshaking() && !s.is_handshaking());
        (c, s)
    }

    fn pump<A, B>(from: &mut rustls::ConnectionCommon<A>, to: &mut rustls::ConnectionCommon<B>) {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).expect("write");
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read");
        }
        to.process_new_packets().expect("process");
    }

    fn records(s: rustls::ServerConnection) -> Records {
        let limit = s
            .negotiated_cipher_suite()
            .and_then(|s| s.tls13())
            .map(|s| s.common.confidentiality_limit)
            .expect("TLS 1.3");
        let secrets = s.dangerous_extract_secrets().expect("secrets");
        Records::new(&secrets, limit).expect("records")
    }

    fn client_sends(c: &mut rustls::ClientConnection, plain: &[u8]) -> Vec<u8> {
        c.writer().write_all(plain).expect("write");
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("write");
        }
        wire
    }

    fn client_reads(c: &mut rustls::ClientConnection, mut wire: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        while !wire.is_empty() {
            c.read_tls(&mut wire).expect("read");
            c.process_new_packets()
                .expect("records a real client accepts");
            match c.reader().read_to_end(&mut got) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn a_real_client_reads_what_is_sealed_and_is_read_in_every_suite() {
        let suites = rustls::crypto::ring::default_provider().cipher_suites;
        let suites: Vec<_> = suites.into_iter().filter(|s| s.tls13().is_some()).collect();
        assert_eq!(suites.len(), 3);
        for suite in suites {
            let (mut c, s) = handshake(Some(suite));
            // The server's tickets were sent before the hand-off: the client has them.
            let mut r = records(s);
            // Server → client: small, one record's worth, several records.
            for size in [0usize, 1, 3_000, MAX_PLAIN, 40_000] {
                let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
                let mut wire = Vec::new();
                r.seal(&plain, &mut wire).expect("seal");
                assert_eq!(client_reads(&mut c, &wire), plain, "{suite:?} {size}");
            }
            // Client → server, arriving in pieces of every size (fresh keys for each pass).
            for piece in [1usize, 5, 7, 1000, 16_000] {
                let (mut c, s) = handshake(Some(suite));
                let mut r = records(s);
                let plain: Vec<u8> = (0..30_000).map(|i| (i % 253) as u8).collect();
                let wire = client_sends(&mut c, &plain);
                let mut got = Vec::new();
                let mut pending: Vec<u8> = Vec::new();
                for chunk in wire.chunks(piece) {
                    pending.extend_from_slice(chunk);
                    let o = r.open(&mut pending).expect("open");
                    assert!(!o.closed);
                    got.extend_from_slice(&pending[..o.plain]);
                    pending.drain(..o.consumed);
                }
                assert!(pending.is_empty());
                assert_eq!(got, plain, "{suite:?} pieces of {piece}");
            }
        }
    }

    #[test]
    fn close_notify_ends_the_stream_and_what_follows_is_ignored() {
        let (mut c, s) = handshake(None);
        let mut r = records(s);
        let mut wire = client_sends(&mut c, b"last words");
        c.send_close_notify();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("write");
        }
        wire.extend_from_slice(b"\x17\x03\x03\x00\x20junk after the end");
        let o = r.open(&mut wire).expect("open");
        assert!(o.closed);
        assert_eq!(&wire[..o.plain], b"last words");
        // The server's own close_notify is one the client understands.
        let mut out = Vec::new();
        r.seal_close_notify(&mut out).expect("seal");
        let mut rest = &out[..];
        c.read_tls(&mut rest).expect("read");
        let state = c.process_new_packets().expect("process");
        assert!(state.peer_has_closed());
    }

    #[test]
    fn tampered_oversized_and_unexpected_records_are_refused() {
        let (mut c, s) = handshake(None);
        let mut r = records(s);
        let mut wire = client_sends(&mut c, b"hello");
        let last = wire.len() - 1;
        wire[last] ^= 1;
        assert!(r.open(&mut wire).is_err(), "a flipped bit");

        let (_, s) = handshake(None);
        let mut r = records(s);
        let mut big = vec![APPLICATION_DATA, 3, 3, 0x41, 0x01];
        big.resize(HEADER + 0x4101, 0);
        assert!(r.open(&mut big).is_err(), "longer than TLS allows");
        let mut plain_type = vec![HANDSHAKE, 3, 3, 0, 20];
        plain_type.resize(25, 0);
        assert!(r.open(&mut plain_type).is_err(), "an unencrypted record");
        let mut short = vec![APPLICATION_DATA, 3, 3, 0, 16];
        short.resize(21, 0);
        assert!(r.open(&mut short).is_err(), "no room for a content type");

        // A KeyUpdate from the client: refused with a clear reason (the client reconnects).
        let (mut c, s) = handshake(None);
        let mut r = records(s);
        c.refresh_traffic_keys().expect("key update");
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("write");
        }
        let err = r.open(&mut wire).expect_err("KeyUpdate");
        assert!(err.to_string().contains("KeyUpdate"), "{err}");
    }

    #[test]
    fn the_key_stops_at_its_limit() {
        let (_, s) = handshake(None);
        let mut r = records(s);
        r.limit = r.tx.seq + 2;
        let mut out = Vec::new();
        r.seal(b"a", &mut out).expect("first");
        r.seal(b"b", &mut out).expect("second");
        assert!(r.seal(b"c", &mut out).is_err());
    }
}
