//! Pure parsing and matching of a pump's network allowlists: the
//! `sandbox.allowed_outbound_hosts` entries (`scheme://host:port`), the
//! `sandbox.sockets` entries (`host:port`), and which addresses count as
//! non-public. No I/O here: resolving names and connecting is the
//! runtime's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An allowlist entry that cannot be used; the message says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("{entry:?}: expected scheme://host:port, e.g. \"https://api.example.com:443\" or \"http://localhost:*\"")]
    Shape { entry: String },
    #[error("{entry:?}: scheme must be http or https")]
    Scheme { entry: String },
    #[error("{entry:?}: {why}")]
    Host { entry: String, why: String },
    #[error("{entry:?}: port must be a number from 1 to 65535 or *")]
    Port { entry: String },
    #[error("{entry:?}: expected host:port, e.g. \"statsd.internal:8125\" or \"10.0.0.5:9000\"")]
    SocketShape { entry: String },
}

/// URL scheme of an outbound request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// Parses `http` or `https` (case-insensitive).
    pub fn parse(s: &str) -> Option<Scheme> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    /// The port a URL of this scheme uses when it names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Which hosts an entry admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Every host (`*`); resolved addresses are still checked.
    Any,
    /// One DNS name, lowercase, without a trailing dot.
    Name(String),
    /// Strict subdomains of a name (`*.example.com` admits `a.example.com`
    /// and `a.b.example.com`, not `example.com`).
    Subdomains(String),
    /// One IP address, written literally.
    Ip(IpAddr),
}

/// Which ports an entry admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    One(u16),
}

impl PortPattern {
    fn parse(s: &str) -> Option<PortPattern> {
        if s == "*" {
            return Some(PortPattern::Any);
        }
        match s.parse::<u16>() {
            Ok(0) | Err(_) => None,
            Ok(p) => Some(PortPattern::One(p)),
        }
    }

    fn admits(self, port: u16) -> bool {
        match self {
            PortPattern::Any => true,
            PortPattern::One(p) => p == port,
        }
    }
}

/// One `allowed_outbound_hosts` entry. Deserializes from its text, so a
/// config holds only entries that parse.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct OutboundRule {
    scheme: Scheme,
    host: HostPattern,
    port: PortPattern,
    text: String,
}

impl std::fmt::Display for OutboundRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl OutboundRule {
    /// Parses `scheme://host[:port]`. The port defaults to the scheme's
    /// (80 or 443); `*` stands for any port, `*.domain` for its subdomains
    /// and a lone `*` for every host.
    pub fn parse(entry: &str) -> Result<OutboundRule, RuleError> {
        let shape = || RuleError::Shape {
            entry: entry.to_string(),
        };
        let (scheme, rest) = entry.trim().split_once("://").ok_or_else(shape)?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| RuleError::Scheme {
            entry: entry.to_string(),
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(shape());
        }
        let (host, port) = split_host_port(rest).ok_or_else(shape)?;
        let port = match port {
            None => PortPattern::One(scheme.default_port()),
            Some(p) => PortPattern::parse(p).ok_or_else(|| RuleError::Port {
                entry: entry.to_string(),
            })?,
        };
        let host = parse_host_pattern(host).map_err(|why| RuleError::Host {
            entry: entry.to_string(),
            why,
        })?;
        Ok(OutboundRule {
            scheme,
            host,
            port,
            text: entry.trim().to_string(),
        })
    }

    /// Whether a request to `scheme://host:port` falls under this entry.
    /// `host` is as it appears in the URL (IPv6 literals in brackets).
    pub fn admits(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if self.scheme != scheme || !self.port.admits(port) {
            return false;
        }
        let name = normalize_name(host);
        match (&self.host, literal_ip(&name)) {
            (HostPattern::Any, _) => true,
            (HostPattern::Ip(want), Some(ip)) => *want == ip,
            (HostPattern::Name(want), None) => *want == name,
            (HostPattern::Subdomains(base), None) => name
                .strip_suffix(base.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            _ => false,
        }
    }

    /// True when this entry names `ip` literally, which admits it even when
    /// it is loopback or private.
    pub fn names_ip(&self, ip: IpAddr) -> bool {
        matches!(self.host, HostPattern::Ip(want) if canonical(want) == canonical(ip))
    }
}

impl TryFrom<String> for OutboundRule {
    type Error = RuleError;
    fn try_from(entry: String) -> Result<Self, RuleError> {
        OutboundRule::parse(&entry)
    }
}

/// The first entry of `rules` that admits the request.
pub fn find_rule<'a>(
    rules: &'a [OutboundRule],
    scheme: Scheme,
    host: &str,
    port: u16,
) -> Option<&'a OutboundRule> {
    rules.iter().find(|r| r.admits(scheme, host, port))
}

/// One `sandbox.sockets` entry: `host:port` (`port` may be `*`).
/// Deserializes from its text, like [`OutboundRule`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct SocketRule {
    /// A DNS name (resolved when an instance starts) or an IP literal.
    pub host: String,
    port: PortPattern,
}

impl SocketRule {
    /// Parses `host:port`; IPv6 literals go in brackets (`[::1]:9000`).
    pub fn parse(entry: &str) -> Result<SocketRule, RuleError> {
        let shape = || RuleError::SocketShape {
            entry: entry.to_string(),
        };
        let entry_t = entry.trim();
        if entry_t.contains("://") || entry_t.contains(['/', '?', '#', '@']) {
            return Err(shape());
        }
        let (host, port) = split_host_port(entry_t).ok_or_else(shape)?;
        let port = PortPattern::parse(port.ok_or_else(shape)?).ok_or_else(|| RuleError::Port {
            entry: entry.to_string(),
        })?;
        let host = match parse_host_pattern(host).map_err(|why| RuleError::Host {
            entry: entry.to_string(),
            why,
        })? {
            HostPattern::Name(n) => n,
            HostPattern::Ip(ip) => ip.to_string(),
            HostPattern::Any | HostPattern::Subdomains(_) => {
                return Err(RuleError::Host {
                    entry: entry.to_string(),
                    why: "socket entries name one host; wildcards are for allowed_outbound_hosts"
                        .into(),
                })
            }
        };
        Ok(SocketRule { host, port })
    }

    /// The IP literal this entry names, if it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether this entry's port admits `port`.
    pub fn admits_port(&self, port: u16) -> bool {
        self.port.admits(port)
    }
}

impl TryFrom<String> for SocketRule {
    type Error = RuleError;
    fn try_from(entry: String) -> Result<Self, RuleError> {
        SocketRule::parse(&entry)
    }
}

/// Splits `host[:port]`, handling bracketed IPv6 literals.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 literal without brackets is ambiguous: refuse it.
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

fn parse_host_pattern(host: &str) -> Result<HostPattern, String> {
    if host == "*" {
        return Ok(HostPattern::Any);
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(HostPattern::Ip(ip));
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(base) => (true, base),
        None => (false, host),
    };
    let name = normalize_name(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(if name.contains('*') {
            "'*' may only stand for the whole host or for the leftmost label (\"*.example.com\")"
                .to_string()
        } else {
            format!("{name:?} is not a valid host name or IP address")
        });
    }
    Ok(if wild {
        HostPattern::Subdomains(name)
    } else {
        HostPattern::Name(name)
    })
}

/// Lowercase, without a trailing dot or IPv6 brackets.
fn normalize_name(host: &str) -> String {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

fn literal_ip(name: &str) -> Option<IpAddr> {
    name.parse().ok()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it stands for.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// True for addresses that are not plainly public: loopback, RFC 1918
/// private, shared (100.64/10), link-local, unspecified, broadcast,
/// multicast, reserved (240/4), the IETF protocol block (192.0.0/24),
/// benchmarking (198.18/15), documentation, IPv6 unique-local, link-local,
/// site-local, discard-only and documentation, and every IPv6 form that
/// carries an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo) when
/// the IPv4 address it carries is one of these. Outbound requests to them
/// are refused unless the pump allows private networks or names the IP.
pub fn is_non_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_non_public_v4(v4),
        IpAddr::V6(v6) => is_non_public_v6(v6),
    }
}

fn is_non_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
}

/// The IPv4 addresses an IPv6 address carries in its well-known
/// embeddings: IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96` and
/// `64:ff9b:1::/48` (RFC 6052, /96 and /48 layouts), 6to4 `2002::/16`, and
/// Teredo `2001::/32` (server and client).
fn embedded_v4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let o = ip.octets();
    let seg = ip.segments();
    let v4 = |b: [u8; 4]| Ipv4Addr::from(b);
    let mut out = Vec::new();
    if seg[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        out.push(v4([o[12], o[13], o[14], o[15]]));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        out.push(v4([o[12], o[13], o[14], o[15]]));
    }
    if seg[..3] == [0x64, 0xff9b, 1] {
        // /48: v4 in bits 48..64 and 72..88 (bits 64..72 are `u`).
        out.push(v4([o[6], o[7], o[9], o[10]]));
        out.push(v4([o[12], o[13], o[14], o[15]]));
    }
    if seg[0] == 0x2002 {
        out.push(v4([o[2], o[3], o[4], o[5]]));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        out.push(v4([o[4], o[5], o[6], o[7]]));
        out.push(v4([!o[12], !o[13], !o[14], !o[15]]));
    }
    out
}

fn is_non_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let first = seg[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        || (first & 0xffc0) == 0xfec0
        // 100::/64, discard-only
        || seg[..4] == [0x100, 0, 0, 0]
        // 2001:db8::/32 and 3fff::/20, documentation
        || (first == 0x2001 && seg[1] == 0xdb8)
        || (first & 0xfff0) == 0x3ff0
        || embedded_v4(ip).into_iter().any(is_non_public_v4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> OutboundRule {
        OutboundRule::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn exact_entries_admit_only_their_scheme_host_and_port() {
        let r = rule("https://api.example.com:443");
        assert!(r.admits(Scheme::Https, "api.example.com", 443));
        assert!(r.admits(Scheme::Https, "API.Example.com.", 443));
        assert!(!r.admits(Scheme::Http, "api.example.com", 443));
        assert!(!r.admits(Scheme::Https, "api.example.com", 8443));
        assert!(!r.admits(Scheme::Https, "evil.api.example.com", 443));
        assert!(!r.admits(Scheme::Https, "api.example.com.evil.net", 443));
    }

    #[test]
    fn the_port_defaults_to_the_schemes() {
        assert!(rule("https://example.com").admits(Scheme::Https, "example.com", 443));
        assert!(rule("http://example.com/").admits(Scheme::Http, "example.com", 80));
        assert!(!rule("http://example.com").admits(Scheme::Http, "example.com", 8080));
    }

    #[test]
    fn wildcards_cover_subdomains_and_ports() {
        let r = rule("https://*.example.com:443");
        assert!(r.admits(Scheme::Https, "a.example.com", 443));
        assert!(r.admits(Scheme::Https, "a.b.example.com", 443));
        assert!(!r.admits(Scheme::Https, "example.com", 443));
        assert!(!r.admits(Scheme::Https, "badexample.com", 443));
        assert!(!r.admits(Scheme::Https, ".example.com", 443));
        let r = rule("http://localhost:*");
        assert!(r.admits(Scheme::Http, "localhost", 1));
        assert!(r.admits(Scheme::Http, "localhost", 65535));
        assert!(!r.admits(Scheme::Http, "127.0.0.1", 80));
        assert!(rule("https://*:*").admits(Scheme::Https, "anything.at.all", 9));
    }

    #[test]
    fn ip_literals_match_ip_literals_only() {
        let r = rule("http://127.0.0.1:8080");
        assert!(r.admits(Scheme::Http, "127.0.0.1", 8080));
        assert!(!r.admits(Scheme::Http, "localhost", 8080));
        assert!(r.names_ip("127.0.0.1".parse().unwrap()));
        assert!(r.names_ip("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!r.names_ip("127.0.0.2".parse().unwrap()));
        let v6 = rule("http://[::1]:9000");
        assert!(v6.admits(Scheme::Http, "[::1]", 9000));
        assert!(v6.names_ip("::1".parse().unwrap()));
        assert!(!rule("http://localhost:*").names_ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_entries_say_how_to_fix_them() {
        for (entry, want) in [
            ("example.com:443", "expected scheme://host:port"),
            ("ftp://example.com:21", "scheme must be http or https"),
            ("https://example.com:0", "port must be"),
            ("https://example.com:http", "port must be"),
            (
                "https://example.com:443/path",
                "expected scheme://host:port",
            ),
            (
                "https://user@example.com:443",
                "expected scheme://host:port",
            ),
            ("https://a.*.example.com:443", "leftmost label"),
            ("https://exa mple.com:443", "not a valid host name"),
            ("https://::1:443", "expected scheme://host:port"),
            ("https://", "expected scheme://host:port"),
        ] {
            let e = OutboundRule::parse(entry).unwrap_err().to_string();
            assert!(e.contains(want), "{entry}: {e}");
            assert!(e.contains(entry), "the error names the entry: {e}");
        }
    }

    #[test]
    fn socket_entries_parse_host_and_port() {
        let s = SocketRule::parse("statsd.internal:8125").unwrap();
        assert_eq!(s.host, "statsd.internal");
        assert!(s.admits_port(8125) && !s.admits_port(8126));
        assert_eq!(s.ip(), None);
        let s = SocketRule::parse("[::1]:*").unwrap();
        assert_eq!(s.ip(), Some("::1".parse().unwrap()));
        assert!(s.admits_port(1));
        assert!(SocketRule::parse("statsd.internal").is_err());
        assert!(SocketRule::parse("udp://x:1").is_err());
        assert!(SocketRule::parse("*.example.com:1").is_err());
        assert!(SocketRule::parse("x:0").is_err());
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            // IPv4-compatible, NAT64 (/96 and /48), 6to4 and Teredo forms.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1:7f00:0:100::",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:0:7f00:1::1",
            "2001:0:102:304::80ff:fffe",
            "fec0::1",
            "100::1",
            "2001:db8::1",
            "192.0.2.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "::1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::1",
        ] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
