//! `bandsync-coordinator`: reads a plan, sends it over gRPC to the agents that dial in, runs its
//! steps on all of them at synchronised instants, merges their results exactly and builds the
//! report.
//!
//! Layout: [`service`] is the gRPC endpoint agents dial; [`controller`] is the run itself (wait,
//! clock sync, steps, merge); [`target`] is the coordinator's own look at Redis (reachable
//! before the run, leftover keys after); [`testbed`] starts a local Redis and local agent
//! processes. [`run`] takes a bound listener and a shutdown token, so tests drive it in-process;
//! [`launch`] adds the testbed around it for the binary.
#![forbid(unsafe_code)]

pub mod auth;
pub mod controller;
pub mod fault;
pub mod progress;
pub mod service;
pub mod target;
pub mod testbed;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bandsync_common::clock::now_unix_ns;
use bandsync_common::plan::Plan;
use bandsync_common::report::{Evictions, Report, RunRecord, RunStatus, StepEvictions};
use bandsync_proto::pb::load_test_server::LoadTestServer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::controller::{Controller, WaitError};
use crate::testbed::{LocalAgents, LocalServers, RedisServer, TestbedError};

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(
        "only {joined} of {expected} agents joined within {waited_s} s; start more agents (bandsync-agent --coordinator {listen}) or lower --agents"
    )]
    AgentsTimeout {
        joined: u32,
        expected: u32,
        waited_s: u64,
        listen: String,
    },
    #[error("interrupted before the run started")]
    InterruptedBeforeStart,
    #[error("the target Redis at {url} is unreachable: {reason}")]
    TargetUnreachable { url: String, reason: String },
    #[error("the BandSync server at {url} is unreachable: {reason}")]
    ServerUnreachable { url: String, reason: String },
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// The target could lose keys that are not the run's (refused before anything starts).
    #[error("{0}")]
    UnsafeTarget(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("testbed: {0}")]
    Testbed(#[from] TestbedError),
}

impl CoordinatorError {
    /// The process exit code for this error (see ARCHITECTURE.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            CoordinatorError::Usage(_) | CoordinatorError::Tls(_) | CoordinatorError::UnsafeTarget(_) => 2,
            CoordinatorError::InterruptedBeforeStart => 130,
            _ => 3,
        }
    }
}

/// An error and its sources, `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A new run id: Unix seconds and 24 random bits, e.g. `r1764412345-3fa2c1`.
pub fn new_run_id() -> String {
    format!(
        "r{}-{:06x}",
        now_unix_ns() / 1_000_000_000,
        fastrand::u32(..) & 0x00ff_ffff
    )
}

/// How a run admits its agents.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    /// Agents to wait for before the first step.
    pub expected_agents: u32,
    /// The shared token agents must present; `None` admits any agent (loopback testing only).
    pub token: Option<String>,
    /// Serve the control channel over TLS (and require client certificates, for mutual TLS).
    pub tls: Option<ServerTls>,
    /// Live progress: log lines, or a spinner per step on a terminal.
    pub progress: progress::ProgressMode,
    /// The testbed's redis-server, for `redis_failover` restarts (None: not ours to restart).
    pub redis_control: Option<fault::RedisControl>,
    /// Cancelled by a second interrupt: skip the waits for cleanup after the first one.
    pub hurry: CancellationToken,
}

/// PEM files of the coordinator's TLS identity, and of the CA agents' certificates must chain to.
#[derive(Clone, Debug, Default)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// When set, agents must present a certificate signed by this CA (mutual TLS).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl ServerTls {
    /// Reads the coordinator's certificate and key, and the agents' CA when given.
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        use bandsync_common::cli::read_pem;
        Ok(ServerTls {
            cert_pem: read_pem("--tls-cert", cert)?,
            key_pem: read_pem("--tls-key", key)?,
            client_ca_pem: client_ca.map(|p| read_pem("--tls-client-ca", p)).transpose()?,
        })
    }
}

impl RunConfig {
    pub fn agents(expected_agents: u32) -> Self {
        Self {
            expected_agents,
            ..Self::default()
        }
    }
}

/// Runs `plan` with agents that dial `listener`.
/// Returns the report (also when the run is incomplete or interrupted after it started).
pub async fn run(
    plan: &Plan,
    listener: TcpListener,
    config: &RunConfig,
    shutdown: CancellationToken,
) -> Result<Report, CoordinatorError> {
    let expected_agents = config.expected_agents;
    let wall_start = Instant::now();
    let started_unix_ms = now_unix_ns() / 1_000_000;
    let run_id = new_run_id();
    let listen = listener.local_addr().map_or_else(|_| "?".into(), |a| a.to_string());
    let redis_url = plan.target.redis_url.clone().unwrap_or_default();
    let run_prefix = format!("{}:{}:", plan.target.key_prefix, run_id);

    // Fail before any agent is involved if the plan cannot run or the target is not there.
    let mut redis = preflight(plan, config, &redis_url).await?;

    let (joins_tx, mut joins) = mpsc::channel(64);
    let (server_stop, server) = serve(listener, config, plan, joins_tx)?;
    info!(%listen, run = %run_id, plan = %plan.name, expected = expected_agents, "waiting for agents");

    let mut ctl = Controller::new(plan, run_id.clone(), redis_url.clone(), shutdown.clone());
    ctl.redis_control = config.redis_control.clone();
    ctl.hurry = config.hurry.clone();
    ctl.set_progress(config.progress);
    match ctl
        .wait_for_agents(&mut joins, expected_agents, plan.run.agent_wait)
        .await
    {
        Ok(()) => {}
        Err(e) => {
            let joined = ctl.alive().count() as u32;
            ctl.finish().await;
            server_stop.cancel();
            let _ = server.await;
            return Err(match e {
                WaitError::Interrupted => CoordinatorError::InterruptedBeforeStart,
                WaitError::Timeout => CoordinatorError::AgentsTimeout {
                    joined,
                    expected: expected_agents,
                    waited_s: plan.run.agent_wait.as_secs(),
                    listen,
                },
            });
        }
    }
    controller::refuse_late_joins(joins, expected_agents);
    ctl.sync_clocks().await;

    let mut evictions = match redis.as_mut() {
        Some(con) => Some(match target::eviction_setting(con).await {
            Ok((policy, maxmemory_bytes)) => Evictions {
                policy,
                maxmemory_bytes,
                allowed: plan.target.allow_eviction,
                by_step: Vec::new(),
            },
            Err(e) => Evictions {
                policy: format!("unknown ({e})"),
                allowed: plan.target.allow_eviction,
                ..Evictions::default()
            },
        }),
        None => None,
    };
    let steps = run_steps(&mut ctl, plan, &mut redis, (&redis_url, &run_prefix), &mut evictions).await?;

    let swept = match redis.as_mut() {
        Some(con) => Some(tokio::select! {
            r = sweep(con, &redis_url, &run_prefix) => r,
            () = config.hurry.cancelled() => Err("it was skipped: the run was interrupted twice".to_owned()),
        }),
        None => None,
    };
    let (leftover_keys, sweep_error) = match swept {
        Some(swept) => match swept {
            Ok(n) => (Some(n), None),
            Err(why) => {
                ctl.incomplete.get_or_insert_with(|| {
                    format!("the keys left under {run_prefix}* are unknown: the sweep failed because {why}")
                });
                (None, Some(why))
            }
        },
        None => (None, None),
    };

    ctl.finish().await;
    server_stop.cancel();
    let grace = if config.hurry.is_cancelled() {
        Duration::from_millis(100)
    } else {
        Duration::from_secs(5)
    };
    if tokio::time::timeout(grace, server).await.is_err() {
        warn!("gRPC server did not stop within {grace:?}");
    }

    let status = if ctl.interrupted {
        RunStatus::Interrupted
    } else if let Some(reason) = ctl.incomplete.clone() {
        RunStatus::Incomplete { reason }
    } else {
        RunStatus::Complete
    };
    let record = RunRecord {
        plan_name: plan.name.clone(),
        plan_hash: plan.hash.clone(),
        run_id,
        started_unix_ms,
        execution_time_s: wall_start.elapsed().as_secs_f64(),
        status,
        redis_url: plan.target.redis_url.clone(),
        key_prefix: plan.target.key_prefix.clone(),
        servers: plan.target.servers.clone(),
        criteria: plan.criteria.clone(),
        agents: ctl.agents.into_iter().map(|a| a.row).collect(),
        steps,
        leftover_keys,
        sweep_error,
        evictions,
    };
    Ok(Report::build(record))
}

/// What can be checked before any agent is involved: a fault the run may not inject, the Redis
/// target (connected: the returned connection) and every BandSync server.
async fn preflight(
    plan: &Plan,
    config: &RunConfig,
    redis_url: &str,
) -> Result<Option<redis::aio::MultiplexedConnection>, CoordinatorError> {
    restart_needs_testbed(plan, config.redis_control.is_some())?;
    let uses_redis = plan.steps.iter().any(|s| s.spec.uses_redis());
    let redis = if uses_redis {
        let mut con = target::connect(redis_url).await?;
        check_eviction(&mut con, plan, redis_url).await?;
        Some(con)
    } else {
        None
    };
    // Named in the error: the plan's own step rather than the probe inserted before it.
    let auto: Vec<&str> = bandsync_common::workloads::auto_steps()
        .iter()
        .map(|s| s.kind())
        .collect();
    let loading: Vec<_> = plan.steps.iter().filter(|s| s.spec.uses_servers()).collect();
    if let Some(step) = loading
        .iter()
        .find(|s| !auto.contains(&s.spec.kind()))
        .or(loading.first())
    {
        if plan.target.servers.is_empty() {
            return Err(CoordinatorError::Usage(format!(
                "step `{}` loads BandSync servers and there are none: set [target] servers, pass --server URL, or let the testbed start them ([testbed] servers = 2)",
                step.name
            )));
        }
        for server in &plan.target.servers {
            target::check_server(server).await?;
        }
    }

    Ok(redis)
}

type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Starts the control channel on `listener`: agents' joins arrive on `joins`.
fn serve(
    listener: TcpListener,
    config: &RunConfig,
    plan: &Plan,
    joins_tx: mpsc::Sender<service::Join>,
) -> Result<(CancellationToken, ServerTask), CoordinatorError> {
    let server_stop = CancellationToken::new();
    let server = {
        let stop = server_stop.clone();
        let mut required: Vec<String> = plan.steps.iter().map(|s| s.spec.kind().to_owned()).collect();
        required.dedup();
        let service = LoadTestServer::new(service::Service {
            joins: joins_tx,
            required,
        })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
        let service =
            tonic::service::interceptor::InterceptedService::new(service, auth::interceptor(config.token.clone()));
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = &config.tls {
            let mut cfg = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                cfg = cfg.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(cfg)
                .map_err(|e| CoordinatorError::Tls(error_chain(&e)))?;
        }
        tokio::spawn(
            builder
                .tcp_nodelay(true)
                // A step result (about 20 KB, 70 KB in the worst latency shape) arrives in one
                // flight instead of waiting for window updates at HTTP/2's 64 KB default.
                .initial_stream_window_size(Some(256 << 10))
                .initial_connection_window_size(Some(512 << 10))
                .http2_keepalive_interval(Some(Duration::from_secs(2)))
                .http2_keepalive_timeout(Some(Duration::from_secs(3)))
                .add_service(service)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop.cancelled_owned()),
        )
    };
    Ok((server_stop, server))
}

/// Runs the plan's steps in order, each followed by its read-back hook and a clock re-estimate;
/// stops early when interrupted, told to stop on agent loss, or left without agents.
async fn run_steps(
    ctl: &mut Controller<'_>,
    plan: &Plan,
    redis: &mut Option<redis::aio::MultiplexedConnection>,
    (redis_url, run_prefix): (&str, &str),
    evictions: &mut Option<Evictions>,
) -> Result<Vec<bandsync_common::report::StepRecord>, CoordinatorError> {
    let mut steps = Vec::with_capacity(plan.steps.len());
    for (i, step) in plan.steps.iter().enumerate() {
        if ctl.interrupted || ctl.shutdown.is_cancelled() {
            ctl.interrupted = true;
            break;
        }
        if ctl.stopping {
            warn!(step = %step.name, "not run: an agent was lost and the plan stops on agent loss");
            break;
        }
        if ctl.alive().count() == 0 {
            ctl.incomplete.get_or_insert_with(|| "every agent was lost".into());
            break;
        }
        // Where the plan accepts eviction, a full Redis evicts (and that is counted); elsewhere
        // it would refuse every client's writes: a step that cannot fit is not started.
        let evicting = evictions.as_ref().is_some_and(|e| e.allowed && e.can_evict());
        if !evicting && let Some(why) = redis_room(ctl, step, redis).await {
            steps.push(ctl.refuse(step, &why));
            continue;
        }
        let before = evicted(redis).await;
        let mut record = ctl.run_step(i as u32, step).await;
        let hooks = step.spec.hooks();
        if hooks.fault.is_some() && redis.is_some() {
            // The fault dropped (or restarted) every connection, ours included: open a new one.
            *redis = Some(target::connect(redis_url).await?);
        }
        if let (Some(watch), Some(before)) = (evictions.as_mut(), before) {
            let after = tokio::select! {
                a = evicted(redis) => a,
                () = ctl.hurry.cancelled() => Some(Err("not read: the run was interrupted twice".to_owned())),
            };
            watch.by_step.push(step_evictions(&step.name, before, after));
        }
        if let (Some(read_back), Some(con)) = (&hooks.read_back, redis.as_mut())
            && let Err(e) = target::read_back_session(con, run_prefix, read_back, &mut record.merged).await
        {
            warn!(step = %step.name, error = %e, "could not read the shared session back");
            record.failures.push((
                "coordinator".into(),
                format!("could not read the shared session back: {e}"),
            ));
        }
        steps.push(record);
        // Re-estimate between steps, which also shows drift over the run.
        if !ctl.interrupted {
            ctl.sync_clocks().await;
        }
    }

    Ok(steps)
}

/// Refuses a Redis that may evict keys the run did not write, unless the plan accepts it.
async fn check_eviction(
    con: &mut redis::aio::MultiplexedConnection,
    plan: &Plan,
    redis_url: &str,
) -> Result<(), CoordinatorError> {
    let refuse = |why: String| {
        CoordinatorError::UnsafeTarget(format!(
            "the target Redis at {} {why}; the run's writes could push keys that are not its own out. Use a Redis with maxmemory-policy noeviction (or no maxmemory), or set [target] allow_eviction = true to accept it (evictions are then counted and FAIL the run)",
            bandsync_common::report::redact_url(redis_url)
        ))
    };
    match target::eviction_setting(con).await {
        Ok((policy, max)) => {
            let setting = Evictions {
                policy: policy.clone(),
                maxmemory_bytes: max,
                ..Evictions::default()
            };
            if setting.can_evict() && !plan.target.allow_eviction {
                return Err(refuse(format!(
                    "has maxmemory-policy {policy} with maxmemory {max} bytes"
                )));
            }
            Ok(())
        }
        Err(e) if !plan.target.allow_eviction => Err(refuse(format!("does not say whether it evicts ({e})"))),
        Err(_) => Ok(()),
    }
}

/// Counts and deletes what is left under the run prefix, retrying (a Redis that stalled may be
/// back): the count, or why it could not be had.
async fn sweep(con: &mut redis::aio::MultiplexedConnection, redis_url: &str, run_prefix: &str) -> Result<u64, String> {
    let mut last = String::new();
    for attempt in 0..SWEEP_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            match target::connect(redis_url).await {
                Ok(c) => *con = c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            }
        }
        match target::count_and_sweep(con, run_prefix).await {
            Ok(n) => {
                if n > 0 {
                    warn!(keys = n, prefix = %run_prefix, "keys were left under the run prefix; swept them");
                }
                return Ok(n);
            }
            Err(e) => {
                warn!(error = %e, attempt, "could not sweep the run prefix");
                last = e.to_string();
            }
        }
    }
    Err(format!(
        "{last} ({SWEEP_ATTEMPTS} attempts over {} s)",
        (SWEEP_ATTEMPTS - 1) * 2
    ))
}

/// Why the target Redis cannot take what `step` writes at its peak (`None`: it can, or it
/// does not say).
async fn redis_room(
    ctl: &Controller<'_>,
    step: &bandsync_common::plan::Step,
    redis: &mut Option<redis::aio::MultiplexedConnection>,
) -> Option<String> {
    let agents = if step.spec.single_agent() {
        1
    } else {
        ctl.alive().count() as u32
    };
    let need = step.spec.redis_bytes(agents);
    let con = redis.as_mut().filter(|_| need > 0)?;
    let (room, basis) = target::memory_room(con).await.ok()??;
    (need > room).then(|| {
        format!(
            "it writes about {} MiB to Redis at its peak and the target has {} MiB left {basis}: lower sessions or members, or give Redis more memory",
            need.div_ceil(1 << 20),
            room >> 20
        )
    })
}

/// Keys evicted during a step, from `evicted_keys` read before and after it. A restarted
/// Redis starts counting from 0 again: what it shows then is what it evicted since.
fn step_evictions(step: &str, before: Result<u64, String>, after: Option<Result<u64, String>>) -> StepEvictions {
    let (evicted_keys, unchecked) = match (before, after) {
        (Ok(b), Some(Ok(a))) => (Some(if a >= b { a - b } else { a }), None),
        (Err(e), _) | (_, Some(Err(e))) => (None, Some(e)),
        (Ok(_), None) => (None, Some("no connection to Redis after the step".to_owned())),
    };
    StepEvictions {
        step: step.to_owned(),
        evicted_keys,
        unchecked,
    }
}

/// Most agent processes a testbed starts on one machine (the plan's `[testbed] local_agents`
/// limit, which `--local-agents` obeys as well).
const MAX_LOCAL_AGENTS: u32 = 64;

/// Attempts of the final sweep, 2 s apart.
const SWEEP_ATTEMPTS: u32 = 4;

/// `evicted_keys` now, for the watch around a step.
async fn evicted(redis: &mut Option<redis::aio::MultiplexedConnection>) -> Option<Result<u64, String>> {
    match redis.as_mut() {
        Some(con) => Some(target::evicted_keys(con).await),
        None => None,
    }
}

/// How the binary launches a run: the plan plus command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub listen: Option<SocketAddr>,
    /// `--agents`: how many agents to wait for.
    pub agents: Option<u32>,
    /// `--local-agents`: agent processes to start here (overrides the plan's testbed).
    pub local_agents: Option<u32>,
    /// `--redis-url`: use this Redis instead of the plan's target or the testbed's.
    pub redis_url: Option<String>,
    pub agent_bin: Option<PathBuf>,
    /// `--local-servers`: `bandsync-server` instances to start here (overrides the plan's testbed).
    pub local_servers: Option<u32>,
    pub server_bin: Option<PathBuf>,
    /// `--server`: BandSync servers to load instead of the plan's (disables the testbed's).
    pub servers: Vec<String>,
    /// `--token`: the shared token agents must present. Required when listening beyond
    /// loopback; generated for the local agents when not given.
    pub token: Option<String>,
    /// `--tls-cert`, `--tls-key`, `--tls-client-ca`: serve the control channel over (mutual) TLS.
    pub tls: Option<ServerTls>,
    pub progress: progress::ProgressMode,
    /// Cancelled by a second interrupt: skip the waits for cleanup after the first one.
    pub hurry: CancellationToken,
}

/// Default coordinator port when agents come from other hosts.
pub const DEFAULT_PORT: u16 = 7700;

/// Starts the testbed the plan (or the command line) asks for, runs the plan, tears it down.
/// What the command line and the plan settle between them, checked before anything starts.
struct Settled {
    local_agents: u32,
    expected: u32,
    agent_bin: Option<PathBuf>,
    local_servers: u32,
    server_bin: Option<PathBuf>,
    addr: SocketAddr,
    token: Option<String>,
}

/// A step that restarts Redis needs the testbed's own redis-server (`owned`).
fn restart_needs_testbed(plan: &Plan, owned: bool) -> Result<(), CoordinatorError> {
    if let Some(step) = plan.steps.iter().find(|s| {
        s.spec
            .hooks()
            .fault
            .is_some_and(|f| f.mode == bandsync_common::plan::FaultMode::Restart)
    }) && !owned
    {
        return Err(CoordinatorError::Usage(format!(
            "step `{}` restarts Redis: only the testbed's own redis-server can be restarted ([testbed] redis = true, no --redis-url)",
            step.name
        )));
    }
    Ok(())
}

/// Applies the command-line overrides to `plan` and checks every usage rule; starts nothing.
fn settle(plan: &mut Plan, opts: &Launch) -> Result<Settled, CoordinatorError> {
    if let Some(n) = opts.local_agents
        && n > MAX_LOCAL_AGENTS
    {
        return Err(CoordinatorError::Usage(format!(
            "--local-agents {n}: at most {MAX_LOCAL_AGENTS} agent processes on one machine (as [testbed] local_agents)"
        )));
    }
    let local_agents = opts
        .local_agents
        .or(plan.testbed.as_ref().map(|t| t.local_agents))
        .unwrap_or(0);
    if let Some(url) = &opts.redis_url {
        bandsync_common::plan::check_redis_url(url)
            .map_err(|e| CoordinatorError::Usage(format!("--redis-url: {e}")))?;
        plan.target.redis_url = Some(url.clone());
    }
    // The launch starts a private Redis exactly when the plan names none.
    restart_needs_testbed(plan, plan.target.redis_url.is_none())?;
    let expected = match opts.agents.or(plan.run.agents) {
        Some(n) if n < local_agents => {
            return Err(CoordinatorError::Usage(format!(
                "--agents {n} is fewer than the {local_agents} local agents this run starts"
            )));
        }
        Some(n) => n,
        None if local_agents > 0 => local_agents,
        None => {
            return Err(CoordinatorError::Usage(
                "how many agents? set [run] agents in the plan, or pass --agents N".into(),
            ));
        }
    };
    if expected == 0 {
        return Err(CoordinatorError::Usage("--agents must be at least 1".into()));
    }
    let agent_bin = if local_agents > 0 {
        Some(testbed::agent_binary(opts.agent_bin.as_deref())?)
    } else {
        None
    };
    if !opts.servers.is_empty() {
        for u in &opts.servers {
            bandsync_common::plan::check_server_url(u)
                .map_err(|e| CoordinatorError::Usage(format!("--server: {e}")))?;
        }
        plan.target.servers = opts
            .servers
            .iter()
            .map(|u| u.trim_end_matches('/').to_owned())
            .collect();
    }
    let local_servers = match opts.local_servers {
        Some(n) => n,
        None if !opts.servers.is_empty() => 0,
        None => plan.testbed.as_ref().map_or(0, |t| t.servers),
    };
    if local_servers > 8 {
        return Err(CoordinatorError::Usage(format!(
            "--local-servers {local_servers}: at most 8 on one machine"
        )));
    }
    if local_servers > 0 && !plan.target.servers.is_empty() {
        return Err(CoordinatorError::Usage(format!(
            "--local-servers {local_servers} conflicts with the servers to load ([target] servers or --server): use one or the other"
        )));
    }
    let server_bin = if local_servers > 0 {
        Some(testbed::server_binary(opts.server_bin.as_deref())?)
    } else {
        None
    };

    let addr = opts.listen.unwrap_or_else(|| {
        if local_agents > 0 && opts.agents.is_none() && plan.run.agents.is_none() {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
        }
    });
    if opts.tls.is_some() && local_agents > 0 {
        return Err(CoordinatorError::Usage(
            "TLS is for agents on other hosts; the testbed's local agents dial over loopback: drop --local-agents (or [testbed] local_agents) or the --tls-* flags".into(),
        ));
    }
    let token = match opts.token.clone() {
        Some(t) if t.len() < 16 => {
            return Err(CoordinatorError::Usage("--token must be at least 16 characters".into()));
        }
        Some(t) => Some(t),
        None if !addr.ip().is_loopback() => {
            return Err(CoordinatorError::Usage(format!(
                "listening on {addr} admits agents from other hosts: set a shared token with --token or BANDSYNC_TOKEN (agents take the same flag)"
            )));
        }
        // Only processes on this machine can dial a loopback address; the ones we start get a token.
        None if local_agents > 0 => Some(auth::generate()),
        None => None,
    };
    Ok(Settled {
        local_agents,
        expected,
        agent_bin,
        local_servers,
        server_bin,
        addr,
        token,
    })
}

pub async fn launch(mut plan: Plan, opts: Launch, shutdown: CancellationToken) -> Result<Report, CoordinatorError> {
    let settled = settle(&mut plan, &opts)?;
    // A private Redis when no URL was given and something needs one: a step that uses Redis, a
    // fault that restarts it, or the reference servers (their store). A Socket.IO-only plan
    // against the user's servers runs without any.
    let needs_redis = plan
        .steps
        .iter()
        .any(|s| s.spec.uses_redis() || s.spec.hooks().fault.is_some())
        || settled.server_bin.is_some();
    let redis: Option<fault::RedisControl> = if plan.target.redis_url.is_none() && needs_redis {
        let server = RedisServer::start().await?;
        plan.target.redis_url = Some(server.url());
        Some(std::sync::Arc::new(tokio::sync::Mutex::new(server)))
    } else {
        None
    };
    // Reference servers sharing the target Redis: the default cross-instance target.
    let servers = match &settled.server_bin {
        Some(bin) => {
            let redis_url = plan.target.redis_url.clone().expect("set above");
            let prefix = format!("{}:testbed-server", plan.target.key_prefix);
            let servers = LocalServers::start(settled.local_servers, bin, &redis_url, &prefix).await?;
            plan.target.servers = servers.urls().to_vec();
            servers
        }
        None => LocalServers::default(),
    };

    let listener = TcpListener::bind(settled.addr)
        .await
        .map_err(|e| CoordinatorError::Listen {
            addr: settled.addr.to_string(),
            reason: e.to_string(),
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| CoordinatorError::Listen {
            addr: settled.addr.to_string(),
            reason: e.to_string(),
        })?
        .port();
    let agents = match &settled.agent_bin {
        Some(bin) => LocalAgents::spawn(
            settled.local_agents,
            &format!("http://127.0.0.1:{port}"),
            bin,
            settled.token.as_deref(),
        )?,
        None => LocalAgents::default(),
    };
    let result = run(
        &plan,
        listener,
        &RunConfig {
            expected_agents: settled.expected,
            token: settled.token,
            tls: opts.tls,
            progress: opts.progress,
            redis_control: redis.clone(),
            hurry: opts.hurry.clone(),
        },
        shutdown,
    )
    .await;
    let grace = if opts.hurry.is_cancelled() {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    agents.stop(grace).await;
    servers.stop(grace).await;
    drop(redis);
    result
}
