//! Document 2.2, concurrent updates: updaters on every agent move the position of ONE session
//! key by 100. With `watch`, each updater owns its connection and runs WATCH / HGETALL /
//! MULTI…EXEC, retrying when EXEC returns nil; with `none` it runs the document's code, MULTI
//! without WATCH, which loses updates under contention. The coordinator reads the key's final
//! state afterwards.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bandsync_common::datagen::session_data;
use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::session_concurrent_updates::{Locking, names as nu};
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tracing::warn;

use super::Run;
use super::date_now_ms;
use super::redis::connect;
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::SessionConcurrentUpdates;

impl Run for SessionConcurrentUpdates {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        concurrent_updates(
            self.updaters,
            self.updates,
            self.members,
            self.locking,
            self.max_retries,
            ctx,
        )
        .await
    }
}

/// Creates the shared session hash if no agent has yet, atomically.
const INIT_SCRIPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'data', ARGV[1], 'version', 0, 'lastUpdate', ARGV[2])
end
return 1";

#[derive(Default)]
struct UpdaterResult {
    attempted: u64,
    ok: u64,
    failed: u64,
    retries: u64,
    first_error: Option<String>,
}

pub async fn concurrent_updates(
    updaters_total: u64,
    updates: u64,
    members: u32,
    locking: Locking,
    max_retries: u64,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let updaters = shard_of(updaters_total, ctx.shard_index, ctx.shard_count);
    let key = nu::shared_key(&ctx.run_base);
    let mut shared = connect(ctx).await?;
    // Every agent creates the key (if no one has yet) with this same starting position.
    let initial_session = session_data(members, date_now_ms());
    let initial_position = initial_session.position;
    let initial = serde_json::to_string(&initial_session).map_err(|e| WorkloadError::Internal(e.to_string()))?;
    redis::cmd("EVAL")
        .arg(INIT_SCRIPT)
        .arg(1)
        .arg(&key)
        .arg(&initial)
        .arg(date_now_ms())
        .query_async::<()>(&mut shared)
        .await
        .map_err(|e| WorkloadError::Internal(format!("cannot create the shared session: {e}")))?;

    let mut tasks = JoinSet::new();
    for u in 0..updaters {
        // WATCH needs a connection this updater alone uses; the document's code shares one.
        let con = match locking {
            Locking::Watch => connect(ctx).await?,
            Locking::None => shared.clone(),
        };
        let (ctx, key) = (ctx.clone(), key.clone());
        tasks.spawn(async move {
            let mut hist = new_histogram();
            let r = updater(u, updates, locking, max_retries, con, &key, &ctx, &mut hist).await;
            (r, hist)
        });
    }
    let mut m = MetricSet::new();
    while let Some(joined) = tasks.join_next().await {
        let (r, hist) = joined.map_err(|e| WorkloadError::Internal(format!("updater task failed: {e}")))?;
        m.histogram_mut(nu::LATENCY_US)
            .add(&hist)
            .map_err(|e| WorkloadError::Internal(format!("{e:?}")))?;
        m.add_counter(nu::ATTEMPTED, r.attempted);
        m.add_counter(nu::SUCCEEDED, r.ok);
        m.add_counter(nu::FAILED, r.failed);
        m.add_counter(nu::RETRIES, r.retries);
        if let Some(e) = r.first_error {
            warn!(failed = r.failed, first = %e, "session updates failed");
        }
    }
    if ctx.cancel.is_cancelled() {
        // The coordinator deletes the shared key after the step; on abort its sweep does.
        return Err(WorkloadError::Cancelled);
    }
    m.add_counter(nu::UPDATERS, updaters);
    m.set_gauge(nu::INITIAL_POSITION, initial_position as f64, GaugeMerge::Max);
    Ok(m)
}

#[allow(clippy::too_many_arguments)]
async fn updater(
    index: u64,
    updates: u64,
    locking: Locking,
    max_retries: u64,
    mut con: MultiplexedConnection,
    key: &str,
    ctx: &StepContext,
    hist: &mut Hist,
) -> UpdaterResult {
    let mut r = UpdaterResult::default();
    for _ in 0..updates {
        if ctx.cancel.is_cancelled() {
            break;
        }
        r.attempted += 1;
        let start = Instant::now();
        let mut tries = 0u64;
        let outcome = loop {
            let attempt =
                tokio::time::timeout(Duration::from_secs(10), try_update(&mut con, key, index, locking)).await;
            match attempt {
                Ok(Ok(true)) => break Ok(()),
                Ok(Ok(false)) if tries < max_retries && !ctx.cancel.is_cancelled() => {
                    tries += 1;
                    r.retries += 1;
                }
                Ok(Ok(false)) => break Err(format!("gave up after {tries} retries")),
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err("update timed out after 10 s".into()),
            }
        };
        match outcome {
            Ok(()) => {
                r.ok += 1;
                let _ = hist.record((start.elapsed().as_nanos() as u64 + 500) / 1000);
            }
            Err(e) => {
                r.failed += 1;
                ctx.live.add_error();
                r.first_error.get_or_insert(e);
                if locking == Locking::Watch {
                    // Leave the connection clean for the next update.
                    let _ = redis::cmd("UNWATCH").query_async::<()>(&mut con).await;
                }
            }
        }
        ctx.live.add_ops(1);
    }
    r
}

/// One read-modify-write. `Ok(false)`: EXEC returned nil (another writer changed the key after
/// our WATCH), so the caller retries.
async fn try_update(con: &mut MultiplexedConnection, key: &str, index: u64, locking: Locking) -> Result<bool, String> {
    let err = |e: redis::RedisError| e.to_string();
    if locking == Locking::Watch {
        redis::cmd("WATCH").arg(key).query_async::<()>(con).await.map_err(err)?;
    }
    let state: HashMap<String, String> = redis::cmd("HGETALL").arg(key).query_async(con).await.map_err(err)?;
    let mut data: Value =
        serde_json::from_str(state.get("data").ok_or("the shared session has no data")?).map_err(|e| e.to_string())?;
    let version: i64 = state
        .get("version")
        .and_then(|v| v.parse().ok())
        .ok_or("the shared session has no version")?;
    let position = data["position"].as_i64().ok_or("the shared session has no position")?;
    data["position"] = json!(position + 100);
    data["lastUpdateBy"] = json!(format!("update-{index}"));
    data["updateTimestamp"] = json!(date_now_ms());
    let reply: redis::Value = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(key)
        .arg("data")
        .arg(data.to_string())
        .arg("version")
        .arg(version + 1)
        .arg("lastUpdate")
        .arg(date_now_ms())
        .query_async(con)
        .await
        .map_err(err)?;
    Ok(!matches!(reply, redis::Value::Nil))
}
