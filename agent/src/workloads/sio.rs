//! Socket.IO members for the Socket.IO workloads (rust_socketio, async): websocket transport
//! only (the polling handshake costs a new HTTP client per connection), nothing emitted before
//! the `Connect` event (earlier emits are dropped), no acks relied on (servers need not send
//! them; rust_socketio's ack ids collide), and every received event handed to the workload with
//! its arrival time, read before anything else.

use std::sync::Arc;
use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::Value;

/// Called for every server event: (event name, first argument, arrival in agent Unix ns).
pub type Handler = Arc<dyn Fn(&str, &Value, i64) + Send + Sync>;

/// The pseudo-event under which the client's own failures (as a string) reach the handler.
pub const CLIENT_ERROR: &str = "client_error";

/// Called when the connection comes back after a drop, with the client to re-join on.
pub type OnReconnect = Arc<dyn Fn(Client) + Send + Sync>;

/// How a connection attempt failed (counted by the workloads, never fatal to a step).
#[derive(Debug)]
pub struct ConnectError(pub String);

/// Connects to `url` (a BandSync server base URL) and returns once the server has accepted the
/// connection. With `on_reconnect`, a dropped connection is re-established by rust_socketio and
/// the callback runs on every `Connect` after the first (rooms are gone then: re-join there).
pub async fn connect(
    url: &str,
    handler: Handler,
    on_reconnect: Option<OnReconnect>,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let first = std::sync::Mutex::new(Some(tx));
    let reconnect = on_reconnect.is_some();
    let events = handler.clone();
    let errors = handler.clone();
    let builder = ClientBuilder::new(url)
        .transport_type(TransportType::Websocket)
        .reconnect(reconnect)
        .reconnect_on_disconnect(reconnect)
        .reconnect_delay(200, 2_000)
        .on(Event::Connect, move |_, client: Client| {
            match first.lock().unwrap().take() {
                Some(tx) => {
                    let _ = tx.send(());
                }
                None => {
                    if let Some(cb) = &on_reconnect {
                        cb(client);
                    }
                }
            }
            async {}.boxed()
        })
        // rust_socketio routes a server's `error` event (and its own failures, as strings) to
        // `Event::Error`, not to `on_any`: a server's refusal `{message}` is an object.
        .on(Event::Error, move |payload, _| {
            let at = now_unix_ns();
            if let Payload::Text(args) = payload {
                match args.first() {
                    Some(v @ Value::Object(_)) => errors("error", v, at),
                    Some(v) => errors(CLIENT_ERROR, v, at),
                    None => {}
                }
            }
            async {}.boxed()
        })
        .on_any(move |event, payload, _| {
            let at = now_unix_ns();
            if let (Event::Custom(name), Payload::Text(args)) = (event, payload) {
                let first = args.first().unwrap_or(&Value::Null);
                events(&name, first, at);
            }
            async {}.boxed()
        });
    let client = tokio::time::timeout(timeout, builder.connect())
        .await
        .map_err(|_| ConnectError(format!("{url}: no websocket within {timeout:?}")))?
        .map_err(|e| ConnectError(format!("{url}: {e}")))?;
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(())) => Ok(client),
        _ => {
            let _ = client.disconnect().await;
            Err(ConnectError(format!(
                "{url}: the server did not accept the connection within {timeout:?}"
            )))
        }
    }
}

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
