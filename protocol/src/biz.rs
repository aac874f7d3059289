//! Biz (module) shapes on the wire (spec protocol §4.3).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::state::{ArkResultCode, BizState, ProcessStatus, StateChangeReason};

/// One state change of a biz; holds the *new* state (spec protocol §4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRecord {
    /// Epoch milliseconds.
    pub change_time: i64,
    /// Free text, `""` by default.
    #[serde(default)]
    pub message: String,
    /// Why.
    pub reason: StateChangeReason,
    /// The state entered.
    pub state: BizState,
}

/// The sofa-ark `BizModel` inside install responses (`ClientResponse.bizInfos`).
///
/// Upstream always writes every property; most are optional here so that abbreviated
/// documents (and other producers) still decode. Our agent fills them all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizModel {
    /// Manifest attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    /// Name (from the manifest).
    pub biz_name: String,
    /// Current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_state: Option<BizState>,
    /// Full state history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_state_records: Option<Vec<StateRecord>>,
    /// Where the package was unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_temp_work_dir: Option<String>,
    /// URL of the unpacked package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_url: Option<String>,
    /// Version (from the manifest).
    pub biz_version: String,
    /// Class path URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_path: Option<Vec<String>>,
    /// sofa-ark declared mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_mode: Option<bool>,
    /// Deny-import lists, written as empty arrays by upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_import_classes: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_import_package_nodes: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_import_package_stems: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_import_packages: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_import_resources: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_prefix_import_resource_stems: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_suffix_import_resource_stems: Option<Vec<String>>,
    /// `name:version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_export_packages: Option<Vec<String>>,
    #[doc(hidden)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_plugin_dependencies: Option<Vec<String>>,
    /// Main class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_class: Option<String>,
    /// Manifest `priority` (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Web context path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_context_path: Option<String>,
}

/// A queryAllBiz element (Arklet `BizInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizInfo {
    /// Name.
    pub biz_name: String,
    /// State.
    pub biz_state: BizState,
    /// Full state history.
    #[serde(default)]
    pub biz_state_records: Vec<StateRecord>,
    /// Version.
    pub biz_version: String,
    /// Main class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_class: Option<String>,
    /// Web context path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_context_path: Option<String>,
}

/// sofa-ark `ClientResponse`, plus `elapsedSpace` for installs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientResponse {
    /// Installed biz (install success only, one element upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_infos: Option<Vec<BizModel>>,
    /// Inner result code.
    pub code: ArkResultCode,
    /// Metaspace delta in bytes over the install; may be negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_space: Option<i64>,
    /// Human-readable result.
    #[serde(default)]
    pub message: String,
}

/// `batchInstallBiz` result data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInstallResponse {
    /// Per item, keyed by `bizUrl` (absent when the batch failed before running items).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biz_url_to_response: Option<BTreeMap<String, ClientResponse>>,
    /// `SUCCESS` iff every item succeeded, else `FAILED`.
    pub code: ArkResultCode,
    /// Metaspace delta over the whole batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_space: Option<i64>,
    /// `batch install success` / `batch install failed`.
    #[serde(default)]
    pub message: String,
}

/// One `help` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandModel {
    /// Description text.
    pub desc: String,
    /// Command id (the HTTP path).
    pub id: String,
}

/// An async operation record (`ProcessRecord`), readable through `queryBizOps`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRecord {
    /// The original command input, as parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ark_biz_meta: Option<serde_json::Value>,
    /// `end - start` in ms; 0 until finished.
    #[serde(default)]
    pub elapsed_time: i64,
    /// End time, ms; absent until finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    /// End time, ms; 0 until finished.
    #[serde(default)]
    pub end_timestamp: i64,
    /// Two-level error code (spec protocol §7) of a failed operation; upstream declares the
    /// field and never sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request id.
    pub request_id: String,
    /// Creation time, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<i64>,
    /// Creation time, ms.
    #[serde(default)]
    pub start_timestamp: i64,
    /// Status.
    pub status: ProcessStatus,
    /// Worker that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_name: Option<String>,
    /// Java exception bean (upstream only); kept opaque.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throwable: Option<serde_json::Value>,
}

/// MQTT `simpleBiz` element. Written with explicit nulls (fastjson `WriteMapNullValue`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleBizInfo {
    /// The last state record (upper-case enums over MQTT), `null` if there is none.
    pub latest_state_record: Option<StateRecord>,
    /// Name.
    pub name: Option<String>,
    /// State, always lower-case (Java `getBizState()` returns `toString()`).
    #[serde(serialize_with = "crate::state::lower::serialize")]
    pub state: BizState,
    /// Version.
    pub version: Option<String>,
}

impl From<&BizInfo> for SimpleBizInfo {
    fn from(b: &BizInfo) -> Self {
        SimpleBizInfo {
            latest_state_record: b.biz_state_records.last().cloned(),
            name: Some(b.biz_name.clone()),
            state: b.biz_state,
            version: Some(b.biz_version.clone()),
        }
    }
}

/// What the controller asks a base to run: ark `BizModel` `{bizName, bizVersion, bizUrl}`
/// (controller → base requests and the baseline), each omitted when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizSpec {
    /// Module name (the pod container name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub biz_name: String,
    /// Module version (container env `BIZ_VERSION`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub biz_version: String,
    /// Package URL (container image).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub biz_url: String,
}
