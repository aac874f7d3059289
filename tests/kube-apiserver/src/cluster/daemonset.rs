//! The DaemonSet controller: one Pod per eligible Node (node name, node
//! selector/affinity and taints as upstream's `NodeShouldRunDaemonPod`,
//! with the tolerations upstream adds to daemon Pods), created with a
//! required node affinity on `metadata.name` so the scheduler binds it
//! there; deleted when the Node stops matching (a NoExecute taint it does
//! not tolerate, a label change); RollingUpdate with maxUnavailable
//! (rounded up, as upstream) or OnDelete; status; ControllerRevisions
//! (`<ds>-<hash>`, `data` the patch that restores the template, revision
//! numbers, a rolled-back revision renumbered as the newest, history
//! limited to `revisionHistoryLimit`), so `kubectl rollout history|undo
//! daemonset` work.

use super::replicaset::{controller_reference, create_pod, delete_pod};
use super::scheduling::{is_scheduling_effect, node_affinity_matches, untolerated};
use super::util::{self, controlled_by, is_pod_available, is_pod_ready, scaled_value};
use super::{Caches, Ctx, Error, Expectations, Pending, is_code, lookup_in, record_event, rv_of};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, PodSpec, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The component name in Events.
pub const COMPONENT: &str = "daemonset-controller";
/// The label with the template hash of a daemon Pod.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// A ControllerRevision's `data`: the strategic merge patch that puts this
/// template back (upstream's `getPatch`, what `kubectl rollout undo` sends).
pub fn history_patch(template: &serde_json::Value) -> serde_json::Value {
    let mut t = template.clone();
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

struct State {
    ctx: Ctx,
    dss: Store<DaemonSet>,
    nodes: Store<Node>,
    pods: Store<Pod>,
    revs: Store<ControllerRevision>,
    exp: Expectations,
}

/// Runs the controller until `cancel`.
pub(crate) async fn run(ctx: Ctx, cancel: CancellationToken) {
    let mut caches = Caches::new();
    let dss = caches.watch::<DaemonSet>(&ctx.client);
    let nodes = caches.watch::<Node>(&ctx.client);
    let pods = caches.watch::<Pod>(&ctx.client);
    let revs = caches.watch::<ControllerRevision>(&ctx.client);
    if !super::ready(&[&dss], &cancel).await
        || !super::ready(&[&nodes], &cancel).await
        || !super::ready(&[&pods], &cancel).await
        || !super::ready(&[&revs], &cancel).await
    {
        return;
    }
    let st = State {
        ctx,
        dss,
        nodes,
        pods,
        revs,
        exp: Expectations::default(),
    };
    caches.drive(COMPONENT, cancel, st).await;
}

impl super::Reconciler for State {
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>> {
        Box::pin(self.sync_all())
    }
}

/// The tolerations upstream adds to every daemon Pod
/// (`AddOrUpdateDaemonPodTolerations`).
pub fn daemon_tolerations(host_network: bool) -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: Some(effect.into()),
        ..Default::default()
    };
    let mut v = vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        v.push(t("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    v
}

/// The daemon Pod spec for `node`: the template's spec with the daemon
/// tolerations merged in and the required node affinity replaced by one
/// term naming the Node (`ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn daemon_pod_spec(template: &PodSpec, node: &str) -> PodSpec {
    let mut spec = template.clone();
    let tols = spec.tolerations.get_or_insert_default();
    for t in daemon_tolerations(spec.host_network == Some(true)) {
        if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
            tols.push(t);
        }
    }
    let term: k8s_openapi::api::core::v1::NodeSelectorTerm = serde_json::from_value(
        json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}),
    )
    .expect("a valid term");
    let aff = spec.affinity.get_or_insert_default();
    let na = aff.node_affinity.get_or_insert_default();
    na.required_during_scheduling_ignored_during_execution
        .get_or_insert_default()
        .node_selector_terms = vec![term];
    spec
}

/// Upstream's `NodeShouldRunDaemonPod`: (should run, should continue running).
pub fn should_run(template: &PodSpec, node: &Node) -> (bool, bool) {
    let name = node.name_any();
    if let Some(n) = template.node_name.as_deref()
        && !n.is_empty()
        && n != name
    {
        return (false, false);
    }
    let mut spec = template.clone();
    spec.tolerations
        .get_or_insert_default()
        .extend(daemon_tolerations(template.host_network == Some(true)));
    if !node_affinity_matches(&spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let tols = spec.tolerations.as_deref().unwrap_or(&[]);
    if untolerated(taints, tols, is_scheduling_effect).is_some() {
        let no_execute = untolerated(taints, tols, |t| t.effect == "NoExecute").is_some();
        return (false, !no_execute);
    }
    (true, true)
}

/// The Node a daemon Pod is for: its nodeName, else the node named by its
/// required affinity (`GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(n.to_string());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.as_ref()?.iter().find_map(|r| {
            (r.key == "metadata.name" && r.operator == "In")
                .then(|| r.values.as_ref().and_then(|v| v.first().cloned()))
                .flatten()
        })
    })
}

/// What a Node holds for a rolling update: (new Pod available?, (old Pod
/// available?, its name)), each `Some` when such a Pod exists.
pub type NodePods = (Option<bool>, Option<(bool, String)>);

/// Upstream's rolling update without surge: which old Pods to delete now.
/// `per_node` is in Node name order.
pub fn rolling_deletions(per_node: &[NodePods], max_unavailable: i32) -> Vec<String> {
    let mut unavailable = 0;
    let mut replace = Vec::new();
    let mut candidates = Vec::new();
    for (new, old) in per_node {
        match (new, old) {
            (None, None) | (Some(_), Some(_)) => unavailable += 1,
            (Some(avail), None) => {
                if !avail {
                    unavailable += 1;
                }
            }
            (None, Some((avail, name))) => {
                if !avail {
                    replace.push(name.clone());
                } else if unavailable < max_unavailable {
                    candidates.push(name.clone());
                }
            }
        }
    }
    let remaining = (max_unavailable - unavailable).max(0) as usize;
    replace.extend(candidates.into_iter().take(remaining));
    replace
}

impl State {
    async fn sync_all(&mut self) -> Result<Option<Duration>, Error> {
        let mut dss = self.dss.state();
        dss.sort_by_key(|d| (d.namespace(), d.name_any()));
        let mut nodes = self.nodes.state();
        nodes.sort_by_key(|n| n.name_any());
        let pods = self.pods.state();
        let mut next: Option<Duration> = None;
        let mut first_err = None;
        for ds in dss {
            match self.sync(&ds, &nodes, &pods).await {
                Ok(Some(t)) => next = Some(next.map_or(t, |n| n.min(t))),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    async fn sync(
        &mut self,
        ds: &Arc<DaemonSet>,
        nodes: &[Arc<Node>],
        pods: &[Arc<Pod>],
    ) -> Result<Option<Duration>, Error> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.uid().unwrap_or_default();
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(None);
        };
        let template = spec.template.clone();
        let tspec = template.spec.clone().unwrap_or_default();
        let hash = util::template_hash(
            &serde_json::to_value(&template)?,
            ds.status.as_ref().and_then(|s| s.collision_count),
        );
        let mut by_node: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
        for p in pods.iter().filter(|p| {
            p.namespace().as_deref() == Some(&ns)
                && controlled_by(p.metadata.owner_references.as_ref(), &uid)
        }) {
            if let Some(n) = target_node(p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        for v in by_node.values_mut() {
            v.sort_by_key(|p| {
                (
                    p.metadata.creation_timestamp.as_ref().map(util::time_ms),
                    p.name_any(),
                )
            });
        }
        let lookup = lookup_in(&self.pods, &ns);
        let settled = self.exp.satisfied(&uid, &lookup);
        let now = util::now_ms();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        if ds.metadata.deletion_timestamp.is_none() {
            self.sync_history(ds, &hash, &by_node).await?;
        }
        if settled && ds.metadata.deletion_timestamp.is_none() {
            let mut create: Vec<String> = Vec::new();
            let mut delete: Vec<&Pod> = Vec::new();
            for node in nodes {
                let name = node.name_any();
                let (run, keep) = should_run(&tspec, node);
                let on = by_node.get(&name).cloned().unwrap_or_default();
                if run && on.is_empty() {
                    create.push(name);
                } else if keep {
                    let mut running: Vec<&Pod> = Vec::new();
                    for &p in &on {
                        let p: &Pod = p.as_ref();
                        if p.metadata.deletion_timestamp.is_some() {
                            continue;
                        }
                        if util::is_terminal(p) {
                            delete.push(p);
                        } else {
                            running.push(p);
                        }
                    }
                    // without surge, only the oldest daemon Pod stays
                    delete.extend(running.into_iter().skip(1));
                } else if !on.is_empty() {
                    delete.extend(
                        on.iter()
                            .map(|&p| p.as_ref())
                            .filter(|p| p.metadata.deletion_timestamp.is_none()),
                    );
                }
            }
            // unbound Pods for Nodes that are gone (bound ones are the pod GC's)
            for (n, on) in &by_node {
                if !nodes.iter().any(|x| &x.name_any() == n) {
                    delete.extend(on.iter().map(|p| p.as_ref()).filter(|p| {
                        p.metadata.deletion_timestamp.is_none()
                            && p.spec
                                .as_ref()
                                .and_then(|s| s.node_name.as_deref())
                                .unwrap_or("")
                                .is_empty()
                    }));
                }
            }
            let changed = !create.is_empty() || !delete.is_empty();
            for node in create {
                let mut pod = super::replicaset::pod_from_template(
                    &template,
                    &ns,
                    &format!("{}-", ds.name_any()),
                    controller_reference(ds.as_ref()),
                )?;
                pod["spec"] = serde_json::to_value(daemon_pod_spec(&tspec, &node))?;
                let labels = pod["metadata"]["labels"]
                    .as_object_mut()
                    .cloned()
                    .unwrap_or_default();
                let mut labels = labels;
                labels.insert(REVISION_HASH.into(), json!(hash));
                labels.insert(
                    "pod-template-generation".into(),
                    json!(ds.metadata.generation.unwrap_or(1).to_string()),
                );
                pod["metadata"]["labels"] = serde_json::Value::Object(labels);
                let created = create_pod(&self.ctx, &ns, pod).await?;
                self.exp.expect(
                    &uid,
                    Pending::Seen {
                        name: created.name_any(),
                        rv: rv_of(&created),
                    },
                );
                let msg = format!("Created pod: {}", created.name_any());
                record_event(
                    &self.ctx.client,
                    ds.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &msg,
                    COMPONENT,
                )
                .await;
            }
            for p in delete {
                self.delete(ds, p).await?;
            }
            let rolling = spec
                .update_strategy
                .as_ref()
                .and_then(|s| s.type_.as_deref())
                .unwrap_or("RollingUpdate")
                == "RollingUpdate";
            if !changed && rolling {
                let desired = nodes.iter().filter(|n| should_run(&tspec, n).0).count() as i32;
                let mu = spec
                    .update_strategy
                    .as_ref()
                    .and_then(|s| s.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.clone())
                    .unwrap_or(IntOrString::Int(1));
                let mut max_unavailable =
                    scaled_value(&mu, desired, true).map_err(Error::Invalid)?;
                if max_unavailable == 0 {
                    max_unavailable = 1;
                }
                let mut per_node = Vec::new();
                let mut names: BTreeMap<String, &Pod> = BTreeMap::new();
                for on in by_node.values() {
                    let live: Vec<&Pod> = on
                        .iter()
                        .map(|p| p.as_ref())
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .collect();
                    let is_new = |p: &Pod| p.labels().get(REVISION_HASH) == Some(&hash);
                    let new: Vec<&Pod> = live.iter().copied().filter(|p| is_new(p)).collect();
                    let old: Vec<&Pod> = live.iter().copied().filter(|p| !is_new(p)).collect();
                    if new.len() > 1 || old.len() > 1 || live.len() != on.len() {
                        per_node.push((None, None));
                        continue;
                    }
                    let n = new.first().map(|p| is_pod_available(p, min_ready, now));
                    let o = old.first().map(|p| {
                        names.insert(p.name_any(), *p);
                        (is_pod_available(p, min_ready, now), p.name_any())
                    });
                    per_node.push((n, o));
                }
                for name in rolling_deletions(&per_node, max_unavailable) {
                    if let Some(p) = names.get(&name) {
                        self.delete(ds, p).await?;
                    }
                }
            }
        }
        // status
        let (mut desired, mut current, mut mis, mut ready, mut available, mut updated) =
            (0, 0, 0, 0, 0, 0);
        let mut next: Option<Duration> = None;
        for node in nodes {
            let (run, _) = should_run(&tspec, node);
            let on = by_node.get(&node.name_any());
            let scheduled = on.is_some_and(|v| !v.is_empty());
            if run {
                desired += 1;
                let Some(p) = on.and_then(|v| v.first()) else {
                    continue;
                };
                current += 1;
                if is_pod_ready(p) {
                    ready += 1;
                    if is_pod_available(p, min_ready, now) {
                        available += 1;
                    } else if let Some(d) = util::until_available(p, min_ready, now) {
                        next = Some(next.map_or(d, |n: Duration| n.min(d)));
                    }
                }
                if p.labels().get(REVISION_HASH) == Some(&hash) {
                    updated += 1;
                }
            } else if scheduled {
                mis += 1;
            }
        }
        let nz = |v: i32| (v != 0).then_some(v);
        let status = DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: current,
            number_misscheduled: mis,
            number_ready: ready,
            number_available: nz(available),
            number_unavailable: nz(desired - available),
            updated_number_scheduled: nz(updated),
            observed_generation: ds.metadata.generation,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
        };
        if ds.status.as_ref() != Some(&status) {
            let mut new = (**ds).clone();
            new.status = Some(status);
            new.metadata.managed_fields = None;
            let api: Api<DaemonSet> = Api::namespaced(self.ctx.client.clone(), &ns);
            match api
                .replace_status(&ds.name_any(), &PostParams::default(), &new)
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {
                    return Ok(Some(Duration::from_millis(50)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(next)
    }

    /// Upstream's `constructHistory` + `cleanupHistory`: the revision of
    /// the current template exists and is the newest; old ones beyond
    /// `revisionHistoryLimit` that no Pod runs are deleted.
    async fn sync_history(
        &mut self,
        ds: &DaemonSet,
        hash: &str,
        by_node: &BTreeMap<String, Vec<&Arc<Pod>>>,
    ) -> Result<(), Error> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.uid().unwrap_or_default();
        let Some(spec) = ds.spec.as_ref() else {
            return Ok(());
        };
        let mut revs: Vec<Arc<ControllerRevision>> = self
            .revs
            .state()
            .into_iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(&ns)
                    && controlled_by(r.metadata.owner_references.as_ref(), &uid)
            })
            .collect();
        revs.sort_by_key(|r| (r.revision, r.name_any()));
        let max = revs.iter().map(|r| r.revision).max().unwrap_or(0);
        let name = format!("{}-{hash}", ds.name_any());
        let api: Api<ControllerRevision> = Api::namespaced(self.ctx.client.clone(), &ns);
        match revs.iter().find(|r| r.name_any() == name) {
            // rolled back to an old template: that revision becomes the newest
            Some(cur) if cur.revision < max => {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": max + 1})),
                )
                .await?;
            }
            Some(_) => {}
            None => {
                let mut labels = spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                labels.insert(REVISION_HASH.into(), hash.to_string());
                let rev = ControllerRevision {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(ns.clone()),
                        labels: Some(labels),
                        annotations: ds.metadata.annotations.clone(),
                        owner_references: Some(vec![controller_reference(ds)]),
                        ..Default::default()
                    },
                    data: Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
                        history_patch(&serde_json::to_value(&spec.template)?),
                    )),
                    revision: max + 1,
                };
                match api.create(&PostParams::default(), &rev).await {
                    // the cache has not seen our own earlier create yet
                    Err(e) if is_code(&e, 409) => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        let in_use: Vec<&str> = by_node
            .values()
            .flatten()
            .filter_map(|p| p.labels().get(REVISION_HASH).map(String::as_str))
            .collect();
        let old: Vec<&Arc<ControllerRevision>> = revs
            .iter()
            .filter(|r| {
                r.name_any() != name
                    && !r
                        .labels()
                        .get(REVISION_HASH)
                        .is_some_and(|h| in_use.contains(&h.as_str()))
            })
            .collect();
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        for r in old.iter().take(old.len().saturating_sub(limit)) {
            match api.delete(&r.name_any(), &DeleteParams::default()).await {
                Err(e) if is_code(&e, 404) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    async fn delete(&mut self, ds: &DaemonSet, p: &Pod) -> Result<(), Error> {
        if delete_pod(&self.ctx, p).await? {
            self.exp.expect(
                &ds.uid().unwrap_or_default(),
                Pending::Gone {
                    name: p.name_any(),
                    uid: p.uid().unwrap_or_default(),
                },
            );
            let msg = format!("Deleted pod: {}", p.name_any());
            record_event(
                &self.ctx.client,
                ds,
                "Normal",
                "SuccessfulDelete",
                &msg,
                COMPONENT,
            )
            .await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn should_run_as_upstream() {
        let spec: PodSpec =
            serde_json::from_value(json!({"containers": [], "nodeSelector": {"role": "vnode"},
            "tolerations": [{"key": "schedule.koupleless.io/virtual-node", "operator": "Exists"}]}))
            .unwrap();
        let labels = json!({"role": "vnode"});
        let fits = node(
            json!({"metadata": {"name": "a", "labels": labels}, "spec": {"taints": [{"key": "schedule.koupleless.io/virtual-node", "value": "True", "effect": "NoExecute"}]}}),
        );
        assert_eq!(should_run(&spec, &fits), (true, true));
        let other = node(json!({"metadata": {"name": "b", "labels": {"role": "x"}}}));
        assert_eq!(should_run(&spec, &other), (false, false));
        let no_sched = node(
            json!({"metadata": {"name": "c", "labels": labels}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            should_run(&spec, &no_sched),
            (false, true),
            "NoSchedule: keep running, do not start"
        );
        let no_exec = node(
            json!({"metadata": {"name": "d", "labels": labels}, "spec": {"taints": [{"key": "k", "effect": "NoExecute"}]}}),
        );
        assert_eq!(should_run(&spec, &no_exec), (false, false));
        let not_ready = node(
            json!({"metadata": {"name": "e", "labels": labels}, "spec": {"unschedulable": true, "taints": [
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"},
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            should_run(&spec, &not_ready),
            (true, true),
            "daemon tolerations"
        );
        let mut named = spec.clone();
        named.node_name = Some("a".into());
        assert_eq!(should_run(&named, &not_ready), (false, false));
    }

    #[test]
    fn pod_spec_names_the_node() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}})).unwrap();
        let s = daemon_pod_spec(&spec, "n1");
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(
            v["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
            json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}])
        );
        assert_eq!(s.tolerations.as_ref().unwrap().len(), 6);
        let pod: Pod = serde_json::from_value(json!({"spec": v})).unwrap();
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let old = |avail: bool, n: &str| (None, Some((avail, n.to_string())));
        let nodes = vec![old(true, "a"), old(true, "b"), old(true, "c")];
        assert_eq!(rolling_deletions(&nodes, 1), vec!["a"]);
        assert_eq!(rolling_deletions(&nodes, 2), vec!["a", "b"]);
        // a new Pod not yet available uses up the budget
        let nodes = vec![(Some(false), None), old(true, "b"), old(true, "c")];
        assert!(rolling_deletions(&nodes, 1).is_empty());
        // an unavailable old Pod is always replaced
        let nodes = vec![(Some(false), None), old(false, "b"), old(true, "c")];
        assert_eq!(rolling_deletions(&nodes, 1), vec!["b"]);
        // 30% of 3 rounds up to 1 for DaemonSets
        assert_eq!(
            scaled_value(&IntOrString::String("30%".into()), 3, true),
            Ok(1)
        );
    }
}
