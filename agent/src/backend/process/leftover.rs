//! Records of started module processes, and recognising them after an agent crash.
//!
//! Right after spawning, the backend writes `process.json` into the module's directory: the
//! pid (also the process group id, since every module JVM leads its own group), the start
//! time the kernel reports for it (`/proc/<pid>/stat` field 22) and the marker argument
//! `-Dkoupleless.agent.module.dir=<module dir>` that is on the JVM's command line. A later
//! agent run finds the record and kills the process only if all of these still match, so a
//! recycled pid that now belongs to something else is never touched. Without `/proc` (not
//! Linux) nothing can be verified and nothing is killed.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::BizKey;

/// File name of the record inside a module directory.
pub(crate) const RECORD_FILE: &str = "process.json";

/// System property on every module JVM's command line naming its module directory.
pub(crate) const MARKER_PROPERTY: &str = "koupleless.agent.module.dir";

/// The command-line argument that marks a module JVM as started from `dir`.
pub(crate) fn marker_arg(dir: &Path) -> String {
    format!("-D{MARKER_PROPERTY}={}", dir.display())
}

/// What the backend remembers about a module process it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    /// Which module.
    pub key: BizKey,
    /// Pid of the JVM, which is also its process group id.
    pub pid: u32,
    /// Kernel start time of the process in clock ticks since boot, when it could be read.
    pub start_time: Option<u64>,
    /// The marker argument on its command line.
    pub marker: String,
}

/// The parts of `/proc/<pid>/stat` that identify a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// State letter (`R`, `S`, `D`, `Z`, ...).
    pub state: char,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Whether the process still runs (a zombie has finished, it only awaits reaping).
    pub(crate) fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may contain
/// spaces and parentheses itself, so fields are counted from the last `)`.
pub(crate) fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, pgrp field 5, starttime field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// Reads and parses `/proc/<pid>/stat`; `None` when the process does not exist.
pub(crate) fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Reads `/proc/<pid>/cmdline` (NUL-separated arguments).
pub(crate) fn read_cmdline(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// Whether a NUL-separated command line has `arg` as one whole argument.
pub(crate) fn cmdline_has_arg(cmdline: &[u8], arg: &str) -> bool {
    cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
}

/// What to do about a recorded process found at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Leftover {
    /// It is the module process: stop it (its whole group when it leads one).
    Ours {
        /// Its pid.
        pid: u32,
        /// Whether it leads its own process group (then signal the group).
        group_leader: bool,
    },
    /// The process is gone (or a zombie): nothing to kill.
    Gone,
    /// The pid now belongs to another process: leave it alone.
    NotOurs,
}

/// Decides whether a recorded pid is still the module process: running, same kernel start
/// time (when recorded), and the marker on its command line.
pub(crate) fn classify(
    record: &ProcessRecord,
    stat: Option<ProcStat>,
    cmdline: Option<&[u8]>,
) -> Leftover {
    let Some(stat) = stat.filter(ProcStat::running) else {
        return Leftover::Gone;
    };
    let same_start = record.start_time.is_none_or(|t| t == stat.start_time);
    let marked = cmdline.is_some_and(|c| cmdline_has_arg(c, &record.marker));
    if same_start && marked {
        Leftover::Ours {
            pid: record.pid,
            group_leader: i64::from(stat.pgrp) == i64::from(record.pid),
        }
    } else {
        Leftover::NotOurs
    }
}

/// Whether `pid` is still the process that `record` describes (for polling a kill).
pub(crate) fn still_running(record: &ProcessRecord) -> bool {
    read_stat(record.pid)
        .is_some_and(|s| s.running() && record.start_time.is_none_or(|t| t == s.start_time))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str =
        "4242 (java) S 1 4242 4242 0 -1 4194560 1000 0 0 0 10 5 0 0 20 0 19 0 123456 1000000 5000";

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let cases: &[(&str, Option<ProcStat>)] = &[
            (
                STAT,
                Some(ProcStat {
                    state: 'S',
                    pgrp: 4242,
                    start_time: 123_456,
                }),
            ),
            (
                "7 (a) (b c) Z 1 99 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77 0 0",
                Some(ProcStat {
                    state: 'Z',
                    pgrp: 99,
                    start_time: 77,
                }),
            ),
            ("7 (java) S 1 2", None),
            ("garbage", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(text), *want, "stat {text:?}");
        }
    }

    #[test]
    fn own_stat_is_readable() {
        let me = read_stat(std::process::id()).expect("/proc/self/stat");
        assert!(me.running());
    }

    #[test]
    fn command_lines_match_whole_arguments_only() {
        let cmd = b"java\0-Dkoupleless.agent.module.dir=/w/m/a-1\0-cp\0x\0";
        assert!(cmdline_has_arg(
            cmd,
            "-Dkoupleless.agent.module.dir=/w/m/a-1"
        ));
        assert!(!cmdline_has_arg(
            cmd,
            "-Dkoupleless.agent.module.dir=/w/m/a"
        ));
        assert!(!cmdline_has_arg(
            cmd,
            "-Dkoupleless.agent.module.dir=/w/m/a-10"
        ));
        assert!(!cmdline_has_arg(b"", "x"));
    }

    #[test]
    fn leftovers_are_killed_only_when_everything_matches() {
        let record = ProcessRecord {
            key: BizKey::new("a", "1"),
            pid: 4242,
            start_time: Some(123_456),
            marker: "-Dkoupleless.agent.module.dir=/w/m/a-1".into(),
        };
        let stat = |state, pgrp, start_time| {
            Some(ProcStat {
                state,
                pgrp,
                start_time,
            })
        };
        let good: &[u8] = b"java\0-Dkoupleless.agent.module.dir=/w/m/a-1\0";
        let other: &[u8] = b"sleep\x00100\x00";
        let unrecorded = ProcessRecord {
            start_time: None,
            ..record.clone()
        };
        type Case<'a> = (
            &'a ProcessRecord,
            Option<ProcStat>,
            Option<&'a [u8]>,
            Leftover,
        );
        let cases: &[Case<'_>] = &[
            (
                &record,
                stat('S', 4242, 123_456),
                Some(good),
                Leftover::Ours {
                    pid: 4242,
                    group_leader: true,
                },
            ),
            (
                &record,
                stat('R', 1, 123_456),
                Some(good),
                Leftover::Ours {
                    pid: 4242,
                    group_leader: false,
                },
            ),
            (&record, None, None, Leftover::Gone),
            (
                &record,
                stat('Z', 4242, 123_456),
                Some(good),
                Leftover::Gone,
            ),
            (&record, stat('S', 4242, 999), Some(good), Leftover::NotOurs),
            (
                &record,
                stat('S', 4242, 123_456),
                Some(other),
                Leftover::NotOurs,
            ),
            (&record, stat('S', 4242, 123_456), None, Leftover::NotOurs),
            (
                &unrecorded,
                stat('S', 4242, 999),
                Some(good),
                Leftover::Ours {
                    pid: 4242,
                    group_leader: true,
                },
            ),
            (
                &unrecorded,
                stat('S', 4242, 999),
                Some(other),
                Leftover::NotOurs,
            ),
        ];
        for (rec, st, cmd, want) in cases {
            assert_eq!(classify(rec, *st, *cmd), *want, "{st:?} {cmd:?}");
        }
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = ProcessRecord {
            key: BizKey::new("a", "1.0"),
            pid: 1,
            start_time: None,
            marker: marker_arg(Path::new("/w/m/a-1.0-1")),
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            serde_json::from_str::<ProcessRecord>(&json).unwrap(),
            record
        );
        assert_eq!(record.marker, "-Dkoupleless.agent.module.dir=/w/m/a-1.0-1");
    }
}
