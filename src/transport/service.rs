//! The seam between the transport layers and an application that is not Spectra's own ingest or
//! broadcast: a `Service` receives raw Engine.IO messages (sessions on `/engine.io/`) or Socket.IO
//! namespace connects and events (sessions on `/socket.io/`) of a `Port::Service` listener.
//!
//! The conformance example (`examples/conformance.rs`) is the user: it runs the official protocol
//! test suites against the very Engine.IO, Socket.IO and WebSocket code that serves 5100/5200.
//! This file owns only the trait and the value types; it must not know any application.

use std::rc::Rc;

use crate::shard::Shard;

pub use crate::transport::engineio::EngineMessage;
pub use crate::transport::socketio::SioEvent;

/// An application behind a `Port::Service` listener. Handlers run on the session's shard and
/// must not borrow the session (the transport may hold it); reply with the functions of
/// `engineio` (`send_message`, `send_binary`) and `socketio` (`emit_on`, `ack_on`).
pub trait Service {
    /// A message of a plain Engine.IO session (path `/engine.io/`).
    fn on_engine_message(&self, shard: &Rc<Shard>, sid: &str, message: EngineMessage);

    /// Whether a Socket.IO namespace exists.
    fn has_namespace(&self, nsp: &str) -> bool;

    /// A socket joined `nsp` (the CONNECT ack was already sent); `auth` is the CONNECT payload.
    fn on_connect(&self, shard: &Rc<Shard>, sid: &str, nsp: &str, auth: serde_json::Value);

    /// An EVENT (or BINARY_EVENT once all attachments arrived).
    fn on_event(&self, shard: &Rc<Shard>, sid: &str, event: SioEvent);
}
