//! Routes as configuration: which protocol serves which path on which kind of listener. The
//! accept loop (`server.rs`) asks `Routes::of(port)` and dispatches; adding a protocol or a path
//! is one line of a table here. Must not handle requests itself.

use super::Port;
use crate::app::PortKind;

/// What serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Engine.IO (with Socket.IO when the kind says so) for sessions of this kind.
    EngineIo(PortKind),
    /// The spectator WebSocket protocol (`/ws`); only for a WebSocket upgrade.
    Spectators,
    /// The REST application.
    Rest,
    /// Nothing here: `404` with this text.
    NotFound(&'static str),
}

/// The routes of one listener: exact paths first, then the fallback.
pub struct Routes {
    paths: &'static [(&'static str, Route)],
    fallback: Route,
}

const SOCKET_IO_ONLY: &str = "Not found: Socket.IO is served under /socket.io/";

const INGEST: &[(&str, Route)] = &[
    ("/socket.io/", Route::EngineIo(PortKind::Ingest)),
    ("/socket.io", Route::EngineIo(PortKind::Ingest)),
];
const BROADCAST: &[(&str, Route)] = &[
    ("/socket.io/", Route::EngineIo(PortKind::Broadcast)),
    ("/socket.io", Route::EngineIo(PortKind::Broadcast)),
    ("/ws", Route::Spectators),
    ("/v2/ws", Route::Spectators),
];
/// One port for everything: a Socket.IO session is an ingest client or an overlay by its first
/// event (`obs_logon`/`aux_logon` or `logon`); spectators on `/ws`; everything else is REST.
const SINGLE: &[(&str, Route)] = &[
    ("/socket.io/", Route::EngineIo(PortKind::Spectra)),
    ("/socket.io", Route::EngineIo(PortKind::Spectra)),
    ("/ws", Route::Spectators),
    ("/v2/ws", Route::Spectators),
];

impl Routes {
    /// The table of a listener kind.
    pub fn of(port: Port) -> Routes {
        let (paths, fallback) = match port {
            Port::Ingest => (INGEST, Route::NotFound(SOCKET_IO_ONLY)),
            Port::Broadcast => (BROADCAST, Route::NotFound(SOCKET_IO_ONLY)),
            Port::Rest => (&[][..], Route::Rest),
            Port::Single => (SINGLE, Route::Rest),
        };
        Routes { paths, fallback }
    }

    /// The route of a request: WebSocket-only routes match upgrades only (a plain request for
    /// `/ws` falls through to the fallback).
    pub fn route(&self, path: &str, websocket_upgrade: bool) -> Route {
        self.paths
            .iter()
            .find(|(p, r)| *p == path && (websocket_upgrade || *r != Route::Spectators))
            .map_or(self.fallback, |(_, r)| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_ports_and_one() {
        let broadcast = Routes::of(Port::Broadcast);
        assert_eq!(broadcast.route("/ws", true), Route::Spectators);
        assert_eq!(
            broadcast.route("/ws", false),
            Route::NotFound(SOCKET_IO_ONLY)
        );
        assert_eq!(
            broadcast.route("/socket.io/", false),
            Route::EngineIo(PortKind::Broadcast)
        );
        assert_eq!(
            Routes::of(Port::Ingest).route("/ws", true),
            Route::NotFound(SOCKET_IO_ONLY)
        );
        assert_eq!(
            Routes::of(Port::Rest).route("/socket.io/", false),
            Route::Rest
        );
        let single = Routes::of(Port::Single);
        assert_eq!(
            single.route("/socket.io/", true),
            Route::EngineIo(PortKind::Spectra)
        );
        assert_eq!(single.route("/v2/ws", true), Route::Spectators);
        assert_eq!(single.route("/status", false), Route::Rest);
        assert_eq!(single.route("/ws", false), Route::Rest);
    }
}
