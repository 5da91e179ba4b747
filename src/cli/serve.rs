//! `serve`, `worker` and `migrate`: the long-running processes, and the schema.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::app::{App, Roles};

pub(super) async fn migrate(app: App) -> ExitCode {
    println!("database is up to date");
    finish(app, Ok(())).await
}

pub(super) async fn worker(app: App, shutdown: CancellationToken) -> ExitCode {
    let result = app.worker().run(shutdown).await;
    finish(app, result).await
}

pub(super) async fn serve(
    app: App,
    bind: SocketAddr,
    no_worker: bool,
    shutdown: CancellationToken,
) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("squeeze: cannot listen on {bind} (setting `bind`): {e}.");
            return ExitCode::from(1);
        }
    };
    let roles = Roles {
        scheduler: true,
        worker: !no_worker,
    };
    let result = app.serve(listener, roles, shutdown).await;
    finish(app, result).await
}

/// Closes the database, then says how the process ended.
async fn finish(app: App, result: anyhow::Result<()>) -> ExitCode {
    app.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("squeeze: {e:#}.");
            ExitCode::from(1)
        }
    }
}

/// A token cancelled on SIGTERM or SIGINT.
pub(super) fn on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
}

async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    token.cancel();
}
