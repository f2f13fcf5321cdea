//! Blocking HTTP requests from a plugin, over `wasi:http/outgoing-handler`.
//!
//! The host sends a request only when its URL matches an entry of the
//! pump's `sandbox.allowed_outbound_hosts` (and, for names resolving to
//! loopback or private addresses, when the pump allows private networks).
//! A refused request fails with [`HttpErrorKind::Denied`]; nothing reaches
//! the network.
//!
//! ```no_run
//! use pumphouse_sdk::http::Request;
//!
//! # fn run() -> Result<(), pumphouse_sdk::Error> {
//! let response = Request::post("https://ingest.example.com/v1/events")
//!     .header("content-type", "application/x-ndjson")
//!     .body(b"{\"a\":1}\n".to_vec())
//!     .timeout(std::time::Duration::from_secs(5))
//!     .send()?              // HttpError -> Error: network trouble is `retry`
//!     .error_for_status()?; // 429/5xx -> retry, 413 -> too-large, 400/422 -> invalid
//! pumphouse_sdk::debug!("ingested: {}", response.status());
//! # Ok(()) }
//! ```
//!
//! Errors convert with `?` into [`Error`] and [`WriteError`]:
//!
//! | failure                                        | kind       |
//! |------------------------------------------------|------------|
//! | timeout, DNS, connection, TLS, protocol        | `Retry`    |
//! | response larger than `max_response_size`      | `Retry`    |
//! | denied by the sandbox, malformed URL or header | `Fatal`    |
//!
//! [`Response::error_for_status`] maps HTTP statuses: 408, 425, 429 and
//! 5xx are `Retry`; 413 is `TooLarge` (the host splits the batch); 400 and
//! 422 are `Invalid` (the host bisects to find the bad record); any other
//! non-2xx status (redirects are not followed, 401, 403, 404, ...) is
//! `Fatal`.
//!
//! Compiled natively (unit tests), requests go to the responder installed
//! with [`testing::mock_http`](crate::testing::mock_http), or fail with
//! [`HttpErrorKind::Unavailable`].

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, WriteError};

/// Percent-encodes `text` for a URL's query or path: every byte but the
/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`).
///
/// ```
/// assert_eq!(pumphouse_sdk::http::percent_encode("INSERT INTO t"), "INSERT%20INTO%20t");
/// ```
pub fn percent_encode(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// `url` fit for a log line or an error message: every query value and
/// any fragment become `***`, keeping the parameter names. Collectors take
/// API keys in the query (`?token=`, `?dd-api-key=`), and a reason travels
/// into logs, `/readyz` and dead letters.
///
/// ```
/// use pumphouse_sdk::http::redact_url;
/// assert_eq!(redact_url("https://l.io:8071/?token=abc&type=x"), "https://l.io:8071/?token=***&type=***");
/// assert_eq!(redact_url("http://h/p"), "http://h/p");
/// ```
pub fn redact_url(url: &str) -> String {
    let (base, fragment) = match url.split_once('#') {
        Some((base, _)) => (base, "#***"),
        None => (url, ""),
    };
    let Some((path, query)) = base.split_once('?') else {
        return format!("{base}{fragment}");
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if pair.is_empty() => String::new(),
            None => format!("{pair}=***"),
        })
        .collect();
    format!("{path}?{}{fragment}", params.join("&"))
}

/// Response bodies larger than this fail unless the request raises it.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 16 * 1024 * 1024;

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `OPTIONS`
    Options,
    /// Any other method, e.g. `PROPFIND`.
    Other(String),
}

impl Method {
    /// The method as it goes on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Other(m) => m,
        }
    }

    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    fn has_body(&self) -> bool {
        matches!(self, Method::Post | Method::Put | Method::Patch)
    }
}

/// An outgoing request, built with chained calls and sent with
/// [`Request::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    max_response_size: usize,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: Method, url: impl Into<String>) -> Request {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            connect_timeout: None,
            timeout: None,
            max_response_size: DEFAULT_MAX_RESPONSE_SIZE,
        }
    }

    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Request {
        Self::new(Method::Get, url)
    }

    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Request {
        Self::new(Method::Post, url)
    }

    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Request {
        Self::new(Method::Put, url)
    }

    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Request {
        Self::new(Method::Delete, url)
    }

    /// Adds a header (names are case-insensitive; repeat a name to send
    /// several values). `Host`, `Connection` and other hop-by-hop headers
    /// are set by the host and refused here.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Request {
        self.headers
            .push((name.into().to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body. `Content-Length` is set from it.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Request, Error> {
        let body = serde_json::to_vec(value).map_err(|e| Error::invalid(e.to_string()))?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// How long to wait for the response to start and, after that, between
    /// two chunks of it. The host caps it at the pump's
    /// `sandbox.http_timeout` (default 30s); the pump's per-call `timeout`
    /// bounds the whole call anyway.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// How long to wait for the connection (including TLS); capped like
    /// [`Request::timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Request {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Fail responses with bodies larger than this many bytes (default
    /// [`DEFAULT_MAX_RESPONSE_SIZE`]): the body is held in memory, which
    /// the pump's `max_memory` limits.
    pub fn max_response_size(mut self, bytes: usize) -> Request {
        self.max_response_size = bytes;
        self
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The headers, names in lowercase, in the order they were added.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The first value of header `name` as text.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }

    /// Sends the request and reads the whole response. Blocks the plugin
    /// (and only the plugin) until then. Any status is a response: use
    /// [`Response::error_for_status`] to turn failures into errors.
    pub fn send(self) -> Result<Response, HttpError> {
        transport::send(&self)
    }
}

/// A response with its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    url: String,
}

impl Response {
    /// A response, for tests' mock responders.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            url: String::new(),
        }
    }

    /// The same response with a header added.
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Response {
        self.headers
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The same response with this body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The headers, names in lowercase.
    pub fn headers(&self) -> &[(String, Vec<u8>)] {
        &self.headers
    }

    /// The first value of header `name` (case-insensitive) as text; `None`
    /// when missing or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, by value.
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body).map_err(|e| {
            Error::retry(format!(
                "{}: response body is not UTF-8: {e}",
                redact_url(&self.url)
            ))
        })
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        // A body we cannot parse is the server's problem, not the batch's.
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::retry(format!(
                "{}: response is not the expected JSON: {e}",
                redact_url(&self.url)
            ))
        })
    }

    /// `Ok(self)` for 2xx; otherwise an [`Error`] whose kind tells the host
    /// what to do (see the module documentation) and whose message holds
    /// the status and the start of the body.
    pub fn error_for_status(self) -> Result<Response, Error> {
        if self.is_success() {
            return Ok(self);
        }
        let snippet: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(200)
            .collect();
        let message = format!(
            "{} returned {}: {}",
            redact_url(&self.url),
            self.status,
            snippet.trim()
        );
        Err(match self.status {
            408 | 425 | 429 | 500..=599 => Error::retry(message),
            413 => Error::too_large(message),
            400 | 422 => Error::invalid(message),
            _ => Error::fatal(message),
        })
    }
}

fn find_header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// What went wrong with a request that got no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpErrorKind {
    /// The pump's sandbox does not allow this destination.
    Denied,
    /// The URL, method or a header is malformed.
    InvalidRequest,
    /// Connecting, the first byte or a later byte took too long.
    Timeout,
    /// The host name did not resolve.
    Dns,
    /// The connection was refused or broke.
    Connection,
    /// TLS failed (certificate, protocol).
    Tls,
    /// The server spoke something other than valid HTTP/1.1.
    Protocol,
    /// The response body exceeded [`Request::max_response_size`].
    ResponseTooLarge,
    /// No HTTP here: a native build without
    /// [`testing::mock_http`](crate::testing::mock_http).
    Unavailable,
}

/// A request that got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    kind: HttpErrorKind,
    method: String,
    url: String,
    detail: String,
}

impl HttpError {
    /// An error of `kind` for `request`, e.g. from a mock responder.
    pub fn new(kind: HttpErrorKind, request: &Request, detail: impl Into<String>) -> HttpError {
        HttpError {
            kind,
            method: request.method.as_str().to_string(),
            url: request.url.clone(),
            detail: detail.into(),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// Details (an error code, the header at fault, ...).
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            HttpErrorKind::Denied => {
                "denied by the pump's sandbox (list it in sandbox.allowed_outbound_hosts; private addresses also need sandbox.allow_private_networks)"
            }
            HttpErrorKind::InvalidRequest => "invalid request",
            HttpErrorKind::Timeout => "timed out",
            HttpErrorKind::Dns => "name lookup failed",
            HttpErrorKind::Connection => "connection failed",
            HttpErrorKind::Tls => "TLS failed",
            HttpErrorKind::Protocol => "HTTP protocol error",
            HttpErrorKind::ResponseTooLarge => "response too large",
            HttpErrorKind::Unavailable => "HTTP unavailable",
        };
        write!(f, "{} {}: {what}", self.method, redact_url(&self.url))?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for Error {
    fn from(e: HttpError) -> Self {
        match e.kind {
            HttpErrorKind::Denied | HttpErrorKind::InvalidRequest | HttpErrorKind::Unavailable => {
                Error::fatal(e.to_string())
            }
            _ => Error::retry(e.to_string()),
        }
    }
}

impl From<HttpError> for WriteError {
    fn from(e: HttpError) -> Self {
        Error::from(e).into()
    }
}

/// `scheme://authority/path?query` split for `wasi:http`.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    https: bool,
    authority: &'a str,
    path_with_query: &'a str,
}

fn parse_url(url: &str) -> Result<Target<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "expected http://… or https://…".to_string())?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("scheme {other:?} is not http or https")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!(
            "{authority:?} is not a host[:port] (credentials go in a header)"
        ));
    }
    let path_with_query = if path.is_empty() { "/" } else { path };
    Ok(Target {
        https,
        authority,
        path_with_query,
    })
}

#[cfg(target_arch = "wasm32")]
mod transport {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types as wasi;
    use wasip2::io::streams::StreamError;

    use super::{parse_url, HttpError, HttpErrorKind, Method, Request, Response};

    const READ_CHUNK: u64 = 64 * 1024;

    pub(super) fn send(req: &Request) -> Result<Response, HttpError> {
        let fail = |kind, detail: String| HttpError::new(kind, req, detail);
        let target = parse_url(&req.url).map_err(|d| fail(HttpErrorKind::InvalidRequest, d))?;
        let with_body = !req.body.is_empty() || req.method.has_body();
        let mut fields = req.headers.clone();
        if with_body && req.header_value("content-length").is_none() {
            fields.push((
                "content-length".into(),
                req.body.len().to_string().into_bytes(),
            ));
        }
        let headers = wasi::Fields::from_list(&fields)
            .map_err(|e| fail(HttpErrorKind::InvalidRequest, format!("headers: {e:?}")))?;
        let request = wasi::OutgoingRequest::new(headers);
        let method = match &req.method {
            Method::Get => wasi::Method::Get,
            Method::Head => wasi::Method::Head,
            Method::Post => wasi::Method::Post,
            Method::Put => wasi::Method::Put,
            Method::Patch => wasi::Method::Patch,
            Method::Delete => wasi::Method::Delete,
            Method::Options => wasi::Method::Options,
            Method::Other(m) => wasi::Method::Other(m.clone()),
        };
        let scheme = if target.https {
            wasi::Scheme::Https
        } else {
            wasi::Scheme::Http
        };
        let invalid = |what: &str| fail(HttpErrorKind::InvalidRequest, format!("invalid {what}"));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(target.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(target.path_with_query))
            .map_err(|()| invalid("path"))?;
        let body = if with_body {
            Some(request.body().map_err(|()| invalid("body"))?)
        } else {
            None
        };
        let options = wasi::RequestOptions::new();
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // A host that ignores an option still applies its own cap.
        if let Some(t) = req.connect_timeout {
            let _ = options.set_connect_timeout(Some(nanos(t)));
        }
        if let Some(t) = req.timeout {
            let _ = options.set_first_byte_timeout(Some(nanos(t)));
            let _ = options.set_between_bytes_timeout(Some(nanos(t)));
        }
        let pending =
            outgoing_handler::handle(request, Some(options)).map_err(|c| code_error(req, c))?;
        // Dropping the body unfinished after a failed write aborts the
        // request; the response future then says why it failed (a denial,
        // a refused connection), which beats "stream closed". A server may
        // also answer early (a 413) without reading the whole body.
        let written = match body {
            Some(body) => write_body(req, &body).and_then(|()| {
                wasi::OutgoingBody::finish(body, None).map_err(|c| code_error(req, c))
            }),
            None => Ok(()),
        };
        let response = loop {
            match pending.get() {
                Some(Ok(Ok(r))) => break r,
                Some(Ok(Err(code))) => return Err(code_error(req, code)),
                Some(Err(())) => {
                    return Err(fail(
                        HttpErrorKind::Protocol,
                        "response already taken".into(),
                    ))
                }
                None => pending.subscribe().block(),
            }
        };
        let status = response.status();
        if let Err(e) = written {
            // Only an early error answer explains a failed upload.
            if (200..300).contains(&status) {
                return Err(e);
            }
        }
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| fail(HttpErrorKind::Protocol, "response body unavailable".into()))?;
        let body = read_body(req, &incoming)?;
        drop(wasi::IncomingBody::finish(incoming));
        Ok(Response {
            status,
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            body,
            url: req.url.clone(),
        })
    }

    fn write_body(req: &Request, body: &wasi::OutgoingBody) -> Result<(), HttpError> {
        let stream = body.write().map_err(|()| {
            HttpError::new(HttpErrorKind::Protocol, req, "request body unavailable")
        })?;
        let mut rest = req.body.as_slice();
        while !rest.is_empty() {
            let room = stream.check_write().map_err(|e| stream_error(req, e))?;
            if room == 0 {
                stream.subscribe().block();
                continue;
            }
            let n = usize::try_from(room).unwrap_or(usize::MAX).min(rest.len());
            stream.write(&rest[..n]).map_err(|e| stream_error(req, e))?;
            rest = &rest[n..];
        }
        match stream.blocking_flush() {
            // The host hands the body to the connection, which lets go of
            // it as soon as it has read Content-Length bytes: closed after
            // the last write means everything went out. A real failure
            // shows in the response.
            Ok(()) | Err(StreamError::Closed) => Ok(()),
            Err(e) => Err(stream_error(req, e)),
        }
    }

    fn read_body(req: &Request, body: &wasi::IncomingBody) -> Result<Vec<u8>, HttpError> {
        let stream = body.stream().map_err(|()| {
            HttpError::new(HttpErrorKind::Protocol, req, "response body unavailable")
        })?;
        let mut out = Vec::new();
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if out.len() + chunk.len() > req.max_response_size {
                        return Err(HttpError::new(
                            HttpErrorKind::ResponseTooLarge,
                            req,
                            format!("more than {} bytes", req.max_response_size),
                        ));
                    }
                    out.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => return Ok(out),
                Err(e) => return Err(stream_error(req, e)),
            }
        }
    }

    fn stream_error(req: &Request, e: StreamError) -> HttpError {
        match e {
            StreamError::Closed => {
                HttpError::new(HttpErrorKind::Connection, req, "connection closed")
            }
            StreamError::LastOperationFailed(io) => match wasi::http_error_code(&io) {
                Some(code) => code_error(req, code),
                None => HttpError::new(HttpErrorKind::Connection, req, io.to_debug_string()),
            },
        }
    }

    fn code_error(req: &Request, code: wasi::ErrorCode) -> HttpError {
        use wasi::ErrorCode as C;
        let kind = match &code {
            C::HttpRequestDenied => HttpErrorKind::Denied,
            C::DnsTimeout
            | C::ConnectionTimeout
            | C::ConnectionReadTimeout
            | C::ConnectionWriteTimeout
            | C::HttpResponseTimeout => HttpErrorKind::Timeout,
            C::DnsError(_) | C::DestinationNotFound => HttpErrorKind::Dns,
            C::ConnectionRefused
            | C::ConnectionTerminated
            | C::ConnectionLimitReached
            | C::DestinationUnavailable
            | C::DestinationIpProhibited
            | C::DestinationIpUnroutable => HttpErrorKind::Connection,
            C::TlsProtocolError | C::TlsCertificateError | C::TlsAlertReceived(_) => {
                HttpErrorKind::Tls
            }
            C::HttpRequestMethodInvalid
            | C::HttpRequestUriInvalid
            | C::HttpRequestUriTooLong
            | C::HttpRequestHeaderSectionSize(_)
            | C::HttpRequestHeaderSize(_)
            | C::HttpRequestLengthRequired
            | C::HttpRequestBodySize(_) => HttpErrorKind::InvalidRequest,
            _ => HttpErrorKind::Protocol,
        };
        HttpError::new(kind, req, format!("{code:?}"))
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod transport {
    use std::cell::RefCell;

    use super::{parse_url, HttpError, HttpErrorKind, Request, Response};

    type Responder = Box<dyn FnMut(&Request) -> Result<Response, HttpError>>;

    thread_local! {
        static MOCK: RefCell<Option<Responder>> = const { RefCell::new(None) };
    }

    pub(crate) fn set_mock(responder: Option<Responder>) {
        MOCK.with(|m| *m.borrow_mut() = responder);
    }

    pub(super) fn send(req: &Request) -> Result<Response, HttpError> {
        parse_url(&req.url).map_err(|d| HttpError::new(HttpErrorKind::InvalidRequest, req, d))?;
        let mut responder = MOCK.with(|m| m.borrow_mut().take()).ok_or_else(|| {
            HttpError::new(
                HttpErrorKind::Unavailable,
                req,
                "outbound HTTP runs inside pumphouse; in native tests install a responder with testing::mock_http",
            )
        })?;
        let result = responder(req);
        // Put it back unless the responder installed another meanwhile.
        MOCK.with(|m| {
            let mut slot = m.borrow_mut();
            if slot.is_none() {
                *slot = Some(responder);
            }
        });
        let mut response = result?;
        response.url = req.url.clone();
        Ok(response)
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) use transport::set_mock;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            parse_url("https://api.example.com:8443/v1/x?y=1#frag").unwrap(),
            Target {
                https: true,
                authority: "api.example.com:8443",
                path_with_query: "/v1/x?y=1"
            }
        );
        assert_eq!(
            parse_url("http://localhost:9").unwrap().path_with_query,
            "/"
        );
        assert_eq!(parse_url("http://h?q").unwrap().path_with_query, "?q");
        assert!(parse_url("ftp://h/").is_err());
        assert!(parse_url("h/x").is_err());
        assert!(parse_url("https://user:pw@h/").is_err());
        assert!(parse_url("https:///x").is_err());
    }

    #[test]
    fn query_values_never_reach_error_texts() {
        assert_eq!(
            redact_url("http://h/?a&b=&c=1#f"),
            "http://h/?a=***&b=***&c=***#***"
        );
        let req = Request::post("https://listener.example:8071/?token=SECRET&type=x");
        let denied = HttpError::new(HttpErrorKind::Denied, &req, "");
        let mut response = Response::new(401);
        response.url = req.url.clone();
        let refused = response.error_for_status().unwrap_err();
        for text in [denied.to_string(), refused.to_string()] {
            assert!(!text.contains("SECRET"), "{text}");
            assert!(text.contains("token=***"), "{text}");
        }
    }

    #[test]
    fn statuses_map_onto_error_kinds() {
        let kind = |s: u16| {
            Response::new(s)
                .error_for_status()
                .map(|_| ())
                .map_err(|e| e.kind())
        };
        assert_eq!(kind(200), Ok(()));
        assert_eq!(kind(204), Ok(()));
        for s in [408, 425, 429, 500, 502, 503] {
            assert_eq!(kind(s), Err(ErrorKind::Retry), "{s}");
        }
        assert_eq!(kind(413), Err(ErrorKind::TooLarge));
        assert_eq!(kind(400), Err(ErrorKind::Invalid));
        assert_eq!(kind(422), Err(ErrorKind::Invalid));
        for s in [301, 401, 403, 404] {
            assert_eq!(kind(s), Err(ErrorKind::Fatal), "{s}");
        }
        let e = Response::new(503)
            .with_body("overloaded, try later")
            .error_for_status()
            .unwrap_err();
        assert!(
            e.message().contains("503") && e.message().contains("overloaded"),
            "{e}"
        );
    }

    #[test]
    fn transport_errors_map_onto_error_kinds() {
        let req = Request::get("https://x.example/");
        let kind = |k| Error::from(HttpError::new(k, &req, "")).kind();
        assert_eq!(kind(HttpErrorKind::Denied), ErrorKind::Fatal);
        assert_eq!(kind(HttpErrorKind::InvalidRequest), ErrorKind::Fatal);
        assert_eq!(kind(HttpErrorKind::Timeout), ErrorKind::Retry);
        assert_eq!(kind(HttpErrorKind::Connection), ErrorKind::Retry);
        assert_eq!(kind(HttpErrorKind::Dns), ErrorKind::Retry);
        assert_eq!(kind(HttpErrorKind::ResponseTooLarge), ErrorKind::Retry);
        let denied = HttpError::new(HttpErrorKind::Denied, &req, "").to_string();
        assert!(
            denied.contains("GET https://x.example/") && denied.contains("allowed_outbound_hosts"),
            "{denied}"
        );
        assert!(matches!(
            WriteError::from(HttpError::new(HttpErrorKind::Timeout, &req, "")),
            WriteError::Retry(_)
        ));
    }

    #[test]
    fn requests_go_to_the_mock_natively() {
        set_mock(None);
        let e = Request::get("http://h/").send().unwrap_err();
        assert_eq!(e.kind(), HttpErrorKind::Unavailable);
        crate::testing::mock_http(|req| {
            assert_eq!(req.method(), &Method::Post);
            assert_eq!(req.header_value("Content-Type"), Some("application/json"));
            Ok(Response::new(201)
                .with_header("X-Id", "7")
                .with_body(req.body_bytes().to_vec()))
        });
        let r = Request::post("http://h/x")
            .json(&serde_json::json!({"a": 1}))
            .unwrap()
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.header("x-id"), Some("7"));
        assert_eq!(r.json::<serde_json::Value>().unwrap()["a"], 1);
        set_mock(None);
    }
}
