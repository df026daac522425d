//! Email notifications over SMTP (`kind = "email"`): one plain-text message per event with the
//! facts of the other kinds, sent through `smtp_url` with lettre (rustls with ring; no OpenSSL).
//!
//! `smtp://` is a plain connection (for a local relay), `smtp+starttls://` upgrades with STARTTLS
//! and fails when the server does not offer it, `smtps://` is TLS from the first byte; TLS
//! certificates are checked against the system's roots. User name and password come from the
//! environment variables that `username_env` and `password_env` name, read when the message is
//! sent; the password never appears in an error or a warning.

use std::error::Error as StdError;
use std::time::Duration;

use lettre::address::Envelope;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::time::timeout_at;

use super::{
    AttemptError, Delivery, Notification, attempt_deadline, failed, format_ms, innermost,
    known_io_error, one_line, timed_out, with_retries,
};
use crate::config::{Notify, NotifyEvent};
use crate::proxy::protocol::Outcome;
use crate::redact::Redactor;
use crate::report::Reporter;

const URL_HINT: &str = "write `smtp://host:25` (plain, for a local relay), \
                        `smtp+starttls://host:587` (STARTTLS) or `smtps://host:465` (TLS)";

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: no TLS at all.
    Plain,
    /// `smtp+starttls://`: plain first, then STARTTLS, which the server must offer.
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Tls,
}

/// A parsed `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub security: SmtpSecurity,
    /// A name or an IP address (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
}

impl SmtpUrl {
    /// Parses an `smtp_url`; the error is a message and a hint, and neither quotes the URL (it
    /// may hold a password, which is refused).
    pub fn parse(raw: &str) -> Result<SmtpUrl, (String, &'static str)> {
        let url =
            reqwest::Url::parse(raw.trim()).map_err(|e| (format!("not a URL ({e})"), URL_HINT))?;
        let (security, default_port) = match url.scheme() {
            "smtp" => (SmtpSecurity::Plain, 25),
            "smtp+starttls" => (SmtpSecurity::StartTls, 587),
            "smtps" => (SmtpSecurity::Tls, 465),
            other => {
                return Err((
                    format!("scheme `{other}` is not smtp, smtp+starttls or smtps"),
                    URL_HINT,
                ));
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err((
                "the URL holds a user name or password".to_owned(),
                "remove them from the URL: put them in environment variables and name those in \
                 `username_env` and `password_env`",
            ));
        }
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ("no host".to_owned(), URL_HINT))?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err((
                "an SMTP URL has a host and a port, no path, query or fragment".to_owned(),
                URL_HINT,
            ));
        }
        let port = url.port().unwrap_or(default_port);
        if port == 0 {
            return Err(("port 0".to_owned(), "a port is a number from 1 to 65535"));
        }
        Ok(SmtpUrl {
            security,
            host: host.to_owned(),
            port,
        })
    }

    /// `localhost` or a loopback address: a plain connection never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The subject: app, version, environment and what happened, on one line.
pub fn email_subject(n: &Notification) -> String {
    let (app, version, env) = (&n.app, &n.version, &n.env);
    let text = match (n.event, n.outcome) {
        (NotifyEvent::Success, _) => format!("deployctl: {app} {version} is live on {env}"),
        (NotifyEvent::Rollback, _) => {
            format!("deployctl: {app} rolled back to {version} on {env}")
        }
        (NotifyEvent::Failure, Outcome::RolledBack) => {
            format!("deployctl: {app} {version} failed on {env}, rolled back")
        }
        (NotifyEvent::Failure, _) => format!("deployctl: {app} {version} failed on {env}"),
    };
    one_line(&text)
}

/// The plain-text body: the one-line summary, then every fact on a line of its own, then the
/// whole failure reason (as given: the caller has redacted it).
pub fn email_body(n: &Notification) -> String {
    // As the webhook's JSON names them: `failure`, `rolled_back`.
    let name = |v: serde_json::Value| v.as_str().unwrap_or("-").to_owned();
    let event = name(serde_json::to_value(n.event).unwrap_or_default());
    let outcome = name(serde_json::to_value(n.outcome).unwrap_or_default());
    let url = if n.url.is_empty() { "-" } else { &n.url };
    let mut body = format!(
        "{}\n\nEvent:       {event}\nOutcome:     {outcome}\nApp:         {}\nEnvironment: {}\n\
         Version:     {}\nPrevious:    {}\nDuration:    {}\nURL:         {url}\n",
        n.summary(),
        one_line(&n.app),
        one_line(&n.env),
        one_line(&n.version),
        n.previous
            .as_deref()
            .map(one_line)
            .as_deref()
            .unwrap_or("-"),
        format_ms(n.duration_ms),
    );
    if let Some(reason) = n.reason.as_deref().filter(|r| !r.trim().is_empty()) {
        body.push_str("\nReason:\n");
        for line in reason.lines() {
            let line: String = line
                .chars()
                .filter(|c| *c == '\t' || !c.is_control())
                .collect();
            body.push_str("    ");
            body.push_str(line.trim_end());
            body.push('\n');
        }
    }
    body.push_str(concat!(
        "\n-- \ndeployctl ",
        env!("CARGO_PKG_VERSION"),
        "\n"
    ));
    body
}

pub(super) async fn deliver(
    target: &Notify,
    n: &Notification,
    reporter: &dyn Reporter,
) -> Delivery {
    let server = match target.smtp_url.as_deref().map(SmtpUrl::parse) {
        Some(Ok(server)) => server,
        Some(Err((message, _))) => {
            return failed(target, 0, format!("invalid SMTP URL: {message}"), reporter);
        }
        None => return failed(target, 0, "no smtp_url is set".into(), reporter),
    };
    // The config refuses this too; a target built in code gets the same answer.
    let login = target.username_env.is_some() || target.password_env.is_some();
    if login && server.security == SmtpSecurity::Plain && !server.is_loopback() {
        let text = "a plain smtp:// connection to another host would send the password in clear: \
                    use smtp+starttls:// or smtps://";
        return failed(target, 0, text.into(), reporter);
    }
    let mut secrets = Redactor::new();
    let credentials = match credentials(target) {
        Ok(c) => c,
        Err(text) => return failed(target, 0, text, reporter),
    };
    if let Some((_, password)) = &credentials {
        secrets.add(password);
    }
    let (envelope, bytes) = match message(target, n) {
        Ok(m) => (m.envelope().clone(), m.formatted()),
        Err(text) => return failed(target, 0, text, reporter),
    };
    let per_attempt = target.timeout.get();
    let transport = match transport(&server, credentials, per_attempt) {
        Ok(t) => t,
        Err(text) => return failed(target, 0, secrets.redact(&text).into_owned(), reporter),
    };
    with_retries(target, &secrets, reporter, || {
        attempt(&transport, &envelope, &bytes, per_attempt)
    })
    .await
}

/// The user name and password from the environment, when the target names their variables.
fn credentials(target: &Notify) -> Result<Option<(String, String)>, String> {
    let read = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("the environment variable {name} is not set"))
    };
    match (
        target.username_env.as_deref(),
        target.password_env.as_deref(),
    ) {
        (Some(user), Some(password)) => Ok(Some((read(user)?, read(password)?))),
        (None, None) => Ok(None),
        _ => Err("username_env and password_env are set together or not at all".into()),
    }
}

fn message(target: &Notify, n: &Notification) -> Result<Message, String> {
    let parse = |address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|e| format!("`{address}` is not an email address: {e}"))
    };
    let from = parse(target.from.as_deref().unwrap_or_default())?;
    let mut builder = Message::builder()
        .from(from)
        .subject(email_subject(n))
        .message_id(None)
        .user_agent(concat!("deployctl/", env!("CARGO_PKG_VERSION")).to_owned());
    for to in &target.to {
        builder = builder.to(parse(to)?);
    }
    builder
        .header(ContentType::TEXT_PLAIN)
        .body(email_body(n))
        .map_err(|e| format!("could not build the message: {e}"))
}

fn transport(
    server: &SmtpUrl,
    credentials: Option<(String, String)>,
    per_attempt: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls = || {
        TlsParameters::new(server.host.clone())
            .map_err(|e| format!("could not set up TLS: {}", innermost(&e)))
    };
    let tls = match server.security {
        SmtpSecurity::Plain => Tls::None,
        SmtpSecurity::StartTls => Tls::Required(tls()?),
        SmtpSecurity::Tls => Tls::Wrapper(tls()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(server.host.as_str())
        .port(server.port)
        .tls(tls)
        // Each socket operation; `attempt` bounds the whole exchange.
        .timeout(Some(per_attempt));
    if let Some((user, password)) = credentials {
        builder = builder.credentials(Credentials::new(user, password));
    }
    Ok(builder.build())
}

async fn attempt(
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    envelope: &Envelope,
    bytes: &[u8],
    per_attempt: Duration,
) -> Result<(), AttemptError> {
    let deadline = attempt_deadline(per_attempt);
    match timeout_at(deadline, transport.send_raw(envelope, bytes)).await {
        Ok(Ok(_)) => Ok(()),
        Err(_) => Err(timed_out(per_attempt)),
        Ok(Err(e)) if e.is_timeout() => Err(timed_out(per_attempt)),
        Ok(Err(e)) => Err(smtp_error(&e)),
    }
}

/// The words of a failed exchange, and whether another attempt may go through: the server not
/// there (yet) and its 4xx replies may pass, its 5xx replies (refused recipient, wrong password)
/// and TLS failures will not.
fn smtp_error(e: &lettre::transport::smtp::Error) -> AttemptError {
    if let Some(reason) = rustls_error(e) {
        return AttemptError {
            text: format!("TLS failed: {reason}"),
            retry: false,
        };
    }
    if let Some(text) = known_io_error(e) {
        return AttemptError {
            text: text.into(),
            retry: true,
        };
    }
    if let Some(code) = e.status() {
        let reply = e
            .source()
            .map(|s| one_line(&s.to_string()))
            .unwrap_or_default();
        return AttemptError {
            text: format!("SMTP {code}: {reply}")
                .trim_end_matches([' ', ':'])
                .to_owned(),
            retry: e.is_transient(),
        };
    }
    if e.is_tls() {
        return AttemptError {
            text: format!("TLS failed: {}", innermost(e)),
            retry: false,
        };
    }
    AttemptError {
        text: format!("SMTP failed: {}", innermost(e)),
        retry: !e.is_client(),
    }
}

/// The TLS library's own words, when the exchange failed in TLS (an untrusted certificate, a
/// name that does not match): lettre reports those as I/O errors that wrap them.
fn rustls_error(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .map(|i| i as &(dyn StdError + 'static));
        for candidate in [Some(err), inner].into_iter().flatten() {
            if let Some(tls) = candidate.downcast_ref::<rustls::Error>() {
                return Some(tls.to_string());
            }
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::note;
    use super::*;

    #[test]
    fn smtp_urls() {
        let parse = |s: &str| SmtpUrl::parse(s).map_err(|e| e.0);
        let url = |security, host: &str, port| {
            Ok(SmtpUrl {
                security,
                host: host.into(),
                port,
            })
        };
        assert_eq!(
            parse("smtp://127.0.0.1:2525"),
            url(SmtpSecurity::Plain, "127.0.0.1", 2525)
        );
        assert_eq!(parse("smtp://relay"), url(SmtpSecurity::Plain, "relay", 25));
        assert_eq!(
            parse("smtp+starttls://mail.example.com"),
            url(SmtpSecurity::StartTls, "mail.example.com", 587)
        );
        assert_eq!(parse("SMTPS://[::1]/"), url(SmtpSecurity::Tls, "::1", 465));
        assert!(parse("smtp://[::1]:25").is_ok_and(|u| u.is_loopback()));
        assert!(parse("smtp://localhost").is_ok_and(|u| u.is_loopback()));
        assert!(parse("smtp://127.0.0.2").is_ok_and(|u| u.is_loopback()));
        assert!(parse("smtp://mail.example.com").is_ok_and(|u| !u.is_loopback()));

        let err = parse("smtps://bot:hunter2-pw@mail.example.com").unwrap_err();
        assert_eq!(err, "the URL holds a user name or password");
        assert!(parse("http://mail.example.com").is_err());
        assert!(parse("smtp://mail.example.com/inbox").is_err());
        assert!(parse("smtp://mail.example.com?tls=none").is_err());
        assert!(parse("smtp://:25").is_err());
        assert!(parse("smtp://mail.example.com:0").is_err());
        assert!(parse("mail.example.com").is_err());
    }

    #[test]
    fn subject_and_body_carry_the_facts() {
        let mut n = note(NotifyEvent::Failure, Outcome::RolledBack);
        n.reason = Some("verify: error rate 0.25 > 0.01\n  first 5xx: GET /\u{7}x".into());
        assert_eq!(
            email_subject(&n),
            "deployctl: demo 3f2a9c1 failed on production, rolled back"
        );
        let body = email_body(&n);
        assert_eq!(
            body,
            format!(
                "deployctl: demo 3f2a9c1 failed on production after 42.0s, traffic is back on \
             1a2b3c4: verify: error rate 0.25 > 0.01 first 5xx: GET /x\n\n\
             Event:       failure\nOutcome:     rolled_back\nApp:         demo\n\
             Environment: production\nVersion:     3f2a9c1\nPrevious:    1a2b3c4\n\
             Duration:    42.0s\nURL:         http://127.0.0.1:8080\n\n\
             Reason:\n    verify: error rate 0.25 > 0.01\n      first 5xx: GET /x\n\n\
             -- \ndeployctl {}\n",
                env!("CARGO_PKG_VERSION")
            )
        );

        let mut n = note(NotifyEvent::Success, Outcome::Live);
        n.previous = None;
        n.version = "1.2.0\r\nBcc: x@example.com".into();
        assert_eq!(
            email_subject(&n),
            "deployctl: demo 1.2.0 Bcc: x@example.com is live on production"
        );
        assert!(email_body(&n).contains("\nPrevious:    -\n"));
        assert!(!email_body(&n).contains("Reason:"));
        let rollback = note(NotifyEvent::Rollback, Outcome::Live);
        assert_eq!(
            email_subject(&rollback),
            "deployctl: demo rolled back to 3f2a9c1 on production"
        );
    }
}
