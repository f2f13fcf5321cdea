//! A worker's connection to Redis: connect (TCP, TLS or Unix socket),
//! `AUTH` and `SELECT`, write a batch's framed bytes as they are, read its
//! replies. Behind Sentinel, [`connect`] asks the sentinels for the
//! primary first; in a cluster it goes where the last `MOVED` pointed.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::endpoint::{Addr, Endpoint, Topology};
use pumphouse_wire::resp::{self, ProtocolError, Reply};

/// Why a request failed, naming the cause.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Redis answered with an error; the connection is still usable.
    #[error("{}", server_cause(.0))]
    Server(String),
    #[error("connection refused by {0}: nothing listens there")]
    Refused(String),
    #[error("TLS handshake with {addr} failed: {why}")]
    Tls { addr: String, why: String },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// No sentinel named a usable primary.
    #[error("sentinel discovery failed: {0}")]
    Discovery(String),
}

impl ConnError {
    /// True if the connection can carry on after this error: an error
    /// reply, unless it says the server is no longer the primary (a
    /// failover) and a new connection should find the one that is.
    pub fn keeps_connection(&self) -> bool {
        match self {
            ConnError::Server(e) => !matches!(
                code(e),
                "READONLY" | "NOREPLICAS" | "LOADING" | "MASTERDOWN" | "CLUSTERDOWN"
            ),
            _ => false,
        }
    }
}

/// The error code of an error reply's text.
fn code(e: &str) -> &str {
    e.split(' ').next().unwrap_or_default()
}

/// An error reply, read for the user.
fn server_cause(e: &str) -> String {
    let rest = e.split_once(' ').map_or("", |(_, r)| r);
    match code(e) {
        "WRONGPASS" => format!("authentication failed (WRONGPASS): {rest}"),
        "NOAUTH" => "authentication required (NOAUTH): redis_url has no password, and this \
                     Redis wants one"
            .into(),
        "NOPERM" => format!("permission denied (NOPERM): {rest}"),
        "READONLY" => format!("the server is a replica now (READONLY): {rest}"),
        "NOREPLICAS" => {
            format!("the primary refuses writes without enough replicas (NOREPLICAS): {rest}")
        }
        _ => format!("Redis replied: {e}"),
    }
}

/// Where an error reply sends a cluster request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// The slot has moved for good: send this and later requests there.
    Moved(Addr),
    /// The slot is being moved: send this request there, after `ASKING`.
    Ask(Addr),
}

impl Redirect {
    /// `MOVED <slot> <host>:<port>` or `ASK …`. An empty host is the
    /// node that answered (`from`).
    pub fn parse(e: &str, from: &Addr) -> Option<Redirect> {
        let mut words = e.split(' ');
        let kind = words.next()?;
        let _slot = words.next()?;
        let target = words.next()?;
        let (host, port) = target.rsplit_once(':')?;
        let port = port.parse().ok()?;
        let host = match (host, from) {
            ("", Addr::Tcp { host, .. }) => host.clone(),
            ("", Addr::Unix(_)) => return None,
            (h, _) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        };
        let addr = Addr::Tcp { host, port };
        match kind {
            "MOVED" => Some(Redirect::Moved(addr)),
            "ASK" => Some(Redirect::Ask(addr)),
            _ => None,
        }
    }
}

/// A TCP, TLS or Unix socket: one indirect call per read or write, a few
/// per batch.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) struct Conn {
    stream: Box<dyn Stream>,
    /// Reply bytes read but not parsed yet.
    replies: Vec<u8>,
    /// Where it is connected, for errors and redirects.
    pub addr: Addr,
}

/// A connection to where `endpoint` writes: the server of a one-server
/// URL; the primary the sentinels name; in a cluster `node` (the last
/// `MOVED` target) or else the first seed that answers.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    node: Option<&Addr>,
    timeout: Duration,
) -> Result<Conn, ConnError> {
    match &endpoint.topology {
        Topology::Single(addr) => Conn::open_logged_in(endpoint, addr, timeout).await,
        Topology::Sentinel { sentinels, master } => {
            let mut causes = Vec::new();
            for s in sentinels {
                match primary_from(endpoint, s, master, timeout).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => causes.push(format!("{s}: {e}")),
                }
            }
            Err(ConnError::Discovery(causes.join("; ")))
        }
        Topology::Cluster { seeds } => {
            if let Some(addr) = node {
                return Conn::open_logged_in(endpoint, addr, timeout).await;
            }
            let mut last = None;
            for s in seeds {
                match Conn::open_logged_in(endpoint, s, timeout).await {
                    Ok(conn) => return Ok(conn),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or(ConnError::Discovery("no seed node".into())))
        }
    }
}

/// Asks `sentinel` for `master`'s address and connects to it, checking
/// that it answers `ROLE` as a primary.
async fn primary_from(
    endpoint: &Endpoint,
    sentinel: &Addr,
    master: &str,
    timeout: Duration,
) -> Result<Conn, ConnError> {
    let mut s = Conn::open(endpoint, sentinel, timeout).await?;
    s.hello(
        None,
        endpoint.sentinel_password.as_deref(),
        0,
        false,
        timeout,
    )
    .await?;
    let reply = s
        .query(
            &[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", master.as_bytes()],
            timeout,
        )
        .await?;
    let addr = match reply {
        Reply::Array(Some(items)) => match items.as_slice() {
            [Reply::Bulk(Some(host)), Reply::Bulk(Some(port))] => {
                let port = std::str::from_utf8(port).ok().and_then(|p| p.parse().ok());
                match port {
                    Some(port) => Addr::Tcp {
                        host: String::from_utf8_lossy(host).into_owned(),
                        port,
                    },
                    None => return Err(ConnError::Discovery("a malformed address".into())),
                }
            }
            _ => return Err(ConnError::Discovery("a malformed address".into())),
        },
        Reply::Array(None) | Reply::Bulk(None) => {
            return Err(ConnError::Discovery(format!(
                "it knows no primary named {master:?}"
            )))
        }
        _ => return Err(ConnError::Discovery("an unexpected reply".into())),
    };
    let mut conn = Conn::open_logged_in(endpoint, &addr, timeout).await?;
    match conn.query(&[b"ROLE"], timeout).await {
        Ok(Reply::Array(Some(items))) => match items.first() {
            Some(Reply::Bulk(Some(role))) if role == b"master" => Ok(conn),
            _ => Err(ConnError::Discovery(format!(
                "it names {addr}, which is not a primary (yet)"
            ))),
        },
        // A user without ROLE (it is an admin command): take the
        // sentinel's word; a write to a replica fails with READONLY.
        Err(ConnError::Server(e)) if code(&e) == "NOPERM" => Ok(conn),
        Ok(_) => Err(ConnError::Discovery(format!(
            "{addr} answered ROLE unexpectedly"
        ))),
        Err(e) => Err(e),
    }
}

impl Conn {
    /// Connects to `addr` within `timeout`, with TLS if the URL asks.
    async fn open(endpoint: &Endpoint, addr: &Addr, timeout: Duration) -> Result<Conn, ConnError> {
        let refused = |e: io::Error| match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnError::Refused(addr.to_string()),
            _ => ConnError::Io(e),
        };
        let stream: Box<dyn Stream> = match addr {
            Addr::Tcp { host, port } => {
                let s = within(timeout, TcpStream::connect((host.as_str(), *port)))
                    .await?
                    .map_err(refused)?;
                // Batches are written whole: waiting to coalesce only adds
                // latency.
                s.set_nodelay(true)?;
                match &endpoint.tls {
                    None => Box::new(s),
                    Some(tls) => {
                        let name = tls.server_name.as_deref().unwrap_or(host);
                        let name = rustls::pki_types::ServerName::try_from(name.to_string())
                            .map_err(|e| ConnError::Tls {
                                addr: addr.to_string(),
                                why: format!("{name:?} is no server name: {e}"),
                            })?;
                        let handshake = tls.connector.connect(name, s);
                        match within(timeout, handshake).await? {
                            Ok(s) => Box::new(s),
                            Err(e) => return Err(tls_error(addr, e)),
                        }
                    }
                }
            }
            Addr::Unix(path) => Box::new(
                within(timeout, UnixStream::connect(path))
                    .await?
                    .map_err(refused)?,
            ),
        };
        Ok(Conn {
            stream,
            replies: Vec::with_capacity(256),
            addr: addr.clone(),
        })
    }

    /// [`Conn::open`], then the URL's `AUTH` and `SELECT`.
    async fn open_logged_in(
        endpoint: &Endpoint,
        addr: &Addr,
        timeout: Duration,
    ) -> Result<Conn, ConnError> {
        let mut conn = Conn::open(endpoint, addr, timeout).await?;
        let tls = endpoint.tls.is_some();
        match conn
            .hello(
                endpoint.user.as_deref(),
                endpoint.password.as_deref(),
                endpoint.db,
                tls,
                timeout,
            )
            .await
        {
            Ok(()) => Ok(conn),
            // With TLS 1.3 a server refuses a client certificate after
            // the handshake, in an alert the first reply brings.
            Err(ConnError::Io(e)) if tls => Err(tls_error(addr, e)),
            Err(e) => Err(e),
        }
    }

    /// Authenticates and selects `db` (in one round trip); with `ping`, a
    /// round trip is made even when neither is needed, so that a refusal
    /// shows at connect.
    async fn hello(
        &mut self,
        user: Option<&str>,
        password: Option<&str>,
        db: i64,
        ping: bool,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        let mut hello = Vec::new();
        let mut replies = 0;
        if let Some(password) = password {
            match user {
                Some(user) => resp::encode_command(
                    &mut hello,
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                ),
                None => resp::encode_command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if db != 0 {
            let db = db.to_string();
            resp::encode_command(&mut hello, &[b"SELECT", db.as_bytes()]);
            replies += 1;
        }
        if ping && replies == 0 {
            resp::encode_command(&mut hello, &[b"PING"]);
            replies += 1;
        }
        if replies > 0 {
            self.request(&[&hello], replies, timeout).await?;
        }
        Ok(())
    }

    /// A connection to `sentinel` (with the sentinels' password)
    /// subscribed to `channel`.
    pub async fn subscribe(
        endpoint: &Endpoint,
        sentinel: &Addr,
        channel: &str,
        timeout: Duration,
    ) -> Result<Conn, ConnError> {
        let mut conn = Conn::open(endpoint, sentinel, timeout).await?;
        conn.hello(
            None,
            endpoint.sentinel_password.as_deref(),
            0,
            false,
            timeout,
        )
        .await?;
        conn.query(&[b"SUBSCRIBE", channel.as_bytes()], timeout)
            .await?;
        Ok(conn)
    }

    /// The next reply or message, however long it takes.
    pub async fn next_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some((reply, used)) = resp::parse_reply(&self.replies)? {
                self.replies.drain(..used);
                return Ok(reply);
            }
            if self.stream.read_buf(&mut self.replies).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// One command and its reply (an error reply is an `Err`).
    async fn query(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, ConnError> {
        let mut cmd = Vec::new();
        resp::encode_command(&mut cmd, args);
        within(timeout, async {
            write_all(&mut *self.stream, &[&cmd]).await?;
            match self.next_reply().await? {
                Reply::Error(e) => Err(ConnError::Server(e)),
                r => Ok(r),
            }
        })
        .await?
    }

    /// Writes `parts` one after the other, then reads `replies` replies,
    /// all within `timeout`. Every reply is read even when one is an error,
    /// so the connection stays in step; the first error is returned.
    pub async fn request(
        &mut self,
        parts: &[&[u8]],
        replies: usize,
        timeout: Duration,
    ) -> Result<(), ConnError> {
        within(timeout, async {
            write_all(&mut *self.stream, parts).await?;
            self.read_replies(replies).await
        })
        .await?
    }

    async fn read_replies(&mut self, mut n: usize) -> Result<(), ConnError> {
        let mut first_error = None;
        let mut at = 0;
        while n > 0 {
            match resp::parse_reply(&self.replies[at..])? {
                Some((reply, used)) => {
                    at += used;
                    n -= 1;
                    if let (Reply::Error(e), None) = (reply, &first_error) {
                        first_error = Some(e);
                    }
                }
                None => {
                    self.replies.drain(..at);
                    at = 0;
                    if self.replies.capacity() - self.replies.len() < 4096 {
                        self.replies.reserve(16 * 1024);
                    }
                    if self.stream.read_buf(&mut self.replies).await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                }
            }
        }
        self.replies.drain(..at);
        first_error.map_or(Ok(()), |e| Err(ConnError::Server(e)))
    }
}

/// A failed handshake, read for the user: the certificate is not trusted,
/// not valid for the name, or the server refused ours.
fn tls_error(addr: &Addr, e: io::Error) -> ConnError {
    use rustls::CertificateError as C;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return ConnError::Tls {
            addr: addr.to_string(),
            why: e.to_string(),
        };
    };
    let why = match tls {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server certificate is not trusted ({tls}); set the CA that signed it \
             (Tls::ca_file)"
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => format!(
            "the server certificate is not valid for the name connected to ({tls}); \
             see Tls::server_name"
        ),
        rustls::Error::InvalidCertificate(_) => format!("bad server certificate ({tls})"),
        rustls::Error::AlertReceived(alert) => format!(
            "the server refused the connection ({alert:?} alert); it may want a client \
             certificate it trusts (Tls::client_cert)"
        ),
        other => other.to_string(),
    };
    ConnError::Tls {
        addr: addr.to_string(),
        why,
    }
}

/// Writes `parts` in order, with as few system calls as the socket allows.
async fn write_all(stream: &mut dyn Stream, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = stream.write_vectored(rest).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    // A TLS stream holds what it encrypted until flushed.
    stream.flush().await
}

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ConnError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| ConnError::Timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_read() {
        let from = Addr::Tcp {
            host: "10.0.0.1".into(),
            port: 7000,
        };
        let to = |host: &str, port| Addr::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(
            Redirect::parse("MOVED 3999 127.0.0.1:6381", &from),
            Some(Redirect::Moved(to("127.0.0.1", 6381)))
        );
        assert_eq!(
            Redirect::parse("ASK 3999 :6382", &from),
            Some(Redirect::Ask(to("10.0.0.1", 6382)))
        );
        assert_eq!(Redirect::parse("WRONGTYPE Operation", &from), None);
    }

    #[test]
    fn error_replies_name_their_cause() {
        let e = ConnError::Server("WRONGPASS invalid username-password pair".into());
        assert!(e
            .to_string()
            .starts_with("authentication failed (WRONGPASS)"));
        let e =
            ConnError::Server("NOPERM User r has no permissions to run the 'rpush' command".into());
        assert!(
            e.to_string().contains("permission denied (NOPERM)") && e.to_string().contains("rpush")
        );
        assert!(e.keeps_connection());
        assert!(
            !ConnError::Server("READONLY You can't write against a read only replica.".into())
                .keeps_connection()
        );
    }
}
