//! The defaults the configuration falls back on, shared with the host.

#[path = "../../../wire/defaults.rs"]
#[allow(
    dead_code,
    reason = "the shared defaults serve the host and the gateway too"
)]
mod defaults;
pub use defaults::*;
