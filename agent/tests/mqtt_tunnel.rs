//! The MQTT tunnel end to end: a real broker on a free loopback port (the embedded rumqttd on
//! every run, Mosquitto too when installed), the real agent (process backend, module JVMs built
//! with javac at test time), and a test client that plays the upstream Go controller: it
//! publishes the exact payloads the controller sends (commands retained at QoS 0, the baseline
//! retained at QoS 1) and checks every reply topic, payload shape, enum casing and the
//! freshness of `publishTimestamp` (spec protocol §5, traps T15–T26).
//!
//! Every scenario runs once per broker; the Mosquitto variant prints why it is skipped when
//! `/usr/sbin/mosquitto` is absent, and fails instead under `scripts/test`
//! (`KOUPLELESS_REQUIRE_TOOLS=1`).

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use koupleless_agent::app::{self, Agent};
use koupleless_agent::backend::process::READY_LOG_KEY;
use koupleless_agent::config::Config;
use koupleless_agent::tunnel::dispatch::WILL_TIMESTAMP;
use koupleless_agent::tunnel::{BaseInfo, MqttSettings, MqttTuning, TunnelError, run_mqtt};
use koupleless_protocol::mqtt::{
    BatchInstallBizResponseMsg, BizOperationResponse, CommandReply, MAX_MESSAGE_AGE_MS,
};
use koupleless_protocol::{BaseMetadata, BaseStatus, BizState, Envelope, SimpleBizInfo};
use koupleless_testkit::broker::Broker;
use koupleless_testkit::{Behaviour, BizJar, READY_LINE, SMALL_JVM_ARGS, file_url, java_available};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Heartbeat period in these tests (10 s in production).
const BEAT: Duration = Duration::from_millis(300);
/// Upper bound for anything that should happen "at once".
const SOON: Duration = Duration::from_secs(10);
/// Upper bound for an install (a JVM start).
const INSTALL: Duration = Duration::from_secs(60);
/// How long "nothing else arrives" is watched after a marker round trip.
const QUIET: Duration = Duration::from_millis(500);

fn now_ms() -> i64 {
    koupleless_agent::engine::now_ms()
}

/// `publishTimestamp` is an integer in ms, fresh by the controller's 10-second rule (T17).
fn assert_fresh(v: &Value) {
    let ts = v["publishTimestamp"]
        .as_i64()
        .unwrap_or_else(|| panic!("publishTimestamp must be an integer: {v}"));
    let age = now_ms() - ts;
    assert!(
        (-1_000..MAX_MESSAGE_AGE_MS).contains(&age),
        "publishTimestamp {ts} is {age} ms old: {v}"
    );
}

/// Logs of the agent under test, at `RUST_LOG` (default `warn`), captured per test.
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Topics bases publish unasked (heartbeats, the baseline query) or that the test controller
/// itself publishes (the retained baseline): everything else is an answer.
fn is_reply(m: &Msg) -> bool {
    !["/base/heart", "/base/queryBaseline", "/base/baseline"]
        .iter()
        .any(|t| m.topic.ends_with(t))
}

/// One message the controller received.
#[derive(Clone, Debug)]
struct Msg {
    seq: u64,
    at: Instant,
    topic: String,
    payload: Bytes,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {:?}", self.topic, self.payload))
    }
}

/// The test's stand-in for the Go ModuleController's MQTT side.
struct Controller {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Msg>,
    pending: VecDeque<Msg>,
    subscribed: watch::Receiver<u64>,
    driver: JoinHandle<()>,
    env: String,
    id: String,
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Controller {
    /// Connects and subscribes to everything bases publish, in every env.
    async fn connect(broker: &Broker, id: &str) -> Controller {
        init_logs();
        let mut o = MqttOptions::new(
            format!("test-controller-{id}"),
            broker.host(),
            broker.port(),
        );
        // A persistent session: the broker queues the agent's (QoS 1) answers while this
        // observer reconnects after a broker restart, so none is lost to the race between the
        // two clients reconnecting. (The Go controller uses a clean session; it only observes.)
        o.set_max_packet_size(32 << 20, 32 << 20)
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false);
        let (client, mut eventloop) = AsyncClient::new(o, 64);
        let (tx, rx) = mpsc::unbounded_channel();
        let (sub_tx, subscribed) = watch::channel(0u64);
        let sub_client = client.clone();
        let driver = tokio::spawn(async move {
            let mut seq = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        // Clean session: subscribe again after every reconnect.
                        let _ = sub_client.try_subscribe("+/+/base/#", QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => sub_tx.send_modify(|n| *n += 1),
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        seq += 1;
                        let _ = tx.send(Msg {
                            seq,
                            at: Instant::now(),
                            topic: p.topic,
                            payload: p.payload,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        let mut c = Controller {
            client,
            rx,
            pending: VecDeque::new(),
            subscribed,
            driver,
            env: "dev".into(),
            id: id.into(),
        };
        c.wait_subscribed(1).await;
        c
    }

    async fn wait_subscribed(&mut self, at_least: u64) {
        let ok = tokio::time::timeout(SOON, self.subscribed.wait_for(|n| *n >= at_least)).await;
        assert!(ok.is_ok(), "the test controller did not (re)subscribe");
    }

    fn subscriptions(&self) -> u64 {
        *self.subscribed.borrow()
    }

    fn topic(&self, tail: &str) -> String {
        format!("koupleless_{}/{}/{tail}", self.env, self.id)
    }

    /// Publishes a command as the Go controller does: retained, QoS 0.
    async fn command(&self, cmd: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(self.topic(cmd), QoS::AtMostOnce, true, payload)
            .await
            .unwrap();
    }

    /// Publishes a baseline as the Go controller does: retained, QoS 1.
    async fn baseline(&self, payload: &Value) {
        self.client
            .publish(
                self.topic("base/baseline"),
                QoS::AtLeastOnce,
                true,
                payload.to_string(),
            )
            .await
            .unwrap();
    }

    /// A live (not retained) command.
    async fn live(&self, cmd: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(self.topic(cmd), QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// Deletes a retained message.
    async fn clear(&self, topic_tail: &str) {
        self.client
            .publish(self.topic(topic_tail), QoS::AtLeastOnce, true, Vec::new())
            .await
            .unwrap();
    }

    fn pull(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.pending.push_back(m);
        }
    }

    /// The next message on `base/<tail>` of this base that satisfies `pred`, waiting at most
    /// `within`; other messages stay queued.
    async fn next_where(
        &mut self,
        tail: &str,
        within: Duration,
        pred: impl Fn(&Msg) -> bool,
    ) -> Option<Msg> {
        let topic = self.topic(&format!("base/{tail}"));
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.pull();
            if let Some(i) = self
                .pending
                .iter()
                .position(|m| m.topic == topic && pred(m))
            {
                return self.pending.remove(i);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(m)) => self.pending.push_back(m),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next message on `base/<tail>`, or a panic naming what did arrive.
    async fn next(&mut self, tail: &str, within: Duration) -> Msg {
        match self.next_where(tail, within, |_| true).await {
            Some(m) => m,
            None => panic!(
                "nothing on base/{tail} within {within:?}; queued: {:?}",
                self.pending.iter().map(|m| &m.topic).collect::<Vec<_>>()
            ),
        }
    }

    async fn next_json(&mut self, tail: &str, within: Duration) -> Value {
        let v = self.next(tail, within).await.json();
        assert_fresh(&v);
        v
    }

    /// Every queued message on `base/<tail>` (consumed), after collecting for `window`.
    async fn drain(&mut self, tail: &str, window: Duration) -> Vec<Msg> {
        tokio::time::sleep(window).await;
        self.pull();
        let topic = self.topic(&format!("base/{tail}"));
        let (hit, keep): (Vec<Msg>, Vec<Msg>) =
            self.pending.drain(..).partition(|m| m.topic == topic);
        self.pending = keep.into();
        hit
    }

    /// The topics of every queued answer (see [`is_reply`]), after collecting for `window`;
    /// consumes everything queued.
    async fn replies(&mut self, window: Duration) -> Vec<String> {
        tokio::time::sleep(window).await;
        self.pull();
        self.pending
            .drain(..)
            .filter(is_reply)
            .map(|m| m.topic)
            .collect()
    }

    /// A round trip through the agent: a live `queryBizOps` with a unique request id, repeated
    /// until its `commandReply` comes back. Everything the agent received before the marker has
    /// been dispatched by then (the event loop handles messages in order).
    async fn marker(&mut self, tag: &str) {
        let deadline = Instant::now() + SOON;
        loop {
            self.live("queryBizOps", json!({ "requestId": tag }).to_string())
                .await;
            let hit = self
                .next_where("commandReply", Duration::from_millis(500), |m| {
                    m.json()["data"]["requestId"] == tag
                })
                .await;
            if hit.is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "marker {tag} never came back");
        }
    }
}

/// The tunnel under test, run beside an agent started without one.
struct Tunnel {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), TunnelError>>,
}

impl Tunnel {
    fn start(broker: &Broker, base: BaseInfo, agent: &Agent) -> Tunnel {
        let settings = MqttSettings {
            host: broker.host().into(),
            port: broker.port(),
            username: None,
            password: None,
            client_prefix: "koupleless".into(),
            tls: None,
            keep_alive: Duration::from_secs(60),
            heartbeat_interval: BEAT,
            tuning: MqttTuning {
                reconnect_min: Duration::from_millis(50),
                reconnect_max: Duration::from_millis(500),
                shutdown_grace: Duration::from_secs(3),
                ..MqttTuning::default()
            },
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_mqtt(
            settings,
            base,
            agent.service().clone(),
            cancel.clone(),
        ));
        Tunnel { cancel, task }
    }

    /// Graceful stop; returns how long it took.
    async fn stop(self) -> Duration {
        let begin = Instant::now();
        self.cancel.cancel();
        let r = tokio::time::timeout(SOON, self.task)
            .await
            .expect("the tunnel stops in time");
        r.expect("the tunnel task does not panic")
            .expect("the tunnel ends without error");
        begin.elapsed()
    }
}

fn base(id: &str) -> BaseInfo {
    BaseInfo {
        identity: id.parse().unwrap(),
        env: "dev".parse().unwrap(),
        metadata: BaseMetadata {
            cluster_name: "default".into(),
            identity: id.into(),
            name: "test-base".into(),
            version: "1.0.0".into(),
        },
        local_ip: "127.0.0.1".into(),
        host_name: "test-host".into(),
        http_port: 0,
    }
}

async fn start_agent(work: &Path, id: &str, extra: &[&str]) -> Agent {
    let jvm_args = SMALL_JVM_ARGS.join(" ");
    let work = work.to_str().unwrap();
    let mut args = vec![
        "koupleless-agent",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
        "--base-identity",
        id,
        "--base-name",
        "test-base",
        "--stop-grace",
        "3s",
        "--work-dir",
        work,
        "--module-jvm-arg",
        &jvm_args,
    ];
    args.extend_from_slice(extra);
    app::start(Config::parse_from(args))
        .await
        .expect("agent starts")
}

/// A controller, an agent and its tunnel against one broker.
struct World {
    broker: Broker,
    ctl: Controller,
    agent: Option<Agent>,
    tunnel: Option<Tunnel>,
    jars: tempfile::TempDir,
    _work: tempfile::TempDir,
}

impl World {
    async fn new(broker: Broker, id: &str) -> World {
        let ctl = Controller::connect(&broker, id).await;
        let work = tempfile::tempdir().unwrap();
        let agent = start_agent(work.path(), id, &[]).await;
        let tunnel = Tunnel::start(&broker, base(id), &agent);
        World {
            broker,
            ctl,
            agent: Some(agent),
            tunnel: Some(tunnel),
            jars: tempfile::tempdir().unwrap(),
            _work: work,
        }
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent running")
    }

    fn jar(&self, name: &str, version: &str, steps: &[Behaviour]) -> String {
        assert!(
            java_available(),
            "these tests need java, javac and jar (JAVA_HOME or PATH)"
        );
        let mut b = BizJar::new(name, version);
        for s in steps {
            b = b.behaviour(s.clone());
        }
        file_url(&b.build(self.jars.path()))
    }

    /// Waits until the agent's first heartbeat (the tunnel is connected and subscribed).
    async fn online(&mut self) -> Value {
        self.ctl.next_json("heart", SOON).await
    }

    fn list(&self) -> Vec<(String, String, BizState)> {
        self.agent()
            .service()
            .list()
            .into_iter()
            .map(|b| (b.biz_name, b.biz_version, b.biz_state))
            .collect()
    }

    async fn broker_restart(&mut self) {
        let before = self.ctl.subscriptions();
        tokio::task::block_in_place(|| self.broker.stop());
        tokio::task::block_in_place(|| self.broker.restart());
        self.ctl.wait_subscribed(before + 1).await;
    }

    async fn finish(mut self) {
        if let Some(t) = self.tunnel.take() {
            t.stop().await;
        }
        if let Some(a) = self.agent.take() {
            a.shutdown().await;
        }
    }
}

fn install(name: &str, version: &str, url: &str) -> String {
    json!({"bizName": name, "bizVersion": version, "bizUrl": url}).to_string()
}

fn key(name: &str, version: &str) -> String {
    json!({"bizName": name, "bizVersion": version}).to_string()
}

/// Runs each scenario against the embedded broker and, when installed, Mosquitto.
macro_rules! on_every_broker {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$scenario(koupleless_testkit::broker::Broker::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() {
                match koupleless_testkit::broker::Broker::mosquitto() {
                    Some(b) => super::$scenario(b).await,
                    None => koupleless_testkit::skip_or_fail(
                        stringify!($scenario),
                        "mosquitto is not installed (apt-get install -y mosquitto)",
                    ),
                }
            }
        }
    )*};
}

on_every_broker!(
    connect_sequence_heartbeats_and_goodbye,
    health_and_query_all_biz,
    module_lifecycle,
    broker_restart_resumes_and_replays_are_harmless,
    commands_java_ignores_are_answered_on_command_reply,
    malformed_and_oversized_payloads,
    other_bases_and_envs_are_ignored,
    baseline_end_to_end,
    slow_install_blocks_nothing,
    last_will_when_the_agent_dies,
);

async fn connect_sequence_heartbeats_and_goodbye(broker: Broker) {
    let mosquitto_log = broker.log_file();
    let mut w = World::new(broker, "10.0.1.1").await;
    let query = w.ctl.next("queryBaseline", SOON).await;
    let q = query.json();
    assert_fresh(&q);
    assert_eq!(
        q["data"],
        json!({"clusterName": "default", "identity": "10.0.1.1", "name": "test-base", "version": "1.0.0"})
    );
    let first = w.ctl.next("heart", SOON).await;
    assert!(
        query.seq < first.seq,
        "queryBaseline comes before the first heartbeat"
    );
    let h = first.json();
    assert_fresh(&h);
    assert_eq!(
        h["data"],
        json!({
            "baseMetadata": {"clusterName": "default", "identity": "10.0.1.1", "name": "test-base", "version": "1.0.0"},
            "localHostName": "test-host",
            "localIP": "127.0.0.1",
            "port": 0,
            "state": "activated"
        })
    );
    let status: Envelope<BaseStatus> = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(status.data.state, BizState::Activated);

    // A steady beat at the configured period.
    let begin = Instant::now();
    for _ in 0..4 {
        assert_fresh(&w.ctl.next_json("heart", SOON).await);
    }
    let per_beat = begin.elapsed() / 4;
    eprintln!("measured heartbeat period: {per_beat:?} (configured {BEAT:?})");
    assert!(per_beat >= BEAT / 2 && per_beat <= BEAT * 3, "{per_beat:?}");
    // queryBaseline is published on the first connection only.
    assert!(
        w.ctl
            .drain("queryBaseline", Duration::ZERO)
            .await
            .is_empty()
    );

    // Goodbye: one deactivated heartbeat, a clean disconnect (no will).
    let took = w.tunnel.take().unwrap().stop().await;
    eprintln!("graceful MQTT shutdown took {took:?}");
    let bye = w
        .ctl
        .next_where("heart", SOON, |m| {
            m.json()["data"]["state"] == "deactivated"
        })
        .await
        .expect("a deactivated heartbeat on shutdown");
    let bye_seq = bye.seq;
    let bye = bye.json();
    assert_fresh(&bye);
    assert_ne!(
        bye["publishTimestamp"], WILL_TIMESTAMP,
        "that is the will, not the goodbye"
    );
    // Nothing after the goodbye: no more beats, and no will (a clean disconnect cancels it).
    let after: Vec<Msg> = w
        .ctl
        .drain("heart", QUIET)
        .await
        .into_iter()
        .filter(|m| m.seq > bye_seq)
        .collect();
    assert!(after.is_empty(), "heartbeats after the goodbye: {after:?}");
    if let Some(log) = mosquitto_log {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.contains("as koupleless@@@10.0.1.1"),
            "client id in the broker log:\n{text}"
        );
    }
    w.finish().await;
}

async fn health_and_query_all_biz(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.2").await;
    w.online().await;
    w.ctl.command("health", "{}").await;
    let h = w.ctl.next_json("health", SOON).await;
    assert_eq!(h["data"]["code"], "SUCCESS");
    let data = &h["data"]["data"]["healthData"];
    assert_eq!(
        data["masterBizInfo"],
        json!({"bizName": "test-base", "bizState": "ACTIVATED", "bizVersion": "1.0.0", "webContextPath": "/"})
    );
    assert!(data["cpu"].is_object(), "{h}");

    w.ctl.command("queryAllBiz", "{}").await;
    let s = w.ctl.next_json("simpleBiz", SOON).await;
    assert_eq!(s["data"], json!([]));

    // A health type Java rejects by throwing (and not answering) is answered FAILED here.
    w.ctl.command("health", r#"{"type":"nope"}"#).await;
    let h = w.ctl.next_json("health", SOON).await;
    assert_eq!(h["data"]["code"], "FAILED");
    assert!(
        h["data"]["message"].as_str().unwrap().contains("nope"),
        "{h}"
    );
    w.finish().await;
}

async fn module_lifecycle(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.3").await;
    let url = w.jar("biz-a", "1.0.0", &[]);
    w.online().await;

    w.ctl
        .command("installBiz", install("biz-a", "1.0.0", &url))
        .await;
    let msg = w.ctl.next("bizOperation", INSTALL).await;
    let v = msg.json();
    assert_fresh(&v);
    let d = &v["data"];
    assert_eq!(
        (&d["command"], &d["bizName"], &d["bizVersion"]),
        (&json!("installBiz"), &json!("biz-a"), &json!("1.0.0"))
    );
    assert_eq!(d["response"]["code"], "SUCCESS");
    assert_eq!(d["response"]["data"]["code"], "SUCCESS");
    let info = &d["response"]["data"]["bizInfos"][0];
    assert_eq!(info["bizState"], "ACTIVATED", "{v}");
    assert_eq!(info["identity"], "biz-a:1.0.0");
    let records: Vec<(&str, &str)> = info["bizStateRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["state"].as_str().unwrap(), r["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(records, [("RESOLVED", "CREATED"), ("ACTIVATED", "STARTED")]);
    // The shape the Go controller decodes.
    let typed: Envelope<BizOperationResponse> = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        typed.data.response.code,
        koupleless_protocol::ResponseCode::Success
    );

    w.ctl.command("queryAllBiz", "{}").await;
    let s = w.ctl.next("simpleBiz", SOON).await;
    let typed: Envelope<Vec<SimpleBizInfo>> = serde_json::from_slice(&s.payload).unwrap();
    assert_eq!(typed.data.len(), 1);
    let s = s.json();
    assert_fresh(&s);
    let entry = &s["data"][0];
    assert_eq!(
        (&entry["name"], &entry["version"], &entry["state"]),
        (&json!("biz-a"), &json!("1.0.0"), &json!("activated"))
    );
    assert_eq!(entry["latestStateRecord"]["state"], "ACTIVATED");
    assert_eq!(entry["latestStateRecord"]["reason"], "STARTED");
    assert!(entry["latestStateRecord"]["changeTime"].is_i64());

    w.ctl.command("health", "{}").await;
    let h = w.ctl.next_json("health", SOON).await;
    let listed = h["data"]["data"]["healthData"]["bizListInfo"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        listed
            .iter()
            .any(|b| b["bizName"] == "biz-a" && b["bizState"] == "ACTIVATED"),
        "{h}"
    );

    // The controller sends the same install again (live): Java's answer, REPEAT_BIZ.
    w.ctl
        .command("installBiz", install("biz-a", "1.0.0", &url))
        .await;
    let v = w.ctl.next_json("bizOperation", SOON).await;
    assert_eq!(v["data"]["response"]["code"], "FAILED");
    assert_eq!(v["data"]["response"]["data"]["code"], "REPEAT_BIZ");
    assert_eq!(v["data"]["response"]["message"], "install biz not success!");

    w.ctl.command("uninstallBiz", key("biz-a", "1.0.0")).await;
    let v = w.ctl.next_json("bizOperation", INSTALL).await;
    assert_eq!(
        v["data"],
        json!({"bizName": "biz-a", "bizVersion": "1.0.0", "command": "uninstallBiz",
               "response": {"code": "SUCCESS", "data": {"code": "SUCCESS", "message": "Uninstall biz: biz-a:1.0.0 success."}}})
    );
    w.ctl.command("uninstallBiz", key("biz-a", "1.0.0")).await;
    let v = w.ctl.next_json("bizOperation", SOON).await;
    assert_eq!(v["data"]["response"]["data"]["code"], "NOT_FOUND_BIZ");
    assert_eq!(
        v["data"]["response"]["message"],
        "uninstall biz not success!"
    );

    // A package that does not exist: the Java tunnel's exception shape.
    w.ctl
        .command(
            "installBiz",
            install("biz-x", "1.0.0", "file:///nonexistent/missing.jar"),
        )
        .await;
    let v = w.ctl.next_json("bizOperation", SOON).await;
    assert_eq!(v["data"]["bizName"], "biz-x");
    assert_eq!(v["data"]["response"]["code"], "FAILED");
    assert_eq!(v["data"]["response"]["data"]["code"], "FAILED");
    assert!(
        v["data"]["response"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.jar"),
        "{v}"
    );
    assert!(w.list().is_empty());
    w.finish().await;
}

async fn broker_restart_resumes_and_replays_are_harmless(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.4").await;
    let a = w.jar("biz-a", "1.0.0", &[]);
    let b = w.jar("biz-b", "1.0.0", &[]);
    w.online().await;
    // State before the outage: biz-a installed; biz-b installed and then uninstalled, so the
    // broker retains installBiz=biz-b and uninstallBiz=biz-b; health retained too.
    w.ctl
        .command("installBiz", install("biz-a", "1.0.0", &a))
        .await;
    assert_eq!(
        w.ctl.next_json("bizOperation", INSTALL).await["data"]["response"]["code"],
        "SUCCESS"
    );
    w.ctl
        .command("installBiz", install("biz-b", "1.0.0", &b))
        .await;
    assert_eq!(
        w.ctl.next_json("bizOperation", INSTALL).await["data"]["response"]["code"],
        "SUCCESS"
    );
    w.ctl.command("uninstallBiz", key("biz-b", "1.0.0")).await;
    assert_eq!(
        w.ctl.next_json("bizOperation", INSTALL).await["data"]["response"]["code"],
        "SUCCESS"
    );
    w.ctl.command("health", "{}").await;
    w.ctl.next_json("health", SOON).await;
    let records_before = w.agent().service().list()[0].biz_state_records.clone();

    w.ctl.drain("heart", Duration::ZERO).await;
    w.broker_restart().await;
    let back = now_ms();
    // Heartbeats resume on their own: beats stamped after the broker came back.
    let beats = w.ctl.drain("heart", BEAT * 4).await;
    let stamp = |m: &Msg| m.json()["publishTimestamp"].as_i64().unwrap_or_default();
    let fresh = beats
        .iter()
        .find(|m| stamp(m) >= back && stamp(m) != WILL_TIMESTAMP)
        .expect("heartbeats resume after the broker restart");
    eprintln!(
        "{}: first heartbeat {} ms after the broker was back",
        w.broker.name(),
        stamp(fresh) - back
    );
    assert_eq!(fresh.json()["data"]["state"], "activated");
    // Mosquitto saves the agent's session (will included) at shutdown and publishes the will
    // after the restart: the controller then sees the will and, right behind it, the heartbeat
    // the agent sends on every reconnect.
    if let Some(will) = beats.iter().find(|m| stamp(m) == WILL_TIMESTAMP) {
        // (QoS 1 is at least once: the will may arrive twice.)
        let next = beats
            .iter()
            .find(|m| m.seq > will.seq && stamp(m) != WILL_TIMESTAMP)
            .expect("a heartbeat after the will");
        let gap = next.at.saturating_duration_since(will.at);
        eprintln!(
            "{}: will on reconnect, activated heartbeat {gap:?} later",
            w.broker.name()
        );
        assert_eq!(next.json()["data"]["state"], "activated");
        assert!(gap < Duration::from_millis(200), "{gap:?}");
    }
    // The agent resubscribed, and the broker replayed the retained commands: the retained
    // health was answered without anyone asking again (queries always run)...
    let replayed_health = w.ctl.next_json("health", SOON).await;
    assert_eq!(replayed_health["data"]["code"], "SUCCESS");
    w.ctl.marker("after-restart").await;
    // ...but the replayed installBiz (biz-b) and uninstallBiz (biz-b) did nothing: biz-b is not
    // back, biz-a was not touched, and no operation was reported.
    let ops = w.ctl.drain("bizOperation", QUIET).await;
    assert!(ops.is_empty(), "replays must not run again: {ops:?}");
    assert_eq!(
        w.list(),
        [("biz-a".into(), "1.0.0".into(), BizState::Activated)]
    );
    assert_eq!(
        w.agent().service().list()[0].biz_state_records,
        records_before
    );

    // A live command after the outage runs normally.
    w.ctl.command("uninstallBiz", key("biz-a", "1.0.0")).await;
    assert_eq!(
        w.ctl.next_json("bizOperation", INSTALL).await["data"]["response"]["code"],
        "SUCCESS"
    );
    w.finish().await;
}

async fn commands_java_ignores_are_answered_on_command_reply(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.5").await;
    w.online().await;

    w.ctl.command("switchBiz", key("nope", "1.0.0")).await;
    let r = w.ctl.next("commandReply", SOON).await;
    let typed: Envelope<CommandReply> = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(typed.data.command, "switchBiz");
    let v = r.json();
    assert_fresh(&v);
    assert_eq!(v["data"]["response"]["code"], "FAILED");
    assert_eq!(v["data"]["response"]["data"]["code"], "NOT_FOUND_BIZ");

    w.ctl
        .command("queryBizOps", r#"{"requestId":"r-42"}"#)
        .await;
    let v = w.ctl.next_json("commandReply", SOON).await;
    assert_eq!(v["data"]["command"], "queryBizOps");
    assert_eq!(v["data"]["requestId"], "r-42");
    assert_eq!(
        v["data"]["response"]["message"],
        "Not found the corresponding ops record."
    );

    w.ctl.command("batchInstallBiz", r#"{"bizList":[]}"#).await;
    let v = w.ctl.next_json("commandReply", SOON).await;
    assert_eq!(v["data"]["command"], "batchInstallBiz");
    assert_eq!(v["data"]["response"]["code"], "SUCCESS");
    assert_eq!(
        v["data"]["response"]["data"]["message"],
        "batch install success"
    );

    w.ctl.command("help", "{}").await;
    let v = w.ctl.next_json("commandReply", SOON).await;
    assert_eq!(v["data"]["command"], "help");
    let ids: Vec<&str> = v["data"]["response"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"installBiz") && ids.contains(&"queryBizOps"),
        "{ids:?}"
    );

    // An unknown command gets no reply, as on Java.
    w.ctl.command("fooBar", "{}").await;
    w.ctl.marker("after-unknown").await;
    let replies = w.ctl.replies(QUIET).await;
    assert!(replies.is_empty(), "no reply to fooBar: {replies:?}");
    w.finish().await;
}

async fn malformed_and_oversized_payloads(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.6").await;
    w.online().await;
    let limit = MqttTuning::default().max_payload;
    let oversized = {
        let mut s = String::from(r#"{"bizName":""#);
        s.push_str(&"a".repeat(limit));
        s.push_str(r#"","bizVersion":"1"}"#);
        s.into_bytes()
    };
    let bad: [(&str, Vec<u8>); 5] = [
        ("truncated", br#"{"bizName":"#.to_vec()),
        ("array", b"[1,2]".to_vec()),
        ("binary", vec![0xff, 0xfe, 0x00, 0x01]),
        (
            "wrong types",
            br#"{"bizName":{"a":1},"bizVersion":[],"bizUrl":7}"#.to_vec(),
        ),
        ("oversized", oversized),
    ];
    // (command topic, reply tail, what the reply must be)
    #[derive(Clone, Copy, PartialEq)]
    enum Want {
        /// FAILED, with a message.
        Error,
        /// queryAllBiz takes no input: still the (empty) list.
        List,
    }
    let topics = [
        ("installBiz", "bizOperation", Want::Error),
        ("uninstallBiz", "bizOperation", Want::Error),
        ("health", "health", Want::Error),
        ("queryAllBiz", "simpleBiz", Want::List),
        ("switchBiz", "commandReply", Want::Error),
        ("batchInstallBiz", "commandReply", Want::Error),
        ("queryBizOps", "commandReply", Want::Error),
        ("base/baseline", "batchInstallBizResponse", Want::Error),
    ];
    for (topic, reply, want) in topics {
        for (what, payload) in &bad {
            if *what == "wrong types" && matches!(topic, "health" | "queryBizOps") {
                // Valid for commands whose fields are all optional or ignored.
                continue;
            }
            w.ctl.command(topic, payload.clone()).await;
            let v = w.ctl.next_json(reply, SOON).await;
            let ctx = format!("{what} on {topic}: {v}");
            if want == Want::List {
                assert_eq!(v["data"], json!([]), "{ctx}");
                continue;
            }
            let response = match reply {
                "health" => &v["data"],
                _ => &v["data"]["response"],
            };
            assert_eq!(response["code"], "FAILED", "{ctx}");
            assert!(
                response["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{ctx}"
            );
            if *what == "oversized" {
                assert!(
                    response["message"]
                        .as_str()
                        .unwrap()
                        .contains("larger than the limit"),
                    "{ctx}"
                );
            }
            if reply == "bizOperation" {
                // Nothing readable to echo.
                assert!(v["data"].get("bizName").is_none(), "{ctx}");
            }
        }
    }
    // help reads no field, but an unreadable body still gets an answer there.
    for (_, payload) in &bad {
        w.ctl.command("help", payload.clone()).await;
        let v = w.ctl.next_json("commandReply", SOON).await;
        assert_eq!(v["data"]["command"], "help", "{v}");
    }
    // Still alive and answering; nothing was installed.
    w.ctl.live("health", "{}").await;
    assert_eq!(
        w.ctl.next_json("health", SOON).await["data"]["code"],
        "SUCCESS"
    );
    assert!(!w.tunnel.as_ref().unwrap().task.is_finished());
    assert!(w.list().is_empty());
    // Deleting a retained message (empty payload) is not a command: no reply.
    w.ctl.clear("installBiz").await;
    w.ctl.clear("base/baseline").await;
    w.ctl.marker("after-clear").await;
    let replies = w.ctl.replies(QUIET).await;
    assert!(replies.is_empty(), "{replies:?}");
    w.finish().await;
}

async fn other_bases_and_envs_are_ignored(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.7").await;
    w.online().await;
    let url = w.jar("biz-a", "1.0.0", &[]);
    for topic in [
        "koupleless_dev/10.0.9.9/installBiz",
        "koupleless_dev/10.0.9.9/health",
        "koupleless_dev/10.0.9.9/queryAllBiz",
        "koupleless_dev/10.0.9.9/base/baseline",
        "koupleless_prod/10.0.1.7/installBiz",
        "koupleless_prod/10.0.1.7/health",
        "koupleless_dev/10.0.1.70/installBiz",
    ] {
        let payload = if topic.ends_with("baseline") {
            json!([{"bizName": "biz-a", "bizVersion": "1.0.0", "bizUrl": url}]).to_string()
        } else {
            install("biz-a", "1.0.0", &url)
        };
        w.ctl
            .client
            .publish(topic, QoS::AtMostOnce, true, payload)
            .await
            .unwrap();
    }
    w.ctl.marker("after-others").await;
    let replies = w.ctl.replies(QUIET).await;
    assert!(replies.is_empty(), "{replies:?}");
    assert!(w.list().is_empty());
    w.finish().await;
}

async fn baseline_end_to_end(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.8").await;
    let b = w.jar("biz-b", "1.0.0", &[]);
    let c = w.jar("biz-c", "1.0.0", &[]);
    // The controller answers queryBaseline with the retained baseline, as MC does.
    let q = w.ctl.next_json("queryBaseline", SOON).await;
    assert_eq!(q["data"]["identity"], "10.0.1.8");
    let baseline = json!([
        {"bizName": "biz-b", "bizVersion": "1.0.0", "bizUrl": b},
        {"bizName": "biz-c", "bizVersion": "1.0.0", "bizUrl": c},
    ]);
    w.ctl.baseline(&baseline).await;
    let msg = w.ctl.next("batchInstallBizResponse", INSTALL).await;
    let typed: Envelope<BatchInstallBizResponseMsg> = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(typed.data.command, "batchInstallBiz");
    let v = msg.json();
    assert_fresh(&v);
    assert_eq!(v["data"]["response"]["code"], "SUCCESS", "{v}");
    let entries = v["data"]["response"]["data"]["bizUrlToResponse"]
        .as_object()
        .unwrap();
    assert_eq!(entries.len(), 2);
    for (url, name) in [(&b, "biz-b"), (&c, "biz-c")] {
        let e = &entries[url.as_str()];
        assert_eq!(e["code"], "SUCCESS");
        assert_eq!(e["bizInfos"][0]["bizName"], name);
        assert_eq!(e["bizInfos"][0]["bizState"], "ACTIVATED");
    }
    w.ctl.command("queryAllBiz", "{}").await;
    let s = w.ctl.next_json("simpleBiz", SOON).await;
    let mut names: Vec<&str> = s["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["biz-b", "biz-c"]);

    // A reconnect replays the retained baseline: it is not installed a second time.
    w.broker_restart().await;
    w.ctl.next_json("heart", SOON).await;
    w.ctl.marker("after-restart").await;
    let again = w.ctl.drain("batchInstallBizResponse", QUIET).await;
    assert!(
        again.is_empty(),
        "the replayed baseline ran again: {again:?}"
    );

    // A live baseline with a missing package: every entry still carries bizInfos[0] (T15).
    let missing = "file:///nonexistent/biz-d.jar";
    w.ctl
        .baseline(&json!([
            {"bizName": "biz-b", "bizVersion": "1.0.0", "bizUrl": b},
            {"bizName": "biz-d", "bizVersion": "1.0.0", "bizUrl": missing},
        ]))
        .await;
    let v = w.ctl.next_json("batchInstallBizResponse", INSTALL).await;
    assert_eq!(v["data"]["response"]["code"], "FAILED");
    let entries = &v["data"]["response"]["data"]["bizUrlToResponse"];
    assert_eq!(entries[b.as_str()]["code"], "REPEAT_BIZ");
    assert_eq!(entries[b.as_str()]["bizInfos"][0]["bizState"], "ACTIVATED");
    assert_eq!(entries[missing]["bizInfos"][0]["bizName"], "biz-d");
    assert_eq!(entries[missing]["bizInfos"][0]["bizState"], "BROKEN");
    w.finish().await;
}

async fn slow_install_blocks_nothing(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.9").await;
    let slow_ready = Duration::from_secs(3);
    let slow = w.jar(
        "biz-slow",
        "1.0.0",
        &[Behaviour::SlowReady(slow_ready), Behaviour::StayUp],
    );
    let fast = w.jar("biz-fast", "1.0.0", &[]);
    w.online().await;
    w.ctl.drain("heart", Duration::ZERO).await;

    let begin = Instant::now();
    let slow_install = json!({
        "bizName": "biz-slow", "bizVersion": "1.0.0", "bizUrl": slow,
        "envs": {READY_LOG_KEY: READY_LINE},
    });
    w.ctl.command("installBiz", slow_install.to_string()).await;
    // Health answers at once while the slow module starts.
    let asked = Instant::now();
    w.ctl.live("health", "{}").await;
    let h = w.ctl.next_json("health", SOON).await;
    let health_latency = asked.elapsed();
    eprintln!("health answered in {health_latency:?} during a slow install");
    assert_eq!(h["data"]["code"], "SUCCESS");
    assert!(health_latency < slow_ready / 2, "{health_latency:?}");
    // Another module's install finishes first.
    w.ctl
        .command("installBiz", install("biz-fast", "1.0.0", &fast))
        .await;
    let first = w.ctl.next_json("bizOperation", INSTALL).await;
    assert_eq!(first["data"]["bizName"], "biz-fast", "{first}");
    assert_eq!(first["data"]["response"]["code"], "SUCCESS");
    let second = w.ctl.next_json("bizOperation", INSTALL).await;
    let slow_took = begin.elapsed();
    eprintln!("slow install answered after {slow_took:?}");
    assert_eq!(second["data"]["bizName"], "biz-slow");
    assert_eq!(second["data"]["response"]["code"], "SUCCESS", "{second}");
    assert!(slow_took >= slow_ready);
    // Heartbeats kept their period throughout.
    let beats = w.ctl.drain("heart", Duration::ZERO).await;
    let expected = (slow_took.as_millis() / BEAT.as_millis()) as usize;
    eprintln!(
        "{} heartbeats during {slow_took:?} (period {BEAT:?})",
        beats.len()
    );
    assert!(
        beats.len() + 2 >= expected,
        "{} heartbeats in {slow_took:?}",
        beats.len()
    );
    w.finish().await;
}

async fn last_will_when_the_agent_dies(broker: Broker) {
    let mut w = World::new(broker, "10.0.1.10").await;
    w.online().await;
    // Dropping the tunnel's future closes the connection without DISCONNECT, as a crash does.
    let tunnel = w.tunnel.take().unwrap();
    tunnel.task.abort();
    let _ = tunnel.task.await;
    let will = w
        .ctl
        .next_where("heart", SOON, |m| {
            m.json()["data"]["state"] == "deactivated"
        })
        .await
        .expect("the broker publishes the will");
    let v = will.json();
    assert_eq!(v["publishTimestamp"], WILL_TIMESTAMP);
    let typed: Envelope<BaseStatus> = serde_json::from_slice(&will.payload).unwrap();
    assert_eq!(typed.data.base_metadata.identity, "10.0.1.10");
    assert!(
        !typed.is_stale(now_ms(), MAX_MESSAGE_AGE_MS),
        "the controller must accept it"
    );
    // The heartbeat task died with the tunnel.
    let after: Vec<Msg> = w
        .ctl
        .drain("heart", BEAT * 3)
        .await
        .into_iter()
        .filter(|m| m.seq > will.seq)
        .collect();
    assert!(after.is_empty(), "heartbeats after the crash: {after:?}");
    w.finish().await;
}

/// The tunnel wired through the agent's own flags and task ownership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wired_from_the_command_line() {
    let broker = Broker::embedded();
    let mut ctl = Controller::connect(&broker, "10.0.1.11").await;
    ctl.env = "staging".into();
    let work = tempfile::tempdir().unwrap();
    let port = broker.port().to_string();
    let agent = start_agent(
        work.path(),
        "10.0.1.11",
        &[
            "--koupleless.arklet.mqtt.broker",
            "127.0.0.1",
            "--koupleless.arklet.mqtt.port",
            &port,
            "--koupleless.arklet.mqtt.client.prefix",
            "koupleless",
            "--runtime-env",
            "STAGING",
            "--mqtt-heartbeat-interval",
            "300ms",
        ],
    )
    .await;
    let q = ctl.next_json("queryBaseline", SOON).await;
    assert_eq!(q["data"]["identity"], "10.0.1.11");
    assert_eq!(
        ctl.next_json("heart", SOON).await["data"]["state"],
        "activated"
    );
    ctl.command("health", "{}").await;
    assert_eq!(
        ctl.next_json("health", SOON).await["data"]["code"],
        "SUCCESS"
    );
    agent.shutdown().await;
    let bye = ctl
        .next_where("heart", SOON, |m| {
            m.json()["data"]["state"] == "deactivated"
        })
        .await
        .expect("shutdown says goodbye");
    assert_fresh(&bye.json());
}

/// `--mqtt-report-port`: heartbeats (and the goodbye) carry the real Arklet port instead of
/// the Java base's 0, so a controller can reach the agent's HTTP API (module logs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_port_when_asked() {
    let broker = Broker::embedded();
    let mut ctl = Controller::connect(&broker, "10.0.1.12").await;
    let work = tempfile::tempdir().unwrap();
    let port = broker.port().to_string();
    let agent = start_agent(
        work.path(),
        "10.0.1.12",
        &[
            "--mqtt-broker",
            "127.0.0.1",
            "--mqtt-port",
            &port,
            "--mqtt-heartbeat-interval",
            "300ms",
            "--mqtt-report-port",
        ],
    )
    .await;
    let http_port = agent.addr().port();
    assert_ne!(http_port, 0);
    assert_eq!(
        ctl.next_json("heart", SOON).await["data"]["port"],
        json!(http_port)
    );
    agent.shutdown().await;
    let bye = ctl
        .next_where("heart", SOON, |m| {
            m.json()["data"]["state"] == "deactivated"
        })
        .await
        .expect("shutdown says goodbye");
    assert_eq!(bye.json()["data"]["port"], json!(http_port));
}

/// Mutual TLS against Mosquitto, with certificates made by `openssl`: the server certificate
/// is verified (a wrong CA never connects) and the client certificate is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_mosquitto() {
    if koupleless_testkit::broker::mosquitto_path().is_none() {
        koupleless_testkit::skip_or_fail("mutual_tls_with_mosquitto", "mosquitto is not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    if !make_certs(certs.path()) {
        koupleless_testkit::skip_or_fail("mutual_tls_with_mosquitto", "openssl is not available");
        return;
    }
    let p = |f: &str| certs.path().join(f).display().to_string();
    let tls_port = koupleless_testkit::free_port();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        p("ca.pem"),
        p("server.pem"),
        p("server.key")
    );
    let broker = Broker::mosquitto_with(&extra).expect("mosquitto");
    let work = tempfile::tempdir().unwrap();

    let mut ctl = Controller::connect(&broker, "10.0.1.12").await;
    let port = tls_port.to_string();
    let agent = start_agent(
        work.path(),
        "10.0.1.12",
        &[
            "--mqtt-broker",
            "127.0.0.1",
            "--mqtt-port",
            &port,
            "--mqtt-ca-path",
            &p("ca.pem"),
            "--mqtt-client-crt-path",
            &p("client.pem"),
            "--mqtt-client-key-path",
            &p("client.key"),
            "--mqtt-heartbeat-interval",
            "300ms",
        ],
    )
    .await;
    let beat = ctl.next_json("heart", SOON).await;
    assert_eq!(beat["data"]["baseMetadata"]["identity"], "10.0.1.12");
    ctl.command("queryAllBiz", "{}").await;
    assert_eq!(ctl.next_json("simpleBiz", SOON).await["data"], json!([]));
    agent.shutdown().await;

    // A CA that did not sign the server certificate: never connected, never heard of.
    let mut other = Controller::connect(&broker, "10.0.1.13").await;
    let work2 = tempfile::tempdir().unwrap();
    let agent = start_agent(
        work2.path(),
        "10.0.1.13",
        &[
            "--mqtt-broker",
            "127.0.0.1",
            "--mqtt-port",
            &port,
            "--mqtt-ca-path",
            &p("other-ca.pem"),
        ],
    )
    .await;
    let heard = other
        .next_where("heart", Duration::from_secs(2), |_| true)
        .await;
    assert!(
        heard.is_none(),
        "connected despite an untrusted server certificate"
    );
    agent.shutdown().await;
}

/// CA, server (SAN 127.0.0.1) and client certificates, plus an unrelated CA. False if openssl
/// is missing or fails.
fn make_certs(dir: &Path) -> bool {
    // Extensions make both leaf certificates X.509 v3, which rustls requires (also for the
    // client's own certificate).
    let written = std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .and_then(|()| std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n"));
    if written.is_err() {
        return false;
    }
    let steps = [
        "req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca",
        "req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca",
        "req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext",
        "req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=agent",
        "x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext",
    ];
    steps.iter().all(|step| {
        std::process::Command::new("openssl")
            .args(step.split_whitespace())
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
