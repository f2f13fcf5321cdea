//! One TCP connection to the target Redis over `wasi:sockets` (through
//! `std::net`): connect, handshake, send pipelined commands, read replies.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};

use crate::command::{classify_handshake, encode_handshake, Outcome};
use crate::config::Settings;
use pumphouse_wire::resp::{parse_reply, ProtocolError, Reply};

/// Why a connection failed. The sink maps each to a host error kind.
#[derive(Debug)]
pub enum ConnError {
    /// Network trouble (refused, reset, timed out, closed): retryable.
    Io(io::Error),
    /// The peer does not speak RESP2: retryable on a new connection.
    Protocol(ProtocolError),
    /// The sandbox refused the socket or the name lookup: fatal.
    Denied(String),
    /// A handshake reply; fatal unless the server is only not ready yet.
    Handshake(Outcome),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Protocol(e) => write!(f, "{e}"),
            ConnError::Denied(m) => f.write_str(m),
            ConnError::Handshake(Outcome::Fatal(m) | Outcome::Failed { reason: m, .. }) => {
                f.write_str(m)
            }
            ConnError::Handshake(Outcome::Written) => f.write_str("handshake"),
        }
    }
}

impl From<io::Error> for ConnError {
    fn from(e: io::Error) -> Self {
        ConnError::Io(e)
    }
}

impl From<ProtocolError> for ConnError {
    fn from(e: ProtocolError) -> Self {
        ConnError::Protocol(e)
    }
}

pub struct Connection {
    stream: TcpStream,
    /// Bytes read but not yet parsed start at `start`.
    buf: Vec<u8>,
    start: usize,
}

impl Connection {
    /// Connects to `settings.address` and runs the handshake.
    pub fn open(settings: &Settings) -> Result<Connection, ConnError> {
        let denied = |what: &str, e: &io::Error| {
            ConnError::Denied(format!(
                "the sandbox refused {what} {} ({e}); add \"{}\" to the pump's sandbox.sockets",
                settings.address, settings.address
            ))
        };
        let addrs: Vec<SocketAddr> = match settings.address.to_socket_addrs() {
            Ok(addrs) => addrs.collect(),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(denied("the name lookup of", &e))
            }
            Err(e) => return Err(ConnError::Io(e)),
        };
        let mut last = io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} resolved to no address", settings.address),
        );
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, settings.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                    return Err(denied("a connection to", &e))
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_read_timeout(Some(settings.timeout))?;
        stream.set_write_timeout(Some(settings.timeout))?;
        // Commands go out in one write per batch; no need to wait for more.
        stream.set_nodelay(true)?;
        let mut conn = Connection {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
        };
        let mut hello = Vec::new();
        let n = encode_handshake(settings, &mut hello);
        if n > 0 {
            conn.send(&hello)?;
            for _ in 0..n {
                let reply = conn.read_reply()?;
                if let Some(failure) = classify_handshake(&reply) {
                    return Err(ConnError::Handshake(failure));
                }
            }
        }
        Ok(conn)
    }

    /// Writes pipelined commands.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Reads the next reply, waiting for more bytes as needed.
    pub fn read_reply(&mut self) -> Result<Reply, ConnError> {
        loop {
            if let Some((reply, used)) = parse_reply(&self.buf[self.start..])? {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(reply);
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let len = self.buf.len();
            self.buf.resize(len + 16 * 1024, 0);
            let got = self.stream.read(&mut self.buf[len..]);
            self.buf.truncate(len + *got.as_ref().unwrap_or(&0));
            match got {
                Ok(0) => {
                    return Err(ConnError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    )))
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
    }
}
