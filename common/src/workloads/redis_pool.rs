//! `redis_pool` — document 3.1 pooling: a pool of `pool_size` connections on every agent, one
//! random operation every `interval` for `duration`.

use crate::workload::Rating;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{pct, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx, fmt_duration};
use crate::workload::{Chart, Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload, hist};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    pub const OPS: &str = "ops";
    pub const OK: &str = "ok";
    pub const FAILED: &str = "failed";
    /// Histogram: from the operation's scheduled instant to its end (pool wait included), µs.
    pub const LATENCY_US: &str = "latency_us";
    /// Histogram: time waiting for a pooled connection, µs.
    pub const POOL_WAIT_US: &str = "pool_wait_us";
    /// Gauge (max): pool size per agent.
    pub const POOL_SIZE: &str = "pool_size";
    /// Counter: agents that ran the step (pool size × agents = connections in all).
    pub const AGENTS: &str = "agents";
    /// Gauge (max): configured duration, µs.
    pub const DURATION_US: &str = "duration_us";
    /// Counter: connections the pool opened.
    pub const CONNECTIONS_OPENED: &str = "connections_opened";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisPool {
    /// Connections per agent.
    pub pool_size: u32,
    pub interval: Duration,
    pub duration: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pool_size: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    duration: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RedisPoolFigures {
    pub pool_size: u64,
    pub agents: u64,
    pub test_duration_ms: f64,
    pub total_operations: u64,
    pub successful_operations: u64,
    pub failed_operations: u64,
    pub success_rate: f64,
    /// The document's: operations / configured duration, all agents together.
    pub avg_operations_per_second: f64,
    /// The document's: Excellent when ≥ 95 % succeeded, else Good.
    pub pooling_efficiency: Rating,
    pub connections_opened: u64,
    /// From each operation's scheduled instant to its end (coordinated omission included).
    pub latency_us: HistSummary,
    pub pool_wait_us: HistSummary,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "connection_stability",
    name: "Connection stability (pool)",
    key: Some("pool_success_rate"),
    default: 0.95,
    cmp: Cmp::Gt,
    unit: Unit::Fraction,
    suffix: " of pooled operations succeed",
    target_text: None,
    source: Source::Document,
    rank: 8,
    combine: Combine::Worst,
}];

impl Workload for RedisPool {
    const KIND: &'static str = "redis_pool";
    const SECTION: Section = Section::Failover;
    type Raw = Raw;
    type Figures = RedisPoolFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let interval = cx.duration(&raw.interval, "interval", Duration::from_millis(50))?;
        let duration = cx.duration(&raw.duration, "duration", Duration::from_secs(10))?;
        cx.shorter_than_timeout(duration, cx.span_of(&raw.duration), "duration")?;
        if interval > duration {
            return Err(cx.err(
                cx.span_of(&raw.interval),
                "interval",
                format!(
                    "{} is longer than duration = {}",
                    fmt_duration(interval),
                    fmt_duration(duration)
                ),
            ));
        }
        Ok(RedisPool {
            pool_size: cx.count(&raw.pool_size, "pool_size", 20, 1, 10_000)? as u32,
            interval,
            duration,
        })
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> RedisPoolFigures {
        let total = m.counter(n::OPS);
        let ok = m.counter(n::OK);
        let rate = ratio(ok, total);
        let duration_s = m.gauge(n::DURATION_US).unwrap_or(0.0) / 1e6;
        RedisPoolFigures {
            pool_size: m.gauge(n::POOL_SIZE).unwrap_or(0.0) as u64,
            agents: m.counter(n::AGENTS),
            test_duration_ms: duration_s * 1000.0,
            total_operations: total,
            successful_operations: ok,
            failed_operations: m.counter(n::FAILED),
            success_rate: rate,
            avg_operations_per_second: if duration_s > 0.0 {
                total as f64 / duration_s
            } else {
                0.0
            },
            // The document's rule; nothing pooled ran: nothing to rate.
            pooling_efficiency: if total == 0 {
                Rating::NotRated
            } else if rate >= 0.95 {
                Rating::Excellent
            } else {
                Rating::Good
            },
            connections_opened: m.counter(n::CONNECTIONS_OPENED),
            latency_us: hist(m, n::LATENCY_US),
            pool_wait_us: hist(m, n::POOL_WAIT_US),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &RedisPoolFigures, _id: &str) -> Option<Measure> {
        Some(Measure::value(f.success_rate, pct(f.success_rate)))
    }

    fn score(f: &RedisPoolFigures) -> Score {
        Score::Fixed {
            test: "Connection Pooling",
            measured: f.pooling_efficiency.to_string(),
        }
    }

    fn notes(_f: &RedisPoolFigures) -> Vec<String> {
        vec!["Pool latency is measured from each operation's scheduled instant (every interval), so waiting for a pooled connection counts; the document's figure is only operations / duration.".to_owned()]
    }

    fn render_text(f: &RedisPoolFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Connection Pooling:")?;
                writeln!(w, "    Pool Size: {} per agent × {} agent(s)", f.pool_size, f.agents)?;
                writeln!(
                    w,
                    "    Total Operations: {} in {:.1} s",
                    f.total_operations,
                    f.test_duration_ms / 1000.0
                )?;
                writeln!(w, "    Success Rate: {:.1}%", f.success_rate * 100.0)?;
                writeln!(w, "    Avg Operations/sec: {:.1}", f.avg_operations_per_second)?;
                writeln!(w, "    Pooling Efficiency: {}", f.pooling_efficiency)?;
                writeln!(
                    w,
                    "    ({} failed; latency from schedule p50 {:.2} / p99 {:.2} ms; pool wait p50 {:.3} / p99 {:.3} ms; {} connections opened)",
                    f.failed_operations,
                    f.latency_us.p50 as f64 / 1000.0,
                    f.latency_us.p99 as f64 / 1000.0,
                    f.pool_wait_us.p50 as f64 / 1000.0,
                    f.pool_wait_us.p99 as f64 / 1000.0,
                    f.connections_opened
                )?;
        Ok(())
    }

    fn charts(f: &RedisPoolFigures) -> Vec<Chart> {
        vec![Chart::new(
            "Pooled operation latency",
            vec![
                ("from schedule".to_owned(), f.latency_us),
                ("pool wait".to_owned(), f.pool_wait_us),
            ],
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
    fn the_documents_rate_is_operations_over_the_configured_duration() {
        let mut m = MetricSet::new();
        m.add_counter(n::OPS, 400);
        m.add_counter(n::OK, 380);
        m.add_counter(n::FAILED, 20);
        m.set_gauge(n::DURATION_US, 10e6, GaugeMerge::Max);
        let p = RedisPool { pool_size: 20, interval: Duration::from_millis(50), duration: Duration::from_secs(10) };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 2 });
        assert_eq!(f.avg_operations_per_second, 40.0);
        assert_eq!(f.success_rate, 0.95);
        assert_eq!(f.pooling_efficiency, Rating::Excellent);
        assert_eq!(f.test_duration_ms, 10_000.0);
        // Nothing pooled ran: not rated (it read "Good").
        let f = p.figures(&MetricSet::new(), &FigureCx { criteria: &criteria, agents: 2 });
        assert_eq!(f.pooling_efficiency, Rating::NotRated);
    }
}
