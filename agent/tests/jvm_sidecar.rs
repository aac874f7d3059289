//! The sidecar topology most Pods use (spec jvm-health §1.7, second row; issue 19): the base
//! JVM and the agent each in their own pid namespace (`unshare --pid --fork --mount-proc`),
//! sharing only `/tmp` (a test directory bind-mounted on `/tmp` in both, as an emptyDir
//! would be). The agent runs as the real binary with the ark-telnet backend, the HTTP
//! heartbeat to a fake controller and `--ready-requires-jvm`.
//!
//! The JVM is pid 1 in its namespace, so its perf file is `/tmp/hsperfdata_root/1`, and pid 1
//! in the agent's namespace is the agent itself: the agent must use the file alone.
//!
//! Needs root (for the namespaces and the bind mount), `unshare` and a JDK; without them a
//! plain `cargo test` prints `SKIPPED …` and `scripts/test` fails.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use koupleless_agent::health::{FoundBy, HealthConfig, HealthSampler};
use koupleless_protocol::state::BizState;
use serde_json::{Value, json};

const FIXTURE: &str = r#"
import java.io.*;
import java.lang.management.*;

public class Fixture {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("READY " + ProcessHandle.current().pid());
        String line;
        while ((line = in.readLine()) != null) {
            switch (line.trim()) {
                case "mx": {
                    MemoryUsage h = ManagementFactory.getMemoryMXBean().getHeapMemoryUsage();
                    System.out.println("MX " + h.getMax() + " " + System.getProperty("java.version"));
                    break;
                }
                case "exit":
                    System.exit(0);
            }
            System.out.println("OK " + line.trim());
        }
    }
}
"#;

/// The agent's sample interval (fixed in the agent): detection must take at most two.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(2);
/// `--jvm-down-grace` given to the agent.
const GRACE: Duration = Duration::from_secs(5);

/// Why this machine cannot run these tests, if it cannot.
fn missing_tools() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: pid namespaces and bind mounts need it".into());
    }
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return Some("`unshare --pid --fork --mount-proc` is missing or not permitted".into());
    }
    let javac = Command::new("javac")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !javac {
        return Some("no JDK (javac) on PATH".into());
    }
    None
}

/// A process started inside fresh pid and mount namespaces whose `/tmp` is `shared`.
struct InNs {
    /// The `unshare` process; `--kill-child` takes the namespace down with it.
    unshare: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    output: Vec<String>,
    name: String,
}

impl InNs {
    /// Runs `argv` as pid 1 of a new namespace (`exec`), or as a child of a shell that is
    /// pid 1 (so it gets pid 2).
    fn start(name: &str, shared: &Path, exec: bool, argv: &[String]) -> InNs {
        let script = if exec {
            r#"mount --bind "$0" /tmp && exec "$@""#
        } else {
            r#"mount --bind "$0" /tmp && "$@"; exit $?"#
        };
        let mut child = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "--kill-child",
                "sh",
                "-c",
                script,
            ])
            .arg(shared)
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn unshare");
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
        InNs {
            stdin: child.stdin.take(),
            unshare: child,
            lines: rx,
            output: Vec::new(),
            name: name.to_owned(),
        }
    }

    /// Waits (bounded) for a line containing `needle` (already printed or to come); returns
    /// it.
    fn expect(&mut self, needle: &str, within: Duration) -> String {
        if let Some(l) = self.output.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.output.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {needle:?} within {within:?}; output: {:?}",
                    self.name, self.output
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: ended before {needle:?}; output: {:?}",
                    self.name, self.output
                ),
            }
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Everything printed so far.
    fn drain(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.output.push(l);
        }
        self.output.clone()
    }

    /// The host pid of pid 1 of the namespace (the child `unshare` forked).
    fn ns_init_host_pid(&self) -> u32 {
        let pid = self.unshare.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        children
            .split_whitespace()
            .next()
            .expect("unshare has its child")
            .parse()
            .unwrap()
    }

    fn signal_init(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.ns_init_host_pid() as i32);
        nix::sys::signal::kill(pid, sig).unwrap();
    }

    /// Whether the namespace's process still runs.
    fn running(&mut self) -> bool {
        self.unshare.try_wait().unwrap().is_none()
    }

    /// Waits (bounded) for the namespace's process to end.
    fn wait_exit(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.running() {
            assert!(Instant::now() < deadline, "{} did not exit", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for InNs {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// The controller's side of the HTTP heartbeat: records each heartbeat's `state`.
#[derive(Clone, Default)]
struct Beats(Arc<Mutex<Vec<(Instant, String)>>>);

impl Beats {
    fn since(&self, t: Instant) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

async fn heartbeat(State(beats): State<Beats>, body: Bytes) -> &'static str {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let state = v["state"].as_str().unwrap_or("?").to_owned();
    beats.0.lock().unwrap().push((Instant::now(), state));
    "SUCCESS"
}

async fn fake_controller() -> (SocketAddr, Beats) {
    let beats = Beats::default();
    let app = Router::new()
        .route("/heartbeat", post(heartbeat))
        .route("/queryBaseline", post(|| async { "[]" }))
        .with_state(beats.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, beats)
}

fn java_argv(xmx: &str, token: &str) -> Vec<String> {
    [
        "java",
        xmx,
        "-XX:+UseSerialGC",
        "-cp",
        "/tmp/cls",
        "Fixture",
        token,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The base's `health` and `/readyz`, read over the agent's HTTP API.
struct Api {
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn health(&self) -> Value {
        let v: Value = self
            .client
            .post(format!("{}/health", self.url))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]["healthData"].clone()
    }

    async fn readyz(&self) -> (u16, Value) {
        let r = self
            .client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `health` every 20 ms until `cond` holds; returns it and the time taken.
    async fn health_until(
        &self,
        within: Duration,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let t0 = Instant::now();
        loop {
            let h = self.health().await;
            if cond(&h) {
                return (h, t0.elapsed());
            }
            assert!(t0.elapsed() < within, "{what}: not within {within:?}: {h}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn state(h: &Value) -> &str {
    h["masterBizInfo"]["bizState"].as_str().unwrap_or("")
}

fn no_thread_dump(jvm: &mut InNs) {
    let out = jvm.drain();
    assert!(
        !out.iter().any(|l| l.contains("Full thread dump")),
        "{} was sent a SIGQUIT: {out:?}",
        jvm.name
    );
}

/// Kill -9 of the base, then a graceful exit of the next one, with an unrelated JVM in the
/// same shared `/tmp`: the agent chooses the base by `--base-main-class`, reports it gone
/// within two sample intervals (`broken`, no `jvm`, `/readyz` 503, heartbeat still
/// `activated`), `deactivated` once the grace has passed, finds the restarted JVM, tells a
/// shutdown from a kill, never signals anyone, and a SIGTERM to the agent sends `deactivated`
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_only_sidecar_follows_the_base_through_kill_restart_and_shutdown() {
    if let Some(reason) = missing_tools() {
        koupleless_testkit::skip_or_fail("jvm_sidecar", &reason);
        return;
    }
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shared = scratch.path().join("shared-tmp");
    let cls = shared.join("cls");
    std::fs::create_dir_all(&cls).unwrap();
    std::fs::write(scratch.path().join("Fixture.java"), FIXTURE).unwrap();
    let javac = Command::new("javac")
        .arg("-d")
        .arg(&cls)
        .arg(scratch.path().join("Fixture.java"))
        .output()
        .unwrap();
    assert!(javac.status.success(), "{javac:?}");
    let token = format!("sidecar-{}", std::process::id());
    let other_token = format!("tool-{}", std::process::id());

    // The base (pid 1 in its namespace, 64 MiB heap) and an unrelated JVM in the same /tmp
    // (a child of pid 1 in another namespace, 96 MiB heap).
    // The first base pre-starts its attach listener, so its socket exists in the shared /tmp:
    // the only way the agent may attach to a JVM whose pid it cannot see.
    let mut base_argv = java_argv("-Xmx64m", &token);
    base_argv.insert(1, "-XX:+StartAttachListener".into());
    let mut base = InNs::start("base", &shared, true, &base_argv);
    assert_eq!(base.expect("READY ", Duration::from_secs(30)), "READY 1");
    let mut other = InNs::start("other", &shared, false, &java_argv("-Xmx96m", &other_token));
    let other_pid = other.expect("READY ", Duration::from_secs(30));
    let other_pid = other_pid.trim_start_matches("READY ");
    assert_ne!(other_pid, "1", "the shell is pid 1 there");
    base.send("mx");
    let mx = base.expect("MX ", Duration::from_secs(10));
    let mut mx = mx.split_whitespace().skip(1);
    let mx_max: f64 = mx.next().unwrap().parse().unwrap();
    let mx_version = mx.next().unwrap().to_owned();
    assert!(shared.join("hsperfdata_root/1").exists());
    assert!(shared.join("hsperfdata_root").join(other_pid).exists());

    // Several JVMs' files and no pattern: the sampler refuses to guess (it cannot rank JVMs it
    // knows only by their files); with a pattern it says which file it chose. An empty procfs
    // stands in for a namespace where neither pid is visible.
    let no_proc = scratch.path().join("no-proc");
    std::fs::create_dir_all(&no_proc).unwrap();
    let sampler = |pattern: Option<String>| {
        HealthSampler::new(HealthConfig {
            main_class_pattern: pattern,
            attach: false,
            proc_root: no_proc.clone(),
            tmp_dir: shared.clone(),
            ..HealthConfig::default()
        })
    };
    let h = sampler(None).sample_now();
    assert!(h.jvm.is_none(), "{h:?}");
    assert!(
        h.problem
            .as_deref()
            .unwrap_or("")
            .contains("cannot be ranked"),
        "{:?}",
        h.problem
    );
    // The file may still be initialising right after the JVM says READY: sample until its
    // figures are readable (a slow machine took more than one sample).
    let chosen = sampler(Some(format!("^Fixture {other_token}$")));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut h = chosen.sample_now();
    let complete = |h: &koupleless_agent::health::BaseHealth| {
        h.jvm.as_ref().is_some_and(|j| j.max_memory_mib.is_some())
    };
    while !complete(&h) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        h = chosen.sample_now();
    }
    assert_eq!(h.found_by, Some(FoundBy::FileOnly));
    assert!(h.pid.is_none());
    let choice = h.choice.clone().unwrap_or_default();
    assert!(
        choice.contains(&format!("hsperfdata_root/{other_pid}")) && choice.contains(&other_token),
        "{choice}"
    );
    let jvm = h
        .jvm
        .clone()
        .unwrap_or_else(|| panic!("figures of the chosen JVM: {h:?}"));
    let max = jvm
        .max_memory_mib
        .unwrap_or_else(|| panic!("the chosen JVM's heap limit: {h:?}"));
    assert!((max - 96.0).abs() < 8.0, "the 96 MiB JVM: {h:?}");
    // Stopped (its lock still held, its clock counter frozen): unhealthy within the hang
    // threshold, healthy again when it resumes.
    let hang = HealthSampler::new(HealthConfig {
        main_class_pattern: Some(format!("^Fixture {other_token}$")),
        attach: false,
        proc_root: no_proc.clone(),
        tmp_dir: shared.clone(),
        sample_interval: Duration::from_millis(50),
        hang_threshold: Some(Duration::from_millis(600)),
        ..HealthConfig::default()
    });
    assert!(hang.sample_now().healthy);
    let other_java = {
        let sh = other.ns_init_host_pid();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).unwrap();
        let pid: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
        nix::unistd::Pid::from_raw(pid)
    };
    nix::sys::signal::kill(other_java, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let t0 = Instant::now();
    let h = loop {
        let h = hang.sample_now();
        if !h.healthy {
            break h;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "hang not noticed");
        std::thread::sleep(Duration::from_millis(20));
    };
    nix::sys::signal::kill(other_java, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(h.jvm_alive && h.jvm.is_some());
    assert_eq!(h.state, BizState::Broken);
    assert!(
        h.problem
            .as_deref()
            .unwrap_or("")
            .contains("not making progress"),
        "{:?}",
        h.problem
    );
    let t0 = Instant::now();
    while !hang.sample_now().healthy {
        assert!(t0.elapsed() < Duration::from_secs(10), "no recovery");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (ctl, beats) = fake_controller().await;
    let work = scratch.path().join("work");
    let agent_argv: Vec<String> = [
        env!("CARGO_BIN_EXE_koupleless-agent"),
        "--log-json",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "10.0.0.19",
        "--base-name",
        "sidecar-base",
        "--work-dir",
        work.to_str().unwrap(),
        "--backend",
        "ark-telnet",
        "--ark-telnet-ready",
        "none",
        "--base-main-class",
        &format!("^Fixture {token}$"),
        "--ready-requires-jvm",
        "--jvm-down-grace",
        &format!("{}s", GRACE.as_secs()),
        "--controller-endpoint",
        &format!("http://{ctl}"),
        "--http-heartbeat-interval",
        "200ms",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut agent = InNs::start("agent", &shared, true, &agent_argv);
    let listening = agent.expect("Arklet HTTP API listening", Duration::from_secs(30));
    let port = listening
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .expect("address in the log line");
    let api = Api {
        url: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
    };

    // Found by the file alone, the base chosen by its main class, figures as the JVM's own.
    let (h, _) = api
        .health_until(Duration::from_secs(20), "base tracked", |h| {
            state(h) == "activated" && h["jvm"].is_object()
        })
        .await;
    let choice = agent.expect("tracking base JVM", Duration::from_secs(5));
    assert!(
        choice.contains("pid 1 (in its own pid namespace)")
            && choice.contains("hsperfdata file only (pid not visible)")
            && choice.contains("hsperfdata_root/1")
            && choice.contains("matches"),
        "{choice}"
    );
    let max_mib = h["jvm"]["max memory(M)"].as_f64().unwrap();
    assert!(
        (max_mib - mx_max / 1_048_576.0).abs() < 0.01,
        "agent {max_mib} MiB, MXBean {mx_max} B (the 96 MiB JVM must not be chosen)"
    );
    assert_eq!(h["jvm"]["java version"], mx_version.as_str());
    // Metaspace is live only through attach (the perf counters stay 0 until a first GC).
    let (h, _) = api
        .health_until(Duration::from_secs(20), "attach through the socket", |h| {
            h["jvm"]["java used metaspace"].as_i64() > Some(0)
        })
        .await;
    assert!(shared.join(".java_pid1").exists(), "{h}");
    assert_eq!(api.readyz().await.0, 200);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        beats.since(t).iter().all(|s| s == "activated") && !beats.since(t).is_empty(),
        "{:?}",
        beats.since(t)
    );

    // kill -9: gone within two sample intervals, unhealthy rather than deactivated.
    base.signal_init(nix::sys::signal::Signal::SIGKILL);
    let killed_at = Instant::now();
    base.wait_exit(Duration::from_secs(10));
    assert!(
        shared.join("hsperfdata_root/1").exists(),
        "SIGKILL leaves the file behind"
    );
    let (h, took) = api
        .health_until(2 * SAMPLE_INTERVAL, "kill noticed", |h| {
            h["jvm"].is_null() && state(h) == "broken"
        })
        .await;
    eprintln!(
        "measured: kill -9 of the base noticed by health after {took:?} (bound {:?})",
        2 * SAMPLE_INTERVAL
    );
    assert!(h["cpu"]["count"].is_u64(), "CPU still reported: {h}");
    let (status, body) = api.readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("was killed or crashed"),
        "{body}"
    );
    // Within the grace the heartbeat keeps the Node (the controller shows it NotReady from
    // `health`); after it the base counts as gone.
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        beats.since(t).iter().all(|s| s == "activated"),
        "{:?}",
        beats.since(t)
    );
    let (_, took) = api
        .health_until(GRACE + 2 * SAMPLE_INTERVAL, "grace over", |h| {
            state(h) == "deactivated"
        })
        .await;
    let deactivated_after = killed_at.elapsed();
    assert!(
        deactivated_after >= GRACE - Duration::from_millis(100),
        "deactivated {deactivated_after:?} after the kill, before the {GRACE:?} grace ({took:?})"
    );
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        beats.since(t).iter().any(|s| s == "deactivated"),
        "{:?}",
        beats.since(t)
    );
    eprintln!("measured: base deactivated {deactivated_after:?} after the kill (grace {GRACE:?})");

    // A restarted container: a new JVM, pid 1 again, found again.
    let mut base2 = InNs::start("base2", &shared, true, &java_argv("-Xmx64m", &token));
    assert_eq!(base2.expect("READY ", Duration::from_secs(30)), "READY 1");
    let (h, took) = api
        .health_until(Duration::from_secs(20), "restart found", |h| {
            state(h) == "activated" && h["jvm"].is_object()
        })
        .await;
    eprintln!("measured: restarted base found {took:?} after READY");
    // No listener socket this time (the dead JVM's stale one was removed), and the agent
    // may not signal: no attach, metaspace unknown until a GC.
    assert!(!shared.join(".java_pid1").exists());
    assert_eq!(h["jvm"]["java used metaspace"], -1, "{h}");
    assert_eq!(api.readyz().await.0, 200);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let recent = beats.since(t);
    assert!(
        !recent.is_empty() && recent.iter().all(|s| s == "activated"),
        "{recent:?}"
    );

    // A graceful exit removes the file: reported as a shutdown, not a kill.
    base2.send("exit");
    base2.wait_exit(Duration::from_secs(10));
    assert!(!shared.join("hsperfdata_root/1").exists());
    let (h, _) = api
        .health_until(2 * SAMPLE_INTERVAL, "exit noticed", |h| {
            h["jvm"].is_null() && state(h) == "broken"
        })
        .await;
    let (status, body) = api.readyz().await;
    assert_eq!(status, 503, "{h} {body}");
    let reason = body["reasons"][0].as_str().unwrap_or("");
    assert!(
        reason.contains("shut down (its hsperfdata file was removed)")
            && !reason.contains("killed"),
        "{body}"
    );

    // Nobody was signalled: no thread dump in any JVM, and the agent (pid 1 of its own
    // namespace, which a "signal pid 1" would have hit) still runs.
    no_thread_dump(&mut base);
    no_thread_dump(&mut base2);
    no_thread_dump(&mut other);
    assert!(agent.running(), "agent alive: {:?}", agent.drain());
    assert!(other.running());

    // SIGTERM to the agent (the Pod terminating): deactivated at once.
    let t = Instant::now();
    agent.signal_init(nix::sys::signal::Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(20));
    let last = beats.since(t);
    assert_eq!(
        last.last().map(String::as_str),
        Some("deactivated"),
        "{last:?}"
    );
}
