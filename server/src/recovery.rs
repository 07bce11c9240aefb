//! Living with Redis: the health loop and write-back after an outage, the relay between
//! instances over pub/sub, and the 2 s anti-entropy that repairs a lost relay.

use super::*;

/// Pings Redis every 250 ms; when it answers again after an outage, writes back.
pub(crate) async fn health_loop(app: Arc<App>, stop: CancellationToken) {
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
pub(crate) fn served(app: &App) -> Vec<(String, Arc<Entry>)> {
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
pub(crate) async fn catch_up(app: &Arc<App>) {
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
        prune_ghosts(app, &session_id, &entry).await;
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
        cached.epoch = app.store.outage_count();
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

/// Removes members of this instance whose socket is gone (a leave that never landed): a
/// disconnected socket never comes back, so such a member can only be a ghost.
async fn prune_ghosts(app: &Arc<App>, session_id: &str, entry: &Arc<Entry>) {
    let ghosts: Vec<String> = {
        let c = entry.state.lock().await;
        c.session.as_ref().map_or_else(Vec::new, |s| {
            s.members
                .iter()
                .filter(|m| m.instance == app.cfg.instance_id && socket_ref(app, &m.socket_id).is_none())
                .map(|m| m.socket_id.clone())
                .collect()
        })
    };
    for sid in ghosts {
        if execute(app, &sid, session_id, &Command::Leave).await.is_ok() {
            app.counters.ghosts_pruned.fetch_add(1, Ordering::Relaxed);
            warn!(socket = %sid, session = %session_id, "removed a member whose socket was gone");
        }
    }
}

/// Writes back every session this instance serves (also into an emptied Redis), merged with
/// what Redis holds, and re-broadcasts a snapshot. Nothing a member was told is lost: the
/// version only grows.
pub(crate) async fn heal(app: &Arc<App>) {
    let _guard = app.heal_lock.lock().await;
    let entries = served(app);
    for (session_id, entry) in entries {
        if write_back(app, &session_id, &entry).await.is_err() {
            return;
        }
    }
}

/// Writes one session back (see `heal`). Err: Redis failed again (marked down).
pub(crate) async fn write_back(app: &Arc<App>, session_id: &str, entry: &Arc<Entry>) -> Result<(), ()> {
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
        cached.epoch = app.store.outage_count();
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
pub(crate) async fn relay_loop(app: Arc<App>, stop: CancellationToken) {
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

pub(crate) async fn on_relay(app: &Arc<App>, relay: Relay) {
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
    cached.epoch = app.store.outage_count();
    if let Some(s) = &relay.session {
        emit_local(app, &relay.session_id, "snapshot", &s.snapshot(relay.version, now_ms())).await;
        app.counters.snapshots.fetch_add(1, Ordering::Relaxed);
    }
    set_ticker(app, &entry, &relay.session_id, relay.session.as_ref());
    if !relay.session.as_ref().is_some_and(|s| has_local_members(app, s)) {
        forget(app, &relay.session_id, &entry);
    }
}
