//! The controller tunnels: how the module controller finds this base and sends it commands.
//!
//! - [`mqtt`]: the MQTT tunnel (spec protocol §5). Commands arrive on
//!   `koupleless_<env>/<id>/<command>` and `.../base/baseline`, run through the same
//!   [`CommandService`](crate::service::CommandService) as the HTTP API, and are answered on
//!   `.../base/<reply>`; heartbeats go to `.../base/heart` every 10 s.
//! - [`http`]: the HTTP heartbeat (spec protocol §6): `POST <endpoint>/heartbeat` every 12 s,
//!   and optionally the baseline from `<endpoint>/queryBaseline` at start-up.
//! - [`dispatch`]: the MQTT tunnel's decisions as pure functions (which topic is which
//!   command, which replays to skip, what to publish), so the driver only does I/O.
//!
//! Both tunnels may run at once; each is one function that runs until its cancellation token
//! fires and then says goodbye (a `DEACTIVATED` heartbeat) before returning.
//!
//! Configuration ([`TunnelArgs`]) is part of the agent's command line. The MQTT tunnel runs
//! iff `--mqtt-broker` is given, the HTTP heartbeat iff `--controller-endpoint` is given. The
//! upstream property names (`koupleless.arklet.mqtt.broker`, ...,
//! `koupleless.arklet.http.heartbeat.endpoint`) are accepted as flag aliases.

pub mod dispatch;
pub mod http;
pub mod mqtt;

use std::convert::Infallible;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use koupleless_protocol::ids::IdError;
use koupleless_protocol::{
    BaseIdentity, BaseMetadata, BaseStatus, BizState, Env, LabelValue, VNodeName,
};

pub use http::{HttpTunnelSettings, run_http_heartbeat};
pub use mqtt::{MqttSettings, MqttTls, MqttTuning, run_mqtt};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::RuntimeBackend;
use crate::config::Config;
use crate::service::CommandService;

/// Why a tunnel could not be configured or started. Runtime failures (broker down, controller
/// unreachable) are not errors: the tunnels log them and keep retrying.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The base identity cannot be a topic segment.
    #[error("base identity: {0}")]
    Identity(#[source] IdError),
    /// The runtime env cannot be a topic segment.
    #[error("runtime env: {0}")]
    Env(#[source] IdError),
    /// A TLS file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    ReadFile {
        /// Which file (`MQTT CA certificate`, ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no PEM block of the expected kind.
    #[error("the {what} {path} holds no PEM `{expected}` block")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The PEM label looked for.
        expected: &'static str,
    },
    /// Only one of the client certificate and key was given.
    #[error("--mqtt-client-crt-path and --mqtt-client-key-path must be given together")]
    ClientCertPair,
    /// A client certificate without TLS.
    #[error("a client certificate needs TLS: give --mqtt-ca-path too")]
    ClientCertWithoutCa,
    /// A password without a user name (MQTT 3.1.1 cannot send one alone).
    #[error("--mqtt-password needs --mqtt-username")]
    PasswordWithoutUser,
    /// A zero period or timeout.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The controller endpoint is not an `http(s)` URL.
    #[error("controller endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The value given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    /// The API token cannot be sent in an HTTP header (control characters).
    #[error("--api-token cannot be sent in an HTTP Authorization header")]
    TokenHeader,
}

/// A secret string (the MQTT password): its `Debug` output is redacted, so logging a
/// configuration never leaks it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Tunnel flags, flattened into the agent's [`Config`].
#[derive(Clone, Debug, clap::Args)]
pub struct TunnelArgs {
    /// MQTT broker host; the MQTT tunnel runs iff this is set.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_BROKER",
        alias = "koupleless.arklet.mqtt.broker"
    )]
    pub mqtt_broker: Option<String>,
    /// MQTT broker port.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_PORT",
        alias = "koupleless.arklet.mqtt.port",
        default_value_t = 1883
    )]
    pub mqtt_port: u16,
    /// MQTT user name (Java requires one; here it is optional for anonymous brokers).
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_USERNAME",
        alias = "koupleless.arklet.mqtt.username"
    )]
    pub mqtt_username: Option<String>,
    /// MQTT password.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_PASSWORD",
        alias = "koupleless.arklet.mqtt.password",
        hide_env_values = true
    )]
    pub mqtt_password: Option<Secret>,
    /// MQTT client id prefix: the client id is `<prefix>@@@<identity>`.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_CLIENT_PREFIX",
        alias = "koupleless.arklet.mqtt.client.prefix",
        default_value = "koupleless"
    )]
    pub mqtt_client_prefix: String,
    /// PEM CA certificate(s) of the broker; setting it switches the connection to TLS (the
    /// server certificate and host name are verified).
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_CA_PATH",
        alias = "koupleless.arklet.mqtt.ca_path"
    )]
    pub mqtt_ca_path: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --mqtt-client-key-path).
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_CLIENT_CRT_PATH",
        alias = "koupleless.arklet.mqtt.client_crt_path"
    )]
    pub mqtt_client_crt_path: Option<PathBuf>,
    /// PEM client key (PKCS#1, PKCS#8 or SEC1) for mutual TLS.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_MQTT_CLIENT_KEY_PATH",
        alias = "koupleless.arklet.mqtt.client_key_path"
    )]
    pub mqtt_client_key_path: Option<PathBuf>,
    /// MQTT keep-alive (Paho's default, as the Java base uses).
    #[arg(long, env = "KOUPLELESS_ARKLET_MQTT_KEEP_ALIVE", value_parser = duration, default_value = "60s")]
    pub mqtt_keep_alive: Duration,
    /// Period of MQTT heartbeats (`base/heart`).
    #[arg(long, env = "KOUPLELESS_ARKLET_MQTT_HEARTBEAT_INTERVAL", value_parser = duration, default_value = "10s")]
    pub mqtt_heartbeat_interval: Duration,
    /// Report the real Arklet HTTP port in MQTT heartbeats (the Java base sends 0), so the
    /// controller can fetch module logs from this agent over MQTT-tunnelled bases.
    #[arg(long, env = "KOUPLELESS_MQTT_REPORT_PORT")]
    pub mqtt_report_port: bool,
    /// The base's runtime env: the `<env>` of `koupleless_<env>/...` topics, lower-cased as the
    /// Java base does; empty means `dev` (the controller's default `ENV`).
    #[arg(long, env = "KOUPLELESS_RUNTIME_ENV", default_value = "")]
    pub runtime_env: String,
    /// Controller base URL for the HTTP tunnel (e.g. `http://module-controller:7777`); the HTTP
    /// heartbeat runs iff this is set.
    #[arg(
        long,
        env = "KOUPLELESS_ARKLET_HTTP_HEARTBEAT_ENDPOINT",
        alias = "koupleless.arklet.http.heartbeat.endpoint"
    )]
    pub controller_endpoint: Option<String>,
    /// Period of HTTP heartbeats (`POST <endpoint>/heartbeat`).
    #[arg(long, env = "KOUPLELESS_ARKLET_HTTP_HEARTBEAT_INTERVAL", value_parser = duration, default_value = "12s")]
    pub http_heartbeat_interval: Duration,
    /// Timeout of one request to the controller endpoint (connect and whole request).
    #[arg(long, env = "KOUPLELESS_CONTROLLER_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub controller_timeout: Duration,
    /// At start-up, fetch the baseline from `<endpoint>/queryBaseline` and install it.
    #[arg(long, env = "KOUPLELESS_FETCH_BASELINE_ON_START")]
    pub fetch_baseline_on_start: bool,
}

/// Reads a PEM file and checks it holds a block whose label contains `expected`.
fn read_pem(
    what: &'static str,
    path: &Path,
    expected: &'static str,
) -> Result<Vec<u8>, TunnelError> {
    let bytes = std::fs::read(path).map_err(|source| TunnelError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })?;
    if !pem_has_block(&bytes, expected) {
        return Err(TunnelError::NotPem {
            what,
            path: path.to_owned(),
            expected,
        });
    }
    Ok(bytes)
}

/// Whether `pem` has a `-----BEGIN <label>-----` line whose label contains `expected`
/// (`PRIVATE KEY` matches `RSA PRIVATE KEY`, `EC PRIVATE KEY` and PKCS#8). The full parse is
/// rustls's at connect time; this only turns the common mistakes (wrong file, DER instead of
/// PEM) into start-up errors instead of endless reconnect warnings.
fn pem_has_block(pem: &[u8], expected: &str) -> bool {
    String::from_utf8_lossy(pem).lines().any(|l| {
        l.trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|label| label.contains(expected))
    })
}

fn nonzero(d: Duration, what: &'static str) -> Result<Duration, TunnelError> {
    if d.is_zero() {
        Err(TunnelError::ZeroDuration(what))
    } else {
        Ok(d)
    }
}

impl TunnelArgs {
    /// The validated MQTT settings, `None` when no broker is configured. Reads the TLS files.
    pub fn mqtt(&self) -> Result<Option<MqttSettings>, TunnelError> {
        let Some(host) = self.mqtt_broker.clone().filter(|h| !h.trim().is_empty()) else {
            return Ok(None);
        };
        if self.mqtt_password.is_some() && self.mqtt_username.is_none() {
            return Err(TunnelError::PasswordWithoutUser);
        }
        let client = match (&self.mqtt_client_crt_path, &self.mqtt_client_key_path) {
            (None, None) => None,
            (Some(crt), Some(key)) => Some((
                read_pem("MQTT client certificate", crt, "CERTIFICATE")?,
                Secret(
                    String::from_utf8_lossy(&read_pem("MQTT client key", key, "PRIVATE KEY")?)
                        .into_owned(),
                ),
            )),
            _ => return Err(TunnelError::ClientCertPair),
        };
        let tls = match &self.mqtt_ca_path {
            Some(ca) => Some(MqttTls {
                ca: read_pem("MQTT CA certificate", ca, "CERTIFICATE")?,
                client,
            }),
            None if client.is_some() => return Err(TunnelError::ClientCertWithoutCa),
            None => None,
        };
        Ok(Some(MqttSettings {
            host: host.trim().to_owned(),
            port: self.mqtt_port,
            username: self.mqtt_username.clone(),
            password: self.mqtt_password.clone(),
            client_prefix: self.mqtt_client_prefix.clone(),
            tls,
            keep_alive: nonzero(self.mqtt_keep_alive, "--mqtt-keep-alive")?,
            heartbeat_interval: nonzero(self.mqtt_heartbeat_interval, "--mqtt-heartbeat-interval")?,
            tuning: MqttTuning {
                report_port: self.mqtt_report_port,
                ..MqttTuning::default()
            },
        }))
    }

    /// The validated HTTP tunnel settings, `None` when no controller endpoint is configured.
    pub fn http(&self) -> Result<Option<HttpTunnelSettings>, TunnelError> {
        let Some(endpoint) = self
            .controller_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        else {
            return Ok(None);
        };
        http::check_endpoint(endpoint)?;
        Ok(Some(HttpTunnelSettings {
            endpoint: endpoint.to_owned(),
            interval: nonzero(self.http_heartbeat_interval, "--http-heartbeat-interval")?,
            timeout: nonzero(self.controller_timeout, "--controller-timeout")?,
            fetch_baseline: self.fetch_baseline_on_start,
            shutdown_grace: HttpTunnelSettings::DEFAULT_SHUTDOWN_GRACE,
            api_token: None,
        }))
    }

    /// The topic env segment (trap T19).
    pub fn env(&self) -> Result<Env, TunnelError> {
        Env::from_runtime_env(self.runtime_env.trim()).map_err(TunnelError::Env)
    }
}

/// Who this base is, as the tunnels report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseInfo {
    /// Topic segment and `baseMetadata.identity`.
    pub identity: BaseIdentity,
    /// Topic env segment.
    pub env: Env,
    /// `baseMetadata` of heartbeats and `queryBaseline`.
    pub metadata: BaseMetadata,
    /// `localIP`: where the controller reaches the Arklet HTTP API.
    pub local_ip: String,
    /// `localHostName` (becomes the Node's `kubernetes.io/hostname` label).
    pub host_name: String,
    /// The Arklet HTTP port actually bound (reported by the HTTP heartbeat only, trap T21).
    pub http_port: u16,
}

impl BaseInfo {
    /// Builds the base description from the agent configuration and the bound HTTP port.
    pub fn from_config(cfg: &Config, http_port: u16) -> Result<BaseInfo, TunnelError> {
        let identity: BaseIdentity = cfg.identity().parse().map_err(TunnelError::Identity)?;
        let env = cfg.tunnel.env()?;
        let base = BaseInfo {
            metadata: BaseMetadata {
                cluster_name: cfg.cluster_name.clone(),
                identity: identity.to_string(),
                name: cfg.base_name.clone(),
                version: cfg.base_version.clone(),
            },
            local_ip: local_ip(cfg.local_ip.as_deref(), crate::config::local_ipv4()),
            host_name: host_name(crate::config::hostname().as_deref()),
            http_port,
            identity,
            env,
        };
        for problem in base.problems() {
            tracing::warn!(%problem, "the controller may not be able to create a Node for this base");
        }
        Ok(base)
    }

    /// The heartbeat body. `port` is 0 over MQTT and the Arklet port over HTTP (trap T21).
    pub fn status(&self, port: u16, state: BizState) -> BaseStatus {
        BaseStatus {
            base_metadata: self.metadata.clone(),
            local_host_name: self.host_name.clone(),
            local_ip: self.local_ip.clone(),
            port,
            state,
        }
    }

    /// What the controller will reject when it turns this base into a Node (trap T20): the
    /// Node name `vnode.<identity>.<env>` and the label values.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = VNodeName::new(self.identity.clone(), self.env.clone()) {
            out.push(e.to_string());
        }
        let labels = [
            ("name", &self.metadata.name),
            ("version", &self.metadata.version),
            ("clusterName", &self.metadata.cluster_name),
            ("localHostName", &self.host_name),
        ];
        for (what, value) in labels {
            if let Err(e) = value.parse::<LabelValue>() {
                out.push(format!("{what}: {e}"));
            }
        }
        out
    }
}

/// The tunnels the command line asks for, validated at start-up and spawned once the Arklet
/// HTTP port is bound (the HTTP heartbeat reports it).
#[derive(Clone, Debug)]
pub struct Tunnels {
    /// MQTT settings, if the MQTT tunnel is on.
    pub mqtt: Option<MqttSettings>,
    /// HTTP heartbeat settings, if it is on.
    pub http: Option<HttpTunnelSettings>,
    /// Who the base is (`http_port` is filled in by [`Tunnels::spawn`]).
    pub base: BaseInfo,
}

impl Tunnels {
    /// Validates the tunnel flags and the base identity; reads the TLS files.
    pub fn from_config(cfg: &Config) -> Result<Tunnels, TunnelError> {
        let http = match cfg.tunnel.http()? {
            Some(http) => {
                let api_token = cfg.api_token.clone().map(Secret::new);
                if let Some(t) = &api_token {
                    http::bearer_header(t)?;
                }
                Some(HttpTunnelSettings { api_token, ..http })
            }
            None => None,
        };
        Ok(Tunnels {
            mqtt: cfg.tunnel.mqtt()?,
            http,
            base: BaseInfo::from_config(cfg, 0)?,
        })
    }

    /// Spawns the configured tunnels on `tasks`; each stops (saying goodbye to the controller)
    /// when `cancel` fires.
    pub fn spawn<B: RuntimeBackend>(
        self,
        http_port: u16,
        service: &CommandService<B>,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        let base = BaseInfo {
            http_port,
            ..self.base
        };
        if let Some(mqtt) = self.mqtt {
            let (base, service, cancel) = (base.clone(), service.clone(), cancel.child_token());
            tasks.spawn(async move {
                if let Err(e) = run_mqtt(mqtt, base, service, cancel).await {
                    tracing::error!(error = %e, "the MQTT tunnel failed");
                }
            });
        }
        if let Some(http) = self.http {
            let (service, cancel) = (service.clone(), cancel.child_token());
            tasks.spawn(async move {
                if let Err(e) = run_http_heartbeat(http, base, service, cancel).await {
                    tracing::error!(error = %e, "the HTTP heartbeat failed");
                }
            });
        }
    }
}

/// The state a periodic heartbeat carries, from the base's `masterBizInfo` state: only a base
/// that is gone (its JVM down for longer than the configured grace) is `deactivated`; a JVM
/// that is briefly down is `broken` in `health` (the Node turns NotReady) while the heartbeat
/// stays `activated`, so the Node and its module Pods survive a container restart. Pure.
pub fn heartbeat_state(master: BizState) -> BizState {
    match master {
        BizState::Deactivated => BizState::Deactivated,
        _ => BizState::Activated,
    }
}

/// `localIP`: `POD_IP` when set, else the interface address the Java base would pick, else
/// Java's `unknown`.
pub fn local_ip(pod_ip: Option<&str>, iface: Option<Ipv4Addr>) -> String {
    match (pod_ip.map(str::trim).filter(|s| !s.is_empty()), iface) {
        (Some(ip), _) => ip.to_owned(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => "unknown".to_owned(),
    }
}

/// `localHostName`, made a valid label value (it becomes one on the Node), `unknown` if the
/// host name cannot be read.
pub fn host_name(raw: Option<&str>) -> String {
    let sanitized = LabelValue::sanitize(raw.unwrap_or_default());
    if sanitized.as_str().is_empty() {
        "unknown".to_owned()
    } else {
        sanitized.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        tunnel: TunnelArgs,
    }

    fn parse(args: &[&str]) -> TunnelArgs {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").tunnel
    }

    #[test]
    fn mqtt_is_enabled_iff_a_broker_is_given() {
        assert!(parse(&[]).mqtt().unwrap().is_none());
        assert!(parse(&["--mqtt-broker", " "]).mqtt().unwrap().is_none());
        let s = parse(&["--mqtt-broker", "broker.local"])
            .mqtt()
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.client_prefix.as_str()),
            ("broker.local", 1883, "koupleless")
        );
        assert_eq!(s.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(s.keep_alive, Duration::from_secs(60));
        assert!(s.tls.is_none() && s.username.is_none());
    }

    #[test]
    fn upstream_property_names_are_flag_aliases() {
        let a = parse(&[
            "--koupleless.arklet.mqtt.broker",
            "b",
            "--koupleless.arklet.mqtt.port",
            "8883",
            "--koupleless.arklet.mqtt.username",
            "u",
            "--koupleless.arklet.mqtt.password",
            "p",
            "--koupleless.arklet.mqtt.client.prefix",
            "pre",
            "--koupleless.arklet.http.heartbeat.endpoint",
            "http://mc:7777",
        ]);
        let s = a.mqtt().unwrap().unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.client_prefix.as_str()),
            ("b", 8883, "pre")
        );
        assert_eq!(s.username.as_deref(), Some("u"));
        assert_eq!(s.password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(a.http().unwrap().unwrap().endpoint, "http://mc:7777");
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let a = parse(&[
            "--mqtt-broker",
            "b",
            "--mqtt-username",
            "u",
            "--mqtt-password",
            "hunter2",
        ]);
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(!format!("{:?}", a.mqtt().unwrap()).contains("hunter2"));
    }

    #[test]
    fn env_is_lower_cased_and_defaults_to_dev() {
        let cases = [
            ("", "dev"),
            ("  ", "dev"),
            ("DEV", "dev"),
            ("Prod", "prod"),
            ("test_1", "test_1"),
        ];
        for (given, want) in cases {
            assert_eq!(
                parse(&["--runtime-env", given]).env().unwrap().as_str(),
                want,
                "{given:?}"
            );
        }
        assert!(matches!(
            parse(&["--runtime-env", "a.b"]).env(),
            Err(TunnelError::Env(_))
        ));
        assert!(matches!(
            parse(&["--runtime-env", "a/b"]).env(),
            Err(TunnelError::Env(_))
        ));
    }

    #[test]
    fn invalid_mqtt_settings_are_start_up_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let key = dir.path().join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        let der = dir.path().join("ca.der");
        std::fs::write(&der, [0x30, 0x82, 0x01]).unwrap();
        let (pem, key, der) = (
            pem.to_str().unwrap(),
            key.to_str().unwrap(),
            der.to_str().unwrap(),
        );
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().unwrap();

        let err = |args: &[&str]| {
            let mut all = vec!["--mqtt-broker", "b"];
            all.extend_from_slice(args);
            parse(&all).mqtt().unwrap_err()
        };
        assert!(matches!(
            err(&["--mqtt-password", "p"]),
            TunnelError::PasswordWithoutUser
        ));
        assert!(matches!(
            err(&["--mqtt-client-crt-path", pem]),
            TunnelError::ClientCertPair
        ));
        assert!(matches!(
            err(&["--mqtt-client-crt-path", pem, "--mqtt-client-key-path", key]),
            TunnelError::ClientCertWithoutCa
        ));
        assert!(matches!(
            err(&["--mqtt-ca-path", missing]),
            TunnelError::ReadFile { .. }
        ));
        assert!(matches!(
            err(&["--mqtt-ca-path", der]),
            TunnelError::NotPem { .. }
        ));
        assert!(matches!(
            err(&[
                "--mqtt-ca-path",
                pem,
                "--mqtt-client-crt-path",
                pem,
                "--mqtt-client-key-path",
                pem
            ]),
            TunnelError::NotPem {
                expected: "PRIVATE KEY",
                ..
            }
        ));
        assert!(matches!(
            err(&["--mqtt-heartbeat-interval", "0s"]),
            TunnelError::ZeroDuration(_)
        ));

        let ok = parse(&[
            "--mqtt-broker",
            "b",
            "--mqtt-ca-path",
            pem,
            "--mqtt-client-crt-path",
            pem,
            "--mqtt-client-key-path",
            key,
        ])
        .mqtt()
        .unwrap()
        .unwrap();
        let tls = ok.tls.expect("TLS on");
        assert!(tls.client.is_some());
        assert!(
            !format!("{tls:?}").contains("MIIB"),
            "key material stays out of Debug"
        );
    }

    #[test]
    fn pem_block_detection() {
        let cases: [(&str, &str, bool); 6] = [
            ("-----BEGIN CERTIFICATE-----\nx\n", "CERTIFICATE", true),
            (
                "junk\n  -----BEGIN CERTIFICATE-----  \n",
                "CERTIFICATE",
                true,
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\n", "PRIVATE KEY", true),
            ("-----BEGIN EC PRIVATE KEY-----\n", "PRIVATE KEY", true),
            ("-----BEGIN CERTIFICATE-----\n", "PRIVATE KEY", false),
            ("BEGIN CERTIFICATE\n", "CERTIFICATE", false),
        ];
        for (pem, label, want) in cases {
            assert_eq!(
                pem_has_block(pem.as_bytes(), label),
                want,
                "{pem:?} {label}"
            );
        }
    }

    #[test]
    fn http_tunnel_settings() {
        assert!(parse(&[]).http().unwrap().is_none());
        let s = parse(&[
            "--controller-endpoint",
            "http://mc:7777",
            "--fetch-baseline-on-start",
        ])
        .http()
        .unwrap()
        .unwrap();
        assert_eq!(s.interval, Duration::from_secs(12));
        assert_eq!(s.timeout, Duration::from_secs(10));
        assert!(s.fetch_baseline);
        assert!(matches!(
            parse(&["--controller-endpoint", "mc:7777"]).http(),
            Err(TunnelError::Endpoint { .. })
        ));
    }

    #[test]
    fn local_ip_and_host_name_fallbacks() {
        let ip = Some(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(local_ip(Some("10.9.9.9"), ip), "10.9.9.9");
        assert_eq!(local_ip(Some(" "), ip), "10.1.2.3");
        assert_eq!(local_ip(None, ip), "10.1.2.3");
        assert_eq!(local_ip(None, None), "unknown");
        assert_eq!(host_name(Some("base-pod-1")), "base-pod-1");
        assert_eq!(host_name(Some("my host!")), "my-host");
        assert_eq!(host_name(Some("")), "unknown");
        assert_eq!(host_name(None), "unknown");
        assert_eq!(host_name(Some(&"a".repeat(80))).len(), 63);
    }

    fn base(identity: &str, env: &str) -> BaseInfo {
        BaseInfo {
            identity: identity.parse().unwrap(),
            env: env.parse().unwrap(),
            metadata: BaseMetadata {
                cluster_name: "default".into(),
                identity: identity.into(),
                name: "TO_BE_IMPLEMENTED".into(),
                version: "1.0.0".into(),
            },
            local_ip: "192.0.2.2".into(),
            host_name: "192.0.2.2".into(),
            http_port: 1238,
        }
    }

    #[test]
    fn node_name_and_label_problems_are_reported() {
        assert!(base("192.0.2.2", "default").problems().is_empty());
        assert_eq!(base("Base_1", "dev").problems().len(), 1);
        let mut b = base("10.0.0.5", "dev");
        b.metadata.version = "1.0.0 final".into();
        assert_eq!(b.problems().len(), 1);
    }

    #[test]
    fn heartbeat_state_table() {
        let table = [
            (BizState::Activated, BizState::Activated),
            (BizState::Broken, BizState::Activated),
            (BizState::Unknown, BizState::Activated),
            (BizState::Deactivated, BizState::Deactivated),
        ];
        for (master, want) in table {
            assert_eq!(heartbeat_state(master), want, "{master:?}");
        }
    }

    #[test]
    fn heartbeat_body_matches_the_java_base() {
        // Heartbeat of the real Java Arklet (identity 192.0.2.2, env default), data part.
        let golden: serde_json::Value = serde_json::from_str(include_str!(
            "../../../protocol/tests/fixtures/real-mqtt/mqtt00_connect_queryBaseline_heartbeats.base-heart.json"
        ))
        .unwrap();
        let ours = koupleless_protocol::transport::to_value(
            &base("192.0.2.2", "default").status(0, BizState::Activated),
            koupleless_protocol::Transport::Mqtt,
        );
        assert_eq!(ours, golden["data"]);
        let http =
            serde_json::to_value(base("192.0.2.2", "default").status(1238, BizState::Deactivated))
                .unwrap();
        assert_eq!(
            (http["port"].as_u64(), http["state"].as_str()),
            (Some(1238), Some("deactivated"))
        );
    }
}
