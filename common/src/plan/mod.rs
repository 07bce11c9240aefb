//! The plan file: TOML parsed into raw types that refuse unknown fields, then validated into the
//! checked [`Plan`] the rest of the code uses. Every error names the file, line, column and field.
//!
//! ```toml
//! name = "quickstart"
//! [target]
//! redis_url = "redis://127.0.0.1:6379"   # omit when [testbed] redis = true
//! key_prefix = "bandsync-test"           # keys live under {key_prefix}:{run_id}:
//! [run]
//! agents = 2                             # agents to wait for
//! [[steps]]
//! kind = "…"                             # one of STEP_KINDS; its parameters follow
//! ```
//!
//! Plan-level tables live here; each `[[steps]]` table is handed to its kind's
//! [`crate::workload::Workload::validate`] through [`StepCx`] (`step.rs`).

mod duration;
mod location;
pub(crate) mod step;
mod urls;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

pub use self::duration::{fmt_duration, parse_duration};
pub use self::location::line_col;
use self::location::{field_path_at, located};
pub use self::step::StepCx;
pub use self::urls::{check_redis_url, check_server_url};
use crate::workload::{CriterionDef, Unit};
pub use crate::workloads::{KINDS as STEP_KINDS, StepSpec};

/// The checked plan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub target: Target,
    pub run: RunOptions,
    pub testbed: Option<Testbed>,
    pub criteria: Criteria,
    /// Faults the plan allows (`[faults] allow`): they affect every client of the target Redis.
    pub faults: Vec<FaultMode>,
    pub steps: Vec<Step>,
    /// FNV-1a of the plan's source text, sent to agents so a run can be identified.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// `None` only when the testbed starts the Redis (and fills it in).
    pub redis_url: Option<String>,
    pub key_prefix: String,
    /// BandSync servers (Socket.IO, `http://host:port`) the Socket.IO steps load; filled in by the
    /// testbed when it starts them.
    pub servers: Vec<String>,
    /// `[target] protocol`: the servers' dialect, or `None` to take what the conformance probe
    /// concludes (the default, "detect").
    pub protocol: Option<crate::dialect::Protocol>,
    /// `[target.dialect]`: per-field overrides on top of the dialect.
    pub dialect: crate::dialect::Overrides,
    /// `[target] allow_eviction`: run against a Redis whose `maxmemory-policy` can evict keys
    /// that are not the run's (evictions are still counted, and FAIL the run).
    pub allow_eviction: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunOptions {
    /// How many agents to wait for before starting (the CLI's `--agents` overrides it).
    pub agents: Option<u32>,
    /// How long to wait for them.
    pub agent_wait: Duration,
    /// Default limit for one step; a step's own `timeout` overrides it.
    pub step_timeout: Duration,
    /// What a lost agent does to the run.
    pub on_agent_loss: AgentLoss,
    /// `[run] probe`: run the conformance probe briefly before the first Socket.IO step when the
    /// plan has no conformance step (`Workload::auto`) of its own (default true).
    pub probe: bool,
}

/// What the run does when an agent is lost mid-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentLoss {
    /// Finish the step and run the next ones with the remaining agents (the report says so).
    Continue,
    /// Abort the step on every agent and end the run.
    Stop,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Testbed {
    /// Agent processes the coordinator starts on this machine.
    pub local_agents: u32,
    /// Start a private `redis-server` on a free loopback port and use it as the target.
    pub redis: bool,
    /// `bandsync-server` instances to start on loopback, sharing the target Redis (default 2
    /// with the testbed's own Redis, else 0).
    pub servers: u32,
}

/// Success-criteria thresholds the plan sets (`[criteria]`); every other criterion keeps the
/// default its kind declares (the document's).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Criteria {
    overrides: BTreeMap<String, f64>,
    /// `generator_lag_p99_ms`: an agent lagging more is a limited generator.
    generator_lag_ms: Option<f64>,
}

/// The `[criteria]` key of the load generator's own lag limit, ms.
pub const GENERATOR_LAG_KEY: &str = "generator_lag_p99_ms";

impl Criteria {
    /// The threshold of `def` in this plan.
    pub fn threshold(&self, def: &CriterionDef) -> f64 {
        def.key
            .and_then(|k| self.overrides.get(k).copied())
            .unwrap_or(def.default)
    }

    /// The lag p99 (ms) past which an agent is a limited load generator.
    pub fn generator_lag_limit_ms(&self) -> f64 {
        self.generator_lag_ms
            .unwrap_or(crate::report::generator::DEFAULT_LAG_LIMIT_MS)
    }

    /// Sets the plan key `key` (one of the declared criteria's keys).
    pub fn set(&mut self, key: &str, value: f64) {
        self.overrides.insert(key.to_owned(), value);
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub timeout: Duration,
    pub spec: StepSpec,
}

/// A real Redis fault (`redis_failover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// `CLIENT PAUSE <duration> ALL`: Redis stops answering for `duration`.
    Pause,
    /// `CLIENT KILL TYPE normal` and `TYPE pubsub`: every connection dropped at once.
    KillClients,
    /// The testbed's redis-server stopped (SIGKILL), kept down `duration`, started again.
    Restart,
}

impl FaultMode {
    pub const ALL: [FaultMode; 3] = [FaultMode::Pause, FaultMode::KillClients, FaultMode::Restart];

    pub fn name(self) -> &'static str {
        match self {
            FaultMode::Pause => "pause",
            FaultMode::KillClients => "kill_clients",
            FaultMode::Restart => "restart",
        }
    }

    pub fn parse(s: &str) -> Option<FaultMode> {
        FaultMode::ALL.into_iter().find(|m| m.name() == s)
    }
}

/// How a total is divided over `count` shards: the first `total % count` shards get one more
/// (50 over 4 = 13 + 13 + 12 + 12).
pub fn shard_of(total: u64, index: u32, count: u32) -> u64 {
    if count == 0 {
        return 0;
    }
    let (count, index) = (u64::from(count), u64::from(index));
    total / count + u64::from(index < total % count)
}

/// A plan error: where, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.field, self.message
        )
    }
}

impl std::error::Error for PlanError {}

/// Reads and validates a plan file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    load_with(path, false)
}

/// [`load`], for a run whose Redis comes from the command line (`--redis-url`): then the
/// plan's Redis steps need no `redis_url` of their own.
pub fn load_with(path: &Path, redis_given: bool) -> Result<Plan, PlanError> {
    let file = path.display().to_string();
    let source = crate::files::read_text(path, crate::files::PLAN_LIMIT).map_err(|e| PlanError {
        file: file.clone(),
        line: 0,
        column: 0,
        field: "(file)".into(),
        message: format!("cannot read the plan: {e}"),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into());
    let loc = Loc {
        source: &source,
        file: &file,
        redis_given,
    };
    loc.parse(&stem)
}

/// Parses and validates plan text. `file` is used in messages; `default_name` names an unnamed plan.
pub fn parse(source: &str, file: &str, default_name: &str) -> Result<Plan, PlanError> {
    Loc {
        source,
        file,
        redis_given: false,
    }
    .parse(default_name)
}

impl Loc<'_> {
    fn parse(&self, default_name: &str) -> Result<Plan, PlanError> {
        let (loc, source) = (self, self.source);
        let mut doc = DeTable::parse(source).map_err(|e| loc.toml_error(&e))?;
        // `[[steps]]` tables are read by their kinds, each with its own raw type.
        let steps = doc.get_mut().remove("steps");
        let raw = RawPlan::deserialize(toml::de::Deserializer::from(doc)).map_err(|e| loc.toml_error(&e))?;
        loc.plan(raw, steps, default_name)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw types: what serde reads. Unknown fields are refused; values keep their spans.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    name: Option<Spanned<String>>,
    description: Option<String>,
    target: Option<Spanned<RawTarget>>,
    run: Option<RawRun>,
    testbed: Option<Spanned<RawTestbed>>,
    criteria: Option<BTreeMap<Spanned<String>, Spanned<f64>>>,
    faults: Option<RawFaults>,
    /// Taken out of the document before serde runs (each kind reads its own); named here so an
    /// unknown top-level key's message lists it.
    #[allow(dead_code)]
    steps: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    redis_url: Option<Spanned<String>>,
    key_prefix: Option<Spanned<String>>,
    servers: Option<Spanned<Vec<Spanned<String>>>>,
    protocol: Option<Spanned<String>>,
    dialect: Option<Spanned<crate::dialect::Overrides>>,
    allow_eviction: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    agents: Option<Spanned<i64>>,
    agent_wait: Option<Spanned<String>>,
    step_timeout: Option<Spanned<String>>,
    on_agent_loss: Option<Spanned<String>>,
    probe: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestbed {
    local_agents: Option<Spanned<i64>>,
    redis: Option<bool>,
    servers: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Where errors point: the plan's text and its file name.
#[derive(Clone, Copy)]
pub(crate) struct Loc<'a> {
    pub(crate) source: &'a str,
    pub(crate) file: &'a str,
    /// The run's Redis comes from the command line: Redis steps need no `redis_url`.
    pub(crate) redis_given: bool,
}

impl Loc<'_> {
    pub(crate) fn err(
        &self,
        span: std::ops::Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PlanError {
        located(self.source, self.file, span, field.into(), message.into())
    }

    /// A TOML syntax or serde error, named by the key on its line.
    pub(crate) fn toml_error(&self, e: &toml::de::Error) -> PlanError {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_owned();
        let field = field_path_at(self.source, span.start);
        located(self.source, self.file, span, field, message)
    }

    fn plan(&self, raw: RawPlan, steps: Option<Spanned<DeValue<'_>>>, default_name: &str) -> Result<Plan, PlanError> {
        let name = match raw.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                    return Err(self.err(
                        n.span(),
                        "name",
                        "must be 1 to 128 characters, none of them a control character",
                    ));
                }
                v.to_owned()
            }
            None => default_name.to_owned(),
        };
        let testbed = self.testbed(raw.testbed)?;
        let testbed_redis = testbed.as_ref().is_some_and(|t| t.redis);
        let testbed_servers = testbed.as_ref().map_or(0, |t| t.servers);
        let target_given = raw.target.is_some();
        let (target, target_span) = self.target(raw.target, testbed_redis, testbed_servers)?;
        let run = self.run(raw.run)?;
        let criteria = self.criteria(raw.criteria)?;

        let Some(steps_raw) = steps else {
            return Err(self.err(0..0, "steps", "the plan has no steps: add at least one [[steps]] table"));
        };
        let steps_span = steps_raw.span();
        let steps_raw = match steps_raw.into_inner() {
            DeValue::Array(a) if !a.is_empty() => a,
            DeValue::Array(_) => {
                return Err(self.err(
                    steps_span,
                    "steps",
                    "the plan has no steps: add at least one [[steps]] table",
                ));
            }
            other => {
                return Err(self.err(
                    steps_span,
                    "steps",
                    format!(
                        "invalid type: {}, expected an array of [[steps]] tables",
                        other.type_str()
                    ),
                ));
            }
        };
        let faults = self.faults(raw.faults)?;
        let mut steps: Vec<Step> = Vec::with_capacity(steps_raw.len());
        let mut names: HashSet<String> = HashSet::new();
        let mut next_suffix: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, s) in steps_raw.into_iter().enumerate() {
            let (step, explicit) = step::parse(self, i, s, run.step_timeout, &faults)?;
            let name = match explicit {
                Some((n, nspan)) => {
                    if n.is_empty() || n.len() > 64 || n.chars().any(char::is_control) {
                        return Err(self.err(
                            nspan,
                            format!("steps[{i}].name"),
                            "must be 1 to 64 characters, none of them a control character",
                        ));
                    }
                    if !names.insert(n.clone()) {
                        return Err(self.err(
                            nspan,
                            format!("steps[{i}].name"),
                            format!("duplicate step name `{n}`: step names must be unique"),
                        ));
                    }
                    n
                }
                None => {
                    // Each kind's next free suffix is remembered: naming n unnamed steps of
                    // one kind costs O(n), not O(n²).
                    let base = step.spec.kind();
                    let k = next_suffix.entry(base).or_insert(1);
                    let mut n = if *k == 1 {
                        base.to_owned()
                    } else {
                        format!("{base}-{k}")
                    };
                    while names.contains(&n) {
                        *k += 1;
                        n = format!("{base}-{k}");
                    }
                    *k += 1;
                    names.insert(n.clone());
                    n
                }
            };
            steps.push(Step { name, ..step });
        }
        if run.probe {
            insert_probes(&mut steps, &mut names, run.step_timeout);
        }
        if target.redis_url.is_none()
            && !testbed_redis
            && !self.redis_given
            && let Some(step) = steps.iter().find(|s| s.spec.uses_redis())
        {
            let what = if target_given { "target.redis_url" } else { "target" };
            return Err(self.err(
                target_span,
                what,
                format!(
                    "missing: step `{}` uses Redis; set [target] redis_url = \"redis://HOST:PORT\", or let the testbed start a Redis with [testbed] redis = true",
                    step.name
                ),
            ));
        }

        Ok(Plan {
            name,
            description: raw.description,
            target,
            run,
            testbed,
            criteria,
            faults,
            steps,
            hash: format!("{:016x}", fnv1a(self.source.as_bytes())),
        })
    }

    fn testbed(&self, raw: Option<Spanned<RawTestbed>>) -> Result<Option<Testbed>, PlanError> {
        let Some(tb) = raw else { return Ok(None) };
        let span = tb.span();
        let tb = tb.into_inner();
        let local_agents = match tb.local_agents {
            Some(n) => self.count(&n, "testbed.local_agents", 0, 64)? as u32,
            None => 2,
        };
        let redis = tb.redis.unwrap_or(true);
        let servers = match tb.servers {
            Some(n) => self.count(&n, "testbed.servers", 0, 8)? as u32,
            // Two instances on the testbed's own Redis: a cross-instance target by default.
            None if redis => 2,
            None => 0,
        };
        if local_agents == 0 && !redis && servers == 0 {
            return Err(self.err(
                span,
                "testbed",
                "starts nothing: set local_agents > 0, redis = true or servers > 0",
            ));
        }
        Ok(Some(Testbed {
            local_agents,
            redis,
            servers,
        }))
    }

    fn run(&self, raw: Option<RawRun>) -> Result<RunOptions, PlanError> {
        let Some(r) = raw else {
            return Ok(RunOptions {
                agents: None,
                agent_wait: Duration::from_secs(60),
                step_timeout: Duration::from_secs(300),
                on_agent_loss: AgentLoss::Continue,
                probe: true,
            });
        };
        Ok(RunOptions {
            agents: match r.agents {
                Some(a) => Some(self.count(&a, "run.agents", 1, 10_000)? as u32),
                None => None,
            },
            agent_wait: self.duration_or(r.agent_wait.as_ref(), "run.agent_wait", Duration::from_secs(60))?,
            step_timeout: self.duration_or(r.step_timeout.as_ref(), "run.step_timeout", Duration::from_secs(300))?,
            on_agent_loss: match &r.on_agent_loss {
                None => AgentLoss::Continue,
                Some(v) => match v.get_ref().as_str() {
                    "continue" => AgentLoss::Continue,
                    "stop" => AgentLoss::Stop,
                    other => {
                        return Err(self.err(
                            v.span(),
                            "run.on_agent_loss",
                            format!("`{other}` is not one of continue, stop"),
                        ));
                    }
                },
            },
            probe: r.probe.unwrap_or(true),
        })
    }

    /// `[criteria]`: each key one that a kind declares; fractions for rates, positive numbers else.
    fn criteria(&self, raw: Option<BTreeMap<Spanned<String>, Spanned<f64>>>) -> Result<Criteria, PlanError> {
        let mut criteria = Criteria::default();
        let defs = crate::workloads::criteria();
        for (key, v) in raw.into_iter().flatten() {
            let k = key.get_ref().as_str();
            let field = format!("criteria.{k}");
            if k == GENERATOR_LAG_KEY {
                criteria.generator_lag_ms = Some(self.positive(&v, &field)?);
                continue;
            }
            let Some(def) = defs.iter().find(|d| d.key == Some(k)) else {
                let keys: Vec<String> = defs
                    .iter()
                    .filter_map(|d| d.key)
                    .chain([GENERATOR_LAG_KEY])
                    .map(|k| format!("`{k}`"))
                    .collect();
                return Err(self.err(
                    key.span(),
                    field,
                    format!("unknown field `{k}`, expected one of {}", keys.join(", ")),
                ));
            };
            let value = match def.unit {
                Unit::Fraction => self.fraction(&v, &field)?,
                Unit::Number | Unit::Plain => self.positive(&v, &field)?,
            };
            criteria.set(k, value);
        }
        Ok(criteria)
    }

    fn faults(&self, raw: Option<RawFaults>) -> Result<Vec<FaultMode>, PlanError> {
        let mut faults = Vec::new();
        if let Some(list) = raw.and_then(|f| f.allow) {
            for m in list.get_ref() {
                match FaultMode::parse(m.get_ref()) {
                    Some(mode) if !faults.contains(&mode) => faults.push(mode),
                    Some(_) => {}
                    None => {
                        return Err(self.err(
                            m.span(),
                            "faults.allow",
                            format!(
                                "unknown fault `{}`: expected pause, kill_clients or restart",
                                m.get_ref()
                            ),
                        ));
                    }
                }
            }
        }
        Ok(faults)
    }

    fn target(
        &self,
        raw: Option<Spanned<RawTarget>>,
        testbed_redis: bool,
        testbed_servers: u32,
    ) -> Result<(Target, std::ops::Range<usize>), PlanError> {
        let (span, raw) = match raw {
            Some(t) => (t.span(), Some(t.into_inner())),
            None => (0..0, None),
        };
        let key_prefix = match raw.as_ref().and_then(|t| t.key_prefix.as_ref()) {
            Some(p) => {
                let v = p.get_ref();
                let ok = !v.is_empty()
                    && v.len() <= 64
                    && v.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !ok {
                    return Err(self.err(p.span(), "target.key_prefix", format!(
                        "`{v}` is not a valid prefix: use 1 to 64 of A-Z a-z 0-9 - _ . (it becomes part of SCAN patterns)"
                    )));
                }
                v.clone()
            }
            None => "bandsync-test".to_owned(),
        };
        let redis_url = match raw.as_ref().and_then(|t| t.redis_url.as_ref()) {
            Some(u) if testbed_redis => {
                return Err(self.err(
                    u.span(),
                    "target.redis_url",
                    format!(
                        "`{}` conflicts with [testbed] redis = true, which starts its own Redis: remove one of them",
                        crate::fmt::redact_url(u.get_ref())
                    ),
                ));
            }
            Some(u) => Some(self.redis_url(u)?),
            None if testbed_redis => None,
            // Needed only when a step uses Redis: checked once the steps are known.
            None => None,
        };
        let mut servers = Vec::new();
        if let Some(list) = raw.as_ref().and_then(|t| t.servers.as_ref()) {
            if testbed_servers > 0 {
                return Err(self.err(
                    list.span(),
                    "target.servers",
                    format!("conflicts with the {testbed_servers} servers [testbed] starts: set [testbed] servers = 0, or remove target.servers"),
                ));
            }
            if list.get_ref().len() > 64 {
                return Err(self.err(list.span(), "target.servers", "at most 64 server URLs"));
            }
            for (i, u) in list.get_ref().iter().enumerate() {
                check_server_url(u.get_ref()).map_err(|why| self.err(u.span(), format!("target.servers[{i}]"), why))?;
                servers.push(u.get_ref().trim_end_matches('/').to_owned());
            }
        }
        let protocol = match raw.as_ref().and_then(|t| t.protocol.as_ref()) {
            None => None,
            Some(p) => match p.get_ref().as_str() {
                "detect" => None,
                "bandsync" => Some(crate::dialect::Protocol::Bandsync),
                "bandsync-legacy" => Some(crate::dialect::Protocol::BandsyncLegacy),
                other => {
                    return Err(self.err(
                        p.span(),
                        "target.protocol",
                        format!("`{other}` is not one of detect, bandsync, bandsync-legacy"),
                    ));
                }
            },
        };
        let allow_eviction = raw.as_ref().and_then(|t| t.allow_eviction).unwrap_or(false);
        let dialect = match raw.and_then(|t| t.dialect) {
            None => crate::dialect::Overrides::default(),
            Some(d) => {
                let span = d.span();
                let d = d.into_inner();
                if let Some(t) = d.default_tempo
                    && !(t > 0.0 && t <= 1_000.0)
                {
                    return Err(self.err(
                        span,
                        "target.dialect.default_tempo",
                        format!("must be in (0, 1000], got {t}"),
                    ));
                }
                if let Some(cmds) = &d.commands
                    && let Some(bad) = cmds
                        .iter()
                        .find(|c| !crate::dialect::SCRIPT_COMMANDS.contains(&c.as_str()))
                {
                    return Err(self.err(
                        span,
                        "target.dialect.commands",
                        format!(
                            "`{bad}` is not a script command: use some of {}",
                            crate::dialect::SCRIPT_COMMANDS.join(", ")
                        ),
                    ));
                }
                d
            }
        };
        Ok((
            Target {
                redis_url,
                key_prefix,
                servers,
                protocol,
                dialect,
                allow_eviction,
            },
            span,
        ))
    }

    fn redis_url(&self, u: &Spanned<String>) -> Result<String, PlanError> {
        check_redis_url(u.get_ref()).map_err(|why| self.err(u.span(), "target.redis_url", why))?;
        Ok(u.get_ref().clone())
    }

    pub(crate) fn count(&self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Result<u64, PlanError> {
        let x = *v.get_ref();
        if x < min || x > max {
            return Err(self.err(v.span(), field, format!("must be between {min} and {max}, got {x}")));
        }
        Ok(x as u64)
    }

    pub(crate) fn fraction(&self, v: &Spanned<f64>, field: &str) -> Result<f64, PlanError> {
        let x = *v.get_ref();
        if !(x.is_finite() && x > 0.0 && x <= 1.0) {
            return Err(self.err(
                v.span(),
                field,
                format!("must be a fraction in (0, 1], got {x} (write 0.95 for 95 %)"),
            ));
        }
        Ok(x)
    }

    pub(crate) fn positive(&self, v: &Spanned<f64>, field: &str) -> Result<f64, PlanError> {
        let x = *v.get_ref();
        if !(x.is_finite() && x > 0.0) {
            return Err(self.err(v.span(), field, format!("must be a positive number, got {x}")));
        }
        Ok(x)
    }

    pub(crate) fn duration_or(
        &self,
        v: Option<&Spanned<String>>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, PlanError> {
        match v {
            None => Ok(default),
            Some(v) => match parse_duration(v.get_ref()) {
                Ok(d) if d.is_zero() => Err(self.err(v.span(), field, "must be longer than zero")),
                Ok(d) if d > Duration::from_secs(24 * 3600) => Err(self.err(v.span(), field, "must be at most 24h")),
                Ok(d) => Ok(d),
                Err(why) => Err(self.err(v.span(), field, why)),
            },
        }
    }
}

/// Inserts the probe steps ([`crate::workloads::auto_steps`]) the plan does not run itself
/// before its first Socket.IO step, named by their kind (made unique).
fn insert_probes(steps: &mut Vec<Step>, names: &mut HashSet<String>, timeout: Duration) {
    let Some(first) = steps.iter().position(|s| s.spec.uses_servers()) else {
        return;
    };
    for spec in crate::workloads::auto_steps().into_iter().rev() {
        if steps.iter().any(|s| s.spec.kind() == spec.kind()) {
            continue;
        }
        let mut name = spec.kind().to_owned();
        let mut k = 2;
        while names.contains(&name) {
            name = format!("{}-{k}", spec.kind());
            k += 1;
        }
        names.insert(name.clone());
        steps.insert(first, Step { name, timeout, spec });
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_like_the_design_says() {
        let v: Vec<u64> = (0..4).map(|i| shard_of(50, i, 4)).collect();
        assert_eq!(v, [13, 13, 12, 12]);
        assert_eq!((0..3).map(|i| shard_of(2, i, 3)).sum::<u64>(), 2);
        assert_eq!(shard_of(10, 0, 0), 0);
    }
}
