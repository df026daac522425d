//! Email notifications (`kind = "email"`) against a real SMTP server on loopback: aiosmtpd
//! (Python; Debian's python3-aiosmtpd, which .ci/run installs) running
//! tests/fixtures/smtp/server.py, which writes every message it accepts to a file the test reads
//! back as the receiver sees it. Credentials and TLS trust come from the environment, so the
//! tests that need them run the sender in a child process (this test binary, its ignored
//! `sender` test) with that environment, and assert on its output.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use deployctl::config::{Duration, Notify, NotifyEvent, NotifyKind};
use deployctl::notify::{Notification, send_all};
use deployctl::proxy::protocol::Outcome;
use deployctl::report::{Event, Reporter};
use serde_json::Value;

mod support;

/// The attempts' timeout where the server answers: generous, a loaded machine is slow with TLS.
const TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// The attempts' timeout where the test waits for it to pass.
const SHORT: StdDuration = StdDuration::from_millis(300);
/// The SMTP password of the tests: it must never appear in any output.
const PASSWORD: &str = "hunter2-Pa55w0rd-canary";
const ALL: &[NotifyEvent] = &[
    NotifyEvent::Success,
    NotifyEvent::Failure,
    NotifyEvent::Rollback,
];

// ------------------------------------------------------------------------------ the server

/// The Python that has aiosmtpd: Debian's (where apt installs it), else the one on PATH.
fn python() -> &'static str {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import aiosmtpd"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect(
            "no Python 3 with aiosmtpd: `apt-get install python3-aiosmtpd` (.ci/run does) or \
             `pip install aiosmtpd`",
        )
}

/// tests/fixtures/smtp/server.py on a free loopback port, killed on drop.
struct Smtp {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let port = support::free_port();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(python())
            .arg("tests/fixtures/smtp/server.py")
            .args(["--port", &port.to_string(), "--out"])
            .arg(&out)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start the SMTP server");
        let mut server = Smtp { child, port, dir };
        let up = support::wait_until(StdDuration::from_secs(20), || {
            server.child.try_wait().ok().flatten().is_none()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "the SMTP server did not start:\n{}", server.stderr());
        server
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The messages received so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(self.dir.path().join("out"))
            .unwrap()
            .filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?;
                let n = name
                    .strip_prefix("msg-")?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((n, path))
            })
            .collect();
        found.sort();
        found
            .iter()
            .map(|(_, p)| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn header<'a>(message: &'a Value, name: &str) -> Vec<&'a str> {
    message["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

fn one_header<'a>(message: &'a Value, name: &str) -> &'a str {
    match header(message, name).as_slice() {
        [value] => value,
        other => panic!("{name}: {other:?} in {message:#}"),
    }
}

// ------------------------------------------------------------------------------ the sender

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn event(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Collect {
    fn warnings(&self) -> Vec<String> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
}

fn email(smtp_url: &str) -> Notify {
    Notify {
        kind: NotifyKind::Email,
        url: None,
        smtp_url: Some(smtp_url.to_owned()),
        from: Some("Deploy Bot <deploy@example.com>".into()),
        to: vec![
            "ops@example.com".into(),
            "Dev Team <dev@example.com>".into(),
        ],
        username_env: None,
        password_env: None,
        on: ALL.to_vec(),
        timeout: Duration(TIMEOUT),
    }
}

fn with_login(mut target: Notify) -> Notify {
    target.username_env = Some("NOTIFY_SMTP_USER".into());
    target.password_env = Some("NOTIFY_SMTP_PASSWORD".into());
    target
}

fn success() -> Notification {
    Notification {
        event: NotifyEvent::Success,
        app: "demo".into(),
        env: "production".into(),
        version: "3f2a9c1".into(),
        previous: Some("1a2b3c4".into()),
        outcome: Outcome::Live,
        duration_ms: 42_000,
        url: "http://127.0.0.1:8080".into(),
        reason: None,
    }
}

fn failure() -> Notification {
    Notification {
        event: NotifyEvent::Failure,
        outcome: Outcome::RolledBack,
        reason: Some("verify: error rate 0.25 > 0.01\nfirst 5xx: GET /checkout".into()),
        ..success()
    }
}

/// What a send did: each delivery as JSON, and the warnings.
#[derive(Debug)]
struct Sent {
    deliveries: Vec<Value>,
    warnings: Vec<String>,
    /// Everything the sender printed (the child's whole output).
    output: String,
}

impl Sent {
    fn only(&self) -> (bool, u64, &str) {
        let [d] = self.deliveries.as_slice() else {
            panic!("one delivery expected: {self:?}")
        };
        let error = d["error"].as_str().unwrap_or("");
        (
            d["ok"].as_bool().unwrap(),
            d["attempts"].as_u64().unwrap(),
            error,
        )
    }
}

async fn send(targets: &[Notify], n: &Notification) -> Sent {
    let reporter = Collect::default();
    let deliveries = send_all(targets, n, &reporter).await;
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|d| serde_json::to_value(d).unwrap())
        .collect();
    let events = serde_json::to_string(&*reporter.0.lock().unwrap()).unwrap();
    let output = format!("{deliveries:?}\n{events}");
    Sent {
        deliveries,
        warnings: reporter.warnings(),
        output,
    }
}

/// Sends from a child process (the ignored `sender` test of this binary) with `env` added to its
/// environment: the credentials' variables, `SSL_CERT_FILE`.
fn send_in_child(targets: &[Notify], event: NotifyEvent, env: &[(&str, &str)]) -> Sent {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "sender",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "NOTIFY_EMAIL_TEST_TARGETS",
            serde_json::to_string(targets).unwrap(),
        )
        .env(
            "NOTIFY_EMAIL_TEST_EVENT",
            serde_json::to_string(&event).unwrap(),
        )
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the sender failed:\n{output}");
    let result: Value = output
        .lines()
        .find_map(|l| l.split_once("SENT ").map(|(_, json)| json))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no result from the sender:\n{output}"));
    Sent {
        deliveries: result["deliveries"].as_array().unwrap().clone(),
        warnings: serde_json::from_value(result["warnings"].clone()).unwrap(),
        output,
    }
}

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

fn assert_no_password(sent: &Sent) {
    assert!(
        !sent.output.contains(PASSWORD),
        "the password leaked:\n{}",
        sent.output
    );
}

// ------------------------------------------------------------------------------ the tests

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

/// A CA and a certificate it signed for 127.0.0.1, made with openssl: (CA file, cert, key).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output();
        let out = out.expect("openssl (Debian's openssl package)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
        &["-subj", "/CN=deployctl test CA"],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "smtp.key",
            "-out",
            "smtp.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "smtp.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "smtp.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("smtp.pem"),
        dir.join("smtp.key"),
    )
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
