//! The one HTTP stub server of the tests (webhooks, health endpoints, anything deployctl calls):
//! a loopback listener on threads of its own, so sync and async tests use it alike. It records
//! every request and answers each from a handler given the request's index; a reply may be
//! delayed, or never come (the connection stays open until the client gives up). One request per
//! connection (`Connection: close`). Dropping the stub stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request the stub received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path with its query.
    pub path: String,
    /// The request line and headers as received (`\r\n`-separated, without the blank line).
    pub head: String,
    /// Header names in lowercase, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What the stub answers to one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
    /// Waits this long before answering (a slow server, not synchronisation).
    pub delay: Duration,
    /// Never answers: keeps the connection open until the client closes it.
    pub hang: bool,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            body: body.into(),
            headers: Vec::new(),
            delay: Duration::ZERO,
            hang: false,
        }
    }

    /// An answer that never comes.
    pub fn hang() -> Reply {
        Reply {
            hang: true,
            ..Reply::new(0, "")
        }
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(usize, &Request) -> Reply + Send + Sync;

pub struct Stub {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl Stub {
    /// A stub on a fresh loopback port; `handler(n, request)` answers the n-th request (0-based).
    pub fn start(handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
        Stub::serve(listener, handler)
    }

    /// A stub on `port` (e.g. one a client was told about before the server came up).
    pub fn on_port(
        port: u16,
        handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> Stub {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the stub's port");
        Stub::serve(listener, handler)
    }

    /// Answers every request with `status` and an empty body.
    pub fn status(status: u16) -> Stub {
        Stub::start(move |_, _| Reply::new(status, ""))
    }

    fn serve(
        listener: TcpListener,
        handler: impl Fn(usize, &Request) -> Reply + Send + Sync + 'static,
    ) -> Stub {
        let addr = listener.local_addr().expect("stub address");
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (reqs, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (reqs, handler, stopped) = (reqs.clone(), handler.clone(), stopped.clone());
                std::thread::spawn(move || answer(stream, &*handler, &reqs, &stopped));
            }
        });
        Stub {
            addr,
            requests,
            stop,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn log(&self) -> RequestLog {
        RequestLog(self.requests.clone())
    }

    /// How many requests arrived (complete heads).
    pub fn hits(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or(0)
    }
}

/// A handle on a stub's requests, for a handler (of another stub) to look at while it answers.
#[derive(Clone)]
pub struct RequestLog(Arc<Mutex<Vec<Request>>>);

impl RequestLog {
    pub fn hits(&self) -> usize {
        self.0.lock().map(|r| r.len()).unwrap_or(0)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag and closes the listener.
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(stream: TcpStream, handler: &Handler, reqs: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    if stop.load(Ordering::SeqCst) {
        return;
    }
    let Some(request) = read_request(&stream) else {
        return;
    };
    let n = {
        let Ok(mut all) = reqs.lock() else { return };
        all.push(request.clone());
        all.len() - 1
    };
    let reply = handler(n, &request);
    let mut stream = stream;
    if reply.hang {
        // Read until the client goes (or a minute passes): the answer never comes.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let mut buf = [0u8; 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
        return;
    }
    std::thread::sleep(reply.delay);
    let mut head = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let _ = write!(stream, "{head}\r\n{}", reply.body);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// One request: head up to the blank line, then `Content-Length` bytes of body.
fn read_request(stream: &TcpStream) -> Option<Request> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        lines.push(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let mut first = lines.first()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0usize);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        head: lines.join("\r\n"),
        headers,
        body,
    })
}
