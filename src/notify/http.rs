//! The webhook transports: Slack, Discord and generic JSON webhooks, one POST per attempt.
//!
//! Webhook URLs carry tokens: no error text produced here quotes the URL or its parts.

use std::time::Duration;

use tokio::time::{Instant, timeout_at};

use super::{
    AttemptError, Delivery, Notification, attempt_deadline, failed, innermost, known_io_error,
    one_line, timed_out, with_retries,
};
use crate::config::{Notify, NotifyKind};
use crate::redact::Redactor;
use crate::report::Reporter;
use crate::util::truncate_chars;

/// Discord rejects messages longer than this (in characters).
const DISCORD_MAX_CHARS: usize = 2000;
/// How much of an error response's body is quoted in the error text.
const BODY_SNIPPET_CHARS: usize = 120;

/// The JSON body sent to a target of `kind`.
pub fn payload(kind: NotifyKind, n: &Notification) -> serde_json::Value {
    match kind {
        // Email is not sent over HTTP; as JSON it would be the webhook's payload.
        NotifyKind::Webhook | NotifyKind::Email => {
            serde_json::to_value(n).unwrap_or(serde_json::Value::Null)
        }
        NotifyKind::Slack => serde_json::json!({ "text": slack_escape(&n.summary()) }),
        NotifyKind::Discord => serde_json::json!({
            "content": truncate_chars(&n.summary(), DISCORD_MAX_CHARS),
            // A failure reason may contain `@everyone`: never ping anyone.
            "allowed_mentions": { "parse": [] },
        }),
    }
}

pub(super) fn build_client() -> Result<reqwest::Client, reqwest::Error> {
    // The crate uses ring, not aws-lc: reqwest (built without a provider) takes the process
    // default. An already installed provider is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("deployctl/", env!("CARGO_PKG_VERSION")))
        // A webhook that redirects is misconfigured; following would turn the POST into a GET.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

pub(super) async fn deliver(
    client: &reqwest::Client,
    target: &Notify,
    n: &Notification,
    reporter: &dyn Reporter,
) -> Delivery {
    let raw = target.url.as_deref().unwrap_or_default();
    let secrets = secret_parts(raw);
    let url = match reqwest::Url::parse(raw) {
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
    with_retries(target, &secrets, reporter, || {
        attempt(client, &url, &body, per_attempt)
    })
    .await
}

async fn attempt(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: &serde_json::Value,
    per_attempt: Duration,
) -> Result<(), AttemptError> {
    let deadline = attempt_deadline(per_attempt);
    let response = match timeout_at(deadline, client.post(url.clone()).json(body).send()).await {
        Err(_) => return Err(timed_out(per_attempt)),
        Ok(Err(e)) if e.is_timeout() => return Err(timed_out(per_attempt)),
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
    if let Some(text) = known_io_error(&e) {
        return AttemptError {
            text: text.into(),
            retry: true,
        };
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

/// Everything of a webhook URL that may be a credential: the whole URL, its path and query, long
/// path segments and query values, user and password.
pub(super) fn secret_parts(raw: &str) -> Redactor {
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

/// Slack treats `&`, `<` and `>` as control characters in message text.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::super::tests::note;
    use super::*;
    use crate::config::NotifyEvent;
    use crate::proxy::protocol::Outcome;

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
}
