//! The desired Node of a base (spec controller §1) and the differences to what is on the
//! server. Pure: the supervisor writes only what these functions say changed, so a health
//! report that changes nothing costs no API call (upstream writes status every 10 s).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use koupleless_protocol::{Env, LabelValue, VNodeName};
use serde_json::{Map, Value, json};

use super::facts::BaseFacts;
use crate::config::parse_quantity_bytes;
use crate::labels;

/// `pods` capacity of every vnode.
pub const PODS_CAPACITY: &str = "65535";

/// Per-controller parts of every Node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeTemplate {
    /// Env label and taint.
    pub env: Env,
    /// `nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `daemonEndpoints.kubeletEndpoint.port`.
    pub kubelet_port: i32,
    /// Where the API server reaches the controller's kubelet API (`KUBELET_ADDRESS`, the
    /// kubelet Service's ClusterIP): the first `InternalIP`, the base's own address staying
    /// the second, so the Pods' addresses and a rediscovery still see the base.
    pub kubelet_address: Option<String>,
}

impl NodeTemplate {
    /// The template for `env`, naming this controller's version as the kubelet version.
    pub fn new(env: Env, kubelet_port: i32) -> NodeTemplate {
        NodeTemplate {
            env,
            kubelet_version: kubelet_version(),
            kubelet_port,
            kubelet_address: None,
        }
    }
}

/// `v<crate version>-koupleless`: a semantic version, so tools that parse the kubelet
/// version keep working, and `kubectl get nodes` shows which controller manages the Node.
pub fn kubelet_version() -> String {
    format!("v{}-koupleless", env!("CARGO_PKG_VERSION"))
}

/// The Go architecture name of this controller's platform, as kubelets report it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// What the Ready condition says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// The base is alive.
    Ready,
    /// No sign of life for longer than the unreachable threshold.
    Unreachable,
}

/// Labels of the Node (spec controller §1.2). Free text from heartbeats is made into valid
/// label values, which upstream does not do (its Node creation then fails).
pub fn desired_labels(facts: &BaseFacts, env: &Env) -> BTreeMap<String, String> {
    let v = |s: &str| LabelValue::sanitize(s).to_string();
    let mut l = BTreeMap::from([
        (
            labels::TYPE.to_owned(),
            labels::TYPE_VIRTUAL_KUBELET.to_owned(),
        ),
        (labels::ROLE.to_owned(), labels::ROLE_AGENT.to_owned()),
        (labels::HOSTNAME.to_owned(), v(&facts.host_name)),
        (
            labels::COMPONENT.to_owned(),
            labels::COMPONENT_VNODE.to_owned(),
        ),
        (labels::ENV.to_owned(), env.to_string()),
        (labels::BASE_NAME.to_owned(), v(&facts.base_name)),
        (labels::BASE_VERSION.to_owned(), v(&facts.version)),
        (labels::BASE_CLUSTER_NAME.to_owned(), v(&facts.cluster_name)),
        (labels::BASE_HOST_NAME.to_owned(), v(&facts.host_name)),
    ]);
    if facts.port != 0 {
        l.insert(labels::BASE_TUNNEL_PORT.to_owned(), facts.port.to_string());
    }
    l
}

/// The two taints every module pod must tolerate (spec controller §1.4).
pub fn desired_taints(env: &Env) -> Vec<Taint> {
    vec![
        Taint {
            key: labels::TAINT_VIRTUAL_NODE.into(),
            value: Some(labels::TAINT_VIRTUAL_NODE_VALUE.into()),
            effect: labels::TAINT_EFFECT.into(),
            time_added: None,
        },
        Taint {
            key: labels::TAINT_NODE_ENV.into(),
            value: Some(env.to_string()),
            effect: labels::TAINT_EFFECT.into(),
            time_added: None,
        },
    ]
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The status the Node should show, without timestamps.
pub fn desired_status(facts: &BaseFacts, readiness: Readiness, tpl: &NodeTemplate) -> NodeStatus {
    let ready = match readiness {
        Readiness::Ready if facts.runtime_down => condition(
            "Ready",
            "False",
            "BaseRuntimeDown",
            "the agent answers but the base JVM is down or hung (masterBizInfo BROKEN); the \
             Node stays until the base is deactivated or silent",
        ),
        Readiness::Ready => condition("Ready", "True", "BaseReady", "base is alive"),
        Readiness::Unreachable => condition(
            "Ready",
            "Unknown",
            "BaseUnreachable",
            "no heartbeat or health report from the base within the unreachable threshold",
        ),
    };
    let conditions = vec![
        ready,
        condition(
            "MemoryPressure",
            "False",
            "BaseHasSufficientMemory",
            "no memory pressure reported",
        ),
        condition(
            "DiskPressure",
            "False",
            "BaseHasNoDiskPressure",
            "modules use no node disk",
        ),
        condition(
            "PIDPressure",
            "False",
            "BaseHasSufficientPID",
            "modules use no node PIDs",
        ),
        condition(
            "NetworkUnavailable",
            "False",
            "BaseNetworkAvailable",
            "modules share the base network",
        ),
    ];
    let (ip, _) = facts.arklet_endpoint();
    let mut addresses = Vec::new();
    if let Some(proxy) = tpl.kubelet_address.as_ref().filter(|p| **p != ip) {
        addresses.push(NodeAddress {
            type_: "InternalIP".into(),
            address: proxy.clone(),
        });
    }
    addresses.push(NodeAddress {
        type_: "InternalIP".into(),
        address: ip,
    });
    if !facts.host_name.is_empty() {
        addresses.push(NodeAddress {
            type_: "Hostname".into(),
            address: facts.host_name.clone(),
        });
    }
    let mut capacity = BTreeMap::from([("pods".to_owned(), Quantity(PODS_CAPACITY.into()))]);
    let mut allocatable = capacity.clone();
    if let Some(m) = &facts.memory {
        capacity.insert("memory".into(), m.capacity.clone());
        allocatable.insert("memory".into(), m.allocatable.clone());
    }
    NodeStatus {
        addresses: Some(addresses),
        allocatable: Some(allocatable),
        capacity: Some(capacity),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: tpl.kubelet_port,
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: String::new(),
            container_runtime_version: format!("koupleless://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: String::new(),
            kube_proxy_version: String::new(),
            kubelet_version: tpl.kubelet_version.clone(),
            machine_id: String::new(),
            operating_system: "linux".into(),
            os_image: "Koupleless base".into(),
            system_uuid: String::new(),
            swap: None,
        }),
        phase: Some("Running".into()),
        ..NodeStatus::default()
    }
}

/// The Node to create (the API server ignores status on create; it is written next).
pub fn new_node(name: &VNodeName, facts: &BaseFacts, tpl: &NodeTemplate) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(desired_labels(facts, &tpl.env)),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            taints: Some(desired_taints(&tpl.env)),
            ..NodeSpec::default()
        }),
        status: None,
    }
}

fn same_taint(a: &Taint, b: &Taint) -> bool {
    a.key == b.key && a.value == b.value && a.effect == b.effect
}

fn is_ours(t: &Taint) -> bool {
    t.key == labels::TAINT_VIRTUAL_NODE || t.key == labels::TAINT_NODE_ENV
}

/// A JSON merge patch bringing the Node's labels and taints to the desired ones, or `None`
/// when they already match. Labels and taints that others added are kept; when taints change,
/// the patch carries the `resourceVersion` read, so a concurrent taint change by someone else
/// (e.g. the node lifecycle controller) makes the write fail rather than be lost.
pub fn metadata_patch(observed: &Node, facts: &BaseFacts, env: &Env) -> Option<Value> {
    let empty = BTreeMap::new();
    let have = observed.metadata.labels.as_ref().unwrap_or(&empty);
    let want = desired_labels(facts, env);
    let mut label_patch = Map::new();
    for (k, v) in &want {
        if have.get(k) != Some(v) {
            label_patch.insert(k.clone(), Value::String(v.clone()));
        }
    }
    for k in labels::MANAGED_NODE_LABELS {
        if !want.contains_key(k) && have.contains_key(k) {
            label_patch.insert(k.to_owned(), Value::Null);
        }
    }

    let no_taints = Vec::new();
    let have_taints = observed
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .unwrap_or(&no_taints);
    let want_taints = desired_taints(env);
    let ours: Vec<&Taint> = have_taints.iter().filter(|t| is_ours(t)).collect();
    let taints_ok = ours.len() == want_taints.len()
        && want_taints
            .iter()
            .all(|w| ours.iter().any(|h| same_taint(h, w)));

    if label_patch.is_empty() && taints_ok {
        return None;
    }
    let mut patch = json!({});
    if !label_patch.is_empty() {
        patch["metadata"]["labels"] = Value::Object(label_patch);
    }
    if !taints_ok {
        let mut taints = want_taints;
        taints.extend(have_taints.iter().filter(|t| !is_ours(t)).cloned());
        patch["spec"]["taints"] = serde_json::to_value(taints).unwrap_or(Value::Null);
        if let Some(rv) = &observed.metadata.resource_version {
            patch["metadata"]["resourceVersion"] = Value::String(rv.clone());
        }
    }
    Some(patch)
}

/// Quantities compared by value: the API server may canonicalise `262144Ki` to `256Mi`.
fn same_quantity(a: &Quantity, b: &Quantity) -> bool {
    match (parse_quantity_bytes(&a.0), parse_quantity_bytes(&b.0)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.0 == b.0,
    }
}

fn same_resources(
    a: &Option<BTreeMap<String, Quantity>>,
    b: &Option<BTreeMap<String, Quantity>>,
) -> bool {
    let empty = BTreeMap::new();
    let (a, b) = (a.as_ref().unwrap_or(&empty), b.as_ref().unwrap_or(&empty));
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_quantity(v, w)))
}

fn same_conditions(a: &Option<Vec<NodeCondition>>, b: &Option<Vec<NodeCondition>>) -> bool {
    let key = |c: &NodeCondition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        )
    };
    let keys = |v: &Option<Vec<NodeCondition>>| {
        let mut k: Vec<_> = v.iter().flatten().map(key).collect();
        k.sort();
        k
    };
    keys(a) == keys(b)
}

/// Whether two statuses agree on everything we manage, ignoring condition timestamps.
pub fn same_status(a: &NodeStatus, b: &NodeStatus) -> bool {
    same_conditions(&a.conditions, &b.conditions)
        && a.addresses == b.addresses
        && same_resources(&a.capacity, &b.capacity)
        && same_resources(&a.allocatable, &b.allocatable)
        && a.node_info == b.node_info
        && a.daemon_endpoints == b.daemon_endpoints
        && a.phase == b.phase
}

/// How often a status whose only difference is a small drift of allocatable memory is
/// written: the kubelet's default `nodeStatusReportFrequency`. Liveness is the Lease's job.
pub const STATUS_REPORT_FREQUENCY: std::time::Duration = std::time::Duration::from_secs(300);

/// A change of allocatable memory smaller than this is drift: a running JVM commits metaspace
/// in small steps as it loads classes (reflection accessors, lambdas, proxies), while an
/// install or uninstall moves it by megabytes. Drift waits for [`STATUS_REPORT_FREQUENCY`].
pub const MEMORY_DRIFT_BYTES: i64 = 1 << 20;

/// When the status was last written: the newest `lastHeartbeatTime` of its conditions (every
/// write stamps them all).
fn last_written(status: &NodeStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .flatten()
        .filter_map(|c| c.last_heartbeat_time.as_ref().map(|t| t.0))
        .max()
}

/// Whether `a` and `b` differ only by allocatable memory, and by less than
/// [`MEMORY_DRIFT_BYTES`].
fn only_memory_drift(a: &NodeStatus, b: &NodeStatus) -> bool {
    let memory = |s: &NodeStatus| {
        s.allocatable
            .as_ref()
            .and_then(|m| m.get("memory"))
            .and_then(|q| parse_quantity_bytes(&q.0).ok())
    };
    let (Some(x), Some(y)) = (memory(a), memory(b)) else {
        return false;
    };
    let mut b_with_a_memory = b.clone();
    if let Some(m) = a.allocatable.as_ref().and_then(|m| m.get("memory")) {
        b_with_a_memory
            .allocatable
            .get_or_insert_with(BTreeMap::new)
            .insert("memory".into(), m.clone());
    }
    (x - y).abs() < MEMORY_DRIFT_BYTES && same_status(a, &b_with_a_memory)
}

/// The status to write, or `None` when the observed one already says the same.
///
/// Written at once when anything but allocatable memory changes, or memory by at least
/// [`MEMORY_DRIFT_BYTES`]; a smaller memory drift is written once the last write is
/// [`STATUS_REPORT_FREQUENCY`] old (as a kubelet reports an unchanged status), so an idle
/// base costs no status write. When `desired` has no memory (no health report yet, e.g. just
/// after a takeover), the observed memory is kept rather than removed. Each condition keeps
/// its `lastTransitionTime` unless its status changes; `lastHeartbeatTime` is the write time.
pub fn status_update(
    observed: Option<&NodeStatus>,
    mut desired: NodeStatus,
    now: Timestamp,
) -> Option<NodeStatus> {
    if let Some(obs) = observed {
        for (want, have) in [
            (&mut desired.capacity, &obs.capacity),
            (&mut desired.allocatable, &obs.allocatable),
        ] {
            let want = want.get_or_insert_with(BTreeMap::new);
            if !want.contains_key("memory")
                && let Some(m) = have.as_ref().and_then(|h| h.get("memory"))
            {
                want.insert("memory".into(), m.clone());
            }
        }
        if same_status(obs, &desired) {
            return None;
        }
        let fresh = last_written(obs).is_some_and(|at| {
            now.duration_since(at).as_secs() < STATUS_REPORT_FREQUENCY.as_secs() as i64
        });
        if fresh && only_memory_drift(obs, &desired) {
            return None;
        }
    }
    let previous = |t: &str| {
        observed
            .and_then(|o| o.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
    };
    for c in desired.conditions.iter_mut().flatten() {
        let kept = previous(&c.type_)
            .filter(|p| p.status == c.status)
            .and_then(|p| p.last_transition_time.clone());
        c.last_transition_time = Some(kept.unwrap_or(Time(now)));
        c.last_heartbeat_time = Some(Time(now));
    }
    Some(desired)
}

/// The Ready condition's status (`True`, `Unknown`, ...), if present.
pub fn ready_status(status: Option<&NodeStatus>) -> Option<&str> {
    status?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vnode::facts::Memory;
    use k8s_openapi::jiff::SignedDuration;

    fn env() -> Env {
        "dev".parse().unwrap()
    }

    fn tpl() -> NodeTemplate {
        NodeTemplate::new(env(), 10250)
    }

    fn facts(port: u16) -> BaseFacts {
        BaseFacts {
            base_name: "base".into(),
            version: "1.0.0".into(),
            cluster_name: "default".into(),
            host_name: "base-7c9f8-abcde".into(),
            ip: "10.1.0.45".into(),
            port,
            memory: Some(Memory {
                capacity: Quantity("262144Ki".into()),
                allocatable: Quantity("180224Ki".into()),
            }),
            runtime_down: false,
        }
    }

    fn t0() -> Timestamp {
        Timestamp::from_second(1_750_000_000).unwrap()
    }

    #[test]
    fn node_matches_the_upstream_example() {
        let name: VNodeName = "vnode.test-base.dev".parse().unwrap();
        let node = new_node(&name, &facts(1238), &tpl());
        let want: BTreeMap<String, String> = [
            ("type", "virtual-kubelet"),
            ("kubernetes.io/role", "agent"),
            ("kubernetes.io/hostname", "base-7c9f8-abcde"),
            ("virtual-kubelet.koupleless.io/component", "vnode"),
            ("virtual-kubelet.koupleless.io/env", "dev"),
            ("base.koupleless.io/name", "base"),
            ("base.koupleless.io/version", "1.0.0"),
            ("base.koupleless.io/cluster-name", "default"),
            ("base.koupleless.io/host-name", "base-7c9f8-abcde"),
            ("base.koupleless.io/tunnel-port", "1238"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(node.metadata.labels.as_ref(), Some(&want));
        let taints = node.spec.unwrap().taints.unwrap();
        let t: Vec<_> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.value.as_deref(), t.effect.as_str()))
            .collect();
        assert_eq!(
            t,
            [
                (
                    "schedule.koupleless.io/virtual-node",
                    Some("True"),
                    "NoExecute"
                ),
                ("schedule.koupleless.io/node-env", Some("dev"), "NoExecute"),
            ]
        );

        let s = desired_status(&facts(0), Readiness::Ready, &tpl());
        let addrs: Vec<_> = s
            .addresses
            .iter()
            .flatten()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(
            addrs,
            [
                ("InternalIP", "10.1.0.45"),
                ("Hostname", "base-7c9f8-abcde")
            ]
        );
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["pods"].0, "65535");
        assert_eq!(cap["memory"].0, "262144Ki");
        assert_eq!(s.allocatable.as_ref().unwrap()["memory"].0, "180224Ki");
        assert_eq!(ready_status(Some(&s)), Some("True"));
        let info = s.node_info.as_ref().unwrap();
        assert!(info.kubelet_version.starts_with('v'));
        assert_eq!(info.operating_system, "linux");
        assert!(!info.architecture.is_empty());
        assert_eq!(
            s.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port,
            10250
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(!desired_labels(&facts(0), &env()).contains_key(labels::BASE_TUNNEL_PORT));
    }

    #[test]
    fn ready_condition() {
        // (readiness, runtime down, status, reason)
        let cases = [
            (Readiness::Ready, false, "True", "BaseReady"),
            (Readiness::Ready, true, "False", "BaseRuntimeDown"),
            (Readiness::Unreachable, false, "Unknown", "BaseUnreachable"),
            (Readiness::Unreachable, true, "Unknown", "BaseUnreachable"),
        ];
        for (readiness, down, status, reason) in cases {
            let f = BaseFacts {
                runtime_down: down,
                ..facts(0)
            };
            let s = desired_status(&f, readiness, &tpl());
            let ready = s
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready")
                .unwrap();
            assert_eq!(
                (ready.status.as_str(), ready.reason.as_deref()),
                (status, Some(reason)),
                "{readiness:?} down={down}"
            );
        }
    }

    #[test]
    fn a_kubelet_address_comes_first_and_the_base_stays() {
        // (configured kubelet address, InternalIPs listed)
        let cases: [(Option<&str>, &[&str]); 3] = [
            (None, &["10.1.0.45"]),
            (Some("10.96.0.20"), &["10.96.0.20", "10.1.0.45"]),
            (Some("10.1.0.45"), &["10.1.0.45"]),
        ];
        for (proxy, want) in cases {
            let tpl = NodeTemplate {
                kubelet_address: proxy.map(str::to_owned),
                ..tpl()
            };
            let s = desired_status(&facts(0), Readiness::Ready, &tpl);
            let ips: Vec<&str> = s
                .addresses
                .iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.as_str())
                .collect();
            assert_eq!(ips, want, "{proxy:?}");
            // A replica that rediscovers the Node still finds the base's address.
            let node = Node {
                status: Some(s),
                ..Node::default()
            };
            assert_eq!(BaseFacts::from_node(&node).ip, "10.1.0.45", "{proxy:?}");
        }
    }

    #[test]
    fn labels_are_sanitised() {
        let mut f = facts(0);
        f.version = "1.0.0 SNAPSHOT".into();
        f.host_name = String::new();
        let l = desired_labels(&f, &env());
        assert_eq!(l[labels::BASE_VERSION], "1.0.0-SNAPSHOT");
        assert_eq!(l[labels::HOSTNAME], "");
        let s = desired_status(&f, Readiness::Ready, &tpl());
        assert_eq!(s.addresses.unwrap().len(), 1, "no empty Hostname address");
        let mut f = facts(0);
        f.ip = String::new();
        let s = desired_status(&f, Readiness::Ready, &tpl());
        assert_eq!(s.addresses.unwrap()[0].address, "127.0.0.1");
    }

    fn observed(facts: &BaseFacts) -> Node {
        let name: VNodeName = "vnode.b.dev".parse().unwrap();
        let mut n = new_node(&name, facts, &tpl());
        n.metadata.resource_version = Some("7".into());
        n
    }

    #[test]
    fn metadata_patch_table() {
        // Nothing changed.
        assert_eq!(
            metadata_patch(&observed(&facts(1238)), &facts(1238), &env()),
            None
        );

        // New version and no more tunnel port: set one label, remove the other.
        let mut f = facts(0);
        f.version = "2.0.0".into();
        let p = metadata_patch(&observed(&facts(1238)), &f, &env()).unwrap();
        assert_eq!(
            p,
            json!({"metadata": {"labels": {
                "base.koupleless.io/version": "2.0.0",
                "base.koupleless.io/tunnel-port": null}}})
        );

        // Foreign labels and taints are left alone.
        let mut n = observed(&facts(0));
        n.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        let foreign = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            value: None,
            effect: "NoExecute".into(),
            time_added: None,
        };
        n.spec
            .as_mut()
            .unwrap()
            .taints
            .as_mut()
            .unwrap()
            .push(foreign.clone());
        assert_eq!(metadata_patch(&n, &facts(0), &env()), None);

        // A missing taint of ours is restored, keeping the foreign one, guarded by the
        // resourceVersion read.
        n.spec.as_mut().unwrap().taints.as_mut().unwrap().remove(0);
        let p = metadata_patch(&n, &facts(0), &env()).unwrap();
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        let taints: Vec<Taint> = serde_json::from_value(p["spec"]["taints"].clone()).unwrap();
        assert_eq!(taints.len(), 3);
        assert_eq!(taints[2].key, foreign.key);
        assert!(p["metadata"].get("labels").is_none());
    }

    #[test]
    fn status_written_only_on_change() {
        let d = || desired_status(&facts(0), Readiness::Ready, &tpl());
        let first = status_update(None, d(), t0()).unwrap();
        let ready = &first.conditions.as_ref().unwrap()[0];
        assert_eq!(ready.last_transition_time.as_ref().unwrap().0, t0());
        assert_eq!(ready.last_heartbeat_time.as_ref().unwrap().0, t0());

        // The same status later: nothing to write.
        let later = t0() + SignedDuration::from_secs(30);
        assert_eq!(status_update(Some(&first), d(), later), None);

        // The server canonicalised the quantity: still the same.
        let mut canon = first.clone();
        canon
            .capacity
            .as_mut()
            .unwrap()
            .insert("memory".into(), Quantity("256Mi".into()));
        assert_eq!(status_update(Some(&canon), d(), later), None);

        // Unreachable: written, Ready transition time moves, the others keep theirs.
        let un = status_update(
            Some(&first),
            desired_status(&facts(0), Readiness::Unreachable, &tpl()),
            later,
        )
        .unwrap();
        let cs = un.conditions.as_ref().unwrap();
        assert_eq!(cs[0].status, "Unknown");
        assert_eq!(cs[0].reason.as_deref(), Some("BaseUnreachable"));
        assert_eq!(cs[0].last_transition_time.as_ref().unwrap().0, later);
        assert_eq!(cs[1].last_transition_time.as_ref().unwrap().0, t0());
        assert_eq!(cs[1].last_heartbeat_time.as_ref().unwrap().0, later);

        // Memory change: written.
        let mut f = facts(0);
        f.memory.as_mut().unwrap().allocatable = Quantity("100Ki".into());
        assert!(
            status_update(
                Some(&first),
                desired_status(&f, Readiness::Ready, &tpl()),
                later
            )
            .is_some()
        );

        // No memory known yet (takeover before the first health report): the observed
        // memory is kept, so nothing changes.
        let mut f = facts(0);
        f.memory = None;
        assert_eq!(
            status_update(
                Some(&first),
                desired_status(&f, Readiness::Ready, &tpl()),
                later
            ),
            None
        );
        // Address change: written.
        let mut f = facts(0);
        f.ip = "10.9.9.9".into();
        assert!(
            status_update(
                Some(&first),
                desired_status(&f, Readiness::Ready, &tpl()),
                later
            )
            .is_some()
        );
    }

    #[test]
    fn memory_drift_waits_for_the_report_frequency() {
        let desired = |ki: i64, readiness: Readiness| {
            let mut f = facts(0);
            f.memory.as_mut().unwrap().allocatable = Quantity(format!("{ki}Ki"));
            desired_status(&f, readiness, &tpl())
        };
        // Written at t0 with 180224Ki allocatable.
        let first = status_update(None, desired(180224, Readiness::Ready), t0()).unwrap();
        let at = |secs: i64| t0() + SignedDuration::from_secs(secs);
        // (allocatable Ki, readiness, seconds since the last write, written?)
        let cases = [
            (180224 - 64, Readiness::Ready, 10, false), // 64 KiB committed: drift
            (180224 - 1023, Readiness::Ready, 299, false), // just under 1 MiB
            (180224 - 64, Readiness::Ready, 300, true), // drift, report due
            (180224 + 512, Readiness::Ready, 10, false), // freed a little: drift
            (180224 - 1024, Readiness::Ready, 10, true), // 1 MiB: an install
            (180224 - 64, Readiness::Unreachable, 10, true), // condition changed
            (180224, Readiness::Ready, 10, false),      // nothing changed
            (180224, Readiness::Ready, 3600, false),    // nothing changed, ever
        ];
        for (ki, readiness, secs, written) in cases {
            let got = status_update(Some(&first), desired(ki, readiness), at(secs));
            assert_eq!(
                got.is_some(),
                written,
                "{ki}Ki {readiness:?} after {secs} s"
            );
            if let Some(st) = got {
                let alloc = &st.allocatable.as_ref().unwrap()["memory"];
                assert_eq!(alloc.0, format!("{ki}Ki"));
            }
        }
        // A status never written by us (no heartbeat times): drift is written.
        let mut bare = first.clone();
        for c in bare.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        assert!(
            status_update(Some(&bare), desired(180224 - 64, Readiness::Ready), at(10)).is_some()
        );
    }
}
