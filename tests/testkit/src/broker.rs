//! Real MQTT brokers for tests, on a free loopback port: an embedded rumqttd (always available)
//! and Mosquitto (when `/usr/sbin/mosquitto` or `mosquitto` on `PATH` exists).
//!
//! Both can be stopped and restarted on the same port, and both keep retained messages across
//! a restart, like a production broker with persistence: the embedded broker keeps its router
//! (and so its retained messages) and only restarts its network server, closing every client
//! connection without a DISCONNECT; Mosquitto runs with `persistence true` and is stopped with
//! SIGTERM, which saves its database.
//!
//! ```no_run
//! use koupleless_testkit::broker::Broker;
//!
//! let mut broker = Broker::embedded();
//! let port = broker.port();
//! broker.stop();
//! broker.restart();
//! if let Some(m) = Broker::mosquitto() {
//!     println!("mosquitto on {}", m.port());
//! } else {
//!     println!("mosquitto not installed: skipped");
//! }
//! # let _ = port;
//! ```

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttd::protocol::v4::V4;
use rumqttd::{ConnectionSettings, LinkType, Router, RouterConfig, Server, ServerSettings};

use crate::wait::free_port;

/// Largest payload the embedded broker accepts (tests send oversized commands on purpose).
pub const EMBEDDED_MAX_PAYLOAD: usize = 32 << 20;

/// How long a broker may take to accept connections after (re)starting.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker listening on `127.0.0.1:<port>`. Dropping it stops it.
pub struct Broker {
    port: u16,
    kind: Kind,
}

enum Kind {
    Embedded(Embedded),
    Mosquitto(Mosquitto),
}

impl Broker {
    /// Starts an embedded rumqttd on a free port.
    pub fn embedded() -> Broker {
        let port = free_port();
        let router = Router::new(
            0,
            RouterConfig {
                max_connections: 1000,
                max_outgoing_packet_count: 200,
                max_segment_size: 64 << 20,
                max_segment_count: 10,
                ..RouterConfig::default()
            },
        );
        let router_tx = router.spawn();
        let mut e = Embedded {
            make_server: Box::new(move |settings| Server::new(settings, router_tx.clone(), V4)),
            running: None,
        };
        e.start(port);
        Broker {
            port,
            kind: Kind::Embedded(e),
        }
    }

    /// Starts Mosquitto on a free port, or returns `None` when it is not installed.
    pub fn mosquitto() -> Option<Broker> {
        Broker::mosquitto_with("")
    }

    /// Like [`Broker::mosquitto`], with `extra` appended to the generated configuration (for
    /// example a second, TLS listener).
    pub fn mosquitto_with(extra: &str) -> Option<Broker> {
        let binary = mosquitto_path()?;
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir for mosquitto");
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(&conf, mosquitto_config(port, dir.path(), extra))
            .expect("writing mosquitto.conf");
        let mut m = Mosquitto {
            binary,
            conf,
            dir,
            child: None,
        };
        m.start(port);
        Some(Broker {
            port,
            kind: Kind::Mosquitto(m),
        })
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// `embedded rumqttd` or `mosquitto`, for messages.
    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Embedded(_) => "embedded rumqttd",
            Kind::Mosquitto(_) => "mosquitto",
        }
    }

    /// Whether it is running (not stopped).
    pub fn is_running(&self) -> bool {
        match &self.kind {
            Kind::Embedded(e) => e.running.is_some(),
            Kind::Mosquitto(m) => m.child.is_some(),
        }
    }

    /// Stops the broker: the port closes and every client loses its connection. Retained
    /// messages are kept for [`Broker::restart`].
    pub fn stop(&mut self) {
        match &mut self.kind {
            Kind::Embedded(e) => e.stop(),
            Kind::Mosquitto(m) => m.stop(),
        }
    }

    /// Starts the broker again on the same port (stopping it first if it runs) and returns once
    /// it accepts connections.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        match &mut self.kind {
            Kind::Embedded(e) => e.start(port),
            Kind::Mosquitto(m) => m.start(port),
        }
    }

    /// Mosquitto's log file (`None` for the embedded broker, which logs through `tracing`).
    pub fn log_file(&self) -> Option<PathBuf> {
        match &self.kind {
            Kind::Embedded(_) => None,
            Kind::Mosquitto(m) => Some(m.dir.path().join("mosquitto.log")),
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Mosquitto binary: `/usr/sbin/mosquitto` (Debian), else `mosquitto` on `PATH`.
pub fn mosquitto_path() -> Option<PathBuf> {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.is_file() {
        return Some(sbin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mosquitto"))
            .find(|p| p.is_file())
    })
}

fn mosquitto_config(port: u16, dir: &Path, extra: &str) -> String {
    // Started as root, Mosquitto switches to the user `mosquitto`, which could not write the
    // temp dir; staying root is harmless for a test broker on loopback.
    let user = if nix::unistd::Uid::effective().is_root() {
        "user root\n"
    } else {
        ""
    };
    format!(
        "{user}listener {port} 127.0.0.1\n\
         allow_anonymous true\n\
         persistence true\n\
         persistence_location {dir}/\n\
         log_dest file {dir}/mosquitto.log\n\
         log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
         {extra}\n",
        dir = dir.display()
    )
}

/// Waits until something accepts TCP connections on the port.
fn wait_listening(port: u16, mut still_starting: impl FnMut() -> Result<(), String>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Err(why) = still_starting() {
            panic!("broker on port {port} did not start: {why}");
        }
        assert!(
            Instant::now() < deadline,
            "broker on port {port} did not listen within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

type MakeServer = Box<dyn Fn(ServerSettings) -> Server<V4> + Send>;

struct Embedded {
    make_server: MakeServer,
    running: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Embedded {
    fn settings(port: u16) -> ServerSettings {
        ServerSettings {
            name: format!("v4-{port}"),
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: EMBEDDED_MAX_PAYLOAD,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        }
    }

    fn start(&mut self, port: u16) {
        let mut server = (self.make_server)(Embedded::settings(port));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("mqtt-broker-{port}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the embedded broker");
                rt.block_on(async move {
                    tokio::select! {
                        r = server.start(LinkType::Remote) => {
                            eprintln!("embedded MQTT broker on port {port} ended: {r:?}");
                        }
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime drops the listener and every connection task: clients
                // see their connection close, as when a broker process dies.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawning the embedded broker thread");
        self.running = Some((stop_tx, thread));
        wait_listening(port, || {
            match self.running.as_ref().is_some_and(|(_, t)| t.is_finished()) {
                true => Err("the server thread ended (port taken?)".into()),
                false => Ok(()),
            }
        });
    }

    fn stop(&mut self) {
        if let Some((stop, thread)) = self.running.take() {
            let _ = stop.send(());
            if thread.join().is_err() {
                eprintln!("the embedded MQTT broker thread panicked");
            }
        }
    }
}

struct Mosquitto {
    binary: PathBuf,
    conf: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    fn start(&mut self, port: u16) {
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        self.child = Some(child);
        let log = self.dir.path().join("mosquitto.log");
        let child = self.child.as_mut().expect("just set");
        wait_listening(port, || match child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "mosquitto exited ({status}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )),
            _ => Ok(()),
        });
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM makes Mosquitto save its persistence database before exiting.
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connects(port: u16) -> bool {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[test]
    fn embedded_broker_stops_and_restarts_on_the_same_port() {
        let mut b = Broker::embedded();
        let port = b.port();
        assert!(b.is_running() && connects(port));
        b.stop();
        assert!(!b.is_running() && !connects(port));
        b.restart();
        assert!(b.is_running() && connects(port));
        assert_eq!(b.port(), port);
    }

    #[test]
    fn mosquitto_stops_and_restarts_on_the_same_port() {
        let Some(mut b) = Broker::mosquitto() else {
            crate::skip_or_fail(
                "mosquitto_stops_and_restarts_on_the_same_port",
                "mosquitto is not installed",
            );
            return;
        };
        let port = b.port();
        assert!(connects(port));
        b.stop();
        assert!(!connects(port));
        b.restart();
        assert!(connects(port));
        assert!(b.log_file().is_some_and(|l| l.exists()));
    }

    #[test]
    fn mosquitto_config_has_the_listener_and_persistence() {
        let conf = mosquitto_config(1884, Path::new("/tmp/x"), "# extra");
        for line in [
            "listener 1884 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            "persistence_location /tmp/x/",
            "# extra",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} in\n{conf}");
        }
    }
}
