//! The engine's state file: what the agent installed, so a restarted agent runs it again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::BizKey;

/// One installed module, as remembered across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Identity.
    pub key: BizKey,
    /// Where it came from.
    pub url: String,
    /// The stored jar (reused if still present; else `url` is fetched again).
    pub jar: PathBuf,
    /// Main-method arguments.
    pub args: Vec<String>,
    /// Start environment.
    pub envs: BTreeMap<String, String>,
    /// Whether it was the serving version.
    pub active: bool,
}

/// The file format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version, for future migrations.
    pub version: u32,
    /// Installed modules.
    pub modules: Vec<Remembered>,
}

/// Reads the state file; a missing file is an empty state.
pub fn load(path: &Path) -> std::io::Result<StateFile> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StateFile::default()),
        Err(e) => Err(e),
    }
}

/// Writes the state file atomically (temp file + rename), so a crash never leaves half a file.
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, state).map_err(std::io::Error::other)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        assert_eq!(load(&p).unwrap(), StateFile::default());
        let s = StateFile {
            version: 1,
            modules: vec![Remembered {
                key: BizKey::new("a", "1"),
                url: "file:///a.jar".into(),
                jar: "/w/a.jar".into(),
                args: vec!["x".into()],
                envs: BTreeMap::new(),
                active: true,
            }],
        };
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap(), s);
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load(&p).is_err());
    }
}
