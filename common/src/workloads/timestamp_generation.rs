//! `timestamp_generation` — document 1.1: timestamps generated in batches; timestamps/s and
//! monotonicity over every consecutive pair (the document checks only five per batch).

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{group, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};
use crate::workload::{Chart, Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload, hist};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    /// Counter: timestamps generated.
    pub const TIMESTAMPS: &str = "timestamps";
    /// Counter: batches timed.
    pub const BATCHES: &str = "batches";
    /// Counter: consecutive pairs compared (every pair, not the document's first five per batch).
    pub const COMPARISONS: &str = "comparisons";
    /// Counter: a timestamp smaller than the one before.
    pub const BACKWARDS: &str = "backwards";
    /// Counter: more than 1,000 ms between consecutive calls.
    pub const JUMPS: &str = "jumps_over_1s";
    /// Gauge (sum): sum over batches of the batch's timestamps/s (average = sum / batches).
    pub const RATE_SUM: &str = "rate_sum";
    /// Gauge (min): slowest batch's timestamps/s.
    pub const RATE_MIN: &str = "rate_min";
    /// Gauge (max): fastest batch's timestamps/s.
    pub const RATE_MAX: &str = "rate_max";
    /// Histogram: one batch's duration, in ns.
    pub const BATCH_NS: &str = "batch_duration_ns";
}
use names as n;

/// `iterations` timestamps in batches of `batch_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampGeneration {
    pub iterations: u64,
    pub batch_size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    iterations: Option<Spanned<i64>>,
    batch_size: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TimestampGenerationFigures {
    pub total_iterations: u64,
    pub batch_count: u64,
    /// Mean over batches of each batch's timestamps/s (the document's `avgTimestampsPerSecond`).
    pub avg_timestamps_per_second: f64,
    pub min_timestamps_per_second: f64,
    pub max_timestamps_per_second: f64,
    /// avg > the criterion's threshold (the document's `performanceTarget`, default 100,000/s).
    pub performance_target: bool,
    pub comparisons: u64,
    pub backwards: u64,
    pub jumps_over_1s: u64,
    pub inconsistencies: u64,
    /// 1 − inconsistencies / comparisons, over every consecutive pair.
    pub consistency_rate: f64,
    pub batch_duration_ns: HistSummary,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "timestamp_generation",
    name: "Timestamp Generation",
    key: Some("timestamps_per_second"),
    default: 100_000.0,
    cmp: Cmp::Gt,
    unit: Unit::Number,
    suffix: " timestamps/s",
    target_text: None,
    source: Source::Document,
    rank: 1,
    combine: Combine::Worst,
}];

impl Workload for TimestampGeneration {
    const KIND: &'static str = "timestamp_generation";
    const SECTION: Section = Section::Timestamps;
    type Raw = Raw;
    type Figures = TimestampGenerationFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let iterations = cx.count(&raw.iterations, "iterations", 100_000, 1, 1_000_000_000)?;
        let batch_size = cx.count(&raw.batch_size, "batch_size", 1_000, 1, 10_000_000)?;
        if iterations % batch_size != 0 {
            return Err(cx.err(
                cx.span_of(&raw.batch_size),
                "batch_size",
                format!("{batch_size} does not divide iterations = {iterations}"),
            ));
        }
        Ok(TimestampGeneration { iterations, batch_size })
    }

    fn clamped(self) -> Self {
        TimestampGeneration {
            batch_size: self.batch_size.max(1),
            ..self
        }
    }

    fn uses_redis(&self) -> bool {
        false
    }

    fn figures(&self, m: &MetricSet, cx: &FigureCx<'_>) -> TimestampGenerationFigures {
        let batches = m.counter(n::BATCHES);
        let avg = if batches == 0 {
            0.0
        } else {
            m.gauge(n::RATE_SUM).unwrap_or(0.0) / batches as f64
        };
        let comparisons = m.counter(n::COMPARISONS);
        let backwards = m.counter(n::BACKWARDS);
        let jumps = m.counter(n::JUMPS);
        let inconsistencies = backwards + jumps;
        TimestampGenerationFigures {
            total_iterations: m.counter(n::TIMESTAMPS),
            batch_count: batches,
            avg_timestamps_per_second: avg,
            min_timestamps_per_second: m.gauge(n::RATE_MIN).unwrap_or(0.0),
            max_timestamps_per_second: m.gauge(n::RATE_MAX).unwrap_or(0.0),
            performance_target: avg > cx.criteria.threshold(&CRITERIA[0]),
            comparisons,
            backwards,
            jumps_over_1s: jumps,
            inconsistencies,
            consistency_rate: if comparisons == 0 {
                0.0
            } else {
                1.0 - ratio(inconsistencies, comparisons)
            },
            batch_duration_ns: hist(m, n::BATCH_NS),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &TimestampGenerationFigures, _id: &str) -> Option<Measure> {
        let v = f.avg_timestamps_per_second;
        Some(Measure::value(v, format!("{} timestamps/s", group(v))))
    }

    fn score(f: &TimestampGenerationFigures) -> Score {
        Score::Points(if f.performance_target { 3 } else { 1 })
    }

    fn notes(f: &TimestampGenerationFigures) -> Vec<String> {
        vec![format!(
            "Timestamp consistency checks every consecutive pair ({} comparisons); the document checks only the first 5 timestamps of each batch ({} comparisons).",
            f.comparisons,
            f.batch_count * 4
        )]
    }

    fn recommendations(f: &TimestampGenerationFigures, _step: &str) -> Vec<String> {
        if f.performance_target {
            Vec::new()
        } else {
            vec!["Optimize timestamp generation for better performance".to_owned()]
        }
    }

    fn render_text(f: &TimestampGenerationFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Timestamp Generation Performance:")?;
                writeln!(w, "    Avg Timestamps/sec: {}", group(f.avg_timestamps_per_second))?;
                writeln!(w, "    Consistency Rate: {:.1}%", f.consistency_rate * 100.0)?;
                writeln!(
                    w,
                    "    Performance: {}",
                    if f.performance_target {
                        "✅ Excellent"
                    } else {
                        "⚠️ Needs Improvement"
                    }
                )?;
                writeln!(
                    w,
                    "    (min {} / max {} per batch; {} timestamps in {} batches; {} backwards, {} jumps > 1 s)",
                    group(f.min_timestamps_per_second),
                    group(f.max_timestamps_per_second),
                    group(f.total_iterations as f64),
                    group(f.batch_count as f64),
                    f.backwards,
                    f.jumps_over_1s
                )?;
        Ok(())
    }

    fn charts(f: &TimestampGenerationFigures) -> Vec<Chart> {
        vec![Chart::new(
            "Timestamp batch duration",
            vec![("batch".into(), f.batch_duration_ns)],
            1e-6,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn the_average_is_over_batches_and_every_pair_is_checked() {
        let mut m = MetricSet::new();
        m.add_counter(n::TIMESTAMPS, 2_000);
        m.add_counter(n::BATCHES, 2);
        m.add_counter(n::COMPARISONS, 1_998);
        m.add_counter(n::BACKWARDS, 1);
        m.add_counter(n::JUMPS, 1);
        m.set_gauge(n::RATE_SUM, 300_000.0, GaugeMerge::Sum);
        let params = TimestampGeneration { iterations: 2_000, batch_size: 1_000 };
        let criteria = Criteria::default();
        let f = params.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.avg_timestamps_per_second, 150_000.0);
        assert!(f.performance_target);
        assert_eq!(f.inconsistencies, 2);
        assert!((f.consistency_rate - (1.0 - 2.0 / 1998.0)).abs() < 1e-12);
        assert_eq!(TimestampGeneration::score(&f), Score::Points(3));
        let mut strict = Criteria::default();
        strict.set("timestamps_per_second", 200_000.0);
        let f = params.figures(&m, &FigureCx { criteria: &strict, agents: 1 });
        assert!(!f.performance_target);
        assert_eq!(TimestampGeneration::score(&f), Score::Points(1));
    }
}
