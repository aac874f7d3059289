//! Whether an HTTP heartbeat may be believed. Upstream stores whatever `POST /heartbeat`
//! says (spec protocol §6.1: "no auth"), so any caller could create Nodes for any identity,
//! point a live base's installs at another host, make the controller call any address, or
//! mark any base DEACTIVATED. The rules here, pure so they can be tested as a table:
//!
//! - Without the shared bearer token, the body's `localIP` must be the connection's peer
//!   address: a caller can then only name itself.
//! - A heartbeat naming a new address for a base the tunnel already knows is not believed
//!   until the known address has been asked whether it is still that base.
//! - DEACTIVATED counts only from the known address (or with the token), and never moves it.
//! - Addresses of bases this replica neither serves nor has heard from for a while are
//!   forgotten, so spoofed identities cannot grow the map without bound.

use std::net::IpAddr;
use std::time::Duration;

use http::StatusCode;

use super::Endpoint;

/// What the `Authorization` header of a heartbeat proves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No token configured, or none sent: the peer-address rule applies.
    Anonymous,
    /// The configured bearer token.
    Token,
    /// A token is configured and the header carries something else.
    BadToken,
}

/// Classifies the `Authorization` header against the configured token. A header sent to a
/// controller without a token is ignored: our agent sends its own Arklet token whether or not
/// the controller shares it.
pub fn bearer_auth(header: Option<&str>, token: Option<&str>) -> Auth {
    let (Some(token), Some(header)) = (token, header) else {
        return Auth::Anonymous;
    };
    match header.strip_prefix("Bearer ") {
        Some(sent) if constant_time_eq(sent.trim().as_bytes(), token.as_bytes()) => Auth::Token,
        _ => Auth::BadToken,
    }
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right (the agent checks its token the same way).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One heartbeat, as far as trust is concerned.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The connection's peer address, if the server knows it.
    pub peer: Option<IpAddr>,
    /// What the `Authorization` header proves.
    pub auth: Auth,
    /// The Arklet address the body names (`localIP`, `port`).
    pub endpoint: &'a Endpoint,
    /// Whether the body says DEACTIVATED.
    pub deactivated: bool,
    /// The address the tunnel already knows for this identity.
    pub known: Option<&'a Endpoint>,
}

/// What to do with a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Remember the named address (new base, or the one already known) and pass the heartbeat
    /// on.
    Accept,
    /// Pass the heartbeat on but keep the known address (a DEACTIVATED heartbeat never moves a
    /// base).
    ForwardOnly,
    /// The body names a new address for a known base: ask the known address first.
    Verify,
    /// Refuse; nothing is remembered or passed on.
    Refuse(Refusal),
}

/// Why a heartbeat was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bearer token is not the configured one.
    #[error("the bearer token is not the one this controller is configured with")]
    BadToken,
    /// The server could not tell who is calling.
    #[error("the connection's peer address is unknown; send the bearer token")]
    NoPeer,
    /// `localIP` is not an IP address, so it cannot be compared with the peer.
    #[error("localIP {0:?} is not an IP address; send the bearer token")]
    NotAnIp(String),
    /// `localIP` is not the address the heartbeat came from.
    #[error(
        "localIP {claimed} is not the address this heartbeat came from ({peer}); behind NAT or a \
         proxy, send the bearer token"
    )]
    PeerMismatch {
        /// What the body says.
        claimed: IpAddr,
        /// Where the connection came from.
        peer: IpAddr,
    },
    /// DEACTIVATED from somewhere other than the base's known address.
    #[error("a deactivated heartbeat for this base must come from its address {known}")]
    ForeignDeactivation {
        /// The known host.
        known: String,
    },
    /// The known address still answers as this base.
    #[error("the base still answers at {current}; the new address {claimed} is refused")]
    StillAnswers {
        /// The known address.
        current: String,
        /// The address the heartbeat named.
        claimed: String,
    },
    /// Another heartbeat's new address is being verified right now.
    #[error("a change of this base's address is being verified; try again later")]
    Verifying,
}

impl Refusal {
    /// HTTP status of the answer: 403 when the caller is not trusted, 409 when a trusted
    /// claim conflicts with the live base.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::StillAnswers { .. } | Refusal::Verifying => StatusCode::CONFLICT,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// Label for the tunnel error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Refusal::BadToken => "heartbeat_bad_token",
            Refusal::NoPeer | Refusal::NotAnIp(_) | Refusal::PeerMismatch { .. } => {
                "heartbeat_peer_mismatch"
            }
            Refusal::ForeignDeactivation { .. } => "heartbeat_foreign_deactivation",
            Refusal::StillAnswers { .. } | Refusal::Verifying => "heartbeat_repoint_refused",
        }
    }

    /// Short machine-readable reason for the JSON answer.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadToken => "bad_token",
            Refusal::NoPeer => "no_peer",
            Refusal::NotAnIp(_) => "local_ip_not_an_ip",
            Refusal::PeerMismatch { .. } => "peer_mismatch",
            Refusal::ForeignDeactivation { .. } => "foreign_deactivation",
            Refusal::StillAnswers { .. } => "base_still_answers",
            Refusal::Verifying => "verifying",
        }
    }
}

/// IPv4 peers of a dual-stack listener show up as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn parse_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
        .map(canonical)
}

/// The rules of the module documentation.
pub fn judge(c: &Claim<'_>) -> Verdict {
    let authenticated = match c.auth {
        Auth::BadToken => return Verdict::Refuse(Refusal::BadToken),
        Auth::Token => true,
        Auth::Anonymous => false,
    };
    let peer = c.peer.map(canonical);
    if !authenticated {
        let Some(peer) = peer else {
            return Verdict::Refuse(Refusal::NoPeer);
        };
        let Some(claimed) = parse_ip(&c.endpoint.host) else {
            return Verdict::Refuse(Refusal::NotAnIp(c.endpoint.host.clone()));
        };
        if claimed != peer {
            return Verdict::Refuse(Refusal::PeerMismatch { claimed, peer });
        }
    }
    match c.known {
        // Upstream ignores DEACTIVATED for an unknown base; there is nothing to remember.
        None if c.deactivated => Verdict::ForwardOnly,
        None => Verdict::Accept,
        Some(k) if k == c.endpoint => Verdict::Accept,
        Some(k) if c.deactivated => {
            if authenticated || (peer.is_some() && parse_ip(&k.host) == peer) {
                Verdict::ForwardOnly
            } else {
                Verdict::Refuse(Refusal::ForeignDeactivation {
                    known: k.host.clone(),
                })
            }
        }
        Some(_) => Verdict::Verify,
    }
}

/// What asking the known address (`POST /health`) gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// No connection, a timeout, an HTTP error or an answer that is not an Arklet envelope.
    NoAnswer,
    /// An Arklet envelope, with the `baseIdentity` it carried.
    Answered {
        /// `baseIdentity`, present on SUCCESS and FAILED answers.
        base_identity: Option<String>,
    },
}

/// Whether the probed address is still the base `identity`. An Arklet that answers without
/// saying who it is counts as the base: keeping a known-good address is the safe mistake.
pub fn still_there(probe: &Probe, identity: &str) -> bool {
    match probe {
        Probe::NoAnswer => false,
        Probe::Answered {
            base_identity: None,
        } => true,
        Probe::Answered {
            base_identity: Some(id),
        } => id == identity,
    }
}

/// Whether a remembered address may be forgotten: only when no vnode of this replica uses
/// it and nothing was heard from the base for `ttl`.
pub fn prunable(attached: bool, silent_for: Duration, ttl: Duration) -> bool {
    !attached && silent_for >= ttl
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ep(host: &str, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bearer_table() {
        let cases = [
            (None, None, Auth::Anonymous),
            (Some("Bearer s3cret"), None, Auth::Anonymous),
            (None, Some("s3cret"), Auth::Anonymous),
            (Some("Bearer s3cret"), Some("s3cret"), Auth::Token),
            (Some("Bearer s3cre"), Some("s3cret"), Auth::BadToken),
            (Some("Bearer s3cretx"), Some("s3cret"), Auth::BadToken),
            (Some("Basic s3cret"), Some("s3cret"), Auth::BadToken),
            (Some("s3cret"), Some("s3cret"), Auth::BadToken),
        ];
        for (header, token, want) in cases {
            assert_eq!(bearer_auth(header, token), want, "{header:?} {token:?}");
        }
    }

    #[test]
    fn judge_table() {
        let base = ep("10.0.0.5", 1238);
        let moved = ep("10.0.0.9", 1238);
        let other_port = ep("10.0.0.5", 1300);
        let host_name = ep("base-1.pods", 1238);
        let v6 = ep("::1", 1238);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 5).to_ipv6_mapped());
        let anon = Auth::Anonymous;
        let token = Auth::Token;
        use Verdict::*;
        type Case<'a> = (
            &'a str,
            Option<IpAddr>,
            Auth,
            &'a Endpoint,
            bool,
            Option<&'a Endpoint>,
            Verdict,
        );
        #[rustfmt::skip]
        let cases: Vec<Case<'_>> = vec![
            ("new base from its own address", Some(ip("10.0.0.5")), anon, &base, false, None, Accept),
            ("IPv4-mapped peer", Some(mapped), anon, &base, false, None, Accept),
            ("IPv6 peer", Some(IpAddr::V6(Ipv6Addr::LOCALHOST)), anon, &v6, false, None, Accept),
            ("same address again", Some(ip("10.0.0.5")), anon, &base, false, Some(&base), Accept),
            ("spoofed localIP", Some(ip("10.0.0.66")), anon, &base, false, None,
                Refuse(Refusal::PeerMismatch { claimed: ip("10.0.0.5"), peer: ip("10.0.0.66") })),
            ("spoofed localIP, known base", Some(ip("10.0.0.66")), anon, &base, false, Some(&base),
                Refuse(Refusal::PeerMismatch { claimed: ip("10.0.0.5"), peer: ip("10.0.0.66") })),
            ("no peer", None, anon, &base, false, None, Refuse(Refusal::NoPeer)),
            ("host name", Some(ip("10.0.0.5")), anon, &host_name, false, None,
                Refuse(Refusal::NotAnIp("base-1.pods".into()))),
            ("token from NAT", Some(ip("192.168.1.1")), token, &base, false, None, Accept),
            ("token, host name", None, token, &host_name, false, None, Accept),
            ("wrong token from its own address", Some(ip("10.0.0.5")), Auth::BadToken, &base, false, None,
                Refuse(Refusal::BadToken)),
            ("moved base, own address", Some(ip("10.0.0.9")), anon, &moved, false, Some(&base), Verify),
            ("new port", Some(ip("10.0.0.5")), anon, &other_port, false, Some(&base), Verify),
            ("moved with token", Some(ip("192.168.1.1")), token, &moved, false, Some(&base), Verify),
            ("deactivated, unknown base", Some(ip("10.0.0.5")), anon, &base, true, None, ForwardOnly),
            ("deactivated from the known address", Some(ip("10.0.0.5")), anon, &base, true, Some(&base), Accept),
            ("deactivated, known host, other port", Some(ip("10.0.0.5")), anon, &other_port, true, Some(&base), ForwardOnly),
            ("deactivated naming itself from elsewhere", Some(ip("10.0.0.9")), anon, &moved, true, Some(&base),
                Refuse(Refusal::ForeignDeactivation { known: "10.0.0.5".into() })),
            ("deactivated with token from elsewhere", Some(ip("192.168.1.1")), token, &moved, true, Some(&base), ForwardOnly),
        ];
        for (what, peer, auth, endpoint, deactivated, known, want) in cases {
            let claim = Claim {
                peer,
                auth,
                endpoint,
                deactivated,
                known,
            };
            assert_eq!(judge(&claim), want, "{what}");
        }
    }

    #[test]
    fn refusals_map_to_status_and_labels() {
        let peer = Refusal::PeerMismatch {
            claimed: ip("10.0.0.5"),
            peer: ip("10.0.0.6"),
        };
        assert_eq!(peer.status(), StatusCode::FORBIDDEN);
        assert_eq!(peer.metric_label(), "heartbeat_peer_mismatch");
        assert!(peer.to_string().contains("10.0.0.6"), "{peer}");
        let live = Refusal::StillAnswers {
            current: "10.0.0.5:1238".into(),
            claimed: "10.0.0.6:1238".into(),
        };
        assert_eq!(live.status(), StatusCode::CONFLICT);
        assert_eq!(live.reason(), "base_still_answers");
    }

    #[test]
    fn probe_table() {
        let answered = |id: Option<&str>| Probe::Answered {
            base_identity: id.map(str::to_owned),
        };
        let cases = [
            (Probe::NoAnswer, false),
            (answered(Some("base-1")), true),
            (answered(Some("base-2")), false),
            (answered(None), true),
        ];
        for (probe, want) in cases {
            assert_eq!(still_there(&probe, "base-1"), want, "{probe:?}");
        }
    }

    #[test]
    fn prune_table() {
        let s = Duration::from_secs;
        let cases = [
            (true, s(3600), s(60), false),
            (false, s(59), s(60), false),
            (false, s(60), s(60), true),
            (false, s(3600), s(60), true),
        ];
        for (attached, silent, ttl, want) in cases {
            assert_eq!(
                prunable(attached, silent, ttl),
                want,
                "{attached} {silent:?}"
            );
        }
    }
}
