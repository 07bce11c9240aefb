//! `redis_memory` — document 2.1 memory: `sessions` large sessions, `INFO memory` before, at peak,
//! after deleting half and all. Runs on one agent while the others wait.

use crate::workload::Rating;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::fmt::{group, pct, ratio};
use crate::metrics::MetricSet;
use crate::plan::{PlanError, StepCx};
use crate::workload::{Cmp, Combine, CriterionDef, FigureCx, Measure, Score, Section, Source, Unit, Workload};

/// Metric names: `INFO memory` used_memory at each stage, bytes.
pub mod names {
    pub const USED_INITIAL: &str = "used_memory.initial";
    pub const USED_PEAK: &str = "used_memory.peak";
    pub const USED_HALF: &str = "used_memory.after_half";
    pub const USED_FINAL: &str = "used_memory.final";
    /// Counter: sessions written.
    pub const SESSIONS: &str = "sessions";
    pub const ERRORS: &str = "errors";
    /// Counters: `MEMORY USAGE` summed over a sample of keys, and the sample's size.
    pub const SAMPLE_BYTES: &str = "sample.memory_usage_bytes";
    pub const SAMPLE_KEYS: &str = "sample.keys";
    /// Gauge (max): bytes of field values written per session.
    pub const PAYLOAD_BYTES: &str = "payload_bytes";
}
use names as n;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisMemory {
    pub sessions: u64,
    pub members: u32,
    /// Keys whose `MEMORY USAGE` is sampled.
    pub sample: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    sessions: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    sample: Option<Spanned<i64>>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct RedisMemoryFigures {
    pub session_count: u64,
    pub initial_memory_mb: f64,
    pub peak_memory_mb: f64,
    pub cleanup_memory_mb: f64,
    pub final_memory_mb: f64,
    /// (peak − initial) / sessions, from `INFO memory` used_memory (the document's figure).
    pub memory_per_session_bytes: f64,
    /// (peak − final) / (peak − initial), percent.
    pub memory_recovery_percentage: f64,
    /// The document's: Good when peak − initial < sessions × 5,000 bytes.
    pub memory_efficiency: Rating,
    /// Mean `MEMORY USAGE` of a sample of the session keys: the per-key figure without
    /// allocator and bookkeeping noise.
    pub sample_memory_usage_bytes: f64,
    pub sample_keys: u64,
    /// How far the INFO-based figure is from the sampled one, percent of the sampled one.
    pub info_vs_sample_percent: f64,
    pub payload_bytes: u64,
    pub errors: u64,
}

const CRITERIA: &[CriterionDef] = &[
    CriterionDef {
        id: "memory_per_session",
        name: "Memory Usage",
        key: Some("memory_per_session_bytes"),
        default: 5_000.0,
        cmp: Cmp::Lt,
        unit: Unit::Number,
        suffix: " bytes per session",
        target_text: None,
        source: Source::Document,
        rank: 3,
        combine: Combine::Worst,
    },
    CriterionDef {
        id: "memory_recovery",
        name: "Memory recovery after cleanup",
        key: Some("memory_recovery"),
        default: 0.80,
        cmp: Cmp::Gt,
        unit: Unit::Fraction,
        suffix: "",
        target_text: None,
        source: Source::Document,
        rank: 9,
        combine: Combine::Worst,
    },
];

impl Workload for RedisMemory {
    const KIND: &'static str = "redis_memory";
    const SECTION: Section = Section::Redis;
    type Raw = Raw;
    type Figures = RedisMemoryFigures;

    fn validate(raw: Raw, cx: &StepCx<'_>) -> Result<Self, PlanError> {
        let sessions = cx.count(&raw.sessions, "sessions", 1_000, 2, 1_000_000)?;
        let sample = cx.count(&raw.sample, "sample", 50, 1, 100_000)?;
        if sample > sessions {
            return Err(cx.err(
                cx.span_of(&raw.sample),
                "sample",
                format!("{sample} is more than sessions = {sessions}"),
            ));
        }
        Ok(RedisMemory {
            sessions,
            members: cx.count(&raw.members, "members", 8, 1, 1_000)? as u32,
            sample,
        })
    }

    fn redis_bytes(&self, _agents: u32) -> u64 {
        // Measured: 8 members → ~2.2 KB per session hash (used_memory and MEMORY USAGE agree
        // within 3 %); about 200 B a member plus the hash's own overhead.
        self.sessions.saturating_mul(u64::from(self.members) * 200 + 600)
    }

    fn single_agent(&self) -> bool {
        true
    }

    fn figures(&self, m: &MetricSet, _cx: &FigureCx<'_>) -> RedisMemoryFigures {
        let g = |name| m.gauge(name).unwrap_or(0.0);
        let (initial, peak, half, fin) = (g(n::USED_INITIAL), g(n::USED_PEAK), g(n::USED_HALF), g(n::USED_FINAL));
        let sessions = m.counter(n::SESSIONS);
        let grown = peak - initial;
        let per_session = if sessions == 0 { 0.0 } else { grown / sessions as f64 };
        let sample_keys = m.counter(n::SAMPLE_KEYS);
        let sample = ratio(m.counter(n::SAMPLE_BYTES), sample_keys);
        RedisMemoryFigures {
            session_count: sessions,
            initial_memory_mb: initial / 1_048_576.0,
            peak_memory_mb: peak / 1_048_576.0,
            cleanup_memory_mb: half / 1_048_576.0,
            final_memory_mb: fin / 1_048_576.0,
            memory_per_session_bytes: per_session,
            memory_recovery_percentage: if grown > 0.0 { (peak - fin) / grown * 100.0 } else { 0.0 },
            memory_efficiency: if grown < sessions as f64 * 5000.0 {
                Rating::Good
            } else {
                Rating::NeedsOptimization
            },
            sample_memory_usage_bytes: sample,
            sample_keys,
            info_vs_sample_percent: if sample > 0.0 {
                (per_session - sample) / sample * 100.0
            } else {
                0.0
            },
            payload_bytes: g(n::PAYLOAD_BYTES) as u64,
            errors: m.counter(n::ERRORS),
        }
    }

    fn criteria() -> &'static [CriterionDef] {
        CRITERIA
    }

    fn measure(f: &RedisMemoryFigures, id: &str) -> Option<Measure> {
        match id {
            "memory_per_session" => {
                let v = f.memory_per_session_bytes;
                Some(Measure::value(v, format!("{} bytes per session", group(v))))
            }
            "memory_recovery" => {
                let v = f.memory_recovery_percentage / 100.0;
                Some(Measure::value(v, pct(v)))
            }
            _ => None,
        }
    }

    fn score(f: &RedisMemoryFigures) -> Score {
        Score::Fixed {
            test: "Memory Usage",
            measured: f.memory_efficiency.to_string(),
        }
    }

    fn notes(f: &RedisMemoryFigures) -> Vec<String> {
        vec![format!(
            "Memory per session is the document's used_memory difference / sessions ({:.0} B); MEMORY USAGE on {} sampled keys gives {:.0} B per key ({:+.0} %): the difference is allocator and dictionary overhead, and any other client of this Redis.",
            f.memory_per_session_bytes, f.sample_keys, f.sample_memory_usage_bytes, f.info_vs_sample_percent
        )]
    }

    fn render_text(f: &RedisMemoryFigures, _step: &str, w: &mut dyn fmt::Write) -> fmt::Result {
                writeln!(w, "\n  Memory Usage:")?;
                writeln!(
                    w,
                    "    Memory per Session: {:.1}KB",
                    f.memory_per_session_bytes / 1024.0
                )?;
                writeln!(w, "    Memory Recovery: {:.0}%", f.memory_recovery_percentage)?;
                writeln!(w, "    Memory Efficiency: {}", f.memory_efficiency)?;
                writeln!(
                    w,
                    "    ({} sessions; used_memory {:.2} → peak {:.2} → half deleted {:.2} → all deleted {:.2} MB; MEMORY USAGE sample {:.0} B/key over {} keys, INFO figure {:+.0} %)",
                    f.session_count,
                    f.initial_memory_mb,
                    f.peak_memory_mb,
                    f.cleanup_memory_mb,
                    f.final_memory_mb,
                    f.sample_memory_usage_bytes,
                    f.sample_keys,
                    f.info_vs_sample_percent
                )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::GaugeMerge;
    use crate::plan::Criteria;

    #[test]
    fn per_session_is_growth_over_sessions_and_recovery_is_what_came_back() {
        let mut m = MetricSet::new();
        m.set_gauge(n::USED_INITIAL, 1_000_000.0, GaugeMerge::Max);
        m.set_gauge(n::USED_PEAK, 3_000_000.0, GaugeMerge::Max);
        m.set_gauge(n::USED_HALF, 2_000_000.0, GaugeMerge::Max);
        m.set_gauge(n::USED_FINAL, 1_200_000.0, GaugeMerge::Max);
        m.add_counter(n::SESSIONS, 1_000);
        m.add_counter(n::SAMPLE_KEYS, 10);
        m.add_counter(n::SAMPLE_BYTES, 16_000);
        let p = RedisMemory { sessions: 1_000, members: 8, sample: 10 };
        let criteria = Criteria::default();
        let f = p.figures(&m, &FigureCx { criteria: &criteria, agents: 1 });
        assert_eq!(f.memory_per_session_bytes, 2_000.0);
        assert_eq!(f.memory_recovery_percentage, 90.0);
        assert_eq!(f.sample_memory_usage_bytes, 1_600.0);
        assert_eq!(f.info_vs_sample_percent, 25.0);
        assert_eq!(f.memory_efficiency, Rating::Good);
        assert_eq!(
            RedisMemory::measure(&f, "memory_recovery"),
            Some(Measure::value(0.9, "90.00%"))
        );
    }
}
