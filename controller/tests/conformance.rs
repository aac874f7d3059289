//! Upstream conformance steps (spec controller §8) for vnodes and bases, MQTT and HTTP, with
//! the timeouts scaled down (unreachable 1 s, dead 2 s).

mod common;

use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(10);

async fn ready_and_leased(kube: &Kube, name: &str, holder: &str) -> bool {
    let lease_ok = match kube.lease(name).await.and_then(|l| l.spec) {
        Some(spec) => {
            let renew = spec.renew_time.map(|t| t.0);
            let dur = spec.lease_duration_seconds.unwrap_or(0);
            spec.holder_identity.as_deref() == Some(holder)
                && renew.is_some_and(|r| {
                    r + k8s_openapi::jiff::SignedDuration::from_secs(dur.into())
                        >= k8s_openapi::jiff::Timestamp::now()
                })
        }
        None => false,
    };
    lease_ok && kube.ready(name).await.as_deref() == Some("True")
}

async fn gone(kube: &Kube, name: &str) -> bool {
    kube.node(name).await.is_none() && kube.lease(name).await.is_none()
}

/// VK suite `vnode_lifecycle_test.go`, "online then deactivate" and "online then timeout".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vk_vnode_lifecycle() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", Some(broker.port), false)).await;
    let name = vnode("test-base");

    // 1–2. Activated node → Ready=True; Lease held by clientID and fresh.
    let base = MqttBase::start(broker.port, "test-base").await;
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 1-2"
    );
    // 3. Re-announcing the same node does not start it twice.
    let second = MqttBase::start(broker.port, "test-base").await;
    assert!(
        eventually(T, || async {
            ctl.metric(r#"koupleless_controller_heartbeats_total{tunnel="mqtt"}"#)
                .await
                >= 6.0
        })
        .await
    );
    assert_eq!(
        ctl.metric(r#"koupleless_controller_vnode_transitions_total{transition="acquired"}"#)
            .await,
        1.0,
        "step 3"
    );
    second.stop().await;
    // 4. Labels: base name, version, cluster, env.
    let labels = kube.node(&name).await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["base.koupleless.io/name"], "base", "step 4");
    assert_eq!(labels["base.koupleless.io/version"], "1.0.0");
    assert_eq!(labels["base.koupleless.io/cluster-name"], "default");
    assert_eq!(labels["virtual-kubelet.koupleless.io/env"], ENV);
    // 5. DEACTIVATED → Node and Lease NotFound.
    base.deactivate().await;
    assert!(eventually(T, || gone(&kube, &name)).await, "step 5");
    base.stop().await;

    // 6. Activated again → Ready.
    let base = MqttBase::start(broker.port, "test-base").await;
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 6"
    );
    // 7. Gone silent ("timeout") → Node NotFound.
    base.set(|s| {
        s.heartbeats = false;
        s.answers = false;
    });
    assert!(eventually(T, || gone(&kube, &name)).await, "step 7");
    base.stop().await;
    ctl.stop().await;
}

/// MC MQTT suite `base_mqtt_lifecycle_test.go`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_base_lifecycle() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", Some(broker.port), false)).await;
    let name = vnode("test-base");
    let base = MqttBase::start(broker.port, "test-base").await;
    // 1. Start → Lease held and fresh, Node Ready.
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 1"
    );
    // 2. Exit (DEACTIVATED) → NotFound.
    base.deactivate().await;
    assert!(eventually(T, || gone(&kube, &name)).await, "step 2");
    // 3. Restart → Ready.
    base.set(|s| {
        s.heartbeats = true;
        s.answers = true;
    });
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 3"
    );
    // 4. Unreachable → NotFound (dead threshold).
    base.set(|s| {
        s.heartbeats = false;
        s.answers = false;
    });
    assert!(eventually(T, || gone(&kube, &name)).await, "step 4");
    // 5. Reachable again → Ready.
    base.set(|s| {
        s.heartbeats = true;
        s.answers = true;
    });
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 5"
    );
    // 6. Exit → NotFound.
    base.deactivate().await;
    assert!(eventually(T, || gone(&kube, &name)).await, "step 6");
    base.stop().await;
    ctl.stop().await;
}

/// MC MQTT suite `module_mqtt_lifecycle_test.go` step 6: invalid payloads, failed responses
/// and expired messages on health/biz/heart/queryBaseline are ignored without crashing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_invalid_payloads_are_ignored() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", Some(broker.port), false)).await;
    let name = vnode("test-base");
    let base = MqttBase::start(broker.port, "test-base").await;
    assert!(eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await);
    let uid = kube.node(&name).await.unwrap().metadata.uid;
    for (topic, payload) in [
        ("base/health", ""),
        (
            "base/health",
            r#"{"data":{"code":""},"publishTimestamp":1}"#,
        ),
        (
            "base/health",
            r#"{"data":{"code":"FAILED"},"publishTimestamp":9999999999999}"#,
        ),
        ("base/simpleBiz", "not json"),
        (
            "base/biz",
            r#"{"data":{"code":"FAILED"},"publishTimestamp":0}"#,
        ),
        (
            "base/heart",
            r#"{"data":{"baseMetadata":{},"state":"deactivated"},"publishTimestamp":0}"#,
        ),
        ("base/queryBaseline", r#"{"data":{},"publishTimestamp":0}"#),
        (
            "base/batchInstallBizResponse",
            r#"{"data":{"command":"batchInstallBiz","response":{"code":"FAILED","data":{"code":"FAILED","message":"x","bizUrlToResponse":{"u":{"code":"FAILED","message":"no bizInfos"}}}}},"publishTimestamp":1}"#,
        ),
        (
            "base/bizOperation",
            r#"{"data":{"command":"switchBiz","response":{"code":"SUCCESS"}},"publishTimestamp":1}"#,
        ),
    ] {
        base.publish_raw(topic, payload).await;
    }
    assert!(
        eventually(T, || async {
            ctl.metric(r#"koupleless_controller_tunnel_errors_total{tunnel="mqtt",kind="stale"}"#)
                .await
                >= 3.0
        })
        .await
    );
    // Still alive and untouched: the stale DEACTIVATED heartbeat did not delete it.
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    // (Same UID: never deleted and recreated; status writes under load are fine.)
    assert_eq!(kube.node(&name).await.unwrap().metadata.uid, uid);
    base.stop().await;
    ctl.stop().await;
}

/// MC HTTP suite `base_http_lifecycle_test.go`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_base_lifecycle() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", None, true)).await;
    let addr = ctl.http.unwrap();
    let name = vnode("test-base");
    let base = HttpBase::start(addr, "test-base").await;
    // 1. Start → Lease held, Ready; the tunnel port label is set; memory from /health.
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 1"
    );
    assert!(eventually(T, || async { kube.memory(&name).await.is_some() }).await);
    let labels = kube.node(&name).await.unwrap().metadata.labels.unwrap();
    assert_eq!(
        labels["base.koupleless.io/tunnel-port"],
        base.port.to_string()
    );
    // 2. Exit → NotFound.
    base.deactivate(addr).await;
    assert!(eventually(T, || gone(&kube, &name)).await, "step 2");
    // 3. Restart → Ready.
    base.set(|s| {
        s.heartbeats = true;
        s.answers = true;
    });
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 3"
    );
    // 4. Unreachable (502 everywhere, no heartbeats) → NotFound.
    base.set(|s| {
        s.heartbeats = false;
        s.answers = false;
    });
    assert!(eventually(T, || gone(&kube, &name)).await, "step 4");
    // 5. Reachable → Ready.
    base.set(|s| {
        s.heartbeats = true;
        s.answers = true;
    });
    assert!(
        eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await,
        "step 5"
    );
    // 6. Exit → NotFound.
    base.deactivate(addr).await;
    assert!(eventually(T, || gone(&kube, &name)).await, "step 6");
    base.stop().await;
    ctl.stop().await;
}

/// The HTTP tunnel keeps a base alive through health polls alone (the owner may not be the
/// replica receiving heartbeats), and answers `/heartbeat` like upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_health_alone_keeps_a_base_alive_and_bad_requests_are_rejected() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", None, true)).await;
    let addr = ctl.http.unwrap();
    let name = vnode("quiet");
    let base = HttpBase::start(addr, "quiet").await;
    assert!(eventually(T, || ready_and_leased(&kube, &name, "suite-test")).await);
    base.set(|s| s.heartbeats = false);
    let polls = base.state.lock().unwrap().health_requests;
    // Several dead thresholds later, health answers alone have kept it Ready.
    assert!(
        eventually(T, || async {
            base.state.lock().unwrap().health_requests >= polls + 15
        })
        .await
    );
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));

    let http = reqwest::Client::new();
    let r = http
        .post(format!("http://{addr}/heartbeat"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("http://{addr}/heartbeat"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = http
        .post(format!("http://{addr}/queryBaseline"))
        .body(r#"{"identity":"quiet","clusterName":"none","name":"base","version":"1.0.0"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "[]");
    base.stop().await;
    ctl.stop().await;
}

/// Both tunnels at once (upstream wires only the first one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tunnels_at_once() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-test", Some(broker.port), true)).await;
    let mqtt = MqttBase::start(broker.port, "over-mqtt").await;
    let http = HttpBase::start(ctl.http.unwrap(), "over-http").await;
    for id in ["over-mqtt", "over-http"] {
        let name = vnode(id);
        assert!(
            eventually(T, || async { kube.memory(&name).await.is_some() }).await,
            "{id}"
        );
        assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    }
    assert!(
        ctl.metric(r#"koupleless_controller_heartbeats_total{tunnel="http"}"#)
            .await
            >= 1.0
    );
    assert!(
        ctl.metric(r#"koupleless_controller_heartbeats_total{tunnel="mqtt"}"#)
            .await
            >= 1.0
    );
    mqtt.stop().await;
    http.stop().await;
    ctl.stop().await;
}
