//! `redis_failover` with real faults, in one process: the testbed's redis-server (owned, so it
//! can be restarted), two reference BandSync instances on it, the coordinator and two agents.

use std::sync::Arc;

use bandsync_common::plan;
use bandsync_common::report::{CriterionStatus, Figures, RunStatus};
use bandsync_coordinator::RunConfig;
use bandsync_coordinator::testbed::RedisServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;
use support::{spawn_agents, start_servers};

const PLAN: &str = r#"
[target]
redis_url = "redis://placeholder"
[faults]
allow = ["pause", "kill_clients", "restart"]
[run]
step_timeout = "1m"
[[steps]]
kind = "redis_failover"
mode = "pause"
warmup = "2s"
duration = "1s"
recovery = "4s"
[[steps]]
kind = "redis_failover"
mode = "kill_clients"
warmup = "2s"
recovery = "4s"
[[steps]]
kind = "redis_failover"
mode = "restart"
warmup = "2s"
duration = "1s"
recovery = "5s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_fault_is_seen_recovered_from_and_the_band_converges() {
    let redis = RedisServer::start().await.unwrap();
    let url = redis.url();
    let servers = start_servers(&url, 2).await;
    let control = Arc::new(tokio::sync::Mutex::new(redis));
    let mut plan = plan::parse(PLAN, "p.toml", "p").unwrap();
    plan.target.redis_url = Some(url);
    plan.target.servers = servers.urls.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let _agents = spawn_agents(2, listener.local_addr().unwrap(), "fault");
    let config = RunConfig {
        redis_control: Some(control.clone()),
        ..RunConfig::agents(2)
    };
    let report = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        bandsync_coordinator::run(&plan, listener, &config, CancellationToken::new()),
    )
    .await
    .expect("no run hangs")
    .unwrap();
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    let text = bandsync_common::report::render_text(&report);
    let faults = report.steps.iter().filter(|s| s.kind == "redis_failover");
    for (step, mode) in faults.zip(["pause", "kill_clients", "restart"]) {
        let Some(Figures::RedisFailover(f)) = &step.figures else {
            panic!("{step:#?}")
        };
        assert_eq!(f.mode.name(), mode);
        assert!(f.fault_ms.is_some(), "{mode}: the coordinator recorded the fault");
        assert!(f.ops_failed > 0, "{mode}: the fault was seen: {f:#?}");
        let recovery = f
            .recovery_ms
            .unwrap_or_else(|| panic!("{mode}: recovery measured: {f:#?}"));
        assert!(recovery < 10_000.0, "{mode}: recovered in {recovery} ms");
        assert_eq!(f.agents_not_recovered, 0);
        assert_eq!(
            f.convergence_rate,
            Some(1.0),
            "{mode}: sessions converge afterwards: {f:#?}\n{text}"
        );
        assert_eq!(f.instances.len(), 2, "{mode}: members on both instances");
        for i in &f.instances {
            assert_eq!(
                i.kept_ticking, i.members,
                "{mode}: instance {} kept ticking: {f:#?}",
                i.instance
            );
        }
        assert!(f.reconnection_working);
        if mode != "pause" {
            // Every pooled connection was dropped: the pool had to open new ones.
            assert!(f.pool_reconnects > 0, "{mode}: {f:#?}");
        }
        // The restart is without persistence: the keys written before it are gone, and said so.
        if mode == "restart" {
            assert_eq!((f.keys_kept, f.keys_lost), (0, f.keys_written), "{f:#?}");
        } else {
            assert_eq!(f.keys_kept, f.keys_written, "{mode}: {f:#?}");
        }
    }
    assert_eq!(report.leftover_keys, Some(0));
    let c = report.criteria.iter().find(|c| c.id == "recovery_time").unwrap();
    assert_eq!(c.status, CriterionStatus::Pass, "{c:?}");
    let text = bandsync_common::report::render_text(&report);
    assert!(
        text.contains("Redis Unavailable Scenario (redis_failover-3: restart):"),
        "{text}"
    );
    assert!(text.contains("Data Persisted: ❌ no (0 of"), "{text}");
}

#[tokio::test]
async fn a_restart_without_the_testbeds_redis_is_refused_before_any_agent_is_involved() {
    let redis = RedisServer::start().await.unwrap();
    let text = "[target]\nredis_url = \"redis://placeholder\"\n[faults]\nallow = [\"restart\"]\n[[steps]]\nkind = \"redis_failover\"\nmode = \"restart\"\nsessions = 0\n";
    let mut plan = plan::parse(text, "p.toml", "p").unwrap();
    plan.target.redis_url = Some(redis.url());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only the testbed's own redis-server can be restarted"),
        "{err}"
    );
}
