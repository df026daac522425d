//! One line of text per plan step, as `--dry-run` prints it and the executor logs it.

use super::{ProxyAction, Step};

impl Step {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            Step::RunHook {
                hook,
                command,
                shell,
                timeout,
                if_rolled_back,
            } => format!(
                "run {hook} hook{}: {} (timeout {timeout})",
                if *if_rolled_back {
                    " if traffic went back"
                } else {
                    ""
                },
                show_command(command, *shell)
            ),
            Step::RunTest {
                command,
                shell,
                timeout,
            } => {
                format!(
                    "run test: {} (timeout {timeout})",
                    show_command(command, *shell)
                )
            }
            Step::BuildImage {
                image,
                context,
                dockerfile,
                target,
            } => format!(
                "build image {image} from {context} ({dockerfile}{})",
                target
                    .as_ref()
                    .map(|t| format!(", target {t}"))
                    .unwrap_or_default()
            ),
            Step::UseImage { image } => format!("use existing image {image} (no build)"),
            Step::PushImage { image, target } => format!("push {image} as {target}"),
            Step::ShipImage { image, from, to } => format!(
                "ship {image} from {from} to each of {} that lacks it (docker save | docker load, no registry)",
                to.join(", ")
            ),
            Step::AcquireLock { lock, wait, .. } if wait.get().is_zero() => {
                format!("take lock {lock}")
            }
            Step::AcquireLock { lock, wait, .. } => {
                format!("take lock {lock} (waiting up to {wait} for a holder)")
            }
            Step::EnsureNetwork { network } => format!("ensure network {network}"),
            Step::EnsureProxy {
                container,
                image,
                listen,
                action,
            } => match action {
                ProxyAction::Create => {
                    format!("create proxy {container} ({image}) publishing {listen}")
                }
                ProxyAction::Start => format!("start stopped proxy {container}"),
                ProxyAction::Keep => format!("keep proxy {container} publishing {listen}"),
            },
            Step::RemoveContainer {
                container,
                version,
                reason,
            } => {
                format!("remove container {container} ({version}): {reason}")
            }
            Step::StartRelease {
                container,
                version,
                reuse: true,
                ..
            } => {
                format!("start the existing container {container} ({version}), no rebuild")
            }
            Step::StartRelease {
                container,
                image,
                color,
                version,
                network,
                env,
                reuse: false,
            } => format!(
                "start {container} from {image} as {color} (version {version}) on {network}{}",
                if env.is_empty() {
                    String::new()
                } else {
                    format!(", env {}", env.join(", "))
                }
            ),
            Step::WaitHealthy {
                url,
                expect_status,
                healthy_threshold,
                interval,
                timeout,
                deadline,
                host,
                headers,
                expect_body,
                expect_json,
                docker_cmd,
                unhealthy_threshold,
                start_period,
                ..
            } => {
                let mut rules = String::new();
                if let Some(b) = expect_body {
                    rules.push_str(&format!(", body contains {b:?}"));
                }
                if let Some(j) = expect_json {
                    rules.push_str(&format!(", JSON {} = {:?}", j.pointer, j.equals));
                }
                if let Some(h) = host {
                    rules.push_str(&format!(", Host: {h}"));
                }
                if let Some(cmd) = docker_cmd {
                    rules.push_str(&format!(", Docker HEALTHCHECK {}", shell_words::join(cmd)));
                }
                if !headers.is_empty() {
                    let list: Vec<String> =
                        headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    rules.push_str(&format!(", headers {}", list.join(", ")));
                }
                format!(
                    "wait for {healthy_threshold} consecutive passing checks of {url} (status {}, every {interval}, timeout {timeout}, deadline {deadline}{rules}); fail after {unhealthy_threshold} consecutive failing answers{}",
                    expect_status
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join("|"),
                    if start_period.get().is_zero() {
                        String::new()
                    } else {
                        format!(" (none counted in the first {start_period})")
                    }
                )
            }
            Step::Switch {
                from,
                to,
                drain_timeout,
                ..
            } => match from {
                Some(from) => {
                    format!("switch traffic {from} -> {to}, drain {from} up to {drain_timeout}")
                }
                None => format!("switch traffic to {to}"),
            },
            Step::SwitchBack {
                from,
                to,
                drain_timeout,
                ..
            } => format!(
                "if traffic reached {from}: switch it back to {} ({}), drain {from} up to {drain_timeout}",
                to.container, to.version
            ),
            Step::StopFailed { container, version } => {
                format!("stop {container} ({version}) unless it serves; keep it for inspection")
            }
            Step::RecordFailure {
                version,
                rolled_back_to: None,
            } => format!("record release {version} as failed"),
            Step::RecordFailure {
                version,
                rolled_back_to: Some(previous),
            } => format!(
                "record release {version} as rolled_back once traffic is back on {previous}, else as failed"
            ),
            Step::PruneFailed { keep_releases } => format!(
                "prune images beyond the newest {keep_releases} good releases (the failed one stays)"
            ),
            Step::Verify {
                window,
                max_error_rate,
                max_p95_latency,
                ..
            } => format!(
                "verify for {window}: health keeps passing, error rate <= {:.2}%, p95 <= {max_p95_latency}",
                max_error_rate * 100.0
            ),
            Step::StopContainer { container, version } => {
                format!("stop {container} ({version}), keep it for rollback")
            }
            Step::RecordRelease { version, outcome } => {
                format!("record release {version} as {outcome}")
            }
            Step::Prune { images } => format!("prune images {}", images.join(", ")),
            Step::Notify { event, kinds, .. } => format!(
                "notify {} (***) on {}, all at once",
                kinds
                    .iter()
                    .map(|k| format!("{k:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", "),
                format!("{event:?}").to_lowercase()
            ),
            Step::ReleaseLock { lock } => format!("release lock {lock}"),
        }
    }
}

/// Redacted before quoting: quoting a secret that holds quotes or spaces would hide it from the
/// redactor.
fn show_command(command: &[String], shell: bool) -> String {
    if shell {
        format!(
            "sh -c {}",
            crate::output::shell_quote(command.first().map(String::as_str).unwrap_or(""))
        )
    } else {
        crate::output::shell_join(command)
    }
}
