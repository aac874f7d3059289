//! Install and uninstall latency through SOFAArk's telnet port (ark-telnet backend) against
//! the time the base itself needs, i.e. what the in-JVM Java Arklet would take.
//!
//! The base is the test kit's telnet peer with configurable delays: an install takes
//! `copy_delay + start_delay` inside the base, an uninstall `stop_delay`. The delays below
//! are the in-JVM Arklet's times measured on a SOFAArk 2.2.16 base (issue 14: installs
//! 35–57 ms, uninstalls 28–37 ms). Each operation is timed from the HTTP request to the agent
//! until its reply; the in-JVM reference is the peer's delay. Target: agent ≤ 1.3 × in-JVM +
//! 10 ms. `biz -a` polls per operation are counted from the peer's received lines.
//!
//! Run: `cargo bench -p koupleless-agent --bench telnet_install`. `BENCH_N` operations per
//! row (default 30); `BENCH_POLL_INTERVAL` / `BENCH_POLL_FIRST` override the agent's
//! `--ark-telnet-poll-interval` / `--ark-telnet-poll-first` (defaults: the agent's).

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use koupleless_agent::app;
use koupleless_agent::config::Config;
use koupleless_testkit::ark_telnet_peer::{ArkTelnetPeer, PeerConfig};
use koupleless_testkit::{RawZip, file_url};
use serde_json::{Value, json};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn polls(peer: &ArkTelnetPeer) -> usize {
    peer.lines().iter().filter(|l| l.trim() == "biz -a").count()
}

struct Row {
    what: &'static str,
    in_jvm: Duration,
    lat: Vec<Duration>,
    polls: f64,
}

async fn call(client: &reqwest::Client, url: &str, cmd: &str, body: Value) -> Value {
    client
        .post(format!("{url}/{cmd}"))
        .json(&body)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON reply")
}

async fn scenario(n: usize, install: Duration, uninstall: Duration, jars: &Path) -> [Row; 2] {
    let copy = Duration::from_millis(5);
    let peer = ArkTelnetPeer::start(PeerConfig {
        copy_delay: copy,
        start_delay: install - copy,
        stop_delay: uninstall,
        ..PeerConfig::default()
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "bench",
        "--backend",
        "ark-telnet",
        "--ark-telnet-ready",
        "none",
        "--ark-telnet-monitor-interval",
        "1h",
    ]
    .map(str::to_owned)
    .to_vec();
    args.extend(["--ark-telnet-addr".into(), peer.addr().to_string()]);
    args.extend(["--work-dir".into(), work.path().display().to_string()]);
    if let Ok(v) = std::env::var("BENCH_POLL_INTERVAL") {
        args.extend(["--ark-telnet-poll-interval".into(), v]);
    }
    if let Ok(v) = std::env::var("BENCH_POLL_FIRST") {
        args.extend(["--ark-telnet-poll-first".into(), v]);
    }
    let agent = app::start(Config::parse_from(args)).await.expect("agent");
    let url = format!("http://{}", agent.addr());
    let client = reqwest::Client::new();
    let jar = RawZip::ark_biz("bench", "1.0.0", "com.example.Main")
        .write(&jars.join("bench.jar"))
        .unwrap();
    let body = json!({"bizName": "bench", "bizVersion": "1.0.0", "bizUrl": file_url(&jar)});
    // One warm-up round: connection, greeting, first listing.
    assert_eq!(
        call(&client, &url, "installBiz", body.clone()).await["code"],
        "SUCCESS"
    );
    assert_eq!(
        call(&client, &url, "uninstallBiz", body.clone()).await["code"],
        "SUCCESS"
    );
    let (mut ins, mut uns) = (Vec::new(), Vec::new());
    let (mut ins_polls, mut uns_polls) = (0, 0);
    for _ in 0..n {
        let p0 = polls(&peer);
        let t = Instant::now();
        let v = call(&client, &url, "installBiz", body.clone()).await;
        ins.push(t.elapsed());
        assert_eq!(v["code"], "SUCCESS", "{v}");
        let p1 = polls(&peer);
        let t = Instant::now();
        let v = call(&client, &url, "uninstallBiz", body.clone()).await;
        uns.push(t.elapsed());
        assert_eq!(v["code"], "SUCCESS", "{v}");
        ins_polls += p1 - p0;
        uns_polls += polls(&peer) - p1;
    }
    agent.shutdown().await;
    peer.shutdown().await;
    ins.sort();
    uns.sort();
    [
        Row {
            what: "install",
            in_jvm: install,
            lat: ins,
            polls: ins_polls as f64 / n as f64,
        },
        Row {
            what: "uninstall",
            in_jvm: uninstall,
            lat: uns,
            polls: uns_polls as f64 / n as f64,
        },
    ]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let jars = tempfile::tempdir().unwrap();
    println!(
        "| operation | in-JVM (peer delay) | target (1.3x + 10 ms) | agent p50 | agent p95 | max | `biz -a` per op | p50 within target |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (install, uninstall) in [(35, 28), (57, 37)] {
        let rows = scenario(
            n,
            Duration::from_millis(install),
            Duration::from_millis(uninstall),
            jars.path(),
        )
        .await;
        for r in rows {
            let target = ms(r.in_jvm) * 1.3 + 10.0;
            let p50 = ms(percentile(&r.lat, 0.5));
            println!(
                "| {} | {:.0} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} | {} |",
                r.what,
                ms(r.in_jvm),
                target,
                p50,
                ms(percentile(&r.lat, 0.95)),
                ms(*r.lat.last().unwrap()),
                r.polls,
                if p50 <= target { "yes" } else { "no" }
            );
        }
    }
}
