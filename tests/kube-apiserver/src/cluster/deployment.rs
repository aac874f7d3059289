//! The Deployment controller: owns one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`; rolls from old to new with
//! RollingUpdate (maxSurge rounded up, maxUnavailable rounded down, as
//! upstream) or Recreate; keeps the `deployment.kubernetes.io/revision`
//! annotations (so `kubectl rollout undo/history` work) and
//! revisionHistoryLimit; writes status with the Available and Progressing
//! conditions (progressDeadlineSeconds included), which `kubectl rollout
//! status` reads.

use super::replicaset::controller_reference;
use super::util::{self, controlled_by, scaled_value};
use super::{Caches, Ctx, Error, Expectations, Pending, is_code, lookup_in, record_event, rv_of};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::Selector;
use kube::runtime::reflector::Store;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The component name in Events.
pub const COMPONENT: &str = "deployment-controller";
/// Revision annotation on ReplicaSets and Deployments.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The label that ties a ReplicaSet and its Pods to a template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

struct State {
    ctx: Ctx,
    deploys: Store<Deployment>,
    rss: Store<ReplicaSet>,
    pods: Store<Pod>,
    exp: Expectations,
}

/// Runs the controller until `cancel`.
pub(crate) async fn run(ctx: Ctx, cancel: CancellationToken) {
    let mut caches = Caches::new();
    let deploys = caches.watch::<Deployment>(&ctx.client);
    let rss = caches.watch::<ReplicaSet>(&ctx.client);
    let pods = caches.watch::<Pod>(&ctx.client);
    if !super::ready(&[&deploys], &cancel).await
        || !super::ready(&[&rss], &cancel).await
        || !super::ready(&[&pods], &cancel).await
    {
        return;
    }
    let st = State {
        ctx,
        deploys,
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

// ------------------------------------------------------------ pure rules

/// Upstream's `ResolveFenceposts`: (maxSurge rounded up, maxUnavailable
/// rounded down) of `desired`; both zero means maxUnavailable 1.
pub fn resolve_fenceposts(
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(max_surge.unwrap_or(&zero), desired, true)?;
    let mut unavailable = scaled_value(max_unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

/// A Deployment's strategy, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Kill all old Pods, then start the new ones.
    Recreate,
    /// Replace gradually.
    Rolling {
        /// maxSurge, resolved (rounded up).
        surge: i32,
        /// maxUnavailable, resolved (rounded down), at most `replicas`.
        unavailable: i32,
    },
}

/// The strategy of `d` with its fenceposts resolved against its replicas.
pub fn strategy(d: &Deployment) -> Result<Strategy, String> {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let st = spec.and_then(|s| s.strategy.as_ref());
    if st.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return Ok(Strategy::Recreate);
    }
    let ru = st.and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge_v = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&default);
    let unav_v = ru
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    // NewRSNewReplicas scales maxSurge on its own; MaxUnavailable goes
    // through ResolveFenceposts and is capped at replicas.
    let surge = scaled_value(surge_v, replicas, true)?;
    let (_, unavailable) = resolve_fenceposts(Some(surge_v), Some(unav_v), replicas)?;
    let unavailable = if replicas == 0 {
        0
    } else {
        unavailable.min(replicas)
    };
    Ok(Strategy::Rolling { surge, unavailable })
}

/// Upstream's `NewRSNewReplicas`: how many replicas the new ReplicaSet
/// should have now. `total` is the sum of all ReplicaSets' spec.replicas.
pub fn new_rs_replicas(strategy: Strategy, replicas: i32, total: i32, new_rs: i32) -> i32 {
    match strategy {
        Strategy::Recreate => replicas,
        Strategy::Rolling { surge, .. } => {
            let max_total = replicas + surge;
            if total >= max_total {
                return new_rs;
            }
            let up = (max_total - total).min(replicas - new_rs);
            new_rs + up.max(0)
        }
    }
}

/// One ReplicaSet as the rollout arithmetic sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RsCounts {
    /// spec.replicas.
    pub spec: i32,
    /// status.availableReplicas.
    pub available: i32,
}

/// Upstream's `reconcileOldReplicaSets` for RollingUpdate: new
/// spec.replicas for each old ReplicaSet (oldest first), first cleaning up
/// unhealthy replicas, then scaling down as far as availability allows.
pub fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new_rs: RsCounts,
    old: &[RsCounts],
) -> Vec<i32> {
    let mut specs: Vec<i32> = old.iter().map(|r| r.spec).collect();
    let old_total: i32 = specs.iter().sum();
    if old_total == 0 {
        return specs;
    }
    let all_total = old_total + new_rs.spec;
    let min_available = replicas - max_unavailable;
    let new_unavailable = new_rs.spec - new_rs.available;
    let max_scaled_down = all_total - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return specs;
    }
    // cleanupUnhealthyReplicas
    let mut cleaned = 0;
    for (i, r) in old.iter().enumerate() {
        if cleaned >= max_scaled_down {
            break;
        }
        if specs[i] == 0 || specs[i] == r.available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(specs[i] - r.available);
        specs[i] -= down;
        cleaned += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let available: i32 = old.iter().map(|r| r.available).sum::<i32>() + new_rs.available;
    if available <= min_available {
        return specs;
    }
    let to_scale = available - min_available;
    let mut scaled = 0;
    for s in specs.iter_mut() {
        if scaled >= to_scale {
            break;
        }
        if *s == 0 {
            continue;
        }
        let down = (*s).min(to_scale - scaled);
        *s -= down;
        scaled += down;
    }
    specs
}

/// The template compared for "same template", without the hash label.
pub fn template_without_hash(t: Option<&PodTemplateSpec>) -> serde_json::Value {
    let mut t = t.cloned().unwrap_or_default();
    if let Some(m) = t.metadata.as_mut()
        && let Some(l) = m.labels.as_mut()
    {
        l.remove(POD_TEMPLATE_HASH);
        if l.is_empty() {
            m.labels = None;
        }
    }
    let mut v = serde_json::to_value(t).unwrap_or_default();
    strip_empty(&mut v);
    v
}

/// Drops nulls, empty objects and empty arrays, so semantically equal
/// templates compare equal whatever defaults a round trip added.
fn strip_empty(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for x in m.values_mut() {
                strip_empty(x);
            }
            m.retain(|_, x| {
                !(x.is_null()
                    || x.as_object().is_some_and(|o| o.is_empty())
                    || x.as_array().is_some_and(|a| a.is_empty()))
            });
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_empty),
        _ => {}
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// Upstream's `SetDeploymentCondition`: same status and reason change
/// nothing; same status keeps lastTransitionTime.
fn set_condition(conds: &mut Vec<DeploymentCondition>, mut c: DeploymentCondition) {
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: i64,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(util::time_of(now)),
        last_transition_time: Some(util::time_of(now)),
    }
}

fn has_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

/// Upstream's `calculateStatus` plus `syncRolloutStatus`'s Progressing
/// condition. `new_rs` is the index of the new ReplicaSet in `rss`.
pub fn rollout_status(
    d: &Deployment,
    rss: &[&ReplicaSet],
    new_rs: Option<usize>,
    max_unavailable: i32,
    now: i64,
) -> DeploymentStatus {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let spec_total: i32 = rss
        .iter()
        .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        .sum();
    let available: i32 = rss
        .iter()
        .map(|r| st(r).available_replicas.unwrap_or(0))
        .sum();
    let old = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(rss.iter().map(|r| st(r).replicas).sum()),
        updated_replicas: nz(new_rs.map(|i| st(rss[i]).replicas).unwrap_or(0)),
        ready_replicas: nz(rss.iter().map(|r| st(r).ready_replicas.unwrap_or(0)).sum()),
        available_replicas: nz(available),
        unavailable_replicas: nz((spec_total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: None,
    };
    let mut conds = status.conditions.take().unwrap_or_default();
    if available >= replicas - max_unavailable {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut conds,
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    let name = d.name_any();
    let rs_name = new_rs.map(|i| rss[i].name_any());
    let current = conds.iter().find(|c| c.type_ == "Progressing").cloned();
    let g = |o: Option<i32>| o.unwrap_or(0);
    let complete_deploy = g(status.updated_replicas) == replicas
        && g(status.replicas) == replicas
        && g(status.available_replicas) == replicas
        && status.observed_generation >= d.metadata.generation;
    if !has_deadline(d) {
        conds.retain(|c| c.type_ != "Progressing");
    } else {
        let is_complete = g(status.replicas) == g(status.updated_replicas)
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        if !is_complete {
            let progressing = g(status.updated_replicas) > g(old.updated_replicas)
                || g(status.replicas) - g(status.updated_replicas)
                    < g(old.replicas) - g(old.updated_replicas)
                || g(status.ready_replicas) > g(old.ready_replicas)
                || g(status.available_replicas) > g(old.available_replicas);
            if complete_deploy {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has successfully progressed."),
                    None => format!("Deployment \"{name}\" has successfully progressed."),
                };
                set_condition(
                    &mut conds,
                    condition("Progressing", "True", "NewReplicaSetAvailable", msg, now),
                );
            } else if progressing {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" is progressing."),
                    None => format!("Deployment \"{name}\" is progressing."),
                };
                let mut c = condition("Progressing", "True", "ReplicaSetUpdated", msg, now);
                if let Some(cur) = &current
                    && cur.status == "True"
                {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                conds.retain(|x| x.type_ != "Progressing");
                conds.push(c);
            } else if timed_out(d, current.as_ref(), now) {
                let msg = match &rs_name {
                    Some(n) => format!("ReplicaSet \"{n}\" has timed out progressing."),
                    None => format!("Deployment \"{name}\" has timed out progressing."),
                };
                set_condition(
                    &mut conds,
                    condition("Progressing", "False", "ProgressDeadlineExceeded", msg, now),
                );
            }
        }
    }
    status.conditions = (!conds.is_empty()).then_some(conds);
    status
}

fn timed_out(d: &Deployment, progressing: Option<&DeploymentCondition>, now: i64) -> bool {
    let Some(c) = progressing else { return false };
    match c.reason.as_deref() {
        Some("NewReplicaSetAvailable") => false,
        Some("ProgressDeadlineExceeded") => true,
        _ => {
            let secs = d
                .spec
                .as_ref()
                .and_then(|s| s.progress_deadline_seconds)
                .unwrap_or(600);
            let from = c
                .last_update_time
                .as_ref()
                .map(util::time_ms)
                .unwrap_or(now);
            from + i64::from(secs) * 1000 < now
        }
    }
}

/// When the progress deadline of `d` runs out, if it is running.
fn deadline_in(d: &Deployment, now: i64) -> Option<Duration> {
    if !has_deadline(d) {
        return None;
    }
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Progressing")?;
    if c.reason.as_deref() != Some("ReplicaSetUpdated")
        && c.reason.as_deref() != Some("NewReplicaSetCreated")
    {
        return None;
    }
    let secs = d.spec.as_ref()?.progress_deadline_seconds?;
    let at = c.last_update_time.as_ref().map(util::time_ms)? + i64::from(secs) * 1000 + 1000;
    Some(Duration::from_millis((at - now).max(100) as u64))
}

// ------------------------------------------------------------ driver

impl State {
    async fn sync_all(&mut self) -> Result<Option<Duration>, Error> {
        let mut ds = self.deploys.state();
        ds.sort_by_key(|d| (d.namespace(), d.name_any()));
        let mut next: Option<Duration> = None;
        let mut first_err = None;
        for d in ds {
            match self.sync(&d).await {
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

    async fn sync(&mut self, d: &Arc<Deployment>) -> Result<Option<Duration>, Error> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.uid().unwrap_or_default();
        let lookup = lookup_in(&self.rss, &ns);
        if !self.exp.satisfied(&uid, &lookup) {
            return Ok(None);
        }
        let Some(spec) = d.spec.as_ref() else {
            return Ok(None);
        };
        let selector =
            Selector::try_from(spec.selector.clone()).map_err(|e| Error::Invalid(e.to_string()))?;
        if selector.selects_all() {
            // upstream refuses to act on a selector that selects everything
            return Ok(None);
        }
        let mut rss: Vec<ReplicaSet> = self
            .rss
            .state()
            .iter()
            .filter(|r| {
                r.namespace().as_deref() == Some(&ns)
                    && controlled_by(r.metadata.owner_references.as_ref(), &uid)
            })
            .map(|r| (**r).clone())
            .collect();
        rss.sort_by_key(|r| {
            (
                r.metadata.creation_timestamp.as_ref().map(util::time_ms),
                r.name_any(),
            )
        });
        let now = util::now_ms();
        let strat = strategy(d).map_err(Error::Invalid)?;
        let max_unavailable = match strat {
            Strategy::Rolling { unavailable, .. } => unavailable,
            Strategy::Recreate => 0,
        };
        let template = template_without_hash(Some(&spec.template));
        let new_idx = rss.iter().position(|r| {
            template_without_hash(r.spec.as_ref().and_then(|s| s.template.as_ref())) == template
        });
        if d.metadata.deletion_timestamp.is_some() || spec.paused == Some(true) {
            return self
                .write_status(d, &rss, new_idx, max_unavailable, now)
                .await;
        }
        let replicas = spec.replicas.unwrap_or(1);
        let max_old_rev = rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, r)| revision_of(r))
            .max()
            .unwrap_or(0);
        let new_rev = max_old_rev + 1;
        let new_idx = match new_idx {
            Some(i) => {
                // keep the new ReplicaSet's revision the highest (rollout undo)
                if revision_of(&rss[i]) < new_rev
                    || rss[i].spec.as_ref().and_then(|s| s.min_ready_seconds)
                        != spec.min_ready_seconds
                {
                    let mut ann = deployment_annotations(d);
                    let old_rev = revision_of(&rss[i]);
                    if old_rev > 0 && old_rev < new_rev {
                        let mut hist: Vec<String> = rss[i]
                            .annotations()
                            .get(REVISION_HISTORY)
                            .map(|h| h.split(',').map(str::to_string).collect())
                            .unwrap_or_default();
                        hist.push(old_rev.to_string());
                        ann.insert(REVISION_HISTORY.into(), hist.join(","));
                    }
                    ann.insert(REVISION.into(), new_rev.max(old_rev).to_string());
                    let patch = json!({"metadata": {"annotations": ann, "resourceVersion": rss[i].resource_version()}, "spec": {"minReadySeconds": spec.min_ready_seconds}});
                    let updated = self.patch_rs(&ns, &rss[i].name_any(), patch).await?;
                    self.exp.expect(
                        &uid,
                        Pending::Seen {
                            name: updated.name_any(),
                            rv: rv_of(&updated),
                        },
                    );
                    rss[i] = updated;
                }
                Some(i)
            }
            None if strat == Strategy::Recreate => None,
            None => {
                let total: i32 = rss
                    .iter()
                    .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0))
                    .sum();
                let n = new_rs_replicas(strat, replicas, total, 0);
                let Some(rs) = self.create_rs(d, new_rev, n, now).await? else {
                    return Ok(Some(Duration::from_millis(50)));
                };
                rss.push(rs);
                return self
                    .finish(d, &rss, Some(rss.len() - 1), max_unavailable, now)
                    .await;
            }
        };
        self.set_deployment_revision(d, new_idx.map(|i| revision_of(&rss[i])).unwrap_or(new_rev))
            .await?;
        match strat {
            Strategy::Recreate => self.recreate(d, rss, new_idx, new_rev, now).await,
            Strategy::Rolling { .. } => {
                self.rolling(
                    d,
                    rss,
                    new_idx.expect("rolling creates the new RS"),
                    strat,
                    max_unavailable,
                    now,
                )
                .await
            }
        }
    }

    async fn rolling(
        &mut self,
        d: &Deployment,
        mut rss: Vec<ReplicaSet>,
        new_idx: usize,
        strat: Strategy,
        max_unavailable: i32,
        now: i64,
    ) -> Result<Option<Duration>, Error> {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let spec_of = |r: &ReplicaSet| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let new_spec = spec_of(&rss[new_idx]);
        // reconcileNewReplicaSet
        if new_spec != replicas {
            let target = if new_spec > replicas {
                replicas
            } else {
                let total: i32 = rss.iter().map(spec_of).sum();
                new_rs_replicas(strat, replicas, total, new_spec)
            };
            if target != new_spec {
                self.scale(d, &mut rss[new_idx], target, strat).await?;
                return self
                    .finish(d, &rss, Some(new_idx), max_unavailable, now)
                    .await;
            }
        }
        // reconcileOldReplicaSets
        let old_idx: Vec<usize> = (0..rss.len()).filter(|i| *i != new_idx).collect();
        let counts = |r: &ReplicaSet| RsCounts {
            spec: spec_of(r),
            available: r
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
        };
        let old_counts: Vec<RsCounts> = old_idx.iter().map(|&i| counts(&rss[i])).collect();
        let plan = scale_down_old(
            replicas,
            max_unavailable,
            counts(&rss[new_idx]),
            &old_counts,
        );
        let mut scaled = false;
        for (k, &i) in old_idx.iter().enumerate() {
            if plan[k] != old_counts[k].spec {
                self.scale(d, &mut rss[i], plan[k], strat).await?;
                scaled = true;
            }
        }
        if !scaled {
            let status = rollout_status(
                d,
                &rss.iter().collect::<Vec<_>>(),
                Some(new_idx),
                max_unavailable,
                now,
            );
            if complete(d, &status) {
                self.cleanup(d, &rss, Some(new_idx)).await?;
            }
        }
        self.finish(d, &rss, Some(new_idx), max_unavailable, now)
            .await
    }

    async fn recreate(
        &mut self,
        d: &Deployment,
        mut rss: Vec<ReplicaSet>,
        new_idx: Option<usize>,
        new_rev: i64,
        now: i64,
    ) -> Result<Option<Duration>, Error> {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let spec_of = |r: &ReplicaSet| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let mut scaled = false;
        for (i, rs) in rss.iter_mut().enumerate() {
            if Some(i) != new_idx && spec_of(rs) > 0 {
                self.scale(d, rs, 0, Strategy::Recreate).await?;
                scaled = true;
            }
        }
        if scaled {
            return self.finish(d, &rss, new_idx, 0, now).await;
        }
        // oldPodsRunning: any Pod of an old ReplicaSet not Succeeded/Failed
        let old_uids: Vec<String> = rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new_idx)
            .map(|(_, r)| r.uid().unwrap_or_default())
            .collect();
        let running = self.pods.state().iter().any(|p| {
            util::controller_ref(p.metadata.owner_references.as_ref())
                .is_some_and(|r| old_uids.contains(&r.uid))
                && !util::is_terminal(p)
        });
        if running {
            return self.finish(d, &rss, new_idx, 0, now).await;
        }
        let new_idx = match new_idx {
            Some(i) => i,
            None => {
                let Some(rs) = self.create_rs(d, new_rev, replicas, now).await? else {
                    return Ok(Some(Duration::from_millis(50)));
                };
                self.set_deployment_revision(d, new_rev).await?;
                rss.push(rs);
                return self.finish(d, &rss, Some(rss.len() - 1), 0, now).await;
            }
        };
        if spec_of(&rss[new_idx]) != replicas {
            self.scale(d, &mut rss[new_idx], replicas, Strategy::Recreate)
                .await?;
        } else {
            let status = rollout_status(d, &rss.iter().collect::<Vec<_>>(), Some(new_idx), 0, now);
            if complete(d, &status) {
                self.cleanup(d, &rss, Some(new_idx)).await?;
            }
        }
        self.finish(d, &rss, Some(new_idx), 0, now).await
    }

    async fn finish(
        &mut self,
        d: &Deployment,
        rss: &[ReplicaSet],
        new_idx: Option<usize>,
        max_unavailable: i32,
        now: i64,
    ) -> Result<Option<Duration>, Error> {
        self.write_status(d, rss, new_idx, max_unavailable, now)
            .await
    }

    async fn write_status(
        &mut self,
        d: &Deployment,
        rss: &[ReplicaSet],
        new_idx: Option<usize>,
        max_unavailable: i32,
        now: i64,
    ) -> Result<Option<Duration>, Error> {
        let status = rollout_status(
            d,
            &rss.iter().collect::<Vec<_>>(),
            new_idx,
            max_unavailable,
            now,
        );
        if d.status.as_ref() != Some(&status) {
            let mut new = d.clone();
            new.status = Some(status);
            new.metadata.managed_fields = None;
            let api: Api<Deployment> =
                Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
            match api
                .replace_status(&d.name_any(), &PostParams::default(), &new)
                .await
            {
                Ok(written) => return Ok(deadline_in(&written, now)),
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {
                    return Ok(Some(Duration::from_millis(50)));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(deadline_in(d, now))
    }

    async fn patch_rs(
        &self,
        ns: &str,
        name: &str,
        patch: serde_json::Value,
    ) -> Result<ReplicaSet, Error> {
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), ns);
        Ok(api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?)
    }

    async fn scale(
        &mut self,
        d: &Deployment,
        rs: &mut ReplicaSet,
        to: i32,
        strat: Strategy,
    ) -> Result<(), Error> {
        let from = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let surge = match strat {
            Strategy::Rolling { surge, .. } => surge,
            Strategy::Recreate => 0,
        };
        let patch = json!({
            "metadata": {"resourceVersion": rs.resource_version(), "annotations": {
                DESIRED_REPLICAS: replicas.to_string(), MAX_REPLICAS: (replicas + surge).to_string()}},
            "spec": {"replicas": to},
        });
        let updated = self
            .patch_rs(&rs.namespace().unwrap_or_default(), &rs.name_any(), patch)
            .await?;
        self.exp.expect(
            &d.uid().unwrap_or_default(),
            Pending::Seen {
                name: updated.name_any(),
                rv: rv_of(&updated),
            },
        );
        let dir = if to > from { "up" } else { "down" };
        let msg = format!(
            "Scaled {dir} replica set {} from {from} to {to}",
            rs.name_any()
        );
        record_event(
            &self.ctx.client,
            d,
            "Normal",
            "ScalingReplicaSet",
            &msg,
            COMPONENT,
        )
        .await;
        *rs = updated;
        Ok(())
    }

    /// Creates the new ReplicaSet; None when its name is taken by another
    /// template (the collision count is bumped and the pass retried).
    async fn create_rs(
        &mut self,
        d: &Deployment,
        revision: i64,
        replicas: i32,
        now: i64,
    ) -> Result<Option<ReplicaSet>, Error> {
        let ns = d.namespace().unwrap_or_default();
        let spec = d.spec.as_ref().expect("checked by the caller");
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(&template_without_hash(Some(&spec.template)), collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_default()
            .labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_default()
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let surge = match strategy(d).map_err(Error::Invalid)? {
            Strategy::Rolling { surge, .. } => surge,
            Strategy::Recreate => 0,
        };
        let want = spec.replicas.unwrap_or(1);
        let mut ann = deployment_annotations(d);
        ann.insert(REVISION.into(), revision.to_string());
        ann.insert(DESIRED_REPLICAS.into(), want.to_string());
        ann.insert(MAX_REPLICAS.into(), (want + surge).to_string());
        let name = format!("{}-{}", d.name_any(), hash);
        let rs = json!({
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": labels, "annotations": ann, "ownerReferences": [controller_reference(d)]},
            "spec": {"replicas": replicas, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": template},
        });
        let rs: ReplicaSet = serde_json::from_value(rs)?;
        let api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &ns);
        match api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.exp.expect(
                    &d.uid().unwrap_or_default(),
                    Pending::Seen {
                        name: created.name_any(),
                        rv: rv_of(&created),
                    },
                );
                let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
                record_event(
                    &self.ctx.client,
                    d,
                    "Normal",
                    "ScalingReplicaSet",
                    &msg,
                    COMPONENT,
                )
                .await;
                // the Progressing condition says a new ReplicaSet was created
                let mut conds = d
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.clone())
                    .unwrap_or_default();
                if has_deadline(d) {
                    let c = condition(
                        "Progressing",
                        "True",
                        "NewReplicaSetCreated",
                        format!("Created new replica set \"{name}\""),
                        now,
                    );
                    conds.retain(|x| x.type_ != "Progressing");
                    conds.push(c);
                    let mut new = d.clone();
                    let st = new.status.get_or_insert_default();
                    st.conditions = Some(conds);
                    new.metadata.managed_fields = None;
                    let dapi: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &ns);
                    if let Err(e) = dapi
                        .replace_status(&d.name_any(), &PostParams::default(), &new)
                        .await
                        && !is_code(&e, 409)
                    {
                        return Err(e.into());
                    }
                }
                self.set_deployment_revision(d, revision).await?;
                Ok(Some(created))
            }
            Err(e) if is_code(&e, 409) => {
                let existing = api.get(&name).await?;
                let ours = controlled_by(
                    existing.metadata.owner_references.as_ref(),
                    &d.uid().unwrap_or_default(),
                ) && template_without_hash(
                    existing.spec.as_ref().and_then(|s| s.template.as_ref()),
                ) == template_without_hash(Some(&spec.template));
                if ours {
                    self.exp.expect(
                        &d.uid().unwrap_or_default(),
                        Pending::Seen {
                            name: existing.name_any(),
                            rv: rv_of(&existing),
                        },
                    );
                    return Ok(None);
                }
                let mut new = d.clone();
                let st = new.status.get_or_insert_default();
                st.collision_count = Some(collision.unwrap_or(0) + 1);
                new.metadata.managed_fields = None;
                let dapi: Api<Deployment> = Api::namespaced(self.ctx.client.clone(), &ns);
                dapi.replace_status(&d.name_any(), &PostParams::default(), &new)
                    .await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn set_deployment_revision(&self, d: &Deployment, revision: i64) -> Result<(), Error> {
        if d.annotations().get(REVISION).map(String::as_str) == Some(revision.to_string().as_str())
        {
            return Ok(());
        }
        let api: Api<Deployment> =
            Api::namespaced(self.ctx.client.clone(), &d.namespace().unwrap_or_default());
        let patch = json!({"metadata": {"annotations": {REVISION: revision.to_string()}}});
        match api
            .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// revisionHistoryLimit: deletes the oldest revisions beyond the limit
    /// that are scaled to 0 and settled.
    async fn cleanup(
        &self,
        d: &Deployment,
        rss: &[ReplicaSet],
        new_idx: Option<usize>,
    ) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut old: Vec<&ReplicaSet> = rss
            .iter()
            .enumerate()
            .filter(|(i, r)| Some(*i) != new_idx && r.metadata.deletion_timestamp.is_none())
            .map(|(_, r)| r)
            .collect();
        let diff = old.len() as i32 - limit;
        if diff <= 0 {
            return Ok(());
        }
        old.sort_by_key(|r| {
            (
                revision_of(r),
                r.metadata.creation_timestamp.as_ref().map(util::time_ms),
            )
        });
        for rs in old.into_iter().take(diff as usize) {
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0
                || rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) != 0
                || rs.metadata.generation > st.observed_generation
            {
                continue;
            }
            let api: Api<ReplicaSet> =
                Api::namespaced(self.ctx.client.clone(), &rs.namespace().unwrap_or_default());
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.uid(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&rs.name_any(), &dp).await {
                Ok(_) => {}
                Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// Upstream's `DeploymentComplete`.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    s.updated_replicas.unwrap_or(0) == replicas
        && s.replicas.unwrap_or(0) == replicas
        && s.available_replicas.unwrap_or(0) == replicas
        && s.observed_generation >= d.metadata.generation
}

/// The Deployment's annotations a ReplicaSet inherits (upstream skips
/// kubectl's last-applied configuration and its own bookkeeping).
fn deployment_annotations(d: &Deployment) -> BTreeMap<String, String> {
    let skip = [
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        "deprecated.deployment.rollback.to",
    ];
    d.annotations()
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_as_upstream() {
        // deployment/util TestResolveFenceposts
        type Case = (
            Option<IntOrString>,
            Option<IntOrString>,
            i32,
            Result<(i32, i32), ()>,
        );
        let cases: &[Case] = &[
            (Some(is("0")), Some(is("0")), 0, Err(())),
            (Some(is("0%")), Some(is("0%")), 0, Ok((0, 1))),
            (Some(is("39%")), Some(is("39%")), 10, Ok((4, 3))),
            (Some(is("oops")), Some(is("39%")), 10, Err(())),
            (Some(is("55%")), Some(is("urg")), 10, Err(())),
            (None, Some(is("39%")), 10, Ok((0, 3))),
            (Some(is("39%")), None, 10, Ok((4, 0))),
            (None, None, 10, Ok((0, 1))),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                5,
                Ok((0, 1)),
            ),
            (Some(is("30%")), Some(is("30%")), 1, Ok((1, 0))),
            (Some(is("25%")), Some(is("25%")), 3, Ok((1, 0))),
        ];
        for (s, u, d, want) in cases {
            let got = resolve_fenceposts(s.as_ref(), u.as_ref(), *d).map_err(|_| ());
            assert_eq!(got, *want, "{s:?} {u:?} {d}");
        }
    }

    #[test]
    fn new_rs_replicas_as_upstream() {
        // deployment TestNewRSNewReplicas (rolling cases) and Recreate
        let r = |surge| Strategy::Rolling {
            surge,
            unavailable: 0,
        };
        assert_eq!(new_rs_replicas(r(1), 1, 5, 0), 0, "already above max");
        assert_eq!(new_rs_replicas(r(1), 5, 5, 0), 1, "one surge pod");
        assert_eq!(new_rs_replicas(r(3), 1, 1, 0), 1, "bounded by replicas");
        assert_eq!(new_rs_replicas(r(0), 5, 4, 1), 2);
        assert_eq!(new_rs_replicas(Strategy::Recreate, 5, 10, 0), 5);
    }

    #[test]
    fn rolling_steps() {
        // 3 replicas, maxSurge 1, maxUnavailable 0: the new RS grows by one,
        // the old one shrinks only as new replicas turn available.
        let old = |spec, available| RsCounts { spec, available };
        assert_eq!(
            scale_down_old(3, 0, old(1, 0), &[old(3, 3)]),
            vec![3],
            "new not available: nothing"
        );
        assert_eq!(scale_down_old(3, 0, old(1, 1), &[old(3, 3)]), vec![2]);
        assert_eq!(scale_down_old(3, 0, old(3, 3), &[old(1, 1)]), vec![0]);
        // maxUnavailable 1 allows one old pod to go at once
        assert_eq!(scale_down_old(3, 1, old(0, 0), &[old(3, 3)]), vec![2]);
        // unhealthy old replicas are cleaned up first, oldest RS first
        assert_eq!(
            scale_down_old(3, 1, old(1, 0), &[old(2, 0), old(2, 2)]),
            vec![0, 2]
        );
        // nothing old: nothing to do
        assert_eq!(scale_down_old(3, 1, old(3, 0), &[old(0, 0)]), vec![0]);
    }

    #[test]
    fn strategy_resolution() {
        let d = |v: serde_json::Value| -> Deployment { serde_json::from_value(v).unwrap() };
        let s = strategy(&d(
            json!({"spec": {"replicas": 1, "selector": {}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "30%", "maxUnavailable": "30%"}}}}),
        ));
        assert_eq!(
            s,
            Ok(Strategy::Rolling {
                surge: 1,
                unavailable: 0
            }),
            "the upstream sample: one surge pod, none unavailable"
        );
        let s = strategy(&d(json!({"spec": {"replicas": 10, "selector": {}}})));
        assert_eq!(
            s,
            Ok(Strategy::Rolling {
                surge: 3,
                unavailable: 2
            }),
            "25% defaults"
        );
        let s = strategy(&d(
            json!({"spec": {"replicas": 2, "selector": {}, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 5}}}}),
        ));
        assert_eq!(
            s,
            Ok(Strategy::Rolling {
                surge: 0,
                unavailable: 2
            }),
            "capped at replicas"
        );
        let s = strategy(&d(
            json!({"spec": {"replicas": 2, "selector": {}, "strategy": {"type": "Recreate"}}}),
        ));
        assert_eq!(s, Ok(Strategy::Recreate));
    }

    #[test]
    fn status_conditions() {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "d", "generation": 2},
            "spec": {"replicas": 2, "selector": {}, "progressDeadlineSeconds": 10},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated", "lastUpdateTime": "2025-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let rs = |name: &str, spec: i32, replicas: i32, avail: i32| -> ReplicaSet {
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"replicas": spec, "selector": {}},
                "status": {"replicas": replicas, "readyReplicas": avail, "availableReplicas": avail}})).unwrap()
        };
        let t0 = 1735689600000i64;
        let new = rs("d-new", 2, 2, 2);
        let s = rollout_status(&d, &[&new], Some(0), 0, t0 + 1000);
        assert_eq!(s.observed_generation, Some(2));
        assert!(complete(&d, &s));
        let c = s.conditions.unwrap();
        let prog = c.iter().find(|c| c.type_ == "Progressing").unwrap();
        assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
        assert_eq!(
            prog.message.as_deref(),
            Some("ReplicaSet \"d-new\" has successfully progressed.")
        );
        let av = c.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!(
            (av.status.as_str(), av.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );
        // no progress past the deadline: timed out
        let stuck = rs("d-new", 2, 2, 0);
        let s = rollout_status(&d, &[&stuck], Some(0), 0, t0 + 11_000);
        let c = s.conditions.unwrap();
        let prog = c.iter().find(|c| c.type_ == "Progressing").unwrap();
        assert_eq!(
            (prog.status.as_str(), prog.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
        let av = c.iter().find(|c| c.type_ == "Available").unwrap();
        assert_eq!(av.reason.as_deref(), Some("MinimumReplicasUnavailable"));
        // still within the deadline: unchanged
        let s = rollout_status(&d, &[&stuck], Some(0), 0, t0 + 5_000);
        let prog = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(prog.reason.as_deref(), Some("ReplicaSetUpdated"));
    }

    #[test]
    fn template_equality_ignores_hash_and_defaults() {
        let a: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "x", "pod-template-hash": "abc"}}, "spec": {"containers": [{"name": "c"}]}})).unwrap();
        let b: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "env": []}]}})).unwrap();
        assert_eq!(
            template_without_hash(Some(&a)),
            template_without_hash(Some(&b))
        );
        let c: PodTemplateSpec = serde_json::from_value(
            json!({"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .unwrap();
        assert_ne!(
            template_without_hash(Some(&a)),
            template_without_hash(Some(&c))
        );
    }
}
