//! Simulated bases whose modules are real to the controller, in any env: installs and
//! uninstalls change the module list, every command is counted, and a new version of an
//! active module takes over (SOFAArk `activate.new.module=true`, our agent's
//! `--activation new-takes-over`), as the Java Arklet reports it (spec protocol §5.6, §6.2).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BizSpec, BizState, Envelope, Output, ResponseCode};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{BaseState, now_ms};

/// One module on a simulated base.
#[derive(Clone, Debug)]
pub struct SimModule {
    pub name: String,
    pub version: String,
    pub state: BizState,
    pub change_ms: i64,
    pub reason: &'static str,
    pub message: String,
}

/// The modules of a simulated base, the commands it received and how it behaves.
#[derive(Debug)]
pub struct ModuleSim {
    pub base: BaseState,
    pub modules: BTreeMap<String, SimModule>,
    /// Package URLs whose install fails, with the base's message.
    pub failing: HashMap<String, String>,
    /// Every install command received, in order (refused ones included).
    pub installs: Vec<BizSpec>,
    /// Every uninstall command received, in order.
    pub uninstalls: Vec<BizSpec>,
    /// State a fresh install lands in.
    pub install_state: BizState,
    /// Answer install/uninstall (MQTT `bizOperation`); when false the command is applied
    /// but never answered, so it stays in flight for the controller.
    pub reply_ops: bool,
    /// Full module lists answered (`queryAllBiz`), to wait for the controller's next looks.
    pub lists: usize,
}

/// A simulated base's state, shared with its tunnel task.
pub type SharedModuleSim = Arc<Mutex<ModuleSim>>;

impl ModuleSim {
    pub fn new(identity: &str) -> ModuleSim {
        ModuleSim {
            base: BaseState::new(identity),
            modules: BTreeMap::new(),
            failing: HashMap::new(),
            installs: Vec::new(),
            uninstalls: Vec::new(),
            install_state: BizState::Activated,
            reply_ops: true,
            lists: 0,
        }
    }

    /// Java Arklet semantics: a second install of the same name:version is refused, and an
    /// activated new version deactivates the active one of the same name.
    pub fn install(&mut self, spec: &BizSpec) -> Result<String, String> {
        self.installs.push(spec.clone());
        let key = format!("{}:{}", spec.biz_name, spec.biz_version);
        if let Some(msg) = self.failing.get(&spec.biz_url) {
            return Err(msg.clone());
        }
        if self.modules.contains_key(&key) {
            return Err(format!("biz {key} already installed"));
        }
        let now = now_ms();
        if self.install_state == BizState::Activated {
            self.take_over(&spec.biz_name, &key, now);
        }
        self.modules.insert(
            key.clone(),
            SimModule {
                name: spec.biz_name.clone(),
                version: spec.biz_version.clone(),
                state: self.install_state,
                change_ms: now,
                reason: "STARTED",
                message: String::new(),
            },
        );
        Ok(format!("Install Biz: {key} success"))
    }

    fn take_over(&mut self, name: &str, key: &str, now: i64) {
        for m in self.modules.values_mut() {
            if m.name == name && m.state == BizState::Activated {
                m.state = BizState::Deactivated;
                m.change_ms = now;
                m.reason = "SWITCHED";
                m.message = format!("switch to new biz {key}");
            }
        }
    }

    pub fn uninstall(&mut self, spec: &BizSpec) -> Result<String, String> {
        self.uninstalls.push(spec.clone());
        let key = format!("{}:{}", spec.biz_name, spec.biz_version);
        match self.modules.remove(&key) {
            Some(_) => Ok(format!("Uninstall biz: {key} success")),
            None => Err(format!("biz {key} not found")),
        }
    }

    /// Activates every module that is not (as a base finishing slow starts does), the newest
    /// one of each name last so that it takes over.
    pub fn activate_all(&mut self) {
        let keys: Vec<(String, String)> = self
            .modules
            .iter()
            .filter(|(_, m)| m.state != BizState::Activated)
            .map(|(k, m)| (k.clone(), m.name.clone()))
            .collect();
        for (key, name) in keys {
            let now = now_ms();
            self.take_over(&name, &key, now);
            let m = self.modules.get_mut(&key).expect("listed above");
            m.state = BizState::Activated;
            m.change_ms = now;
            m.reason = "STARTED";
            m.message.clear();
        }
    }

    /// `name:version` → state of every module.
    pub fn states(&self) -> Vec<(String, BizState)> {
        self.modules
            .iter()
            .map(|(k, m)| (k.clone(), m.state))
            .collect()
    }

    /// How many install commands named `name:version`.
    pub fn install_count(&self, key: &str) -> usize {
        self.installs
            .iter()
            .filter(|s| format!("{}:{}", s.biz_name, s.biz_version) == key)
            .count()
    }

    /// How many uninstall commands named `name:version`.
    pub fn uninstall_count(&self, key: &str) -> usize {
        self.uninstalls
            .iter()
            .filter(|s| format!("{}:{}", s.biz_name, s.biz_version) == key)
            .count()
    }

    fn simple_biz(&self) -> Value {
        Value::Array(
            self.modules
                .values()
                .map(|b| {
                    json!({"latestStateRecord": {"changeTime": b.change_ms, "message": b.message,
                        "reason": b.reason, "state": b.state.as_upper()},
                        "name": b.name, "state": b.state.as_upper().to_ascii_lowercase(),
                        "version": b.version})
                })
                .collect(),
        )
    }

    fn biz_infos(&self) -> Value {
        Value::Array(
            self.modules
                .values()
                .map(|b| {
                    json!({"bizName": b.name, "bizVersion": b.version,
                        "bizState": b.state.as_upper().to_ascii_lowercase(),
                        "bizStateRecords": [{"changeTime": b.change_ms, "message": b.message,
                            "reason": b.reason, "state": b.state.as_upper().to_ascii_lowercase()}]})
                })
                .collect(),
        )
    }
}

/// The Arklet's answer; `state` is the module's state after an install (an uninstall's
/// answer carries no module, as the real Arklet's: golden real-arklet 15).
fn op_response(spec: &BizSpec, result: &Result<String, String>, state: Option<BizState>) -> Value {
    match (result, state) {
        (Ok(msg), Some(state)) => {
            json!({"code": "SUCCESS", "data": {"code": "SUCCESS", "message": msg,
            "bizInfos": [{"bizName": spec.biz_name, "bizVersion": spec.biz_version,
                "bizState": state.as_upper()}]}})
        }
        (Ok(msg), None) => json!({"code": "SUCCESS", "data": {"code": "SUCCESS", "message": msg}}),
        (Err(msg), _) => {
            json!({"code": "FAILED", "data": {"code": "FAILED", "message": msg}, "message": msg})
        }
    }
}

/// A module base on the MQTT tunnel of `env`.
pub struct ModuleMqttBase {
    pub sim: SharedModuleSim,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ModuleMqttBase {
    pub async fn start(broker_port: u16, env: &str, sim: ModuleSim) -> ModuleMqttBase {
        let identity = sim.base.identity.clone();
        let prefix = format!("koupleless_{env}/{identity}");
        let mut opts =
            MqttOptions::new(format!("koupleless@@@{identity}"), "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let sim: SharedModuleSim = Arc::new(Mutex::new(sim));
        let cancel = CancellationToken::new();
        let (st, c, token) = (sim.clone(), client.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        let s = st.lock().unwrap().base.clone();
                        if s.heartbeats {
                            let hb = Envelope::new(s.status(0, BizState::Activated), now_ms());
                            let _ = c.try_publish(format!("{prefix}/base/heart"), QoS::AtLeastOnce, false, transport::encode(&hb, Transport::Mqtt));
                        }
                    }
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = c.try_subscribe(format!("{prefix}/+"), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            mqtt_command(&st, &c, &prefix, &p.topic, &p.payload);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        ModuleMqttBase { sim, cancel, task }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut ModuleSim) -> R) -> R {
        f(&mut self.sim.lock().unwrap())
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn mqtt_command(st: &SharedModuleSim, c: &AsyncClient, prefix: &str, t: &str, payload: &[u8]) {
    let cmd = t.rsplit('/').next().unwrap_or_default();
    let mut s = st.lock().unwrap();
    if !s.base.answers {
        return;
    }
    let publish = |rest: &str, data: Value| {
        let body = json!({"data": data, "publishTimestamp": now_ms()});
        let _ = c.try_publish(
            format!("{prefix}/{rest}"),
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(&body).unwrap(),
        );
    };
    match cmd {
        "health" => {
            let out = Output {
                code: ResponseCode::Success,
                data: Some(s.base.health()),
                error_code: None,
                message: None,
            };
            let e = Envelope::new(out, now_ms());
            let _ = c.try_publish(
                format!("{prefix}/base/health"),
                QoS::AtLeastOnce,
                false,
                transport::encode(&e, Transport::Mqtt),
            );
        }
        "queryAllBiz" => {
            s.lists += 1;
            publish("base/simpleBiz", s.simple_biz());
        }
        "installBiz" | "uninstallBiz" => {
            let Ok(spec) = serde_json::from_slice::<BizSpec>(payload) else {
                return;
            };
            let install = cmd == "installBiz";
            let result = if install {
                s.install(&spec)
            } else {
                s.uninstall(&spec)
            };
            if s.reply_ops {
                let state = if install {
                    s.install_state
                } else {
                    BizState::Stopped
                };
                let response = op_response(&spec, &result, Some(state));
                publish(
                    "base/bizOperation",
                    json!({"bizName": spec.biz_name, "bizVersion": spec.biz_version,
                        "command": cmd, "response": response}),
                );
                // The Java base follows every operation with its full list.
                publish("base/simpleBiz", s.simple_biz());
            }
        }
        _ => {}
    }
}

/// A module base on the HTTP tunnel: an Arklet HTTP API plus heartbeats to the controller.
pub struct ModuleHttpBase {
    pub sim: SharedModuleSim,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn arklet(
    State(st): State<SharedModuleSim>,
    uri: axum::http::Uri,
    body: Bytes,
) -> axum::response::Response {
    let mut s = st.lock().unwrap();
    if !s.base.answers {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let reply = |v: Value| {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&v).unwrap(),
        )
            .into_response()
    };
    match uri.path() {
        "/health" => {
            let h =
                koupleless_protocol::Response::success(s.base.identity.clone(), s.base.health());
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                transport::encode(&h, Transport::Http),
            )
                .into_response()
        }
        "/queryAllBiz" => {
            s.lists += 1;
            reply(json!({"code": "SUCCESS", "data": s.biz_infos()}))
        }
        "/installBiz" | "/uninstallBiz" => {
            let Ok(spec) = serde_json::from_slice::<BizSpec>(&body) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let install = uri.path() == "/installBiz";
            let result = if install {
                s.install(&spec)
            } else {
                s.uninstall(&spec)
            };
            let state = install.then_some(s.install_state);
            reply(op_response(&spec, &result, state))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl ModuleHttpBase {
    pub async fn start(controller: SocketAddr, sim: ModuleSim) -> ModuleHttpBase {
        let sim: SharedModuleSim = Arc::new(Mutex::new(sim));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let app = Router::new()
            .route("/health", post(arklet))
            .route("/queryAllBiz", post(arklet))
            .route("/installBiz", post(arklet))
            .route("/uninstallBiz", post(arklet))
            .with_state(sim.clone());
        let token = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        let (st, token) = (sim.clone(), cancel.clone());
        let heart = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        let s = st.lock().unwrap().base.clone();
                        if s.heartbeats {
                            let body = transport::encode(&s.status(port, BizState::Activated), Transport::Mqtt);
                            let _ = client.post(format!("http://{controller}/heartbeat"))
                                .header("content-type", "application/json").body(body).send().await;
                        }
                    }
                }
            }
        });
        ModuleHttpBase {
            sim,
            cancel,
            tasks: vec![server, heart],
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut ModuleSim) -> R) -> R {
        f(&mut self.sim.lock().unwrap())
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
