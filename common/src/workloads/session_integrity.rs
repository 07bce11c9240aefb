//! `session_integrity` — document 2.2: `sessions` (divided over agents) written with an MD5
//! checksum, read back and verified.

use crate::workload::Rating;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{pct, ratio};
use crate::metrics::MetricSet;
use crate::plan::{PlanError, StepCx};
use crate::workload::{Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload};

/// Metric names: the agent records under these, the report reads them.
pub mod names {
    pub const SESSIONS: &str = "sessions";
    pub const WRITTEN: &str = "written";
    pub const READ: &str = "read";
    pub const MATCHES: &str = "matches";
    pub const MISMATCHES: &str = "checksum_mismatches";
    pub const WRITE_ERRORS: &str = "write_errors";
    pub const READ_ERRORS: &str = "read_errors";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionIntegrity {
    /// Sessions in all, divided over the agents.
    pub sessions: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    sessions: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct SessionIntegrityFigures {
    pub total_sessions: u64,
    pub written: u64,
    pub read_successfully: u64,
    pub data_matches: u64,
    pub checksum_mismatches: u64,
    pub errors: u64,
    pub integrity_rate: f64,
    /// The document's: ≥ 99 % Excellent, ≥ 95 % Good, else Poor.
    pub overall_rating: Rating,
}

const CRITERIA: &[CriterionDef] = &[CriterionDef {
    id: "integrity_rate",
    name: "Data integrity rate",
    key: Some("integrity_rate"),
    default: 0.999,
    cmp: Cmp::Gt,
    unit: Unit::Fraction,
    suffix: "",
    target_text: None,
    source: Source::Document,
    rank: 6,
    combine: Combine::Worst,
}];

impl Workload for SessionIntegrity {
    const KIND: &'static str = "session_integrity";
    const SECTION: Section = Section::Persistence;
    type Raw = Raw;
    type Figures = SessionIntegrityFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        Ok(SessionIntegrity {
            sessions: cx.count(&raw.sessions, "sessions", 100, 1, 10_000_000)?,
        })
    }

    fn agent_bytes(&self, agents: u32) -> u64 {
        // The agent keeps its sessions (parsed JSON) to compare what it reads back.
        self.sessions.div_ceil(u64::from(agents.max(1))).saturating_mul(4096)
    }

    fn redis_bytes(&self, _agents: u32) -> u64 {
        // A session of nested, unicode and numeric data: under 2 KiB with the key's overhead.
        self.sessions.saturating_mul(2048)
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> SessionIntegrityFigures {
        let sessions = m.counter(n::SESSIONS);
        let matches = m.counter(n::MATCHES);
        let rate = ratio(matches, sessions);
        SessionIntegrityFigures {
            total_sessions: sessions,
            written: m.counter(n::WRITTEN),
            read_successfully: m.counter(n::READ),
            data_matches: matches,
            checksum_mismatches: m.counter(n::MISMATCHES),
            errors: m.counter(n::WRITE_ERRORS) + m.counter(n::READ_ERRORS),
            integrity_rate: rate,
            overall_rating: if rate >= 0.99 {
                Rating::Excellent
            } else if rate >= 0.95 {
                Rating::Good
            } else {
                Rating::Poor
            }
            .to_owned(),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &SessionIntegrityFigures, _id: &str) -> Option<Measure> {
        Some(Measure::value(f.integrity_rate, pct(f.integrity_rate)))
    }

    fn score(f: &SessionIntegrityFigures) -> Score {
        Score::Fixed {
            test: "Session Data Integrity",
            measured: f.overall_rating.to_string(),
        }
    }

    fn render_text(f: &SessionIntegrityFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Session Data Integrity:")?;
                writeln!(w, "    Total Sessions: {}", f.total_sessions)?;
                writeln!(
                    w,
                    "    Written / Read / Matching: {} / {} / {}",
                    f.written, f.read_successfully, f.data_matches
                )?;
                writeln!(w, "    Integrity Rate: {:.2}%", f.integrity_rate * 100.0)?;
                writeln!(w, "    Overall Rating: {}", f.overall_rating)?;
                if f.checksum_mismatches + f.errors > 0 {
                    writeln!(
                        w,
                        "    ({} checksum mismatches, {} errors)",
                        f.checksum_mismatches, f.errors
                    )?;
                }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Criteria;

    #[test]
    fn the_rate_is_matches_over_sessions() {
        let mut m = MetricSet::new();
        m.add_counter(n::SESSIONS, 100);
        m.add_counter(n::WRITTEN, 100);
        m.add_counter(n::READ, 99);
        m.add_counter(n::MATCHES, 96);
        m.add_counter(n::READ_ERRORS, 1);
        let criteria = Criteria::default();
        let f = SessionIntegrity { sessions: 100 }.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.integrity_rate, 0.96);
        assert_eq!(f.overall_rating, Rating::Good);
        assert_eq!(f.errors, 1);
    }
}
