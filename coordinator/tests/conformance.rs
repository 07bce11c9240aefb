//! The conformance probe against both dialects, end to end: real reference servers (the
//! protocol's dialect on a shared Redis, and `--dialect legacy`), a real redis-server, the
//! coordinator and an agent over gRPC. The table is checked field by field, and the dialect it
//! concludes is the one the following steps use.

use bandsync_common::dialect::{Dialect, LeaderClaim, Protocol, TickPosition};
use bandsync_common::plan;
use bandsync_common::report::{CriterionStatus, Figures, Report, RunStatus, render_text};
use bandsync_common::workloads::protocol_conformance::{CommandRow, ProtocolConformanceFigures};
use bandsync_coordinator::testbed::RedisServer;

mod support;
use support::{start_servers_with, step_of};

const PROBE_ONLY: &str = "[run]\nstep_timeout = \"1m\"\n[[steps]]\nkind = \"protocol_conformance\"\n";

async fn run(plan: &plan::Plan, agents: usize, name: &str) -> Report {
    support::run_plan(plan, agents, name).await
}

fn probe(report: &Report) -> &ProtocolConformanceFigures {
    match &step_of(report, "protocol_conformance").figures {
        Some(Figures::ProtocolConformance(p)) => p,
        other => panic!("{other:#?}\n{:#?}", report.steps),
    }
}

fn row<'a>(p: &'a ProtocolConformanceFigures, command: &str) -> &'a CommandRow {
    p.commands.iter().find(|r| r.command == command).unwrap()
}

async fn probe_servers(n: usize, legacy: bool, name: &str) -> Report {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), n, |_, c| {
        if legacy {
            c.dialect = bandsync_server::Dialect::Legacy;
        }
    })
    .await;
    let mut plan = plan::parse(PROBE_ONLY, "p.toml", "p").unwrap();
    plan.target.servers = servers.urls.clone();
    run(&plan, 1, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_protocols_dialect_on_two_instances_field_by_field() {
    let report = probe_servers(2, false, "conf").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    assert_eq!(report.exit_code(), 0);
    let p = probe(&report);
    assert_eq!((p.clients, p.clients_failed, p.instances), (3, 0, 2), "{p:#?}");
    for command in ["join_session", "set_role", "set_tempo", "seek", "play", "pause"] {
        let r = row(p, command);
        let sent = if matches!(command, "play" | "pause") { 2 } else { 1 };
        let sent = if command == "join_session" { 3 } else { sent };
        assert_eq!(
            (r.sent, r.acked, r.refused, r.applied, r.to_sender),
            (sent, sent, 0, sent, sent),
            "{r:#?}"
        );
        if command != "join_session" {
            // Leader on the first server: the other member there and the one on the second.
            assert_eq!((r.to_same_instance, r.same_instance_expected), (sent, sent), "{r:#?}");
            assert_eq!((r.to_other_instance, r.other_instance_expected), (sent, sent), "{r:#?}");
        }
    }
    let sync = row(p, "sync_request");
    assert_eq!((sync.sent, sync.acked, sync.applied, sync.to_sender), (1, 1, 1, 1));
    assert_eq!(p.join_snapshot_target, "room");
    for f in [&p.join_snapshot, &p.snapshots] {
        assert_eq!(f.timestamp_field.as_deref(), Some("serverTimestamp"), "{f:#?}");
        assert!(f.version && f.session_id, "{f:#?}");
        assert_eq!(f.members.as_deref(), Some("array"));
    }
    assert!(
        p.ticks.count > 0 && !p.ticks_carry_tempo_bpm,
        "the protocol's ticks carry no tempoBpm: {p:#?}"
    );
    assert_eq!(p.ticks.timestamp_field.as_deref(), Some("serverTimestamp"));
    assert_eq!(p.sync_response.timestamp_field.as_deref(), Some("serverTimestamp"));
    assert_eq!(p.leader_rule, Some(LeaderClaim::SetRole));
    assert_eq!(p.default_tempo, Some(100.0));
    assert!(
        p.refusal_channels.contains(&"ack {ok:false}".to_owned())
            && p.refusal_channels.contains(&"session_error".to_owned()),
        "{:?}",
        p.refusal_channels
    );
    assert_eq!(p.tempo_range_checked, Some(true));
    assert_eq!((p.member_cap, p.cap_tried, p.cap_unanswered), (None, 10, 0));
    assert_eq!(p.tick_position, Some(TickPosition::Aligned));
    assert_eq!(p.tick_cycles, 2);
    assert_eq!(p.cross_instance, Some(true));
    assert_eq!(p.dialect, Some(Dialect::of(Protocol::Bandsync)), "{:?}", p.differences);
    assert!(p.differences.is_empty(), "{:?}", p.differences);
    let text = render_text(&report);
    assert!(text.contains("🔌 PROTOCOL CONFORMANCE:"), "{text}");
    assert!(
        text.contains("Concluded: bandsync: timestamps serverTimestamp"),
        "{text}"
    );
    assert!(text.contains("Cross-instance rooms: yes"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_legacy_dialect_on_one_instance_field_by_field() {
    let report = probe_servers(1, true, "conf-leg").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    let p = probe(&report);
    assert_eq!((p.clients, p.instances), (3, 1), "{p:#?}");
    for command in [
        "join_session",
        "set_role",
        "set_tempo",
        "seek",
        "play",
        "pause",
        "sync_request",
    ] {
        let r = row(p, command);
        assert_eq!(
            (r.acked, r.refused),
            (0, 0),
            "no command is acked or refused aloud: {r:#?}"
        );
    }
    let join = row(p, "join_session");
    assert_eq!((join.sent, join.applied, join.to_sender), (3, 3, 3), "{join:#?}");
    assert_eq!(join.to_same_instance, 0, "the join snapshot goes to the joiner only");
    assert_eq!(p.join_snapshot_target, "joiner only");
    assert_eq!(row(p, "set_role").applied, 0, "set_role cannot take a taken seat");
    for command in ["set_tempo", "seek", "play", "pause"] {
        let r = row(p, command);
        assert_eq!(r.applied, r.sent, "{r:#?}");
        assert_eq!(r.to_same_instance, r.same_instance_expected, "{r:#?}");
    }
    assert_eq!(row(p, "sync_request").applied, 1);
    assert_eq!(p.join_snapshot.timestamp_field, None);
    assert!(
        !p.join_snapshot.version && !p.join_snapshot.session_id,
        "{:#?}",
        p.join_snapshot
    );
    assert_eq!(p.snapshots.timestamp_field, None);
    assert_eq!(p.snapshots.members.as_deref(), Some("object"));
    assert_eq!(p.ticks.timestamp_field, None);
    assert!(p.ticks_carry_tempo_bpm);
    assert_eq!(p.sync_response.timestamp_field.as_deref(), Some("serverTime"));
    assert_eq!(p.leader_rule, Some(LeaderClaim::FirstJoiner), "{}", p.leader_observed);
    assert_eq!(p.default_tempo, Some(120.0));
    assert_eq!(p.refusal_channels, vec!["silent (no ack, no error)".to_owned()]);
    assert_eq!(p.tempo_range_checked, Some(false));
    assert_eq!(p.member_cap, Some(8));
    assert_eq!(p.cap_tried, 9);
    assert_eq!(p.cap_refusals, vec![("Session at capacity (8 members)".to_owned(), 1)]);
    assert_eq!(p.tick_position, Some(TickPosition::Counter));
    assert_eq!(p.cross_instance, None, "one instance: not observable");
    let extra: Vec<&str> = p.extra_events.iter().map(|(e, _)| e.as_str()).collect();
    for e in ["user_joined", "room_stats", "play", "pause", "seek"] {
        assert!(extra.contains(&e), "{extra:?}");
    }
    let d = p.dialect.as_ref().unwrap();
    assert_eq!(*d, Dialect::of(Protocol::BandsyncLegacy), "{:?}", p.differences);
    assert_eq!(p.closest, Protocol::BandsyncLegacy);
    let text = render_text(&report);
    assert!(
        text.contains("Member cap: 8 (member 9 refused: \"Session at capacity (8 members)\")"),
        "{text}"
    );
    assert!(text.contains("Concluded: bandsync-legacy:"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_legacy_instances_are_found_not_to_share_rooms() {
    let report = probe_servers(2, true, "conf-leg2").await;
    let p = probe(&report);
    assert_eq!(p.instances, 2);
    assert_eq!(p.cross_instance, Some(false), "{p:#?}");
    let seek = row(p, "seek");
    assert_eq!((seek.to_other_instance, seek.other_instance_expected), (0, 1));
    assert!(!p.dialect.as_ref().unwrap().cross_instance);
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("the instances do not share rooms")),
        "{:#?}",
        report.recommendations
    );
}

/// The automatic probe (no `protocol` in the plan) finds the legacy dialect, and the
/// session_sync step after it uses the legacy leader rule and converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_automatic_probe_detects_legacy_and_the_next_step_follows_it() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.dialect = bandsync_server::Dialect::Legacy).await;
    let text = "[run]\nstep_timeout = \"1m\"\n[[steps]]\nname = \"sync\"\nkind = \"session_sync\"\nsessions = 2\nmembers = 4\nchanges = 8\ninterval = \"250ms\"\nramp_up = \"800ms\"\nsettle = \"800ms\"\n";
    let mut plan = plan::parse(text, "p.toml", "p").unwrap();
    assert_eq!(
        plan.steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["protocol_conformance", "sync"]
    );
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 2, "auto").await;
    assert_eq!(report.status, RunStatus::Complete, "{report:#?}");
    assert_eq!(
        probe(&report).dialect.as_ref().unwrap().protocol,
        Protocol::BandsyncLegacy
    );
    let sync = step_of(&report, "session_sync");
    let dialect = sync.dialect.as_deref().unwrap();
    assert!(
        dialect.starts_with("bandsync-legacy:") && dialect.contains("leader by first joiner"),
        "{dialect}"
    );
    let Some(Figures::SessionSync(s)) = &sync.figures else {
        panic!("{sync:#?}")
    };
    assert_eq!(s.convergence_rate, 1.0, "{s:#?}");
    let conv = report.criteria.iter().find(|c| c.id == "sync_convergence").unwrap();
    assert_eq!(conv.status, CriterionStatus::Pass);
}

/// A server that ignores `seek`: the probe finds it never answered, and the session_sync step
/// (whose script seeks) is refused before loading, naming the command — exit 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_the_probe_finds_unanswered_refuses_the_step_that_needs_it() {
    let redis = RedisServer::start().await.unwrap();
    let servers = start_servers_with(&redis.url(), 1, |_, c| c.ignore_events = vec!["seek".into()]).await;
    let text = "[run]\nstep_timeout = \"1m\"\n[[steps]]\nname = \"sync\"\nkind = \"session_sync\"\nsessions = 1\nmembers = 3\n";
    let mut plan = plan::parse(text, "p.toml", "p").unwrap();
    plan.target.servers = servers.urls.clone();
    let report = run(&plan, 1, "noseek").await;
    let p = probe(&report);
    let seek = row(p, "seek");
    assert_eq!(
        (seek.sent, seek.acked, seek.applied, seek.to_sender),
        (1, 0, 0, 0),
        "{seek:#?}"
    );
    assert!(
        report
            .recommendations
            .iter()
            .any(|r| r.contains("never answered `seek`")),
        "{:#?}",
        report.recommendations
    );
    let sync = step_of(&report, "session_sync");
    let failure = &sync.failures[0].message;
    assert!(
        failure.starts_with("refused before loading:") && failure.contains("seek"),
        "{failure}"
    );
    assert_eq!(report.exit_code(), 3);
}
