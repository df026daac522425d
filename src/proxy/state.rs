//! Files in the proxy's state dir: the live target (`state.json`) and the release ledger
//! (`releases.json`). Both are written to a temp file, fsynced and renamed, so a crash leaves
//! either the old or the new content, never a torn file.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::protocol::{Outcome, ReleaseRecord, Target};

pub const STATE_FILE: &str = "state.json";
pub const LEDGER_FILE: &str = "releases.json";
pub const CONTROL_SOCKET: &str = "control.sock";

/// The ledger keeps this many records; the oldest go first.
const LEDGER_MAX: usize = 1000;

/// Content of `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    pub live: Option<Target>,
    /// Unix seconds of the switch that made `live` live.
    pub switched_at: Option<u64>,
}

/// Writes `bytes` to `path` atomically: temp file in the same dir, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        // Make the rename itself durable.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads `state.json`. A missing file is a fresh proxy; a corrupt one is logged and ignored so a
/// restarted proxy container never crash-loops on it.
pub fn load_state(state_dir: &Path) -> PersistedState {
    let path = state_dir.join(STATE_FILE);
    let empty = PersistedState {
        live: None,
        switched_at: None,
    };
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return empty,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read proxy state; starting with no live target");
            return empty;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "corrupt proxy state; starting with no live target");
            empty
        }
    }
}

pub fn save_state(state_dir: &Path, state: &PersistedState) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).context("encoding proxy state")?;
    write_atomic(&state_dir.join(STATE_FILE), &bytes)
}

/// Reads `releases.json`. A corrupt ledger is moved aside (not overwritten later) and the
/// proxy starts with an empty one.
pub fn load_ledger(state_dir: &Path) -> Vec<ReleaseRecord> {
    let path = state_dir.join(LEDGER_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read release ledger; starting empty");
            return Vec::new();
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(records) => records,
        Err(e) => {
            let aside: PathBuf =
                state_dir.join(format!("{LEDGER_FILE}.corrupt-{}", crate::util::now_unix()));
            let moved = fs::rename(&path, &aside);
            tracing::warn!(
                path = %path.display(),
                error = %e,
                moved_to = %aside.display(),
                moved = moved.is_ok(),
                "corrupt release ledger; starting empty"
            );
            Vec::new()
        }
    }
}

pub fn save_ledger(state_dir: &Path, records: &[ReleaseRecord]) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(records).context("encoding release ledger")?;
    write_atomic(&state_dir.join(LEDGER_FILE), &bytes)
}

/// Inserts or replaces `record` by id. A record becoming `Live` demotes any other `Live` one to
/// `Good`: only one release serves traffic.
pub fn upsert(records: &mut Vec<ReleaseRecord>, record: ReleaseRecord) {
    if record.outcome == Outcome::Live {
        for other in records.iter_mut() {
            if other.id != record.id && other.outcome == Outcome::Live {
                other.outcome = Outcome::Good;
            }
        }
    }
    match records.iter_mut().find(|r| r.id == record.id) {
        Some(existing) => *existing = record,
        None => records.push(record),
    }
    if records.len() > LEDGER_MAX {
        let excess = records.len() - LEDGER_MAX;
        records.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, outcome: Outcome) -> ReleaseRecord {
        ReleaseRecord {
            id: id.into(),
            version: format!("v-{id}"),
            image: "app:1".into(),
            color: crate::names::Color::Blue,
            container: "app-blue".into(),
            git_sha: None,
            author: None,
            started_at: 1,
            finished_at: None,
            duration_ms: None,
            outcome,
            reason: None,
            tests_skipped: false,
            spec: None,
        }
    }

    #[test]
    fn upsert_replaces_by_id_and_demotes_previous_live() {
        let mut records = Vec::new();
        upsert(&mut records, rec("a", Outcome::Live));
        upsert(&mut records, rec("b", Outcome::InProgress));
        upsert(&mut records, rec("b", Outcome::Live));
        let outcomes: Vec<_> = records.iter().map(|r| (r.id.as_str(), r.outcome)).collect();
        assert_eq!(outcomes, vec![("a", Outcome::Good), ("b", Outcome::Live)]);
    }

    #[test]
    fn upsert_keeps_ledger_bounded() {
        let mut records = Vec::new();
        for i in 0..LEDGER_MAX + 5 {
            upsert(&mut records, rec(&i.to_string(), Outcome::Good));
        }
        assert_eq!(records.len(), LEDGER_MAX);
        assert_eq!(records[0].id, "5");
    }

    #[test]
    fn corrupt_state_is_ignored_and_corrupt_ledger_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        fs::write(dir.path().join(LEDGER_FILE), b"[{").expect("write");
        assert_eq!(load_state(dir.path()).live, None);
        assert!(load_ledger(dir.path()).is_empty());
        assert!(!dir.path().join(LEDGER_FILE).exists());
        let aside = fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("releases.json.corrupt-")
            });
        assert!(aside);
    }

    #[test]
    fn state_round_trips_through_atomic_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = PersistedState {
            live: Some(Target {
                addr: "app-blue:3000".into(),
                container: "app-blue".into(),
                version: "1".into(),
                color: crate::names::Color::Blue,
            }),
            switched_at: Some(42),
        };
        save_state(dir.path(), &state).expect("save");
        assert_eq!(load_state(dir.path()), state);
        let leftovers = fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count();
        assert_eq!(leftovers, 0);
    }
}
