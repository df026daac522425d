//! demo-app: the small web app deployctl deploys in its README and tests.
//!
//! std only (plus libc's `signal`, which std already links), statically linked, so it runs as the
//! only file of a `FROM scratch` image. HTTP/1.1 with keep-alive, one thread per connection.
//!
//! Environment:
//! - `PORT` (default 8080): listens on `0.0.0.0:$PORT`.
//! - `DEPLOYCTL_VERSION` / `APP_VERSION` (default `dev`), `DEPLOYCTL_COLOR` (default `-`).
//! - `DEMO_MODE`: `healthy` (default), `fail500`, `slow`, `refuse`, `crash`, `flap`,
//!   `never_ready`, `fail_after` (everything 500s after N requests), `unhealthy_after` (only
//!   `/health` fails after N health checks, `/` keeps serving), `fail_first` (`/health` answers 500
//!   to its first N checks, then passes: a slow starter); tuned by `DEMO_SLOW_MS` (10000) and
//!   `DEMO_FAIL_AFTER` (20, the N of the last three).
//! - `DEMO_STARTUP_MS` (default 0): delay before listening, a slow start.
//! - `DEMO_HEALTH_BODY`: when set, `/health` answers 500 with this text (untrusted-output tests).
//! - `DEMO_STOP_DELAY_MS` (default 0): keep serving this long after SIGTERM/SIGINT, a slow stop.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Largest request head (request line + headers) accepted; larger ones get 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest request body read and discarded; larger ones get 413.
const MAX_BODY_BYTES: u64 = 1024 * 1024;
/// An idle keep-alive connection is closed after this long, so threads don't pile up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The signal that asked us to stop; 0 while running.
static TERMINATE: AtomicI32 = AtomicI32::new(0);

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

unsafe extern "C" {
    // glibc's `signal` installs the handler with BSD semantics (persistent, SA_RESTART).
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_signal(signum: i32) {
    // Only an atomic store here: it is async-signal-safe; the main thread does the rest.
    TERMINATE.store(signum, Ordering::SeqCst);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Healthy,
    Fail500,
    Slow,
    Refuse,
    Crash,
    Flap,
    NeverReady,
    FailAfter,
    UnhealthyAfter,
    FailFirst,
}

impl Mode {
    fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "healthy" => Mode::Healthy,
            "fail500" => Mode::Fail500,
            "slow" => Mode::Slow,
            "refuse" => Mode::Refuse,
            "crash" => Mode::Crash,
            "flap" => Mode::Flap,
            "never_ready" => Mode::NeverReady,
            "fail_after" => Mode::FailAfter,
            "unhealthy_after" => Mode::UnhealthyAfter,
            "fail_first" => Mode::FailFirst,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Healthy => "healthy",
            Mode::Fail500 => "fail500",
            Mode::Slow => "slow",
            Mode::Refuse => "refuse",
            Mode::Crash => "crash",
            Mode::Flap => "flap",
            Mode::NeverReady => "never_ready",
            Mode::FailAfter => "fail_after",
            Mode::UnhealthyAfter => "unhealthy_after",
            Mode::FailFirst => "fail_first",
        }
    }
}

struct App {
    version: String,
    color: String,
    mode: Mode,
    slow: Duration,
    fail_after: u64,
    /// Requests served so far (all paths), for `fail_after`.
    served: AtomicU64,
    /// /health requests so far, for `flap`.
    health_hits: AtomicU64,
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
    fn json(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "application/json",
            body: body.into(),
        }
    }
}

fn log(msg: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // A closed stdout must not kill the app: ignore write errors.
    let _ = writeln!(
        io::stdout().lock(),
        "ts={}.{:03} {msg}",
        now.as_secs(),
        now.subsec_millis()
    );
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match env_nonempty(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a whole number")),
    }
}

/// Minimal JSON string escaping for values taken from the environment.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Header values must not carry CR/LF from the environment.
fn header_safe(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

fn route(app: &App, method: &str, target: &str) -> Response {
    // The query string does not select a route.
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/slow" {
        // A long request, for drain tests: `/slow?ms=2000` answers after 2 s like `/`.
        let ms = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("ms="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1000)
            .min(60_000);
        thread::sleep(Duration::from_millis(ms));
        return Response::text(
            200,
            format!(
                "demo-app version={} color={} slow={ms}ms\n",
                app.version, app.color
            ),
        );
    }
    if path != "/" && path != "/health" {
        return Response::text(404, "not found\n");
    }
    if method != "GET" && method != "HEAD" {
        return Response::text(405, "method not allowed\n");
    }
    if app.mode == Mode::FailAfter {
        let n = app.served.fetch_add(1, Ordering::SeqCst) + 1;
        if n > app.fail_after {
            return Response::text(
                500,
                format!(
                    "fail_after mode: failing after {} requests\n",
                    app.fail_after
                ),
            );
        }
    }
    if path == "/" {
        return Response::text(
            200,
            format!("demo-app version={} color={}\n", app.version, app.color),
        );
    }
    let ok = || {
        Response::json(
            200,
            format!(
                "{{\"status\":\"ok\",\"version\":{}}}",
                json_str(&app.version)
            ),
        )
    };
    if let Some(body) = env_nonempty("DEMO_HEALTH_BODY") {
        return Response::text(500, body);
    }
    match app.mode {
        Mode::Healthy | Mode::FailAfter | Mode::Crash | Mode::Refuse => ok(),
        Mode::Fail500 => Response::json(
            500,
            "{\"status\":\"error\",\"error\":\"DEMO_MODE=fail500: this release is broken on purpose\"}",
        ),
        Mode::Slow => {
            thread::sleep(app.slow);
            ok()
        }
        Mode::Flap => {
            if app
                .health_hits
                .fetch_add(1, Ordering::SeqCst)
                .is_multiple_of(2)
            {
                ok()
            } else {
                Response::json(
                    500,
                    "{\"status\":\"error\",\"error\":\"DEMO_MODE=flap: failing every other check\"}",
                )
            }
        }
        Mode::NeverReady => Response::json(503, "{\"status\":\"starting\"}"),
        Mode::FailFirst => {
            if app.health_hits.fetch_add(1, Ordering::SeqCst) >= app.fail_after {
                ok()
            } else {
                Response::json(
                    500,
                    "{\"status\":\"error\",\"error\":\"DEMO_MODE=fail_first: not ready yet\"}",
                )
            }
        }
        Mode::UnhealthyAfter => {
            if app.health_hits.fetch_add(1, Ordering::SeqCst) < app.fail_after {
                ok()
            } else {
                Response::json(
                    500,
                    "{\"status\":\"error\",\"error\":\"DEMO_MODE=unhealthy_after: health checks fail now\"}",
                )
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    out: &mut TcpStream,
    app: &App,
    resp: &Response,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut msg = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-App-Version: {}\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len(),
        header_safe(&app.version),
    );
    msg.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    if !head_only {
        msg.push_str(&resp.body);
    }
    // One write per response: no Nagle delay between head and body.
    out.write_all(msg.as_bytes())?;
    out.flush()
}

/// Reads one line of the request head into `buf`, counting against the head budget.
/// Returns Ok(false) at a clean EOF before any byte.
fn read_head_line(
    r: &mut BufReader<TcpStream>,
    buf: &mut Vec<u8>,
    budget: &mut usize,
) -> io::Result<bool> {
    buf.clear();
    let n = r.by_ref().take(*budget as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(false);
    }
    if n > *budget {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
    }
    *budget -= n;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed mid-request",
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(true)
}

fn serve_connection(stream: TcpStream, app: &App) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        let mut budget = MAX_HEAD_BYTES;
        // Request line; tolerate stray empty lines between requests (RFC 9112 §2.2).
        let request_line = loop {
            match read_head_line(&mut reader, &mut line, &mut budget) {
                Ok(false) => return,
                Ok(true) if line.is_empty() => continue,
                Ok(true) => break String::from_utf8_lossy(&line).into_owned(),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = write_response(
                        &mut out,
                        app,
                        &Response::text(431, "request head too large\n"),
                        false,
                        true,
                    );
                    return;
                }
                Err(_) => return,
            }
        };
        let mut parts = request_line.split_whitespace();
        let (method, path, version) = match (parts.next(), parts.next(), parts.next(), parts.next())
        {
            (Some(m), Some(p), Some(v), None) if v.starts_with("HTTP/1.") => {
                (m.to_string(), p.to_string(), v.to_string())
            }
            _ => {
                log(&format!(
                    "method=- path=- status=400 error={:?}",
                    request_line
                ));
                let _ = write_response(
                    &mut out,
                    app,
                    &Response::text(400, "bad request line\n"),
                    false,
                    true,
                );
                return;
            }
        };
        // HTTP/1.1 keeps the connection open by default, HTTP/1.0 closes it.
        let mut close = version == "HTTP/1.0";
        let mut content_length: u64 = 0;
        let mut chunked = false;
        let mut bad: Option<Response> = None;
        loop {
            match read_head_line(&mut reader, &mut line, &mut budget) {
                Ok(true) if line.is_empty() => break,
                Ok(true) => {
                    let text = String::from_utf8_lossy(&line);
                    let Some((name, value)) = text.split_once(':') else {
                        bad = Some(Response::text(400, "malformed header\n"));
                        continue;
                    };
                    let value = value.trim();
                    match name.trim().to_ascii_lowercase().as_str() {
                        "connection" => {
                            for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                                if token == "close" {
                                    close = true;
                                } else if token == "keep-alive" {
                                    close = false;
                                }
                            }
                        }
                        "content-length" => match value.parse() {
                            Ok(n) => content_length = n,
                            Err(_) => bad = Some(Response::text(400, "invalid Content-Length\n")),
                        },
                        "transfer-encoding" => chunked = true,
                        _ => {}
                    }
                }
                Ok(false) => return,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let _ = write_response(
                        &mut out,
                        app,
                        &Response::text(431, "request head too large\n"),
                        false,
                        true,
                    );
                    return;
                }
                Err(_) => return,
            }
        }
        if bad.is_none() && chunked {
            // Health checks and page loads never send chunked bodies; not worth parsing them.
            bad = Some(Response::text(
                501,
                "chunked request bodies are not supported\n",
            ));
        }
        if bad.is_none() && content_length > MAX_BODY_BYTES {
            bad = Some(Response::text(413, "request body too large\n"));
        }
        if let Some(resp) = bad {
            log(&format!(
                "method={method} path={path} status={}",
                resp.status
            ));
            let _ = write_response(&mut out, app, &resp, false, true);
            return;
        }
        // Discard the body so the next request on this connection starts at the right byte.
        if content_length > 0 {
            match io::copy(&mut reader.by_ref().take(content_length), &mut io::sink()) {
                Ok(n) if n == content_length => {}
                _ => return,
            }
        }
        let resp = route(app, &method, &path);
        log(&format!(
            "method={method} path={path} status={}",
            resp.status
        ));
        if write_response(&mut out, app, &resp, method == "HEAD", close).is_err() || close {
            return;
        }
    }
}

fn run() -> Result<(), String> {
    let version = env_nonempty("DEPLOYCTL_VERSION")
        .or_else(|| env_nonempty("APP_VERSION"))
        .unwrap_or_else(|| "dev".into());
    let color = env_nonempty("DEPLOYCTL_COLOR").unwrap_or_else(|| "-".into());
    let mode_text = env_nonempty("DEMO_MODE").unwrap_or_else(|| "healthy".into());
    let mode = Mode::parse(&mode_text).ok_or_else(|| {
        format!(
            "DEMO_MODE={mode_text:?} is unknown; expected one of healthy, fail500, slow, refuse, crash, flap, never_ready, fail_after, unhealthy_after, fail_first"
        )
    })?;
    let port = match env_nonempty("PORT") {
        None => 8080,
        Some(p) => p
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("PORT={p:?} is not a port number"))?,
    };
    let app = Arc::new(App {
        version,
        color,
        mode,
        slow: Duration::from_millis(env_number("DEMO_SLOW_MS", 10_000)?),
        fail_after: env_number("DEMO_FAIL_AFTER", 20)?,
        served: AtomicU64::new(0),
        health_hits: AtomicU64::new(0),
    });
    let startup = Duration::from_millis(env_number("DEMO_STARTUP_MS", 0)?);
    let stop_delay = Duration::from_millis(env_number("DEMO_STOP_DELAY_MS", 0)?);

    log(&format!(
        "demo-app starting version={} color={} mode={} port={port} startup_ms={}",
        app.version,
        app.color,
        mode.name(),
        startup.as_millis()
    ));

    let listener_app = Arc::clone(&app);
    thread::spawn(move || {
        let app = listener_app;
        if app.mode == Mode::Refuse {
            log("mode=refuse: not listening; connections will be refused");
            return;
        }
        thread::sleep(startup);
        let listener = match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => l,
            Err(e) => {
                log(&format!("cannot listen on 0.0.0.0:{port}: {e}"));
                std::process::exit(1);
            }
        };
        log(&format!("listening on 0.0.0.0:{port}"));
        if app.mode == Mode::Crash {
            thread::spawn(|| {
                thread::sleep(Duration::from_millis(500));
                log("mode=crash: crashing on purpose, exit code 3");
                std::process::exit(3);
            });
        }
        for conn in listener.incoming() {
            match conn {
                Ok(stream) => {
                    let app = Arc::clone(&app);
                    let spawned = thread::Builder::new()
                        .stack_size(256 * 1024)
                        .spawn(move || serve_connection(stream, &app));
                    if let Err(e) = spawned {
                        log(&format!("cannot start a connection thread: {e}"));
                    }
                }
                // e.g. EMFILE under load: back off briefly rather than spin.
                Err(e) => {
                    log(&format!("accept failed: {e}"));
                    thread::sleep(Duration::from_millis(10));
                }
            }
        }
    });

    // The main thread waits for SIGTERM/SIGINT; exiting here ends all connection threads.
    let signum = loop {
        match TERMINATE.load(Ordering::SeqCst) {
            0 => thread::sleep(Duration::from_millis(20)),
            n => break n,
        }
    };
    let name = if signum == SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    if !stop_delay.is_zero() {
        // A slow stop: still serving while `docker stop` waits for us.
        log(&format!(
            "received {name}, still serving for {} ms",
            stop_delay.as_millis()
        ));
        thread::sleep(stop_delay);
    }
    log(&format!("received {name}, exiting"));
    Ok(())
}

fn main() -> ExitCode {
    // As PID 1 in a container, a signal with no handler is ignored: `docker stop` would hang
    // until SIGKILL. Install the handlers before anything else.
    unsafe {
        signal(SIGTERM, on_signal);
        signal(SIGINT, on_signal);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("error: {e}"));
            ExitCode::from(2)
        }
    }
}
