//! `demo-app`: the catalog service, configured from the environment (see `demo_app::Config`).
//! Stops gracefully on SIGINT or SIGTERM.

use std::{io::IsTerminal, process::ExitCode};

use tracing_subscriber::EnvFilter;

#[actix_web::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match demo_app::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-app: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match demo_app::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-app: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    match running.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-app: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `error: cause: cause…` on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
