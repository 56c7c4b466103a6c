//! The load generator against a real in-process host: each scenario, kept small, finishes
//! by itself, with its own checks passing (no errors, every delivery seen, no lost update,
//! no failed heartbeat across swaps).
//! The numbers are not judged here; `docs/benchmarks.md` holds them.

#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::process::Command;

use roster_tests::{TestHost, presence_v1, presence_v2};

/// Runs `roster-bench` against `host` with `args` and returns its output, failing the
/// test if it fails.
async fn bench(host: &TestHost, args: &[&str]) -> String {
    let server = host.addr.to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_roster-bench"));
    command
        .args(["--server", &server, "--server-pid"])
        .arg(std::process::id().to_string())
        .args(args);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the runner thread")
        .expect("roster-bench starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "roster-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The number after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> f64 {
    let rest = &text[text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix:?} in {text}"))
        + prefix.len()..];
    let digits: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_over_both_transports() {
    let host = TestHost::start().await;
    for transport in ["ws", "socketio"] {
        let out = bench(
            &host,
            &[
                "--transport",
                transport,
                "steady",
                "--clients",
                "20",
                "--rooms",
                "2",
                "--rate",
                "10",
                "--patch",
                "0.5",
                "--duration",
                "2",
                "--warmup",
                "1",
            ],
        )
        .await;
        assert!(out.contains("errors 0"), "{transport}: {out}");
        let acks = number_after(&out, "achieved ");
        assert!(
            acks > 100.0,
            "{transport}: 20 clients × 10/s, got {acks} acks/s: {out}"
        );
        // Half the heartbeats carry a patch that fans out to the other 9 members.
        let events = number_after(&out, "fan-out (");
        assert!(events > 0.0, "{transport}: no fan-out measured: {out}");
        assert!(out.contains("server: CPU"), "{transport}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_room_delivers_every_update_to_every_member() {
    let host = TestHost::start().await;
    let out = bench(
        &host,
        &[
            "big-room",
            "--members",
            "100",
            "--updates",
            "5",
            "--every-ms",
            "20",
        ],
    )
    .await;
    // The sender's own events count too: 5 updates × 100 members.
    assert!(out.contains("500 deliveries (expected 500)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_contention_loses_no_update() {
    let host = TestHost::start().await;
    let out = bench(&host, &["metadata", "--writers", "8", "--duration", "1"]).await;
    assert!(out.contains("no lost update: true"), "{out}");
    assert!(number_after(&out, "1 s: ") > 0.0, "no commit: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_and_idle_connections() {
    let host = TestHost::start().await;
    let out = bench(
        &host,
        &[
            "--transport",
            "socketio",
            "join-storm",
            "--clients",
            "200",
            "--rooms",
            "10",
        ],
    )
    .await;
    assert!(
        out.contains("join storm: 200 clients into 10 rooms"),
        "{out}"
    );
    let out = bench(&host, &["idle", "--connections", "300"]).await;
    assert!(out.contains("KiB per connection"), "{out}");
}

/// `idle` past the server's socket limit counts the refusals and still reports memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_past_the_limit_counts_refusals() {
    let host = TestHost::start_with(|c| c.max_sockets = 20).await;
    let out = bench(&host, &["idle", "--connections", "30"]).await;
    assert!(out.contains("20 joined connections"), "{out}");
    assert!(out.contains("10 refused"), "{out}");
    assert!(out.contains("KiB per connection"), "{out}");
}

/// Every publish reaches every subscriber once (the scenario fails otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_every_subscriber() {
    let host = TestHost::start().await;
    let out = bench(
        &host,
        &[
            "messages",
            "--subscribers",
            "10",
            "--publishers",
            "2",
            "--duration",
            "1",
        ],
    )
    .await;
    assert!(out.contains("publishes/s"), "{out}");
    assert!(number_after(&out, "publishes/s (") > 0.0, "{out}");
}

/// With `--jwt-secret` every client brings its own token: a server that verifies them lets
/// all of them join (as their own users), and one with another key refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_storm_with_tokens() {
    const SECRET: &str = "roster-bench-test-jwt-secret-0123456789";
    let host = TestHost::start_with(|c| c.jwt_secret = Some(SECRET.into())).await;
    for transport in ["ws", "socketio"] {
        let out = bench(
            &host,
            &[
                "--transport",
                transport,
                "--jwt-secret",
                SECRET,
                "join-storm",
                "--clients",
                "100",
                "--rooms",
                "10",
            ],
        )
        .await;
        assert!(
            out.contains("join storm: 100 clients into 10 rooms"),
            "{out}"
        );
    }
    let mut command = Command::new(env!("CARGO_BIN_EXE_roster-bench"));
    command.args(["--server", &host.addr.to_string()]).args([
        "--jwt-secret",
        "another-key-that-is-at-least-32-bytes-long",
        "join-storm",
        "--clients",
        "5",
    ]);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        !output.status.success(),
        "tokens of another key are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_raises_the_load_until_the_bound() {
    let host = TestHost::start().await;
    let out = bench(
        &host,
        &[
            "search",
            "--clients",
            "20",
            "--rooms",
            "2",
            "--from",
            "100",
            "--step",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    )
    .await;
    assert!(out.contains("step 100/s"), "{out}");
    assert!(
        out.contains("heartbeat acks/s with p99"),
        "100 heartbeats/s should pass 20 ms: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaps_under_load_fail_no_heartbeat() {
    const TOKEN: &str = "bench-test-admin-token-0123456789";
    let host = TestHost::start_with(|c| c.admin_token = Some(TOKEN.into())).await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let v1 = dir.path().join("v1.wasm");
    std::fs::write(&v1, presence_v1()).expect("v1 written");
    let (v1, v2) = (
        v1.display().to_string(),
        presence_v2().display().to_string(),
    );
    let out = bench(
        &host,
        &[
            "swap",
            "--clients",
            "20",
            "--rooms",
            "2",
            "--rate",
            "10",
            "--duration",
            "3",
            "--warmup",
            "0",
            "--token",
            TOKEN,
            "--components",
            &v1,
            &v2,
        ],
    )
    .await;
    assert!(out.contains("errors 0"), "{out}");
    assert!(out.contains("failed acks: 0"), "{out}");
    assert!(
        number_after(&out, "RESULT: ") >= 1.0,
        "no swap happened: {out}"
    );
}
