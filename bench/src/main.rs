//! `roster-bench`: a native load generator for Roster (or any server speaking its protocol
//! over `/ws` or Socket.IO v4). Loopback only, bounded in time and count.
//!
//! Scenarios (`roster-bench <scenario> --help`; `cargo xtask bench <scenario>` starts a
//! release `roster` and runs one against it):
//! - `steady`: N clients in R rooms heart-beat at a rate, a fraction with a state patch;
//! - `search`: raises the load step by step until the ack p99 passes a bound;
//! - `big-room`: M members in one room; one member's updates fan out to all;
//! - `idle`: many joined, silent connections; the server's memory per connection;
//! - `join-storm`: clients join as fast as the server takes them;
//! - `metadata`: writers race compare-and-set updates of one channel;
//! - `messages`: publishers publish to one channel as fast as their acks come back; every
//!   subscriber's deliveries are counted and timed (publish to push);
//! - `swap`: steady load while the presence component is swapped every second.
//!
//! Reports joins/s, acks/s, ack and fan-out latency (p50/p95/p99/max), errors, and the
//! server's CPU and RSS (from `/proc/<pid>`, given `--server-pid`).

mod client;
mod stats;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use client::{Client, OnEvent, Transport};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use stats::{
    ProcSample, cpu_percent, cpu_seconds, histogram, micros, micros_per, p99_ms, record, sample,
    summary,
};

#[derive(Parser)]
#[command(name = "roster-bench", about = "Load generator for Roster")]
struct Cli {
    #[command(flatten)]
    target: TargetArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// The server (loopback only).
    #[arg(long, global = true, default_value = "127.0.0.1:3000")]
    server: SocketAddr,
    /// Protocol.
    #[arg(long, global = true, value_enum, default_value = "ws")]
    transport: Transport,
    /// The server's process id, to report its CPU and memory.
    #[arg(long, global = true)]
    server_pid: Option<u32>,
    /// The store's process id (`redis-server`), to report its CPU per ack too.
    #[arg(long, global = true)]
    store_pid: Option<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1 .. 127.0.0.N), for
    /// more connections than one address has ports.
    #[arg(long, global = true, default_value_t = 1)]
    sources: u8,
    /// Connections opened (and joined) at once.
    #[arg(long, global = true, default_value_t = 256)]
    connect_concurrency: usize,
    /// The server's HMAC key: each client then connects with its own HS256 token (its
    /// user as `sub`, one hour), signed before it connects, as a backend would.
    #[arg(long, global = true, env = "ROSTER_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

/// An HS256 token for `user`, valid for an hour.
fn token(secret: &str, user: &str) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 3_600;
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[derive(Subcommand)]
enum Scenario {
    /// Steady heartbeats.
    Steady(LoadArgs),
    /// Raise the load until the ack p99 passes a bound.
    Search {
        #[command(flatten)]
        load: LoadArgs,
        /// First total heartbeat rate (per second) tried.
        #[arg(long, default_value_t = 5_000.0)]
        from: f64,
        /// Each step multiplies the rate by this.
        #[arg(long, default_value_t = 1.4)]
        step: f64,
        /// The p99 bound (ms).
        #[arg(long, default_value_t = 20.0)]
        p99_ms: f64,
    },
    /// One room of many members; one member's updates fan out to all.
    BigRoom {
        /// Members.
        #[arg(long, default_value_t = 1000)]
        members: usize,
        /// Updates sent.
        #[arg(long, default_value_t = 50)]
        updates: usize,
        /// Time between updates (ms).
        #[arg(long, default_value_t = 200)]
        every_ms: u64,
    },
    /// Joined, silent connections; memory per connection.
    Idle {
        /// Connections.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Members per room.
        #[arg(long, default_value_t = 10)]
        room_size: usize,
    },
    /// Join as fast as possible.
    JoinStorm {
        /// Clients.
        #[arg(long, default_value_t = 5_000)]
        clients: usize,
        /// Rooms.
        #[arg(long, default_value_t = 100)]
        rooms: usize,
    },
    /// Writers race compare-and-set updates of one channel.
    Metadata {
        /// Writers.
        #[arg(long, default_value_t = 50)]
        writers: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Publishers race to publish on one channel that many sockets subscribe to.
    Messages {
        /// Subscribers of the channel.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Publishers, each waiting for its ack before the next publish.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Seconds.
        #[arg(long, default_value_t = 10)]
        duration: u64,
    },
    /// Steady load while the presence component is swapped every second.
    Swap {
        #[command(flatten)]
        load: LoadArgs,
        /// Two presence components to alternate.
        #[arg(long, num_args = 2, required = true)]
        components: Vec<std::path::PathBuf>,
        /// The server's admin token.
        #[arg(long, env = "ROSTER_ADMIN_TOKEN")]
        token: String,
    },
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Rooms (clients are spread evenly).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Heartbeats per second per client.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Fraction of heartbeats that carry a state patch (0..1).
    #[arg(long, default_value_t = 0.1)]
    patch: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
}

/// Shared fan-out measurements: the senders put their send time (µs since `start`) in the
/// patch; receivers record the difference.
struct FanOut {
    start: Instant,
    measuring: AtomicBool,
    latency: Mutex<Histogram<u64>>,
}

impl FanOut {
    fn new() -> Arc<Self> {
        Arc::new(FanOut {
            start: Instant::now(),
            measuring: AtomicBool::new(false),
            latency: Mutex::new(histogram()),
        })
    }

    fn now_micros(&self) -> u64 {
        micros(self.start.elapsed())
    }

    fn on_event(self: &Arc<Self>) -> OnEvent {
        let fan = Arc::clone(self);
        Arc::new(move |name: &str, data: &Value| {
            if name != "presence:event" || !fan.measuring.load(Ordering::Relaxed) {
                return;
            }
            if let Some(sent) = data["state"]["t"].as_u64() {
                let now = fan.now_micros();
                if let Ok(mut latency) = fan.latency.lock() {
                    record(&mut latency, now.saturating_sub(sent));
                }
            }
        })
    }
}

/// A joined client.
struct Member {
    client: Client,
    conn_id: String,
}

/// Opens and joins `count` clients, client `i` in `room(i)`; the first failure fails all.
async fn join_fleet(
    target: &TargetArgs,
    count: usize,
    room: impl Fn(usize) -> String,
    on_event: OnEvent,
) -> anyhow::Result<(Vec<Arc<Member>>, Histogram<u64>, Duration)> {
    let (members, latency, took, refused) =
        join_fleet_counting(target, count, room, on_event, false).await?;
    debug_assert!(refused.is_empty());
    Ok((members, latency, took))
}

/// Like [`join_fleet`]; with `tolerate`, clients the server refuses (a full node answers
/// 503, a join may be refused) are counted and returned as errors instead of failing all.
async fn join_fleet_counting(
    target: &TargetArgs,
    count: usize,
    room: impl Fn(usize) -> String,
    on_event: OnEvent,
    tolerate: bool,
) -> anyhow::Result<(Vec<Arc<Member>>, Histogram<u64>, Duration, Vec<String>)> {
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(target.connect_concurrency));
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let permit = Arc::clone(&semaphore).acquire_owned().await?;
        // One source: the kernel picks the port at connect time. Several: each socket binds its
        // source address first (SO_REUSEADDR lets ports linger in TIME_WAIT be reused).
        let source = (target.sources > 1).then(|| {
            IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(target.sources)) as u8,
            ))
        });
        let (server, transport, on_event, room, secret) = (
            target.server,
            target.transport,
            Arc::clone(&on_event),
            room(i),
            target.jwt_secret.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let user = format!("user-{i}");
            let token = secret.map(|secret| token(&secret, &user)).transpose()?;
            let client =
                Client::connect(server, transport, source, token.as_deref(), on_event).await?;
            let sent = Instant::now();
            let ack = client
                .request(
                    "presence:join",
                    json!({"roomId": room, "userId": user, "state": {}}),
                )
                .await?;
            let took = sent.elapsed();
            let conn_id = ack["self"]["connId"]
                .as_str()
                .with_context(|| format!("join refused: {ack}"))?
                .to_owned();
            Ok::<_, anyhow::Error>((Arc::new(Member { client, conn_id }), took))
        }));
    }
    let mut members = Vec::with_capacity(count);
    let mut latency = histogram();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await? {
            Ok((member, took)) => {
                record(&mut latency, micros(took));
                members.push(member);
            }
            Err(error) if tolerate => refused.push(format!("{error:#}")),
            Err(error) => return Err(error),
        }
    }
    Ok((members, latency, started.elapsed(), refused))
}

/// One load run's results.
struct LoadResult {
    target_rate: f64,
    acks: u64,
    errors: u64,
    seconds: f64,
    ack_latency: Histogram<u64>,
    fanout: Histogram<u64>,
    cpu: Option<f64>,
    rss_mib: Option<f64>,
    /// The server's CPU time while measuring (s).
    cpu_seconds: Option<f64>,
    /// The store's CPU time while measuring (s).
    store_cpu_seconds: Option<f64>,
}

impl LoadResult {
    fn acks_per_second(&self) -> f64 {
        self.acks as f64 / self.seconds
    }

    /// The server's CPU per ack and per delivered event, and the store's per ack (µs).
    fn cpu_note(&self) -> String {
        let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} µs"));
        format!(
            "server CPU per ack {} (per delivered event {}); store CPU per ack {}",
            us(micros_per(self.cpu_seconds, self.acks)),
            us(micros_per(self.cpu_seconds, self.fanout.len())),
            us(micros_per(self.store_cpu_seconds, self.acks)),
        )
    }

    /// One machine-readable line (`ROW {json}`), which `cargo xtask bench compare` collects.
    fn row(&self, label: &str) {
        println!(
            "ROW {}",
            json!({
                "label": label,
                "acksPerSecond": self.acks_per_second().round(),
                "p99Ms": p99_ms(&self.ack_latency),
                "errors": self.errors,
                "serverUsPerAck": micros_per(self.cpu_seconds, self.acks),
                "storeUsPerAck": micros_per(self.store_cpu_seconds, self.acks),
                "rssMib": self.rss_mib,
            })
        );
    }

    fn print(&self, label: &str) {
        println!(
            "{label}: target {:.0}/s, achieved {:.0} acks/s, errors {}\n  ack latency: {}\n  fan-out ({} events): {}\n  server: CPU {}, RSS {}",
            self.target_rate,
            self.acks_per_second(),
            self.errors,
            summary(&self.ack_latency),
            self.fanout.len(),
            summary(&self.fanout),
            self.cpu.map_or("-".into(), |c| format!("{c:.0}%")),
            self.rss_mib.map_or("-".into(), |r| format!("{r:.0} MiB")),
        );
        println!("  {}", self.cpu_note());
    }
}

/// Heart-beats `members` at `rate` per client for warmup + duration seconds.
async fn run_load(
    members: &[Arc<Member>],
    load: &LoadArgs,
    rate: f64,
    fan: &Arc<FanOut>,
    pid: Option<u32>,
    store_pid: Option<u32>,
) -> LoadResult {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let warmup = Duration::from_secs(load.warmup);
    let measured = Duration::from_secs(load.duration);
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + measured;
    *fan.latency.lock().unwrap_or_else(|e| e.into_inner()) = histogram();
    let acks = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(members.len());
    for member in members {
        let (member, fan, acks, errors) = (
            Arc::clone(member),
            Arc::clone(fan),
            Arc::clone(&acks),
            Arc::clone(&errors),
        );
        let patch = load.patch;
        tasks.push(tokio::spawn(async move {
            let mut latency = histogram();
            let offset = period.mul_f64(fastrand::f64());
            let mut tick = tokio::time::interval_at((Instant::now() + offset).into(), period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                n += 1;
                let data = if fastrand::f64() < patch {
                    json!({"connId": member.conn_id, "patchState": {"t": fan.now_micros(), "n": n}})
                } else {
                    json!({"connId": member.conn_id})
                };
                let result = member.client.request("presence:heartbeat", data).await;
                let ok = matches!(&result, Ok(ack) if ack["ok"] == json!(true));
                if now >= measure_from && Instant::now() <= end {
                    if ok {
                        acks.fetch_add(1, Ordering::Relaxed);
                        record(&mut latency, micros(now.elapsed()));
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latency
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    fan.measuring.store(true, Ordering::Relaxed);
    let before = pid.and_then(sample);
    let store_before = store_pid.and_then(sample);
    tokio::time::sleep_until(end.into()).await;
    let after = pid.and_then(sample);
    let store_after = store_pid.and_then(sample);
    fan.measuring.store(false, Ordering::Relaxed);
    let mut ack_latency = histogram();
    for task in tasks {
        if let Ok(latency) = task.await {
            let _ = ack_latency.add(&latency);
        }
    }
    let fanout = fan
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    LoadResult {
        target_rate: rate * members.len() as f64,
        acks: acks.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        seconds: measured.as_secs_f64(),
        ack_latency,
        fanout,
        cpu: before.zip(after).map(|(b, a)| cpu_percent(&b, &a)),
        rss_mib: after.map(|a| a.rss_kib as f64 / 1024.0),
        cpu_seconds: before.zip(after).map(|(b, a)| cpu_seconds(&b, &a)),
        store_cpu_seconds: store_before
            .zip(store_after)
            .map(|(b, a)| cpu_seconds(&b, &a)),
    }
}

fn server_note(pid: Option<u32>, before: Option<ProcSample>) -> String {
    match (before, pid.and_then(sample)) {
        (Some(b), Some(a)) => format!(
            "server: CPU {:.0}%, RSS {:.1} -> {:.1} MiB",
            cpu_percent(&b, &a),
            b.rss_kib as f64 / 1024.0,
            a.rss_kib as f64 / 1024.0
        ),
        _ => "server: - (no --server-pid)".into(),
    }
}

/// The value of a counter in the server's `/metrics`, if it has it.
async fn metric(server: SocketAddr, name: &str) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The `messages` scenario.
async fn run_messages(
    target: &TargetArgs,
    subscribers: usize,
    publishers: usize,
    duration: u64,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    const CHANNEL: &str = "bench-messages";
    let start = Instant::now();
    let deliveries = Arc::new(AtomicU64::new(0));
    let latency = Arc::new(Mutex::new(histogram()));
    let measuring = Arc::new(AtomicBool::new(false));
    let on_event: OnEvent = {
        let (deliveries, latency, measuring) = (
            Arc::clone(&deliveries),
            Arc::clone(&latency),
            Arc::clone(&measuring),
        );
        Arc::new(move |name: &str, data: &Value| {
            if name != "message" || !measuring.load(Ordering::Relaxed) {
                return;
            }
            deliveries.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = data["payload"]["t"].as_u64()
                && let Ok(mut latency) = latency.lock()
            {
                record(&mut latency, micros(start.elapsed()).saturating_sub(sent));
            }
        })
    };
    let (members, ..) = join_fleet(
        target,
        subscribers + publishers,
        |_| "bench-messages".into(),
        on_event,
    )
    .await?;
    for member in &members[..subscribers] {
        let ack = member
            .client
            .request("message:subscribe", json!({ "channel": CHANNEL }))
            .await?;
        if ack["ok"] != json!(true) {
            bail!("subscribe refused: {ack}");
        }
    }
    println!("{subscribers} subscribers and {publishers} publishers on one channel");
    let round_trips = metric(target.server, "roster_redis_round_trips_total").await;
    let before = pid.and_then(sample);
    measuring.store(true, Ordering::Relaxed);
    let stop = Instant::now() + Duration::from_secs(duration);
    let mut tasks = Vec::new();
    for member in &members[subscribers..] {
        let member = Arc::clone(member);
        tasks.push(tokio::spawn(async move {
            let mut acks = histogram();
            let mut errors = 0u64;
            while Instant::now() < stop {
                let sent = Instant::now();
                let t = micros(start.elapsed());
                let ack = member
                    .client
                    .request(
                        "message:publish",
                        json!({"channel": CHANNEL, "payload": {"t": t}}),
                    )
                    .await;
                match ack {
                    Ok(ack) if ack["ok"] == json!(true) => {
                        record(&mut acks, micros(sent.elapsed()));
                    }
                    _ => errors += 1,
                }
            }
            (acks, errors)
        }));
    }
    let mut acks = histogram();
    let mut errors = 0;
    for task in tasks {
        let (mine, failed) = task.await?;
        let _ = acks.add(&mine);
        errors += failed;
    }
    let after = pid.and_then(sample);
    let published = acks.len();
    let expected = published * subscribers as u64;
    let waited = Instant::now();
    while deliveries.load(Ordering::Relaxed) < expected && waited.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    measuring.store(false, Ordering::Relaxed);
    let round_trips = match (
        round_trips,
        metric(target.server, "roster_redis_round_trips_total").await,
    ) {
        (Some(a), Some(b)) if published > 0 => format!(
            "{:.2} Redis round trips per publish (reaper and lease included)",
            b.saturating_sub(a) as f64 / published as f64
        ),
        _ => "embedded store".into(),
    };
    let latency = latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| histogram());
    println!(
        "RESULT: {:.0} publishes/s ({published} in {duration} s, {errors} errors), {:.0} deliveries/s; {} of {expected} deliveries\n  delivery latency (publish to push): {}\n  publisher's ack: {}\n  {round_trips}\n  {}",
        published as f64 / duration.max(1) as f64,
        deliveries.load(Ordering::Relaxed) as f64 / duration.max(1) as f64,
        deliveries.load(Ordering::Relaxed),
        summary(&latency),
        summary(&acks),
        match (before, after) {
            (Some(b), Some(a)) => {
                let cpu = cpu_percent(&b, &a);
                format!(
                    "server: CPU {cpu:.0}% while publishing: {:.1} µs of server CPU per publish (its fan-out included), RSS {:.1} MiB",
                    cpu / 100.0 * duration as f64 * 1e6 / published.max(1) as f64,
                    a.rss_kib as f64 / 1024.0
                )
            }
            _ => "server: - (no --server-pid)".into(),
        }
    );
    if deliveries.load(Ordering::Relaxed) != expected || errors > 0 {
        bail!("not every message reached every subscriber once");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let target = cli.target;
    if !target.server.ip().is_loopback() {
        bail!(
            "roster-bench only loads servers on loopback, not {}",
            target.server
        );
    }
    let pid = target.server_pid;
    let store_pid = target.store_pid;
    let rooms_of = |rooms: usize| move |i: usize| format!("room-{}", i % rooms.max(1));
    match cli.scenario {
        Scenario::Steady(load) => {
            let fan = FanOut::new();
            let (members, joins, took) =
                join_fleet(&target, load.clients, rooms_of(load.rooms), fan.on_event()).await?;
            println!(
                "joined {} clients in {} rooms: {:.0} joins/s, join latency {}",
                members.len(),
                load.rooms,
                members.len() as f64 / took.as_secs_f64(),
                summary(&joins)
            );
            let result = run_load(&members, &load, load.rate, &fan, pid, store_pid).await;
            result.print("steady");
            result.row("steady");
        }
        Scenario::Search {
            load,
            from,
            step,
            p99_ms: bound,
        } => {
            let fan = FanOut::new();
            let (members, ..) =
                join_fleet(&target, load.clients, rooms_of(load.rooms), fan.on_event()).await?;
            println!(
                "search: {} clients in {} rooms, p99 bound {bound} ms",
                members.len(),
                load.rooms
            );
            let mut total = from;
            let mut best: Option<LoadResult> = None;
            loop {
                let result = run_load(
                    &members,
                    &load,
                    total / members.len() as f64,
                    &fan,
                    pid,
                    store_pid,
                )
                .await;
                result.print(&format!("step {total:.0}/s"));
                let p99 = p99_ms(&result.ack_latency);
                let achieved = result.acks_per_second();
                if p99 > bound || achieved < total * 0.9 || result.errors > 0 {
                    break;
                }
                best = Some(result);
                total *= step;
            }
            match best {
                Some(best) => {
                    println!(
                        "RESULT: {:.0} heartbeat acks/s with p99 {:.2} ms (< {bound} ms); {}",
                        best.acks_per_second(),
                        p99_ms(&best.ack_latency),
                        best.cpu_note()
                    );
                    best.row("search");
                }
                None => println!("RESULT: even the first step passed the bound"),
            }
        }
        Scenario::BigRoom {
            members: count,
            updates,
            every_ms,
        } => {
            let fan = FanOut::new();
            let before = pid.and_then(sample);
            let (members, joins, took) =
                join_fleet(&target, count, |_| "big-room".into(), fan.on_event()).await?;
            println!(
                "{} members joined one room: {:.0} joins/s, join latency {} (each join also fans out to the room)",
                members.len(),
                members.len() as f64 / took.as_secs_f64(),
                summary(&joins)
            );
            let joins_per_second = members.len() as f64 / took.as_secs_f64();
            tokio::time::sleep(Duration::from_secs(1)).await;
            fan.measuring.store(true, Ordering::Relaxed);
            let updating = pid.and_then(sample);
            let store_updating = store_pid.and_then(sample);
            let sender = &members[0];
            let mut acks = histogram();
            for n in 0..updates {
                let sent = Instant::now();
                let ack = sender
                    .client
                    .request("presence:heartbeat", json!({"connId": sender.conn_id, "patchState": {"t": fan.now_micros(), "n": n}}))
                    .await?;
                if ack["ok"] != json!(true) {
                    bail!("update refused: {ack}");
                }
                record(&mut acks, micros(sent.elapsed()));
                tokio::time::sleep(Duration::from_millis(every_ms)).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            fan.measuring.store(false, Ordering::Relaxed);
            let fanout = fan
                .latency
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| histogram());
            println!(
                "big room: {updates} updates to {} members: {} deliveries (expected {})\n  delivery latency: {}\n  sender's ack: {}\n  {}",
                members.len(),
                fanout.len(),
                updates * members.len(),
                summary(&fanout),
                summary(&acks),
                server_note(pid, before)
            );
            let cpu = updating
                .zip(pid.and_then(sample))
                .map(|(b, a)| cpu_seconds(&b, &a));
            let store_cpu = store_updating
                .zip(store_pid.and_then(sample))
                .map(|(b, a)| cpu_seconds(&b, &a));
            let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2} µs"));
            println!(
                "  while updating: server CPU per delivered event {}, store CPU per update {}",
                us(micros_per(cpu, fanout.len())),
                us(micros_per(store_cpu, updates as u64)),
            );
            println!(
                "ROW {}",
                json!({
                    "label": "big-room",
                    "joinsPerSecond": joins_per_second.round(),
                    "deliveries": fanout.len(),
                    "deliveryP99Ms": p99_ms(&fanout),
                    "serverUsPerDelivery": micros_per(cpu, fanout.len()),
                })
            );
        }
        Scenario::Idle {
            connections,
            room_size,
        } => {
            let baseline = pid.and_then(sample);
            let fan = FanOut::new();
            let rooms = connections.div_ceil(room_size.max(1));
            let (members, _, took, refused) =
                join_fleet_counting(&target, connections, rooms_of(rooms), fan.on_event(), true)
                    .await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = pid.and_then(sample);
            println!(
                "idle: {} joined connections in {rooms} rooms (joined in {:.1} s); {} refused{}",
                members.len(),
                took.as_secs_f64(),
                refused.len(),
                refused
                    .first()
                    .map(|why| format!(" (first: {why})"))
                    .unwrap_or_default()
            );
            if members.is_empty() {
                bail!("the server refused every connection");
            }
            match (baseline, after) {
                (Some(b), Some(a)) => println!(
                    "RESULT: server RSS {:.1} -> {:.1} MiB: {:.2} KiB per connection",
                    b.rss_kib as f64 / 1024.0,
                    a.rss_kib as f64 / 1024.0,
                    a.rss_kib.saturating_sub(b.rss_kib) as f64 / members.len() as f64
                ),
                _ => println!("RESULT: - (give --server-pid to measure memory)"),
            }
        }
        Scenario::JoinStorm { clients, rooms } => {
            let fan = FanOut::new();
            let before = pid.and_then(sample);
            let (members, joins, took) =
                join_fleet(&target, clients, rooms_of(rooms), fan.on_event()).await?;
            println!(
                "RESULT: join storm: {} clients into {rooms} rooms in {:.2} s: {:.0} joins/s (connect + join, {} at once)\n  join latency: {}\n  {}",
                members.len(),
                took.as_secs_f64(),
                members.len() as f64 / took.as_secs_f64(),
                target.connect_concurrency,
                summary(&joins),
                server_note(pid, before)
            );
        }
        Scenario::Metadata { writers, duration } => {
            let fan = FanOut::new();
            let (members, ..) =
                join_fleet(&target, writers, |_| "contended".into(), fan.on_event()).await?;
            let channel = json!({"channelType": "room", "channelName": "contended"});
            let mut set = channel.clone();
            set["items"] = json!([{"key": "counter", "value": "0"}]);
            members[0].client.request("metadata:set", set).await?;
            let end = Instant::now() + Duration::from_secs(duration);
            let before = pid.and_then(sample);
            let (commits, conflicts) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let mut tasks = Vec::new();
            for member in &members {
                let (member, channel, commits, conflicts) = (
                    Arc::clone(member),
                    channel.clone(),
                    Arc::clone(&commits),
                    Arc::clone(&conflicts),
                );
                tasks.push(tokio::spawn(async move {
                    let mut latency = histogram();
                    while Instant::now() < end {
                        let sent = Instant::now();
                        let Ok(got) = member.client.request("metadata:get", channel.clone()).await else { break };
                        let revision = got["items"][0]["revision"].as_u64().unwrap_or(0);
                        let value: u64 = got["items"][0]["value"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let mut update = channel.clone();
                        update["items"] = json!([{"key": "counter", "value": (value + 1).to_string(), "revision": revision}]);
                        let Ok(ack) = member.client.request("metadata:update", update).await else { break };
                        record(&mut latency, micros(sent.elapsed()));
                        if ack["ok"] == json!(true) {
                            commits.fetch_add(1, Ordering::Relaxed);
                        } else {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    latency
                }));
            }
            let mut latency = histogram();
            for task in tasks {
                if let Ok(l) = task.await {
                    let _ = latency.add(&l);
                }
            }
            let got = members[0].client.request("metadata:get", channel).await?;
            let commits = commits.load(Ordering::Relaxed);
            println!(
                "RESULT: {writers} writers, {duration} s: {} commits/s, {} conflicts/s; final counter {} (= commits + 0: no lost update: {})\n  get+update latency: {}\n  {}",
                commits / duration.max(1),
                conflicts.load(Ordering::Relaxed) / duration.max(1),
                got["items"][0]["value"],
                got["items"][0]["value"].as_str() == Some(commits.to_string().as_str()),
                summary(&latency),
                server_note(pid, before)
            );
        }
        Scenario::Messages {
            subscribers,
            publishers,
            duration,
        } => {
            run_messages(&target, subscribers, publishers, duration, pid).await?;
        }
        Scenario::Swap {
            load,
            components,
            token,
        } => {
            let fan = FanOut::new();
            let (members, ..) =
                join_fleet(&target, load.clients, rooms_of(load.rooms), fan.on_event()).await?;
            let bytes: Vec<Vec<u8>> = components
                .iter()
                .map(|path| {
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
                })
                .collect::<Result<_, _>>()?;
            let url = format!("http://{}", target.server);
            let swaps = Arc::new(AtomicU64::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let swapper = {
                let (swaps, stop) = (Arc::clone(&swaps), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut times = histogram();
                    let mut which = 0;
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        which = 1 - which;
                        let started = Instant::now();
                        if swap(&url, &token, &bytes[which]).await.is_ok() {
                            record(&mut times, micros(started.elapsed()));
                            swaps.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    times
                })
            };
            let result = run_load(&members, &load, load.rate, &fan, pid, store_pid).await;
            stop.store(true, Ordering::Relaxed);
            let times = swapper.await?;
            result.print("steady load during swaps");
            println!(
                "RESULT: {} swaps during the run, admin swap round trip {}; failed acks: {}",
                swaps.load(Ordering::Relaxed),
                summary(&times),
                result.errors
            );
        }
    }
    Ok(())
}

/// `PUT /admin/components/presence` over plain HTTP/1.1.
async fn swap(url: &str, token: &str, component: &[u8]) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let head = format!(
        "PUT /admin/components/presence HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        component.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(component).await?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await?;
    if reply.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        bail!("swap refused: {}", String::from_utf8_lossy(&reply))
    }
}
