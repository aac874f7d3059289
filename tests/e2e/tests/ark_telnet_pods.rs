//! A module Pod through our controller to our agent's `ark-telnet` backend, with the test kit's
//! SOFAArk telnet peer standing in for the base's command port (no real SOFAArk base is
//! available here): the Pod bound to the base's vnode becomes a `biz -i` on the port, the module
//! activated in the base makes the Pod Running/Ready, and deleting the Pod uninstalls it from
//! the base before the Pod goes.

mod common;

use std::time::Duration;

use common::{fast_settings, module_pod, mqtt, running_ready, start_base};
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_controller::Listeners;
use koupleless_testkit::ark_telnet_peer::{ArkTelnetPeer, PeerActivation, PeerConfig, Phase};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{BizJar, eventually, file_url, java_available};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_pod_runs_in_the_base_through_the_ark_telnet_backend() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let base = start_base(tmp.path());
    let peer = ArkTelnetPeer::start(PeerConfig {
        base_name: "telnet-base".into(),
        activation: PeerActivation::NewTakesOver,
        ..PeerConfig::default()
    })
    .await;
    let jar = BizJar::new("biz1", "1.0.0").build(tmp.path());

    let mut settings = fast_settings("ctl-e2e-telnet");
    settings.mqtt = Some(mqtt(broker.port(), "ctl-e2e-telnet"));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        client.clone(),
        Listeners::default(),
        cancel.clone(),
    ));

    let pid = base.0.id().to_string();
    let port = broker.port().to_string();
    let telnet = peer.addr().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-telnet",
        "--base-name",
        "telnet-base",
        "--base-pid",
        &pid,
        "--activation",
        "new-takes-over",
        "--backend",
        "ark-telnet",
        "--ark-telnet-addr",
        &telnet,
        "--ark-telnet-ready",
        "none",
        "--ark-telnet-poll-interval",
        "50ms",
        "--mqtt-broker",
        "127.0.0.1",
        "--mqtt-port",
        &port,
        "--mqtt-heartbeat-interval",
        "1s",
        "--runtime-env",
        "dev",
    ])
    .await;

    let node = "vnode.base-telnet.dev";
    let nodes: Api<Node> = Api::all(client.clone());
    assert!(
        eventually(T, || {
            let nodes = nodes.clone();
            async move { matches!(nodes.get_opt(node).await, Ok(Some(_))) }
        })
        .await,
        "the base's vnode"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &module_pod(node, &file_url(&jar)))
        .await
        .unwrap();
    let running = eventually(T, || {
        let pods = pods.clone();
        async move { pods.get("biz1").await.is_ok_and(|p| running_ready(&p)) }
    })
    .await;
    let p = pods.get("biz1").await.unwrap();
    assert!(running, "Running/Ready: {:?}", p.status);
    assert_eq!(
        peer.state_of("biz1", "1.0.0").as_deref(),
        Some("activated"),
        "the module runs in the base: {:?}",
        peer.journal()
    );
    let installs: Vec<String> = peer
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("biz -i"))
        .collect();
    assert_eq!(installs.len(), 1, "one install on the port: {installs:?}");
    let status = p.status.unwrap();
    let container = &status.container_statuses.unwrap()[0];
    assert_eq!(
        container.container_id.as_deref(),
        Some("koupleless://base-telnet/biz1:1.0.0")
    );

    // Delete: uninstalled from the base, then the Pod goes.
    pods.delete("biz1", &DeleteParams::default()).await.unwrap();
    let gone = eventually(Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { matches!(pods.get_opt("biz1").await, Ok(None)) }
    })
    .await;
    assert!(gone, "Pod removed once the module is uninstalled");
    assert_eq!(
        peer.state_of("biz1", "1.0.0"),
        None,
        "uninstalled from the base: {:?}",
        peer.journal()
    );
    assert!(
        peer.lines()
            .iter()
            .any(|l| l.starts_with("biz -u biz1:1.0.0"))
    );

    agent.shutdown().await;
    cancel.cancel();
    controller.await.unwrap().unwrap();
    peer.shutdown().await;
    server.shutdown().await;
}

/// The base JVM crashes (kill -9) while its modules run in it, and Kubernetes restarts it: the
/// agent reports the base BROKEN, the Node turns Ready=False and is kept (so is the module
/// Pod), and once a JVM is back with no modules the controller installs the module again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_jvm_crash_keeps_the_node_and_reinstalls_its_modules() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let mut base = start_base(tmp.path());
    let peer = ArkTelnetPeer::start(PeerConfig {
        base_name: "telnet-base".into(),
        activation: PeerActivation::NewTakesOver,
        ..PeerConfig::default()
    })
    .await;
    let jar = BizJar::new("biz1", "1.0.0").build(tmp.path());

    let mut settings = fast_settings("ctl-e2e-crash");
    settings.mqtt = Some(mqtt(broker.port(), "ctl-e2e-crash"));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        client.clone(),
        Listeners::default(),
        cancel.clone(),
    ));
    let port = broker.port().to_string();
    let telnet = peer.addr().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-crash",
        "--base-name",
        "telnet-base",
        "--base-main-class",
        "Base",
        "--activation",
        "new-takes-over",
        "--backend",
        "ark-telnet",
        "--ark-telnet-addr",
        &telnet,
        "--ark-telnet-ready",
        "none",
        "--ark-telnet-poll-interval",
        "50ms",
        "--ark-telnet-monitor-interval",
        "500ms",
        "--mqtt-broker",
        "127.0.0.1",
        "--mqtt-port",
        &port,
        "--mqtt-heartbeat-interval",
        "1s",
        "--runtime-env",
        "dev",
    ])
    .await;

    let node = "vnode.base-crash.dev";
    let nodes: Api<Node> = Api::all(client.clone());
    let node_with = |want: &'static str| {
        let nodes = nodes.clone();
        async move {
            eventually(T, || {
                let nodes = nodes.clone();
                async move {
                    nodes.get_opt(node).await.ok().flatten().is_some_and(|n| {
                        n.status
                            .and_then(|s| s.conditions)
                            .into_iter()
                            .flatten()
                            .any(|c| c.type_ == "Ready" && c.status == want)
                    })
                }
            })
            .await
        }
    };
    assert!(node_with("True").await, "the base's vnode Ready");
    let uid = nodes.get(node).await.unwrap().metadata.uid;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &module_pod(node, &file_url(&jar)))
        .await
        .unwrap();
    let running = || {
        let pods = pods.clone();
        async move {
            eventually(T, || {
                let pods = pods.clone();
                async move { pods.get("biz1").await.is_ok_and(|p| running_ready(&p)) }
            })
            .await
        }
    };
    assert!(running().await, "module Pod Running/Ready");
    let pod_uid = pods.get("biz1").await.unwrap().metadata.uid;

    // kill -9: the JVM and every module in it are gone.
    base.0.kill().unwrap();
    base.0.wait().unwrap();
    peer.restart(Phase::Ready);
    assert!(
        node_with("False").await,
        "Node Ready=False while the JVM is down"
    );
    assert_eq!(
        nodes.get(node).await.unwrap().metadata.uid,
        uid,
        "Node kept"
    );

    // Kubernetes restarts the container: a new JVM, no modules in it.
    base = start_base(tmp.path());
    assert!(node_with("True").await, "Ready again");
    let reinstalled = eventually(T, || async {
        peer.state_of("biz1", "1.0.0").as_deref() == Some("activated")
    })
    .await;
    assert!(
        reinstalled,
        "the module installed again: {:?}",
        peer.journal()
    );
    assert!(running().await, "module Pod Running/Ready again");
    assert_eq!(nodes.get(node).await.unwrap().metadata.uid, uid);
    assert_eq!(pods.get("biz1").await.unwrap().metadata.uid, pod_uid);

    agent.shutdown().await;
    cancel.cancel();
    controller.await.unwrap().unwrap();
    server.shutdown().await;
    drop(base);
}
