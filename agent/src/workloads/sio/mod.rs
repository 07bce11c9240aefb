//! Socket.IO members for the Socket.IO workloads, over a client of our own ([`client`] on
//! [`ws`]): Engine.IO 4 on a websocket only (no polling handshake), nothing emitted before the
//! server accepted the namespace, ack ids that are unique per connection, and every received
//! event handed to the workload with its arrival time, read before anything else. Why our own:
//! see the README's performance section (memory and CPU per member).

mod client;
mod parse;
pub mod ws;

use std::sync::Arc;

use serde_json::Value;

pub use client::{Client, ConnectError, EmitError, OnReconnect, connect};

/// Called for every server event: (event name, first argument, arrival in agent Unix ns).
pub type Handler = Arc<dyn Fn(&str, &Value, i64) + Send + Sync>;

/// The pseudo-event under which the client's own failures (as a string) reach the handler.
pub const CLIENT_ERROR: &str = "client_error";

/// Socket.IO base URL from a target server URL (`http://host:port` → itself; the client adds
/// `/socket.io/`).
pub fn base_url(server: &str) -> String {
    server.trim_end_matches('/').to_owned()
}

/// Why a server refused something, from a `session_error` `{event, code, message}` or an
/// `error` `{message}` payload: the message, else the code, else the payload itself (bounded).
pub fn refusal_reason(v: &Value) -> String {
    let text = match (v.get("message").and_then(Value::as_str), v.get("code")) {
        (Some(m), _) => m.to_owned(),
        (None, Some(Value::String(c))) => c.clone(),
        (None, Some(c)) => c.to_string(),
        (None, None) => v.to_string(),
    };
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
    if text.is_empty() {
        text.push_str("(empty)");
    }
    text
}

/// The server's clock (Unix ms) in a payload, under the dialect's `field` (`serverTimestamp`
/// in the protocol; `None` when the dialect has none), if the server sent it: otherwise absent,
/// never replaced by a client clock.
pub fn server_ts(v: &Value, field: Option<&str>) -> Option<i64> {
    v.get(field?)
        .and_then(|t| t.as_i64().or_else(|| t.as_f64().map(|f| f as i64)))
}
