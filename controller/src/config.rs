//! Configuration: flags and the upstream environment variables, parsed once in `main` and
//! validated into [`Settings`], which is what the library takes. Nothing below `main` reads
//! the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::jiff::SignedDuration;
use koupleless_protocol::Env;

/// Why the configuration was rejected at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `ENV` is not usable as a topic segment and Node name suffix.
    #[error("ENV {value:?}: {source}")]
    Env {
        /// The input.
        value: String,
        /// Why.
        source: koupleless_protocol::ids::IdError,
    },
    /// Neither tunnel is enabled.
    #[error("no tunnel enabled: set ENABLE_MQTT_TUNNEL=true and/or ENABLE_HTTP_TUNNEL=true")]
    NoTunnel,
    /// Timings that contradict each other.
    #[error("invalid timings: {0}")]
    Timings(String),
    /// A client certificate without a key or the other way round.
    #[error("MQTT_CLIENT_CRT_PATH and MQTT_CLIENT_KEY_PATH must be set together")]
    ClientCertPair,
    /// A memory bound that is not a quantity.
    #[error("{0}")]
    Quantity(#[from] QuantityError),
    /// A kubelet certificate without a key or the other way round.
    #[error("KUBELET_TLS_CERT_FILE and KUBELET_TLS_KEY_FILE must be set together")]
    KubeletCertPair,
}

/// Command line and environment. Variable names follow ModuleController V2 where it has one
/// (spec controller §6.1); the rest are ours.
#[derive(Debug, Clone, Parser)]
#[command(name = "koupleless-controller", version, about)]
pub struct Args {
    /// Environment name: Node name suffix, env label and taint, MQTT topic prefix.
    #[arg(long, env = "ENV", default_value = "dev")]
    pub env: String,
    /// Lease holder identity and MQTT client id suffix. Defaults to the pod name
    /// (`POD_NAME`, else `HOSTNAME`) so that a restarted container keeps its bases.
    #[arg(long, env = "CLIENT_ID")]
    pub client_id: Option<String>,
    /// Pod name from the downward API, the first fallback for `CLIENT_ID`.
    #[arg(long, env = "POD_NAME", hide = true)]
    pub pod_name: Option<String>,
    /// Host name (the pod name in Kubernetes), the second fallback for `CLIENT_ID`.
    #[arg(long, env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,
    /// Namespace the controller runs in (upstream looks up its kubelet-proxy Service here;
    /// accepted for compatibility). Node Events go to `default`, like a kubelet's.
    #[arg(long, env = "NAMESPACE", default_value = "default")]
    pub namespace: String,

    /// Run the MQTT tunnel.
    #[arg(long, env = "ENABLE_MQTT_TUNNEL", default_value = "false", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub enable_mqtt_tunnel: bool,
    /// Run the HTTP tunnel. Both tunnels may run at once.
    #[arg(long, env = "ENABLE_HTTP_TUNNEL", default_value = "false", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub enable_http_tunnel: bool,
    /// HTTP tunnel listen port (`/heartbeat`, `/queryBaseline`).
    #[arg(long, env = "HTTP_TUNNEL_LISTEN_PORT", default_value_t = 7777)]
    pub http_tunnel_listen_port: u16,
    /// Timeout of health and queryAllBiz calls to a base's Arklet.
    #[arg(long, env = "HTTP_TUNNEL_CALL_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http_call_timeout: Duration,
    /// Timeout of install and uninstall calls (they return when the module started).
    #[arg(long, env = "HTTP_TUNNEL_OPERATION_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub http_operation_timeout: Duration,
    /// Concurrent Arklet calls per base.
    #[arg(long, env = "HTTP_TUNNEL_MAX_CALLS_PER_BASE", default_value_t = 2)]
    pub http_max_calls_per_base: usize,
    /// Bearer token for the bases' Arklet API (our agent's `--api-token`): sent on every call
    /// to a base, and a heartbeat carrying it is believed from any address (bases behind NAT).
    /// Without it a heartbeat's `localIP` must be the address it comes from.
    #[arg(long, env = "ARKLET_API_TOKEN", hide_env_values = true)]
    pub arklet_api_token: Option<String>,
    /// How long the HTTP tunnel remembers the Arklet address of a base that this replica does
    /// not serve and has not heard from.
    #[arg(long, env = "HTTP_TUNNEL_ENDPOINT_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub http_endpoint_ttl: Duration,

    /// MQTT broker host.
    #[arg(long, env = "MQTT_BROKER", default_value = "test-broker")]
    pub mqtt_broker: String,
    /// MQTT broker port.
    #[arg(long, env = "MQTT_PORT", default_value_t = 1883)]
    pub mqtt_port: u16,
    /// MQTT user name.
    #[arg(long, env = "MQTT_USERNAME", default_value = "test-username")]
    pub mqtt_username: String,
    /// MQTT password.
    #[arg(
        long,
        env = "MQTT_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub mqtt_password: String,
    /// MQTT client id prefix: the client id is `<prefix>@@@<CLIENT_ID>`.
    #[arg(long, env = "MQTT_CLIENT_PREFIX", default_value = "koupleless")]
    pub mqtt_client_prefix: String,
    /// CA bundle (PEM); enables TLS with server certificate verification.
    #[arg(long, env = "MQTT_CA_PATH")]
    pub mqtt_ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, env = "MQTT_CLIENT_CRT_PATH")]
    pub mqtt_client_crt_path: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(long, env = "MQTT_CLIENT_KEY_PATH")]
    pub mqtt_client_key_path: Option<PathBuf>,
    /// Publish commands retained, as ModuleController V2 does, for bases that rely on the
    /// broker replaying the last command when they (re)subscribe. Off by default: a retained
    /// install or uninstall is replayed to a base after every reconnect (trap T16).
    #[arg(long, env = "MQTT_RETAIN_COMMANDS", default_value = "false", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub mqtt_retain_commands: bool,
    /// MQTT keep-alive.
    #[arg(long, env = "MQTT_KEEP_ALIVE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub mqtt_keep_alive: Duration,
    /// Messages published longer ago than this are dropped (upstream: 10 s).
    #[arg(long, env = "MQTT_MESSAGE_MAX_AGE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub mqtt_message_max_age: Duration,

    /// Without heartbeat or activated health for this long, Ready becomes Unknown.
    #[arg(long, env = "NODE_UNREACHABLE_AFTER", default_value = "25s", value_parser = humantime::parse_duration)]
    pub node_unreachable_after: Duration,
    /// Without heartbeat or activated health for this long, the Node and Lease are deleted.
    #[arg(long, env = "NODE_DEAD_AFTER", default_value = "60s", value_parser = humantime::parse_duration)]
    pub node_dead_after: Duration,
    /// `leaseDurationSeconds` of node Leases (whole seconds).
    #[arg(long, env = "NODE_LEASE_DURATION", default_value = "40s", value_parser = humantime::parse_duration)]
    pub node_lease_duration: Duration,
    /// How often the owner renews a node Lease and a standby replica looks at it.
    #[arg(long, env = "NODE_LEASE_RENEW_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub node_lease_renew_interval: Duration,
    /// Health poll period per owned base.
    #[arg(long, env = "HEALTH_POLL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub health_poll_interval: Duration,
    /// queryAllBiz poll period per owned base.
    #[arg(long, env = "BIZ_POLL_INTERVAL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub biz_poll_interval: Duration,
    /// The owner of a base stops acting for it (no commands, no status writes) when it could
    /// not renew the Lease for this long, before any other replica may take over
    /// (client-go's renew deadline). Default: the Lease duration minus the renew interval.
    #[arg(long, env = "NODE_LEASE_RENEW_DEADLINE", value_parser = humantime::parse_duration)]
    pub node_lease_renew_deadline: Option<Duration>,
    /// First retry delay after a failed Kubernetes call; doubles per failure of the same base,
    /// with jitter, up to `API_RETRY_MAX`.
    #[arg(long, env = "API_RETRY_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub api_retry_interval: Duration,
    /// Longest retry delay after repeated failed Kubernetes calls for one base.
    #[arg(long, env = "API_RETRY_MAX", default_value = "60s", value_parser = humantime::parse_duration)]
    pub api_retry_max: Duration,
    /// When more than this share of the bases this replica owns go silent together, it
    /// treats that as its own partition, not as mass death: no Node is deleted for silence
    /// until they are heard again (node-lifecycle-controller's full-disruption rule).
    #[arg(long, env = "MASS_SILENCE_SHARE", default_value_t = 0.5)]
    pub mass_silence_share: f64,
    /// The mass-silence rule applies only when at least this many bases are silent, so a
    /// single dead base is still deleted.
    #[arg(long, env = "MASS_SILENCE_MIN_BASES", default_value_t = 3)]
    pub mass_silence_min_bases: usize,
    /// Bound on each Kubernetes call.
    #[arg(long, env = "API_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub api_timeout: Duration,

    /// Memory capacity advertised for a base whose JVM has no `MaxMetaspaceSize` (metaspace
    /// max −1). Upstream advertises 0, so no module with a memory request ever schedules;
    /// set `0` to keep that behaviour. Kubernetes quantity (`1Gi`, `512Mi`, bytes).
    #[arg(long, env = "UNBOUNDED_METASPACE_CAPACITY", default_value = "1Gi")]
    pub unbounded_metaspace_capacity: String,
    /// Port advertised in `status.daemonEndpoints.kubeletEndpoint` (where a kubelet API for
    /// logs would listen; the API server dials the Node InternalIP on it).
    #[arg(long, env = "KUBELET_PORT", default_value_t = 10250)]
    pub kubelet_port: i32,
    /// Address the API server dials for the kubelet API (the ClusterIP of the controller's
    /// kubelet Service): listed as each vnode's first `InternalIP`, before the base's own.
    /// Without it the API server dials the base's address, where no kubelet API listens.
    #[arg(long, env = "KUBELET_ADDRESS")]
    pub kubelet_address: Option<String>,
    /// Serve the kubelet API (`kubectl logs` for module Pods) over TLS on `KUBELET_PORT`.
    #[arg(long, env = "ENABLE_KUBELET_API", default_value = "true", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub enable_kubelet_api: bool,
    /// Serving certificate of the kubelet API (PEM); a self-signed one is generated at start
    /// without it (the API server does not verify kubelet certificates by default).
    #[arg(long, env = "KUBELET_TLS_CERT_FILE")]
    pub kubelet_tls_cert_file: Option<PathBuf>,
    /// Key of `KUBELET_TLS_CERT_FILE` (PEM).
    #[arg(long, env = "KUBELET_TLS_KEY_FILE")]
    pub kubelet_tls_key_file: Option<PathBuf>,
    /// CA of the client certificates trusted on the kubelet API: the one that signs the API
    /// server's `--kubelet-client-certificate`.
    #[arg(long, env = "KUBELET_CLIENT_CA_FILE")]
    pub kubelet_client_ca_file: Option<PathBuf>,
    /// Check bearer tokens on the kubelet API with TokenReview and SubjectAccessReview
    /// (`nodes/proxy` or `nodes/log` on the vnode).
    #[arg(long, env = "KUBELET_TOKEN_REVIEW", default_value = "true", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub kubelet_token_review: bool,

    /// Workload back-off levels: a replica already owning a share of the bases it knows waits
    /// up to this many steps before claiming a new one, so replicas share bases (upstream
    /// parses this variable but never uses it).
    #[arg(long, env = "WORKLOAD_MAX_LEVEL", default_value_t = 3)]
    pub workload_max_level: u32,
    /// Length of one workload back-off step.
    #[arg(long, env = "WORKLOAD_STEP", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub workload_step: Duration,

    /// Kubernetes client requests per second (upstream hard-codes 100).
    #[arg(long, env = "KUBE_API_QPS", default_value_t = 100.0)]
    pub kube_api_qps: f64,
    /// Kubernetes client burst (upstream hard-codes 200).
    #[arg(long, env = "KUBE_API_BURST", default_value_t = 200)]
    pub kube_api_burst: u32,

    /// Address of `/healthz` and `/readyz`.
    #[arg(long, env = "PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    /// Address of `/metrics`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Modules on a base that no Pod asks for: `keep` them all, `uninstall-ours` (only those
    /// this controller installed for a Pod that is gone; statically deployed and
    /// baseline-installed modules stay), or `uninstall-all` (upstream's behaviour).
    #[arg(long, env = "ORPHAN_MODULES", default_value = "uninstall-ours", value_parser = clap::value_parser!(crate::pod::OrphanPolicy))]
    pub orphan_modules: crate::pod::OrphanPolicy,
    /// Module Pod workers; one base is never worked on twice at once.
    #[arg(long, env = "VNODE_WORKER_NUM", default_value_t = 8)]
    pub vnode_worker_num: usize,
    /// First retry delay after a failed module install; doubles per failure.
    #[arg(long, env = "MODULE_RETRY_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub module_retry_interval: Duration,
    /// Longest retry delay after repeated failed installs.
    #[arg(long, env = "MODULE_RETRY_MAX", default_value = "5m", value_parser = humantime::parse_duration)]
    pub module_retry_max: Duration,
    /// How long to wait for a base to answer an install or uninstall before sending it again.
    #[arg(long, env = "MODULE_REPLY_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub module_reply_timeout: Duration,
    /// Keep `spec.replicas` of peer module Deployments equal to the Ready bases of their
    /// cluster (upstream's variable; spec controller §5).
    #[arg(long, env = "ENABLE_MODULE_REPLICAS_SYNC_WITH_BASE", default_value = "false", value_parser = parse_flag, action = clap::ArgAction::Set)]
    pub enable_module_replicas_sync_with_base: bool,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Upstream enables a tunnel only for the literal `true`; we also accept the usual spellings
/// and reject typos instead of silently disabling the tunnel.
fn parse_flag(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        other => Err(format!("{other:?} is not a boolean (true/false)")),
    }
}

/// The first candidate that is set and not blank.
fn first_named<'a>(candidates: impl IntoIterator<Item = &'a Option<String>>) -> Option<String> {
    candidates
        .into_iter()
        .flatten()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Validated configuration handed to the library.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Env of this controller.
    pub env: Env,
    /// Lease holder identity.
    pub client_id: String,
    /// Namespace the controller runs in.
    pub namespace: String,
    /// MQTT tunnel, when enabled.
    pub mqtt: Option<MqttSettings>,
    /// HTTP tunnel, when enabled.
    pub http: Option<HttpTunnelSettings>,
    /// Liveness, lease and poll timings.
    pub timings: Timings,
    /// How Nodes are described.
    pub node: NodeSettings,
    /// Bound on each Kubernetes call.
    pub api_timeout: Duration,
    /// Workload back-off before claiming a new base.
    pub workload: Workload,
    /// When silence of many bases is this replica's partition rather than their death.
    pub mass_silence: MassSilence,
    /// Added to the wall clock for every timestamp this replica writes (Lease renew times,
    /// Node heartbeat times). Zero in production; tests use it to run a replica with a skewed
    /// clock. Decisions never compare wall-clock times of different replicas.
    pub clock_offset: SignedDuration,
    /// Module Pods.
    pub pods: crate::pod::PodSettings,
    /// The kubelet API (`kubectl logs`), served when [`crate::Listeners::kubelet`] is given.
    pub kubelet: crate::kubelet::KubeletSettings,
}

/// The full-disruption rule (spec controller §9.3, Kubernetes' node lifecycle controller):
/// many bases going silent at once says more about this replica than about the bases.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MassSilence {
    /// Silent share of owned bases above which silence is not taken as death.
    pub share: f64,
    /// Fewest silent bases for the rule to apply.
    pub min_bases: usize,
}

impl MassSilence {
    /// Whether `silent` of `owned` bases being silent is a partition of this replica.
    pub fn is_partition(&self, silent: usize, owned: usize) -> bool {
        silent >= self.min_bases.max(1) && (silent as f64) > self.share * owned as f64
    }
}

impl Default for MassSilence {
    fn default() -> Self {
        MassSilence {
            share: 0.5,
            min_bases: 3,
        }
    }
}

/// Workload back-off (spec controller §4.3, implemented for real).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Number of levels.
    pub max_level: u32,
    /// Delay per level.
    pub step: Duration,
}

impl Workload {
    /// Upstream's formula, `level = owned × max_level / (known + 1)`, times the step: a
    /// replica that owns most of what it knows waits longest before claiming another base.
    pub fn delay(&self, owned: usize, known: usize) -> Duration {
        let level = (owned as u64 * u64::from(self.max_level)) / (known as u64 + 1);
        self.step * u32::try_from(level.min(u64::from(self.max_level))).unwrap_or(0)
    }

    /// The back-off for claiming `base` as replica `me`: the workload delay plus a share of
    /// one step derived from a hash of both names. Replicas that hear of many bases at once
    /// (a cold start) all have the same workload, so the hash decides, and it sends each base
    /// to a different replica, like rendezvous hashing, without knowing the other replicas.
    pub fn claim_delay(&self, owned: usize, known: usize, base: &str, me: &str) -> Duration {
        // FNV-1a: stable across processes and versions, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in base.bytes().chain([0]).chain(me.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let share = (h % 1000) as u32;
        self.delay(owned, known) + self.step * share / 1000
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            max_level: 3,
            step: Duration::from_millis(100),
        }
    }
}

/// MQTT tunnel settings.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name (empty: none).
    pub username: String,
    /// Password.
    pub password: String,
    /// Full client id (`<prefix>@@@<client id>`).
    pub client_id: String,
    /// TLS, when a CA is configured.
    pub tls: Option<MqttTls>,
    /// Publish commands retained (compatibility).
    pub retain_commands: bool,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Stale-message bound.
    pub message_max_age: Duration,
}

/// TLS material for the MQTT connection.
#[derive(Debug, Clone)]
pub struct MqttTls {
    /// CA bundle, PEM.
    pub ca_path: PathBuf,
    /// Client certificate and key, PEM.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// HTTP tunnel settings.
#[derive(Debug, Clone)]
pub struct HttpTunnelSettings {
    /// Listen address of `/heartbeat` and `/queryBaseline`.
    pub listen: SocketAddr,
    /// Timeout of health and queryAllBiz calls.
    pub call_timeout: Duration,
    /// Timeout of install and uninstall calls.
    pub operation_timeout: Duration,
    /// Concurrent calls per base.
    pub max_calls_per_base: usize,
    /// Bearer token sent to every Arklet and accepted on heartbeats (`ARKLET_API_TOKEN`).
    pub api_token: Option<BearerToken>,
    /// Addresses of bases not served by this replica are forgotten after this much silence.
    pub endpoint_ttl: Duration,
}

impl Default for HttpTunnelSettings {
    fn default() -> Self {
        HttpTunnelSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], 7777)),
            call_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(300),
            max_calls_per_base: 2,
            api_token: None,
            endpoint_ttl: Duration::from_secs(600),
        }
    }
}

/// A bearer token. `Debug` does not show it, so logging the settings does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// The token, `None` when blank.
    pub fn new(token: &str) -> Option<BearerToken> {
        let t = token.trim();
        (!t.is_empty()).then(|| BearerToken(t.to_owned()))
    }

    /// The token itself, for the places that send or check it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Timings of the vnode lifecycle; upstream values are the defaults (spec controller §1.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Ready → Unknown after this long without a sign of life.
    pub unreachable_after: Duration,
    /// Node and Lease deleted after this long without a sign of life.
    pub dead_after: Duration,
    /// Lease duration.
    pub lease_duration: Duration,
    /// Lease renewal / inspection period.
    pub lease_renew_interval: Duration,
    /// Health poll period.
    pub health_interval: Duration,
    /// queryAllBiz poll period.
    pub biz_interval: Duration,
    /// The owner stops acting when it could not renew its Lease for this long.
    pub lease_renew_deadline: Duration,
    /// First retry delay after a failed Kubernetes call (doubled per failure, with jitter).
    pub retry_interval: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a baseline query waits for this replica to learn whether it owns the base.
    pub baseline_wait: Duration,
}

impl Timings {
    /// The upstream values.
    pub const UPSTREAM: Timings = Timings {
        unreachable_after: Duration::from_secs(25),
        dead_after: Duration::from_secs(60),
        lease_duration: Duration::from_secs(40),
        lease_renew_interval: Duration::from_secs(10),
        health_interval: Duration::from_secs(10),
        biz_interval: Duration::from_secs(15),
        lease_renew_deadline: Duration::from_secs(30),
        retry_interval: Duration::from_secs(2),
        retry_max: Duration::from_secs(60),
        baseline_wait: Duration::from_secs(30),
    };

    /// Checks that the timings make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |s: &str| Err(ConfigError::Timings(s.into()));
        if self.unreachable_after.is_zero() || self.dead_after <= self.unreachable_after {
            return err("need 0 < NODE_UNREACHABLE_AFTER < NODE_DEAD_AFTER");
        }
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return err("NODE_LEASE_DURATION must be a whole number of seconds, at least 1s");
        }
        if self.lease_renew_interval.is_zero() || self.lease_renew_interval >= self.lease_duration {
            return err("need 0 < NODE_LEASE_RENEW_INTERVAL < NODE_LEASE_DURATION");
        }
        if self.lease_renew_deadline <= self.lease_renew_interval
            || self.lease_renew_deadline >= self.lease_duration
        {
            return err(
                "need NODE_LEASE_RENEW_INTERVAL < NODE_LEASE_RENEW_DEADLINE < NODE_LEASE_DURATION",
            );
        }
        if self.retry_max < self.retry_interval {
            return err("need API_RETRY_INTERVAL <= API_RETRY_MAX");
        }
        if self.health_interval.is_zero()
            || self.biz_interval.is_zero()
            || self.retry_interval.is_zero()
        {
            return err("poll and retry intervals must be positive");
        }
        Ok(())
    }
}

/// How Nodes are described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    /// Capacity (bytes) for bases with unbounded metaspace; `None` advertises 0 like upstream.
    pub unbounded_metaspace_bytes: Option<i64>,
    /// `daemonEndpoints.kubeletEndpoint.port`.
    pub kubelet_port: i32,
    /// First `InternalIP` of every vnode (`KUBELET_ADDRESS`), see
    /// [`crate::vnode::node::NodeTemplate::kubelet_address`].
    pub kubelet_address: Option<String>,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            unbounded_metaspace_bytes: Some(1 << 30),
            kubelet_port: 10250,
            kubelet_address: None,
        }
    }
}

impl Settings {
    /// Settings for `env` with upstream timings and no tunnel: a starting point for tests and
    /// embedders, who then enable tunnels and shorten timings.
    pub fn new(env: Env, client_id: impl Into<String>) -> Settings {
        Settings {
            env,
            client_id: client_id.into(),
            namespace: "default".into(),
            mqtt: None,
            http: None,
            timings: Timings::UPSTREAM,
            node: NodeSettings::default(),
            api_timeout: Duration::from_secs(15),
            workload: Workload::default(),
            mass_silence: MassSilence::default(),
            clock_offset: SignedDuration::ZERO,
            pods: crate::pod::PodSettings::default(),
            kubelet: crate::kubelet::KubeletSettings {
                token_review: true,
                ..Default::default()
            },
        }
    }
}

impl Args {
    /// The `CLIENT_ID` in force: explicit, else pod name, else host name, else a random id
    /// (which, as upstream, means a restart cannot resume its own Leases).
    pub fn effective_client_id(&self) -> String {
        first_named([&self.client_id, &self.pod_name, &self.hostname])
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    /// Validates everything into [`Settings`].
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let env: Env = self.env.parse().map_err(|source| ConfigError::Env {
            value: self.env.clone(),
            source,
        })?;
        if !self.enable_mqtt_tunnel && !self.enable_http_tunnel {
            return Err(ConfigError::NoTunnel);
        }
        let client_id = self.effective_client_id();
        let tls = match (&self.mqtt_client_crt_path, &self.mqtt_client_key_path) {
            (Some(_), None) | (None, Some(_)) => return Err(ConfigError::ClientCertPair),
            (crt, key) => self.mqtt_ca_path.clone().map(|ca_path| MqttTls {
                ca_path,
                client_cert: crt.clone().zip(key.clone()),
            }),
        };
        let mqtt = self.enable_mqtt_tunnel.then(|| MqttSettings {
            host: self.mqtt_broker.clone(),
            port: self.mqtt_port,
            username: self.mqtt_username.clone(),
            password: self.mqtt_password.clone(),
            client_id: format!("{}@@@{}", self.mqtt_client_prefix, client_id),
            tls,
            retain_commands: self.mqtt_retain_commands,
            keep_alive: self.mqtt_keep_alive,
            message_max_age: self.mqtt_message_max_age,
        });
        let http = self.enable_http_tunnel.then(|| HttpTunnelSettings {
            listen: SocketAddr::from(([0, 0, 0, 0], self.http_tunnel_listen_port)),
            call_timeout: self.http_call_timeout,
            operation_timeout: self.http_operation_timeout,
            max_calls_per_base: self.http_max_calls_per_base.max(1),
            api_token: self.arklet_api_token.as_deref().and_then(BearerToken::new),
            endpoint_ttl: self.http_endpoint_ttl,
        });
        let timings = Timings {
            unreachable_after: self.node_unreachable_after,
            dead_after: self.node_dead_after,
            lease_duration: self.node_lease_duration,
            lease_renew_interval: self.node_lease_renew_interval,
            health_interval: self.health_poll_interval,
            biz_interval: self.biz_poll_interval,
            lease_renew_deadline: self.node_lease_renew_deadline.unwrap_or_else(|| {
                self.node_lease_duration
                    .saturating_sub(self.node_lease_renew_interval)
            }),
            retry_interval: self.api_retry_interval,
            retry_max: self.api_retry_max,
            baseline_wait: Timings::UPSTREAM.baseline_wait,
        };
        if !(0.0..=1.0).contains(&self.mass_silence_share) {
            return Err(ConfigError::Timings(
                "MASS_SILENCE_SHARE must be between 0 and 1".into(),
            ));
        }
        timings.validate()?;
        let bound = parse_quantity_bytes(&self.unbounded_metaspace_capacity)?;
        Ok(Settings {
            env,
            client_id,
            namespace: self.namespace.clone(),
            mqtt,
            http,
            timings,
            node: NodeSettings {
                unbounded_metaspace_bytes: (bound > 0).then_some(bound),
                kubelet_port: self.kubelet_port,
                kubelet_address: self
                    .kubelet_address
                    .as_deref()
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned),
            },
            api_timeout: self.api_timeout,
            workload: Workload {
                max_level: self.workload_max_level,
                step: self.workload_step,
            },
            mass_silence: MassSilence {
                share: self.mass_silence_share,
                min_bases: self.mass_silence_min_bases,
            },
            clock_offset: SignedDuration::ZERO,
            pods: crate::pod::PodSettings {
                orphans: self.orphan_modules,
                workers: self.vnode_worker_num.max(1),
                retry_base: self.module_retry_interval,
                retry_max: self.module_retry_max.max(self.module_retry_interval),
                reply_timeout: self.module_reply_timeout,
                peer_replicas: self.enable_module_replicas_sync_with_base,
            },
            kubelet: crate::kubelet::KubeletSettings {
                tls_files: match (&self.kubelet_tls_cert_file, &self.kubelet_tls_key_file) {
                    (Some(c), Some(k)) => Some((c.clone(), k.clone())),
                    (None, None) => None,
                    _ => return Err(ConfigError::KubeletCertPair),
                },
                client_ca: self.kubelet_client_ca_file.clone(),
                token_review: self.kubelet_token_review,
                arklet_token: self.arklet_api_token.as_deref().and_then(BearerToken::new),
            },
        })
    }
}

/// A string that is not a memory quantity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a memory quantity (e.g. 1Gi, 512Mi, 1000000)")]
pub struct QuantityError(pub String);

/// Parses a Kubernetes memory quantity (binary and decimal suffixes, no fractions) into bytes.
pub fn parse_quantity_bytes(s: &str) -> Result<i64, QuantityError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: i64 = num.parse().map_err(|_| QuantityError(s.into()))?;
    let mult: i64 = match suffix {
        "" => 1,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(QuantityError(s.into())),
    };
    n.checked_mul(mult).ok_or_else(|| QuantityError(s.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("koupleless-controller").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_are_upstream() {
        let a = parse(&["--enable-mqtt-tunnel", "true", "--client-id", "c1"]).unwrap();
        let s = a.settings().unwrap();
        assert_eq!(s.env.as_str(), "dev");
        assert_eq!(s.client_id, "c1");
        assert_eq!(s.timings, Timings::UPSTREAM);
        let m = s.mqtt.unwrap();
        assert_eq!(m.client_id, "koupleless@@@c1");
        assert_eq!((m.host.as_str(), m.port), ("test-broker", 1883));
        assert!(!m.retain_commands);
        assert!(m.tls.is_none());
        assert!(s.http.is_none());
        assert_eq!(s.node.unbounded_metaspace_bytes, Some(1 << 30));
        assert_eq!(a.kube_api_qps, 100.0);
        assert_eq!(a.kube_api_burst, 200);
    }

    #[test]
    fn client_id_falls_back_to_pod_name_then_hostname() {
        let some = |s: &str| Some(s.to_owned());
        let cases = [
            ([some("x"), some("p"), some("h")], Some("x")),
            ([None, some("p"), some("h")], Some("p")),
            ([some(" "), None, some("h")], Some("h")),
            ([None, some(""), None], None),
        ];
        for (candidates, want) in cases {
            assert_eq!(first_named(&candidates).as_deref(), want, "{candidates:?}");
        }
        let a = parse(&["--client-id", "x", "--pod-name", "p", "--hostname", "h"]).unwrap();
        assert_eq!(a.effective_client_id(), "x");
    }

    #[test]
    fn flag_parsing_table() {
        for (text, want) in [
            ("true", Ok(true)),
            ("TRUE", Ok(true)),
            ("1", Ok(true)),
            ("false", Ok(false)),
            ("", Ok(false)),
        ] {
            assert_eq!(parse_flag(text), want, "{text:?}");
        }
        assert!(parse_flag("ture").is_err());
    }

    #[test]
    fn both_tunnels_and_tls() {
        let a = parse(&[
            "--enable-mqtt-tunnel=true",
            "--enable-http-tunnel=true",
            "--http-tunnel-listen-port=7000",
            "--mqtt-ca-path=/ca.pem",
            "--mqtt-client-crt-path=/c.pem",
            "--mqtt-client-key-path=/k.pem",
            "--mqtt-retain-commands=true",
            "--env=prod",
        ])
        .unwrap();
        let s = a.settings().unwrap();
        assert_eq!(s.http.unwrap().listen.port(), 7000);
        let m = s.mqtt.unwrap();
        assert!(m.retain_commands);
        let tls = m.tls.unwrap();
        assert_eq!(tls.ca_path, PathBuf::from("/ca.pem"));
        assert_eq!(
            tls.client_cert,
            Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem")))
        );
    }

    #[test]
    fn rejections() {
        let bad: [&[&str]; 9] = [
            &[],
            &["--enable-http-tunnel=true", "--env=a.b"],
            &[
                "--enable-http-tunnel=true",
                "--node-unreachable-after=60s",
                "--node-dead-after=25s",
            ],
            &["--enable-http-tunnel=true", "--node-lease-duration=1500ms"],
            &["--enable-mqtt-tunnel=true", "--mqtt-client-crt-path=/c"],
            &[
                "--enable-http-tunnel=true",
                "--unbounded-metaspace-capacity=lots",
            ],
            // The renew deadline must leave room before the Lease lapses for others.
            &[
                "--enable-http-tunnel=true",
                "--node-lease-renew-deadline=40s",
            ],
            &[
                "--enable-http-tunnel=true",
                "--node-lease-renew-deadline=5s",
            ],
            &["--enable-http-tunnel=true", "--mass-silence-share=1.5"],
        ];
        for args in bad {
            assert!(parse(args).unwrap().settings().is_err(), "{args:?}");
        }
        assert!(parse(&["--enable-http-tunnel", "maybe"]).is_err());
    }

    #[test]
    fn mass_silence_table() {
        let m = MassSilence::default();
        for (silent, owned, want) in [
            (0, 0, false),
            (1, 1, false),
            (2, 2, false),
            (3, 3, true),
            (3, 6, false),
            (4, 6, true),
            (3, 10, false),
            (10, 10, true),
        ] {
            assert_eq!(m.is_partition(silent, owned), want, "{silent}/{owned}");
        }
        let one = MassSilence {
            share: 0.5,
            min_bases: 0,
        };
        assert!(one.is_partition(1, 1), "min 0 is taken as 1");
        assert!(!one.is_partition(0, 1));
    }

    #[test]
    fn renew_deadline_defaults_to_duration_minus_interval() {
        let a = parse(&[
            "--enable-http-tunnel=true",
            "--node-lease-duration=20s",
            "--node-lease-renew-interval=5s",
        ])
        .unwrap();
        assert_eq!(
            a.settings().unwrap().timings.lease_renew_deadline,
            Duration::from_secs(15)
        );
    }

    #[test]
    fn zero_bound_means_upstream_memory_zero() {
        let a = parse(&[
            "--enable-http-tunnel=true",
            "--unbounded-metaspace-capacity=0",
        ])
        .unwrap();
        assert_eq!(a.settings().unwrap().node.unbounded_metaspace_bytes, None);
    }

    #[test]
    fn workload_delay_table() {
        let w = Workload::default();
        let ms = Duration::from_millis;
        for (owned, known, want) in [
            (0, 0, ms(0)),
            (0, 10, ms(0)),
            (1, 1, ms(100)),
            (3, 5, ms(100)),
            (5, 5, ms(200)),
            (10, 10, ms(200)),
            (1000, 1000, ms(200)),
            (1000, 0, ms(300)),
        ] {
            assert_eq!(w.delay(owned, known), want, "{owned}/{known}");
        }
        // The hash share stays below one step and differs between replicas.
        let a = w.claim_delay(0, 0, "base-1", "mc-a");
        let b = w.claim_delay(0, 0, "base-1", "mc-b");
        assert!(a < ms(100) && b < ms(100) && a != b, "{a:?} {b:?}");
        assert_eq!(a, w.claim_delay(0, 0, "base-1", "mc-a"), "deterministic");
        assert!(w.claim_delay(5, 5, "base-1", "mc-a") >= ms(200));
    }

    #[test]
    fn quantity_table() {
        for (text, want) in [
            ("0", Some(0)),
            ("1024", Some(1024)),
            ("1Ki", Some(1024)),
            ("512Mi", Some(512 << 20)),
            ("1Gi", Some(1 << 30)),
            ("2G", Some(2_000_000_000)),
            ("1.5Gi", None),
            ("Gi", None),
            ("-1", None),
            ("1Xi", None),
        ] {
            assert_eq!(parse_quantity_bytes(text).ok(), want, "{text}");
        }
    }
}
