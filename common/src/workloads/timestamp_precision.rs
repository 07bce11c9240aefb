//! `timestamp_precision` — document 1.1: three timestamps in a row, 1 ms apart, for `duration`.

use crate::workload::Rating;
use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{group, ratio};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};
use crate::workload::{FigureCx, Score, Section, Workload, hist};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    /// Counter: triples of timestamps taken.
    pub const MEASUREMENTS: &str = "measurements";
    /// Counter: triples where diff12 or diff23 is 0 ms.
    pub const ZERO_DIFFS: &str = "zero_diffs";
    /// Counter: triples where both diffs are <= 1 ms.
    pub const SMALL_DIFFS: &str = "small_diffs";
    /// Counter: triples where a diff is > 10 ms.
    pub const LARGE_DIFFS: &str = "large_diffs";
    /// Counter: sum of diff12 + diff23, in ms.
    pub const DIFF_SUM_MS: &str = "diff_sum_ms";
    /// Histogram: gap between two consecutive nanosecond wall-clock reads, in ns.
    pub const READ_GAP_NS: &str = "read_gap_ns";
}
use names as n;

/// Triples for `duration`, at most `max_samples`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimestampPrecision {
    pub duration: Duration,
    pub max_samples: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    duration: Option<Spanned<String>>,
    max_samples: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TimestampPrecisionFigures {
    pub total_measurements: u64,
    pub zero_diffs: u64,
    pub small_diffs: u64,
    pub large_diffs: u64,
    /// The document's rating: High (> 80 % zero diffs), Good (> 90 % ≤ 1 ms), Low.
    pub precision_rating: Rating,
    /// Mean of diff12 and diff23, in ms (the document's `avgDifference`).
    pub avg_difference_ms: f64,
    /// Gap between consecutive nanosecond clock reads: the clock's real resolution.
    pub read_gap_ns: HistSummary,
}

impl Workload for TimestampPrecision {
    const KIND: &'static str = "timestamp_precision";
    const SECTION: Section = Section::Timestamps;
    type Raw = Raw;
    type Figures = TimestampPrecisionFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let duration = cx.duration(&raw.duration, "duration", Duration::from_secs(10))?;
        let max_samples = cx.count(&raw.max_samples, "max_samples", 1_000_000, 1, 100_000_000)?;
        cx.shorter_than_timeout(duration, cx.span_of(&raw.duration), "duration")?;
        Ok(TimestampPrecision { duration, max_samples })
    }

    fn uses_redis(&self) -> bool {
        false
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> TimestampPrecisionFigures {
        let count = m.counter(n::MEASUREMENTS);
        let zero = m.counter(n::ZERO_DIFFS);
        let small = m.counter(n::SMALL_DIFFS);
        let rating = if count > 0 && zero as f64 > count as f64 * 0.8 {
            Rating::High
        } else if count > 0 && small as f64 > count as f64 * 0.9 {
            Rating::Good
        } else {
            Rating::Low
        };
        TimestampPrecisionFigures {
            total_measurements: count,
            zero_diffs: zero,
            small_diffs: small,
            large_diffs: m.counter(n::LARGE_DIFFS),
            precision_rating: rating,
            avg_difference_ms: ratio(m.counter(n::DIFF_SUM_MS), count * 2),
            read_gap_ns: hist(m, n::READ_GAP_NS),
        }
    }

    fn score(f: &TimestampPrecisionFigures) -> Score {
        Score::Points(f.precision_rating.points())
    }

    fn notes(f: &TimestampPrecisionFigures) -> Vec<String> {
        vec![format!(
            "Timestamp precision uses millisecond timestamps as Date.now() does, so 'High' means calls are fast, not that the clock is precise; the clock's real read-to-read gap is p50 {} ns.",
            f.read_gap_ns.p50
        )]
    }

    fn render_text(f: &TimestampPrecisionFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Timestamp Precision:")?;
                writeln!(w, "    Precision Rating: {}", f.precision_rating)?;
                writeln!(w, "    Avg Difference: {:.2}ms", f.avg_difference_ms)?;
                writeln!(
                    w,
                    "    ({} measurements: {} zero, {} <= 1 ms, {} > 10 ms; clock read-to-read gap p50 {} ns, p99 {} ns)",
                    group(f.total_measurements as f64),
                    group(f.zero_diffs as f64),
                    group(f.small_diffs as f64),
                    group(f.large_diffs as f64),
                    f.read_gap_ns.p50,
                    f.read_gap_ns.p99
                )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Criteria;

    #[test]
    fn mostly_zero_diffs_rate_high_and_the_mean_covers_both_diffs() {
        let mut m = MetricSet::new();
        m.add_counter(n::MEASUREMENTS, 100);
        m.add_counter(n::ZERO_DIFFS, 81);
        m.add_counter(n::SMALL_DIFFS, 100);
        m.add_counter(n::DIFF_SUM_MS, 50);
        let p = TimestampPrecision { duration: Duration::from_secs(1), max_samples: 100 };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.precision_rating, Rating::High);
        assert_eq!(f.avg_difference_ms, 0.25);
        m.add_counter(n::MEASUREMENTS, 100);
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.precision_rating, Rating::Low);
        assert_eq!(TimestampPrecision::score(&f), Score::Points(1));
    }
}
