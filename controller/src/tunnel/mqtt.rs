//! MQTT tunnel (spec protocol §5). Differences to upstream, all wire-compatible:
//! - per-base subscriptions are restored after every reconnect (upstream restores only the
//!   two wildcard subscriptions);
//! - commands are published not retained unless `MQTT_RETAIN_COMMANDS` asks for upstream's
//!   behaviour (a retained install is replayed to the base after every reconnect, T16);
//! - TLS verifies the broker certificate against `MQTT_CA_PATH` (upstream skips it);
//! - a baseline query is answered only by the replica owning the base.

use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use koupleless_protocol::mqtt::ReplyKind;
use koupleless_protocol::transport::{self, Transport};
use koupleless_protocol::{BaseIdentity, CommandId, Env, Topic};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decode::{Inbound, decode_mqtt};
use super::{BaselineRequest, Command, Endpoint, Tunnel, TunnelError, TunnelEvent, TunnelKind};
use crate::config::MqttSettings;
use crate::metrics::Metrics;

/// Per-base reply topics the owner subscribes to.
const PER_BASE: [ReplyKind; 5] = [
    ReplyKind::Health,
    ReplyKind::SimpleBiz,
    ReplyKind::Biz,
    ReplyKind::BizOperation,
    ReplyKind::BatchInstallBizResponse,
];

/// Capacity of the client → event loop request queue.
const REQUEST_QUEUE: usize = 1024;

/// Why the MQTT tunnel could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    /// A TLS file could not be read or parsed.
    #[error("MQTT TLS: {path}: {message}")]
    Tls {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The rustls configuration was rejected.
    #[error("MQTT TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

#[derive(Debug)]
struct Inner {
    client: AsyncClient,
    env: Env,
    retain: bool,
    attached: Mutex<HashSet<BaseIdentity>>,
    connected: AtomicBool,
    metrics: Arc<Metrics>,
}

/// Cloneable handle: publishes commands, manages per-base subscriptions.
#[derive(Clone, Debug)]
pub struct MqttTunnel {
    inner: Arc<Inner>,
}

/// Owns the rumqttc event loop; run it in its own task.
pub struct MqttDriver {
    eventloop: EventLoop,
    tunnel: MqttTunnel,
    max_age_ms: i64,
    baseline_wait: Duration,
    tasks: TaskTracker,
}

fn read(path: &Path) -> Result<Vec<u8>, MqttSetupError> {
    fs::read(path).map_err(|e| MqttSetupError::Tls {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn tls_config(tls: &crate::config::MqttTls) -> Result<rustls::ClientConfig, MqttSetupError> {
    let bad = |path: &Path, message: String| MqttSetupError::Tls {
        path: path.display().to_string(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&tls.ca_path)?;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        let cert = cert.map_err(|e| bad(&tls.ca_path, e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| bad(&tls.ca_path, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad(&tls.ca_path, "no certificate in the CA file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    Ok(match &tls.client_cert {
        None => builder.with_no_client_auth(),
        Some((crt, key)) => {
            let certs = CertificateDer::pem_slice_iter(&read(crt)?)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(crt, e.to_string()))?;
            let key =
                PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| bad(key, e.to_string()))?;
            builder.with_client_auth_cert(certs, key)?
        }
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl MqttTunnel {
    /// Builds the handle and its driver. Nothing connects until the driver runs.
    pub fn new(
        settings: &MqttSettings,
        env: Env,
        baseline_wait: Duration,
        metrics: Arc<Metrics>,
    ) -> Result<(MqttTunnel, MqttDriver), MqttSetupError> {
        let mut opts = MqttOptions::new(
            settings.client_id.clone(),
            settings.host.clone(),
            settings.port,
        );
        if !settings.username.is_empty() {
            opts.set_credentials(settings.username.clone(), settings.password.clone());
        }
        opts.set_keep_alive(settings.keep_alive);
        opts.set_clean_session(true);
        // Health reports and module lists exceed rumqttc's 10 KiB default.
        opts.set_max_packet_size(4 << 20, 4 << 20);
        opts.set_request_channel_capacity(REQUEST_QUEUE);
        if let Some(tls) = &settings.tls {
            let cfg = tls_config(tls)?;
            opts.set_transport(rumqttc::Transport::tls_with_config(
                TlsConfiguration::Rustls(Arc::new(cfg)),
            ));
        }
        let (client, eventloop) = AsyncClient::new(opts, REQUEST_QUEUE);
        let tunnel = MqttTunnel {
            inner: Arc::new(Inner {
                client,
                env,
                retain: settings.retain_commands,
                attached: Mutex::new(HashSet::new()),
                connected: AtomicBool::new(false),
                metrics,
            }),
        };
        let driver = MqttDriver {
            eventloop,
            tunnel: tunnel.clone(),
            max_age_ms: i64::try_from(settings.message_max_age.as_millis()).unwrap_or(i64::MAX),
            baseline_wait,
            tasks: TaskTracker::new(),
        };
        Ok((tunnel, driver))
    }

    /// Whether the broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    fn per_base_filters(&self, base: &BaseIdentity) -> Vec<String> {
        PER_BASE
            .into_iter()
            .map(|kind| {
                Topic::Reply {
                    env: self.inner.env.clone(),
                    base: base.clone(),
                    kind,
                }
                .to_string()
            })
            .collect()
    }

    fn attached(&self) -> Vec<BaseIdentity> {
        self.inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Every subscription this replica needs: the two wildcards plus per-base topics of the
    /// attached bases. Sent after each (re)connect, because the session is clean.
    fn all_filters(&self) -> Vec<String> {
        let env = &self.inner.env;
        let mut f = vec![
            Topic::heartbeat_filter(env),
            Topic::query_baseline_filter(env),
        ];
        for base in self.attached() {
            f.extend(self.per_base_filters(&base));
        }
        f
    }

    fn subscribe(&self, filters: Vec<String>) -> Result<(), TunnelError> {
        for chunk in filters.chunks(64) {
            let subs = chunk
                .iter()
                .map(|t| SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            self.inner
                .client
                .try_subscribe_many(subs)
                .map_err(|_| TunnelError::QueueFull)?;
        }
        Ok(())
    }

    fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), TunnelError> {
        if !self.is_connected() {
            return Err(TunnelError::NotConnected);
        }
        self.inner
            .client
            .try_publish(topic, QoS::AtLeastOnce, self.inner.retain, payload)
            .map_err(|_| TunnelError::QueueFull)
    }
}

impl Tunnel for MqttTunnel {
    fn kind(&self) -> TunnelKind {
        TunnelKind::Mqtt
    }

    async fn send(&self, base: &BaseIdentity, cmd: Command) -> Result<(), TunnelError> {
        let (command, payload) = match &cmd {
            Command::Health => (CommandId::Health, b"{}".to_vec()),
            Command::QueryAllBiz => (CommandId::QueryAllBiz, b"{}".to_vec()),
            Command::Install(spec) => (
                CommandId::InstallBiz,
                transport::encode(spec, Transport::Mqtt),
            ),
            Command::Uninstall(spec) => (
                CommandId::UninstallBiz,
                transport::encode(spec, Transport::Mqtt),
            ),
        };
        let topic = Topic::Command {
            env: self.inner.env.clone(),
            base: base.clone(),
            command,
        };
        self.publish(topic.to_string(), payload)
    }

    async fn attach(
        &self,
        base: &BaseIdentity,
        _endpoint: Option<Endpoint>,
    ) -> Result<(), TunnelError> {
        let fresh = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.clone());
        if fresh && self.is_connected() {
            // If this fails, the next reconnect subscribes anyway; report it so the caller
            // logs it.
            self.subscribe(self.per_base_filters(base))?;
        }
        Ok(())
    }

    async fn detach(&self, base: &BaseIdentity) -> Result<(), TunnelError> {
        let was = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(base);
        if was && self.is_connected() {
            for t in self.per_base_filters(base) {
                self.inner
                    .client
                    .try_unsubscribe(t)
                    .map_err(|_| TunnelError::QueueFull)?;
            }
        }
        Ok(())
    }
}

impl MqttDriver {
    /// The handle this driver serves.
    pub fn tunnel(&self) -> &MqttTunnel {
        &self.tunnel
    }

    /// Polls the connection until cancelled: reconnects with back-off, re-subscribes after
    /// every connect, decodes messages into events.
    pub async fn run(self, events: mpsc::Sender<TunnelEvent>, cancel: CancellationToken) {
        // Split up: the event loop is not `Sync`, so nothing borrowed across an `.await` may
        // reach it through `&self`.
        let MqttDriver {
            mut eventloop,
            tunnel,
            max_age_ms,
            baseline_wait,
            tasks,
        } = self;
        let replies = BaselineReplies {
            tunnel: tunnel.clone(),
            wait: baseline_wait * 2,
            tasks: tasks.clone(),
        };
        let inner = tunnel.inner.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            let polled = tokio::select! {
                () = cancel.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    inner.connected.store(true, Ordering::Release);
                    inner.metrics.mqtt_connections.inc();
                    backoff = Duration::from_millis(100);
                    let filters = tunnel.all_filters();
                    tracing::info!(subscriptions = filters.len(), "connected to MQTT broker");
                    if let Err(e) = tunnel.subscribe(filters) {
                        tracing::warn!(error = %e, "could not queue subscriptions");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    on_publish(&inner, &replies, max_age_ms, &p.topic, &p.payload, &events).await;
                }
                Ok(_) => {}
                Err(e) => {
                    let was = inner.connected.swap(false, Ordering::AcqRel);
                    inner.metrics.tunnel_error(TunnelKind::Mqtt, "connection");
                    if was {
                        tracing::warn!(error = %e, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::debug!(error = %e, ?backoff, "MQTT connect failed; retrying");
                    }
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // Wait for pending baseline replies, then say goodbye to the broker.
        tasks.close();
        tasks.wait().await;
        if inner.connected.swap(false, Ordering::AcqRel) && inner.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Ok(ev) = eventloop.poll().await {
                    if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Publishes baseline answers for the driver.
struct BaselineReplies {
    tunnel: MqttTunnel,
    wait: Duration,
    tasks: TaskTracker,
}

async fn on_publish(
    inner: &Inner,
    replies: &BaselineReplies,
    max_age_ms: i64,
    topic: &str,
    payload: &[u8],
    events: &mpsc::Sender<TunnelEvent>,
) {
    let (base, inbound) = match decode_mqtt(topic, payload, &inner.env, now_ms(), max_age_ms) {
        Ok(v) => v,
        Err(e) => {
            inner
                .metrics
                .tunnel_error(TunnelKind::Mqtt, e.metric_label());
            tracing::debug!(error = %e, "MQTT message dropped");
            return;
        }
    };
    let tunnel = TunnelKind::Mqtt;
    let event = match inbound {
        Inbound::Heartbeat(status) => TunnelEvent::Heartbeat {
            tunnel,
            base,
            status,
        },
        Inbound::Health(data) => TunnelEvent::Health { tunnel, base, data },
        Inbound::Bizs { records, complete } => TunnelEvent::Bizs {
            tunnel,
            base,
            records,
            complete,
        },
        Inbound::QueryBaseline(meta) => {
            let (reply, answer) = oneshot::channel();
            replies.spawn(base.clone(), answer);
            TunnelEvent::Baseline {
                tunnel,
                base,
                request: BaselineRequest { meta, reply },
            }
        }
    };
    // Backpressure here slows the poll loop; the router never blocks for long.
    if events.send(event).await.is_err() {
        tracing::debug!("event receiver gone");
    }
}

impl BaselineReplies {
    /// Publishes the answer to `base/baseline` when (and if) the owner produces one.
    fn spawn(
        &self,
        base: BaseIdentity,
        answer: oneshot::Receiver<Vec<koupleless_protocol::BizSpec>>,
    ) {
        let tunnel = self.tunnel.clone();
        let wait = self.wait;
        self.tasks.spawn(async move {
            let Ok(Ok(list)) = tokio::time::timeout(wait, answer).await else {
                return;
            };
            let topic = Topic::Baseline {
                env: tunnel.inner.env.clone(),
                base: base.clone(),
            };
            let payload = transport::encode(&list, Transport::Mqtt);
            match tunnel.publish(topic.to_string(), payload) {
                Ok(()) => tracing::info!(%base, modules = list.len(), "baseline sent"),
                Err(e) => {
                    tunnel
                        .inner
                        .metrics
                        .tunnel_error(TunnelKind::Mqtt, e.metric_label());
                    tracing::warn!(%base, error = %e, "could not send baseline");
                }
            }
        });
    }
}
