//! The agent with the arklet backend, forwarding to an inner Arklet: here our own agent with
//! the process backend, started on port 0, so the whole forward path runs end to end with
//! real module JVMs (compiled with javac at test time). Both agents are driven over HTTP.

use koupleless_testkit::eventually;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::config::Config;
use koupleless_testkit::{
    Behaviour, BizJar, FAIL_MESSAGE, SMALL_JVM_ARGS, file_url, java_available, process_alive,
    read_pid_file,
};
use serde_json::{Value, json};

/// One agent over HTTP.
struct Api {
    agent: Option<Agent>,
    url: String,
    client: reqwest::Client,
}

impl Api {
    async fn start(args: Vec<String>) -> Api {
        let agent = app::start(Config::parse_from(args))
            .await
            .expect("agent starts");
        let url = format!("http://{}", agent.addr());
        Api {
            agent: Some(agent),
            url,
            client: reqwest::Client::new(),
        }
    }

    async fn call(&self, cmd: &str, body: Value) -> Value {
        let resp = self
            .client
            .post(format!("{}/{cmd}", self.url))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().await.expect("JSON")
    }

    async fn list(&self) -> Vec<(String, String, String)> {
        let v = self.call("queryAllBiz", json!({})).await;
        let mut l: Vec<_> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["bizName"].as_str().unwrap().to_owned(),
                    b["bizVersion"].as_str().unwrap().to_owned(),
                    b["bizState"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        l.sort();
        l
    }

    async fn shutdown(&mut self) {
        if let Some(a) = self.agent.take() {
            tokio::time::timeout(Duration::from_secs(30), a.shutdown())
                .await
                .expect("agent shuts down in time");
        }
    }
}

fn args(work: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-name",
        "base",
        "--work-dir",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    v.push(work.display().to_string());
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

/// The inner Arklet: our agent with the process backend, as a base with an embedded Arklet.
async fn inner(work: &Path) -> Api {
    assert!(
        java_available(),
        "these tests need java, javac and jar (JAVA_HOME or PATH)"
    );
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    Api::start(args(
        work,
        &[
            "--base-identity",
            "10.0.0.6",
            "--stop-grace",
            "3s",
            "--module-jvm-arg",
            &jvm_args,
        ],
    ))
    .await
}

/// The agent under test, forwarding to `inner`.
async fn outer(work: &Path, inner_url: &str, extra: &[&str]) -> Api {
    let mut a = vec![
        "--base-identity",
        "10.0.0.5",
        "--backend",
        "arklet",
        "--inner-arklet-url",
        inner_url,
        "--inner-arklet-monitor-interval",
        "100ms",
    ];
    a.extend_from_slice(extra);
    Api::start(args(work, &a)).await
}

fn jar(dir: &Path, name: &str, version: &str, steps: &[Behaviour]) -> String {
    let mut b = BizJar::new(name, version);
    for s in steps {
        b = b.behaviour(s.clone());
    }
    file_url(&b.build(dir))
}

fn install_body(name: &str, version: &str, url: &str) -> Value {
    json!({"bizName": name, "bizVersion": version, "bizUrl": url})
}

fn t(name: &str, version: &str, state: &str) -> (String, String, String) {
    (name.to_owned(), version.to_owned(), state.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_install_switch_uninstall_and_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut base = inner(&tmp.path().join("inner")).await;
    let mut agent = outer(&tmp.path().join("outer"), &base.url, &[]).await;
    let a1 = jar(&jars, "biz-a", "1.0.0", &[Behaviour::StayUp]);
    let a2 = jar(&jars, "biz-a", "2.0.0", &[Behaviour::StayUp]);

    let v = agent
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(v["baseIdentity"], "10.0.0.5", "the outer agent answers");
    let model = &v["data"]["bizInfos"][0];
    assert_eq!(model["bizState"], "activated");
    // Work directory and class path come from the inner Arklet's answer.
    let inner_work = tmp.path().join("inner").canonicalize().unwrap();
    assert!(
        model["bizTempWorkDir"]
            .as_str()
            .unwrap()
            .starts_with(inner_work.to_str().unwrap()),
        "{model}"
    );
    assert!(
        !model["classPath"].as_array().unwrap().is_empty(),
        "{model}"
    );
    assert_eq!(base.list().await, [t("biz-a", "1.0.0", "activated")]);

    let v = agent
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert_eq!(v["data"]["code"], "REPEAT_BIZ", "{v}");

    let v = agent
        .call("installBiz", install_body("biz-a", "2.0.0", &a2))
        .await;
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "deactivated", "{v}");
    assert_eq!(
        base.list().await,
        [
            t("biz-a", "1.0.0", "activated"),
            t("biz-a", "2.0.0", "deactivated")
        ]
    );

    let v = agent
        .call("switchBiz", json!({"bizName":"biz-a","bizVersion":"2.0.0"}))
        .await;
    assert_eq!(
        v["data"],
        json!({"code":"SUCCESS","message":"Switch biz: biz-a:2.0.0 is activated."}),
        "{v}"
    );
    assert_eq!(
        base.list().await,
        [
            t("biz-a", "1.0.0", "deactivated"),
            t("biz-a", "2.0.0", "activated")
        ]
    );
    assert_eq!(agent.list().await, base.list().await);

    let v = agent
        .call("uninstallBiz", json!({"bizName":"nope","bizVersion":"1"}))
        .await;
    assert_eq!(
        v["data"],
        json!({"code":"NOT_FOUND_BIZ","message":"Uninstall biz: nope:1 not found."})
    );
    let v = agent
        .call("switchBiz", json!({"bizName":"nope","bizVersion":"1"}))
        .await;
    assert_eq!(v["data"]["code"], "NOT_FOUND_BIZ");

    let v = agent
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"2.0.0"}),
        )
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(base.list().await, [t("biz-a", "1.0.0", "deactivated")]);

    // The module's own start failure, reported by the inner Arklet, with its exception.
    let bad = jar(&jars, "biz-bad", "1.0.0", &[Behaviour::FailAtStart]);
    let v = agent
        .call("installBiz", install_body("biz-bad", "1.0.0", &bad))
        .await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Internal Error: install of biz-bad:1.0.0 failed: "),
        "{msg}"
    );
    assert!(msg.contains(FAIL_MESSAGE), "{msg}");
    assert_eq!(v["errorCode"], "User.InstallBizUserError");
    assert!(!agent.list().await.iter().any(|b| b.0 == "biz-bad"));
    assert!(!base.list().await.iter().any(|b| b.0 == "biz-bad"));

    agent.shutdown().await;
    // Shutting the sidecar down leaves the base's modules running.
    assert_eq!(base.list().await, [t("biz-a", "1.0.0", "deactivated")]);
    base.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopts_modules_and_notices_them_leaving() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut base = inner(&tmp.path().join("inner")).await;
    let m1 = jar(&jars, "m1", "1.0.0", &[Behaviour::StayUp]);
    assert_eq!(
        base.call("installBiz", install_body("m1", "1.0.0", &m1))
            .await["code"],
        "SUCCESS"
    );

    let mut agent = outer(&tmp.path().join("outer"), &base.url, &[]).await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            agent.list().await == [t("m1", "1.0.0", "activated")]
        })
        .await,
        "{:?}",
        agent.list().await
    );
    // Installed in the base by another client after start-up: the outer install adopts it
    // (the inner Arklet answers REPEAT_BIZ) instead of failing.
    let m2 = jar(&jars, "m2", "1.0.0", &[Behaviour::StayUp]);
    assert_eq!(
        base.call("installBiz", install_body("m2", "1.0.0", &m2))
            .await["code"],
        "SUCCESS"
    );
    let v = agent
        .call("installBiz", install_body("m2", "1.0.0", &m2))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(
        agent.list().await,
        [t("m1", "1.0.0", "activated"), t("m2", "1.0.0", "activated")]
    );

    // Removed behind the agent's back: reported as broken with the reason.
    assert_eq!(
        base.call("uninstallBiz", json!({"bizName":"m1","bizVersion":"1.0.0"}))
            .await["code"],
        "SUCCESS"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            agent.list().await == [t("m1", "1.0.0", "broken"), t("m2", "1.0.0", "activated")]
        })
        .await,
        "{:?}",
        agent.list().await
    );
    // Removing it from the agent then succeeds (it is already gone from the base).
    let v = agent
        .call("uninstallBiz", json!({"bizName":"m1","bizVersion":"1.0.0"}))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    agent.shutdown().await;
    base.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_timeout_is_reported_and_the_late_module_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut base = inner(&tmp.path().join("inner")).await;
    let mut agent = outer(
        &tmp.path().join("outer"),
        &base.url,
        &["--start-timeout", "1s"],
    )
    .await;
    // The module is up only once it has written its pid file (the readiness line comes
    // after it), so the file proves its start completed.
    let pid_file = tmp.path().join("slow.pid");
    let slow = jar(
        &jars,
        "slow",
        "1.0.0",
        &[
            Behaviour::Sleep(Duration::from_millis(2500)),
            Behaviour::WritePidFile(pid_file.clone()),
            Behaviour::PrintLine("slow: started".into()),
            Behaviour::StayUp,
        ],
    );
    let mut body = install_body("slow", "1.0.0", &slow);
    body["envs"] = json!({"koupleless.agent.ready.log": "slow: started"});
    let began = Instant::now();
    let v = agent.call("installBiz", body).await;
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "the outer deadline holds"
    );
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert_eq!(
        v["message"],
        "Internal Error: install of slow:1.0.0 failed: install of slow:1.0.0 timed out after 1 s"
    );
    assert_eq!(v["errorCode"], "Arklet.InstallBizTimedOut");
    assert!(agent.list().await.is_empty());
    // The inner install is not cut off: it carries on and completes...
    assert_eq!(base.list().await, [t("slow", "1.0.0", "resolved")]);
    assert!(
        eventually(Duration::from_secs(15), || async {
            read_pid_file(&pid_file).is_some()
        })
        .await,
        "the module's start completed"
    );
    let pid = read_pid_file(&pid_file).unwrap();
    // ...and the agent removes what it gave up on: nothing is left running in the base.
    assert!(
        eventually(Duration::from_secs(15), || async {
            base.list().await.is_empty() && !process_alive(pid)
        })
        .await,
        "{:?}",
        base.list().await
    );
    agent.shutdown().await;
    base.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_inner_arklet_is_a_network_error() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", koupleless_testkit::free_port());
    let mut agent = outer(&tmp.path().join("outer"), &closed, &[]).await;
    let dir = tmp.path().join("jars");
    std::fs::create_dir_all(&dir).unwrap();
    let url = file_url(
        &koupleless_testkit::RawZip::ark_biz("m", "1", "a.Main")
            .write(&dir.join("m.jar"))
            .unwrap(),
    );
    let began = Instant::now();
    let v = agent.call("installBiz", install_body("m", "1", &url)).await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("unreachable"),
        "{v}"
    );
    assert_eq!(v["errorCode"], "Arklet.NetworkError");
    assert!(began.elapsed() < Duration::from_secs(5));
    // The agent's own commands keep working.
    assert_eq!(agent.call("health", json!({})).await["code"], "SUCCESS");
    assert!(agent.list().await.is_empty());
    agent.shutdown().await;
}

/// Modules inside the base JVM share its output: with `--base-log-file` the agent serves the
/// base's log for them and says so; without it, a clear 404 names the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_logs_of_an_in_jvm_backend_are_the_base_log() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let base_log = tmp.path().join("base.log");
    std::fs::write(&base_log, "base line 1\nbase line 2\nbase line 3\n").unwrap();
    let mut base = inner(&tmp.path().join("inner")).await;
    let log_arg = base_log.display().to_string();
    let mut with_log = outer(
        &tmp.path().join("outer"),
        &base.url,
        &["--base-log-file", &log_arg],
    )
    .await;
    let a1 = jar(&jars, "biz-a", "1.0.0", &[Behaviour::StayUp]);
    let v = with_log
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");

    let resp = with_log
        .client
        .get(format!("{}/logs/biz-a/1.0.0?tailLines=2", with_log.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-koupleless-log-source"], "base");
    assert_eq!(resp.text().await.unwrap(), "base line 2\nbase line 3\n");

    // The same agent without the setting: no log to serve, and it says which setting.
    with_log.shutdown().await;
    let mut without = outer(&tmp.path().join("outer2"), &base.url, &[]).await;
    let v = without
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert!(
        matches!(v["code"].as_str(), Some("SUCCESS" | "FAILED")),
        "{v}"
    );
    let listed = without.list().await;
    assert!(
        listed.iter().any(|(n, _, _)| n == "biz-a"),
        "the module is known to the agent: {listed:?}"
    );
    let resp = without
        .client
        .get(format!("{}/logs/biz-a/1.0.0", without.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("--base-log-file"),
        "{body}"
    );
    without.shutdown().await;
    base.shutdown().await;
}
