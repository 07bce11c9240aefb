//! `bandsync-coordinator run PLAN`: runs a plan on the agents that join and prints the report.
//! Exit codes: 0 criteria met, 1 a criterion failed, 2 bad plan or usage, 3 run incomplete,
//! 130 interrupted.

use bandsync_common::say;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bandsync_common::report::ReportFiles;
use bandsync_coordinator::progress::ProgressMode;
use bandsync_coordinator::{Launch, ServerTls};
use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(
    name = "bandsync-coordinator",
    version,
    about = "BandSync load-test coordinator: runs a plan on many agents and prints the report"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "BANDSYNC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
// Parsed once at start-up: the size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Run a plan and print the report.
    Run {
        /// The plan file (TOML).
        plan: PathBuf,
        /// Agents to wait for (overrides the plan's [run] agents).
        #[arg(long, env = "BANDSYNC_AGENTS")]
        agents: Option<u32>,
        /// Agent processes to start on this machine (overrides the plan's [testbed] local_agents).
        #[arg(long, env = "BANDSYNC_LOCAL_AGENTS")]
        local_agents: Option<u32>,
        /// Address agents dial (default 0.0.0.0:7700; 127.0.0.1 on a free port for a local-only testbed).
        #[arg(long, env = "BANDSYNC_LISTEN")]
        listen: Option<SocketAddr>,
        /// Redis to load instead of the plan's target (disables the testbed's Redis).
        #[arg(long, env = "BANDSYNC_REDIS_URL")]
        redis_url: Option<String>,
        /// The agent binary for local agents (default: beside this binary, then PATH).
        #[arg(long, env = "BANDSYNC_AGENT_BIN")]
        agent_bin: Option<PathBuf>,
        /// bandsync-server instances to start on this machine, sharing the target Redis
        /// (overrides the plan's [testbed] servers).
        #[arg(long, env = "BANDSYNC_LOCAL_SERVERS")]
        local_servers: Option<u32>,
        /// The server binary for local servers (default: beside this binary, then PATH).
        #[arg(long, env = "BANDSYNC_SERVER_BIN")]
        server_bin: Option<PathBuf>,
        /// A BandSync server to load (http://host:port), repeatable or comma-separated in the
        /// environment; replaces the plan's [target] servers and the testbed's.
        #[arg(long = "server", env = "BANDSYNC_SERVERS", value_delimiter = ',')]
        servers: Vec<String>,
        /// Shared token agents must present (at least 16 characters). Required when listening
        /// beyond loopback; generated for local agents otherwise.
        #[arg(long, env = "BANDSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read the shared token from this file (a mounted secret); overrides --token.
        #[arg(long, env = "BANDSYNC_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Serve the control channel over TLS with this certificate (PEM); needs --tls-key.
        #[arg(long, env = "BANDSYNC_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, env = "BANDSYNC_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require agents to present a certificate signed by this CA (PEM): mutual TLS.
        #[arg(long, env = "BANDSYNC_TLS_CLIENT_CA", requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
        /// Also write the success criteria as JUnit XML to this file (one testcase per criterion).
        #[arg(long, env = "BANDSYNC_JUNIT")]
        junit: Option<PathBuf>,
        /// Also write the report as one self-contained HTML page (charts inline, no fetches).
        #[arg(long, env = "BANDSYNC_HTML")]
        html: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long, env = "BANDSYNC_JSON")]
        json: Option<PathBuf>,
    },
    /// Check a plan file and exit (0 valid, 2 invalid).
    Validate { plan: PathBuf },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // On a terminal, live progress bars replace the info-level log lines (RUST_LOG still wins).
    let json_logs = matches!(cli.log_format, LogFormat::Json);
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && !json_logs;
    bandsync_common::cli::init_logging(json_logs, if tty { "warn" } else { "info" });
    match cli.command {
        Command::Validate { plan } => match bandsync_common::plan::load(&plan) {
            Ok(p) => {
                println!(
                    "{}: valid plan `{}` with {} step(s)",
                    plan.display(),
                    p.name,
                    p.steps.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                say!("bandsync-coordinator: invalid plan: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            plan,
            agents,
            local_agents,
            listen,
            redis_url,
            agent_bin,
            local_servers,
            server_bin,
            servers,
            token,
            token_file,
            tls_cert,
            tls_key,
            tls_client_ca,
            junit,
            html,
            json,
        } => {
            // The plan and every file named on the command line are read before anything starts.
            let plan = match bandsync_common::plan::load_with(&plan, redis_url.is_some()) {
                Ok(p) => p,
                Err(e) => {
                    say!("bandsync-coordinator: invalid plan: {e}");
                    return ExitCode::from(2);
                }
            };
            let files = (|| {
                let token = bandsync_common::cli::read_token(token, token_file.as_deref())?;
                let tls = match (&tls_cert, &tls_key) {
                    (Some(cert), Some(key)) => Some(ServerTls::from_files(cert, key, tls_client_ca.as_deref())?),
                    _ => None,
                };
                Ok::<_, String>((token, tls))
            })();
            let (token, tls) = match files {
                Ok(f) => f,
                Err(e) => {
                    say!("bandsync-coordinator: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = Launch {
                listen,
                agents,
                local_agents,
                redis_url,
                agent_bin,
                local_servers,
                server_bin,
                servers,
                token,
                tls,
                progress: if tty { ProgressMode::Bar } else { ProgressMode::Log },
                hurry: CancellationToken::new(),
            };
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            ExitCode::from(runtime.block_on(run(plan, opts, ReportFiles { json, junit, html })))
        }
    }
}

async fn run(plan: bandsync_common::plan::Plan, opts: Launch, files: ReportFiles) -> u8 {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    let hurry = opts.hurry.clone();
    tokio::spawn(async move {
        bandsync_common::cli::wait_for_signal().await;
        say!(
            "bandsync-coordinator: interrupted; stopping the agents and writing a partial report (interrupt again to skip waiting for their cleanup)"
        );
        signal.cancel();
        bandsync_common::cli::wait_for_signal().await;
        say!(
            "bandsync-coordinator: interrupted again; not waiting for cleanup: keys under the run prefix may be left (the report says so)"
        );
        hurry.cancel();
    });
    match bandsync_coordinator::launch(plan, opts, shutdown).await {
        Ok(report) => {
            print!("{}", bandsync_common::report::render_text(&report));
            if let Err(e) = report.write_files(&files) {
                say!("bandsync-coordinator: {e}");
                return 3;
            }
            report.exit_code() as u8
        }
        Err(e) => {
            say!("bandsync-coordinator: {e}");
            e.exit_code()
        }
    }
}
