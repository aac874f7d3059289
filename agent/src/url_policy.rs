//! Which package URLs the agent fetches.
//!
//! * `--allow-url-prefix` entries are parsed into [`UrlRule`]s and compared with the parsed
//!   `bizUrl`: scheme, host (exact, or `*.domain` for its subdomains), port (explicit or the
//!   scheme's default) and a path prefix that ends at a `/` boundary. A URL with user
//!   information never matches. A raw string prefix would admit
//!   `https://repo.example.evil.com/` and `https://repo.example@evil/` for `https://repo.example`.
//! * Every redirect hop is checked against the same rules ([`check_redirect`]); a redirect
//!   from https to http is always refused.
//! * `--deny-private-addresses` refuses non-public addresses ([`is_public`]): IP literals in
//!   the URL at once, host names on the addresses DNS returns ([`PublicOnlyResolver`]), which
//!   are the addresses the connection then uses, so a name cannot pass the check and connect
//!   elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Why a URL (or a redirect hop) is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Matches no `--allow-url-prefix` rule.
    #[error("not allowed by --allow-url-prefix")]
    NotAllowed,
    /// Not `http` or `https`.
    #[error("scheme {0:?} is not fetched over the network")]
    Scheme(String),
    /// A redirect hop outside the allow-list.
    #[error("redirect to {0} is not allowed by --allow-url-prefix")]
    RedirectNotAllowed(String),
    /// A redirect from https to http.
    #[error("redirect from {from} to {to} downgrades https to http")]
    Downgrade {
        /// The hop redirecting.
        from: String,
        /// Where it pointed.
        to: String,
    },
    /// An IP literal that is not a public address.
    #[error("{0} is not a public address (--deny-private-addresses)")]
    PrivateAddress(IpAddr),
    /// A host name that resolves only to non-public addresses.
    #[error("{host} resolves only to non-public addresses {addrs:?} (--deny-private-addresses)")]
    PrivateHost {
        /// The name.
        host: String,
        /// What it resolved to.
        addrs: Vec<IpAddr>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// The host as the URL parser normalizes it (lower-case domain, `[v6]`, dotted v4).
    Exact(String),
    /// `*.domain`: any host ending in `.domain` (not `domain` itself).
    Subdomain(String),
}

/// One `--allow-url-prefix` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlRule {
    text: String,
    scheme: String,
    host: HostPattern,
    port: u16,
    path: String,
}

impl std::fmt::Display for UrlRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl UrlRule {
    /// Parses an entry such as `https://repo.example/releases/` or `https://*.example.com`.
    /// A path without a trailing `/` still ends at a segment boundary: `/releases` admits
    /// `/releases/x.jar`, not `/releases-evil/x.jar`.
    pub fn parse(rule: &str) -> Result<UrlRule, String> {
        let url = Url::parse(rule).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("scheme {:?} is not http or https", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain user information".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not contain a query or a fragment".into());
        }
        let host = url.host_str().ok_or("has no host")?;
        let host = match host.strip_prefix("*.") {
            Some(domain) if !domain.is_empty() && !domain.contains('*') => {
                HostPattern::Subdomain(domain.to_owned())
            }
            _ if host.contains('*') => {
                return Err("`*` is allowed only as the whole first label (`*.domain`)".into());
            }
            _ => HostPattern::Exact(host.to_owned()),
        };
        let port = url
            .port_or_known_default()
            .ok_or("has no port and no default port")?;
        Ok(UrlRule {
            text: rule.to_owned(),
            scheme: url.scheme().to_owned(),
            host,
            port,
            path: url.path().to_owned(),
        })
    }

    /// Whether `url` is under this rule.
    pub fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme || !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        let host_ok = match (&self.host, url.host()) {
            (HostPattern::Exact(h), Some(_)) => url.host_str() == Some(h.as_str()),
            (HostPattern::Subdomain(d), Some(Host::Domain(name))) => name
                .strip_suffix(d.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            _ => false,
        };
        host_ok && url.port_or_known_default() == Some(self.port) && path_under(&self.path, url)
    }
}

/// Whether the URL's path lies under `prefix` at a `/` boundary. An encoded `/` or `\` in the
/// path never matches: a server may decode it and walk out of the prefix.
fn path_under(prefix: &str, url: &Url) -> bool {
    let path = url.path();
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return false;
    }
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// Parses every entry; the first bad one is an error naming it.
pub fn parse_rules(entries: &[String]) -> Result<Vec<UrlRule>, (String, String)> {
    entries
        .iter()
        .map(|e| UrlRule::parse(e).map_err(|reason| (e.clone(), reason)))
        .collect()
}

/// Checks one network URL (the first request or a redirect target) before connecting.
pub fn check_url(url: &Url, rules: &[UrlRule], deny_private: bool) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::Scheme(url.scheme().to_owned()));
    }
    if !rules.is_empty() && !rules.iter().any(|r| r.matches(url)) {
        return Err(Refusal::NotAllowed);
    }
    if deny_private {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = ip.filter(|ip| !is_public(*ip)) {
            return Err(Refusal::PrivateAddress(ip));
        }
    }
    Ok(())
}

/// Checks a redirect from `from` to `to`: never https → http, and `to` must pass
/// [`check_url`].
pub fn check_redirect(
    from: &Url,
    to: &Url,
    rules: &[UrlRule],
    deny_private: bool,
) -> Result<(), Refusal> {
    if from.scheme() == "https" && to.scheme() == "http" {
        return Err(Refusal::Downgrade {
            from: from.to_string(),
            to: to.to_string(),
        });
    }
    check_url(to, rules, deny_private).map_err(|e| match e {
        Refusal::NotAllowed => Refusal::RedirectNotAllowed(to.to_string()),
        other => other,
    })
}

/// Whether an address is public: not loopback, unspecified, private (RFC 1918, IPv6 unique
/// local), link-local (incl. 169.254.169.254 metadata services), shared (100.64/10),
/// benchmarking, documentation, broadcast, multicast or reserved. IPv4-mapped and
/// IPv4-compatible IPv6 addresses are judged by their IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed inside)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b)) // NAT64: embeds an IPv4 address of any kind
}

/// A DNS resolver that returns only public addresses and fails when a name has none, so
/// reqwest never connects to a private address through a name (nor through a redirect to
/// one).
#[derive(Clone, Copy, Debug, Default)]
pub struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                all.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let addrs = all.iter().map(SocketAddr::ip).collect();
                return Err(Box::new(Refusal::PrivateHost { host, addrs }) as _);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Finds a [`Refusal`] in an error's source chain (reqwest wraps resolver and redirect-policy
/// errors).
pub fn find_refusal(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refusal>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(entries: &[&str]) -> Vec<UrlRule> {
        entries.iter().map(|e| UrlRule::parse(e).unwrap()).collect()
    }

    fn allowed(rules: &[UrlRule], url: &str) -> bool {
        check_url(&Url::parse(url).unwrap(), rules, false).is_ok()
    }

    #[test]
    fn rules_compare_parsed_urls_not_strings() {
        let r = rules(&["https://repo.example"]);
        for (url, ok) in [
            ("https://repo.example/x.jar", true),
            ("https://REPO.example/a/b.jar", true),
            ("https://repo.example:443/x.jar", true),
            ("https://repo.example.evil.com/x.jar", false),
            ("https://repo.example@evil/x.jar", false),
            ("https://user:pw@repo.example/x.jar", false),
            ("https://repo.example:8443/x.jar", false),
            ("http://repo.example/x.jar", false),
            ("https://repo.examplex/x.jar", false),
        ] {
            assert_eq!(allowed(&r, url), ok, "{url}");
        }
    }

    #[test]
    fn path_prefix_ends_at_a_slash() {
        let r = rules(&["https://repo.example/releases", "http://10.0.0.1:8080/a/"]);
        for (url, ok) in [
            ("https://repo.example/releases/x.jar", true),
            ("https://repo.example/releases", true),
            ("https://repo.example/releases-evil/x.jar", false),
            ("https://repo.example/releases/../secret/x.jar", false),
            ("https://repo.example/releases/%2e%2e/secret/x.jar", false),
            ("https://repo.example/releases/..%2fsecret/x.jar", false),
            ("https://repo.example/other/x.jar", false),
            ("http://10.0.0.1:8080/a/x.jar", true),
            ("http://10.0.0.1:8080/a", false),
            ("http://10.0.0.1/a/x.jar", false),
        ] {
            assert_eq!(allowed(&r, url), ok, "{url}");
        }
    }

    #[test]
    fn wildcard_matches_subdomains_only() {
        let r = rules(&["https://*.example.com/"]);
        for (url, ok) in [
            ("https://a.example.com/x.jar", true),
            ("https://a.b.example.com/x.jar", true),
            ("https://example.com/x.jar", false),
            ("https://evilexample.com/x.jar", false),
            ("https://a.example.com.evil/x.jar", false),
        ] {
            assert_eq!(allowed(&r, url), ok, "{url}");
        }
    }

    #[test]
    fn bad_rules_are_refused() {
        for bad in [
            "repo.example",
            "ftp://repo.example/",
            "https://u:p@repo.example/",
            "https://repo.example/?x=1",
            "https://a*.example.com/",
            "https://*.*.example.com/",
        ] {
            assert!(UrlRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_hops() {
        let r = rules(&["https://repo.example/", "http://plain.example/"]);
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(
            check_redirect(
                &u("https://repo.example/a"),
                &u("https://repo.example/b"),
                &r,
                false
            )
            .is_ok()
        );
        assert!(matches!(
            check_redirect(
                &u("https://repo.example/a"),
                &u("http://plain.example/b"),
                &r,
                false
            ),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            check_redirect(
                &u("https://repo.example/a"),
                &u("http://169.254.169.254/latest"),
                &[],
                false
            ),
            Err(Refusal::Downgrade { .. })
        ));
        assert!(matches!(
            check_redirect(
                &u("http://plain.example/a"),
                &u("http://169.254.169.254/x"),
                &r,
                false
            ),
            Err(Refusal::RedirectNotAllowed(_))
        ));
        assert!(matches!(
            check_redirect(
                &u("http://h.example/a"),
                &u("http://169.254.169.254/x"),
                &[],
                true
            ),
            Err(Refusal::PrivateAddress(_))
        ));
        assert!(
            check_redirect(
                &u("http://plain.example/a"),
                &u("https://repo.example/b"),
                &r,
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn public_address_table() {
        for (ip, public) in [
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("127.0.0.1", false),
            ("10.1.2.3", false),
            ("172.16.0.1", false),
            ("172.32.0.1", true),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("100.64.0.1", false),
            ("0.0.0.0", false),
            ("255.255.255.255", false),
            ("224.0.0.1", false),
            ("::1", false),
            ("::", false),
            ("fd00::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::a9fe:a9fe", false),
            ("2606:4700:4700::1111", true),
        ] {
            assert_eq!(is_public(ip.parse().unwrap()), public, "{ip}");
        }
    }
}
