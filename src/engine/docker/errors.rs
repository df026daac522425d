//! bollard's errors mapped to `EngineError` (unreachable, not found, conflict, API, build).

use bollard::errors::Error as BollardError;

use crate::engine::EngineError;

/// `error: source: source...`, since bollard's own messages hide the cause
/// ("client error (Connect)").
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

pub(super) fn is_connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | NotFound | PermissionDenied | ConnectionReset | TimedOut
            ) {
                return true;
            }
        }
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The one translation of bollard errors.
pub(super) fn map_error(e: BollardError, host: &str) -> EngineError {
    let unreachable = |reason: String| EngineError::Unreachable {
        host: host.to_string(),
        reason,
    };
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => EngineError::NotFound(message),
            409 => EngineError::Conflict(message),
            _ if message.is_empty() => EngineError::Api(format!("HTTP {status_code}")),
            _ => EngineError::Api(message),
        },
        BollardError::SocketNotFoundError(path) => {
            unreachable(format!("socket {path} does not exist"))
        }
        BollardError::RequestTimeoutError => unreachable("the request timed out".to_string()),
        other => {
            let text = error_chain(&other);
            if is_connect_failure(&other) {
                unreachable(text)
            } else {
                EngineError::Api(text)
            }
        }
    }
}

/// During a build every daemon-side failure is a build failure, with the daemon's words.
pub(super) fn build_error(e: BollardError, host: &str) -> EngineError {
    match e {
        BollardError::DockerStreamError { error } => {
            EngineError::Build(error.trim_end().to_string())
        }
        BollardError::DockerResponseServerError { message, .. } => EngineError::Build(message),
        other => match map_error(other, host) {
            EngineError::Api(m) => EngineError::Build(m),
            mapped => mapped,
        },
    }
}
