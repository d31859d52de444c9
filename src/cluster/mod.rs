//! Cluster mode on NATS (`../shared/spec/cluster.md`): nodes that share one NATS deployment and
//! nothing else. This module is the shards' side of it: the `Cluster` handle (commands to the
//! node's NATS thread, `nats.rs`, which runs the official `async-nats` client on its own tokio
//! runtime), the `NatsFanout` (`fanout.rs`: the in-process fan-out plus one publication of the
//! frames the origin already built), and the ownership answer a logon waits for (`Claim`). It
//! owns no match state: the registry decides; what comes back from NATS reaches the shards as
//! ordinary `ShardMsg`s (`Room`, `Remote`).
//!
//! Built so far: frames of a match reach overlays on other nodes (edges subscribe while they
//! have local viewers, ask the origin for the current frames, keep the newest for later
//! overlays); match ownership in the KV bucket `<prefix>_matches` (create-only; a code live on
//! another node is refused like a live code on one node; a record no node serves any more is
//! taken by compare-and-set) and node liveness in `<prefix>_nodes`; the cluster-wide count of
//! live matches. Not yet: takeover of a dead origin's match with its state (event log stream),
//! spectator rooms across nodes, previews and team info in KV.

mod fanout;
mod nats;
pub mod subjects;

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

pub use fanout::NatsFanout;

use crate::config::ClusterConfig;
use crate::metrics::Metrics;
use crate::shard::messages::{MatchMsg, NodeMsg, RoomFrame};
use crate::shard::{Mesh, Shard};

/// How long a logon waits for the cluster's answer on a code's ownership (a takeover reads the
/// match's event log within it).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(8);

/// Who owns a group code in the cluster, as a logon for a code not live on this node asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This node owns it now (just created, or it was already this node's), under this epoch.
    Mine(u64),
    /// Another node owns it and serves the match.
    Live(String),
    /// No node serves the match any more, the logon carried its group secret, and this node
    /// won the record: the match's log as replay text (header, then one event per line), to be
    /// rebuilt here; and the epoch this node holds it under.
    Takeover(String, u64),
    /// The cluster did not answer (NATS unreachable, timeout).
    Unavailable(String),
}

/// What the shards ask of the NATS thread.
enum Command {
    /// Frames of a match this node owns, encoded once (postcard), for `<prefix>.frames.<code>`.
    Publish { code: String, payload: Bytes },
    /// A shard's first subscriber of `code` arrived (`true`) or its last left (`false`).
    Interest { code: String, on: bool },
    /// Who owns `code`; create-only when nobody does. `presented`: the hash of the secret the
    /// logon carried (a takeover needs it).
    Claim {
        code: String,
        secret_hash: String,
        presented: Option<String>,
        reply: flume::Sender<Claim>,
    },
    /// The match's event log (`<prefix>.events.<code>`): `first` starts it anew (the header).
    Log {
        code: String,
        payload: Bytes,
        first: bool,
    },
    /// The match of `code` ended here: its ownership record goes (if it is still this node's).
    Release { code: String },
    /// The newest frames of a remote match, for an overlay session (`shard`, `sid`).
    Latest {
        code: String,
        shard: usize,
        sid: String,
    },
    /// The answer to a snapshot request (`code`: the match whose frames it carries, stamped
    /// with its epoch) or an acknowledgement (`code: None`).
    Reply {
        subject: String,
        payload: Bytes,
        code: Option<String>,
    },
    /// A message for the owner of `code`, which is not on this node (`<prefix>.ingest.<code>`);
    /// unanswered, it comes back to shard `from`.
    Forward {
        code: String,
        msg: MatchMsg,
        from: usize,
    },
    /// A message for a connection on another node (`<prefix>.node.<node>`).
    Direct { node: String, msg: NodeMsg },
    /// NATS dropped messages for this slow node: every edge subscription asks its origin for
    /// the current frames again.
    Resnapshot,
    /// NATS is (back) up: the records of the owned matches are read again (§6.3).
    Reconnected,
    /// SIGTERM: hand the owned matches over (§6.6; `begin`: mark them draining, else
    /// release them once their logs are complete), within `left`.
    Drain {
        begin: bool,
        left: Duration,
        done: flume::Sender<usize>,
    },
    /// REST data every node serves (`<prefix>_previews`, `<prefix>_teaminfo`).
    Put {
        shared: Shared,
        key: String,
        value: Bytes,
    },
    Get {
        shared: Shared,
        key: String,
        reply: flume::Sender<Option<Bytes>>,
    },
}

/// REST data kept in the cluster's KV, with the lifetimes a single node gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// `PUT /createPreview` → `GET /preview/:code` (10 minutes).
    Previews,
    /// Finished games' `GET /getTeamInfoForCode` (1 hour from the game end).
    TeamInfo,
    /// Valorant match id → the group code of the match that reported it (aux logons), 6 hours.
    MatchIds,
}

/// The node's handle on the cluster: shared by every shard (a channel to the NATS thread).
pub struct Cluster {
    commands: flume::Sender<Command>,
    pub node_id: String,
}

impl Cluster {
    /// Starts the NATS thread; the node runs (degraded to its own matches) until NATS answers.
    pub fn start(
        config: ClusterConfig,
        shards: usize,
        mesh: Arc<Mesh>,
        metrics: Arc<Metrics>,
    ) -> Arc<Cluster> {
        let (tx, rx) = flume::unbounded();
        let _ = metrics.cluster.node.set(config.node_id.clone());
        let node_id = config.node_id.clone();
        nats::spawn(config, shards, mesh, metrics, rx, tx.clone());
        Arc::new(Cluster {
            commands: tx,
            node_id,
        })
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Publishes a room frame of a match this node owns to the edges (encoded once here; the
    /// bytes inside are the ones the origin built for its own viewers).
    pub fn publish(&self, code: &str, frame: &RoomFrame) {
        match postcard::to_stdvec(frame) {
            Ok(bytes) => self.send(Command::Publish {
                code: code.to_string(),
                payload: Bytes::from(bytes),
            }),
            Err(e) => tracing::error!("cluster: cannot encode a frame of {code}: {e}"),
        }
    }

    pub fn interest(&self, code: &str, on: bool) {
        self.send(Command::Interest {
            code: code.to_string(),
            on,
        });
    }

    /// Who owns `code` (see `Claim`); creates the record when nobody does. `secret`: the new
    /// match's; `presented`: the one the logon carried, if any.
    pub async fn claim(&self, code: &str, secret: &str, presented: Option<&str>) -> Claim {
        let (tx, rx) = flume::bounded(1);
        self.send(Command::Claim {
            code: code.to_string(),
            secret_hash: secret_hash(secret),
            presented: presented.filter(|p| !p.is_empty()).map(secret_hash),
            reply: tx,
        });
        let answer = futures_lite::future::or(async { rx.recv_async().await.ok() }, async {
            glommio::timer::sleep(CLAIM_TIMEOUT + Duration::from_millis(500)).await;
            None
        })
        .await;
        answer.unwrap_or_else(|| Claim::Unavailable("the cluster did not answer in time".into()))
    }

    /// Starts the event log of a match created here (its replay header, without the secret).
    pub fn log_start(&self, code: &str, header: &serde_json::Value) {
        self.send(Command::Log {
            code: code.to_string(),
            payload: Bytes::from(header.to_string()),
            first: true,
        });
    }

    /// Appends an accepted event (its envelope, as in the replay log) to the match's event log.
    pub fn log_event(&self, code: &str, envelope: &serde_json::Map<String, serde_json::Value>) {
        match serde_json::to_vec(envelope) {
            Ok(bytes) => self.send(Command::Log {
                code: code.to_string(),
                payload: Bytes::from(bytes),
                first: false,
            }),
            Err(e) => tracing::error!("cluster: cannot encode an event of {code}: {e}"),
        }
    }

    /// SIGTERM in cluster mode (§6.6): `begin` before the shards shut down, then again with
    /// `begin == false` after; waits (this thread) until the NATS thread is done or `deadline`.
    pub fn drain(&self, begin: bool, deadline: std::time::Instant) -> Option<usize> {
        let (tx, rx) = flume::bounded(1);
        self.send(Command::Drain {
            begin,
            left: deadline.saturating_duration_since(std::time::Instant::now()),
            done: tx,
        });
        rx.recv_deadline(deadline).ok()
    }

    pub fn release(&self, code: &str) {
        self.send(Command::Release {
            code: code.to_string(),
        });
    }

    /// Sends the newest frames of a remote match to an overlay session, when this node has any.
    pub fn latest(&self, code: &str, shard: usize, sid: &str) {
        self.send(Command::Latest {
            code: code.to_string(),
            shard,
            sid: sid.to_string(),
        });
    }

    /// Answers a snapshot request with a room frame (`None`: this node has no such match).
    pub fn reply(&self, code: &str, subject: String, frame: Option<&RoomFrame>) {
        let payload = frame
            .and_then(|f| postcard::to_stdvec(f).ok())
            .map(Bytes::from)
            .unwrap_or_default();
        self.send(Command::Reply {
            subject,
            payload,
            code: Some(code.to_string()),
        });
    }
}

impl Cluster {
    /// Sends a message to the owner of its match on another node, in order with this node's
    /// other forwards; when no node has the match it comes back to shard `from` as
    /// `RemoteMsg::Unanswered`.
    pub fn forward(&self, msg: MatchMsg, from: usize) {
        let Some(code) = msg.code().map(String::from) else {
            return;
        };
        self.send(Command::Forward { code, msg, from });
    }

    /// Acknowledges a forwarded message (its match lives here and handled it).
    pub fn ack(&self, subject: String) {
        self.send(Command::Reply {
            subject,
            payload: Bytes::from_static(b"1"),
            code: None,
        });
    }

    /// Stores REST data for every node (written in the background).
    pub fn put(&self, shared: Shared, key: &str, value: String) {
        self.send(Command::Put {
            shared,
            key: key.to_string(),
            value: Bytes::from(value),
        });
    }

    /// REST data another node stored (`None`: none, or the cluster did not answer in 2 s).
    pub async fn get(&self, shared: Shared, key: &str) -> Option<Bytes> {
        let (tx, rx) = flume::bounded(1);
        self.send(Command::Get {
            shared,
            key: key.to_string(),
            reply: tx,
        });
        futures_lite::future::or(async { rx.recv_async().await.ok().flatten() }, async {
            glommio::timer::sleep(Duration::from_secs(2)).await;
            None
        })
        .await
    }

    /// Sends a message to a connection on another node.
    pub fn direct(&self, node: &str, msg: NodeMsg) {
        self.send(Command::Direct {
            node: node.to_string(),
            msg,
        });
    }

    /// Whether `node` names another node than this one.
    pub fn is_other(&self, node: &str) -> bool {
        !node.is_empty() && node != self.node_id
    }
}

/// The node id spectators and streams of this shard carry (empty on a single node).
pub fn node_id(shard: &Shard) -> String {
    of(shard).map(|c| c.node_id.clone()).unwrap_or_default()
}

/// The cluster's live matches (ownership records, refreshed every 2 s) while this node is
/// connected and ready; `None` on a single node or while the cluster cannot tell.
pub fn matches_running(shard: &Shard) -> Option<usize> {
    of(shard)?;
    let c = &shard.global.metrics.cluster;
    let ok = c.connected.load(Ordering::Relaxed) == 1 && c.ready.load(Ordering::Relaxed) == 1;
    ok.then(|| c.matches.load(Ordering::Relaxed).max(0) as usize)
}

/// The cluster part of the status page (`null` on a single node).
pub fn summary(shard: &Shard) -> serde_json::Value {
    let Some(cluster) = of(shard) else {
        return serde_json::Value::Null;
    };
    let c = &shard.global.metrics.cluster;
    serde_json::json!({
        "node": cluster.node_id,
        "connected": c.connected.load(Ordering::Relaxed) == 1,
        "ready": c.ready.load(Ordering::Relaxed) == 1,
        "matches": c.matches.load(Ordering::Relaxed),
        "subscriptions": c.subscriptions.load(Ordering::Relaxed),
        "framesPublished": c.frames_published.load(Ordering::Relaxed),
        "framesReceived": c.frames_received.load(Ordering::Relaxed),
    })
}

/// The group secret as the ownership record keeps it (never in the clear): SHA-256, hex.
fn secret_hash(secret: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cluster handle of a shard (`None` on a single node).
#[derive(Default)]
pub struct Handle(pub Option<Arc<Cluster>>);

/// This shard's cluster handle, if the node runs in cluster mode.
pub fn of(shard: &Shard) -> Option<Arc<Cluster>> {
    let cell: Rc<std::cell::RefCell<Handle>> = shard.state();
    let handle = cell.borrow();
    handle.0.clone()
}

/// Installs the node's cluster handle in a shard (at start-up) and tells the cluster which rooms
/// the shard's subscribers need from other nodes.
pub fn install(shard: &Shard, cluster: Arc<Cluster>) {
    let cell: Rc<std::cell::RefCell<Handle>> = shard.state();
    cell.borrow_mut().0 = Some(cluster.clone());
    crate::fanout::subscribers::of(shard)
        .borrow_mut()
        .on_interest(Box::new(move |code, on| cluster.interest(code, on)));
}

#[cfg(test)]
mod tests {
    use crate::shard::messages::{FrameSet, MatchMsg, NodeMsg, RoomFrame};
    use bytes::Bytes;
    use serde_json::json;

    /// What crosses NATS reads back as it was sent: frames and node messages in postcard,
    /// forwarded match messages (which carry arbitrary JSON) in JSON.
    #[test]
    fn cluster_payloads_round_trip_in_their_formats() {
        let frame = RoomFrame::State {
            overlay: Some(FrameSet {
                packet: Bytes::from_static(b"42[\"match_data\",\"{}\"]"),
                ws_plain: Bytes::from_static(b"\x81\x01x"),
                ws_deflate: Bytes::from_static(b"\xc1\x01y"),
            }),
            viewers: None,
        };
        let bytes = postcard::to_stdvec(&frame).expect("encode");
        assert_eq!(
            postcard::from_bytes::<RoomFrame>(&bytes).expect("decode"),
            frame
        );
        let node = NodeMsg::SpectatorDirect {
            shard: 1,
            conn: 9,
            texts: vec![Bytes::from_static(b"{\"type\":\"x\"}")],
            joined: None,
        };
        let bytes = postcard::to_stdvec(&node).expect("encode");
        assert_eq!(
            postcard::from_bytes::<NodeMsg>(&bytes).expect("decode"),
            node
        );
        let mut envelope = serde_json::Map::new();
        envelope.insert("type".into(), json!("aux_health"));
        envelope.insert(
            "data".into(),
            json!({"health": 80, "nested": [1, {"a": null}]}),
        );
        let msg = MatchMsg::Event {
            code: "G".into(),
            event: spectra_engine::Event::new(envelope),
        };
        let bytes = serde_json::to_vec(&msg).expect("encode");
        assert_eq!(
            serde_json::from_slice::<MatchMsg>(&bytes).expect("decode"),
            msg
        );
        // (postcard cannot read arbitrary JSON values back: why forwards are JSON.)
        let bytes = postcard::to_stdvec(&msg).expect("encode");
        assert!(postcard::from_bytes::<MatchMsg>(&bytes).is_err());
    }
}
