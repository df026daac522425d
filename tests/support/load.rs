//! A load loop: GET / at a fixed rate on a kept-alive connection and on fresh connections, with
//! a count of every answer, to prove that no request fails while something happens.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::{http_get_at, parse_response};

/// Sends GET / at a fixed rate on keep-alive and on fresh connections until stopped, and keeps
/// count of every answer.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub stats: Arc<Mutex<LoadStats>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// Distinct bodies seen, with counts.
    pub bodies: std::collections::BTreeMap<String, u64>,
}

impl Load {
    /// `per_second` requests on each of: one keep-alive connection, new connections.
    pub fn start(port: u16, per_second: u32) -> Load {
        Load::start_at("127.0.0.1", port, per_second)
    }

    /// `start` against `ip:port` (a lab host's published port).
    pub fn start_at(ip: &str, port: u16, per_second: u32) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let period = Duration::from_secs_f64(1.0 / per_second as f64);
        let mut threads = Vec::new();
        for keep_alive in [true, false] {
            let (stop, stats, ip) = (stop.clone(), stats.clone(), ip.to_string());
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let result = if keep_alive {
                        keep_alive_get(&ip, port, &mut conn)
                    } else {
                        http_get_at(&ip, port, "/", Duration::from_secs(10))
                    };
                    let mut s = stats.lock().expect("stats");
                    s.sent += 1;
                    match result {
                        Ok((200, body)) => {
                            s.ok += 1;
                            *s.bodies.entry(body.trim().to_string()).or_default() += 1;
                        }
                        Ok((status, body)) => {
                            s.failed += 1;
                            s.failures.push(format!("{status}: {}", body.trim()));
                        }
                        Err(e) => {
                            s.failed += 1;
                            s.failures.push(e);
                        }
                    }
                    drop(s);
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }));
        }
        Load {
            stop,
            threads,
            stats,
        }
    }

    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats.lock().expect("stats").clone()
    }
}

/// GET / on a kept-alive connection, reconnecting when the server closed it between requests.
fn keep_alive_get(
    ip: &str,
    port: u16,
    conn: &mut Option<TcpStream>,
) -> Result<(u16, String), String> {
    for attempt in 0..2 {
        if conn.is_none() {
            let s = TcpStream::connect((ip, port)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            *conn = Some(s);
        }
        let s = conn.as_mut().expect("connected");
        let fresh = attempt == 1;
        let sent = write!(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let result = sent.map_err(|e| e.to_string()).and_then(|_| {
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => break Err("connection closed".to_string()),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if let Ok((status, body, _)) = parse_response(&buf) {
                            break Ok((status, body));
                        }
                    }
                    Err(e) => break Err(e.to_string()),
                }
            }
        });
        match result {
            Ok(r) => return Ok(r),
            // An idle keep-alive connection closed by the server before our request reached it
            // is retried once on a new connection, as every HTTP client does; nothing was sent.
            Err(e) if buf.is_empty() && !fresh => {
                let _ = e;
                *conn = None;
            }
            Err(e) => return Err(e),
        }
    }
    Err("unreachable retry".into())
}
