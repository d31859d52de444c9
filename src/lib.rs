//! Spectra Server: a sharded Socket.IO broadcast server for VALORANT esports productions.
//!
//! Layout: `config` (settings), `shard` (executors, mesh, routing), `transport` (HTTP, WebSocket,
//! Engine.IO, Socket.IO), `ingest` (observer/aux logon and events), `broadcast` (overlay rooms and
//! fan-out), `registry` (matches on their owner shard), `engine` (match state), `replay` (replay logs and
//! crash recovery), `rest` (5101).

pub mod app;
pub mod backend;
pub mod broadcast;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod random;
pub mod registry;
pub mod replay;
pub mod rest;
pub mod shard;
pub mod spectator;
pub mod transport;
