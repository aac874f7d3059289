//! Module logs over HTTP (`GET /logs/{name}/{version}`): the real agent, a real module JVM that
//! prints lines, the kubelet's query options (follow, tailLines, timestamps, since*, limitBytes),
//! the bearer token, and errors for what does not exist.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::config::Config;
use koupleless_testkit::{Behaviour, BizJar, SMALL_JVM_ARGS, file_url, java_available};
use serde_json::{Value, json};

const TOKEN: &str = "log-token";

async fn start_agent(work: &Path) -> Agent {
    assert!(java_available(), "these tests need java, javac and jar");
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    app::start(Config::parse_from([
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        "10.0.0.7",
        "--stop-grace",
        "3s",
        "--api-token",
        TOKEN,
        "--work-dir",
        work.to_str().unwrap(),
        "--module-jvm-arg",
        &jvm_args,
    ]))
    .await
    .expect("agent starts")
}

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn text(url: &str) -> String {
    let resp = get(url, Some(TOKEN)).await;
    assert_eq!(resp.status(), 200, "{url}");
    resp.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_log_with_the_kubelet_options() {
    let tmp = tempfile::tempdir().unwrap();
    let mut steps: Vec<Behaviour> = (1..=6)
        .map(|i| Behaviour::PrintLine(format!("hello {i}")))
        .collect();
    steps.push(Behaviour::Sleep(Duration::from_millis(1500)));
    steps.push(Behaviour::PrintLine("late line".into()));
    steps.push(Behaviour::StayUp);
    let mut jar = BizJar::new("logger", "1.0.0");
    for s in steps {
        jar = jar.behaviour(s);
    }
    let jar = jar.build(tmp.path());
    let agent = start_agent(&tmp.path().join("work")).await;
    let base = format!("http://{}", agent.addr());
    let installed: Value = reqwest::Client::new()
        .post(format!("{base}/installBiz"))
        .bearer_auth(TOKEN)
        .json(&json!({"bizName": "logger", "bizVersion": "1.0.0", "bizUrl": file_url(&jar)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(installed["code"], "SUCCESS", "{installed}");
    let url = format!("{base}/logs/logger/1.0.0");

    // follow: the stream stays open and brings the line printed later.
    let mut resp = get(&format!("{url}?follow=true"), Some(TOKEN)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-koupleless-log-source"], "module");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let mut followed = String::new();
    while !followed.contains("late line\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), resp.chunk())
            .await
            .expect("the late line arrives while following")
            .unwrap()
            .expect("the stream stays open");
        followed.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);
    for i in 1..=6 {
        assert!(followed.contains(&format!("hello {i}\n")), "{followed}");
    }

    let all = text(&url).await;
    assert!(
        all.contains("hello 1\nhello 2\n") && all.ends_with("hello 6\nlate line\n"),
        "{all}"
    );
    assert_eq!(
        text(&format!("{url}?tailLines=2")).await,
        "hello 6\nlate line\n"
    );
    let five = text(&format!("{url}?limitBytes=5")).await;
    assert_eq!(five, all[..5]);
    assert_eq!(text(&format!("{url}?sinceSeconds=3600")).await, all);
    assert_eq!(
        text(&format!("{url}?sinceTime=2999-01-01T00:00:00Z")).await,
        ""
    );

    // timestamps: each line prefixed with when it was written (within the clock's period).
    let stamped = text(&format!("{url}?timestamps=true&tailLines=3")).await;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped}");
    let now = chrono::Utc::now();
    let mut times = Vec::new();
    for line in &lines {
        let (t, rest) = line.split_once(' ').unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        assert!((now - t.to_utc()).num_seconds().abs() < 120, "{line}");
        assert!(rest.starts_with("hello") || rest == "late line", "{line}");
        times.push(t);
    }
    let gap = times[2] - times[1];
    assert!(
        gap.num_milliseconds() >= 1000,
        "the late line was written 1.5 s after the others: {stamped}"
    );

    // Errors: no token, a module that is not there, a bad option.
    let resp = get(&url, None).await;
    assert_eq!(resp.status(), 401);
    let resp = get(&format!("{base}/logs/logger/9.9.9"), Some(TOKEN)).await;
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("logger:9.9.9"),
        "{body}"
    );
    let resp = get(&format!("{url}?tailLines=-3"), Some(TOKEN)).await;
    assert_eq!(resp.status(), 400);

    agent.shutdown().await;
}
