//! Verdicts against servers that misbehave in one known way: the report must say where the
//! chain broke, from the data. Real reference servers (configured to ignore a command, cap a
//! session, or not share rooms), a real redis-server, the coordinator and agents over gRPC.

use bandsync_common::plan;
use bandsync_common::report::{CriterionStatus, Figures, Report, RunStatus, render_text};
use bandsync_common::workload::Rating;
use bandsync_common::workloads::session_sync::SessionSyncFigures;
use bandsync_coordinator::RunConfig;
use bandsync_coordinator::testbed::RedisServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod support;
use support::start_servers_with;

/// A Socket.IO-only plan: no redis_url (it needs none).
fn sync_plan(sessions: u64, members: u32, changes: u32) -> plan::Plan {
    let text = format!(
        "[run]\nstep_timeout = \"1m\"\nprobe = false\n[[steps]]\nname = \"sync\"\nkind = \"session_sync\"\nsessions = {sessions}\nmembers = {members}\nchanges = {changes}\ninterval = \"250ms\"\nramp_up = \"600ms\"\nsettle = \"800ms\"\n"
    );
    plan::parse(&text, "p.toml", "p").unwrap()
}

async fn run(plan: &plan::Plan, agents: usize, name: &str) -> Report {
    support::run_plan(plan, agents, name).await
}

fn sync_figures(report: &Report) -> &SessionSyncFigures {
    match &report.steps[0].figures {
        Some(Figures::SessionSync(s)) => s,
        _ => panic!("{:#?}", report.steps[0]),
    }
}

fn criterion<'a>(report: &'a Report, id: &str) -> &'a bandsync_common::report::CriterionResult {
    report.criteria.iter().find(|c| c.id == id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_ignores_seek_is_named_in_the_diagnosis() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.ignore_events = vec!["seek".into()]).await;
    let mut plan = sync_plan(2, 3, 8);
    assert_eq!(plan.target.redis_url, None, "a Socket.IO-only plan needs no Redis");
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 1, "ign").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    let s = sync_figures(&report);
    assert_eq!((s.members_connected, s.members_joined, s.members_refused), (6, 6, 0));
    let seek = s.commands.iter().find(|c| c.command == "seek").unwrap();
    assert_eq!((seek.emitted, seek.answered, seek.refused), (4, 0, 0), "{s:#?}");
    let tempo = s.commands.iter().find(|c| c.command == "set_tempo").unwrap();
    assert_eq!(tempo.answered, tempo.emitted);
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("never answered `seek`") && r.contains("0 of 4 emitted")),
        "{:#?}",
        report.recommendations
    );
    assert!(
        !report.recommendations.iter().any(|r| r.contains("Redis adapter")),
        "no fixed advice: {:#?}",
        report.recommendations
    );
    assert_eq!(criterion(&report, "sync_convergence").status, CriterionStatus::Fail);
    // One instance: cross-instance sync is not exercised, and says so.
    assert_eq!(s.members_cross_planned, 0);
    let text = render_text(&report);
    assert!(
        text.contains("Propagation, cross instance: not exercised: one server instance"),
        "{text}"
    );
    // Rating, criteria and exit code agree.
    assert_eq!(report.overall.rating, Rating::NeedsImprovement);
    assert_eq!(report.exit_code(), 1);
    assert!(text.contains("Not ready for production: failed"), "{text}");
    assert!(text.contains("No step of this plan used Redis"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_refused_at_capacity_are_counted_as_refused_with_the_servers_reason() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.max_members = 4).await;
    let mut plan = sync_plan(1, 6, 4);
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 1, "cap").await;
    let s = sync_figures(&report);
    assert_eq!(s.members_connected, 6, "{s:#?}");
    assert_eq!(
        (s.members_joined, s.members_refused, s.joins_unanswered),
        (4, 2, 0),
        "{s:#?}"
    );
    assert_eq!(s.refusals.len(), 1, "{s:#?}");
    assert_eq!(s.refusals[0].count, 2);
    assert_eq!(s.refusals[0].reason, "the session has reached its member limit");
    let text = render_text(&report);
    assert!(
        text.contains("4 joined, 2 refused: \"the session has reached its member limit\" (×2)"),
        "{text}"
    );
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("refused 2 of 6 joins") && r.contains("member limit")),
        "{:#?}",
        report.recommendations
    );
    assert_eq!(criterion(&report, "sync_convergence").status, CriterionStatus::Fail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_that_do_not_share_rooms_get_the_cross_instance_diagnosis() {
    let redis = RedisServer::start().await.unwrap();
    // Same Redis, different prefixes: each instance has its own sessions and relay channel.
    let servers = start_servers_with(&redis.url(), 2, |i, c| {
        c.redis_prefix = format!("bandsync-test-island-{i}")
    })
    .await;
    let mut plan = sync_plan(2, 4, 4);
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 2, "isl").await;
    let s = sync_figures(&report);
    assert!(s.members_cross_planned > 0, "{s:#?}");
    assert_eq!(s.propagation_cross_instance_us.count, 0, "{s:#?}");
    assert!(s.propagation_same_instance_us.count > 0, "{s:#?}");
    let prop = criterion(&report, "sync_propagation");
    assert_eq!(
        prop.status,
        CriterionStatus::Fail,
        "same-instance data alone cannot pass"
    );
    assert!(
        prop.measured
            .as_deref()
            .unwrap()
            .starts_with("cross-instance members received none of"),
        "{prop:?}"
    );
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("cross-instance members received 0 of")
                && r.contains("the instances do not share rooms")),
        "{:#?}",
        report.recommendations
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_unreachable_before_the_run_is_refused_with_exit_3() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut plan = sync_plan(1, 3, 2);
    plan.target.servers = vec![format!("http://127.0.0.1:{port}")];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = bandsync_coordinator::run(&plan, listener, &RunConfig::agents(1), CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3);
    let msg = err.to_string();
    assert!(msg.starts_with("the BandSync server at http://127.0.0.1:"), "{msg}");
    assert!(msg.contains("unreachable"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_dies_during_the_step_is_exit_3_server_unreachable() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, _| {}).await;
    let mut plan = sync_plan(1, 3, 8);
    plan.target.servers = servers.urls.clone();
    // Stop the server 1.5 s into the run (after the joins, during the script).
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        drop(servers);
    });
    let report = run(&plan, 1, "gone").await;
    assert_eq!(report.exit_code(), 3, "{report:#?}");
    let RunStatus::Incomplete { reason } = &report.status else {
        panic!("{:?}", report.status);
    };
    assert!(reason.contains("BandSync server unreachable"), "{reason}");
    let conv = criterion(&report, "sync_convergence");
    assert_eq!(conv.status, CriterionStatus::Fail);
    assert!(
        conv.measured
            .as_deref()
            .unwrap()
            .contains("no data: BandSync server unreachable"),
        "{conv:?}"
    );
    assert_eq!(report.overall.rating, Rating::NotRated);
    let text = render_text(&report);
    assert!(
        text.contains("RUN INCOMPLETE") && text.contains("server unreachable"),
        "{text}"
    );
}

fn legacy_plan(sessions: u64, members: u32) -> plan::Plan {
    let text = format!(
        "[target]\nprotocol = \"bandsync-legacy\"\n[run]\nstep_timeout = \"1m\"\nprobe = false\n[[steps]]\nname = \"sync\"\nkind = \"session_sync\"\nsessions = {sessions}\nmembers = {members}\nchanges = 8\ninterval = \"250ms\"\nramp_up = \"800ms\"\nsettle = \"800ms\"\n"
    );
    plan::parse(&text, "p.toml", "p").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_legacy_dialect_on_one_instance_converges_with_the_first_joiner_as_leader() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.dialect = bandsync_server::Dialect::Legacy).await;
    let mut plan = legacy_plan(2, 4);
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 2, "leg").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    let s = sync_figures(&report);
    assert_eq!((s.members_connected, s.members_joined), (8, 8), "{s:#?}");
    assert_eq!(s.convergence_rate, 1.0, "{s:#?}\n{:#?}", report.recommendations);
    assert_eq!(
        s.snapshots_without_server_timestamp, s.snapshots,
        "legacy snapshots carry no timestamp"
    );
    assert_eq!(criterion(&report, "sync_convergence").status, CriterionStatus::Pass);
    let dialect = report.steps[0].dialect.as_deref().unwrap();
    assert!(
        dialect.starts_with("bandsync-legacy:") && dialect.contains("leader by first joiner"),
        "{dialect}"
    );
    let text = render_text(&report);
    assert!(text.contains("Servers' dialect: bandsync-legacy"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_legacy_instances_fail_convergence_with_the_cross_instance_diagnosis() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 2, |_, c| c.dialect = bandsync_server::Dialect::Legacy).await;
    let mut plan = legacy_plan(2, 4);
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 2, "leg2").await;
    let s = sync_figures(&report);
    assert!(s.members_cross_planned > 0, "{s:#?}");
    assert_eq!(criterion(&report, "sync_convergence").status, CriterionStatus::Fail);
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("the instances do not share rooms")),
        "{:#?}",
        report.recommendations
    );
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_band_larger_than_the_dialects_cap_is_refused_before_loading() {
    let mut plan = legacy_plan(1, 10);
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.dialect = bandsync_server::Dialect::Legacy).await;
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 1, "cap10").await;
    assert_eq!(report.exit_code(), 3);
    let failure = &report.steps[0].failures[0].message;
    assert!(
        failure.starts_with(
            "refused before loading: the servers take at most 8 members per session (dialect bandsync-legacy)"
        ),
        "{failure}"
    );
    assert!(report.steps[0].agents_sent.is_empty());
}
