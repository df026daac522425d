//! One finished run of a command (deployctl, or a command it printed): exit code and both
//! streams, with readers for `--output json` (JSON lines: events, then the result document).

use std::process::Output;

use serde_json::Value;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// What a snapshot holds: exit code, then both streams.
    pub fn transcript(&self) -> String {
        format!(
            "exit code: {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The result document of `--output json`: its last line.
    pub fn json(&self) -> Value {
        let last = self.stdout.lines().rev().find(|l| !l.trim().is_empty());
        serde_json::from_str(last.unwrap_or(""))
            .unwrap_or_else(|e| panic!("the last line of stdout is not JSON ({e}):\n{self}"))
    }

    /// The events `--output json` streamed before the result document, in order.
    pub fn events(&self) -> Vec<Value> {
        let mut lines: Vec<Value> = self
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("a stdout line is not JSON ({e}): {l}\n{self}"))
            })
            .collect();
        lines.pop();
        lines
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}
