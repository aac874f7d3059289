//! kube-scheduler's part: binds Pods that name the default scheduler (or
//! none) and have no Node, to the fitting Node with the most free memory
//! (ties by name), through `pods/binding`. A Pod no Node fits gets
//! `PodScheduled=False`, reason `Unschedulable`, upstream's message and a
//! `FailedScheduling` Event, and is retried whenever Nodes or Pods change.

use super::scheduling::{self, NodeUsage, Rejection};
use super::util::{self, is_terminal, pod_condition};
use super::{Caches, Ctx, Error, is_code, record_event};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The component name in Events and `schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";

struct State {
    ctx: Ctx,
    nodes: Store<Node>,
    pods: Store<Pod>,
    /// Pods bound by this scheduler that the cache does not show bound yet
    /// (upstream's "assumed" Pods), by uid.
    assumed: HashMap<String, (Arc<Pod>, String)>,
}

/// Runs the scheduler until `cancel`.
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
        assumed: HashMap::new(),
    };
    caches.drive("scheduler", cancel, st).await;
}

impl super::Reconciler for State {
    fn pass(&mut self) -> BoxFuture<'_, Result<Option<Duration>, Error>> {
        Box::pin(self.schedule_all())
    }
}

/// Whether the scheduler is responsible for a Pod.
pub fn wants(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let sched = spec.scheduler_name.as_deref().unwrap_or("");
    (sched.is_empty() || sched == SCHEDULER_NAME)
        && spec.node_name.as_deref().unwrap_or("").is_empty()
        && pod.metadata.deletion_timestamp.is_none()
        && !is_terminal(pod)
}

/// The Node a set of candidates' scores picks: highest score, then name.
pub fn pick(scored: &[(i64, &str)]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, (score, name)) in scored.iter().enumerate() {
        best = match best {
            Some(b)
                if (scored[b].0, std::cmp::Reverse(scored[b].1))
                    >= (*score, std::cmp::Reverse(*name)) =>
            {
                Some(b)
            }
            _ => Some(i),
        };
    }
    best
}

fn add(
    pod: &Arc<Pod>,
    i: usize,
    usage: &mut [NodeUsage],
    nonzero_mem: &mut [i128],
    placed: &mut Vec<(Arc<Pod>, usize)>,
) {
    let r = util::pod_requests(pod);
    usage[i].requested.milli_cpu += r.milli_cpu;
    usage[i].requested.memory += r.memory;
    usage[i].pods += 1;
    nonzero_mem[i] += if r.memory == 0 {
        scheduling::DEFAULT_MEMORY_REQUEST
    } else {
        r.memory
    };
    placed.push((pod.clone(), i));
}

impl State {
    async fn schedule_all(&mut self) -> Result<Option<Duration>, Error> {
        let mut nodes: Vec<Arc<Node>> = self.nodes.state();
        nodes.sort_by_key(|n| n.name_any());
        let all = self.pods.state();
        let by_uid: HashMap<String, &Arc<Pod>> = all
            .iter()
            .map(|p| (p.uid().unwrap_or_default(), p))
            .collect();
        // Forget assumed Pods the cache now shows bound, or gone.
        self.assumed.retain(|uid, _| {
            by_uid.get(uid).is_some_and(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_deref())
                    .unwrap_or("")
                    .is_empty()
            })
        });
        let node_idx: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name_any(), i))
            .collect();
        let mut usage: Vec<NodeUsage> = vec![NodeUsage::default(); nodes.len()];
        let mut nonzero_mem: Vec<i128> = vec![0; nodes.len()];
        let mut placed: Vec<(Arc<Pod>, usize)> = Vec::new();
        for p in &all {
            if is_terminal(p) {
                continue;
            }
            let node = p
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            if let Some(&i) = node_idx.get(node) {
                add(p, i, &mut usage, &mut nonzero_mem, &mut placed);
            }
        }
        for (pod, node) in self.assumed.values() {
            if let Some(&i) = node_idx.get(node) {
                add(pod, i, &mut usage, &mut nonzero_mem, &mut placed);
            }
        }
        let mut queue: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| wants(p) && !self.assumed.contains_key(&p.uid().unwrap_or_default()))
            .collect();
        queue.sort_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(util::time_ms),
                p.namespace(),
                p.name_any(),
            )
        });
        for pod in queue {
            let spec = pod.spec.as_ref().expect("wants() checked the spec");
            if let Some(what) = scheduling::unsupported(spec) {
                let msg = format!(
                    "the koupleless test scheduler does not implement {what}: refusing to place the Pod as if it were not set"
                );
                self.unschedulable(pod, &msg).await?;
                continue;
            }
            let placed_refs: Vec<(&Pod, &Node)> = placed
                .iter()
                .map(|(p, i)| (p.as_ref(), nodes[*i].as_ref()))
                .collect();
            let mut rejections: Vec<Rejection> = Vec::new();
            let mut fits: Vec<(i64, &str, usize)> = Vec::new();
            for (i, n) in nodes.iter().enumerate() {
                match scheduling::filter(pod, n, &usage[i], &placed_refs) {
                    Ok(()) => fits.push((
                        scheduling::least_allocated_memory_score(n, nonzero_mem[i], pod),
                        n.metadata.name.as_deref().unwrap_or(""),
                        i,
                    )),
                    Err(r) => rejections.push(r),
                }
            }
            let scored: Vec<(i64, &str)> = fits.iter().map(|(s, n, _)| (*s, *n)).collect();
            let Some(best) = pick(&scored) else {
                let msg = scheduling::fit_error(nodes.len(), &rejections);
                self.unschedulable(pod, &msg).await?;
                continue;
            };
            let i = fits[best].2;
            let node_name = nodes[i].name_any();
            drop(placed_refs);
            if self.bind(pod, &node_name).await? {
                add(pod, i, &mut usage, &mut nonzero_mem, &mut placed);
                self.assumed
                    .insert(pod.uid().unwrap_or_default(), ((*pod).clone(), node_name));
            }
        }
        Ok(None)
    }

    /// Binds; false when the Pod went away or was bound by someone else.
    async fn bind(&self, pod: &Pod, node: &str) -> Result<bool, Error> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let res: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &pod.name_any(), &PostParams::default(), &binding)
            .await;
        match res {
            Ok(_) => {
                let msg = format!(
                    "Successfully assigned {}/{} to {}",
                    ns,
                    pod.name_any(),
                    node
                );
                record_event(
                    &self.ctx.client,
                    pod,
                    "Normal",
                    "Scheduled",
                    &msg,
                    SCHEDULER_NAME,
                )
                .await;
                Ok(true)
            }
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Records why a Pod cannot be placed (once per distinct message, as the
    /// condition only changes when the message does).
    async fn unschedulable(&self, pod: &Pod, msg: &str) -> Result<(), Error> {
        let current = pod_condition(pod, "PodScheduled");
        if current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(msg)
        }) {
            return Ok(());
        }
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &ns);
        let transition = match current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .as_ref()
                .map(|t| json!(t))
                .unwrap_or_else(|| json!(util::now_rfc3339())),
            _ => json!(util::now_rfc3339()),
        };
        let patch = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": msg, "lastProbeTime": null, "lastTransitionTime": transition,
        }]}});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        record_event(
            &self.ctx.client,
            pod,
            "Warning",
            "FailedScheduling",
            msg,
            SCHEDULER_NAME,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick_highest_score_then_name() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&[(10, "b"), (20, "c"), (20, "a")]), Some(2));
        assert_eq!(pick(&[(0, "b"), (0, "a")]), Some(1));
        assert_eq!(pick(&[(5, "a"), (0, "b")]), Some(0));
    }

    #[test]
    fn wants_only_unbound_default_scheduled_pods() {
        let p = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        assert!(wants(&p(json!({"spec": {"containers": []}}))));
        assert!(wants(&p(
            json!({"spec": {"containers": [], "schedulerName": "default-scheduler"}})
        )));
        assert!(!wants(&p(
            json!({"spec": {"containers": [], "schedulerName": "other"}})
        )));
        assert!(!wants(&p(
            json!({"spec": {"containers": [], "nodeName": "n"}})
        )));
        assert!(!wants(&p(
            json!({"spec": {"containers": []}, "status": {"phase": "Failed"}})
        )));
        assert!(!wants(&p(
            json!({"metadata": {"deletionTimestamp": "2025-01-01T00:00:00Z"}, "spec": {"containers": []}})
        )));
    }
}
