//! Per-session tickers: `scroll_tick` at anchor + k·100 ms to this instance's members.

use super::*;

/// Starts, restarts or stops the session's ticker to match `session`'s playback. Ticks only go
/// to this instance's members; a running ticker with the same anchor is left alone.
pub(crate) fn set_ticker(app: &Arc<App>, entry: &Arc<Entry>, session_id: &str, session: Option<&Session>) {
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
pub(crate) async fn tick(app: Arc<App>, session_id: String, anchor_ms: i64, position: f64) {
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

pub(crate) async fn leave_all(app: &Arc<App>, sid: &str) {
    let sessions = app.joined.lock().unwrap().remove(sid).unwrap_or_default();
    for session_id in sessions {
        if let Err(why) = execute(app, sid, &session_id, &Command::Leave).await {
            warn!(socket = sid, session = %session_id, code = why.code(), "leaving on disconnect failed");
        }
    }
}

pub(crate) fn redis_failed(app: &App, e: &store::StoreError) {
    if app.store.mark_down() {
        warn!("Redis unavailable ({e}); serving members from memory until it returns");
    }
}
