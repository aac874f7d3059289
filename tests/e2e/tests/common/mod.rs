//! What the end-to-end tests share: a real base JVM, controller settings with short timings,
//! and readers of Node and Pod status.

#![allow(dead_code)] // each test binary uses its own part

use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use koupleless_controller::Listeners;
use koupleless_controller::config::{BearerToken, HttpTunnelSettings, MqttSettings, NodeSettings};
use koupleless_controller::{Settings, Timings};
use koupleless_testkit::{SMALL_JVM_ARGS, toolchain};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A child JVM, killed when dropped so a failing test leaves no process behind.
pub struct Jvm(pub Child);

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A base JVM with a 64 MiB metaspace limit, compiled from source in `dir`.
pub fn start_base(dir: &std::path::Path) -> Jvm {
    let tc = toolchain().expect("java toolchain");
    let src = dir.join("Base.java");
    std::fs::write(
        &src,
        "public class Base { public static void main(String[] a) throws Exception { Thread.sleep(Long.MAX_VALUE); } }",
    )
    .unwrap();
    assert!(
        Command::new(&tc.javac)
            .arg("-d")
            .arg(dir)
            .arg(&src)
            .status()
            .unwrap()
            .success()
    );
    let child = Command::new(&tc.java)
        .args(SMALL_JVM_ARGS)
        .arg("-XX:MaxMetaspaceSize=64m")
        .arg("-cp")
        .arg(dir)
        .arg("Base")
        .spawn()
        .unwrap();
    Jvm(child)
}

/// Controller settings with timings short enough for a test: Unreachable after 2 s of silence,
/// Dead after 4 s, 3 s Leases renewed every 500 ms.
pub fn fast_settings(client_id: &str) -> Settings {
    let mut settings = Settings::new("dev".parse().unwrap(), client_id);
    let mut timings = Timings::UPSTREAM;
    timings.unreachable_after = Duration::from_secs(2);
    timings.dead_after = Duration::from_secs(4);
    timings.lease_duration = Duration::from_secs(3);
    timings.lease_renew_interval = Duration::from_millis(500);
    timings.lease_renew_deadline = Duration::from_millis(2500);
    timings.health_interval = Duration::from_millis(500);
    timings.biz_interval = Duration::from_millis(500);
    timings.retry_interval = Duration::from_millis(200);
    timings.baseline_wait = Duration::from_secs(3);
    settings.timings = timings;
    settings.node = NodeSettings {
        unbounded_metaspace_bytes: Some(1 << 30),
        kubelet_port: 10250,
        kubelet_address: None,
    };
    settings.pods.retry_base = Duration::from_millis(500);
    settings.pods.retry_max = Duration::from_secs(2);
    settings.pods.reply_timeout = Duration::from_secs(30);
    settings
}

/// MQTT settings for a broker on loopback.
pub fn mqtt(port: u16, client_id: &str) -> MqttSettings {
    MqttSettings {
        host: "127.0.0.1".into(),
        port,
        username: String::new(),
        password: String::new(),
        client_id: format!("koupleless@@@{client_id}"),
        tls: None,
        retain_commands: false,
        keep_alive: Duration::from_secs(5),
        message_max_age: Duration::from_secs(10),
    }
}

/// A bare module Pod bound to `node`: one module `biz1:1.0.0` from `image`.
pub fn module_pod(node: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "biz1", "namespace": "default",
            "labels": {"virtual-kubelet.koupleless.io/component": "module"}},
        "spec": {"nodeName": node, "containers": [{"name": "biz1", "image": image,
            "env": [{"name": "BIZ_VERSION", "value": "1.0.0"}]}]},
    }))
    .unwrap()
}

/// The Node's Ready condition status (`True`, `False`, `Unknown`).
pub fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Phase Running and condition Ready=True.
pub fn running_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else {
        return false;
    };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The API token agents and controllers share in these tests (`--api-token`,
/// `ARKLET_API_TOKEN`), as a secured deployment does.
pub const TOKEN: &str = "e2e-shared-token";

/// A controller replica on its own task, stopped as SIGTERM stops it.
pub struct Replica {
    cancel: CancellationToken,
    task: JoinHandle<Result<(), koupleless_controller::Error>>,
    /// Where its HTTP tunnel listens, when on.
    pub http: Option<std::net::SocketAddr>,
}

impl Replica {
    /// Starts a replica; its HTTP tunnel (when on) listens on a free loopback port.
    pub async fn start(client: &kube::Client, settings: Settings) -> Replica {
        Self::start_with_kubelet(client, settings, None).await
    }

    /// Like [`Replica::start`], serving the kubelet API on `kubelet`.
    pub async fn start_with_kubelet(
        client: &kube::Client,
        mut settings: Settings,
        kubelet: Option<tokio::net::TcpListener>,
    ) -> Replica {
        let (http, listener) = if settings.http.is_some() {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (Some(l.local_addr().unwrap()), Some(l))
        } else {
            (None, None)
        };
        if let Some(h) = settings.http.as_mut() {
            h.listen = http.unwrap();
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(koupleless_controller::run(
            settings,
            client.clone(),
            Listeners {
                http_tunnel: listener,
                kubelet,
                ..Listeners::default()
            },
            cancel.clone(),
        ));
        Replica { cancel, task, http }
    }

    /// Stops it as SIGTERM does and checks it ended cleanly.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// [`fast_settings`] with the HTTP tunnel on, sharing [`TOKEN`] with the agents.
pub fn http_settings(client_id: &str) -> Settings {
    let mut s = fast_settings(client_id);
    s.http = Some(HttpTunnelSettings {
        call_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(30),
        api_token: BearerToken::new(TOKEN),
        ..HttpTunnelSettings::default()
    });
    s
}

/// Starts our agent in-process on a free loopback port (`--port 0 --bind 127.0.0.1`) with
/// `args` after those.
pub async fn start_agent(args: &[&str]) -> koupleless_agent::app::Agent {
    use clap::Parser;
    let mut argv = vec!["koupleless-agent", "--port", "0", "--bind", "127.0.0.1"];
    argv.extend_from_slice(args);
    koupleless_agent::app::start(koupleless_agent::config::Config::parse_from(argv))
        .await
        .expect("agent starts")
}
