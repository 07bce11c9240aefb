//! `redis_basic_ops` — document 2.1: SET/GET/HSET/HGET/DEL of the session JSON, `iterations` of
//! each per agent, split over `clients` concurrent clients with a connection each (the document: 1).

use crate::workload::Rating;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::group;
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};
use crate::workloads::arrival::{self, Arrival, OpenFigures};
use crate::workload::{Chart, Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload, hist};

/// Metric names, per operation `op` in [`names::OPS`].
pub mod names {
    pub const OPS: [&str; 5] = ["set", "get", "hset", "hget", "del"];

    /// Histogram: latency of one operation, in µs.
    pub fn latency_us(op: &str) -> String {
        format!("{op}.latency_us")
    }
    /// Counter: operations answered without error.
    pub fn ok(op: &str) -> String {
        format!("{op}.ok")
    }
    /// Counter: operations that failed or timed out.
    pub fn errors(op: &str) -> String {
        format!("{op}.errors")
    }
    /// Gauge (min): first operation's start, coordinator time, µs since the epoch.
    pub fn start_us(op: &str) -> String {
        format!("{op}.start_us")
    }
    /// Gauge (max): last operation's end, coordinator time, µs since the epoch.
    pub fn end_us(op: &str) -> String {
        format!("{op}.end_us")
    }
    /// Gauge (sum): this process's CPU time (user + system) during the operation's phase, µs.
    pub fn cpu_us(op: &str) -> String {
        format!("{op}.cpu_us")
    }
    /// Gauge (max): bytes of the session JSON written.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
    /// Counter: concurrent clients (one connection each), all agents together.
    pub const CLIENTS: &str = "clients";
    /// Counter: keys the step deleted while cleaning up after itself.
    pub const CLEANUP_DELETED: &str = "cleanup.deleted";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RedisBasicOps {
    /// Operations of each kind per agent (closed model).
    pub iterations: u64,
    /// Members in the session JSON.
    pub members: u32,
    /// Concurrent clients per agent, a connection each.
    pub clients: u32,
    /// The open model: operations arrive on this schedule, cycling SET, GET, HSET, HGET, DEL
    /// over a key space of [`OPEN_KEYS`] per agent; `clients` connections serve them.
    #[serde(default)]
    pub open: Option<Arrival>,
}

/// Keys per agent the open model cycles over (a bounded working set, whatever the rate).
pub const OPEN_KEYS: u64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    iterations: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    clients: Option<Spanned<i64>>,
    rate: Option<Spanned<f64>>,
    start_rate: Option<Spanned<f64>>,
    stages: Option<Spanned<Vec<arrival::RawStage>>>,
    duration: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RedisBasicOpsFigures {
    pub payload_bytes: u64,
    /// Agents that ran the step.
    pub agents: u32,
    /// Clients in all (each runs its operations sequentially on its own connection).
    pub connections: u64,
    pub operations: Vec<OpFigures>,
    /// The open model's figures (`None`: closed-loop).
    pub open: Option<OpenFigures>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct OpFigures {
    pub op: String,
    pub iterations: u64,
    pub ok: u64,
    pub errors: u64,
    pub avg_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The document's `opsPerSecond` = 1000 / avgTime: one sequential client's rate.
    pub ops_per_sec_document: f64,
    /// Operations / wall time, all agents together, in coordinator time.
    pub throughput_ops_per_sec: f64,
    /// The document's rating by avgTime: < 1 ms Excellent, < 5 Good, < 20 Acceptable, else Poor.
    pub rating: Rating,
    pub latency_us: HistSummary,
    /// The agents' process CPU time during the phase / operations, µs (Linux, 10 ms ticks).
    pub cpu_us_per_op: Option<f64>,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "redis_basic_ops",
    name: "Redis Basic Ops",
    key: Some("redis_ops_per_second"),
    default: 10_000.0,
    cmp: Cmp::Gt,
    unit: Unit::Number,
    suffix: " ops/s (slowest of SET/GET/HSET/HGET)",
    target_text: None,
    source: Source::Document,
    rank: 2,
    combine: Combine::Worst,
}];

/// The document's `performanceRating` by mean latency in ms.
pub fn latency_rating(avg_ms: f64) -> Rating {
    if avg_ms < 1.0 {
        Rating::Excellent
    } else if avg_ms < 5.0 {
        Rating::Good
    } else if avg_ms < 20.0 {
        Rating::Acceptable
    } else {
        Rating::Poor
    }
}

fn op_figures(m: &MetricSet, op: &str) -> OpFigures {
    let h = hist(m, &n::latency_us(op));
    let ok = m.counter(&n::ok(op));
    let errors = m.counter(&n::errors(op));
    let avg_ms = h.mean / 1000.0;
    let wall_us = match (m.gauge(&n::start_us(op)), m.gauge(&n::end_us(op))) {
        (Some(s), Some(e)) if e > s => e - s,
        _ => 0.0,
    };
    OpFigures {
        op: op.to_string(),
        iterations: ok + errors,
        ok,
        errors,
        avg_ms,
        min_ms: h.min as f64 / 1000.0,
        max_ms: h.max as f64 / 1000.0,
        p50_ms: h.p50 as f64 / 1000.0,
        p99_ms: h.p99 as f64 / 1000.0,
        ops_per_sec_document: if avg_ms > 0.0 { 1000.0 / avg_ms } else { 0.0 },
        throughput_ops_per_sec: if wall_us > 0.0 {
            ok as f64 / (wall_us / 1e6)
        } else {
            0.0
        },
        // No operation succeeded: nothing to rate (a failure never reads as "Excellent").
        rating: if ok == 0 { Rating::NotRated } else { latency_rating(avg_ms) },
        latency_us: h,
        cpu_us_per_op: m
            .gauge(&n::cpu_us(op))
            .filter(|_| ok + errors > 0)
            .map(|cpu| cpu / (ok + errors) as f64),
    }
}

impl Workload for RedisBasicOps {
    const KIND: &'static str = "redis_basic_ops";
    const SECTION: Section = Section::Redis;
    type Raw = Raw;
    type Figures = RedisBasicOpsFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let open = crate::open_model!(raw, cx, iterations)?;
        Ok(RedisBasicOps {
            iterations: cx.count(&raw.iterations, "iterations", 1_000, 1, 10_000_000)?,
            members: cx.count(&raw.members, "members", 10, 1, 1_000)? as u32,
            clients: cx.count(&raw.clients, "clients", 1, 1, 10_000)? as u32,
            open,
        })
    }

    fn clamped(self) -> Self {
        RedisBasicOps {
            clients: self.clients.max(1),
            ..self
        }
    }

    fn figures(&self, m: &MetricSet, cx: &FigureCx<'_>) -> RedisBasicOpsFigures {
        RedisBasicOpsFigures {
            payload_bytes: m.gauge(n::PAYLOAD_BYTES).unwrap_or(0.0) as u64,
            agents: u32::try_from(cx.agents).unwrap_or(u32::MAX),
            connections: m.counter(n::CLIENTS),
            operations: n::OPS.iter().map(|op| op_figures(m, op)).collect(),
            open: self.open.as_ref().map(|a| arrival::figures(a, m, &n::OPS)),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &RedisBasicOpsFigures, _id: &str) -> Option<Measure> {
        if let Some(why) = f.open.as_ref().and_then(OpenFigures::not_held) {
            return Some(Measure::Failed(why));
        }
        // Failed operations fail the criterion: a rate measured on the survivors is no pass.
        if let Some(o) = f.operations.iter().find(|o| o.errors > 0) {
            return Some(Measure::Failed(format!(
                "{} of {} {} operations failed",
                group(o.errors as f64),
                group(o.iterations as f64),
                o.op.to_uppercase()
            )));
        }
        f.operations
            .iter()
            .filter(|o| o.op != "del")
            .min_by(|a, b| a.ops_per_sec_document.total_cmp(&b.ops_per_sec_document))
            .map(|o| {
                let v = o.ops_per_sec_document;
                Measure::value(v, format!("{} ops/s ({})", group(v), o.op.to_uppercase()))
            })
    }

    fn score(f: &RedisBasicOpsFigures) -> Score {
        let measured: Vec<_> = f
            .operations
            .iter()
            .map(|o| format!("{} {}", o.op.to_uppercase(), o.rating))
            .collect();
        Score::Fixed {
            test: "Basic Operations",
            measured: measured.join(", "),
        }
    }

    fn notes(_f: &RedisBasicOpsFigures) -> Vec<String> {
        vec!["Redis Ops/sec is the document's figure, 1000 / mean latency of one sequential client; Throughput is operations / wall time of all agents together, measured in coordinator time.".to_owned()]
    }

    fn recommendations(f: &RedisBasicOpsFigures, step: &str) -> Vec<String> {
        let mut out = Vec::new();
        if f.operations
            .iter()
            .any(|o| o.op == "hset" && o.ops_per_sec_document < 10_000.0)
        {
            out.push("Consider Redis optimization or connection pooling".to_owned());
        }
        let errors: u64 = f.operations.iter().map(|o| o.errors).sum();
        if errors > 0 {
            out.push(format!("Investigate {errors} failed Redis operations in step `{step}`"));
        }
        out
    }

    fn render_text(f: &RedisBasicOpsFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Basic Operations Performance:")?;
                for o in f.operations.iter().filter(|o| o.op != "del") {
                    writeln!(
                        w,
                        "    {} Ops/sec: {}",
                        o.op.to_uppercase(),
                        group(o.ops_per_sec_document)
                    )?;
                }
                writeln!(
                    w,
                    "\n    {:<5} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>11} {:>13}  rating",
                    "op", "ops", "errors", "avg ms", "p50 ms", "p99 ms", "max ms", "ops/s(doc)", "throughput/s"
                )?;
                for o in &f.operations {
                    writeln!(
                        w,
                        "    {:<5} {:>8} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>11} {:>13}  {}",
                        o.op.to_uppercase(),
                        o.iterations,
                        o.errors,
                        o.avg_ms,
                        o.p50_ms,
                        o.p99_ms,
                        o.max_ms,
                        group(o.ops_per_sec_document),
                        group(o.throughput_ops_per_sec),
                        o.rating
                    )?;
                }
                writeln!(
                    w,
                    "    ({} agent(s), {} connection(s) in all, each client sequential on its own; session JSON {} bytes; CPU per op {})",
                    f.agents,
                    f.connections,
                    f.payload_bytes,
                    f.operations
                        .iter()
                        .map(|o| format!(
                            "{} {}",
                            o.op.to_uppercase(),
                            o.cpu_us_per_op
                                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.1} µs"))
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )?;
        if let Some(open) = &f.open {
            open.render_text(w)?;
        }
        Ok(())
    }

    fn rates(f: &RedisBasicOpsFigures) -> Vec<arrival::RatePoint> {
        f.open.as_ref().map(|o| o.series.clone()).unwrap_or_default()
    }

    fn charts(f: &RedisBasicOpsFigures) -> Vec<Chart> {
        let series = f
            .operations
            .iter()
            .map(|op| (op.op.to_uppercase(), op.latency_us))
            .collect();
        vec![Chart::new("Redis basic operations latency", series, 1e-3)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn failed_operations_are_never_rated_and_fail_the_criterion() {
        let mut m = MetricSet::new();
        m.add_counter(&n::errors("set"), 1000);
        let f = op_figures(&m, "set");
        assert_eq!((f.ok, f.errors, f.rating), (0, 1000, Rating::NotRated));
        let figures = RedisBasicOpsFigures {
            payload_bytes: 0,
            agents: 1,
            connections: 1,
            operations: vec![f],
            open: None,
        };
        assert_eq!(
            RedisBasicOps::measure(&figures, "redis_ops"),
            Some(Measure::Failed("1,000 of 1,000 SET operations failed".into()))
        );
    }

    #[test]
    fn the_documents_rate_is_per_client_and_throughput_is_over_wall_time() {
        let mut m = MetricSet::new();
        for v in [500u64, 1500] {
            m.histogram_mut(&n::latency_us("set")).record(v).unwrap();
        }
        m.add_counter(&n::ok("set"), 2);
        m.set_gauge(&n::start_us("set"), 1_000_000.0, GaugeMerge::Min);
        m.set_gauge(&n::end_us("set"), 1_500_000.0, GaugeMerge::Max);
        let p = RedisBasicOps {
            iterations: 2,
            members: 10,
            clients: 1,
            open: None,
        };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 2 });
        let set = &f.operations[0];
        assert_eq!(set.op, "set");
        assert!((set.avg_ms - 1.0).abs() < 0.01, "{}", set.avg_ms);
        assert!((set.ops_per_sec_document - 1000.0).abs() < 10.0);
        assert_eq!(set.throughput_ops_per_sec, 4.0);
        assert_eq!(f.agents, 2);
        // GET recorded nothing: its document rate is 0, the slowest, so the criterion shows it.
        let Some(Measure::Value { value, shown }) = RedisBasicOps::measure(&f, "redis_basic_ops") else {
            panic!()
        };
        assert_eq!((value, shown.as_str()), (0.0, "0 ops/s (GET)"));
    }

    #[test]
    fn latency_ratings_follow_the_document() {
        assert_eq!(latency_rating(0.05), Rating::Excellent);
        assert_eq!(latency_rating(1.0), Rating::Good);
        assert_eq!(latency_rating(19.9), Rating::Acceptable);
        assert_eq!(latency_rating(20.0), Rating::Poor);
    }
}
