//! The sampler: tracks one base JVM, keeps the latest [`BaseHealth`], refreshes it in the
//! background (CPU windows, re-discovery, attach) and cheaply on demand (hsperfdata).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use koupleless_protocol::health::{BizHealthMeta, HealthData};
use regex::Regex;
use tokio_util::sync::CancellationToken;

use super::attach::{self, AttachClient, AttachError, AttachTarget};
use super::cpu::{self, CpuTicks, CpuUsage};
use super::discovery::{self, JvmExit, JvmProcess, Liveness};
use super::hsperf::{self, PerfSnapshot};
use super::jvm::{self, AttachData, Inputs, ProcFacts};
use super::{BaseHealth, HealthConfig, JvmCondition, MetaspaceSource, base_state};

/// perf files are 32 KiB by default; `-XX:PerfDataMemorySize` can raise that. Anything larger
/// than this is not a perf file.
const MAX_PERF_FILE: u64 = 16 << 20;

/// Samples the base JVM's and the CPU's health. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HealthSampler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: HealthConfig,
    pattern: Result<Option<Regex>, String>,
    published: Mutex<Published>,
    probe: Mutex<Probe>,
}

#[derive(Debug)]
struct Published {
    health: BaseHealth,
    /// When the JVM part was last refreshed (None: never, or no JVM tracked).
    jvm_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Probe {
    tracked: Option<Tracked>,
    /// Why nothing is tracked.
    not_found: Option<String>,
    cpu_prev: Option<CpuTicks>,
    cpu_usage: Option<CpuUsage>,
    cpu_count: usize,
    brand: Option<Option<String>>,
    last_logged_problem: Option<String>,
    last_warning: Option<String>,
    /// The tracked JVM's exit, reported until another JVM is tracked.
    last_exit: Option<String>,
    /// How it ended.
    last_exit_kind: Option<JvmExit>,
    /// Since when no live JVM is tracked (set at the first sample without one).
    down_since: Option<Instant>,
    /// Which JVM is tracked and why.
    choice: Option<String>,
}

#[derive(Debug)]
struct Tracked {
    jvm: JvmProcess,
    file: Option<File>,
    buf: Vec<u8>,
    perf: Option<PerfSnapshot>,
    perf_problem: Option<String>,
    facts: ProcFacts,
    attach: AttachData,
    attach_last: Option<Instant>,
    attach_off: Option<String>,
    /// Attach rounds that timed out waiting for the listener (each one sent a SIGQUIT).
    attach_timeouts: u32,
    /// Last `sun.os.hrt.ticks` value and when it was first seen.
    progress: Option<(i64, Instant)>,
    hung_for: Option<Duration>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Attach rounds that may time out (each sends one SIGQUIT) before attach is turned off for
/// a JVM.
const ATTACH_TIMEOUTS_BEFORE_OFF: u32 = 2;

impl HealthSampler {
    /// Creates a sampler; nothing is read until [`run`](Self::run) or [`latest`](Self::latest).
    pub fn new(cfg: HealthConfig) -> Self {
        let pattern = match cfg.main_class_pattern.as_deref() {
            None => Ok(None),
            Some(p) => Regex::new(p)
                .map(Some)
                .map_err(|e| format!("invalid main-class pattern {p:?}: {e}")),
        };
        let health = BaseHealth {
            jvm: None,
            cpu: cpu::cpu_info(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
                None,
                None,
            ),
            jvm_alive: false,
            pid: None,
            healthy: false,
            problem: Some("not sampled yet".to_owned()),
            gc_count: None,
            metaspace_source: MetaspaceSource::Unknown,
            attach_off: None,
            state: base_state(JvmCondition::Down(Duration::ZERO), cfg.down_grace),
            found_by: None,
            choice: None,
            last_exit: None,
        };
        HealthSampler {
            inner: Arc::new(Inner {
                cfg,
                pattern,
                published: Mutex::new(Published {
                    health,
                    jvm_at: None,
                }),
                probe: Mutex::new(Probe::default()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.inner.cfg
    }

    /// Samples every `sample_interval` (CPU window, liveness, re-discovery, hsperfdata, attach
    /// when due) until `cancel` fires. The first sample is taken at once. Blocking work runs on
    /// tokio's blocking pool and is awaited, so nothing outlives this future.
    pub async fn run(&self, cancel: CancellationToken) {
        loop {
            let inner = self.inner.clone();
            let c = cancel.clone();
            if let Err(e) = tokio::task::spawn_blocking(move || inner.tick(&c)).await {
                tracing::error!(error = %e, "health sample panicked");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.inner.cfg.sample_interval) => {}
            }
        }
    }

    /// Takes one full sample now, on the calling thread (blocking I/O: discovery scans `/proc`,
    /// attach may wait for the JVM). For tools and tests; services use [`run`](Self::run).
    pub fn sample_now(&self) -> BaseHealth {
        self.inner.tick(&CancellationToken::new());
        lock(&self.inner.published).health.clone()
    }

    /// The latest sample. When its JVM part is older than `sample_interval`, hsperfdata is
    /// re-read first (microseconds) unless the background sampler is busy, in which case the
    /// cached sample is returned as is: this never waits.
    pub fn latest(&self) -> BaseHealth {
        let stale = {
            let p = lock(&self.inner.published);
            match p.jvm_at {
                Some(at) => at.elapsed() >= self.inner.cfg.sample_interval,
                None => false,
            }
        };
        if stale {
            match self.inner.probe.try_lock() {
                Ok(mut probe) => self.inner.refresh_jvm(&mut probe),
                Err(TryLockError::Poisoned(e)) => self.inner.refresh_jvm(&mut e.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        lock(&self.inner.published).health.clone()
    }

    /// `masterBizInfo` for the base: `activated` while the JVM is alive and making progress,
    /// `broken` while it is down or hung within [`HealthConfig::down_grace`], `deactivated`
    /// after that (see [`base_state`](super::base_state)).
    pub fn master_biz(&self) -> BizHealthMeta {
        self.master_biz_of(&self.latest())
    }

    fn master_biz_of(&self, h: &BaseHealth) -> BizHealthMeta {
        BizHealthMeta {
            biz_name: self.inner.cfg.base_name.clone(),
            biz_state: h.state,
            biz_version: self.inner.cfg.base_version.clone(),
            web_context_path: Some("/".to_owned()),
        }
    }

    /// `healthData` for an unfiltered `health` command: `jvm` (when a JVM is tracked), `cpu`
    /// and `masterBizInfo`, from one consistent sample.
    pub fn health_data(&self) -> HealthData {
        let h = self.latest();
        HealthData {
            master_biz_info: Some(self.master_biz_of(&h)),
            jvm: h.jvm,
            cpu: Some(h.cpu),
            ..HealthData::default()
        }
    }
}

impl Inner {
    /// One background sample.
    fn tick(&self, cancel: &CancellationToken) {
        let mut probe = lock(&self.probe);
        if probe.brand.is_none() {
            probe.brand = Some(cpu::processor_brand());
        }
        if let Some(cur) = cpu::read_ticks() {
            // The first window starts at boot: an average since boot rather than nothing.
            probe.cpu_usage = Some(cpu::usage(&probe.cpu_prev.unwrap_or_default(), &cur));
            probe.cpu_prev = Some(cur);
        }
        self.check_alive(&mut probe);
        if probe.tracked.is_none() && self.cfg.track_jvm {
            self.discover(&mut probe);
        }
        if let Some(t) = probe.tracked.as_mut() {
            if t.jvm.perf_path.is_none() {
                // A starting JVM creates its file a little after the process appears.
                if let Ok(Some(p)) = discovery::find_perf_file(&t.jvm.tmp_dir, t.jvm.ns_pid) {
                    t.jvm.perf_id = std::fs::metadata(&p).ok().map(|m| {
                        use std::os::unix::fs::MetadataExt;
                        (m.dev(), m.ino())
                    });
                    t.jvm.perf_path = Some(p);
                }
            }
            self.read_perf(t);
            if self.cfg.attach {
                self.maybe_attach(t, cancel);
            }
        }
        probe.cpu_count = cpu::cpu_count(probe.tracked.as_ref().and_then(|t| t.jvm.host_pid));
        self.publish(&mut probe);
    }

    /// The on-demand refresh: liveness and hsperfdata only.
    fn refresh_jvm(&self, probe: &mut Probe) {
        self.check_alive(probe);
        if let Some(t) = probe.tracked.as_mut() {
            self.read_perf(t);
        }
        self.publish(probe);
    }

    fn check_alive(&self, probe: &mut Probe) {
        let Some(t) = probe.tracked.as_ref() else {
            return;
        };
        let exit = match discovery::liveness(&self.cfg.proc_root, &t.jvm) {
            Liveness::Alive => return,
            Liveness::Gone(exit) => exit,
        };
        let who = describe(&t.jvm);
        tracing::warn!(jvm = %who, how = exit.describe(), "base JVM gone");
        // Only a socket in our own view of /tmp can be attributed safely; through
        // /proc/<pid>/root a reused pid would point at another process's /tmp.
        if (t.jvm.host_pid.is_none() || t.jvm.tmp_dir == self.cfg.tmp_dir)
            && let Ok(true) = attach::remove_stale_socket(&t.jvm.tmp_dir, t.jvm.ns_pid, false)
        {
            tracing::info!(jvm = %who, "removed the stale attach socket of the exited JVM");
        }
        probe.last_exit = Some(format!("base JVM {who} {}", exit.describe()));
        probe.last_exit_kind = Some(exit);
        probe.down_since.get_or_insert_with(Instant::now);
        probe.choice = None;
        probe.tracked = None;
    }

    fn discover(&self, probe: &mut Probe) {
        let pattern = match &self.pattern {
            Ok(p) => p.as_ref(),
            Err(e) => {
                probe.not_found = Some(e.clone());
                return;
            }
        };
        match discovery::discover(
            &self.cfg.proc_root,
            &self.cfg.tmp_dir,
            self.cfg.pid,
            pattern,
        ) {
            Ok((mut jvm, warning)) => {
                if warning.is_some() && warning != probe.last_warning {
                    tracing::warn!("{}", warning.as_deref().unwrap_or_default());
                }
                probe.last_warning = warning;
                // Our own /tmp seen through /proc/<pid>/root: use the direct path so that
                // stale-socket clean-up stays possible after the JVM is gone.
                if discovery::same_file(&jvm.tmp_dir, &self.cfg.tmp_dir) {
                    // The perf file lies under the JVM's /tmp as it was seen; re-root it on
                    // ours. (Stripping a literal "/tmp" would mangle a tmp dir that itself
                    // lives under /tmp, as a file-only JVM's shared directory may.)
                    let seen = std::mem::replace(&mut jvm.tmp_dir, self.cfg.tmp_dir.clone());
                    if let Some(p) = jvm.perf_path.take() {
                        jvm.perf_path = Some(match p.strip_prefix(&seen) {
                            Ok(rel) => self.cfg.tmp_dir.join(rel),
                            Err(_) => p,
                        });
                    }
                }
                let why = match (&probe.last_warning, pattern, self.cfg.pid) {
                    (_, _, Some(_)) => "the configured pid".to_owned(),
                    (Some(w), _, _) => w.clone(),
                    (None, Some(p), None) => {
                        format!("the only JVM whose command matches {:?}", p.as_str())
                    }
                    (None, None, None) => "the only JVM found".to_owned(),
                };
                let choice = format!(
                    "{} ({}; perf file {}): {why}",
                    describe(&jvm),
                    jvm.found_by().describe(),
                    jvm.perf_path
                        .as_deref()
                        .map_or_else(|| "none yet".to_owned(), |p| p.display().to_string()),
                );
                tracing::info!(choice = %choice, "tracking base JVM");
                probe.choice = Some(choice);
                let facts = proc_facts(&jvm);
                probe.tracked = Some(Tracked {
                    jvm,
                    file: None,
                    buf: Vec::new(),
                    perf: None,
                    perf_problem: None,
                    facts,
                    attach: AttachData::default(),
                    attach_last: None,
                    attach_off: None,
                    attach_timeouts: 0,
                    progress: None,
                    hung_for: None,
                });
                probe.not_found = None;
                probe.last_exit = None;
                probe.last_exit_kind = None;
                probe.down_since = None;
            }
            Err(nf) => {
                probe.not_found = Some(match &probe.last_exit {
                    Some(exit) => format!("{exit}; {}", nf.reason),
                    None => nf.reason,
                });
            }
        }
    }

    /// Reads and parses the perf file into `t.perf`; problems go to `t.perf_problem`.
    fn read_perf(&self, t: &mut Tracked) {
        let Some(path) = t.jvm.perf_path.clone() else {
            t.perf = None;
            t.perf_problem = Some(perf_missing_reason(&t.jvm));
            return;
        };
        if t.file.is_none() {
            match File::open(&path) {
                Ok(f) => {
                    let len = f
                        .metadata()
                        .map(|m| m.len())
                        .unwrap_or(0)
                        .min(MAX_PERF_FILE);
                    t.buf = vec![0; len as usize];
                    t.file = Some(f);
                }
                Err(e) => {
                    t.perf = None;
                    t.perf_problem = Some(if e.kind() == std::io::ErrorKind::PermissionDenied {
                        discovery::permission_hint(
                            &path,
                            t.jvm.owner,
                            t.jvm.host_pid.is_some() && path.starts_with(&self.cfg.proc_root),
                        )
                    } else {
                        format!("cannot open {}: {e}", path.display())
                    });
                    return;
                }
            }
        }
        let file = t.file.as_ref().expect("opened above");
        // The JVM writes while we read; a structural change mid-read shows up as a parse
        // error, so one immediate retry covers the race.
        let mut result = read_and_parse(file, &mut t.buf);
        if result.is_err() {
            result = read_and_parse(file, &mut t.buf);
        }
        match result {
            Ok(snap) => {
                self.track_progress(t, &snap);
                t.perf = Some(snap);
                t.perf_problem = None;
            }
            Err(e) => {
                // Keep the last good snapshot: a momentarily unreadable file says nothing
                // about the JVM, and the problem is reported next to the values.
                t.perf_problem = Some(format!("hsperfdata {} unreadable: {e}", path.display()));
            }
        }
    }

    fn track_progress(&self, t: &mut Tracked, snap: &PerfSnapshot) {
        let Some(ticks) = snap.hrt_ticks else { return };
        let now = Instant::now();
        match t.progress {
            Some((last, since)) if last == ticks => {
                let stuck = now.duration_since(since);
                t.hung_for = self
                    .cfg
                    .hang_threshold
                    .filter(|th| stuck >= *th)
                    .map(|_| stuck);
            }
            _ => {
                t.progress = Some((ticks, now));
                t.hung_for = None;
            }
        }
    }

    fn maybe_attach(&self, t: &mut Tracked, cancel: &CancellationToken) {
        if t.attach_off.is_some()
            || t.attach_last
                .is_some_and(|at| at.elapsed() < self.cfg.attach_min_interval)
        {
            return;
        }
        let disabled = match &t.perf {
            Some(p) => p.attach_supported() == Some(false),
            None => {
                // Without hsperfdata the options are all there is: the command line and the
                // option variables in the environment (`JAVA_TOOL_OPTIONS` is not on the
                // command line, and signalling a JVM that disabled attach there dumps its
                // threads into the application log on every attempt).
                let environ = t.jvm.host_pid.and_then(|p| {
                    std::fs::read(self.cfg.proc_root.join(p.to_string()).join("environ")).ok()
                });
                jvm::bool_flag_with_env(
                    t.jvm.cmdline.as_deref(),
                    environ.as_deref(),
                    "DisableAttachMechanism",
                ) == Some(true)
            }
        };
        if disabled {
            self.attach_off(t, &AttachError::Disabled);
            return;
        }
        // Signalling a JVM that has not finished initialising would take the thread-dump path.
        if t.perf
            .as_ref()
            .is_some_and(|p| p.vm_init_done_ms.unwrap_or(0) <= 0)
        {
            return;
        }
        t.attach_last = Some(Instant::now());
        let client = AttachClient::new(
            AttachTarget {
                host_pid: t.jvm.host_pid,
                ns_pid: t.jvm.ns_pid,
                tmp_dir: t.jvm.tmp_dir.clone(),
                cwd: t
                    .jvm
                    .host_pid
                    .map(|p| self.cfg.proc_root.join(p.to_string()).join("cwd")),
                owner: t.jvm.owner,
            },
            self.cfg.attach_timeout,
        );
        let cancelled = || cancel.is_cancelled();
        let gc_before = t.perf.as_ref().map(PerfSnapshot::gc_invocations);
        let result = (|| -> Result<(), AttachError> {
            if t.attach.flags.is_none() {
                t.attach.flags = Some(attach::parse_vm_flags(
                    &client.jcmd("VM.flags", &cancelled)?,
                ));
            }
            let heap = client.jcmd("GC.heap_info", &cancelled)?;
            t.attach.live = attach::parse_heap_info(&heap).map(|mut l| {
                l.gc_count = gc_before;
                l
            });
            t.attach.code_cache =
                attach::parse_codecache(&client.jcmd("Compiler.codecache", &cancelled)?);
            Ok(())
        })();
        match result {
            Ok(()) => tracing::debug!(jvm = %describe(&t.jvm), "attach sample taken"),
            Err(e) if e.is_permanent() => self.attach_off(t, &e),
            // A listener that never starts after a SIGQUIT means the JVM disabled attach in a
            // way we cannot see (e.g. a flags file) and printed a thread dump instead: every
            // further try would print another. Two tries, then leave this JVM alone until it
            // restarts (a new JVM is tracked afresh).
            Err(e @ AttachError::Timeout(_))
                if t.attach_timeouts + 1 >= ATTACH_TIMEOUTS_BEFORE_OFF =>
            {
                t.attach_timeouts += 1;
                let reason = format!(
                    "{e} on {} attempts; attach stays off for this JVM until it restarts, since each attempt sends a SIGQUIT, which a JVM with attach disabled answers with a thread dump",
                    t.attach_timeouts
                );
                tracing::warn!(jvm = %describe(&t.jvm), "attach not possible ({reason}); using hsperfdata only for this JVM");
                t.attach_off = Some(reason);
            }
            Err(e) => {
                if matches!(e, AttachError::Timeout(_)) {
                    t.attach_timeouts += 1;
                }
                tracing::warn!(jvm = %describe(&t.jvm), error = %e, "attach failed; using hsperfdata, will retry")
            }
        }
    }

    fn attach_off(&self, t: &mut Tracked, e: &AttachError) {
        tracing::warn!(jvm = %describe(&t.jvm), "attach not possible ({e}); using hsperfdata only for this JVM");
        t.attach_off = Some(e.to_string());
    }

    fn publish(&self, probe: &mut Probe) {
        let brand = probe.brand.clone().flatten();
        let count = if probe.cpu_count == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            probe.cpu_count
        };
        let cpu = cpu::cpu_info(count, brand.as_deref(), probe.cpu_usage);
        if probe.tracked.is_none() {
            probe.down_since.get_or_insert_with(Instant::now);
        }
        let down_for = probe.down_since.map_or(Duration::ZERO, |d| d.elapsed());
        let grace = self.cfg.down_grace;
        let health = match &probe.tracked {
            None if !self.cfg.track_jvm => BaseHealth {
                jvm: None,
                cpu,
                jvm_alive: false,
                pid: None,
                healthy: false,
                problem: Some("no base JVM expected: JVM discovery is off".to_owned()),
                gc_count: None,
                metaspace_source: MetaspaceSource::Unknown,
                attach_off: None,
                state: base_state(JvmCondition::Down(down_for), grace),
                found_by: None,
                choice: None,
                last_exit: None,
            },
            None => BaseHealth {
                jvm: None,
                cpu,
                jvm_alive: false,
                pid: None,
                healthy: false,
                problem: Some(
                    probe
                        .not_found
                        .clone()
                        .or_else(|| probe.last_exit.clone())
                        .unwrap_or_else(|| "no JVM found".to_owned()),
                ),
                gc_count: None,
                metaspace_source: MetaspaceSource::Unknown,
                attach_off: None,
                state: base_state(JvmCondition::Down(down_for), grace),
                found_by: None,
                choice: None,
                last_exit: probe.last_exit_kind,
            },
            Some(t) => {
                let mut facts = t.facts.clone();
                if t.perf.is_none() {
                    facts.uptime_s = t.jvm.start_ticks.and_then(process_uptime);
                }
                let info = jvm::jvm_info(&Inputs {
                    perf: t.perf.as_ref(),
                    attach: self.cfg.attach.then_some(&t.attach),
                    proc: &facts,
                    now_ms: now_ms(),
                });
                let hung = t.hung_for.map(|d| {
                    format!(
                        "base JVM {} is not making progress: sun.os.hrt.ticks unchanged for {} s (stopped or hung)",
                        describe(&t.jvm),
                        d.as_secs()
                    )
                });
                BaseHealth {
                    jvm: Some(info),
                    cpu,
                    jvm_alive: true,
                    pid: t.jvm.host_pid,
                    healthy: hung.is_none(),
                    problem: hung.or_else(|| t.perf_problem.clone()),
                    gc_count: t.perf.as_ref().map(PerfSnapshot::gc_invocations),
                    metaspace_source: jvm::metaspace(
                        t.perf.as_ref(),
                        self.cfg.attach.then_some(t.attach.live.as_ref()).flatten(),
                    )
                    .2,
                    attach_off: self.cfg.attach.then(|| t.attach_off.clone()).flatten(),
                    state: base_state(
                        t.hung_for.map_or(JvmCondition::Up, JvmCondition::Hung),
                        grace,
                    ),
                    found_by: Some(t.jvm.found_by()),
                    choice: probe.choice.clone(),
                    last_exit: None,
                }
            }
        };
        if health.problem != probe.last_logged_problem {
            match &health.problem {
                Some(p) => tracing::warn!(problem = %p, "base health degraded"),
                None => tracing::info!("base health complete"),
            }
            probe.last_logged_problem = health.problem.clone();
        }
        let mut published = lock(&self.published);
        published.jvm_at = probe.tracked.is_some().then(Instant::now);
        published.health = health;
    }
}

fn read_and_parse(file: &File, buf: &mut [u8]) -> Result<PerfSnapshot, String> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    hsperf::parse(&buf[..filled]).map_err(|e| e.to_string())
}

fn describe(j: &JvmProcess) -> String {
    match j.host_pid {
        Some(p) => format!("pid {p}"),
        None => format!("pid {} (in its own pid namespace)", j.ns_pid),
    }
}

/// The reason a tracked JVM has no perf file, from its command line.
fn perf_missing_reason(j: &JvmProcess) -> String {
    let cmd = j.cmdline.as_deref().unwrap_or("");
    if jvm::bool_flag(cmd, "UsePerfData") == Some(false) {
        "hsperfdata disabled (-XX:-UsePerfData)".to_owned()
    } else if jvm::bool_flag(cmd, "PerfDisableSharedMem") == Some(true) {
        "hsperfdata disabled (-XX:+PerfDisableSharedMem)".to_owned()
    } else {
        format!(
            "no hsperfdata file for {} under {}/hsperfdata_*: perf data disabled (e.g. through JAVA_TOOL_OPTIONS), the JVM still starting, or its uid has no passwd entry",
            describe(j),
            j.tmp_dir.display()
        )
    }
}

/// `/proc` facts that stand in for perf data: `java.home` from the executable, the version
/// from the JDK's `release` file.
fn proc_facts(j: &JvmProcess) -> ProcFacts {
    let exe = j
        .host_pid
        .and_then(|p| std::fs::read_link(format!("/proc/{p}/exe")).ok());
    // .../bin/java → the JDK directory.
    let home = exe
        .as_deref()
        .and_then(|e| e.parent()?.parent())
        .map(Path::to_path_buf);
    let version = home.as_ref().and_then(|h| {
        let release: PathBuf = j
            .root
            .join(h.strip_prefix("/").unwrap_or(h))
            .join("release");
        let text = std::fs::read_to_string(release).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("JAVA_VERSION="))
            .map(|v| v.trim_matches('"').to_owned())
    });
    ProcFacts {
        java_version: version,
        java_home: home.map(|h| h.display().to_string()),
        uptime_s: None,
        cmdline: j.cmdline.clone(),
    }
}

/// Seconds since a process started, from its start time in clock ticks since boot.
fn process_uptime(start_ticks: u64) -> Option<f64> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)? as f64;
    let boot: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((boot - start_ticks as f64 / hz).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::state::BizState;

    fn cfg() -> HealthConfig {
        HealthConfig {
            pid: Some(u32::MAX - 7),
            attach: false,
            ..HealthConfig::default()
        }
    }

    #[test]
    fn no_jvm_still_reports_cpu() {
        let s = HealthSampler::new(cfg());
        let h = s.sample_now();
        assert!(h.jvm.is_none());
        assert!(!h.jvm_alive);
        assert_eq!(
            h.problem.as_deref(),
            Some(format!("configured JVM pid {} is not running", u32::MAX - 7).as_str())
        );
        assert!(h.cpu.count.unwrap() >= 1);
        let (u, sys, idle) = (
            h.cpu.user_used.unwrap(),
            h.cpu.system_used.unwrap(),
            h.cpu.free.unwrap(),
        );
        assert!(u + sys + idle <= 100.0 + 1e-9, "{u} {sys} {idle}");
        // Down within the grace: unhealthy, not gone.
        assert_eq!(s.master_biz().biz_state, BizState::Broken);
        let data = s.health_data();
        assert!(data.jvm.is_none() && data.cpu.is_some());
        assert_eq!(
            data.master_biz_info.unwrap().web_context_path.as_deref(),
            Some("/")
        );
    }

    #[test]
    fn nothing_is_discovered_when_no_base_jvm_is_expected() {
        // Even a configured pid (this very process, alive) is not looked at.
        let s = HealthSampler::new(HealthConfig {
            pid: Some(std::process::id()),
            track_jvm: false,
            ..HealthConfig::default()
        });
        let h = s.sample_now();
        assert!(h.jvm.is_none() && h.pid.is_none() && !h.jvm_alive);
        assert_eq!(
            h.problem.as_deref(),
            Some("no base JVM expected: JVM discovery is off")
        );
        let tracking = HealthSampler::new(HealthConfig {
            pid: Some(std::process::id()),
            attach: false,
            ..HealthConfig::default()
        });
        assert_eq!(tracking.sample_now().pid, Some(std::process::id()));
    }

    #[test]
    fn bad_pattern_is_reported() {
        let s = HealthSampler::new(HealthConfig {
            main_class_pattern: Some("(".into()),
            attach: false,
            ..HealthConfig::default()
        });
        let h = s.sample_now();
        assert!(h.problem.unwrap().starts_with("invalid main-class pattern"));
    }

    #[test]
    fn missing_perf_reasons() {
        let mut j = JvmProcess {
            host_pid: Some(5),
            ns_pid: 5,
            start_ticks: None,
            owner: None,
            perf_path: None,
            perf_id: None,
            tmp_dir: PathBuf::from("/tmp"),
            root: PathBuf::from("/"),
            command: String::new(),
            cmdline: Some("java -XX:-UsePerfData Main".into()),
        };
        assert_eq!(
            perf_missing_reason(&j),
            "hsperfdata disabled (-XX:-UsePerfData)"
        );
        j.cmdline = Some("java -XX:+PerfDisableSharedMem Main".into());
        assert_eq!(
            perf_missing_reason(&j),
            "hsperfdata disabled (-XX:+PerfDisableSharedMem)"
        );
        j.cmdline = None;
        assert!(perf_missing_reason(&j).starts_with("no hsperfdata file for pid 5"));
    }

    #[tokio::test]
    async fn run_stops_on_cancel() {
        let s = HealthSampler::new(HealthConfig {
            sample_interval: Duration::from_millis(20),
            ..cfg()
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let s = s.clone();
            let c = cancel.clone();
            async move { s.run(c).await }
        });
        // Wait until the first sample is published.
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.latest().problem.as_deref() == Some("not sampled yet") {
            assert!(Instant::now() < deadline, "no sample within 5 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("run returns after cancel")
            .unwrap();
    }
}
