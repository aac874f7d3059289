//! Pure derivations: from perf counters, attach output and `/proc` facts to the numbers the
//! Java `JvmIndicator` reports (spec protocol §3.3, jvm-health §1.4).
//!
//! Meanings, where hsperfdata and the MXBeans differ:
//! - heap committed/max follow `CollectedHeap::memory_usage()`, i.e. what
//!   `MemoryMXBean.getHeapMemoryUsage()` and `Runtime.totalMemory()/maxMemory()` return:
//!   Serial and Parallel leave out one survivor space (the `to` space), G1 counts whole
//!   regions (its 8-byte per-space padding is floored away). `jstat -gc` shows both
//!   survivors, so jstat's `S0C+EC+OC` equals our committed value when `S0C == S1C`.
//! - metaspace used/committed are live values from the last attach when no GC happened since,
//!   otherwise the perf counters, which HotSpot refreshes only at the end of a GC; `-1` when
//!   neither is known (perf counters stay 0 until the first GC).
//! - non-heap = Metaspace + Compressed Class Space (+ the code cache when attach reported it),
//!   like the MXBean, which also counts class space twice. Without attach the code cache is
//!   not observable from outside the JVM and is left out.

use koupleless_protocol::health::{JvmInfo, bytes_to_mib};

use super::hsperf::PerfSnapshot;

/// `MaxMetaspaceSize` when unset (`max_uintx`).
pub const UNLIMITED_FLAG: u64 = u64::MAX;
/// The JDK 17 default `ReservedCodeCacheSize` with tiered compilation (x86-64, aarch64).
pub const DEFAULT_CODE_CACHE_TIERED: i64 = 240 * 1024 * 1024;
/// The JDK 17 default `ReservedCodeCacheSize` without tiered compilation.
pub const DEFAULT_CODE_CACHE_C2_ONLY: i64 = 48 * 1024 * 1024;
/// The JDK 17 default `InitialCodeCacheSize` (x86-64, aarch64).
pub const DEFAULT_INITIAL_CODE_CACHE: i64 = 2496 * 1024;

/// The collector families whose heap accounting differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collector {
    /// `-XX:+UseSerialGC` (`Copy:MSC`).
    Serial,
    /// `-XX:+UseParallelGC` (`ParScav:MSC`).
    Parallel,
    /// `-XX:+UseG1GC` (`GarbageFirst`).
    G1,
    /// ZGC, Shenandoah, Epsilon or unknown: plain sums.
    Other,
}

impl Collector {
    /// From `sun.gc.policy.name`.
    pub fn from_policy(policy: Option<&str>) -> Self {
        match policy {
            Some("Copy:MSC") => Collector::Serial,
            Some("ParScav:MSC") => Collector::Parallel,
            Some("GarbageFirst") => Collector::G1,
            _ => Collector::Other,
        }
    }
}

/// Heap usage in bytes, MXBean meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heap {
    /// Bytes used.
    pub used: i64,
    /// Bytes committed (`Runtime.totalMemory()`).
    pub committed: i64,
    /// Maximum bytes (`Runtime.maxMemory()`).
    pub max: i64,
    /// Initial bytes, when the counters determine it.
    pub init: Option<i64>,
}

fn floor_4k(v: i64) -> i64 {
    v & !4095
}

/// Heap usage from the generation counters; None when the file has no generations.
pub fn heap_from_perf(snap: &PerfSnapshot) -> Option<Heap> {
    if snap.generations.is_empty() {
        return None;
    }
    let kind = Collector::from_policy(snap.gc_policy.as_deref());
    let gens = &snap.generations;
    let used: i64 = gens
        .iter()
        .flat_map(|g| &g.spaces)
        .filter_map(|s| s.used)
        .sum();
    let sum_cap: i64 = gens.iter().filter_map(|g| g.capacity).sum();
    let sum_max: i64 = gens.iter().filter_map(|g| g.max_capacity).sum();
    let sum_min: i64 = gens.iter().filter_map(|g| g.min_capacity).sum();
    // The `to` survivor is space 2 of generation 0 (`s1`) in Serial and Parallel layouts.
    let to_space = gens.first().and_then(|g| g.spaces.get(2));
    let to_cap = to_space.and_then(|s| s.capacity).unwrap_or(0);
    let to_max = to_space.and_then(|s| s.max_capacity).unwrap_or(0);
    let heap = match kind {
        Collector::Serial => Heap {
            used,
            committed: sum_cap - to_cap,
            max: sum_max - to_max,
            init: Some(sum_min),
        },
        Collector::Parallel => {
            let committed = sum_cap - to_cap;
            // ParallelScavengeHeap::max_capacity(): reserved minus the largest survivor, but
            // never below what is committed.
            Heap {
                used,
                committed,
                max: (sum_max - to_max).max(committed),
                init: None,
            }
        }
        Collector::G1 => {
            let init: i64 = gens
                .iter()
                .flat_map(|g| &g.spaces)
                .filter_map(|s| s.init_capacity)
                .sum();
            let max = gens
                .iter()
                .filter_map(|g| g.max_capacity)
                .max()
                .unwrap_or(0);
            Heap {
                used,
                committed: floor_4k(sum_cap),
                max: floor_4k(max),
                init: Some(floor_4k(init)),
            }
        }
        Collector::Other => Heap {
            used,
            committed: sum_cap,
            max: sum_max,
            init: None,
        },
    };
    Some(heap)
}

/// Parses a HotSpot size (`64m`, `100001k`, `1G`, `123`) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        b't' | b'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// The last `-XX:<name>=<size>` in a JVM argument string (later options win in HotSpot).
pub fn size_flag(vm_args: &str, name: &str) -> Option<u64> {
    let prefix = format!("-XX:{name}=");
    vm_args
        .split_whitespace()
        .filter_map(|a| a.strip_prefix(prefix.as_str()))
        .filter_map(parse_size)
        .next_back()
}

/// The last `-XX:+<name>` / `-XX:-<name>` in a JVM argument string.
pub fn bool_flag(vm_args: &str, name: &str) -> Option<bool> {
    vm_args
        .split_whitespace()
        .filter_map(|a| a.strip_prefix("-XX:"))
        .filter_map(|a| match a.split_at_checked(1) {
            Some(("+", n)) if n == name => Some(true),
            Some(("-", n)) if n == name => Some(false),
            _ => None,
        })
        .next_back()
}

/// Environment variables HotSpot (or the `java` launcher) reads options from, in the order
/// they apply: `JAVA_TOOL_OPTIONS` first, then `JDK_JAVA_OPTIONS` (inserted before the
/// command line's options), then the command line, then `_JAVA_OPTIONS` (last, overrides).
const OPTION_ENVS_BEFORE_CMDLINE: [&str; 2] = ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS"];
const OPTION_ENV_AFTER_CMDLINE: &str = "_JAVA_OPTIONS";

/// The value of boolean `-XX:` flag `name` as the JVM resolves it from its command line
/// (`/proc/<pid>/cmdline`, space-joined) and its environment (`/proc/<pid>/environ`,
/// NUL-separated `KEY=value`): the last setting in application order wins. `None` when no
/// source sets it. A flag set only in `JAVA_TOOL_OPTIONS` is invisible on the command line,
/// which is how a JVM with attach disabled there would otherwise be signalled. Pure.
pub fn bool_flag_with_env(
    cmdline: Option<&str>,
    environ: Option<&[u8]>,
    name: &str,
) -> Option<bool> {
    let env_value = |key: &str| -> Option<String> {
        environ?
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
            .next_back()
    };
    let mut sources: Vec<Option<String>> = OPTION_ENVS_BEFORE_CMDLINE
        .iter()
        .map(|k| env_value(k))
        .collect();
    sources.push(cmdline.map(str::to_owned));
    sources.push(env_value(OPTION_ENV_AFTER_CMDLINE));
    sources
        .iter()
        .flatten()
        .filter_map(|text| bool_flag(text, name))
        .next_back()
}

/// `-Xms` / `-XX:InitialHeapSize=` from the JVM arguments.
pub fn initial_heap_from_args(vm_args: &str) -> Option<u64> {
    vm_args
        .split_whitespace()
        .filter_map(|a| {
            a.strip_prefix("-Xms")
                .or_else(|| a.strip_prefix("-XX:InitialHeapSize="))
        })
        .filter_map(parse_size)
        .next_back()
}

/// `MaxMetaspaceSize` as the MXBean reports it: the value when set, else -1 (unlimited).
pub fn max_metaspace_from_flag(value: Option<u64>) -> i64 {
    match value {
        Some(v) if v != UNLIMITED_FLAG => i64::try_from(v).unwrap_or(-1),
        _ => -1,
    }
}

/// Live metaspace and flags obtained through dynamic attach.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachData {
    /// From `GC.heap_info`, with the GC count seen when it was taken.
    pub live: Option<LiveMetaspace>,
    /// From `Compiler.codecache`.
    pub code_cache: Option<CodeCache>,
    /// From `VM.flags` (non-default flags only): name → value text.
    pub flags: Option<std::collections::BTreeMap<String, String>>,
}

impl AttachData {
    /// A size flag from `VM.flags`; `Some(None)` when the flags are known and this one is at
    /// its default.
    pub fn size_flag(&self, name: &str) -> Option<Option<u64>> {
        let flags = self.flags.as_ref()?;
        Some(flags.get(name).and_then(|v| v.parse().ok()))
    }
}

/// Metaspace at the moment of an attach call, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveMetaspace {
    /// Used, class space included.
    pub used: i64,
    /// Committed, class space included.
    pub committed: i64,
    /// Class space used.
    pub class_used: i64,
    /// Class space committed.
    pub class_committed: i64,
    /// Heap used (`total …K, used …K` lines), for JVMs without perf data.
    pub heap_used: Option<i64>,
    /// Heap committed, for JVMs without perf data.
    pub heap_committed: Option<i64>,
    /// `sun.gc` invocation total when the sample was taken (None without perf data).
    pub gc_count: Option<i64>,
}

/// Code cache totals over all code heaps, bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeCache {
    /// Used.
    pub used: i64,
    /// Committed (from each heap's bounds).
    pub committed: i64,
    /// Reserved (the heaps' `size`).
    pub reserved: i64,
    /// Reserved size of each code heap (1 without segmented code cache, 3 with).
    pub heap_sizes: Vec<i64>,
}

/// Facts about the process from `/proc` and the JDK's `release` file, for when perf data is
/// missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcFacts {
    /// `JAVA_VERSION` from `<java.home>/release`.
    pub java_version: Option<String>,
    /// The JDK directory of `/proc/<pid>/exe`.
    pub java_home: Option<String>,
    /// Seconds since the process started.
    pub uptime_s: Option<f64>,
    /// The process command line, for `-XX:` options.
    pub cmdline: Option<String>,
}

/// Everything [`jvm_info`] combines.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The latest perf snapshot, when the file is readable.
    pub perf: Option<&'a PerfSnapshot>,
    /// Attach results, when attach is enabled and worked.
    pub attach: Option<&'a AttachData>,
    /// `/proc` facts.
    pub proc: &'a ProcFacts,
    /// Wall clock, epoch ms.
    pub now_ms: i64,
}

/// Where the reported metaspace numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaspaceSource {
    /// A `GC.heap_info` attach call taken after the last GC: live at that moment.
    Attach,
    /// The perf counters, which HotSpot refreshes at the end of each GC.
    LastGc,
    /// Neither is available (no GC yet and no attach): reported as -1.
    Unknown,
}

/// Metaspace used/committed as reported: live attach values unless a GC has refreshed the perf
/// counters since, then the perf counters, else -1/-1.
pub fn metaspace(
    perf: Option<&PerfSnapshot>,
    live: Option<&LiveMetaspace>,
) -> (i64, i64, MetaspaceSource) {
    let perf_pair = perf.and_then(|p| {
        let (u, c) = (p.metaspace.used?, p.metaspace.capacity?);
        // HotSpot leaves the counters at 0 until the first GC updates them.
        (c > 0).then_some((u, c))
    });
    let live_is_newer = match (live, perf) {
        (Some(l), Some(p)) => l.gc_count.is_none_or(|at| p.gc_invocations() <= at),
        (Some(_), None) => true,
        (None, _) => false,
    };
    match (live, perf_pair) {
        (Some(l), _) if live_is_newer || perf_pair.is_none() => {
            (l.used, l.committed, MetaspaceSource::Attach)
        }
        (_, Some((u, c))) => (u, c, MetaspaceSource::LastGc),
        _ => (-1, -1, MetaspaceSource::Unknown),
    }
}

fn class_space(perf: Option<&PerfSnapshot>, live: Option<&LiveMetaspace>) -> (i64, i64) {
    let from_perf = perf.and_then(|p| Some((p.class_space.used?, p.class_space.capacity?)));
    match (live, from_perf) {
        (Some(l), Some((u, c))) => {
            let newer = perf.is_some_and(|p| l.gc_count.is_none_or(|at| p.gc_invocations() <= at));
            if newer {
                (l.class_used, l.class_committed)
            } else {
                (u, c)
            }
        }
        (Some(l), None) => (l.class_used, l.class_committed),
        (None, Some(pair)) => pair,
        (None, None) => (0, 0),
    }
}

/// The metaspace limit: `VM.flags` (attach) first, then `-XX:MaxMetaspaceSize` in the JVM
/// arguments or command line, else -1 (unlimited, the HotSpot default).
pub fn max_metaspace(inp: &Inputs<'_>) -> i64 {
    if let Some(flag) = inp.attach.and_then(|a| a.size_flag("MaxMetaspaceSize")) {
        return max_metaspace_from_flag(flag);
    }
    let args = vm_args(inp);
    max_metaspace_from_flag(args.and_then(|a| size_flag(a, "MaxMetaspaceSize")))
}

fn vm_args<'a>(inp: &Inputs<'a>) -> Option<&'a str> {
    inp.perf
        .and_then(|p| p.vm_args.as_deref())
        .or(inp.proc.cmdline.as_deref())
}

/// Builds the `jvm` indicator. Keys whose value is unknown are left out rather than invented;
/// the metaspace keys are always present (-1 when unknown), as upstream.
pub fn jvm_info(inp: &Inputs<'_>) -> JvmInfo {
    let perf = inp.perf;
    let live = inp.attach.and_then(|a| a.live.as_ref());
    let args = vm_args(inp);
    let mut info = JvmInfo {
        java_version: perf
            .and_then(|p| p.java_version.clone())
            .or_else(|| inp.proc.java_version.clone()),
        java_home: perf
            .and_then(|p| p.java_home.clone())
            .or_else(|| inp.proc.java_home.clone()),
        ..JvmInfo::default()
    };

    let heap = perf.and_then(heap_from_perf).or_else(|| {
        let l = live?;
        let max = inp
            .attach
            .and_then(|a| a.size_flag("MaxHeapSize").flatten())
            .and_then(|v| i64::try_from(v).ok())
            .unwrap_or(-1);
        Some(Heap {
            used: l.heap_used?,
            committed: l.heap_committed?,
            max,
            init: None,
        })
    });
    if let Some(h) = heap {
        let init = inp
            .attach
            .and_then(|a| a.size_flag("InitialHeapSize").flatten())
            .or_else(|| args.and_then(initial_heap_from_args))
            .and_then(|v| i64::try_from(v).ok())
            .or(h.init);
        info.total_memory_mib = Some(bytes_to_mib(h.committed));
        info.max_memory_mib = Some(bytes_to_mib(h.max));
        info.free_memory_mib = Some(bytes_to_mib(h.committed - h.used));
        info.init_heap_mib = init.map(bytes_to_mib);
        info.used_heap_mib = Some(bytes_to_mib(h.used));
        info.committed_heap_mib = Some(bytes_to_mib(h.committed));
        info.max_heap_mib = Some(bytes_to_mib(h.max));
    }

    let (meta_used, meta_committed, _) = metaspace(perf, live);
    let meta_max = max_metaspace(inp);
    info.used_metaspace = Some(meta_used);
    info.committed_metaspace = Some(meta_committed);
    info.max_metaspace = Some(meta_max);

    if meta_used >= 0 {
        let (cs_used, cs_committed) = class_space(perf, live);
        let code = inp.attach.and_then(|a| a.code_cache.as_ref());
        let used = meta_used + cs_used + code.map_or(0, |c| c.used);
        let committed = meta_committed + cs_committed + code.map_or(0, |c| c.committed);
        info.used_non_heap_mib = Some(bytes_to_mib(used));
        info.committed_non_heap_mib = Some(bytes_to_mib(committed));
        info.init_non_heap_mib = Some(bytes_to_mib(code.map_or(0, |c| {
            let initial = inp
                .attach
                .and_then(|a| a.size_flag("InitialCodeCacheSize").flatten())
                .and_then(|v| i64::try_from(v).ok())
                .unwrap_or(DEFAULT_INITIAL_CODE_CACHE);
            // Each code heap starts with min(InitialCodeCacheSize, its size) committed.
            c.heap_sizes.iter().map(|s| (*s).min(initial)).sum()
        })));
        info.max_non_heap_mib = Some(bytes_to_mib(max_non_heap(inp, meta_max, code)));
    }

    info.loaded_class_count = perf.and_then(|p| {
        Some(
            p.loaded_classes? + p.shared_loaded_classes?
                - p.unloaded_classes?
                - p.shared_unloaded_classes?,
        )
    });
    info.unload_class_count =
        perf.and_then(|p| Some(p.unloaded_classes? + p.shared_unloaded_classes?));
    info.total_class_count = perf.and_then(|p| Some(p.loaded_classes? + p.shared_loaded_classes?));

    // RuntimeMXBean.getStartTime() is the VM-init-done time, so upstream's uptime counts from it.
    info.run_time_s = perf
        .and_then(|p| p.vm_init_done_ms.filter(|&t| t > 0))
        .map(|start| (inp.now_ms - start).max(0) as f64 / 1000.0)
        .or_else(|| perf.and_then(PerfSnapshot::uptime_from_ticks))
        .or(inp.proc.uptime_s);
    info
}

/// Non-heap max as the MXBean computes it: undefined (-1) as soon as one pool is unbounded,
/// which Metaspace is unless `MaxMetaspaceSize` is set; otherwise the sum of the pool maxima.
fn max_non_heap(inp: &Inputs<'_>, meta_max: i64, code: Option<&CodeCache>) -> i64 {
    if meta_max < 0 {
        return -1;
    }
    let class_max = inp
        .attach
        .and_then(|a| a.size_flag("CompressedClassSpaceSize").flatten())
        .and_then(|v| i64::try_from(v).ok())
        .or_else(|| inp.perf.and_then(|p| p.class_space.max_capacity))
        .unwrap_or(0);
    let code_max = code.map(|c| c.reserved).unwrap_or_else(|| {
        let args = vm_args(inp).unwrap_or("");
        match size_flag(args, "ReservedCodeCacheSize") {
            Some(v) => i64::try_from(v).unwrap_or(0),
            None if bool_flag(args, "TieredCompilation") == Some(false) => {
                DEFAULT_CODE_CACHE_C2_ONLY
            }
            None => DEFAULT_CODE_CACHE_TIERED,
        }
    });
    meta_max + class_max + code_max
}

#[cfg(test)]
mod tests {

    #[test]
    fn flags_from_the_environment_apply_in_jvm_order() {
        let env = |pairs: &[(&str, &str)]| -> Vec<u8> {
            pairs
                .iter()
                .flat_map(|(k, v)| format!("{k}={v}\0").into_bytes())
                .collect()
        };
        let f = |cmd: Option<&str>, e: &[u8]| {
            bool_flag_with_env(cmd, Some(e), "DisableAttachMechanism")
        };
        let tool = env(&[
            ("PATH", "/bin"),
            ("JAVA_TOOL_OPTIONS", "-Xmx1g -XX:+DisableAttachMechanism"),
        ]);
        assert_eq!(f(Some("java -cp x Main"), &tool), Some(true));
        assert_eq!(
            f(Some("java -XX:-DisableAttachMechanism Main"), &tool),
            Some(false),
            "the command line comes later"
        );
        let late = env(&[("_JAVA_OPTIONS", "-XX:+DisableAttachMechanism")]);
        assert_eq!(
            f(Some("java -XX:-DisableAttachMechanism Main"), &late),
            Some(true),
            "_JAVA_OPTIONS comes last"
        );
        let jdk = env(&[("JDK_JAVA_OPTIONS", "-XX:+DisableAttachMechanism")]);
        assert_eq!(f(None, &jdk), Some(true));
        assert_eq!(f(Some("java Main"), &env(&[("HOME", "/root")])), None);
        assert_eq!(
            bool_flag_with_env(Some("java Main"), None, "DisableAttachMechanism"),
            None
        );
    }
    use super::*;
    use crate::health::hsperf::{Generation, Pool, Space};

    fn space(name: &str, used: i64, cap: i64, max: i64, init: i64) -> Space {
        Space {
            name: Some(name.into()),
            used: Some(used),
            capacity: Some(cap),
            max_capacity: Some(max),
            init_capacity: Some(init),
        }
    }

    fn generation(cap: i64, max: i64, min: i64, spaces: Vec<Space>) -> Generation {
        Generation {
            name: None,
            capacity: Some(cap),
            max_capacity: Some(max),
            min_capacity: Some(min),
            spaces,
        }
    }

    /// Values read from real JDK 17 JVMs (-Xmx64m) next to their MXBean output.
    #[test]
    fn heap_rules_match_the_mxbean() {
        let serial = PerfSnapshot {
            gc_policy: Some("Copy:MSC".into()),
            generations: vec![
                generation(
                    22347776,
                    22347776,
                    22347776,
                    vec![
                        space("eden", 1431928, 17891328, 17891328, 0),
                        space("s0", 0, 2228224, 2228224, 0),
                        space("s1", 0, 2228224, 2228224, 0),
                    ],
                ),
                generation(
                    44761088,
                    44761088,
                    44761088,
                    vec![space("old", 459584, 44761088, 44761088, 44761088)],
                ),
            ],
            ..Default::default()
        };
        let parallel = PerfSnapshot {
            gc_policy: Some("ParScav:MSC".into()),
            generations: vec![
                generation(
                    22020096,
                    22020096,
                    1572864,
                    vec![
                        space("eden", 1, 16777216, 20971520, 0),
                        space("s0", 0, 2621440, 7340032, 0),
                        space("s1", 0, 2621440, 7340032, 0),
                    ],
                ),
                generation(
                    45088768,
                    45088768,
                    6815744,
                    vec![space("old", 2, 45088768, 45088768, 45088768)],
                ),
            ],
            ..Default::default()
        };
        let g1 = PerfSnapshot {
            gc_policy: Some("GarbageFirst".into()),
            generations: vec![
                generation(
                    3145752,
                    67108888,
                    24,
                    vec![
                        space("eden", 1048576, 3145736, 67108872, 7340040),
                        space("s0", 0, 8, 8, 8),
                        space("s1", 0, 8, 67108872, 8),
                    ],
                ),
                generation(
                    7340040,
                    67108872,
                    8,
                    vec![space("space", 13264, 7340040, 67108872, 59768840)],
                ),
            ],
            ..Default::default()
        };
        let table = [
            (
                &serial,
                Heap {
                    used: 1891512,
                    committed: 64880640,
                    max: 64880640,
                    init: Some(67108864),
                },
            ),
            (
                &parallel,
                Heap {
                    used: 3,
                    committed: 64487424,
                    max: 64487424,
                    init: None,
                },
            ),
            (
                &g1,
                Heap {
                    used: 1061840,
                    committed: 10485760,
                    max: 67108864,
                    init: Some(67108864),
                },
            ),
        ];
        for (snap, want) in table {
            assert_eq!(heap_from_perf(snap), Some(want), "{:?}", snap.gc_policy);
        }
        assert_eq!(heap_from_perf(&PerfSnapshot::default()), None);
    }

    #[test]
    fn sizes_and_flags() {
        for (s, want) in [
            ("64m", Some(64 << 20)),
            ("100001k", Some(102401024)),
            ("1G", Some(1 << 30)),
            ("123", Some(123)),
            ("", None),
            ("m", None),
            ("x1m", None),
            ("99999999999t", None),
        ] {
            assert_eq!(parse_size(s), want, "{s:?}");
        }
        let args = "-Xms16m -XX:MaxMetaspaceSize=32m -Xmx64m -XX:MaxMetaspaceSize=64m -XX:-TieredCompilation";
        assert_eq!(size_flag(args, "MaxMetaspaceSize"), Some(64 << 20));
        assert_eq!(size_flag(args, "ReservedCodeCacheSize"), None);
        assert_eq!(bool_flag(args, "TieredCompilation"), Some(false));
        assert_eq!(bool_flag(args, "UsePerfData"), None);
        assert_eq!(initial_heap_from_args(args), Some(16 << 20));
        assert_eq!(max_metaspace_from_flag(None), -1);
        assert_eq!(max_metaspace_from_flag(Some(UNLIMITED_FLAG)), -1);
        assert_eq!(max_metaspace_from_flag(Some(67108864)), 67108864);
    }

    fn live(used: i64, gc_count: Option<i64>) -> LiveMetaspace {
        LiveMetaspace {
            used,
            committed: used * 2,
            class_used: 1,
            class_committed: 2,
            heap_used: None,
            heap_committed: None,
            gc_count,
        }
    }

    #[test]
    fn metaspace_source_selection() {
        let perf = |used, cap, gcs| PerfSnapshot {
            metaspace: Pool {
                used: Some(used),
                capacity: Some(cap),
                max_capacity: Some(1 << 30),
            },
            collectors: vec![crate::health::hsperf::Collector {
                invocations: Some(gcs),
                ..Default::default()
            }],
            ..Default::default()
        };
        let before_gc = perf(0, 0, 0);
        let after_gc = perf(100, 200, 3);
        type Row<'a> = (Option<&'a PerfSnapshot>, Option<LiveMetaspace>, (i64, i64));
        let table: [Row<'_>; 7] = [
            (None, None, (-1, -1)),
            (Some(&before_gc), None, (-1, -1)),
            (Some(&after_gc), None, (100, 200)),
            (Some(&before_gc), Some(live(50, Some(0))), (50, 100)),
            // A GC after the attach sample makes the counters newer.
            (Some(&after_gc), Some(live(50, Some(2))), (100, 200)),
            (Some(&after_gc), Some(live(50, Some(3))), (50, 100)),
            (None, Some(live(7, None)), (7, 14)),
        ];
        for (i, (p, l, want)) in table.iter().enumerate() {
            let (u, c, source) = metaspace(*p, l.as_ref());
            assert_eq!((u, c), *want, "row {i}");
            let expected_source = match (want.0, l) {
                (-1, _) => MetaspaceSource::Unknown,
                (v, Some(l)) if v == l.used => MetaspaceSource::Attach,
                _ => MetaspaceSource::LastGc,
            };
            assert_eq!(source, expected_source, "row {i}");
        }
    }

    #[test]
    fn jvm_info_from_perf_only() {
        let buf = crate::health::hsperf::tests::sample();
        let snap = crate::health::hsperf::parse(&buf).unwrap();
        let proc = ProcFacts::default();
        let info = jvm_info(&Inputs {
            perf: Some(&snap),
            attach: None,
            proc: &proc,
            now_ms: 0,
        });
        assert_eq!(info.java_version.as_deref(), Some("17.0.15"));
        assert_eq!(info.loaded_class_count, Some(697));
        assert_eq!(info.unload_class_count, Some(3));
        assert_eq!(info.total_class_count, Some(700));
        assert_eq!(info.used_metaspace, Some(1000));
        assert_eq!(info.committed_metaspace, Some(4096));
        assert_eq!(info.max_metaspace, Some(64 << 20));
        assert_eq!(info.run_time_s, Some(2.5));
        // No class-space counters, no code cache: non-heap is metaspace alone; the max adds the
        // default code cache because the metaspace is bounded.
        assert_eq!(info.used_non_heap_mib, Some(bytes_to_mib(1000)));
        assert_eq!(
            info.max_non_heap_mib,
            Some(bytes_to_mib((64 << 20) + DEFAULT_CODE_CACHE_TIERED))
        );
    }

    #[test]
    fn attach_flags_override_arguments() {
        let proc = ProcFacts {
            cmdline: Some("java -XX:MaxMetaspaceSize=32m Main".into()),
            ..Default::default()
        };
        let mut attach = AttachData {
            flags: Some(Default::default()),
            ..Default::default()
        };
        let inp = |a: Option<&AttachData>| {
            max_metaspace(&Inputs {
                perf: None,
                attach: a,
                proc: &proc,
                now_ms: 0,
            })
        };
        assert_eq!(inp(None), 32 << 20);
        // Flags known and MaxMetaspaceSize at its default: unlimited, whatever the cmdline says.
        assert_eq!(inp(Some(&attach)), -1);
        attach
            .flags
            .as_mut()
            .unwrap()
            .insert("MaxMetaspaceSize".into(), "67108864".into());
        assert_eq!(inp(Some(&attach)), 64 << 20);
    }

    #[test]
    fn degraded_report_without_perf() {
        let proc = ProcFacts {
            java_version: Some("17.0.15".into()),
            java_home: Some("/jdk".into()),
            uptime_s: Some(3.0),
            cmdline: Some("java -XX:-UsePerfData Main".into()),
        };
        let info = jvm_info(&Inputs {
            perf: None,
            attach: None,
            proc: &proc,
            now_ms: 0,
        });
        assert_eq!(info.java_home.as_deref(), Some("/jdk"));
        assert_eq!(info.run_time_s, Some(3.0));
        assert_eq!(
            (
                info.used_metaspace,
                info.committed_metaspace,
                info.max_metaspace
            ),
            (Some(-1), Some(-1), Some(-1))
        );
        assert_eq!(info.used_heap_mib, None);
        assert_eq!(info.loaded_class_count, None);
        let mut l = live(10, None);
        l.heap_used = Some(1 << 20);
        l.heap_committed = Some(4 << 20);
        let attach = AttachData {
            live: Some(l),
            ..Default::default()
        };
        let info = jvm_info(&Inputs {
            perf: None,
            attach: Some(&attach),
            proc: &proc,
            now_ms: 0,
        });
        assert_eq!(info.used_metaspace, Some(10));
        assert_eq!(info.used_heap_mib, Some(1.0));
        assert_eq!(info.free_memory_mib, Some(3.0));
    }
}
