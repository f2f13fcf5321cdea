//! Outbound HTTP for plugins (`wasi:http/outgoing-handler`), deny by
//! default.
//!
//! wasmtime-wasi-http builds the request from the guest's resources and
//! hands it to [`HttpHooks::send_request`]; everything from there on is
//! ours, so every check happens in the host before a byte leaves:
//!
//! 1. the URL's scheme, host and port must match an entry of the pump's
//!    `sandbox.allowed_outbound_hosts`;
//! 2. the host name is resolved here, once, and addresses that are
//!    loopback/private/link-local/unspecified are dropped unless the pump
//!    sets `allow_private_networks` or the entry names that IP literally;
//! 3. the connection goes to one of the checked addresses (no second lookup
//!    that DNS could answer differently);
//! 4. connect, first-byte and between-bytes timeouts are the guest's
//!    request options capped by the pump's `sandbox.http_timeout`;
//! 5. an instance holds at most `sandbox.max_connections` connections:
//!    each takes a permit, released when its connection task ends (the
//!    response read to its end or dropped, or the request failed), so
//!    requests started and never read cannot take the host's descriptors
//!    (`wasi:sockets` TCP sockets take the same permits, see
//!    [`super::sockets`]).
//!
//! A refusal is `ErrorCode::HttpRequestDenied` for the guest (an error it
//! can handle, never a trap), a warning naming the pump and the URL
//! authority, and `pumphouse_sandbox_denials_total{pump,capability="http"}`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::loglimit::LogLimiter;
use crate::config::DEFAULT_HTTP_TIMEOUT;
use crate::sandbox::allow::{self, OutboundRule, Scheme};
use crate::telemetry;

/// Where a pump's plugins may send HTTP requests.
#[derive(Debug, Clone)]
pub struct OutboundPolicy {
    /// Parsed `allowed_outbound_hosts`; empty denies everything.
    pub rules: Vec<OutboundRule>,
    /// Let names resolve to non-public addresses.
    pub allow_private: bool,
    /// Cap on each of the connect, first-byte and between-bytes waits.
    pub timeout: Duration,
    /// Connections one instance may hold at once.
    pub max_connections: usize,
    /// The TLS config of HTTPS requests: the pump's trusted roots, HTTP/1.1.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            rules: Vec::new(),
            allow_private: false,
            timeout: DEFAULT_HTTP_TIMEOUT,
            max_connections: crate::config::DEFAULT_MAX_CONNECTIONS as usize,
            tls: super::tls::Trust::default().client_config(&[b"http/1.1"]),
        }
    }
}

/// The waits of one request after the host's cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Timeouts {
    connect: Duration,
    first_byte: Duration,
    between_bytes: Duration,
}

impl OutboundPolicy {
    /// The guest may shorten a wait, never lengthen it past the cap.
    fn timeouts(&self, options: Option<RequestOptions>) -> Timeouts {
        let o = options.unwrap_or_default();
        let cap = |guest: Option<Duration>| guest.map_or(self.timeout, |g| g.min(self.timeout));
        Timeouts {
            connect: cap(o.connect_timeout),
            first_byte: cap(o.first_byte_timeout),
            between_bytes: cap(o.between_bytes_timeout),
        }
    }

    /// Whether a resolved address may be connected to under `rule`.
    fn permits(&self, rule: &OutboundRule, ip: IpAddr) -> bool {
        self.allow_private || !allow::is_non_public(ip) || rule.names_ip(ip)
    }
}

/// The `wasi:http` hooks of one plugin instance.
#[derive(Clone)]
pub(crate) struct HttpHooks {
    pump: Arc<str>,
    policy: Arc<OutboundPolicy>,
    logs: Arc<LogLimiter>,
    /// This instance's connection permits (`max_connections`).
    connections: Arc<Semaphore>,
}

impl HttpHooks {
    pub(crate) fn new(pump: Arc<str>, policy: Arc<OutboundPolicy>, logs: Arc<LogLimiter>) -> Self {
        let connections = Arc::new(Semaphore::new(policy.max_connections));
        HttpHooks {
            pump,
            policy,
            logs,
            connections,
        }
    }

    /// One of the instance's `max_connections` permits, held by an HTTP
    /// request until its response is read or dropped, or by a
    /// `wasi:sockets` TCP socket until it is dropped.
    pub(crate) fn connection_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Counts and logs `what` refused for want of a connection permit.
    pub(crate) fn deny_connection(&self, what: &str) {
        let max = self.policy.max_connections;
        metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => "connections")
            .increment(1);
        if self.logs.admit() {
            tracing::warn!(
                pump = &*self.pump,
                capability = "connections",
                "{what} denied: the instance holds {max} connections (HTTP requests and TCP sockets, sandbox.max_connections); read or drop responses, drop sockets"
            );
        }
    }

    /// Counts and logs a refusal; the guest gets `http-request-denied`.
    fn deny(&self, authority: &str, why: &str) -> Error {
        metrics::counter!(telemetry::SANDBOX_DENIALS, "pump" => self.pump.to_string(), "capability" => "http")
            .increment(1);
        if self.logs.admit() {
            tracing::warn!(
                pump = &*self.pump,
                capability = "http",
                authority,
                "outbound request denied: {why}"
            );
        }
        Error::HttpRequestDenied
    }

    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let uri = request.uri().clone();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
        let Some(scheme) = uri.scheme_str().and_then(Scheme::parse) else {
            return Err(self.deny(authority, "only http and https URLs are allowed"));
        };
        let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
            return Err(Error::HttpRequestUriInvalid);
        };
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        let Some(rule) = allow::find_rule(&self.policy.rules, scheme, host, port).cloned() else {
            return Err(self.deny(
                authority,
                "not in sandbox.allowed_outbound_hosts of this pump",
            ));
        };
        let Some(permit) = self.connection_permit() else {
            self.deny_connection(&format!("a request to {authority}"));
            return Err(Error::ConnectionLimitReached);
        };
        let t = self.policy.timeouts(options);
        let deadline = Instant::now() + t.connect;
        let addrs = resolve(host, port, deadline).await?;
        let (permitted, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
            .into_iter()
            .partition(|a| self.policy.permits(&rule, a.ip()));
        if permitted.is_empty() {
            let ips: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
            return Err(self.deny(
                authority,
                &format!(
                    "{host} resolves to non-public address {} (allowed by {rule}; set sandbox.allow_private_networks = true or list the IP literally)",
                    ips.join(", ")
                ),
            ));
        }
        let tcp = connect(&permitted, deadline).await?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match scheme {
            Scheme::Http => Box::new(tcp),
            Scheme::Https => Box::new(tls(self.policy.tls.clone(), host, tcp, deadline).await?),
        };
        let (mut sender, conn) = tokio::time::timeout_at(
            deadline,
            hyper::client::conn::http1::handshake(TokioIo::new(stream)),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)??;
        // The connection runs in its own task (aborted when the response
        // body is dropped) so reading the response drives it.
        let conn = wasmtime_wasi::runtime::spawn(conn);
        // On the wire the request line carries only the path: the absolute
        // form is for proxies.
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let response = async {
            sender.ready().await?;
            sender.send_request(request).await
        };
        let response = tokio::time::timeout(t.first_byte, response)
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(hyper_error)?;
        let response = response.map(|incoming| {
            TimedBody {
                inner: incoming,
                gap: t.between_bytes,
                sleep: Box::pin(tokio::time::sleep(t.between_bytes)),
            }
            .boxed_unsync()
        });
        let io: IoFuture = Box::new(async move {
            let _held = permit;
            conn.await.map_err(hyper_error)
        });
        Ok((response, io))
    }

    fn log_failure(&self, what: &str, err: &dyn std::fmt::Display) {
        tracing::debug!(
            pump = &*self.pump,
            capability = "http",
            "outbound request failed: {what}: {err}"
        );
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_result: IoFuture,
    ) -> SendFuture {
        Box::new(self.clone().send(request, options))
    }

    // The crate's defaults log these at WARN without the pump; a failing
    // destination is the plugin's business (it gets the error code) and
    // must not flood the host log.
    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        self.log_failure("HTTP", err);
        ErrorCode::HttpProtocolError
    }

    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        self.log_failure("connect", err);
        ErrorCode::ConnectionRefused
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        self.log_failure("TLS", err);
        ErrorCode::TlsProtocolError
    }
}

fn hyper_error(e: hyper::Error) -> Error {
    if e.is_timeout() {
        Error::HttpResponseTimeout
    } else {
        Error::Hyper(e)
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// `host` without IPv6 brackets.
fn bare(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The addresses of `host`: an IP literal as it is, a name through the
/// system resolver.
async fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, Error> {
    let host = bare(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let dns_error = |why: String| Error::DnsError {
        rcode: Some(why),
        info_code: None,
    };
    match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
        Err(_) => Err(Error::DnsTimeout),
        Ok(Err(e)) => Err(dns_error(e.to_string())),
        Ok(Ok(addrs)) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(dns_error(format!("{host} has no addresses")))
            } else {
                Ok(addrs)
            }
        }
    }
}

/// Connects to the first address that answers, by address: no lookup.
async fn connect(addrs: &[SocketAddr], deadline: Instant) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(Error::ConnectionTimeout),
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(e),
        }
    }
    Err(Error::Connect(last.unwrap_or_else(|| {
        std::io::Error::other("no address to connect to")
    })))
}

/// TLS over an already checked connection, verifying the URL's host name.
async fn tls(
    config: Arc<rustls::ClientConfig>,
    host: &str,
    tcp: TcpStream,
    deadline: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    use rustls::pki_types::ServerName;
    let host = bare(host);
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => {
            ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)?
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    tokio::time::timeout_at(deadline, connector.connect(name, tcp))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Tls)
}

/// A response body that fails when the server goes quiet for longer than
/// the between-bytes timeout.
struct TimedBody {
    inner: hyper::body::Incoming,
    gap: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.gap;
                this.sleep.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(hyper_error(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str], allow_private: bool) -> OutboundPolicy {
        OutboundPolicy {
            rules: rules
                .iter()
                .map(|r| OutboundRule::parse(r).unwrap())
                .collect(),
            allow_private,
            timeout: Duration::from_secs(30),
            max_connections: 1,
            ..OutboundPolicy::default()
        }
    }

    #[test]
    fn guest_options_can_only_shorten_the_waits() {
        let p = policy(&[], false);
        let t = p.timeouts(None);
        assert_eq!(t.connect, Duration::from_secs(30));
        let t = p.timeouts(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(1)),
            first_byte_timeout: Some(Duration::from_secs(3600)),
            between_bytes_timeout: None,
        }));
        assert_eq!(t.connect, Duration::from_secs(1));
        assert_eq!(t.first_byte, Duration::from_secs(30));
        assert_eq!(t.between_bytes, Duration::from_secs(30));
    }

    #[test]
    fn private_addresses_need_the_flag_or_a_literal_entry() {
        let name = OutboundRule::parse("http://localhost:*").unwrap();
        let literal = OutboundRule::parse("http://127.0.0.1:8080").unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let strict = policy(&[], false);
        assert!(!strict.permits(&name, lo));
        assert!(strict.permits(&literal, lo));
        assert!(strict.permits(&name, public));
        assert!(policy(&[], true).permits(&name, lo));
    }

    #[tokio::test]
    async fn names_are_resolved_and_literals_are_not() {
        let far = Instant::now() + Duration::from_secs(5);
        let a = resolve("[::1]", 80, far).await.unwrap();
        assert_eq!(a, vec!["[::1]:80".parse().unwrap()]);
        let a = resolve("localhost", 8080, far).await.unwrap();
        assert!(
            a.iter().all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{a:?}"
        );
    }
}
