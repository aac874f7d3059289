//! Label, taint and namespace names shared with ModuleController V2 (spec controller §1.2–§1.4,
//! §1.15). Kept in one place so manifests, module tolerations and selectors written for the Go
//! controller keep matching.

/// `type=virtual-kubelet` on every vnode (virtual-kubelet default).
pub const TYPE: &str = "type";
/// Value of [`TYPE`].
pub const TYPE_VIRTUAL_KUBELET: &str = "virtual-kubelet";
/// `kubernetes.io/role=agent` (virtual-kubelet default).
pub const ROLE: &str = "kubernetes.io/role";
/// Value of [`ROLE`].
pub const ROLE_AGENT: &str = "agent";
/// The base host name.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// Component label on vnodes (`vnode`), their Leases (`vnode-lease`) and module pods (`module`).
pub const COMPONENT: &str = "virtual-kubelet.koupleless.io/component";
/// [`COMPONENT`] value on Nodes.
pub const COMPONENT_VNODE: &str = "vnode";
/// [`COMPONENT`] value on Leases.
pub const COMPONENT_VNODE_LEASE: &str = "vnode-lease";
/// The controller `ENV`.
pub const ENV: &str = "virtual-kubelet.koupleless.io/env";
/// Base application name (`baseMetadata.name`).
pub const BASE_NAME: &str = "base.koupleless.io/name";
/// Base version (`baseMetadata.version`).
pub const BASE_VERSION: &str = "base.koupleless.io/version";
/// Base cluster name (`baseMetadata.clusterName`).
pub const BASE_CLUSTER_NAME: &str = "base.koupleless.io/cluster-name";
/// Base host name (used by the kubelet proxy to find the base pod).
pub const BASE_HOST_NAME: &str = "base.koupleless.io/host-name";
/// Arklet HTTP port; only for bases whose heartbeat carries a non-zero port (HTTP tunnel).
pub const BASE_TUNNEL_PORT: &str = "base.koupleless.io/tunnel-port";

/// Every label key the controller writes on a Node. Keys in this list that the desired Node
/// lacks are removed; other keys (set by people or other controllers) are left alone.
pub const MANAGED_NODE_LABELS: [&str; 10] = [
    TYPE,
    ROLE,
    HOSTNAME,
    COMPONENT,
    ENV,
    BASE_NAME,
    BASE_VERSION,
    BASE_CLUSTER_NAME,
    BASE_HOST_NAME,
    BASE_TUNNEL_PORT,
];

/// Taint `schedule.koupleless.io/virtual-node=True:NoExecute`.
pub const TAINT_VIRTUAL_NODE: &str = "schedule.koupleless.io/virtual-node";
/// Value of [`TAINT_VIRTUAL_NODE`].
pub const TAINT_VIRTUAL_NODE_VALUE: &str = "True";
/// Taint `schedule.koupleless.io/node-env=<ENV>:NoExecute`.
pub const TAINT_NODE_ENV: &str = "schedule.koupleless.io/node-env";
/// Effect of both taints.
pub const TAINT_EFFECT: &str = "NoExecute";

/// Namespace of node Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Arklet port assumed for a rediscovered HTTP base whose Node lacks [`BASE_TUNNEL_PORT`].
pub const DEFAULT_ARKLET_PORT: u16 = 1238;

/// Label selector for this env's vnodes.
pub fn vnode_selector(env: &str) -> String {
    format!("{COMPONENT}={COMPONENT_VNODE},{ENV}={env}")
}

/// Label selector for this env's vnode Leases.
pub fn lease_selector(env: &str) -> String {
    format!("{COMPONENT}={COMPONENT_VNODE_LEASE},{ENV}={env}")
}
