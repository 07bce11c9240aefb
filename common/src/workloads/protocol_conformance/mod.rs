//! `protocol_conformance` — what the servers under test actually do with each command, found by
//! a handful of clients (three in one session: two on the first server, one on the second,
//! then up to `max_members` joining a second session to find the member cap). The coordinator
//! runs it briefly before the first Socket.IO step unless the plan says `[run] probe = false`;
//! the dialect it concludes is what later steps rely on (when the plan leaves `protocol` to
//! "detect"), so a server that lacks a capability makes them refuse before loading, naming it.
//!
//! Everything here is observed, never assumed: a command counts as supported only when its
//! change showed in a snapshot; the timestamp field is the one the snapshots carried; the leader
//! rule is what the leader field said after the first join and after a second member's
//! `set_role`; the tick position is judged from where `pause` froze the position after plays of
//! lengths that are not multiples of 100 ms.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

mod render;

use crate::dialect::{Dialect, LeaderClaim, Protocol, SCRIPT_COMMANDS, TickPosition};
use crate::metrics::MetricSet;
use crate::plan::{PlanError, StepCx};
use crate::workload::{FigureCx, Score, Section, Workload};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    /// Commands probed, in the table's order.
    pub const COMMANDS: [&str; 7] = [
        "join_session",
        "set_role",
        "set_tempo",
        "seek",
        "play",
        "pause",
        "sync_request",
    ];
    /// Fields that may carry the server's clock (Unix ms), in order of preference.
    pub const TIMESTAMP_FIELDS: [&str; 3] = ["serverTimestamp", "serverTime", "timestamp"];

    /// Counter: probe clients connected; and those that could not (with `connect_error:<why>`).
    pub const CLIENTS: &str = "clients";
    pub const CLIENTS_FAILED: &str = "clients_failed";
    pub const CONNECT_ERROR: &str = "connect_error:";
    /// Counter: distinct server instances the probe's session spans (1 or 2).
    pub const INSTANCES: &str = "instances";

    /// Per command: `cmd.<command>.<what>` counters.
    pub fn cmd(command: &str, what: &str) -> String {
        format!("cmd.{command}.{what}")
    }
    /// What is counted per command.
    pub const SENT: &str = "sent";
    /// Answered by an ack (any payload but `{ok: false}`).
    pub const ACKED: &str = "acked";
    /// Refused: an ack `{ok: false}`, a `session_error` or an `error` event to the sender.
    pub const REFUSED: &str = "refused";
    /// The change showed in a snapshot (or, for `sync_request`, a `sync_response` came).
    pub const APPLIED: &str = "applied";
    /// A snapshot (`sync_response` for `sync_request`) reached the sender.
    pub const TO_SENDER: &str = "to_sender";
    /// Another member on the sender's instance got a snapshot / there was one to get it.
    pub const TO_SAME: &str = "to_same";
    pub const SAME_EXPECTED: &str = "same_expected";
    /// A member on the other instance got a snapshot / there was one to get it.
    pub const TO_CROSS: &str = "to_cross";
    pub const CROSS_EXPECTED: &str = "cross_expected";

    /// The first joiner's join snapshot: `join.field:<f>`, `join.version`, `join.session_id`,
    /// `join.members:<shape>`; gauge `join.tempo`.
    pub const JOIN: &str = "join.";
    /// Snapshots after commands, the same fields: `snap.count`, `snap.field:<f>`, …
    pub const SNAP: &str = "snap.";
    pub const COUNT: &str = "count";
    pub const FIELD: &str = "field:";
    pub const VERSION: &str = "version";
    pub const SESSION_ID: &str = "session_id";
    pub const MEMBERS: &str = "members:";
    pub const TEMPO: &str = "tempo";

    /// Ticks: `tick.count`, `tick.field:<f>`, `tick.tempo_bpm`; members of the other instance
    /// that could tick / did.
    pub const TICK: &str = "tick.";
    pub const TEMPO_BPM: &str = "tempo_bpm";
    /// `sync_response`: `sync.field:<f>`.
    pub const SYNC: &str = "sync.";

    /// Counter: after the first join the joiner was named leader / nobody was.
    pub const LEADER_FIRST_JOINER: &str = "leader.first_joiner";
    pub const LEADER_NONE_AFTER_JOIN: &str = "leader.none_after_join";
    /// Counter: a second member's `set_role leader` took the seat / left it with the first.
    pub const LEADER_SET_ROLE_TOOK: &str = "leader.set_role_took";
    pub const LEADER_SET_ROLE_KEPT: &str = "leader.set_role_kept";

    /// Counter: a second joiner on the same instance / the first member got a snapshot then.
    pub const JOIN_ROOM_EXPECTED: &str = "join.room_expected";
    pub const JOIN_ROOM_SEEN: &str = "join.room_seen";

    /// A follower's `set_tempo` (must be refused): `reject.sent`, `reject.applied`,
    /// `reject.ack`, `reject.session_error`, `reject.error`.
    pub const REJECT: &str = "reject.";
    /// The leader's `set_tempo 1000` (outside [20, 300]): `range.sent`, `range.applied`, …
    pub const RANGE: &str = "range.";

    /// Counter: play/pause cycles measured, and those whose paused position moved by an exact
    /// multiple of 100 ms (a +100-per-tick counter) though the play lasted otherwise.
    pub const TICK_CYCLES: &str = "tick.cycles";
    pub const TICK_COUNTER_CYCLES: &str = "tick.counter_cycles";

    /// Member cap: clients tried, joined, refused (`refusal:<why>`), unanswered.
    pub const CAP_TRIED: &str = "cap.tried";
    pub const CAP_JOINED: &str = "cap.joined";
    pub const CAP_REFUSED: &str = "cap.refused";
    pub const CAP_UNANSWERED: &str = "cap.unanswered";
    pub const REFUSAL: &str = "refusal:";

    /// Counter: events the protocol does not define, by name (`extra:<event>`).
    pub const EXTRA: &str = "extra:";
    /// Most distinct extra event names recorded.
    pub const MAX_EXTRA: usize = 12;
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolConformance {
    /// How long to wait for the answers to one command.
    pub settle: Duration,
    /// Most members joined to find the member cap.
    pub max_members: u32,
}

impl Default for ProtocolConformance {
    fn default() -> Self {
        ProtocolConformance {
            settle: Duration::from_millis(300),
            max_members: 10,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    settle: Option<Spanned<String>>,
    max_members: Option<Spanned<i64>>,
}

/// One probed command.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct CommandRow {
    pub command: String,
    pub sent: u64,
    pub acked: u64,
    pub refused: u64,
    /// The change showed in a snapshot (`sync_request`: a `sync_response` came).
    pub applied: u64,
    pub to_sender: u64,
    pub to_same_instance: u64,
    pub same_instance_expected: u64,
    pub to_other_instance: u64,
    pub other_instance_expected: u64,
}

impl CommandRow {
    /// Anything came back at all.
    pub fn answered(&self) -> bool {
        self.acked + self.refused + self.applied + self.to_sender + self.to_same_instance + self.to_other_instance > 0
    }
}

/// Which fields a kind of message carried.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Fields {
    /// Messages of this kind received.
    pub count: u64,
    /// The server-clock field found (the most frequent of serverTimestamp, serverTime,
    /// timestamp); `None`: none carried one.
    pub timestamp_field: Option<String>,
    pub version: bool,
    pub session_id: bool,
    /// "array", "object" or "absent".
    pub members: Option<String>,
}

/// What the probe found.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct ProtocolConformanceFigures {
    pub clients: u64,
    pub clients_failed: u64,
    /// Why connections failed (reason, count).
    pub connect_errors: Vec<(String, u64)>,
    /// Server instances the probe's session spanned.
    pub instances: u64,
    pub commands: Vec<CommandRow>,
    /// "joiner only", "room" or "none".
    pub join_snapshot_target: String,
    pub join_snapshot: Fields,
    pub snapshots: Fields,
    pub ticks: Fields,
    pub ticks_carry_tempo_bpm: bool,
    pub sync_response: Fields,
    /// A new session's tempo, from the first join snapshot.
    pub default_tempo: Option<f64>,
    pub leader_rule: Option<LeaderClaim>,
    /// How the leader rule was seen, in words.
    pub leader_observed: String,
    /// How a follower's `set_tempo` was refused: "ack {ok:false}", "session_error", "error",
    /// "silent"; "applied" when the server took it.
    pub refusal_channels: Vec<String>,
    /// Whether `set_tempo 1000` was refused (`None`: not observable).
    pub tempo_range_checked: Option<bool>,
    /// The member cap found (`None`: every one of `cap_tried` joined).
    pub member_cap: Option<u64>,
    pub cap_tried: u64,
    pub cap_refusals: Vec<(String, u64)>,
    pub cap_unanswered: u64,
    pub tick_position: Option<TickPosition>,
    pub tick_cycles: u64,
    /// Whether a change on one instance reached members on the other (`None`: one instance).
    pub cross_instance: Option<bool>,
    /// Events the protocol does not define (name, count).
    pub extra_events: Vec<(String, u64)>,
    /// The dialect concluded (`None` when nothing joined: nothing to conclude from).
    pub dialect: Option<Dialect>,
    /// The known dialect closest to what was found, and the traits that differ from it.
    pub closest: Protocol,
    pub differences: Vec<String>,
}

fn prefixed(m: &MetricSet, prefix: &str) -> Vec<(String, u64)> {
    crate::workloads::band::reasons(m, prefix)
}

fn fields(m: &MetricSet, p: &str) -> Fields {
    let c = |what: &str| m.counter(&format!("{p}{what}"));
    let timestamp_field = n::TIMESTAMP_FIELDS
        .iter()
        .map(|f| (*f, c(&format!("{}{f}", n::FIELD))))
        .filter(|(_, k)| *k > 0)
        .max_by_key(|(_, k)| *k)
        .map(|(f, _)| f.to_owned());
    let members = ["array", "object", "absent"]
        .iter()
        .map(|s| (*s, c(&format!("{}{s}", n::MEMBERS))))
        .filter(|(_, k)| *k > 0)
        .max_by_key(|(_, k)| *k)
        .map(|(s, _)| s.to_owned());
    let count = c(n::COUNT);
    Fields {
        count,
        timestamp_field,
        version: count > 0 && c(n::VERSION) == count,
        session_id: count > 0 && c(n::SESSION_ID) == count,
        members,
    }
}

fn row(m: &MetricSet, command: &str) -> CommandRow {
    let c = |what: &str| m.counter(&n::cmd(command, what));
    CommandRow {
        command: command.to_owned(),
        sent: c(n::SENT),
        acked: c(n::ACKED),
        refused: c(n::REFUSED),
        applied: c(n::APPLIED),
        to_sender: c(n::TO_SENDER),
        to_same_instance: c(n::TO_SAME),
        same_instance_expected: c(n::SAME_EXPECTED),
        to_other_instance: c(n::TO_CROSS),
        other_instance_expected: c(n::CROSS_EXPECTED),
    }
}

/// Reads the probe's metrics into its findings (the dialect and closeness filled in after).
fn findings(m: &MetricSet) -> ProtocolConformanceFigures {
    let commands: Vec<CommandRow> = n::COMMANDS.iter().map(|c| row(m, c)).collect();
    let join_snapshot = fields(m, n::JOIN);
    let join_target = if m.counter(n::JOIN_ROOM_SEEN) > 0 {
        "room"
    } else if join_snapshot.count > 0 && m.counter(n::JOIN_ROOM_EXPECTED) > 0 {
        "joiner only"
    } else if join_snapshot.count > 0 {
        "joiner (room not observed)"
    } else {
        "none"
    };
    let (first, none) = (m.counter(n::LEADER_FIRST_JOINER), m.counter(n::LEADER_NONE_AFTER_JOIN));
    let (took, kept) = (m.counter(n::LEADER_SET_ROLE_TOOK), m.counter(n::LEADER_SET_ROLE_KEPT));
    let (leader_rule, leader_observed) = match (first > 0, took > 0, kept > 0) {
        (_, true, _) => (
            Some(LeaderClaim::SetRole),
            format!(
                "set_role takes over{}",
                if first > 0 { " (the first joiner also leads until then)" } else { "" }
            ),
        ),
        (true, false, true) => (
            Some(LeaderClaim::FirstJoiner),
            "the first joiner leads; a second member's set_role was ignored".to_owned(),
        ),
        (true, false, false) => (Some(LeaderClaim::FirstJoiner), "the first joiner leads".to_owned()),
        (false, false, _) if none > 0 => (None, "no leader after the first join, and set_role took no seat".to_owned()),
        _ => (None, "not observed".to_owned()),
    };
    let reject = |w: &str| m.counter(&format!("{}{w}", n::REJECT));
    let mut refusal_channels = Vec::new();
    if reject(n::SENT) > 0 {
        for (key, label) in [
            ("ack", "ack {ok:false}"),
            ("session_error", "session_error"),
            ("error", "error"),
        ] {
            if reject(key) > 0 {
                refusal_channels.push(label.to_owned());
            }
        }
        if reject(n::APPLIED) > 0 {
            refusal_channels.push("applied (a follower's set_tempo changed the tempo)".to_owned());
        } else if refusal_channels.is_empty() {
            refusal_channels.push("silent (no ack, no error)".to_owned());
        }
    }
    let range = |w: &str| m.counter(&format!("{}{w}", n::RANGE));
    let tempo_range_checked = (range(n::SENT) > 0 && row(m, "set_tempo").applied > 0).then(|| range(n::APPLIED) == 0);
    let cap_tried = m.counter(n::CAP_TRIED);
    let cap_refused = m.counter(n::CAP_REFUSED);
    let cycles = m.counter(n::TICK_CYCLES);
    let tick_position = (cycles > 0).then(|| {
        if m.counter(n::TICK_COUNTER_CYCLES) == cycles {
            TickPosition::Counter
        } else {
            TickPosition::Aligned
        }
    });
    let instances = m.counter(n::INSTANCES);
    let (cross_seen, cross_expected) = commands
        .iter()
        .filter(|r| SCRIPT_COMMANDS.contains(&r.command.as_str()))
        .fold((0, 0), |(s, e), r| (s + r.to_other_instance, e + r.other_instance_expected));
    let tick = |w: &str| m.counter(&format!("{}{w}", n::TICK));
    let mut extra = prefixed(m, n::EXTRA);
    extra.sort();
    ProtocolConformanceFigures {
        clients: m.counter(n::CLIENTS),
        clients_failed: m.counter(n::CLIENTS_FAILED),
        connect_errors: prefixed(m, n::CONNECT_ERROR),
        instances,
        commands,
        join_snapshot_target: join_target.to_owned(),
        join_snapshot,
        snapshots: fields(m, n::SNAP),
        ticks: fields(m, n::TICK),
        ticks_carry_tempo_bpm: tick(n::COUNT) > 0 && tick(n::TEMPO_BPM) == tick(n::COUNT),
        sync_response: fields(m, n::SYNC),
        default_tempo: m.gauge(&format!("{}{}", n::JOIN, n::TEMPO)),
        leader_rule,
        leader_observed,
        refusal_channels,
        tempo_range_checked,
        member_cap: (cap_refused > 0).then(|| m.counter(n::CAP_JOINED)),
        cap_tried,
        cap_refusals: prefixed(m, n::REFUSAL),
        cap_unanswered: m.counter(n::CAP_UNANSWERED),
        tick_position,
        tick_cycles: cycles,
        cross_instance: (instances > 1 && cross_expected > 0).then_some(cross_seen > 0),
        extra_events: extra,
        dialect: None,
        closest: Protocol::Bandsync,
        differences: Vec::new(),
    }
}

/// The dialect the findings describe, starting from the closest known one for what was not
/// observable.
fn conclude(f: &ProtocolConformanceFigures) -> Option<(Dialect, Protocol, Vec<String>)> {
    let join = f.commands.iter().find(|r| r.command == "join_session")?;
    if join.to_sender + join.acked == 0 {
        return None;
    }
    let observed = |base: &Dialect| -> Dialect {
        let mut d = base.clone();
        d.timestamp_field = f
            .snapshots
            .timestamp_field
            .clone()
            .or_else(|| f.ticks.timestamp_field.clone());
        if f.snapshots.count + f.ticks.count == 0 {
            // Nothing to read it from: keep the known dialect's.
            d.timestamp_field = base.timestamp_field.clone();
        }
        let sync = f.commands.iter().find(|r| r.command == "sync_request");
        d.sync_timestamp_field = match sync {
            Some(r) if r.applied > 0 => f.sync_response.timestamp_field.clone(),
            _ => None,
        };
        d.acks = f.commands.iter().any(|r| r.acked > 0);
        if let Some(l) = f.leader_rule {
            d.leader_claim = l;
        }
        if let Some(t) = f.default_tempo {
            d.default_tempo = t;
        }
        d.member_cap = f.member_cap.map(|c| c as u32);
        if let Some(t) = f.tick_position {
            d.tick_position = t;
        }
        if let Some(c) = f.cross_instance {
            d.cross_instance = c;
        }
        d.commands = SCRIPT_COMMANDS
            .iter()
            .filter(|c| f.commands.iter().any(|r| r.command == **c && r.applied > 0))
            .map(|c| (*c).to_owned())
            .collect();
        d
    };
    let diff = |known: &Dialect, found: &Dialect| -> Vec<String> {
        let mut out = Vec::new();
        let show = |o: &Option<String>| o.clone().unwrap_or_else(|| "none".to_owned());
        if known.timestamp_field != found.timestamp_field {
            out.push(format!("timestamps {}", show(&found.timestamp_field)));
        }
        if known.sync_timestamp_field != found.sync_timestamp_field {
            out.push(format!("sync_response {}", show(&found.sync_timestamp_field)));
        }
        if known.acks != found.acks {
            out.push(format!("acks {}", if found.acks { "yes" } else { "no" }));
        }
        if known.leader_claim != found.leader_claim {
            out.push("leader rule".to_owned());
        }
        if known.default_tempo != found.default_tempo {
            out.push(format!("default tempo {}", found.default_tempo));
        }
        if known.member_cap.is_some() != found.member_cap.is_some() {
            out.push(format!(
                "member cap {}",
                found.member_cap.map_or_else(|| "none found".to_owned(), |c| c.to_string())
            ));
        }
        if known.tick_position != found.tick_position {
            out.push("tick position".to_owned());
        }
        if known.cross_instance != found.cross_instance {
            out.push("cross-instance rooms".to_owned());
        }
        if known.commands != found.commands {
            out.push(format!("commands {}", found.commands.join(", ")));
        }
        out
    };
    let mut best: Option<(Dialect, Protocol, Vec<String>)> = None;
    for p in [Protocol::Bandsync, Protocol::BandsyncLegacy] {
        let known = Dialect::of(p);
        let found = observed(&known);
        let d = diff(&known, &found);
        if best.as_ref().is_none_or(|(_, _, b)| d.len() < b.len()) {
            best = Some((Dialect { protocol: p, ..found }, p, d));
        }
    }
    best
}

/// Findings with the concluded dialect.
pub fn analyse(m: &MetricSet) -> ProtocolConformanceFigures {
    let mut f = findings(m);
    if let Some((d, closest, differences)) = conclude(&f) {
        f.dialect = Some(d);
        f.closest = closest;
        f.differences = differences;
    }
    f
}

impl Workload for ProtocolConformance {
    const KIND: &'static str = "protocol_conformance";
    const SECTION: Section = Section::Protocol;
    type Raw = Raw;
    type Figures = ProtocolConformanceFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let settle = cx.duration(&raw.settle, "settle", Duration::from_millis(300))?;
        if settle > Duration::from_secs(10) {
            return Err(cx.err(cx.span_of(&raw.settle), "settle", "at most 10s"));
        }
        Ok(ProtocolConformance {
            settle,
            max_members: cx.count(&raw.max_members, "max_members", 10, 2, 64)? as u32,
        })
    }

    fn clamped(self) -> Self {
        ProtocolConformance {
            settle: self.settle.clamp(Duration::from_millis(1), Duration::from_secs(10)),
            max_members: self.max_members.clamp(2, 64),
        }
    }

    fn uses_redis(&self) -> bool {
        false
    }

    fn uses_servers(&self) -> bool {
        true
    }

    fn single_agent(&self) -> bool {
        true
    }

    fn auto() -> Option<Self> {
        Some(ProtocolConformance::default())
    }

    fn concluded(&self, m: &MetricSet) -> Option<Dialect> {
        analyse(m).dialect
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> ProtocolConformanceFigures {
        analyse(m)
    }

    fn score(_f: &ProtocolConformanceFigures) -> Score {
        Score::Outside
    }

    fn notes(f: &ProtocolConformanceFigures) -> Vec<String> {
        match &f.dialect {
            Some(d) => vec![format!(
                "Protocol conformance: the servers were probed before the Socket.IO steps and found closest to `{}`{}; the steps that follow rely only on what was observed (a command counts as supported only when its change showed in a snapshot).",
                d.protocol.as_str(),
                if f.differences.is_empty() {
                    String::new()
                } else {
                    format!(", differing in: {}", f.differences.join("; "))
                }
            )],
            None => Vec::new(),
        }
    }

    fn recommendations(f: &ProtocolConformanceFigures, step: &str) -> Vec<String> {
        let mut out = Vec::new();
        // A set_role ignored where the first joiner leads is the leader rule, not a silence.
        let expected_silence = |r: &&CommandRow| r.command == "set_role" && f.leader_rule == Some(LeaderClaim::FirstJoiner);
        for r in f.commands.iter().filter(|r| r.sent > 0 && !r.answered()).filter(|r| !expected_silence(r)) {
            out.push(format!(
                "{step}: the server never answered `{}`: no ack, no snapshot, no error, 0 of {} sent",
                r.command, r.sent
            ));
        }
        if f.cross_instance == Some(false) {
            out.push(format!(
                "{step}: a change on one instance reached no member on the other: the instances do not share rooms (no Socket.IO adapter between them)"
            ));
        }
        if f.refusal_channels.iter().any(|c| c.starts_with("applied")) {
            out.push(format!(
                "{step}: a follower's set_tempo was applied: the server does not enforce the leader rule"
            ));
        }
        out
    }

    fn render_text(f: &ProtocolConformanceFigures, step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
        render::render(f, step, w)
    }
}

/// Distinct extra events, bounded (for the agent).
pub fn extra_allowed(m: &MetricSet, event: &str) -> bool {
    let key = format!("{}{event}", n::EXTRA);
    m.counters.contains_key(&key) || prefixed(m, n::EXTRA).len() < n::MAX_EXTRA
}

/// Shapes of `members` in a snapshot.
pub fn members_shape(v: &serde_json::Value) -> &'static str {
    match v.get("members") {
        Some(serde_json::Value::Array(_)) => "array",
        Some(serde_json::Value::Object(_)) => "object",
        _ => "absent",
    }
}

/// The display names of a snapshot's members by socket id (array or object shape).
pub fn member_names(v: &serde_json::Value) -> BTreeMap<String, String> {
    let name = |m: &serde_json::Value| m.get("displayName").and_then(|d| d.as_str()).unwrap_or("").to_owned();
    match v.get("members") {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|m| Some((m.get("socketId")?.as_str()?.to_owned(), name(m))))
            .collect(),
        Some(serde_json::Value::Object(o)) => o.iter().map(|(sid, m)| (sid.clone(), name(m))).collect(),
        _ => BTreeMap::new(),
    }
}

/// The display name of a snapshot's leader (`None`: no leader, or not among the members).
pub fn leader_name(v: &serde_json::Value) -> Option<String> {
    let sid = v.get("leaderSocketId")?.as_str()?;
    member_names(v).get(sid).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(m: &mut MetricSet, name: &str, v: u64) {
        m.add_counter(name, v);
    }

    /// What the agent records against the protocol's dialect on two instances.
    fn bandsync_like() -> MetricSet {
        let mut m = MetricSet::new();
        set(&mut m, n::CLIENTS, 3);
        set(&mut m, n::INSTANCES, 2);
        for c in n::COMMANDS {
            set(&mut m, &n::cmd(c, n::SENT), 1);
            set(&mut m, &n::cmd(c, n::ACKED), 1);
            set(&mut m, &n::cmd(c, n::APPLIED), 1);
            set(&mut m, &n::cmd(c, n::TO_SENDER), 1);
            set(&mut m, &n::cmd(c, n::CROSS_EXPECTED), 1);
            set(&mut m, &n::cmd(c, n::TO_CROSS), 1);
        }
        for p in [n::JOIN, n::SNAP, n::TICK, n::SYNC] {
            set(&mut m, &format!("{p}count"), 4);
            set(&mut m, &format!("{p}field:serverTimestamp"), 4);
        }
        m.set_gauge("join.tempo", 100.0, crate::metrics::GaugeMerge::Max);
        set(&mut m, n::LEADER_NONE_AFTER_JOIN, 1);
        set(&mut m, n::LEADER_SET_ROLE_TOOK, 1);
        set(&mut m, n::TICK_CYCLES, 2);
        set(&mut m, n::CAP_TRIED, 10);
        set(&mut m, n::CAP_JOINED, 10);
        m
    }

    #[test]
    fn a_server_like_the_protocol_concludes_bandsync() {
        let f = analyse(&bandsync_like());
        let d = f.dialect.clone().unwrap();
        assert_eq!(f.closest, Protocol::Bandsync);
        assert_eq!(d, Dialect::of(Protocol::Bandsync), "{:?}", f.differences);
        assert_eq!(f.member_cap, None);
        assert_eq!(f.tick_position, Some(TickPosition::Aligned));
    }

    #[test]
    fn legacy_traits_conclude_legacy_and_a_silent_command_is_left_out() {
        let mut m = MetricSet::new();
        set(&mut m, n::CLIENTS, 3);
        set(&mut m, n::INSTANCES, 1);
        for c in n::COMMANDS {
            set(&mut m, &n::cmd(c, n::SENT), 1);
            if c != "seek" {
                set(&mut m, &n::cmd(c, n::APPLIED), 1);
                set(&mut m, &n::cmd(c, n::TO_SENDER), 1);
            }
        }
        set(&mut m, "join.count", 1);
        set(&mut m, "join.members:object", 1);
        set(&mut m, "sync.count", 1);
        set(&mut m, "sync.field:serverTime", 1);
        m.set_gauge("join.tempo", 120.0, crate::metrics::GaugeMerge::Max);
        set(&mut m, n::LEADER_FIRST_JOINER, 1);
        set(&mut m, n::LEADER_SET_ROLE_KEPT, 1);
        set(&mut m, n::TICK_CYCLES, 2);
        set(&mut m, n::TICK_COUNTER_CYCLES, 2);
        set(&mut m, n::CAP_TRIED, 9);
        set(&mut m, n::CAP_JOINED, 8);
        set(&mut m, n::CAP_REFUSED, 1);
        set(&mut m, "refusal:Session at capacity (8 members)", 1);
        set(&mut m, "snap.count", 3);
        let f = analyse(&m);
        let d = f.dialect.clone().unwrap();
        assert_eq!(f.closest, Protocol::BandsyncLegacy);
        assert_eq!(d.protocol, Protocol::BandsyncLegacy);
        assert_eq!(d.member_cap, Some(8));
        assert_eq!(d.leader_claim, LeaderClaim::FirstJoiner);
        assert_eq!(d.timestamp_field, None);
        assert_eq!(d.sync_timestamp_field.as_deref(), Some("serverTime"));
        assert_eq!(d.missing_command(), Some("seek"));
        assert!(f.differences.iter().any(|d| d.starts_with("commands")), "{:?}", f.differences);
        let recs = ProtocolConformance::recommendations(&f, "probe");
        assert!(recs[0].contains("never answered `seek`"), "{recs:?}");
        let mut text = String::new();
        render::render(&f, "probe", &mut text).unwrap();
        assert!(text.contains("Member cap: 8 (member 9 refused: \"Session at capacity (8 members)\")"), "{text}");
    }

    #[test]
    fn nothing_joined_concludes_nothing() {
        let mut m = MetricSet::new();
        set(&mut m, &n::cmd("join_session", n::SENT), 3);
        assert_eq!(analyse(&m).dialect, None);
    }
}
