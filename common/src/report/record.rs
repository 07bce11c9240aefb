//! What the coordinator recorded of a run: agents, per-step merged metrics, leftover keys. The
//! report ([`super::Report::build`]) computes everything else from it.

use schemars::JsonSchema;
use serde::Serialize;

use crate::clock::ClockEstimate;
use crate::metrics::MetricSet;
use crate::plan::{Criteria, Step};

#[derive(Clone, Debug)]
pub struct RunRecord {
    pub plan_name: String,
    pub plan_hash: String,
    pub run_id: String,
    pub started_unix_ms: i64,
    pub execution_time_s: f64,
    pub status: RunStatus,
    pub redis_url: Option<String>,
    pub key_prefix: String,
    pub servers: Vec<String>,
    pub criteria: Criteria,
    pub agents: Vec<AgentRow>,
    pub steps: Vec<StepRecord>,
    /// Keys found under the run prefix after the run (SCAN), before the coordinator swept them.
    pub leftover_keys: Option<u64>,
    /// Why the sweep could not count them (with `leftover_keys` None while Redis was used).
    pub sweep_error: Option<String>,
    /// The target Redis's eviction setting and what it evicted during the run.
    pub evictions: Option<Evictions>,
}

/// What the target Redis evicted while the run wrote to it: `maxmemory-policy` and `maxmemory`
/// read before the first step, `evicted_keys` (INFO stats) before and after every step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct Evictions {
    pub policy: String,
    /// 0: no limit (nothing is ever evicted).
    pub maxmemory_bytes: u64,
    /// The plan accepted a policy that can evict other keys (`[target] allow_eviction`).
    pub allowed: bool,
    /// Keys Redis evicted while each step ran (`evicted_keys` after − before), by step.
    pub by_step: Vec<StepEvictions>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct StepEvictions {
    pub step: String,
    /// `None`: the counter could not be read around this step (`unchecked` says why).
    pub evicted_keys: Option<u64>,
    pub unchecked: Option<String>,
}

impl Evictions {
    /// Whether this setting lets Redis evict keys the run did not write: any policy but
    /// `noeviction` once `maxmemory` is set (`volatile-*` evicts others' keys with a TTL).
    pub fn can_evict(&self) -> bool {
        self.maxmemory_bytes > 0 && self.policy != "noeviction"
    }

    pub fn total(&self) -> u64 {
        self.by_step.iter().filter_map(|s| s.evicted_keys).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    Complete,
    Incomplete { reason: String },
    Interrupted,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct AgentRow {
    pub index: u32,
    pub agent_id: String,
    pub hostname: String,
    pub address: String,
    pub cores: u32,
    pub version: String,
    pub clock: Option<ClockEstimate>,
    /// Last offset estimate minus the first, over the run.
    pub clock_drift_ns: Option<i64>,
    pub steps_completed: u32,
    pub errors: u64,
    /// The highest CPU use over the steps (percent of the agent's cores) and resident memory (MiB).
    pub max_cpu_percent: Option<f64>,
    pub max_rss_mb: Option<f64>,
    /// Why the agent left early, if it did: the reason, the step it was in (if any) and when,
    /// in seconds since the run started.
    pub lost: Option<String>,
    pub lost_in_step: Option<String>,
    pub lost_after_s: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct StepRecord {
    pub step: Step,
    pub agents_sent: Vec<String>,
    pub agents_reported: Vec<String>,
    pub failures: Vec<(String, String)>,
    pub duration_s: f64,
    pub merged: MetricSet,
    /// The instant the coordinator told every agent to start, coordinator time.
    pub scheduled_start_unix_ns: i64,
    /// When each agent actually started, coordinator time.
    pub agent_starts_unix_ns: Vec<(String, i64)>,
    /// Operations and errors per second since the scheduled start, all agents together.
    pub timeline: Vec<TimelinePoint>,
    /// Each reporting agent's final operation and error counts.
    pub per_agent: Vec<AgentStepFigures>,
    /// The servers' dialect the step relied on (Socket.IO steps).
    pub dialect: Option<crate::dialect::Dialect>,
}

impl StepRecord {
    /// An empty record of `step`, scheduled to start at `start_at` (coordinator ns).
    pub fn new(step: &Step, start_at: i64) -> Self {
        StepRecord {
            step: step.clone(),
            agents_sent: Vec::new(),
            agents_reported: Vec::new(),
            failures: Vec::new(),
            duration_s: 0.0,
            merged: MetricSet::new(),
            scheduled_start_unix_ns: start_at,
            agent_starts_unix_ns: Vec::new(),
            timeline: Vec::new(),
            per_agent: Vec::new(),
            dialect: None,
        }
    }
}

/// One second of a step, all agents together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct TimelinePoint {
    /// Seconds since the step's scheduled start (this point covers [second, second + 1)).
    pub second: u32,
    pub ops: u64,
    pub errors: u64,
}

/// One agent's share of a step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, JsonSchema)]
pub struct AgentStepFigures {
    pub agent: String,
    pub ops: u64,
    pub errors: u64,
    /// When it started, relative to the scheduled instant, ms.
    pub start_delay_ms: Option<f64>,
    /// The agent process's CPU time over the step's wall time, as a percentage of its cores.
    pub cpu_percent: Option<f64>,
    /// The agent process's resident memory at the end of the step, MiB.
    pub rss_mb: Option<f64>,
    /// The step's wall time on this agent, s.
    pub wall_s: Option<f64>,
}

/// Builds a per-second timeline from cumulative counters reported at coordinator times.
#[derive(Clone, Debug, Default)]
pub struct TimelineBuilder {
    start_unix_ns: i64,
    last: std::collections::BTreeMap<String, (u64, u64, i64)>,
    points: Vec<TimelinePoint>,
}

impl TimelineBuilder {
    pub fn new(start_unix_ns: i64) -> Self {
        Self {
            start_unix_ns,
            ..Self::default()
        }
    }

    /// `agent` had done `ops` operations and `errors` errors in all at `at_unix_ns`.
    pub fn observe(&mut self, agent: &str, ops: u64, errors: u64, at_unix_ns: i64) {
        let (last_ops, last_errors, last_at) = self.last.get(agent).copied().unwrap_or((0, 0, self.start_unix_ns));
        let at = at_unix_ns.max(last_at);
        self.last
            .insert(agent.to_owned(), (ops.max(last_ops), errors.max(last_errors), at));
        let second = u32::try_from((at - self.start_unix_ns).max(0) / 1_000_000_000)
            .unwrap_or(u32::MAX)
            .min(86_400);
        if self.points.len() <= second as usize {
            self.points.resize_with(second as usize + 1, TimelinePoint::default);
            for (i, p) in self.points.iter_mut().enumerate() {
                p.second = i as u32;
            }
        }
        let p = &mut self.points[second as usize];
        p.ops += ops.saturating_sub(last_ops);
        p.errors += errors.saturating_sub(last_errors);
    }

    pub fn finish(self) -> Vec<TimelinePoint> {
        self.points
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeline_buckets_each_agents_deltas_by_second() {
        let s = 1_000_000_000_000i64;
        let mut t = TimelineBuilder::new(s);
        t.observe("a", 100, 0, s + 900_000_000);
        t.observe("b", 50, 1, s + 950_000_000);
        t.observe("a", 300, 2, s + 1_900_000_000);
        t.observe("b", 50, 1, s + 2_100_000_000);
        // A report before the start counts in second 0; counters never go backwards.
        t.observe("c", 7, 0, s - 5);
        t.observe("a", 250, 2, s + 2_500_000_000);
        let p = t.finish();
        assert_eq!(
            p.iter().map(|p| (p.second, p.ops, p.errors)).collect::<Vec<_>>(),
            [(0, 157, 1), (1, 200, 2), (2, 0, 0)]
        );
        assert_eq!(p.iter().map(|p| p.ops).sum::<u64>(), 300 + 50 + 7);
    }
}
