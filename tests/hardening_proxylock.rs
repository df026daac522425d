//! Issue 8, items 9, 11 and 12: the proxy's connection limits (idle keep-alive timeout, header
//! read timeout, a bound on open connections), `remove` honouring the deploy lock, and lock
//! contention messages that name the holder (and a dead holder with the exact way out).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::time::Duration;

use support::{App, Run, wait_until};

// ---------------------------------------------------------------- item 11: remove and the lock

#[test]
fn item11_remove_refuses_while_the_lock_is_held_and_force_removes() {
    let app = App::new("dctrmlk");
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert!(app.serving().is_some(), "the first release serves");
    let status = app.status_json();
    let proxy = status["proxy"]["container"]
        .as_str()
        .unwrap_or_else(|| panic!("status names the proxy: {status}"))
        .to_string();

    let held = app.run(&["lock", "acquire", "--reason", "incident 4711"], &[]);
    assert_eq!(held.code, 0, "{held}");
    assert!(app.lock_exists());

    let refused = app.run(&["remove", "--yes"], &[]);
    assert_eq!(
        refused.code, 3,
        "remove must refuse while the lock is held: {refused}"
    );
    assert!(
        refused.stderr.contains("incident 4711"),
        "the refusal names the holder: {refused}"
    );
    assert!(
        refused.stderr.contains("--force"),
        "the refusal says how to remove anyway: {refused}"
    );
    // Nothing was removed: the lock, the proxy and the live release are all still there.
    assert!(app.lock_exists(), "the lock is kept");
    assert!(app.serving().is_some(), "the app still serves");
    assert_eq!(app.container_running(&proxy), Some(true), "proxy kept");

    let forced = app.run(&["remove", "--yes", "--force"], &[]);
    assert_eq!(forced.code, 0, "{forced}");
    assert!(!app.lock_exists(), "--force removes the lock too");
    assert!(app.serving().is_none(), "the environment is gone");
}

// ---------------------------------------------------------------- item 12: lock messages

/// Two `lock acquire` at once, several rounds: exactly one wins, and the loser's message names
/// the winner by its reason (not "taken by someone else").
#[test]
fn item12_lock_race_loser_names_the_holder() {
    let app = App::new("dctlkrace");
    // Builds the proxy image the lock container is created from, outside the race.
    let warm = app.run(&["lock", "acquire", "--reason", "warm-up"], &[]);
    assert_eq!(warm.code, 0, "{warm}");
    let released = app.run(&["lock", "release"], &[]);
    assert_eq!(released.code, 0, "{released}");

    for round in 0..4 {
        let reasons = [format!("racer-a-{round}"), format!("racer-b-{round}")];
        let children: Vec<_> = reasons
            .iter()
            .map(|reason| {
                app.command(&["lock", "acquire", "--reason", reason], &[])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn deployctl lock acquire")
            })
            .collect();
        let runs: Vec<Run> = children
            .into_iter()
            .map(|c| Run::from(c.wait_with_output().expect("wait for lock acquire")))
            .collect();
        let winners: Vec<usize> = (0..2).filter(|&i| runs[i].code == 0).collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one wins:\n{}\n{}",
            runs[0],
            runs[1]
        );
        let (winner, loser) = (winners[0], 1 - winners[0]);
        assert_eq!(runs[loser].code, 3, "round {round}: {}", runs[loser]);
        assert!(
            runs[loser].stderr.contains(&reasons[winner]),
            "round {round}: the loser names the holder ({}): {}",
            reasons[winner],
            runs[loser]
        );
        assert!(
            !runs[loser].stderr.contains("someone else"),
            "round {round}: {}",
            runs[loser]
        );
        let released = app.run(&["lock", "release"], &[]);
        assert_eq!(released.code, 0, "{released}");
        assert!(!app.lock_exists());
    }
}

/// A deploy killed with SIGKILL while it holds the lock leaves a lock whose pid is dead on this
/// host: the next deploy says so and prints the exact command that breaks it, which works.
#[test]
fn item12_deploy_reports_a_dead_holder_with_the_exact_release_command() {
    let app = App::new("dctlkdead");
    let mut killed = app.spawn_watched(&["deploy"], &[], support::phase_done("lock"));
    killed.wait_trigger(Duration::from_secs(180));
    let ended = killed.kill9();
    assert!(ended.code.is_none(), "killed by SIGKILL: {ended}");
    assert!(app.lock_exists(), "the killed deploy left its lock");

    let blocked = app.run(&["deploy"], &[]);
    assert_eq!(blocked.code, 3, "{blocked}");
    assert!(
        blocked.stderr.contains("stale") && blocked.stderr.contains("no longer runs on this host"),
        "the dead holder is recognised: {blocked}"
    );
    let command = blocked
        .stderr
        .split('`')
        .find(|s| s.starts_with("deployctl lock release --force"))
        .unwrap_or_else(|| panic!("no `deployctl lock release --force …` command: {blocked}"))
        .to_string();
    // The exact command, run as printed (from another directory), breaks the lock.
    let words = shell_words::split(&command).expect("a shell command");
    let other_dir = tempfile::tempdir().expect("tempdir");
    let broken = std::process::Command::new(support::deployctl_bin())
        .args(&words[1..])
        .current_dir(other_dir.path())
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("run the printed command");
    let broken = Run::from(broken);
    assert_eq!(broken.code, 0, "`{command}`: {broken}");
    assert!(
        wait_until(Duration::from_secs(5), || !app.lock_exists()),
        "`{command}` removed the lock"
    );
}

// ---------------------------------------------------------------- item 9: proxy connection limits

/// An app whose deploy.toml sets `[proxy]` keys, deployed once (the proxy container is created
/// with those settings).
fn deployed_with_proxy(prefix: &str, proxy_keys: &str) -> App {
    let app = App::new(prefix);
    let path = app.root().join("deploy.toml");
    let mut text = std::fs::read_to_string(&path).expect("read deploy.toml");
    text.push_str(&format!("\n[proxy]\n{proxy_keys}\n"));
    std::fs::write(&path, text).expect("write deploy.toml");
    app.commit("proxy limits");
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 0, "{run}");
    app
}

fn connect(app: &App) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", app.port)).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    stream
}

/// A keep-alive GET on `stream`; returns (status, head, body).
fn keep_alive_get(stream: &mut TcpStream, path: &str) -> Result<(u16, String, String), String> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").map_err(|e| e.to_string())?;
    read_response(stream)
}

/// Reads one response with a Content-Length body.
fn read_response(stream: &mut TcpStream) -> Result<(u16, String, String), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| format!("no content-length: {head:?}"))?;
            if buf.len() >= end + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line: {head:?}"))?;
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Ok((status, head, body));
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed before a full response: {text:?}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("{e} after {text:?}")),
        }
    }
}

/// Whether the proxy closes `stream` within `bound` (reads until EOF or a reset; any bytes
/// that arrive first are returned in the error).
fn closed_within(stream: &mut TcpStream, bound: Duration) -> Result<(), String> {
    stream
        .set_read_timeout(Some(bound))
        .map_err(|e| e.to_string())?;
    let mut chunk = [0u8; 1024];
    match stream.read(&mut chunk) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => Err(format!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        )),
        Err(e) => Err(format!("still open after {bound:?}: {e}")),
    }
}

/// Generous bound for a 1 s limit to act on a loaded machine (the default limits are 60 s and
/// 10 s, and main's only timeout was hyper's 30 s header read timeout).
const CLOSE_BOUND: Duration = Duration::from_secs(20);

#[test]
fn item09_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let app = deployed_with_proxy(
        "dctidle",
        "idle_timeout = \"1s\"\nheader_read_timeout = \"1h\"",
    );
    let mut conn = connect(&app);
    // A request that takes longer than the idle timeout is not cut: it is not idle.
    let (status, _, body) = keep_alive_get(&mut conn, "/slow?ms=2500").expect("slow request");
    assert_eq!(status, 200, "{body}");
    // Keep-alive works: a second request on the same connection.
    let (status, head, _) = keep_alive_get(&mut conn, "/").expect("second request");
    assert_eq!(status, 200);
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // Then, idle, the proxy closes it.
    closed_within(&mut conn, CLOSE_BOUND).expect("the idle connection is closed");
    assert!(app.serving().is_some(), "the proxy still serves");
}

#[test]
fn item09_half_sent_header_is_closed_after_header_read_timeout() {
    let app = deployed_with_proxy(
        "dcthdr",
        "idle_timeout = \"1h\"\nheader_read_timeout = \"1s\"",
    );
    // Opened first and left idle: only the idle timeout (1 h) applies to it.
    let mut idle = connect(&app);
    let mut half = connect(&app);
    write!(half, "GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").expect("half a header");
    closed_within(&mut half, CLOSE_BOUND).expect("the half-sent head is cut");
    // The idle connection outlived the header timeout and still serves.
    let (status, _, body) = keep_alive_get(&mut idle, "/").expect("idle connection still open");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn item09_connections_beyond_max_connections_get_503_and_the_first_still_work() {
    const N: usize = 3;
    let app = deployed_with_proxy("dctmaxc", &format!("max_connections = {N}"));
    let mut first: Vec<TcpStream> = (0..N).map(|_| connect(&app)).collect();
    for (i, conn) in first.iter_mut().enumerate() {
        let (status, _, body) = keep_alive_get(conn, "/").expect("one of the first N");
        assert_eq!(status, 200, "connection {i}: {body}");
    }
    let mut extra = connect(&app);
    let (status, head, body) = keep_alive_get(&mut extra, "/").expect("an answer, not a reset");
    assert_eq!(status, 503, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(body.contains("max_connections"), "a clear reason: {body}");
    closed_within(&mut extra, CLOSE_BOUND).expect("the shed connection is closed");
    for (i, conn) in first.iter_mut().enumerate() {
        let (status, _, body) = keep_alive_get(conn, "/").expect("the first N still work");
        assert_eq!(status, 200, "connection {i}: {body}");
    }
    // A slot comes back when a connection closes.
    drop(first.pop());
    assert!(
        wait_until(Duration::from_secs(20), || {
            let mut conn = connect(&app);
            matches!(keep_alive_get(&mut conn, "/"), Ok((200, _, _)))
        }),
        "a new connection is served once one of the N closed"
    );
}

/// Bad limits are refused where they are written (exit 2 with file:line:col), before any deploy.
#[test]
fn item09_zero_proxy_limits_are_rejected_with_their_location() {
    let app = App::new("dctlimcfg");
    let path = app.root().join("deploy.toml");
    let mut text = std::fs::read_to_string(&path).expect("read deploy.toml");
    let line = text.lines().count() + 3;
    text.push_str(
        "\n[proxy]\nidle_timeout = \"0s\"\nheader_read_timeout = \"0s\"\nmax_connections = 0\n",
    );
    std::fs::write(&path, text).expect("write deploy.toml");
    let run = app.run(&["check"], &[]);
    assert_eq!(run.code, 2, "{run}");
    let all = format!("{}{}", run.stdout, run.stderr);
    for (offset, key, why) in [
        (0, "proxy.idle_timeout", "must be greater than zero"),
        (1, "proxy.header_read_timeout", "must be greater than zero"),
        (2, "proxy.max_connections", "must be at least 1"),
    ] {
        let at = format!("deploy.toml:{}:", line + offset);
        assert!(
            all.lines()
                .any(|l| l.contains(&at) && l.contains(key) && l.contains(why)),
            "{key} at {at}: {why}: {run}"
        );
    }
}
