//! Both stores answer every guard and op of the `store` interface alike: the same batches
//! run on the embedded store and on a real `redis-server` (through `wire/batch.lua`), and
//! every outcome is compared. Guards are checked passing and failing; a refused batch and a
//! batch that meets a key of another type must leave nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests fail loudly"
)]

use std::sync::Arc;
use std::time::Duration;

use roster_host::config::Clock;
use roster_host::runtime::bindings::store::{
    BoundGuard, ExpireOp, FieldGuard, FieldOp, FieldsOp, HsetOp, MemberOp, MembersOp, ScoreGuard,
    SetOp, SizeGuard, ValueGuard, ZaddOp, ZappendOp, ZincrOp, ZrangeOp, ZremRangeOp,
};
use roster_host::store::memory::MemoryStore;
use roster_host::store::redis::{Connect, RedisStore, Target};
use roster_host::store::{Batch, BatchOutcome, Guard, Op, Store, StoreError};
use roster_tests::{RedisServer, eventually};
use tokio_util::sync::CancellationToken;

const H: &str = "parity:{t}:hash";
const S: &str = "parity:{t}:set";
const Z: &str = "parity:{t}:zset";
const V: &str = "parity:{t}:value";
const L: &str = "parity:{t}:log";

fn batch(guards: Vec<Guard>, ops: Vec<Op>) -> Batch {
    Batch { guards, ops }
}

fn s(text: &str) -> String {
    text.to_owned()
}

/// Every op, then every guard passing and failing (each failing batch carries a write that
/// must not land), then a batch refused for a key of another type.
fn steps() -> Vec<(&'static str, Vec<Batch>)> {
    let hset = |entries: &[(&str, &str)]| {
        Op::Hset(HsetOp {
            key: s(H),
            entries: entries.iter().map(|(f, v)| (s(f), s(v))).collect(),
        })
    };
    let marker = || hset(&[("marker", "landed")]);
    let read_hash = || {
        batch(
            vec![],
            vec![Op::Hmget(FieldsOp {
                key: s(H),
                fields: vec![s("a"), s("b"), s("marker")],
            })],
        )
    };
    vec![
        (
            "hash ops",
            vec![batch(
                vec![],
                vec![
                    hset(&[("a", "1"), ("b", "22")]),
                    hset(&[]),
                    Op::Hget(FieldOp {
                        key: s(H),
                        field: s("a"),
                    }),
                    Op::Hget(FieldOp {
                        key: s(H),
                        field: s("missing"),
                    }),
                    Op::Hmget(FieldsOp {
                        key: s(H),
                        fields: vec![s("b"), s("missing"), s("a")],
                    }),
                    Op::Hmget(FieldsOp {
                        key: s(H),
                        fields: vec![],
                    }),
                    Op::Hstrlen(FieldOp {
                        key: s(H),
                        field: s("b"),
                    }),
                    Op::Hdel(FieldsOp {
                        key: s(H),
                        fields: vec![s("b"), s("missing")],
                    }),
                    Op::Hgetall(s(H)),
                    Op::Pexpire(ExpireOp {
                        key: s(H),
                        ttl_ms: 60_000,
                    }),
                    Op::Pexpire(ExpireOp {
                        key: s("parity:{t}:none"),
                        ttl_ms: 60_000,
                    }),
                ],
            )],
        ),
        (
            "string ops",
            vec![batch(
                vec![],
                vec![
                    Op::Get(s(V)),
                    Op::Set(SetOp {
                        key: s(V),
                        value: s("v1"),
                        ttl_ms: None,
                    }),
                    Op::Get(s(V)),
                    Op::Set(SetOp {
                        key: s(V),
                        value: s("v2"),
                        ttl_ms: Some(60_000),
                    }),
                    Op::Get(s(V)),
                ],
            )],
        ),
        (
            "set ops",
            vec![batch(
                vec![],
                vec![
                    Op::Sadd(MembersOp {
                        key: s(S),
                        members: vec![s("m1"), s("m2"), s("m1")],
                    }),
                    Op::Srem(MembersOp {
                        key: s(S),
                        members: vec![s("m2"), s("none")],
                    }),
                    Op::Smembers(s(S)),
                    Op::Scard(s(S)),
                    Op::Sadd(MembersOp {
                        key: s(S),
                        members: vec![],
                    }),
                ],
            )],
        ),
        (
            "sorted set ops",
            vec![batch(
                vec![],
                vec![
                    Op::Zadd(ZaddOp {
                        key: s(Z),
                        entries: vec![(s("a"), 1), (s("b"), 2), (s("c"), 3), (s("d"), 4)],
                    }),
                    Op::ZrangeByScore(ZrangeOp {
                        key: s(Z),
                        min: 2,
                        max: 3,
                        limit: 10,
                    }),
                    Op::ZrangeByScore(ZrangeOp {
                        key: s(Z),
                        min: i64::MIN,
                        max: i64::MAX,
                        limit: 2,
                    }),
                    Op::ZrangeWithScores(ZrangeOp {
                        key: s(Z),
                        min: 1,
                        max: 2,
                        limit: 10,
                    }),
                    Op::Zscore(MemberOp {
                        key: s(Z),
                        member: s("b"),
                    }),
                    Op::Zscore(MemberOp {
                        key: s(Z),
                        member: s("none"),
                    }),
                    Op::Zincrby(ZincrOp {
                        key: s(Z),
                        member: s("a"),
                        delta: 10,
                    }),
                    Op::ZremRangeByScore(ZremRangeOp {
                        key: s(Z),
                        min: 2,
                        max: 3,
                    }),
                    Op::Zrem(MembersOp {
                        key: s(Z),
                        members: vec![s("d"), s("none")],
                    }),
                    Op::Zcard(s(Z)),
                    Op::ZrangeWithScores(ZrangeOp {
                        key: s(Z),
                        min: i64::MIN,
                        max: i64::MAX,
                        limit: 10,
                    }),
                ],
            )],
        ),
        (
            "zappend keeps the newest",
            vec![
                batch(
                    vec![],
                    vec![Op::Zappend(ZappendOp {
                        key: s(L),
                        counter: s("#"),
                        members: vec![s("x")],
                        keep: 2,
                    })],
                ),
                batch(
                    vec![],
                    vec![
                        Op::Zappend(ZappendOp {
                            key: s(L),
                            counter: s("#"),
                            members: vec![s("y"), s("z")],
                            keep: 2,
                        }),
                        Op::Zappend(ZappendOp {
                            key: s(L),
                            counter: s("#"),
                            members: vec![s("w")],
                            keep: 0,
                        }),
                        Op::ZrangeWithScores(ZrangeOp {
                            key: s(L),
                            min: i64::MIN,
                            max: i64::MAX,
                            limit: 10,
                        }),
                    ],
                ),
            ],
        ),
        (
            "guards that hold",
            vec![batch(
                vec![
                    Guard::Exists(s(H)),
                    Guard::Absent(s("parity:{t}:none")),
                    Guard::ValueIs(ValueGuard {
                        key: s(V),
                        value: Some(s("v2")),
                    }),
                    Guard::ValueIs(ValueGuard {
                        key: s("parity:{t}:none"),
                        value: None,
                    }),
                    Guard::FieldIs(FieldGuard {
                        key: s(H),
                        field: s("a"),
                        value: Some(s("1")),
                    }),
                    Guard::FieldIs(FieldGuard {
                        key: s(H),
                        field: s("b"),
                        value: None,
                    }),
                    Guard::FieldAtMost(BoundGuard {
                        key: s(H),
                        field: s("a"),
                        bound: 1,
                    }),
                    Guard::FieldAtLeast(BoundGuard {
                        key: s(H),
                        field: s("a"),
                        bound: 1,
                    }),
                    Guard::SizeBelow(SizeGuard {
                        key: s(S),
                        limit: 2,
                    }),
                    Guard::SizeBelow(SizeGuard {
                        key: s(H),
                        limit: 3,
                    }),
                    Guard::ScoreAtMost(ScoreGuard {
                        key: s(Z),
                        member: s("a"),
                        bound: 11,
                    }),
                    Guard::ScoreAbsentOrBelow(ScoreGuard {
                        key: s(Z),
                        member: s("none"),
                        bound: 0,
                    }),
                    Guard::ScoreAbsentOrBelow(ScoreGuard {
                        key: s(Z),
                        member: s("a"),
                        bound: 12,
                    }),
                ],
                vec![
                    hset(&[("held", "yes")]),
                    Op::Hget(FieldOp {
                        key: s(H),
                        field: s("held"),
                    }),
                ],
            )],
        ),
        (
            "guards that fail, each in its own batch, in one call",
            [
                Guard::Exists(s("parity:{t}:none")),
                Guard::Absent(s(H)),
                Guard::ValueIs(ValueGuard {
                    key: s(V),
                    value: Some(s("other")),
                }),
                Guard::ValueIs(ValueGuard {
                    key: s(V),
                    value: None,
                }),
                Guard::FieldIs(FieldGuard {
                    key: s(H),
                    field: s("a"),
                    value: Some(s("2")),
                }),
                Guard::FieldIs(FieldGuard {
                    key: s(H),
                    field: s("a"),
                    value: None,
                }),
                Guard::FieldAtMost(BoundGuard {
                    key: s(H),
                    field: s("a"),
                    bound: 0,
                }),
                Guard::FieldAtLeast(BoundGuard {
                    key: s(H),
                    field: s("a"),
                    bound: 2,
                }),
                Guard::FieldAtLeast(BoundGuard {
                    key: s(H),
                    field: s("missing"),
                    bound: 0,
                }),
                Guard::SizeBelow(SizeGuard {
                    key: s(S),
                    limit: 1,
                }),
                Guard::ScoreAtMost(ScoreGuard {
                    key: s(Z),
                    member: s("a"),
                    bound: 10,
                }),
                Guard::ScoreAtMost(ScoreGuard {
                    key: s(Z),
                    member: s("none"),
                    bound: 10,
                }),
                Guard::ScoreAbsentOrBelow(ScoreGuard {
                    key: s(Z),
                    member: s("a"),
                    bound: 11,
                }),
            ]
            .into_iter()
            .map(|failing| batch(vec![Guard::Exists(s(H)), failing], vec![marker()]))
            .collect(),
        ),
        ("nothing landed", vec![read_hash()]),
        (
            "a key of another type refuses the batch",
            vec![batch(
                vec![Guard::Exists(s(H))],
                vec![
                    marker(),
                    Op::Sadd(MembersOp {
                        key: s(H),
                        members: vec![s("x")],
                    }),
                ],
            )],
        ),
        ("still nothing landed", vec![read_hash()]),
        (
            "del",
            vec![batch(
                vec![],
                vec![Op::Del(s(V)), Op::Del(s(V)), Op::Get(s(V))],
            )],
        ),
    ]
}

/// The same outcome, errors compared by kind (their messages are each store's own).
fn same(
    memory: &Result<Vec<BatchOutcome>, StoreError>,
    redis: &Result<Vec<BatchOutcome>, StoreError>,
) -> bool {
    match (memory, redis) {
        (Ok(a), Ok(b)) => a == b,
        (Err(StoreError::Rejected(_)), Err(StoreError::Rejected(_))) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_run_every_guard_and_op_alike() {
    let server = RedisServer::start().await;
    let target = Target::parse(&server.url(), false).unwrap();
    let redis = Arc::new(RedisStore::new(Connect {
        target,
        timeout: Duration::from_secs(2),
        ca_pem: None,
    }));
    let shutdown = CancellationToken::new();
    tokio::spawn(Arc::clone(&redis).run_health(shutdown.clone()));
    eventually("the Redis store connects", || {
        let redis = Arc::clone(&redis);
        async move {
            // No event feed here: nothing to wait for once Redis answers.
            redis.set_feed_ready(true);
            redis.is_healthy()
        }
    })
    .await;
    let memory = MemoryStore::new(Clock::System);
    let mut refused = 0;
    for (step, batches) in steps() {
        let expected = memory.execute(batches.clone()).await;
        let got = redis.execute(batches).await;
        assert!(
            same(&expected, &got),
            "{step}: embedded {expected:?}, Redis {got:?}"
        );
        if let Ok(outcomes) = &expected {
            refused += outcomes
                .iter()
                .filter(|o| matches!(o, BatchOutcome::Refused(_)))
                .count();
        }
    }
    // Every failing guard was refused (and on the embedded store, so the comparison meant
    // something); the type check refused its batch.
    assert_eq!(refused, 13);
    shutdown.cancel();
}
