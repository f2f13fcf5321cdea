//! A tower layer (works with axum) that records one Tyk analytics record
//! per HTTP request, so a Rust gateway or service gets Tyk-compatible
//! analytics from a single `.layer(..)`.
//!
//! The record is made when the inner service produces the response head:
//! the request's details were captured when it came in, the response
//! contributes its status and body size. Fields:
//!
//! | Tyk field | value |
//! |---|---|
//! | `Method`, `Host`, `Path`, `RawPath` | request method, `Host` header (else the URI authority), URI path (both) |
//! | `ContentLength`, `Network.BytesIn` | request `Content-Length` (else the body's exact size hint, else 0) |
//! | `Network.BytesOut` | response `Content-Length` (else the body's exact size hint, which axum sets for ordinary bodies; 0 for streams of unknown length) |
//! | `UserAgent` | `User-Agent` header |
//! | `IPAddress` | axum's `ConnectInfo<SocketAddr>` when present, else the first `X-Forwarded-For` entry, else `X-Real-IP` |
//! | `ResponseCode` | response status |
//! | `TimeStamp`, `Day`, `Month`, `Year`, `Hour` | when the response head was produced (UTC) |
//! | `RequestTime`, `Latency.Total`, `Latency.Upstream` | milliseconds from request to response head |
//! | `APIID`, `APIName`, `OrgID`, `Tags`, `TrackPath` | set on the layer |
//! | `ExpireAt` | `TimeStamp` + [`AnalyticsLayer::expire_after`] |
//!
//! A request whose inner service fails (its future returns `Err`) or is
//! dropped before responding is not recorded.
//!
//! With `WhenFull::Drop` the layer never delays a response. With
//! `WhenFull::Block` a full buffer makes the response wait for room (back
//! pressure on the clients), never for the network.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::ConnectInfo;
use http::header::{CONTENT_LENGTH, HOST, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body;
use pumphouse_wire::TykRecord;

use crate::{EncodeError, Format, RecordError, Reporter, Tyk, WhenFull};

/// Default time a record's `ExpireAt` lies after its `TimeStamp`.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Records one [`HttpRecord`] per request into a [`Reporter`] of format
/// [`HttpTyk`], which writes it as a Tyk record.
///
/// ```no_run
/// # async fn demo() -> Result<(), pumphouse_reporter::BuildError> {
/// use pumphouse_reporter::layer::{AnalyticsLayer, HttpTyk};
/// use pumphouse_reporter::Reporter;
/// let reporter = Reporter::builder().format(HttpTyk).build()?;
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .layer(AnalyticsLayer::new(reporter.clone()).api_id("hello").api_name("Hello"));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnalyticsLayer {
    reporter: Reporter<HttpRecord>,
    config: Arc<LayerConfig>,
}

#[derive(Clone, Default)]
struct LayerConfig {
    api_id: String,
    api_name: String,
    org_id: String,
    tags: Vec<String>,
    track_path: bool,
    expire_after: Duration,
}

impl AnalyticsLayer {
    /// A layer recording into `reporter`; every field below defaults to
    /// empty (`false` for `track_path`).
    pub fn new(reporter: Reporter<HttpRecord>) -> Self {
        AnalyticsLayer {
            reporter,
            config: Arc::new(LayerConfig {
                expire_after: DEFAULT_EXPIRE_AFTER,
                ..LayerConfig::default()
            }),
        }
    }

    fn config(&mut self) -> &mut LayerConfig {
        Arc::make_mut(&mut self.config)
    }

    /// `APIID` of every record.
    pub fn api_id(mut self, id: impl Into<String>) -> Self {
        self.config().api_id = id.into();
        self
    }

    /// `APIName` of every record.
    pub fn api_name(mut self, name: impl Into<String>) -> Self {
        self.config().api_name = name.into();
        self
    }

    /// `OrgID` of every record.
    pub fn org_id(mut self, org: impl Into<String>) -> Self {
        self.config().org_id = org.into();
        self
    }

    /// `Tags` of every record.
    pub fn tags(mut self, tags: Vec<String>) -> Self {
        self.config().tags = tags;
        self
    }

    /// `TrackPath` of every record.
    pub fn track_path(mut self, track: bool) -> Self {
        self.config().track_path = track;
        self
    }

    /// How long after its `TimeStamp` a record's `ExpireAt` lies. Default
    /// [`DEFAULT_EXPIRE_AFTER`].
    pub fn expire_after(mut self, d: Duration) -> Self {
        self.config().expire_after = d;
        self
    }
}

impl<S> tower_layer::Layer<S> for AnalyticsLayer {
    type Service = Analytics<S>;

    fn layer(&self, inner: S) -> Analytics<S> {
        Analytics {
            inner,
            reporter: self.reporter.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

/// The service [`AnalyticsLayer`] wraps around another.
#[derive(Clone)]
pub struct Analytics<S> {
    inner: S,
    reporter: Reporter<HttpRecord>,
    config: Arc<LayerConfig>,
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for Analytics<S>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let seen = Seen::of(&req);
        ResponseFuture {
            inner: self.inner.call(req),
            pending: Some(Pending {
                seen,
                reporter: self.reporter.clone(),
                config: Arc::clone(&self.config),
            }),
            waiting: None,
        }
    }
}

/// What the request contributes, taken before it moves on. Its strings
/// are copied into one buffer (one allocation), so a record waiting in the
/// reporter's buffer never pins the server's read buffers.
struct Seen {
    start: Instant,
    method: Method,
    /// Host, path, user agent and the proxy header's client address, back
    /// to back; `ends` marks where each one ends.
    text: String,
    ends: [usize; 4],
    client: Client,
    content_length: i64,
}

/// Where the client's address comes from.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// axum's `ConnectInfo`.
    Addr(IpAddr),
    /// The first `X-Forwarded-For` entry, or `X-Real-IP` (in `text`).
    Header,
}

impl Seen {
    fn of<B: Body>(req: &Request<B>) -> Self {
        let headers = req.headers();
        let host = match header_str(headers.get(HOST)) {
            "" => req.uri().authority().map_or("", |a| a.as_str()),
            h => h,
        };
        let path = req.uri().path();
        let user_agent = header_str(headers.get(USER_AGENT));
        let (client, proxied) = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
            Some(ConnectInfo(addr)) => (Client::Addr(addr.ip()), ""),
            None => (Client::Header, proxy_client(headers)),
        };
        let mut text =
            String::with_capacity(host.len() + path.len() + user_agent.len() + proxied.len());
        let mut ends = [0; 4];
        for (i, part) in [host, path, user_agent, proxied].into_iter().enumerate() {
            text.push_str(part);
            ends[i] = text.len();
        }
        Seen {
            start: Instant::now(),
            method: req.method().clone(),
            text,
            ends,
            client,
            content_length: length(headers, req.body()),
        }
    }

    /// Part `i` of `text`: 0 host, 1 path, 2 user agent, 3 proxied client.
    fn part(&self, i: usize) -> &str {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        self.text.get(from..self.ends[i]).unwrap_or_default()
    }

    fn ip(&self) -> String {
        match self.client {
            Client::Addr(ip) => ip.to_string(),
            Client::Header => self.part(3).to_string(),
        }
    }
}

/// The client address a proxy reports: the first `X-Forwarded-For` entry,
/// else `X-Real-IP`.
fn proxy_client(headers: &HeaderMap) -> &str {
    let first = header_str(headers.get("x-forwarded-for"))
        .split(',')
        .next()
        .unwrap_or_default()
        .trim();
    if first.is_empty() {
        header_str(headers.get("x-real-ip")).trim()
    } else {
        first
    }
}

fn header_str(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// `Content-Length`, else the body's exact size hint, else 0.
fn length<B: Body>(headers: &HeaderMap, body: &B) -> i64 {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| body.size_hint().exact().and_then(|n| i64::try_from(n).ok()))
        .unwrap_or(0)
}

/// One HTTP exchange as [`AnalyticsLayer`] saw it. Cheap to make on the
/// request path (one allocation); the reporter's workers turn it into a
/// Tyk record ([`HttpRecord::to_tyk`]) and encode it.
pub struct HttpRecord {
    seen: Seen,
    status: u16,
    bytes_out: i64,
    latency: Duration,
    at: SystemTime,
    config: Arc<LayerConfig>,
}

impl HttpRecord {
    /// The Tyk record this exchange maps to (see the module's table).
    pub fn to_tyk(&self) -> TykRecord {
        let seen = &self.seen;
        let config = &self.config;
        let latency_ms = i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX);
        let now = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expire = now + config.expire_after;
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        let utc = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let path = seen.part(1);
        TykRecord {
            method: seen.method.as_str().to_string(),
            host: seen.part(0).to_string(),
            path: path.to_string(),
            raw_path: path.to_string(),
            content_length: seen.content_length,
            user_agent: seen.part(2).to_string(),
            day: i64::from(utc.day()),
            month: i64::from(u8::from(utc.month())),
            year: i64::from(utc.year()),
            hour: i64::from(utc.hour()),
            response_code: i64::from(self.status),
            timestamp: (secs, now.subsec_nanos()),
            api_name: config.api_name.clone(),
            api_id: config.api_id.clone(),
            org_id: config.org_id.clone(),
            request_time: latency_ms,
            ip_address: seen.ip(),
            network: [0, 0, seen.content_length, self.bytes_out],
            latency: [latency_ms, latency_ms, 0],
            tags: config.tags.clone(),
            track_path: config.track_path,
            expire_at: (
                i64::try_from(expire.as_secs()).unwrap_or(i64::MAX),
                expire.subsec_nanos(),
            ),
            ..TykRecord::default()
        }
    }
}

/// The format of the layer's reporter: [`HttpRecord`]s written as Tyk
/// Gateway writes its records. Default key [`TYK_KEY`](crate::TYK_KEY).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpTyk;

impl Format for HttpTyk {
    type Record = HttpRecord;
    fn default_key(&self) -> Option<&'static str> {
        Tyk.default_key()
    }
    fn encode(&self, record: &HttpRecord, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        Tyk.encode(&record.to_tyk(), out)
    }
}

struct Pending {
    seen: Seen,
    reporter: Reporter<HttpRecord>,
    config: Arc<LayerConfig>,
}

impl Pending {
    fn record<B: Body>(self, resp: &Response<B>) -> (Reporter<HttpRecord>, HttpRecord) {
        let record = HttpRecord {
            latency: self.seen.start.elapsed(),
            seen: self.seen,
            status: resp.status().as_u16(),
            bytes_out: length(resp.headers(), resp.body()),
            at: SystemTime::now(),
            config: self.config,
        };
        (self.reporter, record)
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project_lite::pin_project! {
    /// The response future of [`Analytics`].
    pub struct ResponseFuture<F: Future> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
        // `WhenFull::Block` with a full buffer: the response waits here
        // until its record is accepted.
        waiting: Option<(Wait, F::Output)>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        if let Some((wait, _)) = this.waiting.as_mut() {
            ready!(wait.as_mut().poll(cx));
            if let Some((_, out)) = this.waiting.take() {
                return Poll::Ready(out);
            }
        }
        let out = ready!(this.inner.poll(cx));
        let (Ok(resp), Some(pending)) = (&out, this.pending.take()) else {
            return Poll::Ready(out);
        };
        let (reporter, record) = pending.record(resp);
        match reporter.record(record) {
            Err(RecordError::Full(record)) if reporter.when_full() == WhenFull::Block => {
                let mut wait: Wait = Box::pin(async move {
                    // Accepted, or closed meanwhile (counted as dropped).
                    let _ = reporter.record_wait(record).await;
                });
                if wait.as_mut().poll(cx).is_pending() {
                    *this.waiting = Some((wait, out));
                    return Poll::Pending;
                }
                Poll::Ready(out)
            }
            // Accepted, or refused and counted by the reporter.
            _ => Poll::Ready(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(req: http::request::Builder) -> String {
        Seen::of(&req.body(String::new()).unwrap()).ip()
    }

    #[test]
    fn the_client_address_comes_from_connect_info_then_the_proxy_headers() {
        let addr: SocketAddr = "10.1.2.3:5555".parse().unwrap();
        let req = Request::builder()
            .header("x-forwarded-for", "192.0.2.7")
            .extension(ConnectInfo(addr));
        assert_eq!(ip(req), "10.1.2.3");
        let req = Request::builder()
            .header("x-forwarded-for", " 192.0.2.7 , 10.0.0.1")
            .header("x-real-ip", "192.0.2.9");
        assert_eq!(ip(req), "192.0.2.7");
        assert_eq!(
            ip(Request::builder().header("x-real-ip", "192.0.2.9 ")),
            "192.0.2.9"
        );
        assert_eq!(ip(Request::builder()), "");
    }

    #[test]
    fn lengths_come_from_content_length_else_an_exact_size_hint() {
        let req = Request::builder()
            .header(CONTENT_LENGTH, "12")
            .body(String::new())
            .unwrap();
        assert_eq!(length(req.headers(), req.body()), 12);
        let req = Request::builder().body("abc".to_string()).unwrap();
        assert_eq!(length(req.headers(), req.body()), 3);
    }
}
