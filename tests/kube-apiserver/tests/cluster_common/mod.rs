//! Support for the cluster tests: a started cluster with a kubeconfig,
//! vnode-shaped Nodes, a kubelet stand-in, kubectl, polling.

#![allow(dead_code)]

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use koupleless_kube_apiserver::cluster::{Cluster, start_cluster};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::process::Command;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a condition may take to hold: generous, as the suite shares
/// two cores with the builds of other crates.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running cluster and what the tests use with it.
pub struct Env {
    pub client: Client,
    pub cluster: Cluster,
    pub kubeconfig: tempfile::NamedTempFile,
}

impl Env {
    pub async fn start() -> Env {
        let (client, cluster) = start_cluster().await.expect("start the cluster");
        let kubeconfig = cluster
            .server()
            .write_kubeconfig_tempfile()
            .expect("write kubeconfig");
        Env {
            client,
            cluster,
            kubeconfig,
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn shutdown(self) {
        self.cluster.shutdown().await;
    }

    /// Runs kubectl (blocking, on a blocking thread); returns (success, stdout, stderr).
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let kc = self.kubeconfig.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || kubectl_blocking(&kc, &args, stdin.as_deref()))
            .await
            .expect("kubectl thread")
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\n{err}\n{out}");
        out
    }

    pub async fn apply(&self, yaml: &str) -> String {
        self.kubectl_ok(&["apply", "-f", "-"], Some(yaml)).await
    }
}

/// The installed kubectl (or `$KUBECTL`); the tests need it and fail without it.
pub fn kubectl_bin() -> String {
    let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let ok = Command::new(&bin)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "kubectl not found: install it or set KUBECTL");
    bin
}

pub fn kubectl_blocking(
    kubeconfig: &std::path::Path,
    args: &[String],
    stdin: Option<&str>,
) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = Command::new(kubectl_bin());
    cmd.env("KUBECONFIG", kubeconfig)
        .args(["-n", "default"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn kubectl");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("kubectl output");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Node shaped as the module controller writes a vnode (spec §1.2, §1.4,
/// §1.6, §1.7).
pub fn vnode(name: &str, env: &str, base: &str, version: &str, host: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "type": "virtual-kubelet",
            "kubernetes.io/role": "agent",
            "kubernetes.io/hostname": host,
            "virtual-kubelet.koupleless.io/component": "vnode",
            "virtual-kubelet.koupleless.io/env": env,
            "base.koupleless.io/name": base,
            "base.koupleless.io/version": version,
            "base.koupleless.io/cluster-name": "default",
            "base.koupleless.io/host-name": host,
        }},
        "spec": {"taints": [
            {"key": "schedule.koupleless.io/virtual-node", "value": "True", "effect": "NoExecute"},
            {"key": "schedule.koupleless.io/node-env", "value": env, "effect": "NoExecute"},
        ]},
        "status": {
            "phase": "Running",
            "capacity": {"pods": "65535", "memory": "262144Ki"},
            "allocatable": {"pods": "65535", "memory": "180224Ki"},
            "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "False"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "False"},
                {"type": "NetworkUnavailable", "status": "False"},
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": host}],
        },
    }))
    .expect("a valid Node")
}

pub async fn create_vnode(env: &Env, name: &str, base_env: &str, host: &str) {
    env.nodes()
        .create(
            &PostParams::default(),
            &vnode(name, base_env, "base", "1.0.0", host),
        )
        .await
        .expect("create node");
}

/// Polls `cond` until it holds or [`WAIT`] passes.
pub async fn eventually<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    assert!(
        koupleless_testkit::eventually(WAIT, cond).await,
        "timed out waiting for: {what}"
    );
}

/// Pods in `default` with `labels` (a label selector).
pub async fn pods_with(env: &Env, labels: &str) -> Vec<Pod> {
    env.pods()
        .list(&ListParams::default().labels(labels))
        .await
        .expect("list pods")
        .items
}

pub fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Sets a Pod Running and Ready through pods/status, as a kubelet does.
pub async fn set_ready(env: &Env, name: &str) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let patch = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
    ]}});
    env.pods()
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("set pod ready");
}

/// Events about the object `name`.
pub async fn events_for(env: &Env, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(env.client.clone(), "default");
    api.list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .expect("list events")
        .items
}

/// A kubelet stand-in: removes Pods that finish terminating on their Node
/// (a graceful delete leaves them Terminating until the kubelet confirms)
/// and, in auto mode, turns every bound Pod Running and Ready.
pub struct Kubelet {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Kubelet {
    pub fn start(client: Client, auto_ready: bool) -> Kubelet {
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client.clone());
            loop {
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for p in list.items {
                        let ns = p.namespace().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        if node_of(&p).is_empty() {
                            continue;
                        }
                        if p.metadata.deletion_timestamp.is_some() {
                            let _ = api
                                .delete(&p.name_any(), &DeleteParams::default().grace_period(0))
                                .await;
                        } else if auto_ready && !is_ready(&p) {
                            let now = chrono::Utc::now()
                                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                            let patch = json!({"status": {"phase": "Running", "conditions": [
                                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                            ]}});
                            let _ = api
                                .patch_status(
                                    &p.name_any(),
                                    &PatchParams::default(),
                                    &Patch::Strategic(patch),
                                )
                                .await;
                        }
                    }
                }
                tokio::select! {
                    _ = c.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(30)) => {}
                }
            }
        });
        Kubelet { cancel, task }
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// A JSON value's string at `path` (a JSON pointer).
pub fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

/// An ordinary Node (no taints), Ready, room for 110 Pods.
pub fn plain_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"pods": "110", "cpu": "4", "memory": "8Gi"},
            "capacity": {"pods": "110", "cpu": "4", "memory": "8Gi"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .expect("a valid Node")
}
