//! Document 2.1, basic operations: SET, GET, HSET, HGET and DEL of the document's session JSON,
//! `iterations` of each, one after the other on one connection, as the document's single awaited
//! ioredis client does (`clients = 1`); with more clients, each has its own connection and a
//! share of the iterations, which is what `redis-benchmark -c N` does. Each operation's latency goes into an HDR histogram in µs; its first start
//! and last end, in coordinator time, give the throughput of all agents together.
//!
//! Every key is `{prefix}:{run_id}:agent{index}:...`; whatever happens, the step deletes every key
//! it may have written before returning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bandsync_common::datagen::session_data;
use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::redis_basic_ops::names as basic_ops;
use tokio::task::JoinSet;
use tracing::warn;

use super::Run;
use super::date_now_ms;
use super::open;
use super::redis::{RESPONSE_TIMEOUT, connect, delete_keys, on_own_thread};
use super::sequential::Client;
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

/// Up to this many clients per agent, each runs on a thread of its own with a blocking
/// connection: a write and a blocking read per operation, no event loop between them, the
/// cheapest sequential client there is. More clients share the step's event loop.
const THREAD_CLIENTS: u32 = 4;

/// One sequential client's connection.
enum Conn {
    /// On the step's event loop (see [`Client`]).
    Async(Box<Client>),
    /// The `redis` crate's blocking connection, used from a thread of its own.
    Blocking(Box<redis::Connection>),
}

impl Conn {
    /// A blocking connection when `blocking`, with the same connect and reply limits as the
    /// event loop's.
    async fn connect(ctx: &StepContext, blocking: bool) -> Result<Conn, WorkloadError> {
        if !blocking {
            return Ok(Conn::Async(Box::new(Client::connect(ctx).await?)));
        }
        let url = ctx.redis_url.clone();
        let unreachable = |reason: String| WorkloadError::Unreachable {
            url: bandsync_common::report::redact_url(&url),
            reason,
        };
        let opened = tokio::task::spawn_blocking({
            let url = ctx.redis_url.clone();
            move || -> redis::RedisResult<redis::Connection> {
                let con = super::redis::client(&url)?.get_connection_with_timeout(Duration::from_secs(5))?;
                con.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
                con.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
                Ok(con)
            }
        })
        .await
        .map_err(|e| WorkloadError::Internal(format!("connect task failed: {e}")))?;
        opened
            .map(|c| Conn::Blocking(Box::new(c)))
            .map_err(|e| unreachable(e.to_string()))
    }
}

/// The clients' connections (blocking ones when `blocking` and few enough), the session JSON they
/// write, and the metrics that say so.
async fn setup(
    members: u32,
    clients: u32,
    blocking: bool,
    ctx: &StepContext,
) -> Result<(Vec<Conn>, Arc<Shared>, MetricSet), WorkloadError> {
    let blocking = blocking && clients <= THREAD_CLIENTS;
    let mut cons = Vec::with_capacity(clients as usize);
    for _ in 0..clients.max(1) {
        cons.push(Conn::connect(ctx, blocking).await?);
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
    let (mut cons, shared, mut m) = setup(members, clients, true, ctx).await?;
    let mut cleanup_con = connect(ctx).await?;

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
        let attempted = phase(&mut m, op, &mut cons, &ranges, &shared, ctx).await?;
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
    let deleted = delete_keys(&mut cleanup_con, ctx, keys.into_iter()).await;
    m.add_counter(basic_ops::CLEANUP_DELETED, deleted);
    outcome.map(|()| m)
}

/// Runs one operation over every client's range at once, recording each operation's latency,
/// ok/error, the phase's start and end in coordinator time and the process CPU it took.
/// Returns how many indices each client started.
async fn phase(
    m: &mut MetricSet,
    op: Op,
    cons: &mut Vec<Conn>,
    ranges: &[(u64, u64)],
    shared: &Arc<Shared>,
    ctx: &StepContext,
) -> Result<Vec<u64>, WorkloadError> {
    let cpu_before = crate::proc::cpu_us();
    m.set_gauge(&basic_ops::start_us(op.name()), ctx.coord_now_us(), GaugeMerge::Min);
    let mut tasks = JoinSet::new();
    let count = cons.len();
    for (c, (con, &(first, n))) in cons.drain(..).zip(ranges).enumerate() {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        match con {
            Conn::Async(mut con) => tasks.spawn(async move {
                let r = client_phase(op, &mut con, first, n, &shared, &ctx).await;
                (c, Conn::Async(con), r)
            }),
            Conn::Blocking(mut con) => tasks.spawn_blocking(move || {
                let r = blocking_phase(op, &mut con, first, n, &shared, &ctx);
                (c, Conn::Blocking(con), r)
            }),
        };
    }
    let mut attempted = vec![0u64; count];
    let mut back: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    let hist_name = basic_ops::latency_us(op.name());
    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
    while let Some(joined) = tasks.join_next().await {
        let (c, con, r) = joined.map_err(|e| WorkloadError::Internal(format!("client task failed: {e}")))?;
        back[c] = Some(con);
        m.histogram_mut(&hist_name)
            .add(&r.hist)
            .map_err(|e| WorkloadError::Internal(format!("{e:?}")))?;
        ok += r.ok;
        errors += r.errors;
        attempted[c] = r.attempted;
        first_error = first_error.or(r.first_error);
    }
    // Every task ended (or the error above returned): the clients come back in their order.
    cons.extend(back.into_iter().flatten());
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

async fn client_phase(op: Op, con: &mut Client, first: u64, n: u64, s: &Shared, ctx: &StepContext) -> ClientPhase {
    let mut r = ClientPhase::new();
    for i in first..first + n {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let start = Instant::now();
        let result = one_op(op, con, i, s).await;
        r.account(start, result, ctx);
    }
    r
}

/// [`client_phase`] on a blocking connection, on a thread of its own.
fn blocking_phase(
    op: Op,
    con: &mut redis::Connection,
    first: u64,
    n: u64,
    s: &Shared,
    ctx: &StepContext,
) -> ClientPhase {
    let mut r = ClientPhase::new();
    for i in first..first + n {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let start = Instant::now();
        let result = command(op, i, s).query::<redis::Value>(con).map(drop);
        r.account(start, result, ctx);
    }
    r
}

impl ClientPhase {
    fn new() -> Self {
        ClientPhase {
            hist: new_histogram(),
            ok: 0,
            errors: 0,
            attempted: 0,
            first_error: None,
        }
    }

    /// One operation started at `start` ended with `result`.
    fn account(&mut self, start: Instant, result: redis::RedisResult<()>, ctx: &StepContext) {
        let us = (start.elapsed().as_nanos() as u64 + 500) / 1000;
        self.attempted += 1;
        match result {
            Ok(()) => {
                self.ok += 1;
                let _ = self.hist.record(us);
            }
            Err(e) => {
                self.errors += 1;
                ctx.live.add_error();
                self.first_error.get_or_insert_with(|| e.to_string());
            }
        }
        ctx.live.add_ops(1);
    }
}

/// The command of operation `op` on key index `i`.
fn command(op: Op, i: u64, s: &Shared) -> redis::Cmd {
    let mut c;
    match op {
        Op::Set => {
            c = redis::cmd("SET");
            c.arg(s.set_key(i)).arg(&s.data);
        }
        Op::Get => {
            c = redis::cmd("GET");
            c.arg(s.set_key(i));
        }
        Op::Hset => {
            c = redis::cmd("HSET");
            c.arg(s.hash_key(i))
                .arg("data")
                .arg(&s.data)
                .arg("lastUpdate")
                .arg(date_now_ms())
                .arg("memberCount")
                .arg(&s.member_count);
        }
        Op::Hget => {
            c = redis::cmd("HGET");
            c.arg(s.hash_key(i)).arg("data");
        }
        Op::Del => {
            c = redis::cmd("DEL");
            c.arg(s.set_key(i));
        }
    }
    c
}

/// One operation of `op` on key index `i`.
async fn one_op(op: Op, con: &mut Client, i: u64, s: &Shared) -> redis::RedisResult<()> {
    command(op, i, s).query_async::<redis::Value>(con).await.map(drop)
}

/// The open model: arrival `k` is operation `OPS[k % 5]` on key index `(k / 5) % OPEN_KEYS`, so
/// each key is SET, read, HSET, read and its SET deleted in turn.
async fn open_ops(
    arrival: &Arrival,
    members: u32,
    clients: u32,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let (cons, shared, mut m) = setup(members, clients, false, ctx).await?;
    let cons: Vec<Client> = cons
        .into_iter()
        .filter_map(|c| match c {
            Conn::Async(c) => Some(*c),
            Conn::Blocking(_) => None,
        })
        .collect();
    // The workers own the clients: cleanup has its own connection.
    let mut cleanup_con = connect(ctx).await?;
    const ORDER: [Op; 5] = [Op::Set, Op::Get, Op::Hset, Op::Hget, Op::Del];
    let s = shared.clone();
    let started = open::run(arrival, &basic_ops::OPS, cons, ctx, &mut m, move |mut con, k| {
        let s = s.clone();
        async move {
            let i = (k / 5) % OPEN_KEYS;
            let r = one_op(ORDER[(k % 5) as usize], &mut con, i, &s)
                .await
                .map_err(|e| e.to_string());
            (con, r)
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
    /// On a runtime of the step's own (see [`on_own_thread`]).
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        let (p, ctx) = (self.clone(), ctx.clone());
        let agent = ctx.agent_index;
        on_own_thread("redis_basic_ops", agent, move || async move {
            match &p.open {
                Some(arrival) => open_ops(arrival, p.members, p.clients, &ctx).await,
                None => basic_ops(p.iterations, p.members, p.clients, &ctx).await,
            }
        })
        .await
    }
}
