//! The built-in reverse proxy: owns the public port, forwards to the live release, switches
//! atomically and drains the old one; with `proxy.metrics`, serves Prometheus metrics. Runs as `deployctl proxy run` in its own container; the CLI
//! controls it only through `docker exec deployctl proxy <command>`, whose client side talks to
//! the server over a unix socket in the state dir.

pub mod conn;
mod control;
mod forward;
mod metrics;
pub mod protocol;
mod route;
mod server;
mod state;
mod stats;
mod switch;
mod upstream;

pub use conn::Limits;
pub use control::{
    client_health_check, client_record, client_releases, client_status, client_switch, socket_path,
};
pub use forward::{NO_LIVE_BODY, UPSTREAM_DOWN_BODY};
pub use metrics::{CONTAINER_METRICS_PORT, MetricsOptions};
pub use server::{RunOptions, Server, run};
pub use state::{LEDGER_FILE, STATE_FILE};

/// Where the proxy keeps its state inside its container (a volume is mounted there).
#[doc(hidden)]
pub const DEFAULT_STATE_DIR: &str = "/state";

/// Port the proxy listens on inside its container; the public port is published onto it.
pub const CONTAINER_PORT: u16 = 80;
