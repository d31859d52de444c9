//! Spectra Server: a sharded Socket.IO broadcast server for VALORANT esports productions.
//!
//! Layers, top to bottom (no import cycle between them; `scripts/module-cycles` checks):
//! `node` (starts and wires the shards) → `site` (what the listeners serve) → services (`rest`,
//! `broadcast`, `ingest`, `registry`: matches on their owner shard, `spectator`, `viewer`:
//! seq/deltas/delay and HTTP event streams, `replay`, `fanout`) → `shard` (what every service gets, typed cross-shard messages) → `app` (Spectra's
//! sessions) → `config`, `backend`, `metrics`, `limits`, `budget`, `parse`, `code` (the group-code rule), `util`. The transport
//! (HTTP, WebSocket, Engine.IO, Socket.IO) and the match engine are crates of their own
//! (`crates/transport`, `crates/engine`, re-exported as `transport` and `engine`); they know
//! nothing of the server.

pub mod app;
pub mod backend;
pub mod broadcast;
pub mod budget;
pub mod cluster;
pub mod code;
pub mod config;
pub mod fanout;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod parse;
pub use spectra_transport::random;
pub mod registry;
pub mod replay;
pub mod rest;
pub mod shard;
pub mod site;
pub mod spectator;
pub mod transport;
pub mod util;
pub mod viewer;

pub use spectra_engine as engine;
