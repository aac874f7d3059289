//! Transport between the controller and bases. A tunnel translates wire messages to and from
//! [`TunnelEvent`]s and commands; it performs no Kubernetes operation and holds no Kubernetes
//! client. Both tunnels can run at once (upstream wires only the first one, spec controller
//! §3.2): every event says which tunnel it came from and each base is served by the tunnel it
//! last heartbeated on.
//!
//! Construction mirrors rumqttc's client/event-loop split: `new` returns a cheap cloneable
//! handle plus a driver whose `run` the application spawns and cancels.

use std::fmt;
use std::future::Future;

use koupleless_protocol::{BaseIdentity, BaseMetadata, BaseStatus, BizSpec, BizState, HealthData};
use tokio::sync::oneshot;

pub mod decode;
pub mod http;
pub mod mqtt;
pub mod trust;

pub use http::{HttpDriver, HttpTunnel};
pub use mqtt::{MqttDriver, MqttTunnel};

/// Which tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelKind {
    /// MQTT (broadcast heartbeats, asynchronous commands).
    Mqtt,
    /// HTTP (heartbeats POSTed to one replica, synchronous Arklet calls).
    Http,
}

impl TunnelKind {
    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelKind::Mqtt => "mqtt",
            TunnelKind::Http => "http",
        }
    }
}

impl fmt::Display for TunnelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one module as a base reported it (upstream `BizStatusData`, spec controller
/// §3.1), keyed by `name:version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BizRecord {
    /// Module name.
    pub name: String,
    /// Module version.
    pub version: String,
    /// State.
    pub state: BizState,
    /// When the state was entered, epoch ms (record change time, else message time).
    pub change_time_ms: i64,
    /// Short reason.
    pub reason: String,
    /// Longer message.
    pub message: String,
}

impl BizRecord {
    /// `name:version`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }
}

/// A baseline request: the base asks which modules it should run.
#[derive(Debug)]
pub struct BaselineRequest {
    /// Who asks.
    pub meta: BaseMetadata,
    /// Where the answer goes. Dropping it sends nothing (e.g. a standby replica on MQTT,
    /// where only the owner answers).
    pub reply: oneshot::Sender<Vec<BizSpec>>,
}

/// Everything a tunnel can tell the controller.
#[derive(Debug)]
pub enum TunnelEvent {
    /// A heartbeat (`base/heart` or `POST /heartbeat`).
    Heartbeat {
        /// Tunnel it arrived on.
        tunnel: TunnelKind,
        /// The base.
        base: BaseIdentity,
        /// Its body.
        status: BaseStatus,
    },
    /// A successful health report.
    Health {
        /// Tunnel it arrived on.
        tunnel: TunnelKind,
        /// The base.
        base: BaseIdentity,
        /// `healthData`.
        data: Box<HealthData>,
    },
    /// Module states.
    Bizs {
        /// Tunnel it arrived on.
        tunnel: TunnelKind,
        /// The base.
        base: BaseIdentity,
        /// Records.
        records: Vec<BizRecord>,
        /// Whether this is the base's complete list (queryAllBiz) rather than the outcome of
        /// individual operations.
        complete: bool,
    },
    /// A baseline query.
    Baseline {
        /// Tunnel it arrived on.
        tunnel: TunnelKind,
        /// The base.
        base: BaseIdentity,
        /// Request and reply channel.
        request: BaselineRequest,
    },
}

impl TunnelEvent {
    /// The base the event is about.
    pub fn base(&self) -> &BaseIdentity {
        match self {
            TunnelEvent::Heartbeat { base, .. }
            | TunnelEvent::Health { base, .. }
            | TunnelEvent::Bizs { base, .. }
            | TunnelEvent::Baseline { base, .. } => base,
        }
    }

    /// The tunnel it came from.
    pub fn tunnel(&self) -> TunnelKind {
        match self {
            TunnelEvent::Heartbeat { tunnel, .. }
            | TunnelEvent::Health { tunnel, .. }
            | TunnelEvent::Bizs { tunnel, .. }
            | TunnelEvent::Baseline { tunnel, .. } => *tunnel,
        }
    }
}

/// A command for a base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ask for a health report (answer: [`TunnelEvent::Health`]).
    Health,
    /// Ask for all modules (answer: [`TunnelEvent::Bizs`] with `complete`).
    QueryAllBiz,
    /// Install a module (answer: [`TunnelEvent::Bizs`] with its new state).
    Install(BizSpec),
    /// Uninstall a module (answer: [`TunnelEvent::Bizs`] with its new state).
    Uninstall(BizSpec),
}

impl Command {
    /// Whether the command is a periodic poll, which is dropped rather than queued when the
    /// base is busy: the next period asks again.
    pub fn is_poll(&self) -> bool {
        matches!(self, Command::Health | Command::QueryAllBiz)
    }

    /// Name for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Command::Health => "health",
            Command::QueryAllBiz => "queryAllBiz",
            Command::Install(_) => "installBiz",
            Command::Uninstall(_) => "uninstallBiz",
        }
    }
}

/// Address of a base's Arklet HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host or IP.
    pub host: String,
    /// Port.
    pub port: u16,
}

/// Why a tunnel could not take a command.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The MQTT connection is down; the command was not queued.
    #[error("not connected to the MQTT broker")]
    NotConnected,
    /// The client's request queue is full.
    #[error("MQTT request queue full")]
    QueueFull,
    /// The base already has the maximum number of calls in flight.
    #[error("base {0} is busy")]
    Busy(BaseIdentity),
    /// No address is known for the base (HTTP).
    #[error("no Arklet address known for base {0}")]
    NoEndpoint(BaseIdentity),
    /// The tunnel has shut down.
    #[error("tunnel closed")]
    Closed,
}

impl TunnelError {
    /// Label for the tunnel error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TunnelError::NotConnected => "not_connected",
            TunnelError::QueueFull => "queue_full",
            TunnelError::Busy(_) => "busy",
            TunnelError::NoEndpoint(_) => "no_endpoint",
            TunnelError::Closed => "closed",
        }
    }
}

/// Transport to bases. Success of a call means "accepted for delivery", not "applied by the
/// base"; results arrive later as [`TunnelEvent`]s.
pub trait Tunnel: Clone + Send + Sync + 'static {
    /// Which tunnel this is.
    fn kind(&self) -> TunnelKind;
    /// Hands a command to the transport.
    fn send(
        &self,
        base: &BaseIdentity,
        cmd: Command,
    ) -> impl Future<Output = Result<(), TunnelError>> + Send;
    /// Starts receiving the base's per-base traffic (MQTT: subscribe, restored after every
    /// reconnect; HTTP: use `endpoint` if no heartbeat told us the address yet).
    fn attach(
        &self,
        base: &BaseIdentity,
        endpoint: Option<Endpoint>,
    ) -> impl Future<Output = Result<(), TunnelError>> + Send;
    /// Stops receiving it.
    fn detach(&self, base: &BaseIdentity) -> impl Future<Output = Result<(), TunnelError>> + Send;
}

/// Either tunnel, chosen per base at run time.
#[derive(Clone, Debug)]
pub enum AnyTunnel {
    /// MQTT.
    Mqtt(MqttTunnel),
    /// HTTP.
    Http(HttpTunnel),
}

impl Tunnel for AnyTunnel {
    fn kind(&self) -> TunnelKind {
        match self {
            AnyTunnel::Mqtt(t) => t.kind(),
            AnyTunnel::Http(t) => t.kind(),
        }
    }

    async fn send(&self, base: &BaseIdentity, cmd: Command) -> Result<(), TunnelError> {
        match self {
            AnyTunnel::Mqtt(t) => t.send(base, cmd).await,
            AnyTunnel::Http(t) => t.send(base, cmd).await,
        }
    }

    async fn attach(
        &self,
        base: &BaseIdentity,
        endpoint: Option<Endpoint>,
    ) -> Result<(), TunnelError> {
        match self {
            AnyTunnel::Mqtt(t) => t.attach(base, endpoint).await,
            AnyTunnel::Http(t) => t.attach(base, endpoint).await,
        }
    }

    async fn detach(&self, base: &BaseIdentity) -> Result<(), TunnelError> {
        match self {
            AnyTunnel::Mqtt(t) => t.detach(base).await,
            AnyTunnel::Http(t) => t.detach(base).await,
        }
    }
}

/// The tunnels this replica runs.
#[derive(Clone, Debug, Default)]
pub struct Tunnels {
    /// MQTT, if enabled.
    pub mqtt: Option<MqttTunnel>,
    /// HTTP, if enabled.
    pub http: Option<HttpTunnel>,
}

impl Tunnels {
    /// The handle for `kind`, if that tunnel runs.
    pub fn get(&self, kind: TunnelKind) -> Option<AnyTunnel> {
        match kind {
            TunnelKind::Mqtt => self.mqtt.clone().map(AnyTunnel::Mqtt),
            TunnelKind::Http => self.http.clone().map(AnyTunnel::Http),
        }
    }

    /// The tunnel to assume for a base known only from its Node: HTTP when the Node carries a
    /// tunnel port (only HTTP heartbeats have one) and HTTP runs, else MQTT if it runs.
    pub fn for_rediscovered(&self, has_tunnel_port: bool) -> Option<TunnelKind> {
        let (mqtt, http) = (self.mqtt.is_some(), self.http.is_some());
        match (has_tunnel_port, mqtt, http) {
            (true, _, true) | (false, false, true) => Some(TunnelKind::Http),
            (_, true, _) => Some(TunnelKind::Mqtt),
            _ => None,
        }
    }
}
