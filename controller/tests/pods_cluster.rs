//! Module Pods in a test cluster: the API server with its scheduler and workload controllers
//! (`koupleless_kube_apiserver::cluster`), our controller in-process, simulated bases over
//! MQTT (Mosquitto) and the HTTP tunnel, and kubectl as the client (issue 13's cluster tests).
//!
//! - The upstream sample module manifests (spec controller §7.4, fixtures/upstream, verbatim)
//!   end Running/Ready on the vnodes their affinity names, over MQTT and HTTP.
//! - A module Deployment rolls out Pod by Pod within maxSurge/maxUnavailable, the old version
//!   shows `Superseded`, `kubectl rollout undo` brings it back, `kubectl scale` 1 → 3 → 1.
//! - A controller restart and a replica takeover in the middle of installs converge without
//!   installing a module twice or losing a Pod's status.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::modbase::{ModuleHttpBase, ModuleMqttBase, ModuleSim};
use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use koupleless_kube_apiserver::cluster::{Cluster, start_cluster};
use koupleless_protocol::BizState;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tokio_util::sync::CancellationToken;

/// The env the upstream samples tolerate (`schedule.koupleless.io/node-env=test`).
const SAMPLE_ENV: &str = "test";
const T: Duration = Duration::from_secs(20);

const DEPLOYMENT: &str = include_str!("fixtures/upstream/module_deployment.yaml");
const DAEMONSET: &str = include_str!("fixtures/upstream/module_daemonset.yaml");
const BIZ1: &str = include_str!("fixtures/upstream/single_module_biz1.yaml");
const BIZ2: &str = include_str!("fixtures/upstream/single_module_biz2.yaml");
const BIZ1_V2: &str = include_str!("fixtures/upstream/single_module_biz1_version2.yaml");
const MULTI: &str = include_str!("fixtures/upstream/multi_module_biz1_biz2.yaml");
const ROLLOUT: &str = include_str!("fixtures/module_rollout.yaml");

const SAMPLE_URL: &str =
    "https://serverless-opensource.oss-cn-shanghai.aliyuncs.com/module-packages";

// ---------------------------------------------------------------------------------------
// The world: cluster, kubectl, controller settings, bases

struct World {
    client: kube::Client,
    cluster: Cluster,
    kubeconfig: tempfile::NamedTempFile,
    broker: Option<Broker>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tunnel {
    Mqtt,
    Http,
}

impl World {
    async fn start(tunnel: Tunnel) -> World {
        init_logs();
        let broker = match tunnel {
            Tunnel::Mqtt => Some(Broker::start().await),
            Tunnel::Http => None,
        };
        let (client, cluster) = start_cluster().await.expect("start the cluster");
        let kubeconfig = cluster
            .server()
            .write_kubeconfig_tempfile()
            .expect("kubeconfig");
        World {
            client,
            cluster,
            kubeconfig,
            broker,
        }
    }

    fn settings(&self, client_id: &str) -> koupleless_controller::Settings {
        let mut s = settings(
            client_id,
            self.broker.as_ref().map(|b| b.port),
            self.broker.is_none(),
        );
        s.env = SAMPLE_ENV.parse().unwrap();
        s.pods.retry_base = Duration::from_millis(300);
        s.pods.retry_max = Duration::from_secs(2);
        s.pods.reply_timeout = Duration::from_secs(2);
        s
    }

    async fn controller(&self, client_id: &str) -> Controller {
        Controller::start_with_kubeconfig(
            self.cluster.server().kubeconfig_yaml(),
            self.settings(client_id),
        )
        .await
    }

    /// A base of `base` version `version`, on this world's tunnel.
    async fn base(&self, ctl: &Controller, identity: &str, version: &str) -> Base {
        self.base_sim(ctl, sim(identity, version)).await
    }

    async fn base_sim(&self, ctl: &Controller, sim: ModuleSim) -> Base {
        match &self.broker {
            Some(b) => Base::Mqtt(ModuleMqttBase::start(b.port, SAMPLE_ENV, sim).await),
            None => Base::Http(ModuleHttpBase::start(ctl.http.expect("http tunnel"), sim).await),
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.pods().get_opt(name).await.unwrap()
    }

    async fn pods_with(&self, selector: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    async fn node_ready(&self, identity: &str) -> bool {
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.client.clone());
        nodes
            .get_opt(&node_name(identity))
            .await
            .unwrap()
            .and_then(|n| n.status?.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    async fn lease_holder(&self, identity: &str) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "kube-node-lease");
        leases
            .get_opt(&node_name(identity))
            .await
            .unwrap()
            .and_then(|l| l.spec?.holder_identity)
    }

    /// Runs kubectl with stdin; returns (success, stdout, stderr).
    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let kc = self.kubeconfig.path().to_path_buf();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
            let mut child = std::process::Command::new(bin)
                .env("KUBECONFIG", &kc)
                .args(["-n", "default"])
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("kubectl (install it or set KUBECTL)");
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }

    async fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl(args, stdin).await;
        assert!(ok, "kubectl {args:?} failed:\n{err}\n{out}");
        out
    }

    async fn apply(&self, yaml: &str) -> String {
        self.kubectl_ok(&["apply", "-f", "-"], Some(yaml)).await
    }

    async fn delete(&self, yaml: &str) {
        self.kubectl_ok(&["delete", "-f", "-", "--wait=false"], Some(yaml))
            .await;
    }

    async fn events(&self, pod: &str) -> Vec<String> {
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), "default");
        events
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    async fn shutdown(self) {
        self.cluster.shutdown().await;
    }
}

fn sim(identity: &str, version: &str) -> ModuleSim {
    let mut s = ModuleSim::new(identity);
    s.base.version = version.into();
    s
}

fn node_name(identity: &str) -> String {
    format!("vnode.{identity}.{SAMPLE_ENV}")
}

enum Base {
    Mqtt(ModuleMqttBase),
    Http(ModuleHttpBase),
}

impl Base {
    fn with<R>(&self, f: impl FnOnce(&mut ModuleSim) -> R) -> R {
        match self {
            Base::Mqtt(b) => b.with(f),
            Base::Http(b) => b.with(f),
        }
    }

    fn identity(&self) -> String {
        self.with(|s| s.base.identity.clone())
    }

    fn node(&self) -> String {
        node_name(&self.identity())
    }

    fn states(&self) -> Vec<(String, BizState)> {
        self.with(|s| s.states())
    }

    async fn stop(self) {
        match self {
            Base::Mqtt(b) => b.stop().await,
            Base::Http(b) => b.stop().await,
        }
    }
}

fn base_on<'a>(bases: &'a [Base], pod: &Pod) -> &'a Base {
    let node = node_of(pod);
    bases
        .iter()
        .find(|b| b.node() == node)
        .unwrap_or_else(|| panic!("{} is on {node:?}, not on a base", pod.name_any()))
}

async fn all_nodes_ready(w: &World, bases: &[Base]) {
    for b in bases {
        let id = b.identity();
        assert!(
            eventually(T, || w.node_ready(&id)).await,
            "vnode of {id} Ready"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Pod facts

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
}

fn is_ready(p: &Pod) -> bool {
    condition(p, "Ready").is_some_and(|c| c.status == "True")
}

fn running_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && is_ready(p)
        && p.metadata.deletion_timestamp.is_none()
}

fn version_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first()?.env.as_ref()?.first()?.value.clone())
        .unwrap_or_default()
}

fn waiting_reasons(p: &Pod) -> Vec<String> {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The full status of a Running module Pod on `base` (spec controller §2.7, issue 13):
/// phase, the four conditions with transition times, base IP, start time, and per
/// container running/ready/started, no restarts, `koupleless://<base>/<name>:<version>`.
fn assert_running_status(p: &Pod, base: &str) {
    let name = p.name_any();
    let st = p.status.as_ref().expect("status");
    assert_eq!(st.phase.as_deref(), Some("Running"), "{name} phase");
    for t in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        let c = condition(p, t).unwrap_or_else(|| panic!("{name} has no {t} condition"));
        assert_eq!(c.status, "True", "{name} {t}");
        assert!(c.last_transition_time.is_some(), "{name} {t} transition");
    }
    assert_eq!(st.pod_ip.as_deref(), Some("127.0.0.1"), "{name} podIP");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"), "{name} hostIP");
    assert!(st.start_time.is_some(), "{name} startTime");
    let spec = &p.spec.as_ref().unwrap().containers;
    let statuses = st.container_statuses.as_deref().unwrap_or_default();
    assert_eq!(
        statuses.len(),
        spec.len(),
        "{name}: one status per container"
    );
    for c in spec {
        let s = statuses
            .iter()
            .find(|s| s.name == c.name)
            .unwrap_or_else(|| panic!("{name}: no status for {}", c.name));
        let version = c.env.as_ref().unwrap()[0].value.clone().unwrap();
        assert!(s.ready, "{name}/{} ready", c.name);
        assert_eq!(s.started, Some(true), "{name}/{} started", c.name);
        assert_eq!(s.restart_count, 0, "{name}/{} restarts", c.name);
        assert_eq!(s.image, c.image.clone().unwrap(), "{name}/{} image", c.name);
        assert_eq!(
            s.image_id, s.image,
            "{name}/{} imageID: the installed package",
            c.name
        );
        assert!(s.last_state.is_none(), "{name}/{} never stopped", c.name);
        assert_eq!(
            s.container_id.as_deref(),
            Some(format!("koupleless://{base}/{}:{version}", c.name).as_str()),
            "{name}/{} containerID",
            c.name
        );
        let running = s.state.as_ref().and_then(|s| s.running.as_ref());
        assert!(
            running.is_some_and(|r| r.started_at.is_some()),
            "{name}/{} running",
            c.name
        );
    }
}

/// Waits until the Pods matching `selector` are exactly `n`, all Running and Ready.
async fn wait_running(w: &World, selector: &str, n: usize) -> Vec<Pod> {
    let ok = eventually(T, || async {
        let pods = w.pods_with(selector).await;
        pods.len() == n && pods.iter().all(running_ready)
    })
    .await;
    let pods = w.pods_with(selector).await;
    assert!(ok, "{n} Running/Ready pods for {selector}: {pods:#?}");
    pods
}

async fn wait_pod_running(w: &World, name: &str) -> Pod {
    let ok = eventually(T, || async {
        w.pod(name).await.is_some_and(|p| running_ready(&p))
    })
    .await;
    let p = w.pod(name).await;
    assert!(ok, "{name} Running/Ready: {p:#?}");
    p.unwrap()
}

/// Waits until no Pod matches `selector` and no base has a module left.
async fn wait_all_gone(w: &World, selector: &str, bases: &[Base]) {
    assert!(
        eventually(T, || async {
            w.pods_with(selector).await.is_empty()
                && bases.iter().all(|b| b.with(|s| s.modules.is_empty()))
        })
        .await,
        "pods {selector} gone and modules uninstalled: {:?}",
        bases.iter().map(|b| b.states()).collect::<Vec<_>>()
    );
}

fn activated(keys: &[&str]) -> Vec<(String, BizState)> {
    keys.iter()
        .map(|k| (k.to_string(), BizState::Activated))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Watching Pods: every state the API server went through, for invariants over time

#[derive(Clone, Debug)]
struct Seen {
    version: String,
    node: String,
    ready: bool,
    terminating: bool,
    waiting: Vec<String>,
    ready_since: Option<String>,
}

/// Every view of the Pods matching a selector after each watch event.
struct PodHistory {
    views: Arc<Mutex<Vec<BTreeMap<String, Seen>>>>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl PodHistory {
    /// Starts watching; returns once the initial list is in.
    async fn start(w: &World, selector: &str) -> PodHistory {
        let views: Arc<Mutex<Vec<BTreeMap<String, Seen>>>> = Arc::default();
        let cancel = CancellationToken::new();
        let (v, c) = (views.clone(), cancel.clone());
        let stream = watcher(w.pods(), watcher::Config::default().labels(selector));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut now: BTreeMap<String, Seen> = BTreeMap::new();
            let mut init: BTreeMap<String, Seen> = BTreeMap::new();
            futures::pin_mut!(stream);
            loop {
                let ev = tokio::select! {
                    () = c.cancelled() => break,
                    ev = stream.next() => ev,
                };
                let Some(Ok(ev)) = ev else { continue };
                match ev {
                    watcher::Event::Init => init.clear(),
                    watcher::Event::InitApply(p) => {
                        init.insert(p.name_any(), seen(&p));
                    }
                    watcher::Event::InitDone => {
                        now = std::mem::take(&mut init);
                        if let Some(tx) = synced.take() {
                            let _ = tx.send(());
                        }
                    }
                    watcher::Event::Apply(p) => {
                        now.insert(p.name_any(), seen(&p));
                    }
                    watcher::Event::Delete(p) => {
                        now.remove(&p.name_any());
                    }
                }
                if synced.is_none() {
                    v.lock().unwrap().push(now.clone());
                }
            }
        });
        synced_rx.await.expect("watch synced");
        PodHistory {
            views,
            cancel,
            task,
        }
    }

    async fn stop(self) -> Vec<BTreeMap<String, Seen>> {
        self.cancel.cancel();
        let _ = self.task.await;
        Arc::try_unwrap(self.views).unwrap().into_inner().unwrap()
    }
}

fn seen(p: &Pod) -> Seen {
    Seen {
        version: version_of(p),
        node: node_of(p),
        ready: is_ready(p),
        terminating: p.metadata.deletion_timestamp.is_some(),
        waiting: waiting_reasons(p),
        ready_since: condition(p, "Ready")
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.to_string()),
    }
}

/// Checks a rolling update from `old` to `new` over `views`: never more than
/// `replicas + surge` live Pods, never fewer than `replicas - unavailable` Ready ones, and no
/// old Pod removed before as many new Pods were Ready. Returns the old Pods seen superseded.
fn check_rollout(
    views: &[BTreeMap<String, Seen>],
    old: &str,
    new: &str,
    replicas: usize,
    surge: usize,
    unavailable: usize,
) -> BTreeSet<String> {
    let mut gone_old: BTreeSet<String> = BTreeSet::new();
    let mut superseded = BTreeSet::new();
    let mut max_live = 0;
    for (i, v) in views.iter().enumerate() {
        let live: Vec<(&String, &Seen)> = v.iter().filter(|(_, s)| !s.terminating).collect();
        max_live = max_live.max(live.len());
        assert!(
            live.len() <= replicas + surge,
            "view {i}: {} live pods > {replicas} + maxSurge {surge}: {v:#?}",
            live.len()
        );
        let ready = live.iter().filter(|(_, s)| s.ready).count();
        assert!(
            ready + unavailable >= replicas,
            "view {i}: {ready} Ready pods < {replicas} - maxUnavailable {unavailable}: {v:#?}"
        );
        for (name, s) in v {
            if s.version == old && !s.ready && s.waiting.iter().any(|r| r == "Superseded") {
                superseded.insert(name.clone());
            }
            if s.version == old && s.terminating && gone_old.insert(name.clone()) {
                let new_ready = live
                    .iter()
                    .filter(|(_, s)| s.version == new && s.ready)
                    .count();
                assert!(
                    new_ready >= gone_old.len(),
                    "view {i}: old pod {name} went with only {new_ready} new pods Ready: {v:#?}"
                );
            }
        }
    }
    assert_eq!(max_live, replicas + surge, "the rollout used its surge");
    assert_eq!(gone_old.len(), replicas, "every old pod replaced");
    superseded
}

// ---------------------------------------------------------------------------------------
// 1. Upstream samples, unchanged, over MQTT and HTTP

/// Spec controller §7.4: every upstream sample module manifest applied unchanged with
/// `kubectl apply -f` ends Running/Ready on a vnode of base `base` 1.0.0 in cluster
/// `default` (never on the 2.0.0 base), with the full container statuses; a new version on
/// the same base supersedes the old one. The DaemonSet sample is invalid as published (its
/// selector names labels its template lacks, which a real API server refuses too), so it is
/// shown refused, then applied with exactly those labels added.
async fn samples(tunnel: Tunnel) {
    let w = World::start(tunnel).await;
    let ctl = w.controller("samples").await;
    let bases = vec![
        w.base(&ctl, "base-a", "1.0.0").await,
        w.base(&ctl, "base-b", "1.0.0").await,
        w.base(&ctl, "base-c", "2.0.0").await,
    ];
    all_nodes_ready(&w, &bases).await;
    let other = &bases[2];

    // The Deployment.
    w.apply(DEPLOYMENT).await;
    let out = w
        .kubectl_ok(
            &[
                "rollout",
                "status",
                "deployment/test-module-deployment",
                "--timeout=20s",
            ],
            None,
        )
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = wait_running(&w, "module.koupleless.io/name=biz1", 1).await;
    let base = base_on(&bases, &pods[0]);
    assert_ne!(base.identity(), "base-c", "affinity: base version 1.0.0");
    assert_running_status(&pods[0], &base.identity());
    assert_eq!(base.states(), activated(&["biz1:0.0.1"]));
    assert_eq!(base.with(|s| s.install_count("biz1:0.0.1")), 1);
    let wide = w
        .kubectl_ok(&["get", "pod", &pods[0].name_any(), "-o", "wide"], None)
        .await;
    assert!(
        wide.contains("1/1") && wide.contains("Running") && wide.contains(&base.node()),
        "{wide}"
    );
    let events = w.events(&pods[0].name_any()).await;
    assert!(
        events.iter().any(|e| e == "Installed"),
        "Installed event: {events:?}"
    );
    w.delete(DEPLOYMENT).await;
    wait_all_gone(&w, "module.koupleless.io/name=biz1", &bases).await;
    assert_eq!(base.with(|s| s.uninstall_count("biz1:0.0.1")), 1);

    // The DaemonSet: refused as published, Running on both 1.0.0 bases with its labels.
    let (ok, _, err) = w.kubectl(&["apply", "-f", "-"], Some(DAEMONSET)).await;
    assert!(
        !ok && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
    let marker = "virtual-kubelet.koupleless.io/component: module #";
    assert_eq!(DAEMONSET.matches(marker).count(), 1);
    let daemonset = DAEMONSET.replace(
        marker,
        &format!(
            "module.koupleless.io/name: biz1\n        module.koupleless.io/version: 0.0.1\n        {marker}"
        ),
    );
    w.apply(&daemonset).await;
    w.kubectl_ok(
        &[
            "rollout",
            "status",
            "daemonset/test-module-daemon-set",
            "--timeout=20s",
        ],
        None,
    )
    .await;
    let pods = wait_running(&w, "module.koupleless.io/name=biz1", 2).await;
    let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
    assert_eq!(
        nodes,
        BTreeSet::from([bases[0].node(), bases[1].node()]),
        "one pod per 1.0.0 base"
    );
    for p in &pods {
        assert_running_status(p, &base_on(&bases, p).identity());
    }
    for b in &bases[..2] {
        assert_eq!(b.states(), activated(&["biz1:0.0.1"]));
    }
    assert!(other.states().is_empty(), "nothing on the 2.0.0 base");
    w.delete(&daemonset).await;
    wait_all_gone(&w, "module.koupleless.io/name=biz1", &bases).await;

    // The two-module Pod.
    w.apply(MULTI).await;
    let p = wait_pod_running(&w, "test-biz-combine-koupleless").await;
    let base = base_on(&bases, &p);
    assert_ne!(base.identity(), "base-c");
    assert_running_status(&p, &base.identity());
    assert_eq!(
        base.states(),
        activated(&["biz1:0.0.1-SNAPSHOT", "biz2:0.0.1-SNAPSHOT"])
    );
    w.delete(MULTI).await;
    wait_all_gone(&w, "virtual-kubelet.koupleless.io/component=module", &bases).await;

    // Bare Pods, then version 2 of biz1 on biz1's base (the other one cordoned).
    w.apply(BIZ1).await;
    w.apply(BIZ2).await;
    let p1 = wait_pod_running(&w, "test-single-module-biz1").await;
    let p2 = wait_pod_running(&w, "test-biz2-koupleless").await;
    let b1 = base_on(&bases, &p1);
    assert_running_status(&p1, &b1.identity());
    assert_running_status(&p2, &base_on(&bases, &p2).identity());
    assert_ne!(b1.identity(), "base-c");
    let spare: Vec<String> = bases[..2]
        .iter()
        .map(Base::node)
        .filter(|n| *n != b1.node())
        .collect();
    for n in &spare {
        w.kubectl_ok(&["cordon", n], None).await;
    }
    w.apply(BIZ1_V2).await;
    let p3 = wait_pod_running(&w, "test-single-module-biz1-version2").await;
    assert_eq!(node_of(&p3), b1.node());
    assert_running_status(&p3, &b1.identity());
    let superseded = eventually(T, || async {
        w.pod("test-single-module-biz1")
            .await
            .is_some_and(|p| !is_ready(&p) && waiting_reasons(&p) == ["Superseded"])
    })
    .await;
    let old = w.pod("test-single-module-biz1").await;
    assert!(superseded, "version 1 superseded: {old:#?}");
    let message = old
        .as_ref()
        .and_then(|p| {
            p.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .clone()
        })
        .and_then(|s| s.waiting?.message)
        .unwrap_or_default();
    assert!(
        message.contains("biz1:0.0.2-SNAPSHOT is the active version"),
        "{message}"
    );
    assert!(
        b1.states()
            .contains(&("biz1:0.0.1-SNAPSHOT".into(), BizState::Deactivated))
    );
    assert!(
        b1.states()
            .contains(&("biz1:0.0.2-SNAPSHOT".into(), BizState::Activated))
    );
    assert!(other.states().is_empty(), "nothing on the 2.0.0 base");
    assert!(
        bases
            .iter()
            .all(|b| b.with(|s| s.installs.iter().all(|i| i.biz_url.starts_with(SAMPLE_URL)))),
        "the samples' package URLs are installed verbatim"
    );

    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_over_mqtt() {
    samples(Tunnel::Mqtt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_over_http() {
    samples(Tunnel::Http).await;
}

// ---------------------------------------------------------------------------------------
// 2. Rollout, undo, scale

/// A module Deployment rolled from 0.0.1 to 0.0.2 and back with kubectl on three bases that
/// activate new versions: Pod by Pod within maxSurge 1 / maxUnavailable 0, each new Pod
/// Ready before an old one goes, old Pods Ready=False `Superseded` once their base runs the
/// new version, `kubectl rollout status` completes, and each base ends with exactly the
/// Deployment's version; `kubectl rollout undo` brings 0.0.1 back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_and_undo_pod_by_pod() {
    let w = World::start(Tunnel::Mqtt).await;
    let ctl = w.controller("rollout").await;
    let bases = vec![
        w.base(&ctl, "base-a", "1.0.0").await,
        w.base(&ctl, "base-b", "1.0.0").await,
        w.base(&ctl, "base-c", "1.0.0").await,
    ];
    all_nodes_ready(&w, &bases).await;
    let selector = "module.koupleless.io/name=biz1";
    let status = ["rollout", "status", "deployment/biz1", "--timeout=30s"];

    w.apply(ROLLOUT).await;
    w.kubectl_ok(&status, None).await;
    let pods = wait_running(&w, selector, 3).await;
    let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 3, "one 0.0.1 pod per base");
    for b in &bases {
        assert_eq!(b.states(), activated(&["biz1:0.0.1"]));
    }

    // 0.0.1 → 0.0.2.
    let history = PodHistory::start(&w, selector).await;
    w.apply(&ROLLOUT.replace("0.0.1", "0.0.2")).await;
    let out = w.kubectl_ok(&status, None).await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = wait_running(&w, selector, 3).await;
    let views = history.stop().await;
    let superseded = check_rollout(&views, "0.0.1", "0.0.2", 3, 1, 0);
    assert!(
        !superseded.is_empty(),
        "old pods showed Superseded while their base ran 0.0.2"
    );
    for p in &pods {
        assert_eq!(version_of(p), "0.0.2");
        assert_running_status(p, &base_on(&bases, p).identity());
    }
    for b in &bases {
        assert!(
            eventually(T, || async { b.states() == activated(&["biz1:0.0.2"]) }).await,
            "{}: {:?}",
            b.identity(),
            b.states()
        );
        assert_eq!(b.with(|s| s.install_count("biz1:0.0.2")), 1);
        assert_eq!(b.with(|s| s.uninstall_count("biz1:0.0.1")), 1);
    }
    for name in &superseded {
        let events = w.events(name).await;
        assert!(
            events.iter().any(|e| e == "Superseded"),
            "{name}: {events:?}"
        );
    }

    // kubectl rollout undo → 0.0.1 again.
    let history = PodHistory::start(&w, selector).await;
    w.kubectl_ok(&["rollout", "undo", "deployment/biz1"], None)
        .await;
    w.kubectl_ok(&status, None).await;
    let pods = wait_running(&w, selector, 3).await;
    let views = history.stop().await;
    let superseded = check_rollout(&views, "0.0.2", "0.0.1", 3, 1, 0);
    assert!(!superseded.is_empty());
    assert!(pods.iter().all(|p| version_of(p) == "0.0.1"));
    for b in &bases {
        assert!(
            eventually(T, || async { b.states() == activated(&["biz1:0.0.1"]) }).await,
            "{}: {:?}",
            b.identity(),
            b.states()
        );
        assert_eq!(b.with(|s| s.install_count("biz1:0.0.1")), 2);
    }

    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
    w.shutdown().await;
}

/// `kubectl scale` of the upstream sample Deployment 1 → 3 → 1: its anti-affinity puts one
/// Pod per base, each new Pod's module is installed on its base, and scaling down uninstalls
/// the modules of the removed Pods only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_one_three_one() {
    let w = World::start(Tunnel::Mqtt).await;
    let ctl = w.controller("scale").await;
    let bases = vec![
        w.base(&ctl, "base-a", "1.0.0").await,
        w.base(&ctl, "base-b", "1.0.0").await,
        w.base(&ctl, "base-c", "1.0.0").await,
    ];
    all_nodes_ready(&w, &bases).await;
    let selector = "module.koupleless.io/name=biz1";
    let with_module = || {
        bases
            .iter()
            .filter(|b| b.states() == activated(&["biz1:0.0.1"]))
            .count()
    };

    w.apply(DEPLOYMENT).await;
    let pods = wait_running(&w, selector, 1).await;
    assert_eq!(with_module(), 1);
    let first = base_on(&bases, &pods[0]).identity();

    w.kubectl_ok(
        &["scale", "deployment/test-module-deployment", "--replicas=3"],
        None,
    )
    .await;
    let pods = wait_running(&w, selector, 3).await;
    let nodes: BTreeSet<String> = pods.iter().map(node_of).collect();
    assert_eq!(nodes.len(), 3, "anti-affinity: one pod per base");
    for p in &pods {
        assert_running_status(p, &base_on(&bases, p).identity());
    }
    assert_eq!(with_module(), 3);

    w.kubectl_ok(
        &["scale", "deployment/test-module-deployment", "--replicas=1"],
        None,
    )
    .await;
    let pods = wait_running(&w, selector, 1).await;
    let kept = base_on(&bases, &pods[0]).identity();
    assert!(
        eventually(T, || async { with_module() == 1 }).await,
        "{:?}",
        bases.iter().map(Base::states).collect::<Vec<_>>()
    );
    for b in &bases {
        let id = b.identity();
        let (installs, uninstalls) = b.with(|s| {
            (
                s.install_count("biz1:0.0.1"),
                s.uninstall_count("biz1:0.0.1"),
            )
        });
        assert_eq!(installs, 1, "{id}: installed once");
        if id == kept {
            assert_eq!(uninstalls, 0, "{id} keeps its module");
            assert_eq!(b.states(), activated(&["biz1:0.0.1"]));
        } else {
            assert_eq!(uninstalls, 1, "{id} uninstalled on scale down");
            assert!(b.states().is_empty());
        }
    }
    assert!(
        bases.iter().any(|b| b.identity() == first),
        "the first pod's base is one of ours"
    );

    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
    w.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 3. Controller restart and replica takeover in the middle of installs

/// Three sample Pods (the sample Deployment scaled to 3, one per base): base-a installs at
/// once, base-b and base-c take the install but have not started it (RESOLVED, unanswered)
/// when the controller crashes. While no controller serves them their modules start. Then
/// either the same replica restarts or a standby replica takes over: every Pod ends
/// Running/Ready, no base got a second install, the Pod that was Ready keeps its Ready
/// transition time and container start time and never shows NotReady.
async fn crash_mid_install(takeover: bool) {
    let w = World::start(Tunnel::Mqtt).await;
    let a = w.controller("ctl-a").await;
    let slow = |id: &str| {
        let mut s = sim(id, "1.0.0");
        s.install_state = BizState::Resolved;
        s.reply_ops = false;
        s
    };
    let bases = vec![
        w.base(&a, "base-a", "1.0.0").await,
        w.base_sim(&a, slow("base-b")).await,
        w.base_sim(&a, slow("base-c")).await,
    ];
    all_nodes_ready(&w, &bases).await;
    for b in &bases {
        let id = b.identity();
        assert!(
            eventually(T, || async {
                w.lease_holder(&id).await.as_deref() == Some("ctl-a")
            })
            .await
        );
    }
    let standby = if takeover {
        Some(w.controller("ctl-b").await)
    } else {
        None
    };
    let selector = "module.koupleless.io/name=biz1";
    w.apply(DEPLOYMENT).await;
    w.kubectl_ok(
        &["scale", "deployment/test-module-deployment", "--replicas=3"],
        None,
    )
    .await;
    let ready_pod = eventually(T, || async {
        let pods = w.pods_with(selector).await;
        pods.len() == 3
            && pods.iter().filter(|p| running_ready(p)).count() == 1
            && bases
                .iter()
                .all(|b| b.with(|s| s.install_count("biz1:0.0.1")) == 1)
    })
    .await;
    let pods = w.pods_with(selector).await;
    assert!(
        ready_pod,
        "one pod Ready, two installs in flight: {pods:#?}"
    );
    let before = pods.into_iter().find(running_ready).unwrap();
    assert_eq!(node_of(&before), bases[0].node());
    let before = seen(&before);
    for p in w.pods_with(selector).await {
        if node_of(&p) != bases[0].node() {
            assert!(!is_ready(&p), "{} waits for its module", p.name_any());
        }
    }

    let history = PodHistory::start(&w, selector).await;
    a.crash().await;
    for b in &bases[1..] {
        b.with(|s| {
            s.activate_all();
            s.install_state = BizState::Activated;
            s.reply_ops = true;
        });
    }
    let (ctl, holder) = match standby {
        Some(b) => (b, "ctl-b"),
        None => (w.controller("ctl-a").await, "ctl-a"),
    };
    if takeover {
        for b in &bases {
            let id = b.identity();
            assert!(
                eventually(T, || async {
                    w.lease_holder(&id).await.as_deref() == Some(holder)
                })
                .await,
                "{holder} holds {id}"
            );
        }
    }
    let pods = wait_running(&w, selector, 3).await;
    let views = history.stop().await;
    for (i, v) in views.iter().enumerate() {
        let s = v.values().find(|s| s.node == before.node).expect("kept");
        assert!(s.ready, "view {i}: the Ready pod turned NotReady: {v:#?}");
    }
    let after = seen(pods.iter().find(|p| node_of(p) == bases[0].node()).unwrap());
    assert_eq!(after.ready_since, before.ready_since, "Ready status kept");
    for p in &pods {
        assert_running_status(p, &base_on(&bases, p).identity());
    }
    // Two more full lists answered by every base: a late second install would show here.
    let lists: Vec<usize> = bases.iter().map(|b| b.with(|s| s.lists)).collect();
    assert!(
        eventually(T, || async {
            bases
                .iter()
                .zip(&lists)
                .all(|(b, n)| b.with(|s| s.lists) >= n + 2)
        })
        .await
    );
    for b in &bases {
        let id = b.identity();
        b.with(|s| {
            assert_eq!(s.install_count("biz1:0.0.1"), 1, "{id}: installed once");
            assert!(s.uninstalls.is_empty(), "{id}: {:?}", s.uninstalls);
        });
        assert_eq!(b.states(), activated(&["biz1:0.0.1"]));
    }

    for b in bases {
        b.stop().await;
    }
    ctl.stop().await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mid_install_converges_once() {
    crash_mid_install(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_mid_install_converges_once() {
    crash_mid_install(true).await;
}
