//! Module Pods end to end: our controller and our agent (process backend) over a real MQTT
//! broker, against the Kubernetes API test server, with module jars compiled by the test. A
//! module Pod bound to the base's vnode becomes a running module JVM and a Running/Ready Pod;
//! a module whose start fails shows the agent's own message and runs once its image is fixed;
//! deleting the Pod stops the module's JVM and removes the Pod.

mod common;

use std::time::Duration;

use common::{module_pod, running_ready, start_base};
use k8s_openapi::api::core::v1::Pod;
use koupleless_controller::config::{MqttSettings, NodeSettings};
use koupleless_controller::{Listeners, Settings, Timings};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{
    Behaviour, BizJar, eventually, file_url, java_available, process_alive, read_pid_file,
};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(60);

fn waiting(p: &Pod) -> Option<(String, String)> {
    let w = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((w.reason.unwrap_or_default(), w.message.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_pod_runs_a_module_jvm_and_deleting_it_stops_the_jvm() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let base = start_base(tmp.path());

    let pid_file = tmp.path().join("biz1.pid");
    let good = BizJar::new("biz1", "1.0.0")
        .behaviour(Behaviour::WritePidFile(pid_file.clone()))
        .behaviour(Behaviour::StayUp)
        .file_name("biz1-good.jar")
        .build(tmp.path());
    let bad = BizJar::new("biz1", "1.0.0")
        .behaviour(Behaviour::FailAtStart)
        .file_name("biz1-bad.jar")
        .build(tmp.path());

    let mut settings = Settings::new("dev".parse().unwrap(), "ctl-e2e-pods");
    let mut timings = Timings::UPSTREAM;
    timings.unreachable_after = Duration::from_secs(5);
    timings.dead_after = Duration::from_secs(20);
    timings.lease_duration = Duration::from_secs(5);
    timings.lease_renew_interval = Duration::from_secs(1);
    timings.lease_renew_deadline = Duration::from_secs(4);
    timings.health_interval = Duration::from_millis(500);
    timings.biz_interval = Duration::from_millis(500);
    timings.retry_interval = Duration::from_millis(200);
    timings.baseline_wait = Duration::from_secs(3);
    settings.timings = timings;
    settings.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    settings.pods.retry_base = Duration::from_millis(500);
    settings.pods.retry_max = Duration::from_secs(2);
    settings.pods.reply_timeout = Duration::from_secs(30);
    settings.mqtt = Some(MqttSettings {
        host: "127.0.0.1".into(),
        port: broker.port(),
        username: String::new(),
        password: String::new(),
        client_id: "koupleless@@@ctl-e2e-pods".into(),
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
        "base-pods",
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

    let node = "vnode.base-pods.dev";
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    assert!(
        eventually(T, || {
            let nodes = nodes.clone();
            async move { matches!(nodes.get_opt(node).await, Ok(Some(_))) }
        })
        .await,
        "the base's vnode"
    );

    // A module whose main throws: Waiting with the agent's own message.
    pods.create(&PostParams::default(), &module_pod(node, &file_url(&bad)))
        .await
        .unwrap();
    let failed = eventually(T, || {
        let pods = pods.clone();
        async move {
            pods.get("biz1")
                .await
                .ok()
                .and_then(|p| waiting(&p))
                .is_some_and(|(r, m)| r == "InstallFailed" && m.contains("IllegalStateException"))
        }
    })
    .await;
    let p = pods.get("biz1").await.unwrap();
    assert!(
        failed,
        "install failure with the agent's message: {:?}",
        p.status
    );

    // Fixed image: the module JVM runs and the Pod is Running/Ready.
    let patch = json!({"spec": {"containers": [{"name": "biz1", "image": file_url(&good)}]}});
    pods.patch("biz1", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    let running = eventually(T, || {
        let pods = pods.clone();
        async move { pods.get("biz1").await.is_ok_and(|p| running_ready(&p)) }
    })
    .await;
    let p = pods.get("biz1").await.unwrap();
    assert!(running, "Running/Ready: {:?}", p.status);
    let module_pid = read_pid_file(&pid_file).expect("the module JVM started");
    assert!(process_alive(module_pid));

    // Delete: the module JVM stops, then the Pod goes (long before its 30 s grace period).
    pods.delete("biz1", &DeleteParams::default()).await.unwrap();
    let gone = eventually(Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { matches!(pods.get_opt("biz1").await, Ok(None)) }
    })
    .await;
    assert!(gone, "Pod removed once the module is uninstalled");
    assert!(!process_alive(module_pid), "module JVM stopped");

    agent.shutdown().await;
    cancel.cancel();
    controller.await.unwrap().unwrap();
    server.shutdown().await;
}
