//! The Socket.IO handlers: one ordered queue per connection, each command applied compare-and-set
//! (or in memory while Redis is away), its snapshot emitted locally and relayed.

use super::*;

/// Commands one connection may have queued; more are refused (`TOO_MANY_PENDING`).
pub(crate) const MAX_PENDING: usize = 64;

/// Work for one connection's worker, in the order the client sent it.
pub(crate) enum Job {
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
pub(crate) async fn register(app: Arc<App>, s: SocketRef) -> Result<(), std::convert::Infallible> {
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
        if app.cfg.ignore_events.iter().any(|e| e == event) {
            s.on(event, || std::future::ready(()));
            continue;
        }
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

pub(crate) async fn worker(
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

pub(crate) fn reject(app: &App, s: &SocketRef, event: &str, session_id: Option<&str>, why: Reject, ack: AckSender) {
    app.counters.rejected.fetch_add(1, Ordering::Relaxed);
    debug!(socket = %s.id, event, code = why.code(), "command rejected");
    let _ = ack.send(&json!({"ok": false, "code": why.code(), "message": why.message()}));
    let _ = s.emit(
        "session_error",
        &json!({"event": event, "code": why.code(), "message": why.message(), "sessionId": session_id}),
    );
}

pub(crate) async fn on_command(app: &Arc<App>, s: &SocketRef, event: &str, payload: &Value, ack: AckSender) {
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

pub(crate) async fn on_sync_request(app: &Arc<App>, s: &SocketRef, payload: &Value, ack: AckSender) {
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

pub(crate) async fn current_snapshot(app: &App, session_id: &str) -> Option<Value> {
    let entry = app.sessions.lock().unwrap().get(session_id).cloned()?;
    let cached = entry.state.lock().await;
    cached.session.as_ref().map(|s| s.snapshot(cached.version, now_ms()))
}

/// Applies one command: compare-and-set in Redis (retrying on a concurrent change from another
/// instance), or in memory while Redis is away. Then joins/leaves the room, emits the snapshot
/// locally, relays it and (re)starts the ticker. Returns what happened and the new version.
pub(crate) async fn execute(
    app: &Arc<App>,
    sid: &str,
    session_id: &str,
    cmd: &Command,
) -> Result<(Applied, u64), Reject> {
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
                cached.epoch = app.store.outage_count();
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
                cached.epoch = app.store.outage_count();
                cached.dirty = false;
                cached.dirty_control = false;
                break;
            }
            Ok(Cas::Conflict(stored)) => {
                app.counters.cas_conflicts.fetch_add(1, Ordering::Relaxed);
                // Missing since an outage: Redis lost the session (restarted empty), rebuild it
                // from what we know. Missing without one: a peer deleted it when its last
                // member left; what we cached is gone, and rebuilding it would bring departed
                // members back as ghosts.
                if stored.version == 0
                    && cached.session.is_some()
                    && cached.version > 0
                    && cached.epoch != app.store.outage_count()
                {
                    expected = 0;
                    continue;
                }
                cached.session = stored.session;
                cached.version = stored.version;
                cached.epoch = app.store.outage_count();
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
                        cached.epoch = app.store.outage_count();
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

    track_membership(app, sid, session_id, cmd);
    announce(app, &entry, session_id, version, next.as_ref()).await;
    if !next.as_ref().is_some_and(|s| has_local_members(app, s)) {
        forget(app, session_id, &entry);
    }
    drop(cached);
    Ok((Applied::Changed, version))
}

/// Room membership on this instance after `cmd` from `sid`: the socket's room and the joined map.
fn track_membership(app: &App, sid: &str, session_id: &str, cmd: &Command) {
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
}

/// Does `cmd` from `sid` change the session's controls (playback, tempo, leader)? A join does
/// not; a leave does only when the leader leaves (playback pauses).
pub(crate) fn controls(cmd: &Command, sid: &str, before: Option<&Session>) -> bool {
    match cmd {
        Command::Join { .. } => false,
        Command::Leave => before.is_some_and(|s| s.leader_socket_id.as_deref() == Some(sid)),
        _ => true,
    }
}

/// Emits the snapshot to this instance's members, relays it to the other instances, and sets
/// the ticker to the new playback state.
pub(crate) async fn announce(
    app: &Arc<App>,
    entry: &Arc<Entry>,
    session_id: &str,
    version: u64,
    session: Option<&Session>,
) {
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

pub(crate) async fn emit_local(app: &App, room: &str, event: &str, payload: &Value) {
    if let Err(e) = app.io.to(room.to_owned()).emit(event, payload).await {
        debug!(room, event, "local emit: {e}");
    }
}

pub(crate) fn socket_ref(app: &App, sid: &str) -> Option<SocketRef> {
    let sid = sid.parse().ok()?;
    app.io.get_socket(sid)
}

pub(crate) fn has_local_members(app: &App, session: &Session) -> bool {
    session.members.iter().any(|m| m.instance == app.cfg.instance_id)
}
