//! Fleet benchmark: N simulated MQTT bases (Java defaults: heartbeat every 10 s) against the
//! controller binary (its own process, upstream timings) and the API test server. Measures
//! the time until all N Nodes are Ready, the API writes per base per minute at steady state
//! by verb and resource (counted by the API server), and the controller's RSS and CPU.
//!
//! ```text
//! cargo build --release -p koupleless-controller
//! ulimit -n 20000; cargo bench -p koupleless-simulator --bench fleet -- 100 1000
//! ```
//! `FLEET_WINDOW_SECS` sets the steady window (default 60), `FLEET_SETTLE_SECS` the wait
//! between all Ready and the window (default 20 s + 40 ms per base), `KOUPLELESS_CONTROLLER_BIN` the
//! controller binary (default `target/release/koupleless-controller`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use koupleless_kube_apiserver::requests::writes_between;
use koupleless_simulator::{Config, Fleet, Tunnel};
use kube::Api;
use kube::api::ListParams;
use support::{Broker, ENV};

fn controller_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KOUPLELESS_CONTROLLER_BIN") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/koupleless-controller")
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// User + system CPU time of `pid`, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

async fn ready_nodes(client: &kube::Client) -> usize {
    let nodes: Api<Node> = Api::all(client.clone());
    let Ok(list) = nodes.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .count()
}

struct ControllerProcess(Child);

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn run(bases: usize, settle: Duration, window: Duration) {
    let broker = Broker::start().await;
    koupleless_kube_apiserver::install_crypto_provider();
    let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
    let kubeconfig = server.write_kubeconfig_tempfile().unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    let port = |p: u16| format!("127.0.0.1:{p}");
    let child = Command::new(controller_bin())
        .env("KUBECONFIG", kubeconfig.path())
        .env("ENV", ENV)
        .env("CLIENT_ID", "bench-controller")
        .env("ENABLE_MQTT_TUNNEL", "true")
        .env("MQTT_BROKER", "127.0.0.1")
        .env("MQTT_PORT", broker.port.to_string())
        .env("ENABLE_KUBELET_API", "false")
        .env("PROBE_ADDR", port(koupleless_testkit::free_port()))
        .env("METRICS_ADDR", port(koupleless_testkit::free_port()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (cargo build --release -p koupleless-controller)",
                controller_bin().display()
            )
        });
    let controller = ControllerProcess(child);
    let pid = controller.0.id();

    let config = Config::new(
        ENV,
        Tunnel::Mqtt {
            host: "127.0.0.1".into(),
            port: broker.port,
        },
    );
    let t0 = Instant::now();
    let fleet = Fleet::start(config, bases).await.unwrap();
    let started = t0.elapsed();
    let deadline = t0 + Duration::from_secs(120 + bases as u64 / 10);
    let mut ready = 0;
    while ready < bases && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        ready = ready_nodes(&client).await;
    }
    let all_ready = t0.elapsed();
    assert_eq!(
        ready,
        bases,
        "not all Nodes Ready; controller log: {}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );

    // Past the first health and module-list rounds (10 s and 15 s upstream).
    tokio::time::sleep(settle).await;
    let before = server.requests().snapshot();
    let cpu0 = cpu_ticks(pid);
    let w0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = w0.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu0) as f64 / 100.0 / secs;
    let writes = writes_between(&before, &server.requests().snapshot());
    let (rss, hwm) = rss_kib(pid);
    let still_ready = ready_nodes(&client).await;

    let per_base_min = |n: u64| n as f64 / bases as f64 / (secs / 60.0);
    let total: u64 = writes.values().sum();
    println!("== {bases} MQTT bases ==");
    println!("bases started in {:.2} s", started.as_secs_f64());
    println!(
        "all {bases} Nodes Ready {:.2} s after start",
        all_ready.as_secs_f64()
    );
    println!(
        "window of {secs:.0} s starting {} s after all Ready: {:.2} API writes per base per minute ({still_ready} Ready at the end)",
        settle.as_secs(),
        per_base_min(total)
    );
    for ((verb, resource), n) in &writes {
        println!("  {verb:>8} {resource:<30} {:.3}", per_base_min(*n));
    }
    println!(
        "controller RSS {:.1} MiB (peak {:.1} MiB), CPU {:.1} % of one core",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        cpu * 100.0
    );
    let stats: Vec<String> = fleet
        .stats()
        .snapshot()
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    println!("simulator: {}", stats.join(" "));
    drop(controller);
    fleet.shutdown().await;
    server.shutdown().await;
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1000]
    } else {
        sizes
    };
    let window = Duration::from_secs(
        std::env::var("FLEET_WINDOW_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    );
    let settle: Option<u64> = std::env::var("FLEET_SETTLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for n in sizes {
        // The registration tail (second status write, two Events per base) drains at the
        // client's 100 QPS after all are Ready; the steady window starts after it.
        let settle = Duration::from_secs(settle.unwrap_or(20 + n as u64 / 25));
        rt.block_on(run(n, settle, window));
    }
}
