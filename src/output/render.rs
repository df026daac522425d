//! Human text of the core's data: a failure report, the prerequisite checks, the deploy lock's
//! holder.

use crate::checks::{CheckResult, Level};
use crate::report::FailureReport;

/// Why a release was refused, as text: the reason, the last health checks, the container's state
/// and its last log lines.
pub fn render_failure(failure: &FailureReport) -> String {
    let mut out = format!("reason: {}\n", failure.reason);
    if !failure.probes.is_empty() {
        out.push_str("last health checks:\n");
        for p in &failure.probes {
            let status = p
                .status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into());
            out.push_str(&format!(
                "  {:>6} ms  status {status}  {}  {}\n",
                p.at_ms,
                p.error.as_deref().unwrap_or("ok"),
                p.body_head
                    .chars()
                    .take(80)
                    .collect::<String>()
                    .replace('\n', " ")
            ));
        }
    }
    if let (Some(name), Some(s)) = (&failure.container, &failure.container_state) {
        out.push_str(&format!(
            "container {name}: {} (exit code {}, OOM killed {}, restarts {})\n",
            s.status, s.exit_code, s.oom_killed, s.restart_count
        ));
    }
    if !failure.logs.is_empty() {
        out.push_str(&format!("last {} log lines:\n", failure.logs.len()));
        for l in &failure.logs {
            out.push_str(&format!("  | {l}\n"));
        }
    }
    out
}

/// The human table: one line per check (`ok`, `warn` or `FAIL`), plus the fix of warnings and
/// errors on the line below.
pub fn render_checks(checks: &[CheckResult]) -> String {
    let mut text = String::new();
    for c in checks {
        let mark = match c.level {
            Level::Ok => "ok  ",
            Level::Warning => "warn",
            Level::Error => "FAIL",
        };
        text.push_str(&format!("{mark}  {:<10} {}\n", c.name, c.detail));
        if let Some(fix) = c.fix.as_ref().filter(|_| c.level != Level::Ok) {
            text.push_str(&format!("      {:<10} fix: {fix}\n", ""));
        }
    }
    text
}
