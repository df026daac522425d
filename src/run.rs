//! Runs test and hook commands: argv without a shell unless the config asks for one, output
//! streamed line by line, a time limit, and the last lines kept for the failure report.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::report::Reporter;

/// Why a command did not succeed.
#[derive(Debug, Clone)]
pub struct CommandFailure {
    pub command: String,
    pub message: String,
    pub last_lines: Vec<String>,
}

impl std::fmt::Display for CommandFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.command, self.message)?;
        if !self.last_lines.is_empty() {
            write!(f, "; last lines:\n    {}", self.last_lines.join("\n    "))?;
        }
        Ok(())
    }
}

const KEEP_LINES: usize = 20;

/// Runs one command in `cwd` with `env` added to the process environment.
pub async fn run(
    argv: &[String],
    shell: bool,
    cwd: &Path,
    env: &[(String, String)],
    timeout: Duration,
    source: &str,
    reporter: &dyn Reporter,
) -> Result<(), CommandFailure> {
    let shown = if shell {
        argv.join(" ")
    } else {
        crate::output::shell_join(argv)
    };
    let fail = |message: String, last_lines: Vec<String>| CommandFailure {
        command: shown.clone(),
        message,
        last_lines,
    };
    let mut cmd = if shell {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(argv.first().map(String::as_str).unwrap_or(""));
        c
    } else {
        let Some((program, args)) = argv.split_first() else {
            return Err(fail("is empty".into(), vec![]));
        };
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    cmd.current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}"), vec![]))?;
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(KEEP_LINES)));
    let pump = |stream: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let tail = tail.clone();
        async move {
            let Some(stream) = stream else { return };
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                reporter.line(source, &line);
                if let Ok(mut t) = tail.lock() {
                    if t.len() == KEEP_LINES {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        }
    };
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let work = async {
        tokio::join!(pump(stdout), pump(stderr));
        child.wait().await
    };
    let status = tokio::time::timeout(timeout, work).await;
    let last: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();
    match status {
        Err(_) => Err(fail(
            format!("timed out after {}", humantime::format_duration(timeout)),
            last,
        )),
        Ok(Err(e)) => Err(fail(format!("failed: {e}"), last)),
        Ok(Ok(s)) if s.success() => Ok(()),
        Ok(Ok(s)) => Err(fail(
            match s.code() {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".into(),
            },
            last,
        )),
    }
}
