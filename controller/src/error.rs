//! Start-up errors of the controller. Runtime failures are handled where they happen (a
//! supervisor retries its effects, tunnels reconnect) and never end the process.

use crate::tunnel::http::HttpSetupError;
use crate::tunnel::mqtt::MqttSetupError;

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// MQTT tunnel configuration.
    #[error(transparent)]
    Mqtt(#[from] MqttSetupError),
    /// HTTP tunnel configuration.
    #[error(transparent)]
    Http(#[from] HttpSetupError),
    /// Settings that contradict each other.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kubelet API's TLS material.
    #[error("kubelet API TLS: {0}")]
    KubeletTls(#[from] crate::kubelet::tls::TlsError),
    /// The kubelet API's HTTP client towards the agents.
    #[error("kubelet API client: {0}")]
    KubeletClient(#[source] reqwest::Error),
}

impl Error {
    /// Short label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Mqtt(_) => "mqtt_setup",
            Error::Http(_) => "http_setup",
            Error::Config(_) => "config",
            Error::Bind { .. } => "bind",
            Error::KubeletTls(_) | Error::KubeletClient(_) => "kubelet_setup",
        }
    }
}
