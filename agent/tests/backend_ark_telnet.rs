//! The agent with the ark-telnet backend, driven over its HTTP API, against the test peer
//! that models SOFAArk's telnet port from the spec (`koupleless_testkit::ark_telnet_peer`).
//! Every deadline is shortened by flags so each test runs in a few seconds.

use koupleless_testkit::eventually;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::config::Config;
use koupleless_testkit::ark_telnet_peer::{ArkTelnetPeer, PeerConfig, PeerState, Phase, StaticBiz};
use koupleless_testkit::{RawZip, file_url};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Harness {
    agent: Option<Agent>,
    url: String,
    client: reqwest::Client,
    jars: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Flags that make every deadline short; `overrides` replace or add flags.
fn agent_args(work: &Path, peer: &ArkTelnetPeer, overrides: &[(&str, &str)]) -> Vec<String> {
    let addr = peer.addr().to_string();
    let mut flags: BTreeMap<&str, String> = [
        ("--port", "0"),
        ("--bind", "127.0.0.1"),
        ("--base-identity", "10.0.0.5"),
        ("--base-name", "base"),
        ("--backend", "ark-telnet"),
        ("--ark-telnet-ready", "none"),
        ("--ark-telnet-poll-interval", "20ms"),
        ("--ark-telnet-register-timeout", "2s"),
        ("--start-timeout", "5s"),
        ("--ark-telnet-stop-timeout", "3s"),
        ("--ark-telnet-switch-timeout", "2s"),
        ("--ark-telnet-base-wait", "3s"),
        ("--ark-telnet-command-timeout", "1s"),
        ("--ark-telnet-greeting-timeout", "1s"),
        ("--ark-telnet-reconnect-min", "50ms"),
        ("--ark-telnet-reconnect-max", "500ms"),
        ("--ark-telnet-monitor-interval", "100ms"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect();
    flags.insert("--ark-telnet-addr", addr);
    flags.insert("--work-dir", work.display().to_string());
    for (k, v) in overrides {
        flags.insert(k, (*v).to_owned());
    }
    let mut args = vec!["koupleless-agent".to_owned()];
    for (k, v) in flags {
        args.push(k.to_owned());
        args.push(v);
    }
    args
}

async fn start(peer: &ArkTelnetPeer, overrides: &[(&str, &str)]) -> Harness {
    let tmp = tempfile::tempdir().unwrap();
    let jars = tmp.path().join("jars");
    std::fs::create_dir_all(&jars).unwrap();
    let agent = app::start(Config::parse_from(agent_args(
        &tmp.path().join("work"),
        peer,
        overrides,
    )))
    .await
    .expect("agent starts");
    let url = format!("http://{}", agent.addr());
    Harness {
        agent: Some(agent),
        url,
        client: reqwest::Client::new(),
        jars,
        _tmp: tmp,
    }
}

impl Harness {
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
        v["data"]
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
            .collect()
    }

    /// An Ark biz jar (mark entry and manifest; nothing runs it: the peer only reads it).
    fn jar(&self, name: &str, version: &str) -> String {
        let path = self.jars.join(format!("{name}-{version}.jar"));
        file_url(
            &RawZip::ark_biz(name, version, "com.example.Main")
                .write(&path)
                .unwrap(),
        )
    }

    async fn install(&self, name: &str, version: &str) -> Value {
        let url = self.jar(name, version);
        self.call(
            "installBiz",
            json!({"bizName": name, "bizVersion": version, "bizUrl": url}),
        )
        .await
    }

    async fn shutdown(&mut self) {
        if let Some(a) = self.agent.take() {
            tokio::time::timeout(Duration::from_secs(10), a.shutdown())
                .await
                .expect("agent shuts down in time");
        }
    }
}

fn t(name: &str, version: &str, state: &str) -> (String, String, String) {
    (name.to_owned(), version.to_owned(), state.to_owned())
}

fn install_lines(peer: &ArkTelnetPeer) -> Vec<String> {
    peer.lines()
        .into_iter()
        .filter(|l| l.starts_with("biz -i"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_repeat_switch_and_uninstall() {
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let mut h = start(&peer, &[]).await;

    let v = h.install("biz-a", "1.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert!(
        v["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Install Biz: biz-a:1.0.0 success, cost: ")
    );
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "activated");
    assert_eq!(
        peer.state_of("biz-a", "1.0.0").as_deref(),
        Some("activated")
    );
    // The base got a file: URL of the agent's own validated copy, not the caller's URL.
    let sent = install_lines(&peer);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].starts_with("biz -i file:///") && sent[0].contains("/work/packages/biz-a-1.0.0-"),
        "{sent:?}"
    );

    // Same identity again: the engine answers REPEAT_BIZ, nothing reaches the port.
    let v = h.install("biz-a", "1.0.0").await;
    assert_eq!(v["data"]["code"], "REPEAT_BIZ", "{v}");
    assert_eq!(install_lines(&peer).len(), 1);

    // A second version ends deactivated in the base and in the agent.
    let v = h.install("biz-a", "2.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "deactivated");
    assert_eq!(
        peer.state_of("biz-a", "2.0.0").as_deref(),
        Some("deactivated")
    );

    let v = h
        .call("switchBiz", json!({"bizName":"biz-a","bizVersion":"2.0.0"}))
        .await;
    assert_eq!(
        v["data"],
        json!({"code":"SUCCESS","message":"Switch biz: biz-a:2.0.0 is activated."}),
        "{v}"
    );
    assert_eq!(
        peer.state_of("biz-a", "2.0.0").as_deref(),
        Some("activated")
    );
    assert_eq!(
        peer.state_of("biz-a", "1.0.0").as_deref(),
        Some("deactivated")
    );
    assert_eq!(
        h.list().await,
        [
            t("biz-a", "2.0.0", "activated"),
            t("biz-a", "1.0.0", "deactivated")
        ]
    );

    let v = h
        .call("switchBiz", json!({"bizName":"biz-z","bizVersion":"9"}))
        .await;
    assert_eq!(v["data"]["code"], "NOT_FOUND_BIZ");
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-zzz","bizVersion":"9.9.9"}),
        )
        .await;
    assert_eq!(
        v["data"],
        json!({"code":"NOT_FOUND_BIZ","message":"Uninstall biz: biz-zzz:9.9.9 not found."})
    );
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"base","bizVersion":"1.0.0"}),
        )
        .await;
    assert_eq!(v["data"]["message"], "Master biz must not be uninstalled.");
    assert!(
        !peer.lines().iter().any(|l| l.starts_with("biz -u base")),
        "the base is never sent -u"
    );

    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"2.0.0"}),
        )
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(peer.state_of("biz-a", "2.0.0"), None);
    // Async uninstall through an operation record.
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"1.0.0","async":true,"requestId":"u1"}),
        )
        .await;
    assert_eq!(v["code"], "SUCCESS");
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.call("queryBizOps", json!({"requestId":"u1"})).await["data"]["status"] == "SUCCEEDED"
        })
        .await
    );
    assert!(h.list().await.is_empty());
    assert_eq!(peer.bizzes(), [t("base", "1.0.0", "activated")]);
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_install_while_queries_are_answered() {
    let peer = ArkTelnetPeer::start(PeerConfig {
        start_delay: Duration::from_millis(1500),
        ..PeerConfig::default()
    })
    .await;
    let h = Arc::new(start(&peer, &[]).await);
    let began = Instant::now();
    let installing = {
        let h = Arc::clone(&h);
        tokio::spawn(async move { h.install("slow", "1.0.0").await })
    };
    // While the base starts the module, the agent answers from its own state.
    assert!(
        eventually(Duration::from_secs(3), || async {
            peer.state_of("slow", "1.0.0").as_deref() == Some("resolved")
        })
        .await
    );
    let asked = Instant::now();
    assert_eq!(h.list().await, [t("slow", "1.0.0", "resolved")]);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "queries do not wait for the operation"
    );
    let v = installing.await.unwrap();
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert!(began.elapsed() >= Duration::from_millis(1500));
    assert_eq!(h.list().await, [t("slow", "1.0.0", "activated")]);
    let mut h = Arc::into_inner(h).unwrap();
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_that_ends_broken_then_disappears() {
    let peer = ArkTelnetPeer::start(PeerConfig {
        fail_start: vec!["bad".into()],
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[]).await;
    let v = h.install("bad", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert_eq!(
        v["message"],
        "Internal Error: install of bad:1.0.0 failed: its start failed (state broken) and the base removed it; the telnet port reports no reasons; see the base's Ark logs (sofa-ark/common-error.log)"
    );
    assert_eq!(v["errorCode"], "User.InstallBizUserError");
    assert!(h.list().await.is_empty());
    // The backend waited for the auto-uninstall, so the next install passes SOFAArk's gate.
    assert_eq!(peer.state_of("bad", "1.0.0"), None);
    let v = h.install("good", "1.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert!(
        !peer
            .journal()
            .iter()
            .any(|l| l.starts_with("Exists some biz")),
        "{:?}",
        peer.journal()
    );
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_leftover_is_reported_and_removed() {
    // sofa.ark.auto.uninstall.when.failed.enable=false: a failed module stays broken and
    // would block every later install.
    let peer = ArkTelnetPeer::start(PeerConfig {
        fail_start: vec!["bad".into()],
        auto_uninstall_when_failed: false,
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[("--start-timeout", "1s")]).await;
    let v = h.install("bad", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("still listed as broken"),
        "{v}"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            peer.state_of("bad", "1.0.0").is_none()
        })
        .await,
        "the leftover was uninstalled: {:?}",
        peer.journal()
    );
    assert!(peer.lines().contains(&"biz -u bad:1.0.0".to_owned()));
    assert_eq!(h.install("good", "1.0.0").await["code"], "SUCCESS");
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_already_in_the_base_is_adopted_not_reinstalled() {
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let mut h = start(&peer, &[]).await;
    // Installed by another client after the agent's start-up listing (which ends with
    // `biz -m`), so the agent does not know it.
    assert!(
        eventually(Duration::from_secs(5), || async {
            peer.lines().iter().any(|l| l == "biz -m .*")
        })
        .await
    );
    peer.add_biz("other", "1.0.0", "com.example.Main", PeerState::Activated);
    let v = h.install("other", "1.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    // A second `biz -i` would have been dropped by the port without a trace; none was sent.
    assert!(install_lines(&peer).is_empty(), "{:?}", peer.lines());
    assert_eq!(h.list().await, [t("other", "1.0.0", "activated")]);
    // Being installed by another client: the agent waits for it instead of sending.
    peer.add_biz("starting", "1.0.0", "com.example.Main", PeerState::Resolved);
    let flip = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.remove_biz("starting", "1.0.0");
        peer.add_biz(
            "starting",
            "1.0.0",
            "com.example.Main",
            PeerState::Activated,
        );
    };
    let (v, ()) = tokio::join!(h.install("starting", "1.0.0"), flip);
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert!(install_lines(&peer).is_empty());
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_line_is_never_sent() {
    // The port drops lines over 8192 bytes without any reply. A jar path the base sees under
    // a long directory with spaces (each `%20` in the URL) would exceed it.
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let long = format!("/shared/{}", vec!["a directory with spaces"; 300].join("/"));
    let mut h = start(&peer, &[("--package-dir-in-base", &long)]).await;
    let began = Instant::now();
    let v = h.install("biz-a", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("exceeds the telnet port's limit of 8192 bytes"),
        "{msg}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "refused before sending, not after a timeout"
    );
    assert!(install_lines(&peer).is_empty());
    assert!(h.list().await.is_empty());
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_times_out_reconnects_and_recovers() {
    // A full telnet-command pool: `biz -i` gets no reply at all (spec §1.7).
    let peer = ArkTelnetPeer::start(PeerConfig {
        async_pool_max: 0,
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(
        &peer,
        &[
            ("--ark-telnet-command-timeout", "300ms"),
            ("--ark-telnet-register-timeout", "1s"),
        ],
    )
    .await;
    let v = h.install("biz-a", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert_eq!(
        v["message"],
        "Internal Error: install of biz-a:1.0.0 failed: install of biz-a:1.0.0 timed out after 1 s"
    );
    assert_eq!(v["errorCode"], "Arklet.InstallBizTimedOut");
    assert_eq!(
        install_lines(&peer).len(),
        1,
        "sent once; the lost acknowledgement is not retried blindly"
    );
    assert!(
        peer.connections() >= 2,
        "the connection was dropped and re-opened to resynchronise"
    );
    // The port works again: so does the agent.
    peer.update(|c| c.async_pool_max = 100);
    let v = h.install("biz-b", "1.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_without_greeting_fails_fast_and_does_not_hammer() {
    // Connected during window A: every connection is closed without a greeting, for good.
    let peer = ArkTelnetPeer::start(PeerConfig {
        phase: Phase::WindowA,
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(
        &peer,
        &[
            ("--ark-telnet-reconnect-max", "60s"),
            ("--ark-telnet-base-wait", "10s"),
        ],
    )
    .await;
    assert!(eventually(Duration::from_secs(5), || async { peer.connections() == 1 }).await);
    for name in ["a", "b", "c"] {
        let began = Instant::now();
        let v = h.install(name, "1.0.0").await;
        assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains("closed it without the sofa-ark> greeting"),
            "{msg}"
        );
        assert_eq!(v["errorCode"], "Arklet.NetworkError");
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "fails at once, not after the 10 s base wait"
        );
    }
    assert_eq!(
        peer.connections(),
        1,
        "no reconnect loop against a broken port"
    );
    assert!(peer.bricked());
    h.shutdown().await;
    peer.shutdown().await;
}

/// A readiness endpoint that answers 503 until `ready`, counting requests.
async fn gate_server(
    ready: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/ready", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (ready, hits) = (Arc::clone(&ready), Arc::clone(&hits));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let status = if ready.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_connects_before_the_base_is_ready() {
    // The base is starting: its telnet port is open but in window A, where one connection
    // would break it until the JVM restarts.
    let peer = ArkTelnetPeer::start(PeerConfig {
        phase: Phase::WindowA,
        ..PeerConfig::default()
    })
    .await;
    let (ready, hits) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (gate, server) = gate_server(Arc::clone(&ready), Arc::clone(&hits)).await;
    let mut h = start(
        &peer,
        &[
            ("--ark-telnet-ready", &gate),
            ("--ark-telnet-base-wait", "10s"),
        ],
    )
    .await;
    let install = tokio::spawn({
        let (url, client, jar) = (h.url.clone(), h.client.clone(), h.jar("biz-a", "1.0.0"));
        async move {
            let body = json!({"bizName":"biz-a","bizVersion":"1.0.0","bizUrl":jar});
            client
                .post(format!("{url}/installBiz"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            hits.load(Ordering::SeqCst) >= 3
        })
        .await
    );
    assert_eq!(
        peer.connections(),
        0,
        "no connection while the base is not ready"
    );
    // Start-up finishes: the telnet port is ready before the web port answers.
    peer.set_phase(Phase::Ready);
    ready.store(true, Ordering::SeqCst);
    let v = install.await.unwrap();
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert!(!peer.bricked());
    assert_eq!(peer.connections(), 1);
    h.shutdown().await;
    server.abort();
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_b_is_not_ready_not_empty() {
    // Window B: greeting works but `biz -a` answers a blank reply, which must not be taken
    // for "no modules".
    let peer = ArkTelnetPeer::start(PeerConfig {
        phase: Phase::WindowB,
        static_bizzes: vec![StaticBiz {
            name: "static".into(),
            version: "1.0.0".into(),
            main_class: "com.example.Static".into(),
            state: PeerState::Activated,
        }],
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[("--ark-telnet-base-wait", "10s")]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            peer.lines().iter().filter(|l| *l == "biz -a").count() >= 3
        })
        .await
    );
    assert!(
        h.list().await.is_empty(),
        "nothing adopted from a blank reply"
    );
    peer.set_phase(Phase::Ready);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.list().await == [t("static", "1.0.0", "activated")]
        })
        .await
    );
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_modules_are_adopted_and_the_base_is_not() {
    let static_biz = |name: &str, state| StaticBiz {
        name: name.into(),
        version: "1.0.0".into(),
        main_class: format!("com.example.{name}"),
        state,
    };
    let peer = ArkTelnetPeer::start(PeerConfig {
        // A base whose name the agent was not told: recognised by its `embed main` class.
        base_name: "master biz".into(),
        static_bizzes: vec![
            static_biz("s1", PeerState::Activated),
            static_biz("s2", PeerState::Deactivated),
        ],
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[("--base-name", "not-the-real-name")]).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            let mut l = h.list().await;
            l.sort();
            l == [
                t("s1", "1.0.0", "activated"),
                t("s2", "1.0.0", "deactivated"),
            ]
        })
        .await,
        "{:?}",
        h.list().await
    );
    let v = h.call("queryAllBiz", json!({})).await;
    let s1 = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bizName"] == "s1")
        .unwrap()
        .clone();
    assert_eq!(s1["mainClass"], "com.example.s1", "main class from biz -m");
    // Adopted modules are managed like any other.
    let v = h
        .call("switchBiz", json!({"bizName":"s2","bizVersion":"1.0.0"}))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    let v = h
        .call("uninstallBiz", json!({"bizName":"s1","bizVersion":"1.0.0"}))
        .await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(peer.state_of("s1", "1.0.0"), None);
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_restart_is_noticed_and_survived() {
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let mut h = start(&peer, &[]).await;
    assert_eq!(h.install("biz-a", "1.0.0").await["code"], "SUCCESS");
    // The base JVM restarts: connections drop, dynamically installed modules are gone.
    peer.restart(Phase::Ready);
    assert!(
        eventually(Duration::from_secs(5), || async {
            h.list().await == [t("biz-a", "1.0.0", "broken")]
        })
        .await,
        "{:?}",
        h.list().await
    );
    let v = h.call("queryAllBiz", json!({})).await;
    let last = v["data"][0]["bizStateRecords"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("no longer listed"),
        "{last}"
    );
    // Reconnected; the module can be removed from the agent and installed again.
    assert_eq!(
        h.call(
            "uninstallBiz",
            json!({"bizName":"biz-a","bizVersion":"1.0.0"})
        )
        .await["code"],
        "SUCCESS"
    );
    assert_eq!(h.install("biz-a", "1.0.0").await["code"], "SUCCESS");
    assert!(peer.connections() >= 2);
    assert_eq!(
        peer.state_of("biz-a", "1.0.0").as_deref(),
        Some("activated")
    );
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_operation_at_a_time() {
    let peer = ArkTelnetPeer::start(PeerConfig {
        start_delay: Duration::from_millis(300),
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[]).await;
    let (a, b) = tokio::join!(h.install("biz-a", "1.0.0"), h.install("biz-b", "1.0.0"));
    assert_eq!(
        (a["code"].as_str(), b["code"].as_str()),
        (Some("SUCCESS"), Some("SUCCESS")),
        "{a} {b}"
    );
    // The second `biz -i` reached the port only after the first module had started.
    let journal = peer.journal();
    let pos = |pred: &dyn Fn(&String) -> bool| journal.iter().position(pred).unwrap();
    let installs: Vec<usize> = journal
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("> biz -i"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(installs.len(), 2, "{journal:?}");
    let first_done = pos(&|l: &String| l.starts_with("Install Biz: ") && l.contains(" success"));
    assert!(first_done < installs[1], "{journal:?}");
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failed_stops_are_reported() {
    let peer = ArkTelnetPeer::start(PeerConfig {
        fail_stop: vec!["sticky".into()],
        remove_when_stop_failed: false,
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(
        &peer,
        &[
            ("--ark-telnet-stop-timeout", "1s"),
            ("--ark-telnet-base-wait", "1s"),
        ],
    )
    .await;
    // Security mode: installs are refused by the port, and said so.
    peer.update(|c| c.security = true);
    let v = h.install("biz-a", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("security mode"),
        "{v}"
    );
    assert!(h.list().await.is_empty());
    peer.update(|c| c.security = false);

    assert_eq!(h.install("sticky", "1.0.0").await["code"], "SUCCESS");
    let v = h
        .call(
            "uninstallBiz",
            json!({"bizName":"sticky","bizVersion":"1.0.0"}),
        )
        .await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("its stop failed and it is still listed as broken"),
        "{v}"
    );
    assert_eq!(h.list().await, [t("sticky", "1.0.0", "broken")]);
    // The broken leftover makes SOFAArk's gate refuse installs: the agent waits, then says why.
    let v = h.install("biz-c", "1.0.0").await;
    assert_eq!(v["code"], "CMD_PROCESS_INTERNAL_ERROR", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("SOFAArk refuses installs while sticky:1.0.0 is broken"),
        "{v}"
    );
    assert!(
        install_lines(&peer).iter().all(|l| !l.contains("biz-c")),
        "never sent into the gate"
    );
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_check_is_required() {
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut args = agent_args(tmp.path(), &peer, &[]);
    let i = args.iter().position(|a| a == "--ark-telnet-ready").unwrap();
    args.drain(i..i + 2);
    let err = app::start(Config::parse_from(args))
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("--ark-telnet-ready"), "{err}");
    assert_eq!(peer.connections(), 0);
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_strategy_and_manifest_identity() {
    let peer = ArkTelnetPeer::start(PeerConfig {
        fail_start: vec!["broken".into()],
        ..PeerConfig::default()
    })
    .await;
    let mut h = start(&peer, &[]).await;
    let first = h.jar("first", "1");
    let failing = h.jar("broken", "1");
    let v = h
        .call(
            "batchInstallBiz",
            json!({"bizList": [
                {"bizName":"first","bizVersion":"1","bizUrl":first},
                {"bizName":"broken","bizVersion":"1","bizUrl":failing},
            ]}),
        )
        .await;
    assert_eq!(v["data"]["message"], "batch install failed", "{v}");
    let by_url = v["data"]["bizUrlToResponse"].as_object().unwrap();
    assert_eq!(by_url[&first]["code"], "SUCCESS");
    assert_eq!(by_url[&failing]["code"], "FAILED");
    assert!(
        by_url[&failing]["message"]
            .as_str()
            .unwrap()
            .contains("see the base's Ark logs")
    );
    assert_eq!(h.list().await, [t("first", "1", "activated")]);

    // Identity from the manifest when the request names none.
    let v = h
        .call("installBiz", json!({"bizUrl": h.jar("named", "2.0.0")}))
        .await;
    assert_eq!(v["data"]["bizInfos"][0]["identity"], "named:2.0.0", "{v}");
    assert_eq!(
        peer.state_of("named", "2.0.0").as_deref(),
        Some("activated")
    );

    // uninstallThenInstall: every version of the name leaves the base first.
    let v = h
        .call(
            "installBiz",
            json!({"bizName":"named","bizVersion":"3.0.0","bizUrl":h.jar("named", "3.0.0"),"installStrategy":"uninstallThenInstall"}),
        )
        .await;
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "activated", "{v}");
    assert_eq!(peer.state_of("named", "2.0.0"), None);
    assert_eq!(
        peer.state_of("named", "3.0.0").as_deref(),
        Some("activated")
    );
    h.shutdown().await;
    peer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_the_base_chose_wins_over_the_agent_policy() {
    // The agent is told every version serves; the base (SOFAArk default) keeps a second
    // version deactivated. The agent reports what the base did, not what it would have done.
    let peer = ArkTelnetPeer::start(PeerConfig::default()).await;
    let mut h = start(&peer, &[("--activation", "all-active")]).await;
    assert_eq!(h.install("biz-a", "1.0.0").await["code"], "SUCCESS");
    let v = h.install("biz-a", "2.0.0").await;
    assert_eq!(v["code"], "SUCCESS", "{v}");
    assert_eq!(
        peer.state_of("biz-a", "2.0.0").as_deref(),
        Some("deactivated")
    );
    assert_eq!(v["data"]["bizInfos"][0]["bizState"], "deactivated", "{v}");
    assert_eq!(
        h.list().await,
        [
            t("biz-a", "2.0.0", "deactivated"),
            t("biz-a", "1.0.0", "activated")
        ]
    );
    h.shutdown().await;
}
