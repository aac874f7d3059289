//! Replays every HTTP exchange captured from the real Java Arklet
//! (`tests/fixtures/real-arklet-http.json`, copied from the capture in the shared golden set)
//! against our agent, in the same order, with equivalent module jars built at test time and a
//! real JVM as the base. Our answer must match the real one in status, codes, messages and
//! JSON shape (key sets and JSON types); volatile values (times, paths, worker names, JVM
//! numbers) are compared by type only. Where we differ on purpose the test says so and asserts
//! our behaviour instead: see `DEVIATIONS`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use clap::Parser;
use koupleless_agent::app;
use koupleless_agent::config::Config;
use koupleless_testkit::{Behaviour, BizJar, SMALL_JVM_ARGS, file_url, java_available, toolchain};
use serde_json::Value;

/// Cases where our agent answers differently from the Java Arklet, on purpose.
const DEVIATIONS: &[(&str, &str)] = &[
    (
        "28_installBiz_main_throws",
        "the message names the module and its own exception instead of java.lang.reflect.InvocationTargetException",
    ),
    (
        "29_installBiz_nonexistent_file",
        "the message says `package not found: <path> ...` instead of a Java exception class name",
    ),
    (
        "32_malformed_json",
        "upstream never answers; we answer at once with CMD_PROCESS_INTERNAL_ERROR",
    ),
    (
        "35_GET_help",
        "upstream answers 500; we answer 405 with `Allow: POST` and the same text",
    ),
    (
        "36_json_array_body",
        "upstream never answers; we answer at once with CMD_PROCESS_INTERNAL_ERROR",
    ),
    (
        "42_batchInstallBiz_one_missing_file",
        "upstream fails the whole batch; we install the good items and report the missing one per item",
    ),
];

/// Keys whose values change from run to run: compared by JSON type only.
const VOLATILE: &[&str] = &[
    "changeTime",
    "startTime",
    "startTimestamp",
    "endTime",
    "endTimestamp",
    "elapsedTime",
    "elapsedSpace",
    "bizTempWorkDir",
    "threadName",
    "errorStackTrace",
    "classPath",
    // JVM and CPU numbers of two different JVMs.
    "java version",
    "java home",
    "total memory(M)",
    "max memory(M)",
    "free memory(M)",
    "init heap memory(M)",
    "used heap memory(M)",
    "committed heap memory(M)",
    "max heap memory(M)",
    "init non heap memory(M)",
    "used non heap memory(M)",
    "committed non heap memory(M)",
    "max non heap memory(M)",
    "loaded class count",
    "unload class count",
    "total class count",
    "run time(s)",
    "java used metaspace",
    "java committed metaspace",
    "count",
    "type",
    "total used (%)",
    "user used (%)",
    "system used (%)",
    "free (%)",
];

const GOLDEN_JARS: &str = "/opt/realark/bizjars/";

fn normalize(s: &str, jars: &str) -> String {
    let s = s
        .replace(&format!("file://{GOLDEN_JARS}"), "file://JARS/")
        .replace(GOLDEN_JARS, "JARS/");
    let s = s
        .replace(&format!("file://{jars}/"), "file://JARS/")
        .replace(&format!("{jars}/"), "JARS/");
    // `cost: 39 ms, started at: 00:06:25,429`
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("cost: ") {
        out.push_str(&rest[..i]);
        out.push_str("cost: N ms, started at: T");
        let tail = &rest[i..];
        let end = tail
            .find("started at: ")
            .map(|j| j + "started at: ".len() + "00:00:00,000".len());
        rest = &tail[end.unwrap_or(tail.len()).min(tail.len())..];
    }
    out.push_str(rest);
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn compare(
    ours: &Value,
    theirs: &Value,
    path: &str,
    key: &str,
    jars: &str,
    errs: &mut Vec<String>,
) {
    if VOLATILE.contains(&key) || (key == "bizUrl" && path.contains("bizInfos")) {
        // -1 sentinels are JSON integers on both sides; MiB values are floats on both.
        if kind(ours) != kind(theirs) && !(kind(ours) == "integer" && kind(theirs) == "float") {
            errs.push(format!("{path}: type {} vs {}", kind(ours), kind(theirs)));
        }
        return;
    }
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            // Keys can be URLs (`bizUrlToResponse`): normalize them like values.
            let a: serde_json::Map<String, Value> = a
                .iter()
                .map(|(k, v)| (normalize(k, jars), v.clone()))
                .collect();
            let b: serde_json::Map<String, Value> = b
                .iter()
                .map(|(k, v)| (normalize(k, jars), v.clone()))
                .collect();
            for (k, tv) in &b {
                match a.get(k) {
                    Some(ov) => compare(ov, tv, &format!("{path}.{k}"), k, jars, errs),
                    None => errs.push(format!("{path}: missing key {k:?}")),
                }
            }
            for k in a.keys().filter(|k| !b.contains_key(k.as_str())) {
                // Our only addition: the two-level error code on failures (spec §7).
                if k != "errorCode" {
                    errs.push(format!("{path}: extra key {k:?}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                errs.push(format!("{path}: {} elements vs {}", a.len(), b.len()));
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                compare(x, y, &format!("{path}[{i}]"), key, jars, errs);
            }
        }
        (Value::String(a), Value::String(b)) => {
            let (a, b) = (normalize(a, jars), normalize(b, jars));
            if a != b {
                errs.push(format!("{path}: {a:?} vs {b:?}"));
            }
        }
        (a, b) if a != b => errs.push(format!("{path}: {a} vs {b}")),
        _ => {}
    }
}

/// A JVM standing in for the base, so the health report has a real `jvm` section.
struct BaseJvm(Child);

impl Drop for BaseJvm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_base_jvm(dir: &Path) -> BaseJvm {
    let tc = toolchain().expect("java toolchain");
    std::fs::write(dir.join("Base.java"), "public class Base { public static void main(String[] a) throws Exception { Thread.sleep(Long.MAX_VALUE); } }").unwrap();
    let ok = Command::new(&tc.javac)
        .arg("-d")
        .arg(dir)
        .arg(dir.join("Base.java"))
        .status()
        .unwrap();
    assert!(ok.success());
    let child = Command::new(&tc.java)
        .args(SMALL_JVM_ARGS)
        .arg("-cp")
        .arg(dir)
        .arg("Base")
        .spawn()
        .unwrap();
    let pid = child.id();
    let perf = std::env::temp_dir()
        .join(format!(
            "hsperfdata_{}",
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .unwrap()
                .unwrap()
                .name
        ))
        .join(pid.to_string());
    assert!(
        koupleless_testkit::wait_for(Duration::from_secs(20), || perf.exists()),
        "base JVM perf data"
    );
    BaseJvm(child)
}

fn help_ids(v: &Value) -> BTreeSet<String> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect()
}

fn raw_exchange(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body is complete (the server may keep the connection open).
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some(i) = text.rfind("\r\n\r\n")
                    && serde_json::from_str::<Value>(&text[i + 4..]).is_ok()
                {
                    break;
                }
            }
            Err(e) => panic!("reading reply: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_the_real_arklet_capture() {
    assert!(java_available(), "this test needs java, javac and jar");
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/real-arklet-http.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("bizjars");
    std::fs::create_dir_all(&jars).unwrap();
    let jars_str = jars.to_str().unwrap().to_owned();
    for (name, version, file) in [
        ("biz-a", "1.0.0", "biz-a-1.0.0-ark-biz.jar"),
        ("biz-a", "2.0.0", "biz-a-2.0.0-ark-biz.jar"),
        ("biz-b", "1.0.0", "biz-b-1.0.0-ark-biz.jar"),
        ("biz-c", "1.0.0", "biz-c-1.0.0-ark-biz.jar"),
    ] {
        BizJar::new(name, version)
            .main_class("realark.biz.BizMain")
            .web_context_path(format!("/{name}"))
            .behaviour(Behaviour::StayUp)
            .file_name(file)
            .build(&jars);
    }
    BizJar::new("biz-fail", "1.0.0")
        .main_class("realark.biz.FailMain")
        .web_context_path("/biz-fail")
        .behaviour(Behaviour::FailAtStart)
        .file_name("biz-fail-1.0.0-ark-biz.jar")
        .build(&jars);
    let base_dir = tmp.path().join("base");
    std::fs::create_dir_all(&base_dir).unwrap();
    let base = start_base_jvm(&base_dir);
    let pid = base.0.id().to_string();
    let work = tmp.path().join("work");
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    let agent = app::start(Config::parse_from([
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "192.0.2.2",
        "--base-name",
        "realark-base",
        "--base-version",
        "1.0.0",
        "--base-pid",
        &pid,
        "--work-dir",
        work.to_str().unwrap(),
        "--module-jvm-arg",
        &jvm_args,
        "--stop-grace",
        "3s",
    ]))
    .await
    .expect("agent starts");
    let client = reqwest::Client::new();
    // The base JVM publishes its counters a moment after its perf file appears: wait until the
    // agent's report is complete, as the capture was taken from a base that had been up for
    // seconds.
    let mut complete = false;
    for _ in 0..200 {
        let t = client
            .post(format!("http://{}/health", agent.addr()))
            .body("{}")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["data"]["healthData"]["jvm"]["loaded class count"].is_u64()
            && v["data"]["healthData"]["jvm"]["used heap memory(M)"].is_f64()
        {
            complete = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(complete, "the agent never reported the base JVM's counters");
    let ours_url = file_url(&jars);
    let mut failures = Vec::new();

    for case in fixture["cases"].as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let method = case["method"].as_str().unwrap();
        let path = case["path"].as_str().unwrap();
        let body = case["body"]
            .as_str()
            .unwrap()
            .replace(&format!("file://{GOLDEN_JARS}"), &format!("{ours_url}/"));
        if case["protocol"] == "HTTP/1.0" {
            continue;
        }
        let resp = client
            .request(
                method.parse().unwrap(),
                format!("http://{}{path}", agent.addr()),
            )
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let deviation = DEVIATIONS
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, why)| *why);
        match name {
            "32_malformed_json" | "36_json_array_body" => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(
                    (status, v["code"].as_str()),
                    (200, Some("CMD_PROCESS_INTERNAL_ERROR")),
                    "{name}: {text}"
                );
                continue;
            }
            "35_GET_help" => {
                assert_eq!(
                    (status, text.as_str()),
                    (405, "POST http request only supported by arklet"),
                    "{name}"
                );
                continue;
            }
            "42_batchInstallBiz_one_missing_file" => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["code"], "FAILED", "{name}: {text}");
                let entries = v["data"]["bizUrlToResponse"].as_object().unwrap();
                let codes: BTreeSet<_> = entries
                    .values()
                    .map(|e| e["code"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    codes,
                    BTreeSet::from(["FAILED", "SUCCESS"]),
                    "{name}: {text}"
                );
                // Put the agent back in step with the capture, where nothing was installed.
                let undo = client
                    .post(format!("http://{}/uninstallBiz", agent.addr()))
                    .body(r#"{"bizName":"biz-c","bizVersion":"1.0.0"}"#)
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                assert!(undo.contains(r#""code":"SUCCESS""#), "{undo}");
                continue;
            }
            _ => {}
        }
        let theirs: Value = serde_json::from_str(case["response"].as_str().unwrap()).unwrap();
        let ours: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}: {text}"));
        assert_eq!(status, case["status"].as_u64().unwrap() as u16, "{name}");
        if path == "/help" {
            assert_eq!(help_ids(&ours), help_ids(&theirs), "{name}");
            continue;
        }
        if let Some(why) = deviation {
            assert_eq!(ours["code"], theirs["code"], "{name} ({why})");
            match name {
                "28_installBiz_main_throws" => assert!(
                    ours["message"]
                        .as_str()
                        .unwrap()
                        .contains(koupleless_testkit::FAIL_MESSAGE),
                    "{name}: {text}"
                ),
                "29_installBiz_nonexistent_file" => assert!(
                    ours["message"]
                        .as_str()
                        .unwrap()
                        .contains("does-not-exist.jar (No such file or directory)"),
                    "{name}: {text}"
                ),
                _ => unreachable!("{name}"),
            }
            continue;
        }
        // Async replies race with the worker: the first status may be either.
        let mut theirs = theirs;
        if name == "23_installBiz_async" || name == "39_uninstallBiz_async" {
            theirs["data"]["status"] = ours["data"]["status"].clone();
            assert!(
                matches!(
                    ours["data"]["status"].as_str(),
                    Some("INITIALIZED" | "EXECUTING")
                ),
                "{name}: {text}"
            );
            // Let the operation finish before the next case queries it, as the capture did.
            let rid = ours["data"]["requestId"].as_str().unwrap().to_owned();
            let q = format!(r#"{{"requestId":"{rid}"}}"#);
            let mut finished = false;
            for _ in 0..400 {
                let t = client
                    .post(format!("http://{}/queryBizOps", agent.addr()))
                    .body(q.clone())
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                if t.contains("SUCCEEDED") || t.contains(r#""status":"FAILED""#) {
                    finished = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(finished, "{name}: async operation never finished");
        }
        let mut errs = Vec::new();
        compare(&ours, &theirs, "", "", &jars_str, &mut errs);
        if !errs.is_empty() {
            failures.push(format!(
                "{name}:\n  ours:   {text}\n  theirs: {}\n  - {}",
                case["response"].as_str().unwrap(),
                errs.join("\n  - ")
            ));
        }
    }

    // HTTP/1.0 and `Expect: 100-continue`, over a raw socket.
    let reply = raw_exchange(
        agent.addr(),
        "POST /help HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(reply.starts_with("HTTP/1."), "{reply}");
    assert!(reply.contains(r#""code":"SUCCESS""#), "{reply}");
    let reply = raw_exchange(
        agent.addr(),
        "POST /help HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert!(
        reply.contains("200 OK") && reply.contains(r#""code":"SUCCESS""#),
        "{reply}"
    );

    agent.shutdown().await;
    drop(base);
    assert!(
        failures.is_empty(),
        "{} case(s) differ from the real Arklet:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
