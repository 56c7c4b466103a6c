//! Graceful shutdown.
//!
//! On SIGINT or SIGTERM the node stops accepting connections, asks every socket to close
//! (each announces its `leave`, then sends a Close frame with code 1001), and waits for
//! them up to the grace period. axum's graceful shutdown does not wait for upgraded
//! sockets (tokio-rs/axum#3003), so sockets are tracked separately.

use std::time::Duration;

use crate::hub::Hub;

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = terminate => tracing::info!("SIGTERM received; shutting down"),
    }
}

/// Closes every socket and waits for their tasks, at most `grace`.
pub async fn drain_sockets(hub: &Hub, grace: Duration) {
    hub.shutdown_token().cancel();
    let tasks = hub.socket_tasks();
    tasks.close();
    let open = tasks.len();
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            open,
            ?grace,
            "some sockets did not close within the grace period"
        );
    } else if open > 0 {
        tracing::info!(sockets = open, "closed every socket");
    }
}
