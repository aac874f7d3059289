//! Pure scheduling rules shared by the scheduler, the DaemonSet controller
//! and node lifecycle: taints and tolerations, node selectors and affinity,
//! resource fit, required pod anti-affinity, and the scheduler's messages.

use super::util::{Requests, parse_quantity_milli};
use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, PodSpec, Taint,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// Upstream's `FindMatchingUntoleratedTaint`: the first taint passing
/// `filter` that no toleration tolerates.
pub fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// NoSchedule or NoExecute: the effects the scheduler filters on.
pub fn is_scheduling_effect(t: &Taint) -> bool {
    t.effect == "NoSchedule" || t.effect == "NoExecute"
}

/// One node selector requirement against a Node's labels (upstream's
/// `nodeSelectorRequirementsAsSelector`: NotIn and DoesNotExist match an
/// absent label; Gt/Lt need one integer value and an integer label).
pub fn requirement_matches_labels(
    r: &NodeSelectorRequirement,
    labels: &BTreeMap<String, String>,
) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let v = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" | "Lt" => {
            let [bound] = values else { return false };
            let (Ok(bound), Some(Ok(v))) = (bound.parse::<i64>(), v.map(|v| v.parse::<i64>()))
            else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A field requirement (only `metadata.name` exists, with In/NotIn).
pub fn requirement_matches_fields(r: &NodeSelectorRequirement, node_name: &str) -> bool {
    if r.key != "metadata.name" {
        return false;
    }
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => values.len() == 1 && values[0] == node_name,
        "NotIn" => values.len() == 1 && values[0] != node_name,
        _ => false,
    }
}

/// A node selector term: all requirements hold; an empty term matches
/// nothing (as upstream).
pub fn term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches_labels(r, labels))
        && fields
            .iter()
            .all(|r| requirement_matches_fields(r, node_name))
}

/// `nodeSelector` and required node affinity (terms ORed) against a Node.
pub fn node_affinity_matches(spec: &PodSpec, node: &Node) -> bool {
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(ns) => ns
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, name, labels)),
    }
}

/// A label selector of an affinity term: nil matches nothing, empty
/// matches everything.
pub fn affinity_selector_matches(
    sel: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(sel) = sel else { return false };
    match Selector::try_from(sel.clone()) {
        Ok(s) => s.matches(labels),
        Err(_) => false,
    }
}

/// Features the scheduler does not play: a Pod that uses one is refused
/// loudly (PodScheduled=False with this message) instead of being placed
/// as if the rule did not exist.
pub fn unsupported(spec: &PodSpec) -> Option<String> {
    let aff = spec.affinity.as_ref();
    if aff
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|v| !v.is_empty())
    {
        return Some("required podAffinity".into());
    }
    for t in anti_affinity_terms(spec) {
        if t.namespace_selector.is_some() {
            return Some("podAntiAffinity namespaceSelector".into());
        }
        if t.match_label_keys.as_ref().is_some_and(|v| !v.is_empty())
            || t.mismatch_label_keys
                .as_ref()
                .is_some_and(|v| !v.is_empty())
        {
            return Some("podAntiAffinity matchLabelKeys/mismatchLabelKeys".into());
        }
    }
    if spec
        .topology_spread_constraints
        .as_ref()
        .is_some_and(|v| !v.is_empty())
    {
        return Some("topologySpreadConstraints".into());
    }
    if spec
        .priority_class_name
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Some("priorityClassName (no priorities, no preemption)".into());
    }
    None
}

/// The required anti-affinity terms of a Pod spec.
pub fn anti_affinity_terms(spec: &PodSpec) -> &[PodAffinityTerm] {
    spec.affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|p| {
            p.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[])
}

fn term_namespaces(term: &PodAffinityTerm, own_ns: &str) -> BTreeSet<String> {
    match term.namespaces.as_ref().filter(|v| !v.is_empty()) {
        Some(v) => v.iter().cloned().collect(),
        None => [own_ns.to_string()].into(),
    }
}

fn pod_labels(p: &Pod) -> BTreeMap<String, String> {
    p.metadata.labels.clone().unwrap_or_default()
}

fn node_label<'a>(node: &'a Node, key: &str) -> Option<&'a String> {
    node.metadata.labels.as_ref()?.get(key)
}

/// Why a Node was rejected: upstream's reason string, and whether
/// preemption could help (Unschedulable) or not (UnschedulableAndUnresolvable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The reasons, each counted once per Node in the message.
    pub reasons: Vec<String>,
    /// Whether evicting lower-priority Pods could make room.
    pub preemption_might_help: bool,
}

impl Rejection {
    fn unresolvable(reason: impl Into<String>) -> Self {
        Rejection {
            reasons: vec![reason.into()],
            preemption_might_help: false,
        }
    }
}

/// What is already on a Node: the Pods (bound or assumed, not terminal)
/// and the sum of their requests.
#[derive(Debug, Clone, Default)]
pub struct NodeUsage {
    /// Sum of requests.
    pub requested: Requests,
    /// Number of Pods.
    pub pods: i64,
}

/// A Node's allocatable (cpu in milli, memory in bytes, pods).
pub fn allocatable(node: &Node) -> (i128, i128, i64) {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| {
        a.and_then(|a| a.get(k))
            .and_then(|q| parse_quantity_milli(&q.0))
            .unwrap_or(0)
    };
    (
        get("cpu"),
        get("memory") / 1000,
        (get("pods") / 1000) as i64,
    )
}

/// The scheduler's filters for one Pod on one Node, in upstream's plugin
/// order (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity,
/// NodeResourcesFit, InterPodAffinity); the first failing plugin rejects.
/// `placed` is every Pod already on some Node, with that Node.
pub fn filter(
    pod: &Pod,
    node: &Node,
    usage: &NodeUsage,
    placed: &[(&Pod, &Node)],
) -> Result<(), Rejection> {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
    let node_name = node.metadata.name.as_deref().unwrap_or("");
    let nspec = node.spec.as_ref();
    if nspec.and_then(|s| s.unschedulable).unwrap_or(false) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return Err(Rejection::unresolvable("node(s) were unschedulable"));
        }
    }
    if let Some(n) = spec.node_name.as_deref()
        && !n.is_empty()
        && n != node_name
    {
        return Err(Rejection::unresolvable(
            "node(s) didn't match the requested node name",
        ));
    }
    let taints = nspec.and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    if let Some(t) = untolerated(taints, tolerations, is_scheduling_effect) {
        return Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or("")
        )));
    }
    if !node_affinity_matches(spec, node) {
        return Err(Rejection::unresolvable(
            "node(s) didn't match Pod's node affinity/selector",
        ));
    }
    let req = super::util::pod_requests(pod);
    let (cpu, mem, pods) = allocatable(node);
    let mut insufficient = Vec::new();
    if usage.pods + 1 > pods {
        insufficient.push("Too many pods".to_string());
    }
    if req.milli_cpu > 0 && req.milli_cpu > cpu - usage.requested.milli_cpu {
        insufficient.push("Insufficient cpu".to_string());
    }
    if req.memory > 0 && req.memory > mem - usage.requested.memory {
        insufficient.push("Insufficient memory".to_string());
    }
    if !insufficient.is_empty() {
        return Err(Rejection {
            reasons: insufficient,
            preemption_might_help: true,
        });
    }
    anti_affinity(pod, node, placed)
}

/// Required inter-pod anti-affinity, both ways: the incoming Pod's terms
/// against Pods in the same topology domain, and existing Pods' terms
/// against the incoming Pod. A Node without the topology label is in no
/// domain and never conflicts.
pub fn anti_affinity(pod: &Pod, node: &Node, placed: &[(&Pod, &Node)]) -> Result<(), Rejection> {
    let empty = PodSpec::default();
    let spec = pod.spec.as_ref().unwrap_or(&empty);
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = pod_labels(pod);
    let same_domain =
        |key: &str, other: &Node| match (node_label(node, key), node_label(other, key)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    let own_uid = pod.metadata.uid.as_deref();
    for (p, n) in placed {
        if own_uid.is_some() && p.metadata.uid.as_deref() == own_uid {
            continue;
        }
        let pns = p.metadata.namespace.as_deref().unwrap_or("default");
        for t in anti_affinity_terms(spec) {
            if same_domain(&t.topology_key, n)
                && term_namespaces(t, ns).contains(pns)
                && affinity_selector_matches(t.label_selector.as_ref(), &pod_labels(p))
            {
                return Err(Rejection {
                    reasons: vec!["node(s) didn't match pod anti-affinity rules".into()],
                    preemption_might_help: true,
                });
            }
        }
        let pspec = p.spec.as_ref().unwrap_or(&empty);
        for t in anti_affinity_terms(pspec) {
            if same_domain(&t.topology_key, n)
                && term_namespaces(t, pns).contains(ns)
                && affinity_selector_matches(t.label_selector.as_ref(), &labels)
            {
                return Err(Rejection {
                    reasons: vec![
                        "node(s) didn't satisfy existing pods anti-affinity rules".into(),
                    ],
                    preemption_might_help: true,
                });
            }
        }
    }
    Ok(())
}

/// Upstream's `FitError.Error()` for a Pod no Node fits, with the default
/// preemption plugin's post-filter message (there are no priorities here,
/// so preemption never finds victims).
pub fn fit_error(total_nodes: usize, rejections: &[Rejection]) -> String {
    if total_nodes == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rejections {
        for reason in &r.reasons {
            *counts.entry(reason.as_str()).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{total_nodes} nodes are available:");
    if !reasons.is_empty() {
        msg.push_str(&format!(" {}.", reasons.join(", ")));
    }
    let helpful = rejections
        .iter()
        .filter(|r| r.preemption_might_help)
        .count();
    let not_helpful = rejections.len() - helpful;
    let mut pre = Vec::new();
    if helpful > 0 {
        pre.push(format!(
            "{helpful} No preemption victims found for incoming pod"
        ));
    }
    if not_helpful > 0 {
        pre.push(format!(
            "{not_helpful} Preemption is not helpful for scheduling"
        ));
    }
    pre.sort();
    msg.push_str(&format!(
        " preemption: 0/{total_nodes} nodes are available: {}.",
        pre.join(", ")
    ));
    msg
}

/// Upstream's non-zero default memory request used for scoring (200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i128 = 200 * 1024 * 1024;

/// LeastAllocated on memory: `(allocatable - requested) * 100 / allocatable`
/// after placing the Pod, with upstream's non-zero default for Pods that
/// request no memory.
pub fn least_allocated_memory_score(node: &Node, usage_nonzero_memory: i128, pod: &Pod) -> i64 {
    let (_, mem, _) = allocatable(node);
    if mem <= 0 {
        return 0;
    }
    let mut req = super::util::pod_requests(pod).memory;
    if req == 0 {
        req = DEFAULT_MEMORY_REQUEST;
    }
    let requested = usage_nonzero_memory + req;
    if requested > mem {
        return 0;
    }
    ((mem - requested) * 100 / mem) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: (!key.is_empty()).then(|| key.into()),
            operator: (!op.is_empty()).then(|| op.into()),
            value: (!value.is_empty()).then(|| value.into()),
            effect: (!effect.is_empty()).then(|| effect.into()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching_as_upstream() {
        // k8s.io/api core/v1 TestTolerationToleratesTaint
        let t = taint("foo", "bar", "NoSchedule");
        let cases = [
            (
                tol("", "Exists", "", ""),
                true,
                "empty key, Exists: everything",
            ),
            (
                tol("foo", "Exists", "", "NoSchedule"),
                true,
                "same key/effect, Exists",
            ),
            (
                tol("foo", "Equal", "bar", "NoSchedule"),
                true,
                "same key/value/effect",
            ),
            (
                tol("foo", "", "bar", "NoSchedule"),
                true,
                "empty operator is Equal",
            ),
            (
                tol("foo", "Equal", "baz", "NoSchedule"),
                false,
                "different value",
            ),
            (
                tol("foo", "Equal", "bar", "NoExecute"),
                false,
                "different effect",
            ),
            (
                tol("foo", "Equal", "bar", ""),
                true,
                "empty effect: all effects",
            ),
            (tol("bar", "Exists", "", ""), false, "different key"),
            (tol("foo", "Lt", "bar", ""), false, "unknown operator"),
        ];
        for (tl, want, what) in cases {
            assert_eq!(tolerates(&tl, &t), want, "{what}");
        }
        let vnode = [
            taint("schedule.koupleless.io/virtual-node", "True", "NoExecute"),
            taint("schedule.koupleless.io/node-env", "dev", "NoExecute"),
            taint("soft", "", "PreferNoSchedule"),
        ];
        let module = [
            tol(
                "schedule.koupleless.io/virtual-node",
                "Equal",
                "True",
                "NoExecute",
            ),
            tol(
                "schedule.koupleless.io/node-env",
                "Equal",
                "dev",
                "NoExecute",
            ),
        ];
        assert_eq!(untolerated(&vnode, &module, is_scheduling_effect), None);
        assert_eq!(
            untolerated(&vnode, &module[..1], is_scheduling_effect).map(|t| t.key.as_str()),
            Some("schedule.koupleless.io/node-env")
        );
        let wrong_env = [
            module[0].clone(),
            tol(
                "schedule.koupleless.io/node-env",
                "Equal",
                "test",
                "NoExecute",
            ),
        ];
        assert!(untolerated(&vnode, &wrong_env, is_scheduling_effect).is_some());
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn node_selector_operators() {
        let labels: BTreeMap<String, String> = [("foo", "bar"), ("num", "10"), ("text", "ten")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        let cases = [
            (req("foo", "In", &["bar", "baz"]), true),
            (req("foo", "In", &["baz"]), false),
            (req("missing", "In", &["bar"]), false),
            (req("foo", "NotIn", &["baz"]), true),
            (req("foo", "NotIn", &["bar"]), false),
            (req("missing", "NotIn", &["bar"]), true),
            (req("foo", "Exists", &[]), true),
            (req("missing", "Exists", &[]), false),
            (req("missing", "DoesNotExist", &[]), true),
            (req("foo", "DoesNotExist", &[]), false),
            (req("num", "Gt", &["9"]), true),
            (req("num", "Gt", &["10"]), false),
            (req("num", "Lt", &["11"]), true),
            (req("num", "Lt", &["10"]), false),
            (req("text", "Gt", &["1"]), false),
            (req("num", "Gt", &["x"]), false),
            (req("num", "Gt", &["1", "2"]), false),
            (req("missing", "Lt", &["1"]), false),
            (req("foo", "Bogus", &["bar"]), false),
        ];
        for (r, want) in cases {
            assert_eq!(requirement_matches_labels(&r, &labels), want, "{r:?}");
        }
        assert!(requirement_matches_fields(
            &req("metadata.name", "In", &["n1"]),
            "n1"
        ));
        assert!(!requirement_matches_fields(
            &req("metadata.name", "In", &["n1"]),
            "n2"
        ));
        assert!(requirement_matches_fields(
            &req("metadata.name", "NotIn", &["n1"]),
            "n2"
        ));
        assert!(!requirement_matches_fields(
            &req("metadata.uid", "In", &["n1"]),
            "n1"
        ));
        let empty = NodeSelectorTerm::default();
        assert!(
            !term_matches(&empty, "n1", &labels),
            "an empty term matches nothing"
        );
    }

    fn node(v: serde_json::Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn affinity_terms_are_ored_and_selector_anded() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "disk": "ssd"}}}));
        let spec = |v: serde_json::Value| pod(json!({"spec": v})).spec.unwrap();
        assert!(node_affinity_matches(&spec(json!({"containers": []})), &n));
        assert!(node_affinity_matches(
            &spec(json!({"containers": [], "nodeSelector": {"zone": "a"}})),
            &n
        ));
        assert!(!node_affinity_matches(
            &spec(json!({"containers": [], "nodeSelector": {"zone": "b"}})),
            &n
        ));
        let aff = |terms: serde_json::Value, sel: serde_json::Value| {
            spec(
                json!({"containers": [], "nodeSelector": sel, "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}),
            )
        };
        let zone_b =
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]});
        let by_name =
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]});
        assert!(node_affinity_matches(
            &aff(json!([zone_b, by_name]), json!({})),
            &n
        ));
        assert!(!node_affinity_matches(&aff(json!([zone_b]), json!({})), &n));
        assert!(!node_affinity_matches(
            &aff(json!([by_name]), json!({"disk": "hdd"})),
            &n
        ));
        assert!(
            !node_affinity_matches(&aff(json!([]), json!({})), &n),
            "no terms: nothing"
        );
    }

    fn vnode(name: &str, host: &str, mem: &str, pods: &str) -> Node {
        node(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": host}},
            "status": {"allocatable": {"memory": mem, "pods": pods}}
        }))
    }

    #[test]
    fn resource_fit_and_messages() {
        let n = vnode("n1", "h1", "100Mi", "2");
        let p = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}]}}),
        );
        assert_eq!(filter(&p, &n, &NodeUsage::default(), &[]), Ok(()));
        let used = NodeUsage {
            requested: Requests {
                milli_cpu: 0,
                memory: 64 * 1024 * 1024,
            },
            pods: 1,
        };
        let r = filter(&p, &n, &used, &[]).unwrap_err();
        assert_eq!(r.reasons, vec!["Insufficient memory"]);
        let full = NodeUsage {
            pods: 2,
            ..used.clone()
        };
        let r2 = filter(&p, &n, &full, &[]).unwrap_err();
        assert_eq!(r2.reasons, vec!["Too many pods", "Insufficient memory"]);
        let cpu = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}),
        );
        assert_eq!(
            filter(&cpu, &n, &NodeUsage::default(), &[])
                .unwrap_err()
                .reasons,
            vec!["Insufficient cpu"]
        );

        let taint = Rejection::unresolvable("node(s) had untolerated taint {a: b}");
        let aff = Rejection::unresolvable("node(s) didn't match Pod's node affinity/selector");
        assert_eq!(
            fit_error(3, &[taint.clone(), aff.clone(), aff.clone()]),
            "0/3 nodes are available: 1 node(s) had untolerated taint {a: b}, 2 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        assert_eq!(
            fit_error(2, &[r2, aff]),
            "0/2 nodes are available: 1 Insufficient memory, 1 Too many pods, 1 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
        assert_eq!(fit_error(0, &[]), "no nodes available to schedule pods");
    }

    #[test]
    fn unschedulable_and_taints_in_plugin_order() {
        let n = node(json!({
            "metadata": {"name": "n1"},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]},
            "status": {"allocatable": {"pods": "10"}}
        }));
        let p = pod(json!({"spec": {"containers": []}}));
        assert_eq!(
            filter(&p, &n, &NodeUsage::default(), &[])
                .unwrap_err()
                .reasons,
            vec!["node(s) were unschedulable"]
        );
        let ds = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert_eq!(
            filter(&ds, &n, &NodeUsage::default(), &[])
                .unwrap_err()
                .reasons,
            vec!["node(s) had untolerated taint {k: v}"]
        );
    }

    #[test]
    fn anti_affinity_by_hostname() {
        let term = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["biz1"]}]},
            "topologyKey": "kubernetes.io/hostname"}]}});
        let incoming = pod(
            json!({"metadata": {"namespace": "ns", "uid": "new", "labels": {"app": "biz1"}}, "spec": {"containers": [], "affinity": term}}),
        );
        let existing = pod(
            json!({"metadata": {"namespace": "ns", "uid": "old", "labels": {"app": "biz1"}}, "spec": {"containers": []}}),
        );
        let other_ns = pod(
            json!({"metadata": {"namespace": "other", "uid": "o", "labels": {"app": "biz1"}}, "spec": {"containers": []}}),
        );
        let n1 = vnode("n1", "h1", "1Gi", "10");
        let n1b = vnode("n1b", "h1", "1Gi", "10");
        let n2 = vnode("n2", "h2", "1Gi", "10");
        let nolabel = node(json!({"metadata": {"name": "n3"}}));
        let placed = [(&existing, &n1), (&other_ns, &n2)];
        assert!(anti_affinity(&incoming, &n1, &placed).is_err());
        assert!(
            anti_affinity(&incoming, &n1b, &placed).is_err(),
            "same hostname label, other node"
        );
        assert!(
            anti_affinity(&incoming, &n2, &placed).is_ok(),
            "other namespace does not count"
        );
        assert!(anti_affinity(&incoming, &nolabel, &placed).is_ok());
        // the existing Pod's own term rejects a newcomer it selects
        let plain = pod(
            json!({"metadata": {"namespace": "ns", "uid": "p", "labels": {"app": "biz1"}}, "spec": {"containers": []}}),
        );
        let r = anti_affinity(&plain, &n1, &[(&incoming, &n1)]).unwrap_err();
        assert_eq!(
            r.reasons,
            vec!["node(s) didn't satisfy existing pods anti-affinity rules"]
        );
        assert!(
            !affinity_selector_matches(None, &BTreeMap::new()),
            "nil selector matches nothing"
        );
    }

    #[test]
    fn scoring_prefers_free_memory() {
        let p = pod(
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": "100Mi"}}}]}}),
        );
        let n = vnode("n", "h", "1000Mi", "10");
        assert_eq!(least_allocated_memory_score(&n, 0, &p), 90);
        assert_eq!(least_allocated_memory_score(&n, 400 * 1024 * 1024, &p), 50);
        let none = pod(json!({"spec": {"containers": []}}));
        assert_eq!(
            least_allocated_memory_score(&n, 0, &none),
            80,
            "200Mi non-zero default"
        );
        assert_eq!(
            least_allocated_memory_score(&vnode("z", "h", "0", "1"), 0, &none),
            0
        );
    }
}
