//! Wiring: builds tunnels, caches, the router and the operational servers, owns every
//! long-lived task, and shuts them down in order.
//!
//! Shutdown order: the pod reconciler first (no command or Pod write once Leases start to
//! go), then supervisors (owners release their Leases so another replica takes
//! over at once), then tunnels (MQTT disconnects cleanly, the HTTP server stops), then the
//! event publisher and the probe/metrics servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::error::Error;
use crate::events::EventSink;
use crate::labels;
use crate::metrics::Metrics;
use crate::ops::{self, OpsState, Readiness};
use crate::registry::BaseRegistry;
use crate::router::Router;
use crate::tunnel::{HttpTunnel, MqttTunnel, Tunnels};
use crate::vnode::node::NodeTemplate;
use crate::vnode::sight::Sight;
use crate::vnode::supervisor::Context;

/// Capacity of the tunnel → router event queue.
const EVENT_QUEUE: usize = 4096;

/// Sockets the controller serves on. Missing ones are bound from the settings; tests pass
/// listeners bound to port 0.
#[derive(Debug, Default)]
pub struct Listeners {
    /// HTTP tunnel (`/heartbeat`, `/queryBaseline`), when the HTTP tunnel is enabled.
    pub http_tunnel: Option<TcpListener>,
    /// `/healthz`, `/readyz`; not served when `None`.
    pub probes: Option<TcpListener>,
    /// `/metrics`; not served when `None`.
    pub metrics: Option<TcpListener>,
    /// The kubelet API (TLS, `kubectl logs`); not served when `None`.
    pub kubelet: Option<TcpListener>,
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Runs the controller until `shutdown` is cancelled, then stops everything in order.
pub async fn run(
    settings: Settings,
    client: Client,
    mut listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Embedders and tests build Settings directly: timings that contradict each other (a
    // renew deadline past the Lease duration) would let two replicas act at once.
    settings.timings.validate()?;
    let metrics = Arc::new(Metrics::new());
    let registry = BaseRegistry::default();
    let readiness = Arc::new(Readiness::default());
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let timings = settings.timings;

    let mut tunnels = Tunnels::default();
    let mut mqtt_driver = None;
    if let Some(m) = &settings.mqtt {
        let (t, d) = MqttTunnel::new(
            m,
            settings.env.clone(),
            timings.baseline_wait,
            metrics.clone(),
        )?;
        tunnels.mqtt = Some(t);
        mqtt_driver = Some(d);
    }
    let mut http_driver = None;
    if let Some(h) = &settings.http {
        let listener = match listeners.http_tunnel.take() {
            Some(l) => l,
            None => bind(h.listen).await?,
        };
        let (t, d) = HttpTunnel::new(
            h.clone(),
            events_tx.clone(),
            timings.baseline_wait,
            metrics.clone(),
        )?;
        tunnels.http = Some(t);
        http_driver = Some((d, listener));
    }
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    let (events, publisher) =
        EventSink::new(client.clone(), settings.client_id.clone(), metrics.clone());
    let drain = settings.api_timeout + Duration::from_secs(5);
    let (sight_tx, sight_rx) = tokio::sync::watch::channel(Sight::default());
    // Well below the gap between the unreachable and dead thresholds, which is all the
    // mass-silence rule needs to act before a silent base would be declared dead.
    let sight_period = (settings.timings.unreachable_after / 4).min(Duration::from_millis(250));
    let ctx = Arc::new(Context {
        template: NodeTemplate {
            kubelet_address: settings.node.kubelet_address.clone(),
            ..NodeTemplate::new(settings.env.clone(), settings.node.kubelet_port)
        },
        nodes: Api::<Node>::all(client.clone()),
        leases: Api::<Lease>::namespaced(client.clone(), labels::LEASE_NAMESPACE),
        deployments: Api::<Deployment>::all(client.clone()),
        lease_store,
        tunnels: tunnels.clone(),
        metrics: metrics.clone(),
        events,
        registry: registry.clone(),
        tasks: TaskTracker::new(),
        sight: sight_rx,
        settings,
    });

    // Transport and operational tasks.
    let io = TaskTracker::new();
    let io_cancel = CancellationToken::new();
    io.spawn(crate::vnode::sight::monitor(
        registry.clone(),
        tunnels.mqtt.clone(),
        ctx.settings.mass_silence,
        sight_period,
        metrics.clone(),
        sight_tx,
        io_cancel.clone(),
    ));
    if let Some(d) = mqtt_driver {
        io.spawn(d.run(events_tx.clone(), io_cancel.clone()));
    }
    drop(events_tx);
    if let Some((d, listener)) = http_driver {
        let cancel = io_cancel.clone();
        io.spawn(async move {
            if let Err(e) = d.run(listener, cancel).await {
                tracing::error!(error = %e, "HTTP tunnel server failed");
            }
        });
    }
    io.spawn(wait_for_tunnels(
        tunnels,
        readiness.clone(),
        io_cancel.clone(),
    ));
    let ops_state = OpsState {
        readiness: readiness.clone(),
        metrics: metrics.clone(),
        registry,
    };
    for (listener, router, what) in [
        (
            listeners.probes.take(),
            ops::probe_router(ops_state.clone()),
            "probe",
        ),
        (
            listeners.metrics.take(),
            ops::metrics_router(ops_state),
            "metrics",
        ),
    ] {
        let Some(listener) = listener else { continue };
        let cancel = io_cancel.clone();
        io.spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, server = what, "server failed");
            }
        });
    }
    if let Some(listener) = listeners.kubelet.take() {
        let k = &ctx.settings.kubelet;
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let files = k
            .tls_files
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let tls = crate::kubelet::tls::server_config(files, k.client_ca.as_deref(), names)?;
        let api =
            crate::kubelet::KubeletApi::new(client.clone(), k).map_err(Error::KubeletClient)?;
        io.spawn(crate::kubelet::serve(
            listener,
            tls,
            Arc::new(api),
            io_cancel.clone(),
        ));
    }
    let events_cancel = CancellationToken::new();
    io.spawn(publisher.run(events_cancel.clone()));

    // The controller proper.
    let core_cancel = CancellationToken::new();
    let router = Router::new(ctx.clone(), readiness);
    let core = tokio::spawn(router.run(events_rx, lease_writer, core_cancel.clone(), drain));
    // Module Pods; stopped first, before the supervisors release their Leases.
    let pods_cancel = CancellationToken::new();
    let pods = tokio::spawn(crate::pod::reconciler::run(
        ctx.clone(),
        pods_cancel.clone(),
    ));
    let peer = ctx.settings.pods.peer_replicas.then(|| {
        tokio::spawn(crate::pod::peer::run(
            client.clone(),
            ctx.settings.env.to_string(),
            metrics.clone(),
            ctx.settings.api_timeout,
            pods_cancel.clone(),
        ))
    });
    tracing::info!(client_id = %ctx.settings.client_id, env = %ctx.settings.env, "controller started");

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    pods_cancel.cancel();
    if let Err(e) = pods.await {
        tracing::error!(error = %e, "pod reconciler failed");
    }
    if let Some(peer) = peer
        && let Err(e) = peer.await
    {
        tracing::error!(error = %e, "peer deployment controller failed");
    }
    core_cancel.cancel();
    if let Err(e) = core.await {
        tracing::error!(error = %e, "router task failed");
    }
    ctx.tasks.close();
    let _ = tokio::time::timeout(drain, ctx.tasks.wait()).await;
    io_cancel.cancel();
    events_cancel.cancel();
    io.close();
    if tokio::time::timeout(drain, io.wait()).await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// Marks the tunnels ready once MQTT (if enabled) has connected; the HTTP listener is bound
/// before this runs.
async fn wait_for_tunnels(tunnels: Tunnels, readiness: Arc<Readiness>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        if tunnels.mqtt.as_ref().is_none_or(MqttTunnel::is_connected) {
            readiness.tunnels.store(true, Ordering::Release);
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
    }
}
