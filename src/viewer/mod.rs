//! Viewer streams (`viewer-streams.md`): what native spectators and the HTTP match API get of a
//! match, beside the overlays' `match_data`. `stream.rs` numbers the states (`seq`), builds the
//! JSON Patch from one state to the next once per room and holds everything for the spectator
//! delay; `sse.rs` serves `GET /matches/{code}/stream` (Server-Sent Events). Overlays are not
//! touched here: they always get full states, undelayed.

pub mod sse;
pub mod stream;
