//! The Socket.IO steps end to end, in one process: a real redis-server, two reference BandSync
//! server instances sharing it, the coordinator and two agents over real gRPC; and a test-double
//! server that sends no `serverTimestamp`.

use bandsync_common::plan;
use bandsync_common::report::{CriterionStatus, Figures, RunStatus};
use bandsync_coordinator::RunConfig;
use bandsync_coordinator::testbed::RedisServer;
use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{Data, SocketRef};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;
use support::{spawn_agents, start_servers, step_of};

const PLAN: &str = r#"
[target]
redis_url = "redis://placeholder"
[run]
step_timeout = "1m"
[[steps]]
kind = "event_consistency"
clients = 4
[[steps]]
kind = "session_sync"
sessions = 4
members = 6
changes = 12
interval = "300ms"
ramp_up = "1s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_consistency_and_session_sync_across_two_instances_and_two_agents() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers(&redis.url(), 2).await;
    let mut plan = plan::parse(PLAN, "p.toml", "p").unwrap();
    plan.target.redis_url = Some(redis.url());
    plan.target.servers = servers.urls.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agents = spawn_agents(2, listener.local_addr().unwrap(), "sio");
    let report = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(2), CancellationToken::new())
        .await
        .unwrap();
    for a in agents {
        a.await.unwrap().unwrap();
    }
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    // The probe ran first, on its own, and found the protocol's dialect.
    assert_eq!(report.steps[0].kind, "protocol_conformance");
    let Some(Figures::ProtocolConformance(p)) = &report.steps[0].figures else {
        panic!("{:#?}", report.steps[0]);
    };
    assert_eq!(p.dialect, Some(bandsync_common::dialect::Dialect::default()), "{p:#?}");

    let Some(Figures::EventConsistency(e)) = &step_of(&report, "event_consistency").figures else {
        panic!("{:#?}", report.steps);
    };
    assert_eq!((e.clients, e.clients_failed), (4, 0));
    assert_eq!(e.client_timestamp_events, 32, "8 commands per client");
    assert!(e.snapshots >= 32 && e.ticks > 0, "{e:#?}");
    assert_eq!(e.missing_server_timestamp, 0);
    assert_eq!(e.timestamp_ordering_rate, Some(1.0), "{e:#?}");
    // Server and agents share this machine's clock: the estimated offset is 0 within its bound.
    let (min, max, bound) = (
        e.server_offset_min_ms.unwrap(),
        e.server_offset_max_ms.unwrap(),
        e.server_offset_bound_ms.unwrap(),
    );
    assert!(
        min >= -bound && max <= bound,
        "offset {min}..{max} ms, bound ±{bound} ms"
    );
    assert!(e.corrected_min_ms.unwrap() >= -bound, "{e:#?}");

    let Some(Figures::SessionSync(s)) = &step_of(&report, "session_sync").figures else {
        panic!("{:#?}", report.steps);
    };
    assert_eq!(
        (s.members_planned, s.members_connected, s.connect_failures),
        (24, 24, 0)
    );
    assert_eq!((s.instances, s.agents), (2, 2));
    assert_eq!(s.changes_emitted, 48);
    assert_eq!(s.convergence_rate, 1.0, "{s:#?}");
    assert_eq!(s.expected_deliveries, 24 * 12);
    assert_eq!(s.delivered + s.missed_changes, s.expected_deliveries);
    // Placement (s + m) mod 2 puts half of each session's followers on the leader's instance.
    assert!(s.propagation_same_instance_us.count > 0, "{s:#?}");
    assert!(s.propagation_cross_instance_us.count > 0, "{s:#?}");
    assert_eq!(s.propagation_leader_us.count, 48);
    assert_eq!(
        (s.duplicate_snapshots, s.out_of_order_snapshots, s.unexpected_states),
        (0, 0, 0)
    );
    assert_eq!(s.snapshots_without_version, 0, "the reference server sends version");
    assert!(s.ticks > 0 && s.beat_phase_cross_instance.segments > 0, "{s:#?}");
    let conv = report.criteria.iter().find(|c| c.id == "sync_convergence").unwrap();
    assert_eq!(conv.status, CriterionStatus::Pass);
    let ordering = report.criteria.iter().find(|c| c.id == "timestamp_ordering").unwrap();
    assert_eq!(ordering.status, CriterionStatus::Pass);
    let text = bandsync_common::report::render_text(&report);
    assert!(text.contains("Cross-Event Timestamp Consistency:"), "{text}");
    assert!(text.contains("Timestamp Ordering Rate: 100.0%"), "{text}");
    assert!(text.contains("🎼 CROSS-INSTANCE SYNC:"), "{text}");
    assert!(text.contains("Propagation, cross instance: p50"), "{text}");
    // Every member left: the servers deleted every session hash they wrote.
    let mut con = support::connect(&redis).await;
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..40 {
        keys = redis::cmd("KEYS")
            .arg("bandsync-test-server:session:*")
            .query_async(&mut con)
            .await
            .unwrap();
        if keys.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(keys.is_empty(), "{keys:?}");
}

/// A server that follows the protocol's old shape: snapshots without `serverTimestamp` or
/// `version`, no acks, no ticks.
async fn server_without_timestamps() -> (String, CancellationToken) {
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async |s: SocketRef| {
        for event in ["join_session", "set_role", "set_tempo", "play", "pause"] {
            s.on(event, async |s: SocketRef, Data(v): Data<Value>| {
                let snapshot = json!({
                    "sessionId": v["sessionId"], "tempo": v.get("tempo").cloned().unwrap_or(json!(100)),
                    "tempoBpm": 100, "position": 0, "isPlaying": false, "leaderSocketId": null, "members": [],
                });
                let _ = s.emit("snapshot", &snapshot);
            });
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let app = axum::Router::new().layer(layer);
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
    });
    (url, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_without_server_timestamps_is_reported_absent_not_measured() {
    let (url, stop) = server_without_timestamps().await;
    let text = "[target]\nredis_url = \"redis://127.0.0.1:1\"\n[[steps]]\nkind = \"event_consistency\"\nclients = 2\ninterval = \"50ms\"\nsettle = \"300ms\"\n";
    let mut plan = plan::parse(text, "p.toml", "p").unwrap();
    plan.target.servers = vec![url];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _agents = spawn_agents(1, listener.local_addr().unwrap(), "old");
    let report = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap();
    stop.cancel();
    let Some(Figures::EventConsistency(e)) = &step_of(&report, "event_consistency").figures else {
        panic!("{:#?}", report.steps);
    };
    assert_eq!(e.clients, 2);
    assert!(e.snapshots >= 10, "{e:#?}");
    assert_eq!(e.server_timestamp_events, 0);
    assert_eq!(e.missing_server_timestamp, e.snapshots + e.ticks);
    assert_eq!(e.timestamp_ordering_rate, None);
    assert_eq!(
        e.avg_client_server_diff_ms, None,
        "never computed from the client clock"
    );
    assert_eq!(e.server_offset_ms, None);
    assert_eq!(e.consistency_rating, bandsync_common::workload::Rating::NotRated);
    let ordering = report.criteria.iter().find(|c| c.id == "timestamp_ordering").unwrap();
    assert_eq!(ordering.status, CriterionStatus::NotMeasured);
    let rendered = bandsync_common::report::render_text(&report);
    assert!(rendered.contains("Avg Client-Server Diff: absent"), "{rendered}");
    assert!(
        rendered.contains("without serverTimestamp"),
        "the recommendation names the missing timestamps:\n{rendered}"
    );
}
