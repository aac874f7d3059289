//! What one simulated base holds: its identity, JVM figures and modules, and the Java
//! Arklet's answers to commands (spec protocol §2.4, §4, §5.6), built from the protocol
//! crate's types so that the bytes are the ones the controller decodes from real bases.

use std::collections::BTreeMap;

use koupleless_protocol::{
    ArkResultCode, BaseMetadata, BaseStatus, BatchInstallResponse, BizHealthMeta, BizInfo,
    BizModel, BizSpec, BizState, ClientResponse, CpuInfo, Health, HealthData, JvmInfo, Output,
    ResponseCode, SimpleBizInfo, StateChangeReason, StateRecord,
};

/// One installed module and its state history (the last record is the current state).
#[derive(Clone, Debug)]
struct Module {
    name: String,
    version: String,
    url: String,
    records: Vec<StateRecord>,
}

impl Module {
    fn state(&self) -> BizState {
        self.records
            .last()
            .map(|r| r.state)
            .unwrap_or(BizState::Resolved)
    }

    fn info(&self) -> BizInfo {
        BizInfo {
            biz_name: self.name.clone(),
            biz_state: self.state(),
            biz_state_records: self.records.clone(),
            biz_version: self.version.clone(),
            main_class: Some(format!("com.example.{}.Application", self.name)),
            web_context_path: Some(self.name.clone()),
        }
    }
}

/// A simulated base: identity, JVM figures and modules.
#[derive(Clone, Debug)]
pub struct BaseModel {
    /// The base identity (topic segment, Node name `vnode.<identity>.<env>`).
    pub identity: String,
    /// Base name (Node label `base.koupleless.io/name`).
    pub name: String,
    /// Base version.
    pub version: String,
    /// Cluster name.
    pub cluster: String,
    /// Metaspace limit reported in health, bytes.
    pub max_metaspace: i64,
    /// Committed metaspace reported in health, bytes.
    pub committed_metaspace: i64,
    modules: BTreeMap<String, Module>,
}

fn key(spec: &BizSpec) -> String {
    format!("{}:{}", spec.biz_name, spec.biz_version)
}

fn record(now_ms: i64, reason: StateChangeReason, state: BizState, message: &str) -> StateRecord {
    StateRecord {
        change_time: now_ms,
        message: message.into(),
        reason,
        state,
    }
}

fn failed(data: ClientResponse, message: &str) -> Output<ClientResponse> {
    Output {
        code: ResponseCode::Failed,
        data: Some(data),
        error_code: None,
        message: Some(message.into()),
    }
}

impl BaseModel {
    /// A base with no modules and the figures of a small Spring Boot base.
    pub fn new(identity: &str) -> BaseModel {
        BaseModel {
            identity: identity.into(),
            name: "base".into(),
            version: "1.0.0".into(),
            cluster: "default".into(),
            max_metaspace: 256 << 20,
            committed_metaspace: 80 << 20,
            modules: BTreeMap::new(),
        }
    }

    /// The metadata in heartbeats and baseline queries.
    pub fn metadata(&self) -> BaseMetadata {
        BaseMetadata {
            cluster_name: self.cluster.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

    /// The heartbeat body: Java always sends `activated`; `port` is 0 over MQTT.
    pub fn status(&self, port: u16, state: BizState) -> BaseStatus {
        BaseStatus {
            base_metadata: self.metadata(),
            local_host_name: format!("{}-pod", self.identity),
            local_ip: "127.0.0.1".into(),
            port,
            state,
        }
    }

    /// A health report, after committing `creep` more bytes of metaspace (capped at the
    /// limit), as a running JVM does while it loads classes.
    pub fn report_health(&mut self, creep: i64) -> Health {
        self.committed_metaspace = (self.committed_metaspace + creep).min(self.max_metaspace);
        self.health()
    }

    /// The health data, unchanged from one report to the next as on an idle base.
    pub fn health(&self) -> Health {
        Health {
            health_data: HealthData {
                jvm: Some(JvmInfo {
                    java_version: Some("17.0.9".into()),
                    max_metaspace: Some(self.max_metaspace),
                    committed_metaspace: Some(self.committed_metaspace),
                    used_metaspace: Some(self.committed_metaspace - 1024),
                    max_heap_mib: Some(885.5),
                    loaded_class_count: Some(10063),
                    ..JvmInfo::default()
                }),
                cpu: Some(CpuInfo {
                    count: Some(4),
                    kind: Some("Intel(R) Xeon(R) CPU".into()),
                    total_used: Some(131749.0),
                    user_used: Some(9.9),
                    system_used: Some(6.2),
                    free: Some(81.4),
                }),
                master_biz_info: Some(BizHealthMeta {
                    biz_name: self.name.clone(),
                    biz_state: BizState::Activated,
                    biz_version: self.version.clone(),
                    web_context_path: Some("/".into()),
                }),
                ..HealthData::default()
            },
        }
    }

    /// The Arklet's `installBiz`: `REPEAT_BIZ` for a name:version already there; a failure
    /// (`fail`) is an exception before the module exists (e.g. the download), so nothing is
    /// recorded; otherwise the module is created and started, and an active older version of
    /// the same name is switched off (sofa-ark `activate.new.module`).
    pub fn install(&mut self, spec: &BizSpec, fail: bool, now_ms: i64) -> Output<ClientResponse> {
        let k = key(spec);
        if self.modules.contains_key(&k) {
            return failed(
                ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::RepeatBiz,
                    elapsed_space: None,
                    message: format!("biz {k} has been installed or registered"),
                },
                "install biz not success!",
            );
        }
        if fail {
            let why = format!("simulated install failure of {k}");
            return failed(
                ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::Failed,
                    elapsed_space: None,
                    message: format!("java.lang.RuntimeException: {why}\n\tat simulator"),
                },
                &why,
            );
        }
        for m in self.modules.values_mut() {
            if m.name == spec.biz_name && m.state() == BizState::Activated {
                m.records.push(record(
                    now_ms,
                    StateChangeReason::Switched,
                    BizState::Deactivated,
                    &format!("switch to new biz {k}"),
                ));
            }
        }
        let module = Module {
            name: spec.biz_name.clone(),
            version: spec.biz_version.clone(),
            url: spec.biz_url.clone(),
            records: vec![
                record(now_ms, StateChangeReason::Created, BizState::Resolved, ""),
                record(now_ms, StateChangeReason::Started, BizState::Activated, ""),
            ],
        };
        self.modules.insert(k.clone(), module);
        Output {
            code: ResponseCode::Success,
            data: Some(ClientResponse {
                biz_infos: Some(vec![BizModel {
                    biz_name: spec.biz_name.clone(),
                    biz_version: spec.biz_version.clone(),
                    biz_state: Some(BizState::Activated),
                    biz_url: Some(spec.biz_url.clone()),
                    ..BizModel::default()
                }]),
                code: ArkResultCode::Success,
                elapsed_space: Some(10 << 20),
                message: format!("Install Biz: {k} success"),
            }),
            error_code: None,
            message: None,
        }
    }

    /// The Arklet's `uninstallBiz`: `NOT_FOUND_BIZ` when absent.
    pub fn uninstall(&mut self, spec: &BizSpec) -> Output<ClientResponse> {
        let k = key(spec);
        match self.modules.remove(&k) {
            Some(_) => Output {
                code: ResponseCode::Success,
                data: Some(ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::Success,
                    elapsed_space: None,
                    message: format!("Uninstall biz: {k} success."),
                }),
                error_code: None,
                message: None,
            },
            None => failed(
                ClientResponse {
                    biz_infos: None,
                    code: ArkResultCode::NotFoundBiz,
                    elapsed_space: None,
                    message: format!("biz {k} not found"),
                },
                "uninstall biz not success!",
            ),
        }
    }

    /// `batchInstallBiz` of a baseline (spec protocol §2.4.7): every item installed, keyed
    /// by URL; a failed or repeated item carries no `bizInfos`.
    pub fn batch_install(
        &mut self,
        specs: &[BizSpec],
        mut fail: impl FnMut() -> bool,
        now_ms: i64,
    ) -> Output<BatchInstallResponse> {
        let mut by_url = BTreeMap::new();
        for spec in specs {
            let out = self.install(spec, fail(), now_ms);
            let mut data = out.data.unwrap_or(ClientResponse {
                biz_infos: None,
                code: ArkResultCode::Failed,
                elapsed_space: None,
                message: String::new(),
            });
            if data.code != ArkResultCode::Success {
                data.biz_infos = None;
            }
            by_url.insert(spec.biz_url.clone(), data);
        }
        let ok = by_url.values().all(|r| r.code == ArkResultCode::Success);
        let data = BatchInstallResponse {
            biz_url_to_response: Some(by_url),
            code: if ok {
                ArkResultCode::Success
            } else {
                ArkResultCode::Failed
            },
            elapsed_space: Some(0),
            message: if ok {
                "batch install success"
            } else {
                "batch install failed"
            }
            .into(),
        };
        Output {
            code: if ok {
                ResponseCode::Success
            } else {
                ResponseCode::Failed
            },
            data: Some(data),
            error_code: None,
            message: (!ok).then(|| "install biz not success!".into()),
        }
    }

    /// The MQTT `simpleBiz` list (the master biz excluded, as Java does).
    pub fn simple_biz(&self) -> Vec<SimpleBizInfo> {
        self.modules
            .values()
            .map(|m| SimpleBizInfo::from(&m.info()))
            .collect()
    }

    /// The HTTP `queryAllBiz` list.
    pub fn biz_infos(&self) -> Vec<BizInfo> {
        self.modules.values().map(Module::info).collect()
    }

    /// `name:version` and state of every module.
    pub fn states(&self) -> Vec<(String, BizState)> {
        self.modules
            .iter()
            .map(|(k, m)| (k.clone(), m.state()))
            .collect()
    }

    /// Forgets every module, as a restarted JVM does.
    pub fn clear(&mut self) {
        self.modules.clear();
    }

    /// The package URL of a module, if installed.
    pub fn url_of(&self, name_version: &str) -> Option<&str> {
        self.modules.get(name_version).map(|m| m.url.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use koupleless_protocol::transport::{self, Transport};
    use serde_json::{Value, json};

    fn spec(v: &str) -> BizSpec {
        BizSpec {
            biz_name: "biz1".into(),
            biz_version: v.into(),
            biz_url: format!("https://repo/biz1-{v}.jar"),
        }
    }

    #[test]
    fn install_repeat_switch_uninstall() {
        let mut b = BaseModel::new("b1");
        let out = b.install(&spec("1"), false, 1000);
        let v = transport::to_value(&out, Transport::Mqtt);
        assert_eq!(v["code"], "SUCCESS");
        assert_eq!(v["data"]["code"], "SUCCESS");
        assert_eq!(v["data"]["bizInfos"][0]["bizState"], "ACTIVATED");

        let again = b.install(&spec("1"), false, 1001);
        let v = transport::to_value(&again, Transport::Mqtt);
        assert_eq!(v["code"], "FAILED");
        assert_eq!(v["data"]["code"], "REPEAT_BIZ");
        assert_eq!(v["message"], "install biz not success!");

        b.install(&spec("2"), false, 2000);
        assert_eq!(
            b.states(),
            [
                ("biz1:1".to_owned(), BizState::Deactivated),
                ("biz1:2".to_owned(), BizState::Activated)
            ]
        );
        // simpleBiz: lower-case state, upper-case record, explicit nulls never needed here.
        let list = transport::to_value(&b.simple_biz(), Transport::Mqtt);
        assert_eq!(
            list[0],
            json!({"latestStateRecord": {"changeTime": 2000, "message": "switch to new biz biz1:2",
                "reason": "SWITCHED", "state": "DEACTIVATED"},
                "name": "biz1", "state": "deactivated", "version": "1"})
        );

        let gone = b.uninstall(&spec("1"));
        assert_eq!(gone.code, ResponseCode::Success);
        let missing = transport::to_value(&b.uninstall(&spec("1")), Transport::Mqtt);
        assert_eq!(missing["data"]["code"], "NOT_FOUND_BIZ");
    }

    #[test]
    fn failures_leave_no_module_and_batch_reports_per_url() {
        let mut b = BaseModel::new("b1");
        let out = b.install(&spec("1"), true, 1000);
        assert_eq!(out.code, ResponseCode::Failed);
        assert!(b.states().is_empty());

        let mut flips = [false, true].into_iter();
        let out = b.batch_install(
            &[spec("1"), spec("2")],
            || flips.next().unwrap_or(false),
            3000,
        );
        let v: Value = transport::to_value(&out, Transport::Mqtt);
        assert_eq!(v["code"], "FAILED");
        assert_eq!(v["data"]["message"], "batch install failed");
        let m = &v["data"]["bizUrlToResponse"];
        assert_eq!(m["https://repo/biz1-1.jar"]["code"], "SUCCESS");
        assert!(m["https://repo/biz1-2.jar"].get("bizInfos").is_none());
        assert_eq!(b.url_of("biz1:1"), Some("https://repo/biz1-1.jar"));
    }
}
