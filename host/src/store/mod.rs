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

#[path = "../../../wire/batch.rs"]
pub mod codec;
pub use codec::{batch_tag, guard_key, hash_tag, op_key};

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
