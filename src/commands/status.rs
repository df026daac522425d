//! `deployctl status` and `deployctl releases`: what runs now, and the release history.

use std::time::Duration;

use crate::cli::Global;
use crate::error::ExitCode;
use crate::output::Output;
use crate::status::{self, outcome_word};

pub async fn status(g: &Global, out: &Output) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let engines = super::connect_all(&loaded).await?;
    let report = if engines.len() == 1 {
        status::status(&loaded, &engines[0].engine).await?
    } else {
        let hosts: Vec<(String, &dyn crate::engine::Engine)> = engines
            .iter()
            .map(|h| (h.address.clone(), &h.engine as &dyn crate::engine::Engine))
            .collect();
        status::fleet_status(&loaded, &hosts).await?
    };
    let mut text = format!("{} / {}  {}\n", report.app, report.env, report.url);
    match &report.live {
        Some(l) => text.push_str(&format!(
            "  live:     {} ({}) in {}: {}, health {}{}\n",
            l.version,
            l.color,
            l.container,
            l.state,
            l.health,
            l.uptime_seconds
                .map(|s| format!(
                    ", up {}",
                    humantime::format_duration(Duration::from_secs(s))
                ))
                .unwrap_or_default()
        )),
        None => text.push_str("  live:     nothing\n"),
    }
    if let Some(p) = &report.previous {
        text.push_str(&format!("  previous: {} (rollback target)\n", p.version));
    }
    for h in &report.hosts {
        text.push_str(&format!(
            "  host:     {:<28} {}  {}\n",
            h.host,
            h.live
                .as_ref()
                .map(|l| format!("{} ({}), health {}", l.version, l.color, l.health))
                .unwrap_or_else(|| "nothing live".into()),
            h.url
        ));
    }
    for p in &report.problems {
        text.push_str(&format!("  problem:  {p}\n"));
    }
    out.result(&text, serde_json::to_value(&report)?);
    Ok(if report.healthy {
        ExitCode::Ok
    } else {
        ExitCode::DeployFailed
    })
}

pub async fn releases(g: &Global, out: &Output) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let engine = super::connect(&loaded).await?;
    let releases = status::releases(&loaded, &engine).await?;
    let mut text = format!(
        "{:<16} {:<12} {:<6} {:<20} {:>8}  {}\n",
        "VERSION", "OUTCOME", "COLOR", "STARTED", "SECONDS", "BY / REASON"
    );
    for r in releases.iter().rev() {
        let started = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(r.started_at),
        );
        text.push_str(&format!(
            "{:<16} {:<12} {:<6} {:<20} {:>8}  {}{}\n",
            r.version,
            outcome_word(r.outcome),
            r.color,
            started.to_string(),
            r.duration_ms
                .map(|d| format!("{:.1}", d as f64 / 1000.0))
                .unwrap_or_default(),
            r.author.as_deref().unwrap_or(""),
            r.reason
                .as_ref()
                .map(|x| format!(" / {}", x.lines().next().unwrap_or("")))
                .unwrap_or_default()
                + if r.tests_skipped {
                    " (tests skipped)"
                } else {
                    ""
                }
        ));
    }
    if releases.is_empty() {
        text = "no releases yet".into();
    }
    out.result(&text, serde_json::json!({ "releases": releases }));
    Ok(ExitCode::Ok)
}
