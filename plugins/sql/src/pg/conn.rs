//! One connection to PostgreSQL: TLS negotiation, startup and
//! authentication (cleartext, MD5, SCRAM-SHA-256), simple queries and
//! `COPY ... FROM STDIN`. The wire messages are `postgres-protocol`'s;
//! this file only drives them over a stream.

use std::io::{self, Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use pumphouse_sdk::net::{NetError, NetErrorKind, Stream};

use super::error::DbError;
use pumphouse_wire::sql_url::{ConnUrl, TlsMode};

/// The largest server message read; a longer one is a broken or hostile
/// peer, refused before its bytes are buffered.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// COPY data goes out in messages of about this size.
pub const COPY_CHUNK: usize = 256 * 1024;

/// Why a connection or a statement failed.
#[derive(Debug)]
pub enum PgError {
    /// The network, or a server that stopped making sense.
    Net(NetError),
    Io(io::Error),
    Protocol(String),
    /// The server refused: see [`DbError::class`].
    Db(DbError),
    /// The server asked for an authentication this client cannot do.
    Auth(String),
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgError::Net(e) => write!(f, "{e}"),
            PgError::Io(e) => write!(f, "{e}"),
            PgError::Protocol(m) => write!(f, "protocol: {m}"),
            PgError::Db(e) => write!(f, "{e}"),
            PgError::Auth(m) => f.write_str(m),
        }
    }
}

impl From<NetError> for PgError {
    fn from(e: NetError) -> Self {
        PgError::Net(e)
    }
}

impl From<io::Error> for PgError {
    fn from(e: io::Error) -> Self {
        // The SDK's stream wraps its own errors in io::Error; keep them.
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<NetError>())
        {
            Some(net) => PgError::Net(net.clone()),
            None => PgError::Io(e),
        }
    }
}

/// What a simple query returned.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// Text values of every row, in order (`None` for NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// The last command tag, e.g. `INSERT 0 5`.
    pub tag: String,
}

pub struct Connection {
    stream: Stream,
    buf: BytesMut,
    out: BytesMut,
}

impl Connection {
    /// Connects, negotiates TLS as `url.tls` says, and logs in.
    pub fn open(url: &ConnUrl, timeout: Duration) -> Result<Connection, PgError> {
        match Self::open_with(url, timeout, url.tls) {
            // `prefer` accepts what the server offers; a certificate the
            // host cannot verify falls back to the clear, as libpq's
            // `prefer` (which never verifies) would have connected anyway.
            Err(PgError::Net(e)) if url.tls == TlsMode::Prefer && e.kind() == NetErrorKind::Tls => {
                pumphouse_sdk::warn!(
                    "{}: TLS failed ({e}); sslmode=prefer connects without it. Set sslmode=require (and sandbox.tls_ca_files) to insist on TLS, or sslmode=disable to skip it",
                    url.address()
                );
                Self::open_with(url, timeout, TlsMode::Disable)
            }
            other => other,
        }
    }

    fn open_with(url: &ConnUrl, timeout: Duration, tls: TlsMode) -> Result<Connection, PgError> {
        let stream = Stream::connect(&url.address(), timeout)?;
        let mut conn = Connection {
            stream,
            buf: BytesMut::with_capacity(16 * 1024),
            out: BytesMut::with_capacity(16 * 1024),
        };
        if tls != TlsMode::Disable {
            frontend::ssl_request(&mut conn.out);
            conn.send()?;
            let mut answer = [0u8; 1];
            conn.stream.read_exact(&mut answer)?;
            match answer[0] {
                b'S' => conn.stream.start_tls(&url.host)?,
                b'N' if tls == TlsMode::Prefer => {}
                b'N' => {
                    return Err(PgError::Auth(format!(
                        "{} does not offer TLS, and sslmode=require needs it",
                        url.address()
                    )))
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected answer {other:#x} to the TLS request"
                    )))
                }
            }
        }
        conn.startup(url)?;
        Ok(conn)
    }

    fn startup(&mut self, url: &ConnUrl) -> Result<(), PgError> {
        let params = [
            ("user", url.user.as_str()),
            ("database", url.database.as_str()),
            ("application_name", "pumphouse"),
            ("client_encoding", "UTF8"),
            // Times are written and read back as UTC ISO text.
            ("DateStyle", "ISO"),
            ("TimeZone", "UTC"),
            // Literals double their quotes and nothing else; a server set
            // to the old backslash escapes would read them otherwise.
            ("standard_conforming_strings", "on"),
        ];
        frontend::startup_message(params.iter().copied(), &mut self.out)?;
        self.send()?;
        let password = url.password.as_deref().unwrap_or("");
        let mut scram: Option<ScramSha256> = None;
        loop {
            match self.read()? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    self.need_password(url)?;
                    frontend::password_message(password.as_bytes(), &mut self.out)?;
                    self.send()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    self.need_password(url)?;
                    let hash = md5_hash(url.user.as_bytes(), password.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.out)?;
                    self.send()?;
                }
                Message::AuthenticationSasl(body) => {
                    self.need_password(url)?;
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Some(m) = mechanisms.next()? {
                        offered.push(m.to_string());
                    }
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(PgError::Auth(format!(
                            "the server offers SASL {offered:?}; this client speaks {SCRAM_SHA_256}"
                        )));
                    }
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.out)?;
                    self.send()?;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| PgError::Protocol("SASL continue before start".into()))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.out)?;
                    self.send()?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| PgError::Protocol("SASL final before start".into()))?;
                    s.finish(body.data()).map_err(|e| {
                        PgError::Auth(format!("the server's SCRAM signature is wrong: {e}"))
                    })?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationSspi
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGssContinue(_) => {
                    return Err(PgError::Auth(
                        "the server asks for GSS/Kerberos/SSPI authentication; use a password (md5 or scram-sha-256 in pg_hba.conf)".into(),
                    ))
                }
                Message::ErrorResponse(body) => return Err(PgError::Db(DbError::from_body(&body))),
                Message::ReadyForQuery(_) => return Ok(()),
                // ParameterStatus, BackendKeyData, notices.
                _ => {}
            }
        }
    }

    fn need_password(&self, url: &ConnUrl) -> Result<(), PgError> {
        if url.password.is_none() {
            return Err(PgError::Auth(format!(
                "{} asks user {} for a password, and the connection URL has none",
                url.address(),
                url.user
            )));
        }
        Ok(())
    }

    /// Runs `sql` (one or more statements) with the simple protocol.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, PgError> {
        frontend::query(sql, &mut self.out)?;
        self.send()?;
        self.finish(QueryResult::default())
    }

    /// Reads to `ReadyForQuery`, collecting rows; the first error wins.
    fn finish(&mut self, mut result: QueryResult) -> Result<QueryResult, PgError> {
        let mut error = None;
        loop {
            match self.read()? {
                Message::DataRow(row) => {
                    let mut values = Vec::new();
                    let mut ranges = row.ranges();
                    while let Some(range) = ranges.next()? {
                        values.push(
                            range.map(|r| String::from_utf8_lossy(&row.buffer()[r]).into_owned()),
                        );
                    }
                    result.rows.push(values);
                }
                Message::CommandComplete(body) => result.tag = body.tag()?.to_string(),
                Message::ErrorResponse(body) => {
                    error.get_or_insert(DbError::from_body(&body));
                }
                Message::CopyInResponse(_) => {
                    // A COPY the caller did not expect: end it, failing.
                    frontend::copy_fail("unexpected COPY", &mut self.out)?;
                    self.send()?;
                }
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(PgError::Db(e)),
                        None => Ok(result),
                    }
                }
                _ => {}
            }
        }
    }

    /// Runs `copy` (a `COPY ... FROM STDIN` statement) and streams its
    /// input: `fill` appends the next rows in COPY's text format to the
    /// buffer it is given and returns false once there are no more. Each
    /// chunk goes out as soon as it is made, so the server parses one
    /// while the next is encoded. Returns the rows copied.
    pub fn copy_in(
        &mut self,
        copy: &str,
        mut fill: impl FnMut(&mut Vec<u8>) -> bool,
    ) -> Result<u64, PgError> {
        frontend::query(copy, &mut self.out)?;
        self.send()?;
        loop {
            match self.read()? {
                Message::CopyInResponse(_) => break,
                Message::ErrorResponse(body) => {
                    let e = DbError::from_body(&body);
                    self.finish(QueryResult::default())?;
                    return Err(PgError::Db(e));
                }
                Message::ReadyForQuery(_) => {
                    return Err(PgError::Protocol("COPY did not start".into()))
                }
                _ => {}
            }
        }
        let mut chunk = Vec::with_capacity(COPY_CHUNK + 64 * 1024);
        loop {
            chunk.clear();
            let more = fill(&mut chunk);
            if !chunk.is_empty() {
                frontend::CopyData::new(chunk.as_slice())?.write(&mut self.out);
                self.send_unflushed()?;
            }
            if !more {
                break;
            }
        }
        frontend::copy_done(&mut self.out);
        self.send()?;
        let result = self.finish(QueryResult::default())?;
        Ok(result
            .tag
            .strip_prefix("COPY ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// Says goodbye; errors do not matter any more.
    pub fn close(mut self) {
        frontend::terminate(&mut self.out);
        let _ = self.send();
    }

    fn send_unflushed(&mut self) -> Result<(), PgError> {
        self.stream.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }

    fn send(&mut self) -> Result<(), PgError> {
        self.send_unflushed()?;
        self.stream.flush()?;
        Ok(())
    }

    /// The next server message, reading as needed.
    fn read(&mut self) -> Result<Message, PgError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                if len as usize > MAX_MESSAGE {
                    return Err(PgError::Protocol(format!(
                        "the server announced a {len}-byte message (more than {MAX_MESSAGE})"
                    )));
                }
            }
            if let Some(message) = Message::parse(&mut self.buf)? {
                return Ok(message);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(PgError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
