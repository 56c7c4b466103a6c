//! The host's imports as the rules call them.
//!
//! Inside a component (`wasm32`) these are the WIT imports `store.execute` and
//! `events.publish`. On a native target there is no host to import from, so the calls go to
//! whatever [`install`] put on the current thread: the criterion benchmarks run the very same
//! rules natively against the host's embedded store this way, to measure what the component
//! boundary costs.

use crate::bindings::roster::hub::events::Event;
use crate::bindings::roster::hub::store::{Batch, BatchOutcome, StoreError};

/// Runs batches in one round trip (`store.execute`).
#[cfg(target_arch = "wasm32")]
pub fn execute(batches: &[Batch]) -> Result<Vec<BatchOutcome>, StoreError> {
    crate::bindings::roster::hub::store::execute(batches)
}

/// Queues an event for the members of its room (`events.publish`).
#[cfg(target_arch = "wasm32")]
pub fn publish(event: &Event) {
    crate::bindings::roster::hub::events::publish(event);
}

/// The imports, provided natively.
#[cfg(not(target_arch = "wasm32"))]
pub trait Host {
    /// `store.execute`.
    fn execute(&self, batches: &[Batch]) -> Result<Vec<BatchOutcome>, StoreError>;
    /// `events.publish`.
    fn publish(&self, event: &Event);
}

#[cfg(not(target_arch = "wasm32"))]
thread_local! {
    static HOST: std::cell::RefCell<Option<std::rc::Rc<dyn Host>>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes `host` serve the rules called on this thread, replacing any before it.
#[cfg(not(target_arch = "wasm32"))]
pub fn install(host: std::rc::Rc<dyn Host>) {
    HOST.with(|slot| *slot.borrow_mut() = Some(host));
}

#[cfg(not(target_arch = "wasm32"))]
fn installed() -> Option<std::rc::Rc<dyn Host>> {
    HOST.with(|slot| slot.borrow().clone())
}

/// Runs batches on the installed host; none installed: the store is unavailable.
#[cfg(not(target_arch = "wasm32"))]
pub fn execute(batches: &[Batch]) -> Result<Vec<BatchOutcome>, StoreError> {
    match installed() {
        Some(host) => host.execute(batches),
        None => Err(StoreError::Unavailable(
            "no native host is installed on this thread".into(),
        )),
    }
}

/// Hands an event to the installed host; none installed: dropped.
#[cfg(not(target_arch = "wasm32"))]
pub fn publish(event: &Event) {
    if let Some(host) = installed() {
        host.publish(event);
    }
}
