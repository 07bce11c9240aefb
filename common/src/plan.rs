//! The plan file: TOML parsed into a raw type that refuses unknown fields, then validated into the
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
//! kind = "redis_basic_ops"
//! iterations = 1000
//! ```

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// Every step kind this version knows, in the order the document runs them.
pub const STEP_KINDS: &[&str] = &[
    "timestamp_generation",
    "timestamp_precision",
    "redis_basic_ops",
    "redis_concurrent",
    "redis_memory",
    "session_integrity",
    "session_concurrent_updates",
    "redis_pool",
    "event_consistency",
    "session_sync",
    "redis_failover",
];

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

/// Success-criteria thresholds; defaults are the document's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Criteria {
    /// Timestamp Generation: > 100,000 timestamps/second.
    pub timestamps_per_second: f64,
    /// Redis Basic Ops: > 10,000 operations/second.
    pub redis_ops_per_second: f64,
    /// Memory Usage: < 5 KB per session (bytes).
    pub memory_per_session_bytes: f64,
    /// Concurrent Operations: > 95 % success rate.
    pub concurrent_success_rate: f64,
    /// Data integrity rate: > 99.9 %.
    pub integrity_rate: f64,
    /// Memory recovery: > 80 % after cleanup.
    pub memory_recovery: f64,
    /// Connection stability (pool success rate): > 95 %.
    pub pool_success_rate: f64,
    /// Timestamp consistency (event ordering): > 99 % ordering accuracy.
    pub timestamp_ordering_rate: f64,
    /// Session sync: p99 propagation of a leader's change to every member < 50 ms.
    pub sync_propagation_p99_ms: f64,
    /// Session sync: p99 beat-phase spread across a session's members < 50 ms.
    pub beat_phase_spread_p99_ms: f64,
    /// Session sync: members ending in the leader's final state ≥ 100 %.
    pub sync_convergence: f64,
}

impl Default for Criteria {
    fn default() -> Self {
        Self {
            timestamps_per_second: 100_000.0,
            redis_ops_per_second: 10_000.0,
            memory_per_session_bytes: 5_000.0,
            concurrent_success_rate: 0.95,
            integrity_rate: 0.999,
            memory_recovery: 0.80,
            pool_success_rate: 0.95,
            timestamp_ordering_rate: 0.99,
            sync_propagation_p99_ms: 50.0,
            beat_phase_spread_p99_ms: 50.0,
            sync_convergence: 1.0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub name: String,
    pub timeout: Duration,
    pub spec: StepSpec,
}

/// What a step does, with its checked parameters.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepSpec {
    /// Document 1.1: timestamps generated in batches; timestamps/s and monotonicity.
    TimestampGeneration { iterations: u64, batch_size: u64 },
    /// Document 1.1: three timestamps in a row, 1 ms apart, for `duration`.
    TimestampPrecision { duration: Duration, max_samples: u64 },
    /// Document 2.1: SET/GET/HSET/HGET/DEL of the session JSON, `iterations` of each per agent,
    /// split over `clients` concurrent clients with a connection each (the document: 1).
    RedisBasicOps {
        iterations: u64,
        members: u32,
        clients: u32,
    },
    /// Document 2.1 concurrent: `clients` (divided over agents) × `operations` composite
    /// HSET / HGET + parse / HSET operations.
    RedisConcurrent {
        clients: u64,
        operations: u64,
        members: u32,
        connections: Connections,
    },
    /// Document 2.1 memory: `sessions` large sessions, `INFO memory` before, at peak, after
    /// deleting half and all. Runs on one agent while the others wait.
    RedisMemory { sessions: u64, members: u32, sample: u64 },
    /// Document 2.2 integrity: `sessions` (divided over agents) written with an MD5 checksum,
    /// read back and verified.
    SessionIntegrity { sessions: u64 },
    /// Document 2.2 concurrent updates: `updaters` (divided over agents) each apply `updates`
    /// position += 100 updates to ONE session key shared by every agent.
    SessionConcurrentUpdates {
        updaters: u64,
        updates: u64,
        members: u32,
        locking: Locking,
        max_retries: u64,
    },
    /// Document 3.1 pooling: a pool of `pool_size` connections on every agent, one random
    /// operation every `interval` for `duration`.
    RedisPool {
        pool_size: u32,
        interval: Duration,
        duration: Duration,
    },
    /// Document 1.2: `clients` (divided over agents), each in its own session, send the
    /// document's event sequence `interval` apart, then listen for `settle`; snapshot and tick
    /// timestamps are checked for order and against an estimated server clock offset.
    EventConsistency {
        clients: u64,
        interval: Duration,
        settle: Duration,
    },
    /// Beyond the document: `sessions` × `members` members placed round-robin over the agents
    /// and the target's server instances; each session's leader runs `changes` scripted changes
    /// (tempo, play, seek, pause) `interval` apart after a `ramp_up`; every member measures
    /// propagation, convergence, ticks and beat phase. `settle` is the listening time after the
    /// last change.
    SessionSync {
        sessions: u64,
        members: u32,
        changes: u32,
        interval: Duration,
        ramp_up: Duration,
        settle: Duration,
    },
    /// Document 3.1, made real: load for `warmup`, then the coordinator injects `mode` for
    /// `duration` while every agent keeps `clients` Redis clients, a pool and Socket.IO members
    /// (`sessions` × `members`, playing) busy, then `recovery` more of load. `keys` written
    /// before the fault are read after it; `persist` (restart only) saves before stopping.
    RedisFailover {
        mode: FaultMode,
        warmup: Duration,
        duration: Duration,
        recovery: Duration,
        clients: u32,
        keys: u64,
        persist: bool,
        sessions: u64,
        members: u32,
    },
}

/// A real Redis fault (`redis_failover`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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

/// How `redis_concurrent` clients reach Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Connections {
    /// All clients of an agent share one multiplexed connection, as the document's single
    /// ioredis client does (commands of different clients pipeline on it).
    Shared,
    /// Each client has its own connection.
    PerClient,
}

/// How `session_concurrent_updates` protects its read-modify-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Locking {
    /// Optimistic locking: WATCH, read, MULTI…EXEC, retry when EXEC returns nil, on a
    /// connection the updater owns.
    Watch,
    /// The document's code: read, then MULTI…EXEC without WATCH. It loses updates.
    None,
}

impl StepSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            StepSpec::TimestampGeneration { .. } => "timestamp_generation",
            StepSpec::TimestampPrecision { .. } => "timestamp_precision",
            StepSpec::RedisBasicOps { .. } => "redis_basic_ops",
            StepSpec::RedisConcurrent { .. } => "redis_concurrent",
            StepSpec::RedisMemory { .. } => "redis_memory",
            StepSpec::SessionIntegrity { .. } => "session_integrity",
            StepSpec::SessionConcurrentUpdates { .. } => "session_concurrent_updates",
            StepSpec::RedisPool { .. } => "redis_pool",
            StepSpec::EventConsistency { .. } => "event_consistency",
            StepSpec::SessionSync { .. } => "session_sync",
            StepSpec::RedisFailover { .. } => "redis_failover",
        }
    }

    /// Does this step load BandSync servers (Socket.IO)?
    pub fn uses_servers(&self) -> bool {
        matches!(self, StepSpec::EventConsistency { .. } | StepSpec::SessionSync { .. })
            || matches!(self, StepSpec::RedisFailover { sessions, .. } if *sessions > 0)
    }

    /// Steps that run on one agent while the others wait (concurrent load would spoil the figure).
    pub fn single_agent(&self) -> bool {
        matches!(self, StepSpec::RedisMemory { .. })
    }

    /// Does this step talk to Redis?
    pub fn uses_redis(&self) -> bool {
        !matches!(
            self,
            StepSpec::TimestampGeneration { .. }
                | StepSpec::TimestampPrecision { .. }
                | StepSpec::EventConsistency { .. }
                | StepSpec::SessionSync { .. }
        )
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
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| PlanError {
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
    parse(&source, &file, &stem)
}

/// Parses and validates plan text. `file` is used in messages; `default_name` names an unnamed plan.
pub fn parse(source: &str, file: &str, default_name: &str) -> Result<Plan, PlanError> {
    let raw: RawPlan = toml::from_str(source).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_owned();
        let field = field_path_at(source, span.start);
        located(source, file, span, field, message)
    })?;
    Validator { source, file }.plan(raw, default_name)
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
    criteria: Option<RawCriteria>,
    faults: Option<RawFaults>,
    steps: Option<Spanned<Vec<Spanned<RawStep>>>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    agents: Option<Spanned<i64>>,
    agent_wait: Option<Spanned<String>>,
    step_timeout: Option<Spanned<String>>,
    on_agent_loss: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTestbed {
    local_agents: Option<Spanned<i64>>,
    redis: Option<bool>,
    servers: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCriteria {
    timestamps_per_second: Option<Spanned<f64>>,
    redis_ops_per_second: Option<Spanned<f64>>,
    memory_per_session_bytes: Option<Spanned<f64>>,
    concurrent_success_rate: Option<Spanned<f64>>,
    integrity_rate: Option<Spanned<f64>>,
    memory_recovery: Option<Spanned<f64>>,
    pool_success_rate: Option<Spanned<f64>>,
    timestamp_ordering_rate: Option<Spanned<f64>>,
    sync_propagation_p99_ms: Option<Spanned<f64>>,
    beat_phase_spread_p99_ms: Option<Spanned<f64>>,
    sync_convergence: Option<Spanned<f64>>,
}

/// Every parameter any step kind takes; validation checks which ones a kind accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Option<Spanned<String>>,
    kind: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    iterations: Option<Spanned<i64>>,
    batch_size: Option<Spanned<i64>>,
    duration: Option<Spanned<String>>,
    max_samples: Option<Spanned<i64>>,
    members: Option<Spanned<i64>>,
    clients: Option<Spanned<i64>>,
    operations: Option<Spanned<i64>>,
    connections: Option<Spanned<String>>,
    sessions: Option<Spanned<i64>>,
    sample: Option<Spanned<i64>>,
    updaters: Option<Spanned<i64>>,
    updates: Option<Spanned<i64>>,
    locking: Option<Spanned<String>>,
    max_retries: Option<Spanned<i64>>,
    pool_size: Option<Spanned<i64>>,
    interval: Option<Spanned<String>>,
    settle: Option<Spanned<String>>,
    changes: Option<Spanned<i64>>,
    ramp_up: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    warmup: Option<Spanned<String>>,
    recovery: Option<Spanned<String>>,
    keys: Option<Spanned<i64>>,
    persist: Option<Spanned<bool>>,
}

impl RawStep {
    /// (field name, span) of every parameter present, for "not used by this kind" errors.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut v = Vec::new();
        macro_rules! p {
            ($($f:ident),*) => {$( if let Some(x) = &self.$f { v.push((stringify!($f), x.span())); } )*};
        }
        p!(
            iterations,
            batch_size,
            duration,
            max_samples,
            members,
            clients,
            operations,
            connections,
            sessions,
            sample,
            updaters,
            updates,
            locking,
            max_retries,
            pool_size,
            interval,
            settle,
            changes,
            ramp_up,
            mode,
            warmup,
            recovery,
            keys,
            persist
        );
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Validator<'a> {
    source: &'a str,
    file: &'a str,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> PlanError {
        located(self.source, self.file, span, field.into(), message.into())
    }

    fn plan(&self, raw: RawPlan, default_name: &str) -> Result<Plan, PlanError> {
        let name = match raw.name {
            Some(n) => {
                let v = n.get_ref().trim();
                if v.is_empty() || v.len() > 128 {
                    return Err(self.err(n.span(), "name", "must be 1 to 128 characters"));
                }
                v.to_owned()
            }
            None => default_name.to_owned(),
        };

        let testbed = match raw.testbed {
            Some(tb) => {
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
                Some(Testbed {
                    local_agents,
                    redis,
                    servers,
                })
            }
            None => None,
        };
        let testbed_redis = testbed.as_ref().is_some_and(|t| t.redis);

        let testbed_servers = testbed.as_ref().map_or(0, |t| t.servers);
        let target = self.target(raw.target, testbed_redis, testbed_servers)?;

        let run = match raw.run {
            Some(r) => RunOptions {
                agents: match r.agents {
                    Some(a) => Some(self.count(&a, "run.agents", 1, 10_000)? as u32),
                    None => None,
                },
                agent_wait: self.duration_or(r.agent_wait, "run.agent_wait", Duration::from_secs(60))?,
                step_timeout: self.duration_or(r.step_timeout, "run.step_timeout", Duration::from_secs(300))?,
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
            },
            None => RunOptions {
                agents: None,
                agent_wait: Duration::from_secs(60),
                step_timeout: Duration::from_secs(300),
                on_agent_loss: AgentLoss::Continue,
            },
        };

        let mut criteria = Criteria::default();
        if let Some(c) = raw.criteria {
            if let Some(v) = c.timestamps_per_second {
                criteria.timestamps_per_second = self.positive(&v, "criteria.timestamps_per_second")?;
            }
            if let Some(v) = c.redis_ops_per_second {
                criteria.redis_ops_per_second = self.positive(&v, "criteria.redis_ops_per_second")?;
            }
            if let Some(v) = c.memory_per_session_bytes {
                criteria.memory_per_session_bytes = self.positive(&v, "criteria.memory_per_session_bytes")?;
            }
            if let Some(v) = c.sync_propagation_p99_ms {
                criteria.sync_propagation_p99_ms = self.positive(&v, "criteria.sync_propagation_p99_ms")?;
            }
            if let Some(v) = c.beat_phase_spread_p99_ms {
                criteria.beat_phase_spread_p99_ms = self.positive(&v, "criteria.beat_phase_spread_p99_ms")?;
            }
            for (raw, slot, name) in [
                (
                    c.concurrent_success_rate,
                    &mut criteria.concurrent_success_rate,
                    "criteria.concurrent_success_rate",
                ),
                (
                    c.integrity_rate,
                    &mut criteria.integrity_rate,
                    "criteria.integrity_rate",
                ),
                (
                    c.memory_recovery,
                    &mut criteria.memory_recovery,
                    "criteria.memory_recovery",
                ),
                (
                    c.pool_success_rate,
                    &mut criteria.pool_success_rate,
                    "criteria.pool_success_rate",
                ),
                (
                    c.timestamp_ordering_rate,
                    &mut criteria.timestamp_ordering_rate,
                    "criteria.timestamp_ordering_rate",
                ),
                (
                    c.sync_convergence,
                    &mut criteria.sync_convergence,
                    "criteria.sync_convergence",
                ),
            ] {
                if let Some(v) = raw {
                    *slot = self.fraction(&v, name)?;
                }
            }
        }

        let Some(steps_raw) = raw.steps else {
            return Err(self.err(0..0, "steps", "the plan has no steps: add at least one [[steps]] table"));
        };
        let steps_span = steps_raw.span();
        let steps_raw = steps_raw.into_inner();
        if steps_raw.is_empty() {
            return Err(self.err(
                steps_span,
                "steps",
                "the plan has no steps: add at least one [[steps]] table",
            ));
        }
        let mut faults = Vec::new();
        if let Some(list) = raw.faults.and_then(|f| f.allow) {
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
        let mut steps: Vec<Step> = Vec::with_capacity(steps_raw.len());
        let mut names: Vec<(String, bool)> = Vec::new();
        for (i, s) in steps_raw.into_iter().enumerate() {
            let span = s.span();
            let s = s.into_inner();
            let explicit = s.name.as_ref().map(|n| (n.get_ref().trim().to_owned(), n.span()));
            let mode_span = s.mode.as_ref().map(|m| m.span());
            let step = self.step(i, span, s, run.step_timeout)?;
            if let StepSpec::RedisFailover { mode, .. } = step.spec
                && !faults.contains(&mode)
            {
                return Err(self.err(
                    mode_span.unwrap_or(0..0),
                    format!("steps[{i}].mode"),
                    format!(
                        "fault `{}` is not allowed by this plan: it affects every client of the target Redis; allow it with [faults] allow = [\"{}\"]",
                        mode.name(),
                        mode.name()
                    ),
                ));
            }
            let name = match explicit {
                Some((n, nspan)) => {
                    if n.is_empty() || n.len() > 64 {
                        return Err(self.err(nspan, format!("steps[{i}].name"), "must be 1 to 64 characters"));
                    }
                    if names.iter().any(|(x, _)| *x == n) {
                        return Err(self.err(
                            nspan,
                            format!("steps[{i}].name"),
                            format!("duplicate step name `{n}`: step names must be unique"),
                        ));
                    }
                    names.push((n.clone(), true));
                    n
                }
                None => {
                    let base = step.spec.kind().to_owned();
                    let mut n = base.clone();
                    let mut k = 2;
                    while names.iter().any(|(x, _)| *x == n) {
                        n = format!("{base}-{k}");
                        k += 1;
                    }
                    names.push((n.clone(), false));
                    n
                }
            };
            steps.push(Step { name, ..step });
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

    fn target(
        &self,
        raw: Option<Spanned<RawTarget>>,
        testbed_redis: bool,
        testbed_servers: u32,
    ) -> Result<Target, PlanError> {
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
                        u.get_ref()
                    ),
                ));
            }
            Some(u) => Some(self.redis_url(u)?),
            None if testbed_redis => None,
            None => {
                let what = if raw.is_some() { "target.redis_url" } else { "target" };
                return Err(self.err(span, what, "missing: set [target] redis_url = \"redis://HOST:PORT\", or let the testbed start a Redis with [testbed] redis = true"));
            }
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
        Ok(Target {
            redis_url,
            key_prefix,
            servers,
        })
    }

    fn redis_url(&self, u: &Spanned<String>) -> Result<String, PlanError> {
        check_redis_url(u.get_ref()).map_err(|why| self.err(u.span(), "target.redis_url", why))?;
        Ok(u.get_ref().clone())
    }

    fn step(&self, i: usize, span: Range<usize>, s: RawStep, default_timeout: Duration) -> Result<Step, PlanError> {
        let f = |name: &str| format!("steps[{i}].{name}");
        let Some(kind) = &s.kind else {
            return Err(self.err(span, f("kind"), format!("missing: one of {}", STEP_KINDS.join(", "))));
        };
        let allowed: &[&str] = match kind.get_ref().as_str() {
            "timestamp_generation" => &["iterations", "batch_size"],
            "timestamp_precision" => &["duration", "max_samples"],
            "redis_basic_ops" => &["iterations", "members", "clients"],
            "redis_concurrent" => &["clients", "operations", "members", "connections"],
            "redis_memory" => &["sessions", "members", "sample"],
            "session_integrity" => &["sessions"],
            "session_concurrent_updates" => &["updaters", "updates", "members", "locking", "max_retries"],
            "redis_pool" => &["pool_size", "interval", "duration"],
            "event_consistency" => &["clients", "interval", "settle"],
            "session_sync" => &["sessions", "members", "changes", "interval", "ramp_up", "settle"],
            "redis_failover" => &[
                "mode", "warmup", "duration", "recovery", "clients", "keys", "persist", "sessions", "members",
            ],
            other => {
                return Err(self.err(
                    kind.span(),
                    f("kind"),
                    format!("unknown step kind `{other}`: expected one of {}", STEP_KINDS.join(", ")),
                ));
            }
        };
        for (field, fspan) in s.present() {
            if !allowed.contains(&field) {
                return Err(self.err(
                    fspan,
                    f(field),
                    format!(
                        "not a parameter of `{}` (it takes: {})",
                        kind.get_ref(),
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let timeout = self.duration_or(s.timeout.clone(), &f("timeout"), default_timeout)?;
        let spec = match kind.get_ref().as_str() {
            "timestamp_generation" => {
                let iterations = self.opt_count(&s.iterations, &f("iterations"), 100_000, 1, 1_000_000_000)?;
                let batch_size = self.opt_count(&s.batch_size, &f("batch_size"), 1_000, 1, 10_000_000)?;
                if iterations % batch_size != 0 {
                    let sp = s.batch_size.as_ref().map(|b| b.span()).unwrap_or(span.clone());
                    return Err(self.err(
                        sp,
                        f("batch_size"),
                        format!("{batch_size} does not divide iterations = {iterations}"),
                    ));
                }
                StepSpec::TimestampGeneration { iterations, batch_size }
            }
            "timestamp_precision" => StepSpec::TimestampPrecision {
                duration: self.duration_or(s.duration.clone(), &f("duration"), Duration::from_secs(10))?,
                max_samples: self.opt_count(&s.max_samples, &f("max_samples"), 1_000_000, 1, 100_000_000)?,
            },
            "redis_basic_ops" => StepSpec::RedisBasicOps {
                iterations: self.opt_count(&s.iterations, &f("iterations"), 1_000, 1, 10_000_000)?,
                members: self.opt_count(&s.members, &f("members"), 10, 1, 1_000)? as u32,
                clients: self.opt_count(&s.clients, &f("clients"), 1, 1, 10_000)? as u32,
            },
            "redis_concurrent" => StepSpec::RedisConcurrent {
                clients: self.opt_count(&s.clients, &f("clients"), 50, 1, 100_000)?,
                operations: self.opt_count(&s.operations, &f("operations"), 100, 1, 10_000_000)?,
                members: self.opt_count(&s.members, &f("members"), 4, 1, 1_000)? as u32,
                connections: match &s.connections {
                    None => Connections::Shared,
                    Some(c) => match c.get_ref().as_str() {
                        "shared" => Connections::Shared,
                        "per_client" => Connections::PerClient,
                        other => {
                            return Err(self.err(
                                c.span(),
                                f("connections"),
                                format!("`{other}` is not one of shared, per_client"),
                            ));
                        }
                    },
                },
            },
            "redis_memory" => {
                let sessions = self.opt_count(&s.sessions, &f("sessions"), 1_000, 2, 1_000_000)?;
                let sample = self.opt_count(&s.sample, &f("sample"), 50, 1, 100_000)?;
                if sample > sessions {
                    let sp = s.sample.as_ref().map_or(span.clone(), |x| x.span());
                    return Err(self.err(sp, f("sample"), format!("{sample} is more than sessions = {sessions}")));
                }
                StepSpec::RedisMemory {
                    sessions,
                    members: self.opt_count(&s.members, &f("members"), 8, 1, 1_000)? as u32,
                    sample,
                }
            }
            "session_integrity" => StepSpec::SessionIntegrity {
                sessions: self.opt_count(&s.sessions, &f("sessions"), 100, 1, 10_000_000)?,
            },
            "session_concurrent_updates" => StepSpec::SessionConcurrentUpdates {
                updaters: self.opt_count(&s.updaters, &f("updaters"), 50, 1, 10_000)?,
                updates: self.opt_count(&s.updates, &f("updates"), 1, 1, 1_000_000)?,
                members: self.opt_count(&s.members, &f("members"), 4, 1, 1_000)? as u32,
                locking: match &s.locking {
                    None => Locking::Watch,
                    Some(l) => match l.get_ref().as_str() {
                        "watch" => Locking::Watch,
                        "none" => Locking::None,
                        other => {
                            return Err(self.err(
                                l.span(),
                                f("locking"),
                                format!("`{other}` is not one of watch, none"),
                            ));
                        }
                    },
                },
                max_retries: self.opt_count(&s.max_retries, &f("max_retries"), 1_000, 0, 1_000_000)?,
            },
            "event_consistency" => StepSpec::EventConsistency {
                clients: self.opt_count(&s.clients, &f("clients"), 1, 1, 100_000)?,
                interval: self.duration_or(s.interval.clone(), &f("interval"), Duration::from_millis(100))?,
                settle: self.duration_or(s.settle.clone(), &f("settle"), Duration::from_secs(2))?,
            },
            "session_sync" => {
                let spec = StepSpec::SessionSync {
                    sessions: self.opt_count(&s.sessions, &f("sessions"), 4, 1, 1_000_000)?,
                    members: self.opt_count(&s.members, &f("members"), 6, 2, 1_000)? as u32,
                    changes: self.opt_count(&s.changes, &f("changes"), 12, 1, 796)? as u32,
                    interval: self.duration_or(s.interval.clone(), &f("interval"), Duration::from_millis(500))?,
                    ramp_up: self.duration_or(s.ramp_up.clone(), &f("ramp_up"), Duration::from_secs(2))?,
                    settle: self.duration_or(s.settle.clone(), &f("settle"), Duration::from_secs(2))?,
                };
                if let StepSpec::SessionSync {
                    changes,
                    interval,
                    ramp_up,
                    settle,
                    ..
                } = &spec
                {
                    let total = *ramp_up + *settle + *interval * (*changes + 2);
                    if total >= timeout {
                        return Err(self.err(
                            span,
                            f("changes"),
                            format!(
                                "ramp_up + changes × interval + settle ≈ {} does not fit in the step timeout {}",
                                fmt_duration(total),
                                fmt_duration(timeout)
                            ),
                        ));
                    }
                }
                spec
            }
            "redis_failover" => {
                let mode = match &s.mode {
                    Some(m) => FaultMode::parse(m.get_ref()).ok_or_else(|| {
                        self.err(
                            m.span(),
                            f("mode"),
                            format!(
                                "unknown fault `{}`: expected pause, kill_clients or restart",
                                m.get_ref()
                            ),
                        )
                    })?,
                    None => return Err(self.err(span, f("mode"), "missing: pause, kill_clients or restart")),
                };
                if mode == FaultMode::KillClients
                    && let Some(d) = &s.duration
                {
                    return Err(self.err(
                        d.span(),
                        f("duration"),
                        "kill_clients is instantaneous: remove duration",
                    ));
                }
                if mode != FaultMode::Restart
                    && let Some(p) = &s.persist
                {
                    return Err(self.err(
                        p.span(),
                        f("persist"),
                        "only a restart can lose data: persist is for mode = \"restart\"",
                    ));
                }
                let warmup = self.duration_or(s.warmup.clone(), &f("warmup"), Duration::from_secs(2))?;
                let duration = match mode {
                    FaultMode::KillClients => Duration::ZERO,
                    _ => self.duration_or(s.duration.clone(), &f("duration"), Duration::from_secs(2))?,
                };
                let recovery = self.duration_or(s.recovery.clone(), &f("recovery"), Duration::from_secs(8))?;
                let total = warmup + duration + recovery;
                if total > Duration::from_secs(90) || total + Duration::from_secs(10) >= timeout {
                    return Err(self.err(
                        span,
                        f("recovery"),
                        format!(
                            "warmup + duration + recovery = {} must be at most 90s and 10s shorter than the step timeout {}",
                            fmt_duration(total),
                            fmt_duration(timeout)
                        ),
                    ));
                }
                StepSpec::RedisFailover {
                    mode,
                    warmup,
                    duration,
                    recovery,
                    clients: self.opt_count(&s.clients, &f("clients"), 4, 1, 1_000)? as u32,
                    keys: self.opt_count(&s.keys, &f("keys"), 100, 1, 1_000_000)?,
                    persist: s.persist.as_ref().is_some_and(|p| *p.get_ref()),
                    sessions: self.opt_count(&s.sessions, &f("sessions"), 2, 0, 10_000)?,
                    members: self.opt_count(&s.members, &f("members"), 4, 2, 1_000)? as u32,
                }
            }
            "redis_pool" => {
                let interval = self.duration_or(s.interval.clone(), &f("interval"), Duration::from_millis(50))?;
                let duration = self.duration_or(s.duration.clone(), &f("duration"), Duration::from_secs(10))?;
                if duration >= timeout {
                    let sp = s.duration.as_ref().map_or(span.clone(), |d| d.span());
                    return Err(self.err(
                        sp,
                        f("duration"),
                        format!(
                            "{} is not shorter than the step timeout {}",
                            fmt_duration(duration),
                            fmt_duration(timeout)
                        ),
                    ));
                }
                if interval > duration {
                    let sp = s.interval.as_ref().map_or(span.clone(), |d| d.span());
                    return Err(self.err(
                        sp,
                        f("interval"),
                        format!(
                            "{} is longer than duration = {}",
                            fmt_duration(interval),
                            fmt_duration(duration)
                        ),
                    ));
                }
                StepSpec::RedisPool {
                    pool_size: self.opt_count(&s.pool_size, &f("pool_size"), 20, 1, 10_000)? as u32,
                    interval,
                    duration,
                }
            }
            _ => unreachable!("kind checked above"),
        };
        if let StepSpec::TimestampPrecision { duration, .. } = &spec
            && *duration >= timeout
        {
            let sp = s.duration.as_ref().map(|d| d.span()).unwrap_or(span);
            return Err(self.err(
                sp,
                f("duration"),
                format!(
                    "{} is not shorter than the step timeout {}",
                    fmt_duration(*duration),
                    fmt_duration(timeout)
                ),
            ));
        }
        Ok(Step {
            name: String::new(),
            timeout,
            spec,
        })
    }

    fn count(&self, v: &Spanned<i64>, field: &str, min: i64, max: i64) -> Result<u64, PlanError> {
        let x = *v.get_ref();
        if x < min || x > max {
            return Err(self.err(v.span(), field, format!("must be between {min} and {max}, got {x}")));
        }
        Ok(x as u64)
    }

    fn opt_count(
        &self,
        v: &Option<Spanned<i64>>,
        field: &str,
        default: u64,
        min: i64,
        max: i64,
    ) -> Result<u64, PlanError> {
        match v {
            Some(v) => self.count(v, field, min, max),
            None => Ok(default),
        }
    }

    fn fraction(&self, v: &Spanned<f64>, field: &str) -> Result<f64, PlanError> {
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

    fn positive(&self, v: &Spanned<f64>, field: &str) -> Result<f64, PlanError> {
        let x = *v.get_ref();
        if !(x.is_finite() && x > 0.0) {
            return Err(self.err(v.span(), field, format!("must be a positive number, got {x}")));
        }
        Ok(x)
    }

    fn duration_or(&self, v: Option<Spanned<String>>, field: &str, default: Duration) -> Result<Duration, PlanError> {
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

/// Checks that `v` is a Redis URL the agents can use: `redis://`, `rediss://` with a host, or a
/// unix socket URL with a path.
/// A BandSync server URL: `http://host:port` or `https://host:port` (Socket.IO's path is implied).
pub fn check_server_url(v: &str) -> Result<(), String> {
    let u = url::Url::parse(v).map_err(|e| format!("`{v}` is not a URL ({e}): use http://HOST:PORT"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "`{v}`: scheme must be http or https (Socket.IO over WebSocket)"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{v}` has no host"));
    }
    if !matches!(u.path(), "" | "/") || u.query().is_some() {
        return Err(format!(
            "`{v}`: give only scheme, host and port; the Socket.IO path is /socket.io/"
        ));
    }
    Ok(())
}

pub fn check_redis_url(v: &str) -> Result<(), String> {
    let bad = |why: String| format!("`{v}` is not a Redis URL: {why}");
    let parsed = url::Url::parse(v).map_err(|e| bad(e.to_string()))?;
    match parsed.scheme() {
        "redis" | "rediss" if parsed.host_str().is_none_or(str::is_empty) => Err(bad("it has no host".into())),
        "redis" | "rediss" => Ok(()),
        "redis+unix" | "unix" if parsed.path().is_empty() => Err(bad("it has no socket path".into())),
        "redis+unix" | "unix" => Ok(()),
        other => Err(bad(format!(
            "scheme `{other}` is not one of redis, rediss, redis+unix, unix"
        ))),
    }
}

/// Parses `"250ms"`, `"10s"`, `"2m"`, `"1h"`, `"1m30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.as_str();
    if s.is_empty() {
        return Err("empty duration: write e.g. \"10s\", \"500ms\", \"2m\"".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "`{text}` is not a duration: write e.g. \"10s\", \"500ms\", \"2m\""
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "" => return Err(format!("`{text}` has no unit: write e.g. \"{n}s\" or \"{n}ms\"")),
            u => return Err(format!("`{text}`: unknown unit `{u}` (use ms, s, m or h)")),
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// `1.5s`, `250ms`, `2m`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms >= 1000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
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

fn located(source: &str, file: &str, span: Range<usize>, field: String, message: String) -> PlanError {
    let (line, column) = line_col(source, span.start);
    PlanError {
        file: file.to_owned(),
        line,
        column,
        field,
        message,
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted path (`steps[1].iterations`) of the key on the line holding `offset`, for errors
/// that serde reports without a field name. A malformed table header is named as written.
fn field_path_at(source: &str, offset: usize) -> String {
    let offset = offset.min(source.len());
    let mut table = String::new();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    let mut pos = 0;
    for line in source.split_inclusive('\n') {
        pos += line.len();
        let t = line.trim();
        let here = offset < pos || pos == source.len();
        if let Some(inner) = t.strip_prefix("[[") {
            let Some((name, _)) = inner.split_once("]]") else {
                if here {
                    return t.to_owned();
                }
                continue;
            };
            let name = name.trim().to_owned();
            let n = match arrays.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(inner) = t.strip_prefix('[') {
            let Some((name, _)) = inner.split_once(']') else {
                if here {
                    return t.to_owned();
                }
                continue;
            };
            table = name.trim().to_owned();
        } else if here
            && let Some((key, _)) = t.split_once('=')
            && !key.trim().trim_matches('"').is_empty()
        {
            let key = key.trim().trim_matches('"');
            return if table.is_empty() {
                key.to_owned()
            } else {
                format!("{table}.{key}")
            };
        }
        if here {
            return if table.is_empty() { "(plan)".to_owned() } else { table };
        }
    }
    "(plan)".to_owned()
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

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn line_and_column_are_one_based() {
        let s = "a = 1\nbb = 2\n";
        assert_eq!(line_col(s, 0), (1, 1));
        assert_eq!(line_col(s, 6), (2, 1));
        assert_eq!(line_col(s, 11), (2, 6));
    }
}
