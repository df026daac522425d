//! deployctl: blue-green deployments on Docker.
//!
//! The library knows nothing of terminals: it reports progress through `output::Reporter`
//! and returns typed errors; `src/main.rs` and `src/commands/` turn those into output and exit codes.

pub mod config;
pub mod engine;
pub mod error;
pub mod health;
pub mod proxy;
pub mod redact;
