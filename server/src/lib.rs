//! The reference BandSync server (../shared/design/BANDSYNC_PROTOCOL.md) so the suite has a real
//! target on any machine.
//!
//! Layout:
//! - `session`: the session model and every rule, pure (unit-tested).
//! - `store`: the Redis hash written compare-and-set by a Lua script; relay messages.
//! - this file: the Socket.IO handlers (socketioxide), the per-session cache and its lock, the
//!   relay of changes between instances over Redis pub/sub, tickers, the Redis health loop with
//!   write-back after an outage, `/health`, and `serve(config, listener, shutdown)`.
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

pub mod session;
pub mod store;

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
    let store = Store::new(&cfg.redis_url, &cfg.redis_prefix).map_err(|source| ServerError::RedisUrl {
        url: cfg.redis_url.clone(),
        source,
    })?;
    let (layer, io) = SocketIo::builder()
        .max_payload(cfg.max_payload)
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

/// Commands one connection may have queued; more are refused (`TOO_MANY_PENDING`).
const MAX_PENDING: usize = 64;

/// Work for one connection's worker, in the order the client sent it.
enum Job {
    Command {
        event: String,
        payload: Value,
        ack: AckSender,
    },
    Disconnect,
}

/// The connect middleware: installs this socket's handlers. A connection's commands run one at
/// a time in the order they arrived (socketioxide spawns each handler as its own task, which
/// would let a `play` overtake the `set_role` sent before it): the handlers only queue them.
async fn register(app: Arc<App>, s: SocketRef) -> Result<(), std::convert::Infallible> {
    app.counters.connections.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(worker(app.clone(), s.clone(), rx, pending.clone()));
    for event in [
        "join_session",
        "set_role",
        "set_tempo",
        "play",
        "pause",
        "seek",
        "leave_session",
    ] {
        let app = app.clone();
        let tx = tx.clone();
        let pending = pending.clone();
        s.on(
            event,
            move |s: SocketRef, Event(event): Event, TryData(data): TryData<Value>, ack: AckSender| {
                if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
                    pending.fetch_sub(1, Ordering::AcqRel);
                    reject(&app, &s, &event, None, Reject::TooManyPending, ack);
                } else {
                    let payload = data.unwrap_or(Value::Null);
                    let _ = tx.send(Job::Command { event, payload, ack });
                }
                std::future::ready(())
            },
        );
    }
    let sync_app = app.clone();
    s.on(
        "sync_request",
        move |s: SocketRef, TryData(data): TryData<Value>, ack: AckSender| async move {
            on_sync_request(&sync_app, &s, &data.unwrap_or(Value::Null), ack).await
        },
    );
    let fb_app = app.clone();
    s.on_fallback(move |s: SocketRef, Event(ev): Event, ack: AckSender| async move {
        reject(&fb_app, &s, &ev, None, Reject::UnknownEvent, ack);
    });
    s.on_disconnect(move || {
        let _ = tx.send(Job::Disconnect);
        std::future::ready(())
    });
    Ok(())
}

async fn worker(
    app: Arc<App>,
    s: SocketRef,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Job>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
) {
    while let Some(job) = rx.recv().await {
        match job {
            Job::Command { event, payload, ack } => {
                on_command(&app, &s, &event, &payload, ack).await;
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            Job::Disconnect => break,
        }
    }
    leave_all(&app, &s.id.to_string()).await;
}

fn reject(app: &App, s: &SocketRef, event: &str, session_id: Option<&str>, why: Reject, ack: AckSender) {
    app.counters.rejected.fetch_add(1, Ordering::Relaxed);
    debug!(socket = %s.id, event, code = why.code(), "command rejected");
    let _ = ack.send(&json!({"ok": false, "code": why.code(), "message": why.message()}));
    let _ = s.emit(
        "session_error",
        &json!({"event": event, "code": why.code(), "message": why.message(), "sessionId": session_id}),
    );
}

async fn on_command(app: &Arc<App>, s: &SocketRef, event: &str, payload: &Value, ack: AckSender) {
    let sid = s.id.to_string();
    let (session_id, cmd) = match session::parse_command(event, payload) {
        Ok(v) => v,
        Err(why) => {
            let id = payload
                .get("sessionId")
                .and_then(Value::as_str)
                .filter(|v| v.len() <= session::MAX_SESSION_ID);
            return reject(app, s, event, id, why, ack);
        }
    };
    let Some(session_id) = session_id else {
        // leave_session without a session: leave every session this socket joined.
        leave_all(app, &sid).await;
        let _ = ack.send(&json!({"ok": true}));
        return;
    };
    if let Command::Join { .. } = cmd {
        let joined = app.joined.lock().unwrap().get(&sid).cloned().unwrap_or_default();
        if !joined.contains(&session_id) && joined.len() >= app.cfg.max_sessions_per_connection {
            return reject(app, s, event, Some(&session_id), Reject::TooManySessions, ack);
        }
    }
    match execute(app, &sid, &session_id, &cmd).await {
        Ok((applied, version)) => {
            app.counters.accepted.fetch_add(1, Ordering::Relaxed);
            let changed = applied == Applied::Changed;
            let _ = ack.send(&json!({"ok": true, "version": version, "changed": changed}));
            if applied == Applied::Unchanged {
                // Nothing stored; the sender still gets the current state.
                if let Some(snap) = current_snapshot(app, &session_id).await {
                    let _ = s.emit("snapshot", &snap);
                }
            }
        }
        Err(why) => reject(app, s, event, Some(&session_id), why, ack),
    }
}

async fn on_sync_request(app: &Arc<App>, s: &SocketRef, payload: &Value, ack: AckSender) {
    let session_id = match payload {
        Value::Object(o) => session::check_session_id(o.get("sessionId")),
        _ => Err(Reject::BadPayload),
    };
    let session_id = match session_id {
        Ok(id) => id,
        Err(why) => return reject(app, s, "sync_request", None, why, ack),
    };
    let entry = app.sessions.lock().unwrap().get(&session_id).cloned();
    let response = match entry {
        Some(entry) => {
            let cached = entry.state.lock().await;
            cached
                .session
                .as_ref()
                .filter(|sess| sess.is_member(&s.id.to_string()))
                .map(|sess| sess.sync_response(now_ms()))
        }
        None => None,
    };
    match response {
        Some(r) => {
            let _ = ack.send(&json!({"ok": true}));
            let _ = s.emit("sync_response", &r);
        }
        None => reject(app, s, "sync_request", Some(&session_id), Reject::NotMember, ack),
    }
}

async fn current_snapshot(app: &App, session_id: &str) -> Option<Value> {
    let entry = app.sessions.lock().unwrap().get(session_id).cloned()?;
    let cached = entry.state.lock().await;
    cached.session.as_ref().map(|s| s.snapshot(cached.version, now_ms()))
}

/// Applies one command: compare-and-set in Redis (retrying on a concurrent change from another
/// instance), or in memory while Redis is away. Then joins/leaves the room, emits the snapshot
/// locally, relays it and (re)starts the ticker. Returns what happened and the new version.
async fn execute(app: &Arc<App>, sid: &str, session_id: &str, cmd: &Command) -> Result<(Applied, u64), Reject> {
    if app.shutting_down.load(Ordering::Acquire) && !matches!(cmd, Command::Leave) {
        return Err(Reject::ShuttingDown);
    }
    let me = app.cfg.instance_id.clone();
    let (entry, mut cached) = lock_entry(app, session_id).await;
    if cached.session.is_none() && app.store.is_up() {
        match app.store.load(session_id).await {
            Ok(Stored { session, version }) => {
                cached.session = session;
                cached.version = version;
            }
            Err(e) => redis_failed(app, &e),
        }
    }
    let mut expected = cached.version;
    let mut next;
    let mut attempts = 0;
    let mut timeouts = 0;
    loop {
        attempts += 1;
        if attempts > 32 {
            return Err(Reject::Conflict);
        }
        let now = now_ms();
        let mut candidate = match (&cached.session, cmd) {
            (Some(s), _) => s.clone(),
            (None, Command::Join { .. }) => Session::new(session_id, now),
            (None, _) => return Err(Reject::NotMember),
        };
        let applied = candidate.apply(cmd, sid, &me, now, app.cfg.max_members)?;
        if applied == Applied::Unchanged {
            return Ok((applied, cached.version));
        }
        let delete = candidate.members.is_empty();
        next = (!delete).then_some(candidate);
        let new_version = cached.version + 1;
        if !app.store.is_up() {
            cached.dirty = true;
            cached.dirty_control |= controls(cmd, sid, cached.session.as_ref());
            cached.version = new_version;
            break;
        }
        match app
            .store
            .cas(session_id, expected, next.as_ref(), new_version, now)
            .await
        {
            Ok(Cas::Written) => {
                cached.version = new_version;
                cached.dirty = false;
                cached.dirty_control = false;
                break;
            }
            Ok(Cas::Conflict(stored)) => {
                app.counters.cas_conflicts.fetch_add(1, Ordering::Relaxed);
                if stored.version == 0 && cached.session.is_some() && cached.version > 0 {
                    // Redis lost the session (restarted empty): rebuild it from what we know.
                    expected = 0;
                    continue;
                }
                cached.session = stored.session;
                cached.version = stored.version;
                expected = stored.version;
            }
            Err(e) if !Store::is_outage(&e) && timeouts < 2 => {
                // Slow, not gone: the write may or may not have landed. Read what Redis holds
                // and apply again (every command is idempotent against the state it lands on).
                timeouts += 1;
                app.store.errors.fetch_add(1, Ordering::Relaxed);
                match app.store.load(session_id).await {
                    Ok(stored) if stored.version > 0 || cached.session.is_none() => {
                        cached.session = stored.session;
                        cached.version = stored.version;
                        expected = stored.version;
                    }
                    Ok(_) => expected = 0,
                    Err(e) => redis_failed(app, &e),
                }
            }
            Err(e) => {
                redis_failed(app, &e);
                cached.dirty = true;
                cached.dirty_control |= controls(cmd, sid, cached.session.as_ref());
                cached.version = new_version;
                break;
            }
        }
    }
    let version = cached.version;
    cached.session = next.clone();

    // Room membership on this instance.
    if let Some(socket) = socket_ref(app, sid) {
        match cmd {
            Command::Join { .. } => socket.join(session_id.to_owned()),
            Command::Leave => socket.leave(session_id.to_owned()),
            _ => {}
        }
    }
    {
        let mut joined = app.joined.lock().unwrap();
        match cmd {
            Command::Join { .. } => {
                let list = joined.entry(sid.to_owned()).or_default();
                if !list.iter().any(|s| s == session_id) {
                    list.push(session_id.to_owned());
                }
            }
            Command::Leave => {
                if let Some(list) = joined.get_mut(sid) {
                    list.retain(|s| s != session_id);
                    if list.is_empty() {
                        joined.remove(sid);
                    }
                }
            }
            _ => {}
        }
    }
    announce(app, &entry, session_id, version, next.as_ref()).await;
    if !next.as_ref().is_some_and(|s| has_local_members(app, s)) {
        forget(app, session_id, &entry);
    }
    drop(cached);
    Ok((Applied::Changed, version))
}

/// Does `cmd` from `sid` change the session's controls (playback, tempo, leader)? A join does
/// not; a leave does only when the leader leaves (playback pauses).
fn controls(cmd: &Command, sid: &str, before: Option<&Session>) -> bool {
    match cmd {
        Command::Join { .. } => false,
        Command::Leave => before.is_some_and(|s| s.leader_socket_id.as_deref() == Some(sid)),
        _ => true,
    }
}

/// Emits the snapshot to this instance's members, relays it to the other instances, and sets
/// the ticker to the new playback state.
async fn announce(app: &Arc<App>, entry: &Arc<Entry>, session_id: &str, version: u64, session: Option<&Session>) {
    if let Some(s) = session {
        emit_local(app, session_id, "snapshot", &s.snapshot(version, now_ms())).await;
        app.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    }
    set_ticker(app, entry, session_id, session);
    if app.store.is_up() {
        let relay = Relay {
            origin: app.cfg.instance_id.clone(),
            session_id: session_id.to_owned(),
            version,
            session: session.cloned(),
        };
        match app.store.publish(&relay).await {
            Ok(()) => {
                app.counters.relayed_out.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => redis_failed(app, &e),
        }
    }
}

async fn emit_local(app: &App, room: &str, event: &str, payload: &Value) {
    if let Err(e) = app.io.to(room.to_owned()).emit(event, payload).await {
        debug!(room, event, "local emit: {e}");
    }
}

fn socket_ref(app: &App, sid: &str) -> Option<SocketRef> {
    let sid = sid.parse().ok()?;
    app.io.get_socket(sid)
}

fn has_local_members(app: &App, session: &Session) -> bool {
    session.members.iter().any(|m| m.instance == app.cfg.instance_id)
}

/// Starts, restarts or stops the session's ticker to match `session`'s playback. Ticks only go
/// to this instance's members; a running ticker with the same anchor is left alone.
fn set_ticker(app: &Arc<App>, entry: &Arc<Entry>, session_id: &str, session: Option<&Session>) {
    let mut slot = entry.ticker.lock().unwrap();
    let want = session.filter(|s| s.is_playing && has_local_members(app, s));
    match (want, slot.as_ref()) {
        (Some(s), Some((_, anchor, position))) if *anchor == s.anchor_ms && *position == s.position => {}
        (Some(s), _) => {
            if let Some((h, ..)) = slot.take() {
                h.abort();
            }
            let task = tokio::spawn(tick(app.clone(), session_id.to_owned(), s.anchor_ms, s.position));
            *slot = Some((task.abort_handle(), s.anchor_ms, s.position));
        }
        (None, _) => {
            if let Some((h, ..)) = slot.take() {
                h.abort();
            }
        }
    }
}

/// One session's ticker: `scroll_tick` at anchor + k·100 ms with positionMs = position + k·100.
/// A tick more than one period late is skipped (counted), never sent in a burst.
async fn tick(app: Arc<App>, session_id: String, anchor_ms: i64, position: f64) {
    let period_us = session::TICK_MS * 1000;
    let anchor_us = anchor_ms * 1000;
    let mut k = (now_us() - anchor_us).max(0) / period_us + 1;
    loop {
        let due_us = anchor_us + k * period_us;
        let wait = due_us - now_us();
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait as u64)).await;
        }
        let payload = json!({
            "sessionId": session_id,
            "positionMs": position + (k * session::TICK_MS) as f64,
            "serverTimestamp": now_ms(),
        });
        emit_local(&app, &session_id, "scroll_tick", &payload).await;
        app.counters.ticks.fetch_add(1, Ordering::Relaxed);
        let current = (now_us() - anchor_us).max(0) / period_us + 1;
        if current > k + 1 {
            app.counters
                .ticks_late
                .fetch_add((current - k - 1) as u64, Ordering::Relaxed);
        }
        k = current.max(k + 1);
    }
}

async fn leave_all(app: &Arc<App>, sid: &str) {
    let sessions = app.joined.lock().unwrap().remove(sid).unwrap_or_default();
    for session_id in sessions {
        if let Err(why) = execute(app, sid, &session_id, &Command::Leave).await {
            warn!(socket = sid, session = %session_id, code = why.code(), "leaving on disconnect failed");
        }
    }
}

fn redis_failed(app: &App, e: &store::StoreError) {
    if app.store.mark_down() {
        warn!("Redis unavailable ({e}); serving members from memory until it returns");
    }
}

/// Pings Redis every 250 ms; when it answers again after an outage, writes back.
async fn health_loop(app: Arc<App>, stop: CancellationToken) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut slow = 0;
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        rounds += 1;
        if rounds.is_multiple_of(8) && app.store.is_up() {
            catch_up(&app).await;
        }
        match app.store.ping().await {
            Err(e) if !Store::is_outage(&e) && slow == 0 && app.store.is_up() => {
                // One unanswered ping on a busy machine is not an outage; two in a row are.
                slow += 1;
                app.store.errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(()) => {
                slow = 0;
                if app.store.mark_up() {
                    if first {
                        info!("Redis available");
                    } else {
                        info!("Redis is back: writing sessions back");
                    }
                    // Also at start-up, if we served members before Redis first answered.
                    heal(&app).await;
                }
            }
            Err(e) => redis_failed(&app, &e),
        }
        first = false;
    }
}

/// The sessions this instance serves now, taken out of the map's lock.
fn served(app: &App) -> Vec<(String, Arc<Entry>)> {
    app.sessions
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Anti-entropy, every 2 s: Redis pub/sub delivers at most once (a relay published while this
/// instance was re-subscribing is gone), so each session served here is compared with the stored
/// version, and a newer stored state is taken and given to the local members.
async fn catch_up(app: &Arc<App>) {
    let entries = served(app);
    if entries.is_empty() {
        return;
    }
    let ids: Vec<String> = entries.iter().map(|(k, _)| k.clone()).collect();
    // One pipelined round trip for every version; the data only where it moved on.
    let versions = match app.store.versions(&ids).await {
        Ok(v) => v,
        Err(e) => {
            redis_failed(app, &e);
            return;
        }
    };
    for ((session_id, entry), stored_version) in entries.into_iter().zip(versions) {
        let (dirty, cached_version) = {
            let c = entry.state.lock().await;
            (c.dirty, c.version)
        };
        if dirty {
            // Changed here while a Redis call failed (without an outage being declared): write
            // it back now rather than wait for the next outage's heal.
            if write_back(app, &session_id, &entry).await.is_err() {
                return;
            }
            continue;
        }
        if stored_version <= cached_version {
            continue;
        }
        let mut cached = entry.state.clone().lock_owned().await;
        let stored = match app.store.load(&session_id).await {
            Ok(s) => s,
            Err(e) => {
                redis_failed(app, &e);
                return;
            }
        };
        let Some(session) = stored.session else { continue };
        if stored.version <= cached.version || cached.dirty {
            continue;
        }
        app.counters.caught_up.fetch_add(1, Ordering::Relaxed);
        cached.session = Some(session.clone());
        cached.version = stored.version;
        emit_local(
            app,
            &session_id,
            "snapshot",
            &session.snapshot(stored.version, now_ms()),
        )
        .await;
        app.counters.snapshots.fetch_add(1, Ordering::Relaxed);
        set_ticker(app, &entry, &session_id, Some(&session));
        if !has_local_members(app, &session) {
            forget(app, &session_id, &entry);
        }
    }
}

/// Writes back every session this instance serves (also into an emptied Redis), merged with
/// what Redis holds, and re-broadcasts a snapshot. Nothing a member was told is lost: the
/// version only grows.
async fn heal(app: &Arc<App>) {
    let _guard = app.heal_lock.lock().await;
    let entries = served(app);
    for (session_id, entry) in entries {
        if write_back(app, &session_id, &entry).await.is_err() {
            return;
        }
    }
}

/// Writes one session back (see `heal`). Err: Redis failed again (marked down).
async fn write_back(app: &Arc<App>, session_id: &str, entry: &Arc<Entry>) -> Result<(), ()> {
    let mut cached = entry.state.lock().await;
    let Some(local) = cached.session.clone() else {
        return Ok(());
    };
    if !has_local_members(app, &local) && !cached.dirty {
        return Ok(());
    }
    let mut attempts = 0;
    let written = loop {
        attempts += 1;
        let stored = match app.store.load(session_id).await {
            Ok(s) => s,
            Err(e) => {
                redis_failed(app, &e);
                return Err(());
            }
        };
        let merged = local.merge_for_writeback(stored.session.as_ref(), &app.cfg.instance_id, cached.dirty_control);
        let version = stored.version.max(cached.version) + 1;
        match app
            .store
            .cas(session_id, stored.version, Some(&merged), version, now_ms())
            .await
        {
            Ok(Cas::Written) => break Some((merged, version)),
            Ok(Cas::Conflict(_)) if attempts < 8 => continue,
            Ok(Cas::Conflict(_)) => break None,
            Err(e) => {
                redis_failed(app, &e);
                return Err(());
            }
        }
    };
    if let Some((merged, version)) = written {
        cached.session = Some(merged.clone());
        cached.version = version;
        cached.dirty = false;
        cached.dirty_control = false;
        drop(cached);
        app.counters.writebacks.fetch_add(1, Ordering::Relaxed);
        announce(app, entry, session_id, version, Some(&merged)).await;
    }
    Ok(())
}

/// Receives the other instances' changes and gives them to this instance's members. Re-subscribes
/// after Redis comes back (and writes back then, in case the outage was too short for the pings).
async fn relay_loop(app: Arc<App>, stop: CancellationToken) {
    let channel = app.store.relay_channel();
    let mut was_subscribed = false;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let attempt = async {
            let mut pubsub = app.store.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            _ = stop.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(1), attempt) => r,
        };
        match pubsub {
            Ok(Ok(pubsub)) => {
                if was_subscribed {
                    heal(&app).await;
                }
                was_subscribed = true;
                let mut messages = pubsub.into_on_message();
                loop {
                    let msg = tokio::select! {
                        _ = stop.cancelled() => return,
                        m = messages.next() => m,
                    };
                    let Some(msg) = msg else { break };
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<Relay>(&payload) {
                        Ok(relay) if relay.origin != app.cfg.instance_id => on_relay(&app, relay).await,
                        Ok(_) => {}
                        Err(e) => debug!("relay message ignored: {e}"),
                    }
                }
                debug!("relay subscription ended");
            }
            Ok(Err(e)) => debug!("relay subscribe: {e}"),
            Err(_) => debug!("relay subscribe timed out"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn on_relay(app: &Arc<App>, relay: Relay) {
    let Some(entry) = app.sessions.lock().unwrap().get(&relay.session_id).cloned() else {
        return; // no member of this session here
    };
    let mut cached = entry.state.clone().lock_owned().await;
    if cached.dirty {
        return; // our own changes are not stored yet: `heal` / `catch_up` merge and write them
    }
    if relay.version <= cached.version {
        return; // older or already seen: never out of order
    }
    app.counters.relayed_in.fetch_add(1, Ordering::Relaxed);
    cached.session = relay.session.clone();
    cached.version = relay.version;
    if let Some(s) = &relay.session {
        emit_local(app, &relay.session_id, "snapshot", &s.snapshot(relay.version, now_ms())).await;
        app.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    }
    set_ticker(app, &entry, &relay.session_id, relay.session.as_ref());
    if !relay.session.as_ref().is_some_and(|s| has_local_members(app, s)) {
        forget(app, &relay.session_id, &entry);
    }
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
        },
    }))
}
