//! `wasi:sockets` for plugins: off unless the pump lists peers in
//! `sandbox.sockets`. Then TCP connects and UDP sends may go to those
//! peers only, name lookups are allowed (a plugin needs them to find its
//! peers by name), and binds only as the implicit bind before a connect or
//! send. Listening and accepting stay refused: a plugin is a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

use super::loglimit::LogLimiter;
use crate::sandbox::SocketRule;
use crate::telemetry;

/// How long resolving a `sandbox.sockets` name may take at instance start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Grants the socket capabilities `rules` describe to the instance being
/// built. Names are resolved now, once per instance; one that does not
/// resolve is skipped with a warning (the plugin's connects to it fail).
pub(super) async fn configure(
    wasi: &mut WasiCtxBuilder,
    pump: &Arc<str>,
    rules: &[SocketRule],
    logs: &Arc<LogLimiter>,
) {
    if rules.is_empty() {
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        return;
    }
    let mut peers: Vec<(IpAddr, SocketRule)> = Vec::new();
    for rule in rules {
        if let Some(ip) = rule.ip() {
            peers.push((ip, rule.clone()));
            continue;
        }
        let lookup = tokio::net::lookup_host((rule.host.as_str(), 0));
        match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
            Ok(Ok(addrs)) => peers.extend(addrs.map(|a| (a.ip(), rule.clone()))),
            Ok(Err(e)) => warn(logs, pump, &rule.host, &e.to_string()),
            Err(_) => warn(logs, pump, &rule.host, "lookup timed out"),
        }
    }
    let peers = Arc::new(peers);
    let pump = pump.clone();
    let logs = logs.clone();
    wasi.allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true)
        .socket_addr_check(move |addr, usage| {
            let ok = permitted(&peers, addr, usage);
            if !ok {
                metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => pump.to_string(), "capability" => "socket")
                    .increment(1);
                if logs.admit() {
                    tracing::warn!(pump = &*pump, capability = "socket", %addr, ?usage, "socket use denied: not in sandbox.sockets of this pump");
                }
            }
            Box::pin(async move { ok })
        });
}

fn warn(logs: &LogLimiter, pump: &str, host: &str, why: &str) {
    if logs.admit() {
        tracing::warn!(
            pump,
            host,
            "sandbox.sockets: cannot resolve {host}: {why}; connects to it will be denied"
        );
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The decision for one socket address use.
fn permitted(peers: &[(IpAddr, SocketRule)], addr: SocketAddr, usage: SocketAddrUse) -> bool {
    let listed = || {
        peers
            .iter()
            .any(|(ip, rule)| same_ip(*ip, addr.ip()) && rule.admits_port(addr.port()))
    };
    match usage {
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => listed(),
        // Replies from a listed peer.
        SocketAddrUse::UdpReceive => peers.iter().any(|(ip, _)| same_ip(*ip, addr.ip())),
        // Only the implicit bind to the wildcard address that precedes a
        // connect or send.
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            addr.ip().is_unspecified() && addr.port() == 0
        }
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_peers_and_implicit_binds_pass() {
        let rule = SocketRule::parse("10.0.0.5:8125").unwrap();
        let peers = vec![(rule.ip().unwrap(), rule)];
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(permitted(
            &peers,
            at("10.0.0.5:8125"),
            SocketAddrUse::UdpSend
        ));
        assert!(permitted(
            &peers,
            at("10.0.0.5:8125"),
            SocketAddrUse::TcpConnect
        ));
        assert!(permitted(
            &peers,
            at("[::ffff:10.0.0.5]:8125"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!permitted(
            &peers,
            at("10.0.0.5:8126"),
            SocketAddrUse::TcpConnect
        ));
        assert!(!permitted(
            &peers,
            at("10.0.0.6:8125"),
            SocketAddrUse::UdpSend
        ));
        assert!(permitted(&peers, at("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(!permitted(
            &peers,
            at("0.0.0.0:8080"),
            SocketAddrUse::TcpBind
        ));
        assert!(!permitted(
            &peers,
            at("0.0.0.0:0"),
            SocketAddrUse::TcpListen
        ));
        assert!(!permitted(
            &peers,
            at("10.0.0.5:8125"),
            SocketAddrUse::TcpAccept
        ));
        assert!(permitted(
            &peers,
            at("10.0.0.5:5000"),
            SocketAddrUse::UdpReceive
        ));
    }
}
