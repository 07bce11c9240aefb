//! `bandsync-coordinator run PLAN`: runs a plan on the agents that join and prints the report.
//! Exit codes: 0 criteria met, 1 a criterion failed, 2 bad plan or usage, 3 run incomplete,
//! 130 interrupted.

/// `eprintln!` that cannot panic: a closed stderr (a reader that went away) must not kill a run
/// that is stopping its load or writing its report.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bandsync_coordinator::Launch;
use bandsync_coordinator::progress::ProgressMode;
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
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr()) && matches!(cli.log_format, LogFormat::Text);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| if tty { "warn".into() } else { "info".into() });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
            // The plan is checked before anything starts.
            let plan = match bandsync_common::plan::load(&plan) {
                Ok(p) => p,
                Err(e) => {
                    say!("bandsync-coordinator: invalid plan: {e}");
                    return ExitCode::from(2);
                }
            };
            let token = match read_token(token, token_file.as_deref()) {
                Ok(t) => t,
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
                tls: None,
                progress: if tty { ProgressMode::Bar } else { ProgressMode::Log },
            };
            let mut opts = opts;
            if let (Some(cert), Some(key)) = (&tls_cert, &tls_key) {
                let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
                let tls = (|| {
                    Ok::<_, String>(bandsync_coordinator::ServerTls {
                        cert_pem: read(cert)?,
                        key_pem: read(key)?,
                        client_ca_pem: tls_client_ca.as_ref().map(read).transpose()?,
                    })
                })();
                match tls {
                    Ok(t) => opts.tls = Some(t),
                    Err(e) => {
                        say!("bandsync-coordinator: TLS: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
            ExitCode::from(runtime.block_on(run(plan, opts, Outputs { json, junit, html })))
        }
    }
}

/// Report files besides the text on stdout.
struct Outputs {
    json: Option<PathBuf>,
    junit: Option<PathBuf>,
    html: Option<PathBuf>,
}

async fn run(plan: bandsync_common::plan::Plan, opts: Launch, outputs: Outputs) -> u8 {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        say!("bandsync-coordinator: interrupted; stopping the agents and writing a partial report");
        signal.cancel();
    });
    match bandsync_coordinator::launch(plan, opts, shutdown).await {
        Ok(report) => {
            print!("{}", bandsync_common::report::render_text(&report));
            let files = [
                (
                    outputs.json,
                    serde_json::to_string_pretty(&report).expect("report serializes") + "\n",
                ),
                (outputs.junit, bandsync_common::report::render_junit(&report)),
                (outputs.html, bandsync_common::html::render_html(&report)),
            ];
            for (path, content) in files {
                if let Some(path) = path
                    && let Err(e) = std::fs::write(&path, content)
                {
                    say!("bandsync-coordinator: cannot write {}: {e}", path.display());
                    return 3;
                }
            }
            report.exit_code() as u8
        }
        Err(e) => {
            say!("bandsync-coordinator: {e}");
            e.exit_code()
        }
    }
}

/// `--token-file` wins over `--token`; the file's surrounding whitespace is ignored.
fn read_token(token: Option<String>, file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    match file {
        Some(f) => std::fs::read_to_string(f)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| format!("--token-file {}: {e}", f.display())),
        None => Ok(token),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
