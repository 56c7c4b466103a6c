//! The component path against the same rules called natively.
//!
//! Both sides run `roster_guest::presence::heartbeat` against the host's embedded store:
//! - `component`: through `Runtime::heartbeat`, the path every request takes (instance from
//!   the pool, lowering the requests, the guest, the `store.execute` import lifting batches
//!   into host types, lifting the results back);
//! - `native`: the guest crate compiled for this machine, its imports served by a stand-in
//!   (`roster_guest::host::install`) that converts the batches into host types and runs them
//!   on a `MemoryStore` of its own.
//!
//! `plain` heartbeats only refresh; `patch` heartbeats change the state, so they also read
//! the state, write it and publish an update. Batches of 1, 16 and 64 heartbeats per call
//! show what coalescing saves.
//!
//! `auth` measures what a token costs a connection: verifying it (`wire/auth.rs`, per
//! algorithm family, with the test keys of `tests/fixtures/keys`) and the policy
//! component's one decision for a join. Run with `cargo bench -p roster-bench --bench
//! component`.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roster_guest::bindings::roster::hub::events::Event as GuestEvent;
use roster_guest::bindings::roster::hub::store as guest;
use roster_guest::types as guest_types;
use roster_host::bus::EventSink;
use roster_host::config::{Clock, Config, Profiler};
use roster_host::runtime::bindings::events::Event;
use roster_host::runtime::bindings::store as host;
use roster_host::runtime::bindings::types as host_types;
use roster_host::runtime::{Components, Runtime};
use roster_host::store::memory::MemoryStore;

/// Connections joined on each side, spread over this many rooms.
const CONNECTIONS: usize = 64;
const ROOMS: usize = 8;
const BATCHES: [usize; 3] = [1, 16, 64];

/// Counts events and drops them: both sides publish into the same kind of sink.
#[derive(Default)]
struct CountingSink(AtomicU64);

impl EventSink for CountingSink {
    fn publish(&self, _event: Event) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The native stand-in for the host's imports.
struct NativeHost {
    store: MemoryStore,
    events: CountingSink,
}

impl roster_guest::host::Host for NativeHost {
    fn execute(
        &self,
        batches: &[guest::Batch],
    ) -> Result<Vec<guest::BatchOutcome>, guest::StoreError> {
        let batches = batches.iter().map(batch_to_host).collect();
        match self.store.execute_now(batches) {
            Ok(outcomes) => Ok(outcomes.into_iter().map(outcome_to_guest).collect()),
            Err(host::StoreError::Unavailable(why)) => Err(guest::StoreError::Unavailable(why)),
            Err(host::StoreError::Rejected(why)) => Err(guest::StoreError::Rejected(why)),
        }
    }

    fn publish(&self, _event: &GuestEvent) {
        self.events.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn batch_to_host(batch: &guest::Batch) -> host::Batch {
    host::Batch {
        guards: batch.guards.iter().map(guard_to_host).collect(),
        ops: batch.ops.iter().map(op_to_host).collect(),
    }
}

fn guard_to_host(guard: &guest::Guard) -> host::Guard {
    use guest::Guard as G;
    use host::Guard as H;
    let bound = |g: &guest::BoundGuard| host::BoundGuard {
        key: g.key.clone(),
        field: g.field.clone(),
        bound: g.bound,
    };
    match guard {
        G::Exists(key) => H::Exists(key.clone()),
        G::Absent(key) => H::Absent(key.clone()),
        G::ValueIs(g) => H::ValueIs(host::ValueGuard {
            key: g.key.clone(),
            value: g.value.clone(),
        }),
        G::FieldIs(g) => H::FieldIs(host::FieldGuard {
            key: g.key.clone(),
            field: g.field.clone(),
            value: g.value.clone(),
        }),
        G::FieldAtMost(g) => H::FieldAtMost(bound(g)),
        G::FieldAtLeast(g) => H::FieldAtLeast(bound(g)),
        G::SizeBelow(g) => H::SizeBelow(host::SizeGuard {
            key: g.key.clone(),
            limit: g.limit,
        }),
        G::ScoreAtMost(g) => H::ScoreAtMost(score(g)),
        G::ScoreAbsentOrBelow(g) => H::ScoreAbsentOrBelow(score(g)),
    }
}

fn score(g: &guest::ScoreGuard) -> host::ScoreGuard {
    host::ScoreGuard {
        key: g.key.clone(),
        member: g.member.clone(),
        bound: g.bound,
    }
}

fn op_to_host(op: &guest::Op) -> host::Op {
    use guest::Op as G;
    use host::Op as H;
    let fields = |o: &guest::FieldsOp| host::FieldsOp {
        key: o.key.clone(),
        fields: o.fields.clone(),
    };
    let members = |o: &guest::MembersOp| host::MembersOp {
        key: o.key.clone(),
        members: o.members.clone(),
    };
    match op {
        G::Get(key) => H::Get(key.clone()),
        G::Set(o) => H::Set(host::SetOp {
            key: o.key.clone(),
            value: o.value.clone(),
            ttl_ms: o.ttl_ms,
        }),
        G::Del(key) => H::Del(key.clone()),
        G::Pexpire(o) => H::Pexpire(host::ExpireOp {
            key: o.key.clone(),
            ttl_ms: o.ttl_ms,
        }),
        G::Hget(o) => H::Hget(host::FieldOp {
            key: o.key.clone(),
            field: o.field.clone(),
        }),
        G::Hmget(o) => H::Hmget(fields(o)),
        G::Hgetall(key) => H::Hgetall(key.clone()),
        G::Hset(o) => H::Hset(host::HsetOp {
            key: o.key.clone(),
            entries: o.entries.clone(),
        }),
        G::Hdel(o) => H::Hdel(fields(o)),
        G::Sadd(o) => H::Sadd(members(o)),
        G::Srem(o) => H::Srem(members(o)),
        G::Smembers(key) => H::Smembers(key.clone()),
        G::Scard(key) => H::Scard(key.clone()),
        G::Zadd(o) => H::Zadd(host::ZaddOp {
            key: o.key.clone(),
            entries: o.entries.clone(),
        }),
        G::Zrem(o) => H::Zrem(members(o)),
        G::ZrangeByScore(o) => H::ZrangeByScore(host::ZrangeOp {
            key: o.key.clone(),
            min: o.min,
            max: o.max,
            limit: o.limit,
        }),
        G::Zscore(o) => H::Zscore(host::MemberOp {
            key: o.key.clone(),
            member: o.member.clone(),
        }),
        G::Zincrby(o) => H::Zincrby(host::ZincrOp {
            key: o.key.clone(),
            member: o.member.clone(),
            delta: o.delta,
        }),
        G::ZremRangeByScore(o) => H::ZremRangeByScore(host::ZremRangeOp {
            key: o.key.clone(),
            min: o.min,
            max: o.max,
        }),
        G::Zcard(key) => H::Zcard(key.clone()),
        G::Hstrlen(o) => H::Hstrlen(host::FieldOp {
            key: o.key.clone(),
            field: o.field.clone(),
        }),
        G::Zappend(o) => H::Zappend(host::ZappendOp {
            key: o.key.clone(),
            counter: o.counter.clone(),
            members: o.members.clone(),
            keep: o.keep,
        }),
        G::ZrangeWithScores(o) => H::ZrangeWithScores(host::ZrangeOp {
            key: o.key.clone(),
            min: o.min,
            max: o.max,
            limit: o.limit,
        }),
    }
}

fn outcome_to_guest(outcome: host::BatchOutcome) -> guest::BatchOutcome {
    match outcome {
        host::BatchOutcome::Refused(index) => guest::BatchOutcome::Refused(index),
        host::BatchOutcome::Applied(replies) => guest::BatchOutcome::Applied(
            replies
                .into_iter()
                .map(|reply| match reply {
                    host::Reply::None => guest::Reply::None,
                    host::Reply::Int(n) => guest::Reply::Int(n),
                    host::Reply::Text(text) => guest::Reply::Text(text),
                    host::Reply::Texts(texts) => guest::Reply::Texts(texts),
                    host::Reply::Pairs(pairs) => guest::Reply::Pairs(pairs),
                    host::Reply::Members(members) => guest::Reply::Members(members),
                })
                .collect(),
        ),
    }
}

fn host_context(config: &Config) -> host_types::CallContext {
    host_types::CallContext {
        now: Clock::System.now_ms(),
        node_id: "bench".into(),
        settings: config.settings(),
        principal: roster_host::protocol::auth::open_principal(),
    }
}

fn guest_context(config: &Config) -> guest_types::CallContext {
    let host = host_context(config);
    let s = host.settings;
    guest_types::CallContext {
        now: host.now,
        node_id: host.node_id,
        settings: guest_types::Settings {
            ttl_ms: s.ttl_ms,
            lookback_ms: s.lookback_ms,
            max_state_bytes: s.max_state_bytes,
            max_room_members: s.max_room_members,
            max_metadata_items: s.max_metadata_items,
            max_metadata_bytes: s.max_metadata_bytes,
            default_lock_ttl_ms: s.default_lock_ttl_ms,
            max_lock_ttl_ms: s.max_lock_ttl_ms,
            node_lease_ms: s.node_lease_ms,
            max_snapshot_members: s.max_snapshot_members,
            max_snapshot_bytes: s.max_snapshot_bytes,
            max_message_bytes: s.max_message_bytes,
            message_history: s.message_history,
            message_history_ttl_ms: s.message_history_ttl_ms,
            resume_grace_ms: s.resume_grace_ms,
        },
        principal: guest_types::Principal {
            user_id: None,
            verified: false,
            role: None,
            permissions: Vec::new(),
            rooms: None,
        },
    }
}

/// A state patch that differs from the last one (so the heartbeat changes the state).
fn patch(n: u64) -> String {
    format!(r#"{{"cursor":{{"x":{n},"y":17}},"status":"active"}}"#)
}

/// The component side: a runtime over its own embedded store, `CONNECTIONS` joined.
struct ComponentSide {
    tokio: tokio::runtime::Runtime,
    runtime: Runtime,
    conns: Vec<String>,
}

#[expect(
    clippy::expect_used,
    reason = "benchmark set-up; a failure should stop it loudly"
)]
fn component_side(config: &Config) -> ComponentSide {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let runtime = Runtime::new(
        &Components::embedded(),
        config.limits(),
        config.guard_rails(),
        None,
        Arc::new(MemoryStore::new(Clock::System)),
        Arc::new(CountingSink::default()),
        // `ROSTER_PROFILER=perfmap` names the guest's functions for `perf`, as on the server.
        if std::env::var("ROSTER_PROFILER").is_ok_and(|p| p == "perfmap") {
            Profiler::Perfmap
        } else {
            Profiler::None
        },
    )
    .expect("the embedded components load");
    let mut conns = Vec::with_capacity(CONNECTIONS);
    for i in 0..CONNECTIONS {
        let request = host_types::JoinRequest {
            room_id: format!("room-{}", i % ROOMS),
            user_id: Some(format!("user-{i}")),
            state: Some(patch(0)),
            nonce: fastrand::u64(..),
            replaces: None,
            resume_token: "bench".into(),
            binding: 1,
        };
        let joined = tokio
            .block_on(runtime.join(&host_context(config), &request))
            .expect("the call completes")
            .expect("the join is accepted");
        conns.push(joined.conn_id);
    }
    ComponentSide {
        tokio,
        runtime,
        conns,
    }
}

/// The native side: the rules on this thread over their own embedded store.
#[expect(
    clippy::expect_used,
    reason = "benchmark set-up; a failure should stop it loudly"
)]
fn native_side(config: &Config) -> Vec<String> {
    roster_guest::host::install(Rc::new(NativeHost {
        store: MemoryStore::new(Clock::System),
        events: CountingSink::default(),
    }));
    (0..CONNECTIONS)
        .map(|i| {
            let request = guest_types::JoinRequest {
                room_id: format!("room-{}", i % ROOMS),
                user_id: Some(format!("user-{i}")),
                state: Some(patch(0)),
                nonce: fastrand::u64(..),
                replaces: None,
                resume_token: "bench".into(),
                binding: 1,
            };
            roster_guest::presence::join(&guest_context(config), request)
                .expect("the join is accepted")
                .conn_id
        })
        .collect()
}

fn heartbeat(c: &mut Criterion) {
    // Connections joined at set-up are heart-beaten only by the groups that reach them: a
    // TTL longer than the whole run keeps them alive (it costs both sides the same).
    let config = Config {
        presence_ttl_ms: 3_600_000,
        ..Config::default()
    };
    let component = component_side(&config);
    let native = native_side(&config);
    let mut n = 0u64;
    for kind in ["plain", "patch"] {
        let mut group = c.benchmark_group(format!("heartbeat-{kind}"));
        for size in BATCHES {
            group.throughput(Throughput::Elements(size as u64));
            group.bench_with_input(BenchmarkId::new("component", size), &size, |b, &size| {
                b.iter(|| {
                    n += 1;
                    let requests: Vec<_> = component.conns[..size]
                        .iter()
                        .map(|conn_id| host_types::HeartbeatRequest {
                            conn_id: conn_id.clone(),
                            epoch: None,
                            patch_state: (kind == "patch").then(|| patch(n)),
                        })
                        .collect();
                    let results = component.tokio.block_on(
                        component
                            .runtime
                            .heartbeat(&host_context(&config), &requests),
                    );
                    assert!(
                        matches!(&results, Ok(all) if all.iter().all(Result::is_ok)),
                        "a component heartbeat failed: {results:?}"
                    );
                });
            });
            group.bench_with_input(BenchmarkId::new("native", size), &size, |b, &size| {
                b.iter(|| {
                    n += 1;
                    let requests: Vec<_> = native[..size]
                        .iter()
                        .map(|conn_id| guest_types::HeartbeatRequest {
                            conn_id: conn_id.clone(),
                            epoch: None,
                            patch_state: (kind == "patch").then(|| patch(n)),
                        })
                        .collect();
                    let results =
                        roster_guest::presence::heartbeat(&guest_context(&config), requests);
                    assert!(
                        results.iter().all(Result::is_ok),
                        "a native heartbeat failed: {results:?}"
                    );
                });
            });
        }
        group.finish();
    }
}

/// A token's cost: its verification, and the policy call a join makes.
#[expect(
    clippy::expect_used,
    reason = "benchmark set-up; a failure should stop it loudly"
)]
fn auth(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use roster_host::protocol::auth::{Checks, Verifier};

    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/keys");
    let read = |name: &str| std::fs::read(keys.join(name)).expect("a test key");
    let secret = b"roster-bench-jwt-secret-0123456789abcdef";
    let claims = serde_json::json!({
        "sub": "user-1",
        "exp": Clock::System.now_ms() / 1000 + 3_600,
        "permissions": ["private_channel_access"],
        "rooms": ["room-*"],
    });
    let cases = [
        (
            "HS256",
            Verifier::from_secret(secret, Checks::default()).expect("a secret"),
            EncodingKey::from_secret(secret),
        ),
        (
            "RS256",
            Verifier::from_pem(&read("rsa.pub.pem"), Checks::default()).expect("an RSA key"),
            EncodingKey::from_rsa_pem(&read("rsa.key.pem")).expect("an RSA key"),
        ),
        (
            "ES256",
            Verifier::from_pem(&read("ec.pub.pem"), Checks::default()).expect("an EC key"),
            EncodingKey::from_ec_pem(&read("ec.key.pem")).expect("an EC key"),
        ),
        (
            "EdDSA",
            Verifier::from_pem(&read("ed25519.pub.pem"), Checks::default())
                .expect("an Ed25519 key"),
            EncodingKey::from_ed_pem(&read("ed25519.key.pem")).expect("an Ed25519 key"),
        ),
    ];
    let mut group = c.benchmark_group("auth");
    let mut principal = None;
    for (name, verifier, key) in cases {
        let alg = match name {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => Algorithm::EdDSA,
        };
        let token = jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("signs");
        group.bench_function(BenchmarkId::new("verify", name), |b| {
            b.iter(|| verifier.verify(&token).expect("verifies"));
        });
        principal = Some(verifier.verify(&token).expect("verifies").principal);
    }
    let config = Config::default();
    let component = component_side(&config);
    let mut context = host_context(&config);
    context.principal = principal.expect("a principal");
    group.bench_function("policy decide (join)", |b| {
        b.iter(|| {
            component
                .tokio
                .block_on(
                    component
                        .runtime
                        .decide(&context, host_types::Action::Join, "room-7"),
                )
                .expect("the call completes")
                .expect("allowed")
        });
    });
    group.finish();
}

criterion_group!(benches, heartbeat, auth);
criterion_main!(benches);
