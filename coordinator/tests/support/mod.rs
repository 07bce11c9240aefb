//! Helpers shared by the coordinator's integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use bandsync_agent::{AgentConfig, AgentError, AgentExit};
use bandsync_coordinator::testbed::RedisServer;
use redis::aio::MultiplexedConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// `n` in-process agents named `{name}-{i}` dialing `addr`, with default settings.
pub fn spawn_agents(
    n: usize,
    addr: std::net::SocketAddr,
    name: &str,
) -> Vec<JoinHandle<Result<AgentExit, AgentError>>> {
    (0..n)
        .map(|i| {
            let config = AgentConfig {
                coordinator: addr.to_string(),
                agent_id: format!("{name}-{i}"),
                connect_timeout: Duration::from_secs(10),
                token: None,
                allow: Default::default(),
                tls: None,
                memory_limit: None,
            };
            tokio::spawn(bandsync_agent::run(config, CancellationToken::new()))
        })
        .collect()
}

/// A field of `INFO stats`, e.g. `total_commands_processed`.
pub async fn info_stat(con: &mut MultiplexedConnection, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query_async(con).await.unwrap();
    let prefix = format!("{field}:");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub async fn connect(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// A redis-server the test owns, with a key the suite did not create (`sentinel`), for tests
/// that drive the binaries from synchronous code.
pub struct OwnedRedis {
    pub rt: tokio::runtime::Runtime,
    pub server: RedisServer,
    pub con: MultiplexedConnection,
}

impl OwnedRedis {
    pub fn start() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt.block_on(RedisServer::start()).unwrap();
        let mut con = rt.block_on(connect(&server));
        rt.block_on(
            redis::cmd("SET")
                .arg("sentinel")
                .arg("untouched")
                .query_async::<()>(&mut con),
        )
        .unwrap();
        Self { rt, server, con }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The key outside the suite's prefix is exactly as it was.
    pub fn assert_sentinel_untouched(&mut self) {
        let v: String = self
            .rt
            .block_on(redis::cmd("GET").arg("sentinel").query_async(&mut self.con))
            .unwrap();
        assert_eq!(v, "untouched");
    }

    /// Keys under `prefix` (SCAN, as the suite does).
    pub fn keys_under(&mut self, prefix: &str) -> usize {
        let (_, keys): (u64, Vec<String>) = self
            .rt
            .block_on(
                redis::cmd("SCAN")
                    .arg(0)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(100_000)
                    .query_async(&mut self.con),
            )
            .unwrap();
        keys.len()
    }

    pub fn stat(&mut self, field: &str) -> u64 {
        self.rt.block_on(info_stat(&mut self.con, field))
    }

    pub fn dbsize(&mut self) -> u64 {
        self.rt
            .block_on(redis::cmd("DBSIZE").query_async(&mut self.con))
            .unwrap()
    }
}

/// The child's stderr, line by line, read on a thread.
pub fn stderr_lines(child: &mut Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("stderr piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        // Keep draining after the receiver is gone: a closed pipe would fail the child's writes.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Reads lines until one satisfies `pred`; returns every line read, that one last.
pub fn wait_for_line(lines: &Receiver<String>, within: Duration, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) => {
                let hit = pred(&l);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no matching line within {within:?}; read:\n{}", seen.join("\n")),
        }
    }
}

/// The coordinator's progress log for step `long` (the load is running on the agents).
pub fn long_step_running(line: &str) -> bool {
    line.contains("progress") && line.contains("step=long")
}

/// The coordinator scheduled step `long`.
pub fn long_step_scheduled(line: &str) -> bool {
    line.contains("step scheduled") && line.contains("step=long")
}

/// `n` in-process bandsync-server instances sharing `redis_url`; cancelled on drop of the guard.
pub struct Servers {
    pub urls: Vec<String>,
    stop: CancellationToken,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub async fn start_servers(redis_url: &str, n: usize) -> Servers {
    start_servers_with(redis_url, n, |_, _| {}).await
}

/// `n` reference servers on `redis_url`, each configured by `configure(i, &mut config)`.
pub async fn start_servers_with(
    redis_url: &str,
    n: usize,
    configure: impl Fn(usize, &mut bandsync_server::ServerConfig),
) -> Servers {
    let stop = CancellationToken::new();
    let mut urls = Vec::new();
    for i in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}", listener.local_addr().unwrap()));
        let mut cfg = bandsync_server::ServerConfig::new(format!("test-{i}"), redis_url, "bandsync-test-server");
        configure(i, &mut cfg);
        tokio::spawn(bandsync_server::serve(cfg, listener, stop.clone()));
    }
    // Ready when each answers a TCP connection (the health loop finds Redis within 250 ms).
    for u in &urls {
        let addr = u.trim_start_matches("http://").to_owned();
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Servers { urls, stop }
}

/// The report of the plan's step of `kind` (the first one).
pub fn step_of<'a>(report: &'a bandsync_common::report::Report, kind: &str) -> &'a bandsync_common::report::StepReport {
    report
        .steps
        .iter()
        .find(|s| s.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} step: {:#?}", report.steps))
}

/// Runs `plan` with `agents` in-process agents named after `name` and returns the report.
pub async fn run_plan(
    plan: &bandsync_common::plan::Plan,
    agents: usize,
    name: &str,
) -> bandsync_common::report::Report {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handles = spawn_agents(agents, listener.local_addr().unwrap(), name);
    let report = bandsync_coordinator::run(
        plan,
        listener,
        &bandsync_coordinator::RunConfig::agents(agents as u32),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    for a in handles {
        a.await.unwrap().unwrap();
    }
    report
}
