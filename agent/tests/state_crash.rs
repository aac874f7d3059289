//! The state file under concurrency and crashes: the agent binary runs as a child process
//! with the arklet backend over a small in-test inner Arklet (so installs are fast and truly
//! concurrent), 50 clients install and uninstall their own module with ever new versions, and
//! the agent is killed with SIGKILL at a random moment (every other round after the clients
//! stopped and their last replies arrived). After each kill:
//!
//! * the state file must agree with the last successful reply of every client: a module the
//!   last reply said was installed is there, one it said was removed is not; a client whose
//!   request was cut by the kill may see either its last confirmed state or the one its
//!   request asked for, nothing older;
//! * the restarted agent (over a fresh inner Arklet, as after a base restart) restores exactly
//!   the set in the state file.
//!
//! Versions make an older state visible: after "uninstall v3" the next request is "install v4",
//! so a file still listing v3 is stale whatever happened to the request in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use koupleless_testkit::{RawZip, file_url};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const AGENT: &str = env!("CARGO_BIN_EXE_koupleless-agent");
const CLIENTS: usize = 50;
const ROUNDS: usize = 8;

type Modules = Arc<Mutex<BTreeSet<(String, String)>>>;

fn field(body: &Value, k: &str) -> String {
    body.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A minimal inner Arklet: installs and uninstalls succeed at once (in memory), as the Java
/// Arklet answers them (spec protocol §2.4).
async fn inner_arklet() -> (SocketAddr, CancellationToken) {
    let modules: Modules = Arc::default();
    let app = Router::new()
        .route(
            "/installBiz",
            post(|State(m): State<Modules>, Json(b): Json<Value>| async move {
                let (name, version) = (field(&b, "bizName"), field(&b, "bizVersion"));
                if !m.lock().unwrap().insert((name.clone(), version.clone())) {
                    return Json(json!({"code": "FAILED", "message": "install biz not success!",
                        "data": {"code": "REPEAT_BIZ", "message": "repeat"}}));
                }
                Json(json!({"code": "SUCCESS", "data": {"code": "SUCCESS", "message": "ok",
                    "bizInfos": [{"bizName": name, "bizVersion": version,
                        "bizState": "activated", "mainClass": "com.example.Main"}]}}))
            }),
        )
        .route(
            "/uninstallBiz",
            post(|State(m): State<Modules>, Json(b): Json<Value>| async move {
                let key = (field(&b, "bizName"), field(&b, "bizVersion"));
                if m.lock().unwrap().remove(&key) {
                    Json(json!({"code": "SUCCESS", "data": {"code": "SUCCESS", "message": "ok"}}))
                } else {
                    Json(json!({"code": "FAILED", "message": "uninstall biz not success!",
                        "data": {"code": "NOT_FOUND_BIZ", "message": "not found"}}))
                }
            }),
        )
        .route(
            "/queryAllBiz",
            post(|State(m): State<Modules>| async move {
                let list: Vec<Value> = m
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(n, v)| json!({"bizName": n, "bizVersion": v, "bizState": "activated"}))
                    .collect();
                Json(json!({"code": "SUCCESS", "data": list}))
            }),
        )
        .with_state(modules);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(c.cancelled_owned())
            .await
            .unwrap();
    });
    (addr, cancel)
}

/// The agent as a child process; its HTTP address is read from its log.
struct AgentProcess {
    child: Child,
    url: String,
}

fn spawn_agent(work: &Path, inner: SocketAddr) -> AgentProcess {
    let mut child = Command::new(AGENT)
        .args(["--port", "0", "--bind", "127.0.0.1", "--base-identity", "t"])
        .args([
            "--backend",
            "arklet",
            "--inner-arklet-monitor-interval",
            "1h",
        ])
        .arg("--inner-arklet-url")
        .arg(format!("http://{inner}"))
        .arg("--work-dir")
        .arg(work)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent binary starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if !sent && line.contains("Arklet HTTP API listening") {
                let addr = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .map(str::to_owned);
                sent = tx.send(addr).is_ok();
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("agent logs its address")
        .expect("address in the listening line");
    AgentProcess {
        child,
        url: format!("http://{addr}"),
    }
}

impl AgentProcess {
    fn kill9(&mut self) {
        // `Child::kill` is SIGKILL on Unix: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client knows about its module.
#[derive(Clone, Debug, Default)]
struct Client {
    /// The installed version per the last successful reply (`None`: not installed).
    confirmed: Option<u32>,
    /// The state its unanswered request asked for, if one was cut by the kill.
    pending: Option<Option<u32>>,
    /// The next version to install.
    next_version: u32,
}

fn jar_url(dir: &Path, name: &str, version: u32) -> String {
    let path = dir.join(format!("{name}-{version}.jar"));
    if !path.exists() {
        RawZip::ark_biz(name, &version.to_string(), "com.example.Main")
            .write(&path)
            .unwrap();
    }
    file_url(&path)
}

/// One client: alternately installs a new version of its module and uninstalls it, until a
/// request fails (the agent was killed).
async fn client_loop(
    http: reqwest::Client,
    url: String,
    jars: PathBuf,
    name: String,
    state: Arc<Mutex<Client>>,
    quiesce: CancellationToken,
) {
    while !quiesce.is_cancelled() {
        let (cmd, body, want) = {
            let mut s = state.lock().unwrap();
            let (cmd, body, want) = match s.confirmed {
                Some(v) => (
                    "uninstallBiz",
                    json!({"bizName": name, "bizVersion": v.to_string()}),
                    None,
                ),
                None => {
                    let v = s.next_version;
                    s.next_version += 1;
                    let jar = jar_url(&jars, &name, v);
                    (
                        "installBiz",
                        json!({"bizName": name, "bizVersion": v.to_string(), "bizUrl": jar}),
                        Some(v),
                    )
                }
            };
            s.pending = Some(want);
            (cmd, body, want)
        };
        let reply = async {
            let resp = http.post(format!("{url}/{cmd}")).json(&body).send().await?;
            resp.json::<Value>().await
        }
        .await;
        let mut s = state.lock().unwrap();
        match reply {
            Ok(v) if v["code"] == "SUCCESS" => {
                s.confirmed = want;
                s.pending = None;
            }
            Ok(v) => panic!("{name}: {cmd} failed while the agent ran: {v}"),
            // Cut by the kill: the outcome is unknown, `pending` stays.
            Err(_) => return,
        }
    }
}

/// The modules in the state file, as `name -> version`.
fn state_file_modules(work: &Path) -> BTreeMap<String, u32> {
    let text = match std::fs::read(work.join("state.json")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => panic!("state file unreadable: {e}"),
    };
    let v: Value = serde_json::from_slice(&text).expect("state file is whole JSON");
    v["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["key"]["name"].as_str().unwrap().to_owned(),
                m["key"]["version"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn listed(http: &reqwest::Client, url: &str) -> Option<BTreeMap<String, u32>> {
    let v: Value = http
        .post(format!("{url}/queryAllBiz"))
        .json(&json!({}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["data"]
        .as_array()?
        .iter()
        .filter(|b| b["bizState"] == "activated")
        .map(|b| {
            Some((
                b["bizName"].as_str()?.to_owned(),
                b["bizVersion"].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

/// A small deterministic-per-run pseudo-random source (no extra dependency): kill moments.
fn xorshift(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_installs_loses_no_acknowledged_state() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let http = reqwest::Client::new();
    let names: Vec<String> = (0..CLIENTS).map(|i| format!("mod-{i:02}")).collect();
    let clients: Vec<Arc<Mutex<Client>>> = names
        .iter()
        .map(|_| {
            Arc::new(Mutex::new(Client {
                next_version: 1,
                ..Client::default()
            }))
        })
        .collect();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");

    let (mut inner, mut stop_inner) = inner_arklet().await;
    let mut agent = spawn_agent(&work, inner);
    for round in 0..ROUNDS {
        let quiesce = CancellationToken::new();
        let tasks: Vec<_> = names
            .iter()
            .zip(&clients)
            .map(|(name, state)| {
                tokio::spawn(client_loop(
                    http.clone(),
                    agent.url.clone(),
                    jars.clone(),
                    name.clone(),
                    Arc::clone(state),
                    quiesce.clone(),
                ))
            })
            .collect();
        let delay = Duration::from_millis(300 + xorshift(&mut seed) % 1200);
        tokio::time::sleep(delay).await;
        // Odd rounds kill in the middle of the traffic; even rounds let every answered
        // request settle first, so each client knows its state exactly and the last write
        // of the file is what is checked.
        let settled = round % 2 == 0;
        if settled {
            quiesce.cancel();
            for t in tasks {
                t.await.expect("client task");
            }
            agent.kill9();
        } else {
            agent.kill9();
            for t in tasks {
                t.await.expect("client task");
            }
        }

        // The state file agrees with the last successful replies.
        let file = state_file_modules(&work);
        let mut stale = Vec::new();
        for (name, state) in names.iter().zip(&clients) {
            let s = state.lock().unwrap().clone();
            let found = file.get(name).copied();
            let ok = found == s.confirmed || s.pending.is_some_and(|p| found == p);
            if !ok {
                stale.push(format!(
                    "{name}: file has {found:?}, last reply said {:?}, cut request asked {:?}",
                    s.confirmed, s.pending
                ));
            }
        }
        assert!(
            stale.is_empty(),
            "round {round} (killed after {delay:?}, settled: {settled}): the state file disagrees with acknowledged replies:\n{}",
            stale.join("\n")
        );
        let total_ops: u32 = clients.iter().map(|c| c.lock().unwrap().next_version).sum();
        eprintln!(
            "round {round}: killed after {delay:?}, {} modules in the state file, {total_ops} installs so far",
            file.len()
        );

        // A restart over a fresh base restores exactly that set.
        stop_inner.cancel();
        (inner, stop_inner) = inner_arklet().await;
        agent = spawn_agent(&work, inner);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        while Instant::now() < deadline {
            last = listed(&http, &agent.url).await;
            if last.as_ref() == Some(&file) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            last.as_ref(),
            Some(&file),
            "round {round}: the restarted agent did not restore the state file's set"
        );
        // The clients continue from what was restored: the cut requests are settled.
        for (name, state) in names.iter().zip(&clients) {
            let mut s = state.lock().unwrap();
            s.confirmed = file.get(name).copied();
            s.pending = None;
        }
    }
    agent.kill9();
    stop_inner.cancel();
}
