//! Document 2.1, concurrent operations: `clients` clients (divided over the agents) each run
//! `operations` composite operations: HSET the session, HGET it back and parse it, move its
//! position by 100, HSET it again. Each composite operation is timed as one; the step's first
//! start and last end, in coordinator time, give the true throughput of all agents together.
//!
//! `connections = shared` puts every client of this agent on one multiplexed connection, as the
//! document's single ioredis client does; `per_client` gives each client its own.

use std::time::{Duration, Instant};

use bandsync_common::datagen::{SessionData, session_data};
use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::plan::shard_of;
use bandsync_common::workloads::redis_concurrent::Connections;
use bandsync_common::workloads::redis_concurrent::names as n;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinSet;
use tracing::warn;

use super::Run;
use super::date_now_ms;
use super::open;
use super::redis::{connect, delete_keys};
use super::{StepContext, WorkloadError};
use bandsync_common::workloads::RedisConcurrent;
use bandsync_common::workloads::arrival::Arrival;

struct ClientResult {
    hist: Hist,
    ok: u64,
    errors: u64,
    /// Operations started: keys `0..attempted` of this client may exist.
    attempted: u64,
    first_error: Option<String>,
}

pub async fn run(
    clients_total: u64,
    operations: u64,
    members: u32,
    connections: Connections,
    open_model: Option<&Arrival>,
    ctx: &StepContext,
) -> Result<MetricSet, WorkloadError> {
    let clients = shard_of(clients_total, ctx.shard_index, ctx.shard_count);
    let mut m = MetricSet::new();
    m.add_counter(n::CLIENTS, clients);
    if clients == 0 {
        return Ok(m);
    }
    let mut shared = connect(ctx).await?;
    let mut opened = 1u64;
    let mut cons = Vec::with_capacity(clients as usize);
    for _ in 0..clients {
        cons.push(match connections {
            Connections::Shared => shared.clone(),
            Connections::PerClient => {
                opened += 1;
                connect(ctx).await?
            }
        });
    }
    m.add_counter(
        n::CONNECTIONS,
        if connections == Connections::Shared {
            1
        } else {
            opened - 1
        },
    );

    if let Some(arrival) = open_model {
        return open_run(arrival, clients, members, cons, shared, ctx, m).await;
    }
    m.set_gauge(n::START_US, ctx.coord_now_us(), GaugeMerge::Min);
    let mut tasks = JoinSet::new();
    for (client, con) in cons.into_iter().enumerate() {
        let ctx = ctx.clone();
        tasks.spawn(async move { client_loop(client as u64, operations, members, con, &ctx).await });
    }
    let mut attempted = Vec::with_capacity(clients as usize);
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| WorkloadError::Internal(format!("client task failed: {e}")))?;
        m.histogram_mut(n::LATENCY_US)
            .add(&r.hist)
            .map_err(|e| WorkloadError::Internal(format!("{e:?}")))?;
        m.add_counter(n::OK, r.ok);
        m.add_counter(n::ERRORS, r.errors);
        if let Some(e) = r.first_error {
            warn!(errors = r.errors, first = %e, "composite operations failed");
        }
        attempted.push(r.attempted);
    }
    m.set_gauge(n::END_US, ctx.coord_now_us(), GaugeMerge::Max);

    let mut keys = Vec::new();
    for (client, &count) in attempted.iter().enumerate() {
        keys.extend((0..count).map(|i| key(ctx, client as u64, i)));
    }
    let deleted = delete_keys(&mut shared, ctx, keys.into_iter()).await;
    m.add_counter(n::CLEANUP_DELETED, deleted);
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }
    Ok(m)
}

/// The open model: arrival `k` is one composite operation on client `k mod clients`'s session;
/// each client is a worker on its connection (the shared one, or its own).
async fn open_run(
    arrival: &Arrival,
    clients: u64,
    members: u32,
    cons: Vec<MultiplexedConnection>,
    mut shared: MultiplexedConnection,
    ctx: &StepContext,
    mut m: MetricSet,
) -> Result<MetricSet, WorkloadError> {
    m.set_gauge(n::START_US, ctx.coord_now_us(), GaugeMerge::Min);
    // One session per client, its key built once (not per arrival).
    let keys: std::sync::Arc<[String]> = (0..clients).map(|c| key(ctx, c, 0)).collect();
    let sessions = keys.clone();
    let started = open::run(arrival, &["op"], cons, ctx, &mut m, move |mut con, k| {
        let keys = sessions.clone();
        async move {
            let key = &keys[(k % clients) as usize];
            let r = match tokio::time::timeout(Duration::from_secs(10), composite(&mut con, key, members)).await {
                Ok(r) => r,
                Err(_) => Err("composite operation timed out after 10 s".into()),
            };
            (con, r)
        }
    })
    .await;
    m.set_gauge(n::END_US, ctx.coord_now_us(), GaugeMerge::Max);
    let deleted = delete_keys(&mut shared, ctx, keys.iter().cloned()).await;
    m.add_counter(n::CLEANUP_DELETED, deleted);
    started?;
    if ctx.cancel.is_cancelled() {
        return Err(WorkloadError::Cancelled);
    }
    Ok(m)
}

fn key(ctx: &StepContext, client: u64, i: u64) -> String {
    format!("{}concurrent:{client}:{i}", ctx.key_base)
}

async fn client_loop(
    client: u64,
    operations: u64,
    members: u32,
    mut con: MultiplexedConnection,
    ctx: &StepContext,
) -> ClientResult {
    let mut r = ClientResult {
        hist: new_histogram(),
        ok: 0,
        errors: 0,
        attempted: 0,
        first_error: None,
    };
    for i in 0..operations {
        if ctx.cancel.is_cancelled() {
            break;
        }
        r.attempted = i + 1;
        let k = key(ctx, client, i);
        let start = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), composite(&mut con, &k, members)).await {
            Ok(Ok(())) => {
                r.ok += 1;
                let _ = r.hist.record((start.elapsed().as_nanos() as u64 + 500) / 1000);
            }
            Ok(Err(e)) => {
                r.errors += 1;
                ctx.live.add_error();
                r.first_error.get_or_insert(e);
            }
            Err(_) => {
                r.errors += 1;
                ctx.live.add_error();
                r.first_error
                    .get_or_insert_with(|| "composite operation timed out after 10 s".into());
            }
        }
        ctx.live.add_ops(1);
    }
    r
}

/// HSET {data, lastUpdate, memberCount}; HGET data and parse it; position += 100; HSET data.
async fn composite(con: &mut MultiplexedConnection, key: &str, members: u32) -> Result<(), String> {
    let session = session_data(members, date_now_ms());
    let data = serde_json::to_string(&session).map_err(|e| e.to_string())?;
    redis::cmd("HSET")
        .arg(key)
        .arg("data")
        .arg(&data)
        .arg("lastUpdate")
        .arg(date_now_ms())
        .arg("memberCount")
        .arg(session.members.len())
        .query_async::<()>(con)
        .await
        .map_err(|e| e.to_string())?;
    let read: Option<String> = redis::cmd("HGET")
        .arg(key)
        .arg("data")
        .query_async(con)
        .await
        .map_err(|e| e.to_string())?;
    let mut parsed: SessionData = serde_json::from_str(&read.ok_or("HGET returned nothing for a field just written")?)
        .map_err(|e| e.to_string())?;
    parsed.position += 100;
    let updated = serde_json::to_string(&parsed).map_err(|e| e.to_string())?;
    redis::cmd("HSET")
        .arg(key)
        .arg("data")
        .arg(updated)
        .query_async::<()>(con)
        .await
        .map_err(|e| e.to_string())
}
impl Run for RedisConcurrent {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        run(
            self.clients,
            self.operations,
            self.members,
            self.connections,
            self.open.as_ref(),
            ctx,
        )
        .await
    }
}
