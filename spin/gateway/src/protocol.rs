//! The wire protocol's JSON and the HTTP API's bodies, shared word for word with the host.

#![allow(
    dead_code,
    reason = "the shared file serves the host's socket transports too"
)]

#[path = "../../../wire/json.rs"]
mod json;
pub use json::*;

#[path = "../../../wire/ops.rs"]
pub mod ops;

#[path = "../../../wire/auth.rs"]
pub mod auth;

#[path = "../../../wire/defaults.rs"]
mod defaults;
pub use defaults::*;
