//! Document 3.1, "Redis unavailable", with a real fault. The coordinator injects the fault at
//! step start + `warmup` (CLIENT PAUSE, CLIENT KILL or a restart of the testbed's Redis); every
//! agent keeps loading through it and measures, in coordinator time:
//! - `clients` Redis clients (SET/GET every 10 ms) on a ConnectionManager set to fail fast
//!   (1 retry, ≤ 500 ms reconnect delay, 500 ms connection and response timeouts): operations ok,
//!   failed and timed out, the first failure, the last failure and the first success after it
//!   (detection and recovery);
//! - a deadpool-redis pool of 4 (1 s timeouts): pooled operations, their wait, and the
//!   connections it opened after the fault began (its reconnections);
//! - `keys` keys written before the fault and read back after it: kept or lost;
//! - Socket.IO members (`sessions` × `members`, playing through the fault on both server
//!   instances, a tempo change every 500 ms): ticks during the fault per instance, changes made
//!   during it seen on other instances, convergence (see `sync`).
//!
//! The document's version disconnects its own client, sleeps one second and reports success.

use std::time::Duration;

use bandsync_common::clock::now_unix_ns;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::plan::FaultMode;
use bandsync_common::workloads::redis_failover::names as n;
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;

use super::Run;
use super::band::{self, Script};
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::RedisFailover;

const OP_PERIOD: Duration = Duration::from_millis(10);
const POOL_PERIOD: Duration = Duration::from_millis(20);
const POOL_SIZE: usize = 4;

/// One Redis operation's outcome at coordinator time.
struct Op {
    at_ns: i64,
    ok: bool,
}

#[derive(Default)]
struct ClientLog {
    ops: Vec<Op>,
    ok: u64,
    failed: u64,
    timed_out: u64,
    latencies_us: Vec<u64>,
}

impl Run for RedisFailover {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        run(self, ctx).await
    }
}

pub async fn run(p: &RedisFailover, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    let RedisFailover {
        mode,
        warmup,
        duration,
        recovery,
        clients,
        keys,
        sessions,
        members,
        ..
    } = p.clone();
    let ns = |d: Duration| d.as_nanos() as i64;
    let fault_at = ctx.coord_start_ns + ns(warmup);
    let fault_end = fault_at + ns(duration);
    let end = fault_end + ns(recovery);
    let unreachable = |e: redis::RedisError| WorkloadError::Unreachable {
        url: ctx.redis_url.clone(),
        reason: e.to_string(),
    };
    let client = redis::Client::open(ctx.redis_url.as_str()).map_err(unreachable)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    let con = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(unreachable)?;

    // Data written before the fault, to read back after it.
    let data_key = |i: u64| format!("{}failover:data:{i}", ctx.key_base);
    let load_key = |c: u32| format!("{}failover:load:{c}", ctx.key_base);
    let mut pipe = redis::pipe();
    for i in 0..keys {
        pipe.set(data_key(i), format!("value-{i}")).ignore();
    }
    pipe.query_async::<()>(&mut con.clone()).await.map_err(unreachable)?;

    // Socket.IO members playing through the fault (both server instances).
    let mut members_task = None;
    if sessions > 0 && !ctx.servers.is_empty() {
        let interval = Duration::from_millis(500);
        let ramp_up = Duration::from_millis(300);
        // Long enough for a server's 2 s anti-entropy to repair a relay lost in the fault.
        let settle = Duration::from_millis(2_500);
        let t0 = ctx.coord_start_ns + ns(ramp_up) + 1_000_000_000;
        let changes = ((end - ns(settle) - t0) / ns(interval)).max(1) as u32;
        // Ticks are due throughout the fault (after 300 ms to let a pause take hold); a kill
        // is instantaneous, so its window is the second after it.
        let window = match mode {
            FaultMode::KillClients => (fault_at, fault_at + 1_000_000_000),
            _ => (fault_at + 300_000_000, fault_end.max(fault_at + 400_000_000)),
        };
        let params = band::Params {
            sessions,
            members,
            changes,
            interval,
            ramp_up,
            settle,
            script: Script::Playing,
            window: Some(window),
        };
        let ctx = ctx.clone();
        members_task = Some(tokio::spawn(async move { band::run_with(params, &ctx).await }));
    }

    // Redis clients and the pool, until the end of the recovery window.
    let end_agent = ctx.clock.to_agent(end);
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (mut con, key, clock, cancel, live) = (
            con.clone(),
            load_key(c),
            ctx.clock,
            ctx.cancel.clone(),
            ctx.live.clone(),
        );
        tasks.spawn(async move {
            let mut log = ClientLog::default();
            let mut k = 0u64;
            let mut tick = tokio::time::interval(OP_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while now_unix_ns() < end_agent && !cancel.is_cancelled() {
                tick.tick().await;
                let started = now_unix_ns();
                let r: redis::RedisResult<()> = if k.is_multiple_of(2) {
                    redis::cmd("SET").arg(&key).arg(k).query_async(&mut con).await
                } else {
                    redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<String>>(&mut con)
                        .await
                        .map(|_| ())
                };
                k += 1;
                let done = now_unix_ns();
                log.latencies_us.push(((done - started).max(0) / 1000) as u64);
                let ok = r.is_ok();
                match r {
                    Ok(()) => {
                        log.ok += 1;
                        live.add_ops(1);
                    }
                    Err(e) => {
                        log.failed += 1;
                        live.add_error();
                        if e.is_timeout() {
                            log.timed_out += 1;
                        }
                    }
                }
                log.ops.push(Op {
                    at_ns: clock.to_coordinator(done),
                    ok,
                });
            }
            log
        });
    }
    let pool_reconnects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pool = {
        let mut cfg = deadpool_redis::Config::from_url(ctx.redis_url.clone());
        let mut pc = deadpool_redis::PoolConfig::new(POOL_SIZE);
        pc.timeouts = deadpool_redis::Timeouts {
            wait: Some(Duration::from_secs(1)),
            create: Some(Duration::from_secs(1)),
            recycle: Some(Duration::from_secs(1)),
        };
        cfg.pool = Some(pc);
        // Connections the pool opens after the fault began are its reconnections.
        let (opened, fault_at_agent) = (pool_reconnects.clone(), ctx.clock.to_agent(fault_at));
        cfg.builder()
            .map_err(|e| WorkloadError::Internal(format!("cannot build the pool: {e}")))?
            .runtime(deadpool_redis::Runtime::Tokio1)
            .post_create(deadpool_redis::Hook::sync_fn(move |_, _| {
                if now_unix_ns() >= fault_at_agent {
                    opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }))
            .build()
            .map_err(|e| WorkloadError::Internal(format!("cannot build the pool: {e}")))?
    };
    let pool_task = {
        let (pool, key, cancel) = (pool.clone(), load_key(0), ctx.cancel.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut waits) = (0u64, 0u64, Vec::new());
            let mut tick = tokio::time::interval(POOL_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while now_unix_ns() < end_agent && !cancel.is_cancelled() {
                tick.tick().await;
                let t = std::time::Instant::now();
                match pool.get().await {
                    Ok(mut c) => {
                        waits.push(t.elapsed().as_micros() as u64);
                        let r: redis::RedisResult<Option<String>> =
                            redis::cmd("GET").arg(&key).query_async(&mut c).await;
                        if r.is_ok() { ok += 1 } else { failed += 1 }
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed, waits)
        })
    };

    let mut m = MetricSet::new();
    let mut logs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        logs.push(r.map_err(|e| WorkloadError::Internal(format!("failover client panicked: {e}")))?);
    }
    let (pool_ok, pool_failed, pool_waits) = pool_task
        .await
        .map_err(|e| WorkloadError::Internal(format!("failover pool panicked: {e}")))?;
    let members_metrics = match members_task {
        Some(t) => Some(
            t.await
                .map_err(|e| WorkloadError::Internal(format!("failover members panicked: {e}")))?,
        ),
        None => None,
    };

    // Read back what was written before the fault, then delete everything this step wrote.
    // Redis may still be coming back: retry for up to 5 s.
    let mut con = con;
    let mut kept = None;
    for _ in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..keys {
            pipe.get(data_key(i));
        }
        match pipe.query_async::<Vec<Option<String>>>(&mut con).await {
            Ok(values) => {
                kept = Some(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(i, v)| v.as_deref() == Some(format!("value-{i}").as_str()))
                        .count() as u64,
                );
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let mut cleanup: Vec<String> = (0..keys).map(data_key).collect();
    cleanup.extend((0..clients).map(load_key));
    let mut cleaned = false;
    for _ in 0..50 {
        if redis::cmd("DEL")
            .arg(&cleanup)
            .query_async::<u64>(&mut con)
            .await
            .is_ok()
        {
            cleaned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !cleaned {
        tracing::warn!("failover: could not delete this step's keys: the coordinator's sweep will");
    }
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }

    // Fold.
    for name in [
        n::OPS_OK,
        n::OPS_FAILED,
        n::OPS_TIMED_OUT,
        n::AGENTS_NOT_RECOVERED,
        n::AGENTS_UNAFFECTED,
    ] {
        m.add_counter(name, 0);
    }
    let mut ops: Vec<&Op> = logs.iter().flat_map(|l| l.ops.iter()).collect();
    ops.sort_by_key(|o| o.at_ns);
    for l in &logs {
        m.add_counter(n::OPS_OK, l.ok);
        m.add_counter(n::OPS_FAILED, l.failed);
        m.add_counter(n::OPS_TIMED_OUT, l.timed_out);
        let h = m.histogram_mut(n::LATENCY_US);
        for v in &l.latencies_us {
            let _ = h.record(*v);
        }
    }
    let first_failure = ops.iter().find(|o| !o.ok).map(|o| o.at_ns);
    let last_failure = ops.iter().rev().find(|o| !o.ok).map(|o| o.at_ns);
    match (first_failure, last_failure) {
        (Some(first), Some(last)) => {
            m.set_gauge(n::FIRST_FAILURE_US, (first / 1000) as f64, GaugeMerge::Min);
            m.set_gauge(n::LAST_FAILURE_US, (last / 1000) as f64, GaugeMerge::Max);
            match ops.iter().find(|o| o.ok && o.at_ns > last) {
                Some(o) => m.set_gauge(n::RECOVERED_AT_US, (o.at_ns / 1000) as f64, GaugeMerge::Max),
                None => m.add_counter(n::AGENTS_NOT_RECOVERED, 1),
            }
        }
        _ => m.add_counter(n::AGENTS_UNAFFECTED, 1),
    }
    m.add_counter(n::KEYS_WRITTEN, keys);
    let kept = kept.unwrap_or(0);
    m.add_counter(n::KEYS_KEPT, kept);
    m.add_counter(n::KEYS_LOST, keys - kept);
    m.add_counter(n::POOL_OK, pool_ok);
    m.add_counter(n::POOL_FAILED, pool_failed);
    m.add_counter(
        n::POOL_RECONNECTS,
        pool_reconnects.load(std::sync::atomic::Ordering::Relaxed),
    );
    let h = m.histogram_mut(n::POOL_WAIT_US);
    for w in pool_waits {
        let _ = h.record(w);
    }
    match members_metrics {
        Some(Ok(members)) => m
            .merge(&members)
            .map_err(|e| WorkloadError::Internal(format!("failover: {e}")))?,
        Some(Err(WorkloadError::Cancelled)) => return Err(WorkloadError::Cancelled),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    Ok(m)
}
