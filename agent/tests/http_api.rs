//! The Arklet HTTP API end to end: the real agent on a real port, real module JVMs built with
//! javac at test time, a real HTTP client. Every command and error path of spec protocol §2.

use koupleless_testkit::eventually;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::config::Config;
use koupleless_testkit::{Behaviour, BizJar, SMALL_JVM_ARGS, file_url, java_available};
use serde_json::{Value, json};

struct Harness {
    agent: Option<Agent>,
    url: String,
    client: reqwest::Client,
    work: PathBuf,
}

async fn start_agent(work: &Path, extra: &[&str]) -> Harness {
    assert!(java_available(), "these tests need java, javac and jar");
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    let mut args = vec![
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "10.0.0.5",
        "--base-name",
        "test-base",
        "--stop-grace",
        "3s",
        "--work-dir",
        work.to_str().unwrap(),
        "--module-jvm-arg",
        &jvm_args,
    ];
    args.extend_from_slice(extra);
    let agent = app::start(Config::parse_from(args))
        .await
        .expect("agent starts");
    let url = format!("http://{}", agent.addr());
    Harness {
        agent: Some(agent),
        url,
        client: reqwest::Client::new(),
        work: work.to_owned(),
    }
}

impl Harness {
    async fn raw(&self, cmd: &str, body: &str) -> (u16, String) {
        let resp = self
            .client
            .post(format!("{}/{cmd}", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    async fn call(&self, cmd: &str, body: Value) -> Value {
        let (status, text) = self.raw(cmd, &body.to_string()).await;
        assert_eq!(status, 200, "{cmd}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {text}"))
    }

    async fn list(&self) -> Vec<Value> {
        let v = self.call("queryAllBiz", json!({})).await;
        v["data"].as_array().unwrap().clone()
    }

    async fn shutdown(&mut self) {
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
    }

    fn packages_dir(&self) -> PathBuf {
        self.work.join("packages")
    }
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

fn states(list: &[Value]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|b| {
            (
                b["bizName"].as_str().unwrap().to_owned(),
                b["bizVersion"].as_str().unwrap().to_owned(),
                b["bizState"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn jar_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "jar"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_empty_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = start_agent(tmp.path(), &[]).await;
    let help = h.call("help", json!({})).await;
    assert_eq!(help["code"], "SUCCESS");
    assert_eq!(help["baseIdentity"], "10.0.0.5");
    let mut ids: Vec<(String, String)> = help["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().into(),
                c["desc"].as_str().unwrap().into(),
            )
        })
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            ("batchInstallBiz", "install one ark biz"),
            ("health", "get all health info"),
            ("help", "list all supported commands"),
            ("installBiz", "install one ark biz"),
            ("queryAllBiz", "query all ark biz(including master biz)"),
            ("queryBizOps", "query ark biz ops"),
            ("switchBiz", "switch one ark biz"),
            ("uninstallBiz", "uninstall one ark biz"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    // Empty body (curl, arkctl) is a null input, accepted by the query commands.
    let (status, text) = h.raw("queryAllBiz", "").await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        r#"{"baseIdentity":"10.0.0.5","code":"SUCCESS","data":[]}"#
    );
    let health = h.call("health", json!({})).await;
    assert_eq!(health["code"], "SUCCESS");
    let hd = &health["data"]["healthData"];
    assert_eq!(hd["masterBizInfo"]["bizName"], "test-base");
    assert_eq!(hd["masterBizInfo"]["bizState"], "activated");
    assert!(hd["cpu"]["count"].is_u64(), "{hd}");
    assert_eq!(hd["bizListInfo"][0]["bizName"], "test-base");
    assert_eq!(hd["pluginListInfo"], json!([]));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_answered_promptly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = start_agent(tmp.path(), &[]).await;
    let cases: [(&str, &str, u16, &str, &str); 10] = [
        (
            "installBiz",
            r#"{"bizName":"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: request body is not valid JSON",
        ),
        (
            "installBiz",
            r#"[1,2]"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: request body must be a JSON object",
        ),
        (
            "installBiz",
            r#"{"bizName":"a","bizVersion":"1"}"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: bizUrl should not be blank",
        ),
        (
            "installBiz",
            r#"{"bizName":"a","bizUrl":"file:///x.jar"}"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: bizName and bizVersion should be both blank or both not blank.",
        ),
        (
            "installBiz",
            r#"{"bizName":"a","bizVersion":"1","bizUrl":"file:///x.jar","async":true}"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: requestId should not be blank when async is true",
        ),
        (
            "installBiz",
            r#"{"bizName":"a","bizVersion":"1","bizUrl":"/opt/x.jar"}"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: no protocol: /opt/x.jar",
        ),
        (
            "uninstallBiz",
            r#"{"bizVersion":"1"}"#,
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: bizName should not be blank",
        ),
        (
            "queryBizOps",
            "",
            200,
            "CMD_PROCESS_INTERNAL_ERROR",
            "Internal Error: request is null",
        ),
        (
            "fooBar",
            "{}",
            200,
            "CMD_NOT_FOUND",
            "please follow the doc",
        ),
        ("help/", "{}", 200, "CMD_NOT_FOUND", "please follow the doc"),
    ];
    for (cmd, body, want_status, want_code, want_msg) in cases {
        let (status, text) = h.raw(cmd, body).await;
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{cmd} {body}: {text}"));
        assert_eq!(status, want_status, "{cmd} {body}: {text}");
        assert_eq!(v["code"], want_code, "{cmd} {body}: {text}");
        assert!(
            v["message"].as_str().unwrap().starts_with(want_msg),
            "{cmd} {body}: {text}"
        );
        assert!(
            v.get("baseIdentity").is_none(),
            "{cmd}: internal errors carry no baseIdentity"
        );
        assert!(
            v["errorCode"].is_string(),
            "{cmd}: two-level error code present: {text}"
        );
    }
    // Oversized body: a JSON error, not a hang or a bare status.
    let big = format!(r#"{{"bizUrl":"{}"}}"#, "x".repeat(2 << 20));
    let (status, text) = h.raw("installBiz", &big).await;
    assert_eq!(status, 413);
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
    // Other methods: a clear error.
    let resp = h
        .client
        .get(format!("{}/help", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(
        resp.text().await.unwrap(),
        "POST http request only supported by arklet"
    );
    // Query strings are ignored, like upstream.
    let v = h.call("help?x=1", json!({})).await;
    assert_eq!(v["code"], "SUCCESS");
    // Lenient keys and string booleans, like fastjson.
    let v = h
        .call("health", json!({"TYPE": "system", "Metrics": ["cpu"]}))
        .await;
    assert_eq!(
        v["data"]["healthData"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["cpu"]
    );
    let v = h.call("health", json!({"type": "nope"})).await;
    assert_eq!(v["message"], "Internal Error: type: nope can not be found");
    let v = h
        .call(
            "health",
            json!({"type": "biz", "bizName": "nope", "bizVersion": "1"}),
        )
        .await;
    assert_eq!(
        v,
        json!({"baseIdentity":"10.0.0.5","code":"FAILED","errorCode":"Arklet.NoMatchedBiz","message":"can not find biz"})
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_two_versions_switch_and_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let a1 = jar(&jars, "biz-a", "1.0.0", &[Behaviour::StayUp]);
    let a2 = jar(&jars, "biz-a", "2.0.0", &[Behaviour::StayUp]);

    let v = h
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    let data = &v["data"];
    assert_eq!(data["code"], "SUCCESS");
    assert!(data["elapsedSpace"].is_i64());
    assert!(
        data["message"]
            .as_str()
            .unwrap()
            .starts_with("Install Biz: biz-a:1.0.0 success, cost: ")
    );
    let model = &data["bizInfos"][0];
    assert_eq!(model["bizState"], "activated");
    assert_eq!(model["identity"], "biz-a:1.0.0");
    assert_eq!(model["priority"], 100);
    let reasons: Vec<_> = model["bizStateRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("Created"), json!("Started")]);
    assert!(model["bizStateRecords"][0]["changeTime"].is_i64());

    // Same identity again: REPEAT_BIZ, and the fetched copy is not left behind.
    let jars_before = jar_count(&h.packages_dir());
    let v = h
        .call("installBiz", install_body("biz-a", "1.0.0", &a1))
        .await;
    assert_eq!(v["code"], "FAILED");
    assert_eq!(v["message"], "install biz not success!");
    assert_eq!(v["data"]["code"], "REPEAT_BIZ");
    assert_eq!(
        v["data"]["message"],
        "Biz: biz-a:1.0.0 has been installed or registered."
    );
    assert_eq!(jar_count(&h.packages_dir()), jars_before);

    // A second version starts deactivated, as sofa-ark does.
    let v = h
        .call("installBiz", install_body("biz-a", "2.0.0", &a2))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "deactivated");
    assert_eq!(
        v["data"]["bizInfos"][0]["bizStateRecords"][1]["message"],
        "start but is deactivated"
    );
    assert_eq!(
        states(&h.list().await),
        [
            ("biz-a".into(), "2.0.0".into(), "deactivated".into()),
            ("biz-a".into(), "1.0.0".into(), "activated".into())
        ]
    );

    let v = h
        .call("switchBiz", json!({"bizName":"biz-a","bizVersion":"2.0.0"}))
        .await;
    assert_eq!(
        v,
        json!({"baseIdentity":"10.0.0.5","code":"SUCCESS","data":{"code":"SUCCESS","message":"Switch biz: biz-a:2.0.0 is activated."}})
    );
    let list = h.list().await;
    assert_eq!(
        states(&list),
        [
            ("biz-a".into(), "2.0.0".into(), "activated".into()),
            ("biz-a".into(), "1.0.0".into(), "deactivated".into())
        ]
    );
    let old_last = list[1]["bizStateRecords"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(old_last["message"], "switch to new version biz-a:2.0.0");
    assert_eq!(old_last["reason"], "Switched");

    let v = h
        .call("switchBiz", json!({"bizName":"biz-z","bizVersion":"9"}))
        .await;
    assert_eq!(
        v["data"],
        json!({"code":"NOT_FOUND_BIZ","message":"Switch biz: biz-z:9 not found."})
    );
    assert_eq!(v["message"], "switch biz not success!");

    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-zzz","bizVersion":"9.9.9"}),
        )
        .await;
    assert_eq!(
        v,
        json!({"baseIdentity":"10.0.0.5","code":"FAILED","data":{"code":"NOT_FOUND_BIZ","message":"Uninstall biz: biz-zzz:9.9.9 not found."},"errorCode":"Arklet.NoMatchedBiz","message":"uninstall biz not success!"})
    );
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"test-base","bizVersion":"1.0.0"}),
        )
        .await;
    assert_eq!(v["data"]["message"], "Master biz must not be uninstalled.");

    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"2.0.0"}),
        )
        .await;
    assert_eq!(
        v,
        json!({"baseIdentity":"10.0.0.5","code":"SUCCESS","data":{"code":"SUCCESS","message":"Uninstall biz: biz-a:2.0.0 success."}})
    );
    assert_eq!(
        states(&h.list().await),
        [("biz-a".into(), "1.0.0".into(), "deactivated".into())]
    );
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"1.0.0"}),
        )
        .await;
    assert_eq!(v["code"], "SUCCESS");
    assert!(h.list().await.is_empty());
    assert_eq!(
        jar_count(&h.packages_dir()),
        0,
        "uninstall removes the fetched packages"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_install_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let bad = jar(&jars, "biz-fail", "1.0.0", &[Behaviour::FailAtStart]);
    let v = h
        .call("installBiz", install_body("biz-fail", "1.0.0", &bad))
        .await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Internal Error: install of biz-fail:1.0.0 failed"),
        "{msg}"
    );
    assert!(
        msg.contains(koupleless_testkit::FAIL_MESSAGE),
        "the module's own exception is reported: {msg}"
    );
    assert_eq!(v["errorCode"], "User.InstallBizUserError");
    assert!(h.list().await.is_empty());
    assert_eq!(jar_count(&h.packages_dir()), 0);
    let modules = h.work.join("modules");
    let leftovers: Vec<_> = std::fs::read_dir(&modules)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "unpacked module directories left: {leftovers:?}"
    );

    let v = h
        .call(
            "installBiz",
            install_body("biz-x", "1.0.0", "file:///nonexistent/missing.jar"),
        )
        .await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR");
    assert_eq!(
        v["message"],
        "Internal Error: package not found: /nonexistent/missing.jar (No such file or directory)"
    );
    assert_eq!(v["errorCode"], "Arklet.PullBizError");

    let not_ark = file_url(&BizJar::new("plain", "1").no_mark().build(&jars));
    let v = h
        .call("installBiz", install_body("plain", "1", &not_ark))
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Archive must be a ark biz!"),
        "{v}"
    );
    assert_eq!(jar_count(&h.packages_dir()), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_from_manifest_and_uninstall_then_install() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let b1 = jar(&jars, "biz-b", "1.0.0", &[Behaviour::StayUp]);
    let v = h.call("installBiz", json!({"bizUrl": b1})).await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(v["data"]["bizInfos"][0]["identity"], "biz-b:1.0.0");
    let v = h.call("installBiz", json!({"bizUrl": b1})).await;
    assert_eq!(v["data"]["code"], "REPEAT_BIZ");

    let b2 = jar(&jars, "biz-b", "2.0.0", &[Behaviour::StayUp]);
    let v = h
        .call("installBiz", json!({"bizName":"biz-b","bizVersion":"2.0.0","bizUrl":b2,"installStrategy":"uninstallThenInstall"}))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(
        v["data"]["bizInfos"][0]["bizState"], "activated",
        "old version was removed first"
    );
    assert_eq!(
        states(&h.list().await),
        [("biz-b".into(), "2.0.0".into(), "activated".into())]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_operations_and_conflicts() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let slow = jar(
        &jars,
        "biz-slow",
        "1.0.0",
        &[
            Behaviour::SlowReady(Duration::from_millis(1500)),
            Behaviour::StayUp,
        ],
    );
    let ready = json!({"koupleless.agent.ready.log": koupleless_testkit::READY_LINE});
    let mut req = install_body("biz-slow", "1.0.0", &slow);
    req["envs"] = ready.clone();
    req["async"] = json!(true);
    req["requestId"] = json!("req-1");
    let v = h.call("installBiz", req.clone()).await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(v["data"]["requestId"], "req-1");
    assert_eq!(v["data"]["arkBizMeta"]["installStrategy"], "installOnly");
    assert!(matches!(
        v["data"]["status"].as_str(),
        Some("INITIALIZED" | "EXECUTING")
    ));

    // While it runs: a sync install of the same module is a lock conflict...
    assert!(
        eventually(Duration::from_secs(10), || {
            let h = &h;
            async move {
                h.call("queryBizOps", json!({"requestId":"req-1"})).await["data"]["status"]
                    == "EXECUTING"
            }
        })
        .await
    );
    let mut sync_req = install_body("biz-slow", "1.0.0", &slow);
    sync_req["envs"] = ready.clone();
    let v = h.call("installBiz", sync_req).await;
    assert_eq!(
        v["message"],
        "FAILED:biz-slow:1.0.0 installBiz conflict, exist unfinished command(installBiz) for this biz"
    );
    assert_eq!(v["code"], "FAILED");
    assert!(v.get("data").is_none());
    // ...and a second async one ends FAILED (upstream leaves it INITIALIZED forever).
    let mut req2 = req.clone();
    req2["requestId"] = json!("req-2");
    assert_eq!(h.call("installBiz", req2).await["code"], "SUCCESS");
    // Reusing a request id is refused.
    let v = h.call("installBiz", req.clone()).await;
    assert_eq!(
        v["message"],
        "The request corresponding to the requestId(req-1) has been executed."
    );

    let done = |id: &'static str| {
        let h = &h;
        async move {
            let s = h.call("queryBizOps", json!({"requestId": id})).await["data"]["status"].clone();
            s == "SUCCEEDED" || s == "FAILED"
        }
    };
    assert!(eventually(Duration::from_secs(30), || done("req-1")).await);
    assert!(eventually(Duration::from_secs(30), || done("req-2")).await);
    let r1 = h.call("queryBizOps", json!({"requestId":"req-1"})).await["data"].clone();
    assert_eq!(r1["status"], "SUCCEEDED", "{r1}");
    assert!(r1["elapsedTime"].as_i64().unwrap() >= 1000);
    assert_eq!(r1["endTime"], r1["endTimestamp"]);
    let r2 = h.call("queryBizOps", json!({"requestId":"req-2"})).await["data"].clone();
    assert_eq!(r2["status"], "FAILED", "{r2}");
    assert!(r2["message"].as_str().is_some(), "{r2}");

    let v = h.call("queryBizOps", json!({"requestId":"nope"})).await;
    assert_eq!(v["message"], "Not found the corresponding ops record.");

    // Async uninstall.
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-slow","bizVersion":"1.0.0","async":true,"requestId":"u-1"}),
        )
        .await;
    assert_eq!(
        v["data"]["arkBizMeta"],
        json!({"async":true,"bizName":"biz-slow","bizVersion":"1.0.0","requestId":"u-1"})
    );
    assert!(eventually(Duration::from_secs(30), || done("u-1")).await);
    assert_eq!(
        h.call("queryBizOps", json!({"requestId":"u-1"})).await["data"]["status"],
        "SUCCEEDED"
    );
    assert!(h.list().await.is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_installs_of_one_module() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let slow = jar(
        &jars,
        "biz-c",
        "1.0.0",
        &[
            Behaviour::SlowReady(Duration::from_millis(800)),
            Behaviour::StayUp,
        ],
    );
    let mut body = install_body("biz-c", "1.0.0", &slow);
    body["envs"] = json!({"koupleless.agent.ready.log": koupleless_testkit::READY_LINE});
    let (a, b) = tokio::join!(
        h.call("installBiz", body.clone()),
        h.call("installBiz", body.clone())
    );
    let mut codes = [
        a["code"].as_str().unwrap().to_owned(),
        b["code"].as_str().unwrap().to_owned(),
    ];
    codes.sort();
    assert_eq!(codes, ["FAILED", "SUCCESS"], "{a} {b}");
    let failed = if a["code"] == "FAILED" { &a } else { &b };
    let msg = failed["message"].as_str().unwrap();
    assert!(
        msg.contains("conflict") || failed["data"]["code"] == "REPEAT_BIZ",
        "{failed}"
    );
    assert_eq!(
        states(&h.list().await),
        [("biz-c".into(), "1.0.0".into(), "activated".into())]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_install_priorities_and_a_failing_item() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let first = file_url(
        &BizJar::new("first", "1")
            .priority(10)
            .behaviour(Behaviour::StayUp)
            .build(&jars),
    );
    let second = file_url(
        &BizJar::new("second", "1")
            .priority(200)
            .behaviour(Behaviour::StayUp)
            .build(&jars),
    );
    let failing = jar(&jars, "broken", "1", &[Behaviour::FailAtStart]);
    let missing = "file:///nonexistent/gone.jar".to_owned();
    let v = h
        .call(
            "batchInstallBiz",
            json!({"bizList": [
                {"bizName":"second","bizVersion":"1","bizUrl":second},
                {"bizName":"broken","bizVersion":"1","bizUrl":failing},
                {"bizName":"gone","bizVersion":"1","bizUrl":missing},
                {"bizName":"first","bizVersion":"1","bizUrl":first},
            ]}),
        )
        .await;
    assert_eq!(v["code"], "FAILED", "{v}");
    assert_eq!(v["message"], "install biz not success!");
    let data = &v["data"];
    assert_eq!(data["code"], "FAILED");
    assert_eq!(data["message"], "batch install failed");
    let by_url = data["bizUrlToResponse"].as_object().unwrap();
    assert_eq!(by_url.len(), 4);
    assert_eq!(by_url[&first]["code"], "SUCCESS");
    assert_eq!(by_url[&second]["code"], "SUCCESS");
    assert_eq!(by_url[&failing]["code"], "FAILED");
    assert!(
        by_url[&failing]["message"]
            .as_str()
            .unwrap()
            .starts_with("internal exception: ")
    );
    assert_eq!(by_url[&missing]["code"], "FAILED");
    for (url, entry) in by_url {
        let infos = entry["bizInfos"]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: bizInfos missing (trap T15)"));
        assert!(!infos.is_empty(), "{url}");
    }
    assert_eq!(by_url[&failing]["bizInfos"][0]["bizState"], "broken");
    // Priority order: `first` (10) started before `second` (200).
    let t = |url: &str| {
        by_url[url]["bizInfos"][0]["bizStateRecords"][0]["changeTime"]
            .as_i64()
            .unwrap()
    };
    assert!(t(&first) <= t(&second));
    let list = states(&h.list().await);
    assert_eq!(
        list,
        [
            ("first".into(), "1".into(), "activated".into()),
            ("second".into(), "1".into(), "activated".into())
        ]
    );

    // A repeat of the same batch: every entry REPEAT_BIZ with the module as it is.
    let v = h
        .call("batchInstallBiz", json!({"bizList": [{"bizUrl": first}]}))
        .await;
    let entry = &v["data"]["bizUrlToResponse"][&first];
    assert_eq!(entry["code"], "REPEAT_BIZ");
    assert_eq!(entry["bizInfos"][0]["bizState"], "activated");
    let v = h
        .call("batchInstallBiz", json!({"installRequests": []}))
        .await;
    assert_eq!(v["message"], "Internal Error: bizList is null");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_modules_and_stops_them_on_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let work = tmp.path().join("work");
    let port = koupleless_testkit::free_port();
    let a = jar(
        &jars,
        "biz-a",
        "1.0.0",
        &[Behaviour::ListenTcp(port), Behaviour::StayUp],
    );
    let mut h = start_agent(&work, &[]).await;
    let mut body = install_body("biz-a", "1.0.0", &a);
    body["envs"] = json!({"koupleless.agent.ready.tcp": port.to_string()});
    assert_eq!(h.call("installBiz", body).await["code"], "SUCCESS");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    h.shutdown().await;
    // The agent leaves no module process behind.
    assert!(
        eventually(Duration::from_secs(10), || async {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        })
        .await,
        "module still listening after agent shutdown"
    );
    // A new agent on the same work directory runs it again.
    let mut h = start_agent(&work, &[]).await;
    assert!(
        eventually(Duration::from_secs(30), || {
            let h = &h;
            async move {
                states(&h.list().await) == [("biz-a".into(), "1.0.0".into(), "activated".into())]
            }
        })
        .await,
        "module restored after restart"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = start_agent(tmp.path(), &["--api-token", "s3cret"]).await;
    let (status, text) = h.raw("help", "{}").await;
    assert_eq!(status, 401, "{text}");
    let resp = h
        .client
        .post(format!("{}/help", h.url))
        .bearer_auth("s3cret")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Probes stay open for the kubelet.
    let resp = h
        .client
        .get(format!("{}/readyz", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_finishes_when_the_client_hangs_up() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let slow = jar(
        &jars,
        "biz-slow",
        "1.0.0",
        &[
            Behaviour::SlowReady(Duration::from_millis(1000)),
            Behaviour::StayUp,
        ],
    );
    let mut body = install_body("biz-slow", "1.0.0", &slow);
    body["envs"] = json!({"koupleless.agent.ready.log": koupleless_testkit::READY_LINE});
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let res = impatient
        .post(format!("{}/installBiz", h.url))
        .body(body.to_string())
        .send()
        .await;
    assert!(
        res.is_err(),
        "the client gave up before the module was ready"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let h = &h;
            async move {
                states(&h.list().await) == [("biz-slow".into(), "1.0.0".into(), "activated".into())]
            }
        })
        .await,
        "the install carried on after the client hung up: {:?}",
        h.list().await
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_modules_and_the_base_jvm() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &["--ready-with-all-biz"]).await;
    let readyz = |h: &Harness| {
        let (client, url) = (h.client.clone(), h.url.clone());
        async move {
            let r = client.get(format!("{url}/readyz")).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(readyz(&h).await.0, 200);
    let a1 = jar(&jars, "biz-a", "1.0.0", &[Behaviour::StayUp]);
    let a2 = jar(&jars, "biz-a", "2.0.0", &[Behaviour::StayUp]);
    assert_eq!(
        h.call("installBiz", install_body("biz-a", "1.0.0", &a1))
            .await["code"],
        "SUCCESS"
    );
    assert_eq!(readyz(&h).await.0, 200);
    // A standby version is not activated: with --ready-with-all-biz the base is not ready.
    assert_eq!(
        h.call("installBiz", install_body("biz-a", "2.0.0", &a2))
            .await["code"],
        "SUCCESS"
    );
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["reasons"],
        json!(["module biz-a:2.0.0 is deactivated"])
    );
    h.call(
        "uninstallBiz",
        json!({"bizName":"biz-a","bizVersion":"2.0.0"}),
    )
    .await;
    assert_eq!(readyz(&h).await.0, 200);
    h.shutdown().await;

    // --ready-requires-jvm with no base JVM to find: not ready, and it says why.
    let mut h = start_agent(
        &tmp.path().join("work2"),
        &["--ready-requires-jvm", "--base-pid", "999999999"],
    )
    .await;
    let (status, body) = readyz(&h).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        !body["reasons"][0].as_str().unwrap_or("").is_empty(),
        "{body}"
    );
    h.shutdown().await;
}

/// Install `envs` that make the module JVM load code on its own (`JAVA_TOOL_OPTIONS`,
/// `JDK_JAVA_OPTIONS`, `_JAVA_OPTIONS`, `LD_*`) are refused before anything is fetched,
/// with a message naming the variable and the flag; `--allow-jvm-option-envs` accepts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_loading_envs_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let url = jar(&jars, "biz-env", "1.0.0", &[Behaviour::StayUp]);
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    for name in [
        "JAVA_TOOL_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "_JAVA_OPTIONS",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
    ] {
        let mut body = install_body("biz-env", "1.0.0", &url);
        body["envs"] = json!({ name: "-javaagent:/tmp/evil.jar", "harmless": "x" });
        let v = h.call("installBiz", body).await;
        assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{name}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.starts_with("Internal Error: ")
                && msg.contains(name)
                && msg.contains("--allow-jvm-option-envs"),
            "{name}: {msg}"
        );
    }
    let batch = json!({"bizList": [{"bizName": "biz-env", "bizVersion": "1.0.0", "bizUrl": url,
        "envs": {"_JAVA_OPTIONS": "-Xbootclasspath/a:/tmp/evil.jar"}}]});
    let v = h.call("batchInstallBiz", batch).await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(h.list().await.is_empty());
    assert_eq!(jar_count(&h.packages_dir()), 0, "nothing fetched");
    h.shutdown().await;

    let mut h = start_agent(&tmp.path().join("work2"), &["--allow-jvm-option-envs"]).await;
    let mut body = install_body("biz-env", "1.0.0", &url);
    body["envs"] = json!({"JDK_JAVA_OPTIONS": "-Dkoupleless.test=1"});
    let v = h.call("installBiz", body).await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    h.shutdown().await;
}

/// `uninstallThenInstall` fetches and validates the new package before removing anything (a
/// bad URL or a jar of another identity leaves the running version alone), and locks every
/// version of the name while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstall_then_install_fetches_first_and_locks_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let mut h = start_agent(&tmp.path().join("work"), &[]).await;
    let v1 = jar(&jars, "biz-u", "1.0.0", &[Behaviour::StayUp]);
    let v = h
        .call("installBiz", install_body("biz-u", "1.0.0", &v1))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    let running = [(
        "biz-u".to_owned(),
        "1.0.0".to_owned(),
        "activated".to_owned(),
    )];
    let uti = |version: &str, url: &str| {
        let mut b = install_body("biz-u", version, url);
        b["installStrategy"] = json!("uninstallThenInstall");
        b
    };

    let missing = file_url(&jars.join("missing.jar"));
    let v = h.call("installBiz", uti("2.0.0", &missing)).await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert_eq!(
        states(&h.list().await),
        running,
        "a bad URL removed nothing"
    );

    let other = jar(&jars, "biz-u", "3.0.0", &[Behaviour::StayUp]);
    let v = h.call("installBiz", uti("2.0.0", &other)).await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("biz-u:2.0.0")
            && msg.contains("biz-u:3.0.0")
            && msg.contains("does not match"),
        "{msg}"
    );
    assert_eq!(
        states(&h.list().await),
        running,
        "a jar of another identity removed nothing"
    );
    assert_eq!(
        jar_count(&h.packages_dir()),
        1,
        "the refused package is not kept"
    );

    // While it runs, a command on any version of the name is a conflict.
    let slow = jar(
        &jars,
        "biz-u",
        "2.0.0",
        &[
            Behaviour::SlowReady(Duration::from_millis(1500)),
            Behaviour::StayUp,
        ],
    );
    let mut req = uti("2.0.0", &slow);
    req["envs"] = json!({"koupleless.agent.ready.log": koupleless_testkit::READY_LINE});
    req["async"] = json!(true);
    req["requestId"] = json!("uti-1");
    assert_eq!(h.call("installBiz", req).await["code"], "SUCCESS");
    assert!(
        eventually(Duration::from_secs(10), || {
            let h = &h;
            async move {
                h.call("queryBizOps", json!({"requestId":"uti-1"})).await["data"]["status"]
                    == "EXECUTING"
            }
        })
        .await
    );
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-u","bizVersion":"1.0.0"}),
        )
        .await;
    assert_eq!(
        v["message"],
        "FAILED:biz-u:1.0.0 uninstallBiz conflict, exist unfinished command(installBiz) for this biz",
        "{v}"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let h = &h;
            async move {
                h.call("queryBizOps", json!({"requestId":"uti-1"})).await["data"]["status"]
                    == "SUCCEEDED"
            }
        })
        .await
    );
    assert_eq!(
        states(&h.list().await),
        [("biz-u".into(), "2.0.0".into(), "activated".into())]
    );
    h.shutdown().await;
}
