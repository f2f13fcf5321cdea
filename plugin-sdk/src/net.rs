//! TCP connections to the peers a pump lists in `sandbox.sockets`, with
//! TLS done by the host through the standard `wasi:tls` interface, so no
//! plugin compiles a TLS stack of its own.
//!
//! A [`Stream`] is a blocking `std::io::Read + Write` with a timeout on
//! every wait, which is what protocol crates (sans-IO codecs driven by a
//! loop) need:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use pumphouse_sdk::net::Stream;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut stream = Stream::connect("db.internal:5432", Duration::from_secs(5))?;
//! // A protocol that negotiates TLS first speaks in the clear, then:
//! stream.start_tls("db.internal")?;
//! stream.write_all(b"...")?;
//! # Ok(()) }
//! ```
//!
//! The host verifies the server's certificate against the webpki roots
//! and the pump's `sandbox.tls_ca_files`, for the name given to
//! [`Stream::start_tls`]. A peer missing from `sandbox.sockets` fails with
//! [`NetErrorKind::Denied`], which [`NetError`] turns into a fatal
//! [`Error`] naming the setting to change.
//!
//! Outside wasm (a plugin's native unit tests) the stream is a plain
//! `std::net::TcpStream` and `start_tls` is unsupported.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::Error;

/// What went wrong with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// The sandbox refused the name lookup or the connection: the peer is
    /// not in the pump's `sandbox.sockets`. Retrying cannot help.
    Denied,
    /// The name does not resolve.
    Resolve,
    /// Connecting, reading or writing took longer than the timeout.
    Timeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// Any other network failure (refused, reset, closed).
    Io,
}

/// A connection failure, naming the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetError {
    kind: NetErrorKind,
    peer: String,
    detail: String,
}

impl NetError {
    fn new(kind: NetErrorKind, peer: &str, detail: impl Into<String>) -> Self {
        NetError {
            kind,
            peer: peer.to_string(),
            detail: detail.into(),
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> NetErrorKind {
        self.kind
    }

    /// The `host:port` the connection was for.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            NetErrorKind::Denied => write!(
                f,
                "the sandbox refused {} ({}); add \"{}\" to the pump's sandbox.sockets",
                self.peer, self.detail, self.peer
            ),
            NetErrorKind::Tls => write!(f, "TLS with {}: {}", self.peer, self.detail),
            _ => write!(f, "{}: {}", self.peer, self.detail),
        }
    }
}

impl std::error::Error for NetError {}

/// A denial is fatal (only the config can fix it); a TLS failure is too,
/// since certificates and names do not fix themselves; everything else
/// is retried.
impl From<NetError> for Error {
    fn from(e: NetError) -> Self {
        match e.kind {
            NetErrorKind::Denied | NetErrorKind::Tls => Error::fatal(e.to_string()),
            _ => Error::retry(e.to_string()),
        }
    }
}

impl From<NetError> for io::Error {
    fn from(e: NetError) -> Self {
        let kind = match e.kind {
            NetErrorKind::Denied => io::ErrorKind::PermissionDenied,
            NetErrorKind::Timeout => io::ErrorKind::TimedOut,
            NetErrorKind::Resolve => io::ErrorKind::NotFound,
            NetErrorKind::Tls => io::ErrorKind::InvalidData,
            NetErrorKind::Io => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6 literals).
pub fn split_host_port(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return None;
    }
    Some((host, port.parse().ok()?))
}

/// A TCP connection, optionally upgraded to TLS, with a timeout on every
/// wait.
pub struct Stream {
    inner: imp::Inner,
    peer: String,
    timeout: Duration,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("peer", &self.peer)
            .field("tls", &self.is_tls())
            .finish()
    }
}

impl Stream {
    /// Connects to `addr` (`host:port`), trying each address the name
    /// resolves to. `timeout` bounds the connect and, later, every read
    /// and write wait.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Stream, NetError> {
        let (host, port) = split_host_port(addr)
            .ok_or_else(|| NetError::new(NetErrorKind::Resolve, addr, "not a host:port address"))?;
        let inner = imp::connect(addr, host, port, timeout)?;
        Ok(Stream {
            inner,
            peer: addr.to_string(),
            timeout,
        })
    }

    /// Upgrades the connection to TLS in place, verifying the server's
    /// certificate for `server_name`. Everything read and written after it
    /// is encrypted.
    pub fn start_tls(&mut self, server_name: &str) -> Result<(), NetError> {
        imp::start_tls(&mut self.inner, &self.peer, server_name, self.timeout)
    }

    /// Whether [`Stream::start_tls`] succeeded.
    pub fn is_tls(&self) -> bool {
        imp::is_tls(&self.inner)
    }

    /// Changes the timeout of later waits.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
        imp::set_timeout(&mut self.inner, timeout);
    }

    /// The `host:port` this stream was opened to.
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        imp::read(&mut self.inner, buf, self.timeout)
            .map_err(|e| NetError::new(e.0, &self.peer, e.1).into())
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        imp::write(&mut self.inner, buf, self.timeout)
            .map_err(|e| NetError::new(e.0, &self.peer, e.1).into())
    }

    fn flush(&mut self) -> io::Result<()> {
        imp::flush(&mut self.inner, self.timeout)
            .map_err(|e| NetError::new(e.0, &self.peer, e.1).into())
    }
}

/// An I/O failure before the peer is attached.
struct Failure(NetErrorKind, String);

#[cfg(target_arch = "wasm32")]
mod imp {
    use std::time::Duration;

    use wasip2::clocks::monotonic_clock;
    use wasip2::io::poll::{poll, Pollable};
    use wasip2::io::streams::{InputStream, OutputStream, StreamError};
    use wasip2::sockets::network::{ErrorCode, IpAddress, IpSocketAddress, Network};
    use wasip2::sockets::network::{Ipv4SocketAddress, Ipv6SocketAddress};
    use wasip2::sockets::tcp::TcpSocket;
    use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

    use super::{Failure, NetError, NetErrorKind};
    use crate::__tls::wasi::tls::types::{ClientConnection, ClientHandshake};

    /// Most bytes one read asks the host for.
    const READ_CHUNK: u64 = 64 * 1024;

    /// Field order is drop order: streams before what they belong to,
    /// which `wasi:io` requires.
    pub(super) struct Inner {
        input: Option<InputStream>,
        output: Option<OutputStream>,
        tls: Option<ClientConnection>,
        /// Held, never read: dropping it closes the connection.
        _socket: TcpSocket,
    }

    /// The host's error text without the backtrace it may carry.
    fn first_line(text: String) -> String {
        match text.split_once('\n') {
            Some((first, _)) => first.to_string(),
            None => text,
        }
    }

    fn nanos(d: Duration) -> u64 {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Waits until `p` is ready or `timeout` passes; false on timeout.
    fn wait(p: &Pollable, timeout: Duration) -> bool {
        let timer = monotonic_clock::subscribe_duration(nanos(timeout));
        poll(&[p, &timer]).contains(&0)
    }

    fn denied_or(code: ErrorCode, kind: NetErrorKind) -> NetErrorKind {
        match code {
            ErrorCode::AccessDenied | ErrorCode::NotSupported => NetErrorKind::Denied,
            ErrorCode::Timeout => NetErrorKind::Timeout,
            _ => kind,
        }
    }

    fn resolve(
        net: &Network,
        peer: &str,
        host: &str,
        timeout: Duration,
    ) -> Result<Vec<IpAddress>, NetError> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![match ip {
                std::net::IpAddr::V4(v4) => {
                    let o = v4.octets();
                    IpAddress::Ipv4((o[0], o[1], o[2], o[3]))
                }
                std::net::IpAddr::V6(v6) => {
                    let s = v6.segments();
                    IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
                }
            }]);
        }
        let fail = |code: ErrorCode| {
            NetError::new(
                denied_or(code, NetErrorKind::Resolve),
                peer,
                format!("cannot resolve {host}: {code:?}"),
            )
        };
        let stream = ip_name_lookup::resolve_addresses(net, host).map_err(fail)?;
        let mut out = Vec::new();
        loop {
            match stream.resolve_next_address() {
                Ok(Some(addr)) => out.push(addr),
                Ok(None) => break,
                Err(ErrorCode::WouldBlock) => {
                    if !wait(&stream.subscribe(), timeout) {
                        return Err(NetError::new(
                            NetErrorKind::Timeout,
                            peer,
                            format!("resolving {host} took longer than {timeout:?}"),
                        ));
                    }
                }
                Err(code) => return Err(fail(code)),
            }
        }
        if out.is_empty() {
            return Err(NetError::new(
                NetErrorKind::Resolve,
                peer,
                format!("{host} resolved to no address"),
            ));
        }
        Ok(out)
    }

    fn connect_one(
        net: &Network,
        ip: IpAddress,
        port: u16,
        timeout: Duration,
    ) -> Result<Inner, (NetErrorKind, String)> {
        let (family, addr) = match ip {
            IpAddress::Ipv4(address) => (
                wasip2::sockets::network::IpAddressFamily::Ipv4,
                IpSocketAddress::Ipv4(Ipv4SocketAddress { port, address }),
            ),
            IpAddress::Ipv6(address) => (
                wasip2::sockets::network::IpAddressFamily::Ipv6,
                IpSocketAddress::Ipv6(Ipv6SocketAddress {
                    port,
                    address,
                    flow_info: 0,
                    scope_id: 0,
                }),
            ),
        };
        let err = |code: ErrorCode| (denied_or(code, NetErrorKind::Io), format!("{code:?}"));
        let socket = tcp_create_socket::create_tcp_socket(family).map_err(err)?;
        socket.start_connect(net, addr).map_err(err)?;
        let (input, output) = loop {
            match socket.finish_connect() {
                Ok(streams) => break streams,
                Err(ErrorCode::WouldBlock) => {
                    if !wait(&socket.subscribe(), timeout) {
                        return Err((
                            NetErrorKind::Timeout,
                            format!("no connection within {timeout:?}"),
                        ));
                    }
                }
                Err(code) => return Err(err(code)),
            }
        };
        // A pump's connection idles between batches; keep-alive finds a
        // dead peer before the next batch waits on it.
        let _ = socket.set_keep_alive_enabled(true);
        Ok(Inner {
            input: Some(input),
            output: Some(output),
            tls: None,
            _socket: socket,
        })
    }

    pub(super) fn connect(
        peer: &str,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Inner, NetError> {
        let net = instance_network::instance_network();
        let mut last = None;
        for ip in resolve(&net, peer, host, timeout)? {
            match connect_one(&net, ip, port, timeout) {
                Ok(inner) => return Ok(inner),
                Err((NetErrorKind::Denied, detail)) => {
                    return Err(NetError::new(NetErrorKind::Denied, peer, detail))
                }
                Err(e) => last = Some(e),
            }
        }
        let (kind, detail) = last.unwrap_or((NetErrorKind::Io, "no address".into()));
        Err(NetError::new(kind, peer, detail))
    }

    pub(super) fn start_tls(
        inner: &mut Inner,
        peer: &str,
        server_name: &str,
        timeout: Duration,
    ) -> Result<(), NetError> {
        let fail = |kind, detail: String| NetError::new(kind, peer, detail);
        if inner.tls.is_some() {
            return Err(fail(NetErrorKind::Tls, "already TLS".into()));
        }
        let (Some(input), Some(output)) = (inner.input.take(), inner.output.take()) else {
            return Err(fail(NetErrorKind::Io, "the connection is closed".into()));
        };
        let handshake = ClientHandshake::new(server_name, input, output);
        let future = ClientHandshake::finish(handshake);
        if !wait(&future.subscribe(), timeout) {
            return Err(fail(
                NetErrorKind::Timeout,
                format!("no TLS handshake within {timeout:?}"),
            ));
        }
        match future.get() {
            Some(Ok(Ok((conn, input, output)))) => {
                inner.tls = Some(conn);
                inner.input = Some(input);
                inner.output = Some(output);
                Ok(())
            }
            Some(Ok(Err(e))) => Err(fail(NetErrorKind::Tls, first_line(e.to_debug_string()))),
            Some(Err(())) | None => Err(fail(NetErrorKind::Tls, "handshake lost".into())),
        }
    }

    pub(super) fn is_tls(inner: &Inner) -> bool {
        inner.tls.is_some()
    }

    pub(super) fn set_timeout(_: &mut Inner, _: Duration) {}

    fn stream_error(e: StreamError) -> Failure {
        match e {
            StreamError::Closed => Failure(NetErrorKind::Io, "connection closed".into()),
            StreamError::LastOperationFailed(e) => {
                Failure(NetErrorKind::Io, first_line(e.to_debug_string()))
            }
        }
    }

    fn timed_out(timeout: Duration) -> Failure {
        Failure(
            NetErrorKind::Timeout,
            format!("no progress within {timeout:?}"),
        )
    }

    fn closed() -> Failure {
        Failure(NetErrorKind::Io, "the connection is closed".into())
    }

    pub(super) fn read(
        inner: &mut Inner,
        buf: &mut [u8],
        timeout: Duration,
    ) -> Result<usize, Failure> {
        let input = inner.input.as_ref().ok_or_else(closed)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(READ_CHUNK);
        loop {
            match input.read(want) {
                Ok(bytes) if bytes.is_empty() => {
                    if !wait(&input.subscribe(), timeout) {
                        return Err(timed_out(timeout));
                    }
                }
                Ok(bytes) => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok(bytes.len());
                }
                Err(StreamError::Closed) => return Ok(0),
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    /// Waits until the output accepts bytes; how many it accepts.
    fn writable(output: &OutputStream, timeout: Duration) -> Result<u64, Failure> {
        loop {
            match output.check_write() {
                Ok(0) => {
                    if !wait(&output.subscribe(), timeout) {
                        return Err(timed_out(timeout));
                    }
                }
                Ok(n) => return Ok(n),
                Err(e) => return Err(stream_error(e)),
            }
        }
    }

    pub(super) fn write(
        inner: &mut Inner,
        buf: &[u8],
        timeout: Duration,
    ) -> Result<usize, Failure> {
        let output = inner.output.as_ref().ok_or_else(closed)?;
        if buf.is_empty() {
            return Ok(0);
        }
        let n = writable(output, timeout)?.min(buf.len() as u64) as usize;
        output.write(&buf[..n]).map_err(stream_error)?;
        Ok(n)
    }

    pub(super) fn flush(inner: &mut Inner, timeout: Duration) -> Result<(), Failure> {
        let output = inner.output.as_ref().ok_or_else(closed)?;
        output.flush().map_err(stream_error)?;
        // The flush is done once the stream accepts writes again.
        writable(output, timeout).map(|_| ())
    }

    impl Drop for Inner {
        fn drop(&mut self) {
            if let Some(conn) = &self.tls {
                conn.close_output();
            }
            // Children first: the streams, then the TLS connection that
            // owns the socket's streams, then (by field order) the socket.
            self.input.take();
            self.output.take();
            self.tls.take();
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;

    use super::{Failure, NetError, NetErrorKind};

    pub(super) struct Inner(TcpStream);

    pub(super) fn connect(
        peer: &str,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Inner, NetError> {
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|e| NetError::new(NetErrorKind::Resolve, peer, e.to_string()))?;
        let mut last = NetError::new(NetErrorKind::Resolve, peer, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let mut inner = Inner(s);
                    set_timeout(&mut inner, timeout);
                    return Ok(inner);
                }
                Err(e) => last = NetError::new(kind(&e), peer, e.to_string()),
            }
        }
        Err(last)
    }

    fn kind(e: &std::io::Error) -> NetErrorKind {
        match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => NetErrorKind::Timeout,
            std::io::ErrorKind::PermissionDenied => NetErrorKind::Denied,
            _ => NetErrorKind::Io,
        }
    }

    pub(super) fn start_tls(
        _: &mut Inner,
        peer: &str,
        _: &str,
        _: Duration,
    ) -> Result<(), NetError> {
        Err(NetError::new(
            NetErrorKind::Tls,
            peer,
            "TLS is done by the host's wasi:tls, which native builds do not have",
        ))
    }

    pub(super) fn is_tls(_: &Inner) -> bool {
        false
    }

    pub(super) fn set_timeout(inner: &mut Inner, timeout: Duration) {
        let _ = inner.0.set_read_timeout(Some(timeout));
        let _ = inner.0.set_write_timeout(Some(timeout));
    }

    pub(super) fn read(inner: &mut Inner, buf: &mut [u8], _: Duration) -> Result<usize, Failure> {
        inner
            .0
            .read(buf)
            .map_err(|e| Failure(kind(&e), e.to_string()))
    }

    pub(super) fn write(inner: &mut Inner, buf: &[u8], _: Duration) -> Result<usize, Failure> {
        inner
            .0
            .write(buf)
            .map_err(|e| Failure(kind(&e), e.to_string()))
    }

    pub(super) fn flush(inner: &mut Inner, _: Duration) -> Result<(), Failure> {
        inner
            .0
            .flush()
            .map_err(|e| Failure(kind(&e), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn host_and_port_split() {
        assert_eq!(split_host_port("db:5432"), Some(("db", 5432)));
        assert_eq!(split_host_port("[::1]:5432"), Some(("::1", 5432)));
        assert_eq!(split_host_port("db"), None);
        assert_eq!(split_host_port(":5432"), None);
        assert_eq!(split_host_port("db:x"), None);
    }

    #[test]
    fn denial_is_fatal_and_names_the_setting() {
        let e = NetError::new(NetErrorKind::Denied, "db:5432", "AccessDenied");
        let sdk: Error = e.clone().into();
        assert_eq!(sdk.kind(), crate::ErrorKind::Fatal);
        assert!(sdk.message().contains("sandbox.sockets"), "{sdk}");
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::PermissionDenied);
        let refused: Error = NetError::new(NetErrorKind::Io, "db:1", "refused").into();
        assert_eq!(refused.kind(), crate::ErrorKind::Retry);
    }

    #[test]
    fn native_stream_round_trips_and_refuses_tls() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        });
        let mut stream = Stream::connect(&addr, Duration::from_secs(5)).unwrap();
        stream.write_all(b"hello").unwrap();
        stream.flush().unwrap();
        let mut back = [0u8; 5];
        stream.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"hello");
        echo.join().unwrap();
        let e = stream.start_tls("localhost").unwrap_err();
        assert_eq!(e.kind(), NetErrorKind::Tls);
        assert!(!stream.is_tls());
    }
}
