//! The defaults the configuration falls back on, shared with the host.

#[path = "../../../wire/defaults.rs"]
mod defaults;
pub use defaults::*;
