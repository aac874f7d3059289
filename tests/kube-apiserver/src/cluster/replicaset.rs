//! The ReplicaSet controller: keeps `spec.replicas` active Pods from the
//! template, owned (controller, blockOwnerDeletion) and named
//! `<replicaset>-<random>`; scales down with upstream's ranking (unscheduled,
//! then pending, then not ready, then doubled up, then recently ready, then
//! restarted, then newest first); adopts matching orphans and releases Pods
//! that stopped matching; writes `status`.

use super::util::{self, controlled_by, controller_ref, is_active, is_pod_available, is_pod_ready};
use super::{Caches, Ctx, Error, Expectations, Pending, is_code, lookup_in, record_event, rv_of};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The component name in Events.
pub const COMPONENT: &str = "replicaset-controller";

/// Upstream's burstReplicas: at most this many creates or deletes per pass.
pub const BURST: usize = 500;

struct State {
    ctx: Ctx,
    rss: Store<ReplicaSet>,
    pods: Store<Pod>,
    exp: Expectations,
}

/// Runs the controller until `cancel`.
pub(crate) async fn run(ctx: Ctx, cancel: CancellationToken) {
    let mut caches = Caches::new();
    let rss = caches.watch::<ReplicaSet>(&ctx.client);
    let pods = caches.watch::<Pod>(&ctx.client);
    if !super::ready(&[&rss], &cancel).await || !super::ready(&[&pods], &cancel).await {
        return;
    }
    let st = State {
        ctx,
        rss,
        pods,
        exp: Expectations::default(),
    };
    caches.drive(COMPONENT, cancel, st).await;
}

impl super::Reconciler for State {
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>> {
        Box::pin(self.sync_all())
    }
}

/// What the deletion ranking looks at, per Pod.
#[derive(Debug, Clone, Default)]
pub struct RankFacts {
    /// Bound to a Node.
    pub assigned: bool,
    /// Pending 0, Unknown 1, Running 2 (upstream's `podPhaseToOrdinal`).
    pub phase: u8,
    /// Ready condition True.
    pub ready: bool,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub cost: i32,
    /// Active related Pods on the same Node, this one included.
    pub rank: usize,
    /// When it turned Ready (ms), if known.
    pub ready_since: Option<i64>,
    /// Highest container restart count.
    pub restarts: i32,
    /// Creation time (ms).
    pub created: Option<i64>,
    /// uid, the last tie-break.
    pub uid: String,
}

fn log_rank(t: i64, now: i64) -> i64 {
    let d = (now - t) as f64 * 1e6; // nanoseconds, as Go's time.Duration
    if d > 0.0 { d.log2() as i64 } else { -1 }
}

/// Upstream's `ActivePodsWithRanks.Less` (with LogarithmicScaleDown and
/// PodDeletionCost, both on by default): whether `a` goes before `b`.
pub fn deletes_first(a: &RankFacts, b: &RankFacts, now: i64) -> bool {
    if a.assigned != b.assigned {
        return !a.assigned;
    }
    if a.phase != b.phase {
        return a.phase < b.phase;
    }
    if a.ready != b.ready {
        return !a.ready;
    }
    if a.cost != b.cost {
        return a.cost < b.cost;
    }
    if a.rank != b.rank {
        return a.rank > b.rank;
    }
    let by_time = |x: Option<i64>, y: Option<i64>| -> Option<bool> {
        if x == y {
            return None;
        }
        match (x, y) {
            // afterOrZero: an empty time sorts first
            (None, _) => Some(true),
            (_, None) => Some(false),
            (Some(x), Some(y)) => {
                let d = log_rank(x, now) - log_rank(y, now);
                if d == 0 {
                    Some(a.uid < b.uid)
                } else {
                    Some(d < 0)
                }
            }
        }
    };
    if a.ready
        && b.ready
        && let Some(r) = by_time(a.ready_since, b.ready_since)
    {
        return r;
    }
    if a.restarts != b.restarts {
        return a.restarts > b.restarts;
    }
    if let Some(r) = by_time(a.created, b.created) {
        return r;
    }
    false
}

/// Indices of `pods` in deletion order.
pub fn deletion_order(pods: &[RankFacts], now: i64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..pods.len()).collect();
    idx.sort_by(|&i, &j| {
        if deletes_first(&pods[i], &pods[j], now) {
            Ordering::Less
        } else if deletes_first(&pods[j], &pods[i], now) {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    });
    idx
}

fn facts(pod: &Pod, rank: usize) -> RankFacts {
    let phase = match util::phase(pod) {
        "Unknown" => 1,
        "Running" => 2,
        _ => 0,
    };
    let restarts = pod
        .status
        .as_ref()
        .map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .map(|c| c.restart_count)
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    RankFacts {
        assigned: !pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or("")
            .is_empty(),
        phase,
        ready: is_pod_ready(pod),
        cost: pod
            .annotations()
            .get("controller.kubernetes.io/pod-deletion-cost")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        rank,
        ready_since: util::ready_since(pod).filter(|t| *t != 0),
        restarts,
        created: pod.metadata.creation_timestamp.as_ref().map(util::time_ms),
        uid: pod.uid().unwrap_or_default(),
    }
}

/// An owner reference naming `owner` as controller.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A Pod for `template`, owned by `owner` (upstream's `GetPodFromTemplate`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: &str,
    owner: OwnerReference,
) -> Result<serde_json::Value, Error> {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "namespace": namespace,
            "ownerReferences": [owner],
        },
        "spec": serde_json::to_value(template.spec.clone().unwrap_or_default())?,
    });
    if let Some(l) = meta.labels {
        pod["metadata"]["labels"] = json!(l);
    }
    if let Some(a) = meta.annotations {
        pod["metadata"]["annotations"] = json!(a);
    }
    if let Some(f) = meta.finalizers {
        pod["metadata"]["finalizers"] = json!(f);
    }
    Ok(pod)
}

/// Creates Pods, as ReplicaSets and DaemonSets do; returns the created
/// names and resourceVersions.
pub(crate) async fn create_pod(ctx: &Ctx, ns: &str, pod: serde_json::Value) -> Result<Pod, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pod: Pod = serde_json::from_value(pod)?;
    Ok(api.create(&PostParams::default(), &pod).await?)
}

/// Deletes a Pod by uid precondition; false if it was already gone.
pub(crate) async fn delete_pod(ctx: &Ctx, pod: &Pod) -> Result<bool, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &dp).await {
        Ok(_) => Ok(true),
        Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Adds (adopt) or removes (release) the controller reference of `pod`.
pub(crate) async fn set_pod_owner(
    ctx: &Ctx,
    pod: &Pod,
    adopt: Option<OwnerReference>,
    release_uid: Option<&str>,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pod.namespace().unwrap_or_default());
    let mut refs = pod.owner_references().to_vec();
    if let Some(uid) = release_uid {
        refs.retain(|r| r.uid != uid);
    }
    if let Some(r) = adopt {
        refs.push(r);
    }
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.uid(), "resourceVersion": pod.resource_version()}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// ReplicaSet status from its active Pods (upstream's
/// `calculateStatus`); conditions are kept.
pub fn calculate_status(rs: &ReplicaSet, active: &[&Pod], now: i64) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let fully = active
        .iter()
        .filter(|p| {
            let l = p.labels();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count() as i32;
    let ready = active.iter().filter(|p| is_pod_ready(p)).count() as i32;
    let available = active
        .iter()
        .filter(|p| is_pod_available(p, min_ready, now))
        .count() as i32;
    let nz = |v: i32| (v != 0).then_some(v);
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: nz(fully),
        ready_replicas: nz(ready),
        available_replicas: nz(available),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    }
}

impl State {
    async fn sync_all(&mut self) -> Result<Option<Duration>, Error> {
        let mut next: Option<Duration> = None;
        let mut rss = self.rss.state();
        rss.sort_by_key(|r| (r.namespace(), r.name_any()));
        let pods = self.pods.state();
        let mut first_err = None;
        for rs in rss {
            match self.sync(&rs, &pods).await {
                Ok(Some(d)) => next = Some(next.map_or(d, |n| n.min(d))),
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
        rs: &Arc<ReplicaSet>,
        all: &[Arc<Pod>],
    ) -> Result<Option<Duration>, Error> {
        let ns = rs.namespace().unwrap_or_default();
        let uid = rs.uid().unwrap_or_default();
        let lookup = lookup_in(&self.pods, &ns);
        if !self.exp.satisfied(&uid, &lookup) {
            return Ok(None);
        }
        let Some(spec) = rs.spec.as_ref() else {
            return Ok(None);
        };
        let selector =
            Selector::try_from(spec.selector.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        for p in all.iter().filter(|p| p.namespace().as_deref() == Some(&ns)) {
            let matches = !selector.selects_all() && selector.matches(p.labels());
            if controlled_by(p.metadata.owner_references.as_ref(), &uid) {
                if matches || deleting {
                    owned.push(p.clone());
                } else if p.metadata.deletion_timestamp.is_none() {
                    set_pod_owner(&self.ctx, p, None, Some(&uid)).await?;
                }
            } else if matches
                && !deleting
                && controller_ref(p.metadata.owner_references.as_ref()).is_none()
                && p.metadata.deletion_timestamp.is_none()
            {
                set_pod_owner(&self.ctx, p, Some(controller_reference(rs.as_ref())), None).await?;
                owned.push(p.clone());
            }
        }
        let active: Vec<&Pod> = owned
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| is_active(p))
            .collect();
        let now = util::now_ms();
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        if !deleting {
            if active.len() < want {
                let n = (want - active.len()).min(BURST);
                let template = spec.template.clone().unwrap_or_default();
                for _ in 0..n {
                    let pod = pod_from_template(
                        &template,
                        &ns,
                        &format!("{}-", rs.name_any()),
                        controller_reference(rs.as_ref()),
                    )?;
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
                        rs.as_ref(),
                        "Normal",
                        "SuccessfulCreate",
                        &msg,
                        COMPONENT,
                    )
                    .await;
                }
            } else if active.len() > want {
                let n = (active.len() - want).min(BURST);
                let related = related_pods(rs, all, &self.rss);
                let mut on_node: HashMap<&str, usize> = HashMap::new();
                for p in &related {
                    let node = p
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .unwrap_or("");
                    *on_node.entry(node).or_default() += 1;
                }
                let f: Vec<RankFacts> = active
                    .iter()
                    .map(|p| {
                        let node = p
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .unwrap_or("");
                        facts(p, on_node.get(node).copied().unwrap_or(0))
                    })
                    .collect();
                for i in deletion_order(&f, now).into_iter().take(n) {
                    let p = active[i];
                    if delete_pod(&self.ctx, p).await? {
                        self.exp.expect(
                            &uid,
                            Pending::Gone {
                                name: p.name_any(),
                                uid: p.uid().unwrap_or_default(),
                            },
                        );
                        let msg = format!("Deleted pod: {}", p.name_any());
                        record_event(
                            &self.ctx.client,
                            rs.as_ref(),
                            "Normal",
                            "SuccessfulDelete",
                            &msg,
                            COMPONENT,
                        )
                        .await;
                    }
                }
            }
        }
        let status = calculate_status(rs, &active, now);
        if rs.status.as_ref() != Some(&status) {
            let mut new = (**rs).clone();
            new.status = Some(status);
            new.metadata.managed_fields = None;
            let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &ns);
            match api
                .replace_status(&rs.name_any(), &PostParams::default(), &new)
                .await
            {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {
                    return Ok(Some(Duration::from_millis(50)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        Ok(active
            .iter()
            .filter_map(|p| util::until_available(p, min_ready, now))
            .min())
    }
}

/// Active Pods of every ReplicaSet with the same controller as `rs` (or
/// of `rs` alone), for the "doubled up" rank.
fn related_pods<'a>(
    rs: &ReplicaSet,
    all: &'a [Arc<Pod>],
    rss: &Store<ReplicaSet>,
) -> Vec<&'a Arc<Pod>> {
    let ns = rs.namespace();
    let owner = controller_ref(rs.metadata.owner_references.as_ref()).map(|r| r.uid.clone());
    let mut uids: Vec<String> = vec![rs.uid().unwrap_or_default()];
    if let Some(o) = &owner {
        for other in rss.state() {
            if other.namespace() == ns && controlled_by(other.metadata.owner_references.as_ref(), o)
            {
                uids.push(other.uid().unwrap_or_default());
            }
        }
    }
    all.iter()
        .filter(|p| is_active(p))
        .filter(|p| {
            controller_ref(p.metadata.owner_references.as_ref())
                .is_some_and(|r| uids.contains(&r.uid))
        })
        .collect()
}

/// The labels of a template, for callers that build selectors from it.
pub fn template_labels(t: Option<&PodTemplateSpec>) -> BTreeMap<String, String> {
    t.and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> RankFacts {
        RankFacts {
            uid: name.into(),
            assigned: true,
            phase: 2,
            ready: true,
            ..Default::default()
        }
    }

    #[test]
    fn ranking_as_upstream() {
        // The order of upstream's TestSortingActivePodsWithRanks: each pod
        // below must be deleted before every pod after it.
        let now = 1_000_000_000i64;
        let unscheduled = RankFacts {
            assigned: false,
            phase: 0,
            ready: false,
            ..f("unscheduled")
        };
        let pending = RankFacts {
            phase: 0,
            ready: false,
            ..f("pending")
        };
        let unknown = RankFacts {
            phase: 1,
            ready: false,
            ..f("unknown")
        };
        let not_ready = RankFacts {
            ready: false,
            ..f("notready")
        };
        let low_cost = RankFacts {
            cost: -10,
            ready_since: Some(now - 1000),
            ..f("lowcost")
        };
        let doubled = RankFacts {
            rank: 2,
            ready_since: Some(now - 1000),
            ..f("doubled")
        };
        let ready_recent = RankFacts {
            rank: 1,
            ready_since: Some(now - 1000),
            ..f("recent")
        };
        let ready_old = RankFacts {
            rank: 1,
            ready_since: Some(now - 100_000_000),
            restarts: 3,
            ..f("oldrestarted")
        };
        let ready_old_norestart = RankFacts {
            rank: 1,
            ready_since: Some(now - 100_000_000),
            created: Some(now - 100),
            ..f("oldnew")
        };
        let ready_old_created_old = RankFacts {
            rank: 1,
            ready_since: Some(now - 100_000_000),
            created: Some(now - 100_000_000),
            ..f("oldold")
        };
        let want = [
            &unscheduled,
            &pending,
            &unknown,
            &not_ready,
            &low_cost,
            &doubled,
            &ready_recent,
            &ready_old,
            &ready_old_norestart,
            &ready_old_created_old,
        ];
        for i in 0..want.len() {
            for j in i + 1..want.len() {
                assert!(
                    deletes_first(want[i], want[j], now),
                    "{} before {}",
                    want[i].uid,
                    want[j].uid
                );
                assert!(
                    !deletes_first(want[j], want[i], now),
                    "{} not before {}",
                    want[j].uid,
                    want[i].uid
                );
            }
        }
        let shuffled: Vec<RankFacts> = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]
            .iter()
            .map(|&i| want[i].clone())
            .collect();
        let order: Vec<String> = deletion_order(&shuffled, now)
            .into_iter()
            .map(|i| shuffled[i].uid.clone())
            .collect();
        let expected: Vec<String> = want.iter().map(|f| f.uid.clone()).collect();
        assert_eq!(order, expected);
    }

    #[test]
    fn logarithmic_buckets_tie_on_uid() {
        // Creation times in the same power-of-two bucket compare by uid.
        let now = 1_000_000i64;
        let a = RankFacts {
            created: Some(now - 5000),
            ..f("a")
        };
        let b = RankFacts {
            created: Some(now - 6000),
            ..f("b")
        };
        assert!(deletes_first(&a, &b, now));
        assert!(!deletes_first(&b, &a, now));
        let newer = RankFacts {
            created: Some(now - 10),
            ..f("z")
        };
        assert!(
            deletes_first(&newer, &a, now),
            "newer bucket first despite uid"
        );
        let none = RankFacts {
            created: None,
            ..f("zz")
        };
        assert!(
            deletes_first(&none, &newer, now),
            "empty creation time first"
        );
    }
}
