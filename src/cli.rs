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
    /// More detail (-v streams build and health output, -vv debug logs, -vvv trace)
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
    /// Release version (default: the git HEAD short sha, `-dirty` when the tree has changes)
    #[arg(long, value_name = "VERSION")]
    pub version: Option<String>,
    /// Deploy this existing image instead of building one
    #[arg(long, value_name = "TAG")]
    pub image: Option<String>,
    /// Skip the configured test commands
    #[arg(long)]
    pub skip_tests: bool,
    /// Wait up to this long for another deploy's lock (e.g. 2m)
    #[arg(long, value_name = "DURATION")]
    pub lock_wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Version to roll back to (a prefix is enough); default: the last good release
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to this long for another deploy's lock
    #[arg(long, value_name = "DURATION")]
    pub lock_wait: Option<String>,
    /// Re-create the release from the current configuration instead of as it ran
    #[arg(long)]
    pub with_current_config: bool,
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
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub enum ProxyCommand {
    /// Serve: forward the public port to the live release
    Run {
        #[arg(long, default_value = "0.0.0.0:80")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Health-check a target, swap the live pointer, drain the old target (JSON request)
    Switch {
        #[arg(long)]
        request: String,
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
        /// A JSON HealthSpec
        #[arg(long)]
        spec: String,
        /// Watch for this many milliseconds instead of waiting for healthy
        #[arg(long)]
        watch_ms: Option<u64>,
    },
    /// Add or update a release record (JSON)
    Record {
        #[arg(long)]
        record: String,
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// The release ledger (JSON)
    Releases {
        #[arg(long, default_value = crate::proxy::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
}
