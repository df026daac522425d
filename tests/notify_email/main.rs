//! Email notifications (`kind = "email"`) against a real SMTP server on loopback: aiosmtpd
//! (Python; Debian's python3-aiosmtpd, which .ci/run installs) running
//! tests/fixtures/smtp/server.py, which writes every message it accepts to a file the test reads
//! back as the receiver sees it (harness in `harness.rs`). Credentials and TLS trust come from
//! the environment, so the tests that need them run the sender in a child process (this test
//! binary, its ignored `sender` test) with that environment, and assert on its output. The
//! configuration rules of email targets are in `config.rs`.

use deployctl::config::{Duration, Notify, NotifyEvent};
use serde_json::Value;

use harness::*;

mod config;
mod harness;
#[path = "../support/mod.rs"]
mod support;

#[tokio::test]
#[ignore = "the sender of send_in_child, run by the tests with their environment"]
async fn sender() {
    let targets: Vec<Notify> =
        serde_json::from_str(&std::env::var("NOTIFY_EMAIL_TEST_TARGETS").unwrap()).unwrap();
    let event: NotifyEvent =
        serde_json::from_str(&std::env::var("NOTIFY_EMAIL_TEST_EVENT").unwrap()).unwrap();
    let n = if event == NotifyEvent::Failure {
        failure()
    } else {
        success()
    };
    let sent = send(&targets, &n).await;
    let events = sent.output.lines().last().unwrap_or_default().to_owned();
    println!(
        "SENT {}",
        serde_json::json!({ "deliveries": sent.deliveries, "warnings": sent.warnings })
    );
    println!("EVENTS {events}");
}

#[tokio::test]
async fn success_and_failure_arrive_with_their_headers_and_facts() {
    let server = Smtp::start(&[], &[]);
    let target = email(&server.url("smtp"));
    let sent = send(std::slice::from_ref(&target), &success()).await;
    assert_eq!(sent.only(), (true, 1, ""), "{sent:?}");
    assert!(sent.warnings.is_empty(), "{sent:?}");
    let sent = send(&[target], &failure()).await;
    assert_eq!(sent.only(), (true, 1, ""), "{sent:?}");

    let messages = server.messages();
    assert_eq!(messages.len(), 2, "{messages:#?}");
    for m in &messages {
        assert_eq!(m["mail_from"], "deploy@example.com");
        assert_eq!(
            m["rcpt_tos"],
            serde_json::json!(["ops@example.com", "dev@example.com"])
        );
        assert_eq!(one_header(m, "From"), "Deploy Bot <deploy@example.com>");
        assert_eq!(
            one_header(m, "To"),
            "ops@example.com, Dev Team <dev@example.com>"
        );
        assert!(one_header(m, "Date").ends_with("+0000"), "{m:#}");
        let id = one_header(m, "Message-ID");
        assert!(
            id.starts_with('<') && id.ends_with('>') && id.contains('@'),
            "{id}"
        );
        assert_eq!(m["content_type"], "text/plain");
        assert_eq!(m["tls"], false);
        assert_eq!(m["login"], Value::Null);
    }
    assert_ne!(
        one_header(&messages[0], "Message-ID"),
        one_header(&messages[1], "Message-ID")
    );

    let (ok, bad) = (&messages[0], &messages[1]);
    assert_eq!(
        one_header(ok, "Subject"),
        "deployctl: demo 3f2a9c1 is live on production"
    );
    let body = ok["body"].as_str().unwrap();
    assert!(
        body.starts_with(
            "deployctl: demo 3f2a9c1 is live on production (was 1a2b3c4) in 42.0s — \
             http://127.0.0.1:8080\n\n"
        ),
        "{body}"
    );
    for fact in [
        "Event:       success\n",
        "Outcome:     live\n",
        "App:         demo\n",
        "Environment: production\n",
        "Version:     3f2a9c1\n",
        "Previous:    1a2b3c4\n",
        "Duration:    42.0s\n",
        "URL:         http://127.0.0.1:8080\n",
    ] {
        assert!(body.contains(fact), "no {fact:?} in:\n{body}");
    }
    assert!(!body.contains("Reason:"), "{body}");

    assert_eq!(
        one_header(bad, "Subject"),
        "deployctl: demo 3f2a9c1 failed on production, rolled back"
    );
    let body = bad["body"].as_str().unwrap();
    for fact in [
        "Event:       failure\n",
        "Outcome:     rolled_back\n",
        "Reason:\n    verify: error rate 0.25 > 0.01\n    first 5xx: GET /checkout\n",
    ] {
        assert!(body.contains(fact), "no {fact:?} in:\n{body}");
    }
}

#[test]
fn login_with_credentials_from_the_environment() {
    let server_env = [
        ("SMTP_TEST_USER", "deploy-bot"),
        ("SMTP_TEST_PASSWORD", PASSWORD),
    ];
    let server = Smtp::start(&["--auth"], &server_env);
    let target = with_login(email(&server.url("smtp")));
    let login = [
        ("NOTIFY_SMTP_USER", "deploy-bot"),
        ("NOTIFY_SMTP_PASSWORD", PASSWORD),
    ];

    let sent = send_in_child(std::slice::from_ref(&target), NotifyEvent::Success, &login);
    assert_eq!(sent.only(), (true, 1, ""), "{sent:?}");
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["login"], "deploy-bot");
    assert_no_password(&sent);

    // A wrong password is refused for good (5xx): no retry, a warning, and the password that
    // was sent is not quoted anywhere.
    let wrong = format!("{PASSWORD}-wrong");
    let bad_login = [
        ("NOTIFY_SMTP_USER", "deploy-bot"),
        ("NOTIFY_SMTP_PASSWORD", wrong.as_str()),
    ];
    let sent = send_in_child(
        std::slice::from_ref(&target),
        NotifyEvent::Failure,
        &bad_login,
    );
    let (ok, attempts, error) = sent.only();
    assert_eq!((ok, attempts), (false, 1), "{sent:?}");
    assert!(error.starts_with("SMTP 535"), "{sent:?}");
    assert_eq!(
        sent.warnings,
        [format!(
            "email notification failed after 1 attempt: {error}"
        )]
    );
    assert_no_password(&sent);
    assert_eq!(server.messages().len(), 1);

    // A variable that is not set: nothing is sent, the warning names the variable.
    let sent = send_in_child(
        &[target],
        NotifyEvent::Success,
        &[("NOTIFY_SMTP_USER", "deploy-bot")],
    );
    assert_eq!(
        sent.only(),
        (
            false,
            0,
            "the environment variable NOTIFY_SMTP_PASSWORD is not set"
        ),
        "{sent:?}"
    );
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn a_refused_port_warns_after_the_retries_and_never_fails() {
    let target = email(&format!("smtp://127.0.0.1:{}", support::free_port()));
    let sent = send(&[target], &failure()).await;
    assert_eq!(sent.only(), (false, 3, "connection refused"), "{sent:?}");
    assert_eq!(
        sent.warnings,
        ["email notification failed after 3 attempts: connection refused"]
    );
    // Refused each time, never waiting for the timeout (the error would say so).
}

#[tokio::test]
async fn a_silent_server_times_out_per_attempt() {
    // Accepts connections and never greets: each attempt ends at its own timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // The connections stay open until the end of the test (the thread hands them back).
    let held = std::thread::spawn(move || listener.incoming().take(3).collect::<Vec<_>>());
    let mut target = email(&format!("smtp://127.0.0.1:{port}"));
    target.timeout = Duration(SHORT);
    let sent = send(&[target], &success()).await;
    assert_eq!(sent.only(), (false, 3, "timed out after 300ms"), "{sent:?}");
    assert_eq!(
        sent.warnings,
        ["email notification failed after 3 attempts: timed out after 300ms"]
    );
    assert_eq!(
        held.join().unwrap().len(),
        3,
        "three connections, one per attempt"
    );
}

#[tokio::test]
async fn a_4xx_reply_is_retried_and_a_5xx_reply_is_not() {
    let busy = Smtp::start(
        &[
            "--reject",
            "451 4.3.0 try again later",
            "--reject-times",
            "1",
        ],
        &[],
    );
    let sent = send(&[email(&busy.url("smtp"))], &success()).await;
    assert_eq!(sent.only(), (true, 2, ""), "{sent:?}");
    assert!(sent.warnings.is_empty(), "{sent:?}");
    assert_eq!(busy.messages().len(), 1);

    let refusing = Smtp::start(
        &["--reject", "554 5.7.1 not here", "--reject-times", "9"],
        &[],
    );
    let sent = send(&[email(&refusing.url("smtp"))], &success()).await;
    assert_eq!(
        sent.only(),
        (false, 1, "SMTP 554: 5.7.1 not here"),
        "{sent:?}"
    );
    assert!(refusing.messages().is_empty());
}

#[test]
fn starttls_and_smtps_check_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let server_env = [
        ("SMTP_TEST_USER", "deploy-bot"),
        ("SMTP_TEST_PASSWORD", PASSWORD),
    ];
    let starttls = Smtp::start(&["--auth", "--tls", cert, key], &server_env);
    let smtps = Smtp::start(
        &["--auth", "--tls", cert, key, "--implicit-tls"],
        &server_env,
    );
    let targets = [
        with_login(email(&starttls.url("smtp+starttls"))),
        with_login(email(&smtps.url("smtps"))),
    ];
    let login = [
        ("NOTIFY_SMTP_USER", "deploy-bot"),
        ("NOTIFY_SMTP_PASSWORD", PASSWORD),
    ];
    let trusted = [&login[..], &[("SSL_CERT_FILE", ca.to_str().unwrap())]].concat();

    // Trusting the test CA: both arrive over TLS, logged in.
    let sent = send_in_child(&targets, NotifyEvent::Success, &trusted);
    for d in &sent.deliveries {
        assert_eq!(
            (d["ok"].as_bool(), d["attempts"].as_u64()),
            (Some(true), Some(1)),
            "{sent:?}"
        );
    }
    for server in [&starttls, &smtps] {
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{}", server.stderr());
        assert_eq!(
            (&messages[0]["tls"], &messages[0]["login"]),
            (&Value::Bool(true), &Value::from("deploy-bot"))
        );
    }
    assert_no_password(&sent);

    // Not trusting it: the handshake fails, once (a certificate does not get better), and
    // nothing is sent.
    let sent = send_in_child(&targets, NotifyEvent::Failure, &login);
    assert_eq!(sent.deliveries.len(), 2);
    for d in &sent.deliveries {
        let error = d["error"].as_str().unwrap_or("");
        assert_eq!(
            (d["ok"].as_bool(), d["attempts"].as_u64()),
            (Some(false), Some(1)),
            "{sent:?}"
        );
        assert!(
            error.starts_with("TLS failed: ") && error.contains("certificate"),
            "{sent:?}"
        );
    }
    assert_eq!((starttls.messages().len(), smtps.messages().len()), (1, 1));
    assert_no_password(&sent);
}

#[tokio::test]
async fn starttls_is_required_when_asked_for() {
    // A server that does not offer STARTTLS: nothing is sent in clear.
    let plain = Smtp::start(&[], &[]);
    let sent = send(&[email(&plain.url("smtp+starttls"))], &success()).await;
    let (ok, attempts, error) = sent.only();
    assert_eq!((ok, attempts), (false, 1), "{sent:?}");
    assert!(error.contains("STARTTLS"), "{sent:?}");
    assert!(plain.messages().is_empty());
}

#[tokio::test]
async fn credentials_never_go_in_clear_to_another_host() {
    // Refused before anything is read or sent (the config refuses it as well).
    let target = with_login(email("smtp://mail.example.com"));
    let sent = send(&[target], &success()).await;
    assert_eq!(
        sent.only(),
        (
            false,
            0,
            "a plain smtp:// connection to another host would send the password in clear: use \
             smtp+starttls:// or smtps://"
        ),
        "{sent:?}"
    );
    assert_eq!(sent.warnings.len(), 1, "{sent:?}");
}
