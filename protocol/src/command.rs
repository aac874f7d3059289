//! Arklet commands: ids, request bodies and the response envelope (spec protocol §2).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error_code::ErrorCode;
use crate::lenient::{self, LenientRequest};
use crate::state::ResponseCode;

/// A built-in Arklet command; the id is the HTTP path without its leading `/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandId {
    /// `help`
    Help,
    /// `installBiz`
    InstallBiz,
    /// `batchInstallBiz`
    BatchInstallBiz,
    /// `uninstallBiz`
    UninstallBiz,
    /// `switchBiz`
    SwitchBiz,
    /// `queryAllBiz`
    QueryAllBiz,
    /// `health`
    Health,
    /// `queryBizOps`
    QueryBizOps,
}

impl CommandId {
    /// Every built-in command, in the order `help` lists them.
    pub const ALL: [CommandId; 8] = [
        CommandId::InstallBiz,
        CommandId::Help,
        CommandId::QueryAllBiz,
        CommandId::UninstallBiz,
        CommandId::SwitchBiz,
        CommandId::Health,
        CommandId::QueryBizOps,
        CommandId::BatchInstallBiz,
    ];

    /// The id on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandId::Help => "help",
            CommandId::InstallBiz => "installBiz",
            CommandId::BatchInstallBiz => "batchInstallBiz",
            CommandId::UninstallBiz => "uninstallBiz",
            CommandId::SwitchBiz => "switchBiz",
            CommandId::QueryAllBiz => "queryAllBiz",
            CommandId::Health => "health",
            CommandId::QueryBizOps => "queryBizOps",
        }
    }

    /// The exact `desc` text `help` reports (including upstream's copy-paste for batch).
    pub fn desc(self) -> &'static str {
        match self {
            CommandId::Help => "list all supported commands",
            CommandId::InstallBiz | CommandId::BatchInstallBiz => "install one ark biz",
            CommandId::UninstallBiz => "uninstall one ark biz",
            CommandId::SwitchBiz => "switch one ark biz",
            CommandId::QueryAllBiz => "query all ark biz(including master biz)",
            CommandId::Health => "get all health info",
            CommandId::QueryBizOps => "query ark biz ops",
        }
    }

    /// Whether the command changes modules and so takes the per-biz lock (`ArkBizOps`).
    pub fn is_biz_ops(self) -> bool {
        matches!(
            self,
            CommandId::InstallBiz
                | CommandId::BatchInstallBiz
                | CommandId::UninstallBiz
                | CommandId::SwitchBiz
        )
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An id that names no built-in command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0} not found handler")]
pub struct UnknownCommand(pub String);

impl FromStr for CommandId {
    type Err = UnknownCommand;
    /// Exact and case-sensitive, like the Java router (`/installbiz` is not `installBiz`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CommandId::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCommand(s.into()))
    }
}

/// Install strategy; anything unrecognised silently means `installOnly`, as upstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InstallStrategy {
    /// Install; a registered identity gives `REPEAT_BIZ`.
    #[default]
    InstallOnly,
    /// Uninstall every registered version of the name first.
    UninstallThenInstall,
}

impl InstallStrategy {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            InstallStrategy::InstallOnly => "installOnly",
            InstallStrategy::UninstallThenInstall => "uninstallThenInstall",
        }
    }

    /// Upstream `getStrategyByName`: exact match, else `installOnly`.
    pub fn from_wire(s: Option<&str>) -> InstallStrategy {
        match s {
            Some("uninstallThenInstall") => InstallStrategy::UninstallThenInstall,
            _ => InstallStrategy::InstallOnly,
        }
    }
}

/// `installBiz` input (also one `batchInstallBiz` item).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallBizRequest {
    /// Arguments for the biz main method.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string_list",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Vec<String>>,
    /// Async mode.
    #[serde(
        default,
        deserialize_with = "lenient::flag",
        skip_serializing_if = "is_false"
    )]
    pub r#async: bool,
    /// Module name; with `bizVersion` or neither.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_name: Option<String>,
    /// Package URL (`file://`, `http(s)://`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_url: Option<String>,
    /// Module version.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_version: Option<String>,
    /// Start environment (`sofa.ark.biz.main.class` overrides the main class).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub envs: Option<BTreeMap<String, String>>,
    /// `installOnly` (default) or `uninstallThenInstall`.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub install_strategy: Option<String>,
    /// Async record key.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
}

impl InstallBizRequest {
    /// The strategy this request selects.
    pub fn strategy(&self) -> InstallStrategy {
        InstallStrategy::from_wire(self.install_strategy.as_deref())
    }
}

impl LenientRequest for InstallBizRequest {
    const FIELDS: &'static [&'static str] = &[
        "args",
        "async",
        "bizName",
        "bizUrl",
        "bizVersion",
        "envs",
        "installStrategy",
        "requestId",
    ];
}

/// `uninstallBiz` and `switchBiz` input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BizOpRequest {
    /// Async mode.
    #[serde(
        default,
        deserialize_with = "lenient::flag",
        skip_serializing_if = "is_false"
    )]
    pub r#async: bool,
    /// Module name (required).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_name: Option<String>,
    /// Module version (required).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_version: Option<String>,
    /// Async record key.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
}

impl LenientRequest for BizOpRequest {
    const FIELDS: &'static [&'static str] = &["async", "bizName", "bizVersion", "requestId"];
}

/// `batchInstallBiz` input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchInstallBizRequest {
    /// Async mode.
    #[serde(
        default,
        deserialize_with = "lenient::flag",
        skip_serializing_if = "is_false"
    )]
    pub r#async: bool,
    /// The items (`null` is a validation error).
    #[serde(
        default,
        deserialize_with = "lenient_items",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_list: Option<Vec<InstallBizRequest>>,
    /// Lock key name (normally absent, so the key is `null:null`).
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_name: Option<String>,
    /// Lock key version.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub biz_version: Option<String>,
    /// Async record key.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
}

fn lenient_items<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<InstallBizRequest>>, D::Error> {
    let Some(items) = Option::<Vec<serde_json::Value>>::deserialize(d)? else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| {
            lenient::decode_value::<InstallBizRequest>(v)
                .map(Option::unwrap_or_default)
                .map_err(serde::de::Error::custom)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl LenientRequest for BatchInstallBizRequest {
    const FIELDS: &'static [&'static str] =
        &["async", "bizList", "bizName", "bizVersion", "requestId"];
}

/// `queryBizOps` input.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryBizOpsRequest {
    /// The async record key.
    #[serde(
        default,
        deserialize_with = "lenient::opt_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub request_id: Option<String>,
}

impl LenientRequest for QueryBizOpsRequest {
    const FIELDS: &'static [&'static str] = &["requestId"];
}

/// The HTTP response envelope (Java `Response`), spec protocol §2.2.
///
/// `errorCode` is ours: the documented two-level code (spec §7) on failures. Upstream never
/// sends it and every known client ignores unknown keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response<T> {
    /// Base identity, on SUCCESS/FAILED only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_identity: Option<String>,
    /// Envelope code.
    pub code: ResponseCode,
    /// Command output.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// Two-level error code (ours; failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// Stack trace text, internal errors only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_stack_trace: Option<String>,
    /// Failure text; absent on SUCCESS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Requests omit `async` unless it is set: MC, arkctl and the Java `arkBizMeta` of an async
/// record never write `"async":false`, so re-encoding a decoded request gives back its input.
fn is_false(b: &bool) -> bool {
    !*b
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Response<T> {
    /// `SUCCESS` with data.
    pub fn success(base_identity: impl Into<String>, data: T) -> Self {
        Response {
            base_identity: Some(base_identity.into()),
            code: ResponseCode::Success,
            data: Some(data),
            error_code: None,
            error_stack_trace: None,
            message: None,
        }
    }

    /// `FAILED`, optionally with data.
    pub fn failed(
        base_identity: impl Into<String>,
        message: impl Into<String>,
        data: Option<T>,
        error_code: ErrorCode,
    ) -> Self {
        Response {
            base_identity: Some(base_identity.into()),
            code: ResponseCode::Failed,
            data,
            error_code: Some(error_code),
            error_stack_trace: None,
            message: Some(message.into()),
        }
    }

    /// `CMD_NOT_FOUND` with upstream's fixed text.
    pub fn not_found() -> Self {
        Response {
            base_identity: None,
            code: ResponseCode::CmdNotFound,
            data: None,
            error_code: Some(ErrorCode::InvalidRequest),
            error_stack_trace: None,
            message: Some("please follow the doc".into()),
        }
    }

    /// `CMD_PROCESS_INTERNAL_ERROR`: message `Internal Error: <text>`, no `baseIdentity`.
    pub fn internal_error(text: &str, error_code: ErrorCode, stack: impl Into<String>) -> Self {
        Response {
            base_identity: None,
            code: ResponseCode::CmdProcessInternalError,
            data: None,
            error_code: Some(error_code),
            error_stack_trace: Some(stack.into()),
            message: Some(format!("Internal Error: {text}")),
        }
    }
}

/// The Arklet `Output` as MQTT replies carry it: `{code, data, message}` (no `baseIdentity`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Output<T> {
    /// `SUCCESS` or `FAILED`.
    pub code: ResponseCode,
    /// Data.
    #[serde(default = "none", skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
    /// Two-level error code (ours; failures only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// Failure text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient::decode_request;

    #[test]
    fn command_ids_round_trip_and_are_case_sensitive() {
        for c in CommandId::ALL {
            assert_eq!(c.as_str().parse::<CommandId>(), Ok(c));
        }
        assert!("installbiz".parse::<CommandId>().is_err());
        assert!("health/".parse::<CommandId>().is_err());
    }

    #[test]
    fn strategy_typos_mean_install_only() {
        let cases = [
            (None, InstallStrategy::InstallOnly),
            (Some("installOnly"), InstallStrategy::InstallOnly),
            (
                Some("uninstallThenInstall"),
                InstallStrategy::UninstallThenInstall,
            ),
            (Some("UninstallThenInstall"), InstallStrategy::InstallOnly),
            (Some("bogus"), InstallStrategy::InstallOnly),
        ];
        for (s, want) in cases {
            assert_eq!(InstallStrategy::from_wire(s), want, "{s:?}");
        }
    }

    #[test]
    fn lenient_install_request() {
        let body = br#"{"biz_name":"a","BIZVERSION":1.5,"bizUrl":"file:///x.jar","isAsync":"true","request-id":"r1","args":"--x"}"#;
        let req: InstallBizRequest = decode_request(body).unwrap().unwrap();
        assert_eq!(req.biz_name.as_deref(), Some("a"));
        assert_eq!(req.biz_version.as_deref(), Some("1.5"));
        assert!(req.r#async);
        assert_eq!(req.request_id.as_deref(), Some("r1"));
        assert_eq!(req.args, Some(vec!["--x".to_owned()]));
    }

    #[test]
    fn empty_body_is_null_input() {
        assert_eq!(decode_request::<InstallBizRequest>(b"").unwrap(), None);
        assert_eq!(decode_request::<InstallBizRequest>(b"  \n").unwrap(), None);
        assert_eq!(decode_request::<InstallBizRequest>(b"null").unwrap(), None);
        assert!(decode_request::<InstallBizRequest>(b"[1]").is_err());
        assert!(decode_request::<InstallBizRequest>(b"{\"bizName\":").is_err());
    }

    #[test]
    fn batch_items_are_lenient_too() {
        let body = br#"{"bizList":[{"biz_name":"a","bizVersion":"1","bizUrl":"u"}]}"#;
        let req: BatchInstallBizRequest = decode_request(body).unwrap().unwrap();
        assert_eq!(req.biz_list.unwrap()[0].biz_name.as_deref(), Some("a"));
    }
}
