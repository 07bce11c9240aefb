//! One module per step kind (`impl Run for <Kind>`), with the pieces they share beside them
//! (`redis.rs`, `sio.rs`, `band.rs`; the two timestamp kinds in `timestamps.rs`, the two session
//! kinds in `persistence.rs`). Each workload runs its shard of a step, aggregates locally into
//! a [`MetricSet`] (never one message per request) and, when cancelled, stops its load and deletes
//! the keys it wrote before returning [`WorkloadError::Cancelled`].

pub mod band;
pub mod event_consistency;
pub mod open;
pub mod protocol_conformance;
pub mod redis;
pub mod redis_basic_ops;
pub mod redis_concurrent;
pub mod redis_failover;
pub mod redis_memory;
pub mod redis_pool;
pub mod sequential;
pub mod session_concurrent_updates;
pub mod session_integrity;
pub mod session_sync;
pub mod sio;
pub mod timestamp_generation;
pub mod timestamp_precision;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bandsync_common::clock::{ClockEstimate, now_unix_ns};
use bandsync_common::metrics::MetricSet;
use bandsync_common::plan::StepSpec;
use tokio_util::sync::CancellationToken;

/// Live counters read by the progress ticker; workloads bump them with relaxed atomics.
#[derive(Debug, Default)]
pub struct Live {
    ops: AtomicU64,
    errors: AtomicU64,
}

impl Live {
    pub fn add_ops(&self, n: u64) {
        self.ops.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> (u64, u64) {
        (self.ops.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed))
    }
}

/// Whether the keys a step wrote were deleted: the first failure, with why (`None`: every
/// cleanup that ran succeeded). Read by the step runner, so no message claims a deletion that
/// did not happen.
#[derive(Debug, Default)]
pub struct Cleanup(std::sync::Mutex<Option<String>>);

impl Cleanup {
    pub fn fail(&self, why: String) {
        self.0.lock().unwrap().get_or_insert(why);
    }
    pub fn failure(&self) -> Option<String> {
        self.0.lock().unwrap().clone()
    }
    /// "keys deleted", or why not.
    pub fn describe(&self) -> String {
        match self.failure() {
            None => "keys deleted".to_owned(),
            Some(why) => format!("keys NOT all deleted ({why}): the coordinator's sweep counts what is left"),
        }
    }
}

/// What a workload knows about the step it runs.
#[derive(Clone, Debug)]
pub struct StepContext {
    pub shard_index: u32,
    pub shard_count: u32,
    pub agent_index: u32,
    pub redis_url: String,
    /// `{key_prefix}:{run_id}:agent{index}:` — every key this agent writes starts with it.
    pub key_base: String,
    /// `{key_prefix}:{run_id}:` — for keys shared by every agent of the run.
    pub run_base: String,
    pub clock: ClockEstimate,
    /// The step's start instant, coordinator Unix ns (schedules derive from it).
    pub coord_start_ns: i64,
    /// BandSync servers (Socket.IO base URLs) of the target.
    pub servers: Vec<String>,
    /// What the workloads may rely on from those servers.
    pub dialect: bandsync_common::dialect::Dialect,
    pub cancel: CancellationToken,
    pub live: Arc<Live>,
    pub cleanup: Arc<Cleanup>,
    /// Bytes this step may plan to use on this agent (the limit, or what the host has).
    pub memory_budget: u64,
}

impl StepContext {
    /// Now, in coordinator time, µs since the epoch (exact in an f64 gauge).
    pub fn coord_now_us(&self) -> f64 {
        (self.clock.to_coordinator(now_unix_ns()) / 1000) as f64
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("Redis at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("BandSync server unreachable: {0}")]
    ServerUnreachable(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

/// The agent side of a step kind: runs this agent's shard of the step.
#[allow(async_fn_in_trait)]
pub trait Run {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError>;
}

/// Runs the workload of `spec` with this agent's context.
pub async fn run(spec: &StepSpec, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    match spec {
        StepSpec::ProtocolConformance(p) => p.run(ctx).await,
        StepSpec::TimestampGeneration(p) => p.run(ctx).await,
        StepSpec::TimestampPrecision(p) => p.run(ctx).await,
        StepSpec::RedisBasicOps(p) => p.run(ctx).await,
        StepSpec::RedisConcurrent(p) => p.run(ctx).await,
        StepSpec::RedisMemory(p) => p.run(ctx).await,
        StepSpec::SessionIntegrity(p) => p.run(ctx).await,
        StepSpec::SessionConcurrentUpdates(p) => p.run(ctx).await,
        StepSpec::RedisPool(p) => p.run(ctx).await,
        StepSpec::EventConsistency(p) => p.run(ctx).await,
        StepSpec::SessionSync(p) => p.run(ctx).await,
        StepSpec::RedisFailover(p) => p.run(ctx).await,
    }
}

/// `Date.now()`: wall-clock milliseconds since the Unix epoch.
#[inline]
pub fn date_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
