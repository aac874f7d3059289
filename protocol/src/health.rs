//! The `health` command: request and the `healthData` document (spec protocol §3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lenient::{self, LenientRequest};
use crate::state::BizState;

/// `POST /health` input. All fields optional; an empty body means "everything".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthRequest {
    /// `system`, `biz`, `plugin`, or empty for everything.
    #[serde(
        default,
        rename = "type",
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub kind: Option<String>,
    /// Indicator ids to include (`cpu`, `jvm`); empty means all.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub metrics: Option<Vec<String>>,
    /// Module name filter (plugin name for `type=plugin`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_name: Option<String>,
    /// Module version filter.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_version: Option<String>,
}

impl LenientRequest for HealthRequest {
    const FIELDS: &'static [&'static str] = &[
        "type",
        "metrics",
        "bizName",
        "bizVersion",
        "requestId",
        "async",
    ];
}

/// The JVM indicator (`healthData.jvm`), keys exactly as the Java `JvmIndicator` writes them.
///
/// Every field is optional so that partial reports (the Go mock bases send only the metaspace
/// keys) decode; a producer fills them all. MiB, percent and seconds are floats; counts and
/// metaspace bytes are integers because the Go decoder is strict about that (trap T3).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JvmInfo {
    /// `System.getProperty("java.version")`.
    #[serde(
        rename = "java version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub java_version: Option<String>,
    /// `System.getProperty("java.home")`.
    #[serde(rename = "java home", default, skip_serializing_if = "Option::is_none")]
    pub java_home: Option<String>,
    /// `Runtime.totalMemory()` in MiB.
    #[serde(
        rename = "total memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_memory_mib: Option<f64>,
    /// `Runtime.maxMemory()` in MiB.
    #[serde(
        rename = "max memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_memory_mib: Option<f64>,
    /// `Runtime.freeMemory()` in MiB.
    #[serde(
        rename = "free memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub free_memory_mib: Option<f64>,
    /// Heap `init` in MiB.
    #[serde(
        rename = "init heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub init_heap_mib: Option<f64>,
    /// Heap `used` in MiB.
    #[serde(
        rename = "used heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub used_heap_mib: Option<f64>,
    /// Heap `committed` in MiB.
    #[serde(
        rename = "committed heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub committed_heap_mib: Option<f64>,
    /// Heap `max` in MiB (−1 byte, i.e. `-9.5367431640625E-7`, when undefined).
    #[serde(
        rename = "max heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_heap_mib: Option<f64>,
    /// Non-heap `init` in MiB.
    #[serde(
        rename = "init non heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub init_non_heap_mib: Option<f64>,
    /// Non-heap `used` in MiB.
    #[serde(
        rename = "used non heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub used_non_heap_mib: Option<f64>,
    /// Non-heap `committed` in MiB.
    #[serde(
        rename = "committed non heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub committed_non_heap_mib: Option<f64>,
    /// Non-heap `max` in MiB (usually undefined: −1 byte).
    #[serde(
        rename = "max non heap memory(M)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_non_heap_mib: Option<f64>,
    /// Classes currently loaded.
    #[serde(
        rename = "loaded class count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub loaded_class_count: Option<i64>,
    /// Classes unloaded since start.
    #[serde(
        rename = "unload class count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub unload_class_count: Option<i64>,
    /// Classes loaded since start.
    #[serde(
        rename = "total class count",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_class_count: Option<i64>,
    /// JVM uptime in seconds.
    #[serde(
        rename = "run time(s)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub run_time_s: Option<f64>,
    /// Metaspace used, bytes; −1 if unknown.
    #[serde(
        rename = "java used metaspace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub used_metaspace: Option<i64>,
    /// Metaspace committed, bytes; −1 if unknown.
    #[serde(
        rename = "java committed metaspace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub committed_metaspace: Option<i64>,
    /// `MaxMetaspaceSize`, bytes; −1 if unlimited (the HotSpot default) or unknown.
    #[serde(
        rename = "java max metaspace",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub max_metaspace: Option<i64>,
}

/// MiB as the Java side computes it: `bytes / 1024 / 1024` in double precision. A negative
/// byte count (−1 = undefined) therefore becomes `-9.5367431640625E-7`, as upstream shows.
pub fn bytes_to_mib(bytes: i64) -> f64 {
    bytes as f64 / 1024.0 / 1024.0
}

/// The CPU indicator (`healthData.cpu`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Logical processors available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    /// Processor model name.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Upstream: cumulative CPU ticks since start (not a percentage, trap T6).
    #[serde(
        rename = "total used (%)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub total_used: Option<f64>,
    /// User time share, percent.
    #[serde(
        rename = "user used (%)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub user_used: Option<f64>,
    /// System time share, percent.
    #[serde(
        rename = "system used (%)",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub system_used: Option<f64>,
    /// Idle share, percent.
    #[serde(rename = "free (%)", default, skip_serializing_if = "Option::is_none")]
    pub free: Option<f64>,
}

/// A biz in the health report (`BizHealthMeta`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizHealthMeta {
    /// Module name.
    pub biz_name: String,
    /// State, spelled per transport.
    pub biz_state: BizState,
    /// Module version.
    pub biz_version: String,
    /// Web context path (`/` for the base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_context_path: Option<String>,
}

/// A plugin in the health report (`PluginHealthMeta`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginHealthMeta {
    /// Maven artifact id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_id: Option<String>,
    /// Maven group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// Activator class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_activator: Option<String>,
    /// Plugin name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    /// Plugin URL path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_url: Option<String>,
    /// Plugin version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
}

/// `data.healthData`: which keys appear depends on the request (spec protocol §3.2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthData {
    /// JVM indicator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jvm: Option<JvmInfo>,
    /// CPU indicator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuInfo>,
    /// The base itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_biz_info: Option<BizHealthMeta>,
    /// One biz (name + version filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_info: Option<BizHealthMeta>,
    /// All biz, or all versions of a name; includes the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_list_info: Option<Vec<BizHealthMeta>>,
    /// One plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_info: Option<PluginHealthMeta>,
    /// All plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_list_info: Option<Vec<PluginHealthMeta>>,
    /// Custom indicators registered in the base, by id.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `data` of a successful health response.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The report.
    pub health_data: HealthData,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_byte_is_the_java_sentinel() {
        assert_eq!(bytes_to_mib(-1), -9.5367431640625E-7);
        assert_eq!(bytes_to_mib(64 * 1024 * 1024), 64.0);
    }

    #[test]
    fn jvm_keys_are_exact() {
        let j = JvmInfo {
            max_heap_mib: Some(885.5),
            used_metaspace: Some(51380224),
            loaded_class_count: Some(10),
            ..JvmInfo::default()
        };
        let s = String::from_utf8(crate::transport::encode(&j, Default::default())).unwrap();
        assert_eq!(
            s,
            r#"{"max heap memory(M)":885.5,"loaded class count":10,"java used metaspace":51380224}"#
        );
    }
}
