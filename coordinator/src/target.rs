//! The coordinator's own view of the Redis target: is it reachable before load starts, and which
//! keys are left under the run prefix afterwards. Only keys under `{prefix}:{run_id}:` are ever
//! touched: SCAN with that pattern, never KEYS, never FLUSH*.

use std::time::Duration;

use std::collections::HashMap;

use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::report::redact_url;
use bandsync_common::workload::ReadBack;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::CoordinatorError;

pub async fn connect(url: &str) -> Result<MultiplexedConnection, CoordinatorError> {
    let unreachable = |e: redis::RedisError| CoordinatorError::TargetUnreachable {
        url: redact_url(url),
        reason: e.to_string(),
    };
    let client = redis::Client::open(url).map_err(unreachable)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(unreachable)?;
    redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .map_err(unreachable)?;
    Ok(con)
}

/// `field:value` of an INFO section.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// The target's `maxmemory-policy` and `maxmemory` (INFO memory: readable where CONFIG is
/// renamed away, as on managed Redis).
pub async fn eviction_setting(con: &mut MultiplexedConnection) -> Result<(String, u64), String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .map_err(|e| format!("INFO memory: {e}"))?;
    let policy = info_field(&info, "maxmemory_policy").ok_or("INFO memory has no maxmemory_policy")?;
    let max = info_field(&info, "maxmemory")
        .and_then(|v| v.parse().ok())
        .ok_or("INFO memory has no maxmemory")?;
    Ok((policy, max))
}

/// How many bytes the target can still take: up to `maxmemory` when set, else up to the host's
/// memory (`total_system_memory`), minus `used_memory`; with what it was measured against.
/// `None` when INFO does not say.
pub async fn memory_room(con: &mut MultiplexedConnection) -> Result<Option<(u64, &'static str)>, String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .map_err(|e| format!("INFO memory: {e}"))?;
    let field = |f: &str| info_field(&info, f).and_then(|v| v.parse::<u64>().ok());
    let used = field("used_memory").unwrap_or(0);
    Ok(match (field("maxmemory"), field("total_system_memory")) {
        (Some(max), _) if max > 0 => Some((max.saturating_sub(used), "under its maxmemory")),
        (_, Some(total)) if total > 0 => Some((total.saturating_sub(used), "on its host")),
        _ => None,
    })
}

/// `evicted_keys` of INFO stats: keys Redis has evicted since it started.
pub async fn evicted_keys(con: &mut MultiplexedConnection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(con)
        .await
        .map_err(|e| format!("INFO stats: {e}"))?;
    info_field(&info, "evicted_keys")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "INFO stats has no evicted_keys".to_owned())
}

/// A BandSync server answers on its address (a TCP connection within 5 s).
pub async fn check_server(url: &str) -> Result<(), CoordinatorError> {
    let unreachable = |reason: String| CoordinatorError::ServerUnreachable {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| unreachable(e.to_string()))?;
    let host = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed.port_or_known_default().unwrap_or(80);
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("no answer within 5 s".into())),
    }
}

/// After a step whose kind asks for it ([`ReadBack`]): reads the session every agent updated,
/// records its final position and version into the step's metrics, and deletes it.
pub async fn read_back_session(
    con: &mut MultiplexedConnection,
    run_prefix: &str,
    read_back: &ReadBack,
    merged: &mut MetricSet,
) -> Result<(), String> {
    let key = format!("{run_prefix}{}", read_back.key_suffix);
    let state: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(&key)
        .query_async(con)
        .await
        .map_err(|e| e.to_string())?;
    let outcome = (|| {
        let data: serde_json::Value = serde_json::from_str(state.get("data").ok_or("the shared session is missing")?)
            .map_err(|e| format!("its data is not JSON: {e}"))?;
        let position = data["position"].as_i64().ok_or("its data has no position")?;
        let version: u64 = state
            .get("version")
            .and_then(|v| v.parse().ok())
            .ok_or("it has no version")?;
        Ok::<_, String>((position, version))
    })();
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(con)
        .await
        .map_err(|e| e.to_string())?;
    let (position, version) = outcome?;
    merged.set_gauge(read_back.position_gauge, position as f64, GaugeMerge::Max);
    merged.set_gauge(read_back.version_gauge, version as f64, GaugeMerge::Max);
    Ok(())
}

/// Counts the keys under `run_prefix` (which must end with `:`), then deletes them.
/// Returns the count found before deleting.
pub async fn count_and_sweep(con: &mut MultiplexedConnection, run_prefix: &str) -> Result<u64, redis::RedisError> {
    debug_assert!(run_prefix.ends_with(':'));
    let pattern = format!("{run_prefix}*");
    let mut cursor: u64 = 0;
    let mut found = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        // SCAN may return a key twice; DEL counts each key once.
        let keys: Vec<_> = keys.into_iter().filter(|k| k.starts_with(run_prefix)).collect();
        if !keys.is_empty() {
            found += redis::cmd("DEL").arg(&keys).query_async::<u64>(con).await?;
        }
        cursor = next;
        if cursor == 0 {
            return Ok(found);
        }
    }
}
