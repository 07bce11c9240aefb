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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bandsync_common::clock::{ClockEstimate, now_unix_ns};
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::plan::FaultMode;
use bandsync_common::workloads::redis_failover::names as n;
use redis::aio::ConnectionManager;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Run;
use super::band::{self, Script};
use super::{Live, StepContext, WorkloadError};
use bandsync_common::workloads::RedisFailover;
use bandsync_common::workloads::band::Band;

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
    let ns = |d: Duration| d.as_nanos() as i64;
    let fault_at = ctx.coord_start_ns + ns(p.warmup);
    let fault_end = fault_at + ns(p.duration);
    let end = fault_end + ns(p.recovery);
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
    let keys = Keys {
        base: ctx.key_base.clone(),
        data: p.keys,
        clients: p.clients,
    };
    // Data written before the fault, to read back after it.
    let mut pipe = redis::pipe();
    for i in 0..keys.data {
        pipe.set(keys.data(i), format!("value-{i}")).ignore();
    }
    pipe.query_async::<()>(&mut con.clone()).await.map_err(unreachable)?;

    let members_task = spawn_members(p, ctx, (fault_at, fault_end, end));
    // Redis clients and the pool, until the end of the recovery window.
    let end_agent = ctx.clock.to_agent(end);
    let mut tasks = JoinSet::new();
    for c in 0..p.clients {
        let (con, key) = (con.clone(), keys.load(c));
        let (clock, cancel, live) = (ctx.clock, ctx.cancel.clone(), ctx.live.clone());
        tasks.spawn(async move { client_loop(con, key, end_agent, clock, cancel, live).await });
    }
    let pool_reconnects = Arc::new(AtomicU64::new(0));
    let pool = build_pool(ctx, ctx.clock.to_agent(fault_at), pool_reconnects.clone())?;
    let pool_task = tokio::spawn(pool_loop(pool, keys.load(0), end_agent, ctx.cancel.clone()));

    let mut logs = Vec::new();
    while let Some(r) = tasks.join_next().await {
        logs.push(r.map_err(|e| WorkloadError::Internal(format!("failover client panicked: {e}")))?);
    }
    let pool_log = pool_task
        .await
        .map_err(|e| WorkloadError::Internal(format!("failover pool panicked: {e}")))?;
    let members_metrics = match members_task {
        Some(t) => Some(
            t.await
                .map_err(|e| WorkloadError::Internal(format!("failover members panicked: {e}")))?,
        ),
        None => None,
    };
    let kept = read_back_and_clean(con, &keys).await;
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }

    let mut m = fold(&logs, &pool_log, pool_reconnects.load(Ordering::Relaxed));
    m.add_counter(n::KEYS_WRITTEN, keys.data);
    let kept = kept.unwrap_or(0);
    m.add_counter(n::KEYS_KEPT, kept);
    m.add_counter(n::KEYS_LOST, keys.data - kept);
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

/// The keys this step writes: `data` read back after the fault, one load key per client.
struct Keys {
    base: String,
    data: u64,
    clients: u32,
}

impl Keys {
    fn data(&self, i: u64) -> String {
        format!("{}failover:data:{i}", self.base)
    }

    fn load(&self, c: u32) -> String {
        format!("{}failover:load:{c}", self.base)
    }

    fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = (0..self.data).map(|i| self.data(i)).collect();
        all.extend((0..self.clients).map(|c| self.load(c)));
        all
    }
}

type MembersTask = tokio::task::JoinHandle<Result<MetricSet, WorkloadError>>;

/// Socket.IO members playing through the fault (both server instances), when the step has any.
/// `times`: fault start, fault end, end of the recovery window (coordinator ns).
fn spawn_members(p: &RedisFailover, ctx: &StepContext, times: (i64, i64, i64)) -> Option<MembersTask> {
    let (fault_at, fault_end, end) = times;
    if p.sessions == 0 || ctx.servers.is_empty() {
        return None;
    }
    let ns = |d: Duration| d.as_nanos() as i64;
    let interval = Duration::from_millis(500);
    let ramp_up = Duration::from_millis(300);
    // Long enough for a server's 2 s anti-entropy to repair a relay lost in the fault.
    let settle = Duration::from_millis(2_500);
    let t0 = ctx.coord_start_ns + ns(ramp_up) + 1_000_000_000;
    let changes = ((end - ns(settle) - t0) / ns(interval)).max(1) as u32;
    // Ticks are due throughout the fault (after 300 ms to let a pause take hold); a kill
    // is instantaneous, so its window is the second after it.
    let window = match p.mode {
        FaultMode::KillClients => (fault_at, fault_at + 1_000_000_000),
        _ => (fault_at + 300_000_000, fault_end.max(fault_at + 400_000_000)),
    };
    let params = band::Params {
        band: Band {
            sessions: p.sessions,
            members: p.members,
            changes,
            interval,
            ramp_up,
            settle,
        },
        script: Script::Playing,
        window: Some(window),
    };
    let ctx = ctx.clone();
    Some(tokio::spawn(async move { band::run_with(params, &ctx).await }))
}

/// One fail-fast client: SET and GET its key every 10 ms until `end_agent`.
async fn client_loop(
    mut con: ConnectionManager,
    key: String,
    end_agent: i64,
    clock: ClockEstimate,
    cancel: CancellationToken,
    live: Arc<Live>,
) -> ClientLog {
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
}

/// A deadpool-redis pool of 4 with 1 s timeouts; connections it opens after `fault_at_agent`
/// are counted in `opened` (its reconnections).
fn build_pool(
    ctx: &StepContext,
    fault_at_agent: i64,
    opened: Arc<AtomicU64>,
) -> Result<deadpool_redis::Pool, WorkloadError> {
    let mut cfg = deadpool_redis::Config::from_url(ctx.redis_url.clone());
    let mut pc = deadpool_redis::PoolConfig::new(POOL_SIZE);
    pc.timeouts = deadpool_redis::Timeouts {
        wait: Some(Duration::from_secs(1)),
        create: Some(Duration::from_secs(1)),
        recycle: Some(Duration::from_secs(1)),
    };
    cfg.pool = Some(pc);
    let err = |e: &dyn std::fmt::Display| WorkloadError::Internal(format!("cannot build the pool: {e}"));
    cfg.builder()
        .map_err(|e| err(&e))?
        .runtime(deadpool_redis::Runtime::Tokio1)
        .post_create(deadpool_redis::Hook::sync_fn(move |_, _| {
            if now_unix_ns() >= fault_at_agent {
                opened.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }))
        .build()
        .map_err(|e| err(&e))
}

#[derive(Default)]
struct PoolLog {
    ok: u64,
    failed: u64,
    waits_us: Vec<u64>,
}

/// A GET through the pool every 20 ms until `end_agent`.
async fn pool_loop(pool: deadpool_redis::Pool, key: String, end_agent: i64, cancel: CancellationToken) -> PoolLog {
    let mut log = PoolLog::default();
    let mut tick = tokio::time::interval(POOL_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while now_unix_ns() < end_agent && !cancel.is_cancelled() {
        tick.tick().await;
        let t = std::time::Instant::now();
        match pool.get().await {
            Ok(mut c) => {
                log.waits_us.push(t.elapsed().as_micros() as u64);
                let r: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query_async(&mut c).await;
                if r.is_ok() { log.ok += 1 } else { log.failed += 1 }
            }
            Err(_) => log.failed += 1,
        }
    }
    log
}

/// Reads back what was written before the fault (how many kept, None if Redis never answered),
/// then deletes everything this step wrote. Redis may still be coming back: each retries for
/// up to 5 s.
async fn read_back_and_clean(mut con: ConnectionManager, keys: &Keys) -> Option<u64> {
    let mut kept = None;
    for _ in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..keys.data {
            pipe.get(keys.data(i));
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
    let cleanup = keys.all();
    for _ in 0..50 {
        if redis::cmd("DEL")
            .arg(&cleanup)
            .query_async::<u64>(&mut con)
            .await
            .is_ok()
        {
            return kept;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!("failover: could not delete this step's keys: the coordinator's sweep will");
    kept
}

/// The clients' and the pool's logs as metrics: counts, latencies, detection and recovery.
fn fold(logs: &[ClientLog], pool: &PoolLog, pool_reconnects: u64) -> MetricSet {
    let mut m = MetricSet::new();
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
    for l in logs {
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
    m.add_counter(n::POOL_OK, pool.ok);
    m.add_counter(n::POOL_FAILED, pool.failed);
    m.add_counter(n::POOL_RECONNECTS, pool_reconnects);
    let h = m.histogram_mut(n::POOL_WAIT_US);
    for w in &pool.waits_us {
        let _ = h.record(*w);
    }
    m
}
