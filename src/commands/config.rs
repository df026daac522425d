//! `deployctl config` (the merged configuration) and `deployctl check` (every prerequisite).

use serde_json::json;

use crate::checks::run_checks;
use crate::cli::{ConfigArgs, Global};
use crate::engine::Engine;
use crate::error::ExitCode;
use crate::output::Output;

pub fn config(g: &Global, out: &Output, args: ConfigArgs) -> anyhow::Result<ExitCode> {
    if args.schema {
        let schema = crate::config::json_schema();
        println!("{}", serde_json::to_string_pretty(&schema)?);
        return Ok(ExitCode::Ok);
    }
    let loaded = super::load(g, out)?;
    let effective = loaded.redacted_json();
    // TOML has no null: unset options are left out of the human form (the JSON keeps them).
    let mut unset_dropped = effective.clone();
    drop_nulls(&mut unset_dropped);
    let human = toml::to_string_pretty(&unset_dropped)
        .unwrap_or_else(|_| serde_json::to_string_pretty(&effective).unwrap_or_default());
    // As in error messages: `environments/x.toml`, not `./environments/x.toml`.
    let files: Vec<String> = loaded
        .files
        .iter()
        .map(|f| crate::util::clean_path(f))
        .collect();
    let header = format!(
        "# effective configuration of {} (secrets shown as ***)\n",
        files.join(" + ")
    );
    out.result(
        &format!("{header}{human}"),
        json!({ "env": loaded.env, "files": files, "config": effective }),
    );
    Ok(ExitCode::Ok)
}

fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

pub async fn check(g: &Global, out: &Output) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    // Every engine of the environment (one, or each host of a fleet); why one cannot be
    // reached (an SSH key refused, an unknown host key) is the docker check's detail.
    let (engines, unreachable) = match super::connect_all(&loaded).await {
        Ok(engines) => (engines, None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let engine = engines.first().map(|h| &h.engine as &dyn Engine);
    let mut checks = run_checks(&loaded, engine).await;
    for c in checks.iter_mut().filter(|c| c.name == "docker") {
        if let Some(why) = &unreachable {
            c.detail = why.clone();
        } else if engines.len() > 1 {
            let hosts: Vec<&str> = engines.iter().map(|h| h.address.as_str()).collect();
            c.detail = format!("{} hosts answer: {}", hosts.len(), hosts.join(", "));
        }
    }
    let text = crate::output::render_checks(&checks);
    let ok = checks.iter().all(|c| c.ok);
    out.result(&text, json!({ "ok": ok, "checks": checks }));
    Ok(if ok {
        ExitCode::Ok
    } else if checks.iter().any(|c| c.name == "docker" && !c.ok) {
        ExitCode::DockerUnreachable
    } else {
        ExitCode::DeployFailed
    })
}
