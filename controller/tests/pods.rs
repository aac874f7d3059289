//! Module Pods end to end against the in-memory API server, over MQTT (Mosquitto) and HTTP:
//! bases that really install and uninstall modules and report them as the Java Arklet does
//! (spec protocol §5.6, §6.2), bare Pods bound by `spec.nodeName`, and the upstream
//! conformance steps of spec controller §8.1–§8.3 as named tests.

mod common;

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
use common::*;
use k8s_openapi::api::core::v1::{ContainerStatus, Event as CoreEvent, Pod};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BizSpec, BizState, Envelope, Output, ResponseCode};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------
// Module-aware simulated bases

#[derive(Clone, Debug)]
struct SimBiz {
    name: String,
    version: String,
    state: BizState,
    change_ms: i64,
    reason: &'static str,
    message: String,
}

/// The modules of a simulated base and how it behaves.
#[derive(Debug)]
struct Sim {
    base: BaseState,
    bizs: BTreeMap<String, SimBiz>,
    /// Package URLs whose install fails, with the base's message.
    failing: HashMap<String, String>,
    installs: Vec<BizSpec>,
    uninstalls: Vec<BizSpec>,
    /// State a fresh install lands in (the Go mock bases use RESOLVED).
    install_state: BizState,
    /// Answer install/uninstall on `bizOperation` (the Go MQTT mock base does not).
    reply_ops: bool,
    /// SOFAArk's default: a new version of an active module starts deactivated.
    keep_old_active: bool,
}

type SharedSim = Arc<Mutex<Sim>>;

fn upper(s: BizState) -> &'static str {
    s.as_upper()
}

impl Sim {
    fn new(identity: &str) -> Sim {
        Sim {
            base: BaseState::new(identity),
            bizs: BTreeMap::new(),
            failing: HashMap::new(),
            installs: Vec::new(),
            uninstalls: Vec::new(),
            install_state: BizState::Activated,
            reply_ops: true,
            keep_old_active: false,
        }
    }

    /// Java Arklet semantics: a failed start is uninstalled again (the module disappears),
    /// a second install of the same name:version is refused, and a new version takes over
    /// (`activate.new.module=true`).
    fn install(&mut self, spec: &BizSpec) -> Result<String, String> {
        self.installs.push(spec.clone());
        let key = format!("{}:{}", spec.biz_name, spec.biz_version);
        if let Some(msg) = self.failing.get(&spec.biz_url) {
            return Err(msg.clone());
        }
        if self.bizs.contains_key(&key) {
            return Err(format!("biz {key} already installed"));
        }
        let now = now_ms();
        let other_active = self
            .bizs
            .values()
            .any(|b| b.name == spec.biz_name && b.state == BizState::Activated);
        if self.keep_old_active && other_active {
            self.bizs.insert(
                key.clone(),
                SimBiz {
                    name: spec.biz_name.clone(),
                    version: spec.biz_version.clone(),
                    state: BizState::Deactivated,
                    change_ms: now,
                    reason: "STARTED",
                    message: "start but is deactivated".into(),
                },
            );
            return Ok(format!("Install Biz: {key} success"));
        }
        if self.install_state == BizState::Activated {
            for b in self.bizs.values_mut() {
                if b.name == spec.biz_name && b.state == BizState::Activated {
                    b.state = BizState::Deactivated;
                    b.change_ms = now;
                    b.reason = "SWITCHED";
                    b.message = format!("switch to new biz {key}");
                }
            }
        }
        self.bizs.insert(
            key.clone(),
            SimBiz {
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

    fn uninstall(&mut self, spec: &BizSpec) -> Result<String, String> {
        self.uninstalls.push(spec.clone());
        let key = format!("{}:{}", spec.biz_name, spec.biz_version);
        match self.bizs.remove(&key) {
            Some(_) => Ok(format!("Uninstall biz: {key} success")),
            None => Err(format!("biz {key} not found")),
        }
    }

    fn set_state(&mut self, key: &str, state: BizState) {
        let b = self.bizs.get_mut(key).expect("module installed");
        b.state = state;
        b.change_ms = now_ms();
        b.reason = "SWITCHED";
    }

    fn states(&self) -> Vec<(String, BizState)> {
        self.bizs
            .iter()
            .map(|(k, b)| (k.clone(), b.state))
            .collect()
    }

    fn simple_biz(&self) -> Value {
        Value::Array(
            self.bizs
                .values()
                .map(|b| {
                    json!({"latestStateRecord": {"changeTime": b.change_ms, "message": b.message,
                        "reason": b.reason, "state": upper(b.state)},
                        "name": b.name, "state": upper(b.state).to_ascii_lowercase(), "version": b.version})
                })
                .collect(),
        )
    }

    fn biz_infos(&self) -> Value {
        Value::Array(
            self.bizs
                .values()
                .map(|b| {
                    json!({"bizName": b.name, "bizVersion": b.version,
                        "bizState": upper(b.state).to_ascii_lowercase(),
                        "bizStateRecords": [{"changeTime": b.change_ms, "message": b.message,
                            "reason": "Started", "state": upper(b.state).to_ascii_lowercase()}]})
                })
                .collect(),
        )
    }
}

fn op_response(spec: &BizSpec, result: &Result<String, String>, state: BizState) -> Value {
    match result {
        Ok(msg) => json!({"code": "SUCCESS", "data": {"code": "SUCCESS", "message": msg,
            "bizInfos": [{"bizName": spec.biz_name, "bizVersion": spec.biz_version, "bizState": upper(state)}]}}),
        Err(msg) => {
            json!({"code": "FAILED", "data": {"code": "FAILED", "message": msg}, "message": msg})
        }
    }
}

fn mqtt_topic(identity: &str, rest: &str) -> String {
    format!("koupleless_{ENV}/{identity}/{rest}")
}

/// A base on the MQTT tunnel whose modules are real to the controller.
struct ModMqttBase {
    sim: SharedSim,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl ModMqttBase {
    async fn start(broker_port: u16, identity: &str) -> ModMqttBase {
        Self::start_sim(broker_port, Sim::new(identity)).await
    }

    async fn start_sim(broker_port: u16, sim: Sim) -> ModMqttBase {
        let identity = sim.base.identity.clone();
        let mut opts =
            MqttOptions::new(format!("koupleless@@@{identity}"), "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let sim: SharedSim = Arc::new(Mutex::new(sim));
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
                            let _ = c.try_publish(mqtt_topic(&identity, "base/heart"), QoS::AtLeastOnce, false, transport::encode(&hb, Transport::Mqtt));
                        }
                    }
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            let _ = c.try_subscribe(mqtt_topic(&identity, "+"), QoS::AtLeastOnce);
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            mqtt_command(&st, &c, &identity, &p.topic, &p.payload);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        ModMqttBase { sim, cancel, task }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        f(&mut self.sim.lock().unwrap())
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn mqtt_command(st: &SharedSim, c: &AsyncClient, identity: &str, t: &str, payload: &[u8]) {
    let cmd = t.rsplit('/').next().unwrap_or_default();
    let mut s = st.lock().unwrap();
    if !s.base.answers {
        return;
    }
    let publish = |rest: &str, data: Value| {
        let body = json!({"data": data, "publishTimestamp": now_ms()});
        let _ = c.try_publish(
            mqtt_topic(identity, rest),
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
                mqtt_topic(identity, "base/health"),
                QoS::AtLeastOnce,
                false,
                transport::encode(&e, Transport::Mqtt),
            );
        }
        "queryAllBiz" => publish("base/simpleBiz", s.simple_biz()),
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
                let response = op_response(&spec, &result, state);
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

/// A base on the HTTP tunnel whose modules are real to the controller.
struct ModHttpBase {
    sim: SharedSim,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn mod_arklet(
    State(st): State<SharedSim>,
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
        "/queryAllBiz" => reply(json!({"code": "SUCCESS", "data": s.biz_infos()})),
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
            reply(op_response(&spec, &result, s.install_state))
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl ModHttpBase {
    async fn start(controller: SocketAddr, identity: &str) -> ModHttpBase {
        let sim: SharedSim = Arc::new(Mutex::new(Sim::new(identity)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let app = Router::new()
            .route("/health", post(mod_arklet))
            .route("/queryAllBiz", post(mod_arklet))
            .route("/installBiz", post(mod_arklet))
            .route("/uninstallBiz", post(mod_arklet))
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
        ModHttpBase {
            sim,
            cancel,
            tasks: vec![server, heart],
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Sim) -> R) -> R {
        f(&mut self.sim.lock().unwrap())
    }

    async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pods

fn pods_api(kube: &Kube) -> Api<Pod> {
    Api::namespaced(kube.client.clone(), "default")
}

fn url(name: &str, version: &str) -> String {
    format!("https://repo.example/{name}-{version}-ark-biz.jar")
}

/// A module Pod as the upstream samples write it, bound to `node`.
fn module_pod(name: &str, node: &str, modules: &[(&str, &str)]) -> Pod {
    let containers: Vec<Value> = modules
        .iter()
        .map(|(n, v)| {
            json!({"name": n, "image": url(n, v),
                "env": [{"name": "BIZ_VERSION", "value": v}]})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default",
            "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
        "spec": {"nodeName": node, "containers": containers,
            "tolerations": [
                {"key": "schedule.koupleless.io/virtual-node", "operator": "Equal", "value": "True", "effect": "NoExecute"},
                {"key": "schedule.koupleless.io/node-env", "operator": "Equal", "value": ENV, "effect": "NoExecute"}]},
    }))
    .unwrap()
}

async fn create(kube: &Kube, pod: &Pod) -> Pod {
    pods_api(kube)
        .create(&PostParams::default(), pod)
        .await
        .unwrap()
}

async fn get(kube: &Kube, name: &str) -> Option<Pod> {
    pods_api(kube).get_opt(name).await.unwrap()
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn condition<'a>(p: &'a Pod, t: &str) -> Option<&'a str> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.as_str())
}

fn statuses(p: &Pod) -> &[ContainerStatus] {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[])
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

async fn running_ready(kube: &Kube, name: &str) -> bool {
    get(kube, name).await.is_some_and(|p| {
        phase(&p) == Some("Running")
            && condition(&p, "Ready") == Some("True")
            && statuses(&p).iter().all(|c| c.ready)
    })
}

async fn running_not_ready(kube: &Kube, name: &str) -> bool {
    get(kube, name)
        .await
        .is_some_and(|p| phase(&p) == Some("Running") && condition(&p, "Ready") == Some("False"))
}

async fn pod_gone(kube: &Kube, name: &str) -> bool {
    get(kube, name).await.is_none()
}

async fn delete(kube: &Kube, name: &str) {
    pods_api(kube)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// Reasons of the Events recorded for a Pod.
async fn event_reasons(kube: &Kube, pod: &str) -> Vec<String> {
    let events: Api<CoreEvent> = Api::namespaced(kube.client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    events
        .list(&lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn has_event(kube: &Kube, pod: &str, reason: &str) -> bool {
    event_reasons(kube, pod).await.iter().any(|r| r == reason)
}

async fn status_writes(ctl: &Controller) -> f64 {
    ctl.metric(
        r#"koupleless_controller_kube_api_requests_total{resource="pod_status",verb="patch",outcome="ok"}"#,
    )
    .await
}

async fn set_image(kube: &Kube, pod: &str, container: &str, image: &str) {
    let patch = json!({"spec": {"containers": [{"name": container, "image": image}]}});
    pods_api(kube)
        .patch(pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

fn mqtt_settings(client_id: &str, broker: &Broker) -> koupleless_controller::Settings {
    let mut s = settings(client_id, Some(broker.port), false);
    s.pods.retry_base = Duration::from_millis(300);
    s.pods.retry_max = Duration::from_secs(2);
    s.pods.reply_timeout = Duration::from_secs(2);
    s
}

// ---------------------------------------------------------------------------------------
// Tests

/// Install → Running/Ready with the container fields; steady state writes nothing;
/// DEACTIVATED → Ready=False; delete → uninstall → Pod gone, over MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_install_status_and_delete() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-mqtt", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-m").await;
    let node = vnode("base-m");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );

    create(&kube, &module_pod("biz1-pod", &node, &[("biz1", "0.0.1")])).await;
    assert!(
        eventually(T, || running_ready(&kube, "biz1-pod")).await,
        "Running/Ready"
    );
    let p = get(&kube, "biz1-pod").await.unwrap();
    let c = &statuses(&p)[0];
    assert_eq!(
        c.container_id.as_deref(),
        Some("koupleless://base-m/biz1:0.0.1")
    );
    assert_eq!(c.image, url("biz1", "0.0.1"));
    assert_eq!(c.image_id, url("biz1", "0.0.1"));
    assert_eq!((c.started, c.restart_count), (Some(true), 0));
    let st = p.status.as_ref().unwrap();
    assert_eq!(st.pod_ip.as_deref(), Some("127.0.0.1"), "the base IP");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert!(st.start_time.is_some());
    for t in ["Initialized", "ContainersReady", "Ready"] {
        let c = st
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap();
        assert!(c.last_transition_time.is_some(), "{t}");
    }
    assert_eq!(base.with(|s| s.installs.len()), 1, "installed once");
    assert!(eventually(T, || has_event(&kube, "biz1-pod", "Installed")).await);
    assert!(has_event(&kube, "biz1-pod", "Installing").await);

    // Steady state: module lists keep arriving (every 0.5 s), nothing is written.
    let before = status_writes(&ctl).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_writes(&ctl).await,
        before,
        "no status write at steady state"
    );
    assert_eq!(base.with(|s| s.installs.len()), 1, "not installed again");

    // The base deactivates the module.
    base.with(|s| s.set_state("biz1:0.0.1", BizState::Deactivated));
    assert!(
        eventually(T, || running_not_ready(&kube, "biz1-pod")).await,
        "Ready=False"
    );
    let p = get(&kube, "biz1-pod").await.unwrap();
    assert_eq!(waiting_reason(&statuses(&p)[0]), Some("ModuleDeactivated"));
    base.with(|s| s.set_state("biz1:0.0.1", BizState::Activated));
    assert!(eventually(T, || running_ready(&kube, "biz1-pod")).await);

    // Delete: uninstalled, then the Pod is removed without waiting for the grace period.
    delete(&kube, "biz1-pod").await;
    assert!(
        eventually(Duration::from_secs(5), || pod_gone(&kube, "biz1-pod")).await,
        "gone well before the 30 s grace period"
    );
    assert_eq!(base.with(|s| s.uninstalls.len()), 1);
    assert!(base.with(|s| s.bizs.is_empty()));
    assert!(eventually(T, || has_event(&kube, "biz1-pod", "Uninstalled")).await);

    base.stop().await;
    ctl.stop().await;
}

/// The same lifecycle over the HTTP tunnel (synchronous Arklet calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_install_status_and_delete() {
    init_logs();
    let kube = Kube::start().await;
    let mut s = settings("pods-http", None, true);
    s.pods.reply_timeout = Duration::from_secs(2);
    let ctl = Controller::start(&kube, s).await;
    let base = ModHttpBase::start(ctl.http.unwrap(), "base-h").await;
    let node = vnode("base-h");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );

    create(
        &kube,
        &module_pod("two", &node, &[("biz1", "0.0.1"), ("biz2", "0.0.2")]),
    )
    .await;
    assert!(eventually(T, || running_ready(&kube, "two")).await);
    let p = get(&kube, "two").await.unwrap();
    assert_eq!(statuses(&p).len(), 2, "one status per container");
    assert_eq!(base.with(|s| s.installs.len()), 2);
    let before = status_writes(&ctl).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        status_writes(&ctl).await,
        before,
        "no status write at steady state"
    );

    delete(&kube, "two").await;
    assert!(eventually(Duration::from_secs(5), || pod_gone(&kube, "two")).await);
    assert!(base.with(|s| s.bizs.is_empty()));
    assert_eq!(base.with(|s| s.installs.len()), 2, "never installed twice");

    base.stop().await;
    ctl.stop().await;
}

/// Install failure → Waiting with the base's message and an Event, retried; a fixed image
/// → Running. Then an in-place image change replaces the package.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_failure_then_fixed_image_then_in_place_change() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-fail", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-f").await;
    let node = vnode("base-f");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );

    let bad = url("biz1", "0.0.1");
    base.with(|s| {
        s.failing.insert(
            bad.clone(),
            "java.io.FileNotFoundException: biz1 jar missing".into(),
        )
    });
    create(&kube, &module_pod("fails", &node, &[("biz1", "0.0.1")])).await;
    assert!(
        eventually(T, || async {
            get(&kube, "fails").await.is_some_and(|p| {
                statuses(&p).first().is_some_and(|c| {
                    waiting_reason(c) == Some("InstallFailed")
                        && c.state
                            .as_ref()
                            .unwrap()
                            .waiting
                            .as_ref()
                            .unwrap()
                            .message
                            .as_deref()
                            .is_some_and(|m| m.contains("biz1 jar missing"))
                })
            })
        })
        .await,
        "Waiting with the base's message"
    );
    assert!(eventually(T, || has_event(&kube, "fails", "InstallFailed")).await);
    assert!(
        eventually(T, || async { base.with(|s| s.installs.len()) >= 2 }).await,
        "retried"
    );

    let good = "https://repo.example/fixed/biz1-0.0.1-ark-biz.jar";
    set_image(&kube, "fails", "biz1", good).await;
    assert!(
        eventually(T, || running_ready(&kube, "fails")).await,
        "fixed image runs"
    );
    // The outcomes are counted for the dashboard: one failure, then one install.
    let outcome =
        |o: &str| format!("koupleless_controller_module_outcomes_total{{outcome=\"{o}\"}}");
    assert!(ctl.metric(&outcome("install_failed")).await >= 1.0);
    assert!(ctl.metric(&outcome("installed")).await >= 1.0);
    let p = get(&kube, "fails").await.unwrap();
    assert_eq!(statuses(&p)[0].image_id, good);

    // In-place change of a running module: the old package goes, the new one comes.
    let newer = "https://repo.example/patched/biz1-0.0.1-ark-biz.jar";
    let installs = base.with(|s| s.installs.len());
    set_image(&kube, "fails", "biz1", newer).await;
    assert!(
        eventually(T, || async {
            get(&kube, "fails").await.is_some_and(|p| {
                statuses(&p)
                    .first()
                    .is_some_and(|c| c.image_id == newer && c.ready)
            })
        })
        .await,
        "the Pod reflects the new package"
    );
    base.with(|s| {
        assert_eq!(
            s.uninstalls.last().unwrap().biz_url,
            good,
            "the old package uninstalled"
        );
        assert_eq!(s.installs.len(), installs + 1);
        assert_eq!(s.installs.last().unwrap().biz_url, newer);
    });
    assert_eq!(
        phase(&p),
        Some("Running"),
        "never Succeeded, unlike upstream"
    );

    base.stop().await;
    ctl.stop().await;
}

/// A base that stops answering while its Pod is deleted: the Pod stays Terminating and
/// completes when the base is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_while_base_unreachable_completes_when_it_returns() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let mut s = mqtt_settings("pods-unreach", &broker);
    s.timings.dead_after = Duration::from_secs(60);
    let ctl = Controller::start(&kube, s).await;
    let base = ModMqttBase::start(broker.port, "base-u").await;
    let node = vnode("base-u");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("stays", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "stays")).await);

    base.with(|s| {
        s.base.heartbeats = false;
        s.base.answers = false;
    });
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("Unknown")
        })
        .await
    );
    delete(&kube, "stays").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = get(&kube, "stays").await.expect("still Terminating");
    assert!(p.metadata.deletion_timestamp.is_some());
    assert_eq!(base.with(|s| s.bizs.len()), 1, "module still on the base");

    base.with(|s| {
        s.base.heartbeats = true;
        s.base.answers = true;
    });
    assert!(
        eventually(T, || pod_gone(&kube, "stays")).await,
        "completes when back"
    );
    assert!(base.with(|s| s.bizs.is_empty()));

    base.stop().await;
    ctl.stop().await;
}

/// Upstream issue #405: an old Pod's uninstall must never take the module of a newer Pod of
/// the same name:version on the same base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_405_replacement_keeps_its_module() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-405", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-r").await;
    let node = vnode("base-r");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("biz1-aaaa", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "biz1-aaaa")).await);

    // The replacement exists before the old Pod goes (surge): nothing is uninstalled.
    create(&kube, &module_pod("biz1-bbbb", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "biz1-bbbb")).await);
    delete(&kube, "biz1-aaaa").await;
    assert!(eventually(T, || pod_gone(&kube, "biz1-aaaa")).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    base.with(|s| {
        assert_eq!(s.states(), [("biz1:0.0.1".to_owned(), BizState::Activated)]);
        assert!(s.uninstalls.is_empty(), "uninstalled: {:?}", s.uninstalls);
        assert_eq!(s.installs.len(), 1);
    });
    assert!(running_ready(&kube, "biz1-bbbb").await);

    // Delete and create at once (upstream's sequence): whatever order the controller sees
    // them in, the new Pod ends with its module installed and nothing removes it after.
    delete(&kube, "biz1-bbbb").await;
    create(&kube, &module_pod("biz1-cccc", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || pod_gone(&kube, "biz1-bbbb")).await);
    assert!(eventually(T, || running_ready(&kube, "biz1-cccc")).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    base.with(|s| {
        assert_eq!(s.states(), [("biz1:0.0.1".to_owned(), BizState::Activated)]);
        assert_eq!(
            s.installs.len(),
            s.uninstalls.len() + 1,
            "the last operation is an install: {:?} / {:?}",
            s.installs,
            s.uninstalls
        );
    });
    assert!(running_ready(&kube, "biz1-cccc").await);

    base.stop().await;
    ctl.stop().await;
}

/// A module that vanishes from the base (e.g. the base restarted) turns the container
/// Waiting `ModuleGone` and is installed again; the restart is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_module_is_reinstalled() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-gone", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-g").await;
    let node = vnode("base-g");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("vanish", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "vanish")).await);

    base.with(|s| s.bizs.clear());
    assert!(eventually(T, || has_event(&kube, "vanish", "ModuleGone")).await);
    assert!(
        eventually(T, || async {
            get(&kube, "vanish").await.is_some_and(|p| {
                statuses(&p)
                    .first()
                    .is_some_and(|c| c.ready && c.restart_count == 1)
            })
        })
        .await,
        "installed again, one restart"
    );
    assert_eq!(base.with(|s| s.installs.len()), 2);
    let p = get(&kube, "vanish").await.unwrap();
    let last = statuses(&p)[0]
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.reason.as_deref(), Some("ModuleGone"));

    base.stop().await;
    ctl.stop().await;
}

/// Modules no Pod asks for: one installed statically on the base stays (default policy),
/// one this controller installed for a Pod that was force-deleted is uninstalled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_ours_go_static_stay() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-orphan", &broker)).await;
    let mut sim = Sim::new("base-o");
    sim.install(&BizSpec {
        biz_name: "static".into(),
        biz_version: "1".into(),
        biz_url: "file:///opt/static.jar".into(),
    })
    .unwrap();
    sim.installs.clear();
    let base = ModMqttBase::start_sim(broker.port, sim).await;
    let node = vnode("base-o");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("forced", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "forced")).await);
    pods_api(&kube)
        .delete("forced", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(
        eventually(T, || async {
            base.with(|s| s.states()) == [("static:1".to_owned(), BizState::Activated)]
        })
        .await,
        "ours uninstalled, the static module stays"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(base.with(|s| s.bizs.contains_key("static:1")));

    base.stop().await;
    ctl.stop().await;
}

/// Spec controller §8.1, VK suite `vpod_lifecycle_test.go`: one node, two-container Pods;
/// the mock tunnel's installs land UNRESOLVED and the test drives the states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vk_vpod_lifecycle() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("suite-suite", &broker)).await;
    let mut sim = Sim::new("suite-node");
    sim.install_state = BizState::Resolved;
    sim.reply_ops = false;
    let base = ModMqttBase::start_sim(broker.port, sim).await;
    let node = vnode("suite-node");
    // 1. Node Ready.
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    // 2. Pod bound → Pending, nodeName kept.
    let two = [("biz1", "1.0.0"), ("biz2", "1.0.0")];
    create(&kube, &module_pod("vpod", &node, &two)).await;
    assert!(
        eventually(T, || async { base.with(|s| s.bizs.len()) == 2 }).await,
        "both installs sent"
    );
    let p = get(&kube, "vpod").await.unwrap();
    assert_eq!(phase(&p), Some("Pending"));
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some(node.as_str())
    );
    // 3. Both ACTIVATED → Running and ready.
    base.with(|s| {
        s.set_state("biz1:1.0.0", BizState::Activated);
        s.set_state("biz2:1.0.0", BizState::Activated);
    });
    assert!(
        eventually(T, || running_ready(&kube, "vpod")).await,
        "step 3"
    );
    // 4. One DEACTIVATED → Running, Ready False.
    base.with(|s| s.set_state("biz1:1.0.0", BizState::Deactivated));
    assert!(
        eventually(T, || running_not_ready(&kube, "vpod")).await,
        "step 4"
    );
    // 5–6. ACTIVATED again → Ready True.
    base.with(|s| s.set_state("biz1:1.0.0", BizState::Activated));
    assert!(
        eventually(T, || running_ready(&kube, "vpod")).await,
        "step 6"
    );
    // 7. Both images updated → upstream ends Succeeded; here the new packages are installed
    // and the Pod stays Running.
    base.with(|s| {
        s.install_state = BizState::Activated;
        s.reply_ops = true;
    });
    set_image(&kube, "vpod", "biz1", "https://repo.example/v2/biz1.jar").await;
    set_image(&kube, "vpod", "biz2", "https://repo.example/v2/biz2.jar").await;
    assert!(
        eventually(T, || async {
            get(&kube, "vpod").await.is_some_and(|p| {
                phase(&p) == Some("Running")
                    && statuses(&p)
                        .iter()
                        .all(|c| c.ready && c.image_id.contains("/v2/"))
            })
        })
        .await,
        "step 7"
    );
    // 8. Delete → NotFound.
    delete(&kube, "vpod").await;
    assert!(eventually(T, || pod_gone(&kube, "vpod")).await, "step 8");
    // 9. A second Pod → Running and ready.
    create(&kube, &module_pod("vpod2", &node, &two)).await;
    assert!(
        eventually(T, || running_ready(&kube, "vpod2")).await,
        "step 9"
    );

    base.stop().await;
    ctl.stop().await;
}

/// Spec controller §8.2, MC MQTT suite `module_mqtt_lifecycle_test.go`: the mock base
/// installs RESOLVED without replying, then reports ACTIVATED / DEACTIVATED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mc_module_mqtt_lifecycle() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("suite-test", &broker)).await;
    let mut sim = Sim::new("test-base");
    sim.install_state = BizState::Resolved;
    sim.reply_ops = false;
    let base = ModMqttBase::start_sim(broker.port, sim).await;
    let node = vnode("test-base");
    // 1. Base Ready.
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    // 2. Pod → Pending on the vnode, the base received exactly one biz.
    create(
        &kube,
        &module_pod("test-module", &node, &[("biz", "0.0.1")]),
    )
    .await;
    assert!(eventually(T, || async { base.with(|s| s.bizs.len()) == 1 }).await);
    assert_eq!(
        phase(&get(&kube, "test-module").await.unwrap()),
        Some("Pending")
    );
    // 3. ACTIVATED → Running.
    base.with(|s| s.set_state("biz:0.0.1", BizState::Activated));
    assert!(
        eventually(T, || running_ready(&kube, "test-module")).await,
        "step 3"
    );
    // 4. DEACTIVATED → Running, Ready False.
    base.with(|s| s.set_state("biz:0.0.1", BizState::Deactivated));
    assert!(
        eventually(T, || running_not_ready(&kube, "test-module")).await,
        "step 4"
    );
    // 5. Delete → NotFound.
    delete(&kube, "test-module").await;
    assert!(
        eventually(T, || pod_gone(&kube, "test-module")).await,
        "step 5"
    );
    assert_eq!(base.with(|s| s.installs.len()), 1, "exactly one install");

    base.stop().await;
    ctl.stop().await;
}

/// Spec controller §8.3, MC HTTP suite `module_http_lifecycle_test.go`: create → Pending on
/// the vnode and the base has one biz; delete → NotFound (upstream allows 40 s: it waits
/// the grace period; here it goes once the base confirms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mc_module_http_lifecycle() {
    init_logs();
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, settings("suite-http", None, true)).await;
    let base = ModHttpBase::start(ctl.http.unwrap(), "test-base").await;
    let node = vnode("test-base");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(
        &kube,
        &module_pod("test-module", &node, &[("biz", "0.0.1")]),
    )
    .await;
    assert!(eventually(T, || async { base.with(|s| s.bizs.len()) == 1 }).await);
    assert!(eventually(T, || running_ready(&kube, "test-module")).await);
    delete(&kube, "test-module").await;
    assert!(eventually(Duration::from_secs(5), || pod_gone(&kube, "test-module")).await);

    base.stop().await;
    ctl.stop().await;
}

/// A container that cannot be a module gets a clear reason and an Event, and is never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_containers_say_why() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-invalid", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-i").await;
    let node = vnode("base-i");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    let mut pod = module_pod("bad", &node, &[("biz1", "0.0.1"), ("nover", "1")]);
    let spec = pod.spec.as_mut().unwrap();
    spec.containers[1].env = None;
    create(&kube, &pod).await;
    assert!(
        eventually(T, || async {
            get(&kube, "bad").await.is_some_and(|p| {
                let s = statuses(&p);
                s.len() == 2 && s[0].ready && waiting_reason(&s[1]) == Some("MissingBizVersion")
            })
        })
        .await
    );
    assert!(eventually(T, || has_event(&kube, "bad", "MissingBizVersion")).await);
    assert!(running_not_ready(&kube, "bad").await);
    assert_eq!(
        base.with(|s| s
            .installs
            .iter()
            .map(|i| i.biz_name.clone())
            .collect::<Vec<_>>()),
        ["biz1"]
    );

    base.stop().await;
    ctl.stop().await;
}

/// A replica crashes in the middle of installs; another takes the base over: every Pod
/// converges, modules already installed are adopted (never installed twice) and no status
/// is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_after_a_crash_converges_without_reinstalling() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let a = Controller::start(&kube, mqtt_settings("pods-a", &broker)).await;
    let mut sim = Sim::new("base-t");
    // Installs land RESOLVED and are never answered: the crash hits with work in flight.
    sim.install_state = BizState::Resolved;
    sim.reply_ops = false;
    let base = ModMqttBase::start_sim(broker.port, sim).await;
    let node = vnode("base-t");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("first", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || async { base.with(|s| s.bizs.len()) == 1 }).await);
    a.crash().await;

    // While nobody serves the base: the module starts, and a second Pod is bound.
    base.with(|s| {
        s.set_state("biz1:0.0.1", BizState::Activated);
        s.install_state = BizState::Activated;
        s.reply_ops = true;
    });
    create(&kube, &module_pod("second", &node, &[("biz2", "0.0.1")])).await;
    let b = Controller::start(&kube, mqtt_settings("pods-b", &broker)).await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            kube.lease_holder(&node).await.as_deref() == Some("pods-b")
        })
        .await,
        "b takes the base over"
    );
    assert!(eventually(T, || running_ready(&kube, "first")).await);
    assert!(eventually(T, || running_ready(&kube, "second")).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    base.with(|s| {
        let names: Vec<&str> = s.installs.iter().map(|i| i.biz_name.as_str()).collect();
        assert_eq!(names, ["biz1", "biz2"], "each module installed once");
        assert!(s.uninstalls.is_empty());
    });

    base.stop().await;
    b.stop().await;
}

fn peer_deployment(
    name: &str,
    cluster: &str,
    replicas: i32,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": {
            "virtual-kubelet.koupleless.io/component": "module-deployment",
            "virtual-kubelet.koupleless.io/env": ENV,
            "virtual-kubelet.koupleless.io/strategy": "peer"}},
        "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"module.koupleless.io/name": name}},
            "template": {
                "metadata": {"labels": {"module.koupleless.io/name": name,
                    "virtual-kubelet.koupleless.io/component": "module"}},
                "spec": {
                    "nodeSelector": {"base.koupleless.io/version": "1.0.0",
                        "base.koupleless.io/cluster-name": cluster},
                    "containers": [{"name": name, "image": url(name, "0.0.1"),
                        "env": [{"name": "BIZ_VERSION", "value": "0.0.1"}]}]}}},
    }))
    .unwrap()
}

/// Spec controller §8.2, MC suite `module_deployment_controller_suite_test.go`: peer
/// Deployments follow the Ready bases of their cluster
/// (`ENABLE_MODULE_REPLICAS_SYNC_WITH_BASE=true`), and a base's baseline holds only its
/// cluster's Deployments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mc_peer_deployment() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let mut s = mqtt_settings("suite-test", &broker);
    s.pods.peer_replicas = true;
    let ctl = Controller::start(&kube, s).await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(kube.client.clone(), "default");
    let replicas = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            deployments
                .get(name)
                .await
                .unwrap()
                .spec
                .and_then(|s| s.replicas)
        }
    };
    // 1. No bases → 0.
    deployments
        .create(
            &PostParams::default(),
            &peer_deployment("deployment1", "test-cluster-name", 1),
        )
        .await
        .unwrap();
    assert!(
        eventually(T, || async { replicas("deployment1").await == Some(0) }).await,
        "step 1"
    );
    // 2–3. Bases of the cluster come online → 1, 2.
    let start = |id: &str| {
        let mut st = BaseState::new(id);
        st.cluster = "test-cluster-name".into();
        MqttBase::start_with(broker.port, st, Duration::from_millis(200))
    };
    let b1 = start("base-1").await;
    assert!(
        eventually(T, || async { replicas("deployment1").await == Some(1) }).await,
        "step 2"
    );
    let b2 = start("base-2").await;
    assert!(
        eventually(T, || async { replicas("deployment1").await == Some(2) }).await,
        "step 3"
    );
    // 4. Another cluster's Deployment → 0.
    deployments
        .create(
            &PostParams::default(),
            &peer_deployment("deployment2", "test-cluster-name-2", 1),
        )
        .await
        .unwrap();
    assert!(
        eventually(T, || async { replicas("deployment2").await == Some(0) }).await,
        "step 4"
    );
    // 5. A base's baseline holds deployment1's module only.
    assert!(
        eventually(T, || async {
            b2.baselines()
                .last()
                .is_some_and(|l| l.len() == 1 && l[0].biz_name == "deployment1")
        })
        .await,
        "step 5: {:?}",
        b2.baselines()
    );
    // 6–7. Base 2 exits → 1; base 1 exits → 0.
    b2.deactivate().await;
    assert!(
        eventually(T, || async { replicas("deployment1").await == Some(1) }).await,
        "step 6"
    );
    b1.deactivate().await;
    assert!(
        eventually(T, || async { replicas("deployment1").await == Some(0) }).await,
        "step 8"
    );
    assert_eq!(replicas("deployment2").await, Some(0));

    b1.stop().await;
    b2.stop().await;
    ctl.stop().await;
}

/// A rollout with bare Pods: version 2 is installed beside version 1, the base activates it,
/// version 1's Pod turns Ready=False `Superseded` (with an Event) and is removed with its
/// module. On a base that keeps the old version active, the new Pod says why it is not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_supersedes_the_old_version() {
    init_logs();
    let broker = Broker::start().await;
    let kube = Kube::start().await;
    let ctl = Controller::start(&kube, mqtt_settings("pods-rollout", &broker)).await;
    let base = ModMqttBase::start(broker.port, "base-v").await;
    let node = vnode("base-v");
    assert!(
        eventually(T, || async {
            kube.ready(&node).await.as_deref() == Some("True")
        })
        .await
    );
    create(&kube, &module_pod("v1", &node, &[("biz1", "0.0.1")])).await;
    assert!(eventually(T, || running_ready(&kube, "v1")).await);

    create(&kube, &module_pod("v2", &node, &[("biz1", "0.0.2")])).await;
    assert!(eventually(T, || running_ready(&kube, "v2")).await);
    assert!(eventually(T, || running_not_ready(&kube, "v1")).await);
    let p = get(&kube, "v1").await.unwrap();
    assert_eq!(waiting_reason(&statuses(&p)[0]), Some("Superseded"));
    assert!(eventually(T, || has_event(&kube, "v1", "Superseded")).await);
    delete(&kube, "v1").await;
    assert!(eventually(T, || pod_gone(&kube, "v1")).await);
    assert_eq!(
        base.with(|s| s.states()),
        [("biz1:0.0.2".to_owned(), BizState::Activated)]
    );
    assert!(running_ready(&kube, "v2").await);

    // A base that keeps the active version: version 3 stays deactivated and says why.
    base.with(|s| s.keep_old_active = true);
    create(&kube, &module_pod("v3", &node, &[("biz1", "0.0.3")])).await;
    assert!(
        eventually(T, || async {
            get(&kube, "v3").await.is_some_and(|p| {
                statuses(&p)
                    .first()
                    .is_some_and(|c| waiting_reason(c) == Some("NotActivated"))
            })
        })
        .await
    );
    assert!(eventually(T, || has_event(&kube, "v3", "NotActivated")).await);
    assert!(
        running_ready(&kube, "v2").await,
        "the old version keeps serving"
    );

    base.stop().await;
    ctl.stop().await;
}
