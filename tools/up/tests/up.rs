//! The launcher behind `scripts/up`, end to end with the real binaries: it brings the stack up
//! (API test server with controllers, embedded broker, controller, two base JVMs with our
//! agent); kubectl sees both vnodes Ready; the sample module Deployment applied unchanged
//! runs one module JVM per Pod, scales to two (one per base), and deleting it stops the JVMs;
//! SIGTERM then leaves no process and no listening port behind.
//!
//! The component binaries must be built beside the launcher (`cargo test --workspace` builds
//! them; for this test alone: `cargo build -p koupleless-agent -p koupleless-controller -p
//! koupleless-kube-apiserver` first). The stack uses the default work directory
//! `/tmp/koupleless-up`, because the sample Deployment names its package there: the test
//! fails, saying so, if someone's `scripts/up` runs on the machine.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use koupleless_testkit::{java_available, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const DIR: &str = "/tmp/koupleless-up";
const T: Duration = Duration::from_secs(90);

/// The tests share the work directory the sample Deployment names, so they run one at a time.
static ONE_STACK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The launcher; stopped (SIGTERM, then SIGKILL) if the test fails half-way.
struct Launcher(Child);

impl Drop for Launcher {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
            if !wait_for(Duration::from_secs(40), || {
                matches!(self.0.try_wait(), Ok(Some(_)))
            }) {
                let _ = self.0.kill();
            }
            let _ = self.0.wait();
        }
    }
}

fn kubectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", format!("{DIR}/kubeconfig"))
        .args(args)
        .output()
        .expect("kubectl");
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

fn json(args: &[&str]) -> Option<Value> {
    let (ok, text) = kubectl(args);
    ok.then(|| serde_json::from_str(&text).ok()).flatten()
}

fn ready_nodes() -> Vec<String> {
    let Some(list) = json(&["get", "nodes", "-o", "json"]) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// (name, node, Running and Ready) of the sample's Pods.
fn hello_pods() -> Vec<(String, String, bool)> {
    let Some(list) = json(&["get", "pods", "-l", "app=hello", "-o", "json"]) else {
        return Vec::new();
    };
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let running = p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_owned(),
                p["spec"]["nodeName"].as_str().unwrap_or("").to_owned(),
                running,
            )
        })
        .collect()
}

fn cmdline(pid: &str) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Pids of the sample module's JVMs started by this stack's agents.
fn module_jvms() -> Vec<u32> {
    let marker = format!("-Dkoupleless.agent.module.dir={DIR}/");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            let c = cmdline(&p.to_string());
            alive(p) && c.contains(&marker) && c.contains("com.example.hello.HelloModule")
        })
        .collect()
}

/// Every loopback address in the state file (`http://…`, `mqtt://…`, `probes …, metrics …`).
fn addresses(state: &Value) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for c in state["components"].as_array().into_iter().flatten() {
        for word in c["addr"].as_str().unwrap_or("").split([' ', ',']) {
            let a = word
                .trim_start_matches("http://")
                .trim_start_matches("mqtt://");
            if let Ok(a) = a.parse() {
                out.push(a);
            }
        }
    }
    out
}

/// The launcher binary, after checking the component binaries are built beside it.
fn launcher_exe() -> PathBuf {
    assert!(java_available(), "this test needs java, javac and jar");
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_koupleless-up"));
    let bins = exe.parent().unwrap();
    for b in [
        "koupleless-agent",
        "koupleless-controller",
        "koupleless-kube-apiserver",
    ] {
        assert!(
            bins.join(b).is_file(),
            "{b} is not built beside the launcher: cargo build -p koupleless-agent -p \
             koupleless-controller -p koupleless-kube-apiserver"
        );
    }
    exe
}

/// Starts the launcher with `args`, its output in `out_dir`, and waits until it says it is up.
fn start_launcher(exe: &Path, out_dir: &Path, args: &[&str]) -> Launcher {
    let out = out_dir.join("up.out");
    let mut launcher = Launcher(
        Command::new(exe)
            .env_remove("KOUPLELESS_UP_DIR")
            .arg("--repo")
            .arg(repo())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(out_dir.join("up.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let printed = || std::fs::read_to_string(&out).unwrap_or_default();
    let up = wait_for(Duration::from_secs(180), || {
        printed().contains("Koupleless is up") || matches!(launcher.0.try_wait(), Ok(Some(_)))
    });
    assert!(
        up && printed().contains("Koupleless is up"),
        "the launcher did not come up:\n{}\n{}",
        printed(),
        std::fs::read_to_string(out_dir.join("up.err")).unwrap_or_default()
    );
    launcher
}

fn state() -> Value {
    serde_json::from_slice(&std::fs::read(Path::new(DIR).join("state.json")).unwrap()).unwrap()
}

fn pids(state: &Value) -> Vec<u32> {
    state["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["pid"].as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn up_runs_the_walk_through_and_stops_clean() {
    let _one = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = launcher_exe();
    let out_dir = tempfile::tempdir().unwrap();
    let mut launcher = start_launcher(&exe, out_dir.path(), &[]);
    let printed = || std::fs::read_to_string(out_dir.path().join("up.out")).unwrap_or_default();

    // Up: the commands to try and the kubeconfig, then both vnodes Ready as kubectl sees them.
    for line in [
        &format!("export KUBECONFIG={DIR}/kubeconfig"),
        "kubectl get nodes",
        "kubectl apply -f deploy/modules/hello-module.yaml",
        "kubectl get pods -o wide -w",
    ] {
        assert!(printed().contains(line), "{line} in\n{}", printed());
    }
    assert!(Path::new(DIR).join("kubeconfig").is_file());
    assert!(
        wait_for(T, || ready_nodes().len() == 2),
        "nodes: {:?}",
        kubectl(&["get", "nodes"])
    );
    let mut nodes = ready_nodes();
    nodes.sort();
    assert_eq!(nodes, ["vnode.base-1.dev", "vnode.base-2.dev"]);
    let status = Command::new(&exe)
        .env_remove("KOUPLELESS_UP_DIR")
        .arg("--status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert_eq!(status.matches(" running ").count(), 7, "{status}");
    assert!(
        status.contains("node vnode.base-1.dev") && status.contains("Ready=True"),
        "{status}"
    );
    let state = state();

    // The sample Deployment, unchanged: one Pod Running/Ready, one module JVM.
    let yaml = repo().join("deploy/modules/hello-module.yaml");
    let (ok, text) = kubectl(&["apply", "-f", yaml.to_str().unwrap()]);
    assert!(ok, "apply: {text}");
    let one = wait_for(T, || {
        let pods = hello_pods();
        pods.len() == 1 && pods[0].2 && module_jvms().len() == 1
    });
    assert!(
        one,
        "one Pod Running and one module JVM: {:?}, JVMs {:?}\n{}",
        hello_pods(),
        module_jvms(),
        kubectl(&["describe", "pods", "-l", "app=hello"]).1
    );

    // kubectl logs: the module's own output, through the API server, the controller's
    // kubelet API and the agent.
    let pod = hello_pods()[0].0.clone();
    let (ok, logs) = kubectl(&["logs", &pod]);
    assert!(
        ok && logs.contains("hello from module hello"),
        "kubectl logs {pod}: {logs}"
    );

    // Scale to two: one per base, one module JVM each.
    let (ok, text) = kubectl(&["scale", "deployment/hello", "--replicas=2"]);
    assert!(ok, "scale: {text}");
    let two = wait_for(T, || {
        let pods = hello_pods();
        pods.len() == 2 && pods.iter().all(|p| p.2) && module_jvms().len() == 2
    });
    assert!(
        two,
        "two Pods Running and two module JVMs: {:?}, JVMs {:?}",
        hello_pods(),
        module_jvms()
    );
    let mut on: Vec<String> = hello_pods().into_iter().map(|p| p.1).collect();
    on.sort();
    assert_eq!(on, nodes, "one module Pod per base");
    let modules = module_jvms();

    // Delete: the Pods go and the module JVMs stop.
    let (ok, text) = kubectl(&["delete", "-f", yaml.to_str().unwrap()]);
    assert!(ok, "delete: {text}");
    let gone = wait_for(T, || hello_pods().is_empty() && module_jvms().is_empty());
    assert!(
        gone,
        "Pods {:?}, module JVMs {:?}",
        hello_pods(),
        module_jvms()
    );
    assert!(modules.iter().all(|&p| !alive(p)));

    // Stop: SIGTERM, a clean exit, and nothing left running or listening.
    let pids = pids(&state);
    assert_eq!(
        pids.len(),
        7,
        "API server, broker, controller, 2 bases, 2 agents"
    );
    let addrs = addresses(&state);
    assert!(addrs.len() >= 6, "addresses in the state: {addrs:?}");
    assert!(addrs.iter().all(|a| TcpStream::connect(a).is_ok()));
    kill(Pid::from_raw(launcher.0.id() as i32), Signal::SIGTERM).unwrap();
    assert!(
        wait_for(Duration::from_secs(60), || matches!(
            launcher.0.try_wait(),
            Ok(Some(_))
        )),
        "the launcher stops"
    );
    let status = launcher.0.wait().unwrap();
    assert!(status.success(), "{status}: {}", printed());
    assert!(
        printed().contains("everything stopped"),
        "nothing had to be killed:\n{}",
        printed()
    );
    for p in pids {
        assert!(
            !alive(p),
            "pid {p} ({}) still runs",
            cmdline(&p.to_string())
        );
    }
    for a in addrs {
        assert!(TcpStream::connect(a).is_err(), "{a} still listens");
    }
    assert!(module_jvms().is_empty());
    assert!(!Path::new(DIR).join("state.json").exists());
}

/// A launcher killed with SIGKILL cannot stop its stack; the next start kills what it left
/// (the processes its state file names, checked to be this stack's) before starting anew,
/// here with Mosquitto as the broker.
#[test]
fn the_next_start_cleans_up_after_a_killed_launcher() {
    let _one = ONE_STACK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = launcher_exe();
    let first_out = tempfile::tempdir().unwrap();
    let mut first = start_launcher(&exe, first_out.path(), &["--bases", "1"]);
    let orphans = pids(&state());
    assert_eq!(
        orphans.len(),
        5,
        "API server, broker, controller, base, agent"
    );
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(
        orphans.iter().all(|&p| alive(p)),
        "SIGKILL reaches only the launcher"
    );

    // The second stack runs Mosquitto (where installed) instead of the embedded broker.
    let mosquitto = koupleless_testkit::broker::mosquitto_path().is_some();
    let mut args = vec!["--bases", "1"];
    if mosquitto {
        args.push("--mosquitto");
    } else {
        eprintln!("mosquitto is not installed: the second stack uses the embedded broker");
    }
    let second_out = tempfile::tempdir().unwrap();
    let mut second = start_launcher(&exe, second_out.path(), &args);
    assert_eq!(ready_nodes(), ["vnode.base-1.dev"]);
    if mosquitto {
        let broker = &state()["components"][1];
        assert_eq!(broker["what"], "Mosquitto", "{broker}");
        let pid = broker["pid"].as_u64().unwrap().to_string();
        assert!(cmdline(&pid).contains("mosquitto"), "{}", cmdline(&pid));
    }
    let printed = std::fs::read_to_string(second_out.path().join("up.out")).unwrap();
    assert!(
        printed.contains("killed what a previous run left"),
        "{printed}"
    );
    for p in &orphans {
        assert!(
            !alive(*p),
            "pid {p} ({}) still runs",
            cmdline(&p.to_string())
        );
    }
    let fresh = pids(&state());
    assert!(fresh.iter().all(|p| !orphans.contains(p)));
    kill(Pid::from_raw(second.0.id() as i32), Signal::SIGTERM).unwrap();
    assert!(wait_for(Duration::from_secs(60), || matches!(
        second.0.try_wait(),
        Ok(Some(_))
    )));
    assert!(fresh.iter().all(|&p| !alive(p)));
}
