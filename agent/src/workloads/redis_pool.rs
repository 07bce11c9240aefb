//! Document 3.1, connection pooling: a real pool (deadpool-redis) of `pool_size` connections on
//! every agent, and one random SET / GET / HSET / HGET every `interval` for `duration`. Operations
//! are started on schedule whether or not earlier ones finished (the document does not await
//! them either), and each one's latency counts from its scheduled instant, so time spent waiting
//! for a pooled connection is measured rather than hidden.

use std::time::Duration;

use bandsync_common::metrics::{GaugeMerge, MetricSet, new_histogram};
use bandsync_common::workloads::redis_pool::names as n;
use deadpool_redis::{Config, PoolConfig, Runtime, Timeouts};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use super::Run;
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::RedisPool;

/// Limit on one pooled operation, checkout included.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

struct OpResult {
    ok: bool,
    /// From the scheduled instant to the end, µs.
    latency_us: u64,
    pool_wait_us: Option<u64>,
    error: Option<String>,
}

pub async fn run(
    pool_size: u32,
    interval: Duration,
    duration: Duration,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let mut cfg = Config::from_url(ctx.redis_url.clone());
    let mut pool_cfg = PoolConfig::new(pool_size as usize);
    pool_cfg.timeouts = Timeouts {
        wait: Some(OP_TIMEOUT),
        create: Some(OP_TIMEOUT),
        recycle: Some(OP_TIMEOUT),
    };
    cfg.pool = Some(pool_cfg);
    let pool = cfg
        .create_pool(Some(Runtime::Tokio1))
        .map_err(|e| WorkloadError::Internal(format!("cannot build the pool: {e}")))?;

    let ops_planned = (duration.as_nanos() / interval.as_nanos().max(1)) as u64;
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut issued = 0u64;
    for k in 0..ops_planned {
        let scheduled = start + interval * k as u32;
        tokio::select! {
            () = tokio::time::sleep_until(scheduled) => {}
            () = ctx.cancel.cancelled() => break,
        }
        issued += 1;
        let (pool, key_base) = (pool.clone(), ctx.key_base.clone());
        let live = ctx.live.clone();
        tasks.spawn(async move {
            let r = one_op(&pool, &key_base, k, scheduled).await;
            live.add_ops(1);
            if !r.ok {
                live.add_error();
            }
            r
        });
    }

    let mut m = MetricSet::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    let latency = m.histogram_mut(n::LATENCY_US).clone();
    let (mut latency, mut wait) = (latency, new_histogram());
    // Every operation is bounded by OP_TIMEOUT, so this ends.
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| WorkloadError::Internal(format!("pool task failed: {e}")))?;
        if r.ok {
            ok += 1;
        } else {
            failed += 1;
            first_error = first_error.or(r.error);
        }
        let _ = latency.record(r.latency_us);
        if let Some(w) = r.pool_wait_us {
            let _ = wait.record(w);
        }
    }
    if let Some(e) = first_error {
        warn!(failed, first = %e, "pooled operations failed");
    }
    let status = pool.status();
    pool.close();
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }
    m.histograms.insert(n::LATENCY_US.to_owned(), latency);
    m.histograms.insert(n::POOL_WAIT_US.to_owned(), wait);
    m.add_counter(n::OPS, issued);
    m.add_counter(n::OK, ok);
    m.add_counter(n::FAILED, failed);
    m.add_counter(n::AGENTS, 1);
    m.add_counter(n::CONNECTIONS_OPENED, status.size as u64);
    m.set_gauge(n::POOL_SIZE, f64::from(pool_size), GaugeMerge::Max);
    m.set_gauge(n::DURATION_US, duration.as_micros() as f64, GaugeMerge::Max);
    Ok(m)
}

async fn one_op(pool: &deadpool_redis::Pool, key_base: &str, k: u64, scheduled: Instant) -> OpResult {
    let us = |from: Instant| from.elapsed().as_micros() as u64;
    let work = async {
        let checkout = Instant::now();
        let mut con = pool.get().await.map_err(|e| (format!("pool: {e}"), None))?;
        let wait = us(checkout);
        let key = format!("{key_base}pool:{k}");
        // Reads go to a key under the run prefix that nobody writes: the document reads a
        // 'non-existent-key' outside any prefix, which a careful tool does not touch.
        let missing = format!("{key_base}pool:missing");
        let r = match fastrand::u8(0..4) {
            0 => {
                async {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg("test-value")
                        .query_async::<()>(&mut con)
                        .await?;
                    redis::cmd("DEL").arg(&key).query_async::<()>(&mut con).await
                }
                .await
            }
            1 => redis::cmd("GET")
                .arg(&missing)
                .query_async::<Option<String>>(&mut con)
                .await
                .map(drop),
            2 => {
                async {
                    redis::cmd("HSET")
                        .arg(&key)
                        .arg("field")
                        .arg("value")
                        .query_async::<()>(&mut con)
                        .await?;
                    redis::cmd("DEL").arg(&key).query_async::<()>(&mut con).await
                }
                .await
            }
            _ => redis::cmd("HGET")
                .arg(&missing)
                .arg("field")
                .query_async::<Option<String>>(&mut con)
                .await
                .map(drop),
        };
        r.map_err(|e| (e.to_string(), Some(wait))).map(|()| wait)
    };
    match tokio::time::timeout(OP_TIMEOUT, work).await {
        Ok(Ok(wait)) => OpResult {
            ok: true,
            latency_us: us(scheduled),
            pool_wait_us: Some(wait),
            error: None,
        },
        Ok(Err((e, wait))) => OpResult {
            ok: false,
            latency_us: us(scheduled),
            pool_wait_us: wait,
            error: Some(e),
        },
        Err(_) => OpResult {
            ok: false,
            latency_us: us(scheduled),
            pool_wait_us: None,
            error: Some(format!("timed out after {} s", OP_TIMEOUT.as_secs())),
        },
    }
}
impl Run for RedisPool {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        run(self.pool_size, self.interval, self.duration, ctx).await
    }
}
