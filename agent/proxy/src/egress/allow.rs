//! The egress allowlist: patterns, targets, matching (see [`Allowlist`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The ports a pattern without a port allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// Longest DNS name, in its dotted text form (RFC 1035 §2.3.4).
const MAX_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
const MAX_LABEL_LEN: usize = 63;

/// A host as a request names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl Host {
    /// Parses a host as written in a URI authority (`[v6]` in brackets) or
    /// a pattern. Names are lowercased and lose one trailing dot.
    pub fn parse(s: &str) -> Result<Self, TargetError> {
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            return inner
                .parse::<Ipv6Addr>()
                .map(|ip| Self::Ip(IpAddr::V6(ip)))
                .map_err(|_| TargetError::BadHost(s.to_owned()));
        }
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(Self::Ip(IpAddr::V4(ip)));
        }
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Ok(Self::Ip(IpAddr::V6(ip)));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if !is_dns_name(&name) {
            return Err(TargetError::BadHost(s.to_owned()));
        }
        Ok(Self::Name(name))
    }
}

/// Letters, digits, `-` and `_` (seen in real service names), in labels of
/// 1..=63 bytes, 253 bytes at most in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Where a request wants to go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// A request target that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a DNS name or IP literal.
    #[error("invalid host {0:?}")]
    BadHost(String),
    /// No port where one is required (CONNECT).
    #[error("missing port in {0:?}")]
    MissingPort(String),
}

impl Target {
    /// The target of a URI authority (`host`, `host:port`, `[v6]:port`;
    /// user info is ignored by the caller), with `default_port` when it
    /// has no port (`None`: the port is required).
    pub fn from_authority(
        authority: &http::uri::Authority,
        default_port: Option<u16>,
    ) -> Result<Self, TargetError> {
        let host = Host::parse(authority.host())?;
        let port = authority
            .port_u16()
            .or(default_port)
            .ok_or_else(|| TargetError::MissingPort(authority.to_string()))?;
        Ok(Self { host, port })
    }
}

/// Which ports a pattern allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ports {
    /// 80 and 443.
    Default,
    /// One port.
    One(u16),
    /// Any port (`:*`).
    Any,
}

impl Ports {
    fn allows(self, port: u16) -> bool {
        match self {
            Self::Default => DEFAULT_PORTS.contains(&port),
            Self::One(p) => p == port,
            Self::Any => true,
        }
    }
}

/// Which hosts a pattern allows.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// Strict subdomains of this name (`*.name`).
    SubdomainsOf(String),
}

/// One allowlist entry. See [`Allowlist`] for the forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    host: HostPattern,
    ports: Ports,
}

/// An allowlist entry that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid egress allowlist pattern {pattern:?}: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| PatternError {
            pattern: text.to_owned(),
            reason,
        };
        let s = text.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        // A bare IPv6 address has colons but no port.
        if let Ok(ip) = s.parse::<Ipv6Addr>() {
            return Ok(Self {
                text: text.to_owned(),
                host: HostPattern::Exact(Host::Ip(IpAddr::V6(ip))),
                ports: Ports::Default,
            });
        }
        // Split off the port: after `]` for a bracketed IPv6 address, after
        // the only colon otherwise.
        let (host, port) = if s.starts_with('[') {
            match s.find(']') {
                Some(end) => match &s[end + 1..] {
                    "" => (&s[..=end], None),
                    rest => match rest.strip_prefix(':') {
                        Some(port) => (&s[..=end], Some(port)),
                        None => return Err(err("expected [ipv6] or [ipv6]:port")),
                    },
                },
                None => return Err(err("unclosed [")),
            }
        } else {
            match s.split_once(':') {
                Some((host, port)) if !host.is_empty() && !port.contains(':') => (host, Some(port)),
                Some(_) => return Err(err("expected host, host:port, *.domain or *.domain:port")),
                None => (s, None),
            }
        };
        let ports = match port {
            None => Ports::Default,
            Some("*") => Ports::Any,
            Some(port) => match port.parse::<u16>() {
                Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ports::One(p),
                _ => return Err(err("the port must be 1-65535 or *")),
            },
        };
        let host = if let Some(domain) = host.strip_prefix("*.") {
            match Host::parse(domain) {
                Ok(Host::Name(name)) if name.contains('.') => HostPattern::SubdomainsOf(name),
                Ok(Host::Name(_)) => {
                    return Err(err(
                        "a wildcard needs a domain of at least two labels (*.example.com)",
                    ));
                }
                Ok(Host::Ip(_)) => {
                    return Err(err("a wildcard cannot stand for part of an IP address"));
                }
                Err(_) => return Err(err("invalid domain after *.")),
            }
        } else if host.contains('*') {
            return Err(err(
                "* is allowed only as the whole first label (*.example.com)",
            ));
        } else {
            match Host::parse(host) {
                Ok(h) => HostPattern::Exact(h),
                Err(_) => return Err(err("invalid host name or IP address")),
            }
        };
        Ok(Self {
            text: text.to_owned(),
            host,
            ports,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Pattern {
    /// Whether this pattern allows `target`.
    pub fn matches(&self, target: &Target) -> bool {
        if !self.ports.allows(target.port) {
            return false;
        }
        match (&self.host, &target.host) {
            (HostPattern::Exact(h), t) => h == t,
            (HostPattern::SubdomainsOf(domain), Host::Name(name)) => name
                .strip_suffix(domain.as_str())
                .and_then(|prefix| prefix.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            (HostPattern::SubdomainsOf(_), Host::Ip(_)) => false,
        }
    }
}

/// The allowlist: which `host:port` targets the VM may reach. A target is
/// allowed when any pattern matches it; an empty list allows nothing.
///
/// Pattern forms (case-insensitive; a trailing dot on a name is ignored):
///
/// | pattern | matches |
/// | --- | --- |
/// | `example.com` | the host `example.com` on ports 80 and 443 |
/// | `example.com:8443` | the host `example.com` on port 8443 only |
/// | `example.com:*` | the host `example.com` on any port |
/// | `*.example.com` | any subdomain of `example.com` (`a.example.com`, `a.b.example.com`), **not** `example.com` itself, on ports 80 and 443 |
/// | `*.example.com:8443` | any subdomain, port 8443 |
/// | `10.0.0.5`, `10.0.0.5:5000` | that IPv4 address (as an IP literal in the request) |
/// | `::1`, `[::1]`, `[::1]:5000` | that IPv6 address |
///
/// A pattern without a port allows **the standard web ports, 80 and 443**,
/// for CONNECT and plain HTTP alike: listing a host lets an algorithm use it
/// as a web server (`https://host/` goes through CONNECT to 443,
/// `http://host/` to 80) but not, say, its SSH or SMTP port; those need the
/// port spelled out.
///
/// Matching is on the name the client asked for; names are not resolved. An
/// IP pattern matches only requests for that IP literal, and a name pattern
/// never matches an IP literal. An empty allowlist denies everything; there
/// is no match-all pattern.
///
/// ```
/// use cocos_proxy::egress::{Allowlist, Host, Target};
///
/// let allow = Allowlist::new(["pypi.org", "*.pythonhosted.org"]).unwrap();
/// let t = |h: &str, port| Target { host: Host::parse(h).unwrap(), port };
/// assert!(allow.permits(&t("PyPI.org", 443)));
/// assert!(allow.permits(&t("files.pythonhosted.org", 443)));
/// assert!(!allow.permits(&t("pythonhosted.org", 443)));
/// assert!(!allow.permits(&t("pypi.org", 22)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    patterns: Vec<Pattern>,
}

impl Allowlist {
    /// Parses every pattern; the first invalid one is the error.
    pub fn new<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| p.as_ref().parse())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether some pattern allows `target`.
    pub fn permits(&self, target: &Target) -> bool {
        self.patterns.iter().any(|p| p.matches(target))
    }

    /// Whether the list is empty (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The patterns, in the order given.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: Host::parse(host).unwrap(),
            port,
        }
    }

    fn allows(patterns: &[&str], host: &str, port: u16) -> bool {
        Allowlist::new(patterns)
            .unwrap()
            .permits(&target(host, port))
    }

    #[test]
    fn empty_list_denies_everything() {
        assert!(!allows(&[], "example.com", 443));
        assert!(!allows(&[], "127.0.0.1", 80));
    }

    #[test]
    fn bare_host_allows_ports_80_and_443_only() {
        assert!(allows(&["example.com"], "example.com", 443));
        assert!(allows(&["example.com"], "example.com", 80));
        assert!(!allows(&["example.com"], "example.com", 22));
        assert!(!allows(&["example.com"], "example.com", 8080));
    }

    #[test]
    fn host_with_port_allows_that_port_only() {
        assert!(allows(&["example.com:8443"], "example.com", 8443));
        assert!(!allows(&["example.com:8443"], "example.com", 443));
    }

    #[test]
    fn star_port_allows_any_port() {
        assert!(allows(&["example.com:*"], "example.com", 22));
        assert!(allows(&["example.com:*"], "example.com", 65535));
    }

    #[test]
    fn matching_ignores_case_and_a_trailing_dot() {
        assert!(allows(&["Example.COM"], "example.com", 443));
        assert!(allows(&["example.com"], "EXAMPLE.com.", 443));
        assert!(allows(&["example.com."], "example.com", 443));
        assert!(allows(&["*.Example.com"], "API.example.COM", 443));
    }

    #[test]
    fn exact_host_does_not_match_other_names() {
        assert!(!allows(&["example.com"], "www.example.com", 443));
        assert!(!allows(&["example.com"], "example.com.evil.net", 443));
        assert!(!allows(&["example.com"], "notexample.com", 443));
    }

    #[test]
    fn wildcard_matches_subdomains_at_any_depth_but_not_the_apex() {
        assert!(allows(&["*.example.com"], "a.example.com", 443));
        assert!(allows(&["*.example.com"], "a.b.example.com", 443));
        assert!(!allows(&["*.example.com"], "example.com", 443));
    }

    #[test]
    fn wildcard_does_not_match_lookalike_names() {
        assert!(!allows(&["*.example.com"], "evilexample.com", 443));
        assert!(!allows(&["*.example.com"], "a.example.com.evil.net", 443));
        assert!(!allows(&["*.example.com"], "example.com.a", 443));
    }

    #[test]
    fn wildcard_with_port() {
        assert!(allows(&["*.example.com:8443"], "a.example.com", 8443));
        assert!(!allows(&["*.example.com:8443"], "a.example.com", 443));
    }

    #[test]
    fn ip_literals_match_only_the_same_address() {
        assert!(allows(&["10.0.0.5"], "10.0.0.5", 443));
        assert!(allows(&["10.0.0.5:5000"], "10.0.0.5", 5000));
        assert!(!allows(&["10.0.0.5"], "10.0.0.6", 443));
        assert!(!allows(&["10.0.0.5:5000"], "10.0.0.5", 5001));
    }

    #[test]
    fn ipv6_literals_in_every_spelling() {
        assert!(allows(&["::1"], "[::1]", 443));
        assert!(allows(&["[::1]"], "[0:0:0:0:0:0:0:1]", 80));
        assert!(allows(&["[::1]:5000"], "[::1]", 5000));
        assert!(allows(&["[2001:DB8::1]:*"], "[2001:db8::1]", 9));
        assert!(!allows(&["::1"], "[::2]", 443));
    }

    #[test]
    fn names_and_ip_literals_never_match_each_other() {
        assert!(!allows(&["localhost"], "127.0.0.1", 80));
        assert!(!allows(&["127.0.0.1"], "localhost", 80));
        assert!(!allows(&["*.0.0.1"], "127.0.0.1", 80));
    }

    #[test]
    fn any_matching_pattern_is_enough() {
        let list = ["a.example", "b.example:8080"];
        assert!(allows(&list, "a.example", 443));
        assert!(allows(&list, "b.example", 8080));
        assert!(!allows(&list, "b.example", 443));
    }

    #[test]
    fn invalid_patterns_are_refused_with_the_pattern_named() {
        for bad in [
            "",
            "*",
            "*:443",
            "*.com",
            "a.*.example.com",
            "*example.com",
            "example.com:0",
            "example.com:65536",
            "example.com:+80",
            "example.com:",
            ":443",
            "exa mple.com",
            "http://example.com",
            "*.10.0.0.1",
            "[::1",
            "[::1]x",
            "[example.com]",
            "a:b:c",
        ] {
            let e = bad.parse::<Pattern>().unwrap_err();
            assert_eq!(e.pattern, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn list_error_is_the_first_invalid_pattern() {
        let e = Allowlist::new(["ok.example", "bad pattern", "*"]).unwrap_err();
        assert_eq!(e.pattern, "bad pattern");
    }

    #[test]
    fn target_from_authority_uses_the_default_port_or_requires_one() {
        let a: http::uri::Authority = "Example.com".parse().unwrap();
        assert_eq!(
            Target::from_authority(&a, Some(80)).unwrap(),
            target("example.com", 80)
        );
        assert!(matches!(
            Target::from_authority(&a, None),
            Err(TargetError::MissingPort(_))
        ));
        let a: http::uri::Authority = "[::1]:8080".parse().unwrap();
        assert_eq!(
            Target::from_authority(&a, None).unwrap(),
            target("::1", 8080)
        );
        assert_eq!(
            Target::from_authority(&a, None).unwrap().to_string(),
            "[::1]:8080"
        );
    }
}
