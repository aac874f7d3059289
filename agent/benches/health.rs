//! Cost of one health sample: hsperfdata read and parse, an attach round trip, the sampler's
//! refresh, and building the health JSON; `jstat` for comparison. Starts its own JVM
//! (`java` in source-launcher mode); prints p50/p99 per operation.
//!
//! Run: `cargo bench -p koupleless-agent --bench health`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use koupleless_agent::health::attach::{AttachClient, AttachTarget};
use koupleless_agent::health::{HealthConfig, HealthSampler, hsperf};
use koupleless_protocol::transport::{Transport, encode};

const IDLE: &str = r#"
public class Idle {
    public static void main(String[] a) throws Exception {
        System.gc();
        System.out.println("READY " + ProcessHandle.current().pid());
        Thread.sleep(600_000);
    }
}
"#;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn measure(name: &str, iters: usize, mut f: impl FnMut()) {
    for _ in 0..iters.div_ceil(10) {
        f();
    }
    let mut t: Vec<Duration> = (0..iters)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    let pct = |p: f64| t[((t.len() as f64 * p) as usize).min(t.len() - 1)];
    println!(
        "| {name} | {iters} | {:.1} µs | {:.1} µs |",
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("Idle.java");
    std::fs::write(&src, IDLE).unwrap();
    let mut child = match Command::new("java")
        .args(["-Xmx64m", "-XX:+UseSerialGC"])
        .arg(&src)
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            // Fails under KOUPLELESS_REQUIRE_TOOLS=1 (scripts/test), skips loudly otherwise.
            koupleless_testkit::skip_or_fail("health benchmark", &format!("no java ({e})"));
            return;
        }
    };
    let out = child.stdout.take().unwrap();
    let jvm = Killed(child);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let pid: u32 = line
        .trim()
        .strip_prefix("READY ")
        .expect("READY line")
        .parse()
        .unwrap();
    let perf_path = std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|d| d.path().join(pid.to_string()))
        .find(|p| p.is_file())
        .expect("perf file");

    println!("| operation | iterations | p50 | p99 |");
    println!("|---|---|---|---|");

    let file = std::fs::File::open(&perf_path).unwrap();
    let mut buf = vec![0u8; file.metadata().unwrap().len() as usize];
    file.read_at(&mut buf, 0).unwrap();
    measure("hsperfdata parse (in memory, 32 KiB)", 20_000, || {
        std::hint::black_box(hsperf::parse(&buf).unwrap());
    });
    measure("hsperfdata pread + parse (open fd)", 20_000, || {
        file.read_at(&mut buf, 0).unwrap();
        std::hint::black_box(hsperf::parse(&buf).unwrap());
    });

    let cfg = |interval: Duration| HealthConfig {
        pid: Some(pid),
        attach: false,
        sample_interval: interval,
        ..HealthConfig::default()
    };
    let cached = HealthSampler::new(cfg(Duration::from_secs(3600)));
    cached.sample_now();
    measure("latest(), cached (health command path)", 20_000, || {
        std::hint::black_box(cached.latest());
    });
    let fresh = HealthSampler::new(cfg(Duration::ZERO));
    fresh.sample_now();
    measure(
        "latest(), fresh (liveness + pread + parse + jvm indicator)",
        20_000,
        || {
            std::hint::black_box(fresh.latest());
        },
    );
    measure("health JSON: health_data() + encode (HTTP)", 20_000, || {
        std::hint::black_box(encode(&cached.health_data(), Transport::Http));
    });
    measure(
        "full background tick (sample_now: CPU, cgroup, perf)",
        2_000,
        || {
            std::hint::black_box(cached.sample_now());
        },
    );

    let client = AttachClient::new(
        AttachTarget {
            host_pid: Some(pid),
            ns_pid: pid,
            tmp_dir: PathBuf::from("/tmp"),
            cwd: Some(PathBuf::from(format!("/proc/{pid}/cwd"))),
            owner: None,
        },
        Duration::from_secs(5),
    );
    let never = || false;
    let start = Instant::now();
    client.jcmd("VM.uptime", &never).expect("attach");
    println!(
        "| attach: first call (trigger + SIGQUIT + listener start) | 1 | {:.1} µs | — |",
        start.elapsed().as_secs_f64() * 1e6
    );
    measure("attach: jcmd GC.heap_info (warm listener)", 500, || {
        std::hint::black_box(client.jcmd("GC.heap_info", &never).unwrap());
    });
    measure("attach: jcmd VM.flags (warm listener)", 500, || {
        std::hint::black_box(client.jcmd("VM.flags", &never).unwrap());
    });
    measure(
        "attach: jcmd Compiler.codecache (warm listener)",
        500,
        || {
            std::hint::black_box(client.jcmd("Compiler.codecache", &never).unwrap());
        },
    );
    let attach_sampler = HealthSampler::new(HealthConfig {
        attach: true,
        attach_min_interval: Duration::ZERO,
        ..cfg(Duration::from_secs(3600))
    });
    measure("full tick with an attach round (3 jcmd)", 200, || {
        std::hint::black_box(attach_sampler.sample_now());
    });
    measure(
        "for comparison: spawn `jstat -gc` (the Java-side way)",
        5,
        || {
            let out = Command::new("jstat")
                .arg("-gc")
                .arg(pid.to_string())
                .output()
                .unwrap();
            assert!(out.status.success());
        },
    );
    drop(jvm);
}
