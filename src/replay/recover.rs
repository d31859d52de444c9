//! Crash recovery: at start-up each shard reads the replay directory and rebuilds the live matches
//! it owns — files whose match neither ended (`game_end`, or a `round_info` that ends it) nor
//! expired (last write older than the idle limit) — with their group secret, so the observer
//! rejoins with its secret and overlays get the state from before the crash. Runs before the
//! shard accepts connections; reads with std I/O once, at start-up only.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::ReplayFile;

/// A match to rebuild: its newest file and contents.
pub struct Candidate {
    pub path: PathBuf,
    pub file: ReplayFile,
}

/// Why a file is not recovered (logged, never fatal).
fn age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

/// The newest recoverable file of every group code owned by `shard`.
pub fn candidates(dir: &Path, shard: usize, shards: usize, idle: Duration) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut best: std::collections::HashMap<String, Candidate> = Default::default();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if !(name.starts_with("Match_") && name.ends_with(".replay")) {
            continue;
        }
        if age(&path).is_none_or(|a| a > idle) {
            continue; // expired: the match would have been removed for inactivity
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("recovery: cannot read {}: {e}", path.display());
                continue;
            }
        };
        let file = match super::parse(&text) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!("recovery: {}: {e}", path.display());
                continue;
            }
        };
        let Some(code) = file.group_code().map(str::to_string) else {
            continue;
        };
        if crate::shard::owner_of(&code, shards) != shard || file.logon().is_none() {
            continue;
        }
        if best
            .get(&code)
            .is_none_or(|b| b.file.start_ms() < file.start_ms())
        {
            best.insert(code, Candidate { path, file });
        }
    }
    let mut list: Vec<Candidate> = best.into_values().collect();
    list.sort_by_key(|c| c.file.start_ms());
    list
}
