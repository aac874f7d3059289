//! CPU indicator: logical count (container-aware), usage percentages over the last sampling
//! window from `/proc/stat`, processor model.
//!
//! Meaning of the keys we emit (upstream OSHI semantics in brackets):
//! - `user used (%)`, `system used (%)`, `free (%)`: share of the user, system and idle ticks
//!   among all ticks during the last window [upstream: averages since Arklet start].
//! - `total used (%)`: busy share during the last window, `100 × (all − idle − iowait) / all`,
//!   a real percentage in 0..=100 [upstream: a cumulative tick count since start that grows
//!   without bound]. Same key and JSON type (float), so every decoder still accepts it.
//! - `count`: logical CPUs the base JVM may use: its CPU affinity capped by its container's
//!   CFS quota (rounded up), like the JVM's own `availableProcessors()` [upstream: all CPUs of
//!   the node].
//!
//! `/proc/stat` is the node's even inside a container (unless LXCFS is used), so the
//! percentages describe the node, like upstream.

use std::path::{Path, PathBuf};

use koupleless_protocol::health::CpuInfo;

/// Cumulative tick counters of the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// user (guest time included by the kernel).
    pub user: u64,
    /// nice.
    pub nice: u64,
    /// system.
    pub system: u64,
    /// idle.
    pub idle: u64,
    /// iowait.
    pub iowait: u64,
    /// irq.
    pub irq: u64,
    /// softirq.
    pub softirq: u64,
    /// steal.
    pub steal: u64,
}

impl CpuTicks {
    /// Sum of all tick types (the same eight OSHI sums).
    pub fn total(&self) -> u64 {
        self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
    }
}

/// Parses the aggregate `cpu` line of `/proc/stat`.
pub fn parse_proc_stat(text: &str) -> Option<CpuTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let mut v = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse::<u64>().ok());
    let mut next = || v.next().flatten();
    let (user, nice, system, idle) = (next()?, next()?, next()?, next()?);
    // Fields after idle appeared in later kernels; absent ones count as 0.
    let mut rest = [0u64; 4];
    for r in &mut rest {
        *r = next().unwrap_or(0);
    }
    let [iowait, irq, softirq, steal] = rest;
    Some(CpuTicks {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// Usage percentages over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUsage {
    /// Busy share (everything but idle and iowait).
    pub total: f64,
    /// User share.
    pub user: f64,
    /// System share.
    pub system: f64,
    /// Idle share.
    pub idle: f64,
}

/// Percentages between two readings; all 0 when no tick elapsed or the counters went back.
pub fn usage(prev: &CpuTicks, cur: &CpuTicks) -> CpuUsage {
    let d = |a: u64, b: u64| b.saturating_sub(a) as f64;
    let total = cur.total() as f64 - prev.total() as f64;
    if total <= 0.0 {
        return CpuUsage {
            total: 0.0,
            user: 0.0,
            system: 0.0,
            idle: 0.0,
        };
    }
    let idle = d(prev.idle, cur.idle);
    let iowait = d(prev.iowait, cur.iowait);
    let pct = |x: f64| (100.0 * x / total).clamp(0.0, 100.0);
    CpuUsage {
        total: pct(total - idle - iowait),
        user: pct(d(prev.user, cur.user)),
        system: pct(d(prev.system, cur.system)),
        idle: pct(idle),
    }
}

/// Counts the CPUs in a list such as `0-3,8,10-11` (`Cpus_allowed_list`, `cpuset.cpus`).
pub fn count_cpu_list(list: &str) -> Option<usize> {
    let mut n = 0usize;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (
                    a.trim().parse::<usize>().ok()?,
                    b.trim().parse::<usize>().ok()?,
                );
                b.checked_sub(a)? + 1
            }
            None => {
                part.trim().parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// CPU quota in CPUs from cgroup v2 `cpu.max` (`"50000 100000"`); None when unlimited or
/// unparsable.
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut it = text.split_whitespace();
    let (quota, period) = (it.next()?, it.next().unwrap_or("100000"));
    if quota == "max" {
        return None;
    }
    quota_cpus(quota.parse().ok()?, period.parse().ok()?)
}

/// CPU quota in CPUs from cgroup v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us` (-1 = none).
pub fn quota_cpus(quota_us: i64, period_us: i64) -> Option<f64> {
    (quota_us > 0 && period_us > 0).then(|| quota_us as f64 / period_us as f64)
}

/// Logical CPUs available under `quota`: the online/affinity count capped by the quota rounded
/// up, at least 1 (what HotSpot's container support computes).
pub fn effective_count(cpus: usize, quota: Option<f64>) -> usize {
    let cpus = cpus.max(1);
    match quota {
        Some(q) if q > 0.0 => cpus.min(q.ceil() as usize).max(1),
        _ => cpus,
    }
}

/// One line of `/proc/<pid>/cgroup`: `id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// Comma-separated v1 controllers; empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    /// Path below the hierarchy root (relative to the cgroup namespace root).
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_id, ctl, path) = (it.next()?, it.next()?, it.next()?);
            Some(CgroupLine {
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

fn join_cgroup(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

/// The CPU quota (in CPUs) of the cgroup described by `proc_cgroup`, reading files under
/// `root` (`/proc/<pid>/root` for another container, `/` for our own).
///
/// Tries the process's own cgroup directory below the mount first (no cgroup namespace), then
/// the mount root (a cgroup namespace makes the container's cgroup the root), for v2 and v1.
pub fn read_quota(root: &Path, proc_cgroup: &str) -> Option<f64> {
    let lines = parse_proc_cgroup(proc_cgroup);
    let fs = root.join("sys/fs/cgroup");
    for line in lines.iter().filter(|l| l.controllers.is_empty()) {
        for base in [fs.clone(), fs.join("unified")] {
            for dir in [join_cgroup(&base, &line.path), base.clone()] {
                if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
                    return parse_cpu_max(&text);
                }
            }
        }
    }
    for line in lines
        .iter()
        .filter(|l| l.controllers.iter().any(|c| c == "cpu"))
    {
        for mount in ["cpu,cpuacct", "cpuacct,cpu", "cpu"] {
            let base = fs.join(mount);
            for dir in [join_cgroup(&base, &line.path), base.clone()] {
                let read = |f: &str| {
                    std::fs::read_to_string(dir.join(f))
                        .ok()?
                        .trim()
                        .parse::<i64>()
                        .ok()
                };
                if let (Some(q), Some(p)) = (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")) {
                    return quota_cpus(q, p);
                }
            }
        }
    }
    None
}

/// Logical CPUs for the base: the JVM's affinity capped by its container's quota, or the
/// agent's own `available_parallelism()` when no JVM is known or its files are unreadable.
pub fn cpu_count(jvm_pid: Option<u32>) -> usize {
    let own = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Some(pid) = jvm_pid else { return own };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let affinity = std::fs::read_to_string(proc.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .and_then(count_cpu_list)
        });
    let Some(affinity) = affinity else { return own };
    let quota = std::fs::read_to_string(proc.join("cgroup"))
        .ok()
        .and_then(|c| read_quota(&proc.join("root"), &c));
    effective_count(affinity, quota)
}

/// The processor model name, via sysinfo (read once; it does not change).
pub fn processor_brand() -> Option<String> {
    use sysinfo::{CpuRefreshKind, RefreshKind, System};
    let sys =
        System::new_with_specifics(RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing()))
            .ok()?;
    let brand = sys.cpus().first()?.brand().trim().to_owned();
    (!brand.is_empty()).then_some(brand)
}

/// Builds the `cpu` indicator.
pub fn cpu_info(count: usize, brand: Option<&str>, usage: Option<CpuUsage>) -> CpuInfo {
    CpuInfo {
        count: Some(count as i64),
        kind: brand.map(str::to_owned),
        total_used: usage.map(|u| u.total),
        user_used: usage.map(|u| u.user),
        system_used: usage.map(|u| u.system),
        free: usage.map(|u| u.idle),
    }
}

/// Reads `/proc/stat`.
pub fn read_ticks() -> Option<CpuTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_and_usage() {
        let a = parse_proc_stat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n").unwrap();
        let b = parse_proc_stat("cpu  200 0 100 1400 100 0 0 0 0 0\n").unwrap();
        assert_eq!(a.total(), 1000);
        let u = usage(&a, &b);
        // Δ: user 100, system 50, idle 600, iowait 50, total 800.
        assert_eq!(u.user, 12.5);
        assert_eq!(u.system, 6.25);
        assert_eq!(u.idle, 75.0);
        assert_eq!(u.total, 18.75);
        // Old kernels print only four fields.
        assert_eq!(parse_proc_stat("cpu 1 2 3 4\n").unwrap().total(), 10);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
        assert_eq!(parse_proc_stat("intr 1 2 3 4\n"), None);
        // No time elapsed, or counters reset.
        assert_eq!(usage(&b, &b).total, 0.0);
        assert_eq!(usage(&b, &a).user, 0.0);
        // From zero: averages since boot, used for the very first window.
        let since_boot = usage(&CpuTicks::default(), &a);
        assert_eq!(since_boot.idle, 80.0);
    }

    #[test]
    fn counts_and_quotas() {
        for (list, want) in [
            ("0-3", Some(4)),
            ("0-3,8,10-11", Some(7)),
            ("0", Some(1)),
            ("", None),
            ("3-1", None),
            ("x", None),
        ] {
            assert_eq!(count_cpu_list(list), want, "{list:?}");
        }
        for (text, want) in [
            ("max 100000\n", None),
            ("50000 100000\n", Some(0.5)),
            ("250000 100000", Some(2.5)),
            ("", None),
            ("x 1", None),
        ] {
            assert_eq!(parse_cpu_max(text), want, "{text:?}");
        }
        assert_eq!(quota_cpus(-1, 100000), None);
        assert_eq!(quota_cpus(150000, 100000), Some(1.5));
        for (cpus, quota, want) in [
            (8, None, 8),
            (8, Some(0.5), 1),
            (8, Some(2.5), 3),
            (2, Some(16.0), 2),
            (0, None, 1),
        ] {
            assert_eq!(effective_count(cpus, quota), want);
        }
    }

    #[test]
    fn cgroup_v2_fixture() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("sys/fs/cgroup/kubepods/pod1/c1");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cpu.max"), "150000 100000\n").unwrap();
        assert_eq!(read_quota(root.path(), "0::/kubepods/pod1/c1\n"), Some(1.5));
        std::fs::write(cg.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(read_quota(root.path(), "0::/kubepods/pod1/c1\n"), None);
        // With a cgroup namespace the path is `/` and the files sit at the mount root.
        let ns = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(ns.path().join("sys/fs/cgroup")).unwrap();
        std::fs::write(ns.path().join("sys/fs/cgroup/cpu.max"), "50000 100000\n").unwrap();
        assert_eq!(read_quota(ns.path(), "0::/\n"), Some(0.5));
    }

    #[test]
    fn cgroup_v1_fixture() {
        let root = tempfile::tempdir().unwrap();
        let cg = root.path().join("sys/fs/cgroup/cpu,cpuacct/docker/abc");
        std::fs::create_dir_all(&cg).unwrap();
        std::fs::write(cg.join("cpu.cfs_quota_us"), "200000\n").unwrap();
        std::fs::write(cg.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let proc_cgroup = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n0::/docker/abc\n";
        assert_eq!(read_quota(root.path(), proc_cgroup), Some(2.0));
        std::fs::write(cg.join("cpu.cfs_quota_us"), "-1\n").unwrap();
        assert_eq!(read_quota(root.path(), proc_cgroup), None);
        assert_eq!(read_quota(root.path(), "garbage"), None);
    }

    #[test]
    fn info_shape() {
        let i = cpu_info(
            2,
            Some("AMD EPYC"),
            Some(CpuUsage {
                total: 1.0,
                user: 0.5,
                system: 0.5,
                idle: 99.0,
            }),
        );
        assert_eq!(i.count, Some(2));
        assert_eq!(i.free, Some(99.0));
        let bare = cpu_info(2, None, None);
        assert_eq!((bare.kind, bare.total_used), (None, None));
    }
}
