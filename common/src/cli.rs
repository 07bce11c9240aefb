//! What the three binaries share: logging set-up, waiting for SIGINT/SIGTERM, and reading a
//! token file. (Feature `cli`.)

use std::path::Path;

/// `eprintln!` that cannot panic: a closed stderr (a reader that went away) must not kill a run
/// that is stopping its load or writing its report.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Logs to stderr, as text or JSON; `RUST_LOG` wins over `default_filter`.
pub fn init_logging(json: bool, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(!json && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Returns on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// `--token-file` wins over `--token`; the file's surrounding whitespace is ignored.
pub fn read_token(token: Option<String>, file: Option<&Path>) -> Result<Option<String>, String> {
    match file {
        Some(f) => crate::files::read_text(f, crate::files::SECRET_LIMIT)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| format!("--token-file {}: {e}", f.display())),
        None => Ok(token),
    }
}

/// A PEM file named by `flag`, bounded in size.
pub fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    crate::files::read_bounded(path, crate::files::SECRET_LIMIT).map_err(|e| format!("{flag} {}: {e}", path.display()))
}
