//! Runs one step: waits for the coordinator's start instant, runs the workload with its shard,
//! sends `Progress` about once a second and one `StepResult` at the end. The step's own timeout
//! and the coordinator's `Abort` both cancel the workload, which then cleans up after itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bandsync_common::clock::{ClockEstimate, now_unix_ns};
use bandsync_common::plan::StepSpec;
use bandsync_proto::pb::{self, agent_message, step_result::Outcome};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::allow::AllowList;
use crate::workloads::{self, Cleanup, Live, StepContext, WorkloadError};

/// Why a step did not produce metrics on this agent.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("RunStep has no spec")]
    NoSpec,
    #[error("{0}")]
    Spec(String),
    #[error(transparent)]
    Refused(#[from] crate::allow::AllowError),
    #[error("step `{0}` needs BandSync servers and the target has none")]
    NoServers(&'static str),
    #[error("the target's dialect: {0}")]
    Dialect(String),
    #[error("{0}")]
    Budget(String),
    #[error("aborted before it started")]
    AbortedBeforeStart,
    #[error("timed out after {0} ms; load stopped, {1}")]
    TimedOut(u64, String),
    #[error("aborted; load stopped, {0}")]
    Aborted(String),
    #[error(transparent)]
    Workload(WorkloadError),
}

/// What the session gives every step besides the step itself.
pub(crate) struct StepEnv {
    pub allow: AllowList,
    pub cleanup: Arc<Cleanup>,
    pub memory_limit: Option<u64>,
}

pub(crate) async fn run(
    rs: pb::RunStep,
    clock: ClockEstimate,
    agent_index: u32,
    cancel: CancellationToken,
    tx: mpsc::Sender<pb::AgentMessage>,
    env: StepEnv,
) {
    let StepEnv {
        allow,
        cleanup,
        memory_limit,
    } = env;
    let step_index = rs.step_index;
    let live = Arc::new(Live::default());
    let started = AtomicI64::new(0);
    // Set when the load starts: process CPU time then, and the instant.
    let mark: std::sync::OnceLock<(Option<u64>, std::time::Instant)> = std::sync::OnceLock::new();
    let executed = match allowed(&rs, &allow).await {
        Ok(()) => {
            execute(
                &rs,
                clock,
                agent_index,
                &cancel,
                &tx,
                (&live, &cleanup, memory_limit),
                (&started, &mark),
            )
            .await
        }
        Err(refused) => Err(refused),
    };
    let outcome = match executed {
        Ok(metrics) => match pb::MetricSet::try_from(&metrics) {
            Ok(m) => Outcome::Metrics(m),
            Err(e) => Outcome::Failure(pb::StepFailure { message: e.to_string() }),
        },
        Err(e) => Outcome::Failure(pb::StepFailure { message: e.to_string() }),
    };
    if let Outcome::Failure(f) = &outcome {
        warn!(step = %rs.step_name, error = %f.message, "step failed");
    } else {
        info!(step = %rs.step_name, "step done");
    }
    let (ops, errors) = live.snapshot();
    let result = pb::StepResult {
        step_index,
        outcome: Some(outcome),
        ops,
        errors,
        coord_started_unix_ns: started.load(Ordering::Relaxed),
        cpu_us: match (mark.get().and_then(|m| m.0), crate::proc::cpu_us()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        },
        wall_us: mark.get().map_or(0, |m| m.1.elapsed().as_micros() as u64),
        rss_bytes: crate::proc::rss_bytes().unwrap_or(0),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
    };
    let _ = tx
        .send(pb::AgentMessage::of(agent_message::Kind::StepResult(result)))
        .await;
}

/// Before any traffic: is the step's target one this agent may load?
async fn allowed(rs: &pb::RunStep, allow: &AllowList) -> Result<(), StepError> {
    let spec = rs.spec.as_ref().ok_or(StepError::NoSpec)?;
    let spec = StepSpec::try_from(spec).map_err(|e| StepError::Spec(e.to_string()))?;
    let target = rs.target.clone().unwrap_or_default();
    if spec.uses_redis() {
        crate::allow::check_redis_url(allow, &target.redis_url).await?;
    }
    if spec.uses_servers() {
        if target.servers.is_empty() {
            return Err(StepError::NoServers(spec.kind()));
        }
        for server in &target.servers {
            crate::allow::check_server_url(allow, server).await?;
        }
    }
    Ok(())
}

async fn execute(
    rs: &pb::RunStep,
    clock: ClockEstimate,
    agent_index: u32,
    cancel: &CancellationToken,
    tx: &mpsc::Sender<pb::AgentMessage>,
    (live, cleanup, memory_limit): (&Arc<Live>, &Arc<Cleanup>, Option<u64>),
    (started, mark): (&AtomicI64, &std::sync::OnceLock<(Option<u64>, std::time::Instant)>),
) -> Result<bandsync_common::metrics::MetricSet, StepError> {
    let spec = rs.spec.as_ref().ok_or(StepError::NoSpec)?;
    let spec = StepSpec::try_from(spec).map_err(|e| StepError::Spec(e.to_string()))?;
    let shard = rs.shard.unwrap_or(pb::Shard { index: 0, count: 1 });
    let target = rs.target.clone().unwrap_or_default();
    let dialect = if target.dialect.is_empty() {
        bandsync_common::dialect::Dialect::default()
    } else {
        serde_json::from_str(&target.dialect).map_err(|e| StepError::Dialect(e.to_string()))?
    };

    // This agent's share against its memory, before anything is allocated or connected.
    let memory_budget = memory_budget(memory_limit);
    let need = spec.agent_bytes(shard.count.max(1));
    if need > memory_budget {
        return Err(StepError::Budget(format!(
            "this agent's share of step `{}` needs about {} MiB and it may use {} MiB ({}): add agents or lower the step's counts",
            rs.step_name,
            need.div_ceil(1 << 20),
            memory_budget >> 20,
            if memory_limit.is_some_and(|l| l <= memory_budget) {
                "--memory-limit-mib"
            } else {
                "available on this host"
            }
        )));
    }

    // Start at the coordinator's instant, converted to this agent's clock.
    let wait_ns = clock.to_agent(rs.coord_start_unix_ns) - now_unix_ns();
    if wait_ns > 0 {
        let wait = Duration::from_nanos(wait_ns as u64).min(Duration::from_secs(60));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return Err(StepError::AbortedBeforeStart),
        }
    }
    started.store(clock.to_coordinator(now_unix_ns()), Ordering::Relaxed);
    let _ = mark.set((crate::proc::cpu_us(), std::time::Instant::now()));
    info!(step = %rs.step_name, kind = spec.kind(), shard = shard.index, of = shard.count, "step started");

    let timed_out = Arc::new(AtomicBool::new(false));
    let timeout = Duration::from_millis(rs.timeout_ms.max(1));
    let ctx = StepContext {
        shard_index: shard.index,
        shard_count: shard.count.max(1),
        agent_index,
        redis_url: target.redis_url,
        coord_start_ns: rs.coord_start_unix_ns,
        servers: target.servers,
        dialect,
        key_base: format!("{}:{}:agent{agent_index}:", target.key_prefix, target.run_id),
        run_base: format!("{}:{}:", target.key_prefix, target.run_id),
        clock,
        cancel: cancel.clone(),
        live: live.clone(),
        cleanup: cleanup.clone(),
        memory_budget,
    };

    // Progress ticker and timeout watchdog: both end when the step ends.
    let done = CancellationToken::new();
    let ticker = {
        let (done, live, tx, cancel, timed_out) = (
            done.clone(),
            live.clone(),
            tx.clone(),
            cancel.clone(),
            timed_out.clone(),
        );
        let step_index = rs.step_index;
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    () = done.cancelled() => break,
                    () = tokio::time::sleep_until(started + timeout), if !cancel.is_cancelled() => {
                        timed_out.store(true, Ordering::Relaxed);
                        cancel.cancel();
                    }
                    _ = tick.tick() => {
                        let (ops, errors) = live.snapshot();
                        let p = pb::Progress { step_index, ops, errors, coord_unix_ns: clock.to_coordinator(now_unix_ns()) };
                        if tx.send(pb::AgentMessage::of(agent_message::Kind::Progress(p))).await.is_err() {
                            break;
                        }
                    }
                }
            }
        })
    };

    let probe = tokio::spawn(crate::lag::probe(done.clone()));
    let result = workloads::run(&spec, &ctx).await;
    done.cancel();
    let _ = ticker.await;
    let lag = probe.await.ok();
    match result {
        Ok(mut m) => {
            if let Some(lag) = &lag {
                crate::lag::record(&mut m, lag, agent_index);
            }
            // The figures stand; the report says the keys were not all deleted, and why.
            if let Some(why) = ctx.cleanup.failure() {
                m.add_counter(&format!("{}{why}", bandsync_common::report::CLEANUP_ERROR), 1);
            }
            Ok(m)
        }
        Err(WorkloadError::Cancelled) if timed_out.load(Ordering::Relaxed) => {
            Err(StepError::TimedOut(timeout.as_millis() as u64, ctx.cleanup.describe()))
        }
        Err(WorkloadError::Cancelled) => Err(StepError::Aborted(ctx.cleanup.describe())),
        Err(e) => Err(StepError::Workload(e)),
    }
}

/// What a step may plan to use: the configured limit, or what the host has available
/// (unbounded where /proc does not say).
fn memory_budget(limit: Option<u64>) -> u64 {
    let available = crate::proc::available_bytes().unwrap_or(u64::MAX);
    limit.map_or(available, |l| l.min(available))
}
