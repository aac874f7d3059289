//! Load benchmark of the agent's HTTP API and its memory (issue targets: p99 under 2 ms at
//! 1,000 req/s on loopback; idle RSS under 15 MiB).
//!
//! Runs the real agent binary (built with the bench profile) as a child process, so its RSS is
//! the agent's own; modules are real JVMs built with the test kit. Prints a Markdown table.
//! Run: `cargo bench -p koupleless-agent --bench http_api`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use koupleless_testkit::{Behaviour, BizJar, SMALL_JVM_ARGS, file_url, free_port};

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

/// Open loop: `rate` requests per second for `secs`, each on its own task, latency measured
/// from the scheduled send time (so queueing counts).
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    rate: u64,
    secs: u64,
) -> (Vec<Duration>, usize) {
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let at = start + interval * i as u32;
        tokio::time::sleep_until(at).await;
        let (c, u) = (client.clone(), url.to_owned());
        handles.push(tokio::spawn(async move {
            let ok = c
                .post(&u)
                .body(body)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            (at.elapsed(), ok)
        }));
    }
    let mut lat = Vec::with_capacity(handles.len());
    let mut errors = 0;
    for h in handles {
        let (d, ok) = h.await.unwrap();
        if !ok {
            errors += 1;
        }
        lat.push(d);
    }
    lat.sort();
    (lat, errors)
}

/// Open loop with a lean client: `conns` keep-alive connections on plain threads, each sending
/// a pre-built request on its own fixed schedule (together `rate` per second) and reading the
/// reply by its `Content-Length`. Costs a fraction of the reqwest client's CPU, so the numbers
/// are the agent's, not the load generator's. Latency counts from the scheduled send time.
fn lean_open_loop(port: u16, cmd: &str, rate: u64, secs: u64, conns: u64) -> Vec<Duration> {
    use std::io::{BufRead, BufReader, Read, Write};
    let request = format!(
        "POST /{cmd} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    let per_conn = rate / conns;
    let interval = Duration::from_nanos(1_000_000_000 / per_conn);
    let start = Instant::now() + Duration::from_millis(50);
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let request = request.clone();
            std::thread::spawn(move || {
                let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                // Stagger the connections so the sends are spread evenly.
                let offset = interval / conns as u32 * c as u32;
                let mut lat = Vec::with_capacity((per_conn * secs) as usize);
                for i in 0..per_conn * secs {
                    let at = start + offset + interval * i as u32;
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    writer.write_all(request.as_bytes()).unwrap();
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    lat.push(at.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    all
}

/// Closed loop: `workers` clients sending back to back for `secs`; returns requests/s.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    body: &'static str,
    workers: usize,
    secs: u64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (c, u, n) = (client.clone(), url.to_owned(), Arc::clone(&count));
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                if c.post(&u)
                    .body(body)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .is_ok()
                {
                    n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    count.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs as f64
}

async fn measure(client: &reqwest::Client, base: &str, label: &str, cmd: &str, body: &'static str) {
    let url = format!("{base}/{cmd}");
    // Warm up connections and caches.
    for _ in 0..200 {
        client.post(&url).body(body).send().await.unwrap();
    }
    let (lat, errors) = open_loop(client, &url, body, 1000, 5).await;
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let c = cmd.to_owned();
    let lean = tokio::task::spawn_blocking(move || lean_open_loop(port, &c, 1000, 5, 4))
        .await
        .unwrap();
    let rps = closed_loop(client, &url, body, 16, 3).await;
    println!(
        "| {label} | {} | {} | {} | {} | {errors} | {} | {} | {} | {rps:.0} |",
        lat.len(),
        fmt(percentile(&lat, 0.50)),
        fmt(percentile(&lat, 0.99)),
        fmt(percentile(&lat, 0.999)),
        fmt(percentile(&lean, 0.50)),
        fmt(percentile(&lean, 0.99)),
        fmt(percentile(&lean, 0.999)),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    let child = Command::new(env!("CARGO_BIN_EXE_koupleless-agent"))
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--base-identity",
            "bench",
        ])
        .arg("--work-dir")
        .arg(tmp.path().join("work"))
        .args(["--module-jvm-arg", &jvm_args])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("agent binary");
    let agent = AgentProc(child);
    let pid = agent.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    let up = koupleless_testkit::wait_for(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "agent did not come up");

    let idle_start = rss_kib(pid);
    println!(
        "agent RSS right after start: {:.1} MiB",
        idle_start as f64 / 1024.0
    );
    println!();
    println!(
        "| command (modules) | requests at 1,000/s | reqwest p50 | p99 | p99.9 | errors | lean client p50 | p99 | p99.9 | max req/s (16 clients) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    measure(&client, &base, "queryAllBiz (0)", "queryAllBiz", "{}").await;
    measure(&client, &base, "health (0)", "health", "{}").await;
    let idle_after_load = rss_kib(pid);

    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    for i in 0..20 {
        let url = file_url(
            &BizJar::new(format!("bench-{i}"), "1.0.0")
                .behaviour(Behaviour::StayUp)
                .build(&jars),
        );
        let body = format!(r#"{{"bizName":"bench-{i}","bizVersion":"1.0.0","bizUrl":"{url}"}}"#);
        let text = client
            .post(format!("{base}/installBiz"))
            .body(body)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(r#""code":"SUCCESS""#), "{text}");
    }
    measure(&client, &base, "queryAllBiz (20)", "queryAllBiz", "{}").await;
    measure(&client, &base, "health (20)", "health", "{}").await;
    let with_20 = rss_kib(pid);
    println!();
    println!("| agent RSS | MiB |");
    println!("|---|---|");
    println!(
        "| idle, right after start | {:.1} |",
        idle_start as f64 / 1024.0
    );
    println!(
        "| idle, after the load runs above | {:.1} |",
        idle_after_load as f64 / 1024.0
    );
    println!(
        "| 20 modules installed, after load | {:.1} |",
        with_20 as f64 / 1024.0
    );
    drop(agent);
}
