//! A band (beyond the document): does BandSync keep a band in sync when its members sit on
//! different server instances and different load hosts?
//!
//! Placement: member m of session s runs on agent (s + m) mod A and connects to server instance
//! (s + ⌊m / A⌋) mod I, so every session spans agents (hosts) and instances, leaders are spread
//! over the agents, and followers cover every pairing with their leader: same host and instance,
//! same host and other instance, other host and same instance, other host and other instance.
//! Member 0 is the leader. After `ramp_up` (connections spread over it) and one second to
//! settle the joins, each leader runs a script of `changes` changes at coordinator instants
//! T0 + c·interval: blocks of four — set_tempo t_b, seek to (b+1)·100 s, play, pause — so every
//! change leaves a state (tempo, playing, position / 100 s) that differs from its neighbours and
//! can be recognised in any member's snapshot, on any server that follows the protocol (no
//! `version`, ack or `session_error` needed). Session s's script is shifted by s/S of an
//! interval, so the leaders' changes are spread evenly instead of arriving in one burst.
//!
//! Every member measures, in coordinator time (its agent's clock offset applied):
//! - propagation: snapshot arrival − the change's scheduled instant, same-instance and
//!   cross-instance apart (the leader's own is its command round trip); across agents the bound is
//!   the sum of both agents' clock uncertainties, stated in the report;
//! - convergence (its last state is the script's last) and changes it never saw;
//! - duplicate and out-of-order snapshots by `version` when present;
//! - scroll_tick jitter against the 100 ms period and ticks missed (gaps in positionMs);
//! - beat phase: per play segment, the median of (tick arrival − positionMs), the instant at which
//!   the session's position was 0 as this member hears it. Min and max per (session, segment,
//!   instance) travel as gauges, so the coordinator's exact merge yields the spread across agents.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bandsync_common::clock::{ClockEstimate, now_unix_ns};
use bandsync_common::dialect::LeaderClaim;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::workloads::band::{self as n, Band};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::sio;
use super::{StepContext, WorkloadError};

mod member;

/// Connections opened at once by one agent (a ramp, not a stampede).
const CONNECTS_IN_FLIGHT: usize = 64;

pub use member::*;

/// What `run_with` runs: the sync step's parameters, the script, and an optional fault window.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub band: Band,
    pub script: Script,
    pub window: Option<(i64, i64)>,
}

/// The counters every agent reports, zero when nothing happened.
const COUNTERS: [&str; 23] = [
    n::MEMBERS_PLANNED,
    n::MEMBERS_CONNECTED,
    n::MEMBERS_JOINED,
    n::MEMBERS_REFUSED,
    n::MEMBERS_CROSS_PLANNED,
    n::TICKS_STALLED,
    n::CONNECT_FAILURES,
    n::RECONNECTS,
    n::LEADERS,
    n::CHANGES_SCHEDULED,
    n::CHANGES_EMITTED,
    n::EXPECTED_DELIVERIES,
    n::DELIVERED,
    n::MISSED,
    n::CONVERGED,
    n::DUPLICATES,
    n::OUT_OF_ORDER,
    n::WITHOUT_VERSION,
    n::WITHOUT_SERVER_TS,
    n::UNEXPECTED_STATES,
    n::SNAPSHOTS,
    n::TICKS,
    n::TICKS_MISSED,
];

pub async fn run_with(p: Params, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
    if ctx.servers.is_empty() {
        return Err(WorkloadError::Internal("no BandSync server in the target".into()));
    }
    // This agent's share, checked against its own budget and its host's memory before any
    // member is built (the coordinator checked the plan's shape already).
    let share = p
        .band
        .sessions
        .saturating_mul(u64::from(p.band.members))
        .div_ceil(u64::from(ctx.shard_count.max(1)));
    within_budget(share, ctx.memory_budget)?;
    let jobs = placement(&p, ctx);
    let planned = jobs.len();
    let cross = jobs
        .iter()
        .filter(|j| {
            let s = j.state.lock().unwrap();
            !s.leader && !s.same_instance
        })
        .count();
    let urls: Vec<String> = {
        let mut u: Vec<String> = jobs.iter().map(|j| j.url.clone()).collect();
        u.sort();
        u.dedup();
        u
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTS_IN_FLIGHT));
    // What holding the members costs this agent: peak RSS over the step minus RSS before it.
    let rss = RssSampler::start();
    let mut tasks = JoinSet::new();
    for job in jobs {
        let (clock, cancel, gate, live) = (ctx.clock, ctx.cancel.clone(), gate.clone(), ctx.live.clone());
        tasks.spawn(async move { job.run(clock, &cancel, &gate, &live).await });
    }

    let mut metrics = MetricSet::new();
    for c in COUNTERS {
        metrics.add_counter(c, 0);
    }
    metrics.add_counter(n::MEMBERS_PLANNED, planned as u64);
    metrics.add_counter(n::MEMBERS_CROSS_PLANNED, cross as u64);
    for k in n::COMMANDS {
        for link in n::Link::ALL {
            metrics.add_counter(&n::chain(k, link), 0);
        }
    }
    metrics.set_gauge(n::INSTANCES, ctx.servers.len() as f64, GaugeMerge::Max);
    metrics.set_gauge(
        n::CLOCK_BOUND_US,
        ctx.clock.uncertainty_ns as f64 / 1000.0,
        GaugeMerge::Max,
    );
    let mut cancelled = false;
    while let Some(r) = tasks.join_next().await {
        let outcome = match r {
            Ok(o) => o,
            Err(e) => return Err(WorkloadError::Internal(format!("band member panicked: {e}"))),
        };
        match outcome {
            Outcome::Cancelled => cancelled = true,
            Outcome::Failed(e) => {
                tracing::debug!("band member: {e}");
                ctx.live.add_error();
                metrics.add_counter(n::CONNECT_FAILURES, 1);
                add_reason(&mut metrics, n::CONNECT_ERROR_PREFIX, &e);
            }
            Outcome::Done {
                member,
                emitted,
                emit_lag_us,
                session,
                instance,
            } => fold(&mut metrics, *member, emitted, &emit_lag_us, session, instance),
        }
    }
    let (rss_before, peak) = rss.stop().await;
    if planned > 0 {
        let per_member = peak.saturating_sub(rss_before) as f64 / planned as f64;
        metrics.set_gauge(n::RSS_PER_MEMBER_BYTES, per_member, GaugeMerge::Max);
        metrics.set_gauge(n::MEMBERS_PER_AGENT, planned as f64, GaugeMerge::Max);
    }
    if cancelled {
        return Err(WorkloadError::Cancelled);
    }
    if planned > 0 && metrics.counter(n::MEMBERS_CONNECTED) == 0 {
        let why = n::reasons(&metrics, n::CONNECT_ERROR_PREFIX)
            .first()
            .map_or_else(|| "no member connected".to_owned(), |(r, _)| r.clone());
        return Err(WorkloadError::ServerUnreachable(format!(
            "none of this agent's {planned} members could connect: {why}"
        )));
    }
    // A server that died during the step: its members' figures would read as a slow server.
    if p.window.is_none() {
        for url in &urls {
            if let Err(why) = reachable(url).await {
                return Err(WorkloadError::ServerUnreachable(format!(
                    "{url} stopped answering during the step: {why}"
                )));
            }
        }
    }
    Ok(metrics)
}

/// Adds one to `prefix<reason>`, keeping at most [`n::MAX_REASONS`] distinct reasons.
fn add_reason(m: &mut MetricSet, prefix: &str, reason: &str) {
    let key = format!("{prefix}{reason}");
    let known = m.counters.contains_key(&key);
    if known || n::reasons(m, prefix).len() < n::MAX_REASONS {
        m.add_counter(&key, 1);
    } else {
        m.add_counter(&format!("{prefix}(other reasons)"), 1);
    }
}

/// Whether a server still accepts TCP connections (1 s), from its base URL.
async fn reachable(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let host = parsed.host_str().ok_or("no host")?.to_owned();
    let port = parsed.port_or_known_default().ok_or("no port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    match tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no TCP connection within 1 s".to_owned()),
    }
}

/// This agent's members (see the module's placement), each with its schedule and instance.
/// Whether this agent can hold `members` members: at most [`n::MAX_MEMBERS_PER_AGENT`], and
/// [`n::MEMBER_BUDGET_BYTES`] each within the host's available memory.
fn within_budget(members: u64, budget: u64) -> Result<(), WorkloadError> {
    if members > n::MAX_MEMBERS_PER_AGENT {
        return Err(WorkloadError::Internal(format!(
            "this agent's share is {members} members; at most {} per agent: add agents",
            n::MAX_MEMBERS_PER_AGENT
        )));
    }
    let need = members * n::MEMBER_BUDGET_BYTES;
    if need > budget {
        return Err(WorkloadError::Internal(format!(
            "this agent's {members} members need about {} MiB and it may use {} MiB: add agents or hosts",
            need >> 20,
            budget >> 20
        )));
    }
    Ok(())
}

fn placement(p: &Params, ctx: &StepContext) -> Vec<Job> {
    let Band {
        sessions,
        members,
        changes,
        interval,
        ramp_up,
        settle,
    } = p.band;
    let instances = ctx.servers.len() as u64;
    let (agents, me) = (u64::from(ctx.shard_count), u64::from(ctx.shard_index));
    let mine: Vec<(u64, u64)> = (0..sessions)
        .flat_map(|s| (0..u64::from(members)).map(move |m| (s, m)))
        .filter(|(s, m)| (s + m) % agents == me)
        .collect();
    let t0_ns = ctx.coord_start_ns + ramp_up.as_nanos() as i64 + 1_000_000_000;
    let interval_ns = interval.as_nanos() as i64;
    // Sessions' scripts are staggered over one interval (session s starts s/S of an interval
    // later), as bands do not all change tempo in the same millisecond; a synchronised burst
    // would measure the load generator's own queueing.
    let stagger = |s: u64| (interval_ns as i128 * i128::from(s) / i128::from(sessions.max(1))) as i64;
    let end_ns = t0_ns + i64::from(changes.max(1)) * interval_ns + settle.as_nanos() as i64;
    let start_agent = now_unix_ns();
    let first_joiner = ctx.dialect.leader_claim == LeaderClaim::FirstJoiner;
    let slot = slots(&mine, ramp_up, first_joiner);
    mine.iter()
        .copied()
        .zip(slot)
        .map(|((s, m), offset)| {
            let g = s * u64::from(members) + m;
            let instance = ((s + m / agents) % instances) as usize;
            let leader_instance = (s % instances) as usize;
            let state = Member {
                changes: i64::from(changes),
                t0_ns: t0_ns + stagger(s),
                interval_ns,
                leader: m == 0,
                same_instance: instance == leader_instance,
                script: p.script,
                window: p.window,
                ts_field: ctx.dialect.timestamp_field.clone(),
                initial_tempo: ctx.dialect.default_tempo.round() as i64,
                ..Member::default()
            };
            Job {
                url: sio::base_url(&ctx.servers[instance]),
                session: format!("{}sync-{s}", ctx.run_base),
                name: format!("member-{g}"),
                slot_agent_ns: start_agent + offset,
                claim_with_set_role: !first_joiner,
                end_coord_ns: end_ns,
                state: Arc::new(Mutex::new(state)),
                session_index: s,
                instance,
            }
        })
        .collect()
}

/// Each member's connect instant, ns after the step's start: spread evenly over `ramp_up`; where
/// the first joiner leads, leaders first (the first quarter of the ramp) and followers after
/// (from ≥ 300 ms), so every session's leader is its first joiner on every agent.
fn slots(mine: &[(u64, u64)], ramp_up: Duration, first_joiner: bool) -> Vec<i64> {
    let ramp = ramp_up.as_nanos() as i64;
    if !first_joiner {
        let count = mine.len().max(1) as i64;
        return (0..mine.len() as i64).map(|k| ramp * k / count).collect();
    }
    let leaders = mine.iter().filter(|(_, m)| *m == 0).count().max(1) as i64;
    let followers = mine.iter().filter(|(_, m)| *m != 0).count().max(1) as i64;
    let (lead_span, follow_from) = (ramp / 4, (ramp / 4).max(300_000_000));
    let (mut l, mut f) = (0i64, 0i64);
    mine.iter()
        .map(|(_, m)| {
            if *m == 0 {
                l += 1;
                lead_span * (l - 1) / leaders
            } else {
                f += 1;
                follow_from + (ramp - ramp / 4) * (f - 1) / followers
            }
        })
        .collect()
}

/// Samples this process's RSS every 250 ms until stopped: (RSS at start, peak).
struct RssSampler {
    before: u64,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start() -> Self {
        let before = crate::proc::rss_bytes().unwrap_or(0);
        let stop = tokio_util::sync::CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut peak = 0u64;
            loop {
                peak = peak.max(crate::proc::rss_bytes().unwrap_or(0));
                tokio::select! {
                    () = token.cancelled() => return peak,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        });
        RssSampler { before, stop, task }
    }

    async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        (self.before, self.task.await.unwrap_or(0))
    }
}

fn fold(m: &mut MetricSet, mut member: Member, emitted: u64, emit_lag_us: &[u64], session: u64, instance: usize) {
    // Before `finish`, which counts every unseen change as missed and so reaches everything.
    let reached = member.reached_outage_state();
    let converged = member.finish();
    if let Some((a, b)) = member.window {
        // Kept ticking: at least half the ticks the window holds (one per 100 ms); judged only
        // for members that were receiving ticks before the fault.
        let due = ((b - a) / 100_000_000).max(1) as u64;
        if member.ticks_before_window > 0 {
            m.add_counter(&n::outage_members(instance), 1);
            m.add_counter(
                &n::outage_ticking(instance),
                u64::from(member.ticks_in_window * 2 >= due),
            );
        } else {
            m.add_counter(&n::outage_idle(instance), 1);
        }
        if !member.leader
            && !member.same_instance
            && let Some(reached) = reached
        {
            m.add_counter(n::OUTAGE_CROSS_EXPECTED, 1);
            m.add_counter(n::OUTAGE_CROSS_SEEN, u64::from(reached));
        }
    }
    fold_chain(m, &member);
    m.add_counter(n::MEMBERS_CONNECTED, 1);
    m.add_counter(n::TICKS_STALLED, member.ticks_stalled);
    m.add_counter(n::RECONNECTS, member.reconnects);
    if member.leader {
        m.add_counter(n::LEADERS, 1);
        m.add_counter(n::CHANGES_SCHEDULED, member.changes as u64);
        m.add_counter(n::CHANGES_EMITTED, emitted);
        let h = m.histogram_mut(n::EMIT_LAG_US);
        for v in emit_lag_us {
            let _ = h.record(*v);
        }
    }
    m.add_counter(n::EXPECTED_DELIVERIES, member.changes as u64);
    m.add_counter(n::DELIVERED, member.delivered);
    m.add_counter(n::MISSED, member.missed);
    m.add_counter(n::CONVERGED, u64::from(converged));
    m.add_counter(n::DUPLICATES, member.duplicates);
    m.add_counter(n::OUT_OF_ORDER, member.out_of_order);
    m.add_counter(n::WITHOUT_VERSION, member.without_version);
    m.add_counter(n::WITHOUT_SERVER_TS, member.without_server_ts);
    m.add_counter(n::UNEXPECTED_STATES, member.unexpected);
    m.add_counter(n::SNAPSHOTS, member.snapshots);
    m.add_counter(n::TICKS, member.ticks);
    m.add_counter(n::TICKS_MISSED, member.ticks_missed);
    let prop = if member.leader {
        n::PROPAGATION_LEADER_US
    } else if member.same_instance {
        n::PROPAGATION_SAME_US
    } else {
        n::PROPAGATION_CROSS_US
    };
    let h = m.histogram_mut(prop);
    for v in &member.propagation_us {
        let _ = h.record(*v);
    }
    let h = m.histogram_mut(n::TICK_JITTER_US);
    for v in &member.tick_jitter_us {
        let _ = h.record(*v);
    }
    for (block, samples) in &mut member.phase {
        let zero = median(samples);
        let key = n::phase_key(session, *block, instance);
        m.set_gauge(&format!("{key}.min"), zero, GaugeMerge::Min);
        m.set_gauge(&format!("{key}.max"), zero, GaugeMerge::Max);
    }
}

/// The member's join outcome and its share of every command's chain.
fn fold_chain(m: &mut MetricSet, member: &Member) {
    if member.joined {
        m.add_counter(n::MEMBERS_JOINED, 1);
    } else if let Some(why) = &member.refused {
        m.add_counter(n::MEMBERS_REFUSED, 1);
        add_reason(m, n::REFUSAL_PREFIX, why);
    }
    for (command, why) in &member.cmd_errors {
        add_reason(m, n::COMMAND_ERROR_PREFIX, &format!("{command}:{why}"));
    }
    let mut expected = [0u64; 4];
    for c in 0..member.changes {
        expected[command_index(member.script.command(c, "").0)] += 1;
    }
    for (k, command) in n::COMMANDS.iter().enumerate() {
        use n::Link;
        let mut add = |link: Link, v: u64| m.add_counter(&n::chain(command, link), v);
        if member.leader {
            add(Link::Emitted, member.emitted_by[k]);
            add(Link::Answered, member.answered[k]);
            add(Link::Refused, member.refused_cmd[k]);
            add(Link::LeaderSeen, member.seen[k]);
        } else if member.same_instance {
            add(Link::SameExpected, expected[k]);
            add(Link::SameSeen, member.seen[k]);
        } else {
            add(Link::CrossExpected, expected[k]);
            add(Link::CrossSeen, member.seen[k]);
        }
    }
}

struct Job {
    url: String,
    session: String,
    name: String,
    slot_agent_ns: i64,
    /// The leader claims its seat with `set_role` (else it leads as the first joiner).
    claim_with_set_role: bool,
    end_coord_ns: i64,
    state: Arc<Mutex<Member>>,
    session_index: u64,
    instance: usize,
}

enum Outcome {
    Done {
        member: Box<Member>,
        emitted: u64,
        emit_lag_us: Vec<u64>,
        session: u64,
        instance: usize,
    },
    Failed(String),
    Cancelled,
}

async fn sleep_until_agent_ns(t: i64, cancel: &tokio_util::sync::CancellationToken) -> bool {
    let wait = t - now_unix_ns();
    if wait > 0 {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_nanos(wait as u64)) => {}
            () = cancel.cancelled() => return false,
        }
    }
    !cancel.is_cancelled()
}

impl Job {
    async fn run(
        self,
        clock: ClockEstimate,
        cancel: &tokio_util::sync::CancellationToken,
        gate: &tokio::sync::Semaphore,
        live: &super::Live,
    ) -> Outcome {
        if !sleep_until_agent_ns(self.slot_agent_ns, cancel).await {
            return Outcome::Cancelled;
        }
        let leader = self.state.lock().unwrap().leader;
        let claim = leader && self.claim_with_set_role;
        let st = self.state.clone();
        let handler: sio::Handler = Arc::new(move |event: &str, payload: &Value, at: i64| {
            let at = clock.to_coordinator(at);
            match event {
                "snapshot" => st.lock().unwrap().on_snapshot(payload, at),
                "scroll_tick" => st.lock().unwrap().on_tick(payload, at),
                "session_error" | "error" => st.lock().unwrap().on_error(payload),
                sio::CLIENT_ERROR => tracing::debug!("socket.io client: {payload}"),
                _ => {}
            }
        });
        let join = json!({"sessionId": self.session, "displayName": self.name});
        let rejoin: sio::OnReconnect = {
            let (st, join, session) = (self.state.clone(), join.clone(), self.session.clone());
            Arc::new(move |client| {
                st.lock().unwrap().reconnects += 1;
                let (join, session) = (join.clone(), session.clone());
                tokio::spawn(async move {
                    let _ = client.emit("join_session", join).await;
                    if claim {
                        let _ = client
                            .emit("set_role", json!({"sessionId": session, "role": "leader"}))
                            .await;
                    }
                });
            })
        };
        let client = {
            let Ok(_permit) = gate.acquire().await else {
                return Outcome::Cancelled;
            };
            tokio::select! {
                r = sio::connect(&self.url, handler, Some(rejoin), Duration::from_secs(10)) => match r {
                    Ok(c) => c,
                    Err(e) => return Outcome::Failed(e.0),
                },
                () = cancel.cancelled() => return Outcome::Cancelled,
            }
        };
        let mut emitted = 0;
        let mut emit_lag_us = Vec::new();
        let body = async {
            if client.emit("join_session", join.clone()).await.is_err() {
                live.add_error();
            }
            if leader {
                if claim {
                    let _ = client
                        .emit("set_role", json!({"sessionId": self.session, "role": "leader"}))
                        .await;
                }
                let (changes, t0, step) = {
                    let s = self.state.lock().unwrap();
                    (s.changes, s.t0_ns, s.interval_ns)
                };
                for c in 0..changes {
                    let due = clock.to_agent(t0 + c * step);
                    if !sleep_until_agent_ns(due, cancel).await {
                        return false;
                    }
                    let (event, payload) = {
                        let mut s = self.state.lock().unwrap();
                        let (event, payload) = s.script.command(c, &self.session);
                        // Before the emit: the answer may arrive before `emit` returns.
                        s.pending = Some(command_index(event));
                        (event, payload)
                    };
                    let lag = now_unix_ns() - due;
                    match client.emit(event, payload).await {
                        Ok(()) => {
                            emitted += 1;
                            self.state.lock().unwrap().emitted_by[command_index(event)] += 1;
                            live.add_ops(1);
                            emit_lag_us.push((lag.max(0) / 1000) as u64);
                        }
                        Err(_) => live.add_error(),
                    }
                }
            }
            sleep_until_agent_ns(clock.to_agent(self.end_coord_ns), cancel).await
        }
        .await;
        let _ = client.emit("leave_session", json!({"sessionId": self.session})).await;
        let _ = client.disconnect().await;
        if !body {
            return Outcome::Cancelled;
        }
        let member = Box::new(std::mem::take(&mut *self.state.lock().unwrap()));
        Outcome::Done {
            member,
            emitted,
            emit_lag_us,
            session: self.session_index,
            instance: self.instance,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_refuses_a_share_over_its_member_budget() {
        assert!(within_budget(10, u64::MAX).is_ok());
        let err = within_budget(n::MAX_MEMBERS_PER_AGENT + 5, u64::MAX)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 20000 per agent"), "{err}");
        let err = within_budget(1_000, 10 << 20).unwrap_err().to_string();
        assert!(
            err.contains("1000 members need about 62 MiB and it may use 10 MiB"),
            "{err}"
        );
    }

    #[test]
    fn every_change_leaves_a_state_unlike_its_neighbours() {
        for c in -1..796 {
            for d in 1..8 {
                assert_ne!(expected(c), expected(c + d), "changes {c} and {}", c + d);
            }
        }
    }

    fn snap(c: i64, version: Option<u64>) -> Value {
        let e = expected(c);
        let past = if e.at_mark { 0.0 } else { 12.0 };
        let mut v = json!({
            "tempo": e.tempo, "isPlaying": e.playing, "position": e.block as f64 * BLOCK_MS + past,
            "serverTimestamp": 1,
        });
        if let Some(ver) = version {
            v["version"] = json!(ver);
        }
        v
    }

    #[test]
    fn a_member_recognises_changes_counts_misses_duplicates_and_converges() {
        let mut m = Member {
            changes: 6,
            t0_ns: 1_000_000_000,
            interval_ns: 500_000_000,
            ..Member::default()
        };
        m.on_snapshot(&snap(-1, Some(3)), 10); // the join
        m.on_snapshot(&snap(0, Some(4)), 1_012_000_000); // change 0, 12 ms late
        m.on_snapshot(&snap(0, Some(4)), 1_013_000_000); // duplicate
        m.on_snapshot(&snap(2, Some(6)), 2_003_000_000); // change 2 (1 missed)
        m.on_snapshot(&snap(1, Some(5)), 2_004_000_000); // stale: out of order
        m.on_snapshot(&snap(3, None), 2_505_000_000);
        m.on_snapshot(&snap(4, None), 3_006_000_000);
        m.on_snapshot(&snap(5, None), 3_507_000_000);
        assert!(m.finish());
        assert_eq!((m.delivered, m.missed, m.duplicates, m.out_of_order), (5, 1, 1, 1));
        assert_eq!(m.without_version, 3);
        assert_eq!(m.propagation_us, vec![12_000, 3_000, 5_000, 6_000, 7_000]);
    }

    #[test]
    fn ticks_give_jitter_misses_and_the_beat_phase() {
        let mut m = Member::default();
        let tick = |p: f64| json!({"positionMs": p, "serverTimestamp": 1});
        m.on_tick(&tick(100_100.0), 5_000_000_000);
        m.on_tick(&tick(100_200.0), 5_102_000_000); // 2 ms late
        m.on_tick(&tick(100_500.0), 5_400_000_000); // 2 missed
        assert_eq!(m.ticks, 3);
        assert_eq!(m.ticks_missed, 2);
        assert_eq!(m.tick_jitter_us, vec![2_000]);
        // Zero instant, µs: arrival − position; the late tick hears it 2 ms later.
        assert_eq!(m.phase[&1], vec![-95_100_000.0, -95_098_000.0, -95_100_000.0]);
    }

    #[test]
    fn joins_and_commands_are_answered_refused_or_ignored() {
        let mut m = Member {
            changes: 4,
            leader: true,
            ..Member::default()
        };
        // A refusal before any snapshot is a refused join, with the server's reason.
        m.on_error(&json!({"message": "Session at capacity (8 members)"}));
        assert_eq!(m.refused.as_deref(), Some("Session at capacity (8 members)"));
        assert!(!m.joined);
        let mut m = Member {
            changes: 4,
            leader: true,
            ..Member::default()
        };
        m.on_snapshot(&snap(-1, None), 0);
        assert!(m.joined && m.refused.is_none());
        // set_tempo answered by a snapshot; seek refused by name; play never answered.
        m.pending = Some(command_index("set_tempo"));
        m.on_snapshot(&snap(0, None), 1);
        m.pending = Some(command_index("seek"));
        m.on_error(&json!({"event": "seek", "code": "NOT_LEADER", "message": "not the leader"}));
        m.pending = Some(command_index("play"));
        assert_eq!(m.answered, [1, 0, 0, 0]);
        assert_eq!(m.refused_cmd, [0, 1, 0, 0]);
        assert_eq!(m.seen, [1, 0, 0, 0]);
        assert_eq!(m.cmd_errors, vec![("seek".to_owned(), "not the leader".to_owned())]);
        // An unnamed error while a command is pending refuses that command (legacy `error`).
        m.on_error(&json!({"message": "nope"}));
        assert_eq!(m.refused_cmd, [0, 1, 1, 0]);
    }

    #[test]
    fn a_position_that_does_not_advance_is_a_stalled_tick() {
        let mut m = Member::default();
        let tick = |p: f64| json!({"positionMs": p});
        m.on_tick(&tick(100_100.0), 0);
        m.on_tick(&tick(100_100.0), 100_000_000);
        m.on_tick(&tick(100_100.0), 200_000_000);
        assert_eq!((m.ticks, m.ticks_stalled), (3, 2));
        assert!(m.tick_jitter_us.is_empty());
    }

    #[test]
    fn a_playing_script_is_recognised_and_the_outage_state_is_judged_before_finishing() {
        let script = Script::Playing;
        let mut m = Member {
            changes: 6,
            t0_ns: 0,
            interval_ns: 1_000,
            script,
            // Changes 2 and 3 fall in the fault's window.
            window: Some((1_500, 3_500)),
            ..Member::default()
        };
        let playing = |c: i64| {
            let e = script.expected(c);
            json!({"tempo": e.tempo, "isPlaying": e.playing, "position": 5_000.0})
        };
        m.on_tick(&json!({"positionMs": 100.0}), 1_000);
        m.on_snapshot(&playing(0), 10);
        m.on_snapshot(&playing(1), 1_010);
        assert_eq!(m.delivered, 2, "a playing script's changes are recognised");
        // The fault's last change (3) never arrived: not reached, though finish() then counts
        // it as missed and would make every member look as if it got there.
        assert_eq!(m.reached_outage_state(), Some(false));
        assert_eq!(m.ticks_before_window, 1);
        m.on_snapshot(&playing(4), 4_010);
        assert_eq!(m.reached_outage_state(), Some(true));
    }
}
