//! The quick start of `deploy/README.md`, end to end, under enforced RBAC:
//!
//! 1. the test cluster (API server with `Config::rbac`, scheduler, workload controllers) and
//!    one ordinary worker Node;
//! 2. `kubectl kustomize deploy/overlays/quick-start | kubectl apply -f -` as the cluster
//!    admin: the controller Deployment gets its two Pods and the broker its Pod;
//! 3. our controller, in-process, as the first of those Pods (its name is the `CLIENT_ID` the
//!    manifest takes from the Pod name, the env is the manifest's `ENV`), with nothing but a
//!    token of the manifests' ServiceAccount; the broker runs locally (no Pod runs here);
//! 4. a base as a real one runs: our agent beside a base JVM, speaking SOFAArk's telnet
//!    protocol to the test kit's peer, named as `deploy/agent/base-with-agent.yaml` names its
//!    base (`my-base` 1.0.0, cluster `default`);
//! 5. `deploy/modules/module-deployment.yaml` applied as a user would, with only its image
//!    edited to a module jar the test builds: one replica ends Running/Ready on the base's
//!    vnode, with the module installed on the base; the other stays Pending, as the sample's
//!    one-replica-per-base anti-affinity wants with one base (a second base on this machine
//!    would report the same host name, so it cannot stand for a second host); deleting the
//!    Deployment uninstalls the module and the Pods go.
//!
//! The API server refuses anything the manifests' RBAC does not grant: no request of the
//! controller may have been refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fast_settings, mqtt, node_ready, running_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_controller::Listeners;
use koupleless_kube_apiserver::cluster::{ControllersConfig, start_cluster_with};
use koupleless_kube_apiserver::{ApiServerHandle, Config};
use koupleless_testkit::ark_telnet_peer::{ArkTelnetPeer, PeerActivation, PeerConfig};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{
    BizJar, SMALL_JVM_ARGS, eventually, file_url, java_available, skip_or_fail, toolchain,
};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(60);
const SA_USER: &str = "system:serviceaccount:koupleless:koupleless-controller";
/// The module sample's image, which a user replaces with their module's package URL.
const SAMPLE_IMAGE: &str = "https://repo.example.com/biz1-0.0.1-ark-biz.jar";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl_bin() -> String {
    std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl <args>` with `stdin`; returns (success, stdout + stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = tokio::process::Command::new(kubectl_bin())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A base JVM, killed when dropped. Its metaspace limit (256 MiB) is the vnode's memory
/// capacity, room for the sample's 64 MiB module.
struct Jvm(Child);

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_jvm(dir: &Path) -> Jvm {
    let tc = toolchain().expect("java toolchain");
    std::fs::create_dir_all(dir).unwrap();
    let src = dir.join("Base.java");
    std::fs::write(
        &src,
        "public class Base { public static void main(String[] a) throws Exception { Thread.sleep(Long.MAX_VALUE); } }",
    )
    .unwrap();
    let javac = Command::new(&tc.javac)
        .arg("-d")
        .arg(dir)
        .arg(&src)
        .status()
        .unwrap();
    assert!(javac.success());
    let child = Command::new(&tc.java)
        .args(SMALL_JVM_ARGS)
        .arg("-XX:MaxMetaspaceSize=256m")
        .arg("-cp")
        .arg(dir)
        .arg("Base")
        .spawn()
        .unwrap();
    Jvm(child)
}

/// A base: JVM, SOFAArk telnet peer and our agent, named as the base example names it.
struct Base {
    agent: koupleless_agent::app::Agent,
    peer: ArkTelnetPeer,
    _jvm: Jvm,
}

async fn start_base(dir: &Path, identity: &str, broker_port: u16) -> Base {
    let jvm = start_jvm(&dir.join("jvm"));
    let peer = ArkTelnetPeer::start(PeerConfig {
        base_name: "my-base".into(),
        activation: PeerActivation::NewTakesOver,
        ..PeerConfig::default()
    })
    .await;
    let pid = jvm.0.id().to_string();
    let port = broker_port.to_string();
    let telnet = peer.addr().to_string();
    let work = dir.join("agent");
    let agent = common::start_agent(&[
        "--work-dir",
        work.to_str().unwrap(),
        "--base-identity",
        identity,
        "--base-name",
        "my-base",
        "--base-version",
        "1.0.0",
        "--cluster-name",
        "default",
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
    Base {
        agent,
        peer,
        _jvm: jvm,
    }
}

/// The distinct refusals of the controller's requests.
fn controller_denials(server: &ApiServerHandle) -> Vec<String> {
    let distinct: std::collections::BTreeSet<String> = server
        .denials()
        .into_iter()
        .filter(|d| d.user == SA_USER)
        .map(|d| d.message)
        .collect();
    distinct.into_iter().collect()
}

/// An ordinary Node with room for the controller and the broker.
async fn create_worker(nodes: &Api<Node>, name: &str) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}],
            }})),
        )
        .await
        .unwrap();
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

async fn bound(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| node_of(p).is_some())
        .collect()
}

/// Pending because no Node fits: the sample's anti-affinity keeps a second replica off the one
/// base.
fn unschedulable(p: &Pod) -> bool {
    node_of(p).is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter().any(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                        && c.message
                            .as_deref()
                            .is_some_and(|m| m.contains("didn't match pod anti-affinity rules"))
                })
            })
}

/// The `value` of env var `name` of the rendered controller Deployment's first container.
fn controller_env(rendered: &str, name: &str) -> Option<String> {
    rendered
        .split("\n---\n")
        .map(|d| serde_norway::from_str::<Value>(d).expect("YAML"))
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "koupleless-controller")
        .expect("the controller Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| {
            e["value"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| e["valueFrom"].to_string())
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_serves_a_module_sample_under_enforced_rbac() {
    let test = "quick_start";
    let rendered = match Command::new(kubectl_bin())
        .arg("kustomize")
        .arg(repo().join("deploy/overlays/quick-start"))
        .output()
    {
        Ok(out) => {
            assert!(
                out.status.success(),
                "kubectl kustomize deploy/overlays/quick-start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
        Err(e) => return skip_or_fail(test, &format!("kubectl cannot run: {e}")),
    };
    if !java_available() {
        return skip_or_fail(test, "no java/javac (the bases are JVMs)");
    }
    let tmp = tempfile::tempdir().unwrap();
    let broker = Broker::embedded();
    let (admin, cluster) = start_cluster_with(
        Config {
            rbac: true,
            ..Default::default()
        },
        ControllersConfig::fast(),
    )
    .await
    .expect("test cluster");
    let server = cluster.server();
    let admin_kc = server.write_kubeconfig(tmp.path().join("admin")).unwrap();
    let nodes: Api<Node> = Api::all(admin.clone());
    create_worker(&nodes, "worker-1").await;

    // The one command of the README.
    let (ok, text) = kubectl(&admin_kc, &["apply", "-f", "-"], &rendered).await;
    assert!(ok, "kubectl apply: {text}");
    let system: Api<Pod> = Api::namespaced(admin.clone(), "koupleless");
    let scheduled = eventually(T, || {
        let system = system.clone();
        async move {
            bound(&system, "app.kubernetes.io/name=koupleless-controller")
                .await
                .len()
                == 2
                && bound(&system, "app.kubernetes.io/name=mqtt-broker")
                    .await
                    .len()
                    == 1
        }
    })
    .await;
    assert!(
        scheduled,
        "2 controller Pods and the broker's bound: {:?}",
        system
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|p| (p.metadata.name.clone(), node_of(p)))
            .collect::<Vec<_>>()
    );

    // Our controller as the first controller Pod, with the ServiceAccount's token only.
    let replicas = bound(&system, "app.kubernetes.io/name=koupleless-controller").await;
    let pod_name = replicas[0].metadata.name.clone().unwrap();
    assert_eq!(
        controller_env(&rendered, "CLIENT_ID").as_deref(),
        Some("$(POD_NAME)"),
        "CLIENT_ID is the Pod name"
    );
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("NAMESPACE", "metadata.namespace"),
    ] {
        assert!(
            controller_env(&rendered, var).is_some_and(|v| v.contains(field)),
            "{var} from the downward API's {field}"
        );
    }
    let env = controller_env(&rendered, "ENV").expect("ENV");
    assert_eq!(env, "dev", "the env of the module samples");
    let token = server
        .service_account_token("koupleless", "koupleless-controller")
        .unwrap();
    let sa_client = server.client_with(Some(&token)).unwrap();
    let mut settings = fast_settings(&pod_name);
    settings.env = env.parse().unwrap();
    settings.namespace = replicas[0].metadata.namespace.clone().unwrap();
    settings.mqtt = Some(mqtt(broker.port(), &pod_name));
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        sa_client,
        Listeners::default(),
        cancel.clone(),
    ));

    let base = start_base(&tmp.path().join("base"), "base-a", broker.port()).await;
    let vnode = "vnode.base-a.dev";
    let ready = eventually(T, || {
        let nodes = nodes.clone();
        async move {
            matches!(nodes.get_opt(vnode).await,
                Ok(Some(n)) if node_ready(&n).as_deref() == Some("True"))
        }
    })
    .await;
    assert!(
        ready,
        "the base's vnode Ready; refused: {:?}",
        controller_denials(server)
    );

    // The module sample, as a user edits it: only the image, to the module's package.
    let jar = BizJar::new("biz1", "0.0.1").build(tmp.path());
    let sample =
        std::fs::read_to_string(repo().join("deploy/modules/module-deployment.yaml")).unwrap();
    assert_eq!(
        sample.matches(SAMPLE_IMAGE).count(),
        1,
        "the sample's image"
    );
    let edited = sample.replace(SAMPLE_IMAGE, &file_url(&jar));
    let (ok, text) = kubectl(&admin_kc, &["apply", "-f", "-"], &edited).await;
    assert!(ok, "kubectl apply module-deployment.yaml: {text}");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let selector = "module.koupleless.io/name=biz1";
    let running = eventually(T, || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items;
            let running: Vec<&Pod> = list.iter().filter(|p| running_ready(p)).collect();
            let pending: Vec<&Pod> = list.iter().filter(|p| unschedulable(p)).collect();
            list.len() == 2
                && running.len() == 1
                && node_of(running[0]).as_deref() == Some(vnode)
                && pending.len() == 1
        }
    })
    .await;
    let state: Vec<_> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone(), node_of(&p), p.status))
        .collect();
    assert!(
        running,
        "one biz1 Pod Running/Ready on the vnode, the other Pending: {state:#?}; refused: {:?}",
        controller_denials(server)
    );

    assert_eq!(
        base.peer.state_of("biz1", "0.0.1").as_deref(),
        Some("activated"),
        "the module runs on the base"
    );

    // Deleting the Deployment uninstalls the module from both bases; the Pods go.
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let (ok, text) = kubectl(&admin_kc, &["delete", "-f", "-"], &edited).await;
    assert!(ok, "kubectl delete: {text}");
    let gone = eventually(T, || {
        let (pods, deployments) = (pods.clone(), deployments.clone());
        async move {
            matches!(deployments.get_opt("biz1").await, Ok(None))
                && pods
                    .list(&ListParams::default().labels(selector))
                    .await
                    .is_ok_and(|l| l.items.is_empty())
        }
    })
    .await;
    assert!(gone, "the module Pods are removed once uninstalled");
    assert_eq!(
        base.peer.state_of("biz1", "0.0.1"),
        None,
        "the module is uninstalled from the base"
    );

    assert_eq!(
        controller_denials(server),
        Vec::<String>::new(),
        "every call the controller made is granted by the quick-start's RBAC"
    );

    base.agent.shutdown().await;
    base.peer.shutdown().await;
    cancel.cancel();
    controller.await.unwrap().unwrap();
    cluster.shutdown().await;
}
