//! Notifications after a deploy or rollback: what is sent ([`Notification`]), to every target at
//! once with the same retries and timeouts ([`send_all`]); the transports are in `http.rs`
//! (Slack, Discord and generic JSON webhooks) and `email.rs` (SMTP).
//!
//! A notification never changes a run's outcome: every failure becomes a `Warning` event and a
//! `Delivery` with `ok: false`. Webhook URLs carry tokens and SMTP servers take passwords, so no
//! text produced here (errors, warnings) ever contains a target's URL, its parts or a password.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::sleep;

use crate::config::{Notify, NotifyEvent, NotifyKind};
use crate::proxy::protocol::{Outcome, RunKind};
use crate::redact::Redactor;
use crate::report::Report;
use crate::report::Reporter;
use crate::util::truncate_chars;

mod email;
mod http;

pub use email::{SmtpSecurity, SmtpUrl, email_body, email_subject};
pub use http::payload;

/// Attempts per target, and the pause before each retry. Worst case per target:
/// `MAX_ATTEMPTS * timeout + sum(BACKOFF)`; targets run concurrently, so that bounds the total.
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(400)];

/// How much of a failure reason goes into a chat message; the webhook payload and the email get
/// all of it.
const CHAT_REASON_CHARS: usize = 300;

/// What happened, as sent to every target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub event: NotifyEvent,
    pub app: String,
    pub env: String,
    pub version: String,
    /// The release that was live before this run.
    pub previous: Option<String>,
    /// `live`, `failed` or `rolled_back`.
    pub outcome: Outcome,
    pub duration_ms: u64,
    /// The app's public URL (the proxy's address).
    pub url: String,
    pub reason: Option<String>,
}

impl Notification {
    /// The notification for a finished deploy or rollback. A failed run is a `failure` (also when
    /// it was rolled back automatically, as the plan announces); a successful `deployctl rollback`
    /// is a `rollback`.
    pub fn from_report(report: &Report) -> Self {
        let event = if !report.ok {
            NotifyEvent::Failure
        } else if report.kind == RunKind::Rollback {
            NotifyEvent::Rollback
        } else {
            NotifyEvent::Success
        };
        Notification {
            event,
            app: report.app.clone(),
            env: report.env.clone(),
            version: report.version.clone(),
            previous: report.previous.clone(),
            outcome: report.outcome,
            duration_ms: report.duration_ms,
            url: report.url.clone(),
            reason: report.failure.as_ref().map(|f| f.reason.clone()),
        }
    }

    /// One line for humans, e.g. `deployctl: demo 3f2a9c1 is live on production (was 1a2b3c4)
    /// in 42.0s — http://…`.
    pub fn summary(&self) -> String {
        let took = format_ms(self.duration_ms);
        let (app, version, env) = (&self.app, &self.version, &self.env);
        let was = self
            .previous
            .as_deref()
            .map(|p| format!(" (was {p})"))
            .unwrap_or_default();
        let mut text = match (self.event, self.outcome) {
            (NotifyEvent::Success, _) => {
                format!("deployctl: {app} {version} is live on {env}{was} in {took}")
            }
            (NotifyEvent::Rollback, _) => {
                format!("deployctl: {app} rolled back to {version} on {env}{was} in {took}")
            }
            (NotifyEvent::Failure, Outcome::RolledBack) => {
                let to = self.previous.as_deref().unwrap_or("the previous release");
                format!(
                    "deployctl: {app} {version} failed on {env} after {took}, traffic is back on {to}"
                )
            }
            (NotifyEvent::Failure, _) => {
                let before = self
                    .previous
                    .as_deref()
                    .map(|p| format!(" (live before: {p})"))
                    .unwrap_or_default();
                format!("deployctl: {app} {version} failed on {env} after {took}{before}")
            }
        };
        if let Some(reason) = self
            .reason
            .as_deref()
            .map(one_line)
            .filter(|r| !r.is_empty())
        {
            text.push_str(": ");
            text.push_str(&truncate_chars(&reason, CHAT_REASON_CHARS));
        }
        if !self.url.is_empty() && self.event != NotifyEvent::Failure {
            text.push_str(" — ");
            text.push_str(&self.url);
        }
        text
    }
}

/// The result of notifying one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub kind: NotifyKind,
    pub ok: bool,
    pub attempts: u32,
    /// Why the last attempt failed; never contains the target's URL.
    pub error: Option<String>,
}

/// Sends `n` to every target subscribed to its event, concurrently, and returns one `Delivery`
/// per such target, in the order of `targets`. Failures are reported as warnings, never returned
/// as errors.
pub async fn send_all(
    targets: &[Notify],
    n: &Notification,
    reporter: &dyn Reporter,
) -> Vec<Delivery> {
    let selected: Vec<&Notify> = targets.iter().filter(|t| t.on.contains(&n.event)).collect();
    if selected.is_empty() {
        return Vec::new();
    }
    // One HTTP client for the webhook targets, only when there is one.
    let client = selected
        .iter()
        .any(|t| t.kind != NotifyKind::Email)
        .then(|| {
            http::build_client()
                .map_err(|e| format!("could not set up the HTTP client: {}", innermost(&e)))
        });
    join_all(selected.iter().map(|t| async {
        match (t.kind, &client) {
            (NotifyKind::Email, _) => email::deliver(t, n, reporter).await,
            (_, Some(Ok(client))) => http::deliver(client, t, n, reporter).await,
            // No URL is involved in building a client, but the text goes through the same
            // cleaning as every other error anyway.
            (_, Some(Err(reason))) => {
                let secrets = http::secret_parts(t.url.as_deref().unwrap_or_default());
                failed(t, 0, secrets.redact(reason).into_owned(), reporter)
            }
            (_, None) => failed(t, 0, "no HTTP client".into(), reporter),
        }
    }))
    .await
}

pub fn kind_name(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Slack => "slack",
        NotifyKind::Discord => "discord",
        NotifyKind::Webhook => "webhook",
        NotifyKind::Email => "email",
    }
}

fn failed(target: &Notify, attempts: u32, error: String, reporter: &dyn Reporter) -> Delivery {
    let tries = match attempts {
        0 => String::new(),
        1 => " after 1 attempt".to_string(),
        n => format!(" after {n} attempts"),
    };
    reporter.warn(format!(
        "{} notification failed{tries}: {error}",
        kind_name(target.kind)
    ));
    Delivery {
        kind: target.kind,
        ok: false,
        attempts,
        error: Some(error),
    }
}

/// One attempt's failure, and whether trying again may help.
struct AttemptError {
    text: String,
    retry: bool,
}

/// Runs `attempt` until it succeeds, fails for good, or `MAX_ATTEMPTS` are spent, with `BACKOFF`
/// between attempts (each attempt keeps to the target's `timeout` itself). Every error text goes
/// through `secrets` before it is kept or reported.
async fn with_retries<F, Fut>(
    target: &Notify,
    secrets: &Redactor,
    reporter: &dyn Reporter,
    mut attempt: F,
) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), AttemptError>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt().await {
            Ok(()) => {
                return Delivery {
                    kind: target.kind,
                    ok: true,
                    attempts,
                    error: None,
                };
            }
            Err(e) => {
                let text = secrets.redact(&e.text).into_owned();
                if !e.retry || attempts >= MAX_ATTEMPTS {
                    return failed(target, attempts, text, reporter);
                }
            }
        }
        sleep(BACKOFF[(attempts as usize - 1).min(BACKOFF.len() - 1)]).await;
    }
}

/// `timed out after 300ms`: the text of an attempt that hit the target's timeout.
fn timed_out(per_attempt: Duration) -> AttemptError {
    AttemptError {
        text: format!(
            "timed out after {}",
            humantime::format_duration(per_attempt)
        ),
        retry: true,
    }
}

/// The deadline of one attempt that starts now.
fn attempt_deadline(per_attempt: Duration) -> tokio::time::Instant {
    tokio::time::Instant::from_std(crate::config::Duration::deadline(
        std::time::Instant::now(),
        per_attempt,
    ))
}

/// The plain words for the socket errors that say the server is not there (yet), which a retry
/// may get past.
fn known_io_error(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    use std::io::ErrorKind::*;
    match find_io_error(e)?.kind() {
        ConnectionRefused => Some("connection refused"),
        ConnectionReset => Some("connection reset"),
        ConnectionAborted => Some("connection aborted"),
        UnexpectedEof => Some("the server closed the connection"),
        _ => None,
    }
}

fn find_io_error<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// The most specific message of an error chain (reqwest's outer layers only say "error sending
/// request").
fn innermost(e: &(dyn StdError + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// `42.0s` under a minute, `2m05s` above.
fn format_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let secs = ms / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// Whitespace runs (newlines included) become one space; control characters go.
fn one_line(text: &str) -> String {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Color;

    pub(super) fn note(event: NotifyEvent, outcome: Outcome) -> Notification {
        Notification {
            event,
            app: "demo".into(),
            env: "production".into(),
            version: "3f2a9c1".into(),
            previous: Some("1a2b3c4".into()),
            outcome,
            duration_ms: 42_000,
            url: "http://127.0.0.1:8080".into(),
            reason: None,
        }
    }

    #[test]
    fn success_summary() {
        assert_eq!(
            note(NotifyEvent::Success, Outcome::Live).summary(),
            "deployctl: demo 3f2a9c1 is live on production (was 1a2b3c4) in 42.0s — http://127.0.0.1:8080"
        );
    }

    #[test]
    fn failure_summaries_carry_the_first_line_of_the_reason() {
        let mut n = note(NotifyEvent::Failure, Outcome::RolledBack);
        n.reason = Some("health check failed:\n  status 500".into());
        n.duration_ms = 125_400;
        assert_eq!(
            n.summary(),
            "deployctl: demo 3f2a9c1 failed on production after 2m05s, traffic is back on 1a2b3c4: health check failed: status 500"
        );
        n.outcome = Outcome::Failed;
        n.previous = None;
        assert_eq!(
            n.summary(),
            "deployctl: demo 3f2a9c1 failed on production after 2m05s: health check failed: status 500"
        );
    }

    #[test]
    fn rollback_summary() {
        let mut n = note(NotifyEvent::Rollback, Outcome::Live);
        n.duration_ms = 3_150;
        assert_eq!(
            n.summary(),
            "deployctl: demo rolled back to 3f2a9c1 on production (was 1a2b3c4) in 3.1s — http://127.0.0.1:8080"
        );
    }

    #[test]
    fn from_report_maps_kind_and_result_to_the_event() {
        let mut report = Report {
            ok: true,
            kind: RunKind::Deploy,
            app: "demo".into(),
            env: "staging".into(),
            version: "3f2a9c1".into(),
            color: Color::Green,
            container: "demo-staging-green".into(),
            url: "http://127.0.0.1:8081".into(),
            previous: Some("1a2b3c4".into()),
            outcome: Outcome::Live,
            duration_ms: 1234,
            swap_ms: Some(1.5),
            failure: None,
            steps: vec![],
            hosts: vec![],
            switch_spread_ms: None,
        };
        let n = Notification::from_report(&report);
        assert_eq!(n.event, NotifyEvent::Success);
        assert_eq!(
            (n.version.as_str(), n.previous.as_deref()),
            ("3f2a9c1", Some("1a2b3c4"))
        );
        assert_eq!(
            (n.url.as_str(), n.duration_ms, n.reason.as_deref()),
            ("http://127.0.0.1:8081", 1234, None)
        );

        report.kind = RunKind::Rollback;
        assert_eq!(
            Notification::from_report(&report).event,
            NotifyEvent::Rollback
        );

        report.ok = false;
        report.outcome = Outcome::RolledBack;
        report.failure = Some(crate::report::FailureReport {
            reason: "unhealthy".into(),
            ..Default::default()
        });
        let n = Notification::from_report(&report);
        assert_eq!(
            (n.event, n.outcome, n.reason.as_deref()),
            (NotifyEvent::Failure, Outcome::RolledBack, Some("unhealthy"))
        );
        report.kind = RunKind::Deploy;
        assert_eq!(
            Notification::from_report(&report).event,
            NotifyEvent::Failure
        );
    }

    #[test]
    fn one_line_and_truncate() {
        assert_eq!(one_line(" a\n\tb \u{7}c  "), "a b c");
        assert_eq!(format_ms(0), "0.0s");
        assert_eq!(format_ms(59_949), "59.9s");
        assert_eq!(format_ms(60_000), "1m00s");
    }
}
