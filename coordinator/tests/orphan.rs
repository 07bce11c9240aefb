//! An agent whose coordinator goes away mid-step stops its load, deletes its keys and returns.
//! The "coordinator" here is a bare gRPC server that starts a long Redis step and then vanishes,
//! so the test controls exactly when the stream ends.

use std::time::Duration;

use bandsync_agent::{AgentConfig, AgentExit};
use bandsync_common::plan::StepSpec;
use bandsync_common::workloads::RedisBasicOps;
use bandsync_coordinator::testbed::RedisServer;
use bandsync_proto::pb::{self, agent_message, coordinator_message::Kind as Out, load_test_server};
use tokio::net::TcpListener;

mod support;
use support::info_stat;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// Sends Welcome and one RunStep, reports the agent's progress, and ends the stream on command.
struct FakeCoordinator {
    redis_url: String,
    progress: mpsc::Sender<u64>,
    hang_up: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

#[tonic::async_trait]
impl load_test_server::LoadTest for FakeCoordinator {
    type SessionStream = ReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let send = |k| pb::CoordinatorMessage::of(k);
        tx.send(Ok(send(Out::Welcome(pb::Welcome {
            run_id: "orphan".into(),
            ..Default::default()
        }))))
        .await
        .unwrap();
        let step = pb::RunStep {
            step_index: 0,
            step_name: "long".into(),
            spec: Some(
                (&StepSpec::RedisBasicOps(RedisBasicOps {
                    iterations: 5_000_000,
                    members: 10,
                    clients: 1,
                    open: None,
                }))
                    .into(),
            ),
            shard: Some(pb::Shard { index: 0, count: 1 }),
            coord_start_unix_ns: 0,
            target: Some(pb::Target {
                redis_url: self.redis_url.clone(),
                key_prefix: "bandsync-test".into(),
                run_id: "orphan".into(),
                servers: Vec::new(),
                dialect: String::new(),
            }),
            timeout_ms: 600_000,
        };
        tx.send(Ok(send(Out::RunStep(step)))).await.unwrap();
        let progress = self.progress.clone();
        let hang_up = self.hang_up.lock().unwrap().take().unwrap();
        tokio::spawn(async move {
            let watch = async {
                while let Ok(Some(m)) = inbound.message().await {
                    if let Some(agent_message::Kind::Progress(p)) = m.kind {
                        let _ = progress.send(p.ops).await;
                    }
                }
            };
            tokio::select! {
                () = watch => {}
                _ = hang_up => {}
            }
            // Dropping `tx` and `inbound` here ends the session: the coordinator is gone.
            drop(tx);
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_orphaned_agent_stops_its_load_and_deletes_its_keys() {
    let redis = RedisServer::start().await.unwrap();
    let mut con = support::connect(&redis).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (progress_tx, mut progress) = mpsc::channel(16);
    let (hang_up_tx, hang_up_rx) = oneshot::channel();
    let service = FakeCoordinator {
        redis_url: redis.url(),
        progress: progress_tx,
        hang_up: std::sync::Mutex::new(Some(hang_up_rx)),
    };
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(load_test_server::LoadTestServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), server_stop.clone().cancelled_owned()),
    );

    let agent = tokio::spawn(bandsync_agent::run(
        AgentConfig {
            coordinator: addr.to_string(),
            agent_id: "orphan".into(),
            connect_timeout: Duration::from_secs(10),
            token: None,
            allow: Default::default(),
            tls: None,
            memory_limit: None,
        },
        CancellationToken::new(),
    ));

    // Wait until the load is really running: progress reports operations and keys exist.
    let ops = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ops = progress.recv().await.expect("agent reports progress");
            if ops > 500 {
                return ops;
            }
        }
    })
    .await
    .expect("the agent's load started");
    assert!(ops > 500);
    let written: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert!(written > 0, "the step wrote keys");

    // The coordinator vanishes.
    hang_up_tx.send(()).unwrap();
    server_stop.cancel();
    let exit = tokio::time::timeout(Duration::from_secs(20), agent)
        .await
        .expect("the agent returned after losing its coordinator")
        .unwrap()
        .unwrap();
    assert!(matches!(exit, AgentExit::CoordinatorLost(_)), "{exit:?}");
    let _ = server.await;

    // Its keys are gone and its load has stopped: Redis sees only our own commands from now on.
    let left: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(left, 0, "the agent deleted every key it wrote");
    let before = info_stat(&mut con, "total_commands_processed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = info_stat(&mut con, "total_commands_processed").await;
    assert!(
        after - before <= 2,
        "load still running after the agent returned: {} commands",
        after - before
    );
}
