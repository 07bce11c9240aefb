//! `--dialect legacy`: an emulation of BandSync's older public server, written from the facts
//! observed on it (issue 14), so the suite's dialect handling and conformance probe are tested
//! against both dialects without foreign code. What it does, and what the current protocol does
//! instead:
//! - no command is ever acked; a rejected command is dropped silently (no `session_error`);
//! - a new session has tempo 120; the first joiner becomes leader (or a joiner with
//!   `role: "leader"` when the session has none); `set_role` only takes a free leader seat;
//! - 8 members per session: the 9th gets an `error` event `{message}` and no snapshot;
//! - the join snapshot goes to the joiner only, without `serverTimestamp`, `sessionId` or
//!   `version`; snapshots carry `members` as an object keyed by socket id, plus extra fields;
//! - `set_tempo` is not range-checked; `play`/`pause`/`seek` are also broadcast as events;
//! - `sync_response` carries `serverTime`, not `serverTimestamp`;
//! - one timer per instance ticks every playing session every 100 ms, and `positionMs` counts
//!   +100 per tick (not aligned to the play start; the position only moves with ticks);
//! - extra events: `user_joined`, `user_left`, `role_changed`, `room_stats`, `ping` every 5 s;
//! - `leave_session` leaves the room but not the member list; on the leader's disconnect the
//!   first remaining member leads;
//! - state lives in this instance's memory only: no cross-instance room relay. (The real server
//!   also keeps a SETEX JSON copy under an unprefixed `session:<id>` key that nothing reads back;
//!   it is not emulated, so this emulation writes nothing to Redis.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef};
use socketioxide::handler::ConnectHandler;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{ServerConfig, ServerError, now_ms};

/// The legacy member cap.
pub const LEGACY_MAX_MEMBERS: usize = 8;
/// A new session's tempo in the legacy dialect.
pub const LEGACY_DEFAULT_TEMPO: f64 = 120.0;

#[derive(Debug)]
struct Session {
    tempo: f64,
    position: f64,
    playing: bool,
    leader: Option<String>,
    /// (socket id, display name), in join order.
    members: Vec<(String, String)>,
}

impl Session {
    fn new() -> Self {
        Session {
            tempo: LEGACY_DEFAULT_TEMPO,
            position: 0.0,
            playing: false,
            leader: None,
            members: Vec::new(),
        }
    }

    /// The legacy snapshot: no serverTimestamp, sessionId or version; members as an object.
    fn snapshot(&self) -> Value {
        let mut members = Map::new();
        for (sid, name) in &self.members {
            let role = if self.leader.as_deref() == Some(sid) {
                "leader"
            } else {
                "follower"
            };
            members.insert(sid.clone(), json!({"displayName": name, "role": role}));
        }
        json!({
            "tempo": self.tempo,
            "tempoBpm": self.tempo,
            "position": self.position,
            "isPlaying": self.playing,
            "leaderSocketId": self.leader,
            "members": members,
            "roomSize": self.members.len(),
            "lastUpdated": now_ms(),
        })
    }
}

struct Legacy {
    io: SocketIo,
    sessions: Mutex<HashMap<String, Session>>,
    ignore: Vec<String>,
}

impl Legacy {
    async fn to_room(&self, room: &str, event: &str, payload: &Value) {
        if let Err(e) = self.io.to(room.to_owned()).emit(event, payload).await {
            warn!("emit {event} to {room}: {e}");
        }
    }
}

/// Serves the legacy dialect on `listener` until `shutdown` is cancelled.
pub async fn serve(cfg: ServerConfig, listener: TcpListener, shutdown: CancellationToken) -> Result<(), ServerError> {
    let (layer, io) = SocketIo::builder()
        .max_payload(cfg.max_payload)
        .ws_max_message_size(cfg.max_payload as usize)
        .ws_max_frame_size(cfg.max_payload as usize)
        .max_buffer_size(1024)
        .build_layer();
    let app = Arc::new(Legacy {
        io: io.clone(),
        sessions: Mutex::new(HashMap::new()),
        ignore: cfg.ignore_events.clone(),
    });
    let handlers = app.clone();
    // Handlers installed in a connect middleware, before CONNECT is sent (as Node's synchronous
    // `connection` callback does): a client's first event cannot arrive before its handler.
    io.ns(
        "/",
        (async |_: SocketRef| {}).with(move |s: SocketRef| {
            let handlers = handlers.clone();
            async move {
                register(handlers, s);
                Ok::<(), std::convert::Infallible>(())
            }
        }),
    );
    let background = CancellationToken::new();
    tokio::spawn(ticker(app.clone(), background.clone()));
    tokio::spawn(pinger(app.clone(), background.clone()));

    let router = axum::Router::new().layer(layer);
    info!(instance = %cfg.instance_id, addr = %listener.local_addr()?, "bandsync-server (legacy dialect) listening");
    use axum::serve::ListenerExt as _;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let drained = CancellationToken::new();
    let server = axum::serve(listener, router).with_graceful_shutdown({
        let drained = drained.clone();
        async move { drained.cancelled().await }
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    background.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), app.io.disconnect()).await;
    drained.cancel();
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => warn!("HTTP server task: {e}"),
        Err(_) => warn!("HTTP connections did not close within 5 s"),
    }
    Ok(())
}

fn register(app: Arc<Legacy>, s: SocketRef) {
    for event in [
        "join_session",
        "set_role",
        "set_tempo",
        "play",
        "pause",
        "seek",
        "leave_session",
        "sync_request",
    ] {
        if app.ignore.iter().any(|e| e == event) {
            continue;
        }
        let app = app.clone();
        s.on(event, async move |s: SocketRef, Data(v): Data<Value>| {
            on_event(&app, &s, event, &v).await;
        });
    }
    let app = app.clone();
    s.on_disconnect(async move |s: SocketRef| on_disconnect(&app, &s).await);
}

fn session_id(v: &Value) -> Option<String> {
    v.get("sessionId")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
}

/// What one event changed: events to send after the lock is released.
enum Out {
    Socket(&'static str, Value),
    Room(&'static str, Value),
    Others(&'static str, Value),
}

async fn on_event(app: &Legacy, s: &SocketRef, event: &str, v: &Value) {
    let Some(id) = session_id(v) else {
        return; // dropped silently, as every other bad command
    };
    let sid = s.id.to_string();
    let out = {
        let mut sessions = app.sessions.lock().unwrap();
        apply(&mut sessions, &sid, &id, event, v)
    };
    if event == "join_session" && out.iter().any(|o| matches!(o, Out::Socket("snapshot", _))) {
        s.join(id.clone());
    }
    if event == "leave_session" {
        s.leave(id.clone());
    }
    for o in out {
        match o {
            Out::Socket(e, p) => {
                let _ = s.emit(e, &p);
            }
            Out::Room(e, p) => app.to_room(&id, e, &p).await,
            Out::Others(e, p) => {
                let _ = s.broadcast().to(id.clone()).emit(e, &p).await;
            }
        }
    }
}

/// The legacy rules, pure: the state change of `event` by socket `sid` and what to send.
fn apply(sessions: &mut HashMap<String, Session>, sid: &str, id: &str, event: &str, v: &Value) -> Vec<Out> {
    if event == "join_session" {
        let session = sessions.entry(id.to_owned()).or_insert_with(Session::new);
        if !session.members.iter().any(|(m, _)| m == sid) {
            if session.members.len() >= LEGACY_MAX_MEMBERS {
                return vec![Out::Socket(
                    "error",
                    json!({"message": format!("Session at capacity ({LEGACY_MAX_MEMBERS} members)")}),
                )];
            }
            let name = v.get("displayName").and_then(Value::as_str).unwrap_or("member");
            session.members.push((sid.to_owned(), name.chars().take(64).collect()));
            // The first joiner leads; `role: "leader"` on join takes only a free seat as well.
            if session.leader.is_none() {
                session.leader = Some(sid.to_owned());
            }
        }
        return vec![
            Out::Socket("snapshot", session.snapshot()),
            Out::Others("user_joined", json!({"socketId": sid})),
            Out::Room("room_stats", json!({"members": session.members.len()})),
        ];
    }
    let Some(session) = sessions.get_mut(id) else {
        return Vec::new();
    };
    if event == "sync_request" {
        return vec![Out::Socket(
            "sync_response",
            json!({"positionMs": session.position, "tempoBpm": session.tempo, "isPlaying": session.playing, "serverTime": now_ms()}),
        )];
    }
    if event == "leave_session" {
        return Vec::new(); // the room only: the member list keeps the member
    }
    let is_member = session.members.iter().any(|(m, _)| m == sid);
    if event == "set_role" {
        let role = v.get("role").and_then(Value::as_str);
        if is_member && role == Some("leader") && session.leader.is_none() {
            session.leader = Some(sid.to_owned());
            return vec![Out::Room("role_changed", json!({"leaderSocketId": sid}))];
        }
        return Vec::new();
    }
    if session.leader.as_deref() != Some(sid) {
        return Vec::new();
    }
    let broadcast = match event {
        "set_tempo" => match v.get("tempo").and_then(Value::as_f64) {
            Some(t) => {
                session.tempo = t;
                None
            }
            None => return Vec::new(),
        },
        "play" => {
            session.playing = true;
            Some(("play", json!({"position": session.position})))
        }
        "pause" => {
            session.playing = false;
            Some(("pause", json!({"position": session.position})))
        }
        "seek" => match v.get("position").and_then(Value::as_f64) {
            Some(p) => {
                session.position = p;
                Some(("seek", json!({"position": p})))
            }
            None => return Vec::new(),
        },
        _ => return Vec::new(),
    };
    let mut out: Vec<Out> = broadcast.into_iter().map(|(e, p)| Out::Room(e, p)).collect();
    out.push(Out::Room("snapshot", session.snapshot()));
    out
}

async fn on_disconnect(app: &Legacy, s: &SocketRef) {
    let sid = s.id.to_string();
    let mut out: Vec<(String, &'static str, Value)> = Vec::new();
    {
        let mut sessions = app.sessions.lock().unwrap();
        sessions.retain(|id, session| {
            let before = session.members.len();
            session.members.retain(|(m, _)| *m != sid);
            if session.members.len() == before {
                return true;
            }
            out.push((id.clone(), "user_left", json!({"socketId": sid})));
            if session.leader.as_deref() == Some(sid.as_str()) {
                session.leader = session.members.first().map(|(m, _)| m.clone());
                out.push((id.clone(), "role_changed", json!({"leaderSocketId": session.leader})));
            }
            !session.members.is_empty()
        });
    }
    for (room, event, payload) in out {
        app.to_room(&room, event, &payload).await;
    }
}

/// One timer for the instance: every 100 ms each playing session's position moves +100 ms and
/// its room gets a tick.
async fn ticker(app: Arc<Legacy>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let ticks: Vec<(String, Value)> = {
            let mut sessions = app.sessions.lock().unwrap();
            sessions
                .iter_mut()
                .filter(|(_, s)| s.playing)
                .map(|(id, s)| {
                    s.position += 100.0;
                    (id.clone(), json!({"tempoBpm": s.tempo, "positionMs": s.position}))
                })
                .collect()
        };
        for (room, tick) in ticks {
            app.to_room(&room, "scroll_tick", &tick).await;
        }
    }
}

/// The legacy keep-alive: a custom `ping` to every socket every 5 s.
async fn pinger(app: Arc<Legacy>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let _ = app.io.emit("ping", &json!({"t": now_ms()})).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(out: &[Out]) -> Vec<&'static str> {
        out.iter()
            .map(|o| match o {
                Out::Socket(e, _) | Out::Room(e, _) | Out::Others(e, _) => *e,
            })
            .collect()
    }

    #[test]
    fn the_first_joiner_leads_the_ninth_is_refused_and_others_are_ignored() {
        let mut s = HashMap::new();
        for i in 0..LEGACY_MAX_MEMBERS {
            let out = apply(
                &mut s,
                &format!("s{i}"),
                "x",
                "join_session",
                &json!({"sessionId": "x"}),
            );
            assert_eq!(ids(&out), ["snapshot", "user_joined", "room_stats"]);
        }
        let out = apply(&mut s, "s9", "x", "join_session", &json!({"sessionId": "x"}));
        let Out::Socket("error", msg) = &out[0] else { panic!() };
        assert_eq!(msg["message"], "Session at capacity (8 members)");
        let session = &s["x"];
        assert_eq!(session.leader.as_deref(), Some("s0"));
        assert_eq!(session.tempo, 120.0);
        assert!(session.snapshot().get("serverTimestamp").is_none());
        assert!(session.snapshot()["members"].is_object());
        // A follower's command and set_role are dropped silently; the leader's is broadcast.
        assert!(apply(&mut s, "s1", "x", "play", &json!({"sessionId": "x"})).is_empty());
        assert!(
            apply(
                &mut s,
                "s1",
                "x",
                "set_role",
                &json!({"sessionId": "x", "role": "leader"})
            )
            .is_empty()
        );
        let out = apply(&mut s, "s0", "x", "set_tempo", &json!({"sessionId": "x", "tempo": 999}));
        assert_eq!(ids(&out), ["snapshot"]);
        assert_eq!(s["x"].tempo, 999.0, "not range-checked");
        let out = apply(&mut s, "s0", "x", "seek", &json!({"sessionId": "x", "position": 5000}));
        assert_eq!(ids(&out), ["seek", "snapshot"]);
        let out = apply(&mut s, "s0", "x", "sync_request", &json!({"sessionId": "x"}));
        let Out::Socket("sync_response", r) = &out[0] else {
            panic!()
        };
        assert!(r.get("serverTime").is_some() && r.get("serverTimestamp").is_none());
    }
}
