//! deployctl: blue-green deployments on Docker.
//!
//! The library knows nothing of terminals: it reports progress through `report::Reporter` and
//! returns typed errors; `src/commands/` and `src/output.rs` turn those into output and exit codes.

pub mod checks;
pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod error;
pub mod health;
pub mod host;
pub mod init;
pub mod lock;
pub mod names;
pub mod notify;
pub mod output;
pub mod proxy;
pub mod public_url;
pub mod redact;
pub mod release;
pub mod remove;
pub mod report;
pub mod run;
pub mod status;
pub mod util;
pub mod version;
