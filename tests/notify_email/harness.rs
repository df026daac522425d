//! The harness of the email tests: the SMTP server (tests/fixtures/smtp/server.py on aiosmtpd,
//! killed on drop) and what it received, the targets and notifications the tests send, sending
//! in this process or in a child with an environment of its own, and test certificates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use deployctl::config::{Duration, Notify, NotifyEvent, NotifyKind};
use deployctl::notify::{Notification, send_all};
use deployctl::proxy::protocol::Outcome;
use deployctl::report::{Event, Reporter};
use serde_json::Value;

use crate::support;

/// The attempts' timeout where the server answers: generous, a loaded machine is slow with TLS.
pub const TIMEOUT: StdDuration = StdDuration::from_secs(10);
/// The attempts' timeout where the test waits for it to pass.
pub const SHORT: StdDuration = StdDuration::from_millis(300);
/// The SMTP password of the tests: it must never appear in any output.
pub const PASSWORD: &str = "hunter2-Pa55w0rd-canary";
const ALL: &[NotifyEvent] = &[
    NotifyEvent::Success,
    NotifyEvent::Failure,
    NotifyEvent::Rollback,
];

// ------------------------------------------------------------------------------ the server

/// The Python that has aiosmtpd: Debian's (where apt installs it), else the one on PATH.
pub fn python() -> &'static str {
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
pub struct Smtp {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Smtp {
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

    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The messages received so far, in order.
    pub fn messages(&self) -> Vec<Value> {
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

pub fn header<'a>(message: &'a Value, name: &str) -> Vec<&'a str> {
    message["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

pub fn one_header<'a>(message: &'a Value, name: &str) -> &'a str {
    match header(message, name).as_slice() {
        [value] => value,
        other => panic!("{name}: {other:?} in {message:#}"),
    }
}

// ------------------------------------------------------------------------------ the sender

#[derive(Default)]
pub struct Collect(Mutex<Vec<Event>>);

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

pub fn email(smtp_url: &str) -> Notify {
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

pub fn with_login(mut target: Notify) -> Notify {
    target.username_env = Some("NOTIFY_SMTP_USER".into());
    target.password_env = Some("NOTIFY_SMTP_PASSWORD".into());
    target
}

pub fn success() -> Notification {
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

pub fn failure() -> Notification {
    Notification {
        event: NotifyEvent::Failure,
        outcome: Outcome::RolledBack,
        reason: Some("verify: error rate 0.25 > 0.01\nfirst 5xx: GET /checkout".into()),
        ..success()
    }
}

/// What a send did: each delivery as JSON, and the warnings.
#[derive(Debug)]
pub struct Sent {
    pub deliveries: Vec<Value>,
    pub warnings: Vec<String>,
    /// Everything the sender printed (the child's whole output).
    pub output: String,
}

impl Sent {
    pub fn only(&self) -> (bool, u64, &str) {
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

pub async fn send(targets: &[Notify], n: &Notification) -> Sent {
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
pub fn send_in_child(targets: &[Notify], event: NotifyEvent, env: &[(&str, &str)]) -> Sent {
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

pub fn assert_no_password(sent: &Sent) {
    assert!(
        !sent.output.contains(PASSWORD),
        "the password leaked:\n{}",
        sent.output
    );
}

/// A CA and a certificate it signed for 127.0.0.1, made with openssl: (CA file, cert, key).
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
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
