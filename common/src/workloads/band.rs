//! A band of Socket.IO members following scripted leaders: the metric names the members record.
//! Both the cross-instance sync step and the failover step run a band, so both read these.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A band's shape: `sessions` sessions of `members` members (member 0 leads), whose leaders make
/// `changes` changes `interval` apart after `ramp_up`, then wait `settle` for the last to arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Band {
    pub sessions: u64,
    pub members: u32,
    pub changes: u32,
    pub interval: Duration,
    pub ramp_up: Duration,
    pub settle: Duration,
}

/// Most members a plan's band may place in all (sessions × members).
pub const MAX_MEMBERS_IN_ALL: u64 = 1_000_000;
/// Most members one session may hold in a plan (the reference server's testbed instances are
/// started with this cap; a real server's own cap is found by the probe).
pub const MAX_MEMBERS_PER_SESSION: u32 = 3_000;
/// Most members one agent is given: at the measured 12.7 KiB each (README, benchmarks) this is
/// well under 1 GiB of agent memory.
pub const MAX_MEMBERS_PER_AGENT: u64 = 20_000;
/// The memory an agent sets aside per member when it checks its own budget (measured 12.7 KiB
/// in sessions of 10; kept at 64 KiB for the transient copies of big sessions' snapshots).
pub const MEMBER_BUDGET_BYTES: u64 = 64 * 1024;

/// Refuses a band bigger than [`MAX_MEMBERS_IN_ALL`], naming both fields.
pub fn check_size(sessions: u64, members: u32, cx: &crate::plan::StepCx<'_>) -> Result<(), crate::plan::PlanError> {
    let total = sessions.saturating_mul(u64::from(members));
    if total > MAX_MEMBERS_IN_ALL {
        return Err(cx.err(
            cx.span(),
            "sessions",
            format!(
                "sessions × members = {} members in all; at most {} (and {} per agent): lower sessions or members",
                crate::fmt::group(total as f64),
                crate::fmt::group(MAX_MEMBERS_IN_ALL as f64),
                crate::fmt::group(MAX_MEMBERS_PER_AGENT as f64)
            ),
        ));
    }
    Ok(())
}

/// Refuses a band that would give one of `agents` agents more than [`MAX_MEMBERS_PER_AGENT`].
pub fn check_per_agent(sessions: u64, members: u32, agents: u32) -> Result<(), String> {
    let total = sessions.saturating_mul(u64::from(members));
    let per_agent = total.div_ceil(u64::from(agents.max(1)));
    if per_agent > MAX_MEMBERS_PER_AGENT {
        return Err(format!(
            "{} members over {agents} agent(s) is {} per agent; at most {} per agent: add agents (at least {}) or lower sessions or members",
            crate::fmt::group(total as f64),
            crate::fmt::group(per_agent as f64),
            crate::fmt::group(MAX_MEMBERS_PER_AGENT as f64),
            total.div_ceil(MAX_MEMBERS_PER_AGENT)
        ));
    }
    Ok(())
}

/// Whether servers of dialect `d` can hold this band and run a script of `commands`.
pub fn requires(b: &Band, d: &crate::dialect::Dialect, commands: &[&str]) -> Result<(), String> {
    if let Some(cap) = d.member_cap
        && b.members > cap
    {
        return Err(format!(
            "the servers take at most {cap} members per session (dialect {}); this step puts {} in each: lower `members` to {cap} or less",
            d.protocol.as_str(),
            b.members
        ));
    }
    if let Some(c) = commands.iter().find(|c| !d.commands.iter().any(|k| k == *c)) {
        return Err(format!(
            "the servers do not support `{c}` (dialect {}), which this step's script uses",
            d.protocol.as_str()
        ));
    }
    Ok(())
}

/// Counters: members this run placed, connected, could not connect, reconnections.
pub const MEMBERS_PLANNED: &str = "members_planned";
pub const MEMBERS_CONNECTED: &str = "members_connected";
pub const CONNECT_FAILURES: &str = "connect_failures";
pub const RECONNECTS: &str = "reconnects";
/// Counters: sessions' leaders; changes scheduled and emitted by them.
pub const LEADERS: &str = "leaders";
pub const CHANGES_SCHEDULED: &str = "changes_scheduled";
pub const CHANGES_EMITTED: &str = "changes_emitted";
/// Counters: member × change pairs expected, recognised in a snapshot, never seen.
pub const EXPECTED_DELIVERIES: &str = "expected_deliveries";
pub const DELIVERED: &str = "delivered";
pub const MISSED: &str = "missed";
/// Counter: members whose last state is the script's last.
pub const CONVERGED: &str = "converged";
/// Counters: snapshots repeating / older than the last `version`; without `version`,
/// without `serverTimestamp`; in a state the script never produces; all snapshots.
pub const DUPLICATES: &str = "duplicates";
pub const OUT_OF_ORDER: &str = "out_of_order";
pub const WITHOUT_VERSION: &str = "without_version";
pub const WITHOUT_SERVER_TS: &str = "without_server_ts";
pub const UNEXPECTED_STATES: &str = "unexpected_states";
pub const SNAPSHOTS: &str = "snapshots";
/// Counters: ticks received, ticks missing from positionMs gaps.
pub const TICKS: &str = "ticks";
pub const TICKS_MISSED: &str = "ticks_missed";
/// Histograms, µs: change's scheduled instant → snapshot, for members on the leader's
/// instance, on another instance, and the leader itself (its command round trip).
pub const PROPAGATION_SAME_US: &str = "propagation_same_us";
pub const PROPAGATION_CROSS_US: &str = "propagation_cross_us";
pub const PROPAGATION_LEADER_US: &str = "propagation_leader_us";
/// Histogram, µs: how late the leader emitted against the schedule.
pub const EMIT_LAG_US: &str = "emit_lag_us";
/// Histogram, µs: |tick interval − 100 ms| between consecutive ticks.
pub const TICK_JITTER_US: &str = "tick_jitter_us";
/// Gauge (max): server instances of the target.
pub const INSTANCES: &str = "instances";
/// Gauge (max): the most members one agent held, and its (peak RSS − RSS before) / members.
pub const MEMBERS_PER_AGENT: &str = "members_per_agent";
pub const RSS_PER_MEMBER_BYTES: &str = "rss_per_member_bytes";
/// Gauge (max): the largest clock-offset uncertainty of the agents, µs.
pub const CLOCK_BOUND_US: &str = "clock_bound_us";
/// Gauge prefix for the beat phase: `phase.s{session}.b{segment}.i{instance}.min|max`, the
/// earliest and latest member estimate (coordinator µs) of the instant the position was 0.
pub const PHASE_PREFIX: &str = "phase.";

pub fn phase_key(session: u64, segment: i64, instance: usize) -> String {
    format!("{PHASE_PREFIX}s{session}.b{segment}.i{instance}")
}

/// Counters per server instance i: members whose session was playing during an outage window
/// (a fault), and of them the ones that kept receiving ticks during it (graceful degradation).
pub fn outage_members(instance: usize) -> String {
    format!("outage_members.i{instance}")
}
pub fn outage_ticking(instance: usize) -> String {
    format!("outage_ticking.i{instance}")
}
/// Counters: members on another instance than their leader, with a change made during the
/// outage window; and those that reached that change's state (or a later one) after it.
pub const OUTAGE_CROSS_EXPECTED: &str = "outage_cross_expected";
pub const OUTAGE_CROSS_SEEN: &str = "outage_cross_seen";

/// Counters: members whose join the server confirmed (a snapshot after `join_session`), and
/// members it refused (a `session_error` or `error` before any snapshot; the reason goes under
/// [`REFUSAL_PREFIX`]). Connected − joined − refused: joins the server never answered.
pub const MEMBERS_JOINED: &str = "members_joined";
pub const MEMBERS_REFUSED: &str = "members_refused";
/// Counter: followers the placement put on another instance than their leader.
pub const MEMBERS_CROSS_PLANNED: &str = "members_cross_planned";
/// Counter: ticks whose `positionMs` did not advance from the previous tick while playing.
pub const TICKS_STALLED: &str = "ticks_stalled";
/// Counter per instance: members that received no tick before the fault's window began (their
/// session was not playing yet), so whether the fault stopped their ticks cannot be judged.
pub fn outage_idle(instance: usize) -> String {
    format!("outage_idle.i{instance}")
}
/// Counter prefixes carrying a reason (at most [`MAX_REASONS`] distinct per agent):
/// `refusal:<message>` per refused join, `connect_error:<reason>` per failed connection,
/// `cmd_error:<command>:<message>` per refused leader command.
pub const REFUSAL_PREFIX: &str = "refusal:";
pub const CONNECT_ERROR_PREFIX: &str = "connect_error:";
pub const COMMAND_ERROR_PREFIX: &str = "cmd_error:";
pub const MAX_REASONS: usize = 8;

/// The leader commands a script uses, in the chain table's order.
pub const COMMANDS: [&str; 4] = ["set_tempo", "seek", "play", "pause"];

/// One link of a command's chain, from the leader's emit to the members' snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Emitted by the leaders.
    Emitted,
    /// Answered to the leader (a snapshot or an error) before its next command.
    Answered,
    /// Refused to the leader (`session_error` / `error`).
    Refused,
    /// The commanded state recognised in the leader's own snapshots.
    LeaderSeen,
    /// Member × change pairs expected and recognised on the leader's instance / on another.
    SameExpected,
    SameSeen,
    CrossExpected,
    CrossSeen,
}

impl Link {
    pub const ALL: [Link; 8] = [
        Link::Emitted,
        Link::Answered,
        Link::Refused,
        Link::LeaderSeen,
        Link::SameExpected,
        Link::SameSeen,
        Link::CrossExpected,
        Link::CrossSeen,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Link::Emitted => "emitted",
            Link::Answered => "answered",
            Link::Refused => "refused",
            Link::LeaderSeen => "leader_seen",
            Link::SameExpected => "same_expected",
            Link::SameSeen => "same_seen",
            Link::CrossExpected => "cross_expected",
            Link::CrossSeen => "cross_seen",
        }
    }
}

/// Counter of `command`'s chain link: `cmd.<command>.<link>`.
pub fn chain(command: &str, link: Link) -> String {
    format!("cmd.{command}.{}", link.as_str())
}

/// Counters under `prefix`, as (reason, count), most frequent first.
pub fn reasons(m: &crate::metrics::MetricSet, prefix: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = m
        .counters
        .range(prefix.to_owned()..)
        .take_while(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k[prefix.len()..].to_owned(), *v))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}
