//! `bandsync-agent`: dials the coordinator, holds one gRPC stream for the run, answers clock
//! probes, runs each step it is sent (its shard of the work, starting at the coordinator's
//! instant) and streams progress and one aggregated result per step back.
//!
//! Layout: this file is the session with the coordinator; [`step`] runs one step (start instant,
//! timeout, progress, cancellation); [`workloads`] holds one module per workload family.
//! When the coordinator goes away (stream closed or reset, HTTP/2 keep-alive lost) the running
//! step is cancelled, its keys are deleted and [`run`] returns.
#![forbid(unsafe_code)]

pub mod allow;
pub mod lag;
pub mod proc;
pub mod step;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use bandsync_common::clock::{ClockEstimate, now_unix_ns};
use bandsync_proto::pb::{self, agent_message, coordinator_message};
use bandsync_proto::{PROTOCOL_VERSION, pb::load_test_client::LoadTestClient};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tracing::{debug, info, warn};

/// How the agent is started.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `http://host:port` of the coordinator (a bare `host:port` gets `http://`).
    pub coordinator: String,
    pub agent_id: String,
    /// How long to keep retrying the first connection.
    pub connect_timeout: Duration,
    /// The coordinator's shared token, sent on every call.
    pub token: Option<String>,
    /// Targets this agent may load; anything else is refused before any traffic.
    pub allow: allow::AllowList,
    /// Dial the coordinator over TLS (`https://` URL).
    pub tls: Option<ClientTls>,
    /// Most memory (bytes) a step may plan to use on this agent; `None`: what the host has
    /// available. A step whose share needs more is refused before it allocates anything.
    pub memory_limit: Option<u64>,
}

/// PEM material for a TLS control channel.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    /// The CA that signed the coordinator's certificate.
    pub ca_pem: Vec<u8>,
    /// This agent's certificate and key, for a coordinator that requires client certificates.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the coordinator's certificate against, when it differs from the URL's host.
    pub domain: Option<String>,
}

impl ClientTls {
    /// Reads the CA and, when both are given, this agent's certificate and key.
    pub fn from_files(
        ca: &std::path::Path,
        identity: Option<(&std::path::Path, &std::path::Path)>,
        domain: Option<String>,
    ) -> Result<Self, String> {
        use bandsync_common::cli::read_pem;
        Ok(ClientTls {
            ca_pem: read_pem("--tls-ca", ca)?,
            identity: match identity {
                Some((c, k)) => Some((read_pem("--tls-cert", c)?, read_pem("--tls-key", k)?)),
                None => None,
            },
            domain,
        })
    }
}

/// How a session ended without an error of the agent's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentExit {
    /// The coordinator said the run is over.
    Finished,
    /// The coordinator went away; load was stopped.
    CoordinatorLost(String),
    /// Our own shutdown signal.
    Interrupted,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("coordinator address `{url}` is invalid: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("could not reach the coordinator at {url} within {secs} s: {last}")]
    Unreachable { url: String, secs: u64, last: String },
    #[error("the coordinator refused this agent: {0}")]
    Refused(String),
    #[error("the token holds characters that cannot go in a gRPC header: use printable ASCII")]
    InvalidToken,
    #[error("TLS: {0}")]
    Tls(String),
}

/// How long a cancelled step may take to stop its load and delete its keys before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// Step kinds this agent can run (sent in `Hello`).
pub const CAPABILITIES: &[&str] = bandsync_common::plan::STEP_KINDS;

/// Normalises `host:port` to `http://host:port`.
pub fn coordinator_url(s: &str) -> String {
    if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    }
}

/// Joins the coordinator and serves it until it finishes the run, goes away, or `shutdown` fires.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<AgentExit, AgentError> {
    let url = coordinator_url(&config.coordinator);
    let channel = tokio::select! {
        c = connect(&url, config.connect_timeout, config.tls.as_ref()) => c?,
        () = shutdown.cancelled() => return Ok(AgentExit::Interrupted),
    };
    let bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match &config.token {
        Some(t) => Some(format!("Bearer {t}").parse().map_err(|_| AgentError::InvalidToken)?),
        None => None,
    };
    let mut client = LoadTestClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        if let Some(b) = &bearer {
            req.metadata_mut().insert("authorization", b.clone());
        }
        Ok(req)
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);

    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    let hello = pb::Hello {
        agent_id: config.agent_id.clone(),
        hostname: gethostname::gethostname().to_string_lossy().into_owned(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol_version: PROTOCOL_VERSION,
        capabilities: CAPABILITIES.iter().map(|s| (*s).to_owned()).collect(),
    };
    tx.send(pb::AgentMessage::of(agent_message::Kind::Hello(hello)))
        .await
        .expect("receiver is held by the request stream");
    let mut inbound = tokio::select! {
        r = client.session(ReceiverStream::new(rx)) => r.map_err(|s| refusal(&s, config.tls.as_ref()))?.into_inner(),
        () = shutdown.cancelled() => return Ok(AgentExit::Interrupted),
    };

    let mut session = Session {
        tx,
        clock: ClockEstimate::default(),
        agent_index: 0,
        welcomed: false,
        current: None,
        allow: config.allow.clone(),
        memory_limit: config.memory_limit,
    };
    loop {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = shutdown.cancelled() => {
                session.stop_current("agent interrupted").await;
                return Ok(AgentExit::Interrupted);
            }
        };
        let received_ns = now_unix_ns();
        let kind = match msg {
            Ok(Some(pb::CoordinatorMessage { kind: Some(k) })) => k,
            Ok(Some(_)) => continue,
            Ok(None) => {
                let stopped = session.stop_current("coordinator closed the stream").await;
                return Ok(AgentExit::CoordinatorLost(format!(
                    "the coordinator closed the stream; {stopped}"
                )));
            }
            Err(status) => {
                let why = format!("{}: {}", status.code(), status.message());
                warn!(error = %why, "lost the coordinator; stopping load");
                let stopped = session.stop_current("coordinator lost").await;
                if !session.welcomed {
                    // A refusal arrives as the stream's first and only item.
                    return Err(AgentError::Refused(status.message().to_owned()));
                }
                return Ok(AgentExit::CoordinatorLost(format!("{why}; {stopped}")));
            }
        };
        match kind {
            coordinator_message::Kind::Welcome(w) => {
                session.agent_index = w.agent_index;
                session.welcomed = true;
                info!(run = %w.run_id, index = w.agent_index, plan = %w.plan_name, "joined the run");
            }
            coordinator_message::Kind::ClockProbe(p) => {
                let reply = pb::ClockProbeReply {
                    seq: p.seq,
                    t1_unix_ns: p.t1_unix_ns,
                    t2_unix_ns: received_ns,
                    t3_unix_ns: now_unix_ns(),
                };
                if session
                    .tx
                    .send(pb::AgentMessage::of(agent_message::Kind::ClockReply(reply)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            coordinator_message::Kind::ClockEstimate(c) => {
                session.clock = ClockEstimate::from(&c);
                debug!(
                    offset_ns = c.offset_ns,
                    uncertainty_ns = c.uncertainty_ns,
                    "clock estimate"
                );
            }
            coordinator_message::Kind::RunStep(rs) => session.start_step(rs).await,
            coordinator_message::Kind::Abort(a) => {
                warn!(reason = %a.reason, "coordinator aborted the step");
                if let Some(c) = &session.current {
                    c.cancel.cancel();
                }
            }
            coordinator_message::Kind::Finish(_) => {
                session.stop_current("run finished").await;
                info!("run finished");
                return Ok(AgentExit::Finished);
            }
        }
    }
    let stopped = session.stop_current("stream closed").await;
    Ok(AgentExit::CoordinatorLost(format!(
        "the outbound stream closed; {stopped}"
    )))
}

struct Running {
    step_index: u32,
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    cleanup: Arc<workloads::Cleanup>,
}

struct Session {
    tx: mpsc::Sender<pb::AgentMessage>,
    clock: ClockEstimate,
    agent_index: u32,
    welcomed: bool,
    current: Option<Running>,
    allow: allow::AllowList,
    memory_limit: Option<u64>,
}

impl Session {
    async fn start_step(&mut self, rs: pb::RunStep) {
        if let Some(c) = &self.current
            && !c.handle.is_finished()
        {
            let failure = pb::StepResult {
                step_index: rs.step_index,
                outcome: Some(pb::step_result::Outcome::Failure(pb::StepFailure {
                    message: format!("agent is still running step {}", c.step_index),
                })),
                ops: 0,
                errors: 0,
                coord_started_unix_ns: 0,
                ..Default::default()
            };
            let _ = self
                .tx
                .send(pb::AgentMessage::of(agent_message::Kind::StepResult(failure)))
                .await;
            return;
        }
        let cancel = CancellationToken::new();
        let step_index = rs.step_index;
        let cleanup = Arc::new(workloads::Cleanup::default());
        let handle = tokio::spawn(step::run(
            rs,
            self.clock,
            self.agent_index,
            cancel.clone(),
            self.tx.clone(),
            step::StepEnv {
                allow: self.allow.clone(),
                cleanup: cleanup.clone(),
                memory_limit: self.memory_limit,
            },
        ));
        self.current = Some(Running {
            step_index,
            cancel,
            handle,
            cleanup,
        });
    }

    /// Cancels the running step and waits (bounded) for its load to stop and its keys to go;
    /// a step that does not stop in time is aborted, so no load outlives this call.
    /// Returns what became of the step's keys ("no step was running" when none was).
    async fn stop_current(&mut self, why: &str) -> String {
        let Some(mut c) = self.current.take() else {
            return "no step was running".to_owned();
        };
        if !c.handle.is_finished() {
            info!(step = c.step_index, why, "stopping the running step");
            c.cancel.cancel();
            if tokio::time::timeout(STOP_GRACE, &mut c.handle).await.is_err() {
                warn!(
                    step = c.step_index,
                    "step did not stop within {} s; aborting it",
                    STOP_GRACE.as_secs()
                );
                c.handle.abort();
                let _ = c.handle.await;
                return "load stopped, keys NOT all deleted (the step did not stop in time and was aborted)".to_owned();
            }
        }
        format!("load stopped, {}", c.cleanup.describe())
    }
}

/// The agent-side message for a refused session, with a hint where TLS is the likely cause.
fn refusal(status: &tonic::Status, tls: Option<&ClientTls>) -> AgentError {
    let tls_hint = match status.code() {
        tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Unavailable => match tls {
            Some(t) if t.identity.is_none() => {
                "; the TLS session was dropped: if the coordinator requires client certificates (mutual TLS), start the agent with --tls-cert and --tls-key signed by its CA"
            }
            Some(_) => "; the TLS session was dropped: check that the coordinator trusts the CA that signed --tls-cert",
            None => "",
        },
        _ => "",
    };
    AgentError::Refused(format!("{}{tls_hint}", status.message()))
}

async fn connect(url: &str, timeout: Duration, tls: Option<&ClientTls>) -> Result<Channel, AgentError> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| AgentError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A coordinator that vanishes without closing the connection is noticed within seconds.
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true);
    match tls {
        Some(t) => {
            let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&t.ca_pem));
            if let Some((cert, key)) = &t.identity {
                cfg = cfg.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &t.domain {
                cfg = cfg.domain_name(d.clone());
            }
            endpoint = endpoint.tls_config(cfg).map_err(|e| AgentError::Tls(e.to_string()))?;
        }
        None if url.starts_with("https://") => {
            return Err(AgentError::Tls(
                "an https:// coordinator needs --tls-ca (the CA that signed its certificate)".into(),
            ));
        }
        None => {}
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        match endpoint.connect().await {
            Ok(ch) => return Ok(ch),
            Err(e) => {
                let mut last = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    last = format!("{last}: {s}");
                    source = s.source();
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(AgentError::Unreachable {
                        url: url.to_owned(),
                        secs: timeout.as_secs(),
                        last,
                    });
                }
                debug!(%url, error = %last, "coordinator not reachable yet; retrying");
                // The whole --connect-timeout is used: the last wait ends at the deadline.
                tokio::time::sleep(delay.min(deadline - now)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
