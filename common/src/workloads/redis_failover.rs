//! `redis_failover` — document 3.1, made real: load for `warmup`, then the coordinator injects
//! `mode` for `duration` while every agent keeps `clients` Redis clients, a pool and Socket.IO
//! members (`sessions` × `members`, playing; they record under [`super::band`]'s names) busy,
//! then `recovery` more of load. `keys` written before the fault are read after it; `persist`
//! (restart only) saves before stopping.

use crate::workload::Rating;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::band;
use crate::fmt::{group, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{FaultMode, PlanError, StepCx, fmt_duration};
use crate::workload::{
    Cmp, Combine, CriterionDef, FaultPlan, FigureCx, Hooks, Measure, Score, Section, Source, Unit, Workload,
};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    /// Gauges (set by the coordinator, coordinator µs): when the fault began and ended.
    pub const FAULT_BEGIN_US: &str = "fault_begin_us";
    pub const FAULT_END_US: &str = "fault_end_us";
    /// Counters: Redis operations that succeeded, failed, of which timed out.
    pub const OPS_OK: &str = "ops_ok";
    pub const OPS_FAILED: &str = "ops_failed";
    pub const OPS_TIMED_OUT: &str = "ops_timed_out";
    /// Gauges (min): the first failed operation (coordinator µs); (max) the last one.
    pub const FIRST_FAILURE_US: &str = "first_failure_us";
    pub const LAST_FAILURE_US: &str = "last_failure_us";
    /// Gauge (max over agents): the first success after an agent's last failure (coordinator µs):
    /// the slowest agent's recovery.
    pub const RECOVERED_AT_US: &str = "recovered_at_us";
    /// Counter: agents whose clients never succeeded again after failing.
    pub const AGENTS_NOT_RECOVERED: &str = "agents_not_recovered";
    /// Counter: agents that saw no failure at all.
    pub const AGENTS_UNAFFECTED: &str = "agents_unaffected";
    /// Counters: keys written before the fault; read back intact after it; missing or changed.
    pub const KEYS_WRITTEN: &str = "keys_written";
    pub const KEYS_KEPT: &str = "keys_kept";
    pub const KEYS_LOST: &str = "keys_lost";
    /// Counters: pooled operations that succeeded / failed; histogram of their pool wait, µs.
    pub const POOL_OK: &str = "pool_ok";
    pub const POOL_FAILED: &str = "pool_failed";
    /// Counter: connections the pool opened after the fault began (reconnections).
    pub const POOL_RECONNECTS: &str = "pool_reconnects";
    pub const POOL_WAIT_US: &str = "pool_wait_us";
    /// Histogram: Redis operation latency, µs (failures included, at their timeout).
    pub const LATENCY_US: &str = "latency_us";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisFailover {
    pub mode: FaultMode,
    pub warmup: Duration,
    pub duration: Duration,
    pub recovery: Duration,
    /// Redis clients per agent.
    pub clients: u32,
    pub keys: u64,
    pub persist: bool,
    /// Socket.IO sessions (0: none) of `members` each, playing through the fault.
    pub sessions: u64,
    pub members: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    mode: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
    recovery: Option<Spanned<String>>,
    clients: Option<Spanned<i64>>,
    keys: Option<Spanned<i64>>,
    persist: Option<Spanned<bool>>,
    sessions: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
}

/// Client settings the failover load uses, stated in the report (DEPENDENCIES.md).
pub const FAILOVER_CLIENT_SETTINGS: &str = "redis-rs ConnectionManager: 1 retry, reconnect delay ≤ 500 ms, connection and response timeouts 500 ms; deadpool-redis pool of 4: wait/create/recycle timeouts 1 s; Socket.IO members reconnect every 0.2–2 s and re-join";

/// Members of one server instance during the fault.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct InstanceDuringFault {
    pub instance: u64,
    /// Members whose session was playing (receiving ticks) before the fault.
    pub members: u64,
    /// Members that received no tick before the fault: whether it stopped their ticks is not judged.
    pub not_playing_before: u64,
    /// Of them, the ones that kept receiving ticks during it (at least half of the ticks due).
    pub kept_ticking: u64,
}

/// `redis_failover`: the document's "Redis unavailable" scenario with a real fault.
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct FailoverFigures {
    pub mode: FaultMode,
    /// The fault as the coordinator injected it (coordinator ms since the epoch) and its length.
    pub fault_begin_unix_ms: Option<f64>,
    pub fault_end_unix_ms: Option<f64>,
    pub fault_ms: Option<f64>,
    pub ops_ok: u64,
    pub ops_failed: u64,
    pub ops_timed_out: u64,
    /// The first failed operation after the fault began, ms (how fast clients noticed).
    pub detection_ms: Option<f64>,
    /// From the fault's end to the first success after the last failure, slowest agent, ms.
    pub recovery_ms: Option<f64>,
    pub agents_not_recovered: u64,
    pub agents_unaffected: u64,
    pub latency_us: HistSummary,
    pub keys_written: u64,
    pub keys_kept: u64,
    pub keys_lost: u64,
    pub pool_ok: u64,
    pub pool_failed: u64,
    /// Connections the agents' pools opened after the fault began.
    pub pool_reconnects: u64,
    pub pool_wait_us: HistSummary,
    pub client_settings: String,
    /// BandSync side: per instance, members that kept receiving ticks during the fault.
    pub instances: Vec<InstanceDuringFault>,
    /// Members on another instance than their leader (with a change made during the fault), and
    /// those that reached the state of the fault's last change, or a later one, after it.
    pub cross_instance_members: u64,
    pub cross_instance_members_reached: u64,
    /// Members ending in their leader's final state.
    pub convergence_rate: Option<f64>,
    pub members_connected: u64,
    pub reconnects: u64,
    /// The document's fields, from the measurements.
    pub graceful_degradation: bool,
    pub reconnection_working: bool,
    pub data_persisted: bool,
    pub overall_rating: Rating,
}

const CRITERIA: &[CriterionDef] = &[
    CriterionDef {
        id: "recovery_time",
        name: "Recovery Time (failover)",
        key: None,
        default: 10.0,
        cmp: Cmp::Lt,
        unit: Unit::Plain,
        suffix: " s",
        target_text: None,
        source: Source::Document,
        rank: 5,
        combine: Combine::Worst,
    },
    CriterionDef {
        id: "graceful_degradation",
        name: "Error handling: graceful degradation",
        key: None,
        default: 1.0,
        cmp: Cmp::Ge,
        unit: Unit::Plain,
        suffix: "",
        target_text: Some("in all scenarios"),
        source: Source::Document,
        rank: 10,
        combine: Combine::AllOf("fault scenarios (members on every instance kept ticking, all converged)"),
    },
];

impl Workload for RedisFailover {
    const KIND: &'static str = "redis_failover";
    const SECTION: Section = Section::Failover;
    type Raw = Raw;
    type Figures = FailoverFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let unknown = |m: &str| format!("unknown fault `{m}`: expected pause, kill_clients or restart");
        let mode = match &raw.mode {
            Some(m) => FaultMode::parse(m.get_ref()).ok_or_else(|| cx.err(m.span(), "mode", unknown(m.get_ref())))?,
            None => return Err(cx.err(cx.span(), "mode", "missing: pause, kill_clients or restart")),
        };
        if mode == FaultMode::KillClients
            && let Some(d) = &raw.duration
        {
            return Err(cx.err(d.span(), "duration", "kill_clients is instantaneous: remove duration"));
        }
        if mode != FaultMode::Restart
            && let Some(p) = &raw.persist
        {
            return Err(cx.err(
                p.span(),
                "persist",
                "only a restart can lose data: persist is for mode = \"restart\"",
            ));
        }
        let warmup = cx.duration(&raw.warmup, "warmup", Duration::from_secs(2))?;
        let duration = match mode {
            FaultMode::KillClients => Duration::ZERO,
            _ => cx.duration(&raw.duration, "duration", Duration::from_secs(2))?,
        };
        let recovery = cx.duration(&raw.recovery, "recovery", Duration::from_secs(8))?;
        let total = warmup + duration + recovery;
        if total > Duration::from_secs(90) || total + Duration::from_secs(10) >= cx.timeout {
            return Err(cx.err(
                cx.span(),
                "recovery",
                format!(
                    "warmup + duration + recovery = {} must be at most 90s and 10s shorter than the step timeout {}",
                    fmt_duration(total),
                    fmt_duration(cx.timeout)
                ),
            ));
        }
        let p = RedisFailover {
            mode,
            warmup,
            duration,
            recovery,
            clients: cx.count(&raw.clients, "clients", 4, 1, 1_000)? as u32,
            keys: cx.count(&raw.keys, "keys", 100, 1, 1_000_000)?,
            persist: raw.persist.as_ref().is_some_and(|p| *p.get_ref()),
            sessions: cx.count(&raw.sessions, "sessions", 2, 0, 10_000)?,
            members: cx.count(&raw.members, "members", 4, 2, 1_000)? as u32,
        };
        band::check_size(p.sessions, p.members, cx)?;
        if !cx.faults.contains(&mode) {
            return Err(cx.err(
                cx.span_of(&raw.mode),
                "mode",
                format!(
                    "fault `{}` is not allowed by this plan: it affects every client of the target Redis; allow it with [faults] allow = [\"{}\"]",
                    mode.name(),
                    mode.name()
                ),
            ));
        }
        Ok(p)
    }

    fn clamped(self) -> Self {
        RedisFailover {
            clients: self.clients.max(1),
            members: self.members.max(2),
            ..self
        }
    }

    fn uses_servers(&self) -> bool {
        self.sessions > 0
    }

    fn fits(&self, agents: u32) -> Result<(), String> {
        band::check_per_agent(self.sessions, self.members, agents)
    }

    fn requires(&self, d: &crate::dialect::Dialect) -> Result<(), String> {
        if let Some(cap) = d.member_cap
            && self.sessions > 0
            && self.members > cap
        {
            return Err(format!(
                "the servers take at most {cap} members per session (dialect {}); this step puts {} in each: lower `members`",
                d.protocol.as_str(),
                self.members
            ));
        }
        match ["play", "set_tempo"].iter().find(|c| !d.commands.iter().any(|k| k == *c)) {
            Some(c) if self.sessions > 0 => Err(format!(
                "the servers do not support `{c}` (dialect {}), which this step's playing members use",
                d.protocol.as_str()
            )),
            _ => Ok(()),
        }
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            fault: Some(FaultPlan {
                mode: self.mode,
                warmup: self.warmup,
                duration: self.duration,
                persist: self.persist,
                begin_gauge: n::FAULT_BEGIN_US,
                end_gauge: n::FAULT_END_US,
            }),
            ..Hooks::default()
        }
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> FailoverFigures {
        failover_figures(m, self.mode)
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &FailoverFigures, id: &str) -> Option<Measure> {
        match id {
            "recovery_time" => Some(match f.recovery_ms {
                None => Measure::Failed(format!(
                    "not recovered ({} agent(s) never succeeded again after {})",
                    f.agents_not_recovered,
                    f.mode.name()
                )),
                Some(ms) => Measure::value(ms / 1000.0, format!("{:.2} s (slowest agent, worst fault)", ms / 1000.0)),
            }),
            "graceful_degradation" if !f.instances.is_empty() => Some(Measure::Check(f.graceful_degradation)),
            _ => None,
        }
    }

    fn score(f: &FailoverFigures) -> Score {
        Score::Fixed {
            test: "Redis Unavailable Scenario",
            measured: f.overall_rating.to_string(),
        }
    }

    fn notes(f: &FailoverFigures) -> Vec<String> {
        vec![format!(
            "Failover ({}): the document disconnects its own client, sleeps 1 s and reports success; here the coordinator injected a real fault while every agent kept loading Redis, a pool and Socket.IO members, and detection, recovery and data kept are measured in coordinator time. Client settings: {}.",
            f.mode.name(),
            f.client_settings
        )]
    }

    fn recommendations(f: &FailoverFigures, _step: &str) -> Vec<String> {
        if !f.data_persisted && f.keys_written > 0 {
            vec![format!(
                "{} of {} keys written before the {} were lost: enable persistence (AOF or RDB) if sessions must survive a Redis restart",
                f.keys_lost,
                f.keys_written,
                f.mode.name()
            )]
        } else {
            Vec::new()
        }
    }

    fn render_text(f: &FailoverFigures, step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
        let name = step;
    let ms = |v: Option<f64>| v.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.0} ms"));
    writeln!(w, "\n  Redis Unavailable Scenario ({name}: {}):", f.mode.name())?;
    writeln!(
        w,
        "    Fault: {} for {}",
        match f.mode {
            FaultMode::Pause => "CLIENT PAUSE ALL",
            FaultMode::KillClients => "CLIENT KILL of every connection",
            FaultMode::Restart => "redis-server stopped and started again",
        },
        ms(f.fault_ms)
    )?;
    writeln!(
        w,
        "    Graceful Degradation: {}",
        if f.instances.is_empty() {
            "not measured (no Socket.IO members)".to_owned()
        } else if f.graceful_degradation {
            "✅ members on every instance kept receiving ticks; all converged".to_owned()
        } else if f.instances.iter().any(|i| i.members == 0) {
            "❌ not shown: on some instance no member was receiving ticks before the fault".to_owned()
        } else {
            "❌ some members stopped receiving ticks or did not converge".to_owned()
        }
    )?;
    for i in &f.instances {
        writeln!(
            w,
            "      instance {}: {} of {} members kept ticking during the fault{}",
            i.instance,
            i.kept_ticking,
            i.members,
            if i.not_playing_before > 0 {
                format!(" ({} received no tick before it: not judged)", i.not_playing_before)
            } else {
                String::new()
            }
        )?;
    }
    if f.cross_instance_members > 0 || !f.instances.is_empty() {
        writeln!(
            w,
            "      the fault's last change reached {} of {} members on other instances afterwards; convergence {}",
            f.cross_instance_members_reached,
            f.cross_instance_members,
            f.convergence_rate
                .map_or_else(|| "n/a".to_owned(), |c| format!("{:.1}%", c * 100.0))
        )?;
    }
    writeln!(
        w,
        "    Reconnection Working: {}",
        if f.reconnection_working { "✅ yes" } else { "❌ no" }
    )?;
    writeln!(
        w,
        "    Data Persisted: {} ({} of {} keys written before the fault read back, {} lost)",
        if f.data_persisted { "✅ yes" } else { "❌ no" },
        f.keys_kept,
        f.keys_written,
        f.keys_lost
    )?;
    writeln!(
        w,
        "    Detection: {}  Recovery Time: {}{}",
        ms(f.detection_ms),
        ms(f.recovery_ms),
        if f.agents_unaffected > 0 {
            format!(" ({} agent(s) saw no failure)", f.agents_unaffected)
        } else {
            String::new()
        }
    )?;
    writeln!(
        w,
        "    Operations: {} ok, {} failed ({} timed out); pool {} ok, {} failed, {} reconnections, wait p99 {:.1} ms",
        group(f.ops_ok as f64),
        group(f.ops_failed as f64),
        group(f.ops_timed_out as f64),
        group(f.pool_ok as f64),
        group(f.pool_failed as f64),
        f.pool_reconnects,
        f.pool_wait_us.p99 as f64 / 1000.0
    )?;
    writeln!(w, "    Overall Rating: {}", f.overall_rating)?;
        Ok(())
    }
}

fn failover_figures(m: &MetricSet, mode: FaultMode) -> FailoverFigures {
    let hist = |name: &str| crate::workload::hist(m, name);
    let begin = m.gauge(n::FAULT_BEGIN_US);
    let end = m.gauge(n::FAULT_END_US);
    let failed = m.counter(n::OPS_FAILED);
    let first_failure = m.gauge(n::FIRST_FAILURE_US).filter(|_| failed > 0);
    let recovered = m.gauge(n::RECOVERED_AT_US).filter(|_| failed > 0);
    let not_recovered = m.counter(n::AGENTS_NOT_RECOVERED);
    let mut instances = Vec::new();
    for i in 0..64usize {
        let members = m.counter(&band::outage_members(i));
        let idle = m.counter(&band::outage_idle(i));
        if members == 0 && idle == 0 {
            continue;
        }
        instances.push(InstanceDuringFault {
            instance: i as u64,
            members,
            not_playing_before: idle,
            kept_ticking: m.counter(&band::outage_ticking(i)),
        });
    }
    let connected = m.counter(band::MEMBERS_CONNECTED);
    let planned = m.counter(band::MEMBERS_PLANNED);
    let convergence = (planned > 0).then(|| ratio(m.counter(band::CONVERGED), planned));
    let keys_written = m.counter(n::KEYS_WRITTEN);
    let keys_kept = m.counter(n::KEYS_KEPT);
    let graceful = !instances.is_empty()
        && instances.iter().all(|i| i.members > 0 && i.kept_ticking == i.members)
        && m.counter(band::OUTAGE_CROSS_SEEN) == m.counter(band::OUTAGE_CROSS_EXPECTED)
        && convergence == Some(1.0);
    let reconnection = not_recovered == 0 && m.counter(n::OPS_OK) > 0;
    let persisted = keys_written > 0 && keys_kept == keys_written;
    FailoverFigures {
        mode,
        fault_begin_unix_ms: begin.map(|v| v / 1000.0),
        fault_end_unix_ms: end.map(|v| v / 1000.0),
        fault_ms: begin.zip(end).map(|(b, e)| (e - b) / 1000.0),
        ops_ok: m.counter(n::OPS_OK),
        ops_failed: failed,
        ops_timed_out: m.counter(n::OPS_TIMED_OUT),
        detection_ms: first_failure.zip(begin).map(|(f, b)| (f - b) / 1000.0),
        recovery_ms: recovered
            .zip(end)
            .filter(|_| not_recovered == 0)
            .map(|(r, e)| ((r - e) / 1000.0).max(0.0)),
        agents_not_recovered: not_recovered,
        agents_unaffected: m.counter(n::AGENTS_UNAFFECTED),
        latency_us: hist(n::LATENCY_US),
        keys_written,
        keys_kept,
        keys_lost: m.counter(n::KEYS_LOST),
        pool_ok: m.counter(n::POOL_OK),
        pool_failed: m.counter(n::POOL_FAILED),
        pool_reconnects: m.counter(n::POOL_RECONNECTS),
        pool_wait_us: hist(n::POOL_WAIT_US),
        client_settings: FAILOVER_CLIENT_SETTINGS.to_owned(),
        instances,
        cross_instance_members: m.counter(band::OUTAGE_CROSS_EXPECTED),
        cross_instance_members_reached: m.counter(band::OUTAGE_CROSS_SEEN),
        convergence_rate: convergence,
        members_connected: connected,
        reconnects: m.counter(band::RECONNECTS),
        graceful_degradation: graceful,
        reconnection_working: reconnection,
        data_persisted: persisted,
        overall_rating: if (graceful || planned == 0) && reconnection {
            Rating::Excellent
        } else {
            Rating::NeedsImprovement
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn detection_and_recovery_are_measured_from_the_fault() {
        let mut m = MetricSet::new();
        m.set_gauge(n::FAULT_BEGIN_US, 1_000_000.0, GaugeMerge::Min);
        m.set_gauge(n::FAULT_END_US, 3_000_000.0, GaugeMerge::Max);
        m.add_counter(n::OPS_OK, 100);
        m.add_counter(n::OPS_FAILED, 5);
        m.set_gauge(n::FIRST_FAILURE_US, 1_500_000.0, GaugeMerge::Min);
        m.set_gauge(n::RECOVERED_AT_US, 3_250_000.0, GaugeMerge::Max);
        m.add_counter(n::KEYS_WRITTEN, 10);
        m.add_counter(n::KEYS_KEPT, 10);
        let p = RedisFailover {
            mode: FaultMode::Pause,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
            recovery: Duration::from_secs(2),
            clients: 1,
            keys: 10,
            persist: false,
            sessions: 0,
            members: 2,
        };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.fault_ms, Some(2_000.0));
        assert_eq!(f.detection_ms, Some(500.0));
        assert_eq!(f.recovery_ms, Some(250.0));
        assert!(f.data_persisted && f.reconnection_working);
        assert_eq!(f.overall_rating, Rating::Excellent);
        // No members: graceful degradation is not measured by this step.
        assert_eq!(RedisFailover::measure(&f, "graceful_degradation"), None);
        m.add_counter(n::AGENTS_NOT_RECOVERED, 1);
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert!(matches!(RedisFailover::measure(&f, "recovery_time"), Some(Measure::Failed(_))));
    }
}
