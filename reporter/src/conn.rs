//! A worker's connection to Redis: connect (and `AUTH`, `SELECT`), write
//! a batch's framed bytes as they are, read its replies.

use std::io::{self, IoSlice};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use pumphouse_wire::resp::{self, ProtocolError, Reply};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// Redis answered with an error; the connection is still usable.
    #[error("Redis replied: {0}")]
    Server(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("{0}")]
    Unsupported(&'static str),
}

impl ConnError {
    /// True if the connection can carry on after this error.
    pub fn keeps_connection(&self) -> bool {
        matches!(self, ConnError::Server(_))
    }
}

/// A TCP or Unix socket: one indirect call per read or write, a few per
/// batch.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) struct Conn {
    stream: Box<dyn Stream>,
    /// Reply bytes read but not parsed yet.
    replies: Vec<u8>,
}

impl Conn {
    /// Connects within `timeout` and authenticates and selects the
    /// database the URL names.
    pub async fn connect(info: &ConnectionInfo, timeout: Duration) -> Result<Conn, ConnError> {
        let stream: Box<dyn Stream> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let s = within(timeout, TcpStream::connect((host.as_str(), *port))).await??;
                // Batches are written whole: waiting to coalesce only adds
                // latency.
                s.set_nodelay(true)?;
                Box::new(s)
            }
            ConnectionAddr::Unix(path) => {
                Box::new(within(timeout, UnixStream::connect(path)).await??)
            }
            _ => return Err(ConnError::Unsupported("TLS connections are not supported")),
        };
        let mut conn = Conn {
            stream,
            replies: Vec::with_capacity(256),
        };
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        let mut replies = 0;
        if let Some(password) = settings.password() {
            match settings.username() {
                Some(user) => resp::encode_command(
                    &mut hello,
                    &[b"AUTH", user.as_bytes(), password.as_bytes()],
                ),
                None => resp::encode_command(&mut hello, &[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            resp::encode_command(&mut hello, &[b"SELECT", db.as_bytes()]);
            replies += 1;
        }
        if replies > 0 {
            conn.request(&[&hello], replies, timeout).await?;
        }
        Ok(conn)
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
    Ok(())
}

async fn within<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = T>,
) -> Result<T, ConnError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| ConnError::Timeout(timeout))
}
