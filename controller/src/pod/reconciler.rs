//! The driver: watches module Pods (server-side label selector, spec controller §2.1),
//! queues the bases they are bound to, and for each base this replica owns carries out the
//! [`plan`](super::plan::plan): commands through the base's tunnel, `pods/status` patches,
//! Pod deletions and Events. Base news (module lists, command outcomes, ownership changes)
//! arrive through the registry's change notifications.
//!
//! Fencing: the registry says whether this replica owns a base, and it is consulted right
//! before every command and every write, so a replica that lost its Lease stops acting.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use koupleless_protocol::VNodeName;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::module::{self, ConfigMapValues};
use super::plan::{self, Action, NodeMemory, PodView, Policy, Reported};
use super::queue::Queue;
use super::status::{self, StatusContext};
use crate::events::PodEvent;
use crate::labels;
use crate::registry::VNodeState;
use crate::tunnel::{Command, Tunnel};
use crate::vnode::supervisor::Context;

/// `virtual-kubelet.koupleless.io/component` value on module Pods.
pub const COMPONENT_MODULE: &str = "module";

/// Label selector of module Pods.
pub fn module_selector() -> String {
    format!("{}={COMPONENT_MODULE}", labels::COMPONENT)
}

type PodIndex = HashMap<String, BTreeMap<String, Arc<Pod>>>;

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or_default(),
        p.metadata.name.as_deref().unwrap_or_default()
    )
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

fn version_number(p: &Pod) -> Option<u64> {
    p.metadata.resource_version.as_deref()?.parse().ok()
}

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn client(ctx: &Context) -> kube::Client {
    ctx.nodes.clone().into_client()
}

fn now_ms() -> i64 {
    Timestamp::now().as_millisecond()
}

struct Shared {
    ctx: Arc<Context>,
    pods: Mutex<PodIndex>,
    memory: Mutex<HashMap<String, NodeMemory>>,
    queue: Queue,
    nodes: Store<Node>,
    policy: Policy,
}

impl Shared {
    fn index(&self) -> std::sync::MutexGuard<'_, PodIndex> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a newer copy of a Pod (e.g. the answer to our own write), never an older one.
    fn remember(&self, pod: Pod) {
        let Some(node) = node_of(&pod).map(str::to_owned) else {
            return;
        };
        let key = pod_key(&pod);
        let mut idx = self.index();
        let slot = idx.entry(node).or_default();
        let newer = match (
            slot.get(&key).and_then(|p| version_number(p)),
            version_number(&pod),
        ) {
            (Some(old), Some(new)) => new >= old,
            _ => true,
        };
        if newer {
            slot.insert(key, Arc::new(pod));
        }
    }

    /// The base's view when this replica may act for it now: it owns the base and its Lease
    /// was renewed within the renew deadline, so a fenced owner sends no command and writes no
    /// Pod status even before its supervisor has stepped down.
    fn owned(&self, node: &VNodeName) -> Option<crate::registry::BaseView> {
        let now = tokio::time::Instant::now();
        self.ctx.registry.get(node).filter(|v| v.may_act(now))
    }
}

/// Runs the reconciler until `cancel`; owns its watch and worker tasks.
pub async fn run(ctx: Arc<Context>, cancel: CancellationToken) {
    let s = &ctx.settings.pods;
    let policy = Policy {
        orphans: s.orphans,
        retry_base_ms: s.retry_base.as_millis() as i64,
        retry_max_ms: s.retry_max.as_millis() as i64,
        reply_timeout_ms: s.reply_timeout.as_millis() as i64,
    };
    let workers = s.workers.max(1);
    let env = ctx.settings.env.to_string();
    let (nodes, node_writer) = reflector::store::<Node>();
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        pods: Mutex::new(HashMap::new()),
        memory: Mutex::new(HashMap::new()),
        queue: Queue::default(),
        nodes,
        policy,
    });
    let mut changes = ctx.registry.subscribe();
    let pod_api: Api<Pod> = Api::all(client(&ctx));
    let pod_events = watcher(
        pod_api,
        watcher::Config::default().labels(&module_selector()),
    )
    .default_backoff();
    let node_events = reflector::reflector(
        node_writer,
        watcher(
            ctx.nodes.clone(),
            watcher::Config::default().labels(&labels::vnode_selector(&env)),
        ),
    )
    .default_backoff();
    let mut pod_events = std::pin::pin!(pod_events);
    let mut node_events = std::pin::pin!(node_events);

    let tasks = TaskTracker::new();
    let workers_cancel = CancellationToken::new();
    for _ in 0..workers {
        let (shared, cancel) = (shared.clone(), workers_cancel.clone());
        tasks.spawn(async move {
            while let Some(node) = shared.queue.next(&cancel).await {
                let again = reconcile(&shared, &node).await;
                shared.queue.done(&node, again);
            }
        });
    }

    let mut init: PodIndex = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(ev) = pod_events.next() => match ev {
                Ok(ev) => on_pod_event(&shared, &mut init, ev),
                Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
            },
            Some(ev) = node_events.next() => match ev {
                Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                    if let Some(name) = n.metadata.name { shared.queue.add(name) }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "node watch failed; retrying"),
            },
            change = changes.recv() => match change {
                Ok(name) => shared.queue.add(name.to_string()),
                Err(RecvError::Lagged(_)) => {
                    let all: Vec<String> = shared.index().keys().cloned().collect();
                    for n in all { shared.queue.add(n) }
                }
                Err(RecvError::Closed) => break,
            },
        }
    }
    workers_cancel.cancel();
    tasks.close();
    tasks.wait().await;
}

fn on_pod_event(shared: &Shared, init: &mut PodIndex, ev: watcher::Event<Pod>) {
    match ev {
        watcher::Event::Init => init.clear(),
        watcher::Event::InitApply(p) => {
            if let Some(node) = node_of(&p).map(str::to_owned) {
                init.entry(node)
                    .or_default()
                    .insert(pod_key(&p), Arc::new(p));
            }
        }
        watcher::Event::InitDone => {
            let fresh = std::mem::take(init);
            let mut idx = shared.index();
            let mut touched: Vec<String> = idx.keys().cloned().collect();
            touched.extend(fresh.keys().cloned());
            *idx = fresh;
            drop(idx);
            for n in touched {
                shared.queue.add(n);
            }
        }
        watcher::Event::Apply(p) => {
            if let Some(node) = node_of(&p).map(str::to_owned) {
                shared
                    .index()
                    .entry(node.clone())
                    .or_default()
                    .insert(pod_key(&p), Arc::new(p));
                shared.queue.add(node);
            }
        }
        watcher::Event::Delete(p) => {
            if let Some(node) = node_of(&p).map(str::to_owned) {
                let key = pod_key(&p);
                let mut idx = shared.index();
                if let Some(slot) = idx.get_mut(&node) {
                    slot.remove(&key);
                    if slot.is_empty() {
                        idx.remove(&node);
                    }
                }
                drop(idx);
                shared.queue.add(node);
            }
        }
    }
}

fn view_of(p: &Pod, cms: &ConfigMapValues) -> Option<PodView> {
    let m = &p.metadata;
    Some(PodView {
        uid: m.uid.clone()?,
        namespace: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone()?,
        created_ms: m
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_millisecond()),
        deleting: m.deletion_timestamp.is_some(),
        modules: module::modules_of(p, cms),
    })
}

async fn configmaps(shared: &Shared, pods: &[Arc<Pod>]) -> ConfigMapValues {
    let mut out = ConfigMapValues::new();
    let mut maps: HashMap<(String, String), Option<ConfigMap>> = HashMap::new();
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        for (name, key) in module::configmap_refs(p) {
            let id = (ns.clone(), name.clone());
            if !maps.contains_key(&id) {
                let api: Api<ConfigMap> = Api::namespaced(client(&shared.ctx), &ns);
                let timer = shared.ctx.metrics.api("configmap", "get");
                let got = tokio::time::timeout(shared.ctx.settings.api_timeout, api.get(&name))
                    .await
                    .map(|r| timer.done(r));
                // Unknown when it could not be read: the container says so and it is retried.
                let value = match got {
                    Ok(Ok(cm)) => Some(Some(cm)),
                    Ok(Err(e)) if status_code(&e) == Some(404) => Some(None),
                    _ => None,
                };
                if let Some(v) = value {
                    maps.insert(id.clone(), v);
                } else {
                    continue;
                }
            }
            if let Some(cm) = maps.get(&id) {
                let v = cm
                    .as_ref()
                    .and_then(|cm| cm.data.as_ref()?.get(&key).cloned());
                out.insert((name, key), v);
            }
        }
    }
    out
}

fn host_ip(shared: &Shared, node: &str) -> Option<String> {
    let n = shared.nodes.get(&ObjectRef::new(node))?;
    n.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

fn pod_event(p: &Pod, warning: bool, reason: &'static str, note: String) -> PodEvent {
    PodEvent {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        warning,
        reason,
        note,
    }
}

/// One pass over one base. Returns when to look again without news.
async fn reconcile(shared: &Shared, node: &str) -> Option<Instant> {
    let ctx = &shared.ctx;
    let name: VNodeName = node.parse().ok()?;
    if ctx.registry.get(&name).is_none() {
        // The base is gone from this replica: nothing of it is worth remembering.
        shared
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        return None;
    }
    let view = shared.owned(&name)?;
    let pods: Vec<Arc<Pod>> = shared
        .index()
        .get(node)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    let tunnel = view.tunnel.and_then(|k| ctx.tunnels.get(k));
    let ready = view.state == VNodeState::Ready && tunnel.is_some();
    if pods.is_empty() && view.bizs.is_empty() {
        // Nothing to do and nothing to remember.
        shared
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node);
        return None;
    }
    let cms = configmaps(shared, &pods).await;
    let views: Vec<PodView> = pods.iter().filter_map(|p| view_of(p, &cms)).collect();
    let now = now_ms();
    let planned = {
        let mut mem = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
        let m = mem.entry(node.to_owned()).or_default();
        let reported = Reported {
            records: &view.bizs,
            lists: view.lists,
            ready,
        };
        plan::plan(&views, &reported, m, &shared.policy, now)
    };
    let by_uid: HashMap<&str, &Arc<Pod>> = pods
        .iter()
        .filter_map(|p| Some((p.metadata.uid.as_deref()?, p)))
        .collect();
    let base = name.identity().clone();
    let mut again = planned
        .wake_at_ms
        .map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64));
    let retry = Instant::now() + ctx.settings.timings.retry_interval;
    let mut deleted: Vec<String> = Vec::new();

    for action in &planned.actions {
        // Fencing: only the owner acts, and ownership is checked right before acting.
        shared.owned(&name)?;
        match action {
            Action::Install { spec, pods } | Action::Uninstall { spec, pods } => {
                let install = matches!(action, Action::Install { .. });
                let Some(t) = tunnel.as_ref() else { continue };
                let cmd = if install {
                    Command::Install(spec.biz())
                } else {
                    Command::Uninstall(spec.biz())
                };
                tracing::info!(node, module = %spec.key(), command = cmd.as_str(), "sending");
                if let Err(e) = t.send(&base, cmd).await {
                    ctx.metrics.tunnel_error(t.kind(), e.metric_label());
                    tracing::warn!(node, module = %spec.key(), error = %e, "command not sent; will retry");
                    let mut mem = shared.memory.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(m) = mem.get_mut(node) {
                        m.send_failed(&spec.key(), &shared.policy, now_ms());
                    }
                    again = Some(again.map_or(retry, |a| a.min(retry)));
                    continue;
                }
                for uid in pods {
                    if let Some(p) = by_uid.get(uid.as_str()) {
                        let (reason, note) = if install {
                            (
                                "Installing",
                                format!("installing {} from {} on {node}", spec.key(), spec.url),
                            )
                        } else {
                            (
                                "Uninstalling",
                                format!("uninstalling {} from {node}", spec.key()),
                            )
                        };
                        ctx.events.emit_pod(pod_event(p, false, reason, note));
                    }
                }
            }
            Action::DeletePod {
                namespace,
                name: pod_name,
                uid,
            } => {
                let api: Api<Pod> = Api::namespaced(client(ctx), namespace);
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    preconditions: Some(Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                let timer = ctx.metrics.api("pod", "delete");
                let r =
                    tokio::time::timeout(ctx.settings.api_timeout, api.delete(pod_name, &dp)).await;
                match r.map(|r| timer.done(r)) {
                    Ok(Ok(_)) => {
                        tracing::info!(node, pod = %format!("{namespace}/{pod_name}"), "modules uninstalled; pod removed");
                        ctx.metrics.module_outcome("uninstalled");
                        if let Some(p) = by_uid.get(uid.as_str()) {
                            ctx.events.emit_pod(pod_event(
                                p,
                                false,
                                "Uninstalled",
                                format!("modules uninstalled from {node}"),
                            ));
                        }
                        deleted.push(uid.clone());
                    }
                    Ok(Err(e)) if matches!(status_code(&e), Some(404 | 409)) => {
                        deleted.push(uid.clone())
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node, pod = %pod_name, error = %e, "could not remove pod; will retry");
                        again = Some(again.map_or(retry, |a| a.min(retry)));
                    }
                    Err(_) => again = Some(again.map_or(retry, |a| a.min(retry))),
                }
            }
        }
    }

    let ip = host_ip(shared, node);
    let cx = StatusContext {
        base: base.as_str(),
        host_ip: ip.as_deref(),
        now: Timestamp::now(),
    };
    let mut writes = Vec::new();
    for p in &pods {
        let Some(uid) = p.metadata.uid.as_deref() else {
            continue;
        };
        if deleted.iter().any(|d| d == uid) {
            continue;
        }
        let Some(containers) = planned.pods.get(uid) else {
            continue;
        };
        if matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        ) {
            continue;
        }
        let desired = status::pod_status(p, containers, &cx);
        let Some(patch) = status::status_patch(p, &desired) else {
            continue;
        };
        writes.push((p, desired, patch));
    }
    // Pods turning Ready first: when a new version supersedes the old one on this base, the
    // new Pod is Ready before the old one turns NotReady, so a rollout never sees fewer Ready
    // Pods than it allows (maxUnavailable 0 holds between two writes too).
    writes.sort_by_key(|(_, desired, _)| !status::is_ready(desired));
    for (p, desired, patch) in writes {
        shared.owned(&name)?;
        tracing::debug!(node, pod = ?p.metadata.name, %patch, "writing pod status");
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let pod_name = p.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client(ctx), &ns);
        let timer = ctx.metrics.api("pod_status", "patch");
        let pp = PatchParams::default();
        let body = Patch::Strategic(&patch);
        let fut = api.patch_status(&pod_name, &pp, &body);
        match tokio::time::timeout(ctx.settings.api_timeout, fut)
            .await
            .map(|r| timer.done(r))
        {
            Ok(Ok(written)) => {
                for e in status::container_events(p.status.as_ref(), &desired) {
                    match e.reason {
                        "Installed" => ctx.metrics.module_outcome("installed"),
                        "InstallFailed" => ctx.metrics.module_outcome("install_failed"),
                        _ => {}
                    }
                    ctx.events
                        .emit_pod(pod_event(p, e.warning, e.reason, e.note));
                }
                shared.remember(written);
            }
            Ok(Err(e)) if status_code(&e) == Some(404) => {}
            Ok(Err(e)) => {
                tracing::warn!(node, pod = %pod_name, error = %e, "could not write pod status; will retry");
                again = Some(again.map_or(retry, |a| a.min(retry)));
            }
            Err(_) => again = Some(again.map_or(retry, |a| a.min(retry))),
        }
    }
    again
}
