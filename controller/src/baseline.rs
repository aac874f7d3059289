//! The baseline: which modules a base should run, answered to `queryBaseline` (spec
//! controller §3.8). The selection is a pure function over Deployments; only the listing is
//! I/O.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Container;
use koupleless_protocol::{BizSpec, Env};
use kube::Api;
use kube::api::ListParams;

use crate::labels;
use crate::metrics::Metrics;

/// The cluster a Deployment targets: its `base.koupleless.io/cluster-name` label, else the
/// template's nodeSelector entry, else the first value of the first required node-affinity
/// expression with that key (upstream order).
pub fn cluster_name_of(d: &Deployment) -> Option<String> {
    let key = labels::BASE_CLUSTER_NAME;
    if let Some(v) = d.metadata.labels.as_ref().and_then(|l| l.get(key)) {
        return Some(v.clone());
    }
    let pod = d.spec.as_ref()?.template.spec.as_ref()?;
    if let Some(v) = pod.node_selector.as_ref().and_then(|s| s.get(key)) {
        return Some(v.clone());
    }
    pod.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == key)
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

/// A container as a module: name, literal `BIZ_VERSION` env, image as URL (spec controller
/// §2.3).
pub fn biz_spec_of(c: &Container) -> BizSpec {
    let version = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "BIZ_VERSION")
        .and_then(|e| e.value.clone())
        .unwrap_or_default();
    BizSpec {
        biz_name: c.name.clone(),
        biz_version: version,
        biz_url: c.image.clone().unwrap_or_default(),
    }
}

/// Modules of every Deployment targeting `cluster`, oldest Deployment first. An empty cluster
/// name matches nothing.
pub fn select(deployments: &[Deployment], cluster: &str) -> Vec<BizSpec> {
    if cluster.is_empty() {
        return Vec::new();
    }
    let mut matching: Vec<&Deployment> = deployments
        .iter()
        .filter(|d| cluster_name_of(d).as_deref() == Some(cluster))
        .collect();
    matching.sort_by_key(|d| d.metadata.creation_timestamp.as_ref().map(|t| t.0));
    matching
        .into_iter()
        .filter_map(|d| d.spec.as_ref()?.template.spec.as_ref())
        .flat_map(|p| p.containers.iter().map(biz_spec_of))
        .collect()
}

/// Lists this env's Deployments and selects the baseline for `cluster`.
pub async fn query(
    api: &Api<Deployment>,
    env: &Env,
    cluster: &str,
    metrics: &Metrics,
) -> Result<Vec<BizSpec>, kube::Error> {
    let lp = ListParams::default().labels(&format!("{}={env}", labels::ENV));
    let list = metrics
        .api("deployment", "list")
        .done(api.list(&lp).await)?;
    Ok(select(&list.items, cluster))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn deployment(name: &str, created: i64, spec: serde_json::Value) -> Deployment {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"virtual-kubelet.koupleless.io/env": "dev"}},
            "spec": spec,
        }))
        .unwrap();
        d.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(created).unwrap(),
        ));
        d
    }

    fn template(containers: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
        let mut pod = serde_json::json!({"containers": containers});
        for (k, v) in extra.as_object().unwrap() {
            pod[k] = v.clone();
        }
        serde_json::json!({"selector": {}, "template": {"spec": pod}})
    }

    #[test]
    fn selection_table() {
        let biz = |n: &str, v: &str| serde_json::json!({"name": n, "image": format!("https://repo/{n}.jar"), "env": [{"name": "BIZ_VERSION", "value": v}]});
        let by_selector = deployment(
            "b",
            20,
            template(
                serde_json::json!([biz("biz2", "0.0.2")]),
                serde_json::json!({"nodeSelector": {"base.koupleless.io/cluster-name": "c1"}}),
            ),
        );
        let by_affinity = deployment(
            "a",
            10,
            template(
                serde_json::json!([biz("biz1", "0.0.1"), {"name": "noversion", "image": "https://repo/x.jar"}]),
                serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "base.koupleless.io/name", "operator": "In", "values": ["base"]},
                    {"key": "base.koupleless.io/cluster-name", "operator": "In", "values": ["c1", "c2"]}]}]}}}}),
            ),
        );
        let mut by_label = deployment(
            "c",
            5,
            template(serde_json::json!([biz("biz3", "1")]), serde_json::json!({})),
        );
        by_label
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("base.koupleless.io/cluster-name".into(), "c2".into());
        let all = [by_selector, by_affinity, by_label];

        let names = |c: &str| {
            select(&all, c)
                .into_iter()
                .map(|b| b.biz_name)
                .collect::<Vec<_>>()
        };
        // Oldest first, all containers of every matching Deployment.
        assert_eq!(names("c1"), ["biz1", "noversion", "biz2"]);
        assert_eq!(names("c2"), ["biz3"]);
        assert!(names("").is_empty());
        assert!(names("other").is_empty());
        let specs = select(&all, "c1");
        assert_eq!(specs[0].biz_version, "0.0.1");
        assert_eq!(specs[0].biz_url, "https://repo/biz1.jar");
        assert_eq!(specs[1].biz_version, "");
    }
}
