//! `koupleless-up` (run through `scripts/up`): the whole Koupleless pair on loopback, for
//! trying it with kubectl the way `kind` users expect, with no cluster.
//!
//! It starts, each on a free loopback port and logging to `<dir>/logs/<name>.log`:
//!
//! 1. the Kubernetes API test server with its scheduler and workload controllers
//!    (`koupleless-kube-apiserver --with-controllers`), which writes `<dir>/kubeconfig`;
//! 2. an MQTT broker: the embedded one (rumqttd, this binary run as `__broker`), or Mosquitto
//!    with `--mosquitto`;
//! 3. the module controller (`koupleless-controller`, MQTT tunnel);
//! 4. N bases (default 2): a real base JVM compiled from `java/DemoBase.java` at start-up (or
//!    the SOFAArk base jar given with `--ark-base-jar`), each with our agent
//!    (`koupleless-agent`) beside it, `process` backend (`ark-telnet` for a SOFAArk base);
//!
//! builds the sample module (`examples/hello-module/build`) into `<dir>/modules/`, where
//! `deploy/modules/hello-module.yaml` points, waits for every base's vnode to be Ready, and
//! prints what to try. Ctrl-C or SIGTERM stops everything in order (agents first, so they stop
//! their module JVMs; the API server last) and kills whatever did not stop; nothing is left
//! running and nothing is written outside `<dir>`, where the logs stay for reading.
//! `--status` shows what runs and where (from `<dir>/state.json`).

mod probe;
mod stack;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use stack::{Stack, Tier};
use tokio::signal::unix::{SignalKind, signal};

/// The work directory when none is given: `deploy/modules/hello-module.yaml` names the module
/// package under it, so the walk-through applies unchanged.
/// The CA of the API test server's kubelet client certificate (what `pods/log` presents).
const KUBELET_CLIENT_CA_PEM: &str =
    include_str!("../../../tests/kube-apiserver/certs/kubelet-client-ca.crt");

const DEFAULT_DIR: &str = "/tmp/koupleless-up";
/// What the bases are called (`base.koupleless.io/name`; the sample Deployment selects it).
const BASE_NAME: &str = "demo-base";
/// The env of the vnodes (Node name suffix, MQTT topic prefix).
const ENV: &str = "dev";
/// The file that marks a directory as this launcher's, so a restart may empty it.
const MARKER: &str = ".koupleless-up";
/// How long a component may take to stop cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long the whole start may take before the launcher gives up.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// The base program, compiled at start-up.
const DEMO_BASE_JAVA: &str = include_str!("../java/DemoBase.java");
/// Small flags for the demo JVMs (bases and modules).
const JVM_ARGS: &[&str] = &["-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"];

/// Brings up the whole Koupleless pair on loopback (API test server with its controllers, an
/// MQTT broker, the module controller, N bases with our agent) and stops it all on Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "koupleless-up", version)]
struct Args {
    /// Number of bases (base JVM + agent each).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
    bases: u16,
    /// Work directory: kubeconfig, logs, state, module packages, agents' work directories.
    /// Emptied at start. The sample Deployment's image points under the default.
    #[arg(long, env = "KOUPLELESS_UP_DIR", default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Use Mosquitto instead of the embedded broker.
    #[arg(long)]
    mosquitto: bool,
    /// A SOFAArk base jar (`java -jar`-able, e.g. a Spring Boot base with koupleless-base
    /// starter): bases run it and the agents use the `ark-telnet` backend.
    #[arg(long)]
    ark_base_jar: Option<PathBuf>,
    /// Where the component binaries are (default: beside this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The repository (for `examples/hello-module`; default: where this was built from).
    #[arg(long)]
    repo: Option<PathBuf>,
    /// Show what runs and where, then exit.
    #[arg(long)]
    status: bool,
    /// Internal: run the embedded MQTT broker and write its port to this file.
    #[arg(long, hide = true)]
    broker_port_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(file) = &args.broker_port_file {
        return run_broker(file).await;
    }
    let dir = absolute(&args.dir)?;
    if args.status {
        return status(&dir);
    }
    prepare_dir(&dir)?;

    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut stack = Stack::new(dir.clone());
    let clock = Instant::now();
    let started = tokio::select! {
        r = tokio::time::timeout(START_TIMEOUT, start(&mut stack, &args, clock)) => {
            r.unwrap_or_else(|_| Err(anyhow::anyhow!("not up within {START_TIMEOUT:?}")))
        }
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    if let Err(e) = started {
        eprintln!(
            "up: {e:#}\nup: stopping what was started (logs in {})",
            stack.logs().display()
        );
        stop(&mut stack).await;
        std::process::exit(1);
    }
    stack.save(true)?;
    banner(&stack, clock.elapsed());

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {
                for msg in stack.newly_exited() {
                    eprintln!("up: warning: {msg}");
                }
            }
        }
    }
    println!("\nup: stopping (agents, controller, bases, broker, API server) ...");
    stop(&mut stack).await;
    Ok(())
}

async fn stop(stack: &mut Stack) {
    let t = Instant::now();
    let killed = stack.stop(STOP_GRACE).await;
    if killed.is_empty() {
        println!(
            "up: everything stopped in {:.1}s; logs stay in {}",
            t.elapsed().as_secs_f64(),
            stack.logs().display()
        );
    } else {
        println!(
            "up: stopped in {:.1}s; had to kill: {}; logs stay in {}",
            t.elapsed().as_secs_f64(),
            killed.join(", "),
            stack.logs().display()
        );
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    })
}

/// Refuses to start over a running stack; cleans up after a launcher that died; empties the
/// directory and creates its layout.
fn prepare_dir(dir: &Path) -> anyhow::Result<()> {
    if let Some(state) = read_state(dir) {
        let launcher = state["launcher_pid"].as_u64().unwrap_or(0) as u32;
        if launcher != 0
            && stack::alive(launcher)
            && stack::cmdline(launcher).contains("koupleless-up")
        {
            bail!(
                "a stack already runs in {} (launcher pid {launcher}): `scripts/up --status` shows it; \
                 stop it with Ctrl-C in its terminal or `kill {launcher}`",
                dir.display()
            );
        }
        let killed = stack::clean_leftovers(dir, &state);
        if !killed.is_empty() {
            println!("up: killed what a previous run left: {}", killed.join(", "));
        }
    }
    if dir.exists() {
        // Only ever empty a directory this launcher made (or an empty one): `--dir` could
        // name a directory with someone's files in it.
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_none();
        if !empty && !dir.join(MARKER).exists() {
            bail!(
                "{} has files that scripts/up did not write; name an empty or new directory with --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "work directory of scripts/up (koupleless-up): emptied at every start\n",
    )?;
    for sub in ["logs", "modules", "bases", "classes"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    Ok(())
}

fn read_state(dir: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()
}

fn step(clock: Instant, msg: impl AsRef<str>) {
    println!("[{:5.1}s] {}", clock.elapsed().as_secs_f64(), msg.as_ref());
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], koupleless_testkit::free_port()))
}

/// Polls `check` every 100 ms until it holds, failing early when component `name` exits.
async fn wait_for<T>(
    stack: &mut Stack,
    name: &str,
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if let Some(msg) = stack.exited(name) {
            bail!("{msg}");
        }
        if Instant::now() >= deadline {
            let log = stack
                .get(name)
                .map(|c| c.log.display().to_string())
                .unwrap_or_default();
            bail!("{what} not within {limit:?}; see {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(stack: &mut Stack, args: &Args, clock: Instant) -> anyhow::Result<()> {
    let dir = stack.dir.clone();
    let bins = match &args.bin_dir {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory of this binary")?
            .to_path_buf(),
    };
    let repo = match &args.repo {
        Some(r) => r.clone(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    };
    let bin = |name: &str| -> anyhow::Result<PathBuf> {
        let p = bins.join(name);
        if !p.is_file() {
            bail!(
                "{} is missing: build it first (`scripts/up` does: cargo build -p koupleless-up \
                 -p koupleless-agent -p koupleless-controller -p koupleless-kube-apiserver)",
                p.display()
            );
        }
        Ok(p)
    };
    let (apiserver_bin, controller_bin, agent_bin) = (
        bin("koupleless-kube-apiserver")?,
        bin("koupleless-controller")?,
        bin("koupleless-agent")?,
    );
    let tc = koupleless_testkit::toolchain().context("no Java toolchain (java, javac, jar)")?;
    step(clock, format!("work directory {}", dir.display()));

    // 1. The API test server with its scheduler and workload controllers.
    let kubeconfig = dir.join("kubeconfig");
    let mut cmd = Command::new(&apiserver_bin);
    cmd.args(["--port", "0", "--with-controllers", "--kubeconfig"])
        .arg(&kubeconfig);
    stack.spawn(
        "apiserver",
        "Kubernetes API test server + scheduler + workload controllers",
        Tier::ApiServer,
        None,
        cmd,
    )?;

    // 2. The broker.
    let broker = if args.mosquitto {
        let path = koupleless_testkit::broker::mosquitto_path()
            .context("--mosquitto: mosquitto is not installed (scripts/ensure-deps installs it)")?;
        let addr = free_addr();
        let conf_dir = dir.join("mosquitto");
        std::fs::create_dir_all(&conf_dir)?;
        let conf = conf_dir.join("mosquitto.conf");
        // Started as root, Mosquitto would switch to the user `mosquitto`, which cannot write
        // its persistence file here.
        let user = if nix::unistd::Uid::effective().is_root() {
            "user root\n"
        } else {
            ""
        };
        std::fs::write(
            &conf,
            format!(
                "{user}listener {} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n",
                addr.port()
            ),
        )?;
        let mut cmd = Command::new(path);
        cmd.arg("-c").arg(&conf);
        stack.spawn(
            "broker",
            "Mosquitto",
            Tier::Broker,
            Some(format!("mqtt://{addr}")),
            cmd,
        )?;
        addr
    } else {
        let port_file = dir.join("broker.port");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("--broker-port-file").arg(&port_file);
        stack.spawn(
            "broker",
            "embedded MQTT broker (rumqttd)",
            Tier::Broker,
            None,
            cmd,
        )?;
        let port = wait_for(
            stack,
            "broker",
            "the embedded broker",
            Duration::from_secs(20),
            || {
                std::fs::read_to_string(&port_file)
                    .ok()?
                    .trim()
                    .parse::<u16>()
                    .ok()
            },
        )
        .await?;
        SocketAddr::from(([127, 0, 0, 1], port))
    };

    // Compile the base program and build the sample module while the API server starts.
    let classes = dir.join("classes");
    std::fs::write(classes.join("DemoBase.java"), DEMO_BASE_JAVA)?;
    let mut javac = tokio::process::Command::new(&tc.javac);
    javac
        .arg("-d")
        .arg(&classes)
        .arg(classes.join("DemoBase.java"));
    let mut build = tokio::process::Command::new(repo.join("examples/hello-module/build"));
    build.arg(dir.join("modules"));
    if let Some(home) = tc.javac.parent().and_then(Path::parent) {
        build.env("JAVA_HOME", home);
    }
    let (javac, build) = tokio::join!(javac.output(), build.output());
    let javac = javac.context("running javac")?;
    if !javac.status.success() {
        bail!(
            "compiling the base program failed: {}",
            String::from_utf8_lossy(&javac.stderr)
        );
    }
    let build = build.context("running examples/hello-module/build")?;
    if !build.status.success() {
        bail!(
            "building the sample module failed: {}",
            String::from_utf8_lossy(&build.stderr)
        );
    }
    let module_jar = String::from_utf8_lossy(&build.stdout).trim().to_owned();
    step(clock, format!("sample module built: {module_jar}"));

    let api = wait_for(
        stack,
        "apiserver",
        "the API server",
        Duration::from_secs(60),
        || {
            let api = probe::kubeconfig_server(&std::fs::read_to_string(&kubeconfig).ok()?)?;
            matches!(probe::http_get(api, "/version"), Ok((200, _))).then_some(api)
        },
    )
    .await?;
    step(
        clock,
        format!("API test server with scheduler and controllers on http://{api}"),
    );
    wait_for(
        stack,
        "broker",
        "the broker",
        Duration::from_secs(20),
        || probe::listening(broker).then_some(()),
    )
    .await?;
    step(
        clock,
        format!(
            "MQTT broker ({}) on {broker}",
            if args.mosquitto {
                "Mosquitto"
            } else {
                "embedded"
            }
        ),
    );
    stack.facts.insert("kubeconfig".into(), json!(kubeconfig));
    stack
        .facts
        .insert("api_server".into(), json!(format!("http://{api}")));
    stack
        .facts
        .insert("broker".into(), json!(broker.to_string()));
    stack.facts.insert("bases".into(), json!(args.bases));
    stack.facts.insert("module_jar".into(), json!(module_jar));
    for c in &mut stack.components {
        match c.name.as_str() {
            "apiserver" => c.addr = Some(format!("http://{api}")),
            "broker" => c.addr = Some(format!("mqtt://{broker}")),
            _ => {}
        }
    }

    // 3. The controller.
    let (probes, metrics, kubelet) = (free_addr(), free_addr(), free_addr());
    // `kubectl logs`: the API server dials a vnode's InternalIP (the agents' 127.0.0.1) on the
    // kubelet port with its kubelet client certificate, signed by this CA.
    let kubelet_ca = dir.join("kubelet-client-ca.crt");
    std::fs::write(&kubelet_ca, KUBELET_CLIENT_CA_PEM)?;
    let mut cmd = Command::new(&controller_bin);
    cmd.env("KUBECONFIG", &kubeconfig)
        .env("ENV", ENV)
        .env("CLIENT_ID", "koupleless-up")
        .env("ENABLE_MQTT_TUNNEL", "true")
        .env("MQTT_BROKER", "127.0.0.1")
        .env("MQTT_PORT", broker.port().to_string())
        .env("PROBE_ADDR", probes.to_string())
        .env("METRICS_ADDR", metrics.to_string())
        .env("KUBELET_PORT", kubelet.port().to_string())
        .env("KUBELET_CLIENT_CA_FILE", &kubelet_ca);
    stack.spawn(
        "controller",
        "module controller (MQTT tunnel)",
        Tier::Controller,
        Some(format!(
            "probes {probes}, metrics {metrics}, kubelet API {kubelet}"
        )),
        cmd,
    )?;
    wait_for(
        stack,
        "controller",
        "the controller",
        Duration::from_secs(60),
        || matches!(probe::http_get(probes, "/readyz"), Ok((200, _))).then_some(()),
    )
    .await?;
    step(
        clock,
        format!("module controller ready (probes on {probes})"),
    );

    // 4. Bases, each with our agent beside it.
    for i in 1..=args.bases {
        let name = format!("base-{i}");
        let work = dir.join("bases").join(&name);
        std::fs::create_dir_all(&work)?;
        let mut base = Command::new(&tc.java);
        base.current_dir(&work).args(JVM_ARGS);
        let mut telnet = None;
        match &args.ark_base_jar {
            None => {
                base.arg("-XX:MaxMetaspaceSize=128m")
                    .arg("-cp")
                    .arg(&classes)
                    .arg("DemoBase")
                    .arg(&name);
            }
            Some(jar) => {
                let (t, web) = (free_addr(), free_addr());
                base.arg(format!("-Dsofa.ark.telnet.port={}", t.port()))
                    .arg(format!("-Dserver.port={}", web.port()))
                    .arg(format!("-Dspring.application.name={BASE_NAME}"))
                    .arg("-Dactivate.new.module=true")
                    .arg("-jar")
                    .arg(absolute(jar)?);
                telnet = Some((t, web));
            }
        }
        let base_pid = stack
            .spawn(&name, "base JVM", Tier::Base, None, base)?
            .pid();
        let http = free_addr();
        let mut agent = Command::new(&agent_bin);
        agent
            .arg("--port")
            .arg(http.port().to_string())
            .args(["--bind", "127.0.0.1", "--local-ip", "127.0.0.1"])
            .args(["--base-identity", &name, "--base-name", BASE_NAME])
            .arg("--base-pid")
            .arg(base_pid.to_string())
            .arg("--work-dir")
            .arg(work.join("agent"))
            .args(["--mqtt-broker", "127.0.0.1", "--mqtt-port"])
            .arg(broker.port().to_string())
            .args(["--runtime-env", ENV, "--activation", "new-takes-over"])
            // The real port in heartbeats, so the controller can fetch module logs.
            .arg("--mqtt-report-port")
            .args(JVM_ARGS.iter().map(|a| format!("--module-jvm-arg={a}")));
        if let Some((t, web)) = telnet {
            agent
                .args(["--backend", "ark-telnet", "--ark-telnet-addr"])
                .arg(t.to_string())
                .arg("--ark-telnet-ready")
                .arg(format!("tcp://{web}"));
        }
        stack.spawn(
            &format!("agent-{i}"),
            &format!("koupleless-agent beside {name} (Arklet API)"),
            Tier::Agent,
            Some(format!("http://{http}")),
            agent,
        )?;
        step(
            clock,
            format!(
                "{name}: base JVM pid {base_pid}, agent on http://{http} ({} backend)",
                if telnet.is_some() {
                    "ark-telnet"
                } else {
                    "process"
                }
            ),
        );
    }
    stack.save(false)?;

    // Every base's vnode Ready.
    let want: Vec<String> = (1..=args.bases)
        .map(|i| format!("vnode.base-{i}.{ENV}"))
        .collect();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < want.len() {
        for i in 1..=args.bases {
            for name in [format!("base-{i}"), format!("agent-{i}")] {
                if let Some(msg) = stack.exited(&name) {
                    bail!("{msg}");
                }
            }
        }
        if let Ok(nodes) = probe::nodes(api) {
            for (node, ready) in nodes {
                if want.contains(&node) && ready == "True" && !seen.contains(&node) {
                    step(clock, format!("{node} Ready"));
                    seen.push(node);
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "vnodes not Ready within 120s (have {seen:?}); see {}",
                stack.logs().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn banner(stack: &Stack, took: Duration) {
    let kubeconfig = stack.dir.join("kubeconfig");
    println!(
        "\nKoupleless is up in {:.1}s: {} bases with our agent, the module controller, an MQTT \
         broker and a Kubernetes API (test server).\n\nTry, in another terminal:\n\n  \
         export KUBECONFIG={}\n  \
         kubectl get nodes\n  \
         kubectl apply -f deploy/modules/hello-module.yaml\n  \
         kubectl get pods -o wide -w\n\n\
         Logs: {}   Status: scripts/up --status   Stop: Ctrl-C",
        took.as_secs_f64(),
        stack
            .facts
            .get("bases")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        kubeconfig.display(),
        stack.logs().display(),
    );
    if stack.dir != Path::new(DEFAULT_DIR) {
        println!(
            "\nNote: deploy/modules/hello-module.yaml names the module package under {DEFAULT_DIR}; \
             with this work directory, set its image to file://{}/modules/hello-1.0.0-ark-biz.jar",
            stack.dir.display()
        );
    }
}

/// `--status`: what the state file says, checked against the running processes and the API.
fn status(dir: &Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let Some(state) = read_state(dir) else {
        writeln!(out, "no stack runs in {} (no state.json)", dir.display())?;
        return print(&out);
    };
    let launcher = state["launcher_pid"].as_u64().unwrap_or(0) as u32;
    let up = stack::alive(launcher);
    writeln!(
        out,
        "stack in {}: launcher pid {launcher} {}{}",
        dir.display(),
        if up { "running" } else { "GONE" },
        if state["ready"] == true {
            ""
        } else {
            " (still starting)"
        }
    )?;
    for key in ["kubeconfig", "api_server", "broker", "logs", "module_jar"] {
        if let Some(v) = state[key].as_str() {
            writeln!(out, "  {key:<11} {v}")?;
        }
    }
    writeln!(
        out,
        "\n  {:<11} {:>8}  {:<8} {:<48} log",
        "component", "pid", "state", "address"
    )?;
    for c in state["components"].as_array().into_iter().flatten() {
        let pid = c["pid"].as_u64().unwrap_or(0) as u32;
        writeln!(
            out,
            "  {:<11} {:>8}  {:<8} {:<48} {}",
            c["name"].as_str().unwrap_or("?"),
            pid,
            if stack::alive(pid) { "running" } else { "gone" },
            c["addr"].as_str().unwrap_or("-"),
            c["log"].as_str().unwrap_or("-"),
        )?;
    }
    let modules = stack::module_pids(dir);
    writeln!(out, "\n  module JVMs: {}", modules.len())?;
    if let Some(api) = state["api_server"]
        .as_str()
        .and_then(|u| u.strip_prefix("http://"))
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        match probe::nodes(api) {
            Ok(nodes) => {
                for (n, ready) in nodes {
                    writeln!(out, "  node {n:<24} Ready={ready}")?;
                }
            }
            Err(e) => writeln!(out, "  nodes: API server not answering ({e})")?,
        }
    }
    print(&out)
}

/// Writes to stdout, quietly giving up when the reader went away (`scripts/up --status | head`).
fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

/// The embedded broker as its own process (so it logs and stops like every other component):
/// rumqttd on a free loopback port, written to `port_file` once it accepts connections.
async fn run_broker(port_file: &Path) -> anyhow::Result<()> {
    let broker = tokio::task::spawn_blocking(koupleless_testkit::broker::Broker::embedded).await?;
    println!(
        "embedded MQTT broker (rumqttd) on 127.0.0.1:{}",
        broker.port()
    );
    let tmp = port_file.with_extension("tmp");
    std::fs::write(&tmp, broker.port().to_string())?;
    std::fs::rename(&tmp, port_file)?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    println!("embedded MQTT broker stopping");
    tokio::task::spawn_blocking(move || drop(broker)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_dir_empties_only_its_own_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let foreign = tmp.path().join("foreign");
        std::fs::create_dir_all(&foreign).unwrap();
        std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
        let err = prepare_dir(&foreign).unwrap_err().to_string();
        assert!(err.contains("did not write"), "{err}");
        assert!(foreign.join("notes.txt").exists(), "left alone");

        let ours = tmp.path().join("ours");
        prepare_dir(&ours).unwrap();
        assert!(ours.join(MARKER).exists() && ours.join("logs").is_dir());
        std::fs::write(ours.join("logs/old.log"), "old run").unwrap();
        prepare_dir(&ours).unwrap();
        assert!(!ours.join("logs/old.log").exists(), "emptied at start");
        assert!(ours.join("modules").is_dir() && ours.join("bases").is_dir());
    }
}
