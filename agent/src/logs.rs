//! A module's log over HTTP: `GET /logs/{bizName}/{bizVersion}` with the query options of the
//! kubelet's `containerLogs` (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//! `limitBytes`), so the controller can answer `kubectl logs` for a module Pod with that
//! module's own output.
//!
//! Module JVMs write their stdout and stderr straight into a file (the agent is not in the
//! path, so an agent restart never blocks or breaks a module's output). Line times therefore
//! come from a *clock file* beside the log: while the module runs, its supervisor notes every
//! few hundred milliseconds how long the log has grown, with the time (`<length> <unix nanos>`
//! per line). A line's time is the first note that covers its end: when the agent saw it,
//! within one note period of when it was written. Lines not noted yet (written since the last
//! note, or while no agent ran) take the log file's modification time.
//!
//! Reading never loads the file into memory: the tail is found by scanning backwards in
//! blocks, and the body is streamed in chunks. Following survives rotation: a log that is
//! replaced (another inode) or truncated is read again from its start.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};

/// Suffix of the clock file beside a log (`module.log` -> `module.log.times`).
pub const CLOCK_SUFFIX: &str = ".times";
/// How often a running module's log growth is noted (the precision of line times).
pub const CLOCK_PERIOD: Duration = Duration::from_millis(200);
/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Largest chunk sent at once.
const CHUNK: usize = 64 * 1024;

/// Where a module's log is, as its backend knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSource {
    /// The log file.
    pub path: PathBuf,
    /// The file is the whole base's output, shared by every module (backends that run modules
    /// inside the base JVM), not this module's own.
    pub shared: bool,
}

/// The query options, as the kubelet's `containerLogs` takes them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Keep the stream open and send new lines as they come.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail_lines: Option<u64>,
    /// Only lines from this time on (unix nanoseconds).
    pub since_nanos: Option<i64>,
    /// Prefix each line with its RFC 3339 time and a space.
    pub timestamps: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

/// A query option that cannot be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QueryError {
    /// Not a value of the option's type.
    #[error("{name}: {value:?} is not {expected}")]
    Invalid {
        /// The option.
        name: &'static str,
        /// What was given.
        value: String,
        /// What it must be.
        expected: &'static str,
    },
    /// `sinceSeconds` and `sinceTime` together (the API server refuses it too).
    #[error("at most one of sinceTime or sinceSeconds may be specified")]
    BothSince,
}

impl LogQuery {
    /// Parses the query string's pairs; `now` resolves `sinceSeconds`.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        now: SystemTime,
    ) -> Result<LogQuery, QueryError> {
        let mut q = LogQuery::default();
        let mut since_seconds = None;
        let mut since_time = None;
        for (name, value) in pairs {
            let invalid = |name, expected| QueryError::Invalid {
                name,
                value: value.to_owned(),
                expected,
            };
            match name {
                "follow" => q.follow = parse_bool(value).ok_or(invalid("follow", "a boolean"))?,
                "timestamps" => {
                    q.timestamps = parse_bool(value).ok_or(invalid("timestamps", "a boolean"))?;
                }
                "tailLines" => {
                    q.tail_lines = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("tailLines", "a non-negative integer"))?,
                    );
                }
                "limitBytes" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| invalid("limitBytes", "a positive integer"))?;
                    if n == 0 {
                        return Err(invalid("limitBytes", "a positive integer"));
                    }
                    q.limit_bytes = Some(n);
                }
                "sinceSeconds" => {
                    let n: u64 = value
                        .parse()
                        .map_err(|_| invalid("sinceSeconds", "a positive integer"))?;
                    if n == 0 {
                        return Err(invalid("sinceSeconds", "a positive integer"));
                    }
                    since_seconds = Some(n);
                }
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(value)
                        .map_err(|_| invalid("sinceTime", "an RFC 3339 time"))?;
                    // Nanoseconds overflow past 2262: saturate, keeping the direction.
                    let saturated = if t.timestamp() > 0 {
                        i64::MAX
                    } else {
                        i64::MIN
                    };
                    since_time = Some(t.timestamp_nanos_opt().unwrap_or(saturated));
                }
                // Options the kubelet has and a module log does not need (`previous`,
                // `insecureSkipTLSVerifyBackend`, `container`) are ignored, as unknown ones are.
                _ => {}
            }
        }
        q.since_nanos = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err(QueryError::BothSince),
            (Some(s), None) => {
                let t = now
                    .checked_sub(Duration::from_secs(s))
                    .unwrap_or(UNIX_EPOCH);
                Some(unix_nanos(t))
            }
            (None, t) => t,
        };
        Ok(q)
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "" | "true" | "1" | "True" | "TRUE" => Some(true),
        "false" | "0" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// Nanoseconds since the epoch (0 before it).
pub fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The clock file of `log`.
pub fn clock_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(CLOCK_SUFFIX);
    PathBuf::from(p)
}

/// One note of the clock file: the log was `len` bytes long at `nanos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note {
    /// Length of the log.
    pub len: u64,
    /// When it was seen (unix nanoseconds).
    pub nanos: i64,
}

/// Notes a log's growth into its clock file. Owned by whoever supervises the writer.
#[derive(Debug)]
pub struct LogClock {
    log: PathBuf,
    clock: PathBuf,
    last: u64,
}

impl LogClock {
    /// A clock for `log`, continuing the notes already in its clock file.
    pub fn new(log: &Path) -> LogClock {
        let clock = clock_path(log);
        let last = read_notes(&clock).last().map_or(0, |n| n.len);
        LogClock {
            log: log.to_path_buf(),
            clock,
            last,
        }
    }

    /// Notes the log's length now if it grew; starts the notes over if it shrank (the log
    /// was truncated or replaced). Blocking file I/O, small.
    pub fn tick(&mut self, now: SystemTime) -> std::io::Result<()> {
        let len = match std::fs::metadata(&self.log) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if len == self.last {
            return Ok(());
        }
        let mut f = if len < self.last {
            File::create(&self.clock)?
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.clock)?
        };
        writeln!(f, "{len} {}", unix_nanos(now))?;
        self.last = len;
        Ok(())
    }
}

/// The notes of a clock file, in order; a torn last line or a missing file gives fewer notes.
pub fn read_notes(clock: &Path) -> Vec<Note> {
    let Ok(f) = File::open(clock) else {
        return Vec::new();
    };
    let mut notes: Vec<Note> = Vec::new();
    for line in BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let mut parts = line.split(' ');
        let (Some(len), Some(nanos), None) = (parts.next(), parts.next(), parts.next()) else {
            break;
        };
        let (Ok(len), Ok(nanos)) = (len.parse(), nanos.parse()) else {
            break;
        };
        // A restarted log starts the notes over; only the current generation counts.
        if notes.last().is_some_and(|n| len < n.len) {
            notes.clear();
        }
        notes.push(Note { len, nanos });
    }
    notes
}

/// When the byte just before `end` was first seen: the first note that covers it, else
/// `fallback` (the file's modification time).
pub fn time_of(notes: &[Note], end: u64, fallback: i64) -> i64 {
    let i = notes.partition_point(|n| n.len < end);
    notes.get(i).map_or(fallback, |n| n.nanos)
}

/// The first offset whose bytes may have been written at or after `since`: the length at the
/// last note before `since` (bytes up to there were all seen earlier).
pub fn offset_since(notes: &[Note], since: i64, mtime: i64, len: u64) -> u64 {
    let i = notes.partition_point(|n| n.nanos < since);
    if i == notes.len() && mtime < since {
        // Nothing noted at or after `since`, nor written since: nothing.
        return len;
    }
    i.checked_sub(1).map_or(0, |i| notes[i].len)
}

/// Formats a line time as the kubelet does (`RFC3339Nano`).
pub fn format_time(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Offset of the start of the last `n` lines of `f` (of length `len`), scanning backwards
/// in blocks. A last line without a newline counts as a line.
pub fn tail_offset<R: Read + Seek>(f: &mut R, len: u64, n: u64) -> std::io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let mut buf = vec![0u8; CHUNK];
    let mut pos = len;
    let mut newlines = 0u64;
    let mut first = true;
    while pos > 0 {
        let size = usize::try_from(pos.min(CHUNK as u64)).unwrap_or(CHUNK);
        pos -= size as u64;
        f.seek(SeekFrom::Start(pos))?;
        f.read_exact(&mut buf[..size])?;
        for i in (0..size).rev() {
            if buf[i] != b'\n' {
                continue;
            }
            if first && pos + i as u64 == len - 1 {
                // The final newline ends the last line; it does not start one.
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok(pos + i as u64 + 1);
            }
        }
        first = false;
    }
    Ok(0)
}

/// Moves `start` forward to the beginning of a line.
fn align_to_line<R: Read + Seek>(f: &mut R, start: u64, len: u64) -> std::io::Result<u64> {
    if start == 0 || start >= len {
        return Ok(start.min(len));
    }
    f.seek(SeekFrom::Start(start - 1))?;
    let mut r = BufReader::new(f.by_ref());
    let mut skipped = Vec::new();
    let n = r.read_until(b'\n', &mut skipped)?;
    // One byte before `start` was read too: if it was the newline, `start` begins a line.
    Ok(if skipped.first() == Some(&b'\n') {
        start
    } else {
        start - 1 + n as u64
    })
}

/// Why streaming stopped early.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The log file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The log.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Streams `source`'s log per `q` into `emit` (which returns `false` once the reader has
/// gone). `keep_following` is asked on every poll while following; the stream ends when it
/// says no (the module is gone) or the reader goes. Blocking: run it on a blocking thread.
pub fn stream(
    path: &Path,
    q: &LogQuery,
    mut emit: impl FnMut(Vec<u8>) -> bool,
    keep_following: impl Fn() -> bool,
) -> Result<(), StreamError> {
    let io = |source| StreamError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    let len = meta.len();
    let mtime = meta.modified().map(unix_nanos).unwrap_or(0);
    let mut notes = read_notes(&clock_path(path));
    let mut start = 0;
    if let Some(since) = q.since_nanos {
        start = offset_since(&notes, since, mtime, len);
        start = align_to_line(&mut f, start, len).map_err(io)?;
    }
    if let Some(n) = q.tail_lines {
        start = start.max(tail_offset(&mut f, len, n).map_err(io)?);
    }
    let mut out = Output {
        q,
        budget: q.limit_bytes.unwrap_or(u64::MAX),
        pending: Vec::new(),
        offset: start,
    };
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut inode = meta.ino();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n > 0 {
            let mtime = f
                .metadata()
                .and_then(|m| m.modified())
                .map(unix_nanos)
                .unwrap_or(mtime);
            match out.push(&buf[..n], &notes, mtime, &mut emit) {
                Flow::More => continue,
                Flow::Stop => return Ok(()),
            }
        }
        if !q.follow {
            out.flush(&notes, mtime, &mut emit);
            return Ok(());
        }
        // Caught up: wait for more, or for the log to be replaced or truncated.
        loop {
            if !keep_following() {
                out.flush(&notes, mtime, &mut emit);
                return Ok(());
            }
            std::thread::sleep(FOLLOW_POLL);
            let Ok(now) = std::fs::metadata(path) else {
                continue;
            };
            let pos = f.stream_position().map_err(io)?;
            if now.ino() != inode || now.len() < pos {
                out.flush(&notes, mtime, &mut emit);
                f = File::open(path).map_err(io)?;
                inode = now.ino();
                out.offset = 0;
                notes = read_notes(&clock_path(path));
                break;
            }
            if now.len() > pos {
                notes = read_notes(&clock_path(path));
                break;
            }
        }
    }
}

enum Flow {
    More,
    Stop,
}

/// Turns read bytes into output: line times, the byte budget, whole lines while following.
struct Output<'a> {
    q: &'a LogQuery,
    budget: u64,
    /// An incomplete last line, held back while timestamps are on.
    pending: Vec<u8>,
    /// File offset of the first byte not yet consumed (pending included).
    offset: u64,
}

impl Output<'_> {
    fn push(
        &mut self,
        bytes: &[u8],
        notes: &[Note],
        mtime: i64,
        emit: &mut impl FnMut(Vec<u8>) -> bool,
    ) -> Flow {
        if !self.q.timestamps {
            self.offset += bytes.len() as u64;
            return self.send(bytes.to_vec(), emit);
        }
        let mut chunk = Vec::with_capacity(bytes.len() + 64);
        let mut rest = bytes;
        let mut line_start = self.offset - self.pending.len() as u64;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let end = line_start + self.pending.len() as u64 + i as u64 + 1;
            chunk.extend_from_slice(format_time(time_of(notes, end, mtime)).as_bytes());
            chunk.push(b' ');
            chunk.append(&mut self.pending);
            chunk.extend_from_slice(&rest[..=i]);
            rest = &rest[i + 1..];
            line_start = end;
        }
        self.pending.extend_from_slice(rest);
        self.offset += bytes.len() as u64;
        if chunk.is_empty() {
            Flow::More
        } else {
            self.send(chunk, emit)
        }
    }

    /// Sends an incomplete last line (end of a non-following read, or the end of a follow).
    fn flush(&mut self, notes: &[Note], mtime: i64, emit: &mut impl FnMut(Vec<u8>) -> bool) {
        if self.pending.is_empty() {
            return;
        }
        let mut line = format_time(time_of(notes, self.offset, mtime)).into_bytes();
        line.push(b' ');
        line.append(&mut self.pending);
        let _ = self.send(line, emit);
    }

    fn send(&mut self, mut bytes: Vec<u8>, emit: &mut impl FnMut(Vec<u8>) -> bool) -> Flow {
        if self.budget == 0 {
            return Flow::Stop;
        }
        let last = (bytes.len() as u64) >= self.budget;
        if last {
            bytes.truncate(usize::try_from(self.budget).unwrap_or(usize::MAX));
        }
        self.budget -= bytes.len() as u64;
        if !emit(bytes) || last {
            Flow::Stop
        } else {
            Flow::More
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn query_options() {
        let now = at(1_000);
        let ok = |pairs: &[(&str, &str)]| LogQuery::parse(pairs.iter().copied(), now).unwrap();
        assert_eq!(ok(&[]), LogQuery::default());
        let q = ok(&[
            ("follow", "true"),
            ("tailLines", "5"),
            ("timestamps", "1"),
            ("limitBytes", "100"),
            ("sinceSeconds", "10"),
        ]);
        assert_eq!(
            q,
            LogQuery {
                follow: true,
                tail_lines: Some(5),
                since_nanos: Some(990 * 1_000_000_000),
                timestamps: true,
                limit_bytes: Some(100),
            }
        );
        assert_eq!(
            ok(&[("sinceTime", "1970-01-01T00:01:40Z")]).since_nanos,
            Some(100_000_000_000)
        );
        assert_eq!(
            ok(&[("container", "biz1"), ("follow", "false")]),
            LogQuery::default()
        );
        assert_eq!(
            ok(&[("sinceTime", "2999-01-01T00:00:00Z")]).since_nanos,
            Some(i64::MAX)
        );
        let bad: &[&[(&str, &str)]] = &[
            &[("follow", "yes")],
            &[("tailLines", "-1")],
            &[("limitBytes", "0")],
            &[("sinceSeconds", "0")],
            &[("sinceTime", "yesterday")],
        ];
        for pairs in bad {
            assert!(
                matches!(
                    LogQuery::parse(pairs.iter().copied(), now),
                    Err(QueryError::Invalid { .. })
                ),
                "{pairs:?}"
            );
        }
        assert_eq!(
            LogQuery::parse(
                [("sinceSeconds", "1"), ("sinceTime", "1970-01-01T00:00:00Z")],
                now
            ),
            Err(QueryError::BothSince)
        );
    }

    #[test]
    fn tail_offsets() {
        // (content, lines wanted, offset)
        let cases: &[(&str, u64, u64)] = &[
            ("a\nb\nc\n", 1, 4),
            ("a\nb\nc\n", 2, 2),
            ("a\nb\nc\n", 3, 0),
            ("a\nb\nc\n", 9, 0),
            ("a\nb\nc", 1, 4),
            ("a\nb\nc", 2, 2),
            ("a\nb\nc\n", 0, 6),
            ("", 3, 0),
            ("\n\n", 1, 1),
        ];
        for &(content, n, want) in cases {
            let mut c = Cursor::new(content.as_bytes());
            assert_eq!(
                tail_offset(&mut c, content.len() as u64, n).unwrap(),
                want,
                "{content:?} tail {n}"
            );
        }
        // Across block boundaries.
        let big: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let mut c = Cursor::new(big.as_bytes());
        let off = tail_offset(&mut c, big.len() as u64, 12_345).unwrap();
        assert!(big[off as usize..].starts_with("line 7655\n"));
    }

    #[test]
    fn line_times_and_since() {
        let notes = [
            Note {
                len: 10,
                nanos: 100,
            },
            Note {
                len: 25,
                nanos: 200,
            },
            Note {
                len: 40,
                nanos: 300,
            },
        ];
        // (line end, time)
        for (end, want) in [(1, 100), (10, 100), (11, 200), (40, 300), (41, 999)] {
            assert_eq!(time_of(&notes, end, 999), want, "end {end}");
        }
        // (since, mtime, offset): bytes up to the last note before `since` were seen earlier.
        for (since, mtime, want) in [
            (50, 400, 0),
            (100, 400, 0),
            (150, 400, 10),
            (300, 400, 25),
            (350, 400, 40),
            (350, 320, 50),
        ] {
            assert_eq!(
                offset_since(&notes, since, mtime, 50),
                want,
                "since {since}"
            );
        }
        // No notes (a log no clock watched): all of it, or nothing if older than `since`.
        assert_eq!(offset_since(&[], 100, 200, 50), 0);
        assert_eq!(offset_since(&[], 300, 200, 50), 50);
    }

    #[test]
    fn clock_notes_growth_and_starts_over_on_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("module.log");
        let mut clock = LogClock::new(&log);
        clock.tick(at(1)).unwrap(); // no log yet: nothing
        std::fs::write(&log, "a\n").unwrap();
        clock.tick(at(2)).unwrap();
        clock.tick(at(3)).unwrap(); // unchanged: nothing
        std::fs::write(&log, "a\nbb\n").unwrap();
        clock.tick(at(4)).unwrap();
        let s = 1_000_000_000;
        assert_eq!(
            read_notes(&clock_path(&log)),
            [
                Note {
                    len: 2,
                    nanos: 2 * s
                },
                Note {
                    len: 5,
                    nanos: 4 * s
                }
            ]
        );
        // A new clock continues the notes.
        let mut again = LogClock::new(&log);
        std::fs::write(&log, "x\n").unwrap();
        again.tick(at(5)).unwrap();
        assert_eq!(
            read_notes(&clock_path(&log)),
            [Note {
                len: 2,
                nanos: 5 * s
            }]
        );
    }

    fn collect(path: &Path, q: &LogQuery) -> String {
        let mut out = Vec::new();
        stream(
            path,
            q,
            |b| {
                out.extend(b);
                true
            },
            || false,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streams_tail_limit_since_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("module.log");
        std::fs::write(&log, "one\ntwo\nthree\nfour").unwrap();
        std::fs::write(clock_path(&log), "8 1000000000\n14 2000000000\n").unwrap();
        let q = |f: fn(&mut LogQuery)| {
            let mut q = LogQuery::default();
            f(&mut q);
            q
        };
        assert_eq!(collect(&log, &q(|_| {})), "one\ntwo\nthree\nfour");
        assert_eq!(collect(&log, &q(|q| q.tail_lines = Some(2))), "three\nfour");
        assert_eq!(collect(&log, &q(|q| q.limit_bytes = Some(6))), "one\ntw");
        assert_eq!(
            collect(&log, &q(|q| q.since_nanos = Some(1_500_000_000))),
            "three\nfour"
        );
        let stamped = collect(
            &log,
            &q(|q| {
                q.timestamps = true;
                q.tail_lines = Some(3);
            }),
        );
        let lines: Vec<&str> = stamped.lines().collect();
        assert_eq!(lines[0], "1970-01-01T00:00:01.000000000Z two");
        assert_eq!(lines[1], "1970-01-01T00:00:02.000000000Z three");
        assert!(lines[2].ends_with("Z four"), "{stamped}");
        assert!(!lines[2].starts_with("1970"), "unnoted: the file's mtime");
    }

    #[test]
    fn follow_sees_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("module.log");
        std::fs::write(&log, "first\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let path = log.clone();
        let reader = std::thread::spawn(move || {
            let q = LogQuery {
                follow: true,
                ..LogQuery::default()
            };
            stream(
                &path,
                &q,
                |b| tx.send(b).is_ok(),
                || !stop.load(std::sync::atomic::Ordering::SeqCst),
            )
        });
        let mut seen = String::new();
        let mut wait_for = |want: &str| {
            while !seen.contains(want) {
                let chunk = rx.recv_timeout(Duration::from_secs(10)).expect(want);
                seen.push_str(&String::from_utf8(chunk).unwrap());
            }
        };
        wait_for("first\n");
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(f, "second").unwrap();
        wait_for("second\n");
        // Rotation: the log is moved away and a new one starts.
        std::fs::rename(&log, dir.path().join("module.log.1")).unwrap();
        std::fs::write(&log, "after rotation\n").unwrap();
        wait_for("after rotation\n");
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap().unwrap();
        assert_eq!(seen, "first\nsecond\nafter rotation\n");
    }
}
