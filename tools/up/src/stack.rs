//! The processes of the stack: started in their own process groups with their output in one
//! log folder, recorded in the state file as they start, and stopped in order.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The order components stop in: agents first (each stops its module JVMs and tells the
/// controller it is leaving), the API server last (the controller writes to it until the end).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    /// Our agents.
    Agent,
    /// The module controller.
    Controller,
    /// Base JVMs.
    Base,
    /// The MQTT broker.
    Broker,
    /// The API test server with its controllers.
    ApiServer,
}

/// One started process.
pub struct Component {
    /// Short name (`apiserver`, `agent-1`, …), also the log file's stem.
    pub name: String,
    /// What it is, for `--status`.
    pub what: String,
    /// Where it listens, if anywhere.
    pub addr: Option<String>,
    /// Its log file.
    pub log: PathBuf,
    tier: Tier,
    /// The signal it shuts down cleanly on (the API test server handles only SIGINT).
    stop_signal: Signal,
    child: Child,
    /// Set once its unexpected exit was reported.
    exit_reported: bool,
}

impl Component {
    /// Its pid (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Every process started so far, and where the state file lives.
pub struct Stack {
    /// The work directory.
    pub dir: PathBuf,
    /// Started processes, in start order.
    pub components: Vec<Component>,
    /// Extra facts for the state file (kubeconfig, API server URL, broker).
    pub facts: serde_json::Map<String, Value>,
}

impl Stack {
    /// An empty stack in `dir`.
    pub fn new(dir: PathBuf) -> Stack {
        Stack {
            dir,
            components: Vec::new(),
            facts: serde_json::Map::new(),
        }
    }

    /// The folder every component logs to.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// Starts `cmd` as component `name` in its own process group (so a Ctrl-C in the terminal
    /// reaches only the launcher, which then stops everything in order), stdout and stderr to
    /// `logs/<name>.log`, and records it in the state file.
    pub fn spawn(
        &mut self,
        name: &str,
        what: &str,
        tier: Tier,
        addr: Option<String>,
        mut cmd: Command,
    ) -> anyhow::Result<&Component> {
        use std::os::unix::process::CommandExt as _;
        let log = self.logs().join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", cmd.get_program()))?;
        self.components.push(Component {
            name: name.to_owned(),
            what: what.to_owned(),
            addr,
            log,
            tier,
            stop_signal: if tier == Tier::ApiServer {
                Signal::SIGINT
            } else {
                Signal::SIGTERM
            },
            child,
            exit_reported: false,
        });
        self.save(false)?;
        Ok(self.components.last().expect("just pushed"))
    }

    /// The component named `name`, if it was started.
    pub fn get(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Whether `name` has exited, with its status and the tail of its log for the message.
    pub fn exited(&mut self, name: &str) -> Option<String> {
        let c = self.components.iter_mut().find(|c| c.name == name)?;
        match c.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "{name} exited ({status}); the end of {}:\n{}",
                c.log.display(),
                tail(&c.log, 15)
            )),
            _ => None,
        }
    }

    /// Components that exited since the last call (each reported once).
    pub fn newly_exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &mut self.components {
            if !c.exit_reported
                && let Ok(Some(status)) = c.child.try_wait()
            {
                c.exit_reported = true;
                out.push(format!(
                    "{} exited ({status}); see {}",
                    c.name,
                    c.log.display()
                ));
            }
        }
        out
    }

    /// Writes `state.json`: what runs, where, and the launcher's own pid.
    pub fn save(&self, ready: bool) -> anyhow::Result<()> {
        let mut state = self.facts.clone();
        state.insert("launcher_pid".into(), json!(std::process::id()));
        state.insert("dir".into(), json!(self.dir));
        state.insert("logs".into(), json!(self.logs()));
        state.insert("ready".into(), json!(ready));
        state.insert(
            "components".into(),
            Value::Array(
                self.components
                    .iter()
                    .map(|c| {
                        json!({"name": c.name, "what": c.what, "pid": c.pid(),
                            "addr": c.addr, "log": c.log})
                    })
                    .collect(),
            ),
        );
        let path = self.dir.join("state.json");
        let tmp = self.dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&Value::Object(state))?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Stops everything, tier by tier: the clean-shutdown signal, up to `grace` to exit, then
    /// SIGKILL to the whole process group. Then kills any module JVM of this stack an agent
    /// failed to stop, and removes the state file. Returns what had to be killed.
    pub async fn stop(&mut self, grace: Duration) -> Vec<String> {
        let mut killed = Vec::new();
        let mut tiers: Vec<Tier> = self.components.iter().map(|c| c.tier).collect();
        tiers.sort();
        tiers.dedup();
        for tier in tiers {
            let group: Vec<usize> = (0..self.components.len())
                .filter(|&i| self.components[i].tier == tier)
                .collect();
            for &i in &group {
                let c = &mut self.components[i];
                if matches!(c.child.try_wait(), Ok(None)) {
                    let _ = kill(pid(c.pid()), c.stop_signal);
                }
            }
            let deadline = Instant::now() + grace;
            loop {
                let running = group
                    .iter()
                    .filter(|&&i| matches!(self.components[i].child.try_wait(), Ok(None)))
                    .count();
                if running == 0 || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            for &i in &group {
                let c = &mut self.components[i];
                if matches!(c.child.try_wait(), Ok(None)) {
                    killed.push(c.name.clone());
                }
                // The group too: anything the component started and left behind.
                let _ = kill(Pid::from_raw(-(c.pid() as i32)), Signal::SIGKILL);
                let _ = c.child.wait();
            }
        }
        killed.extend(sweep_modules(&self.dir));
        let _ = std::fs::remove_file(self.dir.join("state.json"));
        killed
    }
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(p as i32)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `/proc/<pid>/cmdline` with NULs as spaces, or empty.
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Whether `pid` runs and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Pids of module JVMs started by this stack's agents: their command line names a module
/// directory under `dir` (the process backend's `-Dkoupleless.agent.module.dir=` marker).
pub fn module_pids(dir: &Path) -> Vec<u32> {
    let marker = format!("-Dkoupleless.agent.module.dir={}/", dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| alive(p) && cmdline(p).contains(&marker))
        .collect()
}

/// SIGKILLs module JVMs of this stack that are still running (an agent that was killed
/// before it could stop them); returns what it killed.
pub fn sweep_modules(dir: &Path) -> Vec<String> {
    module_pids(dir)
        .into_iter()
        .filter(|&p| kill(pid(p), Signal::SIGKILL).is_ok())
        .map(|p| format!("module JVM {p}"))
        .collect()
}

/// Whether a process recorded in an old state file still belongs to a stack in `dir`: its
/// command line or environment names the directory (a reused pid does not).
pub fn belongs_to(pid: u32, dir: &Path) -> bool {
    let d = dir.display().to_string();
    alive(pid)
        && (cmdline(pid).contains(&d)
            || std::fs::read(format!("/proc/{pid}/environ"))
                .map(|b| String::from_utf8_lossy(&b).contains(&d))
                .unwrap_or(false))
}

/// Kills what a launcher that died without stopping its stack left in `dir` (per its state
/// file); returns what it killed.
pub fn clean_leftovers(dir: &Path, state: &Value) -> Vec<String> {
    let mut killed = Vec::new();
    for c in state["components"].as_array().into_iter().flatten() {
        let Some(p) = c["pid"].as_u64().map(|p| p as u32) else {
            continue;
        };
        if belongs_to(p, dir) {
            let _ = kill(Pid::from_raw(-(p as i32)), Signal::SIGKILL);
            let _ = kill(pid(p), Signal::SIGKILL);
            killed.push(format!("{} ({p})", c["name"].as_str().unwrap_or("?")));
        }
    }
    killed.extend(sweep_modules(dir));
    killed
}
