//! Finding the base JVM: by configured pid, or by scanning `/proc` (shared pid namespace) and
//! the hsperfdata directories (`/tmp/hsperfdata_*`, also `/proc/<pid>/root/tmp/…` for a JVM in
//! another container), then choosing by a main-class/command pattern (spec jvm-health §1.1,
//! §1.7).
//!
//! The choice is a pure function ([`select`]); the scans are thin drivers around it.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use regex::Regex;

use super::hsperf;

/// A JVM the agent can monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JvmProcess {
    /// Its pid in the agent's namespace; None when only its perf file is visible (shared `/tmp`,
    /// separate pid namespace).
    pub host_pid: Option<u32>,
    /// Its pid in its own namespace.
    pub ns_pid: u32,
    /// `/proc/<pid>/stat` start time (clock ticks since boot), to tell a restarted JVM that got
    /// the same pid from the one we tracked.
    pub start_ticks: Option<u64>,
    /// Effective uid and gid.
    pub owner: Option<(u32, u32)>,
    /// The hsperfdata file, when one exists.
    pub perf_path: Option<PathBuf>,
    /// Device and inode of the perf file when it was found: a file of the same name with
    /// another identity belongs to a new JVM (a restarted container reuses pid 1).
    pub perf_id: Option<(u64, u64)>,
    /// The JVM's `/tmp` as the agent sees it.
    pub tmp_dir: PathBuf,
    /// The JVM's root directory as the agent sees it (`/proc/<pid>/root` or `/`).
    pub root: PathBuf,
    /// Main class and arguments (from the perf file, else the command line without the JVM
    /// options); only used for matching, never exported.
    pub command: String,
    /// The full command line (NUL-separated arguments joined with spaces), when readable.
    pub cmdline: Option<String>,
}

/// How the tracked JVM was found, which decides how its liveness is checked and whether it
/// may ever be signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundBy {
    /// Its pid is visible in this agent's `/proc` (same or shared pid namespace), checked
    /// against the perf file; liveness from the pid and its start time.
    Pid,
    /// Only its hsperfdata file is visible (separate pid namespace, shared `/tmp`); liveness
    /// from the file, and no signal is ever sent.
    FileOnly,
}

impl FoundBy {
    /// Words for logs and `BaseHealth::found_by`.
    pub fn describe(self) -> &'static str {
        match self {
            FoundBy::Pid => "pid visible in this agent's /proc",
            FoundBy::FileOnly => "hsperfdata file only (pid not visible)",
        }
    }
}

impl JvmProcess {
    /// How this JVM was found.
    pub fn found_by(&self) -> FoundBy {
        if self.host_pid.is_some() {
            FoundBy::Pid
        } else {
            FoundBy::FileOnly
        }
    }
}

/// Why no JVM was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFound {
    /// Human-readable reason, with the remedy when it is a permission problem.
    pub reason: String,
}

/// A candidate for [`select`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Main class and arguments.
    pub command: String,
    /// Start time in clock ticks since boot (older first), when known.
    pub start_ticks: Option<u64>,
    /// Host pid, for a stable order and messages.
    pub pid: Option<u32>,
}

/// JDK tools are JVMs too (`jstat`, `jcmd`, …); never pick them as the base.
pub fn is_jdk_tool(command: &str) -> bool {
    command.starts_with("jdk.jcmd/")
        || command.starts_with("jdk.jconsole/")
        || command.starts_with("sun.tools.")
        || command.starts_with("jdk.internal.")
}

/// Chooses the base among `candidates`: JDK tools are skipped, the pattern (if any) must match
/// the command, and among several matches the longest-running JVM wins (with a warning to log
/// and report). When several match and some have no known start time (JVMs known only by
/// their perf files), there is nothing to rank them by: the choice is refused, naming them.
/// Returns the index and the warning, if any.
pub fn select(
    candidates: &[Candidate],
    pattern: Option<&Regex>,
) -> Result<(usize, Option<String>), NotFound> {
    let eligible: Vec<usize> = (0..candidates.len())
        .filter(|&i| !is_jdk_tool(&candidates[i].command))
        .collect();
    let matching: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| pattern.is_none_or(|p| p.is_match(&candidates[i].command)))
        .collect();
    let describe = |i: usize| {
        let c = &candidates[i];
        let main = c
            .command
            .split_whitespace()
            .next()
            .unwrap_or("command unknown");
        match c.pid {
            Some(pid) => format!("pid {pid} ({main})"),
            None => format!("({main})"),
        }
    };
    if matching.is_empty() {
        let reason = match (pattern, eligible.is_empty()) {
            (_, true) => "no JVM found".to_owned(),
            (Some(p), false) => format!(
                "no JVM matches the pattern {:?}; found {}",
                p.as_str(),
                eligible
                    .iter()
                    .map(|&i| describe(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, false) => unreachable!("without a pattern every eligible JVM matches"),
        };
        return Err(NotFound { reason });
    }
    if matching.len() > 1
        && matching
            .iter()
            .any(|&i| candidates[i].start_ticks.is_none())
    {
        return Err(NotFound {
            reason: format!(
                "{} JVMs match ({}) and they cannot be ranked (some are known only by their hsperfdata files); set --base-main-class to choose the base",
                matching.len(),
                matching
                    .iter()
                    .map(|&i| describe(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let best = *matching
        .iter()
        .min_by_key(|&&i| {
            (
                candidates[i].start_ticks.unwrap_or(u64::MAX),
                candidates[i].pid.unwrap_or(u32::MAX),
            )
        })
        .expect("matching is not empty");
    let warning = (matching.len() > 1).then(|| {
        format!(
            "{} JVMs match ({}); chose the longest-running, {}; set a main-class pattern to choose explicitly",
            matching.len(),
            matching.iter().map(|&i| describe(i)).collect::<Vec<_>>().join(", "),
            describe(best)
        )
    });
    Ok((best, warning))
}

/// Fields of `/proc/<pid>/status` the agent needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Innermost `NSpid`.
    pub ns_pid: Option<u32>,
    /// Effective uid.
    pub euid: Option<u32>,
    /// Effective gid.
    pub egid: Option<u32>,
}

/// Parses `/proc/<pid>/status`.
pub fn parse_status(text: &str) -> ProcStatus {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let second = |v: Option<&str>| {
        v.and_then(|v| v.split_whitespace().nth(1))
            .and_then(|x| x.parse().ok())
    };
    ProcStatus {
        ns_pid: field("NSpid:")
            .and_then(|v| v.split_whitespace().last())
            .and_then(|x| x.parse().ok()),
        euid: second(field("Uid:")),
        egid: second(field("Gid:")),
    }
}

/// The start time (field 22) of `/proc/<pid>/stat`; the command name may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub fn parse_stat_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The state letter (field 3) of `/proc/<pid>/stat`.
pub fn parse_stat_state(stat: &str) -> Option<&str> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()
}

/// The part of a JVM command line after the options: main class (or `-jar x.jar`, or
/// `--module m/c`) and its arguments.
pub fn command_from_cmdline(args: &[String]) -> String {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if matches!(
            a,
            "-cp"
                | "-classpath"
                | "--class-path"
                | "-p"
                | "--module-path"
                | "--add-modules"
                | "--add-opens"
                | "--add-exports"
        ) {
            i += 2;
            continue;
        }
        if a == "-jar" || a == "-m" || a == "--module" {
            return args[i + 1..].join(" ");
        }
        if !a.starts_with('-') {
            return args[i..].join(" ");
        }
        i += 1;
    }
    String::new()
}

/// Liveness of a JVM whose pid is not visible: HotSpot holds a lock on its perf file, so a
/// non-blocking shared lock fails while it lives and succeeds on a file left by a killed JVM.
/// The lock, if taken, is released at once.
pub fn perf_file_locked(path: &Path) -> io::Result<bool> {
    let file = File::open(path)?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_released_on_drop) => Ok(false),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(io::Error::from(e)),
    }
}

/// A permission problem met while scanning, phrased with its remedy.
pub fn permission_hint(path: &Path, owner: Option<(u32, u32)>, via_proc_root: bool) -> String {
    let who = match owner {
        Some((uid, gid)) => format!("run the agent as uid {uid} gid {gid} (the JVM's user)"),
        None => "run the agent as the JVM's user".to_owned(),
    };
    let cap = if via_proc_root {
        "CAP_SYS_PTRACE"
    } else {
        "CAP_DAC_OVERRIDE"
    };
    format!(
        "permission denied reading {}: {who} or as root with {cap}",
        path.display()
    )
}

/// Looks for `<tmp>/hsperfdata_*/<ns_pid>`.
pub fn find_perf_file(tmp: &Path, ns_pid: u32) -> io::Result<Option<PathBuf>> {
    let name = ns_pid.to_string();
    let mut denied = None;
    for dir in std::fs::read_dir(tmp)?.flatten() {
        if !dir.file_name().to_string_lossy().starts_with("hsperfdata_") {
            continue;
        }
        let p = dir.path().join(&name);
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => return Ok(Some(p)),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = Some(e),
            _ => {}
        }
    }
    match denied {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

/// What inspecting one `/proc/<pid>` found.
#[derive(Debug)]
pub enum Inspect {
    /// A JVM.
    Jvm(Box<JvmProcess>),
    /// Not a JVM, or gone.
    NotJvm,
    /// A JVM whose files could not be read.
    Denied(String),
}

fn read_cmdline(proc: &Path) -> Option<Vec<String>> {
    let raw = std::fs::read(proc.join("cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// Inspects `/proc/<pid>`; with `force` the process is taken as a JVM even if it does not
/// look like one (configured pid).
pub fn inspect_pid(proc_root: &Path, pid: u32, force: bool) -> Inspect {
    let proc = proc_root.join(pid.to_string());
    let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
    let args = read_cmdline(&proc);
    let looks_java = comm.trim() == "java"
        || args
            .as_ref()
            .and_then(|a| a.first())
            .is_some_and(|a0| Path::new(a0).file_name().is_some_and(|n| n == "java"));
    if !looks_java && !force {
        return Inspect::NotJvm;
    }
    let Ok(status) = std::fs::read_to_string(proc.join("status")) else {
        return Inspect::NotJvm;
    };
    let st = parse_status(&status);
    let owner = st.euid.zip(st.egid);
    let stat = std::fs::read_to_string(proc.join("stat")).unwrap_or_default();
    // An exited but unreaped JVM (zombie) keeps its comm; it is not a JVM any more.
    if matches!(parse_stat_state(&stat), Some("Z" | "X")) {
        return Inspect::NotJvm;
    }
    let start_ticks = parse_stat_start(&stat);
    let ns_pid = st.ns_pid.unwrap_or(pid);
    let root = proc.join("root");
    let tmp_dir = root.join("tmp");
    let perf_path = match find_perf_file(&tmp_dir, ns_pid) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Inspect::Denied(permission_hint(&tmp_dir, owner, true));
        }
        Err(_) => None,
    };
    let mut command = args
        .as_deref()
        .map(command_from_cmdline)
        .unwrap_or_default();
    if let Some(p) = &perf_path
        && let Ok(buf) = std::fs::read(p)
        && let Ok(snap) = hsperf::parse(&buf)
        && let Some(c) = snap.java_command
    {
        command = c;
    }
    let perf_id = perf_path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()));
    Inspect::Jvm(Box::new(JvmProcess {
        host_pid: Some(pid),
        ns_pid,
        start_ticks,
        owner,
        perf_path,
        perf_id,
        tmp_dir,
        root,
        command,
        cmdline: args.map(|a| a.join(" ")),
    }))
}

/// Everything a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// JVMs found.
    pub jvms: Vec<JvmProcess>,
    /// Permission problems met (one line each).
    pub denied: Vec<String>,
}

/// Scans `/proc` for JVMs, then `tmp` for perf files of JVMs whose pids are not visible.
pub fn scan(proc_root: &Path, tmp: &Path) -> Scan {
    let mut out = Scan::default();
    let mut seen_files = Vec::new();
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            match inspect_pid(proc_root, pid, false) {
                Inspect::Jvm(j) => {
                    if let Some(m) = j.perf_path.as_ref().and_then(|p| std::fs::metadata(p).ok()) {
                        seen_files.push((m.dev(), m.ino()));
                    }
                    out.jvms.push(*j);
                }
                Inspect::Denied(why) => out.denied.push(why),
                Inspect::NotJvm => {}
            }
        }
    }
    let Ok(dirs) = std::fs::read_dir(tmp) else {
        return out;
    };
    for d in dirs.flatten() {
        if !d.file_name().to_string_lossy().starts_with("hsperfdata_") {
            continue;
        }
        let files = match std::fs::read_dir(d.path()) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                out.denied.push(permission_hint(&d.path(), None, false));
                continue;
            }
            Err(_) => continue,
        };
        for f in files.flatten() {
            let Some(ns_pid) = f.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let path = f.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if seen_files.contains(&(meta.dev(), meta.ino())) {
                continue;
            }
            // The file's name is the JVM's pid in *its* namespace. It names a process of ours
            // only if that process really maps this very file; otherwise (separate pid
            // namespace, where "1" would be the agent itself or its init) the file is all we
            // have.
            if pid_owns_perf_file(proc_root, ns_pid, meta.dev(), meta.ino()) {
                if let Inspect::Jvm(j) = inspect_pid(proc_root, ns_pid, true)
                    && j.perf_path.is_some()
                {
                    out.jvms.push(*j);
                }
                continue;
            }
            match perf_file_locked(&path) {
                Ok(true) => {}
                // Unlocked: left behind by a killed JVM.
                Ok(false) => continue,
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    out.denied.push(permission_hint(
                        &path,
                        Some((meta.uid(), meta.gid())),
                        false,
                    ));
                    continue;
                }
                Err(_) => continue,
            }
            let snap = std::fs::read(&path)
                .ok()
                .and_then(|b| hsperf::parse(&b).ok());
            out.jvms.push(JvmProcess {
                host_pid: None,
                ns_pid,
                start_ticks: None,
                owner: Some((meta.uid(), meta.gid())),
                perf_path: Some(path),
                perf_id: Some((meta.dev(), meta.ino())),
                tmp_dir: tmp.to_owned(),
                root: PathBuf::from("/"),
                command: snap.and_then(|s| s.java_command).unwrap_or_default(),
                cmdline: None,
            });
        }
    }
    out
}

/// Whether two paths name the same file or directory.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Finds the base JVM per configuration.
pub fn discover(
    proc_root: &Path,
    tmp: &Path,
    pid: Option<u32>,
    pattern: Option<&Regex>,
) -> Result<(JvmProcess, Option<String>), NotFound> {
    if let Some(pid) = pid {
        return match inspect_pid(proc_root, pid, true) {
            Inspect::Jvm(j) => Ok((*j, None)),
            Inspect::Denied(reason) => Err(NotFound { reason }),
            Inspect::NotJvm => Err(NotFound {
                reason: format!("configured JVM pid {pid} is not running"),
            }),
        };
    }
    let scan = scan(proc_root, tmp);
    let candidates: Vec<Candidate> = scan
        .jvms
        .iter()
        .map(|j| Candidate {
            command: j.command.clone(),
            start_ticks: j.start_ticks,
            pid: j.host_pid,
        })
        .collect();
    match select(&candidates, pattern) {
        Ok((i, warning)) => Ok((scan.jvms[i].clone(), warning)),
        Err(mut nf) => {
            if !scan.denied.is_empty() {
                nf.reason = format!("{}; {}", nf.reason, scan.denied.join("; "));
            }
            Err(nf)
        }
    }
}

/// How a tracked JVM ended, as far as its traces tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JvmExit {
    /// Its hsperfdata file was removed: HotSpot does that on a normal exit (`System.exit`,
    /// SIGTERM), so the JVM shut down.
    Shutdown,
    /// Its hsperfdata file is still there but no longer locked: the JVM was killed (SIGKILL,
    /// OOM killer) or crashed, which leaves the file behind.
    Killed,
    /// A file of the same name now belongs to another JVM (a restarted container reuses pid 1).
    Replaced,
    /// Its process is gone and no file tells how.
    ProcessGone,
}

impl JvmExit {
    /// Words for the health report.
    pub fn describe(self) -> &'static str {
        match self {
            JvmExit::Shutdown => "shut down (its hsperfdata file was removed)",
            JvmExit::Killed => {
                "was killed or crashed (its hsperfdata file was left behind, unlocked)"
            }
            JvmExit::Replaced => "was replaced by another JVM (its hsperfdata file was recreated)",
            JvmExit::ProcessGone => "exited (its process is gone)",
        }
    }
}

/// Whether a tracked JVM lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It does.
    Alive,
    /// It ended.
    Gone(JvmExit),
}

/// What the agent sees of a perf file right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileObservation {
    /// Device and inode; None when the file is absent.
    pub id: Option<(u64, u64)>,
    /// Whether a JVM holds its lock; None when that could not be probed.
    pub locked: Option<bool>,
}

impl FileObservation {
    /// Observes `path` (metadata, then the flock probe).
    pub fn of(path: &Path) -> Self {
        match std::fs::metadata(path) {
            Ok(m) => FileObservation {
                id: Some((m.dev(), m.ino())),
                locked: perf_file_locked(path).ok(),
            },
            Err(_) => FileObservation {
                id: None,
                locked: None,
            },
        }
    }
}

/// Liveness of a JVM known only by its perf file (`expected` = the identity it had when the
/// JVM was found): alive while the same file is there and locked. A lock that cannot be
/// probed counts as held, since the file being there is the only other evidence. Pure.
pub fn file_liveness(expected: Option<(u64, u64)>, obs: FileObservation) -> Liveness {
    match obs.id {
        None => Liveness::Gone(JvmExit::Shutdown),
        Some(id) if expected.is_some_and(|e| e != id) => Liveness::Gone(JvmExit::Replaced),
        Some(_) if obs.locked == Some(false) => Liveness::Gone(JvmExit::Killed),
        Some(_) => Liveness::Alive,
    }
}

/// How a JVM whose pid disappeared ended, from its perf file when the agent can still see it
/// (shared `/tmp`); through `/proc/<pid>/root` it vanished with the process. Pure.
pub fn pid_exit(file: Option<FileObservation>, expected: Option<(u64, u64)>) -> JvmExit {
    match file.map(|obs| file_liveness(expected, obs)) {
        Some(Liveness::Gone(exit)) => exit,
        // Still locked by a process we no longer see: cannot tell; or not observable.
        Some(Liveness::Alive) | None => JvmExit::ProcessGone,
    }
}

/// Whether the tracked JVM still lives: same pid with the same start time (and not a zombie),
/// or, known by its file only, the same perf file still there and locked.
pub fn liveness(proc_root: &Path, jvm: &JvmProcess) -> Liveness {
    match jvm.host_pid {
        Some(pid) => {
            let stat = std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat"));
            let alive = match stat {
                // A zombie has exited; its start time is still there, so check the state too.
                Ok(s) => {
                    !matches!(parse_stat_state(&s), Some("Z" | "X"))
                        && (jvm.start_ticks.is_none() || parse_stat_start(&s) == jvm.start_ticks)
                }
                Err(_) => false,
            };
            if alive {
                return Liveness::Alive;
            }
            // A path through /proc/<pid>/root names whatever reuses the pid now.
            let file = jvm
                .perf_path
                .as_deref()
                .filter(|p| !p.starts_with(proc_root))
                .map(FileObservation::of);
            Liveness::Gone(pid_exit(file, jvm.perf_id))
        }
        None => match jvm.perf_path.as_deref() {
            Some(p) => file_liveness(jvm.perf_id, FileObservation::of(p)),
            None => Liveness::Gone(JvmExit::ProcessGone),
        },
    }
}

/// Whether the tracked JVM still lives (see [`liveness`]).
pub fn is_alive(proc_root: &Path, jvm: &JvmProcess) -> bool {
    liveness(proc_root, jvm) == Liveness::Alive
}

/// Linux `dev_t` as `(major, minor)`, the form `/proc/<pid>/maps` prints (glibc encoding).
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & 0xffff_f000);
    let minor = (dev & 0xff) | ((dev >> 12) & 0xffff_ff00);
    (major, minor)
}

/// Whether `/proc/<pid>/maps` text maps the file with this device and inode (HotSpot maps its
/// perf file for its whole life). Pure.
pub fn maps_contain(maps: &str, dev: u64, ino: u64) -> bool {
    let (major, minor) = dev_major_minor(dev);
    maps.lines().any(|l| {
        let mut f = l.split_whitespace().skip(3);
        let (Some(d), Some(i)) = (f.next(), f.next()) else {
            return false;
        };
        let Some((ma, mi)) = d.split_once(':') else {
            return false;
        };
        u64::from_str_radix(ma, 16) == Ok(major)
            && u64::from_str_radix(mi, 16) == Ok(minor)
            && i.parse::<u64>() == Ok(ino)
    })
}

/// Whether `/proc/<pid>` in the agent's namespace is the JVM owning the perf file `(dev, ino)`
/// named `<pid>`: a process of this namespace (innermost `NSpid` equal to `pid`, so its own
/// view of its pid is the file's name), not the agent, and mapping that very file. Anything
/// unreadable counts as "no": the file alone is then used, which never signals.
pub fn pid_owns_perf_file(proc_root: &Path, pid: u32, dev: u64, ino: u64) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let proc = proc_root.join(pid.to_string());
    let Ok(status) = std::fs::read_to_string(proc.join("status")) else {
        return false;
    };
    if parse_status(&status).ns_pid != Some(pid) {
        return false;
    }
    std::fs::read_to_string(proc.join("maps")).is_ok_and(|m| maps_contain(&m, dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(command: &str, start: Option<u64>, pid: u32) -> Candidate {
        Candidate {
            command: command.into(),
            start_ticks: start,
            pid: Some(pid),
        }
    }

    #[test]
    fn selection_table() {
        let base = c(
            "com.example.BaseApplication --spring.profiles.active=prod",
            Some(100),
            10,
        );
        let other = c("org.apache.Other", Some(50), 11);
        let tool = c("jdk.jcmd/sun.tools.jstat.Jstat -gc 10", Some(10), 12);
        let pat = Regex::new("BaseApplication").unwrap();
        let nomatch = Regex::new("Nope").unwrap();
        let ends_b = Regex::new("B$").unwrap();
        let file_only = |command: &str| Candidate {
            command: command.into(),
            start_ticks: None,
            pid: None,
        };
        type Want = Result<(usize, bool), &'static str>;
        let table: Vec<(Vec<Candidate>, Option<&Regex>, Want)> = vec![
            (vec![], None, Err("no JVM found")),
            (vec![tool.clone()], None, Err("no JVM found")),
            (vec![base.clone()], None, Ok((0, false))),
            (vec![tool.clone(), base.clone()], None, Ok((1, false))),
            // Several without a pattern: the oldest, with a warning.
            (vec![base.clone(), other.clone()], None, Ok((1, true))),
            (
                vec![base.clone(), other.clone()],
                Some(&pat),
                Ok((0, false)),
            ),
            // Known only by their files: not ranked, refused rather than guessed.
            (
                vec![file_only("com.A"), file_only("com.B")],
                None,
                Err(
                    "2 JVMs match ((com.A), (com.B)) and they cannot be ranked (some are known only by their hsperfdata files); set --base-main-class to choose the base",
                ),
            ),
            (
                vec![file_only("com.A"), file_only("com.B")],
                Some(&ends_b),
                Ok((1, false)),
            ),
            (
                vec![base.clone(), other.clone()],
                Some(&nomatch),
                Err(
                    "no JVM matches the pattern \"Nope\"; found pid 10 (com.example.BaseApplication), pid 11 (org.apache.Other)",
                ),
            ),
        ];
        for (i, (cands, p, want)) in table.into_iter().enumerate() {
            let got = select(&cands, p)
                .map(|(i, w)| (i, w.is_some()))
                .map_err(|e| e.reason);
            assert_eq!(got, want.map_err(str::to_owned), "row {i}");
        }
    }

    #[test]
    fn proc_parsers() {
        let status = "Name:\tjava\nUid:\t1000\t1001\t1001\t1001\nGid:\t2000\t2001\t2001\t2001\nNSpid:\t15221\t1\n";
        assert_eq!(
            parse_status(status),
            ProcStatus {
                ns_pid: Some(1),
                euid: Some(1001),
                egid: Some(2001)
            }
        );
        assert_eq!(parse_status(""), ProcStatus::default());
        let stat = "4242 (java (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 20 0 987654 1000000 200";
        assert_eq!(parse_stat_start(stat), Some(987654));
        assert_eq!(parse_stat_start("garbage"), None);
        assert_eq!(parse_stat_state(stat), Some("S"));
        assert_eq!(parse_stat_state("1 (x) Z 0"), Some("Z"));
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            command_from_cmdline(&args("java -Xmx64m -cp /a:/b com.Main x y")),
            "com.Main x y"
        );
        assert_eq!(
            command_from_cmdline(&args("/usr/bin/java -jar app.jar --port 1")),
            "app.jar --port 1"
        );
        assert_eq!(
            command_from_cmdline(&args("java -p mods -m app/app.Main")),
            "app/app.Main"
        );
        assert_eq!(command_from_cmdline(&args("java -version")), "");
        assert!(is_jdk_tool("jdk.jcmd/sun.tools.jcmd.JCmd 1 VM.version"));
        assert!(!is_jdk_tool("com.Main"));
    }

    #[test]
    fn flock_probe_on_unlocked_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("123");
        std::fs::write(&p, b"x").unwrap();
        assert!(!perf_file_locked(&p).unwrap());
        let holder = Flock::lock(File::open(&p).unwrap(), FlockArg::LockExclusiveNonblock).unwrap();
        assert!(perf_file_locked(&p).unwrap());
        drop(holder);
        assert!(!perf_file_locked(&p).unwrap());
    }

    #[test]
    fn file_liveness_table() {
        let id = Some((7, 100));
        let obs = |id: Option<(u64, u64)>, locked: Option<bool>| FileObservation { id, locked };
        let table = [
            // Present, same file, locked: alive.
            (id, obs(id, Some(true)), Liveness::Alive),
            // Lock not probeable (permissions): the file's presence is the evidence.
            (id, obs(id, None), Liveness::Alive),
            // Removed: HotSpot deletes its file on a normal exit.
            (id, obs(None, None), Liveness::Gone(JvmExit::Shutdown)),
            // Left behind unlocked: killed or crashed.
            (id, obs(id, Some(false)), Liveness::Gone(JvmExit::Killed)),
            // Same name, another inode: a new JVM took pid 1's file, even if locked.
            (
                id,
                obs(Some((7, 101)), Some(true)),
                Liveness::Gone(JvmExit::Replaced),
            ),
            (
                id,
                obs(Some((8, 100)), Some(true)),
                Liveness::Gone(JvmExit::Replaced),
            ),
            // Identity unknown: presence and lock decide.
            (None, obs(Some((7, 101)), Some(true)), Liveness::Alive),
            (
                None,
                obs(Some((7, 101)), Some(false)),
                Liveness::Gone(JvmExit::Killed),
            ),
        ];
        for (i, (expected, o, want)) in table.into_iter().enumerate() {
            assert_eq!(file_liveness(expected, o), want, "row {i}");
        }
        let gone = FileObservation {
            id: None,
            locked: None,
        };
        assert_eq!(pid_exit(Some(gone), id), JvmExit::Shutdown);
        assert_eq!(
            pid_exit(
                Some(FileObservation {
                    id,
                    locked: Some(false)
                }),
                id
            ),
            JvmExit::Killed
        );
        assert_eq!(pid_exit(None, id), JvmExit::ProcessGone);
        assert_eq!(
            pid_exit(
                Some(FileObservation {
                    id,
                    locked: Some(true)
                }),
                id
            ),
            JvmExit::ProcessGone
        );
    }

    #[test]
    fn maps_lines_match_device_and_inode() {
        // makedev(0xfd, 0x01) and makedev(0x103, 0x2345) in glibc's encoding.
        let dev_fd01 = (0xfd << 8) | 0x01;
        assert_eq!(dev_major_minor(dev_fd01), (0xfd, 0x01));
        // glibc's makedev, written out independently of the code under test.
        fn makedev(major: u64, minor: u64) -> u64 {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        }
        assert_eq!(makedev(0xfd, 0x01), dev_fd01);
        assert_eq!(dev_major_minor(makedev(0x103, 0x2345)), (0x103, 0x2345));
        assert_eq!(dev_major_minor(makedev(0x1234, 0x56789)), (0x1234, 0x56789));
        let maps = "\
7f0000000000-7f0000008000 rw-s 00000000 fd:01 1234567                    /tmp/hsperfdata_root/1
7f0000010000-7f0000020000 r-xp 00000000 fd:01 42                         /usr/lib/jvm/bin/java
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        assert!(maps_contain(maps, dev_fd01, 1_234_567));
        assert!(!maps_contain(maps, dev_fd01, 1_234_568));
        assert!(!maps_contain(maps, (0xfd << 8) | 0x02, 1_234_567));
        assert!(!maps_contain("", dev_fd01, 1_234_567));
        assert!(!maps_contain("garbage line\n", dev_fd01, 1_234_567));
    }

    #[test]
    fn a_file_named_after_our_pid_or_an_unrelated_process_is_not_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("1");
        std::fs::write(&p, b"x").unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let proc = Path::new("/proc");
        // The agent itself (pid 1 in its own namespace, in the reported bug).
        assert!(!pid_owns_perf_file(
            proc,
            std::process::id(),
            m.dev(),
            m.ino()
        ));
        // A live process that does not map the file (init, or whatever has that pid).
        assert!(!pid_owns_perf_file(proc, 1, m.dev(), m.ino()));
        assert!(!pid_owns_perf_file(proc, u32::MAX - 1, m.dev(), m.ino()));
    }

    #[test]
    fn hints_name_the_remedy() {
        let h = permission_hint(Path::new("/proc/7/root/tmp"), Some((1000, 1000)), true);
        assert_eq!(
            h,
            "permission denied reading /proc/7/root/tmp: run the agent as uid 1000 gid 1000 (the JVM's user) or as root with CAP_SYS_PTRACE"
        );
    }

    #[test]
    fn own_process_is_alive_and_dead_pids_are_not() {
        let me = std::process::id();
        let proc = Path::new("/proc");
        let start = std::fs::read_to_string(format!("/proc/{me}/stat"))
            .ok()
            .and_then(|s| parse_stat_start(&s));
        let mut j = JvmProcess {
            host_pid: Some(me),
            ns_pid: me,
            start_ticks: start,
            owner: None,
            perf_path: None,
            perf_id: None,
            tmp_dir: PathBuf::from("/tmp"),
            root: PathBuf::from("/"),
            command: String::new(),
            cmdline: None,
        };
        assert!(is_alive(proc, &j));
        // Same pid, different start time: a different process.
        j.start_ticks = start.map(|s| s + 1);
        assert!(!is_alive(proc, &j));
        j.host_pid = Some(u32::MAX - 1);
        assert!(!is_alive(proc, &j));
    }
}
