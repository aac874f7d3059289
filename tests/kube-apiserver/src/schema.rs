//! The list semantics of the served types, as published by the real API
//! (`x-kubernetes-list-type`/`x-kubernetes-list-map-keys` for server-side
//! apply and `patchStrategy`/`patchMergeKey` for strategic merge patch).
//! Only the lists of the served kinds are described; any other list is
//! atomic (replaced as a whole), which is also the real default.

/// How a list merges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars (merged by value).
    Set,
    /// Objects keyed by the named fields.
    Map(&'static [&'static str]),
}

const POD_SPEC_LISTS: &[(&str, ListType)] = &[
    ("containers", ListType::Map(&["name"])),
    ("initContainers", ListType::Map(&["name"])),
    ("ephemeralContainers", ListType::Map(&["name"])),
    ("volumes", ListType::Map(&["name"])),
    ("imagePullSecrets", ListType::Map(&["name"])),
    ("hostAliases", ListType::Map(&["ip"])),
    ("topologySpreadConstraints", ListType::Map(&["topologyKey"])),
    ("schedulingGates", ListType::Map(&["name"])),
    ("resourceClaims", ListType::Map(&["name"])),
];

const CONTAINER_LISTS: &[(&str, ListType)] = &[
    ("env", ListType::Map(&["name"])),
    ("ports", ListType::Map(&["containerPort"])),
    ("volumeMounts", ListType::Map(&["mountPath"])),
    ("volumeDevices", ListType::Map(&["devicePath"])),
];

/// The list type of the field at `path` (field names only, list positions
/// omitted) in an object of `kind`.
pub fn list_type(kind: &str, path: &[&str]) -> ListType {
    // ObjectMeta, at the top and inside pod templates.
    let meta_rest = match path {
        ["metadata", rest @ ..] => Some(rest),
        ["spec", "template", "metadata", rest @ ..] => Some(rest),
        _ => None,
    };
    if let Some(rest) = meta_rest {
        return match rest {
            ["finalizers"] => ListType::Set,
            ["ownerReferences"] => ListType::Map(&["uid"]),
            _ => ListType::Atomic,
        };
    }
    let pod_spec_rest: Option<&[&str]> = match (kind, path) {
        ("Pod", ["spec", rest @ ..]) => Some(rest),
        ("Deployment" | "ReplicaSet" | "DaemonSet", ["spec", "template", "spec", rest @ ..]) => {
            Some(rest)
        }
        _ => None,
    };
    if let Some(rest) = pod_spec_rest {
        return match rest {
            [field] => lookup(POD_SPEC_LISTS, field),
            [
                "containers" | "initContainers" | "ephemeralContainers",
                field,
            ] => lookup(CONTAINER_LISTS, field),
            _ => ListType::Atomic,
        };
    }
    match (kind, path) {
        ("Pod", ["status", "conditions"]) => ListType::Map(&["type"]),
        ("Pod", ["status", "podIPs" | "hostIPs"]) => ListType::Map(&["ip"]),
        ("Pod", ["status", "resourceClaimStatuses"]) => ListType::Map(&["name"]),
        ("Node", ["status", "conditions" | "addresses"]) => ListType::Map(&["type"]),
        ("Node", ["spec", "podCIDRs"]) => ListType::Set,
        ("Service", ["spec", "ports"]) => ListType::Map(&["port"]),
        ("Namespace" | "Deployment" | "ReplicaSet" | "DaemonSet", ["status", "conditions"]) => {
            ListType::Map(&["type"])
        }
        _ => ListType::Atomic,
    }
}

fn lookup(table: &[(&str, ListType)], field: &str) -> ListType {
    table
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, t)| t.clone())
        .unwrap_or(ListType::Atomic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_lists() {
        assert_eq!(
            list_type("Pod", &["status", "conditions"]),
            ListType::Map(&["type"])
        );
        assert_eq!(
            list_type("Pod", &["status", "containerStatuses"]),
            ListType::Atomic
        );
        assert_eq!(
            list_type("Pod", &["spec", "containers", "env"]),
            ListType::Map(&["name"])
        );
        assert_eq!(
            list_type("Deployment", &["spec", "template", "spec", "containers"]),
            ListType::Map(&["name"])
        );
        assert_eq!(
            list_type("Node", &["metadata", "finalizers"]),
            ListType::Set
        );
        assert_eq!(list_type("Node", &["spec", "taints"]), ListType::Atomic);
    }
}
