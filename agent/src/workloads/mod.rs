//! One module per workload family. Each workload runs its shard of a step, aggregates locally into
//! a [`MetricSet`] (never one message per request) and, when cancelled, stops its load and deletes
//! the keys it wrote before returning [`WorkloadError::Cancelled`].

pub mod concurrent;
pub mod event;
pub mod failover;
pub mod memory;
pub mod persistence;
pub mod pool;
pub mod redis_ops;
pub mod sio;
pub mod sync;
pub mod timestamps;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    pub cancel: CancellationToken,
    pub live: Arc<Live>,
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
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

/// Runs the workload of `spec` with this agent's context.
pub async fn run(spec: &StepSpec, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    match *spec {
        StepSpec::TimestampGeneration { iterations, batch_size } => {
            let (cancel, live) = (ctx.cancel.clone(), ctx.live.clone());
            tokio::task::spawn_blocking(move || timestamps::generation(iterations, batch_size, &cancel, &live))
                .await
                .map_err(|e| WorkloadError::Internal(format!("timestamp generation panicked: {e}")))?
        }
        StepSpec::TimestampPrecision { duration, max_samples } => {
            timestamps::precision(duration, max_samples, &ctx.cancel, &ctx.live).await
        }
        StepSpec::RedisBasicOps {
            iterations,
            members,
            clients,
        } => redis_ops::basic_ops(iterations, members, clients, ctx).await,
        StepSpec::RedisConcurrent {
            clients,
            operations,
            members,
            connections,
        } => concurrent::run(clients, operations, members, connections, ctx).await,
        StepSpec::RedisMemory {
            sessions,
            members,
            sample,
        } => memory::run(sessions, members, sample, ctx).await,
        StepSpec::SessionIntegrity { sessions } => persistence::integrity(sessions, ctx).await,
        StepSpec::SessionConcurrentUpdates {
            updaters,
            updates,
            members,
            locking,
            max_retries,
        } => persistence::concurrent_updates(updaters, updates, members, locking, max_retries, ctx).await,
        StepSpec::RedisPool {
            pool_size,
            interval,
            duration,
        } => pool::run(pool_size, interval, duration, ctx).await,
        StepSpec::EventConsistency {
            clients,
            interval,
            settle,
        } => event::run(clients, interval, settle, ctx).await,
        StepSpec::SessionSync {
            sessions,
            members,
            changes,
            interval,
            ramp_up,
            settle,
        } => {
            let params = sync::Params {
                sessions,
                members,
                changes,
                interval,
                ramp_up,
                settle,
                script: sync::Script::Band,
                window: None,
            };
            sync::run_with(params, ctx).await
        }
        StepSpec::RedisFailover {
            mode,
            warmup,
            duration,
            recovery,
            clients,
            keys,
            persist: _,
            sessions,
            members,
        } => failover::run(mode, warmup, duration, recovery, clients, keys, sessions, members, ctx).await,
    }
}
