//! `deployctl init`: writes a commented `deploy.toml` and `environments/` for the current directory (`crate::init`).

use serde_json::json;

use crate::cli::InitArgs;
use crate::error::{Error, ExitCode};
use crate::output::Output;

pub fn init(out: &Output, args: InitArgs) -> anyhow::Result<ExitCode> {
    let name = args.name.unwrap_or_else(|| default_name(&args.dir));
    let written = crate::init::write_starter(&args.dir, &name)?;
    let shown: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    out.result(
        &format!(
            "wrote {}\nnext: edit deploy.toml, then `deployctl deploy --env staging --dry-run`",
            shown.join(", ")
        ),
        json!({ "written": shown }),
    );
    Ok(ExitCode::Ok)
}

fn default_name(dir: &std::path::Path) -> String {
    let base = std::fs::canonicalize(dir)
        // A directory init is about to create cannot be canonicalized: its own name then.
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "app".into());
    let cleaned: String = base
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if trimmed.is_empty() {
        "app".into()
    } else {
        trimmed
    }
}

impl From<crate::init::InitError> for Error {
    fn from(e: crate::init::InitError) -> Self {
        Error::Usage(e.to_string())
    }
}
