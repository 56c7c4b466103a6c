//! `roster`: parses the configuration, sets up logging, binds the port and runs the hub; or,
//! with `roster components ...`, talks to a running hub's admin API.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use roster_host::admin_client::AdminClient;
use roster_host::config::Config;
use tracing_subscriber::EnvFilter;

/// jemalloc (with its background purging threads) rather than glibc's malloc: with glibc a
/// node's RSS stayed at its peak after a flood of sockets closed and crept up with each
/// new one (106, 149, 175 MiB after three floods of 9,000 sockets); with jemalloc it falls
/// back within seconds and stays level (63, 68, 65 MiB). See docs/deployment.md, "Memory".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: a realtime presence hub",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Manage the components of a running hub through its admin API.
    Components {
        /// The hub.
        #[arg(
            long,
            env = "ROSTER_ADMIN_URL",
            default_value = "http://127.0.0.1:3000"
        )]
        url: String,
        /// The hub's admin token.
        #[arg(long, env = "ROSTER_ADMIN_TOKEN", hide_env_values = true)]
        token: String,
        #[command(subcommand)]
        action: Action,
    },
}

#[derive(Subcommand)]
enum Action {
    /// Lists each slot's versions, calls, failures, limits and recent swaps.
    List,
    /// Uploads a component and swaps it in (compiled, type-checked and tried first).
    Swap {
        /// presence, metadata or reaper.
        slot: String,
        /// The component (.wasm).
        file: std::path::PathBuf,
    },
    /// Restores a slot's previous version.
    Rollback {
        /// presence, metadata or reaper.
        slot: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Some(Command::Components { url, token, action }) => admin(&url, &token, action).await,
        None => serve(cli.config).await,
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Refused before "listening" is logged: a misconfigured node never looks started.
    config.validate().context("invalid configuration")?;
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

async fn admin(url: &str, token: &str, action: Action) -> anyhow::Result<()> {
    let client = AdminClient::new(url, token)?;
    let reply = match action {
        Action::List => client.list().await?,
        Action::Swap { slot, file } => {
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            client.swap(&slot, &component).await?
        }
        Action::Rollback { slot } => client.rollback(&slot).await?,
    };
    let pretty = serde_json::from_str::<serde_json::Value>(&reply)
        .and_then(|value| serde_json::to_string_pretty(&value))
        .unwrap_or(reply);
    println!("{pretty}");
    Ok(())
}
