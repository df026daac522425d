//! GitHub Actions integration (active when `GITHUB_ACTIONS=true`): workflow commands
//! (`::add-mask::`, `::group::`, `::error …::`, `::stop-commands::`), the Markdown step summary
//! (`$GITHUB_STEP_SUMMARY`) and step outputs (`$GITHUB_OUTPUT`).
//!
//! Everything here is pure string building or a file append; `src/output.rs` decides when to print.
//! Rules for the printer:
//! - The runner reads workflow commands from stdout *and* stderr, so print them to stderr and keep
//!   stdout for the result (`--output json`: nothing but its JSON lines).
//! - Print [`mask_lines`] first, before anything else, and NOT through the redactor (it would
//!   turn `::add-mask::s3cret` into `::add-mask::***`, which masks nothing).
//! - Streamed untrusted output (build, hooks, container logs) goes between
//!   [`Gha::before_untrusted`] and [`Gha::after_untrusted`], so that a line such as
//!   `::add-mask::` or `::endgroup::` in it is not obeyed. Call `after_untrusted` before printing
//!   any command of our own (`::endgroup::`, annotations).
//! - Every other line printed (the result on stdout, which replays test and hook output, health
//!   bodies and logs; progress lines; `-v` logs) passes through [`neutralize`]: a fence on one
//!   stream does not cover the other, whose lines the runner may read in any order.
//!
//! Single commands are returned without a trailing newline; functions that return several lines
//! ([`mask_lines`], [`config_error_annotations`]) end every line with `\n`.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ConfigErrors;
use crate::report::Report;

/// GitHub rejects a step summary of 1 MiB or more; stay clearly under it.
pub const MAX_SUMMARY_BYTES: usize = 1_000_000;
/// Longest table cell, in characters, before it is cut (a cell is one line of the table).
const MAX_CELL_CHARS: usize = 1_000;
const MAX_TITLE_CHARS: usize = 300;
const MAX_REASON_CHARS: usize = 10_000;

/// The runner's environment: where the step summary and outputs go, and this run's token for
/// suspending command processing around untrusted output.
#[derive(Debug)]
pub struct Gha {
    /// `$GITHUB_STEP_SUMMARY`, when set and not empty.
    pub step_summary: Option<PathBuf>,
    /// `$GITHUB_OUTPUT`, when set and not empty.
    pub output: Option<PathBuf>,
    /// Random, so that streamed output cannot guess it and resume command processing itself.
    stop_token: String,
    /// Whether the runner is currently ignoring commands (after `before_untrusted`).
    stopped: AtomicBool,
}

impl Gha {
    /// `None` unless `GITHUB_ACTIONS` is exactly `true` (as the runner sets it).
    pub fn from_env(env: &BTreeMap<String, String>) -> Option<Gha> {
        if env.get("GITHUB_ACTIONS").map(String::as_str) != Some("true") {
            return None;
        }
        let path = |name: &str| env.get(name).filter(|p| !p.is_empty()).map(PathBuf::from);
        Some(Gha {
            step_summary: path("GITHUB_STEP_SUMMARY"),
            output: path("GITHUB_OUTPUT"),
            stop_token: random_token(),
            stopped: AtomicBool::new(false),
        })
    }

    /// [`Gha::from_env`] over the process environment (variables that are not UTF-8 are skipped).
    pub fn from_process_env() -> Option<Gha> {
        let env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Gha::from_env(&env)
    }

    /// `::stop-commands::<token>`: print before streaming untrusted output (builds, container logs).
    pub fn stop_commands(&self) -> String {
        stop_commands(&self.stop_token)
    }

    /// `::<token>::`: print after the untrusted output, before any further command.
    pub fn resume_commands(&self) -> String {
        resume_commands(&self.stop_token)
    }

    /// What to print before a line of untrusted output: `::stop-commands::TOKEN` when commands
    /// are still processed, else nothing.
    pub fn before_untrusted(&self) -> Option<String> {
        (!self.stopped.swap(true, Ordering::SeqCst)).then(|| self.stop_commands())
    }

    /// What to print after untrusted output, before a command of our own: `::TOKEN::` when
    /// commands are stopped, else nothing.
    pub fn after_untrusted(&self) -> Option<String> {
        self.stopped
            .swap(false, Ordering::SeqCst)
            .then(|| self.resume_commands())
    }

    /// Appends `summary` to the step summary file, if the runner gave one.
    pub fn write_summary(&self, summary: &Summary) -> io::Result<()> {
        match &self.step_summary {
            Some(path) => append_summary(path, &step_summary(summary)),
            None => Ok(()),
        }
    }

    /// Appends `outputs` to the step outputs file, if the runner gave one.
    pub fn write_outputs(&self, outputs: &[(&str, &str)]) -> io::Result<()> {
        match &self.output {
            Some(path) => write_outputs(path, outputs),
            None => Ok(()),
        }
    }

    /// The end of a deploy or rollback: the step summary and the `version`, `color`, `url`,
    /// `previous` outputs. Every string of the report passes through `redact` first.
    pub fn publish_report(
        &self,
        report: &Report,
        redact: impl Fn(&str) -> String,
    ) -> io::Result<()> {
        let summary_result = self.write_summary(&Summary::from_report(report, &redact));
        let outputs = report_outputs(report, &redact);
        let pairs: Vec<(&str, &str)> = outputs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Outputs are written even when the summary failed: later steps depend on them.
        self.write_outputs(&pairs)?;
        summary_result
    }
}

/// Escapes the data part of a workflow command (after the second `::`).
pub fn escape_data(s: &str) -> String {
    escape(s, false)
}

/// Escapes a property value of a workflow command (`file=…,line=…`): also `:` and `,`, which
/// separate properties.
pub fn escape_property(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, property: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' if property => out.push_str("%3A"),
            ',' if property => out.push_str("%2C"),
            _ => out.push(c),
        }
    }
    out
}

/// One `::add-mask::` line per distinct non-blank line of every secret. The runner masks line by
/// line, so a multi-line secret (a key file) is registered one line at a time.
pub fn mask_lines<'a>(secrets: impl Iterator<Item = &'a str>) -> String {
    let mut seen = HashSet::new();
    let mut out = String::new();
    for secret in secrets {
        for line in secret.lines() {
            if line.trim().is_empty() || !seen.insert(line) {
                continue;
            }
            let _ = writeln!(out, "::add-mask::{}", escape_data(line));
        }
    }
    out
}

/// What [`neutralize`] puts before a `::` at the start of a line: a zero-width space, which the
/// runner does not trim (it is not whitespace), so the line reads the same but is no command.
pub const NEUTRALIZER: char = '\u{200B}';

/// Untrusted text made unable to issue workflow commands, wherever it is printed: every line
/// that starts with `::` once leading whitespace is trimmed (as the runner trims) gets
/// [`NEUTRALIZER`] before its `::`. Lines end at `\n`, `\r\n` and also a lone `\r`, as the runner
/// reads them. Borrows when no line needs it.
pub fn neutralize(text: &str) -> std::borrow::Cow<'_, str> {
    let is_command = |seg: &str| seg.trim_start().starts_with("::");
    if !text.split(['\r', '\n']).any(is_command) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let seg = &rest[..end];
        if is_command(seg) {
            let indent = seg.len() - seg.trim_start().len();
            out.push_str(&seg[..indent]);
            out.push(NEUTRALIZER);
            out.push_str(&seg[indent..]);
        } else {
            out.push_str(seg);
        }
        let Some(sep) = rest[end..].chars().next() else {
            break;
        };
        out.push(sep);
        rest = &rest[end + sep.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// `::group::TITLE`: folds the following lines in the log (groups do not nest).
pub fn group_start(title: &str) -> String {
    format!("::group::{}", escape_data(title))
}

pub fn group_end() -> String {
    "::endgroup::".to_string()
}

/// `::error file=F,line=L,col=C::MESSAGE`, an annotation on a file. A `line` of 0 means the
/// problem has no place in the file: then `line` and `col` are left out (and `col` alone when 0).
pub fn error_annotation(file: &str, line: usize, col: usize, message: &str) -> String {
    let mut props = format!("file={}", escape_property(file));
    if line > 0 {
        let _ = write!(props, ",line={line}");
        if col > 0 {
            let _ = write!(props, ",col={col}");
        }
    }
    format!("::error {props}::{}", escape_data(message))
}

/// `::error::MESSAGE`, an annotation not tied to a file.
pub fn error_message(message: &str) -> String {
    format!("::error::{}", escape_data(message))
}

/// One annotation per configuration error, pointing at its file, line and column; every string
/// passes through `redact` first.
pub fn config_error_annotations(errors: &ConfigErrors, redact: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    for e in &errors.0 {
        let mut message = if e.key.is_empty() {
            e.message.clone()
        } else {
            format!("`{}`: {}", e.key, e.message)
        };
        if let Some(hint) = &e.hint {
            let _ = write!(message, "\nhint: {hint}");
        }
        out.push_str(&error_annotation(
            &redact(&e.file),
            e.line,
            e.col,
            &redact(&message),
        ));
        out.push('\n');
    }
    out
}

/// 32 hex characters from the OS's random source.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        fallback_random(&mut bytes);
    }
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// When the OS source fails (it should not on any supported system): std's per-process random
/// SipHash keys over the time, the pid and a counter are still unguessable from outside.
fn fallback_random(bytes: &mut [u8; 16]) {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
}

/// `::stop-commands::TOKEN`: the runner ignores workflow commands until `::TOKEN::`.
pub fn stop_commands(token: &str) -> String {
    format!("::stop-commands::{}", escape_data(token))
}

/// `::TOKEN::`: resumes command processing after [`stop_commands`].
pub fn resume_commands(token: &str) -> String {
    format!("::{}::", escape_data(token))
}

/// What the step summary shows. All strings must already be redacted ([`Summary::from_report`]
/// does that); rendering escapes them for Markdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub title: String,
    pub ok: bool,
    /// Label and value, one table row each.
    pub rows: Vec<(String, String)>,
    /// Why it failed, shown under the table.
    pub reason: Option<String>,
    /// Health checks, container state, log lines: shown verbatim in a code block.
    pub details: Option<String>,
}

impl Summary {
    /// The summary of a deploy or rollback, every string passed through `redact`.
    pub fn from_report(report: &Report, redact: impl Fn(&str) -> String) -> Summary {
        let outcome = report.outcome.as_str().replace('_', " ");
        let title = format!(
            "{} {} {} to {}: {outcome}",
            report.kind, report.app, report.version, report.env
        );
        let rows = [
            ("App", report.app.clone()),
            ("Environment", report.env.clone()),
            ("Version", report.version.clone()),
            (
                "Previous",
                report.previous.clone().unwrap_or_else(|| "none".into()),
            ),
            ("Colour", report.color.to_string()),
            ("URL", report.url.clone()),
            ("Duration", format_duration_ms(report.duration_ms)),
            ("Outcome", outcome),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        // A fleet: one row per host (its URL, and why it failed when it did).
        .chain(report.hosts.iter().map(|h| {
            let mut v = h.url.clone();
            if let Some(f) = &h.failure {
                v.push_str(&format!(" — failed: {f}"));
            }
            (format!("Host {}", h.host), v)
        }))
        .chain(
            report
                .switch_spread_ms
                .map(|ms| ("Switch spread".to_string(), format!("{ms:.1} ms"))),
        )
        .map(|(k, v)| (redact(&k), redact(&v)))
        .collect();
        let (reason, details) = match &report.failure {
            Some(f) => {
                let rendered = crate::output::render_failure(f);
                // `render` starts with the reason, which the summary shows on its own.
                let head = format!("reason: {}\n", f.reason);
                let rest = rendered.strip_prefix(&head).unwrap_or(&rendered);
                let details = (!rest.trim().is_empty()).then(|| redact(rest));
                (Some(redact(&f.reason)), details)
            }
            None => (None, None),
        };
        Summary {
            title: redact(&title),
            ok: report.ok,
            rows,
            reason,
            details,
        }
    }
}

/// The step outputs of a report, every value passed through `redact`; `previous` is empty when
/// there was none.
pub fn report_outputs(
    report: &Report,
    redact: impl Fn(&str) -> String,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("version", redact(&report.version)),
        ("color", redact(report.color.as_str())),
        ("url", redact(&report.url)),
        ("previous", redact(report.previous.as_deref().unwrap_or(""))),
    ];
    // A fleet: every host and its URL, as a JSON list (`fromJSON(steps.x.outputs.hosts)`).
    if !report.hosts.is_empty() {
        let hosts: Vec<serde_json::Value> = report
            .hosts
            .iter()
            .map(|h| serde_json::json!({ "host": redact(&h.host), "url": redact(&h.url) }))
            .collect();
        out.push(("hosts", serde_json::Value::Array(hosts).to_string()));
        out.push((
            "urls",
            report
                .hosts
                .iter()
                .map(|h| redact(&h.url))
                .collect::<Vec<_>>()
                .join(" "),
        ));
    }
    out
}

/// `1.2s`, `59.9s`, `2m05s`.
fn format_duration_ms(ms: u64) -> String {
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The Markdown of a step summary: a heading with the outcome, a table, the reason, and the
/// details in a fenced block. Always shorter than [`MAX_SUMMARY_BYTES`]; an oversized details
/// text loses its middle, keeping its start (health checks) and its end (the last log lines).
pub fn step_summary(summary: &Summary) -> String {
    let mut head = String::new();
    let icon = if summary.ok { "✅" } else { "❌" };
    let _ = writeln!(
        head,
        "## {icon} {}\n",
        md_text(&cut(&summary.title, MAX_TITLE_CHARS))
    );
    head.push_str("| | |\n|---|---|\n");
    for (label, value) in &summary.rows {
        let _ = writeln!(
            head,
            "| **{}** | {} |",
            md_text(&cut(label, MAX_CELL_CHARS)),
            md_cell(&cut(value, MAX_CELL_CHARS))
        );
    }
    if let Some(reason) = &summary.reason {
        let _ = writeln!(
            head,
            "\n**Reason:** {}",
            md_text(&cut(reason, MAX_REASON_CHARS))
        );
    }
    let Some(details) = &summary.details else {
        return head;
    };
    let details = normalize_newlines(details);
    let details = details.trim_end_matches('\n');
    // Each pass shrinks the budget by what the previous one overshot; the fence can only get
    // shorter as text goes, so this settles within a few passes.
    let mut budget = MAX_SUMMARY_BYTES.saturating_sub(head.len() + 16);
    for _ in 0..8 {
        let body = shorten_middle(details, budget);
        let fence = "`".repeat(fence_len(&body));
        let block = format!("\n{fence}text\n{body}\n{fence}\n");
        let total = head.len() + block.len();
        if total < MAX_SUMMARY_BYTES {
            return head + &block;
        }
        budget = budget.saturating_sub(total - MAX_SUMMARY_BYTES + 1);
    }
    head + "\n_(details omitted: too large for a step summary)_\n"
}

/// Appends Markdown to the step summary file, creating it when missing.
pub fn append_summary(path: &Path, markdown: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(markdown.as_bytes())?;
    if !markdown.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    Ok(())
}

/// Appends step outputs as `name<<DELIM\nvalue\nDELIM\n`, each with a fresh random delimiter that
/// does not occur in its value (so no value can end the block early and inject other outputs).
/// Names must be `[A-Za-z0-9_-]+`: anything else could change how the runner parses the line.
pub fn write_outputs(path: &Path, outputs: &[(&str, &str)]) -> io::Result<()> {
    let mut text = String::new();
    for (name, value) in outputs {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid step output name {name:?}"),
            ));
        }
        let delimiter = loop {
            let d = format!("ghadelimiter_{}", random_token());
            if !value.contains(&d) {
                break d;
            }
        };
        let _ = write!(text, "{name}<<{delimiter}\n{value}\n{delimiter}\n");
    }
    // One write: a reader never sees half an entry from us.
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// At most `max` characters, with `…` at the end when cut.
fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Text shown literally in Markdown: inline syntax is backslash-escaped, HTML is escaped, and
/// line breaks become `<br>` so that the text stays within its line (a table row, a heading).
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '|' | '~' | '$' | '#' | '@' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("<br>");
            }
            '\n' => out.push_str("<br>"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A table cell: an http(s) URL becomes a link, anything else literal text.
fn md_cell(s: &str) -> String {
    let is_url = (s.starts_with("http://") || s.starts_with("https://"))
        && !s.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '|' | '\\' | '`')
        });
    if is_url { format!("<{s}>") } else { md_text(s) }
}

/// CR LF and lone CR to LF: CommonMark treats a lone CR as a line end too, which would let a
/// line start (and close the fence) where we did not see one.
fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Backticks needed for a fence around `body`: more than any run that starts one of its lines
/// (after up to 3 spaces), which is all that could close it.
fn fence_len(body: &str) -> usize {
    let longest = body
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if indent > 3 {
                return 0;
            }
            line[indent..].chars().take_while(|&c| c == '`').count()
        })
        .max()
        .unwrap_or(0);
    (longest + 1).max(3)
}

/// `s` if it fits in `max` bytes, else its start and its end (cut at line ends where possible)
/// around a line saying how much was left out.
fn shorten_middle(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let marker_room = 64;
    let keep = max.saturating_sub(marker_room) / 2;
    let mut head_end = floor_char_boundary(s, keep);
    if let Some(nl) = s[..head_end].rfind('\n') {
        head_end = nl;
    }
    let mut tail_start = ceil_char_boundary(s, s.len() - keep);
    if let Some(nl) = s[tail_start..].find('\n') {
        tail_start += nl + 1;
    }
    let omitted = tail_start - head_end;
    format!(
        "{}\n[… {omitted} bytes omitted …]\n{}",
        &s[..head_end],
        &s[tail_start..]
    )
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}
