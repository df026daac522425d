//! Command-line arguments (clap derive). Parsing only: each subcommand's work is in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::{ColorChoice, Format};

/// Blue-green deployments on Docker: checks, build, health-gated switch, automatic rollback.
#[derive(Debug, Parser)]
#[command(name = "deployctl", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Environment: merges environments/<ENV>.toml over deploy.toml
    #[arg(short, long, global = true, env = "DEPLOYCTL_ENV")]
    pub env: Option<String>,
    /// Path of deploy.toml
    #[arg(
        long,
        global = true,
        env = "DEPLOYCTL_CONFIG",
        default_value = "deploy.toml"
    )]
    pub config: PathBuf,
    /// Output format
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub output: Format,
    /// More detail: -v streams build, test, hook and health-check output with info logs; -vv debug
    /// logs; -vvv trace logs (DEPLOYCTL_LOG overrides the log level)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors and the final result
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Colour (NO_COLOR is honoured with auto)
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub color: ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, start the idle colour, gate on health, switch traffic, verify; roll back on failure
    Deploy(DeployArgs),
    /// Switch back to the last good release (or --to VERSION) without a rebuild
    Rollback(RollbackArgs),
    /// The live release: colour, version, container, health
    Status,
    /// The release ledger kept on the Docker host
    Releases,
    /// Validate the configuration and check that Docker is reachable
    Check,
    /// Print the effective configuration (secrets redacted)
    Config(ConfigArgs),
    /// Write a commented deploy.toml and environments/ to start from
    Init(InitArgs),
    /// The deploy lock of an environment
    #[command(subcommand)]
    Lock(LockCommand),
    /// Remove an environment: its containers, proxy, network, lock and images
    Remove(RemoveArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Print the man page (roff): `deployctl man > /usr/local/share/man/man1/deployctl.1`
    Man,
    /// The built-in proxy (runs inside its container)
    #[command(subcommand, hide = true)]
    Proxy(ProxyCommand),
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Release version (default: the git HEAD short sha, `-dirty` when the tree has changes);
    /// not `--version`, which is deployctl's own version
    #[arg(long = "release", value_name = "VERSION")]
    pub version: Option<String>,
    /// Deploy this existing image instead of building one
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
    /// Skip the configured test commands
    #[arg(long)]
    pub skip_tests: bool,
    /// Wait up to this long for another deploy's lock (e.g. 2m; at most 24h)
    #[arg(long, value_name = "DURATION", value_parser = parse_lock_wait)]
    pub lock_wait: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Version to roll back to (a prefix is enough); default: the last good release
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to this long for another deploy's lock (at most 24h)
    #[arg(long, value_name = "DURATION", value_parser = parse_lock_wait)]
    pub lock_wait: Option<std::time::Duration>,
    /// Re-create the release from the current configuration instead of as it ran
    #[arg(long)]
    pub with_current_config: bool,
}

/// The longest `--lock-wait`: a deploy that waits a day for a lock is waiting for nothing.
pub const MAX_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `--lock-wait`: a duration of at most [`MAX_LOCK_WAIT`], checked before anything runs.
fn parse_lock_wait(value: &str) -> Result<std::time::Duration, String> {
    let too_long = || format!("`{value}` is too long: the lock wait is at most 24h");
    match value.parse::<crate::config::Duration>() {
        Ok(d) if d.get() <= MAX_LOCK_WAIT => Ok(d.get()),
        Ok(_) => Err(too_long()),
        // Longer than any config duration, yet a duration.
        Err(_) if humantime::parse_duration(value.trim()).is_ok() => Err(too_long()),
        Err(e) => Err(e),
    }
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the JSON Schema of deploy.toml instead
    #[arg(long)]
    pub schema: bool,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write into
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Application name (default: the directory's name)
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Take the lock (e.g. to freeze deploys during an incident)
    Acquire {
        /// Why; shown to whoever finds the lock
        #[arg(long, default_value = "manual lock")]
        reason: String,
    },
    /// Release the lock
    Release {
        /// Break a lock held by someone else
        #[arg(long)]
        force: bool,
    },
    /// Who holds the lock, since when, and whether it looks stale
    Status,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Do not ask for confirmation
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Remove even while the deploy lock is held (a deploy in progress then fails)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_wait_is_bounded() {
        assert_eq!(
            parse_lock_wait("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert_eq!(parse_lock_wait("24h"), Ok(MAX_LOCK_WAIT));
        assert!(parse_lock_wait("25h").is_err());
        let huge = parse_lock_wait("18446744073709551615s").unwrap_err();
        assert!(huge.contains("at most 24h"), "{huge}");
        assert!(parse_lock_wait("soon").is_err());
    }
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Serve: forward the public port to the live release
    Run {
        #[arg(long, default_value = "0.0.0.0:80")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Close a keep-alive connection idle this long (`proxy.idle_timeout`)
        #[arg(long, default_value = "60s")]
        idle_timeout: humantime::Duration,
        /// Close a connection whose request head is incomplete this long after it began
        #[arg(long, default_value = "10s")]
        header_read_timeout: humantime::Duration,
        /// Answer 503 to connections beyond this many open ones (`proxy.max_connections`)
        #[arg(long, default_value_t = crate::proxy::conn::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// Serve Prometheus metrics (`GET /metrics`) on this address (`proxy.metrics`)
        #[arg(long)]
        metrics: Option<std::net::SocketAddr>,
        /// The `app` label of every metric
        #[arg(long, default_value = "")]
        metrics_app: String,
        /// The `env` label of every metric
        #[arg(long, default_value = "")]
        metrics_env: String,
    },
    /// Health-check a target, swap the live pointer, drain the old target (JSON request)
    Switch {
        /// The JSON request; read as one line from stdin when absent
        #[arg(long)]
        request: Option<String>,
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Live target and traffic statistics (JSON)
    Status {
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Wait for a target to become healthy, printing each probe as a JSON line
    Health {
        /// A JSON HealthSpec; read as one line from stdin when absent (it may hold secret headers)
        #[arg(long)]
        spec: Option<String>,
        /// Watch for this many milliseconds instead of waiting for healthy
        #[arg(long)]
        watch_ms: Option<u64>,
        /// Each check's result is counted in the metrics of the proxy serving this state dir
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Add or update a release record (JSON)
    Record {
        /// The JSON record; read as one line from stdin when absent
        #[arg(long)]
        record: Option<String>,
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// The release ledger (JSON)
    Releases {
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}
