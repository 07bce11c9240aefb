//! What a step kind is: the [`Workload`] trait every kind implements once, in its own module
//! under [`crate::workloads`], and the small types it speaks in.
//!
//! A kind owns its raw plan table and validated parameters, the metric names its agent side
//! records, the figures computed from the merged metrics, its success criteria (declared as data
//! and evaluated by one generic loop, [`crate::report::criteria`]), its share of the document's
//! score, its notes and recommendations, its text section and its charts. The report, the plan
//! and the wire only ever go through the trait, so adding a kind touches no other module.

use std::fmt;

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::fmt::{group, pct};
use crate::metrics::{HistSummary, MetricSet};
use crate::plan::{Criteria, FaultMode, PlanError, StepCx};

/// One step kind. `Self` is the kind's validated parameters.
pub trait Workload: Sized + Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned {
    /// The name a plan's `kind = "…"` uses.
    const KIND: &'static str;
    /// Where the text report places the kind's section.
    const SECTION: Section;
    /// The kind's `[[steps]]` table (without `name`, `kind` and `timeout`), as serde reads it:
    /// `#[serde(deny_unknown_fields)]`, values wrapped in `toml::Spanned` for located errors.
    type Raw: DeserializeOwned;
    /// The figures the report shows, computed from the merged metrics.
    type Figures: Clone + fmt::Debug + Serialize + JsonSchema;

    /// Checks the raw table and fills in defaults.
    fn validate(raw: Self::Raw, cx: &StepCx<'_>) -> Result<Self, PlanError>;

    /// Parameters as received from the wire: a coordinator of this protocol version produced
    /// them by [`Workload::validate`]; a kind clamps here what its agent side divides by.
    fn clamped(self) -> Self {
        self
    }

    /// Does the step talk to the target's Redis?
    fn uses_redis(&self) -> bool {
        true
    }
    /// Does the step load the target's BandSync servers (Socket.IO)?
    fn uses_servers(&self) -> bool {
        false
    }
    /// Does the step run on one agent while the others wait (concurrent load would spoil it)?
    fn single_agent(&self) -> bool {
        false
    }
    /// What the coordinator does around the step.
    fn hooks(&self) -> Hooks {
        Hooks::default()
    }
    /// Whether the servers' dialect supports what this step needs; the reason (naming the
    /// missing capability) when not: the step is then refused before loading.
    fn requires(&self, _dialect: &crate::dialect::Dialect) -> Result<(), String> {
        Ok(())
    }
    /// About how many bytes the step holds in the target Redis at its peak, all `agents`
    /// together (0: negligible); checked against the room Redis has before the step loads.
    fn redis_bytes(&self, _agents: u32) -> u64 {
        0
    }
    /// About how many bytes one of `agents` agents holds in its own memory for its share (0:
    /// negligible); an agent refuses a step whose share exceeds its memory budget.
    fn agent_bytes(&self, _agents: u32) -> u64 {
        0
    }
    /// Whether `agents` agents can hold this step within their budget (members per agent); the
    /// reason when not: the step is then refused before loading.
    fn fits(&self, _agents: u32) -> Result<(), String> {
        Ok(())
    }
    /// The dialect this step found the servers to speak (the conformance probe), from its merged
    /// metrics; later Socket.IO steps then rely on it.
    fn concluded(&self, _m: &MetricSet) -> Option<crate::dialect::Dialect> {
        None
    }

    /// Parameters with which the plan runs this kind on its own, before its first Socket.IO
    /// step, when the plan has no step of this kind and `[run] probe` is on (the probe).
    fn auto() -> Option<Self> {
        None
    }

    fn figures(&self, m: &MetricSet, cx: &FigureCx<'_>) -> Self::Figures;

    /// The success criteria this kind measures.
    fn criteria() -> &'static [CriterionDef] {
        &[]
    }
    /// This step's measurement for criterion `id` (one of [`Workload::criteria`]); `None` when
    /// the step does not count for it.
    fn measure(_f: &Self::Figures, _id: &str) -> Option<Measure> {
        None
    }
    /// The step's share of the document's overall score.
    fn score(f: &Self::Figures) -> Score;
    /// Where this suite measures differently from the document, for the report's notes.
    fn notes(_f: &Self::Figures) -> Vec<String> {
        Vec::new()
    }
    fn recommendations(_f: &Self::Figures, _step: &str) -> Vec<String> {
        Vec::new()
    }
    /// The step's part of its text section.
    fn render_text(f: &Self::Figures, step: &str, w: &mut dyn fmt::Write) -> fmt::Result;
    /// Latency percentile charts for the HTML report.
    fn charts(_f: &Self::Figures) -> Vec<Chart> {
        Vec::new()
    }
    /// Intended vs achieved rate over time, for an open-model step (empty otherwise).
    fn rates(_f: &Self::Figures) -> Vec<crate::workloads::arrival::RatePoint> {
        Vec::new()
    }
}

/// The text report's sections, in the order it prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// What the servers under test do (the conformance probe): first, as the rest relies on it.
    Protocol,
    Timestamps,
    Redis,
    Persistence,
    Failover,
    Sync,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Protocol,
        Section::Timestamps,
        Section::Redis,
        Section::Persistence,
        Section::Failover,
        Section::Sync,
    ];

    pub fn heading(self) -> &'static str {
        match self {
            Section::Protocol => "🔌 PROTOCOL CONFORMANCE:",
            Section::Timestamps => "⏱️ TIMESTAMP PERFORMANCE SUMMARY:",
            Section::Redis => "💾 REDIS PERFORMANCE SUMMARY:",
            Section::Persistence => "🔐 PERSISTENCE SUMMARY:",
            Section::Failover => "🛡️ FAILOVER SUMMARY:",
            Section::Sync => "🎼 CROSS-INSTANCE SYNC:",
        }
    }

    /// The document always prints its timestamp and Redis summaries; the others only when a
    /// step of theirs ran.
    pub fn always_shown(self) -> bool {
        matches!(self, Section::Timestamps | Section::Redis)
    }
}

/// A step's share of the document's `calculateOverallRating` (3 points a test at most).
#[derive(Clone, Debug, PartialEq)]
pub enum Score {
    /// Points out of 3 from what was measured.
    Points(u32),
    /// The document gives this test a fixed 2 of 3 whatever was measured; `test` and `measured`
    /// say what the fixed rule hides.
    Fixed { test: &'static str, measured: String },
    /// Not a test of the document: outside its score.
    Outside,
}

/// How a measurement compares with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Gt,
    Ge,
    Lt,
    Eq,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => "≥",
            Cmp::Lt => "<",
            Cmp::Eq => "=",
        }
    }

    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt => value > threshold,
            Cmp::Ge => value >= threshold,
            Cmp::Lt => value < threshold,
            Cmp::Eq => value == threshold,
        }
    }

    /// Is `a` further from passing than `b`?
    pub fn worse(self, a: f64, b: f64, threshold: f64) -> bool {
        match self {
            Cmp::Gt | Cmp::Ge => a < b,
            Cmp::Lt => a > b,
            Cmp::Eq => (a - threshold).abs() > (b - threshold).abs(),
        }
    }
}

/// How a threshold is written in the criterion's target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// `100,000`; the plan's value must be positive.
    Number,
    /// `95.00%`; the plan's value must be a fraction in (0, 1].
    Fraction,
    /// As written: `50`; the plan's value must be positive.
    Plain,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Number => group(v),
            Unit::Fraction => pct(v),
            Unit::Plain => format!("{v}"),
        }
    }
}

/// Who set the criterion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The document's Success Criteria.
    Document,
    /// This suite's own.
    Suite,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Document => "document",
            Source::Suite => "suite",
        }
    }
}

/// How the measurements of several steps make one verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// The worst step's measurement decides; a [`Measure::Failed`] step fails the criterion.
    Worst,
    /// Every step must pass its [`Measure::Check`]; shown as "k of n {what}".
    AllOf(&'static str),
}

/// A success criterion, declared as data (k6's thresholds are the model).
#[derive(Clone, Copy, Debug)]
pub struct CriterionDef {
    /// Stable id in the JSON report.
    pub id: &'static str,
    pub name: &'static str,
    /// The plan's `[criteria]` key that overrides [`CriterionDef::default`]; `None` when fixed.
    pub key: Option<&'static str>,
    pub default: f64,
    pub cmp: Cmp,
    pub unit: Unit,
    /// Written after the threshold in the target: `" ops/s"`.
    pub suffix: &'static str,
    /// A target stated in words instead of a threshold.
    pub target_text: Option<&'static str>,
    pub source: Source,
    /// Position in the report's criteria list (the document's order, then the suite's).
    pub rank: u8,
    pub combine: Combine,
}

impl CriterionDef {
    pub fn target(&self, threshold: f64) -> String {
        match self.target_text {
            Some(t) => t.to_owned(),
            None => format!("{} {}{}", self.cmp.symbol(), self.unit.show(threshold), self.suffix),
        }
    }
}

/// One step's measurement for a criterion.
#[derive(Clone, Debug, PartialEq)]
pub enum Measure {
    /// A figure, compared with the threshold; `shown` is how the report writes it.
    Value { value: f64, shown: String },
    /// Measured, and failed whatever the threshold: the reason.
    Failed(String),
    /// Passed or not, for [`Combine::AllOf`] criteria.
    Check(bool),
}

impl Measure {
    pub fn value(value: f64, shown: impl Into<String>) -> Measure {
        Measure::Value {
            value,
            shown: shown.into(),
        }
    }
}

/// What the report knows when it computes a step's figures.
#[derive(Clone, Copy, Debug)]
pub struct FigureCx<'a> {
    pub criteria: &'a Criteria,
    /// Agents that returned a result.
    pub agents: usize,
}

/// Work the coordinator does around a step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    /// A fault to inject while the agents load.
    pub fault: Option<FaultPlan>,
    /// A session hash every agent updated, read back after the step.
    pub read_back: Option<ReadBack>,
}

/// A real Redis fault, injected by the coordinator at the step's start + `warmup`.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    pub mode: FaultMode,
    pub warmup: std::time::Duration,
    pub duration: std::time::Duration,
    pub persist: bool,
    /// Gauges (coordinator µs) the coordinator sets when the fault began and ended.
    pub begin_gauge: &'static str,
    pub end_gauge: &'static str,
}

/// After the step the coordinator reads the session hash `{run prefix}{key_suffix}` (fields
/// `data` with a JSON `position`, and `version`) into two gauges, then deletes it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadBack {
    pub key_suffix: &'static str,
    pub position_gauge: &'static str,
    pub version_gauge: &'static str,
}

/// A latency percentile chart: named series of summaries, in units of `unit_to_ms` ms.
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub series: Vec<(String, HistSummary)>,
    pub unit_to_ms: f64,
}

impl Chart {
    pub fn new(title: &str, series: Vec<(String, HistSummary)>, unit_to_ms: f64) -> Chart {
        Chart {
            title: title.to_owned(),
            series,
            unit_to_ms,
        }
    }
}

/// The summary of histogram `name`, empty when absent.
pub fn hist(m: &MetricSet, name: &str) -> HistSummary {
    m.histogram(name).map(HistSummary::of).unwrap_or_default()
}

/// `count` over the span between a min-merged start gauge and a max-merged end gauge (µs).
pub fn wall_rate(m: &MetricSet, start: &str, end: &str, count: u64) -> f64 {
    match (m.gauge(start), m.gauge(end)) {
        (Some(s), Some(e)) if e > s => count as f64 / ((e - s) / 1e6),
        _ => 0.0,
    }
}

/// The document's ratings, every word it uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Rating {
    Excellent,
    High,
    Good,
    Acceptable,
    #[serde(rename = "Needs Improvement")]
    NeedsImprovement,
    #[serde(rename = "Needs Optimization")]
    NeedsOptimization,
    Low,
    Poor,
    /// Nothing to rate (e.g. no timestamps to compare).
    #[default]
    #[serde(rename = "Not rated")]
    NotRated,
}

impl Rating {
    /// The document's points: 3 for its top rating, 2 for Good, 1 otherwise.
    pub fn points(self) -> u32 {
        match self {
            Rating::Excellent | Rating::High => 3,
            Rating::Good => 2,
            _ => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Rating::Excellent => "Excellent",
            Rating::High => "High",
            Rating::Good => "Good",
            Rating::Acceptable => "Acceptable",
            Rating::NeedsImprovement => "Needs Improvement",
            Rating::NeedsOptimization => "Needs Optimization",
            Rating::Low => "Low",
            Rating::Poor => "Poor",
            Rating::NotRated => "Not rated",
        }
    }
}

impl fmt::Display for Rating {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}
