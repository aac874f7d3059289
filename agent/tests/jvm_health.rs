//! The health sampler against real JVMs started by the tests (Java 17 with `javac` and
//! `jstat`). The fixture program is compiled at test time into a temporary directory.
//!
//! When no JDK is installed a plain `cargo test` prints `SKIPPED …` for each test and returns;
//! under `scripts/test` (`KOUPLELESS_REQUIRE_TOOLS=1`) they fail instead
//! (`missing_jdk_fails_when_tools_are_required` checks that).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use koupleless_agent::health::{
    BaseHealth, HealthConfig, HealthSampler, JvmExit, MetaspaceSource, hsperf,
};
use koupleless_protocol::health::JvmInfo;
use koupleless_protocol::state::BizState;
use koupleless_protocol::transport::{Transport, encode};
use proptest::prelude::*;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

const FIXTURE: &str = r#"
import java.lang.management.*;
import java.lang.reflect.Proxy;
import java.io.*;
import java.net.*;
import java.util.*;

public class Fixture {
    static final List<Object> keep = new ArrayList<>();

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("READY " + ProcessHandle.current().pid());
        String line;
        while ((line = in.readLine()) != null) {
            String[] p = line.trim().split(" ");
            switch (p[0]) {
                case "load":
                    for (int i = 0; i < Integer.parseInt(p[1]); i++) {
                        ClassLoader cl = new URLClassLoader(new URL[0], null);
                        keep.add(Proxy.newProxyInstance(cl, new Class<?>[] {Runnable.class}, (o, m, a) -> null));
                    }
                    break;
                case "gc":
                    System.gc();
                    break;
                case "unload":
                    keep.subList(0, keep.size() / 2).clear();
                    System.gc();
                    break;
                case "mx": {
                    MemoryUsage h = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage();
                    long metaMax = -2;
                    for (MemoryPoolMXBean b : ManagementFactory.getMemoryPoolMXBeans())
                        if (b.getName().equals("Metaspace")) metaMax = b.getUsage().getMax();
                    System.out.println("MX " + h.getCommitted() + " " + h.getMax() + " " + metaMax + " "
                        + System.getProperty("java.home") + " " + System.getProperty("java.version"));
                    break;
                }
                case "exit":
                    System.exit(0);
            }
            System.out.println("OK " + p[0]);
        }
    }
}
"#;

/// The compiled fixture's class directory, or why there is none (no JDK).
fn fixture_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Fixture.java"), FIXTURE).unwrap();
        match Command::new("javac")
            .arg("-d")
            .arg(dir.path())
            .arg(dir.path().join("Fixture.java"))
            .status()
        {
            Ok(s) if s.success() => Ok(dir),
            Ok(s) => panic!("javac failed: {s}"),
            Err(e) => Err(format!(
                "no JDK (javac: {e}); install openjdk-17-jdk-headless"
            )),
        }
    })
    .as_ref()
    .map(|d| d.path())
    .map_err(Clone::clone)
}

/// A running fixture JVM; killed when dropped.
struct Jvm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    pid: u32,
    token: String,
    started: Instant,
    output: Vec<String>,
}

impl Jvm {
    /// Starts the fixture; `None` when there is no JDK and the test may skip (a plain
    /// `cargo test`). Under `scripts/test` (`KOUPLELESS_REQUIRE_TOOLS=1`) a missing JDK fails.
    fn start(opts: &[&str], token: &str, env: &[(&str, &str)]) -> Option<Jvm> {
        let dir = match fixture_dir() {
            Ok(d) => d,
            Err(reason) => {
                koupleless_testkit::skip_or_fail(&format!("JVM test {token}"), &reason);
                return None;
            }
        };
        let started = Instant::now();
        let mut cmd = Command::new("java");
        cmd.args(opts).arg("-cp").arg(dir).arg("Fixture").arg(token);
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn java");
        let stdin = child.stdin.take().unwrap();
        let (tx, rx) = channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut jvm = Jvm {
            child,
            stdin,
            lines: rx,
            pid: 0,
            token: token.to_owned(),
            started,
            output: Vec::new(),
        };
        let ready = jvm.expect("READY ");
        jvm.pid = ready.parse().unwrap();
        Some(jvm)
    }

    /// Waits (bounded) for an output line starting with `prefix`; returns the rest.
    fn expect(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.output.push(l.clone());
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {prefix:?} line within 20 s; output: {:?}", self.output)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("JVM ended before {prefix:?}; output: {:?}", self.output)
                }
            }
        }
    }

    fn cmd(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").unwrap();
        self.stdin.flush().unwrap();
        let verb = c.split(' ').next().unwrap();
        let mut extra = String::new();
        if verb == "mx" {
            extra = self.expect("MX ");
        }
        self.expect(&format!("OK {verb}"));
        extra
    }

    /// Everything the JVM printed so far (drains pending lines).
    fn drain_output(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.output.push(l);
        }
        self.output.clone()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn sampler(&self, attach: bool) -> HealthSampler {
        HealthSampler::new(HealthConfig {
            main_class_pattern: Some(format!("^Fixture {}$", regex_escape(&self.token))),
            attach,
            attach_min_interval: Duration::ZERO,
            sample_interval: Duration::from_millis(100),
            base_name: "base".into(),
            base_version: "9.9.9".into(),
            ..HealthConfig::default()
        })
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        self.kill();
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn token(name: &str) -> String {
    format!(
        "{name}-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ rand_nanos()
    )
}

fn rand_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Polls `f` every 20 ms until it returns Some, for at most `secs` seconds.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `jstat -<opt> <pid>` as column → value.
fn jstat(opt: &str, pid: u32) -> BTreeMap<String, f64> {
    let out = Command::new("jstat")
        .arg(format!("-{opt}"))
        .arg(pid.to_string())
        .output()
        .expect("run jstat");
    assert!(
        out.status.success(),
        "jstat failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let vals: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    head.iter()
        .zip(vals)
        .filter_map(|(h, v)| Some((h.to_string(), v.parse::<f64>().ok()?)))
        .collect()
}

fn kib(mib: Option<f64>) -> f64 {
    mib.unwrap() * 1024.0
}

fn bytes_kib(b: Option<i64>) -> f64 {
    b.unwrap() as f64 / 1024.0
}

/// jstat prints KiB with one decimal; `n` fields summed may be off by n × 0.05.
fn assert_kib(what: &str, ours: f64, jstat: f64, fields: u32) {
    let tol = 0.05 * f64::from(fields) + 1e-6;
    assert!(
        (ours - jstat).abs() <= tol,
        "{what}: ours {ours} KiB, jstat {jstat} KiB"
    );
}

/// Samples jstat, the agent, jstat again, until both jstat readings agree (the JVM is idle, so
/// this converges at once unless a background thread allocated in between).
fn sample_with_jstat(
    s: &HealthSampler,
    pid: u32,
) -> (BaseHealth, BTreeMap<String, f64>, BTreeMap<String, f64>) {
    for _ in 0..5 {
        let (gc1, cl1) = (jstat("gc", pid), jstat("class", pid));
        let h = s.sample_now();
        let (gc2, cl2) = (jstat("gc", pid), jstat("class", pid));
        if gc1 == gc2 && cl1 == cl2 {
            return (h, gc1, cl1);
        }
    }
    panic!("the fixture JVM never stood still between two jstat calls");
}

struct Mx {
    heap_committed: i64,
    heap_max: i64,
    meta_max: i64,
    java_home: String,
    java_version: String,
}

fn parse_mx(line: &str) -> Mx {
    let f: Vec<&str> = line.split(' ').collect();
    Mx {
        heap_committed: f[0].parse().unwrap(),
        heap_max: f[1].parse().unwrap(),
        meta_max: f[2].parse().unwrap(),
        java_home: f[3].to_owned(),
        java_version: f[4].to_owned(),
    }
}

fn check_against_jstat(
    opts: &[&str],
    name: &str,
    survivors_in_committed: &[&str],
    expected_meta_max: i64,
) {
    let Some(mut jvm) = Jvm::start(opts, &token(name), &[]) else {
        return;
    };
    jvm.cmd("load 300");
    jvm.cmd("mx"); // loads the management classes before the measurement
    jvm.cmd("gc");
    let mx = parse_mx(&jvm.cmd("mx"));
    let s = jvm.sampler(false);
    let (h, gc, cl) = sample_with_jstat(&s, jvm.pid);
    assert_eq!(h.problem, None);
    assert!(h.jvm_alive && h.healthy);
    assert_eq!(h.pid, Some(jvm.pid));
    assert_eq!(h.metaspace_source, MetaspaceSource::LastGc);
    let gcs = gc["YGC"] + gc["FGC"] + gc.get("CGC").copied().unwrap_or(0.0);
    assert_eq!(h.gc_count, Some(gcs as i64));
    let j = h.jvm.as_ref().unwrap();

    // Heap: used is every space; committed leaves out the `to` survivor for Serial/Parallel.
    let used = ["S0U", "S1U", "EU", "OU"]
        .iter()
        .map(|k| gc[*k])
        .sum::<f64>();
    assert_kib("heap used", kib(j.used_heap_mib), used, 4);
    let cols: Vec<&str> = ["EC", "OC"]
        .iter()
        .chain(survivors_in_committed)
        .copied()
        .collect();
    let committed = cols.iter().map(|k| gc[*k]).sum::<f64>();
    assert_kib(
        "heap committed",
        kib(j.committed_heap_mib),
        committed,
        cols.len() as u32 + 1,
    );
    assert_eq!(
        j.committed_heap_mib,
        Some(mx.heap_committed as f64 / 1048576.0),
        "committed vs MXBean"
    );
    assert_eq!(
        j.max_heap_mib,
        Some(mx.heap_max as f64 / 1048576.0),
        "max vs MXBean"
    );
    assert_eq!(j.total_memory_mib, j.committed_heap_mib);
    assert_eq!(j.max_memory_mib, j.max_heap_mib);

    // Metaspace as of the fixture's own System.gc(), same counters as jstat.
    assert_kib("metaspace used", bytes_kib(j.used_metaspace), gc["MU"], 1);
    assert_kib(
        "metaspace committed",
        bytes_kib(j.committed_metaspace),
        gc["MC"],
        1,
    );
    assert!(j.used_metaspace.unwrap() > 0);
    assert_eq!(j.max_metaspace, Some(expected_meta_max));
    assert_eq!(
        j.max_metaspace,
        Some(mx.meta_max),
        "metaspace max vs MXBean"
    );

    // Classes, exactly.
    assert_eq!(j.total_class_count, Some(cl["Loaded"] as i64));
    assert_eq!(j.unload_class_count, Some(cl["Unloaded"] as i64));
    assert_eq!(
        j.loaded_class_count,
        Some(cl["Loaded"] as i64 - cl["Unloaded"] as i64)
    );
    assert!(j.total_class_count.unwrap() >= 300 + 400);

    assert_eq!(j.java_home.as_deref(), Some(mx.java_home.as_str()));
    assert_eq!(j.java_version.as_deref(), Some(mx.java_version.as_str()));
    let run = j.run_time_s.unwrap();
    assert!(
        run > 0.0 && run <= jvm.started.elapsed().as_secs_f64() + 0.5,
        "run time {run}"
    );
    assert_eq!(s.master_biz().biz_state, BizState::Activated);
    assert_eq!(s.master_biz().biz_version, "9.9.9");
}

#[test]
fn serial_with_max_metaspace_agrees_with_jstat() {
    check_against_jstat(
        &["-Xmx64m", "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=64m"],
        "serial",
        &["S0C"],
        64 << 20,
    );
}

#[test]
fn g1_without_max_metaspace_agrees_with_jstat() {
    check_against_jstat(&["-Xmx64m", "-XX:+UseG1GC"], "g1", &["S0C", "S1C"], -1);
}

#[test]
fn parallel_agrees_with_jstat() {
    check_against_jstat(&["-Xmx64m", "-XX:+UseParallelGC"], "parallel", &["S0C"], -1);
}

#[test]
fn class_unloading_is_counted() {
    let Some(mut jvm) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &token("unload"), &[]) else {
        return;
    };
    jvm.cmd("load 400");
    jvm.cmd("unload");
    let h = jvm.sampler(false).sample_now();
    let j = h.jvm.unwrap();
    assert!(
        j.unload_class_count.unwrap() >= 200,
        "{:?}",
        j.unload_class_count
    );
    assert_eq!(
        j.loaded_class_count.unwrap() + j.unload_class_count.unwrap(),
        j.total_class_count.unwrap()
    );
}

#[test]
fn attach_gives_live_metaspace_and_flags() {
    // MaxMetaspaceSize from the environment, a GC never requested: hsperfdata has no metaspace
    // yet, attach has it live.
    let Some(mut jvm) = Jvm::start(
        &["-Xmx64m", "-XX:+UseSerialGC"],
        &token("attach"),
        &[("JAVA_TOOL_OPTIONS", "-XX:MaxMetaspaceSize=48m")],
    ) else {
        return;
    };
    jvm.cmd("load 50");
    let s = jvm.sampler(true);
    let h = s.sample_now();
    assert_eq!(h.problem, None);
    assert_eq!(h.metaspace_source, MetaspaceSource::Attach);
    let j = h.jvm.unwrap();
    assert_eq!(j.max_metaspace, Some(48 << 20));
    let used = j.used_metaspace.unwrap();
    assert!(used > 500 * 1024, "live metaspace {used}");
    assert!(j.committed_metaspace.unwrap() >= used);
    // Code cache joined the non-heap numbers; its reserved size joined the max.
    assert!(kib(j.used_non_heap_mib) * 1024.0 > used as f64);
    assert!(j.max_non_heap_mib.unwrap() > 48.0);
    assert!(j.init_non_heap_mib.unwrap() > 0.0);
    assert!(
        Path::new(&format!("/tmp/.java_pid{}", jvm.pid)).exists(),
        "attach socket"
    );
    // A second round reuses the socket.
    let again = s.sample_now().jvm.unwrap();
    assert!(again.used_metaspace.unwrap() > 0);
    // The attach safety rules held: no thread dump in the JVM's output, JVM still alive.
    jvm.cmd("gc");
    assert!(
        !jvm.drain_output()
            .iter()
            .any(|l| l.contains("Full thread dump"))
    );
}

#[test]
fn attach_disabled_falls_back_without_signalling() {
    let Some(mut jvm) = Jvm::start(
        &["-Xmx64m", "-XX:+UseSerialGC", "-XX:+DisableAttachMechanism"],
        &token("noattach"),
        &[],
    ) else {
        return;
    };
    jvm.cmd("gc");
    let s = jvm.sampler(true);
    let h = s.sample_now();
    assert_eq!(
        h.problem, None,
        "attach being off is logged, not a health problem"
    );
    assert!(
        h.jvm.unwrap().used_metaspace.unwrap() > 0,
        "hsperfdata fallback"
    );
    s.sample_now();
    jvm.cmd("gc");
    assert!(
        !jvm.drain_output()
            .iter()
            .any(|l| l.contains("Full thread dump")),
        "SIGQUIT was sent"
    );
    assert!(!Path::new(&format!("/tmp/.java_pid{}", jvm.pid)).exists());
}

#[test]
fn perf_data_disabled_is_a_clear_degraded_report() {
    let Some(mut jvm) = Jvm::start(
        &["-Xmx64m", "-XX:+UseSerialGC", "-XX:-UsePerfData"],
        &token("noperf"),
        &[],
    ) else {
        return;
    };
    jvm.cmd("load 20");
    jvm.cmd("mx");
    // Without perf data the command comes from /proc/<pid>/cmdline.
    let s = jvm.sampler(false);
    let h = s.sample_now();
    assert!(h.jvm_alive && h.healthy);
    assert_eq!(
        h.problem.as_deref(),
        Some("hsperfdata disabled (-XX:-UsePerfData)")
    );
    assert_eq!(
        (h.metaspace_source, h.gc_count),
        (MetaspaceSource::Unknown, None)
    );
    let j = h.jvm.unwrap();
    assert!(
        j.java_version.as_deref().unwrap().starts_with("17"),
        "{:?}",
        j.java_version
    );
    assert!(
        Path::new(j.java_home.as_deref().unwrap())
            .join("bin/java")
            .exists()
    );
    assert!(j.run_time_s.unwrap() >= 0.0);
    assert_eq!(j.used_metaspace, Some(-1));
    assert_eq!(j.loaded_class_count, None);
    assert_eq!(s.master_biz().biz_state, BizState::Activated);
    // With attach the degraded report gains live metaspace and heap.
    let j = jvm.sampler(true).sample_now().jvm.unwrap();
    assert!(j.used_metaspace.unwrap() > 0);
    assert!(j.used_heap_mib.unwrap() > 0.0);
    assert_eq!(j.max_metaspace, Some(-1));
}

#[test]
fn restart_is_followed_and_a_dead_base_is_unhealthy() {
    let tok = token("restart");
    let Some(first) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &tok, &[]) else {
        return;
    };
    let s = first.sampler(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    let task = rt.spawn({
        let s = s.clone();
        let c = cancel.clone();
        async move { s.run(c).await }
    });
    let pid1 = first.pid;
    wait_for(10, "first JVM tracked", || {
        (s.latest().pid == Some(pid1)).then_some(())
    });
    assert_eq!(s.master_biz().biz_state, BizState::Activated);

    let mut first = first;
    first.kill(); // SIGKILL: the perf file stays behind
    let dead = wait_for(10, "death noticed", || {
        Some(s.latest()).filter(|h| !h.jvm_alive)
    });
    assert!(dead.jvm.is_none());
    assert!(
        dead.problem
            .as_deref()
            .unwrap()
            .contains(&format!("base JVM pid {pid1} ")),
        "{:?}",
        dead.problem
    );
    // SIGKILL leaves the file unlocked, but another test's JVM starting meanwhile (same user,
    // same /tmp) removes stale files; the sidecar tests tell the two apart in a private /tmp.
    assert!(
        matches!(
            dead.last_exit,
            Some(JvmExit::Killed | JvmExit::Shutdown | JvmExit::ProcessGone)
        ),
        "{:?}",
        dead.last_exit
    );
    // Down within the grace: unhealthy (`broken`), not gone.
    assert_eq!(s.master_biz().biz_state, BizState::Broken);
    assert!(dead.cpu.count.unwrap() >= 1, "CPU keeps working");

    let second = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &tok, &[]).unwrap();
    let pid2 = second.pid;
    let h = wait_for(10, "second JVM tracked", || {
        Some(s.latest()).filter(|h| h.pid == Some(pid2) && h.jvm.is_some())
    });
    assert!(h.jvm_alive);
    assert_eq!(s.master_biz().biz_state, BizState::Activated);

    cancel.cancel();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await })
        .expect("run ends on cancel")
        .unwrap();
}

#[test]
fn a_stopped_jvm_is_unhealthy() {
    let Some(jvm) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &token("stop"), &[]) else {
        return;
    };
    let s = HealthSampler::new(HealthConfig {
        pid: Some(jvm.pid),
        attach: false,
        sample_interval: Duration::from_millis(50),
        hang_threshold: Some(Duration::from_millis(600)),
        ..HealthConfig::default()
    });
    assert!(s.sample_now().healthy);
    let pid = nix::unistd::Pid::from_raw(jvm.pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let h = wait_for(10, "hang noticed", || {
        Some(s.sample_now()).filter(|h| !h.healthy)
    });
    assert!(h.jvm_alive);
    assert!(
        h.problem
            .as_deref()
            .unwrap()
            .contains("not making progress"),
        "{:?}",
        h.problem
    );
    assert_eq!(s.master_biz().biz_state, BizState::Broken);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    wait_for(10, "recovery", || {
        Some(s.sample_now()).filter(|h| h.healthy)
    });
    assert_eq!(s.master_biz().biz_state, BizState::Activated);
}

#[test]
fn configured_pid_and_a_missing_pattern_match() {
    let Some(jvm) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &token("bypid"), &[]) else {
        return;
    };
    let by_pid = HealthSampler::new(HealthConfig {
        pid: Some(jvm.pid),
        attach: false,
        ..HealthConfig::default()
    });
    assert_eq!(by_pid.sample_now().pid, Some(jvm.pid));
    let none = HealthSampler::new(HealthConfig {
        main_class_pattern: Some("^NoSuchMain-never$".into()),
        attach: false,
        ..HealthConfig::default()
    });
    let h = none.sample_now();
    assert!(h.jvm.is_none() && !h.jvm_alive);
    let p = h.problem.unwrap();
    assert!(
        p.contains("no JVM matches the pattern") && p.contains(&format!("pid {}", jvm.pid)),
        "{p}"
    );
}

/// The Go controller's types (arkctl `v1/service/ark/types.go`): Go's decoder rejects a float
/// literal in an `int` field, so the integer fields are `i64` here, the floats `f64`.
#[derive(Deserialize)]
#[allow(dead_code)]
struct GoJvm {
    #[serde(rename = "max non heap memory(M)")]
    max_non_heap: f64,
    #[serde(rename = "java version")]
    java_version: String,
    #[serde(rename = "max memory(M)")]
    max_memory: f64,
    #[serde(rename = "max heap memory(M)")]
    max_heap: f64,
    #[serde(rename = "used heap memory(M)")]
    used_heap: f64,
    #[serde(rename = "used non heap memory(M)")]
    used_non_heap: f64,
    #[serde(rename = "loaded class count")]
    loaded: i64,
    #[serde(rename = "init non heap memory(M)")]
    init_non_heap: f64,
    #[serde(rename = "total memory(M)")]
    total_memory: f64,
    #[serde(rename = "free memory(M)")]
    free_memory: f64,
    #[serde(rename = "unload class count")]
    unloaded: i64,
    #[serde(rename = "total class count")]
    total: i64,
    #[serde(rename = "committed heap memory(M)")]
    committed_heap: f64,
    #[serde(rename = "java home")]
    java_home: String,
    #[serde(rename = "init heap memory(M)")]
    init_heap: f64,
    #[serde(rename = "committed non heap memory(M)")]
    committed_non_heap: f64,
    #[serde(rename = "run time(s)")]
    run_time: f64,
    #[serde(rename = "java used metaspace")]
    used_metaspace: i64,
    #[serde(rename = "java committed metaspace")]
    committed_metaspace: i64,
    #[serde(rename = "java max metaspace")]
    max_metaspace: i64,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct GoCpu {
    count: i64,
    #[serde(rename = "total used (%)")]
    total_used: f64,
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "user used (%)")]
    user_used: f64,
    #[serde(rename = "free (%)")]
    free: f64,
    #[serde(rename = "system used (%)")]
    system_used: f64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoMaster {
    biz_name: String,
    biz_state: String,
    biz_version: String,
    web_context_path: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GoHealth {
    jvm: GoJvm,
    cpu: GoCpu,
    master_biz_info: GoMaster,
}

#[test]
fn health_json_decodes_with_the_go_controller_types() {
    let Some(mut jvm) = Jvm::start(
        &["-Xmx64m", "-XX:+UseSerialGC", "-XX:MaxMetaspaceSize=64m"],
        &token("json"),
        &[],
    ) else {
        return;
    };
    jvm.cmd("gc");
    let s = jvm.sampler(true);
    s.sample_now();
    let data = s.health_data();
    let http = String::from_utf8(encode(&data, Transport::Http)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&http).unwrap();
    // Every JvmIndicator key is present when perf data and attach both work.
    assert_eq!(value["jvm"].as_object().unwrap().len(), 20, "{http}");
    assert_eq!(value["cpu"].as_object().unwrap().len(), 6, "{http}");
    let go: GoHealth =
        serde_json::from_str(&http).unwrap_or_else(|e| panic!("Go decode: {e}\n{http}"));
    assert_eq!(go.master_biz_info.biz_state, "activated");
    assert_eq!(
        (
            go.master_biz_info.biz_name.as_str(),
            go.master_biz_info.biz_version.as_str()
        ),
        ("base", "9.9.9")
    );
    assert_eq!(go.master_biz_info.web_context_path, "/");
    // What the controller uses: capacity = max metaspace, allocatable = max − committed.
    assert_eq!(go.jvm.max_metaspace, 64 << 20);
    assert!(go.jvm.committed_metaspace > 0 && go.jvm.committed_metaspace < go.jvm.max_metaspace);
    assert!(go.cpu.count >= 1 && !go.cpu.kind.is_empty());
    let sum = go.cpu.user_used + go.cpu.system_used + go.cpu.free;
    assert!(sum <= 100.0 + 1e-6 && go.cpu.total_used <= 100.0, "{http}");
    let mqtt = String::from_utf8(encode(&data, Transport::Mqtt)).unwrap();
    let go: GoHealth = serde_json::from_str(&mqtt).unwrap();
    assert_eq!(go.master_biz_info.biz_state, "ACTIVATED");
    // The sample round-trips through the protocol types.
    let back: JvmInfo = serde_json::from_value(value["jvm"].clone()).unwrap();
    assert_eq!(Some(back), data.jvm);
}

/// The parser never panics on mutations of a real perf file.
#[test]
fn mutations_of_a_real_perf_file_never_panic() {
    let Some(mut jvm) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC"], &token("fuzz"), &[]) else {
        return;
    };
    jvm.cmd("gc");
    let path = wait_for(10, "perf file", || {
        std::fs::read_dir("/tmp")
            .ok()?
            .flatten()
            .map(|d| d.path().join(jvm.pid.to_string()))
            .find(|p| p.is_file())
    });
    let real = std::fs::read(&path).unwrap();
    let p = hsperf::prologue(&real).unwrap();
    assert_eq!((p.major, p.minor, p.entry_offset), (2, 0, 32));
    assert!(p.num_entries > 100);
    let mut it = hsperf::entries(&real).unwrap();
    assert_eq!(
        it.by_ref().filter(Result::is_ok).count(),
        p.num_entries as usize
    );
    assert_eq!(
        it.offset(),
        p.used as usize,
        "the walk ends exactly at `used`"
    );
    let snap = hsperf::parse(&real).unwrap();
    assert!(snap.java_command.unwrap().starts_with("Fixture fuzz-"));
    assert_eq!(snap.hrt_frequency, Some(1_000_000_000));

    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 1000,
        ..Default::default()
    });
    let strategy = (
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..32),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    runner
        .run(&strategy, |(edits, cut, truncate)| {
            let mut buf = real.clone();
            for (at, byte) in edits {
                let i = at.index(buf.len());
                buf[i] = byte;
            }
            if truncate {
                buf.truncate(cut.index(buf.len()));
            }
            let _ = hsperf::parse(&buf);
            Ok(())
        })
        .unwrap();
}

/// `-Xrs`: the JVM does not catch SIGQUIT (a SIGQUIT would kill it) and starts its attach
/// listener at start-up. The existing socket is used; once the socket is gone the sampler must
/// not signal.
#[test]
fn xrs_jvm_is_never_signalled() {
    let Some(mut jvm) = Jvm::start(&["-Xmx64m", "-XX:+UseSerialGC", "-Xrs"], &token("xrs"), &[])
    else {
        return;
    };
    let socket = PathBuf::from(format!("/tmp/.java_pid{}", jvm.pid));
    wait_for(10, "listener socket at start-up", || {
        socket.exists().then_some(())
    });
    jvm.cmd("load 20");
    let h = jvm.sampler(true).sample_now();
    let j = h.jvm.unwrap();
    assert!(
        j.used_metaspace.unwrap() > 0,
        "live metaspace through the pre-started listener"
    );

    std::fs::remove_file(&socket).unwrap();
    jvm.cmd("gc");
    let h = jvm.sampler(true).sample_now();
    assert!(h.jvm_alive && h.healthy, "{:?}", h.problem);
    // Still answering: not killed by a SIGQUIT.
    jvm.cmd("gc");
    assert!(jvm.child.try_wait().unwrap().is_none());
    assert!(!socket.exists(), "no listener was started");
}

/// Without a JDK the JVM tests skip loudly under a plain `cargo test`, and fail when
/// `KOUPLELESS_REQUIRE_TOOLS=1` (as `scripts/test` sets): the `-Xrs` safety test is run by
/// this test binary again, with no JDK on `PATH`.
#[test]
fn missing_jdk_fails_when_tools_are_required() {
    let empty = tempfile::tempdir().unwrap();
    let run = |required: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args(["xrs_jvm_is_never_signalled", "--exact", "--nocapture"])
            .env("PATH", empty.path())
            .env_remove("JAVA_HOME")
            .env(koupleless_testkit::REQUIRE_TOOLS_ENV, required)
            .output()
            .unwrap()
    };
    let skipped = run("0");
    let err = String::from_utf8_lossy(&skipped.stderr);
    assert!(skipped.status.success(), "{err}");
    assert!(
        err.contains("SKIPPED JVM test") && err.contains("no JDK"),
        "{err}"
    );
    let required = run("1");
    let err = String::from_utf8_lossy(&required.stderr);
    let out = String::from_utf8_lossy(&required.stdout);
    assert!(
        !required.status.success(),
        "passed without a JDK: {out}{err}"
    );
    assert!(
        out.contains("no JDK") || err.contains("no JDK"),
        "{out}{err}"
    );
}

/// A sampler for `jvm` with attach on, every sample attempting it, and a short attach timeout.
fn attaching_sampler(jvm: &Jvm) -> HealthSampler {
    HealthSampler::new(HealthConfig {
        main_class_pattern: Some(format!("^Fixture {}$", regex_escape(&jvm.token))),
        attach: true,
        attach_min_interval: Duration::ZERO,
        attach_timeout: Duration::from_secs(1),
        sample_interval: Duration::from_millis(100),
        ..HealthConfig::default()
    })
}

fn thread_dumps(jvm: &mut Jvm) -> usize {
    // A round trip after the last attempt: a dump it caused has been printed by now.
    jvm.cmd("gc");
    jvm.drain_output()
        .iter()
        .filter(|l| l.contains("Full thread dump"))
        .count()
}

/// Attach disabled through `JAVA_TOOL_OPTIONS` (not on the command line) with hsperfdata off,
/// so neither the command line nor `sun.rt.jvmCapabilities` shows it: the sampler reads the
/// option variables from `/proc/<pid>/environ` and never signals the JVM (each SIGQUIT would
/// print a thread dump into the application's log), and says why attach is off.
#[test]
fn attach_disabled_in_java_tool_options_is_never_signalled() {
    let Some(mut jvm) = Jvm::start(
        &["-Xmx64m", "-XX:+UseSerialGC", "-XX:-UsePerfData"],
        &token("jto-noattach"),
        &[("JAVA_TOOL_OPTIONS", "-XX:+DisableAttachMechanism")],
    ) else {
        return;
    };
    let s = attaching_sampler(&jvm);
    let mut last = None;
    for _ in 0..4 {
        last = Some(s.sample_now());
    }
    let h = last.unwrap();
    assert!(h.jvm_alive);
    assert!(
        h.attach_off
            .as_deref()
            .is_some_and(|r| r.contains("DisableAttachMechanism")),
        "{:?}",
        h.attach_off
    );
    assert_eq!(thread_dumps(&mut jvm), 0, "the JVM was signalled");
    assert!(!Path::new(&format!("/tmp/.java_pid{}", jvm.pid)).exists());
}

/// Attach disabled where the agent cannot see it (a `-XX:Flags=` file) and hsperfdata off:
/// after two attempts whose listener never started the sampler stops attaching to that JVM,
/// so it prints at most two thread dumps however long it runs, and the health says why.
#[test]
fn attach_stops_after_two_timeouts() {
    let flags = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(flags.path(), "+DisableAttachMechanism\n").unwrap();
    let flags_opt = format!("-XX:Flags={}", flags.path().display());
    let Some(mut jvm) = Jvm::start(
        &[
            "-Xmx64m",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            &flags_opt,
        ],
        &token("hidden-noattach"),
        &[],
    ) else {
        return;
    };
    let s = attaching_sampler(&jvm);
    let mut last = None;
    for _ in 0..6 {
        last = Some(s.sample_now());
    }
    let h = last.unwrap();
    assert!(h.jvm_alive);
    let reason = h.attach_off.expect("attach is off, with a reason");
    assert!(
        reason.contains("2 attempts") && reason.contains("until it restarts"),
        "{reason}"
    );
    // At least one: the attempts were real and signalled; at most two: then it stopped.
    let dumps = thread_dumps(&mut jvm);
    assert!((1..=2).contains(&dumps), "{dumps} thread dumps");
}
