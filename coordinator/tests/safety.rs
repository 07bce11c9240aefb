//! Nothing outside the run prefix is lost, and every failure reads as one: a Redis that may
//! evict other keys is refused unless the plan accepts it; evictions that happen anyway FAIL
//! the run with their count; a sweep that cannot count the keys left says "unknown", exit 3.
//! Real redis-server processes, the coordinator and agents over gRPC.

use bandsync_common::plan;
use bandsync_common::report::{CriterionStatus, RunStatus};
use bandsync_coordinator::testbed::RedisServer;
use bandsync_coordinator::{RunConfig, run};
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;
use support::{connect, run_plan};

async fn config_set(con: &mut MultiplexedConnection, key: &str, value: &str) {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(con)
        .await
        .unwrap();
}

/// A Redis that evicts any key when 4 MB are used, holding a key the suite did not write.
async fn evicting_redis() -> (RedisServer, MultiplexedConnection) {
    let redis = RedisServer::start().await.unwrap();
    let mut con = connect(&redis).await;
    config_set(&mut con, "maxmemory", "4mb").await;
    config_set(&mut con, "maxmemory-policy", "allkeys-lru").await;
    redis::cmd("SET")
        .arg("someone-elses:key")
        .arg("precious")
        .query_async::<()>(&mut con)
        .await
        .unwrap();
    (redis, con)
}

fn memory_plan(url: &str, allow: bool) -> plan::Plan {
    let text = format!(
        "[target]\nredis_url = \"{url}\"\nallow_eviction = {allow}\n[run]\nstep_timeout = \"2m\"\n[[steps]]\nname = \"mem\"\nkind = \"redis_memory\"\nsessions = 4000\nmembers = 40\nsample = 10\n"
    );
    plan::parse(&text, "p.toml", "p").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_that_may_evict_other_keys_is_refused_before_anything_starts() {
    let (redis, mut con) = evicting_redis().await;
    let plan = memory_plan(&redis.url(), false);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .expect_err("refused");
    assert_eq!(err.exit_code(), 2, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("maxmemory-policy allkeys-lru with maxmemory 4194304 bytes") && msg.contains("allow_eviction"),
        "{msg}"
    );
    let kept: String = redis::cmd("GET")
        .arg("someone-elses:key")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(kept, "precious");
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(keys, 1, "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evictions_during_a_step_fail_the_run_with_their_count() {
    let (redis, mut con) = evicting_redis().await;
    let plan = memory_plan(&redis.url(), true);
    let report = run_plan(&plan, 1, "evict").await;
    let evictions = report.evictions.as_ref().expect("watched");
    assert_eq!(evictions.policy, "allkeys-lru");
    assert!(evictions.allowed);
    let evicted = evictions.by_step[0].evicted_keys.unwrap();
    let now: u64 = support::info_stat(&mut con, "evicted_keys").await;
    assert!(evicted > 0 && evicted <= now, "{evicted} of {now}");
    let c = report.criteria.iter().find(|c| c.id == "no_evictions").unwrap();
    assert_eq!(c.status, CriterionStatus::Fail);
    assert!(
        c.measured.as_deref().unwrap().starts_with(&format!(
            "{evicted} (maxmemory-policy allkeys-lru: {evicted} during `mem`)"
        )),
        "{c:?}"
    );
    assert_eq!(report.exit_code(), 1);
    let text = bandsync_common::report::render_text(&report);
    assert!(
        text.contains(&format!("❌ Keys evicted by Redis during the run: {evicted}")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_without_maxmemory_passes_the_eviction_check_with_zero() {
    let redis = RedisServer::start().await.unwrap();
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nkind = \"redis_basic_ops\"\niterations = 50\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let report = run_plan(&plan, 1, "noevict").await;
    assert_eq!(report.status, RunStatus::Complete);
    let c = report.criteria.iter().find(|c| c.id == "no_evictions").unwrap();
    assert_eq!((c.status, c.measured.as_deref()), (CriterionStatus::Pass, Some("0")));
}

/// Sends `signal` to a process (SIGSTOP / SIGCONT).
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// Redis stalls (SIGSTOP) in the middle of a step and stays stalled through the end of the run:
/// the agent says its keys were NOT all deleted, the sweep cannot count them, and the report
/// says so — "unknown: the sweep failed because …", exit 3 — instead of "not measured". After
/// SIGCONT the keys are really there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sweep_that_cannot_reach_redis_is_unknown_and_exit_3() {
    let redis = RedisServer::start().await.unwrap();
    let pid = redis.pid();
    struct Resume(u32);
    impl Drop for Resume {
        fn drop(&mut self) {
            signal(self.0, "CONT");
        }
    }
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nname = \"ops\"\nkind = \"redis_basic_ops\"\niterations = 10000000\ntimeout = \"8s\"\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let stall = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        signal(pid, "STOP");
        Resume(pid)
    });
    let report = run_plan(&plan, 1, "stall").await;
    let resume = stall.await.unwrap();
    let step = &report.steps[0];
    let failure = &step.failures.first().expect("the step failed").message;
    assert!(failure.contains("keys NOT all deleted"), "{failure}");
    assert_eq!(report.leftover_keys, None);
    let why = report.sweep_error.as_deref().expect("the sweep's failure is reported");
    let left = report.criteria.iter().find(|c| c.id == "leftover_keys").unwrap();
    assert_eq!(left.status, CriterionStatus::Fail);
    assert_eq!(
        left.measured.as_deref(),
        Some(format!("unknown: the sweep failed because {why}").as_str())
    );
    assert!(
        matches!(&report.status, RunStatus::Incomplete { .. }),
        "{:?}",
        report.status
    );
    assert_eq!(report.exit_code(), 3);
    let text = bandsync_common::report::render_text(&report);
    assert!(
        text.contains("Keys left under") && text.contains(": unknown: the sweep failed because"),
        "{text}"
    );
    drop(resume);
    // What the report could not count is really there (and this test removes it).
    let mut con = connect(&redis).await;
    let prefix = format!("{}*", report.target.run_prefix);
    let keys: Vec<String> = redis::cmd("KEYS").arg(&prefix).query_async(&mut con).await.unwrap();
    assert!(!keys.is_empty(), "the keys the agent could not delete are still there");
}

/// What an agent says of itself reaches the terminal and the report printable and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_id_with_escapes_and_megabytes_is_printed_clean_and_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = bandsync_agent::AgentConfig {
        coordinator: listener.local_addr().unwrap().to_string(),
        agent_id: format!("evil\u{1b}[2J\u{1b}]0;pwned\u{7}{}", "x".repeat(1_000_000)),
        connect_timeout: std::time::Duration::from_secs(10),
        token: None,
        allow: Default::default(),
        tls: None,
        memory_limit: None,
    };
    let agent = tokio::spawn(bandsync_agent::run(config, CancellationToken::new()));
    let plan = plan::parse(
        "[[steps]]\nkind = \"timestamp_generation\"\niterations = 1000\nbatch_size = 100\n",
        "p.toml",
        "p",
    )
    .unwrap();
    let report = run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap();
    agent.await.unwrap().unwrap();
    let id = &report.agents[0].agent_id;
    assert!(
        id.starts_with("evil?[2J?]0;pwned?xxx") && id.chars().count() == 128,
        "{id:.60}"
    );
    let text = bandsync_common::report::render_text(&report);
    assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'));
    let json = serde_json::to_string(&report).unwrap();
    assert!(json.len() < 200_000, "{} bytes", json.len());
}

/// A band too big for the agents that joined is refused before loading, naming the budget:
/// nothing is allocated, nobody connects, exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_band_over_the_per_agent_budget_is_refused_before_loading() {
    let redis = RedisServer::start().await.unwrap();
    let servers = support::start_servers(&redis.url(), 1).await;
    let mut plan = plan::parse(
        "[run]\nprobe = false\n[[steps]]\nname = \"big\"\nkind = \"session_sync\"\nsessions = 25\nmembers = 1000\n",
        "p.toml",
        "p",
    )
    .unwrap();
    plan.target.servers = servers.urls.clone();
    let report = run_plan(&plan, 1, "budget").await;
    let step = &report.steps[0];
    let failure = &step.failures[0].message;
    assert!(
        failure.starts_with("refused before loading: 25,000 members over 1 agent(s) is 25,000 per agent; at most 20,000 per agent: add agents (at least 2)"),
        "{failure}"
    );
    assert!(step.agents_sent.is_empty());
    assert_eq!(report.exit_code(), 3);
}

/// A step that would write more than the target has room for is refused before loading:
/// other clients never meet an out-of-memory Redis because of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_bigger_than_the_targets_free_memory_is_refused_before_loading() {
    let redis = RedisServer::start().await.unwrap();
    let mut con = connect(&redis).await;
    config_set(&mut con, "maxmemory", "4mb").await;
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nname = \"mem\"\nkind = \"redis_memory\"\nsessions = 20000\nmembers = 50\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let report = run_plan(&plan, 1, "room").await;
    let failure = &report.steps[0].failures[0].message;
    assert!(
        failure.starts_with("refused before loading: it writes about 203 MiB to Redis at its peak and the target has"),
        "{failure}"
    );
    assert!(failure.contains("MiB left under its maxmemory"), "{failure}");
    assert!(report.steps[0].agents_sent.is_empty());
    assert_eq!(report.exit_code(), 3);
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(keys, 0, "nothing was written");
}

/// An agent refuses a share bigger than its memory budget before allocating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_refuses_a_share_over_its_memory_limit_before_allocating() {
    let redis = RedisServer::start().await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = bandsync_agent::AgentConfig {
        coordinator: listener.local_addr().unwrap().to_string(),
        agent_id: "small".into(),
        connect_timeout: std::time::Duration::from_secs(10),
        token: None,
        allow: Default::default(),
        tls: None,
        memory_limit: Some(64 << 20),
    };
    let agent = tokio::spawn(bandsync_agent::run(config, CancellationToken::new()));
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[[steps]]\nname = \"big\"\nkind = \"session_integrity\"\nsessions = 100000\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let report = run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap();
    agent.await.unwrap().unwrap();
    let failure = &report.steps[0].failures[0].message;
    assert_eq!(
        failure,
        "this agent's share of step `big` needs about 391 MiB and it may use 64 MiB (--memory-limit-mib): add agents or lower the step's counts"
    );
    assert_eq!(report.exit_code(), 3);
    let mut con = connect(&redis).await;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(keys, 0, "nothing was written");
}
