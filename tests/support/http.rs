//! A tiny HTTP/1.1 client for the tests (no dependency on deployctl's own client): a GET on a
//! fresh connection, and a GET on a kept-alive one for the load loop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A minimal HTTP/1.1 GET with a fresh connection (`Connection: close`).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http_get_within(port, path, Duration::from_secs(10))
}

/// `http_get` that waits up to `timeout` for the answer (for deliberately slow requests).
pub fn http_get_within(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    http_get_at("127.0.0.1", port, path, timeout)
}

/// A GET on a fresh connection to `ip:port` (a lab host's published port).
pub fn http_get_at(
    ip: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr: std::net::SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{ip}:{port}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    parse_response(&buf).map(|(status, body, _)| (status, body))
}

/// (status, body, bytes consumed) of one response with Content-Length; Err when incomplete.
pub(super) fn parse_response(buf: &[u8]) -> Result<(u16, String, usize), String> {
    let text = String::from_utf8_lossy(buf);
    let head_end = text
        .find("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response: {text:?}"))?;
    let head = &text[..head_end];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(buf.len() - head_end - 4);
    let body_start = head_end + 4;
    if buf.len() < body_start + len {
        return Err("truncated body".into());
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[body_start..body_start + len]).into_owned(),
        body_start + len,
    ))
}
