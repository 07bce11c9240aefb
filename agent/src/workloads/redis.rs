//! Redis pieces every Redis workload shares: the connection with its timeouts, and bounded
//! cleanup of the keys a step wrote.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tracing::warn;

use bandsync_common::metrics::MetricSet;

use super::{StepContext, WorkloadError};

/// Per-command limit: a stuck Redis shows up as a counted timeout, never as a hung step.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys deleted per DEL during cleanup.
const CLEANUP_BATCH: usize = 500;

/// Runs `work` on a current-thread runtime of its own, on one OS thread: a sequential Redis client
/// then never crosses threads between its request and its reply, as redis-benchmark's single
/// event loop does, whatever runtime the agent itself runs on. The agent's lag is measured on
/// that runtime, where the load runs.
pub async fn on_own_thread<F, Fut>(name: &str, agent: u32, work: F) -> Result<MetricSet, WorkloadError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<MetricSet, WorkloadError>>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt.block_on(async {
                    let done = tokio_util::sync::CancellationToken::new();
                    let probe = tokio::spawn(crate::lag::probe(done.clone()));
                    let result = work().await;
                    done.cancel();
                    let lag = probe.await;
                    result.map(|mut m| {
                        if let Ok(lag) = lag {
                            crate::lag::record(&mut m, &lag, agent);
                        }
                        m
                    })
                }),
                Err(e) => Err(WorkloadError::Internal(format!("cannot start the step's runtime: {e}"))),
            };
            let _ = tx.send(result);
        })
        .map_err(|e| WorkloadError::Internal(format!("cannot start the step's thread: {e}")))?;
    rx.await
        .map_err(|_| WorkloadError::Internal("the step's thread ended without a result".into()))?
}

/// A client of `url` whose connections set TCP_NODELAY (the crate leaves Nagle on by default).
pub fn client(url: &str) -> redis::RedisResult<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    redis::Client::open(info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// Opens one multiplexed connection to the step's Redis, with connect and response timeouts.
pub async fn connect(ctx: &StepContext) -> Result<MultiplexedConnection, WorkloadError> {
    let unreachable = |reason: String| WorkloadError::Unreachable {
        url: bandsync_common::report::redact_url(&ctx.redis_url),
        reason,
    };
    let client = client(&ctx.redis_url).map_err(|e| unreachable(e.to_string()))?;
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
    con: &mut (impl redis::aio::ConnectionLike + Send),
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
