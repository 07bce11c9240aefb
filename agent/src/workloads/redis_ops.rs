//! Document 2.1, basic operations: SET, GET, HSET, HGET and DEL of the document's session JSON,
//! `iterations` of each, one after the other on one connection, as the document's single awaited
//! ioredis client does. Each operation's latency goes into an HDR histogram in µs; its first start
//! and last end, in coordinator time, give the throughput of all agents together.
//!
//! Every key is `{prefix}:{run_id}:agent{index}:...`; whatever happens, the step deletes every key
//! it may have written before returning.

use std::future::Future;
use std::time::{Duration, Instant};

use bandsync_common::datagen::session_data;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::names::basic_ops;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::warn;

use super::timestamps::date_now_ms;
use super::{StepContext, WorkloadError};

/// Per-command limit: a stuck Redis shows up as a counted timeout, never as a hung step.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys deleted per DEL during cleanup.
const CLEANUP_BATCH: usize = 500;

/// Opens one multiplexed connection to the step's Redis, with connect and response timeouts.
pub async fn connect(ctx: &StepContext) -> Result<MultiplexedConnection, WorkloadError> {
    let unreachable = |reason: String| WorkloadError::Unreachable {
        url: bandsync_common::report::redact_url(&ctx.redis_url),
        reason,
    };
    let client = redis::Client::open(ctx.redis_url.as_str()).map_err(|e| unreachable(e.to_string()))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| unreachable(e.to_string()))
}

pub async fn basic_ops(iterations: u64, members: u32, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    let mut con = connect(ctx).await?;
    let session = session_data(members, date_now_ms());
    let data = serde_json::to_string(&session).map_err(|e| WorkloadError::Internal(e.to_string()))?;
    let member_count = session.members.len().to_string();
    let mut m = MetricSet::new();
    m.set_gauge(basic_ops::PAYLOAD_BYTES, data.len() as f64, GaugeMerge::Max);
    let set_key = |i: u64| format!("{}set:{i}", ctx.key_base);
    let hash_key = |i: u64| format!("{}session:{i}", ctx.key_base);

    // How many indices of each key family were attempted: cleanup deletes exactly those.
    let (mut set_attempted, mut hash_attempted) = (0u64, 0u64);
    let outcome = async {
        phase(&mut m, "set", iterations, ctx, &mut set_attempted, |i| {
            let mut c = con.clone();
            let (k, v) = (set_key(i), data.as_str());
            async move { redis::cmd("SET").arg(k).arg(v).query_async::<()>(&mut c).await }
        })
        .await?;
        phase(&mut m, "get", iterations, ctx, &mut 0, |i| {
            let mut c = con.clone();
            let k = set_key(i);
            async move {
                redis::cmd("GET")
                    .arg(k)
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
                    .map(drop)
            }
        })
        .await?;
        phase(&mut m, "hset", iterations, ctx, &mut hash_attempted, |i| {
            let mut c = con.clone();
            let (k, v, n) = (hash_key(i), data.as_str(), member_count.as_str());
            async move {
                redis::cmd("HSET")
                    .arg(k)
                    .arg("data")
                    .arg(v)
                    .arg("lastUpdate")
                    .arg(date_now_ms())
                    .arg("memberCount")
                    .arg(n)
                    .query_async::<()>(&mut c)
                    .await
            }
        })
        .await?;
        phase(&mut m, "hget", iterations, ctx, &mut 0, |i| {
            let mut c = con.clone();
            let k = hash_key(i);
            async move {
                redis::cmd("HGET")
                    .arg(k)
                    .arg("data")
                    .query_async::<Option<Vec<u8>>>(&mut c)
                    .await
                    .map(drop)
            }
        })
        .await?;
        phase(&mut m, "del", iterations, ctx, &mut 0, |i| {
            let mut c = con.clone();
            let k = set_key(i);
            async move { redis::cmd("DEL").arg(k).query_async::<()>(&mut c).await }
        })
        .await
    }
    .await;

    // Cleanup runs whatever happened above: the hashes, and any SET key a cancelled run left.
    let keys = (0..set_attempted).map(set_key).chain((0..hash_attempted).map(hash_key));
    let deleted = delete_keys(&mut con, ctx, keys).await;
    m.add_counter(basic_ops::CLEANUP_DELETED, deleted);
    outcome.map(|()| m)
}

/// Runs `iterations` sequential operations, recording each one's latency, ok/error and the phase's
/// start and end in coordinator time.
async fn phase<F, Fut>(
    m: &mut MetricSet,
    op: &str,
    iterations: u64,
    ctx: &StepContext,
    attempted: &mut u64,
    mut make: F,
) -> Result<(), WorkloadError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = redis::RedisResult<()>>,
{
    let hist_name = basic_ops::latency_us(op);
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut first_error: Option<String> = None;
    m.set_gauge(&basic_ops::start_us(op), ctx.coord_now_us(), GaugeMerge::Min);
    for i in 0..iterations {
        if ctx.cancel.is_cancelled() {
            return Err(WorkloadError::Cancelled);
        }
        *attempted = i + 1;
        let fut = make(i);
        let start = Instant::now();
        let r = fut.await;
        let us = (start.elapsed().as_nanos() as u64 + 500) / 1000;
        match r {
            Ok(()) => {
                ok += 1;
                let _ = m.histogram_mut(&hist_name).record(us);
            }
            Err(e) => {
                errors += 1;
                ctx.live.add_error();
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
        ctx.live.add_ops(1);
    }
    m.set_gauge(&basic_ops::end_us(op), ctx.coord_now_us(), GaugeMerge::Max);
    m.add_counter(&basic_ops::ok(op), ok);
    m.add_counter(&basic_ops::errors(op), errors);
    if let Some(e) = first_error {
        warn!(op, errors, first = %e, "operations failed");
    }
    Ok(())
}

/// Deletes `keys` in batches; returns how many existed. Bounded in time: a dead Redis cannot
/// hold the agent here (what is left is reported by the coordinator's sweep).
pub async fn delete_keys(
    con: &mut MultiplexedConnection,
    ctx: &StepContext,
    keys: impl Iterator<Item = String>,
) -> u64 {
    let mut keys = keys.peekable();
    let work = async {
        let mut deleted = 0u64;
        while keys.peek().is_some() {
            let batch: Vec<String> = keys.by_ref().take(CLEANUP_BATCH).collect();
            match redis::cmd("DEL").arg(&batch).query_async::<u64>(con).await {
                Ok(n) => deleted += n,
                Err(e) => {
                    warn!(error = %e, "cleanup DEL failed; the coordinator will report leftover keys");
                    return deleted;
                }
            }
        }
        deleted
    };
    match tokio::time::timeout(Duration::from_secs(15), work).await {
        Ok(n) => n,
        Err(_) => {
            warn!(prefix = %ctx.key_base, "cleanup timed out; the coordinator will report leftover keys");
            0
        }
    }
}
