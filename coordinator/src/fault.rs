//! Real Redis faults for `redis_failover`, injected by the coordinator at a coordinator instant
//! while the agents load. Only faults the plan allows reach here (`[faults] allow`, checked when
//! the plan is read); a restart needs the testbed's own redis-server, whose process the
//! coordinator owns.

use std::sync::Arc;
use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use bandsync_common::plan::FaultMode;
use tokio::sync::Mutex;

use crate::testbed::RedisServer;

/// The testbed's redis-server, shared with the run so a restart fault can stop and start it.
pub type RedisControl = Arc<Mutex<RedisServer>>;

/// When the fault began and ended, coordinator Unix ns.
#[derive(Debug, Clone, Copy)]
pub struct FaultRecord {
    pub began_ns: i64,
    pub ended_ns: i64,
}

/// Waits until `at_ns` (coordinator time), then injects `mode` for `duration`.
pub async fn inject(
    mode: FaultMode,
    at_ns: i64,
    duration: Duration,
    persist: bool,
    redis_url: &str,
    control: Option<RedisControl>,
) -> Result<FaultRecord, String> {
    // A dedicated connection, opened before the instant so the fault is not late.
    let client = redis::Client::open(redis_url).map_err(|e| e.to_string())?;
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("connecting to inject the fault: {e}"))?;
    let wait = at_ns - now_unix_ns();
    if wait > 0 {
        tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
    }
    match mode {
        FaultMode::Pause => {
            let began_ns = now_unix_ns();
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(duration.as_millis() as u64)
                .arg("ALL")
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| format!("CLIENT PAUSE: {e}"))?;
            // Redis lifts the pause by itself after `duration`.
            tokio::time::sleep(duration).await;
            Ok(FaultRecord {
                began_ns,
                ended_ns: began_ns + duration.as_nanos() as i64,
            })
        }
        FaultMode::KillClients => {
            let began_ns = now_unix_ns();
            for kind in ["normal", "pubsub"] {
                // SKIPME yes (the default): this connection survives to kill the others.
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(kind)
                    .query_async::<i64>(&mut con)
                    .await
                    .map_err(|e| format!("CLIENT KILL TYPE {kind}: {e}"))?;
            }
            Ok(FaultRecord {
                began_ns,
                ended_ns: now_unix_ns(),
            })
        }
        FaultMode::Restart => {
            let control = control.ok_or("a restart needs the testbed's own redis-server")?;
            if persist {
                redis::cmd("SAVE")
                    .query_async::<()>(&mut con)
                    .await
                    .map_err(|e| format!("SAVE before the restart: {e}"))?;
            }
            drop(con);
            let mut server = control.lock().await;
            let began_ns = now_unix_ns();
            server.kill();
            if !persist {
                server.forget_data();
            }
            tokio::time::sleep(duration).await;
            server.start_again().await.map_err(|e| e.to_string())?;
            Ok(FaultRecord {
                began_ns,
                ended_ns: now_unix_ns(),
            })
        }
    }
}
