//! `bandsync-server`: the reference BandSync server. Prints `listening on ADDR` on stdout once
//! bound (the testbed reads it when it asked for port 0), stops cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use bandsync_server::{ServerConfig, serve};
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "bandsync-server",
    version,
    about = "The reference BandSync server (Socket.IO + Redis)"
)]
struct Cli {
    /// Port to listen on (0: the OS picks one; the address is printed).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Address to bind.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    bind: std::net::IpAddr,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Prefix of every Redis key and channel the server uses.
    #[arg(long, env = "REDIS_PREFIX", default_value = "bandsync")]
    redis_prefix: String,
    /// This instance's name (default: hostname-pid).
    #[arg(long, env = "INSTANCE_ID")]
    instance_id: Option<String>,
    /// Most members one session may hold.
    #[arg(long, env = "MAX_MEMBERS", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    max_members: u32,
    /// Most sessions one connection may join.
    #[arg(long, env = "MAX_SESSIONS_PER_CONNECTION", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_sessions_per_connection: u32,
    /// Silently drop this client event (repeatable), as older servers drop commands they do
    /// not handle: for checking a load tester's diagnosis. Only BandSync's command events.
    #[arg(long = "ignore-event", value_parser = ["join_session", "set_role", "set_tempo", "play", "pause", "seek", "leave_session"])]
    ignore_events: Vec<String>,
    /// The protocol to speak: `bandsync` (BANDSYNC_PROTOCOL.md), or `legacy`, an emulation of
    /// BandSync's older public server (no acks, first joiner leads, 8 members, no
    /// serverTimestamp in snapshots, counter tick positions, no cross-instance rooms; state in
    /// memory only).
    #[arg(long, env = "DIALECT", value_enum, default_value_t = DialectArg::Bandsync)]
    dialect: DialectArg,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DialectArg {
    Bandsync,
    Legacy,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bandsync_common::cli::init_logging(matches!(cli.log_format, LogFormat::Json), "info");
    if cli.redis_prefix.is_empty() || cli.redis_prefix.contains(char::is_whitespace) {
        eprintln!("bandsync-server: --redis-prefix / REDIS_PREFIX must be non-empty without spaces");
        return ExitCode::from(64);
    }
    if let Err(e) = url::Url::parse(&cli.redis_url) {
        eprintln!(
            "bandsync-server: --redis-url / REDIS_URL `{}`: {e}",
            bandsync_common::fmt::redact_url(&cli.redis_url)
        );
        return ExitCode::from(64);
    }
    let instance_id = cli.instance_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let mut cfg = ServerConfig::new(instance_id, cli.redis_url.clone(), cli.redis_prefix.clone());
    cfg.max_members = cli.max_members as usize;
    cfg.max_sessions_per_connection = cli.max_sessions_per_connection as usize;
    cfg.ignore_events = cli.ignore_events.clone();
    cfg.dialect = match cli.dialect {
        DialectArg::Bandsync => bandsync_server::Dialect::Bandsync,
        DialectArg::Legacy => bandsync_server::Dialect::Legacy,
    };

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bandsync-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let addr = SocketAddr::new(cli.bind, cli.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("bandsync-server: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Ok(local) = listener.local_addr() {
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout(), "listening on {local}");
            let _ = std::io::stdout().flush();
        }
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            bandsync_common::cli::wait_for_signal().await;
            signal.cancel();
        });
        match serve(cfg, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bandsync-server: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
