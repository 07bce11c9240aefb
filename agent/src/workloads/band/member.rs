//! One member of a band: the leader's script (what each change sets and how it is recognised
//! in a snapshot) and the member's state machine — what it has joined, seen, missed, and its
//! ticks — from which `super` folds the step's metrics.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::n;
use super::sio;
/// Scheduled position of block b's seek, ms: (b + 1) · 100 s, so the position's 100 s block
/// tells the segments apart.
pub(super) const BLOCK_MS: f64 = 100_000.0;
/// Beat-phase samples kept per member and segment.
const PHASE_SAMPLES: usize = 64;

/// What a snapshot says, reduced to what the script changes: tempo, playing, the position's
/// 100 s block, and (paused) whether the position is exactly on the block's mark, as a seek
/// leaves it, or past it, as a pause after playing leaves it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct State {
    pub tempo: i64,
    pub playing: bool,
    pub block: i64,
    pub at_mark: bool,
}

fn tempo_of_block(b: i64) -> i64 {
    // Never 100 (the initial tempo); unique for 199 blocks (796 changes, the plan's limit).
    101 + b.rem_euclid(199)
}

/// Which script a session's leader runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Script {
    /// set_tempo, seek, play, pause, repeated (the cross-instance sync step).
    #[default]
    Band,
    /// play, then a tempo change every interval, never stopping (redis_failover: ticks must
    /// flow through the whole fault).
    Playing,
}

impl Script {
    pub fn expected(self, c: i64) -> State {
        match self {
            Script::Band => expected(c),
            Script::Playing if c < 0 => expected(c),
            Script::Playing => State {
                tempo: if c == 0 { 100 } else { tempo_of_block(c) },
                playing: true,
                block: 0,
                at_mark: false,
            },
        }
    }

    pub fn command(self, c: i64, session: &str) -> (&'static str, Value) {
        match self {
            Script::Band => command(c, session),
            Script::Playing if c == 0 => ("play", json!({"sessionId": session})),
            Script::Playing => ("set_tempo", json!({"sessionId": session, "tempo": tempo_of_block(c)})),
        }
    }
}

/// The state after change `c` of the band script (c = -1: a new session).
pub fn expected(c: i64) -> State {
    if c < 0 {
        return State {
            tempo: 100,
            playing: false,
            block: 0,
            at_mark: true,
        };
    }
    let (b, step) = (c / 4, c % 4);
    State {
        tempo: tempo_of_block(b),
        playing: step == 2,
        block: if step == 0 { b } else { b + 1 },
        // Position 0 before the first play; the seek's mark; else past a mark.
        at_mark: (step == 0 && b == 0) || step == 1,
    }
}

/// The command of change `c` for `session`.
pub fn command(c: i64, session: &str) -> (&'static str, Value) {
    let b = c / 4;
    match c % 4 {
        0 => ("set_tempo", json!({"sessionId": session, "tempo": tempo_of_block(b)})),
        1 => (
            "seek",
            json!({"sessionId": session, "position": (b + 1) as f64 * BLOCK_MS}),
        ),
        2 => ("play", json!({"sessionId": session})),
        _ => ("pause", json!({"sessionId": session})),
    }
}

pub fn observed(v: &Value) -> Option<State> {
    let position = v.get("position")?.as_f64()?;
    let playing = v.get("isPlaying")?.as_bool()?;
    let block = (position / BLOCK_MS).floor() as i64;
    Some(State {
        tempo: v.get("tempo")?.as_f64()?.round() as i64,
        playing,
        block,
        at_mark: !playing && (position - block as f64 * BLOCK_MS).abs() < 0.5,
    })
}

/// One member's view of the run.
#[derive(Debug, Default)]
pub struct Member {
    pub changes: i64,
    /// Coordinator ns of change 0 and the interval.
    pub t0_ns: i64,
    pub interval_ns: i64,
    pub leader: bool,
    pub same_instance: bool,
    pub script: Script,
    /// A fault's window (coordinator ns): ticks and recognised changes inside it are counted.
    pub window: Option<(i64, i64)>,
    pub ticks_in_window: u64,
    pub(super) next_c: i64,
    pub(super) last_state: Option<State>,
    pub(super) last_version: Option<u64>,
    pub snapshots: u64,
    pub delivered: u64,
    pub missed: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub without_version: u64,
    pub without_server_ts: u64,
    pub unexpected: u64,
    /// Propagation per recognised change, µs.
    pub propagation_us: Vec<u64>,
    pub ticks: u64,
    pub ticks_missed: u64,
    pub tick_jitter_us: Vec<u64>,
    pub(super) last_tick: Option<(f64, i64)>,
    /// Play segment (position block) → (arrival coord µs − positionMs·1000) samples.
    pub phase: BTreeMap<i64, Vec<f64>>,
    pub reconnects: u64,
    /// The server confirmed the join (a snapshot arrived), or refused it (the reason).
    pub joined: bool,
    pub refused: Option<String>,
    /// The leader's command awaiting an answer (index in [`n::COMMANDS`]).
    pub pending: Option<usize>,
    /// Per command kind: emitted (leader), answered and refused to the leader, and changes of
    /// that kind recognised in this member's snapshots.
    pub emitted_by: [u64; 4],
    pub answered: [u64; 4],
    pub refused_cmd: [u64; 4],
    pub seen: [u64; 4],
    /// Commands the server refused, with its reason (bounded).
    pub cmd_errors: Vec<(String, String)>,
    /// Ticks repeating the previous positionMs while playing; ticks before the fault's window.
    pub ticks_stalled: u64,
    pub ticks_before_window: u64,
    /// The dialect's timestamp field in snapshots (None: the servers send none) and a new
    /// session's tempo (0: the protocol's 100).
    pub ts_field: Option<String>,
    pub initial_tempo: i64,
}

/// Index in [`n::COMMANDS`] of a command's event name.
pub(super) fn command_index(event: &str) -> usize {
    n::COMMANDS.iter().position(|c| *c == event).unwrap_or(0)
}

impl Member {
    fn scheduled_ns(&self, c: i64) -> i64 {
        self.t0_ns + c * self.interval_ns
    }

    /// A `snapshot` arrived at coordinator time `at_ns`.
    pub fn on_snapshot(&mut self, v: &Value, at_ns: i64) {
        self.snapshots += 1;
        // Any snapshot confirms the join (to the room or to the joiner only, as servers differ)
        // and answers the leader's pending command.
        self.joined = true;
        if let Some(k) = self.pending.take() {
            self.answered[k] += 1;
        }
        if sio::server_ts(v, self.ts_field.as_deref()).is_none() {
            self.without_server_ts += 1;
        }
        let state = observed(v);
        match v.get("version").and_then(Value::as_u64) {
            Some(ver) => match self.last_version {
                // A repeat only if it also says the same: a server may reuse a version number
                // for a different state (e.g. changes kept in memory during a Redis outage).
                Some(last) if ver == last && state == self.last_state => {
                    self.duplicates += 1;
                    return;
                }
                Some(last) if ver < last => {
                    self.out_of_order += 1;
                    return;
                }
                _ => self.last_version = Some(ver),
            },
            None => self.without_version += 1,
        }
        let Some(state) = state else {
            self.unexpected += 1;
            return;
        };
        self.last_state = Some(state);
        let script = self.script;
        let found = (self.next_c..self.changes).find(|c| self.expect(*c) == state);
        if let Some(c) = found {
            self.missed += (c - self.next_c) as u64;
            self.delivered += 1;
            self.seen[command_index(script.command(c, "").0)] += 1;
            self.propagation_us
                .push(((at_ns - self.scheduled_ns(c)).max(0) / 1000) as u64);
            self.next_c = c + 1;
        } else if state != self.expect(self.next_c - 1) {
            self.unexpected += 1;
        }
    }

    /// A `session_error` `{event, code, message}` or an `error` `{message}` arrived: a refused
    /// join (before any snapshot), or a refused command (the one it names, else the leader's
    /// pending one).
    pub fn on_error(&mut self, v: &Value) {
        let reason = sio::refusal_reason(v);
        let event = v.get("event").and_then(Value::as_str);
        let command = match event {
            Some(e) if n::COMMANDS.contains(&e) => Some(command_index(e)),
            Some(_) => None,
            None => self.pending,
        };
        if let Some(k) = command {
            if self.pending == Some(k) {
                self.pending = None;
            }
            self.refused_cmd[k] += 1;
            self.push_cmd_error(n::COMMANDS[k], reason);
        } else if !self.joined && matches!(event, None | Some("join_session")) {
            self.refused.get_or_insert(reason);
        } else {
            self.push_cmd_error(event.unwrap_or("(unnamed)"), reason);
        }
    }

    fn push_cmd_error(&mut self, command: &str, reason: String) {
        if self.cmd_errors.len() < n::MAX_REASONS {
            self.cmd_errors.push((command.to_owned(), reason));
        }
    }

    fn in_window(&self, t: i64) -> bool {
        self.window.is_some_and(|(a, b)| t >= a && t < b)
    }

    /// Did this member, after the fault, reach the state of the last change made during it (or
    /// a later one)? None when no change fell inside the window.
    pub fn reached_outage_state(&self) -> Option<bool> {
        let last = (0..self.changes)
            .rev()
            .find(|c| self.in_window(self.scheduled_ns(*c)))?;
        Some(self.next_c > last)
    }

    /// A `scroll_tick` arrived at coordinator time `at_ns`.
    pub fn on_tick(&mut self, v: &Value, at_ns: i64) {
        let Some(p) = v.get("positionMs").and_then(Value::as_f64) else {
            return;
        };
        self.ticks += 1;
        if self.in_window(at_ns) {
            self.ticks_in_window += 1;
        } else if self.window.is_some_and(|(a, _)| at_ns < a) {
            self.ticks_before_window += 1;
        }
        let block = (p / BLOCK_MS).floor() as i64;
        let samples = self.phase.entry(block).or_default();
        if samples.len() < PHASE_SAMPLES {
            samples.push(at_ns as f64 / 1000.0 - p * 1000.0);
        }
        if let Some((last_p, last_at)) = self.last_tick
            && (last_p / BLOCK_MS).floor() as i64 == block
        {
            let steps = ((p - last_p) / 100.0).round() as i64;
            if steps == 1 {
                self.tick_jitter_us
                    .push(((at_ns - last_at) - 100_000_000).unsigned_abs() / 1000);
            } else if steps == 0 {
                // The position did not advance between two ticks of one play segment.
                self.ticks_stalled += 1;
            } else if steps > 1 {
                self.ticks_missed += (steps - 1) as u64;
            }
        }
        self.last_tick = Some((p, at_ns));
    }

    /// Call at the end: changes never seen count as missed.
    pub fn finish(&mut self) -> bool {
        self.missed += (self.changes - self.next_c).max(0) as u64;
        self.next_c = self.changes;
        self.last_state == Some(self.expect(self.changes - 1))
    }

    /// The state after change `c` of this member's script, in its servers' dialect (a new
    /// session's tempo differs between dialects).
    fn expect(&self, c: i64) -> State {
        let mut e = self.script.expected(c);
        let initial = c < 0 || (self.script == Script::Playing && c == 0);
        if initial && self.initial_tempo > 0 {
            e.tempo = self.initial_tempo;
        }
        e
    }
}

pub(super) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
