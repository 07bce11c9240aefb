//! The local testbed: a private `redis-server` on a free loopback port and agent processes on
//! this machine, all stopped when dropped (also on Ctrl-C, since the run returns first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bandsync_common::workloads::band::MAX_MEMBERS_PER_SESSION;
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    #[error("`{0}` was not found in PATH: install it (Debian: apt-get install -y redis-server)")]
    NotFound(String),
    #[error("could not start {what}: {reason}")]
    Start { what: String, reason: String },
}

/// A `redis-server` owned by this process: no persistence, loopback only, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` from PATH on a port the OS picked, and waits until it answers PING.
    pub async fn start() -> Result<Self, TestbedError> {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| start_err("redis-server", e))?;
            let port = free_port().map_err(|e| start_err("redis-server", e))?;
            let child = spawn_redis(port, dir.path())?;
            let mut server = RedisServer { child, port, _dir: dir };
            match server.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => {
                    info!(port, "testbed redis-server started");
                    return Ok(server);
                }
                Err(e) => {
                    last = server.failure(e);
                    // Dropping kills it; another port is tried (the one picked may have been taken).
                }
            }
        }
        Err(TestbedError::Start {
            what: "redis-server".into(),
            reason: last,
        })
    }

    /// The server's process id (for tests that stop it with signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (SIGKILL): an outage, as a crash or a network cut looks to its clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new, empty server on the same port (after `kill`): Redis restarted without data.
    pub async fn restart(&mut self) -> Result<(), TestbedError> {
        self.kill();
        self.forget_data();
        self.start_again().await
    }

    /// Deletes the RDB file a `SAVE` left, so the next start is empty.
    pub fn forget_data(&self) {
        let _ = std::fs::remove_file(self._dir.path().join("dump.rdb"));
    }

    /// Starts the server again on its port (after `kill`), loading the RDB file if a `SAVE` left
    /// one (persistence) and it was not forgotten.
    pub async fn start_again(&mut self) -> Result<(), TestbedError> {
        let mut last = String::new();
        for _ in 0..20 {
            self.child = spawn_redis(self.port, self._dir.path())?;
            match self.wait_ready(Duration::from_secs(5)).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = self.failure(e);
                    self.kill();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(TestbedError::Start {
            what: format!("redis-server again on port {}", self.port),
            reason: last,
        })
    }

    fn failure(&self, e: String) -> String {
        let log = self._dir.path().join("redis.log");
        format!(
            "{e}; log: {}",
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or("")
        )
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited with {status}"));
            }
            if let Ok(client) = redis::Client::open(self.url())
                && let Ok(mut con) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut con).await.is_ok()
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err("redis-server did not answer PING in time".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_redis(port: u16, dir: &Path) -> Result<Child, TestbedError> {
    let bin = find_in_path("redis-server").ok_or_else(|| TestbedError::NotFound("redis-server".into()))?;
    Command::new(&bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--maxmemory", "256mb", "--maxmemory-policy", "noeviction"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| start_err("redis-server", e))
}

/// Agent processes started by the testbed, killed on drop if still running.
#[derive(Debug, Default)]
pub struct LocalAgents {
    children: Vec<Child>,
}

impl LocalAgents {
    pub fn spawn(
        count: u32,
        coordinator_url: &str,
        agent_bin: &Path,
        token: Option<&str>,
    ) -> Result<Self, TestbedError> {
        let mut agents = LocalAgents::default();
        for i in 0..count {
            let mut cmd = Command::new(agent_bin);
            if let Some(t) = token {
                // By environment, not argument: other users of this machine can read arguments.
                cmd.env("BANDSYNC_TOKEN", t);
            }
            let child = cmd
                .args([
                    "--coordinator",
                    coordinator_url,
                    "--agent-id",
                    &format!("local-{i}"),
                    "--connect-timeout",
                    "30s",
                    // A local agent lives and dies with this run.
                    "--once",
                ])
                .env(
                    "RUST_LOG",
                    std::env::var("BANDSYNC_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| TestbedError::Start {
                    what: format!("agent {}", agent_bin.display()),
                    reason: e.to_string(),
                })?;
            agents.children.push(child);
        }
        Ok(agents)
    }

    /// Waits up to `grace` for the agents to exit by themselves (after Finish), then kills the rest.
    pub async fn stop(mut self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if self.children.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for c in &mut self.children {
            if let Ok(None) = c.try_wait() {
                warn!(pid = c.id(), "local agent still running; killing it");
            }
        }
        // Drop kills and reaps.
    }
}

impl Drop for LocalAgents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The agent binary: `explicit`, else `bandsync-agent` beside this executable, else in PATH.
pub fn agent_binary(explicit: Option<&Path>) -> Result<PathBuf, TestbedError> {
    sibling_binary("bandsync-agent", explicit, "--agent-bin")
}

/// The server binary: `explicit`, else `bandsync-server` beside this executable, else in PATH.
pub fn server_binary(explicit: Option<&Path>) -> Result<PathBuf, TestbedError> {
    sibling_binary("bandsync-server", explicit, "--server-bin")
}

fn sibling_binary(name: &str, explicit: Option<&Path>, flag: &str) -> Result<PathBuf, TestbedError> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Ok(exe) = std::env::current_exe() {
        // Beside us; from a test binary in target/debug/deps, one level up.
        for dir in exe.parent().into_iter().chain(exe.parent().and_then(Path::parent)) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    find_in_path(name)
        .ok_or_else(|| TestbedError::NotFound(format!("{name} (build it: cargo build -p {name}, or pass {flag})")))
}

/// `bandsync-server` instances on loopback sharing one Redis: the testbed's cross-instance
/// target. Stopped with SIGTERM (members leave cleanly), killed after a grace period or on drop.
#[derive(Debug, Default)]
pub struct LocalServers {
    children: Vec<Child>,
    urls: Vec<String>,
}

impl LocalServers {
    /// Starts `count` instances on ports the OS picks and waits until each serves `/health`
    /// with Redis reachable.
    pub async fn start(count: u32, bin: &Path, redis_url: &str, redis_prefix: &str) -> Result<Self, TestbedError> {
        use std::io::BufRead as _;
        let mut servers = LocalServers::default();
        for i in 0..count {
            let what = format!("bandsync-server {} (instance {i})", bin.display());
            let mut child = Command::new(bin)
                .args(["--port", "0", "--bind", "127.0.0.1", "--redis-url", redis_url])
                .args(["--redis-prefix", redis_prefix, "--instance-id", &format!("testbed-{i}")])
                .args(["--max-members", &MAX_MEMBERS_PER_SESSION.to_string()])
                .env(
                    "RUST_LOG",
                    std::env::var("BANDSYNC_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| TestbedError::Start {
                    what: what.clone(),
                    reason: e.to_string(),
                })?;
            let stdout = child.stdout.take().expect("piped stdout");
            servers.children.push(child);
            // The first line names the bound address; read it off the runtime's threads.
            let line = tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                std::io::BufReader::new(stdout).read_line(&mut line).map(|_| line)
            });
            let line = match tokio::time::timeout(Duration::from_secs(10), line).await {
                Ok(Ok(Ok(l))) => l,
                _ => {
                    return Err(TestbedError::Start {
                        what,
                        reason: "it did not print its address within 10 s".into(),
                    });
                }
            };
            let Some(addr) = line.trim().strip_prefix("listening on ") else {
                return Err(TestbedError::Start {
                    what,
                    reason: format!("unexpected first line {line:?}"),
                });
            };
            let addr = addr.to_owned();
            wait_healthy(&addr, Duration::from_secs(10))
                .await
                .map_err(|reason| TestbedError::Start { what, reason })?;
            info!(instance = i, %addr, "testbed bandsync-server started");
            servers.urls.push(format!("http://{addr}"));
        }
        Ok(servers)
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// SIGTERM, then up to `grace` for a clean exit; the rest are killed on drop.
    pub async fn stop(self, grace: Duration) {
        for c in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let mut this = self;
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if this.children.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_)))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LocalServers {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `GET /health` until it answers `"status":"ok"` (Redis reachable).
async fn wait_healthy(addr: &str, limit: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + limit;
    let mut last = String::from("no answer");
    while tokio::time::Instant::now() < deadline {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
                .await?;
            let mut body = String::new();
            s.read_to_string(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(body)) if body.contains("\"status\":\"ok\"") => return Ok(()),
            Ok(Ok(body)) => last = body.rsplit("\r\n\r\n").next().unwrap_or("").to_owned(),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("/health did not report ok within {limit:?}: {last}"))
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_err(what: &str, e: std::io::Error) -> TestbedError {
    TestbedError::Start {
        what: what.into(),
        reason: e.to_string(),
    }
}
