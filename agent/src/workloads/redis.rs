//! Redis pieces every Redis workload shares: the connection with its timeouts, and bounded
//! cleanup of the keys a step wrote.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::warn;

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
                    warn!(error = %e, "cleanup DEL failed; the coordinator's sweep counts what is left");
                    ctx.cleanup.fail(format!("DEL failed: {e}"));
                    return deleted;
                }
            }
        }
        deleted
    };
    match tokio::time::timeout(Duration::from_secs(15), work).await {
        Ok(n) => n,
        Err(_) => {
            warn!(prefix = %ctx.key_base, "cleanup timed out; the coordinator's sweep counts what is left");
            ctx.cleanup.fail("the cleanup did not finish within 15 s".into());
            0
        }
    }
}
