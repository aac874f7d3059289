//! One TCP connection to SOFAArk's telnet port: connect, wait for the greeting, then one
//! command at a time with a deadline on every read (spec ark-telnet §4.2). Thin I/O over
//! [`proto`](super::proto).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::proto::{self, Greeting};

/// Replies larger than this are not from a sane port (the biggest, `biz -d` of the base, is a
/// class path); reading stops rather than buffering without bound.
const MAX_REPLY_BYTES: usize = 16 << 20;

/// Why talking to the port failed. Cloneable so the driver can keep answering with the last
/// error while the port is down.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TelnetError {
    /// TCP connect failed or timed out (nothing listening yet, firewall).
    #[error("cannot connect to SOFAArk's telnet port at {addr}: {reason}")]
    Connect {
        /// Address.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// Accepted, then closed without the `sofa-ark>` greeting: the telnet server of this base
    /// JVM is broken for good (spec §1.7, window A), or another program owns the port.
    #[error(
        "{addr} accepted the connection and closed it without the sofa-ark> greeting: SOFAArk's telnet server is broken until the base JVM restarts (it was connected to during the base's start-up, spec ark-telnet §1.7), or another program owns the port"
    )]
    Bricked {
        /// Address.
        addr: String,
    },
    /// Accepted, but no greeting in time: security mode refusing this peer (spec §1.8), or
    /// not a SOFAArk port.
    #[error(
        "no sofa-ark> greeting from {addr} within {after:?}: security mode is refusing this peer (connect from 127.0.0.1), or it is not a SOFAArk telnet port"
    )]
    NoGreeting {
        /// Address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
    /// Something other than the prompt arrived first.
    #[error("{addr} is not a SOFAArk telnet port: it greeted with {got:?}")]
    Foreign {
        /// Address.
        addr: String,
        /// What it sent.
        got: String,
    },
    /// A command got no complete reply in time (spec §1.7 lists inputs that never get one).
    #[error("no reply to {line:?} within {after:?}")]
    Timeout {
        /// The command.
        line: String,
        /// How long we waited.
        after: Duration,
    },
    /// The base closed the connection (JVM stopped or restarted).
    #[error("the base closed the telnet connection")]
    Closed,
    /// Reading or writing failed.
    #[error("telnet connection I/O failed: {0}")]
    Io(String),
    /// A reply grew past any plausible size.
    #[error("reply to {0:?} exceeds {MAX_REPLY_BYTES} bytes")]
    TooLarge(String),
    /// The readiness check says the base is not far enough into its start-up to connect.
    #[error("not connecting yet: the base is not ready ({0})")]
    NotReady(String),
    /// The backend is shutting down.
    #[error("the ark-telnet backend has shut down")]
    ShutDown,
}

/// An open, greeted connection.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects and waits for the greeting (spec §4.2 step 3).
    pub async fn open(
        addr: &str,
        connect_timeout: Duration,
        greeting_timeout: Duration,
    ) -> Result<Conn, TelnetError> {
        let connect_error = |reason: String| TelnetError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_error(e.to_string())),
            Err(_) => {
                return Err(connect_error(format!(
                    "no answer within {connect_timeout:?}"
                )));
            }
        };
        // Commands are single short lines waiting for an answer: send them at once.
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            buf: Vec::new(),
        };
        let read = async {
            let mut chunk = [0u8; 256];
            loop {
                let n = conn
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| TelnetError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(TelnetError::Bricked {
                        addr: addr.to_owned(),
                    });
                }
                conn.buf.extend_from_slice(&chunk[..n]);
                match proto::greeting(&conn.buf) {
                    Greeting::Complete => return Ok(()),
                    Greeting::Partial => {}
                    Greeting::Foreign => {
                        return Err(TelnetError::Foreign {
                            addr: addr.to_owned(),
                            got: String::from_utf8_lossy(&conn.buf)
                                .chars()
                                .take(80)
                                .collect(),
                        });
                    }
                }
            }
        };
        match tokio::time::timeout(greeting_timeout, read).await {
            Ok(Ok(())) => {
                conn.buf.clear();
                Ok(conn)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TelnetError::NoGreeting {
                addr: addr.to_owned(),
                after: greeting_timeout,
            }),
        }
    }

    /// Writes one line. An error means the line was not (completely) delivered.
    pub async fn send(&mut self, line: &str) -> Result<(), TelnetError> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| TelnetError::Io(e.to_string()))
    }

    /// Reads the reply to the line just sent, with one deadline for all of it. After an error
    /// the connection must be dropped: a late reply would otherwise be taken for the next
    /// command's (spec §4.2 step 4).
    pub async fn reply(&mut self, line: &str, timeout: Duration) -> Result<String, TelnetError> {
        self.buf.clear();
        let read = async {
            let mut chunk = [0u8; 8192];
            loop {
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|e| TelnetError::Io(e.to_string()))?;
                if n == 0 {
                    return Err(TelnetError::Closed);
                }
                self.buf.extend_from_slice(&chunk[..n]);
                if let Some(body) = proto::frame_reply(&self.buf) {
                    return Ok(body);
                }
                if self.buf.len() > MAX_REPLY_BYTES {
                    return Err(TelnetError::TooLarge(line.to_owned()));
                }
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(r) => r,
            Err(_) => Err(TelnetError::Timeout {
                line: line.to_owned(),
                after: timeout,
            }),
        }
    }

    /// Says goodbye (`quit` closes the connection without a reply, spec §1.6); best effort.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_millis(200), self.stream.write_all(b"quit\n"))
            .await;
    }
}
