//! Notifications after a deploy or rollback: Slack, Discord and generic JSON webhooks.
//!
//! A notification never changes a run's outcome: every failure becomes a `Warning` event and a
//! `Delivery` with `ok: false`. Webhook URLs carry tokens, so no text produced here (errors,
//! warnings) ever contains the target's URL or its parts.

use std::error::Error as StdError;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::{Instant, sleep, timeout_at};

use crate::config::{Notify, NotifyEvent, NotifyKind};
use crate::proxy::protocol::{Outcome, RunKind};
use crate::redact::Redactor;
use crate::report::Report;
use crate::report::Reporter;
use crate::util::truncate_chars;

/// Attempts per target, and the pause before each retry. Worst case per target:
/// `MAX_ATTEMPTS * timeout + sum(BACKOFF)`; targets run concurrently, so that bounds the total.
const MAX_ATTEMPTS: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(200), Duration::from_millis(400)];

/// Discord rejects messages longer than this (in characters).
const DISCORD_MAX_CHARS: usize = 2000;
/// How much of a failure reason goes into a chat message; the webhook payload gets all of it.
const CHAT_REASON_CHARS: usize = 300;
/// How much of an error response's body is quoted in the error text.
const BODY_SNIPPET_CHARS: usize = 120;

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
    let client = match build_client() {
        Ok(client) => client,
        Err(e) => {
            // No URL is involved in building a client, but the text goes through the same
            // cleaning as every other error anyway.
            let reason = format!("could not set up the HTTP client: {}", innermost(&e));
            return selected
                .iter()
                .map(|t| {
                    failed(
                        t,
                        0,
                        secret_parts(&t.url).redact(&reason).into_owned(),
                        reporter,
                    )
                })
                .collect();
        }
    };
    join_all(selected.iter().map(|t| deliver(&client, t, n, reporter))).await
}

/// The JSON body sent to a target of `kind`.
pub fn payload(kind: NotifyKind, n: &Notification) -> serde_json::Value {
    match kind {
        NotifyKind::Webhook => serde_json::to_value(n).unwrap_or(serde_json::Value::Null),
        NotifyKind::Slack => serde_json::json!({ "text": slack_escape(&n.summary()) }),
        NotifyKind::Discord => serde_json::json!({
            "content": truncate_chars(&n.summary(), DISCORD_MAX_CHARS),
            // A failure reason may contain `@everyone`: never ping anyone.
            "allowed_mentions": { "parse": [] },
        }),
    }
}

pub fn kind_name(kind: NotifyKind) -> &'static str {
    match kind {
        NotifyKind::Slack => "slack",
        NotifyKind::Discord => "discord",
        NotifyKind::Webhook => "webhook",
    }
}

fn build_client() -> Result<reqwest::Client, reqwest::Error> {
    // The crate uses ring, not aws-lc: reqwest (built without a provider) takes the process
    // default. An already installed provider is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("deployctl/", env!("CARGO_PKG_VERSION")))
        // A webhook that redirects is misconfigured; following would turn the POST into a GET.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// One attempt's failure, and whether trying again may help.
struct AttemptError {
    text: String,
    retry: bool,
}

async fn deliver(
    client: &reqwest::Client,
    target: &Notify,
    n: &Notification,
    reporter: &dyn Reporter,
) -> Delivery {
    let secrets = secret_parts(&target.url);
    let url = match reqwest::Url::parse(&target.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        // `ParseError`'s text never quotes the input.
        Ok(_) => {
            return failed(
                target,
                0,
                "the URL must start with http:// or https://".into(),
                reporter,
            );
        }
        Err(e) => return failed(target, 0, format!("the URL is not valid: {e}"), reporter),
    };
    let body = payload(target.kind, n);
    let per_attempt = target.timeout.get();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match attempt(client, &url, &body, per_attempt).await {
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

async fn attempt(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &serde_json::Value,
    per_attempt: Duration,
) -> Result<(), AttemptError> {
    let deadline = Instant::from_std(crate::config::Duration::deadline(
        std::time::Instant::now(),
        per_attempt,
    ));
    let timed_out = || AttemptError {
        text: format!(
            "timed out after {}",
            humantime::format_duration(per_attempt)
        ),
        retry: true,
    };
    let response = match timeout_at(deadline, client.post(url.clone()).json(body).send()).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(e)) if e.is_timeout() => return Err(timed_out()),
        Ok(Err(e)) => return Err(transport_error(e.without_url())),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut text = format!("HTTP {}", status.as_u16());
    if status.is_redirection() {
        text.push_str(" (redirects are not followed)");
    } else if let Some(snippet) = body_snippet(response, deadline).await {
        text.push_str(": ");
        text.push_str(&snippet);
    }
    let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
    Err(AttemptError { text, retry })
}

/// The start of an error response's body, on one line (services say why there: Slack's
/// `no_service`, Discord's `Invalid Webhook Token`). Best effort within the attempt's deadline.
async fn body_snippet(mut response: reqwest::Response, deadline: Instant) -> Option<String> {
    let mut bytes = Vec::new();
    // Enough for the snippet; a huge error page is not read to the end.
    while bytes.len() < BODY_SNIPPET_CHARS * 4 {
        match timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = one_line(&String::from_utf8_lossy(&bytes));
    (!text.is_empty()).then(|| truncate_chars(&text, BODY_SNIPPET_CHARS))
}

fn transport_error(e: reqwest::Error) -> AttemptError {
    if let Some(io) = find_io_error(&e) {
        use std::io::ErrorKind::*;
        let known = match io.kind() {
            ConnectionRefused => Some("connection refused"),
            ConnectionReset => Some("connection reset"),
            ConnectionAborted => Some("connection aborted"),
            UnexpectedEof => Some("the server closed the connection"),
            _ => None,
        };
        if let Some(text) = known {
            return AttemptError {
                text: text.into(),
                retry: true,
            };
        }
    }
    let cause = innermost(&e);
    if e.is_builder() {
        AttemptError {
            text: format!("invalid request: {cause}"),
            retry: false,
        }
    } else if e.is_connect() {
        AttemptError {
            text: format!("could not connect: {cause}"),
            retry: true,
        }
    } else {
        AttemptError {
            text: format!("request failed: {cause}"),
            retry: true,
        }
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

/// Everything of a webhook URL that may be a credential: the whole URL, its path and query, long
/// path segments and query values, user and password.
fn secret_parts(raw: &str) -> Redactor {
    let mut r = Redactor::new();
    r.add(raw);
    r.add(raw.trim());
    if let Ok(url) = reqwest::Url::parse(raw.trim()) {
        r.add(url.as_str());
        r.add(url.path());
        if let Some(q) = url.query() {
            r.add(q);
        }
        // Slack and Discord tokens are path segments of 9+ characters; words such as `api`,
        // `hooks` or `services` are not, and masking them would only garble messages.
        for segment in url.path_segments().into_iter().flatten() {
            if segment.len() >= 9 {
                r.add(segment);
            }
        }
        for (_, value) in url.query_pairs() {
            if value.len() >= 9 {
                r.add(&value);
            }
        }
        r.add(url.username());
        if let Some(password) = url.password() {
            r.add(password);
        }
    }
    r
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

/// Slack treats `&`, `<` and `>` as control characters in message text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Color;

    fn note(event: NotifyEvent, outcome: Outcome) -> Notification {
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
    fn discord_content_fits_the_limit_and_slack_is_escaped() {
        let mut n = note(NotifyEvent::Failure, Outcome::Failed);
        n.reason = Some("x".repeat(5000));
        n.app = "a".repeat(3000);
        let content = payload(NotifyKind::Discord, &n)["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(content.chars().count(), DISCORD_MAX_CHARS);
        assert!(content.ends_with('…'));

        n.app = "demo".into();
        n.reason = Some("<b> & co".into());
        let text = payload(NotifyKind::Slack, &n)["text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(text.ends_with(": &lt;b&gt; &amp; co"), "{text}");
    }

    #[test]
    fn secret_parts_cover_tokens_but_not_short_words() {
        let r = secret_parts("https://hooks.example.com/services/T0K3N-secret/B2?token=abcdefgh12");
        let text = r.redact("x https://hooks.example.com/services/T0K3N-secret/B2?token=abcdefgh12 T0K3N-secret abcdefgh12 services");
        assert_eq!(text, "x *** *** *** services");
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
