//! `demo-axum`: the axum catalog, configured from the environment (see `demo_axum::Config`).
//! Stops gracefully on SIGINT or SIGTERM.

use std::{io::IsTerminal, process::ExitCode};

use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match demo_axum::Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("demo-axum: {e}");
            return ExitCode::FAILURE;
        }
    };
    let running = match demo_axum::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("demo-axum: {e}");
            return ExitCode::FAILURE;
        }
    };
    stop_signal().await;
    tracing::info!("stopping: finishing requests in flight");
    match running.stop().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-axum: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGINT or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
