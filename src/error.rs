//! Errors of the core, and the one mapping from an error to a process exit code.

use std::fmt;

use crate::engine::EngineError;

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
    /// A Docker Engine failure other than an unreachable engine (see `From<EngineError>`).
    #[error(transparent)]
    Engine(EngineError),
}

/// The one mapping from an engine failure to the error that decides the exit code: an
/// unreachable engine is [`Error::DockerUnreachable`] (4), any other failure a failed run (1).
impl From<EngineError> for Error {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Unreachable { host, reason } => Error::DockerUnreachable { host, reason },
            other => Error::Engine(other),
        }
    }
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
            Error::DeployFailed(_) | Error::Engine(_) => ExitCode::DeployFailed,
        }
    }

    /// The typed error in `err`'s chain, if any: the one place that looks for it.
    pub fn find(err: &anyhow::Error) -> Option<&Error> {
        err.chain().find_map(|e| e.downcast_ref::<Error>())
    }
}

/// The configuration errors in `err`'s chain, whether wrapped in [`Error::Config`] or not.
pub fn config_errors_of(err: &anyhow::Error) -> Option<&ConfigErrors> {
    err.chain().find_map(|e| match e.downcast_ref::<Error>() {
        Some(Error::Config(errs)) => Some(errs),
        _ => e.downcast_ref::<ConfigErrors>(),
    })
}

/// The exit code for any error that reaches the binary's top level: a typed `Error` anywhere in
/// the chain decides, anything else is a failed run.
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    Error::find(err)
        .map(Error::exit_code)
        .unwrap_or(ExitCode::DeployFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_their_exit_codes() {
        let unreachable: Error = EngineError::Unreachable {
            host: "unix:///nowhere.sock".into(),
            reason: "no such file".into(),
        }
        .into();
        assert!(
            matches!(&unreachable, Error::DockerUnreachable { host, .. } if host == "unix:///nowhere.sock"),
            "{unreachable:?}"
        );
        assert_eq!(unreachable.exit_code(), ExitCode::DockerUnreachable);
        let other: Error = EngineError::NotFound("container x".into()).into();
        assert_eq!(other.exit_code(), ExitCode::DeployFailed);
        // Through anyhow, as the commands return it: same text as the engine error, same code.
        let err = anyhow::Error::from(other).context("removing x");
        assert_eq!(format!("{err:#}"), "removing x: not found: container x");
        assert_eq!(exit_code_of(&err), ExitCode::DeployFailed);
    }

    #[test]
    fn the_typed_error_anywhere_in_the_chain_decides() {
        let locked = anyhow::Error::from(Error::Locked {
            message: "held".into(),
        })
        .context("acquiring the lock");
        assert_eq!(exit_code_of(&locked), ExitCode::Locked);
        assert!(matches!(Error::find(&locked), Some(Error::Locked { .. })));
        let term = anyhow::Error::from(Error::Interrupted {
            signal: Signal::Term,
        });
        assert_eq!(exit_code_of(&term) as i32, 143);
        let int = anyhow::Error::from(Error::Interrupted {
            signal: Signal::Int,
        });
        assert_eq!(exit_code_of(&int) as i32, 130);
        assert_eq!(
            exit_code_of(&anyhow::anyhow!("anything else")),
            ExitCode::DeployFailed
        );
        let usage = anyhow::Error::from(Error::Usage("bad flag".into()));
        assert_eq!(exit_code_of(&usage) as i32, 2);
    }

    #[test]
    fn config_errors_are_found_wrapped_or_not() {
        let errs = ConfigErrors(vec![ConfigError {
            file: "deploy.toml".into(),
            line: 3,
            col: 1,
            key: "app.port".into(),
            message: "expected an integer".into(),
            hint: None,
        }]);
        let wrapped = anyhow::Error::from(Error::Config(errs.clone()));
        assert_eq!(config_errors_of(&wrapped), Some(&errs));
        assert_eq!(exit_code_of(&wrapped), ExitCode::Usage);
        let bare = anyhow::Error::from(errs.clone()).context("loading");
        assert_eq!(config_errors_of(&bare), Some(&errs));
        assert_eq!(config_errors_of(&anyhow::anyhow!("other")), None);
    }
}
