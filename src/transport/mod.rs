//! Network protocols. Everything that knows no application lives in its own crate
//! (`crates/transport`, `spectra-transport`, re-exported here): `http`, `websocket`, `packets`,
//! `outbound`, `polling`, `stream`, `tls`, `forwarded`, `stats`, and the session layer
//! `engineio` + `socketio` (generic over an `engineio::App`; Spectra's is `crate::app`). Here,
//! still in the server crate: `server` (accept loops and the HTTP connection loop), `routes`,
//! `service` (the conformance example's seam) and `echo`.

pub use spectra_transport::{
    engineio, forwarded, http, outbound, packets, polling, server, socketio, stats, stream, tls,
    websocket,
};

pub mod echo;
pub mod routes;
pub mod service;
pub mod site;
