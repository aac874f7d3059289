//! Module Pod latency at scale: `BENCH_BASES` simulated bases (default 1000) on one MQTT
//! connection, the controller in process, the in-memory API server. One module Pod per base,
//! created at `BENCH_RATE` Pods per second (default 100), each already bound to its vnode.
//!
//! Measured per Pod:
//! - bound → install: from the create call's return to the `installBiz` command arriving at
//!   the base (the target: p99 < 100 ms at 1,000 bases);
//! - reply → status: from the base publishing its install reply to a watch on the Pods seeing
//!   it Running/Ready (includes the API server's watch delivery; target p99 < 100 ms).
//!
//! Run: `cargo bench -p koupleless-controller --bench pods`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_controller::config::{MqttSettings, NodeSettings};
use koupleless_controller::{Listeners, Settings, Timings};
use koupleless_testkit::broker::Broker;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const ENV: &str = "bench";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Marks {
    installed_at: HashMap<String, Instant>,
    replied_at: HashMap<String, Instant>,
    listed: std::collections::HashSet<String>,
}

fn identity(i: usize) -> String {
    format!("base-{i:05}")
}

fn heartbeat(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"data": {"baseMetadata": {"clusterName": "default",
        "identity": id, "name": "base", "version": "1.0.0"},
        "localHostName": id, "localIP": "127.0.0.1", "port": 0, "state": "activated"},
        "publishTimestamp": now_ms()}))
    .unwrap()
}

fn simple_biz(mods: &[(String, String)]) -> Vec<u8> {
    let list: Vec<Value> = mods
        .iter()
        .map(|(n, v)| {
            json!({"latestStateRecord": {"changeTime": now_ms(), "message": "", "reason": "STARTED",
                "state": "ACTIVATED"}, "name": n, "state": "activated", "version": v})
        })
        .collect();
    serde_json::to_vec(&json!({"data": list, "publishTimestamp": now_ms()})).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| {what} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
        v.len(),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    koupleless_controller::install_crypto_provider();
    let bases = env_usize("BENCH_BASES", 1000);
    let rate = env_usize("BENCH_RATE", 100).max(1);
    let broker = Broker::mosquitto().unwrap_or_else(Broker::embedded);
    let (client, server) = koupleless_kube_apiserver::start()
        .await
        .expect("API server");

    let mut settings = Settings::new(ENV.parse().unwrap(), "bench-controller");
    let mut timings = Timings::UPSTREAM;
    timings.baseline_wait = Duration::from_secs(3);
    settings.timings = timings;
    settings.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    settings.workload.step = Duration::ZERO;
    settings.mqtt = Some(MqttSettings {
        host: "127.0.0.1".into(),
        port: broker.port(),
        username: String::new(),
        password: String::new(),
        client_id: "koupleless@@@bench-controller".into(),
        tls: None,
        retain_commands: false,
        keep_alive: Duration::from_secs(30),
        message_max_age: Duration::from_secs(30),
    });
    let cancel = CancellationToken::new();
    let controller = tokio::spawn(koupleless_controller::run(
        settings,
        client.clone(),
        Listeners::default(),
        cancel.clone(),
    ));

    // Every base on one connection: heartbeats for all, commands for all.
    let mut opts = MqttOptions::new("koupleless@@@bench-bases", "127.0.0.1", broker.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    opts.set_inflight(1000);
    let (mqtt, mut eventloop) = AsyncClient::new(opts, 100_000);
    let marks = Arc::new(Mutex::new(Marks::default()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let sim_cancel = CancellationToken::new();
    let token = sim_cancel.clone();
    let sub = mqtt.clone();
    let poller = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = token.cancelled() => break,
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub.try_subscribe(format!("koupleless_{ENV}/+/+"), QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
    });
    let (c, m) = (mqtt.clone(), marks.clone());
    let handler = tokio::spawn(async move {
        let mut installed: HashMap<String, Vec<(String, String)>> = HashMap::new();
        while let Some((topic, payload)) = rx.recv().await {
            let mut parts = topic.split('/');
            let (_, Some(id), Some(cmd)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let id = id.to_owned();
            let publish = |rest: &str, body: Vec<u8>| {
                let c = c.clone();
                let t = format!("koupleless_{ENV}/{id}/{rest}");
                async move {
                    let _ = c.publish(t, QoS::AtLeastOnce, false, body).await;
                }
            };
            match cmd {
                "queryAllBiz" => {
                    let mods = installed.get(&id).cloned().unwrap_or_default();
                    m.lock().unwrap().listed.insert(id.clone());
                    publish("base/simpleBiz", simple_biz(&mods)).await;
                }
                "installBiz" => {
                    let got = Instant::now();
                    let spec: Value = serde_json::from_slice(&payload).unwrap_or_default();
                    let (n, v) = (
                        spec["bizName"].as_str().unwrap_or_default().to_owned(),
                        spec["bizVersion"].as_str().unwrap_or_default().to_owned(),
                    );
                    installed
                        .entry(id.clone())
                        .or_default()
                        .push((n.clone(), v.clone()));
                    let reply = json!({"data": {"bizName": n, "bizVersion": v, "command": "installBiz",
                        "response": {"code": "SUCCESS", "data": {"code": "SUCCESS", "message": "ok",
                        "bizInfos": [{"bizName": n, "bizVersion": v, "bizState": "ACTIVATED"}]}}},
                        "publishTimestamp": now_ms()});
                    {
                        let mut mk = m.lock().unwrap();
                        mk.installed_at.insert(id.clone(), got);
                        mk.replied_at.insert(id.clone(), Instant::now());
                    }
                    publish("base/bizOperation", serde_json::to_vec(&reply).unwrap()).await;
                }
                _ => {}
            }
        }
    });
    let hb_client = mqtt.clone();
    let hb_token = sim_cancel.clone();
    let heartbeats = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                () = hb_token.cancelled() => break,
                _ = tick.tick() => {
                    for i in 0..bases {
                        let id = identity(i);
                        let _ = hb_client
                            .publish(format!("koupleless_{ENV}/{id}/base/heart"), QoS::AtLeastOnce, false, heartbeat(&id))
                            .await;
                    }
                }
            }
        }
    });

    // All vnodes Ready and listed once.
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let listed = marks.lock().unwrap().listed.len();
        let n = nodes.list(&Default::default()).await.unwrap().items.len();
        if n >= bases && listed >= bases {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {n} nodes, {listed} listed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{bases} vnodes owned and listed after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Watch Pods for Ready.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ready_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let ready = ready_at.clone();
    let watch_pods = pods.clone();
    let watch = tokio::spawn(async move {
        let stream = watcher(watch_pods, watcher::Config::default()).applied_objects();
        let mut stream = std::pin::pin!(stream);
        while let Some(Ok(p)) = stream.next().await {
            let is_ready = p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if is_ready {
                let name = p.metadata.name.clone().unwrap_or_default();
                ready
                    .lock()
                    .unwrap()
                    .entry(name)
                    .or_insert_with(Instant::now);
            }
        }
    });

    let mut created_at: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    for i in 0..bases {
        tick.tick().await;
        let id = identity(i);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": id, "namespace": "default",
                "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
            "spec": {"nodeName": format!("vnode.{id}.{ENV}"), "containers": [{"name": "biz1",
                "image": "https://repo.example/biz1-1.0.0-ark-biz.jar",
                "env": [{"name": "BIZ_VERSION", "value": "1.0.0"}]}]},
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        created_at.insert(id, Instant::now());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while ready_at.lock().unwrap().len() < bases && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let marks = std::mem::take(&mut *marks.lock().unwrap());
    let ready = ready_at.lock().unwrap().clone();
    let mut bound_to_install = Vec::new();
    let mut reply_to_status = Vec::new();
    for (id, created) in &created_at {
        if let Some(i) = marks.installed_at.get(id) {
            bound_to_install.push(i.saturating_duration_since(*created));
        }
        if let (Some(r), Some(s)) = (marks.replied_at.get(id), ready.get(id)) {
            reply_to_status.push(s.saturating_duration_since(*r));
        }
    }
    println!("bases {bases}, {rate} Pods/s");
    println!("| measure | samples | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    report("bound → install command at the base", bound_to_install);
    report("install reply → Pod Ready seen by a watch", reply_to_status);

    sim_cancel.cancel();
    watch.abort();
    let _ = heartbeats.await;
    let _ = poller.await;
    drop(mqtt);
    handler.abort();
    cancel.cancel();
    let _ = controller.await;
    server.shutdown().await;
}
