//! Bases on the MQTT tunnel become Nodes: against the Kubernetes API test server and a real
//! Mosquitto broker, with simulated bases publishing the Java Arklet payloads.

mod common;

use std::time::Duration;

use common::*;
use koupleless_protocol::BizState;

const T: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_creates_the_node_with_labels_taints_and_memory() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    let base = MqttBase::start(broker.port, "10.0.0.5").await;
    let name = vnode("10.0.0.5");

    assert!(
        eventually(T, || async { kube.memory(&name).await.is_some() }).await,
        "node with memory"
    );
    let node = kube.node(&name).await.unwrap();
    let labels = node.metadata.labels.clone().unwrap();
    for (k, v) in [
        ("type", "virtual-kubelet"),
        ("kubernetes.io/role", "agent"),
        ("kubernetes.io/hostname", "10.0.0.5-pod"),
        ("virtual-kubelet.koupleless.io/component", "vnode"),
        ("virtual-kubelet.koupleless.io/env", ENV),
        ("base.koupleless.io/name", "base"),
        ("base.koupleless.io/version", "1.0.0"),
        ("base.koupleless.io/cluster-name", "default"),
        ("base.koupleless.io/host-name", "10.0.0.5-pod"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert!(
        !labels.contains_key("base.koupleless.io/tunnel-port"),
        "MQTT heartbeats carry no port"
    );
    let taints = node.spec.clone().unwrap().taints.unwrap();
    let t: Vec<_> = taints
        .iter()
        .map(|t| (t.key.as_str(), t.value.as_deref(), t.effect.as_str()))
        .collect();
    assert_eq!(
        t,
        [
            (
                "schedule.koupleless.io/virtual-node",
                Some("True"),
                "NoExecute"
            ),
            ("schedule.koupleless.io/node-env", Some(ENV), "NoExecute"),
        ]
    );
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "65535");
    assert_eq!(
        kube.memory(&name).await.unwrap(),
        ("262144Ki".into(), "180224Ki".into())
    );
    assert_eq!(kube.ready(&name).await.as_deref(), Some("True"));
    let addrs: Vec<_> = status
        .addresses
        .unwrap()
        .into_iter()
        .map(|a| (a.type_, a.address))
        .collect();
    assert_eq!(
        addrs,
        [
            ("InternalIP".into(), "127.0.0.1".into()),
            ("Hostname".into(), "10.0.0.5-pod".into())
        ]
    );
    let info = status.node_info.unwrap();
    assert!(
        info.kubelet_version.starts_with("v0."),
        "{}",
        info.kubelet_version
    );
    assert_eq!(info.operating_system, "linux");
    assert_eq!(
        status
            .daemon_endpoints
            .unwrap()
            .kubelet_endpoint
            .unwrap()
            .port,
        10250
    );
    assert_eq!(kube.lease_holder(&name).await.as_deref(), Some("mc-1"));

    // What kubectl sees.
    let kubeconfig = kube.server.write_kubeconfig_tempfile().unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["get", "node", &name, "-o", "json"])
        .output()
        .await
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metadata"]["name"], name.as_str());
    assert_eq!(
        json["metadata"]["labels"]["base.koupleless.io/cluster-name"],
        "default"
    );
    assert_eq!(json["spec"]["taints"][1]["value"], ENV);
    assert_eq!(json["status"]["capacity"]["memory"], "262144Ki");
    assert_eq!(json["status"]["allocatable"]["memory"], "180224Ki");
    let ready = json["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    let wide = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig.path())
        .args(["get", "nodes", "--no-headers"])
        .output()
        .await
        .unwrap();
    let line = String::from_utf8_lossy(&wide.stdout).to_string();
    assert!(
        line.contains(&name) && line.contains("Ready") && line.contains("agent"),
        "{line}"
    );

    // Events and metrics.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(kube.client.clone(), "default");
    assert!(
        eventually(T, || async {
            events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("RegisteredNode")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                })
        })
        .await,
        "RegisteredNode event"
    );
    assert!(
        eventually(T, || async { ctl.ready().await }).await,
        "readyz"
    );
    assert_eq!(
        ctl.metric(r#"koupleless_controller_vnodes{state="ready"}"#)
            .await,
        1.0
    );
    assert!(
        ctl.metric(r#"koupleless_controller_heartbeats_total{tunnel="mqtt"}"#)
            .await
            >= 1.0
    );
    base.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_changes_update_capacity_and_unchanged_health_writes_nothing() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    // Generous liveness thresholds: a loaded machine must not flap Ready during the test.
    let mut s = settings("mc-1", Some(broker.port), false);
    s.timings.unreachable_after = Duration::from_secs(5);
    s.timings.dead_after = Duration::from_secs(10);
    let ctl = Controller::start(&kube, s).await;
    let base = MqttBase::start(broker.port, "base-a").await;
    let name = vnode("base-a");
    assert!(eventually(T, || async { kube.memory(&name).await.is_some() }).await);

    // Several health polls with the same report: the Node is not written again.
    let rv = kube.node(&name).await.unwrap().metadata.resource_version;
    let polls = base.state.lock().unwrap().health_requests;
    assert!(
        eventually(T, || async {
            base.state.lock().unwrap().health_requests >= polls + 4
        })
        .await
    );
    assert_eq!(
        kube.node(&name).await.unwrap().metadata.resource_version,
        rv,
        "no write without change"
    );
    assert!(
        ctl.metric("koupleless_controller_node_status_unchanged_total")
            .await
            >= 3.0
    );

    base.set(|s| {
        s.max_metaspace = 512 << 20;
        s.committed_metaspace = 100 << 20;
    });
    assert!(
        eventually(T, || async {
            kube.memory(&name).await == Some(("524288Ki".into(), "421888Ki".into()))
        })
        .await,
        "capacity follows health"
    );

    // Unlimited metaspace (-1): the configured bound (1 GiB here) instead of upstream's 0.
    base.set(|s| s.max_metaspace = -1);
    assert!(
        eventually(T, || async {
            kube.memory(&name).await == Some(("1048576Ki".into(), "946176Ki".into()))
        })
        .await,
        "fallback bound"
    );

    // A heartbeat with a new version and host name updates labels and addresses.
    base.set(|s| {
        s.version = "2.0.0".into();
        s.host_name = "moved".into();
    });
    assert!(
        eventually(T, || async {
            let n = kube.node(&name).await.unwrap();
            let l = n.metadata.labels.unwrap();
            let host = n
                .status
                .unwrap()
                .addresses
                .unwrap()
                .into_iter()
                .find(|a| a.type_ == "Hostname")
                .unwrap()
                .address;
            l["base.koupleless.io/version"] == "2.0.0"
                && l["kubernetes.io/hostname"] == "moved"
                && host == "moved"
        })
        .await,
        "labels and addresses follow heartbeats"
    );
    base.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_makes_the_node_unknown_then_deletes_node_and_lease() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("mc-1", Some(broker.port), false)).await;
    let base = MqttBase::start(broker.port, "base-b").await;
    let name = vnode("base-b");
    assert!(
        eventually(T, || async {
            kube.ready(&name).await.as_deref() == Some("True")
        })
        .await
    );
    assert!(kube.lease(&name).await.is_some());

    base.set(|s| {
        s.heartbeats = false;
        s.answers = false;
    });
    assert!(
        eventually(T, || async {
            kube.ready(&name).await.as_deref() == Some("Unknown")
        })
        .await,
        "Ready=Unknown after the unreachable threshold"
    );
    let ready = kube
        .node(&name)
        .await
        .unwrap()
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("BaseUnreachable"));
    assert!(
        eventually(T, || async {
            kube.node(&name).await.is_none() && kube.lease(&name).await.is_none()
        })
        .await,
        "Node and Lease deleted after the dead threshold"
    );
    base.stop().await;
    ctl.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_deletes_at_once() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    // Long thresholds: only the deactivation can explain a quick deletion.
    let mut s = settings("mc-1", Some(broker.port), false);
    s.timings.unreachable_after = Duration::from_secs(30);
    s.timings.dead_after = Duration::from_secs(60);
    let ctl = Controller::start(&kube, s).await;

    let hb = MqttBase::start(broker.port, "base-c").await;
    let health = MqttBase::start(broker.port, "base-d").await;
    for id in ["base-c", "base-d"] {
        let name = vnode(id);
        assert!(
            eventually(T, || async {
                kube.ready(&name).await.as_deref() == Some("True")
            })
            .await
        );
    }
    // A DEACTIVATED heartbeat.
    hb.deactivate().await;
    // A health report whose master biz is not activated (no more heartbeats, but with a 30 s
    // threshold silence cannot explain a deletion within seconds).
    health.set(|s| {
        s.master_state = BizState::Deactivated;
        s.heartbeats = false;
    });
    for id in ["base-c", "base-d"] {
        let name = vnode(id);
        assert!(
            eventually(Duration::from_secs(5), || async {
                kube.node(&name).await.is_none() && kube.lease(&name).await.is_none()
            })
            .await,
            "{name} deleted at once"
        );
    }
    hb.stop().await;
    health.stop().await;
    ctl.stop().await;
}
