//! Network protocols. The layers that know no application live in their own crate
//! (`crates/transport`, `spectra-transport`, re-exported here): `http`, `websocket`, `packets`,
//! `outbound`, `stream`, `tls`, `forwarded`, `stats`. Here, still in the server crate until they
//! are generic over an application: `engineio` (sessions and transports), `socketio`
//! (namespaces and events), `server` (accept loops), `routes`, `service`, `echo`.

pub use spectra_transport::{
    forwarded, http, outbound, packets, polling, stats, stream, tls, websocket,
};

pub mod echo;
pub mod engineio;
pub mod routes;
pub mod server;
pub mod service;
pub mod socketio;
