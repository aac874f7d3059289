//! The readiness gate: the first connection to the telnet port must wait until the base is
//! well into its start-up, because a connection in the instant after the port opens breaks
//! SOFAArk's telnet server until the JVM restarts (spec ark-telnet §1.7, §4.2 step 1). The
//! port being open says nothing; the base's own web or readiness port does.

use std::str::FromStr;
use std::time::Duration;

/// How the agent decides the base is far enough into its start-up to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyGate {
    /// No check: only for bases known to be up before the agent starts.
    None,
    /// A TCP port of the base that opens late in its start-up (its web server), `host:port`.
    Tcp(String),
    /// An HTTP(S) URL that answers 2xx once the base is ready (e.g. its readiness probe).
    Http(String),
}

/// An unusable gate specification.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid readiness check {0:?}: use http(s)://host:port/path, tcp://host:port or none")]
pub struct GateParseError(pub String);

impl FromStr for ReadyGate {
    type Err = GateParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || GateParseError(s.to_owned());
        if s == "none" {
            return Ok(ReadyGate::None);
        }
        if let Some(hostport) = s.strip_prefix("tcp://") {
            let (host, port) = hostport.rsplit_once(':').ok_or_else(bad)?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(bad());
            }
            return Ok(ReadyGate::Tcp(hostport.to_owned()));
        }
        match url::Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(ReadyGate::Http(s.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for ReadyGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadyGate::None => f.write_str("none"),
            ReadyGate::Tcp(a) => write!(f, "tcp://{a}"),
            ReadyGate::Http(u) => f.write_str(u),
        }
    }
}

impl ReadyGate {
    /// Checks once; `Err` says why the base is not ready.
    pub async fn check(&self, http: &reqwest::Client, timeout: Duration) -> Result<(), String> {
        match self {
            ReadyGate::None => Ok(()),
            ReadyGate::Tcp(addr) => {
                match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr.as_str()))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("tcp://{addr}: {e}")),
                    Err(_) => Err(format!("tcp://{addr}: no answer within {timeout:?}")),
                }
            }
            ReadyGate::Http(url) => match http.get(url).timeout(timeout).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{url}: HTTP {}", r.status().as_u16())),
                Err(e) => Err(format!("{url}: {e}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [
            ("none", ReadyGate::None),
            (
                "tcp://127.0.0.1:8080",
                ReadyGate::Tcp("127.0.0.1:8080".into()),
            ),
            ("tcp://base:8080", ReadyGate::Tcp("base:8080".into())),
            (
                "http://127.0.0.1:8080/actuator/health/readiness",
                ReadyGate::Http("http://127.0.0.1:8080/actuator/health/readiness".into()),
            ),
            ("https://b/ready", ReadyGate::Http("https://b/ready".into())),
        ];
        for (s, want) in ok {
            assert_eq!(s.parse::<ReadyGate>().as_ref(), Ok(&want), "{s}");
            assert_eq!(want.to_string(), s);
        }
        for bad in [
            "",
            "None",
            "tcp://",
            "tcp://host",
            "tcp://:80",
            "tcp://h:99999",
            "ftp://h/x",
            "127.0.0.1:8080",
            "http://",
        ] {
            assert!(bad.parse::<ReadyGate>().is_err(), "{bad}");
        }
    }
}
