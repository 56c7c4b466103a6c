//! The state store behind the components' `store` import.
//!
//! A backend runs [`Batch`]es with the guarantees documented in `wit/store.wit`: each batch
//! is atomic and single-slot (one hash tag), the batches of one call are independent and
//! cost one round trip. Backends report failures honestly: [`StoreError::Unavailable`] when
//! the store cannot answer (the request fails with `STORE_UNAVAILABLE` and may be retried),
//! [`StoreError::Rejected`] when the call itself is wrong (a component bug).
//!
//! - [`memory`]: the embedded in-memory store (the default: one binary, no setup).
//! - [`redis`]: Redis or Redis Cluster, shared by many nodes.

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use crate::runtime::bindings::store::{Batch, BatchOutcome, Guard, Op, Reply, StoreError};

/// A boxed, sendable future: the store trait is used as `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A backend for the components' `store` import.
pub trait Store: Send + Sync + 'static {
    /// Runs `batches` in one round trip; one outcome per batch, in order.
    fn execute(
        &self,
        batches: Vec<Batch>,
    ) -> StoreFuture<'_, Result<Vec<BatchOutcome>, StoreError>>;

    /// Whether the store answers right now (`/readyz`).
    fn ping(&self) -> StoreFuture<'_, Result<(), StoreError>>;

    /// A short name for logs and metrics.
    fn kind(&self) -> &'static str;
}

/// The hash tag of a key as Redis Cluster computes it: the text between the first `{` and
/// the next `}` when that is not empty, else the whole key.
pub fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The keys a guard reads.
pub fn guard_key(guard: &Guard) -> &str {
    match guard {
        Guard::Exists(key) | Guard::Absent(key) => key,
        Guard::ValueIs(g) => &g.key,
        Guard::FieldIs(g) => &g.key,
        Guard::FieldAtMost(g) | Guard::FieldAtLeast(g) => &g.key,
        Guard::SizeBelow(g) => &g.key,
        Guard::ScoreAtMost(g) => &g.key,
    }
}

/// The key an operation touches.
pub fn op_key(op: &Op) -> &str {
    match op {
        Op::Get(key) | Op::Del(key) | Op::Hgetall(key) | Op::Smembers(key) | Op::Scard(key) => key,
        Op::Set(o) => &o.key,
        Op::Pexpire(o) => &o.key,
        Op::Hget(o) => &o.key,
        Op::Hmget(o) | Op::Hdel(o) => &o.key,
        Op::Hset(o) => &o.key,
        Op::Sadd(o) | Op::Srem(o) | Op::Zrem(o) => &o.key,
        Op::Zadd(o) => &o.key,
        Op::ZrangeByScore(o) => &o.key,
    }
}

/// The single hash tag of a batch, or the rejection naming the two tags it mixes. An empty
/// batch has none.
pub fn batch_tag(batch: &Batch) -> Result<Option<&str>, StoreError> {
    let mut keys = batch
        .guards
        .iter()
        .map(guard_key)
        .chain(batch.ops.iter().map(op_key));
    let Some(first) = keys.next() else {
        return Ok(None);
    };
    let tag = hash_tag(first);
    for key in keys {
        let other = hash_tag(key);
        if other != tag {
            return Err(StoreError::Rejected(format!(
                "a batch mixes hash tags {{{tag}}} and {{{other}}} (keys {first:?} and {key:?})"
            )));
        }
    }
    Ok(Some(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hash tags follow Redis Cluster's rule, empty braces included.
    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag("roster:v1:{0a3}:conn:x"), "0a3");
        assert_eq!(hash_tag("plain"), "plain");
        assert_eq!(hash_tag("a{}b{c}"), "a{}b{c}");
        assert_eq!(hash_tag("a{b}{c}"), "b");
        assert_eq!(hash_tag("a{b"), "a{b");
    }

    /// A batch over two tags is rejected with both named.
    #[test]
    fn mixed_batches_are_rejected() {
        let batch = Batch {
            guards: vec![Guard::Exists("x:{1}:a".into())],
            ops: vec![Op::Get("x:{2}:b".into())],
        };
        let Err(StoreError::Rejected(why)) = batch_tag(&batch) else {
            panic!("mixed tags accepted");
        };
        assert!(why.contains("{1}") && why.contains("{2}"), "{why}");
        let single = Batch {
            guards: Vec::new(),
            ops: vec![Op::Get("x:{1}:a".into()), Op::Del("y:{1}:b".into())],
        };
        assert_eq!(batch_tag(&single).unwrap(), Some("1"));
    }
}
