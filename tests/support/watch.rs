//! A deployctl run followed event by event: it runs with `--output json`, whose stdout is one
//! JSON object per event as it happens (then the result document), so a test can act at an exact
//! moment of a deploy (after a phase, during another) without reading human text.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::App;

/// Picks the event to act on.
pub type Trigger = Box<dyn Fn(&Value) -> bool + Send>;

/// `phase` has started (`phase_started`).
pub fn phase_started(phase: &str) -> Trigger {
    let phase = phase.to_string();
    Box::new(move |e| e["event"] == "phase_started" && e["phase"] == phase.as_str())
}

/// `phase` has finished successfully (`phase_finished` with `ok: true`).
pub fn phase_done(phase: &str) -> Trigger {
    let phase = phase.to_string();
    Box::new(move |e| {
        e["event"] == "phase_finished" && e["phase"] == phase.as_str() && e["ok"] == true
    })
}

/// A health probe failed.
pub fn probe_failed() -> Trigger {
    Box::new(|e| e["event"] == "probe" && !e["probe"]["error"].is_null())
}

/// A deployctl run whose JSON events are followed as they come.
pub struct Watched {
    child: std::process::Child,
    events: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    triggered: Receiver<Value>,
    readers: Vec<JoinHandle<()>>,
}

/// How a watched run ended.
pub struct Ended {
    /// The exit code, or None when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Every JSON line of stdout, in order (the last one is the result document when the run
    /// ended by itself).
    pub events: Vec<Value>,
    pub stderr: String,
}

impl Ended {
    /// Whether `phase` started.
    pub fn started(&self, phase: &str) -> bool {
        self.events.iter().any(|e| phase_started(phase)(e))
    }

    /// Whether `phase` finished successfully.
    pub fn finished(&self, phase: &str) -> bool {
        self.events.iter().any(|e| phase_done(phase)(e))
    }

    /// The `info` and `warning` messages and the result's `error`, one per line: what the run
    /// would have printed as text.
    pub fn messages(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e["event"].as_str() {
                Some("info" | "warning") => e["message"].as_str(),
                None => e["error"].as_str(),
                _ => None,
            })
            .map(|m| format!("{m}\n"))
            .collect()
    }

    /// `phase event detail` of every phase event, in order: what an assertion message shows.
    pub fn phases(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["phase"].is_string())
            .map(|e| {
                let mark = match (e["event"].as_str(), e["ok"].as_bool()) {
                    (Some("phase_started"), _) => "started",
                    (_, Some(true)) => "ok",
                    _ => "failed",
                };
                format!(
                    "{} {mark} {}",
                    e["phase"].as_str().unwrap_or(""),
                    e["detail"]
                )
            })
            .collect()
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?} signal {:?}\n--- phases\n{}\n--- stderr\n{}",
            self.code,
            self.signal,
            self.phases().join("\n"),
            self.stderr
        )
    }
}

impl App {
    /// Starts `deployctl <args> --output json` and follows its events; `trigger` picks the one
    /// [`Watched::wait_trigger`] waits for.
    pub fn spawn_watched(&self, args: &[&str], env: &[(&str, &str)], trigger: Trigger) -> Watched {
        let mut child = self
            .command(args, env)
            .args(["--output", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deployctl");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let err_text = Arc::new(Mutex::new(String::new()));
        let (tx, triggered) = channel();
        let out_reader = {
            let events = events.clone();
            std::thread::spawn(move || {
                let mut fired = false;
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                    if let Ok(mut all) = events.lock() {
                        all.push(event.clone());
                    }
                    // Reported from this thread at once: a polling loop would act up to a poll
                    // interval late, and some phases last only milliseconds.
                    if !fired && trigger(&event) {
                        fired = true;
                        let _ = tx.send(event);
                    }
                }
            })
        };
        let err_reader = {
            let err_text = err_text.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(mut s) = err_text.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            })
        };
        Watched {
            child,
            events,
            stderr: err_text,
            triggered,
            readers: vec![out_reader, err_reader],
        }
    }
}

impl Watched {
    /// Waits for the trigger event and returns it; panics with the run so far when the run ends
    /// or `timeout` passes first.
    pub fn wait_trigger(&mut self, timeout: Duration) -> Value {
        match self.triggered.recv_timeout(timeout) {
            Ok(event) => event,
            Err(e) => {
                let _ = self.child.kill();
                let ended = self.wait();
                panic!("the trigger event never came ({e}):\n{ended}");
            }
        }
    }

    /// The events so far.
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILL (nothing runs after it: no cleanup, no lock release) and reap the process, so its
    /// pid is gone from /proc as the stale-lock check expects.
    pub fn kill9(mut self) -> Ended {
        let _ = self.child.kill();
        self.wait()
    }

    /// Sends `signal` (e.g. `INT`) to the run, as a user's Ctrl-C would.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal}");
    }

    /// Waits for the run to end; after `limit` (only a bound against a hang, never a timing
    /// assertion) kills it and panics with what it printed.
    pub fn wait_within(&mut self, limit: Duration) -> Ended {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return self.wait();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let ended = self.wait();
        panic!("the run did not end within {limit:?}:\n{ended}");
    }

    pub fn wait(&mut self) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().expect("wait for deployctl");
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ended {
            code: status.code(),
            signal: status.signal(),
            events: self.events(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a deploy running against the shared daemon.
        if !self.readers.is_empty() {
            let _ = self.child.kill();
            let _ = self.wait();
        }
    }
}
