//! The resource types this server serves, with the discovery facts the real
//! server publishes for them.

/// How a resource is stored: resources sharing a storage (core/v1 Event and
/// events.k8s.io/v1 Event) are two views of the same objects, as in the real
/// server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Storage {
    /// nodes
    Nodes,
    /// pods
    Pods,
    /// namespaces
    Namespaces,
    /// events (both APIs)
    Events,
    /// services
    Services,
    /// deployments
    Deployments,
    /// replicasets
    ReplicaSets,
    /// daemonsets
    DaemonSets,
    /// leases
    Leases,
    /// configmaps
    ConfigMaps,
    /// secrets
    Secrets,
    /// poddisruptionbudgets
    PodDisruptionBudgets,
    /// serviceaccounts
    ServiceAccounts,
    /// roles (rbac.authorization.k8s.io)
    Roles,
    /// rolebindings
    RoleBindings,
    /// clusterroles
    ClusterRoles,
    /// clusterrolebindings
    ClusterRoleBindings,
    /// controllerrevisions (apps)
    ControllerRevisions,
}

/// One served resource (group/version/plural).
#[derive(Debug)]
pub struct ResourceDef {
    /// API group, "" for core.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Plural, e.g. `pods`.
    pub plural: &'static str,
    /// Singular, e.g. `pod`.
    pub singular: &'static str,
    /// Kind, e.g. `Pod`.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// kubectl short names.
    pub short_names: &'static [&'static str],
    /// Categories (e.g. `all`).
    pub categories: &'static [&'static str],
    /// Has the `status` subresource.
    pub has_status: bool,
    /// `PUT` on a missing object creates it (leases, events).
    pub create_on_update: bool,
    /// Maintains `metadata.generation` on spec changes.
    pub has_generation: bool,
    /// `DELETE` answers with the deleted object rather than a `Status`.
    pub return_deleted_object: bool,
    /// Shared storage.
    pub storage: Storage,
    /// Verbs published in discovery.
    pub verbs: &'static [&'static str],
    /// Field selectors supported besides metadata.name/metadata.namespace.
    pub fields: &'static [&'static str],
}

const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NS_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// events.k8s.io/v1 field labels (converted to the core names, as the real
/// field label conversion does).
const EVENT_V1_FIELDS: &[&str] = &[
    "regarding.kind",
    "regarding.namespace",
    "regarding.name",
    "regarding.uid",
    "regarding.apiVersion",
    "regarding.resourceVersion",
    "regarding.fieldPath",
    "reason",
    "reportingController",
    "type",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every served resource.
pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        has_status: true,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Nodes,
        verbs: ALL_VERBS,
        fields: &["spec.unschedulable"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: true,
        storage: Storage::Pods,
        verbs: ALL_VERBS,
        fields: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_status: true,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: true,
        storage: Storage::Namespaces,
        verbs: NS_VERBS,
        fields: &["status.phase"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        create_on_update: true,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Events,
        verbs: ALL_VERBS,
        fields: EVENT_FIELDS,
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        has_status: true,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: true,
        storage: Storage::Services,
        verbs: ALL_VERBS,
        fields: &["spec.clusterIP", "spec.type"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::ConfigMaps,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Secrets,
        verbs: ALL_VERBS,
        fields: &["type"],
    },
    ResourceDef {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::ServiceAccounts,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        has_status: true,
        create_on_update: false,
        has_generation: true,
        return_deleted_object: false,
        storage: Storage::Deployments,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        has_status: true,
        create_on_update: false,
        has_generation: true,
        return_deleted_object: false,
        storage: Storage::ReplicaSets,
        verbs: ALL_VERBS,
        fields: &["status.replicas"],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        namespaced: true,
        short_names: &["ds"],
        categories: &["all"],
        has_status: true,
        create_on_update: false,
        has_generation: true,
        return_deleted_object: false,
        storage: Storage::DaemonSets,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        kind: "ControllerRevision",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::ControllerRevisions,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short_names: &["pdb"],
        categories: &[],
        has_status: true,
        create_on_update: false,
        has_generation: true,
        return_deleted_object: false,
        storage: Storage::PodDisruptionBudgets,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: true,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Leases,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        create_on_update: true,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Events,
        verbs: ALL_VERBS,
        fields: EVENT_V1_FIELDS,
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::Roles,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::RoleBindings,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::ClusterRoles,
        verbs: ALL_VERBS,
        fields: &[],
    },
    ResourceDef {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        categories: &[],
        has_status: false,
        create_on_update: false,
        has_generation: false,
        return_deleted_object: false,
        storage: Storage::ClusterRoleBindings,
        verbs: ALL_VERBS,
        fields: &[],
    },
];

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `PodList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether this is the events.k8s.io view of the shared event storage.
    pub fn is_events_v1(&self) -> bool {
        self.group == "events.k8s.io"
    }

    /// Field selector labels this resource supports.
    pub fn supports_field(&self, f: &str) -> bool {
        f == "metadata.name"
            || (self.namespaced && f == "metadata.namespace")
            || self.fields.contains(&f)
    }
}

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The groups served under /apis, in discovery order.
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

/// Whether a group/version is served.
pub fn group_version_exists(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}
