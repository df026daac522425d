//! Fixed-rate HTTP/1.1 load client for the zero-downtime benchmark (std only; bench/run.sh
//! compiles it with `rustc -O`).
//!
//! `--workers` threads share `--rate` requests per second, each on its own fixed schedule (a late
//! request is sent at once and counted as late; none is skipped, so `sent` equals `planned` unless
//! the client itself fell behind). Every `--fresh-every`-th worker opens a new connection per
//! request (`Connection: close`); the others keep one keep-alive connection and reconnect only
//! after the server closed it. A request fails on a connect, write or read error, a timeout, a
//! status other than 200, or a body not starting with `--expect`. Failed requests are never
//! retried.
//!
//! It runs until `--stop-file` exists (checked every 10 ms) or `--max-seconds` passed, then prints
//! `key=value` lines on stdout; each failure (at most 200) goes to stderr with its time.
//!
//! Usage: loadgen --addr 127.0.0.1:8080 [--path /] [--rate 1000] [--workers 32]
//!                [--fresh-every 4] [--expect "demo-app version="] [--stop-file F] [--max-seconds 300]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A request sent this much after its slot counts as late.
const LATE_AFTER: Duration = Duration::from_millis(10);
const MAX_LOGGED_FAILURES: u64 = 200;
const MAX_BODY: usize = 64 * 1024;

struct Opts {
    addr: SocketAddr,
    path: String,
    rate: f64,
    workers: usize,
    fresh_every: usize,
    expect: String,
    stop_file: Option<PathBuf>,
    max_seconds: f64,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        path: "/".into(),
        rate: 1000.0,
        workers: 32,
        fresh_every: 4,
        expect: "demo-app version=".into(),
        stop_file: None,
        max_seconds: 300.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |what: &str| format!("{flag} {value:?}: not {what}");
        match flag.as_str() {
            "--addr" => o.addr = value.parse().map_err(|_| bad("an IP:port"))?,
            "--path" => o.path = value,
            "--rate" => o.rate = value.parse().map_err(|_| bad("a number"))?,
            "--workers" => o.workers = value.parse().map_err(|_| bad("a whole number"))?,
            "--fresh-every" => o.fresh_every = value.parse().map_err(|_| bad("a whole number"))?,
            "--expect" => o.expect = value,
            "--stop-file" => o.stop_file = Some(PathBuf::from(value)),
            "--max-seconds" => o.max_seconds = value.parse().map_err(|_| bad("a number"))?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    // is_finite and > 0 also reject NaN.
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if !positive(o.rate) || o.workers == 0 || !positive(o.max_seconds) {
        return Err("--rate, --workers and --max-seconds must be positive".into());
    }
    Ok(o)
}

#[derive(Default)]
struct Tally {
    sent: u64,
    ok: u64,
    connect_err: u64,
    io_err: u64,
    timeout: u64,
    non_200: u64,
    bad_body: u64,
    late: u64,
    max_late_us: u64,
    new_conns: u64,
    latencies_us: Vec<u64>,
    versions: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
}

enum Failure {
    Connect(io::Error),
    Io(io::Error),
    Status(u16),
    Body(String),
}

struct Shared {
    stop: AtomicBool,
    /// Microseconds from start to the moment the stop file was seen; 0 while running.
    stopped_at_us: AtomicU64,
    logged: AtomicU64,
    epoch_start_us: u64,
    start: Instant,
}

impl Shared {
    fn log_failure(&self, worker: usize, fresh: bool, what: &str) {
        if self.logged.fetch_add(1, Ordering::Relaxed) < MAX_LOGGED_FAILURES {
            let t = self.start.elapsed().as_secs_f64();
            let conn = if fresh { "new" } else { "keep-alive" };
            eprintln!("fail t={t:.3}s worker={worker} conn={conn} {what}");
        }
    }
}

/// One response: status and body (Content-Length, chunked, or up to the close).
fn read_response(r: &mut BufReader<TcpStream>) -> io::Result<(u16, Vec<u8>, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before the status line",
        ));
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or("");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}"))
    })?;
    let mut close = version == "HTTP/1.0";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the headers",
            ));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((name, value)) = l.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(value.parse().map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                    })?)
                }
                "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
                "connection" => {
                    let v = value.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
                _ => {}
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size_text = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers up to the empty line.
                loop {
                    line.clear();
                    if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            if body.len() + size > MAX_BODY {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            line.clear();
            r.read_line(&mut line)?;
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.by_ref().take(MAX_BODY as u64).read_to_end(&mut body)?;
        close = true;
    }
    Ok((status, body, close))
}

fn connect(addr: &SocketAddr) -> io::Result<BufReader<TcpStream>> {
    let s = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(BufReader::new(s))
}

fn one_request(
    o: &Opts,
    conn: &mut Option<BufReader<TcpStream>>,
    request: &[u8],
    fresh: bool,
    tally: &mut Tally,
) -> Result<String, Failure> {
    if conn.is_none() {
        *conn = Some(connect(&o.addr).map_err(Failure::Connect)?);
        tally.new_conns += 1;
    }
    let Some(r) = conn.as_mut() else {
        return Err(Failure::Io(io::Error::other("no connection")));
    };
    let result = r
        .get_mut()
        .write_all(request)
        .and_then(|()| read_response(r));
    let (status, body, close) = match result {
        Ok(x) => x,
        Err(e) => {
            *conn = None;
            return Err(Failure::Io(e));
        }
    };
    if close || fresh {
        *conn = None;
    }
    *tally.statuses.entry(status).or_default() += 1;
    if status != 200 {
        return Err(Failure::Status(status));
    }
    let text = String::from_utf8_lossy(&body);
    let Some(rest) = text.strip_prefix(o.expect.as_str()) else {
        return Err(Failure::Body(text.chars().take(80).collect()));
    };
    // The demo app answers "demo-app version=V color=C": count responses per version.
    Ok(rest.split_whitespace().next().unwrap_or("").to_string())
}

fn worker(o: Arc<Opts>, shared: Arc<Shared>, index: usize) -> Tally {
    let fresh = o.fresh_every > 0 && index % o.fresh_every == o.fresh_every - 1;
    let per_worker = o.rate / o.workers as f64;
    let interval = Duration::from_secs_f64(1.0 / per_worker);
    // Spread the workers' slots evenly over one interval.
    let offset = Duration::from_secs_f64(index as f64 / o.rate);
    let deadline = shared.start + Duration::from_secs_f64(o.max_seconds);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: deployctl-bench-loadgen\r\n{}\r\n",
        o.path,
        o.addr,
        if fresh { "Connection: close\r\n" } else { "" }
    );
    let mut tally = Tally::default();
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut k: u32 = 0;
    loop {
        let due = shared.start + offset + interval * k;
        k += 1;
        if shared.stop.load(Ordering::Relaxed) || due >= deadline {
            break;
        }
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
            if shared.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let sent_at = Instant::now();
        let late = sent_at.saturating_duration_since(due);
        if late > LATE_AFTER {
            tally.late += 1;
        }
        tally.max_late_us = tally.max_late_us.max(late.as_micros() as u64);
        tally.sent += 1;
        match one_request(&o, &mut conn, request.as_bytes(), fresh, &mut tally) {
            Ok(version) => {
                tally.ok += 1;
                tally
                    .latencies_us
                    .push(sent_at.elapsed().as_micros() as u64);
                *tally.versions.entry(version).or_default() += 1;
            }
            Err(f) => {
                let what = match f {
                    Failure::Connect(e) => {
                        tally.connect_err += 1;
                        format!("kind=connect error={e}")
                    }
                    Failure::Io(e) => {
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) {
                            tally.timeout += 1;
                            format!("kind=timeout error={e}")
                        } else {
                            tally.io_err += 1;
                            format!("kind=io error={e}")
                        }
                    }
                    Failure::Status(s) => {
                        tally.non_200 += 1;
                        format!("kind=status status={s}")
                    }
                    Failure::Body(b) => {
                        tally.bad_body += 1;
                        format!("kind=body body={b:?}")
                    }
                };
                shared.log_failure(index, fresh, &what);
            }
        }
    }
    tally
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() -> ExitCode {
    let o = match parse_opts() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        stopped_at_us: AtomicU64::new(0),
        logged: AtomicU64::new(0),
        epoch_start_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
        start: Instant::now(),
    });
    if let Some(stop_file) = o.stop_file.clone() {
        let shared = Arc::clone(&shared);
        thread::spawn(move || {
            while !shared.stop.load(Ordering::Relaxed) {
                if stop_file.exists() {
                    let at = shared.start.elapsed().as_micros() as u64;
                    shared.stopped_at_us.store(at, Ordering::Relaxed);
                    shared.stop.store(true, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
    }
    let mut handles = Vec::new();
    for i in 0..o.workers {
        let (wo, ws) = (Arc::clone(&o), Arc::clone(&shared));
        let spawned = thread::Builder::new()
            .name(format!("w{i}"))
            .spawn(move || worker(wo, ws, i));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("loadgen: cannot start worker {i}: {e}");
                shared.stop.store(true, Ordering::Relaxed);
                return ExitCode::from(1);
            }
        }
    }
    let mut total = Tally::default();
    let mut join_failed = false;
    for h in handles {
        let Ok(t) = h.join() else {
            join_failed = true;
            continue;
        };
        total.sent += t.sent;
        total.ok += t.ok;
        total.connect_err += t.connect_err;
        total.io_err += t.io_err;
        total.timeout += t.timeout;
        total.non_200 += t.non_200;
        total.bad_body += t.bad_body;
        total.late += t.late;
        total.max_late_us = total.max_late_us.max(t.max_late_us);
        total.new_conns += t.new_conns;
        total.latencies_us.extend(t.latencies_us);
        for (v, n) in t.versions {
            *total.versions.entry(v).or_default() += n;
        }
        for (s, n) in t.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    // The load window ends when the stop file was seen (or at --max-seconds); requests still in
    // flight then are waited for, but no new slot starts.
    let elapsed = match shared.stopped_at_us.load(Ordering::Relaxed) {
        0 => shared.start.elapsed().as_secs_f64().min(o.max_seconds),
        us => us as f64 / 1e6,
    };
    total.latencies_us.sort_unstable();
    let failed = total.sent - total.ok;
    let join = |m: &mut dyn Iterator<Item = String>| m.collect::<Vec<_>>().join(",");
    println!("start_epoch_us={}", shared.epoch_start_us);
    println!("seconds={elapsed:.3}");
    println!("rate_target={}", o.rate);
    println!("planned={:.0}", (elapsed * o.rate).floor());
    println!("sent={}", total.sent);
    println!("achieved_rate={:.1}", total.sent as f64 / elapsed);
    println!("ok={}", total.ok);
    println!("failed={failed}");
    println!("connect_errors={}", total.connect_err);
    println!("io_errors={}", total.io_err);
    println!("timeouts={}", total.timeout);
    println!("non_200={}", total.non_200);
    println!("bad_body={}", total.bad_body);
    println!("late={}", total.late);
    println!("max_late_ms={:.1}", total.max_late_us as f64 / 1000.0);
    println!("new_connections={}", total.new_conns);
    println!("p50_ms={:.2}", percentile(&total.latencies_us, 50.0));
    println!("p99_ms={:.2}", percentile(&total.latencies_us, 99.0));
    println!(
        "max_ms={:.2}",
        total.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    println!(
        "versions={}",
        join(&mut total.versions.iter().map(|(v, n)| format!("{v}:{n}")))
    );
    println!(
        "statuses={}",
        join(&mut total.statuses.iter().map(|(s, n)| format!("{s}:{n}")))
    );
    if join_failed {
        eprintln!("loadgen: a worker panicked");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
