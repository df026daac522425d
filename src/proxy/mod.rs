//! The built-in reverse proxy: owns the public port, forwards to the live release, switches
//! atomically and drains the old one. Runs as `deployctl proxy run` in its own container; the CLI
//! controls it only through `docker exec deployctl proxy <command>`.

pub mod protocol;
