//! Conformance with the Go decoders of ModuleController V2 and arkctl.
//!
//! The mirror structs below copy the Go types field for field (JSON names and JSON types):
//! arkctl `v1/service/ark/types.go` (`ArkBizInfo`, `ArkBizStateRecord`, `BizInfo`,
//! `ArkClientResponse`, `ArkResponseData`, `ArkBatchInstallResponse`, `JvmInfo`, `CpuInfo`,
//! `MasterBizInfo`, `HealthData`), MC `module_tunnels/koupleless_http_tunnel/ark_service`
//! (`ArkResponse[T]`) and MC `common/model/model.go` (`ArkMqttMsg[T]`, `BaseMetadata`,
//! `BaseStatus`, `BizOperationResponse`, `BatchInstallBizResponse`, `ArkSimpleBizInfoData`);
//! spec protocol §2.4.5, §3.3, §5.6, §6.2 and traps T3/T8.
//!
//! `encoding/json` semantics are mirrored as follows: unknown keys ignored (serde's default,
//! no `deny_unknown_fields`); a missing key or a `null` leaves the zero value (every field is
//! an `Option` under `#[serde(default)]`); numbers are typed strictly: a float literal or a
//! string into a Go `int`/`int64` is an error, as is a negative number into an unsigned type.
//! Go `int` is 64-bit on the controller's platforms (i64); the brief asks for `priority` as
//! i32, which is stricter still. Because Go silently zero-fills a key it cannot find, every
//! test also asserts that the fields the controller reads came through with their values.

mod common;

use std::collections::BTreeMap;

use koupleless_protocol::health::bytes_to_mib;
use koupleless_protocol::mqtt::{BatchInstallBizResponseMsg, BizOperationResponse};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{
    ArkResultCode, BaseMetadata, BaseStatus, BatchInstallResponse, BizHealthMeta, BizInfo,
    BizModel, BizState, ClientResponse, CpuInfo, Envelope, ErrorCode, Health, HealthData, JvmInfo,
    Output, Response, ResponseCode, SimpleBizInfo, StateChangeReason, StateRecord,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use common::fixture;

/// Go mirror types. Field names are the Go JSON tags, so the mirror cannot drift by renaming.
#[allow(non_snake_case, dead_code)]
mod go {
    use super::*;

    /// ark_service.ArkResponse[T] (MC); arkctl's GenericArkResponseBase[T] is a subset.
    #[derive(Deserialize, Debug)]
    #[serde(default)]
    pub struct ArkResponse<T> {
        pub code: Option<String>,
        pub data: Option<T>,
        pub message: Option<String>,
        pub errorStackTrace: Option<String>,
        pub baseIdentity: Option<String>,
    }

    impl<T> Default for ArkResponse<T> {
        fn default() -> Self {
            ArkResponse {
                code: None,
                data: None,
                message: None,
                errorStackTrace: None,
                baseIdentity: None,
            }
        }
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkBizStateRecord {
        pub changeTime: Option<i64>,
        pub state: Option<String>,
        pub reason: Option<String>,
        pub message: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkBizInfo {
        pub bizName: Option<String>,
        pub bizState: Option<String>,
        pub bizVersion: Option<String>,
        pub mainClass: Option<String>,
        pub webContextPath: Option<String>,
        pub bizStateRecords: Option<Vec<ArkBizStateRecord>>,
    }

    /// ark.BizInfo, the element of `bizInfos`.
    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct BizInfo {
        pub bizName: Option<String>,
        pub bizVersion: Option<String>,
        pub bizState: Option<String>,
        pub mainClass: Option<String>,
        pub webContextPath: Option<String>,
        pub urls: Option<Vec<Value>>,
        pub bizUrl: Option<Value>,
        pub pluginUrls: Option<Vec<Value>>,
        pub classLoader: Option<Value>,
        pub attributes: Option<BTreeMap<String, String>>,
        pub priority: Option<i32>,
        pub denyImportPackages: Option<Vec<String>>,
        pub denyImportPackageNodes: Option<Vec<String>>,
        pub denyImportPackageStems: Option<Vec<String>>,
        pub denyImportClasses: Option<Vec<String>>,
        pub denyImportResources: Option<Vec<String>>,
        pub injectPluginDependencies: Option<Vec<String>>,
        pub injectExportPackages: Option<Vec<String>>,
        pub declaredLibraries: Option<Vec<String>>,
        pub declaredCacheMap: Option<BTreeMap<String, bool>>,
        pub denyPrefixImportResourceStems: Option<Vec<String>>,
        pub denySuffixImportResourceStems: Option<Vec<String>>,
        pub bizTempWorkDir: Option<Value>,
        pub bizStateRecords: Option<Vec<Value>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkClientResponse {
        pub code: Option<String>,
        pub message: Option<String>,
        pub bizInfos: Option<Vec<BizInfo>>,
    }

    /// ArkResponseData embeds ArkClientResponse (Go promotes the embedded fields).
    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkResponseData {
        pub code: Option<String>,
        pub message: Option<String>,
        pub bizInfos: Option<Vec<BizInfo>>,
        pub elapsedSpace: Option<i64>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkBatchInstallResponse {
        pub code: Option<String>,
        pub message: Option<String>,
        pub elapsedSpace: Option<i64>,
        pub bizUrlToResponse: Option<BTreeMap<String, ArkClientResponse>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct JvmInfo {
        #[serde(rename = "max non heap memory(M)")]
        pub MaxNonHeapMemoryM: Option<f64>,
        #[serde(rename = "java version")]
        pub JavaVersion: Option<String>,
        #[serde(rename = "max memory(M)")]
        pub MaxMemoryM: Option<f64>,
        #[serde(rename = "max heap memory(M)")]
        pub MaxHeapMemoryM: Option<f64>,
        #[serde(rename = "used heap memory(M)")]
        pub UsedHeapMemoryM: Option<f64>,
        #[serde(rename = "used non heap memory(M)")]
        pub UsedNonHeapMemoryM: Option<f64>,
        #[serde(rename = "loaded class count")]
        pub LoadedClassCount: Option<i64>,
        #[serde(rename = "init non heap memory(M)")]
        pub InitNonHeapMemoryM: Option<f64>,
        #[serde(rename = "total memory(M)")]
        pub TotalMemoryM: Option<f64>,
        #[serde(rename = "free memory(M)")]
        pub FreeMemoryM: Option<f64>,
        #[serde(rename = "unload class count")]
        pub UnloadClassCount: Option<i64>,
        #[serde(rename = "total class count")]
        pub TotalClassCount: Option<i64>,
        #[serde(rename = "committed heap memory(M)")]
        pub CommittedHeapMemoryM: Option<f64>,
        #[serde(rename = "java home")]
        pub JavaHome: Option<String>,
        #[serde(rename = "init heap memory(M)")]
        pub InitHeapMemoryM: Option<f64>,
        #[serde(rename = "committed non heap memory(M)")]
        pub CommittedNonHeapMemoryM: Option<f64>,
        #[serde(rename = "run time(s)")]
        pub RunTimeS: Option<f64>,
        #[serde(rename = "java used metaspace")]
        pub JavaUsedMetaspace: Option<i64>,
        #[serde(rename = "java committed metaspace")]
        pub JavaCommittedMetaspace: Option<i64>,
        #[serde(rename = "java max metaspace")]
        pub JavaMaxMetaspace: Option<i64>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct CpuInfo {
        pub count: Option<i64>,
        #[serde(rename = "total used (%)")]
        pub TotalUsed: Option<f64>,
        #[serde(rename = "type")]
        pub Type: Option<String>,
        #[serde(rename = "user used (%)")]
        pub UserUsed: Option<f64>,
        #[serde(rename = "free (%)")]
        pub Free: Option<f64>,
        #[serde(rename = "system used (%)")]
        pub SystemUsed: Option<f64>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct MasterBizInfo {
        pub bizName: Option<String>,
        pub bizState: Option<String>,
        pub bizVersion: Option<String>,
        pub webContextPath: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct HealthData {
        pub jvm: Option<JvmInfo>,
        pub cpu: Option<CpuInfo>,
        pub masterBizInfo: Option<MasterBizInfo>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct HealthInfo {
        pub healthData: Option<HealthData>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkMqttMsg<T> {
        pub publishTimestamp: Option<i64>,
        pub data: Option<T>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct BaseMetadata {
        pub identity: Option<String>,
        pub version: Option<String>,
        pub clusterName: Option<String>,
        pub name: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct BaseStatus {
        pub baseMetadata: Option<BaseMetadata>,
        pub localIP: Option<String>,
        pub localHostName: Option<String>,
        pub port: Option<i64>,
        pub state: Option<String>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct BizOperationResponse {
        pub command: Option<String>,
        pub bizName: Option<String>,
        pub bizVersion: Option<String>,
        pub response: Option<ArkResponse<ArkResponseData>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct BatchInstallBizResponse {
        pub command: Option<String>,
        pub response: Option<ArkResponse<ArkBatchInstallResponse>>,
    }

    #[derive(Deserialize, Debug, Default)]
    #[serde(default)]
    pub struct ArkSimpleBizInfoData {
        pub name: Option<String>,
        pub version: Option<String>,
        pub state: Option<String>,
        pub latestStateRecord: Option<ArkBizStateRecord>,
    }
}

const T0: i64 = 1_731_900_000_123;

/// Encodes with our types for `t`, then decodes with the Go mirror `G`.
fn via_go<G: DeserializeOwned, T: Serialize>(ours: &T, t: Transport) -> G {
    let bytes = transport::encode(ours, t);
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "Go decoder would reject our {}: {e}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

fn records() -> Vec<StateRecord> {
    vec![
        StateRecord {
            change_time: T0,
            message: String::new(),
            reason: StateChangeReason::Created,
            state: BizState::Resolved,
        },
        StateRecord {
            change_time: T0 + 1092,
            message: "start but is deactivated".into(),
            reason: StateChangeReason::Started,
            state: BizState::Deactivated,
        },
    ]
}

fn biz_model() -> BizModel {
    BizModel {
        attributes: Some([("Ark-Biz-Name".to_owned(), "biz1".to_owned())].into()),
        biz_name: "biz1".into(),
        biz_state: Some(BizState::Activated),
        biz_state_records: Some(records()),
        biz_temp_work_dir: Some("/tmp/biz1-unpack".into()),
        biz_url: Some("file:/tmp/biz1-unpack/".into()),
        biz_version: "0.0.1".into(),
        class_path: Some(vec!["file:/tmp/biz1-unpack/".into()]),
        declared_mode: Some(false),
        deny_import_classes: Some(vec![]),
        identity: Some("biz1:0.0.1".into()),
        main_class: Some("com.example.Main".into()),
        priority: Some(100),
        web_context_path: Some("/biz1".into()),
        ..BizModel::default()
    }
}

fn install(code: ArkResultCode, elapsed: i64, with_model: bool) -> ClientResponse {
    ClientResponse {
        biz_infos: with_model.then(|| vec![biz_model()]),
        code,
        elapsed_space: Some(elapsed),
        message: "Install Biz: biz1:0.0.1 success".into(),
    }
}

fn health() -> Health {
    Health {
        health_data: HealthData {
            jvm: Some(JvmInfo {
                java_version: Some("17".into()),
                java_home: Some("/jvm".into()),
                total_memory_mib: Some(bytes_to_mib(80 << 20)),
                max_heap_mib: Some(bytes_to_mib(-1)),
                run_time_s: Some(9.73),
                loaded_class_count: Some(5405),
                unload_class_count: Some(0),
                total_class_count: Some(5405),
                used_metaspace: Some(24_584_168),
                committed_metaspace: Some(24_772_608),
                max_metaspace: Some(-1),
                ..JvmInfo::default()
            }),
            cpu: Some(CpuInfo {
                count: Some(2),
                kind: Some("Xeon".into()),
                total_used: Some(14730.0),
                user_used: Some(5.5),
                system_used: Some(2.1),
                free: Some(92.4),
            }),
            master_biz_info: Some(BizHealthMeta {
                biz_name: "base".into(),
                biz_state: BizState::Activated,
                biz_version: "1.0.0".into(),
                web_context_path: Some("/".into()),
            }),
            ..HealthData::default()
        },
    }
}

fn output<T>(code: ResponseCode, data: Option<T>, message: Option<&str>) -> Output<T> {
    Output {
        code,
        data,
        error_code: (code != ResponseCode::Success).then_some(ErrorCode::InstallBizFailed),
        message: message.map(str::to_owned),
    }
}

/// HTTP `queryAllBiz` → `GenericArkResponseBase[[]ArkBizInfo]`; the controller uses the states
/// case-insensitively and the latest record's `changeTime` (int64).
#[test]
fn query_all_biz_over_http() {
    let info = BizInfo {
        biz_name: "biz1".into(),
        biz_state: BizState::Deactivated,
        biz_state_records: records(),
        biz_version: "0.0.1".into(),
        main_class: Some("com.example.Main".into()),
        web_context_path: Some("/biz1".into()),
    };
    let go: go::ArkResponse<Vec<go::ArkBizInfo>> =
        via_go(&Response::success("10.0.0.5", vec![info]), Transport::Http);
    assert_eq!(go.code.as_deref(), Some("SUCCESS"));
    let biz = &go.data.unwrap()[0];
    assert_eq!(biz.bizName.as_deref(), Some("biz1"));
    assert_eq!(biz.bizState.as_deref(), Some("deactivated"));
    let recs = biz.bizStateRecords.as_ref().unwrap();
    assert_eq!(recs[1].changeTime, Some(T0 + 1092));
    assert_eq!(recs[1].reason.as_deref(), Some("Started"));
    assert_eq!(recs[1].message.as_deref(), Some("start but is deactivated"));
}

/// HTTP `installBiz`/`uninstallBiz` → `ArkResponse[ArkResponseData]`, including a negative
/// `elapsedSpace` (int) and a full BizModel (`priority` int, `attributes` string map).
#[test]
fn install_and_uninstall_over_http() {
    let ok = Response::success("10.0.0.5", install(ArkResultCode::Success, -4096, true));
    let go: go::ArkResponse<go::ArkResponseData> = via_go(&ok, Transport::Http);
    assert_eq!(go.code.as_deref(), Some("SUCCESS"));
    assert_eq!(go.baseIdentity.as_deref(), Some("10.0.0.5"));
    let data = go.data.unwrap();
    assert_eq!(data.elapsedSpace, Some(-4096));
    assert_eq!(
        data.message.as_deref(),
        Some("Install Biz: biz1:0.0.1 success")
    );
    let model = &data.bizInfos.unwrap()[0];
    assert_eq!(model.priority, Some(100));
    assert_eq!(model.bizState.as_deref(), Some("activated"));
    assert_eq!(model.attributes.as_ref().unwrap()["Ark-Biz-Name"], "biz1");
    assert_eq!(model.bizStateRecords.as_ref().map(Vec::len), Some(2));

    let not_found = Response::failed(
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
    let go: go::ArkResponse<go::ArkResponseData> = via_go(&not_found, Transport::Http);
    assert_eq!(go.code.as_deref(), Some("FAILED"));
    assert_eq!(go.message.as_deref(), Some("uninstall biz not success!"));
    assert_eq!(go.data.unwrap().code.as_deref(), Some("NOT_FOUND_BIZ"));

    let internal: Response<ClientResponse> = Response::internal_error(
        "bizUrl should not be blank",
        ErrorCode::InvalidParameter,
        "st",
    );
    let go: go::ArkResponse<go::ArkResponseData> = via_go(&internal, Transport::Http);
    assert_eq!(go.code.as_deref(), Some("CMD_PROCESS_INTERNAL_ERROR"));
    assert_eq!(
        go.message.as_deref(),
        Some("Internal Error: bizUrl should not be blank")
    );
    assert_eq!(go.errorStackTrace.as_deref(), Some("st"));
}

/// HTTP `batchInstallBiz` → arkctl `ArkBatchInstallResponse` (`elapsedSpace int`).
#[test]
fn batch_install_over_http() {
    let data = BatchInstallResponse {
        biz_url_to_response: Some(
            [(
                "file:///b.jar".to_owned(),
                install(ArkResultCode::Success, 1, true),
            )]
            .into(),
        ),
        code: ArkResultCode::Success,
        elapsed_space: Some(52_428_800),
        message: "batch install success".into(),
    };
    let go: go::ArkResponse<go::ArkBatchInstallResponse> =
        via_go(&Response::success("10.0.0.5", data), Transport::Http);
    let data = go.data.unwrap();
    assert_eq!(data.elapsedSpace, Some(52_428_800));
    let entry = &data.bizUrlToResponse.unwrap()["file:///b.jar"];
    assert_eq!(
        entry.bizInfos.as_ref().unwrap()[0].bizName.as_deref(),
        Some("biz1")
    );
}

/// HTTP `health` → `GenericArkResponseBase[HealthInfo]`: MiB keys float64, counts int,
/// metaspace int64 (MC turns `java max metaspace` into the vnode capacity).
#[test]
fn health_over_http() {
    let go: go::ArkResponse<go::HealthInfo> =
        via_go(&Response::success("10.0.0.5", health()), Transport::Http);
    let hd = go.data.unwrap().healthData.unwrap();
    let jvm = hd.jvm.unwrap();
    assert_eq!(jvm.TotalMemoryM, Some(80.0));
    assert_eq!(jvm.MaxHeapMemoryM, Some(-9.5367431640625E-7));
    assert_eq!(jvm.LoadedClassCount, Some(5405));
    assert_eq!(jvm.JavaUsedMetaspace, Some(24_584_168));
    assert_eq!(jvm.JavaCommittedMetaspace, Some(24_772_608));
    assert_eq!(jvm.JavaMaxMetaspace, Some(-1));
    assert_eq!(jvm.RunTimeS, Some(9.73));
    let cpu = hd.cpu.unwrap();
    assert_eq!((cpu.count, cpu.TotalUsed), (Some(2), Some(14730.0)));
    assert_eq!(
        hd.masterBizInfo.unwrap().bizState.as_deref(),
        Some("activated")
    );
}

/// MQTT `base/health` → `ArkMqttMsg[ark.HealthResponse]`; node state is
/// `upper(masterBizInfo.bizState)`.
#[test]
fn health_over_mqtt() {
    let env = Envelope::new(output(ResponseCode::Success, Some(health()), None), T0);
    let go: go::ArkMqttMsg<go::ArkResponse<go::HealthInfo>> = via_go(&env, Transport::Mqtt);
    assert_eq!(go.publishTimestamp, Some(T0));
    let data = go.data.unwrap();
    assert_eq!(data.code.as_deref(), Some("SUCCESS"));
    let hd = data.data.unwrap().healthData.unwrap();
    assert_eq!(
        hd.masterBizInfo.unwrap().bizState.as_deref(),
        Some("ACTIVATED")
    );
    assert_eq!(hd.jvm.unwrap().JavaMaxMetaspace, Some(-1));
}

/// Heartbeats → `BaseStatus` (raw over HTTP, enveloped over MQTT); `port` is a Go int.
#[test]
fn heartbeats() {
    let status = |port| BaseStatus {
        base_metadata: BaseMetadata {
            cluster_name: "default".into(),
            identity: "10.0.0.5".into(),
            name: "base".into(),
            version: "1.0.0".into(),
        },
        local_host_name: "host".into(),
        local_ip: "10.0.0.5".into(),
        port,
        state: BizState::Deactivated,
    };
    let http: go::BaseStatus = via_go(&status(1238), Transport::Mqtt);
    assert_eq!(http.port, Some(1238));
    assert_eq!(http.localIP.as_deref(), Some("10.0.0.5"));
    assert_eq!(http.state.as_deref(), Some("deactivated"));
    assert_eq!(
        http.baseMetadata.unwrap().clusterName.as_deref(),
        Some("default")
    );

    let go: go::ArkMqttMsg<go::BaseStatus> = via_go(&Envelope::new(status(0), T0), Transport::Mqtt);
    assert_eq!(go.publishTimestamp, Some(T0));
    assert_eq!(go.data.unwrap().port, Some(0));

    let go: go::ArkMqttMsg<go::BaseMetadata> =
        via_go(&Envelope::new(status(0).base_metadata, T0), Transport::Mqtt);
    assert_eq!(go.data.unwrap().identity.as_deref(), Some("10.0.0.5"));
}

/// MQTT `base/simpleBiz` → `ArkMqttMsg[ArkSimpleAllBizInfoData]`, explicit nulls included.
#[test]
fn simple_biz_over_mqtt() {
    let list = vec![
        SimpleBizInfo {
            latest_state_record: records().pop(),
            name: Some("biz1".into()),
            state: BizState::Deactivated,
            version: Some("0.0.1".into()),
        },
        SimpleBizInfo {
            latest_state_record: None,
            name: None,
            state: BizState::Resolved,
            version: None,
        },
    ];
    let go: go::ArkMqttMsg<Vec<go::ArkSimpleBizInfoData>> =
        via_go(&Envelope::new(list, T0), Transport::Mqtt);
    let data = go.data.unwrap();
    assert_eq!(data[0].state.as_deref(), Some("deactivated"));
    let rec = data[0].latestStateRecord.as_ref().unwrap();
    assert_eq!(rec.changeTime, Some(T0 + 1092));
    assert_eq!(rec.state.as_deref(), Some("DEACTIVATED"));
    assert_eq!(rec.reason.as_deref(), Some("STARTED"));
    assert!(data[1].latestStateRecord.is_none() && data[1].name.is_none());
}

/// MQTT `base/bizOperation` and `base/batchInstallBizResponse`: the controller reads
/// `response.code`, `response.data.message` and (batch) `bizInfos[0].bizState`.
#[test]
fn operations_over_mqtt() {
    let op = BizOperationResponse {
        biz_name: Some("biz1".into()),
        biz_version: Some("0.0.1".into()),
        command: "installBiz".into(),
        response: output(
            ResponseCode::Failed,
            Some(install(ArkResultCode::RepeatBiz, 0, false)),
            Some("install biz not success!"),
        ),
    };
    let go: go::ArkMqttMsg<go::BizOperationResponse> =
        via_go(&Envelope::new(op, T0), Transport::Mqtt);
    let data = go.data.unwrap();
    assert_eq!(data.command.as_deref(), Some("installBiz"));
    assert_eq!(data.bizName.as_deref(), Some("biz1"));
    let resp = data.response.unwrap();
    assert_eq!(resp.code.as_deref(), Some("FAILED"));
    assert_eq!(resp.data.unwrap().code.as_deref(), Some("REPEAT_BIZ"));

    let batch = BatchInstallBizResponseMsg {
        command: "batchInstallBiz".into(),
        response: output(
            ResponseCode::Success,
            Some(BatchInstallResponse {
                biz_url_to_response: Some(
                    [(
                        "file:///b.jar".to_owned(),
                        install(ArkResultCode::Success, 7, true),
                    )]
                    .into(),
                ),
                code: ArkResultCode::Success,
                elapsed_space: Some(-1),
                message: "batch install success".into(),
            }),
            None,
        ),
    };
    let go: go::ArkMqttMsg<go::BatchInstallBizResponse> =
        via_go(&Envelope::new(batch, T0), Transport::Mqtt);
    let resp = go.data.unwrap().response.unwrap().data.unwrap();
    assert_eq!(resp.elapsedSpace, Some(-1));
    let entry = &resp.bizUrlToResponse.unwrap()["file:///b.jar"];
    // MC indexes bizInfos[0] unguarded (T15).
    assert_eq!(
        entry.bizInfos.as_ref().unwrap()[0].bizState.as_deref(),
        Some("ACTIVATED")
    );
}

/// Every golden capture re-encoded by our types still decodes with the Go mirrors: the same
/// check on real-world shapes (two-version lists, failures, stack traces).
#[test]
fn golden_captures_reencoded_decode_in_go() {
    fn check<T: DeserializeOwned + Serialize, G: DeserializeOwned>(file: &str, t: Transport) {
        let ours: T =
            serde_json::from_slice(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let bytes = transport::encode(&ours, t);
        if let Err(e) = serde_json::from_slice::<G>(&bytes) {
            panic!("{file}: Go decoder would reject our output: {e}");
        }
    }
    type Biz = go::ArkResponse<go::ArkResponseData>;
    let h = Transport::Http;
    let m = Transport::Mqtt;
    for f in [
        "07_installBiz_a_1.0.0",
        "08_installBiz_a_1.0.0_repeat",
        "16_uninstallBiz_not_installed",
        "28_installBiz_main_throws",
    ] {
        check::<Response<ClientResponse>, Biz>(&format!("real-http/{f}.resp.json"), h);
    }
    for f in [
        "02_queryAllBiz_empty",
        "14_queryAllBiz_after_switch",
        "48_queryAllBiz_after_uninstall_active",
    ] {
        check::<Response<Vec<BizInfo>>, go::ArkResponse<Vec<go::ArkBizInfo>>>(
            &format!("real-http/{f}.resp.json"),
            h,
        );
    }
    for f in [
        "03_health_all_empty_body_object",
        "04_health_system_cpu",
        "20_health_biz_b",
        "21_health_biz_not_installed",
    ] {
        check::<Response<Health>, go::ArkResponse<go::HealthInfo>>(
            &format!("real-http/{f}.resp.json"),
            h,
        );
    }
    check::<Response<BatchInstallResponse>, go::ArkResponse<go::ArkBatchInstallResponse>>(
        "real-http/19_batchInstallBiz_b_c.resp.json",
        h,
    );
    let mqtt = "real-mqtt/";
    check::<Envelope<BaseStatus>, go::ArkMqttMsg<go::BaseStatus>>(
        &format!("{mqtt}mqtt00_connect_queryBaseline_heartbeats.base-heart.json"),
        m,
    );
    check::<Envelope<BaseMetadata>, go::ArkMqttMsg<go::BaseMetadata>>(
        &format!("{mqtt}mqtt00_connect_queryBaseline_heartbeats.base-queryBaseline.json"),
        m,
    );
    check::<Envelope<Output<Health>>, go::ArkMqttMsg<go::ArkResponse<go::HealthInfo>>>(
        &format!("{mqtt}mqtt01_health.base-health.json"),
        m,
    );
    check::<Envelope<Vec<SimpleBizInfo>>, go::ArkMqttMsg<Vec<go::ArkSimpleBizInfoData>>>(
        &format!("{mqtt}mqtt12_queryAllBiz_after_baseline.base-simpleBiz.json"),
        m,
    );
    for f in [
        "mqtt03_installBiz_a_1.0.0",
        "mqtt07_uninstallBiz_not_installed",
        "mqtt08_installBiz_missing_file",
    ] {
        check::<Envelope<BizOperationResponse>, go::ArkMqttMsg<go::BizOperationResponse>>(
            &format!("{mqtt}{f}.base-bizOperation.json"),
            m,
        );
    }
    for f in ["mqtt11_retained_baseline", "mqtt15_clear_retained"] {
        check::<Envelope<BatchInstallBizResponseMsg>, go::ArkMqttMsg<go::BatchInstallBizResponse>>(
            &format!("{mqtt}{f}.base-batchInstallBizResponse.json"),
            m,
        );
    }
}

/// The mirrors are as strict as Go: without this, the tests above could pass on output Go
/// rejects.
#[test]
fn mirrors_reject_what_go_rejects() {
    type Rejects = fn(&str) -> bool;
    let bad: [(&str, Rejects); 6] = [
        (r#"{"changeTime":1.0}"#, |s| {
            serde_json::from_str::<go::ArkBizStateRecord>(s).is_err()
        }),
        (r#"{"changeTime":"1"}"#, |s| {
            serde_json::from_str::<go::ArkBizStateRecord>(s).is_err()
        }),
        (r#"{"publishTimestamp":1.7e12}"#, |s| {
            serde_json::from_str::<go::ArkMqttMsg<Value>>(s).is_err()
        }),
        (r#"{"elapsedSpace":10.0}"#, |s| {
            serde_json::from_str::<go::ArkResponseData>(s).is_err()
        }),
        (r#"{"priority":"100"}"#, |s| {
            serde_json::from_str::<go::BizInfo>(s).is_err()
        }),
        (r#"{"java max metaspace":-1.0}"#, |s| {
            serde_json::from_str::<go::JvmInfo>(s).is_err()
        }),
    ];
    for (json, rejected) in bad {
        assert!(rejected(json), "mirror accepted {json}");
    }
    // ... and as lenient: unknown keys, nulls and integers in float fields are fine in Go.
    let ok: go::JvmInfo =
        serde_json::from_str(r#"{"max memory(M)":885,"java home":null,"extra":{}}"#).unwrap();
    assert_eq!(ok.MaxMemoryM, Some(885.0));
}
