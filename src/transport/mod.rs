//! Network protocols, layered: `http` (HTTP/1.1), `websocket` (RFC 6455 + deflate), `engineio`
//! (sessions and transports), `socketio` (namespaces and events), plus the connection plumbing
//! (`stream`, `tls`, `outbound`, `server`).

pub mod echo;
pub mod engineio;
pub mod forwarded;
pub mod http;
pub mod outbound;
pub mod packets;
pub mod routes;
pub mod server;
pub mod service;
pub mod socketio;
pub mod stream;
pub mod tls;
pub mod websocket;
