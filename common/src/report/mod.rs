//! The report: the document's `generatePerformanceReport`, computed from merged metric sets.
//!
//! - [`record`]: what the coordinator hands over ([`RunRecord`]);
//! - this module: the output model ([`Report`]) and [`Report::build`], which asks each step's
//!   kind (through [`Figures`]) for its figures, notes and recommendations;
//! - [`criteria`]: one generic loop over the criteria the kinds declare, and the overall rating;
//! - [`text`], [`junit`], [`html`]: renderers of the built report (JSON is serde's; schema in
//!   `schema/report.schema.json`).

pub mod criteria;
pub mod generator;
pub mod html;
pub mod junit;
pub mod record;
pub mod text;

use schemars::JsonSchema;
use serde::Serialize;

pub use self::criteria::{CriterionResult, CriterionStatus, Overall};
pub use self::junit::render_junit;
pub use self::record::{
    AgentRow, AgentStepFigures, Evictions, RunRecord, RunStatus, StepEvictions, StepRecord, TimelineBuilder,
    TimelinePoint,
};
pub use self::text::render_text;
pub use crate::fmt::{group, redact_url};
use crate::workload::FigureCx;
pub use crate::workloads::Figures;

/// Counter prefix an agent records when it could not delete the keys a step wrote
/// (`cleanup_error:<why>`); the report names the step and the reason.
pub const CLEANUP_ERROR: &str = "cleanup_error:";

/// Bumped when a field of the JSON report changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct Report {
    pub schema_version: u32,
    pub plan: String,
    pub plan_hash: String,
    pub run_id: String,
    pub started_unix_ms: i64,
    pub execution_time_s: f64,
    pub status: RunStatus,
    pub target: TargetInfo,
    pub agents: Vec<AgentRow>,
    pub steps: Vec<StepReport>,
    pub leftover_keys: Option<u64>,
    /// Why the keys left could not be counted (the sweep failed): then they are unknown.
    pub sweep_error: Option<String>,
    /// The target Redis's eviction policy and the keys it evicted during each step (`None`:
    /// no step used Redis).
    pub evictions: Option<Evictions>,
    pub criteria: Vec<CriterionResult>,
    pub overall: Overall,
    pub recommendations: Vec<String>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct TargetInfo {
    /// The Redis URL with any password replaced by `***`.
    pub redis_url: Option<String>,
    /// Whether any step of the plan used Redis (a Socket.IO-only plan needs none).
    pub redis_used: bool,
    pub key_prefix: String,
    pub run_prefix: String,
    /// BandSync servers the Socket.IO steps loaded (testbed instances or the plan's).
    pub servers: Vec<String>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct StepReport {
    pub name: String,
    pub kind: String,
    pub agents_sent: Vec<String>,
    pub agents_reported: Vec<String>,
    pub failures: Vec<StepFailure>,
    pub duration_s: f64,
    /// Latest agent start minus earliest, ms (how simultaneously the agents started).
    pub start_spread_ms: Option<f64>,
    /// Operations and errors per second, all agents together.
    pub timeline: Vec<TimelinePoint>,
    /// Each reporting agent's share.
    pub per_agent: Vec<AgentStepFigures>,
    /// Each agent's actual start minus the scheduled instant, ms, in the order they reported.
    pub start_delay_ms: Vec<f64>,
    /// The servers' dialect the step relied on (Socket.IO steps), described.
    pub dialect: Option<String>,
    /// `None` when no agent returned a result.
    pub figures: Option<Figures>,
    /// Whether the agents themselves were late (`None`: they measured nothing).
    pub generator: Option<generator::Generator>,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct StepFailure {
    pub agent: String,
    pub message: String,
}

/// Renders a report in one format.
type Renderer = fn(&Report) -> String;

/// Report files besides the text on stdout.
#[derive(Clone, Debug, Default)]
pub struct ReportFiles {
    pub json: Option<std::path::PathBuf>,
    pub junit: Option<std::path::PathBuf>,
    pub html: Option<std::path::PathBuf>,
}

impl Report {
    /// Computes every figure of the report from what the coordinator recorded.
    pub fn build(record: RunRecord) -> Report {
        let steps: Vec<StepReport> = record.steps.iter().map(|s| step_report(s, &record.criteria)).collect();
        let mut notes = Vec::new();
        for s in &steps {
            if s.agents_reported.len() < s.agents_sent.len() {
                notes.push(format!(
                    "Step `{}`: {} of {} agents returned a result; its figures cover only those.",
                    s.name,
                    s.agents_reported.len(),
                    s.agents_sent.len()
                ));
            }
            if let Some(f) = &s.figures {
                notes.extend(f.notes());
            }
        }
        let mut agents = record.agents;
        let cpu_bound = agent_maxima(&mut agents, &steps);
        let redis_used = record.steps.iter().any(|s| s.step.spec.uses_redis());
        let checks = criteria::RunChecks {
            leftover: record.leftover_keys,
            sweep_error: record.sweep_error.as_deref(),
            evictions: record.evictions.as_ref(),
            redis_used,
        };
        let criteria = criteria::evaluate(&steps, &record.criteria, &checks);
        let complete = matches!(record.status, RunStatus::Complete);
        let (overall, overall_note) = criteria::overall_rating(&steps, &criteria, complete);
        notes.extend(overall_note);
        let mut recommendations = recommendations(&steps);
        for s in &record.steps {
            for (why, agents) in crate::workloads::band::reasons(&s.merged, CLEANUP_ERROR) {
                recommendations.push(format!(
                    "Step `{}`: {agents} agent(s) could not delete the keys they wrote ({why}); the coordinator's sweep counted and deleted what was left (see CLEANUP)",
                    s.step.name
                ));
            }
        }
        recommendations.extend(cpu_bound);
        Report {
            schema_version: SCHEMA_VERSION,
            plan: record.plan_name,
            plan_hash: record.plan_hash,
            run_id: record.run_id.clone(),
            started_unix_ms: record.started_unix_ms,
            execution_time_s: record.execution_time_s,
            status: record.status,
            target: TargetInfo {
                redis_url: record.redis_url.as_deref().map(redact_url),
                redis_used,
                run_prefix: format!("{}:{}:", record.key_prefix, record.run_id),
                key_prefix: record.key_prefix,
                servers: record.servers,
            },
            agents,
            steps,
            leftover_keys: record.leftover_keys,
            sweep_error: record.sweep_error,
            evictions: record.evictions,
            criteria,
            overall,
            recommendations,
            notes,
        }
    }

    /// Exit code for this report: 0 every measured criterion passed, 1 one failed,
    /// 3 the run is incomplete, 130 interrupted.
    /// Writes the report files asked for: JSON, JUnit XML, HTML.
    pub fn write_files(&self, files: &ReportFiles) -> Result<(), String> {
        let outputs: [(&Option<std::path::PathBuf>, Renderer); 3] = [
            (&files.json, |r| {
                serde_json::to_string_pretty(r).expect("report serializes") + "\n"
            }),
            (&files.junit, render_junit),
            (&files.html, html::render_html),
        ];
        for (path, render) in outputs {
            if let Some(path) = path {
                std::fs::write(path, render(self)).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            }
        }
        Ok(())
    }

    pub fn exit_code(&self) -> i32 {
        match self.status {
            RunStatus::Interrupted => 130,
            RunStatus::Incomplete { .. } => 3,
            RunStatus::Complete if self.criteria.iter().any(|c| c.status == CriterionStatus::Fail) => 1,
            RunStatus::Complete => 0,
        }
    }

    pub fn step_figures(&self, kind: &str) -> Option<&Figures> {
        self.steps
            .iter()
            .find(|s| s.kind == kind)
            .and_then(|s| s.figures.as_ref())
    }
}

impl StepReport {
    /// The text report's section this step belongs in.
    pub fn section(&self) -> Option<crate::workload::Section> {
        crate::workloads::section_of(&self.kind)
    }
}

/// An agent above this share of its cores during a step is reported as CPU-bound.
pub const CPU_BOUND_PERCENT: f64 = 90.0;

fn step_report(s: &StepRecord, criteria: &crate::plan::Criteria) -> StepReport {
    let starts = s.agent_starts_unix_ns.iter().map(|(_, t)| *t);
    StepReport {
        name: s.step.name.clone(),
        kind: s.step.spec.kind().to_owned(),
        agents_sent: s.agents_sent.clone(),
        agents_reported: s.agents_reported.clone(),
        failures: s
            .failures
            .iter()
            .map(|(agent, message)| StepFailure {
                agent: agent.clone(),
                message: message.clone(),
            })
            .collect(),
        duration_s: s.duration_s,
        start_spread_ms: match (starts.clone().min(), starts.max()) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
            _ => None,
        },
        timeline: s.timeline.clone(),
        per_agent: s.per_agent.clone(),
        start_delay_ms: s
            .agent_starts_unix_ns
            .iter()
            .map(|(_, t)| (t - s.scheduled_start_unix_ns) as f64 / 1e6)
            .collect(),
        dialect: s.dialect.as_ref().map(crate::dialect::Dialect::describe),
        figures: (!s.agents_reported.is_empty()).then(|| {
            let cx = FigureCx {
                criteria,
                agents: s.agents_reported.len(),
            };
            s.step.spec.figures(&s.merged, &cx)
        }),
        generator: generator::judge(
            &s.merged,
            // CPU over less than a second is too coarse (10 ms ticks) to judge on.
            &s.per_agent
                .iter()
                .filter(|f| f.wall_s.is_some_and(|w| w >= 1.0))
                .filter_map(|f| f.cpu_percent)
                .collect::<Vec<_>>(),
            criteria.generator_lag_limit_ms(),
        ),
    }
}

/// Fills each agent's highest CPU and RSS over the steps; returns a recommendation for every
/// step an agent ran CPU-bound (its latencies then include its own queueing).
fn agent_maxima(agents: &mut [AgentRow], steps: &[StepReport]) -> Vec<String> {
    let mut out = Vec::new();
    for a in agents {
        for s in steps {
            for f in s.per_agent.iter().filter(|f| f.agent == a.agent_id) {
                a.max_cpu_percent = max_opt(a.max_cpu_percent, f.cpu_percent);
                a.max_rss_mb = max_opt(a.max_rss_mb, f.rss_mb);
                if let (Some(cpu), Some(wall)) = (f.cpu_percent, f.wall_s)
                    && cpu >= CPU_BOUND_PERCENT
                    && wall >= 1.0
                {
                    out.push(format!(
                        "Agent {} used {cpu:.0}% of its {} core(s) during step `{}`: its latencies include its own queueing; spread the load over more agents or hosts",
                        a.agent_id, a.cores, s.name
                    ));
                }
            }
        }
    }
    out
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn recommendations(steps: &[StepReport]) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        match &s.figures {
            Some(f) => out.extend(f.recommendations(&s.name)),
            None => out.push(format!("Step `{}` produced no result: see its failures", s.name)),
        }
    }
    out
}
