//! The local testbed: a private `redis-server` on a free loopback port and agent processes on
//! this machine, all stopped when dropped (also on Ctrl-C, since the run returns first).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
        let bin = find_in_path("redis-server").ok_or_else(|| TestbedError::NotFound("redis-server".into()))?;
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().map_err(|e| start_err("redis-server", e))?;
            let port = free_port().map_err(|e| start_err("redis-server", e))?;
            let log = dir.path().join("redis.log");
            let child = Command::new(&bin)
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
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| start_err("redis-server", e))?;
            let mut server = RedisServer { child, port, _dir: dir };
            match server.wait_ready(Duration::from_secs(10)).await {
                Ok(()) => {
                    info!(port, "testbed redis-server started");
                    return Ok(server);
                }
                Err(e) => {
                    last = format!(
                        "{e}; log: {}",
                        std::fs::read_to_string(&log)
                            .unwrap_or_default()
                            .lines()
                            .last()
                            .unwrap_or("")
                    );
                    // Dropping kills it; another port is tried (the one picked may have been taken).
                }
            }
        }
        Err(TestbedError::Start {
            what: "redis-server".into(),
            reason: last,
        })
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
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Ok(exe) = std::env::current_exe() {
        // Beside us; from a test binary in target/debug/deps, one level up.
        for dir in exe.parent().into_iter().chain(exe.parent().and_then(Path::parent)) {
            let candidate = dir.join("bandsync-agent");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    find_in_path("bandsync-agent").ok_or_else(|| {
        TestbedError::NotFound("bandsync-agent (build it: cargo build -p bandsync-agent, or pass --agent-bin)".into())
    })
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
