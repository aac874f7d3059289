//! What the controller knows about a base: from its heartbeats and health reports, or, for a
//! Node rediscovered at start-up, from the Node itself. Pure data and conversions.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use koupleless_protocol::{BaseStatus, BizState, HealthData, JvmInfo};

use crate::labels;

/// Node memory derived from the JVM metaspace (spec controller §1.7).
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// `status.capacity.memory`.
    pub capacity: Quantity,
    /// `status.allocatable.memory`.
    pub allocatable: Quantity,
}

/// Facts about one base that shape its Node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BaseFacts {
    /// `baseMetadata.name`.
    pub base_name: String,
    /// `baseMetadata.version`.
    pub version: String,
    /// `baseMetadata.clusterName`.
    pub cluster_name: String,
    /// `localHostName`.
    pub host_name: String,
    /// `localIP`.
    pub ip: String,
    /// Arklet HTTP port; 0 when unknown (MQTT heartbeats carry 0).
    pub port: u16,
    /// Memory from the last health report, if any.
    pub memory: Option<Memory>,
    /// The base answers but its runtime is down: the last health report's `masterBizInfo`
    /// said BROKEN (our agent, while the base JVM is gone or hung). The Node then shows
    /// Ready=False and is kept, so a JVM restart loses no module Pod; upstream deletes it.
    pub runtime_down: bool,
}

/// `<bytes/1024>Ki`, floored and clamped at zero, as upstream converts (spec controller §1.7).
pub fn ki(bytes: i64) -> Quantity {
    Quantity(format!("{}Ki", bytes.max(0) / 1024))
}

/// Capacity = max metaspace, allocatable = max − committed. When the max is unknown or
/// unlimited (−1), `fallback` bytes stand in for it (upstream advertises 0, so modules with a
/// memory request never schedule); with no fallback both are 0 like upstream.
pub fn memory_from_jvm(jvm: &JvmInfo, fallback: Option<i64>) -> Memory {
    let committed = jvm.committed_metaspace.filter(|c| *c >= 0);
    let max = jvm.max_metaspace.filter(|m| *m >= 0).or(fallback);
    match max {
        Some(max) => Memory {
            capacity: ki(max),
            allocatable: ki(max - committed.unwrap_or(0)),
        },
        None => Memory {
            capacity: ki(0),
            allocatable: ki(0),
        },
    }
}

impl BaseFacts {
    /// Facts from a heartbeat (no memory yet).
    pub fn from_heartbeat(status: &BaseStatus) -> BaseFacts {
        let mut f = BaseFacts::default();
        f.apply_heartbeat(status);
        f
    }

    /// Takes the metadata and address of a heartbeat; returns whether anything changed. A zero
    /// port keeps the known one: MQTT heartbeats always say 0 (trap T21).
    pub fn apply_heartbeat(&mut self, status: &BaseStatus) -> bool {
        let m = &status.base_metadata;
        let next = BaseFacts {
            base_name: m.name.clone(),
            version: m.version.clone(),
            cluster_name: m.cluster_name.clone(),
            host_name: status.local_host_name.clone(),
            ip: status.local_ip.clone(),
            port: if status.port != 0 {
                status.port
            } else {
                self.port
            },
            memory: self.memory.clone(),
            runtime_down: self.runtime_down,
        };
        let changed = next != *self;
        *self = next;
        changed
    }

    /// Takes the memory and the runtime state of a health report; returns whether either
    /// changed. A report without a JVM section leaves the memory as it was, one without
    /// `masterBizInfo` the runtime state.
    pub fn apply_health(&mut self, data: &HealthData, fallback: Option<i64>) -> bool {
        let mut changed = false;
        if let Some(master) = &data.master_biz_info {
            let down = master.biz_state == BizState::Broken;
            changed |= down != self.runtime_down;
            self.runtime_down = down;
        }
        let Some(jvm) = &data.jvm else {
            return changed;
        };
        let memory = Some(memory_from_jvm(jvm, fallback));
        changed |= memory != self.memory;
        self.memory = memory;
        changed
    }

    /// Facts recovered from an existing Node, for a base not heard from since start-up.
    pub fn from_node(node: &Node) -> BaseFacts {
        let label = |k: &str| {
            node.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(k))
                .cloned()
                .unwrap_or_default()
        };
        let status = node.status.as_ref();
        // The last address of a kind: with a kubelet address configured, the Node lists it
        // first and the base's own `InternalIP` after it.
        let address = |kind: &str| {
            status
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.iter().rev().find(|a| a.type_ == kind))
                .map(|a| a.address.clone())
        };
        let memory = status.and_then(|s| {
            let cap = s.capacity.as_ref()?.get("memory")?.clone();
            let alloc = s.allocatable.as_ref()?.get("memory")?.clone();
            Some(Memory {
                capacity: cap,
                allocatable: alloc,
            })
        });
        BaseFacts {
            base_name: label(labels::BASE_NAME),
            version: label(labels::BASE_VERSION),
            cluster_name: label(labels::BASE_CLUSTER_NAME),
            host_name: address("Hostname").unwrap_or_else(|| label(labels::HOSTNAME)),
            ip: address("InternalIP").unwrap_or_default(),
            port: label(labels::BASE_TUNNEL_PORT).parse().unwrap_or(0),
            memory,
            runtime_down: false,
        }
    }

    /// Address of the base's Arklet HTTP API: `localIP` (127.0.0.1 when empty, as upstream)
    /// and the port, or the Arklet default 1238 when unknown (spec protocol §6.1).
    pub fn arklet_endpoint(&self) -> (String, u16) {
        let ip = if self.ip.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            self.ip.clone()
        };
        let port = if self.port == 0 {
            labels::DEFAULT_ARKLET_PORT
        } else {
            self.port
        };
        (ip, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::{BaseMetadata, BizState};

    fn status(port: u16) -> BaseStatus {
        BaseStatus {
            base_metadata: BaseMetadata {
                cluster_name: "default".into(),
                identity: "10.0.0.5".into(),
                name: "base".into(),
                version: "1.0.0".into(),
            },
            local_host_name: "base-pod-1".into(),
            local_ip: "10.0.0.5".into(),
            port,
            state: BizState::Activated,
        }
    }

    fn jvm(max: Option<i64>, committed: Option<i64>) -> JvmInfo {
        JvmInfo {
            max_metaspace: max,
            committed_metaspace: committed,
            ..JvmInfo::default()
        }
    }

    #[test]
    fn ki_conversion_table() {
        for (bytes, want) in [
            (0, "0Ki"),
            (1023, "0Ki"),
            (1024, "1Ki"),
            (268435456, "262144Ki"),
            (-1, "0Ki"),
        ] {
            assert_eq!(ki(bytes).0, want, "{bytes}");
        }
    }

    #[test]
    fn memory_table() {
        let m = |c: &str, a: &str| Memory {
            capacity: Quantity(c.into()),
            allocatable: Quantity(a.into()),
        };
        let gib = 1 << 30;
        let cases = [
            // Upstream: max 256 MiB, committed 80 MiB.
            (
                jvm(Some(256 << 20), Some(80 << 20)),
                None,
                m("262144Ki", "180224Ki"),
            ),
            // Committed above max never goes negative.
            (jvm(Some(1024), Some(4096)), None, m("1Ki", "0Ki")),
            // Unlimited metaspace: upstream advertises 0 ...
            (jvm(Some(-1), Some(80 << 20)), None, m("0Ki", "0Ki")),
            // ... we fall back to the configured bound.
            (
                jvm(Some(-1), Some(256 << 20)),
                Some(gib),
                m("1048576Ki", "786432Ki"),
            ),
            (jvm(None, None), Some(gib), m("1048576Ki", "1048576Ki")),
            // The Go mock base reports max = committed = 1024.
            (jvm(Some(1024), Some(1024)), Some(gib), m("1Ki", "0Ki")),
        ];
        for (j, fallback, want) in cases {
            assert_eq!(memory_from_jvm(&j, fallback), want, "{j:?} {fallback:?}");
        }
    }

    #[test]
    fn heartbeat_and_health_changes() {
        let mut f = BaseFacts::from_heartbeat(&status(1238));
        assert_eq!(f.port, 1238);
        assert!(!f.apply_heartbeat(&status(1238)));
        // A zero port (MQTT) keeps the known one.
        assert!(!f.apply_heartbeat(&status(0)));
        assert_eq!(f.port, 1238);
        let mut moved = status(1238);
        moved.local_ip = "10.0.0.6".into();
        assert!(f.apply_heartbeat(&moved));
        assert_eq!(f.arklet_endpoint(), ("10.0.0.6".to_owned(), 1238));

        let health = HealthData {
            jvm: Some(jvm(Some(2048), Some(1024))),
            ..HealthData::default()
        };
        assert!(f.apply_health(&health, None));
        assert!(!f.apply_health(&health, None));
        assert!(!f.apply_health(&HealthData::default(), None));
        assert_eq!(f.memory.as_ref().unwrap().capacity.0, "2Ki");
        // Memory survives heartbeats.
        assert!(!f.apply_heartbeat(&moved));
        assert!(f.memory.is_some());
        // BROKEN marks the runtime down; ACTIVATED clears it; no masterBizInfo keeps it.
        let master = |state| HealthData {
            master_biz_info: Some(koupleless_protocol::BizHealthMeta {
                biz_name: "base".into(),
                biz_state: state,
                biz_version: "1.0.0".into(),
                web_context_path: None,
            }),
            ..HealthData::default()
        };
        assert!(f.apply_health(&master(BizState::Broken), None));
        assert!(f.runtime_down);
        assert!(!f.apply_health(&HealthData::default(), None));
        assert!(f.runtime_down);
        assert!(!f.apply_heartbeat(&moved), "heartbeats leave it");
        assert!(f.apply_health(&master(BizState::Activated), None));
        assert!(!f.runtime_down);
    }

    #[test]
    fn endpoint_defaults() {
        let f = BaseFacts::default();
        assert_eq!(f.arklet_endpoint(), ("127.0.0.1".to_owned(), 1238));
    }
}
