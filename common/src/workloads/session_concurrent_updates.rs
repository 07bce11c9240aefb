//! `session_concurrent_updates` — document 2.2 concurrent updates: `updaters` (divided over
//! agents) each apply `updates` position += 100 updates to ONE session key shared by every agent.

use crate::workload::Rating;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::ratio;
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{PlanError, StepCx};
use crate::workload::{
    Chart, Cmp, Combine, CriterionDef, FigureCx, Hooks, Measure, ReadBack, Score, Section, Source, Unit, Workload,
    hist,
};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    pub const UPDATERS: &str = "updaters";
    /// Counter: updates attempted (each may take several tries).
    pub const ATTEMPTED: &str = "attempted";
    /// Counter: updates whose EXEC succeeded.
    pub const SUCCEEDED: &str = "succeeded";
    /// Counter: updates that failed with an error or ran out of retries.
    pub const FAILED: &str = "failed";
    /// Counter: EXEC returned nil (another writer got in first) and the update was retried.
    pub const RETRIES: &str = "retries";
    /// Histogram: one update, all its tries included, µs.
    pub const LATENCY_US: &str = "update.latency_us";
    /// Gauges the coordinator adds after the step, from the shared key: final position and version.
    pub const FINAL_POSITION: &str = "final.position";
    pub const FINAL_VERSION: &str = "final.version";
    /// Gauge (max): the position the key started at.
    pub const INITIAL_POSITION: &str = "initial.position";
    /// The shared key, after the run prefix `{prefix}:{run_id}:`.
    pub const SHARED_KEY_SUFFIX: &str = "concurrent-update";

    /// The session key every agent's updaters share, under the run prefix `{prefix}:{run_id}:`.
    pub fn shared_key(run_base: &str) -> String {
        format!("{run_base}{SHARED_KEY_SUFFIX}")
    }
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionConcurrentUpdates {
    /// Updaters in all, divided over the agents.
    pub updaters: u64,
    /// Updates per updater.
    pub updates: u64,
    pub members: u32,
    pub locking: Locking,
    pub max_retries: u64,
}

/// How `session_concurrent_updates` protects its read-modify-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Locking {
    /// Optimistic locking: WATCH, read, MULTI…EXEC, retry when EXEC returns nil, on a
    /// connection the updater owns.
    Watch,
    /// The document's code: read, then MULTI…EXEC without WATCH. It loses updates.
    None,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    updaters: Option<Spanned<i64>>,
    updates: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    locking: Option<Spanned<String>>,
    max_retries: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SessionUpdatesFigures {
    pub locking: Locking,
    pub concurrent_updates: u64,
    pub updaters: u64,
    pub successful_updates: u64,
    pub failed_updates: u64,
    pub retries: u64,
    pub success_rate: f64,
    /// Read back by the coordinator after every agent finished; `None` if it could not be read.
    pub final_version: Option<u64>,
    pub final_position: Option<i64>,
    /// successes × 100 + the starting position.
    pub expected_position: i64,
    /// expected − final position, in updates of 100.
    pub lost_updates: Option<i64>,
    /// The document's: "Perfect" when the final position is successes × 100.
    pub data_consistency: String,
    /// The document's: Good when ≥ 90 % of the updates succeeded.
    pub overall_rating: Rating,
    pub latency_us: HistSummary,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "lost_updates",
    name: "Lost updates (WATCH locking)",
    key: None,
    default: 0.0,
    cmp: Cmp::Eq,
    unit: Unit::Plain,
    suffix: "",
    target_text: None,
    source: Source::Suite,
    rank: 11,
    combine: Combine::Worst,
}];

impl Workload for SessionConcurrentUpdates {
    const KIND: &'static str = "session_concurrent_updates";
    const SECTION: Section = Section::Persistence;
    type Raw = Raw;
    type Figures = SessionUpdatesFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        Ok(SessionConcurrentUpdates {
            updaters: cx.count(&raw.updaters, "updaters", 50, 1, 10_000)?,
            updates: cx.count(&raw.updates, "updates", 1, 1, 1_000_000)?,
            members: cx.count(&raw.members, "members", 4, 1, 1_000)? as u32,
            locking: cx.choice(
                &raw.locking,
                "locking",
                Locking::Watch,
                &[("watch", Locking::Watch), ("none", Locking::None)],
            )?,
            max_retries: cx.count(&raw.max_retries, "max_retries", 1_000, 0, 1_000_000)?,
        })
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            read_back: Some(ReadBack {
                key_suffix: n::SHARED_KEY_SUFFIX,
                position_gauge: n::FINAL_POSITION,
                version_gauge: n::FINAL_VERSION,
            }),
            ..Hooks::default()
        }
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> SessionUpdatesFigures {
        let attempted = m.counter(n::ATTEMPTED);
        let ok = m.counter(n::SUCCEEDED);
        let initial = m.gauge(n::INITIAL_POSITION).unwrap_or(0.0) as i64;
        let expected = initial + ok as i64 * 100;
        let final_position = m.gauge(n::FINAL_POSITION).map(|v| v as i64);
        let lost = final_position.map(|f| (expected - f) / 100);
        SessionUpdatesFigures {
            locking: self.locking,
            concurrent_updates: attempted,
            updaters: m.counter(n::UPDATERS),
            successful_updates: ok,
            failed_updates: m.counter(n::FAILED),
            retries: m.counter(n::RETRIES),
            success_rate: ratio(ok, attempted),
            final_version: m.gauge(n::FINAL_VERSION).map(|v| v as u64),
            final_position,
            expected_position: expected,
            lost_updates: lost,
            data_consistency: match final_position {
                Some(f) if f == expected => "Perfect",
                Some(_) => "Some Updates Lost",
                None => "Not verified",
            }
            .to_owned(),
            overall_rating: if attempted > 0 && ok as f64 >= attempted as f64 * 0.9 {
                Rating::Good
            } else {
                Rating::NeedsImprovement
            }
            .to_owned(),
            latency_us: hist(m, n::LATENCY_US),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    /// Lost updates under real optimistic locking must be zero (`none` loses them by design).
    fn measure(f: &SessionUpdatesFigures, _id: &str) -> Option<Measure> {
        match (f.locking, f.lost_updates) {
            (Locking::None, _) => None,
            (Locking::Watch, None) => Some(Measure::Failed("not verified".to_owned())),
            (Locking::Watch, Some(lost)) => Some(Measure::value(lost as f64, lost.to_string())),
        }
    }

    fn score(f: &SessionUpdatesFigures) -> Score {
        Score::Fixed {
            test: "Concurrent Session Updates",
            measured: format!("{}, {}", f.overall_rating, f.data_consistency),
        }
    }

    fn notes(f: &SessionUpdatesFigures) -> Vec<String> {
        vec![match f.locking {
            Locking::Watch => format!(
                "Concurrent updates use real optimistic locking (WATCH, read, MULTI…EXEC, retry on nil) on a connection each updater owns; the document's code never WATCHes, so its MULTI protects nothing. {} retries were needed.",
                f.retries
            ),
            Locking::None => "Concurrent updates ran the document's code (MULTI…EXEC without WATCH) on purpose: its 'successes' include updates that other writers overwrote.".to_owned(),
        }]
    }

    fn recommendations(f: &SessionUpdatesFigures, _step: &str) -> Vec<String> {
        match f.lost_updates {
            Some(lost) if lost > 0 => vec![match f.locking {
                Locking::Watch => {
                    format!("{lost} session updates were lost despite WATCH: check how the session key is written")
                }
                Locking::None => format!(
                    "{lost} session updates were lost without WATCH: write sessions compare-and-set on their version"
                ),
            }],
            _ => Vec::new(),
        }
    }

    fn render_text(f: &SessionUpdatesFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                let locking = match f.locking {
                    Locking::Watch => "WATCH/MULTI/EXEC",
                    Locking::None => "none: the document's MULTI without WATCH",
                };
                writeln!(w, "\n  Concurrent Session Updates (locking: {locking}):")?;
                writeln!(
                    w,
                    "    Concurrent Updates: {} from {} updaters",
                    f.concurrent_updates, f.updaters
                )?;
                writeln!(
                    w,
                    "    Successful / Failed: {} / {} ({} retries)",
                    f.successful_updates, f.failed_updates, f.retries
                )?;
                writeln!(w, "    Success Rate: {:.1}%", f.success_rate * 100.0)?;
                let opt = |v: Option<String>| v.unwrap_or_else(|| "not read".into());
                writeln!(w, "    Final Version: {}", opt(f.final_version.map(|v| v.to_string())))?;
                writeln!(
                    w,
                    "    Final Position: {} (expected {})",
                    opt(f.final_position.map(|v| v.to_string())),
                    f.expected_position
                )?;
                writeln!(
                    w,
                    "    Data Consistency: {} (lost updates: {})",
                    f.data_consistency,
                    opt(f.lost_updates.map(|v| v.to_string()))
                )?;
                writeln!(w, "    Overall Rating: {}", f.overall_rating)?;
        Ok(())
    }

    fn charts(f: &SessionUpdatesFigures) -> Vec<Chart> {
        vec![Chart::new(
            "Session update latency (retries included)",
            vec![("update".into(), f.latency_us)],
            1e-3,
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    fn figures(locking: Locking, final_position: Option<f64>) -> SessionUpdatesFigures {
        let mut m = MetricSet::new();
        m.add_counter(n::ATTEMPTED, 10);
        m.add_counter(n::SUCCEEDED, 10);
        m.set_gauge(n::INITIAL_POSITION, 500.0, GaugeMerge::Max);
        if let Some(p) = final_position {
            m.set_gauge(n::FINAL_POSITION, p, GaugeMerge::Max);
        }
        let p = SessionConcurrentUpdates { updaters: 10, updates: 1, members: 4, locking, max_retries: 5 };
        let criteria = Criteria::default();
        p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 })
    }

    #[test]
    fn lost_updates_are_the_gap_to_the_expected_position() {
        let f = figures(Locking::Watch, Some(1_500.0));
        assert_eq!((f.expected_position, f.lost_updates), (1_500, Some(0)));
        assert_eq!(f.data_consistency, "Perfect");
        let f = figures(Locking::Watch, Some(1_200.0));
        assert_eq!(f.lost_updates, Some(3));
        assert_eq!(SessionConcurrentUpdates::measure(&f, "lost_updates"), Some(Measure::value(3.0, "3")));
        let f = figures(Locking::Watch, None);
        assert_eq!(
            SessionConcurrentUpdates::measure(&f, "lost_updates"),
            Some(Measure::Failed("not verified".into()))
        );
        // The document's locking loses updates by design: outside the criterion.
        let f = figures(Locking::None, Some(1_200.0));
        assert_eq!(SessionConcurrentUpdates::measure(&f, "lost_updates"), None);
    }
}
