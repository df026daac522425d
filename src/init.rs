//! `deployctl init`: a commented starting configuration. Never overwrites.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{0} already exists; init never overwrites (remove it or pick another directory)")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

const FILES: [(&str, &str); 3] = [
    ("deploy.toml", include_str!("templates/deploy.toml")),
    (
        "environments/staging.toml",
        include_str!("templates/staging.toml"),
    ),
    (
        "environments/production.toml",
        include_str!("templates/production.toml"),
    ),
];

/// Writes the three files, or none of them if any exists.
pub fn write_starter(dir: &Path, app_name: &str) -> Result<Vec<PathBuf>, crate::error::Error> {
    let targets: Vec<PathBuf> = FILES.iter().map(|(rel, _)| dir.join(rel)).collect();
    if let Some(existing) = targets.iter().find(|p| p.exists()) {
        return Err(InitError::Exists(existing.clone()).into());
    }
    for ((_, template), path) in FILES.iter().zip(&targets) {
        let io = |source| InitError::Io {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // create_new: a file appearing since the check above is still not overwritten.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, template.replace("{{name}}", app_name).as_bytes())
            .map_err(io)?;
    }
    Ok(targets)
}
