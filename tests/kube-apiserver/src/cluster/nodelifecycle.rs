//! Node lifecycle, the parts users notice: condition taints (a Node whose
//! Ready condition is False or Unknown gets the `not-ready` or
//! `unreachable` NoSchedule taint at once and the NoExecute one after
//! [`ControllersConfig::no_execute_taint_delay`](super::ControllersConfig);
//! pressure conditions and `spec.unschedulable` get their NoSchedule
//! taints), Ready=False on the Pods of a Node that is not Ready, and the
//! taint eviction controller (Pods on a Node with a NoExecute taint they do
//! not tolerate are deleted, those that tolerate it for
//! `tolerationSeconds` are deleted after that long).
//!
//! Not played: the node monitor (a Node that stops heartbeating is not
//! turned Unknown here: whoever plays the kubelet writes the condition),
//! zone disruption rates, and the DefaultTolerationSeconds admission
//! plugin (the API server has no admission hook, so new Pods do not get
//! the 300 s not-ready/unreachable tolerations).

use super::scheduling::tolerates;
use super::util::{self, is_pod_ready};
use super::{Caches, Ctx, Error, is_code, record_event};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The component name in Events.
pub const COMPONENT: &str = "node-controller";
/// Taint of a Node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a Node whose Ready condition is Unknown.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    ("Ready", "False", NOT_READY),
    ("Ready", "Unknown", UNREACHABLE),
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
];
const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// The status of a Node's Ready condition ("" when it has none).
pub fn ready_status(node: &Node) -> &str {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
        .unwrap_or("")
}

/// The taints a Node should have: its own taints, minus managed ones no
/// longer warranted, plus managed ones now warranted (upstream's
/// NoSchedule tainting pass, and the NoExecute pass once `no_execute_due`).
/// None when nothing changes.
pub fn desired_taints(node: &Node, no_execute_due: bool, now_rfc3339: &str) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let conds: Vec<(&str, &str)> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .map(|c| (c.type_.as_str(), c.status.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let mut want: Vec<(String, &str)> = Vec::new();
    for (ty, st, key) in CONDITION_TAINTS {
        if conds.iter().any(|(t, s)| t == ty && s == st) {
            want.push((key.to_string(), "NoSchedule"));
        }
    }
    if node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
    {
        want.push((UNSCHEDULABLE.into(), "NoSchedule"));
    }
    if no_execute_due {
        match ready_status(node) {
            "False" => want.push((NOT_READY.into(), "NoExecute")),
            "Unknown" => want.push((UNREACHABLE.into(), "NoExecute")),
            _ => {}
        }
    }
    let managed = |t: &Taint| {
        (t.effect == "NoSchedule"
            && (CONDITION_TAINTS.iter().any(|(_, _, k)| *k == t.key) || t.key == UNSCHEDULABLE))
            || (t.effect == "NoExecute" && (t.key == NOT_READY || t.key == UNREACHABLE))
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || want.iter().any(|(k, e)| *k == t.key && *e == t.effect))
        .cloned()
        .collect();
    for (k, e) in &want {
        if !out.iter().any(|t| &t.key == k && t.effect == *e) {
            let time_added = (*e == "NoExecute")
                .then(|| serde_json::from_value(json!(now_rfc3339)).expect("an RFC 3339 time"));
            out.push(Taint {
                key: k.clone(),
                value: None,
                effect: e.to_string(),
                time_added,
            });
        }
    }
    (out != current).then_some(out)
}

/// The taint eviction rule for one Pod on a Node: None when no NoExecute
/// taint applies; Some(None) when every one is tolerated forever;
/// Some(Some(secs)) to evict after `secs` (0: now, e.g. untolerated).
/// Upstream's `GetMatchingTolerations` + `getMinTolerationTime`.
pub fn eviction_delay(taints: &[Taint], tolerations: &[Toleration]) -> Option<Option<i64>> {
    let no_exec: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
    if no_exec.is_empty() {
        return None;
    }
    let mut used: Vec<&Toleration> = Vec::new();
    for t in &no_exec {
        match tolerations.iter().find(|tol| tolerates(tol, t)) {
            Some(tol) => used.push(tol),
            None => return Some(Some(0)),
        }
    }
    let mut min: Option<i64> = None;
    for tol in used {
        if let Some(s) = tol.toleration_seconds {
            if s <= 0 {
                return Some(Some(0));
            }
            min = Some(min.map_or(s, |m| m.min(s)));
        }
    }
    Some(min)
}

struct State {
    ctx: Ctx,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// When a Node was first seen not Ready (by name and Ready status).
    not_ready_since: HashMap<String, (String, Instant)>,
    /// When an eviction countdown started, by Pod uid.
    countdown: HashMap<String, Instant>,
}

/// Runs the controller until `cancel`.
pub(crate) async fn run(ctx: Ctx, cancel: CancellationToken) {
    let mut caches = Caches::new();
    let nodes = caches.watch::<Node>(&ctx.client);
    let pods = caches.watch::<Pod>(&ctx.client);
    if !super::ready(&[&nodes], &cancel).await || !super::ready(&[&pods], &cancel).await {
        return;
    }
    let st = State {
        ctx,
        nodes,
        pods,
        not_ready_since: HashMap::new(),
        countdown: HashMap::new(),
    };
    caches.drive(COMPONENT, cancel, st).await;
}

impl super::Reconciler for State {
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>> {
        Box::pin(self.sync())
    }
}

fn soonest(next: &mut Option<Duration>, d: Duration) {
    *next = Some(next.map_or(d, |n| n.min(d)));
}

impl State {
    async fn sync(&mut self) -> Result<Option<Duration>, Error> {
        let delay = self.ctx.config.no_execute_taint_delay;
        let mut next = None;
        let nodes = self.nodes.state();
        let pods = self.pods.state();
        let mut since_now = HashMap::new();
        let mut node_taints: HashMap<String, Vec<Taint>> = HashMap::new();
        let mut not_ready: Vec<String> = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let ready = ready_status(node).to_string();
            let mut due = false;
            if ready == "False" || ready == "Unknown" {
                not_ready.push(name.clone());
                let since = match self.not_ready_since.get(&name) {
                    Some((st, at)) if *st == ready => *at,
                    _ => Instant::now(),
                };
                since_now.insert(name.clone(), (ready.clone(), since));
                if since.elapsed() >= delay {
                    due = true;
                } else {
                    soonest(&mut next, delay - since.elapsed());
                }
            }
            let mut taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if let Some(new) = desired_taints(node, due, &util::now_rfc3339()) {
                let api: Api<Node> = Api::all(self.ctx.client.clone());
                let patch = json!({"metadata": {"resourceVersion": node.resource_version()}, "spec": {"taints": new}});
                match api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_code(&e, 404) || is_code(&e, 409) => {
                        soonest(&mut next, Duration::from_millis(50))
                    }
                    Err(e) => return Err(e.into()),
                }
                taints = new;
            }
            node_taints.insert(name, taints);
        }
        self.not_ready_since = since_now;
        let mut countdown = HashMap::new();
        for p in &pods {
            let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if p.metadata.deletion_timestamp.is_some() || util::is_terminal(p) {
                continue;
            }
            if not_ready.contains(&node) && is_pod_ready(p) {
                self.mark_not_ready(p).await?;
            }
            let taints = node_taints.get(&node).map(Vec::as_slice).unwrap_or(&[]);
            let tolerations = p
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or(&[]);
            let Some(Some(secs)) = eviction_delay(taints, tolerations) else {
                continue;
            };
            let uid = p.uid().unwrap_or_default();
            let start = self
                .countdown
                .get(&uid)
                .copied()
                .unwrap_or_else(Instant::now);
            let wait = Duration::from_secs(secs as u64);
            if start.elapsed() >= wait {
                self.evict(p).await?;
            } else {
                countdown.insert(uid, start);
                soonest(&mut next, wait - start.elapsed());
            }
        }
        self.countdown = countdown;
        Ok(next)
    }

    /// Upstream's `MarkPodsNotReady`: the Ready condition turns False.
    async fn mark_not_ready(&self, p: &Pod) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.ctx.client.clone(), &p.namespace().unwrap_or_default());
        let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": util::now_rfc3339()}]}});
        match api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn evict(&self, p: &Pod) -> Result<(), Error> {
        let ns = p.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let cond = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": util::now_rfc3339()}]}});
        let _ = api
            .patch_status(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(cond),
            )
            .await;
        let msg = format!("Marking for deletion Pod {}/{}", ns, p.name_any());
        record_event(
            &self.ctx.client,
            p,
            "Normal",
            "TaintManagerEviction",
            &msg,
            "taint-eviction-controller",
        )
        .await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: p.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn keys(t: &[Taint]) -> Vec<String> {
        t.iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect()
    }

    #[test]
    fn condition_taints() {
        let vnode_taints = json!([{"key": "schedule.koupleless.io/virtual-node", "value": "True", "effect": "NoExecute"}]);
        let ready = node(
            json!({"spec": {"taints": vnode_taints}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(desired_taints(&ready, true, "2025-01-01T00:00:00Z"), None);
        let not_ready = node(
            json!({"spec": {"taints": vnode_taints}, "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "MemoryPressure", "status": "True"}]}}),
        );
        let t = desired_taints(&not_ready, false, "2025-01-01T00:00:00Z").unwrap();
        assert_eq!(
            keys(&t),
            [
                "schedule.koupleless.io/virtual-node:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule",
                "node.kubernetes.io/memory-pressure:NoSchedule"
            ]
        );
        let t = desired_taints(&not_ready, true, "2025-01-01T00:00:00Z").unwrap();
        assert!(keys(&t).contains(&"node.kubernetes.io/not-ready:NoExecute".to_string()));
        assert!(
            t.iter()
                .find(|t| t.effect == "NoExecute" && t.key == NOT_READY)
                .unwrap()
                .time_added
                .is_some()
        );
        // Unknown swaps not-ready for unreachable
        let mut unknown = not_ready.clone();
        unknown.spec.as_mut().unwrap().taints = Some(t);
        unknown
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "Unknown".into();
        let t = desired_taints(&unknown, true, "2025-01-01T00:00:00Z").unwrap();
        assert_eq!(
            keys(&t),
            [
                "schedule.koupleless.io/virtual-node:NoExecute",
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute"
            ]
        );
        // Ready again: only the Node's own taints stay
        let mut back = unknown.clone();
        back.spec.as_mut().unwrap().taints = Some(t);
        back.status.as_mut().unwrap().conditions = Some(vec![
            serde_json::from_value(json!({"type": "Ready", "status": "True"})).unwrap(),
        ]);
        assert_eq!(
            keys(&desired_taints(&back, true, "x").unwrap()),
            ["schedule.koupleless.io/virtual-node:NoExecute"]
        );
        let cordoned = node(json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            keys(&desired_taints(&cordoned, false, "x").unwrap()),
            ["node.kubernetes.io/unschedulable:NoSchedule"]
        );
        assert_eq!(
            desired_taints(&node(json!({})), true, "x"),
            None,
            "no Ready condition: nothing yet"
        );
    }

    #[test]
    fn eviction_delays_as_upstream() {
        let taint = |k: &str, e: &str| Taint {
            key: k.into(),
            effect: e.into(),
            ..Default::default()
        };
        let tol = |k: &str, secs: Option<i64>| Toleration {
            key: Some(k.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: secs,
            ..Default::default()
        };
        let nr = taint(NOT_READY, "NoExecute");
        assert_eq!(eviction_delay(&[taint("a", "NoSchedule")], &[]), None);
        assert_eq!(
            eviction_delay(std::slice::from_ref(&nr), &[]),
            Some(Some(0))
        );
        assert_eq!(
            eviction_delay(std::slice::from_ref(&nr), &[tol(NOT_READY, None)]),
            Some(None)
        );
        assert_eq!(
            eviction_delay(std::slice::from_ref(&nr), &[tol(NOT_READY, Some(300))]),
            Some(Some(300))
        );
        assert_eq!(
            eviction_delay(std::slice::from_ref(&nr), &[tol(NOT_READY, Some(-5))]),
            Some(Some(0))
        );
        let vn = taint("schedule.koupleless.io/virtual-node", "NoExecute");
        assert_eq!(
            eviction_delay(
                &[vn.clone(), nr.clone()],
                &[
                    tol("schedule.koupleless.io/virtual-node", None),
                    tol(NOT_READY, Some(30))
                ]
            ),
            Some(Some(30))
        );
        assert_eq!(
            eviction_delay(&[vn, nr], &[tol(NOT_READY, Some(30))]),
            Some(Some(0)),
            "one untolerated: now"
        );
    }
}
