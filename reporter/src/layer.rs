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
    attached: Arc<Attached>,
}

#[derive(Clone, Default)]
struct LayerConfig {
    api_id: String,
    api_name: String,
    org_id: String,
    tags: Vec<String>,
    track_path: bool,
    expire_after: Duration,
    /// The bytes every record of this layer shares, encoded once.
    template: Template,
}

impl AnalyticsLayer {
    /// A layer recording into `reporter`; every field below defaults to
    /// empty (`false` for `track_path`).
    pub fn new(reporter: Reporter<HttpRecord>) -> Self {
        let mut config = LayerConfig {
            expire_after: DEFAULT_EXPIRE_AFTER,
            ..LayerConfig::default()
        };
        config.template = Template::of(&config);
        AnalyticsLayer {
            attached: Arc::new(Attached {
                reporter,
                config: Arc::new(config),
            }),
        }
    }

    /// Changes the configuration and re-encodes the template.
    fn set(mut self, change: impl FnOnce(&mut LayerConfig)) -> Self {
        let attached = Arc::make_mut(&mut self.attached);
        let config = Arc::make_mut(&mut attached.config);
        change(config);
        config.template = Template::of(config);
        self
    }

    /// `APIID` of every record.
    pub fn api_id(self, id: impl Into<String>) -> Self {
        let id = id.into();
        self.set(|c| c.api_id = id)
    }

    /// `APIName` of every record.
    pub fn api_name(self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.set(|c| c.api_name = name)
    }

    /// `OrgID` of every record.
    pub fn org_id(self, org: impl Into<String>) -> Self {
        let org = org.into();
        self.set(|c| c.org_id = org)
    }

    /// `Tags` of every record.
    pub fn tags(self, tags: Vec<String>) -> Self {
        self.set(|c| c.tags = tags)
    }

    /// `TrackPath` of every record.
    pub fn track_path(self, track: bool) -> Self {
        self.set(|c| c.track_path = track)
    }

    /// How long after its `TimeStamp` a record's `ExpireAt` lies. Default
    /// [`DEFAULT_EXPIRE_AFTER`].
    pub fn expire_after(self, d: Duration) -> Self {
        self.set(|c| c.expire_after = d)
    }
}

impl<S> tower_layer::Layer<S> for AnalyticsLayer {
    type Service = Analytics<S>;

    fn layer(&self, inner: S) -> Analytics<S> {
        Analytics {
            inner,
            attached: Arc::clone(&self.attached),
        }
    }
}

/// The service [`AnalyticsLayer`] wraps around another.
#[derive(Clone)]
pub struct Analytics<S> {
    inner: S,
    attached: Arc<Attached>,
}

/// What the layer, the services it wraps and their pending responses
/// share, behind one `Arc`: routers clone the service for every request
/// (and an unfinished axum router even applies the layer for every
/// request), and each clone of a shared counter is contended by every
/// thread serving requests.
#[derive(Clone)]
struct Attached {
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
                attached: Arc::clone(&self.attached),
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
/// request path (one allocation); the reporter's workers encode it as the
/// Tyk record [`HttpRecord::to_tyk`] describes, straight from the layer's
/// pre-encoded template ([`HttpRecord::encode_tyk_into`]).
pub struct HttpRecord {
    seen: Seen,
    status: u16,
    bytes_out: i64,
    latency: Duration,
    at: SystemTime,
    config: Arc<LayerConfig>,
}

/// The values of one record that are computed rather than copied.
struct Derived {
    latency_ms: i64,
    timestamp: (i64, u32),
    expire_at: (i64, u32),
    /// Day, month, year, hour (UTC) of `timestamp`.
    date: [i64; 4],
}

impl HttpRecord {
    fn derived(&self) -> Derived {
        let latency_ms = i64::try_from(self.latency.as_millis()).unwrap_or(i64::MAX);
        let now = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let expire = now + self.config.expire_after;
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        Derived {
            latency_ms,
            timestamp: (secs, now.subsec_nanos()),
            expire_at: (
                i64::try_from(expire.as_secs()).unwrap_or(i64::MAX),
                expire.subsec_nanos(),
            ),
            date: utc_date(secs),
        }
    }

    /// The Tyk record this exchange maps to (see the module's table).
    /// [`HttpTyk`] writes the same bytes without building it.
    pub fn to_tyk(&self) -> TykRecord {
        let seen = &self.seen;
        let config = &self.config;
        let d = self.derived();
        let path = seen.part(1);
        let [day, month, year, hour] = d.date;
        TykRecord {
            method: seen.method.as_str().to_string(),
            host: seen.part(0).to_string(),
            path: path.to_string(),
            raw_path: path.to_string(),
            content_length: seen.content_length,
            user_agent: seen.part(2).to_string(),
            day,
            month,
            year,
            hour,
            response_code: i64::from(self.status),
            timestamp: d.timestamp,
            api_name: config.api_name.clone(),
            api_id: config.api_id.clone(),
            org_id: config.org_id.clone(),
            request_time: d.latency_ms,
            ip_address: seen.ip(),
            network: [0, 0, seen.content_length, self.bytes_out],
            latency: [d.latency_ms, d.latency_ms, 0],
            tags: config.tags.clone(),
            track_path: config.track_path,
            expire_at: d.expire_at,
            ..TykRecord::default()
        }
    }

    /// Appends the MessagePack of [`to_tyk`](Self::to_tyk), byte for byte
    /// as `pumphouse_wire::encode_tyk` writes it, from the layer's
    /// template and this exchange's values: no intermediate record, no
    /// allocation beyond `out`'s growth.
    pub fn encode_tyk_into(&self, out: &mut Vec<u8>) {
        let seen = &self.seen;
        let d = self.derived();
        let mut t = self.config.template.segments();
        let path = seen.part(1);
        let mut ip = IpText::default();
        let ip = match seen.client {
            Client::Addr(addr) => ip.format(addr),
            Client::Header => seen.part(3),
        };
        out.reserve(t.len() + seen.text.len() + path.len() + ip.len() + 64);
        t.then_str(out, seen.method.as_str());
        t.then_str(out, seen.part(0));
        t.then_str(out, path);
        t.then_str(out, path);
        t.then_int(out, seen.content_length);
        t.then_str(out, seen.part(2));
        for v in d.date {
            t.then_int(out, v);
        }
        t.then_int(out, i64::from(self.status));
        t.then_time(out, d.timestamp);
        t.then_int(out, d.latency_ms);
        t.then_str(out, ip);
        t.then_int(out, seen.content_length);
        t.then_int(out, self.bytes_out);
        t.then_int(out, d.latency_ms);
        t.then_int(out, d.latency_ms);
        t.then_time(out, d.expire_at);
        t.finish(out);
    }
}

/// Day, month, year and hour (UTC) of a unix time. Records come in runs
/// from the same hour: each thread keeps the last hour's answer.
fn utc_date(secs: i64) -> [i64; 4] {
    thread_local! {
        static LAST: std::cell::Cell<(i64, [i64; 4])> = const { std::cell::Cell::new((i64::MIN, [0; 4])) };
    }
    let hour = secs.div_euclid(3600);
    LAST.with(|last| {
        let (h, date) = last.get();
        if h == hour {
            return date;
        }
        let utc = time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let date = [
            i64::from(utc.day()),
            i64::from(u8::from(utc.month())),
            i64::from(utc.year()),
            i64::from(utc.hour()),
        ];
        last.set((hour, date));
        date
    })
}

/// An IP address as text, formatted on the stack.
struct IpText {
    buf: [u8; 64],
}

impl Default for IpText {
    fn default() -> Self {
        IpText { buf: [0; 64] }
    }
}

impl IpText {
    /// `ip` as `Display` writes it.
    fn format(&mut self, ip: IpAddr) -> &str {
        let n = match ip {
            // The common case, without the formatting machinery.
            IpAddr::V4(v4) => {
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        self.buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        self.buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    self.buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                n
            }
            IpAddr::V6(_) => {
                use std::io::Write;
                let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
                // The longest address text (45 bytes) fits.
                let _ = write!(cursor, "{ip}");
                usize::try_from(cursor.position()).unwrap_or(0)
            }
        };
        std::str::from_utf8(&self.buf[..n]).unwrap_or_default()
    }
}

/// Writes a msgpack value into a `Vec` (cannot fail: rmp's signatures
/// are fallible for any `io::Write`).
fn mp<T, E>(r: Result<T, E>) {
    debug_assert!(r.is_ok(), "writing to a Vec");
}

/// A msgpack string, in the form `rmp::encode::write_str` picks.
fn mp_str(out: &mut Vec<u8>, v: &str) {
    let n = v.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if let Ok(n) = u8::try_from(n) {
        out.extend_from_slice(&[0xd9, n]);
    } else if let Ok(n) = u16::try_from(n) {
        out.push(0xda);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
    }
    out.extend_from_slice(v.as_bytes());
}

/// A msgpack integer in its smallest form, as `rmp::encode::write_sint`
/// writes it (and Tyk's encoder).
fn mp_int(out: &mut Vec<u8>, v: i64) {
    match v {
        0..=127 => out.push(v as u8),
        -32..=-1 => out.push(v as u8),
        128..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        0x1_0000_0000.. => {
            out.push(0xcf);
            out.extend_from_slice(&(v as u64).to_be_bytes());
        }
        -128..=-33 => out.extend_from_slice(&[0xd0, v as u8]),
        -32768..=-129 => {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        }
        -2_147_483_648..=-32769 => {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        }
        _ => {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

fn mp_time(out: &mut Vec<u8>, (secs, nanos): (i64, u32)) {
    mp(rmp::encode::write_array_len(out, 2));
    mp_int(out, secs);
    mp_int(out, i64::from(nanos));
}

/// Values that vary per record, in the order of the Tyk layout.
const HOLES: usize = 19;

/// A layer's Tyk record with the per-record values left out: the
/// `HOLES + 1` constant runs of bytes (keys, and the fields set on the
/// layer or always empty) that lie between them, back to back.
#[derive(Clone, Default)]
struct Template {
    bytes: Vec<u8>,
    ends: [usize; HOLES + 1],
}

impl Template {
    /// Encodes the constant parts of `config`'s records in the order
    /// `pumphouse_wire::encode_tyk_into` writes a `TykRecord`; a hole marks
    /// each value [`HttpRecord::encode_tyk_into`] fills in.
    fn of(config: &LayerConfig) -> Self {
        use rmp::encode as enc;
        let mut t = Template::default();
        let out = &mut t.bytes;
        let mut holes = 0;
        let mut hole = |out: &mut Vec<u8>| {
            t.ends[holes] = out.len();
            holes += 1;
        };
        mp(enc::write_map_len(out, 32));
        for k in [
            "Method",
            "Host",
            "Path",
            "RawPath",
            "ContentLength",
            "UserAgent",
        ] {
            mp_str(out, k);
            hole(out);
        }
        for k in ["Day", "Month", "Year", "Hour", "ResponseCode"] {
            mp_str(out, k);
            hole(out);
        }
        mp_str(out, "APIKey");
        mp_str(out, "");
        mp_str(out, "TimeStamp");
        hole(out);
        for (k, v) in [
            ("APIVersion", ""),
            ("APIName", config.api_name.as_str()),
            ("APIID", config.api_id.as_str()),
            ("OrgID", config.org_id.as_str()),
            ("OauthID", ""),
        ] {
            mp_str(out, k);
            mp_str(out, v);
        }
        mp_str(out, "RequestTime");
        hole(out);
        for k in ["RawRequest", "RawResponse"] {
            mp_str(out, k);
            mp_str(out, "");
        }
        mp_str(out, "IPAddress");
        hole(out);
        // An empty Geo, as `encode_tyk` writes it.
        mp_str(out, "Geo");
        mp(enc::write_map_len(out, 3));
        mp_str(out, "Country");
        mp(enc::write_map_len(out, 1));
        mp_str(out, "ISOCode");
        mp_str(out, "");
        mp_str(out, "City");
        mp(enc::write_map_len(out, 2));
        mp_str(out, "GeoNameID");
        mp(enc::write_uint(out, 0));
        mp_str(out, "Names");
        mp(enc::write_nil(out));
        mp_str(out, "Location");
        mp(enc::write_map_len(out, 3));
        mp_str(out, "Latitude");
        mp(enc::write_f64(out, 0.0));
        mp_str(out, "Longitude");
        mp(enc::write_f64(out, 0.0));
        mp_str(out, "TimeZone");
        mp_str(out, "");
        mp_str(out, "Network");
        mp(enc::write_map_len(out, 4));
        for k in ["OpenConnections", "ClosedConnection"] {
            mp_str(out, k);
            mp_int(out, 0);
        }
        for k in ["BytesIn", "BytesOut"] {
            mp_str(out, k);
            hole(out);
        }
        mp_str(out, "Latency");
        mp(enc::write_map_len(out, 3));
        for k in ["Total", "Upstream"] {
            mp_str(out, k);
            hole(out);
        }
        mp_str(out, "Gateway");
        mp_int(out, 0);
        mp_str(out, "Tags");
        if config.tags.is_empty() {
            mp(enc::write_nil(out));
        } else {
            let n = u32::try_from(config.tags.len()).unwrap_or(u32::MAX);
            mp(enc::write_array_len(out, n));
            for tag in &config.tags {
                mp_str(out, tag);
            }
        }
        mp_str(out, "Alias");
        mp_str(out, "");
        mp_str(out, "TrackPath");
        mp(enc::write_bool(out, config.track_path));
        mp_str(out, "ExpireAt");
        hole(out);
        for k in ["ApiSchema", "OriginalPath", "ListenPath"] {
            mp_str(out, k);
            mp_str(out, "");
        }
        hole(out);
        debug_assert_eq!(holes, HOLES + 1);
        t
    }

    fn segments(&self) -> Segments<'_> {
        Segments {
            template: self,
            next: 0,
        }
    }
}

/// Walks a [`Template`]: each `then_*` copies the next constant run, then
/// writes one value.
struct Segments<'a> {
    template: &'a Template,
    next: usize,
}

impl Segments<'_> {
    /// The template's size in bytes.
    fn len(&self) -> usize {
        self.template.bytes.len()
    }

    fn constant(&mut self, out: &mut Vec<u8>) {
        let t = self.template;
        let from = if self.next == 0 {
            0
        } else {
            t.ends[self.next - 1]
        };
        let to = t.ends.get(self.next).copied().unwrap_or(t.bytes.len());
        out.extend_from_slice(t.bytes.get(from..to).unwrap_or_default());
        self.next += 1;
    }

    fn then_str(&mut self, out: &mut Vec<u8>, v: &str) {
        self.constant(out);
        mp_str(out, v);
    }

    fn then_int(&mut self, out: &mut Vec<u8>, v: i64) {
        self.constant(out);
        mp_int(out, v);
    }

    fn then_time(&mut self, out: &mut Vec<u8>, v: (i64, u32)) {
        self.constant(out);
        mp_time(out, v);
    }

    /// The run after the last value.
    fn finish(mut self, out: &mut Vec<u8>) {
        debug_assert_eq!(self.next, HOLES);
        self.constant(out);
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
        record.encode_tyk_into(out);
        Ok(())
    }
}

struct Pending {
    seen: Seen,
    attached: Arc<Attached>,
}

impl Pending {
    fn record<B: Body>(self, resp: &Response<B>) -> (Arc<Attached>, HttpRecord) {
        let record = HttpRecord {
            latency: self.seen.start.elapsed(),
            seen: self.seen,
            status: resp.status().as_u16(),
            bytes_out: length(resp.headers(), resp.body()),
            at: SystemTime::now(),
            config: Arc::clone(&self.attached.config),
        };
        (self.attached, record)
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
        // until its record is accepted. Boxed: the rare case should not
        // make every request's future larger (futures are moved around).
        waiting: Option<Box<(Wait, F::Output)>>,
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
        if let Some(waiting) = this.waiting.as_mut() {
            ready!(waiting.0.as_mut().poll(cx));
            if let Some(waiting) = this.waiting.take() {
                return Poll::Ready(waiting.1);
            }
        }
        let out = ready!(this.inner.poll(cx));
        let (Ok(resp), Some(pending)) = (&out, this.pending.take()) else {
            return Poll::Ready(out);
        };
        let (attached, record) = pending.record(resp);
        let reporter = &attached.reporter;
        match reporter.record(record) {
            Err(RecordError::Full(record)) if reporter.when_full() == WhenFull::Block => {
                let reporter = reporter.clone();
                let mut wait: Wait = Box::pin(async move {
                    // Accepted, or closed meanwhile (counted as dropped).
                    let _ = reporter.record_wait(record).await;
                });
                if wait.as_mut().poll(cx).is_pending() {
                    *this.waiting = Some(Box::new((wait, out)));
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

    /// Every combination of a few layer settings and requests, including
    /// strings and integers at the edges of their msgpack forms.
    #[test]
    fn the_direct_encoding_is_byte_identical_to_encoding_the_tyk_record() {
        let long = |n: usize| "x".repeat(n);
        let configs = [
            AnalyticsLayer::new(refusing()),
            AnalyticsLayer::new(refusing())
                .api_id("hello-api")
                .api_name("hello")
                .org_id("org")
                .tags(vec!["a".into(), long(40)])
                .track_path(true)
                .expire_after(Duration::from_millis(1500)),
            AnalyticsLayer::new(refusing())
                .api_id(long(31))
                .api_name(long(256))
                .org_id(long(70_000))
                .tags((0..20).map(|i| i.to_string()).collect()),
        ];
        let addr: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        let v4: SocketAddr = "192.0.2.200:80".parse().unwrap();
        let requests = [
            Request::builder().uri("/"),
            Request::builder()
                .method("POST")
                .uri(format!("http://example.com/{}", long(300)))
                .header(USER_AGENT, long(200))
                .header(CONTENT_LENGTH, "70000")
                .extension(ConnectInfo(addr)),
            Request::builder()
                .method("PATCH")
                .uri("/items/1?q=2")
                .header(HOST, "h")
                .header("x-forwarded-for", "198.51.100.4, 10.0.0.1")
                .header(CONTENT_LENGTH, "128"),
            Request::builder().uri("/x").extension(ConnectInfo(v4)),
            Request::builder()
                .uri("/neg")
                .header(CONTENT_LENGTH, "-40000"),
        ];
        let times = [
            SystemTime::UNIX_EPOCH,
            SystemTime::UNIX_EPOCH + Duration::new(1_763_700_000, 999_999_999),
            SystemTime::UNIX_EPOCH + Duration::new(4_102_444_800, 1),
        ];
        let outcomes = [
            (200, 0, Duration::ZERO),
            (404, 127, Duration::from_micros(999)),
            (503, 1 << 33, Duration::from_secs(100_000)),
        ];
        let mut n = 0;
        for layer in &configs {
            for req in &requests {
                let req = clone_request(req).body(String::new()).unwrap();
                for &at in &times {
                    for &(status, bytes_out, latency) in &outcomes {
                        let record = HttpRecord {
                            seen: Seen::of(&req),
                            status,
                            bytes_out,
                            latency,
                            at,
                            config: Arc::clone(&layer.attached.config),
                        };
                        let mut direct = vec![7];
                        record.encode_tyk_into(&mut direct);
                        assert_eq!(direct[0], 7, "appends");
                        let expected = pumphouse_wire::encode_tyk(&record.to_tyk());
                        assert!(direct[1..] == expected[..], "record {n} differs");
                        n += 1;
                    }
                }
            }
        }
        assert_eq!(n, 3 * 5 * 3 * 3);
    }

    #[test]
    fn integers_and_strings_are_written_as_rmp_writes_them() {
        let mut edges = vec![0, i64::MIN, i64::MAX];
        for k in 0..63 {
            let p = 1i64 << k;
            edges.extend([p - 1, p, p + 1, -p - 1, -p, -p + 1]);
        }
        for v in edges {
            let (mut ours, mut rmp) = (Vec::new(), Vec::new());
            mp_int(&mut ours, v);
            rmp::encode::write_sint(&mut rmp, v).unwrap();
            assert_eq!(ours, rmp, "{v}");
        }
        for n in [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000] {
            let v = "y".repeat(n);
            let (mut ours, mut rmp) = (Vec::new(), Vec::new());
            mp_str(&mut ours, &v);
            rmp::encode::write_str(&mut rmp, &v).unwrap();
            assert!(ours == rmp, "a string of {n} bytes");
        }
    }

    #[test]
    fn the_date_is_the_utc_date_of_the_time_in_or_out_of_the_cache() {
        for secs in [
            0,
            3599,
            3600,
            1_763_700_000,
            1_763_701_199,
            1_763_701_200,
            0,
        ] {
            let utc = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
            let expected = [
                i64::from(utc.day()),
                i64::from(u8::from(utc.month())),
                i64::from(utc.year()),
                i64::from(utc.hour()),
            ];
            assert_eq!(utc_date(secs), expected, "{secs}");
            assert_eq!(utc_date(secs), expected, "{secs}, cached");
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut text = IpText::default();
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.99.100",
            "255.255.255.255",
            "1.9.10.199",
            "::1",
            "2001:db8::ff00:42:8329",
            "::ffff:192.0.2.128",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(text.format(ip), ip.to_string());
        }
    }

    /// A reporter that is never started: records go nowhere.
    fn refusing() -> Reporter<HttpRecord> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Reporter::builder()
            .format(HttpTyk)
            .redis_url("redis://127.0.0.1:1/0")
            .runtime(rt.handle().clone())
            .build()
            .unwrap()
    }

    fn clone_request(b: &http::request::Builder) -> http::request::Builder {
        let mut out = Request::builder()
            .method(b.method_ref().unwrap().clone())
            .uri(b.uri_ref().unwrap().clone());
        for (k, v) in b.headers_ref().unwrap() {
            out = out.header(k, v);
        }
        if let Some(c) = b.extensions_ref().unwrap().get::<ConnectInfo<SocketAddr>>() {
            out = out.extension(*c);
        }
        out
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
