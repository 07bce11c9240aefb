//! The open-model executor (see `bandsync_common::workloads::arrival`): a scheduler task
//! releases arrivals at their intended instants, whatever the replies do, into one queue that
//! `connections` workers serve, each sequentially on its own connection (wrk2's model). An
//! arrival that finds `max_in_flight` operations outstanding (queued or awaiting a reply) is
//! dropped and counted. Each operation's latency is recorded twice: from its intended start
//! (`{label}.intended_us`) and from its send (`{label}.latency_us`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bandsync_common::metrics::{GaugeMerge, Hist, MetricSet, new_histogram};
use bandsync_common::workloads::arrival::{Arrival, names};
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::warn;

use super::{StepContext, WorkloadError};

/// What one worker measured.
struct WorkerResult {
    /// Per label: send-to-reply and intended-to-reply histograms, ok, errors.
    service: Vec<Hist>,
    intended: Vec<Hist>,
    ok: Vec<u64>,
    errors: Vec<u64>,
    /// Completions by bucket of the end instant.
    done: Vec<u64>,
    first_error: Option<String>,
}

/// What the run started, for the workload's cleanup.
#[derive(Debug, Default)]
pub struct Started {
    /// The highest arrival index started, plus one (0: none).
    pub arrivals: u64,
}

fn us(d: Duration) -> u64 {
    (d.as_nanos() as u64 + 500) / 1000
}

/// Runs this agent's share of `arrival`: arrival `k` is operation `op(con, k)` (which hands the
/// worker's connection back with its outcome) of label
/// `labels[k % labels.len()]`, served by one of `cons` (one worker each). Writes the per-label
/// counters and histograms, the series and the scheduler's lateness into `m`.
pub async fn run<C, F, Fut>(
    arrival: &Arrival,
    labels: &[&str],
    cons: Vec<C>,
    ctx: &StepContext,
    m: &mut MetricSet,
    op: F,
) -> Result<Started, WorkloadError>
where
    C: Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (C, Result<(), String>)> + Send,
{
    let share = arrival.share(ctx.shard_count);
    let phase = f64::from(ctx.shard_index) / f64::from(ctx.shard_count.max(1));
    let bucket = arrival.bucket();
    let bucket_ns = bucket.as_nanos() as u64;
    let buckets = (arrival.total().as_nanos() as u64).div_ceil(bucket_ns) as usize + 1;
    let labels: Arc<[String]> = labels.iter().map(|l| (*l).to_owned()).collect();
    let slots = Arc::new(Semaphore::new(share.max_in_flight as usize));
    let (tx, rx) = mpsc::unbounded_channel::<(u64, Instant, tokio::sync::OwnedSemaphorePermit)>();
    let rx = Arc::new(Mutex::new(rx));
    let op = Arc::new(op);
    let t0 = Instant::now();
    m.set_gauge(names::BUCKET_MS, bucket.as_millis() as f64, GaugeMerge::Max);
    for l in labels.iter() {
        m.set_gauge(&format!("{l}.start_us"), ctx.coord_now_us(), GaugeMerge::Min);
    }

    let mut workers = JoinSet::new();
    for mut con in cons {
        let (rx, op, labels, ctx) = (rx.clone(), op.clone(), labels.clone(), ctx.clone());
        workers.spawn(async move {
            let n = labels.len();
            let mut r = WorkerResult {
                service: (0..n).map(|_| new_histogram()).collect(),
                intended: (0..n).map(|_| new_histogram()).collect(),
                ok: vec![0; n],
                errors: vec![0; n],
                done: vec![0; buckets],
                first_error: None,
            };
            loop {
                let next = rx.lock().await.recv().await;
                let Some((k, due, permit)) = next else { break };
                if ctx.cancel.is_cancelled() {
                    continue;
                }
                let label = (k % n as u64) as usize;
                let sent = Instant::now();
                let (back, result) = op(con, k).await;
                con = back;
                let end = Instant::now();
                drop(permit);
                match result {
                    Ok(()) => {
                        r.ok[label] += 1;
                        let _ = r.service[label].record(us(end - sent));
                        let _ = r.intended[label].record(us(end - due));
                    }
                    Err(e) => {
                        r.errors[label] += 1;
                        ctx.live.add_error();
                        r.first_error.get_or_insert(e);
                    }
                }
                let b = ((end - t0).as_nanos() as u64 / bucket_ns) as usize;
                r.done[b.min(buckets - 1)] += 1;
                ctx.live.add_ops(1);
            }
            r
        });
    }

    // The scheduler: never waits for a reply.
    let (mut due_in, mut dropped_in) = (vec![0u64; buckets], vec![0u64; buckets]);
    let (mut due, mut started, mut dropped) = (0u64, 0u64, 0u64);
    let mut lag = new_histogram();
    let mut k = 0u64;
    for offset in share.schedule(phase) {
        let at = t0 + Duration::from_nanos(offset);
        // One clock read per arrival released in a burst; a second only after sleeping.
        let mut now = Instant::now();
        if at > now {
            tokio::select! {
                () = tokio::time::sleep_until(at) => now = Instant::now(),
                () = ctx.cancel.cancelled() => break,
            }
        } else if ctx.cancel.is_cancelled() {
            break;
        }
        let _ = lag.record(us(now.saturating_duration_since(at)));
        let b = (offset / bucket_ns) as usize;
        due += 1;
        due_in[b.min(buckets - 1)] += 1;
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                started += 1;
                // The workers hold the receiver until the sender is dropped.
                let _ = tx.send((k, at, permit));
            }
            Err(_) => {
                dropped += 1;
                dropped_in[b.min(buckets - 1)] += 1;
            }
        }
        k += 1;
        // Let the workers run between arrivals released in a burst.
        if k.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    drop(tx);

    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let r = joined.map_err(|e| WorkloadError::Internal(format!("open-model worker failed: {e}")))?;
        for (i, l) in labels.iter().enumerate() {
            let add = |m: &mut MetricSet, name: String, h: &Hist| {
                m.histogram_mut(&name)
                    .add(h)
                    .map_err(|e| WorkloadError::Internal(format!("{e:?}")))
            };
            add(m, format!("{l}.latency_us"), &r.service[i])?;
            add(m, names::intended_us(l), &r.intended[i])?;
            m.add_counter(&format!("{l}.ok"), r.ok[i]);
            m.add_counter(&format!("{l}.errors"), r.errors[i]);
        }
        for (b, n) in r.done.iter().enumerate().filter(|(_, n)| **n > 0) {
            m.add_counter(&names::done_in(b as u64), *n);
        }
        first_error = first_error.or(r.first_error);
    }
    for l in labels.iter() {
        m.set_gauge(&format!("{l}.end_us"), ctx.coord_now_us(), GaugeMerge::Max);
    }
    for (b, n) in due_in.iter().enumerate().filter(|(_, n)| **n > 0) {
        m.add_counter(&names::due_in(b as u64), *n);
    }
    for (b, n) in dropped_in.iter().enumerate().filter(|(_, n)| **n > 0) {
        m.add_counter(&names::dropped_in(b as u64), *n);
    }
    m.add_counter(names::DUE, due);
    m.add_counter(names::STARTED, started);
    m.add_counter(names::DROPPED, dropped);
    m.add_counter(&names::dropped_by(ctx.agent_index), dropped);
    m.histogram_mut(names::TIMER_LAG_US)
        .add(&lag)
        .map_err(|e| WorkloadError::Internal(format!("{e:?}")))?;
    if let Some(e) = first_error {
        warn!(first = %e, "open-model operations failed");
    }
    Ok(Started { arrivals: k })
}
