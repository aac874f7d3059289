//! Encoding rules that the upstream decoders depend on, checked on values built with our types
//! (what the agent produces), not on decoded captures.
//!
//! - T3: times, counts, ports, priorities, `elapsedSpace` and metaspace bytes are JSON
//!   integers; MiB/percent/seconds are floats written with a fraction.
//! - T8: compact JSON, no whitespace between tokens (arkctl greps `"code":"FAILED"`).
//! - T2: absent instead of `null`, except the explicit nulls of `simpleBiz`.
//! - T1: enum spelling per transport; `simpleBiz.state` and heartbeat `state` always lower-case.

mod common;

use koupleless_protocol::biz::CommandModel;
use koupleless_protocol::health::{PluginHealthMeta, bytes_to_mib};
use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse, CommandReply};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{
    ArkResultCode, BaseMetadata, BaseStatus, BatchInstallResponse, BizHealthMeta, BizInfo,
    BizModel, BizState, ClientResponse, CpuInfo, Envelope, ErrorCode, Health, HealthData, JvmInfo,
    Output, ProcessRecord, ProcessStatus, Response, ResponseCode, SimpleBizInfo, StateChangeReason,
    StateRecord,
};
use serde::Serialize;
use serde_json::Value;

use common::{fixture_json, has_whitespace_outside_strings, json_diff};

const T0: i64 = 1_731_900_000_123;

fn text<T: Serialize + ?Sized>(v: &T, t: Transport) -> String {
    String::from_utf8(transport::encode(v, t)).expect("JSON is UTF-8")
}

fn record(state: BizState, reason: StateChangeReason, at: i64) -> StateRecord {
    StateRecord {
        change_time: at,
        message: String::new(),
        reason,
        state,
    }
}

fn biz_info() -> BizInfo {
    BizInfo {
        biz_name: "biz1".into(),
        biz_state: BizState::Activated,
        biz_state_records: vec![
            record(BizState::Resolved, StateChangeReason::Created, T0),
            record(BizState::Activated, StateChangeReason::Started, T0 + 1092),
        ],
        biz_version: "0.0.1".into(),
        main_class: Some("com.example.Biz1Application".into()),
        web_context_path: Some("biz1".into()),
    }
}

fn biz_model() -> BizModel {
    BizModel {
        attributes: Some(Default::default()),
        biz_name: "biz1".into(),
        biz_state: Some(BizState::Activated),
        biz_state_records: Some(biz_info().biz_state_records),
        biz_version: "0.0.1".into(),
        identity: Some("biz1:0.0.1".into()),
        main_class: Some("com.example.Biz1Application".into()),
        priority: Some(100),
        web_context_path: Some("biz1".into()),
        ..BizModel::default()
    }
}

fn install_ok() -> ClientResponse {
    ClientResponse {
        biz_infos: Some(vec![biz_model()]),
        code: ArkResultCode::Success,
        elapsed_space: Some(-4096),
        message: "Install Biz: biz1:0.0.1 success, cost: 1092 ms, started at: 16:07:47,769".into(),
    }
}

fn jvm() -> JvmInfo {
    JvmInfo {
        java_version: Some("17.0.15".into()),
        java_home: Some("/usr/lib/jvm/java-17".into()),
        total_memory_mib: Some(bytes_to_mib(80 * 1024 * 1024)),
        max_memory_mib: Some(bytes_to_mib(6028 * 1024 * 1024)),
        free_memory_mib: Some(55.410179138183594),
        init_heap_mib: Some(bytes_to_mib(64 * 1024 * 1024)),
        used_heap_mib: Some(24.295875549316406),
        committed_heap_mib: Some(80.0),
        max_heap_mib: Some(bytes_to_mib(-1)),
        init_non_heap_mib: Some(7.3125),
        used_non_heap_mib: Some(32.5),
        committed_non_heap_mib: Some(35.75),
        max_non_heap_mib: Some(bytes_to_mib(-1)),
        loaded_class_count: Some(5420),
        unload_class_count: Some(0),
        total_class_count: Some(5420),
        run_time_s: Some(10.166),
        used_metaspace: Some(24_779_640),
        committed_metaspace: Some(25_034_752),
        max_metaspace: Some(-1),
    }
}

fn cpu() -> CpuInfo {
    CpuInfo {
        count: Some(2),
        kind: Some("Intel(R) Xeon(R) Processor @ 2.50GHz".into()),
        total_used: Some(14730.0),
        user_used: Some(5.566870332654447),
        system_used: Some(2.104548540393754),
        free: Some(92.12491513917176),
    }
}

fn base_meta() -> BizHealthMeta {
    BizHealthMeta {
        biz_name: "base".into(),
        biz_state: BizState::Activated,
        biz_version: "1.0.0".into(),
        web_context_path: Some("/".into()),
    }
}

fn health() -> Health {
    Health {
        health_data: HealthData {
            jvm: Some(jvm()),
            cpu: Some(cpu()),
            master_biz_info: Some(base_meta()),
            biz_list_info: Some(vec![base_meta()]),
            plugin_list_info: Some(vec![PluginHealthMeta::default()]),
            ..HealthData::default()
        },
    }
}

fn heartbeat(port: u16) -> BaseStatus {
    BaseStatus {
        base_metadata: BaseMetadata {
            cluster_name: "default".into(),
            identity: "10.0.0.5".into(),
            name: "TO_BE_IMPLEMENTED".into(),
            version: "1.0.0".into(),
        },
        local_host_name: "base-pod-1".into(),
        local_ip: "10.0.0.5".into(),
        port,
        state: BizState::Activated,
    }
}

fn finished_record() -> ProcessRecord {
    ProcessRecord {
        ark_biz_meta: Some(serde_json::json!({"async": true, "bizName": "biz1"})),
        elapsed_time: 2311,
        end_time: Some(T0 + 2311),
        end_timestamp: T0 + 2311,
        error_code: None,
        message: None,
        request_id: "req-42".into(),
        start_time: Some(T0),
        start_timestamp: T0,
        status: ProcessStatus::Succeeded,
        thread_name: Some("worker-1".into()),
        throwable: None,
    }
}

/// Every message the agent writes, in the transport it writes it on.
fn samples() -> Vec<(&'static str, String)> {
    let h = Transport::Http;
    let m = Transport::Mqtt;
    vec![
        (
            "queryAllBiz",
            text(&Response::success("10.0.0.5", vec![biz_info()]), h),
        ),
        (
            "install",
            text(&Response::success("10.0.0.5", install_ok()), h),
        ),
        ("health", text(&Response::success("10.0.0.5", health()), h)),
        (
            "queryBizOps",
            text(&Response::success("10.0.0.5", finished_record()), h),
        ),
        ("http heartbeat", text(&heartbeat(1238), m)),
        ("mqtt heartbeat", text(&Envelope::new(heartbeat(0), T0), m)),
        (
            "mqtt health",
            text(&Envelope::new(Output::<Health>::success(health()), T0), m),
        ),
        (
            "simpleBiz",
            text(
                &Envelope::new(vec![SimpleBizInfo::from(&biz_info())], T0),
                m,
            ),
        ),
        (
            "bizOperation",
            text(
                &Envelope::new(
                    BizOperationResponse {
                        biz_name: Some("biz1".into()),
                        biz_version: Some("0.0.1".into()),
                        command: "installBiz".into(),
                        response: Output::success(install_ok()),
                    },
                    T0,
                ),
                m,
            ),
        ),
        (
            "batchInstallBizResponse",
            text(
                &Envelope::new(
                    BatchInstallBizResponseMsg {
                        command: "batchInstallBiz".into(),
                        response: Output::success(BatchInstallResponse {
                            biz_url_to_response: Some(
                                [("file:///b.jar".to_owned(), install_ok())].into(),
                            ),
                            code: ArkResultCode::Success,
                            elapsed_space: Some(52_428_800),
                            message: "batch install success".into(),
                        }),
                    },
                    T0,
                ),
                m,
            ),
        ),
    ]
}

trait OutputExt<T> {
    fn success(data: T) -> Self;
}

impl<T> OutputExt<T> for Output<T> {
    fn success(data: T) -> Self {
        Output {
            code: ResponseCode::Success,
            data: Some(data),
            error_code: None,
            message: None,
        }
    }
}

#[test]
fn output_is_compact() {
    for (what, json) in samples() {
        assert!(
            !has_whitespace_outside_strings(json.as_bytes()),
            "{what}: {json}"
        );
    }
}

/// The exact key/value spellings that strict or substring-matching readers look for.
#[test]
fn integers_floats_and_sentinels_are_spelled_as_java_does() {
    let all: String = samples().into_iter().map(|(_, j)| j).collect();
    let wanted = [
        // Integers (Go int/int64, T3).
        r#""changeTime":1731900000123"#,
        r#""publishTimestamp":1731900000123"#,
        r#""elapsedSpace":-4096"#,
        r#""elapsedSpace":52428800"#,
        r#""priority":100"#,
        r#""port":1238"#,
        r#""port":0"#,
        r#""count":2"#,
        r#""loaded class count":5420"#,
        r#""unload class count":0"#,
        r#""java max metaspace":-1"#,
        r#""java used metaspace":24779640"#,
        r#""startTime":1731900000123"#,
        r#""endTimestamp":1731900002434"#,
        r#""elapsedTime":2311"#,
        // Floats keep a fraction even when whole, like Java's `64.0`.
        r#""init heap memory(M)":64.0"#,
        r#""total memory(M)":80.0"#,
        r#""total used (%)":14730.0"#,
        // −1 byte in MiB; serde_json writes `e`, Java `E`: same number for every parser.
        r#""max heap memory(M)":-9.5367431640625e-7"#,
        // arkctl's substring checks (T8).
        r#""code":"SUCCESS""#,
    ];
    for w in wanted {
        assert!(all.contains(w), "missing {w}");
    }
}

/// Java writes the shortest text that round-trips a double; we must read it back to the very
/// same double and write the same digits. serde_json's default parser was one ULP off for the
/// first value (found by the property tests), hence its `float_roundtrip` feature.
#[test]
fn doubles_pass_through_unchanged() {
    for text in [
        "-9.78545925218564e-132",
        "-9.5367431640625e-7",
        "37.358726501464844",
        "2.2250738585072014e-308",
        "1.7976931348623157e+308",
        "5e-324",
    ] {
        let body = format!(r#"{{"max memory(M)":{text}}}"#);
        let jvm: JvmInfo = serde_json::from_str(&body).unwrap();
        assert_eq!(
            jvm.max_memory_mib,
            Some(text.parse::<f64>().unwrap()),
            "{text}"
        );
        assert_eq!(self::text(&jvm, Transport::Http), body, "{text}");
    }
}

#[test]
fn nan_doubles_become_null_like_fastjson() {
    let j = JvmInfo {
        run_time_s: Some(f64::NAN),
        ..JvmInfo::default()
    };
    assert_eq!(text(&j, Transport::Http), r#"{"run time(s)":null}"#);
}

#[test]
fn nulls_are_omitted_except_in_simple_biz() {
    for (what, json) in samples() {
        let allowed = what == "simpleBiz";
        assert!(
            allowed || !json.contains("null"),
            "{what} has a null: {json}"
        );
    }
    let cases: [(&str, String, &str); 8] = [
        (
            "uninstall data: no bizInfos, no elapsedSpace",
            text(
                &ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::NotFoundBiz,
                    elapsed_space: None,
                    message: "Uninstall biz: biz1:0.0.1 not found.".into(),
                },
                Transport::Http,
            ),
            r#"{"code":"NOT_FOUND_BIZ","message":"Uninstall biz: biz1:0.0.1 not found."}"#,
        ),
        (
            "sparse BizModel",
            text(
                &BizModel {
                    biz_name: "b".into(),
                    biz_version: "1".into(),
                    biz_state: Some(BizState::Broken),
                    ..BizModel::default()
                },
                Transport::Mqtt,
            ),
            r#"{"bizName":"b","bizState":"BROKEN","bizVersion":"1"}"#,
        ),
        (
            "unfinished async record: no endTime, zero endTimestamp",
            text(
                &ProcessRecord {
                    end_time: None,
                    end_timestamp: 0,
                    elapsed_time: 0,
                    status: ProcessStatus::Initialized,
                    thread_name: None,
                    ark_biz_meta: None,
                    ..finished_record()
                },
                Transport::Http,
            ),
            r#"{"elapsedTime":0,"endTimestamp":0,"requestId":"req-42","startTime":1731900000123,"startTimestamp":1731900000123,"status":"INITIALIZED"}"#,
        ),
        (
            "FAILED health: no data",
            text(
                &Response::<Health>::failed(
                    "10.0.0.5",
                    "can not find biz: biz9",
                    None,
                    ErrorCode::NoMatchedBiz,
                ),
                Transport::Http,
            ),
            r#"{"baseIdentity":"10.0.0.5","code":"FAILED","errorCode":"Arklet.NoMatchedBiz","message":"can not find biz: biz9"}"#,
        ),
        (
            "empty simpleBiz record: explicit nulls",
            text(
                &SimpleBizInfo {
                    latest_state_record: None,
                    name: None,
                    state: BizState::Resolved,
                    version: None,
                },
                Transport::Mqtt,
            ),
            r#"{"latestStateRecord":null,"name":null,"state":"resolved","version":null}"#,
        ),
        (
            "help entry",
            text(
                &CommandModel {
                    desc: "query ark biz ops".into(),
                    id: "queryBizOps".into(),
                },
                Transport::Http,
            ),
            r#"{"desc":"query ark biz ops","id":"queryBizOps"}"#,
        ),
        (
            "commandReply without requestId",
            text(
                &CommandReply {
                    command: "help".into(),
                    request_id: None,
                    response: Output {
                        code: ResponseCode::Success,
                        data: Some(Value::Array(vec![])),
                        error_code: None,
                        message: None,
                    },
                },
                Transport::Mqtt,
            ),
            r#"{"command":"help","response":{"code":"SUCCESS","data":[]}}"#,
        ),
        (
            "HTTP heartbeat",
            text(&heartbeat(1238), Transport::Mqtt),
            r#"{"baseMetadata":{"clusterName":"default","identity":"10.0.0.5","name":"TO_BE_IMPLEMENTED","version":"1.0.0"},"localHostName":"base-pod-1","localIP":"10.0.0.5","port":1238,"state":"activated"}"#,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn enum_spelling_follows_the_transport() {
    let info = biz_info();
    let cases = [
        (text(&info, Transport::Http), r#""bizState":"activated""#),
        (
            text(&info, Transport::Http),
            r#""reason":"Started","state":"activated""#,
        ),
        (text(&info, Transport::Mqtt), r#""bizState":"ACTIVATED""#),
        (
            text(&info, Transport::Mqtt),
            r#""reason":"STARTED","state":"ACTIVATED""#,
        ),
        // simpleBiz.state is toString() even over MQTT; its record is name().
        (
            text(&SimpleBizInfo::from(&info), Transport::Mqtt),
            r#""state":"activated""#,
        ),
        (
            text(&SimpleBizInfo::from(&info), Transport::Mqtt),
            r#""reason":"STARTED""#,
        ),
        // The heartbeat state is lower-case on both transports.
        (
            text(&heartbeat(0), Transport::Mqtt),
            r#""state":"activated""#,
        ),
        (
            text(&heartbeat(0), Transport::Http),
            r#""state":"activated""#,
        ),
        (
            text(
                &record(BizState::Broken, StateChangeReason::InstallFailed, 1),
                Transport::Http,
            ),
            r#"{"changeTime":1,"message":"","reason":"Install Failed","state":"broken"}"#,
        ),
        (
            text(
                &record(BizState::Broken, StateChangeReason::UninstallFailed, 1),
                Transport::Mqtt,
            ),
            r#"{"changeTime":1,"message":"","reason":"UN_INSTALL_FAILED","state":"BROKEN"}"#,
        ),
        // Codes that do not override toString() look the same on both transports.
        (
            text(&ProcessStatus::Succeeded, Transport::Http),
            r#""SUCCEEDED""#,
        ),
        (
            text(&ArkResultCode::RepeatBiz, Transport::Mqtt),
            r#""REPEAT_BIZ""#,
        ),
    ];
    for (json, want) in cases {
        assert!(json.contains(want), "{want} not in {json}");
    }
}

/// arkctl decides deploy outcomes by substring (T8): the failed uninstall it treats as
/// idempotent success must contain both codes exactly so.
#[test]
fn arkctl_substrings() {
    let resp = Response::failed(
        "10.0.0.5",
        "uninstall biz not success!",
        Some(ClientResponse {
            biz_infos: None,
            code: ArkResultCode::NotFoundBiz,
            elapsed_space: None,
            message: "Uninstall biz: biz1:0.0.1 not found.".into(),
        }),
        ErrorCode::NoMatchedBiz,
    );
    let json = text(&resp, Transport::Http);
    assert!(json.contains(r#""code":"FAILED""#), "{json}");
    assert!(json.contains(r#""code":"NOT_FOUND_BIZ""#), "{json}");
}

/// Our responses equal the captured Java ones apart from the `errorCode` we add on failures
/// (spec §7.2: new optional fields only).
#[test]
fn built_in_envelopes_match_the_capture_plus_error_code() {
    let cases = [
        (
            text(&Response::<Value>::not_found(), Transport::Http),
            "real-http/34_unknown_command.resp.json",
            "ModuleController.InvalidRequest",
        ),
        (
            text(
                &Response::<Value>::failed(
                    "192.0.2.2",
                    "Not found the corresponding ops record.",
                    None,
                    ErrorCode::InvalidParameter,
                ),
                Transport::Http,
            ),
            "real-http/26_queryBizOps_unknown_requestId.resp.json",
            "ModuleController.InvalidParameter",
        ),
    ];
    for (ours, file, code) in cases {
        let mut ours: Value = serde_json::from_str(&ours).unwrap();
        let added = ours.as_object_mut().unwrap().remove("errorCode");
        assert_eq!(added, Some(Value::String(code.into())), "{file}");
        json_diff(&fixture_json(file), &ours).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let internal = Response::<Value>::internal_error(
        "bizUrl should not be blank",
        ErrorCode::InvalidParameter,
        "CommandValidationException: bizUrl should not be blank\n\tat x",
    );
    let v: Value = serde_json::from_str(&text(&internal, Transport::Http)).unwrap();
    let captured = fixture_json("real-http/31_installBiz_missing_bizUrl.resp.json");
    assert_eq!(v["message"], captured["message"]);
    assert_eq!(v["code"], captured["code"]);
    assert!(v.get("baseIdentity").is_none() && captured.get("baseIdentity").is_none());
}

#[test]
fn json_diff_is_strict_about_number_kinds_and_lenient_about_order() {
    let v = |s: &str| serde_json::from_str::<Value>(s).unwrap();
    let cases = [
        (
            r#"{"a":1,"b":[true,null]}"#,
            r#"{"b":[true,null],"a":1}"#,
            true,
        ),
        (
            r#"{"a":-9.5367431640625E-7}"#,
            r#"{"a":-9.5367431640625e-7}"#,
            true,
        ),
        (r#"{"a":64.0}"#, r#"{"a":64}"#, false),
        (r#"{"a":64}"#, r#"{"a":64.0}"#, false),
        (r#"{"a":1}"#, r#"{"a":1,"b":null}"#, false),
        (r#"{"a":1,"b":null}"#, r#"{"a":1}"#, false),
        (r#"[1,2]"#, r#"[2,1]"#, false),
        (r#""x""#, r#""X""#, false),
    ];
    for (e, a, same) in cases {
        assert_eq!(json_diff(&v(e), &v(a)).is_ok(), same, "{e} vs {a}");
    }
}

#[test]
fn whitespace_detection_ignores_string_contents() {
    let cases: [(&[u8], bool); 5] = [
        (br#"{"a":"x y","b":1}"#, false),
        (br#"{"a": 1}"#, true),
        (br#"{"a":"\" ","b":2}"#, false),
        (b"[1,\n2]", true),
        (br#"{"k":"a\\"}"#, false),
    ];
    for (json, want) in cases {
        assert_eq!(
            has_whitespace_outside_strings(json),
            want,
            "{}",
            String::from_utf8_lossy(json)
        );
    }
}
