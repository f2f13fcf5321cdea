//! `wasi:sockets` for plugins: off unless the pump lists peers in
//! `sandbox.sockets`. Then TCP connects and UDP sends may go to those
//! peers only, name lookups are allowed (a plugin needs them to find its
//! peers by name), and binds only as the implicit bind before a connect or
//! send. Listening and accepting stay refused: a plugin is a client.
//!
//! A TCP socket takes one of the instance's `sandbox.max_connections`
//! permits, the same ones outbound HTTP requests take, for as long as the
//! plugin holds the socket: `create-tcp-socket` is redefined in the linker
//! around wasmtime-wasi's to refuse a socket past the cap with
//! `new-socket-limit` (counted as `capability="connections"`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::p2::TcpSocket;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};
use wasmtime_wasi::WasiCtxBuilder;

use super::loglimit::LogLimiter;
use super::PluginState;
use crate::sandbox::SocketRule;
use crate::telemetry;

/// How long resolving a `sandbox.sockets` name may take at instance start.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The interface wasmtime-wasi links (guests asking for an older 0.2
/// release resolve to it too).
const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";

/// The TCP sockets an instance holds, each with its connection permit,
/// by resource handle.
#[derive(Default)]
pub(super) struct HeldSockets(HashMap<u32, OwnedSemaphorePermit>);

impl HeldSockets {
    /// Gives back the permits of sockets the plugin dropped: a handle
    /// that no longer names a TCP socket in `table` was dropped (a reused
    /// handle of a newer socket is replaced when that socket is recorded).
    fn release_dropped(&mut self, table: &wasmtime::component::ResourceTable) {
        self.0
            .retain(|rep, _| table.get(&Resource::<TcpSocket>::new_own(*rep)).is_ok());
    }
}

/// Redefines `create-tcp-socket` on top of wasmtime-wasi's to count the
/// socket in the instance's connections.
pub(super) fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut create = linker.instance(TCP_CREATE)?;
    create.func_wrap(
        "create-tcp-socket",
        |mut store, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            state.sockets_held.release_dropped(&state.table);
            let Some(permit) = state.http_hooks.connection_permit() else {
                state.http_hooks.deny_connection("a TCP socket");
                return Ok((Err(ErrorCode::NewSocketLimit),));
            };
            match state.sockets().create_tcp_socket(family) {
                Ok(socket) => {
                    state.sockets_held.0.insert(socket.rep(), permit);
                    Ok((Ok(socket),))
                }
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

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
