//! The wire protocol's event envelopes (and the JSON views they use), shared with the host.

#![allow(dead_code, reason = "the shared file serves the host's transports too")]

#[path = "../../../wire/json.rs"]
mod json;
pub use json::*;

#[path = "../../../wire/events.rs"]
mod events;
pub use events::*;
