//! What TLS adds to one delivery, in user space: one frame encrypted for one connection.
//! - `aead seal`: ring's AES-128-GCM (the suite browsers pick) over the frame in place — the
//!   floor any user-space TLS pays per connection and frame (each connection has its own key);
//!   A TLS 1.3 delivery (handed off: `handoff::Sealed::send_now`) is this plus the record's
//!   header, content type and tag, appended in one buffer per thread;
//! - `rustls write`: the path a TLS 1.2 delivery takes (and every TLS delivery took before the
//!   hand-off): the frame written into an established rustls server connection and its record
//!   taken out as bytes (`write_tls` into a buffer instead of the socket), i.e. copy, seal,
//!   record framing and rustls's queue.
//!
//! Frame sizes: a snapshot as overlays get it, permessage-deflated (≈ 3.4 KB) and plain
//! (≈ 15 KB). Run: `cargo bench --bench tls`.

use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::pki_types::{PrivateKeyDer, ServerName};

/// An established client/server pair (TLS 1.3, AES-128-GCM), handshaken in memory.
fn pair() -> rustls::ServerConnection {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .expect("params")
        .self_signed(&key)
        .expect("certificate");
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    let provider = Arc::new(provider);
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut s = rustls::ServerConnection::new(Arc::new(server)).expect("server");
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
    let mut wire = Vec::new();
    while s.is_handshaking() || c.is_handshaking() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("client out");
        }
        s.read_tls(&mut &wire[..]).expect("server in");
        s.process_new_packets().expect("server");
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).expect("server out");
        }
        c.read_tls(&mut &wire[..]).expect("client in");
        c.process_new_packets().expect("client");
    }
    // The tickets the server sent are out; check the pair carries data.
    s.writer().write_all(b"ping").expect("write");
    wire.clear();
    s.write_tls(&mut wire).expect("out");
    c.read_tls(&mut &wire[..]).expect("in");
    c.process_new_packets().expect("client");
    let mut got = [0u8; 4];
    c.reader().read_exact(&mut got).expect("read");
    assert_eq!(&got, b"ping");
    s
}

fn bench(c: &mut Criterion) {
    let mut server = pair();
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[7u8; 16]).expect("key"));
    let mut group = c.benchmark_group("tls per delivery");
    for (name, len) in [("deflated 3.4 KB", 3_420usize), ("plain 15 KB", 15_000)] {
        let frame = vec![0x5au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = Vec::with_capacity(len + 16);
        let mut seq = 0u64;
        group.bench_function(format!("aead seal, {name}"), |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&frame);
                seq += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&seq.to_be_bytes());
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from([23u8, 3, 3, 0, 0]),
                    &mut buf,
                )
                .expect("seal");
                std::hint::black_box(&buf);
            })
        });
        let mut wire = Vec::with_capacity(len + 64);
        group.bench_function(format!("rustls write, {name}"), |b| {
            b.iter(|| {
                server.writer().write_all(&frame).expect("write");
                wire.clear();
                while server.wants_write() {
                    server.write_tls(&mut wire).expect("out");
                }
                std::hint::black_box(&wire);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
