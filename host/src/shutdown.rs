//! Graceful shutdown.
//!
//! On SIGINT or SIGTERM the node asks every socket to close (each announces its `leave`;
//! `/ws` sockets then get a Close frame with code 1001), waits for them up to the grace
//! period, closes the Socket.IO transports, and then lets axum finish the HTTP requests in
//! flight. axum's graceful shutdown does not wait for upgraded sockets
//! (tokio-rs/axum#3003), so sockets are tracked separately; and it would wait for a
//! Socket.IO long-poll until its transport closes, so the drain runs first.

use std::time::Duration;

use crate::hub::Hub;
use crate::transport::socketio::Transports;

/// Listens for SIGINT (Ctrl-C) and SIGTERM from the moment it is called (a signal that
/// arrives while the node is still starting is not lost); the future resolves on the first.
pub fn signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
                _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                tracing::info!("Ctrl-C received; shutting down");
            }
        })
    }
}

/// Closes every socket (each leaves first) and waits for their tasks, then closes the
/// Socket.IO transports; at most `grace` for each step.
pub async fn drain(hub: &Hub, socketio: &Transports, grace: Duration) {
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
        tracing::info!(sockets = open, "every socket left and closed");
    }
    // Every session has left: drop the Socket.IO transports, which clients treat as a lost
    // connection and reconnect (to another node).
    socketio.close_all();
    let closed = async {
        while socketio.open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(grace, closed).await.is_err() {
        tracing::warn!(
            ?grace,
            open = socketio.open(),
            "the Socket.IO transports did not close within the grace period"
        );
    }
}
