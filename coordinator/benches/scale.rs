//! The real coordinator (its release binary, its own process) against 1,000 light simulated
//! agents that speak the real gRPC protocol from this process, each on its own connection:
//! Hello, the clock probes, the synchronized start, and one step result each in the worst
//! latency shape (10 histograms of 100,000 samples, ~17,000 buckets each), merged exactly.
//!
//! Prints, with the targets: the time until every agent was welcomed, the agents' actual start
//! minus the scheduled instant (p50 / p99 / max, from the coordinator's report), the time from
//! the last result sent to the coordinator's `Finish` (merge + report), the coordinator's peak
//! RSS (VmHWM) and the bytes of one step result.
//!
//! Run: `scripts/bench-coordinator` (release build). `AGENTS=200` for a smaller run.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bandsync_common::clock::now_unix_ns;
use bandsync_proto::PROTOCOL_VERSION;
use bandsync_proto::pb::{self, agent_message, coordinator_message, load_test_client::LoadTestClient};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

mod shapes;
use shapes::{Shape, agent_metrics};

/// Distinct result payloads the simulated agents cycle through (building one takes ~0.1 s).
const VARIANTS: usize = 8;

#[derive(Default)]
struct Times {
    welcomed: Vec<Instant>,
    last_result_sent: Option<Instant>,
    first_finish: Option<Instant>,
    result_bytes: usize,
    /// RunStep received minus the scheduled start, ms (negative: in time).
    run_step_lead_ms: Vec<f64>,
    failures: Vec<String>,
}

fn main() {
    let agents: usize = std::env::var("AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let bin = env!("CARGO_BIN_EXE_bandsync-coordinator");
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("scale.toml");
    std::fs::write(
        &plan,
        format!(
            "name = \"scale\"\n[run]\nagents = {agents}\nagent_wait = \"120s\"\nstep_timeout = \"60s\"\nprobe = false\n[[steps]]\nname = \"one\"\nkind = \"timestamp_generation\"\niterations = 1000\nbatch_size = 1000\n"
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let json = dir.path().join("report.json");
    println!("bench-coordinator: {agents} simulated agents, one step, worst latency shape; building the results…");
    let variants: Vec<pb::MetricSet> = (0..VARIANTS).map(|v| agent_metrics(v, Shape::WorstCase)).collect();
    let variants = Arc::new(variants);

    let mut coordinator = Command::new(bin)
        .args([
            "run",
            plan.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--json",
        ])
        .arg(&json)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = coordinator.id();

    // The coordinator's peak RSS, read until it exits.
    let hwm = Arc::new(Mutex::new(0u64));
    let watcher = {
        let hwm = hwm.clone();
        std::thread::spawn(move || {
            while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    *hwm.lock().unwrap() = kb;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let times = Arc::new(Mutex::new(Times::default()));
    let begin = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(agents);
        for i in 0..agents {
            let (times, variants) = (times.clone(), variants.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent(i, port, &variants, &times).await {
                    times.lock().unwrap().failures.push(format!("agent {i}: {e}"));
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let status = coordinator.wait().unwrap();
    let _ = watcher.join();
    let times = times.lock().unwrap();
    if !times.failures.is_empty() {
        eprintln!(
            "{} simulated agents failed, first: {}",
            times.failures.len(),
            times.failures[0]
        );
    }
    let mut stderr = String::new();
    if let Some(mut e) = coordinator.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    assert!(json.exists(), "the coordinator wrote no report ({status}): {stderr}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let step = &report["steps"][0];
    let reported = step["agents_reported"].as_array().map_or(0, Vec::len);
    let mut delays: Vec<f64> = step["start_delay_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    delays.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        delays
            .get(((delays.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let joined = times.welcomed.iter().max().map(|t| t.duration_since(begin));
    let merge = match (times.last_result_sent, times.first_finish) {
        (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
        _ => None,
    };
    let rss_mb = *hwm.lock().unwrap() as f64 / 1024.0;
    let mut arrivals = times.run_step_lead_ms.clone();
    arrivals.sort_by(f64::total_cmp);
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    println!("  coordinator exit: {status}; {reported} of {agents} agents' results in the report");
    println!(
        "  all {} agents welcomed after {:.2} s",
        times.welcomed.len(),
        joined.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    println!(
        "  start minus scheduled instant: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (spread {} ms)  target p99 < 5 ms  {}",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        step["start_spread_ms"]
            .as_f64()
            .map_or("n/a".into(), |s| format!("{s:.2}")),
        verdict(pct(0.99).abs() < 5.0)
    );
    println!(
        "  RunStep received, minus the scheduled start: first {:.1} ms, median {:.1} ms, last {:.1} ms",
        arrivals.first().copied().unwrap_or(f64::NAN),
        arrivals.get(arrivals.len() / 2).copied().unwrap_or(f64::NAN),
        arrivals.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  last result sent → Finish (merge + report): {:.0} ms  target < 1000 ms  {}",
        merge.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3),
        verdict(merge.is_some_and(|d| d < Duration::from_secs(1)))
    );
    println!(
        "  coordinator peak RSS (VmHWM): {rss_mb:.0} MB  target < 500 MB  {}",
        verdict(rss_mb > 0.0 && rss_mb < 500.0)
    );
    println!(
        "  one step result: {:.1} KB  target < 64 KB  {}",
        times.result_bytes as f64 / 1024.0,
        verdict(times.result_bytes < 64 * 1024)
    );
    println!(
        "  ({} cores; the agents and the coordinator share them)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
}

/// One simulated agent: the real protocol, no workload.
async fn agent(i: usize, port: u16, variants: &[pb::MetricSet], times: &Mutex<Times>) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => return Err(format!("connect: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut client = LoadTestClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let hello = pb::Hello {
        agent_id: format!("sim-{i}"),
        hostname: "bench".into(),
        cores: 1,
        version: env!("CARGO_PKG_VERSION").into(),
        protocol_version: PROTOCOL_VERSION,
        capabilities: bandsync_common::workloads::KINDS
            .iter()
            .map(|k| (*k).to_owned())
            .collect(),
    };
    let send = |k: agent_message::Kind| pb::AgentMessage { kind: Some(k) };
    tx.send(send(agent_message::Kind::Hello(hello)))
        .await
        .map_err(|e| e.to_string())?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("session: {s}"))?
        .into_inner();
    let mut offset_ns = 0i64;
    while let Some(msg) = inbound.message().await.map_err(|s| format!("stream: {s}"))? {
        let received = now_unix_ns();
        match msg.kind {
            Some(coordinator_message::Kind::Welcome(_)) => times.lock().unwrap().welcomed.push(Instant::now()),
            Some(coordinator_message::Kind::ClockProbe(p)) => {
                let reply = pb::ClockProbeReply {
                    seq: p.seq,
                    t1_unix_ns: p.t1_unix_ns,
                    t2_unix_ns: received,
                    t3_unix_ns: now_unix_ns(),
                };
                tx.send(send(agent_message::Kind::ClockReply(reply)))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Some(coordinator_message::Kind::ClockEstimate(c)) => offset_ns = c.offset_ns,
            Some(coordinator_message::Kind::RunStep(rs)) => {
                let wait = rs.coord_start_unix_ns + offset_ns - now_unix_ns();
                times.lock().unwrap().run_step_lead_ms.push(-(wait as f64) / 1e6);
                if wait > 0 {
                    tokio::time::sleep(Duration::from_nanos(wait as u64)).await;
                }
                let started = now_unix_ns() - offset_ns;
                // The step's work: every simulated agent shares this process, so each reads its
                // start before any of them builds and sends a result.
                tokio::time::sleep(Duration::from_millis(500)).await;
                let result = pb::StepResult {
                    step_index: rs.step_index,
                    outcome: Some(pb::step_result::Outcome::Metrics(variants[i % variants.len()].clone())),
                    ops: 1000,
                    errors: 0,
                    coord_started_unix_ns: started,
                    cpu_us: 0,
                    wall_us: 0,
                    rss_bytes: 0,
                    cores: 1,
                };
                let bytes = result.encoded_len();
                tx.send(send(agent_message::Kind::StepResult(result)))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut t = times.lock().unwrap();
                t.result_bytes = t.result_bytes.max(bytes);
                let now = Instant::now();
                t.last_result_sent = Some(t.last_result_sent.map_or(now, |l| l.max(now)));
            }
            Some(coordinator_message::Kind::Finish(_)) => {
                let mut t = times.lock().unwrap();
                let now = Instant::now();
                t.first_finish = Some(t.first_finish.map_or(now, |f| f.min(now)));
                return Ok(());
            }
            Some(coordinator_message::Kind::Abort(a)) => return Err(format!("aborted: {}", a.reason)),
            None => {}
        }
    }
    Err("the coordinator closed the stream before Finish".into())
}
