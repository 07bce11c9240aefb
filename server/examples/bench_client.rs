//! The client side of `scripts/bench-server`: connects M members (websocket transport, emitting
//! only after Connect) in sessions of P, makes the first member of each session its leader and
//! starts playback, then counts the `scroll_tick`s every member receives during a measured
//! window against the 10 per second the protocol promises. It reads the server's RSS and CPU
//! from /proc (same machine) before the members connect and during the window.
//!
//!   cargo run --release --example bench_client -- URL SERVER_PID [MEMBERS] [PER_SESSION] [SECONDS]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::json;

fn now_ms() -> i64 {
    bandsync_server::now_ms()
}

/// (RSS bytes, CPU seconds user+system) of a process, from /proc.
fn proc_sample(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (rss_kb * 1024, ticks / 100.0)
}

struct Window {
    start_ms: AtomicU64,
    end_ms: AtomicU64,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).expect("URL").clone();
    let pid: u32 = args.get(2).expect("SERVER_PID").parse().expect("pid");
    let members: usize = args.get(3).map_or(10_000, |v| v.parse().expect("members"));
    let per_session: usize = args.get(4).map_or(10, |v| v.parse().expect("per session"));
    let seconds: u64 = args.get(5).map_or(20, |v| v.parse().expect("seconds"));
    let sessions = members.div_ceil(per_session);

    let (idle_rss, _) = proc_sample(pid);
    let window = Arc::new(Window {
        start_ms: AtomicU64::new(u64::MAX),
        end_ms: AtomicU64::new(u64::MAX),
    });
    let in_window = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let lag = Arc::new(std::sync::Mutex::new(hdrhistogram::Histogram::<u64>::new(3).unwrap()));

    let setup = tokio::time::Instant::now();
    let mut clients: Vec<Client> = Vec::with_capacity(members);
    let mut failed = 0usize;
    for batch in (0..members).collect::<Vec<_>>().chunks(200) {
        let connects = batch.iter().map(|&i| {
            let (window, in_window, total, lag) = (window.clone(), in_window.clone(), total.clone(), lag.clone());
            let url = url.clone();
            async move {
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                let tx = std::sync::Mutex::new(Some(tx));
                let client = ClientBuilder::new(url)
                    .transport_type(TransportType::Websocket)
                    .reconnect(false)
                    .on(Event::Connect, move |_, _| {
                        if let Some(tx) = tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                        async {}.boxed()
                    })
                    .on("scroll_tick", move |p: Payload, _| {
                        let received = now_ms();
                        total.fetch_add(1, Ordering::Relaxed);
                        if let Payload::Text(v) = p
                            && let Some(ts) = v.first().and_then(|t| t["serverTimestamp"].as_i64())
                        {
                            let (s, e) = (
                                window.start_ms.load(Ordering::Relaxed),
                                window.end_ms.load(Ordering::Relaxed),
                            );
                            if (ts as u64) >= s && (ts as u64) < e {
                                in_window.fetch_add(1, Ordering::Relaxed);
                                let _ = lag.lock().unwrap().record(((received - ts).max(0) as u64) * 1000);
                            }
                        }
                        async {}.boxed()
                    })
                    .connect()
                    .await
                    .ok()?;
                tokio::time::timeout(Duration::from_secs(10), rx).await.ok()?.ok()?;
                let session = format!("bench-{}", i / per_session);
                client
                    .emit(
                        "join_session",
                        json!({"sessionId": session, "displayName": format!("m{i}")}),
                    )
                    .await
                    .ok()?;
                if i % per_session == 0 {
                    client
                        .emit("set_role", json!({"sessionId": session, "role": "leader"}))
                        .await
                        .ok()?;
                    client.emit("play", json!({"sessionId": session})).await.ok()?;
                }
                Some(client)
            }
        });
        for c in futures_util::future::join_all(connects).await {
            match c {
                Some(c) => clients.push(c),
                None => failed += 1,
            }
        }
    }
    let setup_s = setup.elapsed().as_secs_f64();
    // Let every session start playing and every member's first ticks arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, cpu0) = proc_sample(pid);
    let (_, self0) = proc_sample(std::process::id());
    let start = now_ms() as u64;
    window.start_ms.store(start, Ordering::Relaxed);
    window.end_ms.store(start + seconds * 1000, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (rss, cpu1) = proc_sample(pid);
    let (_, self1) = proc_sample(std::process::id());
    // Ticks stamped inside the window may still be in flight.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = in_window.load(Ordering::Relaxed);
    let connected = clients.len();
    let expected = connected as u64 * seconds * 10;
    let lag = lag.lock().unwrap().clone();
    let cpu = (cpu1 - cpu0) / seconds as f64;
    println!(
        "members connected        {connected} of {members} ({failed} failed) in {sessions} sessions, setup {setup_s:.1} s"
    );
    println!(
        "server RSS               {:.1} MiB idle, {:.1} MiB loaded, {:.1} KiB per member",
        idle_rss as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        (rss.saturating_sub(idle_rss)) as f64 / 1024.0 / connected.max(1) as f64
    );
    println!(
        "server CPU               {:.0} % of one core over {seconds} s (this client: {:.0} %)",
        cpu * 100.0,
        (self1 - self0) * 100.0 / seconds as f64
    );
    println!(
        "tick delivery            {received} of {expected} expected ({:.2} %), {:.0} ticks/s",
        received as f64 * 100.0 / expected.max(1) as f64,
        received as f64 / seconds as f64
    );
    println!(
        "tick lag (serverTimestamp → client)  p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        lag.value_at_quantile(0.5) as f64 / 1000.0,
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        lag.max() as f64 / 1000.0
    );
    println!("server /health counters  {}", health(&url).await);
    for c in clients {
        let _ = c.disconnect().await;
    }
}

/// The server's /health counters (a minimal HTTP GET).
async fn health(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
        return "unreachable".into();
    };
    let req = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let mut buf = String::new();
    if s.write_all(req.as_bytes()).await.is_err() || s.read_to_string(&mut buf).await.is_err() {
        return "unreadable".into();
    }
    let body = buf.split_once("\r\n\r\n").map_or("", |b| b.1);
    serde_json::from_str::<serde_json::Value>(body).map_or_else(|_| body.to_owned(), |v| v["counters"].to_string())
}
