//! The open workload model and generator honesty, against a real redis-server with the
//! coordinator and an agent over gRPC: a Redis stall (`CLIENT PAUSE`) shows in the latency from
//! the intended start and not in send-to-reply; arrivals beyond `max_in_flight` are dropped and
//! counted; an agent made late on purpose is a limited generator and passes no criterion.

use std::time::Duration;

use bandsync_common::plan;
use bandsync_common::report::html::render_html;
use bandsync_common::report::{CriterionStatus, Figures, Report, RunStatus, render_text};
use bandsync_common::workloads::arrival::OpenFigures;
use bandsync_coordinator::testbed::RedisServer;

mod support;
use support::{info_stat, run_plan};

fn open_plan(redis: &RedisServer, keys: &str) -> plan::Plan {
    step_plan(redis, "redis_basic_ops", &format!("clients = 1\n{keys}"))
}

fn step_plan(redis: &RedisServer, kind: &str, keys: &str) -> plan::Plan {
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[run]\nstep_timeout = \"30s\"\n[criteria]\nredis_ops_per_second = 10\n[[steps]]\nname = \"open\"\nkind = \"{kind}\"\n{keys}\n",
        redis.url()
    );
    plan::parse(&text, "p.toml", "p").unwrap()
}

fn open_figures(report: &Report) -> &OpenFigures {
    match &report.steps[0].figures {
        Some(Figures::RedisBasicOps(f)) => f.open.as_ref().expect("open-model figures"),
        other => panic!("{other:#?}"),
    }
}

/// Waits until the step is under way (Redis has served `after` more commands), lets it run
/// `then`, and pauses every client of that Redis for `pause`.
async fn pause_mid_step(url: String, after: u64, then: Duration, pause: Duration) {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let base = info_stat(&mut con, "total_commands_processed").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while info_stat(&mut con, "total_commands_processed").await < base + after {
        assert!(tokio::time::Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(then).await;
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .query_async(&mut con)
        .await
        .unwrap();
}

/// wrk2's point, measured: a 200 ms stall of Redis while operations arrive at 1,000/s on one
/// connection. Send-to-reply (what a closed-loop tool reports) sees it once, in the one
/// operation on the wire; the latency from the intended start sees every operation that had to
/// wait for it. Nothing is dropped (max_in_flight is far above the backlog).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_pause_shows_in_the_intended_latency_and_not_in_send_to_reply() {
    let redis = RedisServer::start().await.unwrap();
    let plan = open_plan(&redis, "rate = 1000\nduration = \"3s\"\nmax_in_flight = 10000");
    let pause = tokio::spawn(pause_mid_step(
        redis.url(),
        300,
        Duration::from_millis(700),
        Duration::from_millis(200),
    ));
    let report = run_plan(&plan, 1, "pause").await;
    pause.await.unwrap();
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    let o = open_figures(&report);
    assert_eq!(o.dropped, 0, "{o:#?}");
    assert_eq!(o.intended, 3000);
    assert_eq!(o.started, 3000);
    let (intended, service) = (o.latency_from_intended_us, o.latency_send_to_reply_us);
    assert_eq!(intended.count, 3000, "{o:#?}");
    assert!(
        intended.max >= 190_000,
        "the stall is in the intended latency: {intended:?}"
    );
    assert!(intended.p99 >= 120_000, "and in its p99: {intended:?}");
    assert!(service.p99 < 50_000, "send-to-reply p99 does not see it: {service:?}");
    assert!(intended.p99 > 3 * service.p99, "{intended:?} vs {service:?}");
    let text = render_text(&report);
    assert!(text.contains("Open model: rate 1,000/s for 3s"), "{text}");
    assert!(text.contains("coordinated omission made visible"), "{text}");
    assert!(render_html(&report).contains("Intended vs achieved rate"));
    // The achieved rate follows the intended one over the whole schedule.
    assert!((o.achieved_rate - 1000.0).abs() < 20.0, "{o:#?}");
    assert_eq!(o.series.len(), 3);
    assert_eq!(report.leftover_keys, Some(0), "the agent deleted every key it wrote");
}

/// With at most 4 operations outstanding, a 400 ms stall at 2,000/s cannot be absorbed: the
/// arrivals that found 4 outstanding are dropped, counted per second and per agent, and the
/// criterion fails on them instead of passing on the survivors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arrivals_beyond_max_in_flight_are_dropped_and_fail_the_criterion() {
    let redis = RedisServer::start().await.unwrap();
    let plan = open_plan(&redis, "rate = 2000\nduration = \"2s\"\nmax_in_flight = 4");
    let pause = tokio::spawn(pause_mid_step(
        redis.url(),
        300,
        Duration::from_millis(300),
        Duration::from_millis(400),
    ));
    let report = run_plan(&plan, 1, "drop").await;
    pause.await.unwrap();
    let o = open_figures(&report);
    assert_eq!(o.intended, 4000, "{o:#?}");
    // About 800 arrivals came during the stall; a loaded machine (debug build, tests in
    // parallel) drops some more while the backlog of 4 drains after it, never most of the run.
    assert!(o.dropped >= 500 && o.dropped <= 1600, "{o:#?}");
    assert_eq!(o.started + o.dropped, o.intended);
    assert_eq!(o.dropped_by_agent.len(), 1);
    assert_eq!(o.dropped_by_agent[0].dropped, o.dropped);
    let dropped_per_s: f64 = o.series.iter().map(|p| p.dropped).sum();
    assert!((dropped_per_s - o.dropped as f64).abs() < 1.0, "{o:#?}");
    let c = report.criteria.iter().find(|c| c.id == "redis_basic_ops").unwrap();
    assert_eq!(c.status, CriterionStatus::Fail);
    assert!(
        c.measured
            .as_deref()
            .unwrap()
            .contains("intended operations dropped (max_in_flight 4 per agent reached)"),
        "{c:?}"
    );
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.leftover_keys, Some(0), "the agent deleted every key it wrote");
}

/// The same passing step twice (composite operations arriving at 300/s on the agent's runtime):
/// once with the agent on time (generator ok, PASS), once with its runtime blocked 40 ms in
/// every 100 (as a workload parsing huge frames synchronously would): the generator is limited
/// and the criterion is not a PASS, naming the agent's lag.
#[tokio::test(flavor = "current_thread")]
async fn a_late_agent_limits_the_generator_and_blocks_a_pass() {
    let redis = RedisServer::start().await.unwrap();
    let plan = step_plan(&redis, "redis_concurrent", "clients = 2\nrate = 300\nduration = \"2s\"");
    let report = run_plan(&plan, 1, "ontime").await;
    let g = report.steps[0].generator.as_ref().expect("the agent measured itself");
    assert!(!g.limited(), "{g:#?}");
    let c = report
        .criteria
        .iter()
        .find(|c| c.id == "concurrent_success_rate")
        .unwrap();
    assert_eq!(c.status, CriterionStatus::Pass, "{c:?}");

    let stop = tokio_util::sync::CancellationToken::new();
    let hog = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(60)).await;
                // Blocks the runtime's only thread: every task of the agent waits.
                std::thread::sleep(Duration::from_millis(40));
            }
        }
    });
    let report = run_plan(&plan, 1, "late").await;
    stop.cancel();
    hog.await.unwrap();
    let g = report.steps[0].generator.as_ref().unwrap();
    assert!(g.limited(), "{g:#?}");
    assert!(g.lag_p99_ms.unwrap() >= 20.0, "{g:#?}");
    let c = report
        .criteria
        .iter()
        .find(|c| c.id == "concurrent_success_rate")
        .unwrap();
    assert_eq!(c.status, CriterionStatus::Fail, "{c:?}");
    assert!(
        c.measured
            .as_deref()
            .unwrap()
            .contains("not a pass: the load generator was limited (agent 0 lag p99"),
        "{c:?}"
    );
    let text = render_text(&report);
    assert!(text.contains("Load generator: LIMITED: agent 0 lag p99"), "{text}");
    assert!(render_html(&report).contains("LIMITED: agent 0 lag p99"));
    assert_eq!(report.exit_code(), 1);
}

/// The closed model's two kinds of client: up to 4 per agent on blocking connections of their
/// own threads, more on one event loop through the sequential connection. Both run every
/// operation of their share, measure it, and delete what they wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_kinds_of_sequential_client_run_every_operation_and_clean_up() {
    let redis = RedisServer::start().await.unwrap();
    let text = format!(
        "[target]\nredis_url = \"{}\"\n[criteria]\nredis_ops_per_second = 10\n[[steps]]\nname = \"threads\"\nkind = \"redis_basic_ops\"\niterations = 400\nclients = 2\n[[steps]]\nname = \"event_loop\"\nkind = \"redis_basic_ops\"\niterations = 400\nclients = 8\n",
        redis.url()
    );
    let plan = plan::parse(&text, "p.toml", "p").unwrap();
    let report = run_plan(&plan, 1, "clients").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    for step in &report.steps {
        let Some(Figures::RedisBasicOps(f)) = &step.figures else {
            panic!("{step:#?}")
        };
        assert!(f.open.is_none());
        for o in &f.operations {
            assert_eq!((o.ok, o.errors), (400, 0), "{}: {o:#?}", step.name);
            assert_eq!(o.latency_us.count, 400);
            assert!(o.throughput_ops_per_sec > 0.0);
        }
        assert!(step.generator.is_some(), "the step's own runtime measured its lag");
    }
    assert_eq!(report.leftover_keys, Some(0));
}
