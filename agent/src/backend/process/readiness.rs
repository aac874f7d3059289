//! When a started module counts as up.
//!
//! Per module, from the install request's `envs` (the backend's configured default applies to
//! keys that are absent):
//!
//! | key | value | meaning |
//! | --- | --- | --- |
//! | `koupleless.agent.ready.tcp` | port, `1`-`65535` | up once `127.0.0.1:<port>` accepts a TCP connection |
//! | `koupleless.agent.ready.log` | text | up once a line containing the text appears in the module's log |
//!
//! An empty value switches that check off (overriding a default). With both set, both must
//! pass. With neither, the module is up when its JVM is still alive after the backend's
//! settle time: that is how a module whose `main` throws at once is caught as broken.
//! Whatever the check, a JVM that exits before being up fails the start, and one that is not
//! up within the start timeout is stopped and reported as timed out.

use std::collections::BTreeMap;
use std::time::Duration;

/// Request env key: TCP port whose opening means the module is up.
pub const READY_TCP_KEY: &str = "koupleless.agent.ready.tcp";
/// Request env key: text whose appearance in the module log means the module is up.
pub const READY_LOG_KEY: &str = "koupleless.agent.ready.log";

/// The readiness checks for one module (both `None`: alive after the settle time).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Port on 127.0.0.1 that must accept a connection.
    pub tcp_port: Option<u16>,
    /// Text a log line must contain.
    pub log_line: Option<String>,
}

/// An unusable readiness setting in a request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadinessError {
    /// The TCP port is not a number in 1..=65535.
    #[error("{READY_TCP_KEY}={0:?} is not a TCP port (1-65535)")]
    BadPort(String),
}

impl Readiness {
    /// The checks for a module: `envs` keys override `default` (see the module docs).
    pub fn from_envs(
        envs: &BTreeMap<String, String>,
        default: &Readiness,
    ) -> Result<Readiness, ReadinessError> {
        let tcp_port = match envs.get(READY_TCP_KEY).map(|v| v.trim()) {
            None => default.tcp_port,
            Some("") => None,
            Some(v) => match v.parse::<u16>() {
                Ok(port) if port > 0 => Some(port),
                _ => return Err(ReadinessError::BadPort(v.to_string())),
            },
        };
        let log_line = match envs.get(READY_LOG_KEY) {
            None => default.log_line.clone(),
            Some(v) if v.is_empty() => None,
            Some(v) => Some(v.clone()),
        };
        Ok(Readiness { tcp_port, log_line })
    }

    /// Whether no check is configured, so only the settle time decides.
    pub fn settle_only(&self) -> bool {
        self.tcp_port.is_none() && self.log_line.is_none()
    }
}

/// What the start loop has seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observation {
    /// The JVM has exited.
    pub exited: bool,
    /// The TCP check has passed (once passed, it stays passed).
    pub tcp_open: bool,
    /// The log line has appeared.
    pub log_seen: bool,
    /// Time since the JVM was spawned.
    pub elapsed: Duration,
}

/// The start loop's next move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The module is up.
    Ready,
    /// Keep polling.
    Wait,
    /// The JVM died while starting.
    Exited,
    /// Not up within the start timeout.
    TimedOut,
}

/// Decides the next move. Exit beats everything (a module that printed its ready line and
/// died is broken); readiness beats the timeout when both happen in the same poll.
pub(crate) fn verdict(
    r: &Readiness,
    seen: Observation,
    settle: Duration,
    timeout: Duration,
) -> Verdict {
    let ready = if r.settle_only() {
        seen.elapsed >= settle
    } else {
        (r.tcp_port.is_none() || seen.tcp_open) && (r.log_line.is_none() || seen.log_seen)
    };
    if seen.exited {
        Verdict::Exited
    } else if ready {
        Verdict::Ready
    } else if seen.elapsed >= timeout {
        Verdict::TimedOut
    } else {
        Verdict::Wait
    }
}

/// Finds a needle in a byte stream fed in arbitrary chunks (the log file as it grows), keeping
/// just enough of the previous chunk to catch a match split across two reads.
#[derive(Debug)]
pub(crate) struct LogMatcher {
    needle: Vec<u8>,
    carry: Vec<u8>,
    found: bool,
}

impl LogMatcher {
    /// Looks for `needle` (non-empty).
    pub(crate) fn new(needle: &str) -> Self {
        LogMatcher {
            needle: needle.as_bytes().to_vec(),
            carry: Vec::new(),
            found: false,
        }
    }

    /// Feeds the next chunk; returns whether the needle has been seen (now or earlier).
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> bool {
        if self.found || self.needle.is_empty() {
            self.found = true;
            return true;
        }
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(chunk);
        self.found = window
            .windows(self.needle.len())
            .any(|w| w == self.needle.as_slice());
        let keep = (self.needle.len() - 1).min(window.len());
        self.carry = window.split_off(window.len() - keep);
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn request_envs_override_the_default() {
        let none = Readiness::default();
        let default = Readiness {
            tcp_port: Some(8080),
            log_line: Some("Started".into()),
        };
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a Readiness, Readiness);
        let cases: &[Case<'_>] = &[
            (&[], &none, Readiness::default()),
            (&[], &default, default.clone()),
            (
                &[(READY_TCP_KEY, "9000")],
                &none,
                Readiness {
                    tcp_port: Some(9000),
                    log_line: None,
                },
            ),
            (
                &[(READY_TCP_KEY, " 9000 ")],
                &none,
                Readiness {
                    tcp_port: Some(9000),
                    log_line: None,
                },
            ),
            (
                &[(READY_TCP_KEY, "")],
                &default,
                Readiness {
                    tcp_port: None,
                    log_line: Some("Started".into()),
                },
            ),
            (
                &[(READY_LOG_KEY, "")],
                &default,
                Readiness {
                    tcp_port: Some(8080),
                    log_line: None,
                },
            ),
            (
                &[(READY_LOG_KEY, " up ")],
                &none,
                Readiness {
                    tcp_port: None,
                    log_line: Some(" up ".into()),
                },
            ),
            (&[("other", "x")], &default, default.clone()),
        ];
        for (pairs, def, want) in cases {
            assert_eq!(
                Readiness::from_envs(&envs(pairs), def).as_ref(),
                Ok(want),
                "envs {pairs:?}"
            );
        }
        for bad in ["0", "65536", "-1", "http", "80.5"] {
            assert_eq!(
                Readiness::from_envs(&envs(&[(READY_TCP_KEY, bad)]), &none),
                Err(ReadinessError::BadPort(bad.to_string()))
            );
        }
    }

    #[test]
    fn verdicts() {
        let settle = Duration::from_millis(300);
        let timeout = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let plain = Readiness::default();
        let tcp = Readiness {
            tcp_port: Some(1),
            log_line: None,
        };
        let log = Readiness {
            tcp_port: None,
            log_line: Some("up".into()),
        };
        let both = Readiness {
            tcp_port: Some(1),
            log_line: Some("up".into()),
        };
        let obs = |exited, tcp_open, log_seen, elapsed| Observation {
            exited,
            tcp_open,
            log_seen,
            elapsed,
        };
        let cases = [
            (&plain, obs(false, false, false, ms(100)), Verdict::Wait),
            (&plain, obs(false, false, false, ms(300)), Verdict::Ready),
            (&plain, obs(true, false, false, ms(100)), Verdict::Exited),
            (&plain, obs(true, false, false, ms(400)), Verdict::Exited),
            (&tcp, obs(false, false, false, ms(5000)), Verdict::Wait),
            (&tcp, obs(false, true, false, ms(1)), Verdict::Ready),
            (&log, obs(false, false, true, ms(1)), Verdict::Ready),
            (&log, obs(false, true, false, ms(1)), Verdict::Wait),
            (&both, obs(false, true, false, ms(1)), Verdict::Wait),
            (&both, obs(false, true, true, ms(1)), Verdict::Ready),
            (&both, obs(true, true, true, ms(1)), Verdict::Exited),
            (
                &tcp,
                obs(false, false, false, ms(10_000)),
                Verdict::TimedOut,
            ),
            (&tcp, obs(false, true, false, ms(10_000)), Verdict::Ready),
        ];
        for (r, seen, want) in cases {
            assert_eq!(verdict(r, seen, settle, timeout), want, "{r:?} {seen:?}");
        }
    }

    #[test]
    fn log_matcher_finds_needles_split_across_chunks() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("ready", &["koupleless ready\n"], true),
            ("ready", &["rea", "dy"], true),
            ("ready", &["r", "e", "a", "d", "y"], true),
            ("ready", &["rea", "xdy"], false),
            ("ready", &["", "not yet", ""], false),
            ("ready", &["ready", "anything"], true),
            ("x", &["abc", "x"], true),
        ];
        for (needle, chunks, want) in cases {
            let mut m = LogMatcher::new(needle);
            let got = chunks.iter().fold(false, |_, c| m.feed(c.as_bytes()));
            assert_eq!(got, *want, "needle {needle:?} chunks {chunks:?}");
        }
    }
}
