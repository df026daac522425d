//! The one place that decides what reaches the terminal: human progress (indicatif on a TTY,
//! plain lines otherwise), JSON lines with `--output json` (each event on its own line as it
//! happens, then the result document as the last line), and tracing logs on stderr.
//! Every string passes through the redactor on its way out.

pub mod gha;
mod render;
pub use render::{render_checks, render_failure};

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use console::style;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::error::{config_errors_of, exit_code_of};
use crate::redact::Redactor;
use crate::report::{Event, Reporter};

/// Secrets known so far; used by every printer, including tracing's writer.
static REDACTOR: RwLock<Option<Redactor>> = RwLock::new(None);

/// Set in GitHub Actions: every printed line is [`gha::neutralize`]d on its way out.
static NEUTRALIZE: AtomicBool = AtomicBool::new(false);

/// `text` ready for the terminal: redacted, and in GitHub Actions unable to issue workflow commands.
fn printable(text: &str) -> String {
    let text = redact(text);
    if NEUTRALIZE.load(Ordering::Relaxed) {
        gha::neutralize(&text).into_owned()
    } else {
        text
    }
}

pub fn set_redactor(redactor: Redactor) {
    if let Ok(mut r) = REDACTOR.write() {
        *r = Some(redactor);
    }
}

pub fn redact(text: &str) -> String {
    match REDACTOR.read() {
        Ok(guard) => match guard.as_ref() {
            Some(r) => r.redact(text).into_owned(),
            None => text.to_string(),
        },
        Err(_) => text.to_string(),
    }
}

/// A command as shown to people, `shell_words::join` of its redacted arguments: each argument is
/// redacted BEFORE it is quoted, since quoting a secret that holds quotes, spaces or `$` changes
/// its text and the redactor would no longer find it.
pub fn shell_join(argv: &[String]) -> String {
    shell_words::join(argv.iter().map(|a| redact(a)))
}

/// `shell_words::quote` of the redacted `arg` (see [`shell_join`]).
pub fn shell_quote(arg: &str) -> String {
    shell_words::quote(&redact(arg)).into_owned()
}

/// Redacts every string inside a JSON value.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => *s = redact(s),
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

pub struct Output {
    pub format: Format,
    quiet: bool,
    verbose: u8,
    /// Spinners only on an interactive stderr.
    interactive: bool,
    /// ANSI colours on stderr (also for log lines).
    colored: bool,
    spinner: Mutex<Option<ProgressBar>>,
    /// Events so far, repeated in the result document's `events` array (the last line).
    events: Mutex<Vec<Value>>,
    /// Set when running as a GitHub Actions step: masks, groups, annotations, summary, outputs.
    gha: Option<gha::Gha>,
}

impl Output {
    pub fn new(format: Format, color: ColorChoice, quiet: bool, verbose: u8) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let colored = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                stderr_tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        };
        console::set_colors_enabled(colored);
        console::set_colors_enabled_stderr(colored);
        let gha = gha::Gha::from_process_env();
        NEUTRALIZE.store(gha.is_some(), Ordering::Relaxed);
        Output {
            format,
            quiet,
            verbose,
            interactive: stderr_tty && format == Format::Human && !quiet,
            colored,
            spinner: Mutex::new(None),
            events: Mutex::new(Vec::new()),
            gha,
        }
    }

    /// Called as soon as the secrets of the run are known. In GitHub Actions every line of every
    /// secret is masked before anything else is printed (unredacted, or the mask would be `***`).
    pub fn secrets_known(&self, redactor: &Redactor) {
        set_redactor(redactor.clone());
        if self.gha.is_some() && !redactor.is_empty() {
            let masks = gha::mask_lines(redactor.secrets());
            let _ = write!(std::io::stderr(), "{masks}");
        }
    }

    /// A workflow command of our own (groups, annotations): after any untrusted output is fenced off.
    fn gha_command(&self, command: &str) {
        if let Some(gha) = &self.gha {
            if let Some(resume) = gha.after_untrusted() {
                let _ = writeln!(std::io::stderr(), "{resume}");
            }
            let _ = writeln!(std::io::stderr(), "{}", command.trim_end());
        }
    }

    /// The end of a deploy or rollback in GitHub Actions: step summary and step outputs.
    pub fn publish_report(&self, report: &crate::report::Report) {
        if let Some(gha) = &self.gha
            && let Err(e) = gha.publish_report(report, redact)
        {
            self.warn(&format!(
                "could not write the GitHub step summary or outputs: {e}"
            ));
        }
    }

    /// Installs the tracing subscriber: `DEPLOYCTL_LOG` wins, else -v levels; logs go to stderr, redacted.
    pub fn init_logging(&self) {
        let level = match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        let filter =
            tracing_subscriber::EnvFilter::try_from_env("DEPLOYCTL_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(format!("deployctl={level},warn"))
            });
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(|| RedactingWriter)
            .with_ansi(self.colored)
            .with_target(false)
            .try_init();
    }

    fn stderr_line(&self, line: &str) {
        let line = printable(line);
        let spinner = self.spinner.lock().ok();
        match spinner.as_ref().and_then(|s| s.as_ref()) {
            Some(bar) => bar.println(line),
            None => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
        }
    }

    fn set_spinner(&self, message: Option<String>) {
        let Ok(mut slot) = self.spinner.lock() else {
            return;
        };
        match message {
            Some(msg) => {
                let bar = slot.get_or_insert_with(|| {
                    let bar = ProgressBar::new_spinner();
                    bar.set_style(
                        ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bar
                });
                bar.set_message(redact(&msg));
            }
            None => {
                if let Some(bar) = slot.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }

    fn spinner_detail(&self, detail: &str) {
        if let Ok(slot) = self.spinner.lock()
            && let Some(bar) = slot.as_ref()
        {
            let current = bar.message();
            let head = current.split(" · ").next().unwrap_or("").to_string();
            let detail: String = redact(detail).chars().take(80).collect();
            bar.set_message(format!("{head} · {detail}"));
        }
    }

    /// The final result of a command: text for humans on stdout, or the JSON result document as
    /// the last line (with every event of the run in its `events` array).
    pub fn result(&self, human: &str, json: Value) {
        self.set_spinner(None);
        match self.format {
            Format::Human => {
                if !human.is_empty() {
                    print_stdout(printable(human).trim_end());
                }
            }
            Format::Json => {
                let mut doc = json;
                if let Value::Object(map) = &mut doc
                    && let Ok(events) = self.events.lock()
                    && !events.is_empty()
                {
                    map.insert("events".into(), Value::Array(events.clone()));
                }
                print_json_line(&doc);
            }
        }
    }

    /// Reports an error that ends the command, and returns its exit code.
    pub fn error(&self, err: &anyhow::Error) -> i32 {
        self.set_spinner(None);
        let code = exit_code_of(err) as i32;
        let config_errors = config_errors_of(err);
        if let Some(errs) = config_errors {
            self.gha_command(&gha::config_error_annotations(errs, redact));
        } else if self.gha.is_some() {
            self.gha_command(&gha::error_message(&redact(&format!("{err:#}"))));
        }
        match self.format {
            Format::Human => {
                let text = match config_errors {
                    Some(errs) => errs.to_string(),
                    None => format!("{err:#}"),
                };
                let mut lines = text.trim_end().lines();
                if let Some(first) = lines.next() {
                    self.stderr_line(&format!("{} {first}", style("error:").red().bold()));
                }
                for line in lines {
                    self.stderr_line(line);
                }
            }
            Format::Json => {
                let mut doc = serde_json::json!({
                    "ok": false,
                    "exit_code": code,
                    "error": format!("{err:#}"),
                });
                if let Some(errs) = config_errors {
                    doc["errors"] = serde_json::to_value(&errs.0).unwrap_or(Value::Null);
                }
                self.result("", doc);
            }
        }
        code
    }

    pub fn warn(&self, message: &str) {
        self.event(Event::Warning {
            message: message.to_string(),
        });
    }
}

impl Reporter for Output {
    fn event(&self, event: Event) {
        if self.format == Format::Json {
            if let Ok(value) = serde_json::to_value(&event) {
                // Streamed at once (a machine waits on it), and kept for the result document.
                // Under the lock: lines of concurrent events never interleave, and the order on
                // stdout is the order in `events`.
                if let Ok(mut events) = self.events.lock() {
                    print_json_line(&value);
                    events.push(value);
                }
            }
            return;
        }
        match event {
            Event::PhaseStarted { phase, detail } => {
                let msg = if detail.is_empty() {
                    phase
                } else {
                    format!("{phase}: {detail}")
                };
                self.gha_command(&gha::group_start(&redact(&msg)));
                if self.interactive {
                    self.set_spinner(Some(msg));
                } else if !self.quiet {
                    self.stderr_line(&format!("{} {msg}", style("==>").cyan().bold()));
                }
            }
            Event::PhaseFinished {
                phase,
                ok,
                elapsed,
                detail,
            } => {
                self.set_spinner(None);
                if self.quiet && ok {
                    self.gha_command(&gha::group_end());
                    return;
                }
                let mark = if ok {
                    style("✓").green().bold()
                } else {
                    style("✗").red().bold()
                };
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" {detail}")
                };
                self.stderr_line(&format!(
                    "{mark} {phase} {}{detail}",
                    style(format!("({:.1}s)", elapsed.as_secs_f64())).dim()
                ));
                self.gha_command(&gha::group_end());
            }
            Event::Info { message } => {
                if !self.quiet {
                    self.stderr_line(&format!("  {message}"));
                }
            }
            Event::Warning { message } => {
                self.stderr_line(&format!("{} {message}", style("warning:").yellow().bold()));
            }
            Event::Line { source, line } => {
                // Build and test output is untrusted: it must not be able to issue workflow commands.
                if let Some(stop) = self.gha.as_ref().and_then(|g| g.before_untrusted()) {
                    let _ = writeln!(std::io::stderr(), "{stop}");
                }
                if self.verbose > 0 || !self.interactive && !self.quiet {
                    self.stderr_line(&format!("  {} {line}", style(format!("[{source}]")).dim()));
                } else {
                    self.spinner_detail(&line);
                }
            }
            Event::Probe { probe } => {
                let text = match (&probe.status, &probe.error) {
                    (_, Some(e)) => format!("check failed: {e}"),
                    (Some(s), None) => format!("check passed: {s} in {:.0} ms", probe.latency_ms),
                    (None, None) => "check passed".into(),
                };
                if self.verbose > 0 || !self.interactive && !self.quiet {
                    self.stderr_line(&format!("  {} {text}", style("[health]").dim()));
                } else {
                    self.spinner_detail(&text);
                }
            }
        }
    }
}

/// One JSON value as one line of stdout, redacted. JSON escapes CR and LF inside strings, so a
/// value never spans lines; `printable` is only belt and braces.
fn print_json_line(value: &Value) {
    let mut value = value.clone();
    redact_json(&mut value);
    let json = serde_json::to_string(&value).unwrap_or_else(|_| "{}".into());
    print_stdout(&printable(&json));
}

/// A closed stdout (`| head`) is not an error worth a panic.
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// tracing's writer: stderr, redacted.
struct RedactingWriter;

impl Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(printable(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
