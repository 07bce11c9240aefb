//! The reference BandSync server (../shared/design/BANDSYNC_PROTOCOL.md) so the suite has a real
//! target on any machine.
//!
//! Layout:
//! - `session`: the session model and every rule, pure (unit-tested).
//! - `store`: the Redis hash written compare-and-set by a Lua script; relay messages.
//! - `handlers`: the Socket.IO handlers (socketioxide), one ordered queue per connection.
//! - `ticker`: per-session tickers.
//! - `recovery`: the relay of changes between instances over Redis pub/sub, anti-entropy, the
//!   Redis health loop with write-back after an outage.
//! - this file: the configuration, the per-session cache and its lock, `/health`, and
//!   `serve(config, listener, shutdown)`.
//!
//! Rooms across instances: every accepted change is stored first (compare-and-set on `version`),
//! then emitted to the local room and published on `{prefix}:relay`; the other instances emit it
//! to their local members of that room. Pub/sub is at-most-once, so every 2 s each instance also
//! compares its sessions' versions with Redis and takes a newer stored state (anti-entropy). This is what a Socket.IO Redis adapter does for a
//! broadcast, done here by hand so that local delivery never waits on Redis: with Redis away an
//! instance keeps serving its own members from memory (graceful degradation) and writes back
//! when Redis returns.
//!
//! Ticks: a session's ticks fall at `anchor + k·100 ms` of its stored playback anchor, so the
//! instances that serve one session tick in step and agree on `positionMs`.

#![forbid(unsafe_code)]

mod handlers;
pub mod legacy;
mod recovery;
pub mod session;
pub mod store;
mod ticker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State as AxState;
use axum::routing::get;
use futures_util::StreamExt;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Event, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use session::{Applied, Command, Reject, Session};
use store::{Cas, Relay, Store, Stored};

use handlers::*;
use recovery::*;
use ticker::*;

/// The server's configuration (flags and environment in `main.rs`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// This instance's name, in members' records, relay messages and `/health`.
    pub instance_id: String,
    pub redis_url: String,
    /// Prefix of every Redis key and channel this server uses.
    pub redis_prefix: String,
    pub max_members: usize,
    /// How many sessions one connection may join at once.
    pub max_sessions_per_connection: usize,
    /// Largest Engine.IO payload accepted, in bytes; larger ones close the connection.
    pub max_payload: u64,
    /// Client events this instance silently drops (no ack, no snapshot, no `session_error`), as
    /// older BandSync servers do with commands they do not handle: lets a load tester's
    /// diagnosis be checked against a server that ignores, say, `seek`.
    pub ignore_events: Vec<String>,
    /// Which BandSync dialect this instance speaks.
    pub dialect: Dialect,
}

/// The protocol this server speaks: the current one (BANDSYNC_PROTOCOL.md), or an emulation of
/// BandSync's older public server (see [`legacy`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    #[default]
    Bandsync,
    Legacy,
}

impl ServerConfig {
    pub fn new(instance_id: impl Into<String>, redis_url: impl Into<String>, redis_prefix: impl Into<String>) -> Self {
        ServerConfig {
            instance_id: instance_id.into(),
            redis_url: redis_url.into(),
            redis_prefix: redis_prefix.into(),
            max_members: 500,
            max_sessions_per_connection: 16,
            max_payload: 16 * 1024,
            ignore_events: Vec::new(),
            dialect: Dialect::Bandsync,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("REDIS_URL `{url}`: {source}")]
    RedisUrl { url: String, source: store::StoreError },
    #[error("serving HTTP: {0}")]
    Io(#[from] std::io::Error),
}

/// The Unix epoch in ms: the protocol's `serverTimestamp`.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    rejected: AtomicU64,
    snapshots: AtomicU64,
    ticks: AtomicU64,
    ticks_late: AtomicU64,
    relayed_in: AtomicU64,
    relayed_out: AtomicU64,
    writebacks: AtomicU64,
    cas_conflicts: AtomicU64,
    connections: AtomicU64,
    caught_up: AtomicU64,
    /// Members of this instance whose socket was gone, removed by anti-entropy.
    ghosts_pruned: AtomicU64,
}

/// What this instance knows of a session.
#[derive(Default)]
struct Cached {
    session: Option<Session>,
    version: u64,
    /// Changed here while Redis was away (written back when it returns).
    dirty: bool,
    /// Of those changes, playback/tempo/leader ones: then those fields are ours at write-back.
    /// A member joining or leaving here claims only its own membership, never the controls.
    dirty_control: bool,
    /// The store's outage count when `version` was last agreed with Redis: a session missing
    /// from Redis since an outage was lost by Redis (rebuild it); one missing without an outage
    /// in between was deleted by a peer when its last member left (never resurrect it).
    epoch: u64,
}

#[derive(Default)]
struct Entry {
    state: Arc<tokio::sync::Mutex<Cached>>,
    ticker: Mutex<Option<(AbortHandle, i64, f64)>>,
}

type Guard = tokio::sync::OwnedMutexGuard<Cached>;

/// Locks the session's entry, creating it if missing. An entry removed from the map while we
/// waited for its lock is stale: the lock is taken again on the current one.
async fn lock_entry(app: &App, session_id: &str) -> (Arc<Entry>, Guard) {
    loop {
        let entry = app
            .sessions
            .lock()
            .unwrap()
            .entry(session_id.to_owned())
            .or_default()
            .clone();
        let guard = entry.state.clone().lock_owned().await;
        let current = app
            .sessions
            .lock()
            .unwrap()
            .get(session_id)
            .is_some_and(|e| Arc::ptr_eq(e, &entry));
        if current {
            return (entry, guard);
        }
    }
}

/// Forgets a session this instance no longer serves (call with its lock held).
fn forget(app: &App, session_id: &str, entry: &Arc<Entry>) {
    let mut map = app.sessions.lock().unwrap();
    if map.get(session_id).is_some_and(|e| Arc::ptr_eq(e, entry)) {
        map.remove(session_id);
    }
    if let Some((h, ..)) = entry.ticker.lock().unwrap().take() {
        h.abort();
    }
}

struct App {
    cfg: ServerConfig,
    store: Store,
    io: SocketIo,
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
    /// Socket id → sessions it joined.
    joined: Mutex<HashMap<String, Vec<String>>>,
    counters: Counters,
    shutting_down: AtomicBool,
    heal_lock: tokio::sync::Mutex<()>,
    started: tokio::time::Instant,
}

/// Serves BandSync on `listener` until `shutdown` is cancelled; then every connected member
/// leaves its sessions (stored and announced) before the connections close.
pub async fn serve(cfg: ServerConfig, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ServerError> {
    if cfg.dialect == Dialect::Legacy {
        return legacy::serve(cfg, listener, shutdown).await;
    }
    let store = Store::new(&cfg.redis_url, &cfg.redis_prefix).map_err(|source| ServerError::RedisUrl {
        url: bandsync_common::fmt::redact_url(&cfg.redis_url),
        source,
    })?;
    let (layer, io) = SocketIo::builder()
        .max_payload(cfg.max_payload)
        // The same bound on websocket messages (the default is 64 MiB): a larger one closes
        // that connection.
        .ws_max_message_size(cfg.max_payload as usize)
        .ws_max_frame_size(cfg.max_payload as usize)
        .max_buffer_size(1024)
        .build_layer();
    let app = Arc::new(App {
        cfg,
        store,
        io: io.clone(),
        sessions: Mutex::new(HashMap::new()),
        joined: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        shutting_down: AtomicBool::new(false),
        heal_lock: tokio::sync::Mutex::new(()),
        started: tokio::time::Instant::now(),
    });
    // Handlers are registered in a connect middleware, before CONNECT is sent, so a client's
    // first event cannot arrive before its handler exists (DEPENDENCIES.md).
    let mw_app = app.clone();
    io.ns(
        "/",
        (async |_: SocketRef| {}).with(move |s: SocketRef| register(mw_app.clone(), s)),
    );

    let background = CancellationToken::new();
    tokio::spawn(health_loop(app.clone(), background.clone()));
    tokio::spawn(relay_loop(app.clone(), background.clone()));

    let router = axum::Router::new()
        .route("/health", get(health))
        .with_state(app.clone())
        .layer(layer);
    info!(instance = %app.cfg.instance_id, addr = %listener.local_addr()?, "bandsync-server listening");
    let drained = CancellationToken::new();
    // TCP_NODELAY: a tick or snapshot must leave now, not wait for the client's delayed ACK
    // (Nagle + delayed ACK held small frames ~40 ms: p50 command round trip 36 ms without it).
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = axum::serve(listener, router).with_graceful_shutdown({
        let drained = drained.clone();
        async move { drained.cancelled().await }
    });
    let server = tokio::spawn(async move { server.await });

    shutdown.cancelled().await;
    info!("shutting down: members leave their sessions");
    app.shutting_down.store(true, Ordering::Release);
    let sockets: Vec<String> = app.joined.lock().unwrap().keys().cloned().collect();
    for sid in sockets {
        leave_all(&app, &sid).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), app.io.disconnect()).await;
    background.cancel();
    for entry in app.sessions.lock().unwrap().values() {
        if let Some((h, ..)) = entry.ticker.lock().unwrap().take() {
            h.abort();
        }
    }
    drained.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => warn!("HTTP server task: {e}"),
        Err(_) => warn!("HTTP connections did not close within 5 s"),
    }
    Ok(())
}

async fn health(AxState(app): AxState<Arc<App>>) -> Json<Value> {
    let (sessions, playing) = {
        let map = app.sessions.lock().unwrap();
        let playing = map.values().filter(|e| e.ticker.lock().unwrap().is_some()).count();
        (map.len(), playing)
    };
    let members: usize = app.joined.lock().unwrap().values().map(Vec::len).sum();
    let c = &app.counters;
    let up = app.store.is_up();
    Json(json!({
        "status": if up { "ok" } else { "degraded" },
        "instance": app.cfg.instance_id,
        "uptimeSeconds": app.started.elapsed().as_secs(),
        "redis": {
            "state": if up { "up" } else { "down" },
            "outages": app.store.outages.load(Ordering::Relaxed),
            "errors": app.store.errors.load(Ordering::Relaxed),
        },
        "sessions": sessions,
        "playingSessions": playing,
        "memberships": members,
        "connectedSockets": app.io.sockets().len(),
        "counters": {
            "connections": c.connections.load(Ordering::Relaxed),
            "commandsAccepted": c.accepted.load(Ordering::Relaxed),
            "commandsRejected": c.rejected.load(Ordering::Relaxed),
            "snapshotsEmitted": c.snapshots.load(Ordering::Relaxed),
            "ticksEmitted": c.ticks.load(Ordering::Relaxed),
            "ticksLate": c.ticks_late.load(Ordering::Relaxed),
            "relayedIn": c.relayed_in.load(Ordering::Relaxed),
            "relayedOut": c.relayed_out.load(Ordering::Relaxed),
            "writeBacks": c.writebacks.load(Ordering::Relaxed),
            "casConflicts": c.cas_conflicts.load(Ordering::Relaxed),
            "caughtUp": c.caught_up.load(Ordering::Relaxed),
            "ghostsPruned": c.ghosts_pruned.load(Ordering::Relaxed),
        },
    }))
}
