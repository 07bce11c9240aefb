//! The session model and its rules, with no I/O: a command is checked and applied to a copy of
//! the session, so a rejected command changes nothing, and the same function serves the Redis
//! compare-and-set path, the degraded in-memory path and the unit tests.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Tempo a new session starts with (BANDSYNC_PROTOCOL.md).
pub const DEFAULT_TEMPO: f64 = 100.0;
pub const MIN_TEMPO: f64 = 20.0;
pub const MAX_TEMPO: f64 = 300.0;
/// Longest accepted session id, in bytes.
pub const MAX_SESSION_ID: usize = 128;
/// Longest accepted display name, in characters.
pub const MAX_DISPLAY_NAME: usize = 64;
/// Largest accepted seek position: 24 hours in ms.
pub const MAX_POSITION_MS: f64 = 86_400_000.0;
/// The scroll_tick period.
pub const TICK_MS: i64 = 100;

/// Why a command was refused; the code is what the client sees in the ack and in `session_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    BadPayload,
    InvalidSessionId,
    InvalidDisplayName,
    InvalidRole,
    InvalidTempo,
    InvalidPosition,
    NotMember,
    NotLeader,
    SessionFull,
    TooManySessions,
    UnknownEvent,
    TooManyPending,
    Conflict,
    ShuttingDown,
}

impl Reject {
    pub fn code(self) -> &'static str {
        match self {
            Reject::BadPayload => "BAD_PAYLOAD",
            Reject::InvalidSessionId => "INVALID_SESSION_ID",
            Reject::InvalidDisplayName => "INVALID_DISPLAY_NAME",
            Reject::InvalidRole => "INVALID_ROLE",
            Reject::InvalidTempo => "INVALID_TEMPO",
            Reject::InvalidPosition => "INVALID_POSITION",
            Reject::NotMember => "NOT_MEMBER",
            Reject::NotLeader => "NOT_LEADER",
            Reject::SessionFull => "SESSION_FULL",
            Reject::TooManySessions => "TOO_MANY_SESSIONS",
            Reject::UnknownEvent => "UNKNOWN_EVENT",
            Reject::TooManyPending => "TOO_MANY_PENDING",
            Reject::Conflict => "CONFLICT",
            Reject::ShuttingDown => "SHUTTING_DOWN",
        }
    }

    pub fn message(self) -> String {
        match self {
            Reject::BadPayload => "payload must be one JSON object with the event's fields".into(),
            Reject::InvalidSessionId => {
                format!("sessionId must be a string of 1 to {MAX_SESSION_ID} characters from A-Z a-z 0-9 _ - . :")
            }
            Reject::InvalidDisplayName => {
                format!("displayName must be a string of at most {MAX_DISPLAY_NAME} characters, no control characters")
            }
            Reject::InvalidRole => "role must be \"leader\" or \"follower\"".into(),
            Reject::InvalidTempo => format!("tempo must be a JSON number in [{MIN_TEMPO}, {MAX_TEMPO}]"),
            Reject::InvalidPosition => format!("position must be a JSON number of ms in [0, {MAX_POSITION_MS}]"),
            Reject::NotMember => "join the session first".into(),
            Reject::NotLeader => "only the session's leader may do this".into(),
            Reject::SessionFull => "the session has reached its member limit".into(),
            Reject::TooManySessions => "this connection has joined too many sessions".into(),
            Reject::UnknownEvent => "unknown event".into(),
            Reject::TooManyPending => "too many commands queued on this connection; wait for their acks".into(),
            Reject::Conflict => "the session changed too often concurrently; retry".into(),
            Reject::ShuttingDown => "the server is shutting down".into(),
        }
    }
}

/// One member as stored. `instance` says which server instance holds the member's connection:
/// that instance alone adds and removes it, also when it writes its state back after an outage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub socket_id: String,
    pub display_name: String,
    pub role: Role,
    pub joined_at: i64,
    pub instance: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// The session JSON stored in the hash's `data` field.
///
/// Playback is kept as an anchor: `position` ms at server time `anchor_ms`. While playing the
/// position at time t is `position + (t - anchor_ms)`; ticks fall at `anchor_ms + k·100`, so every
/// instance that reads the same state ticks at the same instants with the same `positionMs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub session_id: String,
    pub tempo: f64,
    pub position: f64,
    pub anchor_ms: i64,
    pub is_playing: bool,
    pub leader_socket_id: Option<String>,
    pub members: Vec<Member>,
    pub created_at: i64,
}

/// A client command, already checked for shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Join { display_name: String },
    SetRole(Role),
    SetTempo(f64),
    Play,
    Pause,
    Seek(f64),
    Leave,
}

impl Command {
    /// The protocol's event name.
    pub fn event(&self) -> &'static str {
        match self {
            Command::Join { .. } => "join_session",
            Command::SetRole(_) => "set_role",
            Command::SetTempo(_) => "set_tempo",
            Command::Play => "play",
            Command::Pause => "pause",
            Command::Seek(_) => "seek",
            Command::Leave => "leave_session",
        }
    }
}

/// What applying a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The session changed: store it and broadcast a snapshot.
    Changed,
    /// Nothing to store (e.g. a member joining again); the sender still gets a snapshot.
    Unchanged,
}

impl Session {
    pub fn new(session_id: &str, now_ms: i64) -> Self {
        Session {
            session_id: session_id.to_owned(),
            tempo: DEFAULT_TEMPO,
            position: 0.0,
            anchor_ms: now_ms,
            is_playing: false,
            leader_socket_id: None,
            members: Vec::new(),
            created_at: now_ms,
        }
    }

    pub fn is_member(&self, socket_id: &str) -> bool {
        self.members.iter().any(|m| m.socket_id == socket_id)
    }

    /// Position in ms at server time `now_ms`.
    pub fn position_at(&self, now_ms: i64) -> f64 {
        if self.is_playing {
            self.position + (now_ms - self.anchor_ms).max(0) as f64
        } else {
            self.position
        }
    }

    /// The next tick at or after `now_ms` while playing: (tick instant, positionMs).
    pub fn next_tick(&self, now_ms: i64) -> Option<(i64, f64)> {
        if !self.is_playing {
            return None;
        }
        let elapsed = (now_ms - self.anchor_ms).max(0);
        let k = elapsed / TICK_MS + 1;
        Some((self.anchor_ms + k * TICK_MS, self.position + (k * TICK_MS) as f64))
    }

    /// Checks and applies `cmd` from `socket_id` (on `instance`) at `now_ms`. On `Err` the session
    /// is untouched.
    pub fn apply(
        &mut self,
        cmd: &Command,
        socket_id: &str,
        instance: &str,
        now_ms: i64,
        max_members: usize,
    ) -> Result<Applied, Reject> {
        if let Command::Join { display_name } = cmd {
            if self.is_member(socket_id) {
                return Ok(Applied::Unchanged);
            }
            if self.members.len() >= max_members {
                return Err(Reject::SessionFull);
            }
            self.members.push(Member {
                socket_id: socket_id.to_owned(),
                display_name: display_name.clone(),
                role: Role::Follower,
                joined_at: now_ms,
                instance: instance.to_owned(),
            });
            return Ok(Applied::Changed);
        }
        if !self.is_member(socket_id) {
            return Err(Reject::NotMember);
        }
        let is_leader = self.leader_socket_id.as_deref() == Some(socket_id);
        match cmd {
            Command::Join { .. } => unreachable!("handled above"),
            Command::SetRole(Role::Leader) => {
                if is_leader {
                    return Ok(Applied::Unchanged);
                }
                self.set_leader(Some(socket_id));
            }
            Command::SetRole(Role::Follower) => {
                if !is_leader {
                    return Ok(Applied::Unchanged);
                }
                self.pause(now_ms);
                self.set_leader(None);
            }
            Command::Leave => {
                if is_leader {
                    self.pause(now_ms);
                    self.leader_socket_id = None;
                }
                self.members.retain(|m| m.socket_id != socket_id);
            }
            _ if !is_leader => return Err(Reject::NotLeader),
            Command::SetTempo(t) => self.tempo = *t,
            Command::Play => {
                if !self.is_playing {
                    self.anchor_ms = now_ms;
                    self.is_playing = true;
                }
            }
            Command::Pause => self.pause(now_ms),
            Command::Seek(p) => {
                self.position = *p;
                self.anchor_ms = now_ms;
            }
        }
        Ok(Applied::Changed)
    }

    fn pause(&mut self, now_ms: i64) {
        if self.is_playing {
            self.position = self.position_at(now_ms);
            self.anchor_ms = now_ms;
            self.is_playing = false;
        }
    }

    fn set_leader(&mut self, leader: Option<&str>) {
        self.leader_socket_id = leader.map(str::to_owned);
        for m in &mut self.members {
            m.role = if Some(m.socket_id.as_str()) == leader {
                Role::Leader
            } else {
                Role::Follower
            };
        }
    }

    /// The state this instance writes back after an outage, given what Redis holds now.
    /// Members are owned by their instance: ours come from `self`, the others' from `stored`.
    /// Playback, tempo and leader come from `self` if this instance changed them while Redis was
    /// away (`changed_here`), else from `stored`. A leader whose member is gone is dropped.
    pub fn merge_for_writeback(&self, stored: Option<&Session>, instance: &str, changed_here: bool) -> Session {
        let Some(stored) = stored else {
            return self.clone();
        };
        let mut out = if changed_here { self.clone() } else { stored.clone() };
        let mut members: Vec<Member> = stored
            .members
            .iter()
            .filter(|m| m.instance != instance)
            .cloned()
            .collect();
        members.extend(self.members.iter().filter(|m| m.instance == instance).cloned());
        members.sort_by(|a, b| a.joined_at.cmp(&b.joined_at).then(a.socket_id.cmp(&b.socket_id)));
        out.members = members;
        let leader = out.leader_socket_id.clone();
        if leader.as_deref().is_some_and(|l| !out.is_member(l)) {
            out.leader_socket_id = None;
        }
        let leader = out.leader_socket_id.clone();
        out.set_leader(leader.as_deref());
        out
    }

    /// The `snapshot` event's payload at server time `now_ms`.
    pub fn snapshot(&self, version: u64, now_ms: i64) -> Value {
        let members: Vec<Value> = self
            .members
            .iter()
            .map(|m| {
                json!({
                    "socketId": m.socket_id,
                    "displayName": m.display_name,
                    "role": m.role,
                    "joinedAt": m.joined_at,
                })
            })
            .collect();
        json!({
            "sessionId": self.session_id,
            "tempo": self.tempo,
            "tempoBpm": self.tempo,
            "position": self.position_at(now_ms),
            "isPlaying": self.is_playing,
            "leaderSocketId": self.leader_socket_id,
            "members": members,
            "serverTimestamp": now_ms,
            "version": version,
        })
    }

    /// The `sync_response` payload at server time `now_ms`.
    pub fn sync_response(&self, now_ms: i64) -> Value {
        json!({
            "sessionId": self.session_id,
            "positionMs": self.position_at(now_ms),
            "tempoBpm": self.tempo,
            "isPlaying": self.is_playing,
            "serverTimestamp": now_ms,
        })
    }
}

/// Checks a session id: 1..=128 bytes of `A-Z a-z 0-9 _ - . :`.
pub fn check_session_id(v: Option<&Value>) -> Result<String, Reject> {
    match v {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_SESSION_ID
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) =>
        {
            Ok(s.clone())
        }
        _ => Err(Reject::InvalidSessionId),
    }
}

/// Parses one event's payload into (session id, command). `event` is a protocol event name other
/// than `sync_request`; `payload` is the first argument the client sent (Null if none).
pub fn parse_command(event: &str, payload: &Value) -> Result<(Option<String>, Command), Reject> {
    let obj = match payload {
        Value::Object(o) => Some(o),
        Value::Null if event == "leave_session" => None,
        _ => return Err(Reject::BadPayload),
    };
    let field = |name: &str| obj.and_then(|o| o.get(name));
    if event == "leave_session" {
        let id = match field("sessionId") {
            None | Some(Value::Null) => None,
            v => Some(check_session_id(v)?),
        };
        return Ok((id, Command::Leave));
    }
    let id = check_session_id(field("sessionId"))?;
    let number = |name: &str, lo: f64, hi: f64, err: Reject| match field(name) {
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite() && *x >= lo && *x <= hi).ok_or(err),
        _ => Err(err),
    };
    let cmd = match event {
        "join_session" => {
            let display_name = match field("displayName") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) if s.chars().count() <= MAX_DISPLAY_NAME && !s.chars().any(char::is_control) => {
                    s.clone()
                }
                Some(_) => return Err(Reject::InvalidDisplayName),
            };
            Command::Join { display_name }
        }
        "set_role" => match field("role") {
            Some(Value::String(r)) if r == "leader" => Command::SetRole(Role::Leader),
            Some(Value::String(r)) if r == "follower" => Command::SetRole(Role::Follower),
            _ => return Err(Reject::InvalidRole),
        },
        "set_tempo" => Command::SetTempo(number("tempo", MIN_TEMPO, MAX_TEMPO, Reject::InvalidTempo)?),
        "play" => Command::Play,
        "pause" => Command::Pause,
        "seek" => Command::Seek(number("position", 0.0, MAX_POSITION_MS, Reject::InvalidPosition)?),
        _ => return Err(Reject::UnknownEvent),
    };
    Ok((Some(id), cmd))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(ids: &[&str]) -> Session {
        let mut s = Session::new("s1", 1_000);
        for id in ids {
            s.apply(
                &Command::Join {
                    display_name: (*id).into(),
                },
                id,
                "A",
                1_000,
                100,
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn only_the_leader_controls_and_rejections_change_nothing() {
        let mut s = joined(&["a", "b"]);
        let before = s.clone();
        assert_eq!(
            s.apply(&Command::SetTempo(120.0), "b", "A", 2_000, 100),
            Err(Reject::NotLeader)
        );
        assert_eq!(s.apply(&Command::Play, "x", "A", 2_000, 100), Err(Reject::NotMember));
        assert_eq!(s, before);
        s.apply(&Command::SetRole(Role::Leader), "a", "A", 2_000, 100).unwrap();
        s.apply(&Command::SetTempo(120.0), "a", "A", 2_000, 100).unwrap();
        assert_eq!(s.tempo, 120.0);
        // Takeover: b becomes leader, a a follower.
        s.apply(&Command::SetRole(Role::Leader), "b", "A", 2_100, 100).unwrap();
        assert_eq!(s.leader_socket_id.as_deref(), Some("b"));
        assert_eq!(s.members[0].role, Role::Follower);
        assert_eq!(s.apply(&Command::Play, "a", "A", 2_200, 100), Err(Reject::NotLeader));
    }

    #[test]
    fn playback_position_and_ticks_follow_the_anchor() {
        let mut s = joined(&["a"]);
        s.apply(&Command::SetRole(Role::Leader), "a", "A", 1_000, 100).unwrap();
        s.apply(&Command::Seek(500.0), "a", "A", 1_000, 100).unwrap();
        s.apply(&Command::Play, "a", "A", 10_000, 100).unwrap();
        assert_eq!(s.position_at(10_250), 750.0);
        assert_eq!(s.next_tick(10_250), Some((10_300, 800.0)));
        assert_eq!(s.next_tick(10_300), Some((10_400, 900.0)));
        s.apply(&Command::Pause, "a", "A", 10_420, 100).unwrap();
        assert_eq!(s.position_at(99_999), 920.0);
        assert_eq!(s.next_tick(10_500), None);
        // A leader stepping down pauses playback.
        s.apply(&Command::Play, "a", "A", 20_000, 100).unwrap();
        s.apply(&Command::SetRole(Role::Follower), "a", "A", 20_050, 100)
            .unwrap();
        assert!(!s.is_playing);
        assert_eq!(s.position, 970.0);
        assert_eq!(s.leader_socket_id, None);
    }

    #[test]
    fn member_limit_and_rejoin() {
        let mut s = joined(&["a", "b"]);
        assert_eq!(
            s.apply(
                &Command::Join {
                    display_name: "".into()
                },
                "a",
                "A",
                0,
                2
            ),
            Ok(Applied::Unchanged)
        );
        assert_eq!(
            s.apply(
                &Command::Join {
                    display_name: "".into()
                },
                "c",
                "A",
                0,
                2
            ),
            Err(Reject::SessionFull)
        );
    }

    #[test]
    fn payload_table() {
        let cases: &[(&str, Value, Result<Command, Reject>)] = &[
            (
                "join_session",
                json!({"sessionId": "s"}),
                Ok(Command::Join {
                    display_name: "".into(),
                }),
            ),
            ("join_session", json!("s"), Err(Reject::BadPayload)),
            ("join_session", json!([1]), Err(Reject::BadPayload)),
            ("join_session", json!({}), Err(Reject::InvalidSessionId)),
            ("join_session", json!({"sessionId": 5}), Err(Reject::InvalidSessionId)),
            (
                "join_session",
                json!({"sessionId": "a b"}),
                Err(Reject::InvalidSessionId),
            ),
            (
                "join_session",
                json!({"sessionId": "x".repeat(129)}),
                Err(Reject::InvalidSessionId),
            ),
            (
                "join_session",
                json!({"sessionId": "s", "displayName": "y".repeat(65)}),
                Err(Reject::InvalidDisplayName),
            ),
            (
                "join_session",
                json!({"sessionId": "s", "displayName": "a\u{7}"}),
                Err(Reject::InvalidDisplayName),
            ),
            (
                "join_session",
                json!({"sessionId": "s", "displayName": 3}),
                Err(Reject::InvalidDisplayName),
            ),
            (
                "set_role",
                json!({"sessionId": "s", "role": "boss"}),
                Err(Reject::InvalidRole),
            ),
            (
                "set_tempo",
                json!({"sessionId": "s", "tempo": "120"}),
                Err(Reject::InvalidTempo),
            ),
            (
                "set_tempo",
                json!({"sessionId": "s", "tempo": 19.9}),
                Err(Reject::InvalidTempo),
            ),
            (
                "set_tempo",
                json!({"sessionId": "s", "tempo": 300.5}),
                Err(Reject::InvalidTempo),
            ),
            (
                "set_tempo",
                json!({"sessionId": "s", "tempo": 300}),
                Ok(Command::SetTempo(300.0)),
            ),
            (
                "seek",
                json!({"sessionId": "s", "position": -1}),
                Err(Reject::InvalidPosition),
            ),
            (
                "seek",
                json!({"sessionId": "s", "position": 1e12}),
                Err(Reject::InvalidPosition),
            ),
            ("seek", json!({"sessionId": "s", "position": 0}), Ok(Command::Seek(0.0))),
            ("leave_session", Value::Null, Ok(Command::Leave)),
            ("leave_session", json!(7), Err(Reject::BadPayload)),
            ("dance", json!({"sessionId": "s"}), Err(Reject::UnknownEvent)),
        ];
        for (event, payload, want) in cases {
            let got = parse_command(event, payload).map(|(_, c)| c);
            assert_eq!(&got, want, "{event} {payload}");
        }
    }

    #[test]
    fn writeback_keeps_other_instances_members_and_drops_a_vanished_leader() {
        let mut stored = joined(&["a"]);
        stored.members.push(Member {
            socket_id: "b".into(),
            display_name: "b".into(),
            role: Role::Leader,
            joined_at: 1_500,
            instance: "B".into(),
        });
        stored.leader_socket_id = Some("b".into());
        stored.tempo = 90.0;
        // Instance A, during the outage: a new member c, tempo unchanged.
        let mut mine = joined(&["a", "c"]);
        mine.leader_socket_id = Some("zombie".into());
        let merged = mine.merge_for_writeback(Some(&stored), "A", false);
        let ids: Vec<_> = merged.members.iter().map(|m| m.socket_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert_eq!(merged.tempo, 90.0);
        assert_eq!(merged.leader_socket_id.as_deref(), Some("b"));
        let merged = mine.merge_for_writeback(Some(&stored), "A", true);
        assert_eq!(merged.leader_socket_id, None, "a leader no member holds is dropped");
        assert_eq!(mine.merge_for_writeback(None, "A", true), mine);
    }
}
