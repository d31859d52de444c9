//! Network protocols: the transport crate (`crates/transport`, `spectra-transport`), re-exported
//! so the server names its layers as `transport::…`: `http`, `websocket`, `packets`, `outbound`,
//! `polling`, `stream`, `tls`, `forwarded`, `stats`, the session layer `engineio` + `socketio`
//! (generic over an `engineio::App`; Spectra's is `crate::app`) and the connection loop `server`
//! (generic over a `server::Site`; Spectra's is `crate::site`).

pub use spectra_transport::{
    engineio, forwarded, http, outbound, packets, polling, server, socketio, stats, stream, tls,
    websocket,
};
