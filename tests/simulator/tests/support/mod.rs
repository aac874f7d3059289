//! The world the simulator is tested and benchmarked in: a Mosquitto broker sized for many
//! connections, the in-memory API server (which counts requests by verb and resource) and
//! the controller running in-process.

#![allow(dead_code)]

use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use koupleless_controller::config::{MqttSettings, NodeSettings};
use koupleless_controller::{Listeners, Settings, Timings};
use koupleless_kube_apiserver::ApiServerHandle;
use koupleless_kube_apiserver::requests::Counts;
use kube::Api;
use kube::api::ListParams;
use tokio_util::sync::CancellationToken;

/// Env of the simulated fleet.
pub const ENV: &str = "sim";

/// Polls `cond` every 100 ms until it holds or `timeout` passes.
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Mosquitto broker on a free loopback port, without connection or queue limits that a
/// large fleet would hit (Mosquitto's defaults: unlimited connections, but 1000 queued
/// messages per client and 20 in flight; the file-descriptor limit is the process's).
pub struct Broker {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Broker {
    pub async fn start() -> Broker {
        let port = koupleless_testkit::free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_connections -1\nmax_queued_messages 10000\nmax_inflight_messages 0\n"
            ),
        )
        .unwrap();
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (apt-get install mosquitto)");
        assert!(
            eventually(Duration::from_secs(10), || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await,
            "mosquitto did not start"
        );
        Broker {
            port,
            _dir: dir,
            child,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upstream's cadence, faster: heartbeat and health every second, Lease renewed every
/// second, unreachable after 2.5 s and dead after 6 s.
pub fn fast_timings() -> Timings {
    Timings {
        unreachable_after: Duration::from_millis(2500),
        dead_after: Duration::from_secs(6),
        lease_duration: Duration::from_secs(4),
        lease_renew_interval: Duration::from_secs(1),
        lease_renew_deadline: Duration::from_secs(3),
        health_interval: Duration::from_secs(1),
        biz_interval: Duration::from_millis(1500),
        retry_interval: Duration::from_millis(200),
        retry_max: Duration::from_secs(6),
        baseline_wait: Duration::from_secs(3),
    }
}

/// Controller settings with the HTTP tunnel only (no broker), with `timings`.
pub fn http_settings(timings: Timings) -> Settings {
    let mut s = settings(0, timings);
    s.mqtt = None;
    s.http = Some(koupleless_controller::config::HttpTunnelSettings {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    });
    s
}

/// Controller settings for the fleet's env on `broker_port`, with `timings`.
pub fn settings(broker_port: u16, timings: Timings) -> Settings {
    let mut s = Settings::new(ENV.parse().unwrap(), "sim-controller");
    s.timings = timings;
    s.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    s.mqtt = Some(MqttSettings {
        host: "127.0.0.1".into(),
        port: broker_port,
        username: String::new(),
        password: String::new(),
        client_id: "koupleless@@@sim-controller".into(),
        tls: None,
        retain_commands: false,
        keep_alive: Duration::from_secs(30),
        message_max_age: Duration::from_secs(10),
    });
    s
}

/// The API server and the controller, in this process.
pub struct World {
    /// The controller's HTTP tunnel, when `settings.http` asked for one.
    pub http: Option<std::net::SocketAddr>,
    pub server: ApiServerHandle,
    pub client: kube::Client,
    cancel: CancellationToken,
    controller: tokio::task::JoinHandle<()>,
}

impl World {
    pub async fn start(settings: Settings) -> World {
        koupleless_controller::install_crypto_provider();
        let (client, server) = koupleless_kube_apiserver::start().await.unwrap();
        let cancel = CancellationToken::new();
        let (c, token) = (client.clone(), cancel.clone());
        let http_listener = match settings.http {
            Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let http = http_listener.as_ref().map(|l| l.local_addr().unwrap());
        let listeners = Listeners {
            http_tunnel: http_listener,
            probes: None,
            metrics: None,
            kubelet: None,
        };
        let controller = tokio::spawn(async move {
            koupleless_controller::run(settings, c, listeners, token)
                .await
                .unwrap();
        });
        World {
            http,
            server,
            client,
            cancel,
            controller,
        }
    }

    /// How many Nodes show Ready=True.
    pub async fn ready_nodes(&self) -> usize {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let Ok(list) = nodes.list(&ListParams::default()).await else {
            return 0;
        };
        list.items
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .count()
    }

    pub fn requests(&self) -> Counts {
        self.server.requests().snapshot()
    }

    /// The Ready condition's status of Node `name`, if the Node exists.
    pub async fn ready(&self, name: &str) -> Option<String> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes.get_opt(name).await.ok()??;
        node.status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status)
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.controller.await;
    }
}
