//! Peer module Deployments (spec controller §5, opt-in with
//! `ENABLE_MODULE_REPLICAS_SYNC_WITH_BASE=true`): a Deployment labelled
//! `virtual-kubelet.koupleless.io/strategy=peer` keeps `spec.replicas` equal to the number of
//! Ready Nodes of its base cluster, so every base of the cluster runs the module once.
//!
//! Unlike upstream, a Node counts only while Ready=True, so a base that stops answering
//! lowers the count before its Node is deleted. The rule is pure ([`wanted_replicas`]); the
//! driver watches Nodes of any cluster and this env's module Deployments and writes only
//! differences (idempotent, so every replica may run it, as upstream).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::baseline::cluster_name_of;
use crate::labels;
use crate::metrics::Metrics;

/// `virtual-kubelet.koupleless.io/component` value on module Deployments.
pub const COMPONENT_MODULE_DEPLOYMENT: &str = "module-deployment";
/// Strategy label.
pub const STRATEGY: &str = "virtual-kubelet.koupleless.io/strategy";
/// [`STRATEGY`] value of peer Deployments.
pub const STRATEGY_PEER: &str = "peer";
/// `"true"` opts a Deployment out of replica control (upstream's reading of the name).
pub const REPLICAS_CONTROL: &str = "virtual-kubelet.koupleless.io/replicas-control";

fn label<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// Ready Nodes per base cluster (`base.koupleless.io/cluster-name`).
pub fn ready_per_cluster<'a>(nodes: impl IntoIterator<Item = &'a Node>) -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    for n in nodes {
        let Some(cluster) = label(&n.metadata, labels::BASE_CLUSTER_NAME) else {
            continue;
        };
        let ready = n.metadata.deletion_timestamp.is_none()
            && n.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        let e = out.entry(cluster.to_owned()).or_insert(0);
        if ready {
            *e += 1;
        }
    }
    out
}

/// The replicas a peer Deployment should have, or `None` when it is not under peer control.
pub fn wanted_replicas(d: &Deployment, ready: &BTreeMap<String, i32>) -> Option<i32> {
    if label(&d.metadata, STRATEGY) != Some(STRATEGY_PEER)
        || label(&d.metadata, REPLICAS_CONTROL) == Some("true")
    {
        return None;
    }
    let cluster = cluster_name_of(d).filter(|c| !c.is_empty())?;
    Some(ready.get(&cluster).copied().unwrap_or(0))
}

/// The replica patches to write: `(namespace, name, replicas)`.
pub fn replica_changes(
    deployments: &[std::sync::Arc<Deployment>],
    nodes: &[std::sync::Arc<Node>],
) -> Vec<(String, String, i32)> {
    let ready = ready_per_cluster(nodes.iter().map(|n| n.as_ref()));
    deployments
        .iter()
        .filter_map(|d| {
            let want = wanted_replicas(d, &ready)?;
            let have = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            (want != have).then(|| {
                (
                    d.metadata.namespace.clone().unwrap_or_default(),
                    d.metadata.name.clone().unwrap_or_default(),
                    want,
                )
            })
        })
        .collect()
}

/// Runs until `cancel`: keeps peer Deployments' replicas in line with Ready bases.
pub async fn run(
    client: kube::Client,
    env: String,
    metrics: std::sync::Arc<Metrics>,
    api_timeout: Duration,
    cancel: CancellationToken,
) {
    let (nodes, node_writer): (Store<Node>, _) = reflector::store();
    let (deps, dep_writer): (Store<Deployment>, _) = reflector::store();
    let node_events = reflector::reflector(
        node_writer,
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().labels(labels::BASE_CLUSTER_NAME),
        ),
    )
    .default_backoff();
    let dep_events = reflector::reflector(
        dep_writer,
        watcher(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={COMPONENT_MODULE_DEPLOYMENT},{}={env}",
                labels::COMPONENT,
                labels::ENV
            )),
        ),
    )
    .default_backoff();
    let mut node_events = std::pin::pin!(node_events);
    let mut dep_events = std::pin::pin!(dep_events);
    let mut synced = (false, false);
    // Changes come in bursts (every Node status write); look at most every 200 ms.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(ev) = node_events.next() => {
                if let Ok(watcher::Event::InitDone) = ev { synced.0 = true; }
                dirty = true;
            }
            Some(ev) = dep_events.next() => {
                if let Ok(watcher::Event::InitDone) = ev { synced.1 = true; }
                dirty = true;
            }
            _ = tick.tick(), if dirty && synced == (true, true) => {
                dirty = false;
                for (ns, name, replicas) in replica_changes(&deps.state(), &nodes.state()) {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
                    let patch = json!({"spec": {"replicas": replicas}});
                    let timer = metrics.api("deployment", "patch");
                    let (pp, body) = (PatchParams::default(), Patch::Merge(&patch));
                    let fut = api.patch(&name, &pp, &body);
                    match tokio::time::timeout(api_timeout, fut).await.map(|r| timer.done(r)) {
                        Ok(Ok(_)) => tracing::info!(deployment = %format!("{ns}/{name}"), replicas, "peer replicas set"),
                        Ok(Err(e)) => {
                            tracing::warn!(deployment = %name, error = %e, "could not set peer replicas; will retry");
                            dirty = true;
                        }
                        Err(_) => dirty = true,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn node(name: &str, cluster: Option<&str>, ready: &str) -> Arc<Node> {
        let labels = cluster.map_or(json!({}), |c| json!({"base.koupleless.io/cluster-name": c}));
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap(),
        )
    }

    fn deployment(name: &str, labels: serde_json::Value, replicas: i32) -> Arc<Deployment> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": labels},
                "spec": {"replicas": replicas, "selector": {}, "template": {"spec": {"containers": []}}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn peer_replicas_table() {
        let nodes = [
            node("a", Some("c1"), "True"),
            node("b", Some("c1"), "True"),
            node("c", Some("c1"), "Unknown"),
            node("d", Some("c2"), "True"),
            node("e", None, "True"),
        ];
        let peer = |cluster: &str| {
            json!({"virtual-kubelet.koupleless.io/strategy": "peer",
                "base.koupleless.io/cluster-name": cluster})
        };
        let mut opted_out = peer("c1");
        opted_out["virtual-kubelet.koupleless.io/replicas-control"] = json!("true");
        let deps = [
            deployment("two-ready", peer("c1"), 1),
            deployment("already", peer("c2"), 1),
            deployment("no-bases", peer("c3"), 2),
            deployment(
                "not-peer",
                json!({"base.koupleless.io/cluster-name": "c1"}),
                5,
            ),
            deployment("opted-out", opted_out, 5),
            deployment(
                "no-cluster",
                json!({"virtual-kubelet.koupleless.io/strategy": "peer"}),
                5,
            ),
        ];
        let changes = replica_changes(&deps, &nodes);
        let got: Vec<(&str, i32)> = changes.iter().map(|(_, n, r)| (n.as_str(), *r)).collect();
        assert_eq!(got, [("two-ready", 2), ("no-bases", 0)]);
    }
}
