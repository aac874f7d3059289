//! The garbage collector, for Pods, ReplicaSets, Deployments,
//! DaemonSets and ControllerRevisions: dependents whose owners are all gone are deleted
//! (background propagation); an owner deleted in the foreground (the
//! server adds the `foregroundDeletion` finalizer) has its dependents
//! deleted and loses the finalizer once no blocking dependent is left; an
//! owner deleted with `orphan` has the references to it removed from its
//! dependents, then loses the finalizer. Also the pod garbage collector's
//! orphan rule: a Pod bound to a Node that no longer exists is
//! force-deleted after a quarantine.
//!
//! Owners of other kinds (or unknown groups) are never presumed gone.

use super::{Caches, Ctx, Error, is_code};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The component name in Events.
pub const COMPONENT: &str = "garbage-collector-controller";

/// The kinds collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// core/v1 Pod.
    Pod,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ControllerRevision (a DaemonSet's history).
    ControllerRevision,
    /// core/v1 Node (owner only).
    Node,
}

impl Kind {
    /// The kind an owner reference names, if collected here.
    pub fn of_ref(r: &OwnerReference) -> Option<Kind> {
        let group = r.api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
        match (group, r.kind.as_str()) {
            ("", "Pod") => Some(Kind::Pod),
            ("", "Node") => Some(Kind::Node),
            ("apps", "ReplicaSet") => Some(Kind::ReplicaSet),
            ("apps", "Deployment") => Some(Kind::Deployment),
            ("apps", "DaemonSet") => Some(Kind::DaemonSet),
            ("apps", "ControllerRevision") => Some(Kind::ControllerRevision),
            _ => None,
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Kind::Pod => ApiResource::erase::<Pod>(&()),
            Kind::ReplicaSet => ApiResource::erase::<ReplicaSet>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
            Kind::ControllerRevision => ApiResource::erase::<ControllerRevision>(&()),
            Kind::Node => ApiResource::erase::<Node>(&()),
        }
    }
}

/// One object as the collector sees it.
#[derive(Debug, Clone)]
pub struct Item {
    /// Kind.
    pub kind: Kind,
    /// Namespace ("" for cluster-scoped).
    pub ns: String,
    /// Name.
    pub name: String,
    /// uid.
    pub uid: String,
    /// resourceVersion.
    pub rv: Option<String>,
    /// Owner references.
    pub refs: Vec<OwnerReference>,
    /// Being deleted.
    pub deleting: bool,
    /// Finalizers.
    pub finalizers: Vec<String>,
}

fn item<K: Resource>(kind: Kind, o: &K) -> Item {
    let m = o.meta();
    Item {
        kind,
        ns: m.namespace.clone().unwrap_or_default(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        rv: m.resource_version.clone(),
        refs: m.owner_references.clone().unwrap_or_default(),
        deleting: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
    }
}

/// What the collector does with one dependent (upstream's
/// `attemptToDeleteItem` after `classifyReferences`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    Keep,
    /// Remove these owner references (by uid); solid owners remain.
    RemoveRefs(Vec<String>),
    /// Delete with this propagation.
    Delete(&'static str),
}

/// How an owner reference resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Gone (or replaced by another object of the same name).
    Dangling,
    /// Being deleted in the foreground.
    WaitingForDependents,
}

/// The decision for a dependent given how each of its references resolved.
pub fn decide(refs: &[(String, Owner)], has_dependents: bool, own_finalizers: &[String]) -> Action {
    if refs.is_empty() {
        return Action::Keep;
    }
    let solid = refs.iter().any(|(_, o)| *o == Owner::Solid);
    let unsolid: Vec<String> = refs
        .iter()
        .filter(|(_, o)| *o != Owner::Solid)
        .map(|(u, _)| u.clone())
        .collect();
    let waiting = refs.iter().any(|(_, o)| *o == Owner::WaitingForDependents);
    if solid {
        return if unsolid.is_empty() {
            Action::Keep
        } else {
            Action::RemoveRefs(unsolid)
        };
    }
    if waiting && has_dependents {
        return Action::Delete("Foreground");
    }
    if own_finalizers.iter().any(|f| f == "orphan") {
        Action::Delete("Orphan")
    } else if own_finalizers.iter().any(|f| f == "foregroundDeletion") {
        Action::Delete("Foreground")
    } else {
        Action::Delete("Background")
    }
}

struct State {
    ctx: Ctx,
    pods: Store<Pod>,
    rss: Store<ReplicaSet>,
    deploys: Store<Deployment>,
    dss: Store<DaemonSet>,
    revs: Store<ControllerRevision>,
    nodes: Store<Node>,
    /// Pods seen bound to a missing Node, and since when.
    orphans: HashMap<String, Instant>,
}

/// Runs the collector until `cancel`.
pub(crate) async fn run(ctx: Ctx, cancel: CancellationToken) {
    let mut caches = Caches::new();
    let pods = caches.watch::<Pod>(&ctx.client);
    let rss = caches.watch::<ReplicaSet>(&ctx.client);
    let deploys = caches.watch::<Deployment>(&ctx.client);
    let dss = caches.watch::<DaemonSet>(&ctx.client);
    let revs = caches.watch::<ControllerRevision>(&ctx.client);
    let nodes = caches.watch::<Node>(&ctx.client);
    if !super::ready(&[&pods], &cancel).await
        || !super::ready(&[&rss], &cancel).await
        || !super::ready(&[&deploys], &cancel).await
        || !super::ready(&[&dss], &cancel).await
        || !super::ready(&[&revs], &cancel).await
        || !super::ready(&[&nodes], &cancel).await
    {
        return;
    }
    let st = State {
        ctx,
        pods,
        rss,
        deploys,
        dss,
        revs,
        nodes,
        orphans: HashMap::new(),
    };
    caches.drive(COMPONENT, cancel, st).await;
}

impl super::Reconciler for State {
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>> {
        Box::pin(self.collect())
    }
}

impl State {
    fn items(&self) -> Vec<Item> {
        let mut v: Vec<Item> = Vec::new();
        v.extend(
            self.pods
                .state()
                .iter()
                .map(|o| item(Kind::Pod, o.as_ref())),
        );
        v.extend(
            self.rss
                .state()
                .iter()
                .map(|o| item(Kind::ReplicaSet, o.as_ref())),
        );
        v.extend(
            self.deploys
                .state()
                .iter()
                .map(|o| item(Kind::Deployment, o.as_ref())),
        );
        v.extend(
            self.dss
                .state()
                .iter()
                .map(|o| item(Kind::DaemonSet, o.as_ref())),
        );
        v.extend(
            self.revs
                .state()
                .iter()
                .map(|o| item(Kind::ControllerRevision, o.as_ref())),
        );
        v.extend(
            self.nodes
                .state()
                .iter()
                .map(|o| item(Kind::Node, o.as_ref())),
        );
        v
    }

    fn api(&self, kind: Kind, ns: &str) -> Api<DynamicObject> {
        let ar = kind.resource();
        if ns.is_empty() {
            Api::all_with(self.ctx.client.clone(), &ar)
        } else {
            Api::namespaced_with(self.ctx.client.clone(), ns, &ar)
        }
    }

    async fn collect(&mut self) -> Result<Option<Duration>, Error> {
        let items = self.items();
        let by_uid: HashMap<&str, &Item> = items.iter().map(|i| (i.uid.as_str(), i)).collect();
        let mut dependents: HashMap<&str, Vec<(&Item, bool)>> = HashMap::new();
        for i in &items {
            for r in &i.refs {
                dependents
                    .entry(r.uid.as_str())
                    .or_default()
                    .push((i, r.block_owner_deletion == Some(true)));
            }
        }
        let mut first_err: Option<Error> = None;
        // owners being deleted with orphan or foreground finalizers
        for owner in items.iter().filter(|i| i.deleting) {
            let deps = dependents
                .get(owner.uid.as_str())
                .cloned()
                .unwrap_or_default();
            if owner.finalizers.iter().any(|f| f == "orphan") {
                let mut ok = true;
                for (d, _) in &deps {
                    if let Err(e) = self.remove_refs(d, std::slice::from_ref(&owner.uid)).await {
                        ok = false;
                        first_err.get_or_insert(e);
                    }
                }
                if ok && let Err(e) = self.remove_finalizer(owner, "orphan").await {
                    first_err.get_or_insert(e);
                }
            } else if owner.finalizers.iter().any(|f| f == "foregroundDeletion")
                && !deps.iter().any(|(_, block)| *block)
                && let Err(e) = self.remove_finalizer(owner, "foregroundDeletion").await
            {
                first_err.get_or_insert(e);
            }
        }
        // dependents
        for d in items.iter().filter(|i| !i.refs.is_empty() && !i.deleting) {
            let mut resolved = Vec::new();
            for r in &d.refs {
                let owner = match Kind::of_ref(r) {
                    None => Owner::Solid,
                    Some(kind) => match by_uid.get(r.uid.as_str()) {
                        Some(o) if o.kind == kind && o.name == r.name => {
                            if o.deleting && o.finalizers.iter().any(|f| f == "foregroundDeletion")
                            {
                                Owner::WaitingForDependents
                            } else {
                                Owner::Solid
                            }
                        }
                        _ => {
                            // the cache may lag: ask the server before presuming it gone
                            let ns = if kind == Kind::Node {
                                ""
                            } else {
                                d.ns.as_str()
                            };
                            match self.api(kind, ns).get_opt(&r.name).await {
                                Ok(Some(o)) if o.uid().as_deref() == Some(r.uid.as_str()) => {
                                    Owner::Solid
                                }
                                Ok(_) => Owner::Dangling,
                                Err(e) => {
                                    first_err.get_or_insert(e.into());
                                    Owner::Solid
                                }
                            }
                        }
                    },
                };
                resolved.push((r.uid.clone(), owner));
            }
            let has_deps = dependents
                .get(d.uid.as_str())
                .is_some_and(|v| !v.is_empty());
            let res = match decide(&resolved, has_deps, &d.finalizers) {
                Action::Keep => Ok(()),
                Action::RemoveRefs(uids) => self.remove_refs(d, &uids).await,
                Action::Delete(policy) => self.delete(d, policy).await,
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        let next = self.pod_gc().await?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    async fn delete(&self, d: &Item, policy: &str) -> Result<(), Error> {
        let pp = match policy {
            "Foreground" => PropagationPolicy::Foreground,
            "Orphan" => PropagationPolicy::Orphan,
            _ => PropagationPolicy::Background,
        };
        let dp = DeleteParams {
            propagation_policy: Some(pp),
            preconditions: Some(Preconditions {
                uid: Some(d.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::debug!(kind = ?d.kind, ns = %d.ns, name = %d.name, policy, "collecting");
        match self.api(d.kind, &d.ns).delete(&d.name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_refs(&self, d: &Item, uids: &[String]) -> Result<(), Error> {
        let refs: Vec<&OwnerReference> = d.refs.iter().filter(|r| !uids.contains(&r.uid)).collect();
        if refs.len() == d.refs.len() {
            return Ok(());
        }
        let value = if refs.is_empty() {
            json!(null)
        } else {
            json!(refs)
        };
        let patch = json!({"metadata": {"ownerReferences": value, "resourceVersion": d.rv}});
        match self
            .api(d.kind, &d.ns)
            .patch(&d.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(&self, o: &Item, finalizer: &str) -> Result<(), Error> {
        let rest: Vec<&String> = o.finalizers.iter().filter(|f| *f != finalizer).collect();
        let value = if rest.is_empty() {
            json!(null)
        } else {
            json!(rest)
        };
        let patch = json!({"metadata": {"finalizers": value, "resourceVersion": o.rv}});
        match self
            .api(o.kind, &o.ns)
            .patch(&o.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Pods bound to Nodes that are gone: force-deleted after the
    /// quarantine, once the server confirms the Node is gone.
    async fn pod_gc(&mut self) -> Result<Option<Duration>, Error> {
        let quarantine = self.ctx.config.orphan_pod_quarantine;
        let mut next: Option<Duration> = None;
        let mut seen = HashMap::new();
        for p in self.pods.state() {
            let Some(node) = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
            else {
                continue;
            };
            if self.nodes.state().iter().any(|n| n.name_any() == node) {
                continue;
            }
            let uid = p.uid().unwrap_or_default();
            let since = self.orphans.get(&uid).copied().unwrap_or_else(Instant::now);
            seen.insert(uid.clone(), since);
            if since.elapsed() < quarantine {
                let left = quarantine - since.elapsed();
                next = Some(next.map_or(left, |n: Duration| n.min(left)));
                continue;
            }
            let nodes: Api<Node> = Api::all(self.ctx.client.clone());
            if nodes.get_opt(&node).await?.is_some() {
                continue;
            }
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
            let cond = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
                "reason": "DeletionByPodGC", "message": "PodGC: node no longer exists",
                "lastTransitionTime": super::util::now_rfc3339()}]}});
            let _ = api
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(cond),
                )
                .await;
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&p.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.orphans = seen;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uid: &str, o: Owner) -> (String, Owner) {
        (uid.into(), o)
    }

    #[test]
    fn decisions_as_upstream() {
        let none: &[String] = &[];
        assert_eq!(decide(&[], false, none), Action::Keep);
        assert_eq!(decide(&[r("a", Owner::Solid)], false, none), Action::Keep);
        assert_eq!(
            decide(&[r("a", Owner::Dangling)], false, none),
            Action::Delete("Background")
        );
        assert_eq!(
            decide(
                &[
                    r("a", Owner::Solid),
                    r("b", Owner::Dangling),
                    r("c", Owner::WaitingForDependents)
                ],
                true,
                none
            ),
            Action::RemoveRefs(vec!["b".into(), "c".into()]),
            "a solid owner keeps the object; the others' references go"
        );
        assert_eq!(
            decide(&[r("a", Owner::WaitingForDependents)], true, none),
            Action::Delete("Foreground")
        );
        assert_eq!(
            decide(&[r("a", Owner::WaitingForDependents)], false, none),
            Action::Delete("Background")
        );
        assert_eq!(
            decide(&[r("a", Owner::Dangling)], true, &["orphan".to_string()]),
            Action::Delete("Orphan")
        );
    }

    #[test]
    fn only_known_kinds() {
        let o = |api: &str, kind: &str| OwnerReference {
            api_version: api.into(),
            kind: kind.into(),
            ..Default::default()
        };
        assert_eq!(
            Kind::of_ref(&o("apps/v1", "ReplicaSet")),
            Some(Kind::ReplicaSet)
        );
        assert_eq!(Kind::of_ref(&o("v1", "Node")), Some(Kind::Node));
        assert_eq!(Kind::of_ref(&o("batch/v1", "Job")), None);
        assert_eq!(Kind::of_ref(&o("example.com/v1", "ReplicaSet")), None);
    }
}
