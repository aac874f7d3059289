//! Health of the base JVM and of the CPU, measured from outside the JVM, in the shape of the
//! Arklet `health` command (spec protocol §3, spec jvm-health).
//!
//! Sources: the JVM's hsperfdata file (read every sample, microseconds), HotSpot dynamic attach
//! (rate-limited, optional: live metaspace, flags, code cache), `/proc` and cgroup files.
//! [`HealthSampler`] owns the background sampling; [`HealthSampler::latest`] never waits for
//! I/O beyond one hsperfdata read.
//!
//! Requirements on the pod, when the agent is a sidecar: a shared process namespace
//! (`shareProcessNamespace: true`) or a shared `/tmp`, and the same uid/gid as the JVM (or root,
//! with `CAP_SYS_PTRACE` to read through `/proc/<pid>/root`). The JVM must not run with
//! `-XX:-UsePerfData`/`-XX:+PerfDisableSharedMem`; if it does, the report is degraded (and
//! says so) to what `/proc` and attach can provide.

pub mod attach;
pub mod cpu;
pub mod discovery;
pub mod hsperf;
pub mod jvm;
mod sampler;

use std::path::PathBuf;
use std::time::Duration;

use koupleless_protocol::health::{CpuInfo, JvmInfo};
use koupleless_protocol::state::BizState;

pub use discovery::{FoundBy, JvmExit};
pub use jvm::MetaspaceSource;
pub use sampler::HealthSampler;

/// Configuration of the [`HealthSampler`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The base JVM's pid (in the agent's pid namespace); None to discover it.
    pub pid: Option<u32>,
    /// Regular expression matched against the JVM's main class and arguments (or `-jar` file)
    /// to choose the base when several JVMs are visible.
    pub main_class_pattern: Option<String>,
    /// Use HotSpot dynamic attach for live metaspace and flags. Attach runs a little code in
    /// the target (about 0.5 MB of allocation per call), hence the rate limit below.
    pub attach: bool,
    /// Minimum time between two attach rounds for one JVM.
    pub attach_min_interval: Duration,
    /// Upper bound for the attach listener to start and for one reply.
    pub attach_timeout: Duration,
    /// `masterBizInfo.bizName`.
    pub base_name: String,
    /// `masterBizInfo.bizVersion`.
    pub base_version: String,
    /// Period of background samples, which is also the CPU window; [`HealthSampler::latest`]
    /// re-reads hsperfdata itself when the cached sample is older than this.
    pub sample_interval: Duration,
    /// A JVM whose `sun.os.hrt.ticks` (updated every 50 ms by the JVM) has not moved for this
    /// long is reported unhealthy (stopped or hung): its master biz becomes deactivated. None
    /// disables the check.
    pub hang_threshold: Option<Duration>,
    /// The procfs mount.
    pub proc_root: PathBuf,
    /// The agent's view of the shared `/tmp`, scanned for perf files of JVMs whose pids are
    /// not visible.
    pub tmp_dir: PathBuf,
    /// Whether a base JVM is expected at all. When not (the process backend without a pid or
    /// pattern: the agent is the base), nothing is discovered, read or attached: only CPU.
    pub track_jvm: bool,
    /// How long the base JVM may stay down (exited, killed, hung) while the agent lives before
    /// the base counts as gone (`deactivated`). Before that it is `broken`: unhealthy, so its
    /// Node turns NotReady, while a container restart brings it back without losing the Node.
    pub down_grace: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            pid: None,
            main_class_pattern: None,
            attach: true,
            attach_min_interval: Duration::from_secs(60),
            attach_timeout: Duration::from_secs(5),
            base_name: "base".to_owned(),
            base_version: "1.0.0".to_owned(),
            sample_interval: Duration::from_secs(2),
            hang_threshold: Some(Duration::from_secs(30)),
            proc_root: PathBuf::from("/proc"),
            tmp_dir: PathBuf::from("/tmp"),
            track_jvm: true,
            down_grace: Duration::from_secs(120),
        }
    }
}

/// One health sample of the base.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseHealth {
    /// The `jvm` indicator; None when no JVM is tracked (none found, or it exited).
    pub jvm: Option<JvmInfo>,
    /// The `cpu` indicator (works without a JVM).
    pub cpu: CpuInfo,
    /// A JVM is tracked and its process lives.
    pub jvm_alive: bool,
    /// The tracked JVM's pid in the agent's pid namespace (None when none is tracked or its
    /// pid is not visible).
    pub pid: Option<u32>,
    /// Alive and making progress (see [`HealthConfig::hang_threshold`]); drives `masterBizInfo`.
    pub healthy: bool,
    /// Why the report is missing or degraded, in words an operator can act on.
    pub problem: Option<String>,
    /// Collections since the JVM started (all collectors), from hsperfdata; tells the age of
    /// metaspace values that come from the last GC.
    pub gc_count: Option<i64>,
    /// Why attach is not used for the tracked JVM: disabled in it, not permitted, or given up
    /// after timeouts until the JVM restarts. `None` while attach works or is not configured.
    pub attach_off: Option<String>,
    /// Where `java used/committed metaspace` come from.
    pub metaspace_source: MetaspaceSource,
    /// `masterBizInfo.bizState`: see [`base_state`].
    pub state: BizState,
    /// How the tracked JVM was found (None when none is tracked).
    pub found_by: Option<FoundBy>,
    /// Which JVM (or perf file) is tracked and why it was chosen.
    pub choice: Option<String>,
    /// How the last tracked JVM ended, until another one is tracked.
    pub last_exit: Option<JvmExit>,
}

/// The base JVM's condition as the sampler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JvmCondition {
    /// Alive and its clock counter advancing.
    Up,
    /// Alive but `sun.os.hrt.ticks` has not moved for this long (stopped or hung).
    Hung(Duration),
    /// Not running (exited, killed, not started yet) for this long.
    Down(Duration),
}

/// The base's `masterBizInfo` state: `activated` while the JVM is up; `broken` (unhealthy:
/// the Node turns NotReady, its modules not ready) while it is down or hung for less than
/// `grace`, since the Pod lives and Kubernetes restarts a crashed container in seconds;
/// `deactivated` (the base is gone, its Node removed) after that. A real shutdown (the agent
/// receiving SIGTERM) is reported by the tunnels' final `deactivated` heartbeat, not here.
/// Pure.
pub fn base_state(condition: JvmCondition, grace: Duration) -> BizState {
    match condition {
        JvmCondition::Up => BizState::Activated,
        JvmCondition::Hung(d) | JvmCondition::Down(d) if d < grace => BizState::Broken,
        JvmCondition::Hung(_) | JvmCondition::Down(_) => BizState::Deactivated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_state_table() {
        let g = Duration::from_secs(60);
        let s = Duration::from_secs;
        let table = [
            (JvmCondition::Up, g, BizState::Activated),
            (JvmCondition::Down(s(0)), g, BizState::Broken),
            (JvmCondition::Down(s(59)), g, BizState::Broken),
            (JvmCondition::Down(s(60)), g, BizState::Deactivated),
            (JvmCondition::Hung(s(30)), g, BizState::Broken),
            (JvmCondition::Hung(s(61)), g, BizState::Deactivated),
            // No grace: any outage is a departure (the old behaviour).
            (
                JvmCondition::Down(s(0)),
                Duration::ZERO,
                BizState::Deactivated,
            ),
            (JvmCondition::Up, Duration::ZERO, BizState::Activated),
        ];
        for (i, (c, grace, want)) in table.into_iter().enumerate() {
            assert_eq!(base_state(c, grace), want, "row {i}: {c:?}");
        }
    }
}
