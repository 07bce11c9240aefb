//! `session_sync` — beyond the document: `sessions` × `members` members placed round-robin over
//! the agents and the target's server instances; each session's leader runs `changes` scripted
//! changes (tempo, play, seek, pause) `interval` apart after a `ramp_up`; every member measures
//! propagation, convergence, ticks and beat phase. `settle` is the listening time after the last
//! change. The members record under [`super::band`]'s names.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

mod diagnose;

use self::diagnose::{diagnose, top};
use super::band::{self, Band};
use crate::fmt::{group, pct, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx, fmt_duration};
use crate::workload::{Chart, Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionSync(pub Band);

impl std::ops::Deref for SessionSync {
    type Target = Band;
    fn deref(&self) -> &Band {
        &self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    sessions: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    changes: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    ramp_up: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
}

/// Spread statistics, ms, over a session's play segments.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct Spread {
    pub segments: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        Spread {
            segments: v.len() as u64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: v[v.len() - 1],
        }
    }
}


/// A reason a server or the connection gave, and how often.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Reason {
    pub reason: String,
    pub count: u64,
}

fn reasons(m: &MetricSet, prefix: &str) -> Vec<Reason> {
    band::reasons(m, prefix)
        .into_iter()
        .map(|(reason, count)| Reason { reason, count })
        .collect()
}

/// One leader command's chain: emitted by the leaders, answered (a snapshot or an error before
/// the next command) and refused to them, its state seen by the leaders, and member × change
/// deliveries expected and seen on the leader's instance and on other instances.
#[derive(Clone, Debug, Default, Serialize, JsonSchema)]
pub struct CommandChain {
    pub command: String,
    pub emitted: u64,
    pub answered: u64,
    pub refused: u64,
    pub leader_seen: u64,
    pub same_expected: u64,
    pub same_seen: u64,
    pub cross_expected: u64,
    pub cross_seen: u64,
}

impl CommandChain {
    fn of(m: &MetricSet, command: &str) -> CommandChain {
        use band::Link;
        let c = |link| m.counter(&band::chain(command, link));
        CommandChain {
            command: command.to_owned(),
            emitted: c(Link::Emitted),
            answered: c(Link::Answered),
            refused: c(Link::Refused),
            leader_seen: c(Link::LeaderSeen),
            same_expected: c(Link::SameExpected),
            same_seen: c(Link::SameSeen),
            cross_expected: c(Link::CrossExpected),
            cross_seen: c(Link::CrossSeen),
        }
    }

    fn used(&self) -> bool {
        self.emitted + self.same_expected + self.cross_expected > 0
    }
}

/// `session_sync`: cross-instance session sync, all agents together.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SessionSyncFigures {
    pub sessions: u64,
    pub members_per_session: u32,
    pub instances: u64,
    pub agents: u64,
    pub members_planned: u64,
    pub members_connected: u64,
    /// Joins the server confirmed (a snapshot), refused (with its reasons), never answered.
    pub members_joined: u64,
    pub members_refused: u64,
    pub joins_unanswered: u64,
    pub refusals: Vec<Reason>,
    pub connect_failures: u64,
    pub connect_errors: Vec<Reason>,
    /// Followers placed on another instance than their leader (0: cross-instance sync is not
    /// exercised, e.g. members per session ≤ agents, or one instance).
    pub members_cross_planned: u64,
    pub reconnects: u64,
    /// Each leader command's chain, and the commands the server refused with its reasons
    /// (`command:message`).
    pub commands: Vec<CommandChain>,
    pub command_errors: Vec<Reason>,
    pub changes_scheduled: u64,
    pub changes_emitted: u64,
    /// How late leaders emitted against the schedule.
    pub emit_lag_us: HistSummary,
    /// Scheduled change → snapshot at a member on the leader's instance / another instance.
    pub propagation_same_instance_us: HistSummary,
    pub propagation_cross_instance_us: HistSummary,
    /// Both together (the criterion's figure).
    pub propagation_all_us: HistSummary,
    /// The leader's own command → snapshot.
    pub propagation_leader_us: HistSummary,
    /// One-way figures across agents are good to ± this (the sum of two agents' clock bounds).
    pub clock_bound_ms: f64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub missed_changes: u64,
    pub converged_members: u64,
    pub convergence_rate: f64,
    pub duplicate_snapshots: u64,
    pub out_of_order_snapshots: u64,
    pub snapshots: u64,
    pub snapshots_without_version: u64,
    pub snapshots_without_server_timestamp: u64,
    pub unexpected_states: u64,
    pub ticks: u64,
    pub ticks_missed: u64,
    /// Ticks whose positionMs did not advance from the previous one while playing.
    pub ticks_stalled: u64,
    pub tick_jitter_us: HistSummary,
    /// Beat-phase spread: per session and play segment, latest − earliest member estimate of
    /// the instant the position was 0; among members of one instance, and across all members.
    pub beat_phase_same_instance: Spread,
    pub beat_phase_cross_instance: Spread,
    /// The most members one agent held, and the most memory a member cost an agent (peak RSS
    /// over the step − RSS before, / its members), KiB.
    pub members_per_agent_max: u64,
    pub agent_rss_per_member_kib: Option<f64>,
}

const CRITERIA: &[CriterionDef] = &[
    CriterionDef {
        id: "sync_propagation",
        name: "Session sync: propagation p99",
        key: Some("sync_propagation_p99_ms"),
        default: 50.0,
        cmp: Cmp::Lt,
        unit: Unit::Plain,
        suffix: " ms",
        target_text: None,
        source: Source::Suite,
        rank: 12,
        combine: Combine::Worst,
    },
    CriterionDef {
        id: "beat_phase_spread",
        name: "Session sync: beat-phase spread p99",
        key: Some("beat_phase_spread_p99_ms"),
        default: 50.0,
        cmp: Cmp::Lt,
        unit: Unit::Plain,
        suffix: " ms",
        target_text: None,
        source: Source::Suite,
        rank: 13,
        combine: Combine::Worst,
    },
    CriterionDef {
        id: "sync_convergence",
        name: "Session sync: convergence",
        key: Some("sync_convergence"),
        default: 1.0,
        cmp: Cmp::Ge,
        unit: Unit::Fraction,
        suffix: "",
        target_text: None,
        source: Source::Suite,
        rank: 14,
        combine: Combine::Worst,
    },
];

impl Workload for SessionSync {
    const KIND: &'static str = "session_sync";
    const SECTION: Section = Section::Sync;
    type Raw = Raw;
    type Figures = SessionSyncFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let p = SessionSync(Band {
            sessions: cx.count(&raw.sessions, "sessions", 4, 1, 1_000_000)?,
            members: cx.count(&raw.members, "members", 6, 2, band::MAX_MEMBERS_PER_SESSION as i64)? as u32,
            changes: cx.count(&raw.changes, "changes", 12, 1, 796)? as u32,
            interval: cx.duration(&raw.interval, "interval", Duration::from_millis(500))?,
            ramp_up: cx.duration(&raw.ramp_up, "ramp_up", Duration::from_secs(2))?,
            settle: cx.duration(&raw.settle, "settle", Duration::from_secs(2))?,
        });
        band::check_size(p.sessions, p.members, cx)?;
        if !(Duration::from_millis(50)..=Duration::from_secs(60)).contains(&p.interval) {
            return Err(cx.err(
                cx.span_of(&raw.interval),
                "interval",
                format!(
                    "{} is outside 50ms to 60s (a change needs time to reach every member)",
                    fmt_duration(p.interval)
                ),
            ));
        }
        let total = p.ramp_up + p.settle + p.interval * (p.changes + 2);
        if total >= cx.timeout {
            return Err(cx.err(
                cx.span(),
                "changes",
                format!(
                    "ramp_up + changes × interval + settle ≈ {} does not fit in the step timeout {}",
                    fmt_duration(total),
                    fmt_duration(cx.timeout)
                ),
            ));
        }
        Ok(p)
    }

    fn clamped(self) -> Self {
        SessionSync(Band {
            members: self.members.max(2),
            interval: self.interval.max(Duration::from_millis(1)),
            ..self.0
        })
    }

    fn uses_redis(&self) -> bool {
        false
    }

    fn uses_servers(&self) -> bool {
        true
    }

    fn requires(&self, d: &crate::dialect::Dialect) -> Result<(), String> {
        band::requires(&self.0, d, &crate::dialect::SCRIPT_COMMANDS)
    }

    fn fits(&self, agents: u32) -> Result<(), String> {
        band::check_per_agent(self.sessions, self.members, agents)
    }

    fn figures(&self, m: &MetricSet, cx: &FigureCx<'_>) -> SessionSyncFigures {
        sync_figures(m, self.sessions, self.members, cx.agents as u64)
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &SessionSyncFigures, id: &str) -> Option<Measure> {
        let bound = f.clock_bound_ms;
        match id {
            "sync_propagation" if f.members_cross_planned > 0 && f.propagation_cross_instance_us.count == 0 => {
                let expected: u64 = f.commands.iter().map(|c| c.cross_expected).sum();
                Some(Measure::Failed(format!(
                    "cross-instance members received none of {} changes",
                    group(expected as f64)
                )))
            }
            "sync_propagation" if f.propagation_all_us.count > 0 => {
                let p = f.propagation_all_us.p99 as f64 / 1000.0;
                Some(Measure::value(p, format!("{p:.1} ms (±{bound:.2} ms)")))
            }
            "sync_propagation" => Some(Measure::Failed("no change reached a member".to_owned())),
            "beat_phase_spread"
                if f.beat_phase_cross_instance.segments > 0 || f.beat_phase_same_instance.segments > 0 =>
            {
                let p = f.beat_phase_cross_instance.p99_ms.max(f.beat_phase_same_instance.p99_ms);
                Some(Measure::value(p, format!("{p:.1} ms (±{bound:.2} ms)")))
            }
            "beat_phase_spread" => Some(Measure::Failed("no ticks received".to_owned())),
            "sync_convergence" => Some(Measure::value(f.convergence_rate, pct(f.convergence_rate))),
            _ => None,
        }
    }

    fn score(_f: &SessionSyncFigures) -> Score {
        Score::Outside
    }

    fn notes(f: &SessionSyncFigures) -> Vec<String> {
        vec![format!(
            "Session sync: propagation runs from each change's scheduled instant (leaders emitted p99 {:.1} ms late) to the snapshot, in coordinator time; across agents it is good to ±{:.2} ms (two agents' clock bounds). Changes are recognised by the state they leave, so any server following the protocol can be measured, with or without `version` ({} of {} snapshots had none).",
            f.emit_lag_us.p99 as f64 / 1000.0,
            f.clock_bound_ms,
            f.snapshots_without_version,
            f.snapshots
        )]
    }

    fn recommendations(f: &SessionSyncFigures, step: &str) -> Vec<String> {
        diagnose(f)
            .into_iter()
            .map(|d| format!("Session sync `{step}`: {d}"))
            .collect()
    }

    fn render_text(f: &SessionSyncFigures, step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
        let name = step;
    writeln!(
        w,
        "\n  {name}: {} sessions × {} members over {} server instance(s) and {} agent(s)",
        group(f.sessions as f64),
        f.members_per_session,
        f.instances,
        f.agents
    )?;
        render_members(f, w)?;
        render_commands(f, w)?;
        render_delivery(f, w)?;
        render_ticks(f, w)
    }

    fn charts(f: &SessionSyncFigures) -> Vec<Chart> {
        vec![
            Chart::new(
                "Session sync propagation",
                vec![
                    ("same instance".to_owned(), f.propagation_same_instance_us),
                    ("cross instance".to_owned(), f.propagation_cross_instance_us),
                    ("leader round trip".to_owned(), f.propagation_leader_us),
                ],
                1e-3,
            ),
            Chart::new(
                "Tick jitter against 100 ms",
                vec![("jitter".into(), f.tick_jitter_us)],
                1e-3,
            ),
        ]
    }
}

fn sync_figures(m: &MetricSet, sessions: u64, members: u32, agents: u64) -> SessionSyncFigures {
    let hist = |name: &str| crate::workload::hist(m, name);
    let mut all = crate::metrics::new_histogram();
    for name in [band::PROPAGATION_SAME_US, band::PROPAGATION_CROSS_US] {
        if let Some(h) = m.histogram(name) {
            let _ = all.add(h);
        }
    }
    // Beat phase: phase.s{S}.b{B}.i{I}.min|max → per (S, B) the instances' ranges.
    let mut ranges: std::collections::BTreeMap<(String, String), Vec<(f64, f64)>> = Default::default();
    let mut lows: std::collections::BTreeMap<String, f64> = Default::default();
    for (name, g) in m.gauges.range(band::PHASE_PREFIX.to_owned()..) {
        let Some(rest) = name.strip_prefix(band::PHASE_PREFIX) else {
            break;
        };
        if let Some(key) = rest.strip_suffix(".min") {
            lows.insert(key.to_owned(), g.value);
        }
    }
    for (key, low) in &lows {
        let Some(high) = m.gauge(&format!("{}{key}.max", band::PHASE_PREFIX)) else {
            continue;
        };
        let mut parts = key.splitn(3, '.');
        let (Some(sess), Some(seg)) = (parts.next(), parts.next()) else {
            continue;
        };
        ranges
            .entry((sess.to_owned(), seg.to_owned()))
            .or_default()
            .push((*low, high));
    }
    let mut same = Vec::new();
    let mut cross = Vec::new();
    for r in ranges.values() {
        same.push(r.iter().map(|(lo, hi)| hi - lo).fold(0.0, f64::max) / 1000.0);
        if r.len() > 1 {
            let lo = r.iter().map(|x| x.0).fold(f64::INFINITY, f64::min);
            let hi = r.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
            cross.push((hi - lo) / 1000.0);
        }
    }
    let connected = m.counter(band::MEMBERS_CONNECTED);
    let converged = m.counter(band::CONVERGED);
    let joined = m.counter(band::MEMBERS_JOINED);
    let refused = m.counter(band::MEMBERS_REFUSED);
    SessionSyncFigures {
        members_joined: joined,
        members_refused: refused,
        joins_unanswered: connected.saturating_sub(joined + refused),
        refusals: reasons(m, band::REFUSAL_PREFIX),
        connect_errors: reasons(m, band::CONNECT_ERROR_PREFIX),
        members_cross_planned: m.counter(band::MEMBERS_CROSS_PLANNED),
        commands: band::COMMANDS
            .iter()
            .map(|c| CommandChain::of(m, c))
            .filter(CommandChain::used)
            .collect(),
        command_errors: reasons(m, band::COMMAND_ERROR_PREFIX),
        ticks_stalled: m.counter(band::TICKS_STALLED),
        sessions,
        members_per_session: members,
        instances: m.gauge(band::INSTANCES).unwrap_or(0.0) as u64,
        agents,
        members_planned: m.counter(band::MEMBERS_PLANNED),
        members_connected: connected,
        connect_failures: m.counter(band::CONNECT_FAILURES),
        reconnects: m.counter(band::RECONNECTS),
        changes_scheduled: m.counter(band::CHANGES_SCHEDULED),
        changes_emitted: m.counter(band::CHANGES_EMITTED),
        emit_lag_us: hist(band::EMIT_LAG_US),
        propagation_same_instance_us: hist(band::PROPAGATION_SAME_US),
        propagation_cross_instance_us: hist(band::PROPAGATION_CROSS_US),
        propagation_all_us: HistSummary::of(&all),
        propagation_leader_us: hist(band::PROPAGATION_LEADER_US),
        clock_bound_ms: 2.0 * m.gauge(band::CLOCK_BOUND_US).unwrap_or(0.0) / 1000.0,
        expected_deliveries: m.counter(band::EXPECTED_DELIVERIES),
        delivered: m.counter(band::DELIVERED),
        missed_changes: m.counter(band::MISSED),
        converged_members: converged,
        convergence_rate: ratio(converged, m.counter(band::MEMBERS_PLANNED)),
        duplicate_snapshots: m.counter(band::DUPLICATES),
        out_of_order_snapshots: m.counter(band::OUT_OF_ORDER),
        snapshots: m.counter(band::SNAPSHOTS),
        snapshots_without_version: m.counter(band::WITHOUT_VERSION),
        snapshots_without_server_timestamp: m.counter(band::WITHOUT_SERVER_TS),
        unexpected_states: m.counter(band::UNEXPECTED_STATES),
        ticks: m.counter(band::TICKS),
        ticks_missed: m.counter(band::TICKS_MISSED),
        tick_jitter_us: hist(band::TICK_JITTER_US),
        beat_phase_same_instance: Spread::of(same),
        beat_phase_cross_instance: Spread::of(cross),
        members_per_agent_max: m.gauge(band::MEMBERS_PER_AGENT).unwrap_or(0.0) as u64,
        agent_rss_per_member_kib: m.gauge(band::RSS_PER_MEMBER_BYTES).map(|b| b / 1024.0),
    }
}


/// "p50 … p99 … max … (n deliveries)", or "none".
fn hist_line(h: &HistSummary) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    if h.count == 0 {
        "none".to_owned()
    } else {
        format!(
            "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} deliveries)",
            ms(h.p50),
            ms(h.p99),
            ms(h.max),
            group(h.count as f64)
        )
    }
}

/// A beat-phase spread line, or "no ticks".
fn spread_line(s: &Spread) -> String {
    if s.segments == 0 {
        "no ticks".to_owned()
    } else {
        format!(
            "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} session segments)",
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            group(s.segments as f64)
        )
    }
}

/// Members connected, joined and refused, and what holding them cost the agents.
fn render_members(f: &SessionSyncFigures, w: &mut dyn fmt::Write) -> fmt::Result {
    writeln!(
        w,
        "    Members: {} of {} connected ({} failed{}), {} joined, {} refused{}, {} joins unanswered; {} reconnects",
        group(f.members_connected as f64),
        group(f.members_planned as f64),
        f.connect_failures,
        if f.connect_failures > 0 { format!(": {}", top(&f.connect_errors)) } else { String::new() },
        group(f.members_joined as f64),
        group(f.members_refused as f64),
        if f.members_refused > 0 { format!(": {}", top(&f.refusals)) } else { String::new() },
        group(f.joins_unanswered as f64),
        f.reconnects
    )?;
    if let Some(kib) = f.agent_rss_per_member_kib {
        writeln!(
            w,
            "    Load side: up to {} members per agent, {kib:.1} KiB of agent memory per member",
            group(f.members_per_agent_max as f64)
        )?;
    }
    Ok(())
}

/// Each command's chain: emitted → answered → the leader's state → the room → other instances.
fn render_commands(f: &SessionSyncFigures, w: &mut dyn fmt::Write) -> fmt::Result {
    if f.commands.is_empty() {
        return Ok(());
    }
    writeln!(
        w,
        "    {:<12} {:>8} {:>9} {:>8} {:>11} {:>17} {:>17}",
        "Command", "emitted", "answered", "refused", "leader saw", "same instance", "cross instance"
    )?;
    let of = |seen: u64, exp: u64| {
        if exp == 0 {
            "n/a".to_owned()
        } else {
            format!("{} of {}", group(seen as f64), group(exp as f64))
        }
    };
    for c in &f.commands {
        writeln!(
            w,
            "    {:<12} {:>8} {:>9} {:>8} {:>11} {:>17} {:>17}",
            c.command,
            group(c.emitted as f64),
            group(c.answered as f64),
            group(c.refused as f64),
            group(c.leader_seen as f64),
            of(c.same_seen, c.same_expected),
            of(c.cross_seen, c.cross_expected)
        )?;
    }
    Ok(())
}

/// Changes emitted, their propagation, convergence and the snapshots seen.
fn render_delivery(f: &SessionSyncFigures, w: &mut dyn fmt::Write) -> fmt::Result {
    let ms = |us: u64| us as f64 / 1000.0;
    writeln!(
        w,
        "    Changes: {} of {} emitted (leader emit lag p99 {:.1} ms)",
        group(f.changes_emitted as f64),
        group(f.changes_scheduled as f64),
        ms(f.emit_lag_us.p99)
    )?;
    writeln!(
        w,
        "    Propagation, same instance:  {}",
        hist_line(&f.propagation_same_instance_us)
    )?;
    writeln!(
        w,
        "    Propagation, cross instance: {}",
        if f.members_cross_planned > 0 {
            hist_line(&f.propagation_cross_instance_us)
        } else if f.instances > 1 {
            "not exercised: no follower was placed on another instance than its leader (members per session ≤ agents)".to_owned()
        } else {
            "not exercised: one server instance".to_owned()
        }
    )?;
    writeln!(w, "    Leader's own round trip:     {}", hist_line(&f.propagation_leader_us))?;
    writeln!(
        w,
        "    (one-way across agents: ± {:.2} ms clock bound)",
        f.clock_bound_ms
    )?;
    writeln!(
        w,
        "    Convergence: {:.1}% of members ended in the leader's final state; {} of {} deliveries seen, {} missed",
        f.convergence_rate * 100.0,
        group(f.delivered as f64),
        group(f.expected_deliveries as f64),
        group(f.missed_changes as f64)
    )?;
    writeln!(
        w,
        "    Snapshots: {} ({} duplicate, {} out of order by version, {} without version, {} without serverTimestamp, {} unexpected)",
        group(f.snapshots as f64),
        f.duplicate_snapshots,
        f.out_of_order_snapshots,
        f.snapshots_without_version,
        f.snapshots_without_server_timestamp,
        f.unexpected_states
    )?;
    Ok(())
}

/// Ticks, their jitter, the beat-phase spread and the < 50 ms promise.
fn render_ticks(f: &SessionSyncFigures, w: &mut dyn fmt::Write) -> fmt::Result {
    let ms = |us: u64| us as f64 / 1000.0;
    writeln!(
        w,
        "    Ticks: {} received, {} missed, {} stalled; jitter against 100 ms p50 {:.1} ms  p99 {:.1} ms",
        group(f.ticks as f64),
        group(f.ticks_missed as f64),
        group(f.ticks_stalled as f64),
        ms(f.tick_jitter_us.p50),
        ms(f.tick_jitter_us.p99)
    )?;
    writeln!(
        w,
        "    Beat-phase spread, same instance:  {}",
        spread_line(&f.beat_phase_same_instance)
    )?;
    writeln!(
        w,
        "    Beat-phase spread, cross instance: {}",
        spread_line(&f.beat_phase_cross_instance)
    )?;
    let worst = f
        .beat_phase_cross_instance
        .p99_ms
        .max(f.beat_phase_same_instance.p99_ms);
    writeln!(
        w,
        "    BandSync's < 50 ms promise: {}",
        if f.beat_phase_cross_instance.segments + f.beat_phase_same_instance.segments == 0 {
            "❌ not shown: no tick received".to_owned()
        } else if worst < 50.0 {
            format!("✅ kept (p99 spread {worst:.1} ms)")
        } else {
            format!("❌ broken (p99 spread {worst:.1} ms)")
        }
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn beat_phase_spreads_are_within_and_across_instances() {
        let mut m = MetricSet::new();
        // Session 0, segment 1: instance 0 members within 2 ms, instance 1 within 1 ms, 10 ms apart.
        for (inst, lo, hi) in [(0, 1_000.0, 3_000.0), (1, 12_000.0, 13_000.0)] {
            let key = band::phase_key(0, 1, inst);
            m.set_gauge(&format!("{key}.min"), lo, GaugeMerge::Min);
            m.set_gauge(&format!("{key}.max"), hi, GaugeMerge::Max);
        }
        m.add_counter(band::MEMBERS_PLANNED, 4);
        m.add_counter(band::CONVERGED, 3);
        m.histogram_mut(band::PROPAGATION_CROSS_US).record(5_000).unwrap();
        let p = SessionSync(Band {
            sessions: 1,
            members: 4,
            changes: 2,
            interval: Duration::from_millis(500),
            ramp_up: Duration::from_secs(1),
            settle: Duration::from_secs(1),
        });
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 2 });
        assert_eq!(f.beat_phase_same_instance.max_ms, 2.0);
        assert_eq!(f.beat_phase_cross_instance.max_ms, 12.0);
        assert_eq!(f.convergence_rate, 0.75);
        assert_eq!(f.propagation_all_us.count, 1);
        assert!(matches!(
            SessionSync::measure(&f, "beat_phase_spread"),
            Some(Measure::Value { value, .. }) if value == 12.0
        ));
        assert_eq!(SessionSync::score(&f), Score::Outside);
    }
}
