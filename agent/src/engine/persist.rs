//! The engine's state file: what the agent installed, so a restarted agent runs it again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

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

/// Writes the state file atomically and durably: a temp file in the same directory, fsync,
/// rename over the old file, fsync of the directory. A crash at any point leaves the old or
/// the new file, never half of one.
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    {
        let mut out = std::io::BufWriter::new(tmp.as_file_mut());
        serde_json::to_writer_pretty(&mut out, state).map_err(std::io::Error::other)?;
        out.flush()?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The state file's one writer: a dedicated thread (file I/O and fsync never run on the
/// async runtime's workers) that writes snapshots in the order they were taken.
///
/// Callers take a snapshot *and* [`Writer::submit`] it while holding the engine's state lock,
/// so sequence numbers follow the order of the changes; the thread always writes the newest
/// snapshot it has (older queued ones are skipped, never written after a newer one), and
/// [`Writer::written`] lets a caller wait until its change (or a later one) is on disk before
/// it answers.
#[derive(Debug)]
pub struct Writer {
    seq: AtomicU64,
    tx: std::sync::mpsc::Sender<(u64, StateFile)>,
    written: watch::Receiver<u64>,
}

impl Writer {
    /// Starts the writer thread for `path`. It ends when the writer is dropped.
    pub fn start(path: PathBuf) -> std::io::Result<Writer> {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, StateFile)>();
        let (written_tx, written) = watch::channel(0u64);
        std::thread::Builder::new()
            .name("koupleless-state-writer".into())
            .spawn(move || {
                while let Ok(mut job) = rx.recv() {
                    // Later snapshots supersede earlier ones: write only the newest.
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    let (seq, state) = job;
                    if let Err(e) = save(&path, &state) {
                        tracing::error!(file = %path.display(), error = %e, "cannot write the state file");
                    }
                    // Waiters are released even after a failed write (it is logged): the
                    // module table, not the file, is what the reply describes.
                    written_tx.send_replace(seq);
                }
            })?;
        Ok(Writer {
            seq: AtomicU64::new(0),
            tx,
            written,
        })
    }

    /// Queues a snapshot; returns its sequence number. Call it under the lock the snapshot
    /// was taken under.
    pub fn submit(&self, state: StateFile) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        // The thread only stops when this writer is dropped, so the send cannot fail here.
        let _ = self.tx.send((seq, state));
        seq
    }

    /// Waits until snapshot `seq`, or a later one, has been written.
    pub async fn written(&self, seq: u64) {
        let mut rx = self.written.clone();
        // An error means the thread is gone (it never exits while `self` lives).
        let _ = rx.wait_for(|w| *w >= seq).await;
    }
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
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file left next to the state file");
        std::fs::write(&p, b"{not json").unwrap();
        assert!(load(&p).is_err());
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;

    fn state(n: usize) -> StateFile {
        StateFile {
            version: 1,
            modules: (0..n)
                .map(|i| Remembered {
                    key: BizKey::new(format!("m{i}"), "1"),
                    url: String::new(),
                    jar: PathBuf::new(),
                    args: vec![],
                    envs: BTreeMap::new(),
                    active: true,
                })
                .collect(),
        }
    }

    /// Snapshots submitted in order end with the newest on disk, and a waiter is released
    /// only once its snapshot (or a newer one) is written.
    #[tokio::test(flavor = "current_thread")]
    async fn newest_snapshot_wins_and_waiters_see_it_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let w = Writer::start(path.clone()).unwrap();
        let mut last = 0;
        for n in 0..200 {
            last = w.submit(state(n % 7 + n / 100));
        }
        w.written(last).await;
        assert_eq!(load(&path).unwrap(), state(199 % 7 + 1));
        let seq = w.submit(state(0));
        w.written(seq).await;
        assert_eq!(load(&path).unwrap(), state(0));
    }
}
