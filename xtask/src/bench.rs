//! `cargo xtask bench [--redis] [--jwt] <scenario> [ARGS...]`: builds `roster` and
//! `roster-bench` in release, starts a private `roster` on a free loopback port (and, with
//! `--redis`, a private `redis-server` behind it; with `--jwt`, authentication on and every
//! client bringing its own token), runs one `roster-bench` scenario against it with the
//! server's pid for CPU and memory readings, and stops both. ARGS go to `roster-bench`
//! (`cargo xtask bench steady --help` lists them).
//!
//! `cargo xtask bench compare --other '<command>' [--redis] <scenario> [ARGS...]` runs the
//! same scenario twice, one after the other: against `roster`, then against the server that
//! `<command>` starts (run by `sh -c`, with `PORT`, `HOST=127.0.0.1` and, with `--redis`,
//! `REDIS_URL` of its own fresh `redis-server`; ready when `GET /healthz` answers 200), and
//! prints both rows and their ratio. The server CPU per ack of each comes from its own pid,
//! and with `--redis` each run's `redis-server` CPU per ack too.
//!
//! The server runs as documented in docs/benchmarks.md: per-socket rate limit off (the load
//! generator is the only client), socket cap just under this machine's open-file limit,
//! an admin token for the `swap` scenario. Variables already in the environment (for
//! example `ROSTER_PROFILER=perfmap`) reach it unchanged.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token of the benchmark server (loopback only, for the `swap` scenario).
const ADMIN_TOKEN: &str = "roster-bench-admin-token";

/// The HMAC key of the benchmark server with `--jwt` (loopback only).
const JWT_SECRET: &str = "roster-bench-jwt-secret-0123456789abcdef";

/// `roster-bench`'s scenarios.
const SCENARIOS: [&str; 8] = [
    "steady",
    "search",
    "big-room",
    "idle",
    "join-storm",
    "metadata",
    "messages",
    "swap",
];

/// Sockets the benchmark server accepts: the open-file limit here is 20,000 per process.
const MAX_SOCKETS: &str = "19900";

pub fn bench(root: &Path, args: &[String]) -> Result<(), String> {
    let mut redis = false;
    let mut jwt = false;
    let mut other = None;
    let mut forwarded = Vec::new();
    let mut args = args.iter();
    let compare = args.as_slice().first().is_some_and(|a| a == "compare");
    if compare {
        args.next();
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--redis" => redis = true,
            "--jwt" => jwt = true,
            "--other" if compare => other = args.next().cloned(),
            _ => forwarded.push(arg.clone()),
        }
    }
    // Options may come before the scenario (`--transport socketio idle`).
    let Some(scenario) = forwarded
        .iter()
        .find(|arg| SCENARIOS.contains(&arg.as_str()))
        .cloned()
    else {
        return Err(format!(
            "usage: cargo xtask bench [compare --other '<command>'] [--redis] [--jwt] [OPTIONS] <{}> [ARGS...]",
            SCENARIOS.join(" | ")
        ));
    };
    if compare && other.is_none() {
        return Err("compare needs --other '<command that starts the other server>'".into());
    }
    crate::cargo(
        root,
        &[
            "build",
            "--release",
            "--locked",
            "--package",
            "roster-host",
            "--bin",
            "roster",
            "--package",
            "roster-bench",
            "--bin",
            "roster-bench",
        ],
        &[],
    )?;
    let release = target_dir(root).join("release");
    if forwarded.iter().any(|a| a == "--help" || a == "-h") {
        return crate::run(Command::new(release.join("roster-bench")).args(&forwarded));
    }
    if scenario == "swap" {
        let built = xtask::build_wasm(
            root,
            &xtask::wasm_target_dir(root),
            &["roster-presence", "roster-fixture-presence-v2"],
        )?;
        forwarded.push("--components".into());
        forwarded.extend(built.iter().map(|p| p.display().to_string()));
    }
    let roster_rows = run_against_roster(&release, redis, jwt, &forwarded)?;
    let Some(other) = other else {
        return Ok(());
    };
    let other_rows = run_against_other(&release, &other, redis, &forwarded)?;
    println!(
        "\n== compare: {scenario} ({} store)",
        if redis { "redis" } else { "embedded" }
    );
    for (name, rows) in [("roster", &roster_rows), ("other", &other_rows)] {
        for row in rows {
            println!("{name:>7}: {row}");
        }
    }
    let key = if scenario == "big-room" {
        "joinsPerSecond"
    } else {
        "acksPerSecond"
    };
    if let (Some(ours), Some(theirs)) = (
        roster_rows.last().and_then(|row| number(row, key)),
        other_rows.last().and_then(|row| number(row, key)),
    ) && theirs > 0.0
    {
        println!("  {key}: roster / other = {:.2}", ours / theirs);
    }
    for key in ["serverUsPerAck", "storeUsPerAck", "serverUsPerDelivery"] {
        if let (Some(ours), Some(theirs)) = (
            roster_rows.last().and_then(|row| number(row, key)),
            other_rows.last().and_then(|row| number(row, key)),
        ) && ours > 0.0
        {
            println!("  {key}: other / roster = {:.2}", theirs / ours);
        }
    }
    Ok(())
}

/// Runs the scenario against a private `roster`; returns its `ROW` lines.
fn run_against_roster(
    release: &Path,
    redis: bool,
    jwt: bool,
    forwarded: &[String],
) -> Result<Vec<String>, String> {
    let redis_server = if redis { Some(Redis::start()?) } else { None };
    let port = free_port()?;
    let mut server = Command::new(release.join("roster"));
    server
        .env("PORT", port.to_string())
        .env("ROSTER_HOST", "127.0.0.1")
        .env("ROSTER_RATE_LIMIT", "0")
        .env("ROSTER_MAX_SOCKETS", MAX_SOCKETS)
        .env("ROSTER_ADMIN_TOKEN", ADMIN_TOKEN)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null());
    if let Some(redis) = &redis_server {
        server.env("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port));
    }
    if jwt {
        server.env("ROSTER_JWT_SECRET", JWT_SECRET);
    }
    let mut server = Process::spawn(server, "roster")?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_ready(address, &mut server, "/readyz")?;
    println!(
        "roster {} on {address} ({} store, {}), pid {}",
        env!("CARGO_PKG_VERSION"),
        if redis { "redis" } else { "embedded" },
        if jwt { "JWT" } else { "open" },
        server.pid()
    );
    let mut bench = bench_command(release, forwarded, address, &server, redis_server.as_ref());
    bench.env("ROSTER_ADMIN_TOKEN", ADMIN_TOKEN);
    if jwt {
        bench.env("ROSTER_JWT_SECRET", JWT_SECRET);
    }
    let outcome = run_collecting_rows(&mut bench);
    drop(server);
    drop(redis_server);
    outcome
}

/// Runs the scenario against the server `command` starts; returns its `ROW` lines.
fn run_against_other(
    release: &Path,
    command: &str,
    redis: bool,
    forwarded: &[String],
) -> Result<Vec<String>, String> {
    let redis_server = if redis { Some(Redis::start()?) } else { None };
    let port = free_port()?;
    let mut server = Command::new("sh");
    // `exec`: the pid is the server's own, not a shell's, for its CPU readings.
    server
        .arg("-c")
        .arg(format!("exec {command}"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .stdin(Stdio::null());
    if let Some(redis) = &redis_server {
        server.env("REDIS_URL", format!("redis://127.0.0.1:{}", redis.port));
    }
    let mut server = Process::spawn(server, "the other server")?;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_ready(address, &mut server, "/healthz")?;
    println!(
        "\nthe other server on {address}, pid {}: {command}",
        server.pid()
    );
    let mut bench = bench_command(release, forwarded, address, &server, redis_server.as_ref());
    let outcome = run_collecting_rows(&mut bench);
    drop(server);
    drop(redis_server);
    outcome
}

/// `roster-bench` with the scenario's arguments, against `server` at `address` (its pid
/// and, with Redis, the store's for the CPU readings), without a token of its own.
fn bench_command(
    release: &Path,
    forwarded: &[String],
    address: SocketAddr,
    server: &Process,
    redis: Option<&Redis>,
) -> Command {
    let mut bench = Command::new(release.join("roster-bench"));
    bench
        .args(forwarded)
        .args(["--server", &address.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .env_remove("ROSTER_JWT_SECRET");
    if let Some(redis) = redis {
        bench.args(["--store-pid", &redis.pid().to_string()]);
    }
    bench
}

/// Runs `roster-bench`, echoing its output, and returns its `ROW` lines (without `ROW `).
fn run_collecting_rows(command: &mut Command) -> Result<Vec<String>, String> {
    use std::io::BufRead as _;
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot run {:?}: {error}", command.get_program()))?;
    let mut rows = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            println!("{line}");
            if let Some(row) = line.strip_prefix("ROW ") {
                rows.push(row.to_owned());
            }
        }
    }
    let status = child
        .wait()
        .map_err(|error| format!("roster-bench: {error}"))?;
    if status.success() {
        Ok(rows)
    } else {
        Err(format!("roster-bench failed ({status})"))
    }
}

/// The number after `"key":` in a one-line JSON object (xtask has no JSON parser).
fn number(row: &str, key: &str) -> Option<f64> {
    let at = row.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &row[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("no free port: {error}"))
}

/// Waits for `GET <path>` to answer 200.
fn wait_ready(address: SocketAddr, server: &mut Process, path: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if server.exited() {
            return Err(format!("{} exited during start-up", server.name));
        }
        let ready = TcpStream::connect_timeout(&address, Duration::from_secs(1))
            .and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                stream.write_all(
                    format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                )?;
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply)?;
                Ok(reply.starts_with(b"HTTP/1.1 200"))
            })
            .unwrap_or(false);
        if ready {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "{} on {address} was not ready within 120 s",
        server.name
    ))
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Process {
    child: Child,
    name: &'static str,
}

impl Process {
    fn spawn(mut command: Command, name: &'static str) -> Result<Process, String> {
        command
            .spawn()
            .map(|child| Process { child, name })
            .map_err(|error| format!("cannot start {name}: {error}"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (a graceful drain), then SIGKILL after 15 s.
    fn terminate(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("xtask: {} did not stop within 15 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// A private `redis-server` on a free port, without persistence.
struct Redis {
    port: u16,
    pid: u32,
    dir: PathBuf,
    _process: Process,
}

impl Redis {
    fn start() -> Result<Redis, String> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("roster-bench-redis-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn(command, "redis-server")
            .map_err(|error| format!("{error} (install it: apt-get install redis-server)"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > deadline {
                return Err("redis-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("redis-server on 127.0.0.1:{port}, pid {}", process.pid());
        Ok(Redis {
            port,
            pid: process.pid(),
            dir,
            _process: process,
        })
    }
}

impl Redis {
    fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
