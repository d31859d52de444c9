//! The node: the top of the server crate. Starts one shard per core (`runtime`), wires each
//! shard's parts together — the session layer's services (`sessions`), the fan-out
//! implementation, which service handles which cross-shard message (`router`) — and runs the
//! graceful shutdown (`shutdown`) on the signals the main thread takes (`signals`). Everything
//! else in the crate sits below it and none of it names the node.

pub mod health;
pub mod preflight;
pub mod router;
pub mod runtime;
pub mod sessions;
pub mod shutdown;
pub mod signals;
