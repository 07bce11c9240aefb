//! The conformance probe: three clients in one session (two on the first server, one on the
//! second when there are two), each command sent once or twice and every answer recorded — ack,
//! refusal, which members got a snapshot, whether the change showed — then up to `max_members`
//! clients joining a second session until one is refused. The report turns the counters into
//! the table and the dialect (`bandsync_common::workloads::protocol_conformance`).
//!
//! An ack is optional: a command is waited for until its answers are in or `settle` has passed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bandsync_common::clock::now_unix_ns;
use bandsync_common::metrics::{GaugeMerge, MetricSet};
use bandsync_common::workloads::ProtocolConformance;
use bandsync_common::workloads::protocol_conformance::{self as pc, names as n};
use serde_json::{Value, json};

use super::{Run, StepContext, WorkloadError, sio};

/// How long the two plays last before their pause: not multiples of the 100 ms tick, so an
/// aligned position cannot pass for a +100-per-tick counter.
const PLAYS: [Duration; 2] = [Duration::from_millis(370), Duration::from_millis(430)];
/// Tempo and position the leader sets (not any dialect's default).
const TEMPO: f64 = 137.0;
const SEEK_MS: f64 = 5_000.0;

type Events = Arc<Mutex<Vec<(String, Value, i64)>>>;

struct Client {
    name: String,
    instance: usize,
    sio: sio::Client,
    events: Events,
    /// Index in `events` of the snapshot that answered this client's own join.
    join_snapshot: Option<usize>,
}

/// What came back for one emitted command.
struct Act {
    sender: usize,
    ack: Option<Value>,
    /// Each client's event count when the command was sent.
    marks: Vec<usize>,
}

struct Probe<'a> {
    ctx: &'a StepContext,
    settle: Duration,
    clients: Vec<Client>,
    session: String,
    m: MetricSet,
    /// Whether the server acks (learnt from the first join): only then is an ack waited for.
    acks: bool,
}

async fn connect(ctx: &StepContext, name: &str, instance: usize) -> Result<Client, String> {
    let events: Events = Arc::default();
    let sink = events.clone();
    let handler: sio::Handler = Arc::new(move |event: &str, payload: &Value, at: i64| {
        sink.lock().unwrap().push((event.to_owned(), payload.clone(), at));
    });
    let url = sio::base_url(&ctx.servers[instance]);
    let sio = sio::connect(&url, handler, None, Duration::from_secs(10))
        .await
        .map_err(|e| e.0)?;
    Ok(Client {
        name: name.to_owned(),
        instance,
        sio,
        events,
        join_snapshot: None,
    })
}

/// Emits `event` asking for an ack; the ack's first argument arrives on the receiver (never,
/// when the server sends none).
async fn emit_with_ack(
    client: &sio::Client,
    event: &str,
    payload: Value,
    ctx: &StepContext,
) -> tokio::sync::oneshot::Receiver<Value> {
    match client.emit_with_ack(event, payload).await {
        Ok(rx) => {
            ctx.live.add_ops(1);
            rx
        }
        Err(_) => {
            ctx.live.add_error();
            // A receiver whose sender is gone: no ack, as from a server that sends none.
            tokio::sync::oneshot::channel().1
        }
    }
}

fn is_refusal(ack: &Value) -> bool {
    ack.get("ok") == Some(&Value::Bool(false))
}

fn num(v: &Value, field: &str) -> Option<f64> {
    v.get(field).and_then(Value::as_f64)
}

impl Probe<'_> {
    fn marks(&self) -> Vec<usize> {
        self.clients.iter().map(|c| c.events.lock().unwrap().len()).collect()
    }

    /// Client `i`'s events named `event` since `mark`, with their index.
    fn since(&self, i: usize, mark: usize, event: &str) -> Vec<(usize, Value)> {
        let ev = self.clients[i].events.lock().unwrap();
        ev.iter()
            .enumerate()
            .skip(mark)
            .filter(|(_, (e, _, _))| e == event)
            .map(|(k, (_, v, _))| (k, v.clone()))
            .collect()
    }

    fn got(&self, i: usize, mark: usize, event: &str) -> bool {
        self.clients[i].events.lock().unwrap()[mark..]
            .iter()
            .any(|(e, _, _)| e == event)
    }

    /// Snapshots any client received since the act.
    fn snapshots(&self, act: &Act) -> Vec<Value> {
        (0..self.clients.len())
            .flat_map(|i| self.since(i, act.marks[i], "snapshot"))
            .map(|(_, v)| v)
            .collect()
    }

    /// Emits `event` from client `who` and waits until `done` holds (and the ack is in, when the
    /// server acks) or `settle` passed.
    async fn act(
        &mut self,
        who: usize,
        event: &str,
        payload: Value,
        done: impl Fn(&Probe<'_>, &[usize]) -> bool,
        wait_for_ack: bool,
    ) -> Result<Act, WorkloadError> {
        let marks = self.marks();
        let mut rx = emit_with_ack(&self.clients[who].sio, event, payload, self.ctx).await;
        let deadline = Instant::now() + self.settle;
        let mut ack = None;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Err(WorkloadError::Cancelled);
            }
            if ack.is_none() {
                ack = rx.try_recv().ok();
            }
            let ack_in = ack.is_some() || !wait_for_ack;
            if (ack_in && done(self, &marks)) || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(Act {
            sender: who,
            ack,
            marks,
        })
    }

    /// Every member of the probe's session but `who` has a snapshot since `marks`.
    fn all_saw(&self, marks: &[usize], upto: usize) -> bool {
        (0..upto).all(|i| self.got(i, marks[i], "snapshot"))
    }

    /// Records one command's answers in the table's counters.
    fn record(&mut self, command: &str, act: &Act, applied: bool, members: usize) {
        let add = |m: &mut MetricSet, what: &str, v: bool| m.add_counter(&n::cmd(command, what), u64::from(v));
        add(&mut self.m, n::SENT, true);
        let errored = self.got(act.sender, act.marks[act.sender], "session_error")
            || self.got(act.sender, act.marks[act.sender], "error");
        let refused_ack = act.ack.as_ref().is_some_and(is_refusal);
        add(&mut self.m, n::ACKED, act.ack.is_some() && !refused_ack);
        add(&mut self.m, n::REFUSED, refused_ack || errored);
        add(&mut self.m, n::APPLIED, applied);
        let answer = if command == "sync_request" {
            "sync_response"
        } else {
            "snapshot"
        };
        let to_sender = self.got(act.sender, act.marks[act.sender], answer);
        add(&mut self.m, n::TO_SENDER, to_sender);
        if command == "sync_request" {
            return;
        }
        let own = self.clients[act.sender].instance;
        for i in (0..members).filter(|i| *i != act.sender) {
            let seen = self.got(i, act.marks[i], "snapshot");
            let (seen_key, expected_key) = if self.clients[i].instance == own {
                (n::TO_SAME, n::SAME_EXPECTED)
            } else {
                (n::TO_CROSS, n::CROSS_EXPECTED)
            };
            add(&mut self.m, expected_key, true);
            add(&mut self.m, seen_key, seen);
        }
    }

    /// The leader's display name in the newest snapshot any client received.
    fn current_leader(&self) -> Option<String> {
        // Each client's newest snapshot (events arrive in order), then the newest of those.
        self.clients
            .iter()
            .filter_map(|c| {
                let ev = c.events.lock().unwrap();
                ev.iter()
                    .rev()
                    .find(|(e, _, _)| e == "snapshot")
                    .map(|(_, v, at)| (*at, pc::leader_name(v)))
            })
            .max_by_key(|(at, _)| *at)
            .and_then(|(_, leader)| leader)
    }

    async fn join(&mut self, who: usize, members: usize) -> Result<Act, WorkloadError> {
        let payload = json!({"sessionId": self.session, "displayName": self.clients[who].name});
        let first = who == 0;
        // The first join waits for its ack until `settle`: that tells whether the server acks.
        let wait_for_ack = first || self.acks;
        let act = self
            .act(
                who,
                "join_session",
                payload,
                move |p, marks| p.all_saw(marks, members),
                wait_for_ack,
            )
            .await?;
        if first {
            self.acks = act.ack.is_some();
        }
        let own = self.since(who, act.marks[who], "snapshot");
        self.clients[who].join_snapshot = own.first().map(|(k, _)| *k);
        let joined = !own.is_empty() || act.ack.as_ref().is_some_and(|a| !is_refusal(a));
        self.record("join_session", &act, joined, members);
        Ok(act)
    }

    /// The three clients join; the first join tells the leader rule and the default tempo, the
    /// second the join snapshot's target.
    async fn joins(&mut self) -> Result<(), WorkloadError> {
        let act = self.join(0, 1).await?;
        if let Some((_, snap)) = self.since(0, act.marks[0], "snapshot").first() {
            if let Some(t) = num(snap, "tempo").or_else(|| num(snap, "tempoBpm")) {
                self.m
                    .set_gauge(&format!("{}{}", n::JOIN, n::TEMPO), t, GaugeMerge::Max);
            }
            match pc::leader_name(snap) {
                Some(l) if l == self.clients[0].name => self.m.add_counter(n::LEADER_FIRST_JOINER, 1),
                _ if snap.get("leaderSocketId").is_none_or(Value::is_null) => {
                    self.m.add_counter(n::LEADER_NONE_AFTER_JOIN, 1)
                }
                _ => {}
            }
        }
        let act = self.join(1, 2).await?;
        self.m.add_counter(n::JOIN_ROOM_EXPECTED, 1);
        self.m
            .add_counter(n::JOIN_ROOM_SEEN, u64::from(self.got(0, act.marks[0], "snapshot")));
        self.join(2, 3).await?;
        Ok(())
    }

    /// The second member asks for the leader's seat; returns the leader's index after.
    async fn claim(&mut self) -> Result<usize, WorkloadError> {
        let payload = json!({"sessionId": self.session, "role": "leader"});
        let name = self.clients[1].name.clone();
        let act = self
            .act(
                1,
                "set_role",
                payload,
                move |p, _| p.current_leader().as_deref() == Some(name.as_str()),
                self.acks,
            )
            .await?;
        let leader = self.current_leader();
        let took = leader.as_deref() == Some(self.clients[1].name.as_str());
        self.record("set_role", &act, took, 3);
        if took {
            self.m.add_counter(n::LEADER_SET_ROLE_TOOK, 1);
        } else if leader.as_deref() == Some(self.clients[0].name.as_str()) {
            self.m.add_counter(n::LEADER_SET_ROLE_KEPT, 1);
        }
        Ok(if leader.as_deref() == Some(self.clients[0].name.as_str()) {
            0
        } else {
            1
        })
    }

    /// A leader command; `applied` judges the snapshots that followed it. Returns the act and
    /// the first snapshot that showed the change.
    async fn command(
        &mut self,
        leader: usize,
        command: &str,
        extra: Value,
        applied: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, WorkloadError> {
        let mut payload = json!({"sessionId": self.session});
        if let (Value::Object(p), Value::Object(e)) = (&mut payload, extra) {
            p.extend(e);
        }
        let act = self
            .act(leader, command, payload, |p, marks| p.all_saw(marks, 3), self.acks)
            .await?;
        let shown = self.snapshots(&act).into_iter().find(|s| applied(s));
        self.record(command, &act, shown.is_some(), 3);
        Ok(shown)
    }

    /// A command that should be refused (a follower's, or out of range): how it was answered.
    async fn refused(&mut self, prefix: &str, who: usize, tempo: f64) -> Result<(), WorkloadError> {
        let payload = json!({"sessionId": self.session, "tempo": tempo});
        let act = self.act(who, "set_tempo", payload, |_, _| false, false).await?;
        let applied = self.snapshots(&act).iter().any(|s| num(s, "tempo") == Some(tempo));
        let mark = act.marks[who];
        let key = |w: &str| format!("{prefix}{w}");
        self.m.add_counter(&key(n::SENT), 1);
        self.m.add_counter(&key(n::APPLIED), u64::from(applied));
        self.m
            .add_counter(&key("ack"), u64::from(act.ack.as_ref().is_some_and(is_refusal)));
        self.m
            .add_counter(&key("session_error"), u64::from(self.got(who, mark, "session_error")));
        self.m
            .add_counter(&key("error"), u64::from(self.got(who, mark, "error")));
        Ok(())
    }

    /// Plays for `d`, pauses, and counts the cycle when both positions were shown.
    async fn cycle(&mut self, leader: usize, d: Duration) -> Result<(), WorkloadError> {
        let playing = |s: &Value| s.get("isPlaying") == Some(&Value::Bool(true));
        let paused = |s: &Value| s.get("isPlaying") == Some(&Value::Bool(false));
        let start = self.command(leader, "play", json!({}), playing).await?;
        self.wait(d).await?;
        let stop = self.command(leader, "pause", json!({}), paused).await?;
        if let (Some(a), Some(b)) = (
            start.as_ref().and_then(|s| num(s, "position")),
            stop.as_ref().and_then(|s| num(s, "position")),
        ) {
            let delta = b - a;
            if delta > 0.0 {
                self.m.add_counter(n::TICK_CYCLES, 1);
                let rem = delta % 100.0;
                let counter = rem.abs() < 0.5 || (100.0 - rem).abs() < 0.5;
                self.m.add_counter(n::TICK_COUNTER_CYCLES, u64::from(counter));
            }
        }
        Ok(())
    }

    async fn wait(&self, d: Duration) -> Result<(), WorkloadError> {
        tokio::select! {
            () = tokio::time::sleep(d) => Ok(()),
            () = self.ctx.cancel.cancelled() => Err(WorkloadError::Cancelled),
        }
    }

    /// The commands, from the leader (and a follower's refused one).
    async fn commands(&mut self, leader: usize) -> Result<(), WorkloadError> {
        let tempo_is = |t: f64| move |s: &Value| num(s, "tempo") == Some(t) || num(s, "tempoBpm") == Some(t);
        let shown = self
            .command(leader, "set_tempo", json!({"tempo": TEMPO}), tempo_is(TEMPO))
            .await?;
        if shown.is_some() {
            // Only meaningful where set_tempo works at all.
            self.refused(n::RANGE, leader, 1000.0).await?;
        }
        let follower = 1 - leader;
        self.refused(n::REJECT, follower, 77.0).await?;
        self.command(leader, "seek", json!({"position": SEEK_MS}), |s| {
            num(s, "position").is_some_and(|p| (p - SEEK_MS).abs() < 1.0)
        })
        .await?;
        for d in PLAYS {
            self.cycle(leader, d).await?;
        }
        let payload = json!({"sessionId": self.session});
        let act = self
            .act(
                0,
                "sync_request",
                payload,
                |p, marks| p.got(0, marks[0], "sync_response"),
                self.acks,
            )
            .await?;
        let answered = self.got(0, act.marks[0], "sync_response");
        self.record("sync_request", &act, answered, 3);
        Ok(())
    }

    /// The fields of every message the session's clients received.
    fn fields(&mut self) {
        let known = [
            "snapshot",
            "scroll_tick",
            "sync_response",
            "session_error",
            "error",
            sio::CLIENT_ERROR,
        ];
        for c in &self.clients {
            let ev = c.events.lock().unwrap();
            for (k, (event, v, _)) in ev.iter().enumerate() {
                let prefix = match event.as_str() {
                    "snapshot" if Some(k) == c.join_snapshot => n::JOIN,
                    "snapshot" => n::SNAP,
                    "scroll_tick" => n::TICK,
                    "sync_response" => n::SYNC,
                    e if !known.contains(&e) => {
                        if pc::extra_allowed(&self.m, e) {
                            self.m.add_counter(&format!("{}{e}", n::EXTRA), 1);
                        }
                        continue;
                    }
                    _ => continue,
                };
                record_fields(&mut self.m, prefix, v);
            }
        }
    }

    async fn close(&mut self) {
        for c in self.clients.drain(..) {
            let _ = c.sio.emit("leave_session", json!({"sessionId": self.session})).await;
            let _ = c.sio.disconnect().await;
        }
    }
}

fn record_fields(m: &mut MetricSet, prefix: &str, v: &Value) {
    let key = |w: &str| format!("{prefix}{w}");
    m.add_counter(&key(n::COUNT), 1);
    for f in n::TIMESTAMP_FIELDS {
        // A Unix-ms clock: a number after 2001.
        if v.get(f).and_then(Value::as_f64).is_some_and(|t| t > 1e12) {
            m.add_counter(&key(&format!("{}{f}", n::FIELD)), 1);
        }
    }
    m.add_counter(
        &key(n::VERSION),
        u64::from(v.get("version").is_some_and(Value::is_number)),
    );
    m.add_counter(
        &key(n::SESSION_ID),
        u64::from(v.get("sessionId").is_some_and(Value::is_string)),
    );
    m.add_counter(&key(&format!("{}{}", n::MEMBERS, pc::members_shape(v))), 1);
    m.add_counter(
        &key(n::TEMPO_BPM),
        u64::from(v.get("tempoBpm").is_some_and(Value::is_number)),
    );
}

/// Joins up to `max` clients to a fresh session on the first server until one is refused.
async fn member_cap(
    ctx: &StepContext,
    p: &ProtocolConformance,
    session: &str,
    m: &mut MetricSet,
) -> Result<(), WorkloadError> {
    let mut clients = Vec::new();
    let result = async {
        for k in 1..=p.max_members {
            let c = match connect(ctx, &format!("probe-cap-{k}"), 0).await {
                Ok(c) => c,
                Err(e) => {
                    m.add_counter(n::CLIENTS_FAILED, 1);
                    m.add_counter(&format!("{}{e}", n::CONNECT_ERROR), 1);
                    break;
                }
            };
            m.add_counter(n::CAP_TRIED, 1);
            let payload = json!({"sessionId": session, "displayName": c.name});
            // A join's answer may come late from a loaded server: waiting for it costs nothing
            // when it comes early, and a late one must not read as "no cap".
            let wait = p.settle.max(Duration::from_secs(1));
            let mut rx = emit_with_ack(&c.sio, "join_session", payload, ctx).await;
            let deadline = Instant::now() + wait;
            let outcome = loop {
                if ctx.cancel.is_cancelled() {
                    return Err(WorkloadError::Cancelled);
                }
                let ack = rx.try_recv().ok();
                let refusal = {
                    let ev = c.events.lock().unwrap();
                    ev.iter()
                        .find(|(e, _, _)| e == "session_error" || e == "error")
                        .map(|(_, v, _)| sio::refusal_reason(v))
                };
                let snap = c.events.lock().unwrap().iter().any(|(e, _, _)| e == "snapshot");
                match (ack, refusal) {
                    (Some(a), _) if is_refusal(&a) => break Some(Err(sio::refusal_reason(&a))),
                    (_, Some(why)) => break Some(Err(why)),
                    (Some(_), None) => break Some(Ok(())),
                    (None, None) if snap => break Some(Ok(())),
                    _ if Instant::now() >= deadline => break None,
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            };
            clients.push(c);
            match outcome {
                Some(Ok(())) => m.add_counter(n::CAP_JOINED, 1),
                Some(Err(why)) => {
                    m.add_counter(n::CAP_REFUSED, 1);
                    m.add_counter(&format!("{}{why}", n::REFUSAL), 1);
                    break;
                }
                None => m.add_counter(n::CAP_UNANSWERED, 1),
            }
        }
        Ok(())
    }
    .await;
    for c in clients {
        let _ = c.sio.emit("leave_session", json!({"sessionId": session})).await;
        let _ = c.sio.disconnect().await;
    }
    result
}

impl Run for ProtocolConformance {
    async fn run(&self, ctx: &StepContext) -> Result<MetricSet, WorkloadError> {
        if ctx.servers.is_empty() {
            return Err(WorkloadError::Internal("no BandSync server in the target".into()));
        }
        let instances = ctx.servers.len().min(2);
        // Sessions of their own, even when a plan probes twice.
        let tag = now_unix_ns() % 1_000_000_000;
        let mut clients = Vec::new();
        for (k, instance) in [0, 0, instances - 1].into_iter().enumerate() {
            let c = connect(ctx, &format!("probe-{}", k + 1), instance)
                .await
                .map_err(WorkloadError::ServerUnreachable)?;
            clients.push(c);
        }
        let mut probe = Probe {
            ctx,
            settle: self.settle,
            clients,
            session: format!("{}probe-{tag}", ctx.run_base),
            m: MetricSet::new(),
            acks: true,
        };
        probe.m.add_counter(n::CLIENTS, 3);
        probe.m.add_counter(n::CLIENTS_FAILED, 0);
        probe.m.add_counter(n::INSTANCES, instances as u64);
        let result = async {
            probe.joins().await?;
            let leader = probe.claim().await?;
            probe.commands(leader).await
        }
        .await;
        probe.fields();
        probe.close().await;
        result?;
        let mut m = probe.m;
        member_cap(ctx, self, &format!("{}probe-cap-{tag}", ctx.run_base), &mut m).await?;
        Ok(m)
    }
}
