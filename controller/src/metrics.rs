//! Prometheus metrics (served on `/metrics`). Upstream exposes only controller-runtime's
//! defaults; these are ours (spec controller §9.4).

use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::registry::{BaseRegistry, VNodeState};
use crate::tunnel::TunnelKind;

/// A vnode state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `ready`, `unreachable`, `standby`, `deleting`.
    pub state: &'static str,
}

/// A tunnel label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelLabels {
    /// `mqtt` or `http`.
    pub tunnel: Tunnel,
}

/// Tunnel kinds as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Tunnel {
    /// MQTT.
    mqtt,
    /// HTTP.
    http,
}

impl From<TunnelKind> for Tunnel {
    fn from(k: TunnelKind) -> Tunnel {
        match k {
            TunnelKind::Mqtt => Tunnel::mqtt,
            TunnelKind::Http => Tunnel::http,
        }
    }
}

/// A tunnel problem.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunnelErrorLabels {
    /// Tunnel.
    pub tunnel: Tunnel,
    /// What went wrong (`connection`, `stale`, `bad_payload`, `call_failed`, ...).
    pub kind: &'static str,
}

/// A Kubernetes API call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `node`, `node_status`, `lease`, `event`, `deployment`.
    pub resource: &'static str,
    /// `get`, `create`, `patch`, `replace`, `delete`, `list`.
    pub verb: &'static str,
    /// `ok` or an error class.
    pub outcome: &'static str,
}

/// A Kubernetes API call, without outcome (latency).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiOpLabels {
    /// Resource.
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
}

/// A command handed to a tunnel.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// Tunnel.
    pub tunnel: Tunnel,
    /// `health`, `queryAllBiz`, `installBiz`, `uninstallBiz`.
    pub command: &'static str,
}

/// What became of a module operation, as its Pod's status records it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModuleOutcomeLabels {
    /// `installed`, `install_failed`, `uninstalled`.
    pub outcome: &'static str,
}

/// A lifecycle transition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// `acquired`, `lost`, `ready`, `unreachable`, `deactivated`, `dead`, `released`.
    pub transition: &'static str,
}

type HistogramFamily = Family<ApiOpLabels, Histogram, fn() -> Histogram>;

fn api_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric of the controller.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Bases served by this replica, by state.
    pub vnodes: Family<StateLabels, Gauge>,
    /// Heartbeats received.
    pub heartbeats: Family<TunnelLabels, Counter>,
    /// Tunnel errors and dropped messages.
    pub tunnel_errors: Family<TunnelErrorLabels, Counter>,
    /// Successful MQTT (re)connections.
    pub mqtt_connections: Counter,
    /// Kubernetes API calls by outcome.
    pub api_requests: Family<ApiLabels, Counter>,
    /// Kubernetes API call latency.
    pub api_duration: HistogramFamily,
    /// Node status writes skipped because nothing changed.
    pub status_unchanged: Counter,
    /// Lifecycle transitions.
    pub transitions: Family<TransitionLabels, Counter>,
    /// Commands handed to a tunnel for a base.
    pub commands: Family<CommandLabels, Counter>,
    /// 1 while this replica cannot hear (some of) its bases: MQTT down or mass silence.
    pub blind: Gauge,
    /// Module installs and uninstalls by outcome.
    pub module_outcomes: Family<ModuleOutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("koupleless_controller");
        let vnodes = Family::<StateLabels, Gauge>::default();
        let heartbeats = Family::<TunnelLabels, Counter>::default();
        let tunnel_errors = Family::<TunnelErrorLabels, Counter>::default();
        let mqtt_connections = Counter::default();
        let api_requests = Family::<ApiLabels, Counter>::default();
        let api_duration: HistogramFamily = Family::new_with_constructor(api_histogram);
        let status_unchanged = Counter::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let commands = Family::<CommandLabels, Counter>::default();
        let blind = Gauge::default();
        let module_outcomes = Family::<ModuleOutcomeLabels, Counter>::default();
        registry.register(
            "module_outcomes",
            "Module installs and uninstalls by outcome (installed, install_failed, uninstalled), \
             counted when the Pod status records them",
            module_outcomes.clone(),
        );
        registry.register(
            "commands",
            "Commands handed to a tunnel, by tunnel and command",
            commands.clone(),
        );
        registry.register(
            "blind",
            "1 while the MQTT broker is unreachable or most owned bases are silent at once",
            blind.clone(),
        );
        registry.register(
            "vnodes",
            "Bases known to this replica, by state",
            vnodes.clone(),
        );
        registry.register("heartbeats", "Heartbeats received", heartbeats.clone());
        registry.register(
            "tunnel_errors",
            "Tunnel errors and dropped messages, by kind",
            tunnel_errors.clone(),
        );
        registry.register(
            "mqtt_connections",
            "Successful MQTT connections (1 + reconnects)",
            mqtt_connections.clone(),
        );
        registry.register(
            "kube_api_requests",
            "Kubernetes API calls, by resource, verb and outcome",
            api_requests.clone(),
        );
        registry.register(
            "kube_api_request_duration_seconds",
            "Kubernetes API call latency",
            api_duration.clone(),
        );
        registry.register(
            "node_status_unchanged",
            "Node status writes skipped because nothing changed",
            status_unchanged.clone(),
        );
        registry.register(
            "vnode_transitions",
            "vnode lifecycle transitions",
            transitions.clone(),
        );
        Metrics {
            registry,
            vnodes,
            heartbeats,
            tunnel_errors,
            mqtt_connections,
            api_requests,
            api_duration,
            status_unchanged,
            transitions,
            commands,
            blind,
            module_outcomes,
        }
    }

    /// Counts a tunnel error or dropped message.
    pub fn tunnel_error(&self, tunnel: TunnelKind, kind: &'static str) {
        self.tunnel_errors
            .get_or_create(&TunnelErrorLabels {
                tunnel: tunnel.into(),
                kind,
            })
            .inc();
    }

    /// Counts a command handed to a tunnel.
    pub fn command(&self, tunnel: TunnelKind, command: &'static str) {
        self.commands
            .get_or_create(&CommandLabels {
                tunnel: tunnel.into(),
                command,
            })
            .inc();
    }

    /// Counts a module outcome (`installed`, `install_failed`, `uninstalled`).
    pub fn module_outcome(&self, outcome: &'static str) {
        self.module_outcomes
            .get_or_create(&ModuleOutcomeLabels { outcome })
            .inc();
    }

    /// Starts timing an API call; finish with [`ApiTimer::done`].
    pub fn api(&self, resource: &'static str, verb: &'static str) -> ApiTimer<'_> {
        ApiTimer {
            metrics: self,
            resource,
            verb,
            start: Instant::now(),
        }
    }

    /// Sets the vnode gauges from the registry (at scrape time).
    pub fn refresh_vnodes(&self, registry: &BaseRegistry) {
        let counts = registry.count_by_state();
        for state in VNodeState::ALL {
            self.vnodes
                .get_or_create(&StateLabels {
                    state: state.as_str(),
                })
                .set(counts.get(&state).copied().unwrap_or(0) as i64);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Times one API call.
#[derive(Debug)]
pub struct ApiTimer<'a> {
    metrics: &'a Metrics,
    resource: &'static str,
    verb: &'static str,
    start: Instant,
}

impl ApiTimer<'_> {
    /// Records the outcome of `result` and returns it.
    pub fn done<T>(self, result: Result<T, kube::Error>) -> Result<T, kube::Error> {
        let outcome = match &result {
            Ok(_) => "ok",
            Err(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Err(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Err(kube::Error::Api(_)) => "api_error",
            Err(_) => "transport_error",
        };
        self.metrics
            .api_requests
            .get_or_create(&ApiLabels {
                resource: self.resource,
                verb: self.verb,
                outcome,
            })
            .inc();
        self.metrics
            .api_duration
            .get_or_create(&ApiOpLabels {
                resource: self.resource,
                verb: self.verb,
            })
            .observe(self.start.elapsed().as_secs_f64());
        result
    }
}
