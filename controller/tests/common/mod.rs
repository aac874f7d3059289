//! Test world: a real Mosquitto broker, the in-memory Kubernetes API server, controllers
//! running on their own runtimes (so a test can crash one), and simulated bases that publish
//! exactly what the Java Arklet publishes (spec protocol §5.6, §6.1).

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use koupleless_controller::config::{HttpTunnelSettings, MqttSettings, NodeSettings};
use koupleless_controller::{Listeners, Settings, Timings};
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{
    BaseMetadata, BaseStatus, BizHealthMeta, BizInfo, BizSpec, BizState, CpuInfo, Envelope, Health,
    HealthData, JvmInfo, Output, Response, ResponseCode, SimpleBizInfo,
};
use kube::Api;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

pub mod modbase;

pub const ENV: &str = "suite";

/// Polls an async condition every 25 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn init_logs() {
    koupleless_controller::install_crypto_provider();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------------------
// Broker

/// A Mosquitto broker on a free loopback port, restartable on the same port.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn mosquitto_bin() -> String {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    "mosquitto".into()
}

impl Broker {
    pub async fn start() -> Broker {
        let port = koupleless_testkit::free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .unwrap();
        let mut b = Broker {
            port,
            dir,
            child: None,
        };
        b.spawn().await;
        b
    }

    async fn spawn(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (install it: apt-get install mosquitto)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await,
            "mosquitto did not start"
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// Kubernetes

pub struct Kube {
    pub server: koupleless_kube_apiserver::ApiServerHandle,
    pub client: kube::Client,
}

impl Kube {
    pub async fn start() -> Kube {
        let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
        Kube { server, client }
    }

    pub fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    pub fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), "kube-node-lease")
    }

    pub async fn node(&self, name: &str) -> Option<Node> {
        self.nodes().get_opt(name).await.unwrap()
    }

    pub async fn lease(&self, name: &str) -> Option<Lease> {
        self.leases().get_opt(name).await.unwrap()
    }

    pub async fn lease_holder(&self, name: &str) -> Option<String> {
        self.lease(name).await.and_then(|l| l.spec?.holder_identity)
    }

    pub async fn ready(&self, name: &str) -> Option<String> {
        let n = self.node(name).await?;
        n.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
    }

    pub async fn memory(&self, name: &str) -> Option<(String, String)> {
        let s = self.node(name).await?.status?;
        Some((
            s.capacity?.get("memory")?.0.clone(),
            s.allocatable?.get("memory")?.0.clone(),
        ))
    }
}

// ---------------------------------------------------------------------------------------
// Controller

/// Fast timings: unreachable after 1 s, dead after 2 s, Lease 2 s renewed every 0.5 s (the
/// owner stops acting 1.5 s after its last renewal).
pub fn fast_timings() -> Timings {
    Timings {
        unreachable_after: Duration::from_secs(1),
        dead_after: Duration::from_secs(2),
        lease_duration: Duration::from_secs(2),
        lease_renew_interval: Duration::from_millis(500),
        lease_renew_deadline: Duration::from_millis(1500),
        health_interval: Duration::from_millis(300),
        biz_interval: Duration::from_millis(500),
        retry_interval: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        baseline_wait: Duration::from_secs(3),
    }
}

pub fn settings(client_id: &str, mqtt_port: Option<u16>, http: bool) -> Settings {
    let mut s = Settings::new(ENV.parse().unwrap(), client_id);
    s.timings = fast_timings();
    s.api_timeout = Duration::from_secs(5);
    s.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    s.mqtt = mqtt_port.map(|port| MqttSettings {
        host: "127.0.0.1".into(),
        port,
        username: String::new(),
        password: String::new(),
        client_id: format!("koupleless@@@{client_id}"),
        tls: None,
        retain_commands: false,
        keep_alive: Duration::from_secs(5),
        message_max_age: Duration::from_secs(10),
    });
    s.http = http.then(|| HttpTunnelSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        call_timeout: Duration::from_secs(1),
        operation_timeout: Duration::from_secs(5),
        max_calls_per_base: 2,
        ..HttpTunnelSettings::default()
    });
    s
}

/// A controller on its own thread and runtime, so that a test can stop it gracefully
/// (SIGTERM path) or crash it (the runtime is dropped with every task in flight).
pub struct Controller {
    cancel: CancellationToken,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub http: Option<SocketAddr>,
    pub probes: SocketAddr,
    pub metrics: SocketAddr,
}

impl Controller {
    pub async fn start(kube: &Kube, settings: Settings) -> Controller {
        Self::start_with_kubeconfig(kube.server.kubeconfig_yaml(), settings).await
    }

    /// A controller that reaches the API server through `kubeconfig` (e.g. a cuttable proxy).
    pub async fn start_with_kubeconfig(kubeconfig: String, settings: Settings) -> Controller {
        let cancel = CancellationToken::new();
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let token = cancel.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap();
                let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .unwrap();
                let client = kube::Client::try_from(config).unwrap();
                let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
                let http = if settings.http.is_some() {
                    Some(bind().await.unwrap())
                } else {
                    None
                };
                let probes = bind().await.unwrap();
                let metrics = bind().await.unwrap();
                addr_tx
                    .send((
                        http.as_ref().map(|l| l.local_addr().unwrap()),
                        probes.local_addr().unwrap(),
                        metrics.local_addr().unwrap(),
                    ))
                    .unwrap();
                let listeners = Listeners {
                    http_tunnel: http,
                    probes: Some(probes),
                    metrics: Some(metrics),
                    kubelet: None,
                };
                tokio::select! {
                    r = koupleless_controller::run(settings, client, listeners, token) => r.unwrap(),
                    _ = kill_rx => {}
                }
            });
            // A crash: whatever is still running is dropped, nothing is released.
            rt.shutdown_background();
        });
        let (http, probes, metrics) = tokio::task::spawn_blocking(move || addr_rx.recv().unwrap())
            .await
            .unwrap();
        Controller {
            cancel,
            kill: Some(kill_tx),
            thread: Some(thread),
            http,
            probes,
            metrics,
        }
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        let t = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap();
    }

    /// Crash: every task is dropped mid-flight; Leases are not released.
    pub async fn crash(mut self) {
        let _ = self.kill.take().unwrap().send(());
        let t = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || t.join().unwrap())
            .await
            .unwrap();
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line, e.g. `koupleless_controller_vnodes{state="ready"}`.
    /// The sum of every sample of a metric family, e.g. `koupleless_controller_commands_total`.
    pub async fn metric_sum(&self, family: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|l| l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    pub async fn ready(&self) -> bool {
        match reqwest::get(format!("http://{}/readyz", self.probes)).await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Simulated bases

/// What a simulated base does and reports.
#[derive(Clone, Debug)]
pub struct BaseState {
    pub identity: String,
    pub name: String,
    pub version: String,
    pub cluster: String,
    pub host_name: String,
    pub ip: String,
    pub heartbeats: bool,
    pub answers: bool,
    pub max_metaspace: i64,
    pub committed_metaspace: i64,
    pub master_state: BizState,
    pub baselines: Vec<Vec<BizSpec>>,
    pub health_requests: usize,
    pub installs: Vec<BizSpec>,
    /// HTTP bases: where heartbeats go instead of the address given at start (a Service
    /// routing them to another replica).
    pub heartbeat_to: Option<SocketAddr>,
}

impl BaseState {
    pub fn new(identity: &str) -> BaseState {
        BaseState {
            identity: identity.into(),
            name: "base".into(),
            version: "1.0.0".into(),
            cluster: "default".into(),
            host_name: format!("{identity}-pod"),
            ip: "127.0.0.1".into(),
            heartbeats: true,
            answers: true,
            max_metaspace: 256 << 20,
            committed_metaspace: 80 << 20,
            master_state: BizState::Activated,
            baselines: Vec::new(),
            health_requests: 0,
            installs: Vec::new(),
            heartbeat_to: None,
        }
    }

    pub fn status(&self, port: u16, state: BizState) -> BaseStatus {
        BaseStatus {
            base_metadata: self.metadata(),
            local_host_name: self.host_name.clone(),
            local_ip: self.ip.clone(),
            port,
            state,
        }
    }

    pub fn metadata(&self) -> BaseMetadata {
        BaseMetadata {
            cluster_name: self.cluster.clone(),
            identity: self.identity.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
        }
    }

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
                    biz_state: self.master_state,
                    biz_version: self.version.clone(),
                    web_context_path: Some("/".into()),
                }),
                ..HealthData::default()
            },
        }
    }
}

pub type Shared = Arc<Mutex<BaseState>>;

/// A base on the MQTT tunnel, like the Java `arklet-tunnel-mqtt`.
pub struct MqttBase {
    pub state: Shared,
    client: AsyncClient,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn topic(identity: &str, rest: &str) -> String {
    format!("koupleless_{ENV}/{identity}/{rest}")
}

impl MqttBase {
    pub async fn start(broker_port: u16, identity: &str) -> MqttBase {
        Self::start_with(
            broker_port,
            BaseState::new(identity),
            Duration::from_millis(200),
        )
        .await
    }

    pub async fn start_with(broker_port: u16, state: BaseState, period: Duration) -> MqttBase {
        let identity = state.identity.clone();
        let mut opts =
            MqttOptions::new(format!("koupleless@@@{identity}"), "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(5));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 256);
        let state: Shared = Arc::new(Mutex::new(state));
        let cancel = CancellationToken::new();
        let (st, c, token) = (state.clone(), client.clone(), cancel.clone());
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            let mut first = true;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        let s = st.lock().unwrap().clone();
                        if s.heartbeats {
                            let hb = Envelope::new(s.status(0, BizState::Activated), now_ms());
                            let _ = c.try_publish(topic(&identity, "base/heart"), QoS::AtLeastOnce, false, transport::encode(&hb, Transport::Mqtt));
                        }
                    }
                    ev = eventloop.poll() => match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            // Java: subscribe <id>/+ and base/baseline on every connect; ask for
                            // the baseline on the first one only.
                            let _ = c.try_subscribe(topic(&identity, "+"), QoS::AtLeastOnce);
                            let _ = c.try_subscribe(topic(&identity, "base/baseline"), QoS::AtLeastOnce);
                            if std::mem::take(&mut first) {
                                let meta = st.lock().unwrap().metadata();
                                let q = Envelope::new(meta, now_ms());
                                let _ = c.try_publish(topic(&identity, "base/queryBaseline"), QoS::AtLeastOnce, false, transport::encode(&q, Transport::Mqtt));
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => {
                            handle_command(&st, &c, &identity, &p.topic, &p.payload);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        });
        MqttBase {
            state,
            client,
            cancel,
            task,
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut BaseState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// What the Go mock base does on exit: a DEACTIVATED heartbeat, then silence.
    pub async fn deactivate(&self) {
        let s = {
            let mut s = self.state.lock().unwrap();
            s.heartbeats = false;
            s.answers = false;
            s.clone()
        };
        let hb = Envelope::new(s.status(0, BizState::Deactivated), now_ms());
        self.client
            .publish(
                topic(&s.identity, "base/heart"),
                QoS::AtLeastOnce,
                false,
                transport::encode(&hb, Transport::Mqtt),
            )
            .await
            .unwrap();
    }

    pub fn baselines(&self) -> Vec<Vec<BizSpec>> {
        self.state.lock().unwrap().baselines.clone()
    }

    /// Publishes raw bytes on one of this base's topics.
    pub async fn publish_raw(&self, rest: &str, payload: &str) {
        let id = self.state.lock().unwrap().identity.clone();
        self.client
            .publish(
                topic(&id, rest),
                QoS::AtLeastOnce,
                false,
                payload.as_bytes().to_vec(),
            )
            .await
            .unwrap();
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

fn handle_command(st: &Shared, c: &AsyncClient, identity: &str, t: &str, payload: &[u8]) {
    let cmd = t.rsplit('/').next().unwrap_or_default();
    let mut s = st.lock().unwrap();
    if t.ends_with("/base/baseline") {
        if let Ok(list) = serde_json::from_slice::<Vec<BizSpec>>(payload) {
            s.baselines.push(list);
        }
        return;
    }
    if !s.answers {
        return;
    }
    match cmd {
        "health" => {
            s.health_requests += 1;
            let out = Output {
                code: ResponseCode::Success,
                data: Some(s.health()),
                error_code: None,
                message: None,
            };
            let e = Envelope::new(out, now_ms());
            let _ = c.try_publish(
                topic(identity, "base/health"),
                QoS::AtLeastOnce,
                false,
                transport::encode(&e, Transport::Mqtt),
            );
        }
        "queryAllBiz" => {
            let e = Envelope::new(Vec::<SimpleBizInfo>::new(), now_ms());
            let _ = c.try_publish(
                topic(identity, "base/simpleBiz"),
                QoS::AtLeastOnce,
                false,
                transport::encode(&e, Transport::Mqtt),
            );
        }
        _ => {}
    }
}

/// A base on the HTTP tunnel: an Arklet HTTP API plus heartbeats POSTed to the controller.
pub struct HttpBase {
    pub state: Shared,
    pub port: u16,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn arklet(
    State(st): State<Shared>,
    uri: axum::http::Uri,
    body: Bytes,
) -> axum::response::Response {
    let mut s = st.lock().unwrap();
    if !s.answers {
        return StatusCode::BAD_GATEWAY.into_response();
    }
    let json =
        |v: Vec<u8>| ([(axum::http::header::CONTENT_TYPE, "application/json")], v).into_response();
    match uri.path() {
        "/health" => {
            s.health_requests += 1;
            json(transport::encode(
                &Response::success(s.identity.clone(), s.health()),
                Transport::Http,
            ))
        }
        "/queryAllBiz" => json(transport::encode(
            &Response::success(s.identity.clone(), Vec::<BizInfo>::new()),
            Transport::Http,
        )),
        "/installBiz" | "/uninstallBiz" => {
            if let Ok(spec) = serde_json::from_slice::<BizSpec>(&body) {
                s.installs.push(spec);
            }
            json(br#"{"code":"SUCCESS","data":{"code":"SUCCESS","message":"done"}}"#.to_vec())
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

impl HttpBase {
    pub async fn start(controller: SocketAddr, identity: &str) -> HttpBase {
        Self::start_with(
            controller,
            BaseState::new(identity),
            Duration::from_millis(200),
        )
        .await
    }

    pub async fn start_with(
        controller: SocketAddr,
        state: BaseState,
        period: Duration,
    ) -> HttpBase {
        let state: Shared = Arc::new(Mutex::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cancel = CancellationToken::new();
        let app = Router::new()
            .route("/health", post(arklet))
            .route("/queryAllBiz", post(arklet))
            .route("/installBiz", post(arklet))
            .route("/uninstallBiz", post(arklet))
            .with_state(state.clone());
        let token = cancel.clone();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        let (st, token) = (state.clone(), cancel.clone());
        let heart = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        let s = st.lock().unwrap().clone();
                        if s.heartbeats {
                            let body = transport::encode(&s.status(port, BizState::Activated), Transport::Mqtt);
                            let to = s.heartbeat_to.unwrap_or(controller);
                            let _ = client.post(format!("http://{to}/heartbeat"))
                                .header("content-type", "application/json").body(body).send().await;
                        }
                    }
                }
            }
        });
        HttpBase {
            state,
            port,
            cancel,
            tasks: vec![server, heart],
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut BaseState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// The Go mock base's exit: a DEACTIVATED heartbeat, then no answers.
    pub async fn deactivate(&self, controller: SocketAddr) {
        let s = {
            let mut s = self.state.lock().unwrap();
            s.heartbeats = false;
            s.answers = false;
            s.clone()
        };
        let body = transport::encode(&s.status(self.port, BizState::Deactivated), Transport::Mqtt);
        let r = reqwest::Client::new()
            .post(format!("http://{controller}/heartbeat"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub fn vnode(identity: &str) -> String {
    format!("vnode.{identity}.{ENV}")
}
