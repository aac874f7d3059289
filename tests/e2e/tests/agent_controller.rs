//! Our agent and our controller together, over a real MQTT broker, against the Kubernetes API
//! test server, with a real JVM as the base: the base becomes a virtual Node whose memory is the
//! base JVM's `MaxMetaspaceSize`, and disappears as soon as the agent shuts down.

mod common;

use koupleless_testkit::eventually;
use std::time::Duration;

use common::{node_ready as ready, start_base};
use k8s_openapi::api::core::v1::Node;
use koupleless_controller::config::{MqttSettings, NodeSettings};
use koupleless_controller::{Listeners, Settings, Timings};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::java_available;
use kube::Api;
use tokio_util::sync::CancellationToken;

fn memory(node: &Node) -> (Option<String>, Option<String>) {
    let status = node.status.clone().unwrap_or_default();
    let get = |m: Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { m.and_then(|m| m.get("memory").map(|q| q.0.clone())) };
    (get(status.capacity), get(status.allocatable))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_becomes_a_node_with_metaspace_memory_and_leaves_on_shutdown() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");

    let base = start_base(tmp.path());

    let mut settings = Settings::new("dev".parse().unwrap(), "ctl-e2e");
    settings.timings = Timings {
        unreachable_after: Duration::from_secs(5),
        dead_after: Duration::from_secs(10),
        lease_duration: Duration::from_secs(5),
        lease_renew_interval: Duration::from_secs(1),
        lease_renew_deadline: Duration::from_secs(4),
        health_interval: Duration::from_millis(500),
        biz_interval: Duration::from_millis(500),
        retry_interval: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        baseline_wait: Duration::from_secs(3),
    };
    settings.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    settings.mqtt = Some(MqttSettings {
        host: "127.0.0.1".into(),
        port: broker.port(),
        username: String::new(),
        password: String::new(),
        client_id: "koupleless@@@ctl-e2e".into(),
        tls: None,
        retain_commands: false,
        keep_alive: Duration::from_secs(5),
        message_max_age: Duration::from_secs(10),
    });
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        client.clone(),
        Listeners::default(),
        cancel.clone(),
    ));

    let pid = base.0.id().to_string();
    let port = broker.port().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-e2e",
        "--base-name",
        "e2e-base",
        "--base-pid",
        &pid,
        "--mqtt-broker",
        "127.0.0.1",
        "--mqtt-port",
        &port,
        "--mqtt-heartbeat-interval",
        "1s",
        "--runtime-env",
        "DEV",
    ])
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    let name = "vnode.base-e2e.dev";
    // 64 MiB of metaspace is 65536Ki of Node memory (spec controller §1.7).
    let discovered = eventually(Duration::from_secs(40), || {
        let nodes = nodes.clone();
        async move {
            match nodes.get_opt(name).await {
                Ok(Some(n)) => {
                    ready(&n).as_deref() == Some("True")
                        && memory(&n).0.as_deref() == Some("65536Ki")
                }
                _ => false,
            }
        }
    })
    .await;
    let node = nodes.get_opt(name).await.unwrap();
    assert!(
        discovered,
        "node with the base's metaspace as memory: {node:?}"
    );
    let node = node.unwrap();
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("base.koupleless.io/name").map(String::as_str),
        Some("e2e-base")
    );
    assert_eq!(
        labels
            .get("virtual-kubelet.koupleless.io/env")
            .map(String::as_str),
        Some("dev")
    );
    let (_, allocatable) = memory(&node);
    let alloc_ki: i64 = allocatable.unwrap().trim_end_matches("Ki").parse().unwrap();
    assert!(
        alloc_ki > 0 && alloc_ki < 65536,
        "allocatable = max - committed: {alloc_ki}Ki"
    );

    // A graceful agent shutdown says goodbye (DEACTIVATED heartbeat): the Node goes at once,
    // not after the 10 s dead threshold.
    agent.shutdown().await;
    let gone = eventually(Duration::from_secs(5), || {
        let nodes = nodes.clone();
        async move { matches!(nodes.get_opt(name).await, Ok(None)) }
    })
    .await;
    assert!(gone, "node removed after the agent's goodbye");

    cancel.cancel();
    controller.await.unwrap().expect("controller stops cleanly");
    server.shutdown().await;
    drop(base);
}
