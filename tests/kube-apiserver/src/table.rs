//! `meta.k8s.io/v1` `Table` rendering (what `kubectl get` asks for), with
//! the columns the real server prints for each kind, and
//! `PartialObjectMetadata` rendering.

use crate::resources::{ResourceDef, Storage};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// `includeObject` of a table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    /// No object in rows.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// From the query parameter.
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"].clone()})
}

fn col(name: &str, ty: &str, format: &str, priority: i32, description: &str) -> Value {
    json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
}

fn columns(def: &ResourceDef) -> Vec<Value> {
    let name = col(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    match def.storage {
        Storage::Pods => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                "",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            col(
                "IP",
                "string",
                "",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            col(
                "Node",
                "string",
                "",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            col(
                "Nominated Node",
                "string",
                "",
                1,
                "nominatedNodeName is set only when this pod preempts other pods on the node.",
            ),
            col(
                "Readiness Gates",
                "string",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Storage::Nodes => vec![
            name,
            col("Status", "string", "", 0, "The status of the node"),
            col("Roles", "string", "", 0, "The roles of the node"),
            age,
            col(
                "Version",
                "string",
                "",
                0,
                "Kubelet Version reported by the node.",
            ),
            col(
                "Internal-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            col(
                "External-IP",
                "string",
                "",
                1,
                "List of addresses reachable to the node. Queried from cloud provider, if available.",
            ),
            col(
                "OS-Image",
                "string",
                "",
                1,
                "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            col(
                "Kernel-Version",
                "string",
                "",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            col(
                "Container-Runtime",
                "string",
                "",
                1,
                "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Storage::Namespaces => {
            vec![
                name,
                col("Status", "string", "", 0, "The status of the namespace"),
                age,
            ]
        }
        Storage::Events => vec![
            col(
                "Last Seen",
                "string",
                "",
                0,
                "Time when this Event was last observed.",
            ),
            col(
                "Type",
                "string",
                "",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            col(
                "Reason",
                "string",
                "",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            col(
                "Object",
                "string",
                "",
                0,
                "The object that this event is about.",
            ),
            col(
                "Subobject",
                "string",
                "",
                1,
                "The subobject that this event is about.",
            ),
            col(
                "Source",
                "string",
                "",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            col(
                "Message",
                "string",
                "",
                0,
                "A human-readable description of the status of this operation.",
            ),
            col(
                "First Seen",
                "string",
                "",
                1,
                "The time at which the event was first recorded.",
            ),
            col(
                "Count",
                "string",
                "",
                1,
                "The number of times this event has occurred.",
            ),
            col(
                "Name",
                "string",
                "name",
                1,
                "Name must be unique within a namespace.",
            ),
        ],
        Storage::Services => vec![
            name,
            col(
                "Type",
                "string",
                "",
                0,
                "type determines how the Service is exposed.",
            ),
            col(
                "Cluster-IP",
                "string",
                "",
                0,
                "clusterIP is the IP address of the service.",
            ),
            col(
                "External-IP",
                "string",
                "",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            col(
                "Port(s)",
                "string",
                "",
                0,
                "The list of ports that are exposed by this service.",
            ),
            age,
            col(
                "Selector",
                "string",
                "",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Storage::Deployments => vec![
            name,
            col(
                "Ready",
                "string",
                "",
                0,
                "Number of the pod with ready state",
            ),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            col(
                "Containers",
                "string",
                "",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                "",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                "",
                1,
                "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
            ),
        ],
        Storage::ReplicaSets => vec![
            name,
            col(
                "Desired",
                "integer",
                "",
                0,
                "Replicas is the number of desired replicas.",
            ),
            col(
                "Current",
                "integer",
                "",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            col(
                "Ready",
                "integer",
                "",
                0,
                "The number of ready replicas for this replica set.",
            ),
            age,
            col(
                "Containers",
                "string",
                "",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                "",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                "",
                1,
                "Selector is a label query over pods that should match the replica count.",
            ),
        ],
        Storage::DaemonSets => vec![
            name,
            col(
                "Desired",
                "integer",
                "",
                0,
                "The total number of nodes that should be running the daemon pod.",
            ),
            col(
                "Current",
                "integer",
                "",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            col(
                "Ready",
                "integer",
                "",
                0,
                "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
            ),
            col(
                "Up-to-date",
                "integer",
                "",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            col(
                "Available",
                "integer",
                "",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
            ),
            col(
                "Node Selector",
                "string",
                "",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            age,
            col(
                "Containers",
                "string",
                "",
                1,
                "Names of each container in the template.",
            ),
            col(
                "Images",
                "string",
                "",
                1,
                "Images referenced by each container in the template.",
            ),
            col(
                "Selector",
                "string",
                "",
                1,
                "A label query over pods that are managed by the daemon set.",
            ),
        ],
        Storage::Leases => vec![
            name,
            col("Holder", "string", "", 0, "The holder of the lease"),
            age,
        ],
        Storage::PodDisruptionBudgets => vec![
            name,
            col(
                "Min Available",
                "string",
                "",
                0,
                "An eviction is allowed if at least \"minAvailable\" pods selected by \"selector\" will still be available after the eviction, i.e. even in the absence of the evicted pod.  So for example you can prevent all voluntary evictions by specifying \"100%\".",
            ),
            col(
                "Max Unavailable",
                "string",
                "",
                0,
                "An eviction is allowed if at most \"maxUnavailable\" pods selected by \"selector\" are unavailable after the eviction, i.e. even in absence of the evicted pod. For example, one can prevent all voluntary evictions by specifying 0. This is a mutually exclusive setting with \"minAvailable\".",
            ),
            col(
                "Allowed Disruptions",
                "integer",
                "",
                0,
                "Number of pod disruptions that are currently allowed.",
            ),
            age,
        ],
        Storage::ConfigMaps => vec![
            name,
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
            ),
            age,
        ],
        Storage::ControllerRevisions => vec![
            name,
            col("Controller", "string", "", 0, "Controller of the object"),
            col(
                "Revision",
                "integer",
                "",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            age,
        ],
        Storage::ServiceAccounts => vec![
            name,
            col(
                "Secrets",
                "string",
                "",
                0,
                "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
            ),
            age,
        ],
        Storage::Roles | Storage::ClusterRoles => vec![
            name,
            col(
                "Created At",
                "date",
                "",
                0,
                "Time when the role was created.",
            ),
        ],
        Storage::RoleBindings | Storage::ClusterRoleBindings => vec![
            name,
            col(
                "Role",
                "string",
                "",
                0,
                "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
            ),
            age,
            col("Users", "string", "", 1, "Users in the binding."),
            col("Groups", "string", "", 1, "Groups in the binding."),
            col(
                "ServiceAccounts",
                "string",
                "",
                1,
                "ServiceAccounts in the binding.",
            ),
        ],
        Storage::Secrets => vec![
            name,
            col(
                "Type",
                "string",
                "",
                0,
                "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
            ),
            col(
                "Data",
                "string",
                "",
                0,
                "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
            ),
            age,
        ],
    }
}

/// Human duration like kubectl's (`5s`, `3m2s`, `10m`, `2h5m`, `3d`).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    if s < 120 {
        return format!("{s}s");
    }
    let m = s / 60;
    if m < 10 {
        let rem = s % 60;
        return if rem == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{rem}s")
        };
    }
    if m < 180 {
        return format!("{m}m");
    }
    let h = m / 60;
    if h < 8 {
        let rem = m % 60;
        return if rem == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{rem}m")
        };
    }
    if h < 48 {
        return format!("{h}h");
    }
    let d = h / 24;
    if d < 8 {
        let rem = h % 24;
        return if rem == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{rem}h")
        };
    }
    if d < 365 * 2 {
        return format!("{d}d");
    }
    format!("{}y", d / 365)
}

fn age(ts: &Value) -> String {
    match ts
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    {
        Some(t) => human_duration((Utc::now() - t.with_timezone(&Utc)).num_seconds()),
        None => "<unknown>".into(),
    }
}

fn or_none(s: Option<&str>) -> String {
    match s {
        Some(x) if !x.is_empty() => x.to_string(),
        _ => "<none>".into(),
    }
}

fn selector_string(m: &Value) -> String {
    match m.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn label_selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(o) = sel["matchLabels"].as_object() {
        parts.extend(
            o.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())),
        );
    }
    if let Some(a) = sel["matchExpressions"].as_array() {
        for e in a {
            let key = e["key"].as_str().unwrap_or_default();
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key.to_string(),
                _ => format!("!{key}"),
            });
        }
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

fn containers_images(tpl_spec: &Value) -> (String, String) {
    let cs = tpl_spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().filter_map(|c| c["name"].as_str()).collect();
    let images: Vec<&str> = cs.iter().filter_map(|c| c["image"].as_str()).collect();
    (names.join(","), images.join(","))
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn cells(def: &ResourceDef, o: &Value) -> Vec<Value> {
    let name = json!(o["metadata"]["name"].as_str().unwrap_or_default());
    let created = age(&o["metadata"]["creationTimestamp"]);
    let spec = &o["spec"];
    let status = &o["status"];
    match def.storage {
        Storage::Pods => {
            let total = spec["containers"].as_array().map(Vec::len).unwrap_or(0);
            let cstat = status["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let ready = cstat
                .iter()
                .filter(|c| c["ready"].as_bool() == Some(true))
                .count();
            let restarts: i64 = cstat
                .iter()
                .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                .sum();
            let mut reason = status["reason"]
                .as_str()
                .or(status["phase"].as_str())
                .unwrap_or("")
                .to_string();
            for c in cstat.iter().rev() {
                if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                    reason = r.to_string();
                } else if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
                    reason = r.to_string();
                }
            }
            if !o["metadata"]["deletionTimestamp"].is_null()
                && status["reason"].as_str() != Some("NodeLost")
            {
                reason = "Terminating".into();
            }
            let gates = spec["readinessGates"].as_array().map(Vec::len).unwrap_or(0);
            let gates_s = if gates == 0 {
                "<none>".to_string()
            } else {
                let conds = status["conditions"].as_array().cloned().unwrap_or_default();
                let ok = spec["readinessGates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|g| {
                        conds.iter().any(|c| {
                            c["type"] == g["conditionType"] && c["status"].as_str() == Some("True")
                        })
                    })
                    .count();
                format!("{ok}/{gates}")
            };
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(restarts.to_string()),
                json!(created),
                json!(or_none(status["podIP"].as_str())),
                json!(or_none(spec["nodeName"].as_str())),
                json!(or_none(status["nominatedNodeName"].as_str())),
                json!(gates_s),
            ]
        }
        Storage::Nodes => {
            let conds = status["conditions"].as_array().cloned().unwrap_or_default();
            let mut st = match conds
                .iter()
                .find(|c| c["type"] == "Ready")
                .and_then(|c| c["status"].as_str())
            {
                Some("True") => "Ready".to_string(),
                Some("False") => "NotReady".to_string(),
                _ => "Unknown".to_string(),
            };
            if spec["unschedulable"].as_bool() == Some(true) {
                st.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<String> = o["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/")
                                .map(str::to_string)
                        })
                        .filter(|r| !r.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if let Some(r) = o["metadata"]["labels"]["kubernetes.io/role"].as_str() {
                roles.push(r.to_string());
            }
            let addr = |t: &str| {
                status["addresses"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["type"] == t))
                    .and_then(|x| x["address"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = &status["nodeInfo"];
            let unk = |v: &Value| match v.as_str() {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => "<unknown>".into(),
            };
            vec![
                name,
                json!(st),
                json!(if roles.is_empty() {
                    "<none>".to_string()
                } else {
                    roles.join(",")
                }),
                json!(created),
                json!(info["kubeletVersion"].as_str().unwrap_or_default()),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(unk(&info["osImage"])),
                json!(unk(&info["kernelVersion"])),
                json!(unk(&info["containerRuntimeVersion"])),
            ]
        }
        Storage::Namespaces => vec![
            name,
            json!(status["phase"].as_str().unwrap_or_default()),
            json!(created),
        ],
        Storage::Events => {
            // storage form (core/v1)
            let last = if !o["series"]["lastObservedTime"].is_null() {
                age(&o["series"]["lastObservedTime"])
            } else if !o["lastTimestamp"].is_null() {
                age(&o["lastTimestamp"])
            } else if !o["eventTime"].is_null() {
                age(&o["eventTime"])
            } else {
                age(&o["metadata"]["creationTimestamp"])
            };
            let first = if !o["firstTimestamp"].is_null() {
                age(&o["firstTimestamp"])
            } else {
                age(&o["eventTime"])
            };
            let io = &o["involvedObject"];
            let object = format!(
                "{}/{}",
                io["kind"].as_str().unwrap_or_default().to_lowercase(),
                io["name"].as_str().unwrap_or_default()
            );
            let source = match o["source"]["component"].as_str() {
                Some(c) if !c.is_empty() => match o["source"]["host"].as_str() {
                    Some(h) if !h.is_empty() => format!("{c}, {h}"),
                    _ => c.to_string(),
                },
                _ => o["reportingComponent"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            let count = o["series"]["count"]
                .as_i64()
                .or(o["count"].as_i64())
                .unwrap_or(1);
            vec![
                json!(last),
                json!(o["type"].as_str().unwrap_or_default()),
                json!(o["reason"].as_str().unwrap_or_default()),
                json!(object),
                json!(io["fieldPath"].as_str().unwrap_or_default()),
                json!(source),
                json!(o["message"].as_str().unwrap_or_default().trim()),
                json!(first),
                json!(count),
                name,
            ]
        }
        Storage::Services => {
            let ty = spec["type"].as_str().unwrap_or("ClusterIP");
            let ext = match ty {
                "LoadBalancer" => {
                    let ing: Vec<String> = status["loadBalancer"]["ingress"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|i| {
                            i["ip"]
                                .as_str()
                                .or(i["hostname"].as_str())
                                .map(str::to_string)
                        })
                        .collect();
                    if ing.is_empty() {
                        "<pending>".to_string()
                    } else {
                        ing.join(",")
                    }
                }
                "ExternalName" => spec["externalName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                _ => spec["externalIPs"]
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_else(|| "<none>".into()),
            };
            let ports: Vec<String> = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) if np != 0 => format!("{}:{}/{}", p["port"], np, proto),
                        _ => format!("{}/{}", p["port"], proto),
                    }
                })
                .collect();
            vec![
                name,
                json!(ty),
                json!(or_none(spec["clusterIP"].as_str())),
                json!(ext),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(created),
                json!(selector_string(&spec["selector"])),
            ]
        }
        Storage::Deployments => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    status["readyReplicas"].as_i64().unwrap_or(0),
                    spec["replicas"].as_i64().unwrap_or(0)
                )),
                int(&status["updatedReplicas"]),
                int(&status["availableReplicas"]),
                json!(created),
                json!(cs),
                json!(is),
                json!(label_selector_string(&spec["selector"])),
            ]
        }
        Storage::ReplicaSets => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                int(&spec["replicas"]),
                int(&status["replicas"]),
                int(&status["readyReplicas"]),
                json!(created),
                json!(cs),
                json!(is),
                json!(label_selector_string(&spec["selector"])),
            ]
        }
        Storage::DaemonSets => {
            let (cs, is) = containers_images(&spec["template"]["spec"]);
            vec![
                name,
                int(&status["desiredNumberScheduled"]),
                int(&status["currentNumberScheduled"]),
                int(&status["numberReady"]),
                int(&status["updatedNumberScheduled"]),
                int(&status["numberAvailable"]),
                json!(selector_string(&spec["template"]["spec"]["nodeSelector"])),
                json!(created),
                json!(cs),
                json!(is),
                json!(label_selector_string(&spec["selector"])),
            ]
        }
        Storage::Leases => vec![
            name,
            json!(spec["holderIdentity"].as_str().unwrap_or_default()),
            json!(created),
        ],
        Storage::PodDisruptionBudgets => {
            let bound = |v: &Value| match v {
                Value::Null => "N/A".to_string(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vec![
                name,
                json!(bound(&spec["minAvailable"])),
                json!(bound(&spec["maxUnavailable"])),
                int(&status["disruptionsAllowed"]),
                json!(created),
            ]
        }
        Storage::ConfigMaps => {
            let count = |f: &str| o[f].as_object().map_or(0, |m| m.len());
            vec![
                name,
                json!(count("data") + count("binaryData")),
                json!(created),
            ]
        }
        Storage::ControllerRevisions => {
            let controller = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["controller"] == true)
                .map(|r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .and_then(|a| a.split_once('/'))
                        .map(|(g, _)| format!(".{g}"))
                        .unwrap_or_default();
                    format!(
                        "{}{group}/{}",
                        r["kind"].as_str().unwrap_or_default().to_lowercase(),
                        r["name"].as_str().unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(controller), int(&o["revision"]), json!(created)]
        }
        Storage::ServiceAccounts => vec![
            name,
            json!(o["secrets"].as_array().map_or(0, |a| a.len())),
            json!(created),
        ],
        Storage::Roles | Storage::ClusterRoles => vec![
            name,
            json!(
                o["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
            ),
        ],
        Storage::RoleBindings | Storage::ClusterRoleBindings => {
            let subjects = |kind: &str| -> String {
                o["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["kind"] == kind)
                    .map(|s| match (kind, s["namespace"].as_str()) {
                        ("ServiceAccount", Some(ns)) => {
                            format!("{ns}/{}", s["name"].as_str().unwrap_or_default())
                        }
                        _ => s["name"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    o["roleRef"]["kind"].as_str().unwrap_or_default(),
                    o["roleRef"]["name"].as_str().unwrap_or_default()
                )),
                json!(created),
                json!(subjects("User")),
                json!(subjects("Group")),
                json!(subjects("ServiceAccount")),
            ]
        }
        Storage::Secrets => vec![
            name,
            json!(o["type"].as_str().unwrap_or_default()),
            json!(o["data"].as_object().map_or(0, |m| m.len())),
            json!(created),
        ],
    }
}

/// A `Table` for objects in storage form; `view` renders each row's object
/// in the requested API version.
pub fn table(
    def: &ResourceDef,
    objs: &[&Value],
    view: impl Fn(&Value) -> Value,
    include: IncludeObject,
    list_meta: Value,
) -> Value {
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(def, o)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = view(o),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(def),
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(60 * 30), "30m");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(3600 * 30), "30h");
        assert_eq!(human_duration(86400 * 3), "3d");
    }
}
