//! Errors of the core, and the one mapping from an error to a process exit code.

use std::fmt;

/// Exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Ok = 0,
    DeployFailed = 1,
    Usage = 2,
    Locked = 3,
    DockerUnreachable = 4,
    Interrupted = 130,
    Terminated = 143,
}

/// A configuration problem located in a file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// Path of the file as the user named it (relative where possible).
    pub file: String,
    /// 1-based line; 0 when the problem is not tied to a place in a file.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Dotted key path such as `health.timeout`; empty for syntax errors.
    pub key: String,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        } else {
            write!(f, "{}: ", self.file)?;
        }
        if !self.key.is_empty() {
            write!(f, "`{}`: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in the configuration, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the configuration has {n} error{}:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Errors that decide the exit code. Anything else that reaches the top is a failed deploy (1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Usage(String),
    #[error("{message}")]
    Locked { message: String },
    #[error(
        "cannot reach the Docker Engine at {host}: {reason}\n  hint: start the daemon, or point DOCKER_HOST (or docker.host in deploy.toml) at a reachable engine"
    )]
    DockerUnreachable { host: String, reason: String },
    #[error("interrupted by {signal}")]
    Interrupted { signal: Signal },
    #[error("{0}")]
    DeployFailed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Int,
    Term,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        })
    }
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) | Error::Usage(_) => ExitCode::Usage,
            Error::Locked { .. } => ExitCode::Locked,
            Error::DockerUnreachable { .. } => ExitCode::DockerUnreachable,
            Error::Interrupted {
                signal: Signal::Int,
            } => ExitCode::Interrupted,
            Error::Interrupted {
                signal: Signal::Term,
            } => ExitCode::Terminated,
            Error::DeployFailed(_) => ExitCode::DeployFailed,
        }
    }
}

/// The exit code for any error that reaches the binary's top level: a typed `Error` anywhere in
/// the chain decides, anything else is a failed run.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    err.chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map(Error::exit_code)
        .unwrap_or(ExitCode::DeployFailed)
}
