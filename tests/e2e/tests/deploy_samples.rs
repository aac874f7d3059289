//! The module samples of `deploy/modules/` and the base example of `deploy/agent/`, applied with
//! kubectl to the test cluster (API server, scheduler, workload controllers): every sample is
//! accepted and its Pods are bound to vnode-shaped Nodes (labels, taints and status exactly as
//! our controller writes them, built by its own functions) of the right env, never to an
//! ordinary Node nor to a vnode of another env. Version 2 rolls the Deployment out to 0.0.2 with
//! the test playing the controller's part (Pods Running/Ready, terminating Pods removed). The
//! base example lands on the ordinary Node, not on a vnode. Its NetworkPolicy kind is not served
//! by the test server (kubectl's refusal is checked), so it is checked as data: it selects the
//! base, and opens the agent's port to the controller's Pods only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use koupleless_controller::vnode::facts::{BaseFacts, Memory};
use koupleless_controller::vnode::node::{NodeTemplate, Readiness, desired_status, new_node};
use koupleless_protocol::VNodeName;
use koupleless_testkit::eventually;
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(rel)
}

/// Runs kubectl; returns (success, stdout + stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(std::env::var("KUBECTL").unwrap_or("kubectl".into()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .await
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn apply(kubeconfig: &Path, rel: &str) {
    let file = deploy(rel);
    let (ok, text) = kubectl(kubeconfig, &["apply", "-f", file.to_str().unwrap()]).await;
    assert!(ok, "kubectl apply -f deploy/{rel}: {text}");
}

/// A vnode for base `identity` in `env`, as our controller creates it and writes its status
/// after the base's first heartbeat and health report (1 GiB of metaspace free).
async fn create_vnode(nodes: &Api<Node>, identity: &str, env: &str) -> String {
    let name: VNodeName = format!("vnode.{identity}.{env}").parse().unwrap();
    let facts = BaseFacts {
        base_name: "my-base".into(),
        version: "1.0.0".into(),
        cluster_name: "default".into(),
        host_name: identity.into(),
        ip: "10.1.0.7".into(),
        port: 1238,
        memory: Some(Memory {
            capacity: Quantity("1Gi".into()),
            allocatable: Quantity("1Gi".into()),
        }),
        runtime_down: false,
    };
    let tpl = NodeTemplate::new(env.parse().unwrap(), 10250);
    let node = new_node(&name, &facts, &tpl);
    let name = name.to_string();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    let status = desired_status(&facts, Readiness::Ready, &tpl);
    nodes
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    name
}

/// An ordinary worker Node (no taints), where the base Pods run.
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

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

async fn pods_with(pods: &Api<Pod>, selector: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
}

/// What our controller does for the module Pods on its vnodes, once per call: a bound Pod
/// whose modules are installed turns Running/Ready, a deleted one is removed once its modules
/// are uninstalled (grace period 0, as a kubelet does).
async fn play_controller(pods: &Api<Pod>) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        let name = p.metadata.name.clone().unwrap();
        if !node_of(&p).is_some_and(|n| n.starts_with("vnode.")) {
            continue;
        }
        if terminating(&p) {
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        } else if !ready(&p) {
            let _ = pods
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                    ]}})),
                )
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_samples_and_base_example_schedule_as_intended() {
    let (client, cluster) = koupleless_kube_apiserver::cluster::start_cluster()
        .await
        .expect("test cluster");
    let kubeconfig = cluster.server().write_kubeconfig_tempfile().unwrap();
    let kc = kubeconfig.path();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    let dev: BTreeSet<String> = BTreeSet::from([
        create_vnode(&nodes, "base-a", "dev").await,
        create_vnode(&nodes, "base-b", "dev").await,
    ]);
    // Same base name, version and cluster, but env `test`: its taint keeps `dev` modules off.
    let other_env = create_vnode(&nodes, "base-c", "test").await;
    create_worker(&nodes, "worker-1").await;
    let on_dev_vnodes = |list: &[Pod]| {
        list.iter()
            .all(|p| node_of(p).is_some_and(|n| dev.contains(n)))
    };

    // Deployment: two replicas, one per base (required anti-affinity on name and version).
    apply(kc, "modules/module-deployment.yaml").await;
    let placed = eventually(T, || {
        let pods = pods.clone();
        let dev = dev.clone();
        async move {
            let list = pods_with(&pods, "module.koupleless.io/name=biz1").await;
            let on: BTreeSet<&str> = list.iter().filter_map(node_of).collect();
            list.len() == 2 && on.len() == 2 && on.iter().all(|n| dev.contains(*n))
        }
    })
    .await;
    assert!(
        placed,
        "module-deployment.yaml: one Pod on each dev vnode: {:?}",
        pods_with(&pods, "module.koupleless.io/name=biz1")
            .await
            .iter()
            .map(|p| (p.metadata.name.clone(), node_of(p).map(str::to_owned)))
            .collect::<Vec<_>>()
    );

    // DaemonSet (upstream's is invalid; ours is accepted): one Pod per dev vnode, none on the
    // other env's vnode or the worker.
    apply(kc, "modules/module-daemonset.yaml").await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let converged = eventually(T, || {
        let (pods, daemonsets) = (pods.clone(), daemonsets.clone());
        async move {
            let desired = daemonsets
                .get("biz1-everywhere")
                .await
                .ok()
                .and_then(|d| d.status)
                .map(|s| s.desired_number_scheduled);
            let list = pods_with(&pods, "module.koupleless.io/name=biz1-everywhere").await;
            desired == Some(2) && list.len() == 2 && list.iter().all(|p| node_of(p).is_some())
        }
    })
    .await;
    let ds_pods = pods_with(&pods, "module.koupleless.io/name=biz1-everywhere").await;
    assert!(
        converged && on_dev_vnodes(&ds_pods),
        "module-daemonset.yaml: {:?}",
        ds_pods.iter().map(node_of).collect::<Vec<_>>()
    );
    let ds_nodes: BTreeSet<&str> = ds_pods.iter().filter_map(node_of).collect();
    assert_eq!(ds_nodes.len(), 2, "one module Pod per base");

    // Bare Pods: one module, and two modules in one Pod.
    apply(kc, "modules/module-pod.yaml").await;
    apply(kc, "modules/module-multi-pod.yaml").await;
    for name in ["biz1-single", "biz1-biz2"] {
        let bound = eventually(T, || {
            let pods = pods.clone();
            async move { pods.get(name).await.is_ok_and(|p| node_of(&p).is_some()) }
        })
        .await;
        let p = pods.get(name).await.unwrap();
        assert!(
            bound && on_dev_vnodes(std::slice::from_ref(&p)),
            "{name}: {:?}",
            p.status.and_then(|s| s.conditions)
        );
    }
    let multi = pods.get("biz1-biz2").await.unwrap();
    let modules: Vec<&str> = multi
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(modules, ["biz1", "biz2"], "one container per module");

    // Version 2: the Deployment rolls out to 0.0.2 base by base while the test plays the
    // controller (module installed → Ready; Pod deleted → removed).
    apply(kc, "modules/module-deployment-v2.yaml").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rolled = eventually(T, || {
        let (pods, deployments, dev) = (pods.clone(), deployments.clone(), dev.clone());
        async move {
            play_controller(&pods).await;
            let list = pods_with(&pods, "module.koupleless.io/name=biz1").await;
            let on: BTreeSet<&str> = list.iter().filter_map(node_of).collect();
            let status = deployments.get("biz1").await.ok().and_then(|d| d.status);
            list.len() == 2
                && list
                    .iter()
                    .all(|p| label(p, "module.koupleless.io/version") == Some("0.0.2"))
                && on.len() == 2
                && on.iter().all(|n| dev.contains(*n))
                && status.is_some_and(|s| {
                    s.updated_replicas == Some(2) && s.available_replicas == Some(2)
                })
        }
    })
    .await;
    assert!(
        rolled,
        "module-deployment-v2.yaml rolls out: {:?}",
        pods_with(&pods, "module.koupleless.io/name=biz1")
            .await
            .iter()
            .map(|p| (
                label(p, "module.koupleless.io/version").map(str::to_owned),
                node_of(p).map(str::to_owned),
                terminating(p)
            ))
            .collect::<Vec<_>>()
    );
    let v2 = pods_with(&pods, "module.koupleless.io/name=biz1").await;
    let env_of = |p: &Pod| {
        p.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "BIZ_VERSION")
            .and_then(|e| e.value.clone())
    };
    assert!(
        v2.iter().all(|p| env_of(p).as_deref() == Some("0.0.2")),
        "BIZ_VERSION follows the label"
    );

    // No module Pod anywhere but on the dev vnodes.
    for p in pods
        .list(&ListParams::default().labels("virtual-kubelet.koupleless.io/component=module"))
        .await
        .unwrap()
        .items
    {
        let n = node_of(&p);
        assert!(
            n != Some(other_env.as_str()) && n != Some("worker-1"),
            "{:?} on {n:?}",
            p.metadata.name
        );
    }

    // The base example: accepted, and placed on the ordinary Node (it does not tolerate the
    // vnodes' taints).
    apply(kc, "agent/base-with-agent.yaml").await;
    let base_bound = eventually(T, || {
        let pods = pods.clone();
        async move {
            pods_with(&pods, "app=base")
                .await
                .first()
                .is_some_and(|p| node_of(p) == Some("worker-1"))
        }
    })
    .await;
    assert!(base_bound, "the base Pod runs on the worker Node");
    let base = pods_with(&pods, "app=base").await.remove(0);
    let spec = base.spec.clone().unwrap();
    assert_eq!(spec.share_process_namespace, Some(true));
    let psc = spec.security_context.clone().unwrap();
    assert!(
        psc.run_as_user.is_some() && psc.run_as_group.is_some(),
        "one uid and gid for the JVM and the agent (pod level)"
    );
    for c in &spec.containers {
        let sc = c.security_context.clone().unwrap_or_default();
        assert!(
            sc.run_as_user.is_none() && sc.run_as_group.is_none(),
            "{}: no per-container uid/gid overriding the shared one",
            c.name
        );
        assert!(
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "tmp" && m.mount_path == "/tmp"),
            "{}: the shared /tmp (hsperfdata, attach socket)",
            c.name
        );
    }
    let agent = spec.containers.iter().find(|c| c.name == "agent").unwrap();
    let probe = agent.readiness_probe.as_ref().unwrap().http_get.clone();
    assert_eq!(probe.map(|g| g.path), Some(Some("/readyz".into())));
    let secret_of = |var: &str| {
        agent
            .env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|s| (s.name.clone(), s.key.clone()))
    };
    assert_eq!(
        secret_of("KOUPLELESS_AGENT_TOKEN"),
        Some(("koupleless-agent-token".into(), "token".into()))
    );
    assert_eq!(
        secret_of("KOUPLELESS_ARKLET_MQTT_PASSWORD"),
        Some(("koupleless-mqtt".into(), "password".into()))
    );
    assert_eq!(
        secret_of("KOUPLELESS_ARKLET_MQTT_USERNAME"),
        Some(("koupleless-mqtt".into(), "username".into()))
    );

    // The NetworkPolicy: not served here, as kubectl reports (without client-side validation,
    // which would only say that the OpenAPI document lacks the kind).
    let np_file = deploy("agent/base-networkpolicy.yaml");
    let (ok, text) = kubectl(
        kc,
        &["apply", "--validate=false", "-f", np_file.to_str().unwrap()],
    )
    .await;
    assert!(
        !ok && text.contains(r#"no matches for kind "NetworkPolicy""#),
        "the test server does not serve NetworkPolicy: {text}"
    );
    check_network_policy(&spec);

    cluster.shutdown().await;
}

/// The NetworkPolicy selects the base's Pods, lets anyone reach the base's web port, and lets
/// only the controller's Pods (deploy/controller, namespace koupleless) reach the agent's port.
fn check_network_policy(base: &k8s_openapi::api::core::v1::PodSpec) {
    let np: NetworkPolicy = serde_norway::from_str(
        &std::fs::read_to_string(deploy("agent/base-networkpolicy.yaml")).unwrap(),
    )
    .unwrap();
    let base_dep: Deployment = serde_norway::from_str(
        &std::fs::read_to_string(deploy("agent/base-with-agent.yaml")).unwrap(),
    )
    .unwrap();
    let base_labels = base_dep
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let controller: Deployment = serde_norway::from_str(
        &std::fs::read_to_string(deploy("controller/deployment.yaml")).unwrap(),
    )
    .unwrap();
    let controller_ns = controller.metadata.namespace.clone().unwrap();
    let controller_labels = controller
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let spec = np.spec.unwrap();
    let subset = |want: &BTreeMap<String, String>, have: &BTreeMap<String, String>| {
        want.iter().all(|(k, v)| have.get(k) == Some(v))
    };
    assert!(subset(
        spec.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap(),
        &base_labels
    ));
    assert_eq!(spec.policy_types, Some(vec!["Ingress".into()]));
    let port_number = |name: &str| {
        base.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    let agent_port = port_number("arklet").expect("the agent's named port");
    let mut agent_rules = 0;
    for rule in spec.ingress.unwrap() {
        let ports: Vec<i32> = rule
            .ports
            .iter()
            .flatten()
            .map(|p| match p.port.as_ref().expect("a port per rule") {
                IntOrString::Int(n) => *n,
                IntOrString::String(s) => port_number(s).expect("a named port of the base Pod"),
            })
            .collect();
        assert!(!ports.is_empty(), "no rule opens every port");
        if !ports.contains(&agent_port) {
            continue;
        }
        agent_rules += 1;
        let from = rule.from.expect("the agent's port is not open to everyone");
        assert_eq!(from.len(), 1);
        let peer = &from[0];
        let ns = peer.namespace_selector.as_ref().unwrap();
        assert_eq!(
            ns.match_labels
                .as_ref()
                .unwrap()
                .get("kubernetes.io/metadata.name"),
            Some(&controller_ns)
        );
        assert!(subset(
            peer.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap(),
            &controller_labels
        ));
    }
    assert_eq!(agent_rules, 1, "one rule for the agent's port");
}
