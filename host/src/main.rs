//! `roster`: parses the configuration, sets up logging, binds the port and runs the hub.

use anyhow::Context as _;
use clap::Parser as _;
use roster_host::config::Config;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let shutdown = roster_host::shutdown::signal().context("listening for SIGINT and SIGTERM")?;
    let address = (config.host, config.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    tracing::info!(
        address = %listener.local_addr().context("reading the bound address")?,
        "roster listening"
    );
    roster_host::run(listener, config, shutdown)
        .await
        .context("roster stopped with an error")
}
