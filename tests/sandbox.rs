//! The sandbox around component calls: a component that traps, loops forever or allocates
//! without bound fails that one call with COMPONENT_FAILED, within the deadline, while
//! other sockets are served as usual; components that cannot run are refused at start-up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::path::Path;
use std::time::{Duration, Instant};

use roster_host::runtime::RuntimeError;
use roster_tests::{TestHost, chaos_presence, test_config};
use serde_json::json;

/// A components directory whose `slot.wasm` is the chaos fixture.
fn chaos_dir(slot: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(chaos_presence(), dir.path().join(format!("{slot}.wasm"))).unwrap();
    dir
}

async fn chaos_host(dir: &Path, deadline_ms: u64, memory_mib: u64) -> TestHost {
    let dir = dir.to_path_buf();
    TestHost::start_with(move |c| {
        c.components_dir = Some(dir);
        c.component_deadline_ms = deadline_ms;
        c.component_memory_mib = memory_mib;
        // Limits that fit a small cap (the host refuses to start otherwise).
        c.max_snapshot_bytes = 1024 * 1024;
        c.message_history = 20;
        c.heartbeat_batch = 16;
    })
    .await
}

fn failures(host: &TestHost) -> u64 {
    host.hub.runtime.stats()[0].failures
}

/// A trap fails its call with COMPONENT_FAILED; the same socket, other sockets and later
/// calls (on a fresh instance) all work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_fails_one_call() {
    let dir = chaos_dir("presence");
    let host = chaos_host(dir.path(), 1_000, 64).await;
    let mut bystander = host.connect().await;
    let (conn, ..) = bystander.join("room", "ada", json!({})).await;
    let mut client = host.connect().await;
    let message = client
        .fails(
            "presence:join",
            json!({"roomId": "room", "userId": "trap-now"}),
            "COMPONENT_FAILED",
        )
        .await;
    assert!(message.contains("presence"), "{message}");
    assert_eq!(failures(&host), 1);
    client.join("room", "bob", json!({})).await;
    bystander
        .ok("presence:heartbeat", json!({"connId": conn}))
        .await;
}

/// A component that loops forever fails within the deadline, and while it spins other
/// sockets keep getting fast answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_hits_the_deadline_alone() {
    let dir = chaos_dir("presence");
    let host = chaos_host(dir.path(), 400, 64).await;
    let mut bystander = host.connect().await;
    let (conn, ..) = bystander.join("room", "ada", json!({})).await;
    let mut looper = host.connect().await;
    let started = Instant::now();
    let spinning = tokio::spawn(async move {
        let ack = looper
            .request(
                "presence:join",
                json!({"roomId": "room", "userId": "loop-forever"}),
            )
            .await;
        (ack, started.elapsed())
    });
    // While the loop spins, the bystander's heartbeats are answered promptly.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let sent = Instant::now();
        bystander
            .ok("presence:heartbeat", json!({"connId": conn}))
            .await;
        slowest = slowest.max(sent.elapsed());
    }
    let (ack, took) = spinning.await.unwrap();
    assert_eq!(ack["error"]["code"], "COMPONENT_FAILED", "{ack}");
    assert!(
        took >= Duration::from_millis(400),
        "failed before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(
        slowest < Duration::from_millis(300),
        "a bystander waited {slowest:?} behind the loop"
    );
    assert_eq!(failures(&host), 1);
}

/// A component that allocates without bound hits the memory cap and fails its call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_cap() {
    let dir = chaos_dir("presence");
    let host = chaos_host(dir.path(), 5_000, 16).await;
    let mut client = host.connect().await;
    let started = Instant::now();
    client
        .fails(
            "presence:join",
            json!({"roomId": "room", "userId": "alloc-all"}),
            "COMPONENT_FAILED",
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the cap, not the deadline, stopped it"
    );
    client.join("room", "ada", json!({})).await;
}

/// A component reads no ambient clock: WASI's clock tells the time the host passed into the
/// call (the test's manual clock, years before the real time), frozen for the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_clock_is_the_calls_time() {
    let dir = chaos_dir("presence");
    let host = chaos_host(dir.path(), 1_000, 64).await;
    let mut client = host.connect().await;
    for _ in 0..2 {
        let message = client
            .fails(
                "presence:join",
                json!({"roomId": "room", "userId": "clock"}),
                "INVALID_PAYLOAD",
            )
            .await;
        assert_eq!(message, format!("the WASI clock says {}", host.now()));
        host.advance(Duration::from_millis(1_234));
    }
}

/// A file that is not a component, and a component of the wrong world, are refused at
/// start-up with a reason that names the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_that_cannot_run_are_refused() {
    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(garbage.path().join("reaper.wasm"), b"definitely not wasm").unwrap();
    let wrong_world = chaos_dir("metadata");
    for (dir, expected) in [
        (garbage.path(), "not a valid component"),
        (wrong_world.path(), "does not export"),
    ] {
        let mut config = test_config();
        config.components_dir = Some(dir.to_path_buf());
        let Err(error) = TestHost::try_start(config).await else {
            panic!("{} was accepted", dir.display());
        };
        let roster_host::Error::Runtime(RuntimeError::Load { slot, reason, .. }) = &error else {
            panic!("unexpected error {error}");
        };
        assert!(reason.contains(expected), "{error}");
        assert_ne!(*slot, "presence", "{error}");
    }
}
