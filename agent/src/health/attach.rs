//! A HotSpot dynamic-attach client (Linux, protocol version 1; spec jvm-health §2) and parsers
//! for the diagnostic commands the sampler uses.
//!
//! Safety rules (spec §2.3), because a mistaken SIGQUIT either dumps threads into the
//! application log or, with `-Xrs`, kills the JVM:
//! - an existing socket is used as is; a signal is sent only after the trigger file exists and
//!   only if `/proc/<pid>/status` shows SIGQUIT in `SigCgt`;
//! - a JVM whose pid we cannot see is never signalled (only a pre-started listener is used);
//! - a JVM that reports attach as unsupported is never signalled (the caller checks
//!   `sun.rt.jvmCapabilities` or the command line for `-XX:+DisableAttachMechanism`);
//! - a stale socket is removed only when its JVM is known to be dead;
//! - the peer of the socket must be the expected process when its pid is visible to us.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::Pid;
use thiserror::Error;

use super::jvm::{CodeCache, LiveMetaspace};

/// How the agent reaches one JVM's attach mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    /// The JVM's pid in the agent's pid namespace; None when it is not visible.
    pub host_pid: Option<u32>,
    /// The JVM's pid in its own namespace (names the socket and trigger files).
    pub ns_pid: u32,
    /// The JVM's `/tmp` as the agent sees it (e.g. `/proc/<pid>/root/tmp`).
    pub tmp_dir: PathBuf,
    /// The JVM's working directory as the agent sees it (`/proc/<pid>/cwd`).
    pub cwd: Option<PathBuf>,
    /// The JVM's effective uid and gid, when known.
    pub owner: Option<(u32, u32)>,
}

impl AttachTarget {
    /// `<tmp>/.java_pid<nspid>`.
    pub fn socket_path(&self) -> PathBuf {
        self.tmp_dir.join(format!(".java_pid{}", self.ns_pid))
    }
}

/// Why an attach call failed.
#[derive(Debug, Error)]
pub enum AttachError {
    /// The agent's credentials cannot pass the JVM's peer check.
    #[error("attach not permitted: {0}")]
    NotPermitted(String),
    /// The JVM runs with `-XX:+DisableAttachMechanism`.
    #[error("attach is disabled in the JVM (-XX:+DisableAttachMechanism)")]
    Disabled,
    /// SIGQUIT is not caught (`-Xrs`, or the JVM is not initialised): signalling could kill it.
    #[error("the JVM does not catch SIGQUIT (-Xrs or still starting), so it is not signalled")]
    NoSigQuitHandler,
    /// No socket and no visible pid to signal.
    #[error(
        "no attach socket and the JVM's pid is not visible to the agent (share the pid namespace, or start the JVM with -XX:+StartAttachListener)"
    )]
    PidNotVisible,
    /// The listener did not appear in time.
    #[error("the attach listener did not start within {0:?}")]
    Timeout(Duration),
    /// The caller gave up.
    #[error("attach cancelled")]
    Cancelled,
    /// The socket is served by another process.
    #[error("{path} is served by pid {peer}, not by the JVM (pid {expected})")]
    WrongPeer {
        /// The socket.
        path: PathBuf,
        /// Its server's pid.
        peer: i32,
        /// The JVM's pid.
        expected: u32,
    },
    /// A file or socket operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The reply did not start with a status line.
    #[error("malformed attach reply: {0}")]
    Protocol(String),
    /// The JVM ran the command and reported an error.
    #[error("attach command {command:?} failed with status {status}: {text}")]
    Command {
        /// The command.
        command: String,
        /// Its status.
        status: i32,
        /// Its output.
        text: String,
    },
}

impl AttachError {
    /// True when retrying cannot help until the configuration or the JVM changes; the sampler
    /// logs these once and falls back to hsperfdata.
    pub fn is_permanent(&self) -> bool {
        match self {
            AttachError::NotPermitted(_)
            | AttachError::Disabled
            | AttachError::NoSigQuitHandler
            | AttachError::PidNotVisible
            | AttachError::WrongPeer { .. } => true,
            AttachError::Io { source, .. } => source.kind() == io::ErrorKind::PermissionDenied,
            _ => false,
        }
    }
}

/// Whether a client with `ours` (euid, egid) passes HotSpot's peer check for a JVM owned by
/// `theirs`: root, or the same uid and gid.
pub fn permission_check(ours: (u32, u32), theirs: Option<(u32, u32)>) -> Result<(), String> {
    match theirs {
        _ if ours.0 == 0 => Ok(()),
        None => Ok(()),
        Some(t) if t == ours => Ok(()),
        Some((uid, gid)) => Err(format!(
            "the agent runs as uid {} gid {}, the JVM as uid {uid} gid {gid}: run the agent as uid {uid} gid {gid} or as root",
            ours.0, ours.1
        )),
    }
}

/// Whether `/proc/<pid>/status` text shows SIGQUIT (signal 3) in `SigCgt`.
pub fn sigquit_caught(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))?
        .trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1 << (3 - 1)) != 0)
}

/// Splits a reply into its status and text.
pub fn parse_reply(reply: &[u8]) -> Result<(i32, String), AttachError> {
    let text = String::from_utf8_lossy(reply);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let status = first.trim().parse::<i32>().map_err(|_| {
        AttachError::Protocol(format!("no status line in {:?}", truncate(&text, 80)))
    })?;
    Ok((status, rest.to_owned()))
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AttachError + 'a {
    move |source| AttachError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Removes the trigger file when the attempt ends, however it ends.
struct Trigger(PathBuf);

impl Drop for Trigger {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// An attach client for one JVM.
#[derive(Debug, Clone)]
pub struct AttachClient {
    target: AttachTarget,
    /// Upper bound for the listener to start and for one command's reply.
    pub timeout: Duration,
}

impl AttachClient {
    /// A client for `target`.
    pub fn new(target: AttachTarget, timeout: Duration) -> Self {
        AttachClient { target, timeout }
    }

    /// The target.
    pub fn target(&self) -> &AttachTarget {
        &self.target
    }

    /// Runs an attach command (`jcmd`, `properties`, `printflag`, …) with up to three
    /// arguments and returns its text when the status is 0. `cancelled` is polled while waiting
    /// for the listener.
    pub fn execute(
        &self,
        command: &str,
        args: &[&str],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<String, AttachError> {
        let ours = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        permission_check(ours, self.target.owner).map_err(AttachError::NotPermitted)?;
        let mut stream = self.connect(cancelled)?;
        let mut request = Vec::with_capacity(64);
        request.extend_from_slice(b"1\0");
        request.extend_from_slice(command.as_bytes());
        request.push(0);
        for i in 0..3 {
            request.extend_from_slice(args.get(i).copied().unwrap_or("").as_bytes());
            request.push(0);
        }
        let path = self.target.socket_path();
        stream
            .write_all(&request)
            .map_err(io_err("write to", &path))?;
        let mut reply = Vec::with_capacity(4096);
        stream
            .read_to_end(&mut reply)
            .map_err(io_err("read from", &path))?;
        let (status, text) = parse_reply(&reply)?;
        if status != 0 {
            return Err(AttachError::Command {
                command: format!("{command} {}", args.join(" ")).trim().to_owned(),
                status,
                text,
            });
        }
        Ok(text)
    }

    /// `jcmd <line>`.
    pub fn jcmd(&self, line: &str, cancelled: &dyn Fn() -> bool) -> Result<String, AttachError> {
        self.execute("jcmd", &[line], cancelled)
    }

    fn try_connect(&self) -> Result<UnixStream, AttachError> {
        let path = self.target.socket_path();
        let stream = UnixStream::connect(&path).map_err(io_err("connect to", &path))?;
        if let (Some(expected), Ok(cred)) =
            (self.target.host_pid, getsockopt(&stream, PeerCredentials))
        {
            // pid 0: the server is outside our pid namespace, so the check is not possible.
            if cred.pid() != 0 && cred.pid() as u32 != expected {
                return Err(AttachError::WrongPeer {
                    path,
                    peer: cred.pid(),
                    expected,
                });
            }
        }
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(io_err("configure", &path))?;
        stream
            .set_write_timeout(Some(self.timeout))
            .map_err(io_err("configure", &path))?;
        Ok(stream)
    }

    fn connect(&self, cancelled: &dyn Fn() -> bool) -> Result<UnixStream, AttachError> {
        let path = self.target.socket_path();
        if path.exists() {
            match self.try_connect() {
                Ok(s) => return Ok(s),
                // A socket file nobody listens on: left by a dead JVM with the same pid. The
                // live JVM replaces it when its listener starts, so fall through to starting it.
                Err(AttachError::Io { source, .. })
                    if source.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
        let pid = self.target.host_pid.ok_or(AttachError::PidNotVisible)?;
        let status_path = PathBuf::from(format!("/proc/{pid}/status"));
        let status = std::fs::read_to_string(&status_path).map_err(io_err("read", &status_path))?;
        if sigquit_caught(&status) != Some(true) {
            return Err(AttachError::NoSigQuitHandler);
        }
        let _trigger = self.create_trigger()?;
        kill(Pid::from_raw(pid as i32), Signal::SIGQUIT).map_err(|e| AttachError::Io {
            op: "send SIGQUIT to",
            path: PathBuf::from(format!("/proc/{pid}")),
            source: io::Error::from(e),
        })?;
        let start = Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            std::thread::sleep(delay);
            if path.exists() {
                match self.try_connect() {
                    Ok(s) => return Ok(s),
                    Err(AttachError::Io { source, .. })
                        if source.kind() == io::ErrorKind::ConnectionRefused => {}
                    Err(e) => return Err(e),
                }
            }
            if cancelled() {
                return Err(AttachError::Cancelled);
            }
            if start.elapsed() >= self.timeout {
                return Err(AttachError::Timeout(self.timeout));
            }
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// The JVM looks for `.attach_pid<nspid>` in its working directory, then in its `/tmp`.
    fn create_trigger(&self) -> Result<Trigger, AttachError> {
        let name = format!(".attach_pid{}", self.target.ns_pid);
        let mut last = None;
        for dir in self
            .target
            .cwd
            .iter()
            .chain(std::iter::once(&self.target.tmp_dir))
        {
            let path = dir.join(&name);
            match std::fs::File::create(&path) {
                Ok(_) => return Ok(Trigger(path)),
                Err(e) => last = Some((path, e)),
            }
        }
        let (path, source) = last.expect("tmp_dir is always tried");
        Err(AttachError::Io {
            op: "create trigger",
            path,
            source,
        })
    }
}

/// Removes `<tmp>/.java_pid<nspid>` left by a JVM that is dead (`alive` false). A live JVM's
/// socket is never touched, and neither is a socket someone still listens on: with a shared
/// `/tmp`, a new JVM in another container may already own the same name. Returns whether a
/// file was removed.
pub fn remove_stale_socket(tmp_dir: &Path, ns_pid: u32, alive: bool) -> io::Result<bool> {
    if alive {
        return Ok(false);
    }
    let path = tmp_dir.join(format!(".java_pid{ns_pid}"));
    if UnixStream::connect(&path).is_ok() {
        return Ok(false);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn kib(s: &str) -> Option<i64> {
    s.trim()
        .trim_end_matches(',')
        .strip_suffix('K')?
        .parse::<i64>()
        .ok()
        .map(|v| v * 1024)
}

/// Parses `jcmd GC.heap_info`: metaspace and class space (`used NK, committed NK, reserved NK`)
/// and, where the collector prints them, the heap's `total NK, used NK` lines.
pub fn parse_heap_info(text: &str) -> Option<LiveMetaspace> {
    let triple = |line: &str| -> Option<(i64, i64)> {
        let used = line.split("used ").nth(1)?.split(',').next()?;
        let committed = line.split("committed ").nth(1)?.split(',').next()?;
        Some((kib(used)?, kib(committed)?))
    };
    let mut meta = None;
    let mut class = None;
    let (mut heap_used, mut heap_total, mut heap_lines) = (0i64, 0i64, 0);
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("Metaspace") {
            meta = triple(t);
        } else if t.starts_with("class space") {
            class = triple(t);
        } else if let Some((_, rest)) = t.split_once(" total ")
            && let Some((total, used)) = rest.split_once(", used ")
            && let (Some(total), Some(used)) =
                (kib(total), used.split_whitespace().next().and_then(kib))
        {
            heap_total += total;
            heap_used += used;
            heap_lines += 1;
        }
    }
    let (used, committed) = meta?;
    let (class_used, class_committed) = class.unwrap_or((0, 0));
    Some(LiveMetaspace {
        used,
        committed,
        class_used,
        class_committed,
        heap_used: (heap_lines > 0).then_some(heap_used),
        heap_committed: (heap_lines > 0).then_some(heap_total),
        gc_count: None,
    })
}

/// Parses `jcmd VM.flags` (non-default flags on one line) into name → value (`true`/`false`
/// for booleans).
pub fn parse_vm_flags(text: &str) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    for tok in text
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("-XX:"))
    {
        if let Some(name) = tok.strip_prefix('+') {
            flags.insert(name.to_owned(), "true".to_owned());
        } else if let Some(name) = tok.strip_prefix('-') {
            flags.insert(name.to_owned(), "false".to_owned());
        } else if let Some((name, value)) = tok.split_once('=') {
            flags.insert(name.to_owned(), value.to_owned());
        }
    }
    flags
}

/// Parses `jcmd Compiler.codecache`: `size=NKb used=NKb` per code heap and the committed span
/// from each `bounds [low, high, high_boundary]` line.
pub fn parse_codecache(text: &str) -> Option<CodeCache> {
    let kb = |line: &str, key: &str| -> Option<i64> {
        let v = line.split(key).nth(1)?.split_whitespace().next()?;
        v.strip_suffix("Kb")?.parse::<i64>().ok().map(|v| v * 1024)
    };
    let hex = |s: &str| i64::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok();
    let mut cc = CodeCache {
        used: 0,
        committed: 0,
        reserved: 0,
        heap_sizes: Vec::new(),
    };
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("CodeHeap") || t.starts_with("CodeCache") {
            let size = kb(t, "size=")?;
            cc.reserved += size;
            cc.used += kb(t, "used=")?;
            cc.heap_sizes.push(size);
        } else if let Some(b) = t.strip_prefix("bounds [") {
            let mut parts = b.trim_end_matches(']').split(',');
            let (low, high) = (hex(parts.next()?)?, hex(parts.next()?)?);
            cc.committed += (high - low).max(0);
        }
    }
    (!cc.heap_sizes.is_empty()).then_some(cc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigcgt() {
        let normal = "Name:\tjava\nSigBlk:\t0000000000000000\nSigCgt:\t2000000181005ccf\n";
        let xrs = "SigCgt:\t2000000181005cca\n";
        assert_eq!(sigquit_caught(normal), Some(true));
        assert_eq!(sigquit_caught(xrs), Some(false));
        assert_eq!(sigquit_caught("Name:\tjava\n"), None);
        assert_eq!(sigquit_caught("SigCgt:\tzz\n"), None);
    }

    #[test]
    fn permissions() {
        assert!(permission_check((0, 0), Some((1000, 1000))).is_ok());
        assert!(permission_check((1000, 1000), Some((1000, 1000))).is_ok());
        assert!(permission_check((1000, 1000), None).is_ok());
        let e = permission_check((1000, 1), Some((1000, 1000))).unwrap_err();
        assert!(e.contains("uid 1000 gid 1000"), "{e}");
        assert!(permission_check((1, 1), Some((1000, 1000))).is_err());
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(b"0\nhello\n").unwrap(),
            (0, "hello\n".to_owned())
        );
        assert_eq!(
            parse_reply(b"-1\nUnknown").unwrap(),
            (-1, "Unknown".to_owned())
        );
        assert_eq!(parse_reply(b"0").unwrap(), (0, String::new()));
        assert!(matches!(
            parse_reply(b"garbage\n"),
            Err(AttachError::Protocol(_))
        ));
        assert!(matches!(parse_reply(b""), Err(AttachError::Protocol(_))));
    }

    #[test]
    fn heap_info_formats() {
        let serial = "13771:\n def new generation   total 19648K, used 2446K [0x00000000fc000000, 0x00000000fd550000, 0x00000000fd550000)\n  eden space 17472K,  14% used [0x00000000fc000000, 0x00000000fc263b60, 0x00000000fd110000)\n  from space 2176K,   0% used [0x00000000fd110000, 0x00000000fd110000, 0x00000000fd330000)\n tenured generation   total 43712K, used 448K [0x00000000fd550000, 0x0000000100000000, 0x0000000100000000)\n   the space 43712K,   1% used [0x00000000fd550000, 0x00000000fd5c0340, 0x00000000fd5c0400, 0x0000000100000000)\n Metaspace       used 1007K, committed 1216K, reserved 131072K\n  class space    used 97K, committed 192K, reserved 65536K\n";
        let l = parse_heap_info(serial).unwrap();
        assert_eq!((l.used, l.committed), (1007 * 1024, 1216 * 1024));
        assert_eq!((l.class_used, l.class_committed), (97 * 1024, 192 * 1024));
        assert_eq!(l.heap_used, Some((2446 + 448) * 1024));
        assert_eq!(l.heap_committed, Some((19648 + 43712) * 1024));
        let g1 = " garbage-first heap   total 10240K, used 1036K [0x00000000fc000000, 0x0000000100000000)\n  region size 1024K, 2 young (2048K), 0 survivors (0K)\n Metaspace       used 700K, committed 896K, reserved 1114112K\n  class space    used 67K, committed 128K, reserved 1048576K\n";
        let l = parse_heap_info(g1).unwrap();
        assert_eq!(l.heap_committed, Some(10240 * 1024));
        assert_eq!(l.used, 700 * 1024);
        assert_eq!(parse_heap_info("no metaspace here"), None);
    }

    #[test]
    fn flags_and_codecache() {
        let f = parse_vm_flags(
            "-XX:CICompilerCount=2 -XX:MaxMetaspaceSize=67108864 -XX:+SegmentedCodeCache -XX:-THPStackMitigation\n",
        );
        assert_eq!(
            f.get("MaxMetaspaceSize").map(String::as_str),
            Some("67108864")
        );
        assert_eq!(
            f.get("SegmentedCodeCache").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            f.get("THPStackMitigation").map(String::as_str),
            Some("false")
        );
        let cc = "CodeHeap 'non-profiled nmethods': size=120036Kb used=108Kb max_used=108Kb free=119927Kb\n bounds [0x00007f91d0ec7000, 0x00007f91d1137000, 0x00007f91d8400000]\nCodeHeap 'profiled nmethods': size=120032Kb used=482Kb max_used=482Kb free=119550Kb\n bounds [0x00007f91c9400000, 0x00007f91c9670000, 0x00007f91d0938000]\nCodeHeap 'non-nmethods': size=5692Kb used=1108Kb max_used=1108Kb free=4583Kb\n bounds [0x00007f91d0938000, 0x00007f91d0ba8000, 0x00007f91d0ec7000]\n total_blobs=733 nmethods=340 adapters=309\n";
        let c = parse_codecache(cc).unwrap();
        assert_eq!(c.reserved, (120036 + 120032 + 5692) * 1024);
        assert_eq!(c.used, (108 + 482 + 1108) * 1024);
        assert_eq!(c.committed, 3 * 0x270000);
        assert_eq!(c.heap_sizes.len(), 3);
        assert_eq!(parse_codecache("nothing"), None);
    }

    #[test]
    fn stale_socket_removed_only_for_dead_jvms() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join(".java_pid42");
        std::fs::write(&sock, b"").unwrap();
        assert!(!remove_stale_socket(dir.path(), 42, true).unwrap());
        assert!(sock.exists());
        assert!(remove_stale_socket(dir.path(), 42, false).unwrap());
        assert!(!sock.exists());
        assert!(!remove_stale_socket(dir.path(), 42, false).unwrap());
        // A socket with a listener is in use, whatever the caller believes.
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(!remove_stale_socket(dir.path(), 42, false).unwrap());
        assert!(sock.exists());
    }
}
