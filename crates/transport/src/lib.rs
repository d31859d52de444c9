//! The protocol layers under any application: `http` (HTTP/1.1 requests and responses),
//! `websocket` (RFC 6455 frames, permessage-deflate), `packets` (Engine.IO v4 and Socket.IO v5
//! packet codecs), `outbound` (a connection's output queue: latest state wins, byte budget, and
//! its writer task), `polling` (what waits for a long-polling client: latest state wins too),
//! `stream` (plain or TLS socket), `tls` (certificates, reload), `forwarded` (the client address
//! behind trusted proxies) and `stats` (what the transport wrote and refused, per thread). It knows no application: no event names, no rooms, no matches.

pub mod echo;
pub mod engineio;
pub mod forwarded;
pub mod http;
pub mod outbound;
pub mod packets;
pub mod polling;
pub mod random;
pub mod server;
pub mod socketio;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod websocket;
