//! `redis_concurrent` — document 2.1 concurrent: `clients` (divided over agents) × `operations`
//! composite HSET / HGET + parse / HSET operations.

use crate::workload::Rating;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{group, pct, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};
use crate::workloads::arrival::{self, Arrival, OpenFigures};
use crate::workload::{
    Chart, Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload, hist,
    wall_rate,
};

/// Metric names: one composite operation = HSET, HGET + parse, update, HSET.
pub mod names {
    /// Histogram: composite operation latency, µs.
    pub const LATENCY_US: &str = "op.latency_us";
    pub const OK: &str = "op.ok";
    pub const ERRORS: &str = "op.errors";
    /// Counter: clients this agent ran.
    pub const CLIENTS: &str = "clients";
    /// Counter: Redis connections this agent opened for its clients.
    pub const CONNECTIONS: &str = "connections";
    /// Gauges (min / max): first start and last end, coordinator time, µs since the epoch.
    pub const START_US: &str = "start_us";
    pub const END_US: &str = "end_us";
    pub const CLEANUP_DELETED: &str = "cleanup.deleted";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedisConcurrent {
    /// Clients in all, divided over the agents.
    pub clients: u64,
    pub operations: u64,
    pub members: u32,
    pub connections: Connections,
    /// The open model: composite operations arrive on this schedule, each on the session of
    /// client `k mod clients`; the clients (a worker each) serve them in arrival order.
    #[serde(default)]
    pub open: Option<Arrival>,
}

/// How `redis_concurrent` clients reach Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connections {
    /// All clients of an agent share one multiplexed connection, as the document's single
    /// ioredis client does (commands of different clients pipeline on it).
    Shared,
    /// Each client has its own connection.
    PerClient,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    clients: Option<Spanned<i64>>,
    operations: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    connections: Option<Spanned<String>>,
    rate: Option<Spanned<f64>>,
    start_rate: Option<Spanned<f64>>,
    stages: Option<Spanned<Vec<arrival::RawStage>>>,
    duration: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RedisConcurrentFigures {
    pub concurrent_clients: u64,
    pub operations_per_client: u64,
    pub connections: Connections,
    /// Redis connections opened for the clients, all agents together.
    pub redis_connections: u64,
    pub total_operations: u64,
    pub successful_operations: u64,
    pub total_errors: u64,
    pub error_rate: f64,
    pub success_rate: f64,
    pub avg_operation_time_ms: f64,
    pub max_operation_time_ms: f64,
    /// The document's `throughput`: successful / slowest single operation (not a throughput).
    pub throughput_document: f64,
    /// Successful operations / wall time of all agents, in coordinator time.
    pub throughput_ops_per_sec: f64,
    /// The document's: avg < 10 ms and errors < 1 % Excellent; < 25 ms and < 5 % Good.
    pub performance_rating: Rating,
    pub latency_us: HistSummary,
    /// The open model's figures (`None`: closed-loop).
    pub open: Option<OpenFigures>,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "concurrent_success_rate",
    name: "Concurrent Operations",
    key: Some("concurrent_success_rate"),
    default: 0.95,
    cmp: Cmp::Gt,
    unit: Unit::Fraction,
    suffix: " success rate",
    target_text: None,
    source: Source::Document,
    rank: 4,
    combine: Combine::Worst,
}];

impl Workload for RedisConcurrent {
    const KIND: &'static str = "redis_concurrent";
    const SECTION: Section = Section::Redis;
    type Raw = Raw;
    type Figures = RedisConcurrentFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let open = crate::open_model!(raw, cx, operations)?;
        Ok(RedisConcurrent {
            open,
            clients: cx.count(&raw.clients, "clients", 50, 1, 100_000)?,
            operations: cx.count(&raw.operations, "operations", 100, 1, 10_000_000)?,
            members: cx.count(&raw.members, "members", 4, 1, 1_000)? as u32,
            connections: cx.choice(
                &raw.connections,
                "connections",
                Connections::Shared,
                &[("shared", Connections::Shared), ("per_client", Connections::PerClient)],
            )?,
        })
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> RedisConcurrentFigures {
        let h = hist(m, n::LATENCY_US);
        let ok = m.counter(n::OK);
        let errors = m.counter(n::ERRORS);
        let total = ok + errors;
        let avg_ms = h.mean / 1000.0;
        let max_ms = h.max as f64 / 1000.0;
        let error_rate = ratio(errors, total);
        let rating = if ok == 0 {
            // Nothing succeeded (or nothing ran): no latency to rate.
            Rating::NotRated
        } else if avg_ms < 10.0 && error_rate < 0.01 {
            Rating::Excellent
        } else if avg_ms < 25.0 && error_rate < 0.05 {
            Rating::Good
        } else {
            Rating::NeedsImprovement
        };
        RedisConcurrentFigures {
            concurrent_clients: m.counter(n::CLIENTS),
            operations_per_client: self.operations,
            connections: self.connections,
            redis_connections: m.counter(n::CONNECTIONS),
            total_operations: total,
            successful_operations: ok,
            total_errors: errors,
            error_rate,
            success_rate: if total == 0 { 0.0 } else { 1.0 - error_rate },
            avg_operation_time_ms: avg_ms,
            max_operation_time_ms: max_ms,
            throughput_document: if max_ms > 0.0 {
                ok as f64 / (max_ms / 1000.0)
            } else {
                0.0
            },
            throughput_ops_per_sec: wall_rate(m, n::START_US, n::END_US, ok),
            performance_rating: rating,
            latency_us: h,
            open: self.open.as_ref().map(|a| arrival::figures(a, m, &["op"])),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &RedisConcurrentFigures, _id: &str) -> Option<Measure> {
        if let Some(why) = f.open.as_ref().and_then(OpenFigures::not_held) {
            return Some(Measure::Failed(why));
        }
        Some(Measure::value(f.success_rate, pct(f.success_rate)))
    }

    fn score(f: &RedisConcurrentFigures) -> Score {
        Score::Points(f.performance_rating.points())
    }

    fn notes(f: &RedisConcurrentFigures) -> Vec<String> {
        vec![format!(
            "Concurrent throughput: the document divides successful operations by the slowest single operation ({} ops/s here), which is not a throughput; the true figure is operations / wall time ({} ops/s). Connections: {}.",
            group(f.throughput_document),
            group(f.throughput_ops_per_sec),
            match f.connections {
                Connections::Shared => "one shared multiplexed connection per agent, as the document's single ioredis client",
                Connections::PerClient => "one connection per client",
            }
        )]
    }

    fn recommendations(f: &RedisConcurrentFigures, _step: &str) -> Vec<String> {
        if f.error_rate > 0.05 {
            vec!["Improve error handling for concurrent Redis operations".to_owned()]
        } else {
            Vec::new()
        }
    }

    fn render_text(f: &RedisConcurrentFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Concurrent Operations Performance:")?;
                writeln!(w, "    Concurrent Clients: {}", f.concurrent_clients)?;
                writeln!(w, "    Success Rate: {:.1}%", f.success_rate * 100.0)?;
                writeln!(w, "    Avg Operation Time: {:.1}ms", f.avg_operation_time_ms)?;
                writeln!(w, "    Performance Rating: {}", f.performance_rating)?;
                writeln!(
                    w,
                    "    ({} operations, {} errors; latency p50 {:.2} / p99 {:.2} / max {:.2} ms; throughput {} ops/s (document's formula: {}); {} Redis connection(s), {})",
                    group(f.total_operations as f64),
                    f.total_errors,
                    f.latency_us.p50 as f64 / 1000.0,
                    f.latency_us.p99 as f64 / 1000.0,
                    f.max_operation_time_ms,
                    group(f.throughput_ops_per_sec),
                    group(f.throughput_document),
                    f.redis_connections,
                    match f.connections {
                        Connections::Shared => "shared per agent",
                        Connections::PerClient => "one per client",
                    }
                )?;
        if let Some(open) = &f.open {
            open.render_text(w)?;
        }
        Ok(())
    }

    fn rates(f: &RedisConcurrentFigures) -> Vec<arrival::RatePoint> {
        f.open.as_ref().map(|o| o.series.clone()).unwrap_or_default()
    }

    fn charts(f: &RedisConcurrentFigures) -> Vec<Chart> {
        vec![Chart::new(
            "Composite operation latency",
            vec![("composite".into(), f.latency_us)],
            1e-3,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn true_throughput_is_over_wall_time_and_the_documents_over_the_slowest_operation() {
        let mut m = MetricSet::new();
        for v in [1_000u64, 2_000, 4_000, 100_000] {
            m.histogram_mut(n::LATENCY_US).record(v).unwrap();
        }
        m.add_counter(n::OK, 3);
        m.add_counter(n::ERRORS, 1);
        m.set_gauge(n::START_US, 0.0, GaugeMerge::Min);
        m.set_gauge(n::END_US, 2_000_000.0, GaugeMerge::Max);
        let p = RedisConcurrent {
            clients: 2,
            operations: 2,
            members: 4,
            connections: Connections::Shared,
            open: None,
        };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.success_rate, 0.75);
        assert_eq!(f.throughput_ops_per_sec, 1.5);
        assert!((f.throughput_document - 3.0 / 0.1).abs() < 0.5, "{}", f.throughput_document);
        assert_eq!(f.performance_rating, Rating::NeedsImprovement);
        assert_eq!(RedisConcurrent::recommendations(&f, "s").len(), 1);
    }
}
