//! The protocol layers under any application, for glommio executors (one per core):
//!
//! - `server`: accept loop and HTTP/1.1 connection loop, generic over a `server::Site` (who may
//!   connect, what a request means); `http` (requests and responses), `stream` (plain or TLS),
//!   `tls` (certificates, reload, session resumption with `tickets`), `handoff` (a TLS 1.3
//!   connection's own `records` once rustls has made the handshake, or the kernel's: `ktls`), `forwarded` (the client address behind trusted proxies).
//! - `engineio` + `socketio`: Engine.IO v4 sessions (long-polling, WebSocket, upgrade, sessions
//!   that move between shards) and Socket.IO v5 on top, generic over an `engineio::App`;
//!   `packets` (their codecs), `polling` (what waits for a long-polling client: latest state
//!   wins), `random` (ids).
//! - `websocket` (RFC 6455 frames, permessage-deflate), `outbound` (a connection's output queue:
//!   latest state wins, byte budget, and its writer task), `echo` (a WebSocket echo).
//! - `stats`: what the transport wrote and refused, per thread.
//!
//! It knows no application: no event names, no rooms, no matches. `examples/conformance.rs`
//! runs the official Engine.IO/Socket.IO suites and Autobahn against it alone.

pub mod echo;
pub mod engineio;
pub mod forwarded;
pub mod handoff;
pub mod http;
mod json_arg;
pub mod ktls;
pub mod outbound;
pub mod packets;
pub mod polling;
pub mod random;
mod records;
pub mod server;
pub mod socketio;
pub mod stats;
pub mod stream;
mod tickets;
pub mod tls;
pub mod websocket;
