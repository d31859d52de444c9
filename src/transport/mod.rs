//! Network protocols: the transport crate (`crates/transport`, `spectra-transport`), re-exported
//! so the server names its layers as `transport::…`: `http`, `websocket`, `packets`, `outbound`,
//! `polling`, `stream`, `tls`, `handoff` (TLS 1.3 records after the handshake), `ktls` (the kernel's), `forwarded`, `stats`, the session layer `engineio` + `socketio`
//! (generic over an `engineio::App`; Spectra's is `crate::app`) and the connection loop `server`
//! (generic over a `server::Site`; Spectra's is `crate::site`).

pub use spectra_transport::{
    engineio, forwarded, handoff, http, ktls, outbound, packets, polling, server, socketio, stats,
    stream, tls, websocket,
};
