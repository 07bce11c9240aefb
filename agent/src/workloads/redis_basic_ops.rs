//! Document 2.1, basic operations: SET, GET, HSET, HGET and DEL of the document's session JSON,
//! `iterations` of each, one after the other on one connection, as the document's single awaited
//! ioredis client does (`clients = 1`); with more clients, each has its own connection and a
//! share of the iterations, which is what `redis-benchmark -c N` does. Each operation's latency goes into an HDR histogram in µs; its first start
//! and last end, in coordinator time, give the throughput of all agents together.
//!
//! Every key is `{prefix}:{run_id}:agent{index}:...`; whatever happens, the step deletes every key
//! it may have written before returning.

use std::sync::Arc;
use std::time::Instant;

use bandsync_common::datagen::session_data;
use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::redis_basic_ops::names as basic_ops;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;
use tracing::warn;

use super::Run;
use super::date_now_ms;
use super::open;
use super::redis::{connect, delete_keys};
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::RedisBasicOps;
use bandsync_common::workloads::arrival::Arrival;
use bandsync_common::workloads::redis_basic_ops::OPEN_KEYS;

#[derive(Clone, Copy, Debug)]
enum Op {
    Set,
    Get,
    Hset,
    Hget,
    Del,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Set => "set",
            Op::Get => "get",
            Op::Hset => "hset",
            Op::Hget => "hget",
            Op::Del => "del",
        }
    }
}

/// What every client of the step shares.
struct Shared {
    key_base: String,
    data: String,
    member_count: String,
}

impl Shared {
    fn set_key(&self, i: u64) -> String {
        format!("{}set:{i}", self.key_base)
    }
    fn hash_key(&self, i: u64) -> String {
        format!("{}session:{i}", self.key_base)
    }
}

/// One client's share of a phase.
struct ClientPhase {
    hist: Hist,
    ok: u64,
    errors: u64,
    /// Indices started, from the client's first one.
    attempted: u64,
    first_error: Option<String>,
}

/// The clients' connections, the session JSON they write, and the metrics that say so.
async fn setup(
    members: u32,
    clients: u32,
    ctx: &StepContext,
) -> Result<(Vec<MultiplexedConnection>, Arc<Shared>, MetricSet), WorkloadError> {
    let mut cons = Vec::with_capacity(clients as usize);
    for _ in 0..clients.max(1) {
        cons.push(connect(ctx).await?);
    }
    let session = session_data(members, date_now_ms());
    let shared = Arc::new(Shared {
        key_base: ctx.key_base.clone(),
        data: serde_json::to_string(&session).map_err(|e| WorkloadError::Internal(e.to_string()))?,
        member_count: session.members.len().to_string(),
    });
    let mut m = MetricSet::new();
    m.set_gauge(basic_ops::PAYLOAD_BYTES, shared.data.len() as f64, GaugeMerge::Max);
    m.add_counter(basic_ops::CLIENTS, cons.len() as u64);
    Ok((cons, shared, m))
}

pub async fn basic_ops(
    iterations: u64,
    members: u32,
    clients: u32,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let (mut cons, shared, mut m) = setup(members, clients, ctx).await?;

    // Client c owns indices ranges[c].0 .. ranges[c].0 + ranges[c].1; attempted counts per family.
    let count = cons.len() as u32;
    let mut ranges = Vec::with_capacity(cons.len());
    let mut first = 0;
    for c in 0..count {
        let n = shard_of(iterations, c, count);
        ranges.push((first, n));
        first += n;
    }
    let mut set_attempted = vec![0u64; cons.len()];
    let mut hash_attempted = vec![0u64; cons.len()];

    let mut outcome = Ok(());
    for op in [Op::Set, Op::Get, Op::Hset, Op::Hget, Op::Del] {
        if ctx.cancel.is_cancelled() {
            outcome = Err(WorkloadError::Cancelled);
            break;
        }
        let attempted = phase(&mut m, op, &cons, &ranges, &shared, ctx).await?;
        match op {
            Op::Set => set_attempted = attempted,
            Op::Hset => hash_attempted = attempted,
            _ => {}
        }
    }
    if ctx.cancel.is_cancelled() {
        outcome = Err(WorkloadError::Cancelled);
    }

    // Cleanup runs whatever happened above: the hashes, and any SET key a cancelled run left.
    let mut keys = Vec::new();
    for (c, &(first, _)) in ranges.iter().enumerate() {
        keys.extend((first..first + set_attempted[c]).map(|i| shared.set_key(i)));
        keys.extend((first..first + hash_attempted[c]).map(|i| shared.hash_key(i)));
    }
    let deleted = delete_keys(&mut cons[0], ctx, keys.into_iter()).await;
    m.add_counter(basic_ops::CLEANUP_DELETED, deleted);
    outcome.map(|()| m)
}

/// Runs one operation over every client's range at once, recording each operation's latency,
/// ok/error, the phase's start and end in coordinator time and the process CPU it took.
/// Returns how many indices each client started.
async fn phase(
    m: &mut MetricSet,
    op: Op,
    cons: &[MultiplexedConnection],
    ranges: &[(u64, u64)],
    shared: &Arc<Shared>,
    ctx: &StepContext,
) -> Result<Vec<u64>, WorkloadError> {
    let cpu_before = crate::proc::cpu_us();
    m.set_gauge(&basic_ops::start_us(op.name()), ctx.coord_now_us(), GaugeMerge::Min);
    let mut tasks = JoinSet::new();
    for (c, (con, &(first, n))) in cons.iter().zip(ranges).enumerate() {
        let (mut con, shared, ctx) = (con.clone(), shared.clone(), ctx.clone());
        tasks.spawn(async move { (c, client_phase(op, &mut con, first, n, &shared, &ctx).await) });
    }
    let mut attempted = vec![0u64; cons.len()];
    let hist_name = basic_ops::latency_us(op.name());
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    while let Some(joined) = tasks.join_next().await {
        let (c, r) = joined.map_err(|e| WorkloadError::Internal(format!("client task failed: {e}")))?;
        m.histogram_mut(&hist_name)
            .add(&r.hist)
            .map_err(|e| WorkloadError::Internal(format!("{e:?}")))?;
        ok += r.ok;
        errors += r.errors;
        attempted[c] = r.attempted;
        first_error = first_error.or(r.first_error);
    }
    m.set_gauge(&basic_ops::end_us(op.name()), ctx.coord_now_us(), GaugeMerge::Max);
    if let (Some(before), Some(after)) = (cpu_before, crate::proc::cpu_us()) {
        m.set_gauge(
            &basic_ops::cpu_us(op.name()),
            after.saturating_sub(before) as f64,
            GaugeMerge::Sum,
        );
    }
    m.add_counter(&basic_ops::ok(op.name()), ok);
    m.add_counter(&basic_ops::errors(op.name()), errors);
    if let Some(e) = first_error {
        warn!(op = op.name(), errors, first = %e, "operations failed");
    }
    Ok(attempted)
}

async fn client_phase(
    op: Op,
    con: &mut MultiplexedConnection,
    first: u64,
    n: u64,
    s: &Shared,
    ctx: &StepContext,
) -> ClientPhase {
    let mut r = ClientPhase {
        hist: new_histogram(),
        ok: 0,
        errors: 0,
        attempted: 0,
        first_error: None,
    };
    for i in first..first + n {
        if ctx.cancel.is_cancelled() {
            break;
        }
        r.attempted += 1;
        let start = Instant::now();
        let result = one_op(op, con, i, s).await;
        let us = (start.elapsed().as_nanos() as u64 + 500) / 1000;
        match result {
            Ok(()) => {
                r.ok += 1;
                let _ = r.hist.record(us);
            }
            Err(e) => {
                r.errors += 1;
                ctx.live.add_error();
                r.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        ctx.live.add_ops(1);
    }
    r
}

/// One operation of `op` on key index `i`.
async fn one_op(op: Op, con: &mut MultiplexedConnection, i: u64, s: &Shared) -> redis::RedisResult<()> {
    match op {
        Op::Set => {
            redis::cmd("SET")
                .arg(s.set_key(i))
                .arg(&s.data)
                .query_async::<()>(con)
                .await
        }
        Op::Get => redis::cmd("GET")
            .arg(s.set_key(i))
            .query_async::<Option<Vec<u8>>>(con)
            .await
            .map(drop),
        Op::Hset => {
            redis::cmd("HSET")
                .arg(s.hash_key(i))
                .arg("data")
                .arg(&s.data)
                .arg("lastUpdate")
                .arg(date_now_ms())
                .arg("memberCount")
                .arg(&s.member_count)
                .query_async::<()>(con)
                .await
        }
        Op::Hget => redis::cmd("HGET")
            .arg(s.hash_key(i))
            .arg("data")
            .query_async::<Option<Vec<u8>>>(con)
            .await
            .map(drop),
        Op::Del => redis::cmd("DEL").arg(s.set_key(i)).query_async::<()>(con).await,
    }
}

/// The open model: arrival `k` is operation `OPS[k % 5]` on key index `(k / 5) % OPEN_KEYS`, so
/// each key is SET, read, HSET, read and its SET deleted in turn.
async fn open_ops(
    arrival: &Arrival,
    members: u32,
    clients: u32,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let (cons, shared, mut m) = setup(members, clients, ctx).await?;
    let mut cleanup_con = cons[0].clone();
    const ORDER: [Op; 5] = [Op::Set, Op::Get, Op::Hset, Op::Hget, Op::Del];
    let s = shared.clone();
    let started = open::run(arrival, &basic_ops::OPS, cons, ctx, &mut m, move |mut con, k| {
        let s = s.clone();
        async move {
            let i = (k / 5) % OPEN_KEYS;
            one_op(ORDER[(k % 5) as usize], &mut con, i, &s)
                .await
                .map_err(|e| e.to_string())
        }
    })
    .await;
    // Cleanup runs whatever happened: every key index the schedule may have reached.
    let reached = started
        .as_ref()
        .map_or(OPEN_KEYS, |s| s.arrivals.div_ceil(5).min(OPEN_KEYS));
    let keys = (0..reached).flat_map(|i| [shared.set_key(i), shared.hash_key(i)]);
    let deleted = delete_keys(&mut cleanup_con, ctx, keys).await;
    m.add_counter(basic_ops::CLEANUP_DELETED, deleted);
    started?;
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }
    Ok(m)
}

impl Run for RedisBasicOps {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        match &self.open {
            Some(arrival) => open_ops(arrival, self.members, self.clients, ctx).await,
            None => basic_ops(self.iterations, self.members, self.clients, ctx).await,
        }
    }
}
