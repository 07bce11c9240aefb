//! The Socket.IO client a member is: one task per connection that reads (and answers the
//! server's heartbeat), a write half behind a lock that emits go straight through — no writer
//! task, no channel, no task per packet. Engine.IO 4 over a websocket only, the default
//! namespace, JSON payloads.

use std::io::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::parse::{self, Packet};
use super::ws::{self, Message, Target};
use super::{CLIENT_ERROR, Handler, refusal_reason};

/// Called when the connection comes back after a drop, with the client to re-join on.
pub type OnReconnect = Arc<dyn Fn(Client) + Send + Sync>;

/// How a connection attempt failed (counted by the workloads, never fatal to a step).
#[derive(Debug)]
pub struct ConnectError(pub String);

/// Why an emit did not reach the socket.
#[derive(Debug)]
pub struct EmitError(pub String);

/// A connected member; clones share the connection.
#[derive(Clone)]
pub struct Client(Arc<Shared>);

struct Shared {
    writer: tokio::sync::Mutex<Option<ws::WriteHalf>>,
    acks: std::sync::Mutex<Acks>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Acks {
    next: u64,
    pending: Vec<(u64, oneshot::Sender<Value>)>,
}

const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Connects to `url` (a BandSync server base URL) and returns once the server has accepted the
/// connection to the default namespace. With `on_reconnect`, a dropped connection is dialled
/// again (200 ms, doubling to 2 s) and the callback runs after each reconnection (rooms are
/// gone then: re-join there).
pub async fn connect(
    url: &str,
    handler: Handler,
    on_reconnect: Option<OnReconnect>,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let target = Target::socket_io(url).map_err(ConnectError)?;
    let (reader, writer, idle) = tokio::time::timeout(timeout, open(&target))
        .await
        .map_err(|_| {
            ConnectError(format!(
                "{url}: the server did not accept the connection within {timeout:?}"
            ))
        })?
        .map_err(|e| ConnectError(format!("{url}: {e}")))?;
    let shared = Arc::new(Shared {
        writer: tokio::sync::Mutex::new(Some(writer)),
        acks: std::sync::Mutex::default(),
        stop: CancellationToken::new(),
    });
    let run = Run {
        shared: Arc::downgrade(&shared),
        stop: shared.stop.clone(),
        handler,
        on_reconnect,
        target,
    };
    tokio::spawn(run.run(reader, idle));
    Ok(Client(shared))
}

impl Client {
    /// Sends `event` with `payload` as its one argument.
    pub async fn emit(&self, event: &str, payload: Value) -> Result<(), EmitError> {
        self.0.send(&event_text(event, &payload, None)).await
    }

    /// Sends `event` asking for an ack; the ack's first argument arrives on the receiver
    /// (never, when the server sends none).
    pub async fn emit_with_ack(&self, event: &str, payload: Value) -> Result<oneshot::Receiver<Value>, EmitError> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut acks = self.0.acks.lock().unwrap();
            acks.pending.retain(|(_, tx)| !tx.is_closed());
            acks.next += 1;
            let id = acks.next;
            acks.pending.push((id, tx));
            id
        };
        self.0.send(&event_text(event, &payload, Some(id))).await?;
        Ok(rx)
    }

    /// Leaves the namespace and closes the connection; no reconnection follows.
    pub async fn disconnect(&self) {
        self.0.stop.cancel();
        if let Some(mut w) = self.0.writer.lock().await.take() {
            let _ = w.write_all(&ws::frame(ws::TEXT, b"41")).await;
            let _ = w.write_all(&ws::frame(ws::CLOSE, &1000u16.to_be_bytes())).await;
            let _ = w.shutdown().await;
        }
    }
}

impl Shared {
    async fn send(&self, text: &[u8]) -> Result<(), EmitError> {
        let frame = ws::frame(ws::TEXT, text);
        let mut w = self.writer.lock().await;
        let Some(wr) = w.as_mut() else {
            return Err(EmitError("not connected".into()));
        };
        if let Err(e) = wr.write_all(&frame).await {
            *w = None;
            return Err(EmitError(e.to_string()));
        }
        Ok(())
    }
}

/// `42[event,payload]`, with the ack id after `42` when one is asked for.
fn event_text(event: &str, payload: &Value, ack: Option<u64>) -> Vec<u8> {
    let mut t = b"42".to_vec();
    if let Some(id) = ack {
        // Writing into a Vec cannot fail.
        let _ = write!(t, "{id}");
    }
    // Serialising a str and a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut t, &(event, payload));
    t
}

/// Opens the websocket, reads Engine.IO's open packet, asks for the default namespace and
/// waits until the server accepts it. With the connection: the longest silence before it counts
/// as lost (the server's ping interval + ping timeout).
async fn open(target: &Target) -> Result<(ws::Reader, ws::WriteHalf, Duration), String> {
    let (mut rd, mut wr) = ws::connect(target).await?;
    let mut idle = None;
    loop {
        let msg = rd
            .next(Duration::from_secs(30))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let text = match msg {
            Message::Text(t) => t,
            Message::Ping(p) => {
                let _ = wr.write_all(&ws::frame(ws::PONG, &p)).await;
                continue;
            }
            Message::Close => return Err("the server closed the websocket during the handshake".into()),
            Message::Other => continue,
        };
        match (text.first(), idle) {
            (Some(b'0'), None) => {
                let open: Value = serde_json::from_slice(&text[1..])
                    .map_err(|e| format!("a malformed Engine.IO open packet: {e}"))?;
                let ms = |f: &str, d: u64| open.get(f).and_then(Value::as_u64).unwrap_or(d);
                idle = Some(Duration::from_millis(
                    ms("pingInterval", 25_000) + ms("pingTimeout", 20_000),
                ));
                wr.write_all(&ws::frame(ws::TEXT, b"40"))
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
            }
            (Some(b'2'), _) => {
                let _ = wr.write_all(&ws::frame(ws::TEXT, b"3")).await;
            }
            (Some(b'4'), Some(idle)) => match parse::packet(&text[1..])? {
                Packet::Connect => return Ok((rd, wr, idle)),
                Packet::ConnectError(v) => {
                    return Err(format!("the server refused the connection: {}", refusal_reason(&v)));
                }
                _ => {}
            },
            (Some(b'1'), _) => return Err("the server closed the Engine.IO session".into()),
            _ => {
                return Err(format!(
                    "unexpected Engine.IO packet {:?}",
                    String::from_utf8_lossy(&text[..text.len().min(40)])
                ));
            }
        }
    }
}

/// The connection's reading task.
struct Run {
    shared: Weak<Shared>,
    stop: CancellationToken,
    handler: Handler,
    on_reconnect: Option<OnReconnect>,
    target: Target,
}

impl Run {
    async fn run(self, mut reader: ws::Reader, mut idle: Duration) {
        loop {
            let why = tokio::select! {
                () = self.stop.cancelled() => return,
                why = self.read(&mut reader, idle) => why,
            };
            let Some(shared) = self.shared.upgrade() else { return };
            *shared.writer.lock().await = None;
            shared.acks.lock().unwrap().pending.clear();
            (self.handler)(CLIENT_ERROR, &Value::String(why), now_unix_ns());
            let Some(on_reconnect) = &self.on_reconnect else { return };
            drop(shared);
            let mut delay = RECONNECT_FIRST;
            (reader, idle) = loop {
                tokio::select! {
                    () = self.stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match tokio::time::timeout(Duration::from_secs(10), open(&self.target)).await {
                    Ok(Ok((r, w, b))) => {
                        let Some(shared) = self.shared.upgrade() else { return };
                        *shared.writer.lock().await = Some(w);
                        on_reconnect(Client(shared));
                        break (r, b);
                    }
                    _ => delay = (delay * 2).min(RECONNECT_MAX),
                }
            };
        }
    }

    /// Reads until the connection is lost; returns why.
    async fn read(&self, reader: &mut ws::Reader, idle: Duration) -> String {
        loop {
            let msg = match reader.next(idle).await {
                Ok(m) => m,
                Err(e) => return format!("connection lost: {e}"),
            };
            let at = now_unix_ns();
            let text = match msg {
                Message::Text(t) => t,
                Message::Ping(p) => {
                    self.write(&ws::frame(ws::PONG, &p)).await;
                    continue;
                }
                Message::Close => return "the server closed the websocket".into(),
                Message::Other => continue,
            };
            match text.first() {
                Some(b'2') => self.write(&ws::frame(ws::TEXT, b"3")).await,
                Some(b'1') => return "the server closed the Engine.IO session".into(),
                Some(b'4') => match parse::packet(&text[1..]) {
                    Ok(Packet::Event { name, arg }) => (self.handler)(&name, &arg, at),
                    Ok(Packet::Ack { id, arg }) => self.ack(id, arg),
                    Ok(Packet::Disconnect) => return "the server disconnected the namespace".into(),
                    Ok(Packet::ConnectError(v)) => (self.handler)("error", &v, at),
                    Ok(Packet::Connect | Packet::Ignored) => {}
                    Err(e) => (self.handler)(CLIENT_ERROR, &Value::String(e), at),
                },
                _ => {}
            }
        }
    }

    async fn write(&self, frame: &[u8]) {
        if let Some(shared) = self.shared.upgrade()
            && let Some(w) = shared.writer.lock().await.as_mut()
        {
            let _ = w.write_all(frame).await;
        }
    }

    fn ack(&self, id: u64, arg: Value) {
        let Some(shared) = self.shared.upgrade() else { return };
        let mut acks = shared.acks.lock().unwrap();
        if let Some(i) = acks.pending.iter().position(|(k, _)| *k == id) {
            let (_, tx) = acks.pending.swap_remove(i);
            let _ = tx.send(arg);
        }
    }
}
