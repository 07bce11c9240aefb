//! The gRPC service agents dial. It checks the `Hello` and hands each accepted stream to the run
//! controller as a [`Join`]; everything after that is the controller's business.

use std::net::SocketAddr;
use std::time::Duration;

use bandsync_proto::PROTOCOL_VERSION;
use bandsync_proto::pb::{self, agent_message, load_test_server::LoadTest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// Messages the controller sends to one agent. An `Err` ends the agent's stream with that status.
pub type Outbound = mpsc::Sender<Result<pb::CoordinatorMessage, Status>>;

/// Longest agent id, hostname or version kept from a `Hello` (longer is cut, with `…`).
const HELLO_FIELD_CHARS: usize = 128;

/// An agent that said a valid `Hello`.
pub struct Join {
    pub hello: pb::Hello,
    pub remote: Option<SocketAddr>,
    pub inbound: Streaming<pb::AgentMessage>,
    pub outbound: Outbound,
}

pub struct Service {
    pub joins: mpsc::Sender<Join>,
    /// Step kinds the plan uses: an agent must be able to run every one.
    pub required: Vec<String>,
}

#[tonic::async_trait]
impl LoadTest for Service {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let remote = request.remote_addr();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10 s"))??;
        let mut hello = match first.and_then(|m| m.kind) {
            Some(agent_message::Kind::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message of a session must be Hello")),
        };
        // What an agent says of itself reaches logs, terminals and the report: printable and
        // bounded, whoever sent it.
        for field in [&mut hello.agent_id, &mut hello.hostname, &mut hello.version] {
            *field = bandsync_common::fmt::printable(field, HELLO_FIELD_CHARS);
        }
        hello.capabilities.truncate(64);
        for c in &mut hello.capabilities {
            *c = bandsync_common::fmt::printable(c, HELLO_FIELD_CHARS);
        }
        if hello.protocol_version != PROTOCOL_VERSION {
            warn!(agent = %hello.agent_id, theirs = hello.protocol_version, ours = PROTOCOL_VERSION, "refused an agent with another protocol version");
            return Err(Status::failed_precondition(format!(
                "protocol version mismatch: agent `{}` speaks {}, this coordinator speaks {}; run the same release on both",
                hello.agent_id, hello.protocol_version, PROTOCOL_VERSION
            )));
        }
        let missing: Vec<&str> = self
            .required
            .iter()
            .filter(|k| !hello.capabilities.contains(k))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            warn!(agent = %hello.agent_id, missing = ?missing, "refused an agent that cannot run this plan");
            return Err(Status::failed_precondition(format!(
                "agent `{}` (version {}) cannot run step kind(s) {} that this plan uses; it runs: {}. Run the same release as the coordinator (version {})",
                hello.agent_id,
                hello.version,
                missing.join(", "),
                if hello.capabilities.is_empty() {
                    "nothing".to_owned()
                } else {
                    hello.capabilities.join(", ")
                },
                env!("CARGO_PKG_VERSION")
            )));
        }
        let (tx, rx) = mpsc::channel(256);
        let join = Join {
            hello,
            remote,
            inbound,
            outbound: tx,
        };
        if self.joins.send(join).await.is_err() {
            return Err(Status::unavailable("this coordinator's run is over"));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
