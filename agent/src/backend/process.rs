//! The `process` runtime backend (the default): every module runs as its own JVM.
//!
//! # How a module is started
//!
//! Real Ark biz jars keep their classes and dependencies in nested jars under `lib/` (Spring
//! Boot style ones under `BOOT-INF/classes` and `BOOT-INF/lib`), so `java -jar` cannot run
//! them. Like SOFAArk, the backend unpacks the package, here into a directory of its own:
//!
//! ```text
//! <work_dir>/modules/<name>-<version>-<yyyyMMddHHmmssSSS>/   module directory, JVM cwd
//!     unpack/            the unpacked jar
//!     module.log         the JVM's stdout and stderr
//!     process.json       pid, kernel start time and marker of the JVM (crash recovery)
//!     classpath.args     only when the class path is too long for the command line
//! ```
//!
//! and runs, in its own process group (so signals reach the JVM and anything it started):
//!
//! ```text
//! java -Dkoupleless.agent.module.dir=<module dir> <jvm_args> -cp unpack:unpack/lib/a.jar:... <main> <args>
//! ```
//!
//! The class path is the unpacked root, `BOOT-INF/classes/` when present, and every jar under
//! `lib/` and `BOOT-INF/lib/` in archive order. The main class is the package's (`Start-Class`,
//! else `Main-Class`); the request env `sofa.ark.biz.main.class` overrides it. Each start gets
//! a fresh directory, so two versions of one module (or a reinstall racing a cleanup) never
//! share files.
//!
//! **Environment.** The request's `envs` become environment variables of the JVM, verbatim
//! (`System.getenv("sofa.ark.x")`). Of the agent's own environment only the names in
//! [`ProcessBackendConfig::pass_env`] are passed on (default [`DEFAULT_PASS_ENV`]), so agent
//! secrets such as broker passwords do not leak into modules. Nothing goes on the command line
//! but the marker and the configured JVM arguments, so values from requests are not visible in
//! `ps`.
//!
//! # When a module is up
//!
//! [`ProcessBackend::start`] resolves once the module is up (the engine then records
//! `activated`) or has failed. "Up" is decided by the readiness checks documented in
//! [`readiness`](Readiness): a TCP port (`koupleless.agent.ready.tcp`), a log line
//! (`koupleless.agent.ready.log`), or by default the JVM still being alive after
//! [`ProcessBackendConfig::settle`]. A JVM that exits before that fails the start with
//! [`BackendError::StartFailed`], whose message has the exit code and the log tail (e.g. the
//! exception `main` threw); one that is not up within [`ProcessBackendConfig::start_timeout`]
//! (measured from spawning) is stopped and fails with [`BackendError::TimedOut`]. Either way
//! the process is gone and the module directory removed before `start` returns; if the caller
//! drops the `start` future instead, the same clean-up runs in the background.
//!
//! # Stopping, and modules that die
//!
//! [`ProcessBackend::stop`] sends SIGTERM to the module's process group, waits up to
//! [`ProcessBackendConfig::stop_grace`], then sends SIGKILL, and removes the module directory.
//! One supervisor task per module waits on the JVM; if a module that was up exits without
//! being asked to, the supervisor sends [`BackendEvent::Exited`] (exit code and log tail) on
//! the channel given to [`ProcessBackend::new`]. Its directory and log stay until the engine
//! stops it or starts it again.
//!
//! # Never leaving processes behind
//!
//! * [`ProcessBackend::shutdown`] stops every module (SIGTERM, grace, SIGKILL, all at once),
//!   removes their directories, and awaits every supervisor task.
//! * Dropping the backend without `shutdown` (a panic unwinding) SIGKILLs every module's
//!   process group.
//! * If the agent dies without either (SIGKILL, OOM kill), the module JVMs keep running. The
//!   engine persists its module table and re-installs on restart; before that, it calls
//!   [`ProcessBackend::discover`], which reads `process.json` in every module directory left
//!   from the previous run, kills the process if it is still the module JVM (same pid, same
//!   kernel start time, the marker argument on its `/proc/<pid>/cmdline`; a pid now used by
//!   another program is left alone), removes the directory, and returns an empty list, so
//!   the engine restarts what it had from scratch. A crash in the instant between spawning a
//!   JVM and writing its record leaves that one JVM untracked. Verification needs `/proc`;
//!   elsewhere leftovers are reported but not killed.
//!
//! # Security
//!
//! Module JVMs run with the agent's own user and groups: the backend never raises privileges.
//! Unpacking rejects path-traversing, absolute, backslashed and symlink entries and writes
//! files without execute or set-id bits (see [`UnpackError`]); sizes and entry counts are
//! capped ([`ProcessBackendConfig::unpack_limits`]). The main class must be a Java class name,
//! so a request cannot smuggle JVM options in through `sofa.ark.biz.main.class`. Module
//! directories and logs are created `0750`/`0640`.

mod classpath;
mod launch;
mod leftover;
mod readiness;
mod unpack;

use std::collections::{HashMap, HashSet};
use std::fs::{DirBuilder, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::{
    BackendError, BackendEvent, BizKey, Discovered, RuntimeBackend, StartRequest, Started,
};
use leftover::{Leftover, ProcessRecord, RECORD_FILE};
use readiness::{LogMatcher, Observation, Verdict};

pub use classpath::ClassPathError;
pub use launch::{DEFAULT_PASS_ENV, LaunchError, MAIN_CLASS_KEY, java_from_home};
pub use readiness::{READY_LOG_KEY, READY_TCP_KEY, Readiness, ReadinessError};
pub use unpack::{UnpackError, UnpackLimits};

/// Sub-directory of the work directory holding one directory per started module.
pub const MODULES_DIR: &str = "modules";
/// Sub-directory of a module directory holding the unpacked jar.
pub const UNPACK_DIR: &str = "unpack";
/// The module JVM's stdout and stderr, inside its module directory.
pub const LOG_FILE: &str = "module.log";
const ARGFILE: &str = "classpath.args";

/// How often the start loop checks readiness, and leftovers are checked while being killed.
const POLL: Duration = Duration::from_millis(50);
/// How long a SIGKILLed process may take to disappear before we give up waiting.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Connect timeout of one TCP readiness probe.
const TCP_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// How much of the end of a log is read for a log tail.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// Settings of the process backend.
#[derive(Clone, Debug)]
pub struct ProcessBackendConfig {
    /// Root of everything the backend writes (module directories under `modules/`).
    pub work_dir: PathBuf,
    /// The `java` to run: a path, or a name looked up on `PATH`. Default:
    /// `$JAVA_HOME/bin/java`, else `java` ([`java_from_home`]).
    pub java: PathBuf,
    /// Time between SIGTERM and SIGKILL when stopping a module (default 10 s).
    pub stop_grace: Duration,
    /// Time from spawning the JVM until the module must be up (default 120 s).
    pub start_timeout: Duration,
    /// With no readiness check, how long the JVM must stay alive to count as up (default
    /// 300 ms).
    pub settle: Duration,
    /// Extra JVM arguments for every module, before `-cp` (default none).
    pub jvm_args: Vec<String>,
    /// Readiness checks for modules whose request does not set its own (default none).
    pub readiness: Readiness,
    /// Names of agent environment variables passed to module JVMs; a trailing `*` matches a
    /// prefix (default [`DEFAULT_PASS_ENV`]).
    pub pass_env: Vec<String>,
    /// Lines of the module log quoted in failure messages and exit events (default 40).
    pub log_tail_lines: usize,
    /// Caps on unpacking (default 4 GiB and 65 536 entries).
    pub unpack_limits: UnpackLimits,
}

impl ProcessBackendConfig {
    /// Defaults (see each field) with the given work directory.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        ProcessBackendConfig {
            work_dir: work_dir.into(),
            java: java_from_home(std::env::var_os("JAVA_HOME").as_deref()),
            stop_grace: Duration::from_secs(10),
            start_timeout: Duration::from_secs(120),
            settle: Duration::from_millis(300),
            jvm_args: Vec::new(),
            readiness: Readiness::default(),
            pass_env: DEFAULT_PASS_ENV.iter().map(|s| s.to_string()).collect(),
            log_tail_lines: 40,
            unpack_limits: UnpackLimits {
                max_bytes: 4 << 30,
                max_entries: 65_536,
            },
        }
    }
}

/// Where a module's JVM is in its life, as far as the backend is concerned. Guards the race
/// between "the start loop declares it up" and "the supervisor sees it exit": whichever takes
/// the lock first decides whether the exit is a failed start or an [`BackendEvent::Exited`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Running,
    Stopping,
    Exited,
}

/// One spawned module JVM.
#[derive(Debug)]
struct Module {
    key: BizKey,
    dir: PathBuf,
    log: PathBuf,
    pid: u32,
    phase: Mutex<Phase>,
    /// Cancelling asks the supervisor to stop the JVM (SIGTERM, grace, SIGKILL).
    cancel: CancellationToken,
    /// Set by the supervisor once the JVM has exited and been reaped: how it ended.
    exit: watch::Receiver<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pid_of(raw: u32) -> Pid {
    Pid::from_raw(i32::try_from(raw).unwrap_or(i32::MAX))
}

impl Module {
    fn phase(&self) -> Phase {
        *lock(&self.phase)
    }

    /// Starting → Running; false if the module has meanwhile exited or is being stopped.
    fn set_running(&self) -> bool {
        let mut phase = lock(&self.phase);
        if *phase == Phase::Starting {
            *phase = Phase::Running;
            true
        } else {
            false
        }
    }

    /// Marks an exit from now on as requested (no [`BackendEvent::Exited`]).
    fn begin_stop(&self) {
        let mut phase = lock(&self.phase);
        if matches!(*phase, Phase::Starting | Phase::Running) {
            *phase = Phase::Stopping;
        }
    }

    /// Waits until the JVM has exited and returns how it ended.
    async fn wait_exit(&self) -> String {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(value) => value.clone().unwrap_or_default(),
            // The supervisor always publishes before it ends, so this means it panicked.
            Err(_) => "supervisor ended without reporting an exit".to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    modules: HashMap<BizKey, Arc<Module>>,
    /// Keys with a `start` in progress before their module is in `modules`.
    starting: HashSet<BizKey>,
    /// Module directories this instance created and has not removed; `discover` skips them.
    dirs: HashSet<PathBuf>,
    /// Set by `shutdown`: no more starts.
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    cfg: ProcessBackendConfig,
    modules_dir: PathBuf,
    events: mpsc::Sender<BackendEvent>,
    state: Mutex<State>,
    tracker: TaskTracker,
    /// Parent of every module's token: cancelled by `shutdown`.
    cancel: CancellationToken,
}

/// Runs each module as its own JVM. See the [module docs](self).
#[derive(Debug)]
pub struct ProcessBackend {
    inner: Arc<Inner>,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let context = context.into();
    move |source| BackendError::Io { context, source }
}

fn failed(message: impl std::fmt::Display) -> BackendError {
    BackendError::StartFailed {
        message: message.to_string(),
    }
}

impl ProcessBackend {
    /// Creates the backend: makes `<work_dir>/modules`, resolves `java` (an error if it cannot
    /// be found or is not executable). Unexpected module exits are sent on `events`.
    pub fn new(
        mut cfg: ProcessBackendConfig,
        events: mpsc::Sender<BackendEvent>,
    ) -> Result<Self, BackendError> {
        let modules_dir = cfg.work_dir.join(MODULES_DIR);
        std::fs::create_dir_all(&modules_dir)
            .map_err(io_error(format!("creating {}", modules_dir.display())))?;
        cfg.work_dir = cfg
            .work_dir
            .canonicalize()
            .map_err(io_error(format!("resolving {}", cfg.work_dir.display())))?;
        let modules_dir = cfg.work_dir.join(MODULES_DIR);
        let cwd = std::env::current_dir().map_err(io_error("reading the current directory"))?;
        cfg.java = launch::resolve_executable(
            &cfg.java,
            &cwd,
            std::env::var_os("PATH").as_deref(),
            is_executable,
        )
        .ok_or_else(|| {
            BackendError::Unavailable(format!(
                "java executable {} not found (set JAVA_HOME, PATH or the configured java path)",
                cfg.java.display()
            ))
        })?;
        Ok(ProcessBackend {
            inner: Arc::new(Inner {
                cfg,
                modules_dir,
                events,
                state: Mutex::new(State::default()),
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// The configuration in force (`work_dir` absolute, `java` resolved).
    pub fn config(&self) -> &ProcessBackendConfig {
        &self.inner.cfg
    }

    /// Pid of a module's JVM (also its process group id) while it runs. For health sampling
    /// and tests. `None` once it has exited, since the pid may then be reused.
    pub fn pid(&self, key: &BizKey) -> Option<u32> {
        lock(&self.inner.state)
            .modules
            .get(key)
            .filter(|m| m.phase() != Phase::Exited)
            .map(|m| m.pid)
    }

    /// The module's log file (stdout and stderr), while the backend tracks it.
    pub fn log_file(&self, key: &BizKey) -> Option<PathBuf> {
        lock(&self.inner.state)
            .modules
            .get(key)
            .map(|m| m.log.clone())
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

impl Inner {
    /// Claims `key` for a start; returns a dead module of the same key to clean up first.
    fn reserve(&self, key: &BizKey) -> Result<Option<Arc<Module>>, BackendError> {
        let mut st = lock(&self.state);
        if st.closed {
            return Err(BackendError::Unavailable(
                "the process backend has shut down".into(),
            ));
        }
        if st.starting.contains(key) {
            return Err(failed(format!("module {key} is already starting")));
        }
        let stale = match st.modules.get(key) {
            Some(m) if m.phase() == Phase::Exited => st.modules.remove(key),
            Some(_) => return Err(failed(format!("module {key} is already running"))),
            None => None,
        };
        st.starting.insert(key.clone());
        Ok(stale)
    }

    /// Creates a fresh module directory, registering it first so `discover` never takes it
    /// for a leftover.
    fn create_module_dir(&self, key: &BizKey) -> Result<PathBuf, BackendError> {
        let stamp = chrono::Local::now().format("%Y%m%d%H%M%S%3f").to_string();
        for attempt in 0..1000 {
            let dir = self
                .modules_dir
                .join(launch::module_dir_name(key, &stamp, attempt));
            if !lock(&self.state).dirs.insert(dir.clone()) {
                continue;
            }
            match DirBuilder::new().mode(0o750).create(&dir) {
                Ok(()) => return Ok(dir),
                Err(e) => {
                    lock(&self.state).dirs.remove(&dir);
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(io_error(format!("creating {}", dir.display()))(e));
                    }
                }
            }
        }
        Err(BackendError::Io {
            context: format!("creating a module directory for {key}"),
            source: std::io::Error::other("every candidate name is taken"),
        })
    }

    fn owns_dir(&self, dir: &Path) -> bool {
        lock(&self.state).dirs.contains(dir)
    }

    /// Removes a module directory (gone already counts as done) and forgets it.
    async fn remove_dir(&self, dir: &Path) -> Result<(), BackendError> {
        let target = dir.to_path_buf();
        let result =
            tokio::task::spawn_blocking(move || match std::fs::symlink_metadata(&target) {
                // Stray files or symlinks in the modules directory are removed themselves, never
                // followed.
                Ok(meta) if !meta.is_dir() => std::fs::remove_file(&target),
                _ => std::fs::remove_dir_all(&target),
            })
            .await;
        lock(&self.state).dirs.remove(dir);
        match result {
            Ok(Ok(())) => Ok(()),
            _ if std::fs::symlink_metadata(dir).is_err() => Ok(()),
            Ok(Err(e)) => Err(io_error(format!("removing {}", dir.display()))(e)),
            Err(join) => Err(io_error(format!("removing {}", dir.display()))(
                std::io::Error::other(join),
            )),
        }
    }

    /// Stops a module's JVM (if still running) and removes its directory.
    async fn teardown(&self, module: &Module) -> Result<(), BackendError> {
        module.begin_stop();
        module.cancel.cancel();
        let bound = self.cfg.stop_grace + KILL_WAIT;
        if tokio::time::timeout(bound, module.wait_exit())
            .await
            .is_err()
        {
            return Err(BackendError::StopFailed {
                key: module.key.clone(),
                message: format!(
                    "process {} still running {} s after SIGTERM",
                    module.pid,
                    bound.as_secs()
                ),
            });
        }
        self.remove_dir(&module.dir).await
    }

    /// Removes `module` from the table if it is still the entry for its key.
    fn forget(&self, module: &Arc<Module>) {
        let mut st = lock(&self.state);
        if st
            .modules
            .get(&module.key)
            .is_some_and(|m| Arc::ptr_eq(m, module))
        {
            st.modules.remove(&module.key);
        }
    }

    /// Kills a leftover of a previous agent run (if it is still ours) and removes its directory.
    async fn clear_leftover(&self, dir: PathBuf, record: Option<ProcessRecord>) {
        if let Some(record) = record {
            let stat = leftover::read_stat(record.pid);
            let cmdline = leftover::read_cmdline(record.pid);
            match leftover::classify(&record, stat, cmdline.as_deref()) {
                Leftover::Ours { pid, group_leader } => {
                    tracing::warn!(biz = %record.key, pid, "stopping module process left by a previous agent run");
                    kill_leftover(&record, group_leader, self.cfg.stop_grace).await;
                }
                Leftover::Gone => {
                    tracing::info!(biz = %record.key, pid = record.pid, "module process of a previous run is gone");
                }
                Leftover::NotOurs => {
                    tracing::warn!(
                        biz = %record.key,
                        pid = record.pid,
                        "pid of a previous module process now belongs to another process; not touching it"
                    );
                }
            }
        }
        if let Err(e) = self.remove_dir(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a leftover module directory");
        }
    }
}

/// SIGTERM, then SIGKILL after `grace`, to a process that is not our child (so it cannot be
/// waited for): polls `/proc` until it is gone.
async fn kill_leftover(record: &ProcessRecord, group_leader: bool, grace: Duration) {
    let pid = pid_of(record.pid);
    let send = |signal| {
        if group_leader {
            killpg(pid, signal)
        } else {
            kill(pid, signal)
        }
    };
    let gone_within = |limit: Duration| async move {
        let deadline = Instant::now() + limit;
        while leftover::still_running(record) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
        true
    };
    let _ = send(Signal::SIGTERM);
    if gone_within(grace).await {
        return;
    }
    tracing::warn!(biz = %record.key, pid = record.pid, "leftover module ignored SIGTERM; sending SIGKILL");
    let _ = send(Signal::SIGKILL);
    if !gone_within(KILL_WAIT).await {
        tracing::error!(biz = %record.key, pid = record.pid, "leftover module process survived SIGKILL");
    }
}

/// Lists module directories and their records (a missing or unreadable record is `None`).
fn scan_module_dirs(modules_dir: &Path) -> std::io::Result<Vec<(PathBuf, Option<ProcessRecord>)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(modules_dir)? {
        let entry = entry?;
        let path = entry.path();
        // Anything that is not a plain directory (a stray file or symlink) is not ours to
        // look into, but it is still clutter in our directory: removal handles it.
        let record = if entry.file_type()?.is_dir() {
            std::fs::read(path.join(RECORD_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        } else {
            None
        };
        found.push((path, record));
    }
    Ok(found)
}

/// Reads the last lines of a log file ("" if unreadable).
fn read_log_tail(path: &Path, max_lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(launch::log_tail(&bytes, start > 0, max_lines))
    };
    read().unwrap_or_default()
}

async fn log_tail_async(path: &Path, max_lines: usize) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || read_log_tail(&path, max_lines))
        .await
        .unwrap_or_default()
}

/// What the supervisor of a module needs besides the module.
struct Supervisor {
    events: mpsc::Sender<BackendEvent>,
    grace: Duration,
    tail_lines: usize,
}

/// Owns the JVM child: waits for it, stops it when the module's token is cancelled, publishes
/// how it ended, and reports an exit nobody asked for.
async fn supervise(
    sup: Supervisor,
    module: Arc<Module>,
    mut child: Child,
    exit_tx: watch::Sender<Option<String>>,
) {
    let group = pid_of(module.pid);
    // The supervisor also notes the log's growth, so `GET /logs` can tell line times.
    let mut clock = crate::logs::LogClock::new(&module.log);
    let mut ticks = tokio::time::interval(crate::logs::CLOCK_PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (status, requested) = loop {
        tokio::select! {
            status = child.wait() => break (status, false),
            () = module.cancel.cancelled() => break (terminate(&mut child, group, sup.grace, &module.key).await, true),
            _ = ticks.tick() => {
                if let Err(e) = clock.tick(std::time::SystemTime::now()) {
                    tracing::debug!(biz = %module.key, error = %e, "cannot note the log's growth");
                }
            }
        }
    };
    let _ = clock.tick(std::time::SystemTime::now());
    // Processes the JVM started share its group; they go with it. (The group id cannot be
    // reused while any member lives, and a new leader would have to set it up explicitly.)
    if let Err(e) = killpg(group, Signal::SIGKILL)
        && e != Errno::ESRCH
    {
        tracing::debug!(biz = %module.key, error = %e, "could not signal the module's process group");
    }
    let how = match status {
        Ok(status) => launch::describe_exit(status),
        Err(e) => format!("waiting for the process failed: {e}"),
    };
    let unexpected = {
        let mut phase = lock(&module.phase);
        let was = std::mem::replace(&mut *phase, Phase::Exited);
        was == Phase::Running && !requested
    };
    exit_tx.send_replace(Some(how.clone()));
    if unexpected {
        let tail = log_tail_async(&module.log, sup.tail_lines).await;
        tracing::warn!(biz = %module.key, pid = module.pid, %how, "module process exited");
        let event = BackendEvent::Exited {
            key: module.key.clone(),
            message: format!("{how}; last log lines:\n{tail}"),
        };
        // Do not hang shutdown on an engine that stopped reading events.
        tokio::select! {
            _ = sup.events.send(event) => {}
            () = module.cancel.cancelled() => {}
        }
    } else {
        tracing::info!(biz = %module.key, pid = module.pid, %how, "module process ended");
    }
}

/// SIGTERM to the group, wait `grace`, then SIGKILL, and reap.
async fn terminate(
    child: &mut Child,
    group: Pid,
    grace: Duration,
    key: &BizKey,
) -> std::io::Result<std::process::ExitStatus> {
    if let Err(e) = killpg(group, Signal::SIGTERM)
        && e != Errno::ESRCH
    {
        tracing::warn!(biz = %key, error = %e, "SIGTERM to the module's process group failed");
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            tracing::warn!(biz = %key, grace_ms = grace.as_millis(), "module did not stop after SIGTERM; sending SIGKILL");
            let _ = killpg(group, Signal::SIGKILL);
            child.wait().await
        }
    }
}

/// Follows the module log as it grows, looking for the readiness line.
struct LogFollower {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    matcher: LogMatcher,
}

impl LogFollower {
    fn new(path: &Path, needle: &str) -> Self {
        LogFollower {
            file: None,
            path: path.to_path_buf(),
            matcher: LogMatcher::new(needle),
        }
    }

    /// Reads what was appended since the last call; returns whether the line has appeared.
    async fn poll(&mut self) -> bool {
        if self.file.is_none() {
            self.file = tokio::fs::File::open(&self.path).await.ok();
        }
        let Some(file) = self.file.as_mut() else {
            return false;
        };
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded per poll, so a module flooding its log cannot keep the loop from checking
        // for exit and timeout; the rest is read on the next poll.
        for _ in 0..64 {
            match file.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => {
                    if self.matcher.feed(&buf[..n]) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

async fn tcp_open(port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
    matches!(
        tokio::time::timeout(TCP_PROBE_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

/// One `start` call's claim on a key, a directory and possibly a module. Whatever happens to
/// the call (error, or the future being dropped), what it created is removed: awaited by
/// [`Attempt::clean_up`] on errors, spawned from `Drop` if the future is dropped.
struct Attempt {
    inner: Arc<Inner>,
    key: BizKey,
    dir: Option<PathBuf>,
    module: Option<Arc<Module>>,
    succeeded: bool,
}

impl Attempt {
    async fn clean_up(mut self) {
        let (module, dir) = (self.module.take(), self.dir.take());
        clean_up(&self.inner, module, dir).await;
    }
}

async fn clean_up(inner: &Inner, module: Option<Arc<Module>>, dir: Option<PathBuf>) {
    if let Some(module) = module {
        inner.forget(&module);
        if let Err(e) = inner.teardown(&module).await {
            tracing::error!(biz = %module.key, error = %e, "could not stop a module after its failed start");
        }
    } else if let Some(dir) = dir
        && let Err(e) = inner.remove_dir(&dir).await
    {
        tracing::error!(dir = %dir.display(), error = %e, "could not remove a module directory after a failed start");
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        lock(&self.inner.state).starting.remove(&self.key);
        if self.succeeded {
            return;
        }
        let (module, dir) = (self.module.take(), self.dir.take());
        if module.is_none() && dir.is_none() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(_) => {
                let inner = Arc::clone(&self.inner);
                self.inner
                    .tracker
                    .spawn(async move { clean_up(&inner, module, dir).await });
            }
            // No runtime left to clean up in (it is shutting down): do the minimum now.
            Err(_) => {
                if let Some(module) = module {
                    let _ = killpg(pid_of(module.pid), Signal::SIGKILL);
                }
            }
        }
    }
}

impl Inner {
    async fn start(self: &Arc<Self>, req: StartRequest) -> Result<Started, BackendError> {
        let key = req.package.key.clone();
        let readiness = Readiness::from_envs(&req.envs, &self.cfg.readiness).map_err(failed)?;
        let main_class =
            launch::resolve_main_class(&req.package.main_class, &req.envs).map_err(failed)?;
        let env = launch::child_env(std::env::vars_os(), &self.cfg.pass_env, &req.envs)
            .map_err(failed)?;

        let stale = self.reserve(&key)?;
        let mut attempt = Attempt {
            inner: Arc::clone(self),
            key: key.clone(),
            dir: None,
            module: None,
            succeeded: false,
        };
        if let Some(old) = stale {
            self.teardown(&old).await?;
        }
        let result = self
            .launch(&mut attempt, &req, readiness, main_class, env)
            .await;
        match result {
            Ok(started) => {
                attempt.succeeded = true;
                Ok(started)
            }
            Err(e) => {
                tracing::warn!(biz = %key, error = %e, "module start failed");
                attempt.clean_up().await;
                Err(e)
            }
        }
    }

    async fn launch(
        self: &Arc<Self>,
        attempt: &mut Attempt,
        req: &StartRequest,
        readiness: Readiness,
        main_class: String,
        env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    ) -> Result<Started, BackendError> {
        let key = &req.package.key;
        let dir = self.create_module_dir(key)?;
        attempt.dir = Some(dir.clone());

        let unpack_dir = dir.join(UNPACK_DIR);
        let files = {
            let (jar, target, limits) = (
                req.package.jar.clone(),
                unpack_dir.clone(),
                self.cfg.unpack_limits,
            );
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir(&target).map_err(|source| UnpackError::Io {
                    context: format!("creating {}", target.display()),
                    source,
                })?;
                unpack::unpack(&jar, &target, limits)
            })
            .await
            .map_err(|e| io_error("unpacking the module")(std::io::Error::other(e)))?
            .map_err(|e| match e {
                UnpackError::Io { context, source } => BackendError::Io { context, source },
                other => failed(other),
            })?
        };
        let entries = classpath::class_path(&files).map_err(failed)?;
        let relative: Vec<String> = entries
            .iter()
            .map(|e| match e.trim_end_matches('/') {
                "" => UNPACK_DIR.to_string(),
                rel => format!("{UNPACK_DIR}/{rel}"),
            })
            .collect();
        let class_path_urls = entries
            .iter()
            .map(|e| {
                classpath::java_file_url(&unpack_dir.join(e), e.is_empty() || e.ends_with('/'))
            })
            .collect();

        let marker = leftover::marker_arg(&dir);
        let argfile = dir.join(ARGFILE);
        let (args, argfile_text) = classpath::java_command(
            &marker,
            &self.cfg.jvm_args,
            &relative.join(":"),
            &format!("@{}", argfile.display()),
            &main_class,
            &req.args,
        );
        if let Some(text) = argfile_text {
            std::fs::write(&argfile, text)
                .map_err(io_error(format!("writing {}", argfile.display())))?;
        }
        let log_path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)
            .map_err(io_error(format!("creating {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("duplicating the log handle"))?;

        let mut cmd = tokio::process::Command::new(&self.cfg.java);
        cmd.args(&args)
            .current_dir(&dir)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Own group: signals reach everything the JVM starts, and a terminal's Ctrl-C
            // aimed at the agent does not hit modules behind the backend's back.
            .process_group(0);
        let spawned_at = Instant::now();
        let child = cmd.spawn().map_err(io_error(format!(
            "starting {} for {key}",
            self.cfg.java.display()
        )))?;
        let pid = child
            .id()
            .ok_or_else(|| failed(format!("module {key} exited before its pid was read")))?;
        tracing::info!(biz = %key, pid, dir = %dir.display(), main = %main_class, "module process spawned");

        let (exit_tx, exit_rx) = watch::channel(None);
        let module = Arc::new(Module {
            key: key.clone(),
            dir: dir.clone(),
            log: log_path,
            pid,
            phase: Mutex::new(Phase::Starting),
            cancel: self.cancel.child_token(),
            exit: exit_rx,
        });
        let sup = Supervisor {
            events: self.events.clone(),
            grace: self.cfg.stop_grace,
            tail_lines: self.cfg.log_tail_lines,
        };
        self.tracker
            .spawn(supervise(sup, Arc::clone(&module), child, exit_tx));
        attempt.module = Some(Arc::clone(&module));
        {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(BackendError::Unavailable(
                    "the process backend has shut down".into(),
                ));
            }
            st.modules.insert(key.clone(), Arc::clone(&module));
        }
        let record = ProcessRecord {
            key: key.clone(),
            pid,
            start_time: leftover::read_stat(pid).map(|s| s.start_time),
            marker,
        };
        write_record(&dir, &record)?;

        self.wait_until_up(&module, &readiness, spawned_at).await?;
        tracing::info!(biz = %key, pid, elapsed_ms = spawned_at.elapsed().as_millis(), "module is up");
        Ok(Started {
            work_dir: Some(dir),
            class_path: class_path_urls,
            main_class,
            active: None,
        })
    }

    async fn wait_until_up(
        &self,
        module: &Module,
        readiness: &Readiness,
        spawned_at: Instant,
    ) -> Result<(), BackendError> {
        let mut exit_rx = module.exit.clone();
        let mut follower = readiness
            .log_line
            .as_deref()
            .map(|needle| LogFollower::new(&module.log, needle));
        let (mut tcp_seen, mut log_seen) = (false, false);
        loop {
            let exited = exit_rx.borrow_and_update().is_some();
            if !exited {
                if let Some(port) = readiness.tcp_port
                    && !tcp_seen
                {
                    tcp_seen = tcp_open(port).await;
                }
                if let Some(f) = follower.as_mut()
                    && !log_seen
                {
                    log_seen = f.poll().await;
                }
            }
            let seen = Observation {
                exited,
                tcp_open: tcp_seen,
                log_seen,
                elapsed: spawned_at.elapsed(),
            };
            match readiness::verdict(readiness, seen, self.cfg.settle, self.cfg.start_timeout) {
                // Loses only to an exit (or stop) that took the phase lock first; the next
                // round then reports that.
                Verdict::Ready if module.set_running() => return Ok(()),
                Verdict::Ready | Verdict::Wait => {}
                Verdict::Exited => {
                    let how = module.wait_exit().await;
                    let tail = log_tail_async(&module.log, self.cfg.log_tail_lines).await;
                    return Err(failed(format!(
                        "module {} exited while starting: {how}; last log lines:\n{tail}",
                        module.key
                    )));
                }
                Verdict::TimedOut => {
                    return Err(BackendError::TimedOut {
                        op: "start",
                        key: module.key.clone(),
                        secs: self.cfg.start_timeout.as_secs_f64().ceil() as u64,
                    });
                }
            }
            tokio::select! {
                _ = exit_rx.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// Writes the crash-recovery record atomically (a torn record would be unreadable later).
fn write_record(dir: &Path, record: &ProcessRecord) -> Result<(), BackendError> {
    let bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| io_error("encoding the process record")(e.into()))?;
    let tmp = dir.join(format!("{RECORD_FILE}.tmp"));
    std::fs::write(&tmp, bytes).map_err(io_error(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, dir.join(RECORD_FILE)).map_err(io_error(format!(
        "writing {}",
        dir.join(RECORD_FILE).display()
    )))
}

impl RuntimeBackend for ProcessBackend {
    async fn start(&self, req: StartRequest) -> Result<Started, BackendError> {
        self.inner.start(req).await
    }

    async fn stop(&self, key: &BizKey) -> Result<(), BackendError> {
        let module = lock(&self.inner.state)
            .modules
            .remove(key)
            .ok_or_else(|| BackendError::NotFound(key.clone()))?;
        tracing::info!(biz = %key, pid = module.pid, "stopping module");
        self.inner.teardown(&module).await
    }

    fn log_source(&self, key: &BizKey) -> Option<crate::logs::LogSource> {
        self.log_file(key).map(|path| crate::logs::LogSource {
            path,
            shared: false,
        })
    }

    async fn activate(&self, key: &BizKey) -> Result<(), BackendError> {
        // Every version is its own JVM and serves on its own: nothing to switch.
        match lock(&self.inner.state).modules.get(key) {
            Some(m) if m.phase() == Phase::Running => Ok(()),
            _ => Err(BackendError::NotFound(key.clone())),
        }
    }

    async fn discover(&self) -> Result<Vec<Discovered>, BackendError> {
        let modules_dir = self.inner.modules_dir.clone();
        let found = tokio::task::spawn_blocking(move || scan_module_dirs(&modules_dir))
            .await
            .map_err(|e| io_error("scanning module directories")(std::io::Error::other(e)))?
            .map_err(io_error(format!(
                "scanning {}",
                self.inner.modules_dir.display()
            )))?;
        let clearing = found
            .into_iter()
            // Checked against the live set: a directory that exists was registered before it
            // was created, so a concurrent start's directory is never taken for a leftover.
            .filter(|(dir, _)| !self.inner.owns_dir(dir))
            .map(|(dir, record)| self.inner.clear_leftover(dir, record));
        futures::future::join_all(clearing).await;
        // Leftovers are stopped, not adopted: the engine re-installs what it had.
        Ok(Vec::new())
    }

    async fn shutdown(&self) {
        let modules: Vec<Arc<Module>> = {
            let mut st = lock(&self.inner.state);
            st.closed = true;
            st.modules.drain().map(|(_, m)| m).collect()
        };
        for m in &modules {
            m.begin_stop();
        }
        // Reaches every module token, including one a concurrent start is just creating.
        self.inner.cancel.cancel();
        let stops = modules.iter().map(|m| async move {
            if let Err(e) = self.inner.teardown(m).await {
                tracing::error!(biz = %m.key, error = %e, "stopping module at shutdown failed");
            }
        });
        futures::future::join_all(stops).await;
        // Starts in flight notice the cancellation and clean up after themselves; wait for
        // them (bounded, in case a caller holds a start future without polling it).
        let deadline = Instant::now() + self.inner.cfg.stop_grace + KILL_WAIT;
        while !lock(&self.inner.state).starting.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Drop for ProcessBackend {
    /// Last resort when `shutdown` was not called: SIGKILL every module's process group, so a
    /// panicking agent does not leave JVMs behind.
    fn drop(&mut self) {
        let st = lock(&self.inner.state);
        for module in st.modules.values() {
            if module.phase() != Phase::Exited {
                let _ = killpg(pid_of(module.pid), Signal::SIGKILL);
            }
        }
        drop(st);
        self.inner.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn discover_leaves_foreign_processes_alone_and_clears_stale_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = ProcessBackendConfig::new(tmp.path());
        // Discovery never runs java; any executable satisfies the constructor.
        cfg.java = PathBuf::from("sh");
        let (tx, _rx) = mpsc::channel(1);
        let backend = ProcessBackend::new(cfg, tx).unwrap();
        let modules = backend.config().work_dir.join(MODULES_DIR);

        let mut sleeper = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = sleeper.id();
        let real_start = leftover::read_stat(pid).map(|s| s.start_time);
        let key = BizKey::new("a", "1");
        // A recorded pid that now belongs to an unrelated process: wrong start time...
        let foreign = modules.join("foreign-1-1");
        std::fs::create_dir(&foreign).unwrap();
        let marker = leftover::marker_arg(&foreign);
        write_record(
            &foreign,
            &ProcessRecord {
                key: key.clone(),
                pid,
                start_time: Some(1),
                marker,
            },
        )
        .unwrap();
        // ...or the right start time but not our marker on its command line.
        let unmarked = modules.join("unmarked-1-1");
        std::fs::create_dir(&unmarked).unwrap();
        let marker = leftover::marker_arg(&unmarked);
        write_record(
            &unmarked,
            &ProcessRecord {
                key,
                pid,
                start_time: real_start,
                marker,
            },
        )
        .unwrap();
        // A crash while unpacking leaves a directory without a record; a stray file is clutter.
        std::fs::create_dir_all(modules.join("bare-1-1").join(UNPACK_DIR)).unwrap();
        std::fs::write(modules.join("stray"), b"").unwrap();

        assert_eq!(backend.discover().await.unwrap(), Vec::new());
        let still = leftover::read_stat(pid).is_some_and(|s| s.running());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(still, "discover signalled a process that was not a module");
        assert_eq!(
            std::fs::read_dir(&modules).unwrap().count(),
            0,
            "stale module directories remain"
        );
    }
}
