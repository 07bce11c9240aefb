//! `bandsync-agent --coordinator HOST:PORT`: joins a coordinator and runs the steps it is sent.

use std::process::ExitCode;
use std::time::Duration;

use bandsync_agent::{AgentConfig, AgentError, AgentExit, ClientTls};
use bandsync_common::say;
use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "bandsync-agent",
    version,
    about = "BandSync load-test agent: joins a coordinator and runs the steps it is sent"
)]
struct Cli {
    /// Coordinator address, `http://host:port` or `host:port`.
    #[arg(long, env = "BANDSYNC_COORDINATOR")]
    coordinator: String,
    /// This agent's name in the report (default: hostname-pid).
    #[arg(long, env = "BANDSYNC_AGENT_ID")]
    agent_id: Option<String>,
    /// Exit when the coordinator goes away, instead of waiting for a coordinator again.
    #[arg(long, env = "BANDSYNC_AGENT_ONCE")]
    once: bool,
    /// Targets this agent may load: host, host:port, CIDR block or `*`; repeatable, or
    /// comma-separated in the environment. Default: this machine only (127.0.0.0/8, ::1,
    /// localhost), so a mistaken plan cannot point the agent at another system.
    #[arg(long = "allow-target", env = "BANDSYNC_ALLOW_TARGET", value_delimiter = ',')]
    allow_target: Vec<String>,
    /// Dial the coordinator over TLS, trusting this CA (PEM); use an https:// coordinator URL.
    #[arg(long, env = "BANDSYNC_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// This agent's certificate (PEM), for a coordinator that requires client certificates.
    #[arg(long, env = "BANDSYNC_TLS_CERT", requires = "tls_key", requires = "tls_ca")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "BANDSYNC_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Verify the coordinator's certificate against this name instead of the URL's host.
    #[arg(long, env = "BANDSYNC_TLS_DOMAIN", requires = "tls_ca")]
    tls_domain: Option<String>,
    /// The coordinator's shared token.
    #[arg(long, env = "BANDSYNC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the shared token from this file (a mounted secret); overrides --token.
    #[arg(long, env = "BANDSYNC_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// How long to keep trying to reach the coordinator, e.g. `60s`.
    #[arg(long, env = "BANDSYNC_CONNECT_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// Most memory a step may plan to use on this agent, in MiB (default: what the host has
    /// available); a step whose share needs more is refused before it allocates anything.
    #[arg(long, env = "BANDSYNC_MEMORY_LIMIT_MIB", value_parser = clap::value_parser!(u64).range(1..))]
    memory_limit_mib: Option<u64>,
    /// Log format on stderr.
    #[arg(long, env = "BANDSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Tokio runtime: `multi-thread` uses every core (for big load hosts); `current-thread` runs
    /// everything on one thread, which costs less CPU per Redis operation and leaves the other
    /// cores to whatever shares the machine (see scripts/bench-redis).
    #[arg(long, env = "BANDSYNC_AGENT_RUNTIME", value_enum, default_value_t = RuntimeFlavor::MultiThread)]
    runtime: RuntimeFlavor,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RuntimeFlavor {
    MultiThread,
    CurrentThread,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    bandsync_common::plan::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    bandsync_common::cli::init_logging(matches!(cli.log_format, LogFormat::Json), "info");
    let agent_id = cli.agent_id.unwrap_or_else(|| {
        format!(
            "{}-{}",
            gethostname::gethostname().to_string_lossy(),
            std::process::id()
        )
    });
    let once = cli.once;
    let token = match bandsync_common::cli::read_token(cli.token.clone(), cli.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            say!("bandsync-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let identity = match (&cli.tls_cert, &cli.tls_key) {
        (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
        _ => None,
    };
    let tls = match cli
        .tls_ca
        .as_deref()
        .map(|ca| ClientTls::from_files(ca, identity, cli.tls_domain.clone()))
    {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            say!("bandsync-agent: TLS: {e}");
            return ExitCode::from(2);
        }
    };
    let allow = if cli.allow_target.is_empty() {
        bandsync_agent::allow::AllowList::default()
    } else {
        match bandsync_agent::allow::AllowList::parse(cli.allow_target.iter().map(String::as_str)) {
            Ok(list) => list,
            Err(e) => {
                say!("bandsync-agent: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let config = AgentConfig {
        coordinator: cli.coordinator,
        agent_id,
        connect_timeout: cli.connect_timeout,
        token,
        allow,
        tls,
        memory_limit: cli.memory_limit_mib.map(|m| m << 20),
    };
    let runtime = match cli.runtime {
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()
    .expect("tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            bandsync_common::cli::wait_for_signal().await;
            signal.cancel();
        });
        loop {
            match bandsync_agent::run(config.clone(), shutdown.clone()).await {
                Ok(AgentExit::Finished) => return 0,
                Ok(AgentExit::Interrupted) => return 130,
                Ok(AgentExit::CoordinatorLost(why)) if once => {
                    say!("bandsync-agent: coordinator lost ({why})");
                    return 3;
                }
                Ok(AgentExit::CoordinatorLost(why)) => {
                    // Load is stopped (`why` says what became of the keys); wait for a
                    // coordinator again (up to --connect-timeout, then exit 3).
                    say!("bandsync-agent: coordinator lost ({why}); waiting for a coordinator");
                }
                Err(
                    e @ (AgentError::Refused(_)
                    | AgentError::InvalidUrl { .. }
                    | AgentError::InvalidToken
                    | AgentError::Tls(_)),
                ) => {
                    say!("bandsync-agent: {e}");
                    return 2;
                }
                Err(e) => {
                    say!("bandsync-agent: {e}");
                    return 3;
                }
            }
        }
    });
    ExitCode::from(code)
}
