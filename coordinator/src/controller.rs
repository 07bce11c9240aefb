//! The run controller: waits for the agents, estimates their clocks, runs the plan's steps in
//! order (each starting on every agent at the same coordinator instant), merges the results
//! exactly and records everything the report needs.
//!
//! Every agent's inbound stream is read by its own task into ONE channel of `(agent, event)`,
//! so the controller is a single event loop with no locks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bandsync_common::clock::{self, ClockEstimate, ClockSample, now_unix_ns};
use bandsync_common::dialect::Dialect;
use bandsync_common::metrics::MetricSet;
use bandsync_common::plan::{AgentLoss, Plan, Step};
use bandsync_common::report::{AgentRow, AgentStepFigures, StepRecord, TimelineBuilder};
use bandsync_common::workload::FaultPlan;
use bandsync_proto::pb::{self, agent_message::Kind as In, coordinator_message::Kind as Out};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::progress::{ProgressMode, ProgressSink, StepProgress};
use crate::service::{Join, Outbound};

/// Probes per clock estimate; the minimum-RTT one is kept.
pub const CLOCK_PROBES: usize = 16;

pub enum Event {
    Message(In),
    /// A step result, its metrics already decoded by the agent's own reader task (decoding is
    /// most of a merge's cost: agents' results decode in parallel, the controller only adds).
    Result(Box<pb::StepResult>, Option<Result<MetricSet, String>>),
    Closed(String),
}

pub struct Agent {
    pub row: AgentRow,
    tx: Outbound,
    first_clock: Option<ClockEstimate>,
}

impl Agent {
    pub fn alive(&self) -> bool {
        self.row.lost.is_none()
    }

    async fn send(&self, kind: Out) -> bool {
        self.tx.send(Ok(pb::CoordinatorMessage::of(kind))).await.is_ok()
    }
}

pub struct Controller<'a> {
    pub plan: &'a Plan,
    pub run_id: String,
    pub redis_url: String,
    pub agents: Vec<Agent>,
    events_tx: mpsc::Sender<(u32, Event)>,
    events: mpsc::Receiver<(u32, Event)>,
    pub shutdown: CancellationToken,
    /// A second interrupt: stop waiting for the agents' cleanup.
    pub hurry: CancellationToken,
    /// Set when an agent was lost or a step did not complete on every agent.
    pub incomplete: Option<String>,
    pub interrupted: bool,
    /// An agent was lost and the plan says `on_agent_loss = "stop"`: no further step runs.
    pub stopping: bool,
    /// The step running now, for the record of a lost agent.
    current_step: Option<String>,
    started: Instant,
    progress: Box<dyn ProgressSink>,
    /// The testbed's redis-server, for restart faults.
    pub redis_control: Option<crate::fault::RedisControl>,
    /// What the Socket.IO steps rely on: the plan's protocol (or, with "detect", what the last
    /// conformance probe concluded), with the plan's overrides on top.
    pub dialect: Dialect,
}

impl<'a> Controller<'a> {
    pub fn new(plan: &'a Plan, run_id: String, redis_url: String, shutdown: CancellationToken) -> Self {
        let (events_tx, events) = mpsc::channel(1024);
        Self {
            plan,
            run_id,
            redis_url,
            agents: Vec::new(),
            events_tx,
            events,
            shutdown,
            hurry: CancellationToken::new(),
            incomplete: None,
            interrupted: false,
            stopping: false,
            current_step: None,
            started: Instant::now(),
            progress: ProgressMode::Log.sink(),
            redis_control: None,
            dialect: Dialect::of(plan.target.protocol.unwrap_or_default()).with(&plan.target.dialect),
        }
    }

    /// Where live progress goes (a log line every few seconds unless set).
    pub fn set_progress(&mut self, mode: ProgressMode) {
        self.progress = mode.sink();
    }

    pub fn alive(&self) -> impl Iterator<Item = &Agent> {
        self.agents.iter().filter(|a| a.alive())
    }

    /// Registers an agent, starts reading its stream and welcomes it.
    pub async fn accept(&mut self, join: Join) {
        let index = self.agents.len() as u32;
        let Join {
            hello,
            remote,
            mut inbound,
            outbound,
        } = join;
        info!(agent = %hello.agent_id, host = %hello.hostname, index, "agent joined");
        let events = self.events_tx.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(pb::AgentMessage { kind: Some(k) })) => {
                        let event = match k {
                            In::StepResult(mut r) => {
                                let decoded = match r.outcome.take() {
                                    Some(pb::step_result::Outcome::Metrics(m)) => Some(decode_result(&m)),
                                    other => {
                                        r.outcome = other;
                                        None
                                    }
                                };
                                Event::Result(Box::new(r), decoded)
                            }
                            k => Event::Message(k),
                        };
                        if events.send((index, event)).await.is_err() {
                            break;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let _ = events
                            .send((index, Event::Closed("the agent closed its stream".into())))
                            .await;
                        break;
                    }
                    Err(s) => {
                        let _ = events
                            .send((index, Event::Closed(format!("stream error: {}", s.message()))))
                            .await;
                        break;
                    }
                }
            }
        });
        let agent = Agent {
            row: AgentRow {
                index,
                agent_id: hello.agent_id,
                hostname: hello.hostname,
                address: remote.map_or_else(|| "unknown".into(), |a| a.to_string()),
                cores: hello.cores,
                version: hello.version,
                clock: None,
                clock_drift_ns: None,
                steps_completed: 0,
                errors: 0,
                max_cpu_percent: None,
                max_rss_mb: None,
                lost: None,
                lost_in_step: None,
                lost_after_s: None,
            },
            tx: outbound,
            first_clock: None,
        };
        let welcome = pb::Welcome {
            run_id: self.run_id.clone(),
            agent_index: index,
            plan_name: self.plan.name.clone(),
            plan_hash: self.plan.hash.clone(),
        };
        if !agent.send(Out::Welcome(welcome)).await {
            warn!(index, "agent left before it was welcomed");
        }
        self.agents.push(agent);
    }

    fn lose(&mut self, index: u32, why: String) {
        if let Some(a) = self.agents.get_mut(index as usize)
            && a.row.lost.is_none()
        {
            warn!(agent = %a.row.agent_id, reason = %why, step = ?self.current_step, "agent lost");
            a.row.lost = Some(why.clone());
            a.row.lost_in_step = self.current_step.clone();
            a.row.lost_after_s = Some(self.started.elapsed().as_secs_f64());
            self.incomplete
                .get_or_insert_with(|| format!("agent `{}` was lost: {why}", a.row.agent_id));
        }
    }

    /// Waits until `expected` agents are connected, or fails after `wait`.
    pub async fn wait_for_agents(
        &mut self,
        joins: &mut mpsc::Receiver<Join>,
        expected: u32,
        wait: Duration,
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + wait;
        while (self.alive().count() as u32) < expected {
            tokio::select! {
                j = joins.recv() => match j {
                    Some(j) => self.accept(j).await,
                    None => return Err(WaitError::Timeout),
                },
                Some((i, ev)) = self.events.recv() => {
                    if let Event::Closed(why) = ev {
                        // Left before the run started: listed as lost, but the run is not
                        // incomplete for it, since another agent can take its place.
                        self.lose(i, format!("left before the run started: {why}"));
                        self.incomplete = None;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Err(WaitError::Timeout),
                () = self.shutdown.cancelled() => return Err(WaitError::Interrupted),
            }
        }
        Ok(())
    }

    /// Estimates every live agent's clock offset (in parallel), and tells each agent its own.
    pub async fn sync_clocks(&mut self) {
        let mut samples: BTreeMap<u32, Vec<ClockSample>> = BTreeMap::new();
        let mut pending: BTreeMap<u32, (u64, i64)> = BTreeMap::new();
        let targets: Vec<u32> = self.alive().map(|a| a.row.index).collect();
        for &i in &targets {
            samples.insert(i, Vec::with_capacity(CLOCK_PROBES));
            self.probe(i, 0, &mut pending).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pending.is_empty() {
            tokio::select! {
                Some((i, ev)) = self.events.recv() => match ev {
                    Event::Message(In::ClockReply(r)) => {
                        let t4 = now_unix_ns();
                        if pending.get(&i).is_some_and(|(seq, t1)| *seq == r.seq && *t1 == r.t1_unix_ns) {
                            pending.remove(&i);
                            let s = samples.entry(i).or_default();
                            s.push(ClockSample { t1: r.t1_unix_ns, t2: r.t2_unix_ns, t3: r.t3_unix_ns, t4 });
                            if s.len() < CLOCK_PROBES {
                                self.probe(i, r.seq + 1, &mut pending).await;
                            }
                        }
                    }
                    Event::Message(_) | Event::Result(..) => {}
                    Event::Closed(why) => {
                        pending.remove(&i);
                        self.lose(i, why);
                    }
                },
                () = tokio::time::sleep_until(deadline) => {
                    for (&i, _) in pending.iter() {
                        warn!(index = i, "clock probes unanswered within 10 s");
                    }
                    break;
                }
                () = self.shutdown.cancelled() => return,
            }
        }
        for (i, s) in samples {
            let Some(est) = clock::estimate(&s) else { continue };
            let a = &mut self.agents[i as usize];
            if !a.alive() {
                continue;
            }
            let first = *a.first_clock.get_or_insert(est);
            a.row.clock = Some(est);
            a.row.clock_drift_ns = Some(est.offset_ns - first.offset_ns);
            a.send(Out::ClockEstimate(est.into())).await;
        }
    }

    async fn probe(&mut self, i: u32, seq: u64, pending: &mut BTreeMap<u32, (u64, i64)>) {
        let t1 = now_unix_ns();
        pending.insert(i, (seq, t1));
        if !self.agents[i as usize]
            .send(Out::ClockProbe(pb::ClockProbe { seq, t1_unix_ns: t1 }))
            .await
        {
            pending.remove(&i);
            self.lose(i, "stream closed".into());
        }
    }

    /// The record of a step refused before loading (nothing sent to any agent): the run is
    /// incomplete, with `why`.
    pub fn refuse(&mut self, step: &Step, why: &str) -> StepRecord {
        warn!(step = %step.name, "refused before loading: {why}");
        let mut record = StepRecord::new(step, now_unix_ns());
        if step.spec.uses_servers() {
            record.dialect = Some(self.dialect.clone());
        }
        record
            .failures
            .push(("coordinator".to_owned(), format!("refused before loading: {why}")));
        self.incomplete
            .get_or_insert_with(|| format!("step `{}` refused before loading: {why}", step.name));
        record
    }

    /// Runs one step on every live agent and returns what it recorded.
    pub async fn run_step(&mut self, step_index: u32, step: &Step) -> StepRecord {
        let agents = if step.spec.single_agent() {
            1
        } else {
            self.alive().count() as u32
        };
        let refusal = match step.spec.fits(agents) {
            Err(why) => Some(why),
            Ok(()) if step.spec.uses_servers() => step.spec.requires(&self.dialect).err(),
            Ok(()) => None,
        };
        if let Some(why) = refusal {
            return self.refuse(step, &why);
        }
        let mut record = self.run_step_on_agents(step_index, step).await;
        let concluded = record.failures.is_empty().then(|| step.spec.concluded(&record.merged));
        if let Some(found) = concluded.flatten() {
            self.dialect = match self.plan.target.protocol {
                // The plan named the dialect: it stands (the probe's table shows any difference).
                Some(p) => Dialect::of(p),
                None => found,
            }
            .with(&self.plan.target.dialect);
            info!(dialect = %self.dialect.describe(), "dialect for the following steps");
        }
        if step.spec.uses_servers() {
            // The probe's record names the dialect it leaves for the following steps.
            record.dialect = Some(self.dialect.clone());
        }
        record
    }

    async fn run_step_on_agents(&mut self, step_index: u32, step: &Step) -> StepRecord {
        // A single-agent step runs on the first live agent while the others wait.
        let take = if step.spec.single_agent() { 1 } else { usize::MAX };
        let participants: Vec<u32> = self.alive().map(|a| a.row.index).take(take).collect();
        self.current_step = Some(step.name.clone());
        let count = participants.len() as u32;
        let max_rtt = self
            .alive()
            .filter_map(|a| a.row.clock.map(|c| c.rtt_ns))
            .max()
            .unwrap_or(0);
        // Enough lead for the RunStep to reach every agent before the instant.
        let lead_ns = 300_000_000 + 4 * max_rtt;
        let start_at = now_unix_ns() + lead_ns;
        let mut record = StepRecord::new(step, start_at);
        let mut timeline = TimelineBuilder::new(start_at);
        let mut pending = self
            .send_step(step_index, step, &participants, start_at, &mut record)
            .await;
        info!(step = %step.name, kind = step.spec.kind(), agents = count, "step scheduled");
        let fault = match step.spec.hooks().fault {
            Some(plan) if !pending.is_empty() => Some(self.spawn_fault(plan, &step.name, start_at)),
            _ => None,
        };

        let started = Instant::now() + Duration::from_nanos(lead_ns as u64);
        // The agents stop by themselves at `timeout`; the grace covers cleanup and the trip back.
        let deadline = started + step.timeout + Duration::from_secs(20);
        let mut live: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        self.progress.start(&step.name, step.spec.kind());
        let lost_before = self.agents.iter().filter(|a| !a.alive()).count();
        while !pending.is_empty() {
            tokio::select! {
                Some((i, ev)) = self.events.recv() => match ev {
                    Event::Message(In::Progress(p)) if p.step_index == step_index => {
                        live.insert(i, (p.ops, p.errors));
                        timeline.observe(&self.agents[i as usize].row.agent_id, p.ops, p.errors, p.coord_unix_ns);
                    }
                    Event::Result(r, decoded) if r.step_index == step_index => {
                        if !pending.remove(&i) {
                            continue;
                        }
                        live.insert(i, (r.ops, r.errors));
                        self.on_result(i, *r, decoded, &mut record, &mut timeline);
                    }
                    Event::Message(_) | Event::Result(..) => {}
                    Event::Closed(why) => {
                        if pending.remove(&i) {
                            let id = self.agents[i as usize].row.agent_id.clone();
                            record.failures.push((id, format!("agent lost during the step: {why}")));
                        }
                        self.lose(i, why);
                        if self.plan.run.on_agent_loss == AgentLoss::Stop && !self.stopping {
                            warn!(step = %step.name, "an agent was lost and the plan says stop: aborting the step");
                            self.stopping = true;
                            self.abort(&pending, "another agent was lost and the plan stops on agent loss").await;
                        }
                    }
                },
                _ = tick.tick() => {
                    let p = self.step_progress(&live, started, count as usize - pending.len(), count as usize, lost_before);
                    self.progress.update(&step.name, &p);
                }
                () = tokio::time::sleep_until(deadline) => {
                    warn!(step = %step.name, "agents did not report within the step timeout; aborting it");
                    self.abort(&pending, "step timeout").await;
                    for &i in &pending {
                        record.failures.push((self.agents[i as usize].row.agent_id.clone(), "no result within the step timeout".into()));
                    }
                    self.incomplete.get_or_insert_with(|| format!("step `{}` timed out", step.name));
                    break;
                }
                () = self.shutdown.cancelled() => {
                    warn!(step = %step.name, "interrupted: aborting the step on every agent");
                    self.interrupted = true;
                    self.abort(&pending, "coordinator interrupted").await;
                    // Give the agents a moment to stop their load and delete their keys (a
                    // second interrupt cuts it short).
                    let hurry = self.hurry.clone();
                    let wait = tokio::time::timeout(Duration::from_secs(10), async {
                        while let Some((i, ev)) = self.events.recv().await {
                            if matches!(ev, Event::Result(..) | Event::Closed(_)) {
                                pending.remove(&i);
                                if pending.is_empty() { break; }
                            }
                        }
                    });
                    tokio::select! {
                        _ = wait => {}
                        () = hurry.cancelled() => {}
                    }
                    break;
                }
            }
        }
        record.duration_s = Instant::now().saturating_duration_since(started).as_secs_f64();
        if let Some((plan, task)) = fault {
            let hurry = self.hurry.clone();
            tokio::select! {
                () = finish_fault(&plan, task, &mut record) => {}
                () = hurry.cancelled() => {}
            }
        }
        let p = self.step_progress(
            &live,
            started,
            record.agents_reported.len(),
            count as usize,
            lost_before,
        );
        self.progress.finish(&step.name, &p, record.failures.is_empty());
        record.timeline = timeline.finish();
        self.current_step = None;
        if !record.failures.is_empty() && self.incomplete.is_none() {
            self.incomplete = Some(format!(
                "step `{}` failed on {} agent(s): {}",
                step.name,
                record.failures.len(),
                record.failures[0].1
            ));
        }
        record
    }

    /// Schedules the step's fault at its start + warm-up, on a task of its own.
    fn spawn_fault(&self, plan: FaultPlan, step: &str, start_at: i64) -> (FaultPlan, FaultTask) {
        let (url, control) = (self.redis_url.clone(), self.redis_control.clone());
        let at = start_at + plan.warmup.as_nanos() as i64;
        info!(step = %step, fault = plan.mode.name(), "fault scheduled");
        let task = tokio::spawn(async move {
            crate::fault::inject(plan.mode, at, plan.duration, plan.persist, &url, control).await
        });
        (plan, task)
    }

    /// Sends the step to each participant (shard k of n) and returns those it reached.
    async fn send_step(
        &mut self,
        step_index: u32,
        step: &Step,
        participants: &[u32],
        start_at: i64,
        record: &mut StepRecord,
    ) -> BTreeSet<u32> {
        let target = pb::Target {
            redis_url: self.redis_url.clone(),
            key_prefix: self.plan.target.key_prefix.clone(),
            run_id: self.run_id.clone(),
            servers: self.plan.target.servers.clone(),
            dialect: serde_json::to_string(&self.dialect).expect("dialect serializes"),
        };
        let count = participants.len() as u32;
        let mut pending = BTreeSet::new();
        for (shard, &i) in participants.iter().enumerate() {
            let msg = pb::RunStep {
                step_index,
                step_name: step.name.clone(),
                spec: Some((&step.spec).into()),
                shard: Some(pb::Shard {
                    index: shard as u32,
                    count,
                }),
                coord_start_unix_ns: start_at,
                target: Some(target.clone()),
                timeout_ms: step.timeout.as_millis() as u64,
            };
            let agent = &self.agents[i as usize];
            record.agents_sent.push(agent.row.agent_id.clone());
            if agent.send(Out::RunStep(msg)).await {
                pending.insert(i);
            } else {
                record.failures.push((
                    agent.row.agent_id.clone(),
                    "stream closed before the step was sent".into(),
                ));
                self.lose(i, "stream closed".into());
            }
        }
        pending
    }

    /// Records agent `i`'s result for the step: its figures, its metrics merged, or its failure.
    fn on_result(
        &mut self,
        i: u32,
        r: pb::StepResult,
        decoded: Option<Result<MetricSet, String>>,
        record: &mut StepRecord,
        timeline: &mut TimelineBuilder,
    ) {
        let start_at = record.scheduled_start_unix_ns;
        let agent = &mut self.agents[i as usize];
        agent.row.errors += r.errors;
        let id = agent.row.agent_id.clone();
        if r.coord_started_unix_ns != 0 {
            record.agent_starts_unix_ns.push((id.clone(), r.coord_started_unix_ns));
        }
        // The final counts close the agent's timeline now, in coordinator time.
        timeline.observe(&id, r.ops, r.errors, now_unix_ns());
        record.per_agent.push(AgentStepFigures {
            agent: id.clone(),
            ops: r.ops,
            errors: r.errors,
            start_delay_ms: (r.coord_started_unix_ns != 0).then(|| (r.coord_started_unix_ns - start_at) as f64 / 1e6),
            cpu_percent: (r.wall_us > 0 && r.cores > 0)
                .then(|| r.cpu_us as f64 / r.wall_us as f64 / f64::from(r.cores) * 100.0),
            rss_mb: (r.rss_bytes > 0).then(|| r.rss_bytes as f64 / 1_048_576.0),
            wall_s: (r.wall_us > 0).then(|| r.wall_us as f64 / 1e6),
        });
        let merged = decoded.map(|d| {
            d.and_then(|m| {
                record
                    .merged
                    .merge(&m)
                    .map_err(|e| format!("result does not merge: {e}"))
            })
        });
        match (merged, r.outcome) {
            (Some(merged), _) => match merged {
                Ok(()) => {
                    agent.row.steps_completed += 1;
                    record.agents_reported.push(id);
                }
                Err(e) => record.failures.push((id, e)),
            },
            // An agent's words reach terminals and the report: printable and bounded.
            (None, Some(pb::step_result::Outcome::Failure(f))) => record
                .failures
                .push((id, bandsync_common::fmt::printable(&f.message, 1_000))),
            (None, _) => record.failures.push((id, "empty result".into())),
        }
    }

    fn step_progress(
        &self,
        live: &BTreeMap<u32, (u64, u64)>,
        started: Instant,
        done: usize,
        of: usize,
        lost_before: usize,
    ) -> StepProgress {
        let (ops, errors) = live.values().fold((0, 0), |(o, e), (a, b)| (o + a, e + b));
        StepProgress {
            ops,
            errors,
            agents_done: done,
            agents: of,
            agents_lost: self.agents.iter().filter(|a| !a.alive()).count() - lost_before,
            elapsed: Instant::now().saturating_duration_since(started),
        }
    }

    async fn abort(&self, which: &BTreeSet<u32>, reason: &str) {
        for &i in which {
            self.agents[i as usize]
                .send(Out::Abort(pb::Abort {
                    reason: reason.to_owned(),
                }))
                .await;
        }
    }

    /// Tells every agent the run is over and waits (bounded) for their streams to close.
    pub async fn finish(&mut self) {
        let mut open = BTreeSet::new();
        for a in self.agents.iter().filter(|a| a.alive()) {
            if a.send(Out::Finish(pb::Finish {})).await {
                open.insert(a.row.index);
            }
        }
        let hurry = self.hurry.clone();
        let wait = tokio::time::timeout(Duration::from_secs(5), async {
            while !open.is_empty() {
                match self.events.recv().await {
                    Some((i, Event::Closed(_))) => {
                        open.remove(&i);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        });
        tokio::select! {
            _ = wait => {}
            () = hurry.cancelled() => {}
        }
    }
}

/// Decodes one agent's wire metric set and adds it, exactly, into the step's merged set.
pub fn merge_result(merged: &mut MetricSet, wire: &pb::MetricSet) -> Result<(), String> {
    let m = decode_result(wire)?;
    merged.merge(&m).map_err(|e| format!("result does not merge: {e}"))
}

/// An agent's metrics off the wire, with printable names.
pub fn decode_result(wire: &pb::MetricSet) -> Result<MetricSet, String> {
    let mut m = MetricSet::try_from(wire).map_err(|e| format!("result does not decode: {e}"))?;
    // Metric names carry reasons the report prints (a server's refusal message): printable.
    if m.counters
        .keys()
        .any(|k| k.chars().any(char::is_control) || k.len() > 512)
    {
        m.counters = std::mem::take(&mut m.counters)
            .into_iter()
            .map(|(k, v)| (bandsync_common::fmt::printable(&k, 512), v))
            .collect();
    }
    Ok(m)
}

/// Refuses agents that arrive after the run has its agents.
pub fn refuse_late_joins(mut joins: mpsc::Receiver<Join>, expected: u32) {
    tokio::spawn(async move {
        while let Some(j) = joins.recv().await {
            warn!(agent = %j.hello.agent_id, "refused a late agent");
            let _ = j
                .outbound
                .send(Err(Status::resource_exhausted(format!(
                    "this run already has its {expected} agents"
                ))))
                .await;
        }
    });
}

#[derive(Debug)]
pub enum WaitError {
    Timeout,
    Interrupted,
}

type FaultTask = tokio::task::JoinHandle<Result<crate::fault::FaultRecord, String>>;

/// Waits for the step's fault injection and records when the fault began and ended (or why not).
async fn finish_fault(plan: &FaultPlan, task: FaultTask, record: &mut StepRecord) {
    // A fault outlasting its step (an aborted run) is not waited for beyond 30 s.
    match tokio::time::timeout(Duration::from_secs(30), task).await {
        Ok(Ok(Ok(f))) => {
            use bandsync_common::metrics::GaugeMerge;
            record
                .merged
                .set_gauge(plan.begin_gauge, (f.began_ns / 1000) as f64, GaugeMerge::Min);
            record
                .merged
                .set_gauge(plan.end_gauge, (f.ended_ns / 1000) as f64, GaugeMerge::Max);
        }
        Ok(Ok(Err(e))) => record
            .failures
            .push(("coordinator".into(), format!("fault injection: {e}"))),
        Ok(Err(e)) => record
            .failures
            .push(("coordinator".into(), format!("fault injection panicked: {e}"))),
        Err(_) => record
            .failures
            .push(("coordinator".into(), "fault injection did not end within 30 s".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agents_metric_names_are_made_printable() {
        let mut m = MetricSet::new();
        m.add_counter("refusal:\u{1b}[2Jpwned", 1);
        let wire = pb::MetricSet::try_from(&m).unwrap();
        let mut merged = MetricSet::new();
        merge_result(&mut merged, &wire).unwrap();
        assert_eq!(merged.counter("refusal:?[2Jpwned"), 1);
    }
}
