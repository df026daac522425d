//! GitHub Actions support: the exact text of every workflow command, the step outputs file read
//! back the way the runner reads it, and the step summary's Markdown and size limit.

use std::collections::BTreeMap;
use std::path::Path;

use deployctl::engine::ContainerState;
use deployctl::error::{ConfigError, ConfigErrors};
use deployctl::health::ProbeResult;
use deployctl::output::gha::{self, Gha, MAX_SUMMARY_BYTES, Summary};
use deployctl::proxy::protocol::{Color, Outcome, RunKind};
use deployctl::redact::Redactor;
use deployctl::report::{FailureReport, Report};

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// The runner's reading of `$GITHUB_OUTPUT` (actions/runner `SetEnvFileCommand`, Linux): lines
/// split on LF; `NAME=VALUE`, or `NAME<<DELIM` and every following line up to one that equals
/// DELIM, the value being the text in between without the LF before DELIM.
fn parse_runner_file(text: &str) -> Result<Vec<(String, String)>, String> {
    fn read_line<'a>(text: &'a str, index: &mut usize) -> Option<&'a str> {
        if *index >= text.len() {
            return None;
        }
        let start = *index;
        match text[start..].find('\n') {
            Some(lf) => {
                *index = start + lf + 1;
                Some(&text[start..start + lf])
            }
            None => {
                *index = text.len();
                Some(&text[start..])
            }
        }
    }
    let mut out = Vec::new();
    let mut index = 0;
    while let Some(line) = read_line(text, &mut index) {
        if line.is_empty() {
            continue;
        }
        let eq = line.find('=');
        let heredoc = line.find("<<");
        match (eq, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                out.push((line[..e].to_string(), line[e + 1..].to_string()));
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(format!("bad heredoc line {line:?}"));
                }
                let start = index;
                let mut end = index;
                loop {
                    let Some(l) = read_line(text, &mut index) else {
                        return Err(format!("delimiter {delimiter:?} not found"));
                    };
                    if l == delimiter {
                        break;
                    }
                    // The LF that ended this line belongs to the value only if another follows.
                    end = index - 1;
                }
                let value = if end > start { &text[start..end] } else { "" };
                out.push((name.to_string(), value.to_string()));
            }
            _ => return Err(format!("bad line {line:?}")),
        }
    }
    Ok(out)
}

fn report_ok() -> Report {
    Report {
        ok: true,
        kind: RunKind::Deploy,
        app: "demo".into(),
        env: "production".into(),
        version: "3f2a9c1".into(),
        color: Color::Green,
        container: "demo-production-green".into(),
        url: "http://127.0.0.1:8081".into(),
        previous: Some("a1b2c3d".into()),
        outcome: Outcome::Live,
        duration_ms: 42_345,
        swap_ms: Some(1.5),
        failure: None,
        steps: vec![],
        hosts: vec![],
        switch_spread_ms: None,
    }
}

fn report_failed(logs: Vec<String>) -> Report {
    Report {
        ok: false,
        outcome: Outcome::RolledBack,
        duration_ms: 125_000,
        previous: None,
        failure: Some(FailureReport {
            reason: "verify window failed: error rate 0.50 > 0.01".into(),
            probes: vec![ProbeResult {
                ok: false,
                status: Some(500),
                latency_ms: 3.0,
                body_head: "oops".into(),
                error: Some("status 500".into()),
                at_ms: 1000,
            }],
            container: Some("demo-production-green".into()),
            container_state: Some(ContainerState {
                status: "running".into(),
                running: true,
                ..Default::default()
            }),
            logs,
            host: None,
        }),
        ..report_ok()
    }
}

fn identity(s: &str) -> String {
    s.to_string()
}

#[test]
fn escaping_of_data_and_properties() {
    assert_eq!(gha::escape_data("a%b\rc\nd:e,f"), "a%25b%0Dc%0Ad:e,f");
    assert_eq!(
        gha::escape_property("a%b\rc\nd:e,f"),
        "a%25b%0Dc%0Ad%3Ae%2Cf"
    );
    // Already-escaped text is escaped again, not passed through.
    assert_eq!(gha::escape_data("%0A"), "%250A");
}

#[test]
fn error_annotation_escapes_properties_and_message() {
    assert_eq!(
        gha::error_annotation("environments/prod,1:x%.toml", 12, 5, "50% bad\r\nnext: a,b"),
        "::error file=environments/prod%2C1%3Ax%25.toml,line=12,col=5::50%25 bad%0D%0Anext: a,b"
    );
    assert_eq!(
        gha::error_annotation("deploy.toml", 3, 1, "unknown key"),
        "::error file=deploy.toml,line=3,col=1::unknown key"
    );
    // Line 0: not tied to a place in the file.
    assert_eq!(
        gha::error_annotation("deploy.toml", 0, 0, "cannot read"),
        "::error file=deploy.toml::cannot read"
    );
    assert_eq!(
        gha::error_annotation("f", 7, 0, "m"),
        "::error file=f,line=7::m"
    );
    assert_eq!(gha::error_message("a\nb%"), "::error::a%0Ab%25");
}

#[test]
fn config_errors_become_one_annotation_each() {
    let errors = ConfigErrors(vec![
        ConfigError {
            file: "deploy.toml".into(),
            line: 4,
            col: 3,
            key: "health.timout".into(),
            message: "unknown key".into(),
            hint: Some("did you mean `health.timeout`?".into()),
        },
        ConfigError {
            file: "environments/prod.toml".into(),
            line: 0,
            col: 0,
            key: String::new(),
            message: "file not found".into(),
            hint: None,
        },
    ]);
    let out = gha::config_error_annotations(&errors, identity);
    assert_eq!(
        lines(&out),
        [
            "::error file=deploy.toml,line=4,col=3::`health.timout`: unknown key%0Ahint: did you mean `health.timeout`?",
            "::error file=environments/prod.toml::file not found",
        ]
    );
    assert!(out.ends_with('\n'));
    assert_eq!(
        gha::config_error_annotations(&ConfigErrors(vec![]), identity),
        ""
    );
}

#[test]
fn config_error_annotations_are_redacted() {
    let mut r = Redactor::new();
    r.add("hunter22");
    let errors = ConfigErrors(vec![ConfigError {
        file: "deploy.toml".into(),
        line: 2,
        col: 9,
        key: "app.env.TOKEN".into(),
        message: "`hunter22` is not a number".into(),
        hint: Some("hunter22 again".into()),
    }]);
    assert_eq!(
        gha::config_error_annotations(&errors, |s| r.redact(s).into_owned()),
        "::error file=deploy.toml,line=2,col=9::`app.env.TOKEN`: `***` is not a number%0Ahint: *** again\n"
    );
}

#[test]
fn masks_every_line_of_a_multi_line_secret() {
    let key = "-----BEGIN KEY-----\r\nMIIsecret%0A\n\n   \n-----END KEY-----\n";
    let out = gha::mask_lines([key, "pass:word,1"].into_iter());
    assert_eq!(
        lines(&out),
        [
            "::add-mask::-----BEGIN KEY-----",
            "::add-mask::MIIsecret%250A",
            "::add-mask::-----END KEY-----",
            "::add-mask::pass:word,1",
        ]
    );
    assert!(out.ends_with('\n'));
    assert_eq!(gha::mask_lines(std::iter::empty()), "");
}

#[test]
fn masks_from_a_redactor_once_per_line() {
    // The redactor lists the whole multi-line value and each of its lines: no line twice.
    let mut r = Redactor::new();
    r.add("line-one\nline-two");
    r.add("hunter22");
    let out = gha::mask_lines(r.secrets());
    let mut got = lines(&out);
    got.sort();
    assert_eq!(
        got,
        [
            "::add-mask::hunter22",
            "::add-mask::line-one",
            "::add-mask::line-two"
        ]
    );
}

#[test]
fn groups() {
    assert_eq!(
        gha::group_start("build demo:3f2a9c1"),
        "::group::build demo:3f2a9c1"
    );
    assert_eq!(gha::group_start("a\nb"), "::group::a%0Ab");
    assert_eq!(gha::group_end(), "::endgroup::");
}

#[test]
fn stop_and_resume_commands() {
    assert_eq!(
        gha::stop_commands("0123abcd0123abcd"),
        "::stop-commands::0123abcd0123abcd"
    );
    assert_eq!(
        gha::resume_commands("0123abcd0123abcd"),
        "::0123abcd0123abcd::"
    );
    let g = Gha::from_env(&env(&[("GITHUB_ACTIONS", "true")])).expect("on Actions");
    let stop = g.stop_commands();
    let token = stop
        .strip_prefix("::stop-commands::")
        .expect("stop command");
    assert!(token.len() >= 16, "{token}");
    assert_eq!(g.resume_commands(), format!("::{token}::"));
    // Each run has its own token.
    let other = Gha::from_env(&env(&[("GITHUB_ACTIONS", "true")])).expect("on Actions");
    assert_ne!(other.stop_commands(), stop);
}

#[test]
fn untrusted_output_is_fenced_once() {
    let g = Gha::from_env(&env(&[("GITHUB_ACTIONS", "true")])).expect("on Actions");
    // Nothing to resume before anything was stopped.
    assert_eq!(g.after_untrusted(), None);
    let stop = g
        .before_untrusted()
        .expect("first untrusted line stops commands");
    assert_eq!(stop, g.stop_commands());
    // Further lines of the same stream need no second stop.
    assert_eq!(g.before_untrusted(), None);
    assert_eq!(g.after_untrusted(), Some(g.resume_commands()));
    assert_eq!(g.after_untrusted(), None);
    // The next stream stops again, with the same token.
    assert_eq!(g.before_untrusted(), Some(stop));
}

#[test]
fn tokens_are_random_hex() {
    let a = gha::random_token();
    let b = gha::random_token();
    assert_ne!(a, b);
    for t in [&a, &b] {
        assert!(t.len() >= 16, "{t}");
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
    }
}

#[test]
fn from_env_only_on_actions() {
    assert!(Gha::from_env(&env(&[])).is_none());
    for v in ["false", "1", "TRUE", "True", ""] {
        assert!(
            Gha::from_env(&env(&[("GITHUB_ACTIONS", v)])).is_none(),
            "{v:?}"
        );
    }
    let g = Gha::from_env(&env(&[
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", "/tmp/summary.md"),
        ("GITHUB_OUTPUT", "/tmp/out"),
    ]))
    .expect("on Actions");
    assert_eq!(
        g.step_summary.as_deref(),
        Some(Path::new("/tmp/summary.md"))
    );
    assert_eq!(g.output.as_deref(), Some(Path::new("/tmp/out")));
    let g = Gha::from_env(&env(&[("GITHUB_ACTIONS", "true"), ("GITHUB_OUTPUT", "")]))
        .expect("on Actions");
    assert_eq!(g.step_summary, None);
    assert_eq!(g.output, None);
}

#[test]
fn without_files_writes_nothing_and_succeeds() {
    let g = Gha::from_env(&env(&[("GITHUB_ACTIONS", "true")])).expect("on Actions");
    g.write_outputs(&[("version", "1")])
        .expect("no file, no error");
    g.publish_report(&report_ok(), identity)
        .expect("no file, no error");
}

#[test]
fn outputs_read_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("output");
    // What an earlier step left in the file stays readable.
    std::fs::write(&path, "earlier=1\n").expect("write");
    let values = [
        ("version", "3f2a9c1"),
        ("multi", "line one\nline two\n\nline four"),
        ("trailing", "ends with a newline\n"),
        ("empty", ""),
        (
            "tricky",
            "ghadelimiter_\nghadelimiter_0123\nEOF\nname<<EOF\n%0A\r",
        ),
        ("url", "http://127.0.0.1:8081/?a=b&c=d"),
    ];
    gha::write_outputs(&path, &values).expect("write outputs");
    gha::write_outputs(&path, &[("previous", "a1b2c3d")]).expect("append outputs");
    let text = std::fs::read_to_string(&path).expect("read");
    let parsed = parse_runner_file(&text).expect("the runner can parse it");
    let mut expected: Vec<(String, String)> = vec![("earlier".into(), "1".into())];
    expected.extend(values.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    expected.push(("previous".into(), "a1b2c3d".into()));
    assert_eq!(parsed, expected);

    // The exact shape of one entry.
    let entry: Vec<&str> = text.lines().skip(1).take(3).collect();
    let delim = entry[0].strip_prefix("version<<").expect("heredoc header");
    assert!(delim.starts_with("ghadelimiter_") && delim.len() >= "ghadelimiter_".len() + 16);
    assert_eq!(
        entry,
        [format!("version<<{delim}").as_str(), "3f2a9c1", delim]
    );
    // Every entry has its own delimiter.
    let delims: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once("<<").map(|(_, d)| d))
        .filter(|d| d.starts_with("ghadelimiter_") && d.len() > 20)
        .collect();
    let unique: std::collections::HashSet<_> = delims.iter().collect();
    assert_eq!(delims.len(), 7);
    assert_eq!(unique.len(), 7);
}

#[test]
fn output_names_that_would_change_parsing_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("output");
    for name in ["", "a=b", "a<<b", "a<", "a\nb", "a b"] {
        let err = gha::write_outputs(&path, &[(name, "v")]).expect_err(name);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{name:?}");
    }
    // Nothing half-written.
    assert!(!path.exists());
}

#[test]
fn summary_of_a_successful_deploy() {
    let md = gha::step_summary(&Summary::from_report(&report_ok(), identity));
    assert_eq!(
        lines(&md),
        [
            "## ✅ deploy demo 3f2a9c1 to production: live",
            "",
            "| | |",
            "|---|---|",
            "| **App** | demo |",
            "| **Environment** | production |",
            "| **Version** | 3f2a9c1 |",
            "| **Previous** | a1b2c3d |",
            "| **Colour** | green |",
            "| **URL** | <http://127.0.0.1:8081> |",
            "| **Duration** | 42.3s |",
            "| **Outcome** | live |",
        ]
    );
    assert!(md.ends_with("|\n"));
}

#[test]
fn summary_of_a_failed_deploy_has_reason_and_details() {
    let logs = vec![
        "starting".to_string(),
        "```".to_string(),
        "panic: boom".to_string(),
    ];
    let md = gha::step_summary(&Summary::from_report(&report_failed(logs), identity));
    assert_eq!(
        lines(&md),
        [
            "## ❌ deploy demo 3f2a9c1 to production: rolled back",
            "",
            "| | |",
            "|---|---|",
            "| **App** | demo |",
            "| **Environment** | production |",
            "| **Version** | 3f2a9c1 |",
            "| **Previous** | none |",
            "| **Colour** | green |",
            "| **URL** | <http://127.0.0.1:8081> |",
            "| **Duration** | 2m05s |",
            "| **Outcome** | rolled back |",
            "",
            "**Reason:** verify window failed: error rate 0.50 &gt; 0.01",
            "",
            // Log lines are indented with `  | `: a backtick run in them cannot close the block.
            "```text",
            "last health checks:",
            "    1000 ms  status 500  status 500  oops",
            "container demo-production-green: running (exit code 0, OOM killed false, restarts 0)",
            "last 3 log lines:",
            "  | starting",
            "  | ```",
            "  | panic: boom",
            "```",
        ]
    );
}

#[test]
fn fence_is_longer_than_backtick_runs_that_could_close_it() {
    let s = Summary {
        title: "t".into(),
        ok: false,
        rows: vec![],
        reason: None,
        // Up to 3 spaces of indent can still close a fence; 4 make it code text.
        details: Some("```\ncode\n   ````\n    ``````\r\n``x\r".into()),
    };
    assert_eq!(
        lines(&gha::step_summary(&s)),
        [
            "## ❌ t",
            "",
            "| | |",
            "|---|---|",
            "",
            "`````text",
            "```",
            "code",
            "   ````",
            "    ``````",
            "``x",
            "`````",
        ]
    );
}

#[test]
fn summary_escapes_markdown_in_cells() {
    let s = Summary {
        title: "a <b> & #1 @x".into(),
        ok: true,
        rows: vec![
            ("k|1".into(), "x|y*z_[l](u) `c` \\ ~s~ $m$".into()),
            ("multi".into(), "one\ntwo\r\nthree".into()),
            ("not a link".into(), "https://a b".into()),
            ("bar in url".into(), "https://x/|y".into()),
        ],
        reason: None,
        details: None,
    };
    assert_eq!(
        lines(&gha::step_summary(&s)),
        [
            "## ✅ a &lt;b&gt; &amp; \\#1 \\@x",
            "",
            "| | |",
            "|---|---|",
            "| **k\\|1** | x\\|y\\*z\\_\\[l\\](u) \\`c\\` \\\\ \\~s\\~ \\$m\\$ |",
            "| **multi** | one<br>two<br>three |",
            "| **not a link** | https://a b |",
            "| **bar in url** | https://x/\\|y |",
        ]
    );
}

#[test]
fn summary_stays_under_one_mib_with_huge_details() {
    let mut details = String::from("FIRST LINE\n");
    let mut i = 0;
    while details.len() < 5 * 1024 * 1024 {
        details.push_str(&format!(
            "log line {i} ünïcödé ✓ padding padding padding padding\n"
        ));
        i += 1;
    }
    details.push_str("LAST LINE");
    let s = Summary {
        title: "t".into(),
        ok: false,
        rows: vec![("a".into(), "b".repeat(2_000_000))],
        reason: Some("r".repeat(2_000_000)),
        details: Some(details),
    };
    let md = gha::step_summary(&s);
    assert!(md.len() < MAX_SUMMARY_BYTES, "{}", md.len());
    assert!(md.len() < 1024 * 1024);
    assert!(
        md.len() > MAX_SUMMARY_BYTES / 2,
        "the budget is used: {}",
        md.len()
    );
    assert!(md.contains("\nFIRST LINE\n"));
    assert!(
        md.contains("\nLAST LINE\n```\n"),
        "the end of the logs is kept"
    );
    assert!(md.contains(" bytes omitted …]\n"));
    // Cut at line ends: every kept log line is whole.
    for line in md.lines().filter(|l| l.starts_with("log line")) {
        assert!(line.ends_with("padding"), "{line}");
    }
    let row = md
        .lines()
        .find(|l| l.starts_with("| **a** | bbb"))
        .expect("row");
    assert_eq!(row.len(), "| **a** | ".len() + 1_000 + "… |".len());
    let reason = md
        .lines()
        .find(|l| l.starts_with("**Reason:** rrr"))
        .expect("reason");
    assert_eq!(reason.len(), "**Reason:** ".len() + 10_000 + "…".len());
}

#[test]
fn summary_with_backtick_runs_stays_well_formed() {
    // A huge run of backticks at a line start needs a longer fence; size still wins.
    let details = format!("{}\nend", "`".repeat(3 * 1024 * 1024));
    let s = Summary {
        title: "t".into(),
        ok: false,
        rows: vec![],
        reason: None,
        details: Some(details),
    };
    let md = gha::step_summary(&s);
    assert!(md.len() < MAX_SUMMARY_BYTES, "{}", md.len());
    let body: Vec<&str> = md.lines().collect();
    let close = body.last().copied().unwrap_or_default();
    if close.starts_with('`') {
        // The fence is longer than any backtick run that starts a line inside it.
        let open = body
            .iter()
            .position(|l| l.starts_with("``") && l.ends_with("text"))
            .expect("opening fence");
        let inner_longest = body[open + 1..body.len() - 1]
            .iter()
            .map(|l| l.chars().take_while(|&c| c == '`').count())
            .max()
            .unwrap_or(0);
        assert!(close.len() > inner_longest);
        assert_eq!(body[open], format!("{close}text"));
    } else {
        assert_eq!(close, "_(details omitted: too large for a step summary)_");
    }
}

#[test]
fn append_summary_creates_then_appends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("summary.md");
    gha::append_summary(&path, "# one").expect("create");
    gha::append_summary(&path, "two\n").expect("append");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "# one\ntwo\n"
    );
}

#[test]
fn publish_report_redacts_summary_and_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let summary_path = dir.path().join("summary.md");
    let output_path = dir.path().join("output");
    let g = Gha::from_env(&env(&[
        ("GITHUB_ACTIONS", "true"),
        (
            "GITHUB_STEP_SUMMARY",
            summary_path.to_str().expect("utf-8 path"),
        ),
        ("GITHUB_OUTPUT", output_path.to_str().expect("utf-8 path")),
    ]))
    .expect("on Actions");
    let mut redactor = Redactor::new();
    redactor.add("canary-s3cret\nsecond-line-s3cret");
    let mut report = report_failed(vec![
        "token=canary-s3cret".into(),
        "key: second-line-s3cret".into(),
    ]);
    report.url = "http://user:canary-s3cret@127.0.0.1:8081".into();
    report.failure.as_mut().expect("failure").reason = "hook failed with canary-s3cret".into();
    g.publish_report(&report, |s| redactor.redact(s).into_owned())
        .expect("publish");

    let md = std::fs::read_to_string(&summary_path).expect("summary written");
    let out = std::fs::read_to_string(&output_path).expect("outputs written");
    for text in [&md, &out] {
        assert!(!text.contains("s3cret"), "{text}");
    }
    // Inside the fenced block the mask is literal text.
    assert!(md.contains("\n  | token=***\n"), "{md}");
    let parsed = parse_runner_file(&out).expect("parse");
    assert_eq!(
        parsed,
        [
            ("version".to_string(), "3f2a9c1".to_string()),
            ("color".to_string(), "green".to_string()),
            (
                "url".to_string(),
                "http://user:***@127.0.0.1:8081".to_string()
            ),
            ("previous".to_string(), String::new()),
        ]
    );
}

#[test]
fn item05_neutralize_breaks_commands_at_every_line_start_including_after_cr() {
    let z = gha::NEUTRALIZER;
    assert!(matches!(
        gha::neutralize("plain: text :: here\n  | ::warning::x"),
        std::borrow::Cow::Borrowed(_)
    ));
    assert_eq!(
        gha::neutralize("a\r::warning::X\r\n  ::add-mask::y\n::z"),
        format!("a\r{z}::warning::X\r\n  {z}::add-mask::y\n{z}::z")
    );
    // What the runner would read as commands: none is left.
    let out = gha::neutralize("::a\r\t ::b\n\u{a0}::c");
    assert!(
        out.split(['\r', '\n'])
            .all(|l| !l.trim_start().starts_with("::")),
        "{out:?}"
    );
}
