//! Controller faults end to end, with our agent beside a real base JVM and a module running on
//! it (controller issue: never delete a live base's Node; spec controller §1.12–§1.15):
//!
//! - a rolling update over the HTTP tunnel: replica A owns the base, whose heartbeats reach A
//!   through a Service (a proxy here); replica B runs as standby longer than `NODE_DEAD_AFTER`
//!   without hearing the base; A stops and releases its Leases, the Service sends the
//!   heartbeats to B; B takes over without deleting the Node, and the module keeps running
//!   (not reinstalled);
//! - an MQTT broker outage three times `NODE_DEAD_AFTER` long: no Node deleted, all Ready again
//!   when the broker is back, the module never reinstalled.
//!
//! The agent and the controllers prove themselves to each other with the shared API token
//! (`--api-token` / `ARKLET_API_TOKEN`), as a secured deployment does.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Replica, TOKEN, fast_settings, http_settings, module_pod, mqtt, node_ready, running_ready,
    start_base,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::proxy::Proxy;
use koupleless_testkit::{
    Behaviour, BizJar, eventually, file_url, java_available, process_alive, read_pid_file,
};
use kube::Api;
use kube::api::PostParams;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(60);

/// What a poller saw of one Node: `None` while it did not exist, else its UID and Ready status.
type Sighting = (Instant, Option<(String, Option<String>)>);

/// Polls a Node every 50 ms and keeps every sighting, so a test can tell a delete-and-recreate
/// (the UID changes) or a gap (the Node was missing) from a Node that lived throughout.
struct NodeWatch {
    seen: Arc<Mutex<Vec<Sighting>>>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl NodeWatch {
    fn start(nodes: Api<Node>, name: &str) -> NodeWatch {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cancel = CancellationToken::new();
        let (log, stop, name) = (seen.clone(), cancel.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                if let Ok(node) = nodes.get_opt(&name).await {
                    let sighting = node.map(|n| (n.metadata.uid.clone().unwrap(), node_ready(&n)));
                    log.lock().unwrap().push((Instant::now(), sighting));
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        NodeWatch { seen, cancel, task }
    }

    async fn stop(self) -> Vec<Sighting> {
        self.cancel.cancel();
        let _ = self.task.await;
        let seen = self.seen.lock().unwrap();
        seen.clone()
    }
}

/// Checks that the Node existed with one UID in every sighting, and returns the Ready statuses
/// seen in order (deduplicated).
fn lived_throughout(seen: &[Sighting], uid: &str) -> Vec<String> {
    assert!(
        seen.len() > 20,
        "the watch polled: {} sightings",
        seen.len()
    );
    let mut readiness: Vec<String> = Vec::new();
    for (_, s) in seen {
        let Some((u, ready)) = s else {
            panic!("the Node was missing at some point: {seen:?}");
        };
        assert_eq!(u, uid, "the Node was deleted and recreated");
        let ready = ready.clone().unwrap_or_default();
        if readiness.last() != Some(&ready) {
            readiness.push(ready);
        }
    }
    readiness
}

/// Waits for the module Pod to be Running/Ready and returns its UID and the module JVM's pid.
async fn module_running(pods: &Api<Pod>, pid_file: &std::path::Path) -> (String, u32) {
    let running = eventually(T, || {
        let pods = pods.clone();
        async move { pods.get("biz1").await.is_ok_and(|p| running_ready(&p)) }
    })
    .await;
    let p = pods.get("biz1").await.unwrap();
    assert!(running, "module Pod Running/Ready: {:?}", p.status);
    let pid = read_pid_file(pid_file).expect("the module JVM wrote its pid");
    (p.metadata.uid.unwrap(), pid)
}

async fn node_uid(nodes: &Api<Node>, name: &str) -> String {
    let ready = eventually(T, || {
        let nodes = nodes.clone();
        async move {
            nodes
                .get_opt(name)
                .await
                .ok()
                .flatten()
                .is_some_and(|n| node_ready(&n).as_deref() == Some("True"))
        }
    })
    .await;
    assert!(ready, "the vnode {name} Ready");
    nodes.get(name).await.unwrap().metadata.uid.unwrap()
}

fn module_jar(dir: &std::path::Path) -> (String, std::path::PathBuf) {
    let pid_file = dir.join("biz1.pid");
    let jar = BizJar::new("biz1", "1.0.0")
        .behaviour(Behaviour::WritePidFile(pid_file.clone()))
        .behaviour(Behaviour::StayUp)
        .build(dir);
    (file_url(&jar), pid_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_over_http_keeps_the_node_and_the_running_module() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let base = start_base(tmp.path());
    let (image, pid_file) = module_jar(tmp.path());

    let a = Replica::start(&client, http_settings("ctl-a")).await;
    // The Service in front of the replicas' HTTP tunnel port.
    let service = Proxy::start(a.http.unwrap()).await.unwrap();
    let endpoint = format!("http://{}", service.addr());
    let pid = base.0.id().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--local-ip",
        "127.0.0.1",
        "--api-token",
        TOKEN,
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-http",
        "--base-name",
        "e2e-base",
        "--base-pid",
        &pid,
        "--controller-endpoint",
        &endpoint,
        "--http-heartbeat-interval",
        "1s",
    ])
    .await;

    let name = "vnode.base-http.dev";
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let uid = node_uid(&nodes, name).await;
    pods.create(&PostParams::default(), &module_pod(name, &image))
        .await
        .unwrap();
    let (pod_uid, module_pid) = module_running(&pods, &pid_file).await;

    // B starts while the Node exists and stays standby, hearing nothing from the base, for
    // longer than NODE_DEAD_AFTER.
    let watch = NodeWatch::start(nodes.clone(), name);
    let b = Replica::start(&client, http_settings("ctl-b")).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Rolling update: A stops (releasing its Leases), the Service now routes to B.
    a.stop().await;
    service.retarget(b.http.unwrap());
    let stopped = Instant::now();

    // B holds the Lease, the Node is Ready under B and the module Pod is Running again.
    let lease =
        eventually(T, || {
            let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
                Api::namespaced(client.clone(), "kube-node-lease");
            async move {
                leases.get_opt(name).await.ok().flatten().is_some_and(|l| {
                    l.spec.and_then(|s| s.holder_identity).as_deref() == Some("ctl-b")
                })
            }
        })
        .await;
    assert!(lease, "B holds the base's Lease");
    let (pod_uid_after, module_pid_after) = module_running(&pods, &pid_file).await;
    let ready_again = node_uid(&nodes, name).await;
    eprintln!(
        "takeover: Node Ready under B {:?} after A stopped",
        stopped.elapsed()
    );
    // Keep watching a little longer than NODE_DEAD_AFTER under B.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = watch.stop().await;
    let readiness = lived_throughout(&seen, &uid);
    eprintln!("Ready statuses across the takeover: {readiness:?}");
    assert_eq!(ready_again, uid);
    assert_eq!(
        readiness.last().map(String::as_str),
        Some("True"),
        "{readiness:?}"
    );
    assert_eq!(pod_uid_after, pod_uid, "the module Pod is the same Pod");
    assert_eq!(
        module_pid_after, module_pid,
        "the module was not reinstalled"
    );
    assert!(process_alive(module_pid), "the module JVM kept running");

    agent.shutdown().await;
    b.stop().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_keeps_every_node_and_the_running_module() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let base = start_base(tmp.path());
    let (image, pid_file) = module_jar(tmp.path());

    let mut settings = fast_settings("ctl-mqtt");
    settings.mqtt = Some(mqtt(broker.port(), "ctl-mqtt"));
    let dead_after = settings.timings.dead_after;
    let controller = Replica::start(&client, settings).await;

    let pid = base.0.id().to_string();
    let port = broker.port().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-mqtt",
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

    let name = "vnode.base-mqtt.dev";
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let uid = node_uid(&nodes, name).await;
    pods.create(&PostParams::default(), &module_pod(name, &image))
        .await
        .unwrap();
    let (pod_uid, module_pid) = module_running(&pods, &pid_file).await;

    let watch = NodeWatch::start(nodes.clone(), name);
    broker.stop();
    tokio::time::sleep(dead_after * 3).await;
    broker.restart();
    let back = Instant::now();
    let ready_again = node_uid(&nodes, name).await;
    eprintln!("broker back: Node Ready {:?} later", back.elapsed());
    let (pod_uid_after, module_pid_after) = module_running(&pods, &pid_file).await;
    let seen = watch.stop().await;
    let readiness = lived_throughout(&seen, &uid);
    eprintln!("Ready statuses across the outage: {readiness:?}");
    assert_eq!(ready_again, uid);
    assert!(
        readiness.iter().any(|r| r != "True"),
        "the outage was seen (Node not Ready at some point): {readiness:?}"
    );
    assert_eq!(pod_uid_after, pod_uid, "the module Pod is the same Pod");
    assert_eq!(
        module_pid_after, module_pid,
        "the module was not reinstalled"
    );
    assert!(process_alive(module_pid), "the module JVM kept running");

    agent.shutdown().await;
    controller.stop().await;
    server.shutdown().await;
}

/// The base JVM crashes and comes back while its agent stays up: the agent reports the base
/// BROKEN, the Node turns Ready=False (`BaseRuntimeDown`) and is kept (upstream deletes it and
/// every module Pod with it), and turns Ready again when a new base JVM is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_jvm_crash_keeps_the_node_not_ready_until_it_is_back() {
    assert!(java_available(), "this test needs java and javac");
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API test server");
    let mut base = start_base(tmp.path());

    let mut settings = fast_settings("ctl-crash");
    settings.mqtt = Some(mqtt(broker.port(), "ctl-crash"));
    let controller = Replica::start(&client, settings).await;
    let port = broker.port().to_string();
    let work = tmp.path().join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        "base-crash",
        "--base-main-class",
        "Base",
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

    let name = "vnode.base-crash.dev";
    let nodes: Api<Node> = Api::all(client.clone());
    let uid = node_uid(&nodes, name).await;
    let watch = NodeWatch::start(nodes.clone(), name);

    // kill -9 of the base JVM.
    base.0.kill().unwrap();
    base.0.wait().unwrap();
    let reason = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.reason.clone())
    };
    let down = eventually(T, || {
        let nodes = nodes.clone();
        async move {
            nodes.get_opt(name).await.ok().flatten().is_some_and(|n| {
                node_ready(&n).as_deref() == Some("False")
                    && reason(&n).as_deref() == Some("BaseRuntimeDown")
            })
        }
    })
    .await;
    assert!(
        down,
        "Ready=False BaseRuntimeDown: {:?}",
        nodes.get_opt(name).await
    );
    // Longer than NODE_DEAD_AFTER with the JVM down: the Node stays.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // A new base JVM: found again, Ready again, same Node.
    base = start_base(tmp.path());
    let back = node_uid(&nodes, name).await;
    let seen = watch.stop().await;
    let readiness = lived_throughout(&seen, &uid);
    eprintln!("Ready statuses across the crash: {readiness:?}");
    assert_eq!(back, uid);
    assert_eq!(readiness[..2], ["True", "False"], "{readiness:?}");
    // (Ready again was checked by `node_uid`, after the watch's last poll perhaps.)

    agent.shutdown().await;
    controller.stop().await;
    server.shutdown().await;
    drop(base);
}
