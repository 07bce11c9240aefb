//! End to end, in one process: a real redis-server, the coordinator on a loopback port the OS
//! picked, and two agents dialing it over real gRPC. Asserts on measured outcomes.

use std::path::Path;
use std::time::Duration;

use bandsync_agent::{AgentConfig, AgentExit};
use bandsync_common::plan::{self, Plan};
use bandsync_common::report::{CriterionStatus, Figures, Report, RunStatus};
use bandsync_coordinator::RunConfig;
use bandsync_coordinator::testbed::RedisServer;
use bandsync_proto::PROTOCOL_VERSION;
use bandsync_proto::pb::{self, agent_message, load_test_client::LoadTestClient};
use tokio::net::TcpListener;

mod support;
use support::{info_stat, spawn_agents};
use tokio_util::sync::CancellationToken;

/// A plan of one small timestamp step: no step touches its (unreachable) Redis target.
fn timestamp_plan() -> Plan {
    let text = "[target]\nredis_url = \"redis://127.0.0.1:1\"\n[[steps]]\nkind = \"timestamp_generation\"\niterations = 1000\n";
    plan::parse(text, "p.toml", "p").unwrap()
}

fn quickstart() -> Plan {
    plan::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../plans/quickstart.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quickstart_plan_runs_end_to_end_on_two_agents() {
    let redis = RedisServer::start().await.unwrap();
    let mut con = support::connect(&redis).await;
    // Keys the suite did not create: one outside the prefix, one under the prefix of another run.
    let sentinel: &[u8] = b"sentinel \x00\xff value";
    redis::cmd("SET")
        .arg("sentinel:outside")
        .arg(sentinel)
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    redis::cmd("SET")
        .arg("bandsync-test:r1-other:x")
        .arg("other run")
        .query_async::<()>(&mut con)
        .await
        .unwrap();

    let mut plan = quickstart();
    plan.target.redis_url = Some(redis.url());
    let servers = support::start_servers(&redis.url(), 2).await;
    plan.target.servers = servers.urls.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agents = spawn_agents(2, listener.local_addr().unwrap(), "e2e");
    let report = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(2), CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    // The plan's 5 steps and the conformance probe before its first Socket.IO step (one agent).
    assert_eq!(report.steps.len(), 6);
    assert_eq!(report.steps[3].kind, "protocol_conformance");
    assert_eq!(report.steps[3].agents_reported.len(), 1);
    assert!(report.steps[3].failures.is_empty(), "{:?}", report.steps[3].failures);
    for s in report.steps.iter().filter(|s| s.kind != "protocol_conformance") {
        assert_eq!(
            s.agents_reported.len(),
            2,
            "step {} reported by {:?}",
            s.name,
            s.agents_reported
        );
        assert!(s.failures.is_empty(), "{:?}", s.failures);
        // The per-second timeline accounts for exactly the operations the agents report.
        let per_agent: u64 = s.per_agent.iter().map(|a| a.ops).sum();
        assert_eq!(s.per_agent.len(), 2, "{}", s.name);
        assert!(per_agent > 0, "{}", s.name);
        assert_eq!(s.timeline.iter().map(|p| p.ops).sum::<u64>(), per_agent, "{}", s.name);
        // Each agent says what the step cost it.
        for a in &s.per_agent {
            assert!(a.rss_mb.unwrap() > 1.0, "{a:?}");
            assert!(a.wall_s.unwrap() > 0.0, "{a:?}");
            assert!(a.cpu_percent.unwrap() >= 0.0, "{a:?}");
        }
    }

    // Counts add up across agents: every agent runs the step's full count.
    let Some(Figures::TimestampGeneration(g)) = report.step_figures("timestamp_generation") else {
        panic!()
    };
    assert_eq!(g.total_iterations, 2 * 100_000);
    assert_eq!(g.batch_count, 2 * 100);
    assert_eq!(g.comparisons, 2 * 100 * 999);
    assert_eq!(g.batch_duration_ns.count, 200);
    assert!(g.min_timestamps_per_second <= g.avg_timestamps_per_second);
    assert!(g.avg_timestamps_per_second <= g.max_timestamps_per_second);

    let Some(Figures::TimestampPrecision(p)) = report.step_figures("timestamp_precision") else {
        panic!()
    };
    assert!(p.total_measurements > 100, "{p:?}");
    assert_eq!(p.read_gap_ns.count, p.total_measurements);
    assert!(p.zero_diffs <= p.total_measurements && p.small_diffs <= p.total_measurements);

    let Some(Figures::RedisBasicOps(r)) = report.step_figures("redis_basic_ops") else {
        panic!()
    };
    assert_eq!(r.operations.len(), 5);
    for op in &r.operations {
        assert_eq!(op.iterations, 2 * 1000, "{}", op.op);
        assert_eq!(op.ok, 2 * 1000, "{}", op.op);
        assert_eq!(op.errors, 0, "{}", op.op);
        assert_eq!(op.latency_us.count, 2000, "{}", op.op);
        assert!(op.avg_ms > 0.0 && op.ops_per_sec_document > 0.0 && op.throughput_ops_per_sec > 0.0);
        // Two agents working at once: the wall-time throughput cannot be below one agent's rate
        // by more than scheduling noise, nor above the sum of both by definition.
        assert!(op.throughput_ops_per_sec < 2.5 * op.ops_per_sec_document, "{op:?}");
    }
    assert!(r.payload_bytes > 1000, "the 10-member session JSON is about 1.3 KB");

    // Agents on this host share the coordinator's clock: offset 0 must lie within each bound.
    assert_eq!(report.agents.len(), 2);
    for a in &report.agents {
        let c = a.clock.expect("clock estimated");
        assert!(
            c.contains(0),
            "agent {} offset {} ns not within ±{} ns of 0",
            a.agent_id,
            c.offset_ns,
            c.uncertainty_ns
        );
        assert_eq!(c.samples as usize, bandsync_coordinator::controller::CLOCK_PROBES);
        assert!(a.lost.is_none());
    }
    // Every agent ran the plan's 5 steps; one of them the probe as well.
    let completed: Vec<u32> = report.agents.iter().map(|a| a.steps_completed).collect();
    assert_eq!(completed.iter().sum::<u32>(), 11, "{completed:?}");
    assert!(completed.iter().all(|c| *c >= 5), "{completed:?}");

    // Nothing left under the run prefix; nothing else touched.
    assert_eq!(report.leftover_keys, Some(0));
    let c = report.criteria.iter().find(|c| c.id == "leftover_keys").unwrap();
    assert_eq!(c.status, CriterionStatus::Pass);
    let pattern = format!("{}*", report.target.run_prefix);
    let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("MATCH")
        .arg(&pattern)
        .arg("COUNT")
        .arg(10_000)
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
    let after: Vec<u8> = redis::cmd("GET")
        .arg("sentinel:outside")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(after, sentinel);
    let other: String = redis::cmd("GET")
        .arg("bandsync-test:r1-other:x")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(other, "other run");

    for a in agents {
        assert_eq!(a.await.unwrap().unwrap(), AgentExit::Finished);
    }

    // The report renders and serializes.
    let text = bandsync_common::report::render_text(&report);
    for line in [
        "Avg Timestamps/sec:",
        "Precision Rating:",
        "SET Ops/sec:",
        "HGET Ops/sec:",
        "OVERALL PERFORMANCE RATING",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["schema_version"], 3);
    assert_eq!(json["steps"][2]["figures"]["operations"][0]["ok"], 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_start_each_step_at_the_same_instant() {
    // The RunStep reaches the agents about 300 ms before the scheduled instant. Each agent must
    // start at that instant (converted with its clock offset), not on receipt: no agent starts
    // before it, and none is more than scheduling noise after it.
    let redis = RedisServer::start().await.unwrap();
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nkind = \"redis_basic_ops\"\niterations = 50\n",
        redis.url()
    );
    let plan = plan::parse(&text, "sync.toml", "sync").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agents = spawn_agents(2, listener.local_addr().unwrap(), "e2e");
    let report: Report = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(2), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Complete);
    let Some(Figures::RedisBasicOps(r)) = report.step_figures("redis_basic_ops") else {
        panic!()
    };
    assert_eq!(r.operations[0].ok, 100);
    let step = &report.steps[0];
    assert_eq!(step.start_delay_ms.len(), 2);
    let bound_ms = report
        .agents
        .iter()
        .map(|a| a.clock.unwrap().uncertainty_ns)
        .max()
        .unwrap() as f64
        / 1e6;
    for d in &step.start_delay_ms {
        assert!(
            *d >= -bound_ms,
            "an agent started {d} ms before the scheduled instant (clock bound {bound_ms} ms)"
        );
        assert!(*d < 100.0, "an agent started {d} ms after the scheduled instant");
    }
    assert!(step.start_spread_ms.unwrap() < 100.0, "{:?}", step.start_spread_ms);
    for a in agents {
        a.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_with_another_protocol_version_or_missing_step_kinds_are_refused_with_both_sides_named() {
    let plan = timestamp_plan();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let coordinator = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), shutdown).await }
    });

    let mut client = loop {
        match LoadTestClient::connect(format!("http://{addr}")).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let hello = pb::Hello {
        agent_id: "old-agent".into(),
        protocol_version: PROTOCOL_VERSION + 41,
        ..Default::default()
    };
    let stream = tokio_stream::iter([pb::AgentMessage::of(agent_message::Kind::Hello(hello))]);
    let status = client.session(stream).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let msg = status.message();
    assert!(msg.contains(&format!("speaks {}", PROTOCOL_VERSION + 41)), "{msg}");
    assert!(
        msg.contains(&format!("this coordinator speaks {PROTOCOL_VERSION}")),
        "{msg}"
    );

    // An agent that cannot run a step kind of the plan is refused at Hello, both sides named.
    let hello = pb::Hello {
        agent_id: "partial-agent".into(),
        version: "0.0.9".into(),
        protocol_version: PROTOCOL_VERSION,
        capabilities: vec!["redis_basic_ops".into()],
        ..Default::default()
    };
    let stream = tokio_stream::iter([pb::AgentMessage::of(agent_message::Kind::Hello(hello))]);
    let status = client.session(stream).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains(
            "agent `partial-agent` (version 0.0.9) cannot run step kind(s) timestamp_generation that this plan uses; it runs: redis_basic_ops"
        ),
        "{}",
        status.message()
    );

    // Ctrl-C while waiting for agents: no report, interrupted.
    shutdown.cancel();
    let err = coordinator.await.unwrap().unwrap_err();
    assert_eq!(err.exit_code(), 130, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_target_fails_before_any_agent_is_involved() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let text = format!("[target]\nredis_url = \"redis://127.0.0.1:{port}\"\n[[steps]]\nkind = \"redis_basic_ops\"\n");
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains(&format!("redis://127.0.0.1:{port}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_without_the_right_token_are_refused_and_the_right_one_runs() {
    let plan = timestamp_plan();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = RunConfig {
        expected_agents: 1,
        token: Some("correct-horse-battery".into()),
        tls: None,
        ..Default::default()
    };
    let coordinator =
        tokio::spawn(
            async move { bandsync_coordinator::run(&plan, listener, &config, CancellationToken::new()).await },
        );

    let agent = |token: Option<&str>| {
        let config = AgentConfig {
            coordinator: addr.to_string(),
            agent_id: format!("token-{token:?}"),
            connect_timeout: Duration::from_secs(10),
            token: token.map(str::to_owned),
            allow: Default::default(),
            tls: None,
            memory_limit: None,
        };
        bandsync_agent::run(config, CancellationToken::new())
    };
    let missing = agent(None).await.unwrap_err().to_string();
    assert!(
        missing.contains("requires a token: start the agent with --token or BANDSYNC_TOKEN"),
        "{missing}"
    );
    let wrong = agent(Some("correct-horse-battery-staple"))
        .await
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("wrong token"), "{wrong}");
    // Neither counted as an agent: the right one is the run's only agent.
    assert_eq!(agent(Some("correct-horse-battery")).await.unwrap(), AgentExit::Finished);
    let report = coordinator.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Complete);
    assert_eq!(report.agents.len(), 1);
    assert_eq!(report.agents[0].agent_id, "token-Some(\"correct-horse-battery\")");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_target_outside_the_agents_allow_list_is_refused_with_no_connection_made() {
    let redis = RedisServer::start().await.unwrap();
    let mut con = support::connect(&redis).await;
    redis::cmd("SET")
        .arg("sentinel")
        .arg("untouched")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    let before = info_stat(&mut con, "total_connections_received").await;

    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nkind = \"redis_basic_ops\"\niterations = 10\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = AgentConfig {
        coordinator: listener.local_addr().unwrap().to_string(),
        agent_id: "careful".into(),
        connect_timeout: Duration::from_secs(10),
        token: None,
        allow: bandsync_agent::allow::AllowList::parse(["10.9.9.9:6379"]).unwrap(),
        tls: None,
        memory_limit: None,
    };
    let agent = tokio::spawn(bandsync_agent::run(config, CancellationToken::new()));
    let report = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap();
    agent.await.unwrap().unwrap();

    // The coordinator reports which agent refused what, and the run is incomplete.
    assert!(
        matches!(report.status, RunStatus::Incomplete { .. }),
        "{:?}",
        report.status
    );
    let step = &report.steps[0];
    assert!(step.figures.is_none());
    assert_eq!(step.failures.len(), 1);
    assert_eq!(step.failures[0].agent, "careful");
    let msg = &step.failures[0].message;
    assert!(
        msg.contains("refused by this agent's allow-list [10.9.9.9:6379]"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("target 127.0.0.1:{} is not on it", redis.port())),
        "{msg}"
    );
    let text = bandsync_common::report::render_text(&report);
    assert!(
        text.contains("agent careful: refused by this agent's allow-list"),
        "{text}"
    );

    // Verified at the target: the only connection made during the run was the coordinator's own.
    let after = info_stat(&mut con, "total_connections_received").await;
    assert_eq!(after - before, 1, "the agent must not have connected");
    let sentinel: String = redis::cmd("GET").arg("sentinel").query_async(&mut con).await.unwrap();
    assert_eq!(sentinel, "untouched");
}

/// A CA, and certificates it signed for `names` (the coordinator's) and for an agent.
struct Pki {
    ca_pem: Vec<u8>,
    server: (Vec<u8>, Vec<u8>),
    client: (Vec<u8>, Vec<u8>),
}

fn new_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    };
    Pki {
        ca_pem: ca.pem().into_bytes(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["agent-1".into()]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_control_channel_runs_over_mutual_tls_and_refuses_agents_without_a_valid_certificate() {
    let pki = new_pki();
    let other = new_pki();
    let plan = timestamp_plan();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = RunConfig {
        expected_agents: 1,
        token: None,
        tls: Some(bandsync_coordinator::ServerTls {
            cert_pem: pki.server.0.clone(),
            key_pem: pki.server.1.clone(),
            client_ca_pem: Some(pki.ca_pem.clone()),
        }),
        ..Default::default()
    };
    let coordinator =
        tokio::spawn(
            async move { bandsync_coordinator::run(&plan, listener, &config, CancellationToken::new()).await },
        );

    let agent = |tls: Option<bandsync_agent::ClientTls>| {
        let config = AgentConfig {
            coordinator: format!("https://localhost:{port}"),
            agent_id: "tls-agent".into(),
            connect_timeout: Duration::from_secs(2),
            token: None,
            allow: Default::default(),
            tls,
            memory_limit: None,
        };
        bandsync_agent::run(config, CancellationToken::new())
    };
    // No client certificate: the handshake fails, the agent never joins.
    let no_cert = bandsync_agent::ClientTls {
        ca_pem: pki.ca_pem.clone(),
        identity: None,
        domain: None,
    };
    let err = agent(Some(no_cert)).await.expect_err("no client certificate");
    assert!(
        err.to_string()
            .contains("start the agent with --tls-cert and --tls-key"),
        "{err}"
    );
    assert!(!matches!(err, bandsync_agent::AgentError::InvalidUrl { .. }), "{err}");
    // A certificate from another CA, and trust in another CA: refused both ways.
    let foreign = bandsync_agent::ClientTls {
        ca_pem: other.ca_pem.clone(),
        identity: Some(other.client.clone()),
        domain: None,
    };
    let e2 = agent(Some(foreign)).await.expect_err("foreign CA");
    assert!(e2.to_string().contains("invalid peer certificate"), "{e2}");
    // Plain HTTP/2 to a TLS port does not join either, nor does https without a CA.
    let plain = AgentConfig {
        coordinator: format!("http://127.0.0.1:{port}"),
        agent_id: "plain".into(),
        connect_timeout: Duration::from_secs(2),
        token: None,
        allow: Default::default(),
        tls: None,
        memory_limit: None,
    };
    assert!(bandsync_agent::run(plain, CancellationToken::new()).await.is_err());
    let no_ca = agent(None).await.unwrap_err().to_string();
    assert!(no_ca.contains("needs --tls-ca"), "{no_ca}");

    // The right CA and a client certificate it signed: the run completes over mutual TLS.
    let good = bandsync_agent::ClientTls {
        ca_pem: pki.ca_pem.clone(),
        identity: Some(pki.client.clone()),
        domain: None,
    };
    assert_eq!(agent(Some(good)).await.unwrap(), AgentExit::Finished);
    let report = coordinator.await.unwrap().unwrap();
    assert_eq!(report.status, RunStatus::Complete);
    assert_eq!(report.agents.len(), 1);
}
