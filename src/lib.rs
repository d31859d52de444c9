//! Spectra Server: a sharded Socket.IO broadcast server for VALORANT esports productions.
//!
//! Layout: `config` (settings), `shard` (executors, mesh, routing), `transport` (HTTP, WebSocket,
//! Engine.IO, Socket.IO), `ingest` (observer/aux logon and events), `broadcast` (overlay logon),
//! `fanout` (the fan-out seam and the room subscribers of a shard), `registry` (matches on their owner shard), `replay` (replay logs and crash recovery),
//! `rest` (5101). The match engine is its own crate (`crates/engine`, re-exported as `engine`):
//! pure, it knows nothing of the server.

pub mod app;
pub mod backend;
pub mod broadcast;
pub mod budget;
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

pub use spectra_engine as engine;
