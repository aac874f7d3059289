//! Golden tests: every JSON example of the spec and every body captured from the real Java
//! Arklet decodes into our types and re-encodes to the same JSON value, on the transport it
//! was captured on.
//!
//! Fixtures live in `tests/fixtures/` (see its README for provenance and naming):
//! - `spec/`: the valid-JSON examples of `spec/protocol.md`, named after their section;
//! - `real-http/<case>.resp.json` / `.req.json`: HTTP response and request bodies;
//! - `real-mqtt/<scenario>.<topic tail>.json`: MQTT payloads;
//! - `*.raw`: captured payloads that are not JSON, checked in [`NOT_JSON`].
//!
//! Spec examples skipped because they are not valid JSON (placeholders):
//! - §5.4 envelope `{"data": <payload>, …}`;
//! - §5.6 (5)/(6) health reply (`"jvm":{…}`, `[…]`);
//! - §5.6 (10)-(12) bizOperation success (`{…BizModel, "bizState":"ACTIVATED"…}`);
//! - inline shapes: §1.8 `{"$ref": ...}`, §2.3 `{bizName, bizVersion, requestId, async}`,
//!   §2.4.1 `{"desc","id"}`, §2.4.2 `{bizInfos?: …}`, §3.2 `{"healthData": {...}}`, the §3.5
//!   variant results `{"cpu":{…}}` / `{"bizInfo":{…}}` / `{"bizListInfo":[…]}` /
//!   `{"pluginListInfo":[…]}` / `{"pluginInfo":{…}}`, §5.6 `{"bizList": <array>}`,
//!   `{"data":[],…}`, `{"data":{"code":"SUCCESS","data":[BizInfo…]},…}`,
//!   `{"code":"FAILED","data":{"code":"REPEAT_BIZ",…},…}`, §6.2 field lists, T15
//!   `{"bizName":…,…}`.
//!
//! Spec examples skipped although valid JSON:
//! - §3.3 `{"readinessState":"ACCEPTING_TRAFFIC"}`: the S003-only `masterBizHealth` value that
//!   the spec says no code produces; we have no type for it on purpose.
//!
//! Captured bodies without a fixture:
//! - `35_GET_help.resp`: plain text (`POST http request only supported by arklet`), not JSON;
//!   the HTTP framing belongs to the agent.
//! - `32_malformed_json.resp`, `36_json_array_body.resp`: empty, the upstream hang.
//! - `{}` request bodies of `help`, `queryAllBiz` and unknown commands (HTTP `.req` and MQTT
//!   `queryAllBiz`/`fooBar` commands): the Java side ignores that input and there is no request
//!   type for it. Non-`{}` bodies of those commands are kept (`33`, `36`).

mod common;

use std::collections::BTreeSet;

use koupleless_protocol::biz::CommandModel;
use koupleless_protocol::lenient::{self, DecodeError, LenientRequest};
use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{
    BaseMetadata, BaseStatus, BatchInstallBizRequest, BatchInstallResponse, BizInfo, BizOpRequest,
    BizSpec, ClientResponse, Envelope, Health, HealthRequest, InstallBizRequest, Output,
    ProcessRecord, QueryBizOpsRequest, Response, SimpleBizInfo,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use common::{all_fixtures, fixture, fixture_json, json_diff};

/// Decodes a fixture and re-encodes it as a JSON value.
type Decode = fn(&[u8]) -> Result<Value, String>;

/// A message body on the HTTP transport (enums by `toString()`).
fn http<T: DeserializeOwned + Serialize>(body: &[u8]) -> Result<Value, String> {
    reencode::<T>(body, Transport::Http)
}

/// A message body on the MQTT transport (enums by `name()`), also the HTTP heartbeat.
fn mqtt<T: DeserializeOwned + Serialize>(body: &[u8]) -> Result<Value, String> {
    reencode::<T>(body, Transport::Mqtt)
}

fn reencode<T: DeserializeOwned + Serialize>(body: &[u8], t: Transport) -> Result<Value, String> {
    let decoded: T = serde_json::from_slice(body).map_err(|e| format!("decode: {e}"))?;
    let bytes = transport::encode(&decoded, t);
    serde_json::from_slice(&bytes).map_err(|e| format!("our output is not JSON: {e}"))
}

/// An inbound request body, decoded leniently as the agent does.
fn req<T: LenientRequest + Serialize>(body: &[u8]) -> Result<Value, String> {
    let decoded = lenient::decode_request::<T>(body)
        .map_err(|e| format!("decode: {e}"))?
        .ok_or("decoded as a null input")?;
    let bytes = transport::encode(&decoded, Transport::Http);
    serde_json::from_slice(&bytes).map_err(|e| format!("our output is not JSON: {e}"))
}

struct Case {
    file: &'static str,
    decode: Decode,
    /// Top-level keys the Java side ignores and so do we: absent from the re-encoded value.
    ignored: &'static [&'static str],
}

const fn case(file: &'static str, decode: Decode) -> Case {
    Case {
        file,
        decode,
        ignored: &[],
    }
}

type Http<T> = Response<T>;

const CASES: &[Case] = &[
    // ---- spec/protocol.md examples ----
    case("spec/s2.2_envelope_success.json", http::<Http<Value>>),
    case("spec/s2.2_envelope_failed.json", http::<Http<Value>>),
    case("spec/s2.2_envelope_cmd_not_found.json", http::<Http<Value>>),
    case(
        "spec/s2.2_envelope_internal_error.json",
        http::<Http<ClientResponse>>,
    ),
    case("spec/s2.4.1_help.json", http::<Http<Vec<CommandModel>>>),
    case(
        "spec/s2.4.2_install_success.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.2_install_repeat_biz.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.2_install_lock_conflict.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.2_install_validation_error.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.2_install_async_requestid_reused.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "spec/s2.4.3_uninstall_success.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.3_uninstall_not_found.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "spec/s2.4.3_uninstall_s003_outdated.json",
        http::<Http<ClientResponse>>,
    ),
    case("spec/s2.4.5_query_all_biz.json", http::<Http<Vec<BizInfo>>>),
    case(
        "spec/s2.4.7_batch_request.json",
        req::<BatchInstallBizRequest>,
    ),
    case(
        "spec/s2.4.7_batch_response_failed.json",
        http::<Http<BatchInstallResponse>>,
    ),
    case(
        "spec/s2.4.8_async_accepted.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "spec/s2.4.8_query_biz_ops_request.json",
        req::<QueryBizOpsRequest>,
    ),
    case(
        "spec/s2.4.8_query_biz_ops_not_found.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "spec/s2.4.8_query_biz_ops_succeeded.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "spec/s2.4.8_query_biz_ops_failed.json",
        http::<Http<ProcessRecord>>,
    ),
    case("spec/s3.2_health_failed.json", http::<Http<Health>>),
    case("spec/s3.5_health_full.json", http::<Http<Health>>),
    case("spec/s3.5_health_request_empty.json", req::<HealthRequest>),
    case(
        "spec/s3.5_health_request_system_cpu.json",
        req::<HealthRequest>,
    ),
    case(
        "spec/s3.5_health_request_biz_name_version.json",
        req::<HealthRequest>,
    ),
    case(
        "spec/s3.5_health_request_biz_name.json",
        req::<HealthRequest>,
    ),
    case("spec/s3.5_health_request_plugin.json", req::<HealthRequest>),
    case(
        "spec/s3.5_health_request_plugin_name.json",
        req::<HealthRequest>,
    ),
    case("spec/s5.6_heartbeat.json", mqtt::<Envelope<BaseStatus>>),
    case(
        "spec/s5.6_query_baseline.json",
        mqtt::<Envelope<BaseMetadata>>,
    ),
    case("spec/s5.6_baseline.json", mqtt::<Vec<BizSpec>>),
    case(
        "spec/s5.6_batch_install_response_success.json",
        mqtt::<Envelope<BatchInstallBizResponseMsg>>,
    ),
    case(
        "spec/s5.6_batch_install_response_exception.json",
        mqtt::<Envelope<BatchInstallBizResponseMsg>>,
    ),
    case("spec/s5.6_health_request_system.json", req::<HealthRequest>),
    // The `…` is inside a string, so the example is valid JSON; it is the inner Output.
    case(
        "spec/s5.6_health_output_failed.json",
        mqtt::<Output<Health>>,
    ),
    case(
        "spec/s5.6_simple_biz.json",
        mqtt::<Envelope<Vec<SimpleBizInfo>>>,
    ),
    // MC sends the ark BizModel; the base reads it as the installBiz input.
    case("spec/s5.6_install_request.json", mqtt::<BizSpec>),
    case("spec/s5.6_install_request.json", req::<InstallBizRequest>),
    case(
        "spec/s5.6_biz_operation_exception.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    // The HTTP heartbeat is written with fastjson defaults, i.e. like MQTT (spec §1.2).
    case("spec/s6.1_http_heartbeat.json", mqtt::<BaseStatus>),
    // ---- real Java Arklet, HTTP ----
    case(
        "real-http/01_help.resp.json",
        http::<Http<Vec<CommandModel>>>,
    ),
    case(
        "real-http/02_queryAllBiz_empty.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case(
        "real-http/03_health_all_empty_body_object.req.json",
        req::<HealthRequest>,
    ),
    case(
        "real-http/03_health_all_empty_body_object.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/04_health_system_cpu.req.json",
        req::<HealthRequest>,
    ),
    case(
        "real-http/04_health_system_cpu.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/05_health_system_jvm.req.json",
        req::<HealthRequest>,
    ),
    case(
        "real-http/05_health_system_jvm.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/06_health_system_no_metrics.req.json",
        req::<HealthRequest>,
    ),
    case(
        "real-http/06_health_system_no_metrics.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/07_installBiz_a_1.0.0.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/07_installBiz_a_1.0.0.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/08_installBiz_a_1.0.0_repeat.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/08_installBiz_a_1.0.0_repeat.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/09_queryAllBiz_after_install.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    // S003's `moduleName`/`moduleVersion` are not fields; Java answered with every biz.
    Case {
        file: "real-http/10_health_biz_wrong_field_moduleName.req.json",
        decode: req::<HealthRequest>,
        ignored: &["moduleName", "moduleVersion"],
    },
    case(
        "real-http/10_health_biz_wrong_field_moduleName.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/11_installBiz_a_2.0.0_while_1_active.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/11_installBiz_a_2.0.0_while_1_active.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/12_queryAllBiz_two_versions.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case(
        "real-http/13_switchBiz_a_2.0.0.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/13_switchBiz_a_2.0.0.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/14_queryAllBiz_after_switch.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case(
        "real-http/15_uninstallBiz_a_1.0.0.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/15_uninstallBiz_a_1.0.0.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/16_uninstallBiz_not_installed.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/16_uninstallBiz_not_installed.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/17_switchBiz_not_installed.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/17_switchBiz_not_installed.resp.json",
        http::<Http<ClientResponse>>,
    ),
    // `installRequests` is not the field name (`bizList` is): Java said `bizList is null`.
    Case {
        file: "real-http/18_batchInstallBiz_wrong_field_installRequests.req.json",
        decode: req::<BatchInstallBizRequest>,
        ignored: &["installRequests"],
    },
    case(
        "real-http/18_batchInstallBiz_wrong_field_installRequests.resp.json",
        http::<Http<BatchInstallResponse>>,
    ),
    case(
        "real-http/19_batchInstallBiz_b_c.req.json",
        req::<BatchInstallBizRequest>,
    ),
    case(
        "real-http/19_batchInstallBiz_b_c.resp.json",
        http::<Http<BatchInstallResponse>>,
    ),
    case("real-http/20_health_biz_b.req.json", req::<HealthRequest>),
    case("real-http/20_health_biz_b.resp.json", http::<Http<Health>>),
    case(
        "real-http/21_health_biz_not_installed.req.json",
        req::<HealthRequest>,
    ),
    case(
        "real-http/21_health_biz_not_installed.resp.json",
        http::<Http<Health>>,
    ),
    // `pluginName` is not a field: the plugin name travels in `bizName` (spec §3.1).
    Case {
        file: "real-http/22_health_plugin_none.req.json",
        decode: req::<HealthRequest>,
        ignored: &["pluginName"],
    },
    case(
        "real-http/22_health_plugin_none.resp.json",
        http::<Http<Health>>,
    ),
    case(
        "real-http/23_installBiz_async.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/23_installBiz_async.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/24_queryBizOps_req-async-1.req.json",
        req::<QueryBizOpsRequest>,
    ),
    case(
        "real-http/24_queryBizOps_req-async-1.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/25_installBiz_async_same_requestId_again.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/25_installBiz_async_same_requestId_again.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/26_queryBizOps_unknown_requestId.req.json",
        req::<QueryBizOpsRequest>,
    ),
    case(
        "real-http/26_queryBizOps_unknown_requestId.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/27_installBiz_async_without_requestId.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/27_installBiz_async_without_requestId.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/28_installBiz_main_throws.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/28_installBiz_main_throws.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/29_installBiz_nonexistent_file.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/29_installBiz_nonexistent_file.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/30_installBiz_no_name_version_from_jar.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/30_installBiz_no_name_version_from_jar.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/31_installBiz_missing_bizUrl.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/31_installBiz_missing_bizUrl.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/33_empty_body.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case(
        "real-http/34_unknown_command.resp.json",
        http::<Http<Value>>,
    ),
    case(
        "real-http/37_queryAllBiz_after_failed_install.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case(
        "real-http/38_uninstallBiz_broken_biz_fail.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/38_uninstallBiz_broken_biz_fail.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/39_uninstallBiz_async.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/39_uninstallBiz_async.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/40_queryBizOps_req-uninst-1.req.json",
        req::<QueryBizOpsRequest>,
    ),
    case(
        "real-http/40_queryBizOps_req-uninst-1.resp.json",
        http::<Http<ProcessRecord>>,
    ),
    case(
        "real-http/41_installBiz_uninstallThenInstall.req.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-http/41_installBiz_uninstallThenInstall.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/42_batchInstallBiz_one_missing_file.req.json",
        req::<BatchInstallBizRequest>,
    ),
    case(
        "real-http/42_batchInstallBiz_one_missing_file.resp.json",
        http::<Http<BatchInstallResponse>>,
    ),
    case(
        "real-http/43_query_string_in_path.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    case("real-http/44_trailing_slash.resp.json", http::<Http<Value>>),
    case(
        "real-http/45_http_1_0.resp.json",
        http::<Http<Vec<CommandModel>>>,
    ),
    case(
        "real-http/46_expect_100_continue.resp.json",
        http::<Http<Vec<CommandModel>>>,
    ),
    case(
        "real-http/47_uninstallBiz_active_a_2.0.0.req.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-http/47_uninstallBiz_active_a_2.0.0.resp.json",
        http::<Http<ClientResponse>>,
    ),
    case(
        "real-http/48_queryAllBiz_after_uninstall_active.resp.json",
        http::<Http<Vec<BizInfo>>>,
    ),
    // ---- real Java Arklet, MQTT ----
    case(
        "real-mqtt/mqtt00_connect_queryBaseline_heartbeats.base-queryBaseline.json",
        mqtt::<Envelope<BaseMetadata>>,
    ),
    case(
        "real-mqtt/mqtt00_connect_queryBaseline_heartbeats.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt00_connect_queryBaseline_heartbeats.base-heart-2.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt00_connect_queryBaseline_heartbeats.base-heart-3.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case("real-mqtt/mqtt01_health.health.json", req::<HealthRequest>),
    case(
        "real-mqtt/mqtt01_health.base-health.json",
        mqtt::<Envelope<Output<Health>>>,
    ),
    case(
        "real-mqtt/mqtt02_queryAllBiz_empty.base-simpleBiz.json",
        mqtt::<Envelope<Vec<SimpleBizInfo>>>,
    ),
    case(
        "real-mqtt/mqtt03_installBiz_a_1.0.0.installBiz.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-mqtt/mqtt03_installBiz_a_1.0.0.installBiz.json",
        mqtt::<BizSpec>,
    ),
    case(
        "real-mqtt/mqtt03_installBiz_a_1.0.0.base-bizOperation.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    case(
        "real-mqtt/mqtt04_installBiz_repeat.installBiz.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-mqtt/mqtt04_installBiz_repeat.installBiz.json",
        mqtt::<BizSpec>,
    ),
    case(
        "real-mqtt/mqtt04_installBiz_repeat.base-bizOperation.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    case(
        "real-mqtt/mqtt04_installBiz_repeat.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt05_queryAllBiz_after_install.base-simpleBiz.json",
        mqtt::<Envelope<Vec<SimpleBizInfo>>>,
    ),
    case(
        "real-mqtt/mqtt06_uninstallBiz_a_1.0.0.uninstallBiz.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-mqtt/mqtt06_uninstallBiz_a_1.0.0.uninstallBiz.json",
        mqtt::<BizSpec>,
    ),
    case(
        "real-mqtt/mqtt06_uninstallBiz_a_1.0.0.base-bizOperation.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    case(
        "real-mqtt/mqtt07_uninstallBiz_not_installed.uninstallBiz.json",
        req::<BizOpRequest>,
    ),
    case(
        "real-mqtt/mqtt07_uninstallBiz_not_installed.uninstallBiz.json",
        mqtt::<BizSpec>,
    ),
    case(
        "real-mqtt/mqtt07_uninstallBiz_not_installed.base-bizOperation.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    case(
        "real-mqtt/mqtt08_installBiz_missing_file.installBiz.json",
        req::<InstallBizRequest>,
    ),
    case(
        "real-mqtt/mqtt08_installBiz_missing_file.installBiz.json",
        mqtt::<BizSpec>,
    ),
    case(
        "real-mqtt/mqtt08_installBiz_missing_file.base-bizOperation.json",
        mqtt::<Envelope<BizOperationResponse>>,
    ),
    case(
        "real-mqtt/mqtt08_installBiz_missing_file.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt11_retained_baseline.base-baseline.json",
        mqtt::<Vec<BizSpec>>,
    ),
    case(
        "real-mqtt/mqtt11_retained_baseline.base-batchInstallBizResponse.json",
        mqtt::<Envelope<BatchInstallBizResponseMsg>>,
    ),
    case(
        "real-mqtt/mqtt12_queryAllBiz_after_baseline.base-simpleBiz.json",
        mqtt::<Envelope<Vec<SimpleBizInfo>>>,
    ),
    case(
        "real-mqtt/mqtt12_queryAllBiz_after_baseline.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt14_restart_base_with_retained_baseline.base-queryBaseline.json",
        mqtt::<Envelope<BaseMetadata>>,
    ),
    case(
        "real-mqtt/mqtt14_restart_base_with_retained_baseline.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
    case(
        "real-mqtt/mqtt14_restart_base_with_retained_baseline.base-batchInstallBizResponse.json",
        mqtt::<Envelope<BatchInstallBizResponseMsg>>,
    ),
    case(
        "real-mqtt/mqtt14_restart_base_with_retained_baseline.base-simpleBiz.json",
        mqtt::<Envelope<Vec<SimpleBizInfo>>>,
    ),
    case(
        "real-mqtt/mqtt15_clear_retained.base-batchInstallBizResponse.json",
        mqtt::<Envelope<BatchInstallBizResponseMsg>>,
    ),
    case(
        "real-mqtt/mqtt16_end.base-heart.json",
        mqtt::<Envelope<BaseStatus>>,
    ),
];

/// A captured body that is not a JSON object the Java side decodes; checked for the outcome
/// the agent needs instead of a round trip.
type Expect = fn(&[u8]) -> Result<(), String>;

fn expect_syntax_error(body: &[u8]) -> Result<(), String> {
    match lenient::decode_request::<InstallBizRequest>(body) {
        Err(DecodeError::Syntax(_)) => Ok(()),
        other => Err(format!("expected a syntax error, got {other:?}")),
    }
}

fn expect_null_input(body: &[u8]) -> Result<(), String> {
    // queryAllBiz ignores its input, so any request type shows the decoding rule.
    match lenient::decode_request::<HealthRequest>(body) {
        Ok(None) => Ok(()),
        other => Err(format!("expected a null input, got {other:?}")),
    }
}

fn expect_not_an_object(body: &[u8]) -> Result<(), String> {
    match lenient::decode_request::<HealthRequest>(body) {
        Err(DecodeError::NotAnObject("an array")) => Ok(()),
        other => Err(format!("expected an array to be refused, got {other:?}")),
    }
}

/// Clearing the retained baseline delivers an empty payload; Java then runs batchInstallBiz
/// with no list (README note 2). It is not a baseline document, so the strict decoder must
/// refuse it and the agent must map it to "bizList is null" itself.
fn expect_empty_baseline(body: &[u8]) -> Result<(), String> {
    if !body.is_empty() {
        return Err("expected an empty payload".into());
    }
    match serde_json::from_slice::<Vec<BizSpec>>(body) {
        Err(_) => Ok(()),
        Ok(v) => Err(format!("an empty payload decoded as a baseline: {v:?}")),
    }
}

const NOT_JSON: &[(&str, Expect)] = &[
    ("real-http/32_malformed_json.req.raw", expect_syntax_error),
    ("real-http/33_empty_body.req.raw", expect_null_input),
    (
        "real-http/36_json_array_body.req.json",
        expect_not_an_object,
    ),
    // The file name says health, the capture shows the truncated installBiz payload that Java
    // left unanswered (README note 1).
    (
        "real-mqtt/mqtt10_malformed_health.installBiz.raw",
        expect_syntax_error,
    ),
    (
        "real-mqtt/mqtt15_clear_retained.base-baseline.raw",
        expect_empty_baseline,
    ),
];

#[test]
fn every_golden_case_round_trips() {
    let mut failures = Vec::new();
    for c in CASES {
        let body = fixture(c.file);
        let mut expected: Value = serde_json::from_slice(&body).expect("fixture is JSON");
        for key in c.ignored {
            let removed = expected.as_object_mut().and_then(|m| m.remove(*key));
            assert!(
                removed.is_some(),
                "{}: ignored key {key} is not in the fixture",
                c.file
            );
        }
        match (c.decode)(&body).and_then(|got| json_diff(&expected, &got)) {
            Ok(()) => {}
            Err(e) => failures.push(format!("{}: {e}", c.file)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn captured_non_json_bodies_behave_as_documented() {
    for (file, expect) in NOT_JSON {
        if let Err(e) = expect(&fixture(file)) {
            panic!("{file}: {e}");
        }
    }
}

/// Every fixture file is checked by some test, and every test names an existing fixture, so a
/// fixture cannot be added (or renamed) without deciding which type decodes it.
#[test]
fn every_fixture_is_covered() {
    let on_disk: BTreeSet<String> = all_fixtures().into_iter().collect();
    let covered: BTreeSet<String> = CASES
        .iter()
        .map(|c| c.file)
        .chain(NOT_JSON.iter().map(|(f, _)| *f))
        .map(str::to_owned)
        .collect();
    let unchecked: Vec<_> = on_disk.difference(&covered).collect();
    let missing: Vec<_> = covered.difference(&on_disk).collect();
    assert!(
        unchecked.is_empty(),
        "fixtures without a check: {unchecked:?}"
    );
    assert!(missing.is_empty(), "checks without a fixture: {missing:?}");
    assert!(
        on_disk.len() >= 150,
        "fixture set unexpectedly small: {}",
        on_disk.len()
    );
}

/// Java's async record echoes the parsed input as `arkBizMeta`: our request types, as decoded
/// from the same request, serialize to exactly that, once `installStrategy` has its default
/// (a Java field initializer, so it appears although the request did not send it).
#[test]
fn async_records_echo_the_request_as_ark_biz_meta() {
    let install: InstallBizRequest =
        lenient::decode_request(&fixture("real-http/23_installBiz_async.req.json"))
            .unwrap()
            .unwrap();
    let with_default = InstallBizRequest {
        install_strategy: Some(install.strategy().as_str().into()),
        ..install
    };
    let uninstall: BizOpRequest =
        lenient::decode_request(&fixture("real-http/39_uninstallBiz_async.req.json"))
            .unwrap()
            .unwrap();
    let cases = [
        (
            transport::to_value(&with_default, Transport::Http),
            "real-http/23_installBiz_async.resp.json",
        ),
        (
            transport::to_value(&uninstall, Transport::Http),
            "real-http/39_uninstallBiz_async.resp.json",
        ),
    ];
    for (ours, file) in cases {
        let captured = &fixture_json(file)["data"]["arkBizMeta"];
        json_diff(captured, &ours).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The transport decides enum spelling, so decoding a capture and writing it for the other
/// transport must change exactly the enum values: a guard against the round trip above
/// passing only because enums are copied through as text.
#[test]
fn transport_changes_only_enum_spelling() {
    let cases = [
        (
            "real-http/14_queryAllBiz_after_switch.resp.json",
            Transport::Mqtt,
        ),
        (
            "real-mqtt/mqtt03_installBiz_a_1.0.0.base-bizOperation.json",
            Transport::Http,
        ),
    ];
    for (file, other) in cases {
        let body = fixture(file);
        let value = if file.starts_with("real-http") {
            transport::to_value(
                &serde_json::from_slice::<Response<Vec<BizInfo>>>(&body).unwrap(),
                other,
            )
        } else {
            let env: Envelope<BizOperationResponse> = serde_json::from_slice(&body).unwrap();
            transport::to_value(&env, other)
        };
        let mut original = fixture_json(file);
        recase_enums(&mut original, other);
        json_diff(&original, &value).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_ne!(
            value,
            fixture_json(file),
            "{file}: the transport made no difference"
        );
    }
}

/// Rewrites `bizState`/`state`/`reason` values to the spelling of `t`, by hand.
fn recase_enums(v: &mut Value, t: Transport) {
    const REASONS: [(&str, &str); 3] = [
        ("Created", "CREATED"),
        ("Started", "STARTED"),
        ("Switched", "SWITCHED"),
    ];
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                let recased = match (k.as_str(), v.as_str()) {
                    ("bizState" | "state", Some(s)) if t == Transport::Mqtt => s.to_uppercase(),
                    ("bizState" | "state", Some(s)) => s.to_lowercase(),
                    ("reason", Some(s)) => {
                        let (http, mqtt) = REASONS
                            .iter()
                            .find(|(h, m)| *h == s || *m == s)
                            .unwrap_or_else(|| panic!("reason {s} not in the test table"));
                        if t == Transport::Mqtt { mqtt } else { http }.to_string()
                    }
                    _ => {
                        recase_enums(v, t);
                        continue;
                    }
                };
                *v = Value::String(recased);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| recase_enums(v, t)),
        _ => {}
    }
}
