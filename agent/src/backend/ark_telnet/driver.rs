//! The connection driver: the one task that owns the TCP connection to the telnet port. It
//! connects only after the readiness gate passes, keeps one connection open (a connection
//! per poll would log two lines per connect in the base, spec §1.3), reconnects with
//! backoff, answers one command at a time, and drops the connection after any failed read
//! so a late reply is never paired with the wrong command (spec §4.2).

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, TelnetError};
use super::gate::ReadyGate;
use super::watch::next_backoff;

/// What the driver needs to know.
#[derive(Clone, Debug)]
pub struct DriverSettings {
    /// `host:port` of the telnet port.
    pub addr: String,
    /// Checked before every connection attempt.
    pub gate: ReadyGate,
    /// TCP connect (and gate check) deadline.
    pub connect_timeout: Duration,
    /// Deadline for the greeting.
    pub greeting_timeout: Duration,
    /// Deadline for a whole reply.
    pub command_timeout: Duration,
    /// First reconnect delay, and the interval between readiness checks.
    pub reconnect_min: Duration,
    /// Longest reconnect delay; also the delay after finding the port broken.
    pub reconnect_max: Duration,
}

/// A failed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandFailure {
    /// What went wrong.
    pub error: TelnetError,
    /// The line was written, so the base may have acted on it; the reply is what was lost.
    pub sent: bool,
}

/// One command for the driver.
#[derive(Debug)]
pub struct Request {
    /// The line, without terminator.
    pub line: String,
    /// Where the reply body goes.
    pub reply: oneshot::Sender<Result<String, CommandFailure>>,
}

enum Link {
    Up(Conn),
    Down {
        retry_at: Instant,
        backoff: Duration,
        last: TelnetError,
    },
}

impl Link {
    fn retry_at(&self) -> Option<Instant> {
        match self {
            Link::Up(_) => None,
            Link::Down { retry_at, .. } => Some(*retry_at),
        }
    }
}

/// Runs until `cancel` fires or every sender is gone.
pub async fn run(s: DriverSettings, mut rx: mpsc::Receiver<Request>, cancel: CancellationToken) {
    let http = reqwest::Client::new();
    let mut link = Link::Down {
        retry_at: Instant::now(),
        backoff: Duration::ZERO,
        last: TelnetError::NotReady("not checked yet".into()),
    };
    loop {
        let retry_at = link.retry_at();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            req = rx.recv() => {
                let Some(req) = req else { break };
                if link.retry_at().is_some_and(|t| t <= Instant::now()) {
                    link = connect(&s, &http, link, &cancel).await;
                }
                let result = match &mut link {
                    Link::Up(conn) => {
                        let outcome = tokio::select! {
                            _ = cancel.cancelled() => Err(CommandFailure { error: TelnetError::ShutDown, sent: true }),
                            r = exchange(conn, &req.line, s.command_timeout) => r,
                        };
                        if let Err(f) = &outcome {
                            tracing::warn!(addr = %s.addr, error = %f.error, "telnet command failed; reconnecting");
                            link = Link::Down {
                                retry_at: Instant::now() + s.reconnect_min,
                                backoff: s.reconnect_min,
                                last: f.error.clone(),
                            };
                        }
                        outcome
                    }
                    Link::Down { last, .. } => Err(CommandFailure { error: last.clone(), sent: false }),
                };
                let _ = req.reply.send(result);
            }
            _ = sleep_until(retry_at) => {
                link = connect(&s, &http, link, &cancel).await;
            }
        }
    }
    if let Link::Up(conn) = link {
        conn.quit().await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn exchange(
    conn: &mut Conn,
    line: &str,
    timeout: Duration,
) -> Result<String, CommandFailure> {
    conn.send(line)
        .await
        .map_err(|error| CommandFailure { error, sent: false })?;
    conn.reply(line, timeout)
        .await
        .map_err(|error| CommandFailure { error, sent: true })
}

/// One connection attempt from `Down`; logs only changes, so a base that is down for an
/// hour does not fill the agent's log.
async fn connect(
    s: &DriverSettings,
    http: &reqwest::Client,
    prev: Link,
    cancel: &CancellationToken,
) -> Link {
    let (backoff, last) = match prev {
        Link::Up(conn) => return Link::Up(conn),
        Link::Down { backoff, last, .. } => (backoff, last),
    };
    let attempt = async {
        s.gate
            .check(http, s.connect_timeout)
            .await
            .map_err(TelnetError::NotReady)?;
        Conn::open(&s.addr, s.connect_timeout, s.greeting_timeout).await
    };
    let result = tokio::select! {
        _ = cancel.cancelled() => Err(TelnetError::ShutDown),
        r = attempt => r,
    };
    let now = Instant::now();
    match result {
        Ok(conn) => {
            tracing::info!(addr = %s.addr, "connected to SOFAArk's telnet port");
            Link::Up(conn)
        }
        Err(e) => {
            if e != last {
                match &e {
                    TelnetError::NotReady(_) => {
                        tracing::info!(addr = %s.addr, reason = %e, "waiting for the base before connecting")
                    }
                    TelnetError::Bricked { .. } => {
                        tracing::error!(addr = %s.addr, error = %e, "SOFAArk telnet port unusable")
                    }
                    _ => {
                        tracing::warn!(addr = %s.addr, error = %e, "cannot reach SOFAArk's telnet port")
                    }
                }
            }
            let (retry_in, backoff) = match &e {
                // Checking readiness costs the base nothing: keep checking at the short
                // interval so the first connection follows readiness closely.
                TelnetError::NotReady(_) => (s.reconnect_min, backoff),
                // Broken until the JVM restarts: retrying fast would only find it broken,
                // and right after a restart the gate guards the next attempt.
                TelnetError::Bricked { .. } => (s.reconnect_max, s.reconnect_max),
                _ => {
                    let b = next_backoff(backoff, s.reconnect_min, s.reconnect_max);
                    (b, b)
                }
            };
            Link::Down {
                retry_at: now + retry_in,
                backoff,
                last: e,
            }
        }
    }
}
