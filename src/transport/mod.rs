//! Network protocols. Everything that knows no application lives in its own crate
//! (`crates/transport`, `spectra-transport`, re-exported here): `http`, `websocket`, `packets`,
//! `outbound`, `polling`, `stream`, `tls`, `forwarded`, `stats`, and the session layer
//! `engineio` + `socketio` (generic over an `engineio::App`; Spectra's is `crate::app`). Here,
//! the server crate: `site` (what Spectra's listeners serve: admission, per-port counting, the
//! routes) and `routes`.

pub use spectra_transport::{
    engineio, forwarded, http, outbound, packets, polling, server, socketio, stats, stream, tls,
    websocket,
};

pub mod routes;
pub mod site;
