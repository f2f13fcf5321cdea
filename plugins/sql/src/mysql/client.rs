//! The I/O driver: one connection over a [`Transport`], running the pure
//! codecs of the sibling modules.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;
use mysql_common::constants::CapabilityFlags;

use super::handshake::{
    client_capabilities, handshake_response, parse_hello, ssl_request, Auth, AuthStep,
};
use super::packet::{chunks, write_packet, PacketReader, DEFAULT_MAX_PACKET};
use super::reply::{com_ping, com_query, com_quit, parse_err, parse_ok, QueryResult, ResultReader};
use super::MysqlError;

/// A byte stream to the server that can switch to TLS in place, as the
/// protocol needs after the SSLRequest.
pub trait Transport: Read + Write {
    /// Runs the TLS handshake on this stream, verifying the server's
    /// certificate for `server_name`; from then on reads and writes go
    /// through TLS.
    fn upgrade_tls(&mut self, server_name: &str) -> io::Result<()>;
}

/// Plain TCP: no TLS.
impl Transport for TcpStream {
    fn upgrade_tls(&mut self, _server_name: &str) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a plain TCP stream cannot switch to TLS",
        ))
    }
}

/// How to log in.
#[derive(Debug, Clone)]
pub struct Options {
    pub user: String,
    /// Empty for an account without a password.
    pub password: String,
    /// The default database of the session, if any.
    pub database: Option<String>,
    /// Switch to TLS before sending credentials; the server must offer it.
    pub tls: bool,
    /// The name the server's certificate must carry when `tls` is on.
    pub server_name: String,
    /// The largest packet accepted from the server, in bytes: a larger one
    /// ends the connection with a protocol error before it is buffered.
    pub max_packet: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            user: String::new(),
            password: String::new(),
            database: None,
            tls: false,
            server_name: String::new(),
            max_packet: DEFAULT_MAX_PACKET,
        }
    }
}

/// How many bytes one read asks the transport for.
const READ_SIZE: usize = 64 * 1024;

/// The size of the packets a local file is sent in.
const LOCAL_CHUNK: usize = 1024 * 1024;

/// A logged-in connection.
pub struct Client<T: Transport> {
    io: T,
    reader: PacketReader,
    /// Capabilities both sides agreed on.
    caps: CapabilityFlags,
    /// The sequence id the next received packet must carry.
    expect_seq: u8,
    server_version: String,
    connection_id: u32,
    /// A failure left the stream mid-exchange: every later call fails.
    broken: bool,
    scratch: Vec<u8>,
}

impl<T: Transport> Client<T> {
    /// Runs the connection phase on a fresh `transport`: greeting, TLS if
    /// asked, login.
    pub fn connect(transport: T, options: &Options) -> Result<Client<T>, MysqlError> {
        let mut client = Client {
            io: transport,
            reader: PacketReader::new(options.max_packet),
            caps: CapabilityFlags::empty(),
            expect_seq: 0,
            server_version: String::new(),
            connection_id: 0,
            broken: false,
            scratch: vec![0; READ_SIZE],
        };
        let hello = parse_hello(&client.read_packet()?)?;
        client.server_version = hello.version.clone();
        client.connection_id = hello.connection_id;
        let database = options.database.as_deref().filter(|d| !d.is_empty());
        let caps = client_capabilities(hello.capabilities, options.tls, database.is_some())?;
        client.caps = caps;
        let mut seq = client.expect_seq;
        if options.tls {
            if options.server_name.is_empty() {
                return Err(MysqlError::Unsupported(
                    "tls is on but server_name is empty: set the name the server's \
                     certificate carries"
                        .into(),
                ));
            }
            seq = client.send(seq, &ssl_request(caps))?;
            if !client.reader.is_empty() {
                return Err(MysqlError::protocol("the server spoke before TLS"));
            }
            client.io.upgrade_tls(&options.server_name).map_err(|e| {
                if e.kind() == io::ErrorKind::Unsupported {
                    MysqlError::Unsupported(format!("tls is on but {e}"))
                } else {
                    MysqlError::Io(e)
                }
            })?;
        }
        let (mut auth, plugin) = Auth::start(&hello, &options.password, options.tls);
        let data = plugin.scramble(&hello.nonce, &options.password)?;
        let response = handshake_response(caps, &options.user, database, plugin, &data);
        client.expect_seq = client.send(seq, &response)?;
        // Switch, more data and the final OK: a handful of packets at most.
        for _ in 0..8 {
            let payload = client.read_packet()?;
            match auth.step(&payload)? {
                AuthStep::Done(_) => return Ok(client),
                AuthStep::Wait => {}
                AuthStep::Send(data) => {
                    client.expect_seq = client.send(client.expect_seq, &data)?
                }
            }
        }
        Err(MysqlError::protocol("authentication did not finish"))
    }

    /// The version the server announced, e.g. `5.5.5-10.11.19-MariaDB`.
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// The server's thread id for this connection (as in KILL).
    pub fn connection_id(&self) -> u32 {
        self.connection_id
    }

    /// Runs `sql` (one statement) and reads its whole answer. When the
    /// statement returns several results (a CALL), the first is returned
    /// and the rest read and dropped; an error among them is returned.
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, MysqlError> {
        self.command(&com_query(sql))?;
        let mut first = None;
        loop {
            let mut reader = ResultReader::new(self.caps);
            let finished = loop {
                let payload = self.read_packet()?;
                match reader.push(&payload) {
                    Ok(Some(finished)) => break finished,
                    Ok(None) => {}
                    Err(e) => return Err(self.after_error(e)),
                }
            };
            first.get_or_insert(finished.result);
            if !finished.more_results {
                return Ok(first.expect("set above"));
            }
        }
    }

    /// Whether the server takes `LOAD DATA LOCAL INFILE` from this client
    /// (it offered the capability; `local_infile` may still refuse it).
    pub fn local_infile(&self) -> bool {
        self.caps.contains(CapabilityFlags::CLIENT_LOCAL_FILES)
    }

    /// Runs a `LOAD DATA LOCAL INFILE` statement and answers the server's
    /// request for the file with `data`, whatever name it asks for: the
    /// client reads no files, so a server cannot ask it for one. A server
    /// that refuses the statement answers ERR without asking.
    pub fn load_local(&mut self, sql: &str, data: &[u8]) -> Result<QueryResult, MysqlError> {
        self.command(&com_query(sql))?;
        let mut payload = self.read_packet()?;
        if payload.first() == Some(&0xFB) {
            let mut seq = self.expect_seq;
            for chunk in data.chunks(LOCAL_CHUNK) {
                seq = self.send(seq, chunk)?;
            }
            // An empty packet ends the file.
            self.expect_seq = self.send(seq, &[])?;
            payload = self.read_packet()?;
        }
        match ResultReader::new(self.caps).push(&payload) {
            Ok(Some(finished)) if !finished.more_results => Ok(finished.result),
            Ok(_) => Err(self.after_error(MysqlError::protocol(
                "LOAD DATA answered with more than an OK",
            ))),
            Err(e) => Err(self.after_error(e)),
        }
    }

    /// Checks the connection is alive.
    pub fn ping(&mut self) -> Result<(), MysqlError> {
        self.command(&com_ping())?;
        let payload = self.read_packet()?;
        match payload.first() {
            Some(0x00) => parse_ok(&payload, self.caps).map(drop),
            Some(0xFF) => Err(self.after_error(parse_err(&payload, self.caps))),
            _ => Err(self.after_error(MysqlError::protocol(
                "ping answered with neither OK nor ERR",
            ))),
        }
    }

    /// Says goodbye; the server closes the connection without answering.
    pub fn close(mut self) -> Result<(), MysqlError> {
        self.command(&com_quit())
    }

    /// Sends a command, the first packet of a new exchange.
    fn command(&mut self, payload: &[u8]) -> Result<(), MysqlError> {
        if self.broken {
            return Err(MysqlError::Io(io::Error::new(
                io::ErrorKind::NotConnected,
                "an earlier failure broke this connection",
            )));
        }
        self.expect_seq = self.send(0, payload)?;
        Ok(())
    }

    /// Frames and writes `payload`; returns the next sequence id.
    fn send(&mut self, seq: u8, payload: &[u8]) -> Result<u8, MysqlError> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        let next = write_packet(seq, payload, &mut out);
        let written = self.io.write_all(&out).and_then(|()| self.io.flush());
        written.map_err(|e| self.after_error(e.into()))?;
        Ok(next)
    }

    /// The next packet, reading from the transport as needed.
    fn read_packet(&mut self) -> Result<Vec<u8>, MysqlError> {
        loop {
            match self.reader.next_packet() {
                Ok(Some((seq, payload))) => {
                    if seq != self.expect_seq {
                        return Err(self.after_error(MysqlError::protocol(format!(
                            "packet with sequence id {seq} where {} was due",
                            self.expect_seq
                        ))));
                    }
                    self.expect_seq = seq.wrapping_add(chunks(payload.len()) as u8);
                    return Ok(payload);
                }
                Ok(None) => {}
                Err(e) => return Err(self.after_error(e)),
            }
            match self.io.read(&mut self.scratch) {
                Ok(0) => {
                    return Err(self.after_error(MysqlError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ))))
                }
                Ok(n) => self.reader.feed(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.after_error(e.into())),
            }
        }
    }

    /// Marks the connection unusable unless `e` is a server error, which
    /// the server sends at a clean end of the exchange.
    fn after_error(&mut self, e: MysqlError) -> MysqlError {
        if !matches!(e, MysqlError::Server { .. }) {
            self.broken = true;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::handshake::tests::hello_with_plugin;
    use crate::mysql::handshake::Plugin;
    use std::collections::VecDeque;

    /// A scripted server: `turns[0]` is readable at once, each later turn
    /// once the client has flushed one more message (a turn may be empty).
    #[derive(Default)]
    struct Scripted {
        turns: VecDeque<Vec<u8>>,
        readable: Vec<u8>,
        written: Vec<u8>,
        messages: Vec<Vec<u8>>,
        upgraded_at: Option<usize>,
        tls_ok: bool,
    }

    impl Scripted {
        fn new(turns: Vec<Vec<u8>>) -> Scripted {
            let mut s = Scripted {
                turns: turns.into(),
                tls_ok: true,
                ..Scripted::default()
            };
            s.readable = s.turns.pop_front().unwrap_or_default();
            s
        }
    }

    impl Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.readable.len());
            buf[..n].copy_from_slice(&self.readable[..n]);
            self.readable.drain(..n);
            Ok(n)
        }
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.messages.push(std::mem::take(&mut self.written));
            let next = self.turns.pop_front().unwrap_or_default();
            self.readable.extend(next);
            Ok(())
        }
    }

    impl Transport for Scripted {
        fn upgrade_tls(&mut self, server_name: &str) -> io::Result<()> {
            assert_eq!(server_name, "db.example");
            self.upgraded_at = Some(self.messages.len());
            if self.tls_ok {
                Ok(())
            } else {
                Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad certificate",
                ))
            }
        }
    }

    fn framed(seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        write_packet(seq, payload, &mut out);
        out.to_vec()
    }

    const OK: &[u8] = &[0, 0, 0, 2, 0, 0, 0];

    fn options(tls: bool) -> Options {
        Options {
            user: "pump".into(),
            password: "secret".into(),
            database: Some("logs".into()),
            tls,
            server_name: "db.example".into(),
            ..Options::default()
        }
    }

    #[test]
    fn sha2_full_auth_over_tls_sends_the_password_inside_it() {
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("caching_sha2_password")),
            Vec::new(), // the SSLRequest gets no answer
            framed(3, &[1, 4]),
            framed(5, OK),
        ]);
        let client = Client::connect(io, &options(true)).unwrap();
        let io = &client.io;
        assert_eq!(io.upgraded_at, Some(1), "TLS right after the SSLRequest");
        let m = &io.messages;
        assert_eq!(m.len(), 3);
        assert_eq!(&m[0][..4], &[32, 0, 0, 1]);
        let flags = u32::from_le_bytes(m[0][4..8].try_into().unwrap());
        assert!(CapabilityFlags::from_bits_truncate(flags).contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(m[1][3], 2, "the HandshakeResponse follows as packet 2");
        let scramble = Plugin::CachingSha2
            .scramble(b"abcdefghijklmnopqrst", "secret")
            .unwrap();
        let body = &m[1][4..];
        assert!(
            body.windows(32).any(|w| w == scramble),
            "the SHA256 scramble"
        );
        assert!(body.ends_with(b"logs\0caching_sha2_password\0"));
        assert_eq!(m[2], framed(4, b"secret\0"));
    }

    #[test]
    fn sha2_fast_path_then_a_query() {
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("caching_sha2_password")),
            [framed(2, &[1, 3]), framed(3, OK)].concat(),
            framed(1, &[0, 3, 0, 2, 0, 0, 0]),
        ]);
        let mut client = Client::connect(io, &options(false)).unwrap();
        assert_eq!(client.connection_id(), 7);
        let got = client.query("DELETE FROM t").unwrap();
        assert!(
            matches!(
                got,
                QueryResult::Ok {
                    affected_rows: 3,
                    ..
                }
            ),
            "{got:?}"
        );
        assert_eq!(client.io.messages[1], framed(0, b"\x03DELETE FROM t"));
        assert_eq!(client.io.upgraded_at, None);
    }

    #[test]
    fn sha2_full_auth_without_tls_is_refused_with_the_fix() {
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("caching_sha2_password")),
            framed(2, &[1, 4]),
        ]);
        let e = Client::connect(io, &options(false)).err().unwrap();
        assert!(
            matches!(&e, MysqlError::Unsupported(m) if m.contains("turn tls on")),
            "{e}"
        );
    }

    #[test]
    fn tls_needs_a_server_name() {
        let io = Scripted::new(vec![framed(0, &hello_with_plugin("mysql_native_password"))]);
        let options = Options {
            server_name: String::new(),
            ..options(true)
        };
        let e = Client::connect(io, &options).err().unwrap();
        assert!(
            matches!(&e, MysqlError::Unsupported(m) if m.contains("server_name")),
            "{e}"
        );
    }

    #[test]
    fn a_failed_tls_upgrade_is_an_io_error() {
        let mut io = Scripted::new(vec![framed(0, &hello_with_plugin("mysql_native_password"))]);
        io.tls_ok = false;
        let e = Client::connect(io, &options(true)).err().unwrap();
        assert!(matches!(&e, MysqlError::Io(io) if io.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn bytes_before_tls_are_refused() {
        let hello = framed(0, &hello_with_plugin("mysql_native_password"));
        let io = Scripted::new(vec![[hello, framed(1, OK)].concat()]);
        let e = Client::connect(io, &options(true)).err().unwrap();
        assert!(
            matches!(&e, MysqlError::Protocol(m) if m.contains("before TLS")),
            "{e}"
        );
    }

    #[test]
    fn a_packet_out_of_sequence_breaks_the_connection() {
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("mysql_native_password")),
            framed(2, OK),
            framed(2, OK), // 1 is due
        ]);
        let mut client = Client::connect(io, &options(false)).unwrap();
        assert!(matches!(client.ping(), Err(MysqlError::Protocol(_))));
        let e = client.ping().unwrap_err();
        assert!(matches!(&e, MysqlError::Io(io) if io.kind() == io::ErrorKind::NotConnected));
    }

    #[test]
    fn a_local_file_is_answered_from_memory_in_packets_then_an_empty_one() {
        let data = vec![b'x'; LOCAL_CHUNK + 10];
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("mysql_native_password")),
            framed(2, OK),
            // The server asks for any file name: it gets `data` anyway.
            framed(1, b"\xFB/etc/passwd"),
            Vec::new(),
            Vec::new(),
            framed(5, &[0, 7, 0, 2, 0, 1, 0]),
        ]);
        let mut client = Client::connect(io, &options(false)).unwrap();
        assert!(client.local_infile());
        let got = client.load_local("LOAD DATA LOCAL INFILE 'b' INTO TABLE t", &data);
        assert!(
            matches!(
                got,
                Ok(QueryResult::Ok {
                    affected_rows: 7,
                    warnings: 1,
                    ..
                })
            ),
            "{got:?}"
        );
        let m = &client.io.messages;
        assert_eq!(m[2], framed(2, &data[..LOCAL_CHUNK]));
        assert_eq!(m[3], framed(3, &data[LOCAL_CHUNK..]));
        assert_eq!(m[4], framed(4, b""), "the end of the file");
    }

    #[test]
    fn a_refused_local_file_is_the_servers_error() {
        let mut refusal = vec![0xFF];
        refusal.extend(1148u16.to_le_bytes());
        refusal.extend(b"#42000The used command is not allowed with this MariaDB version");
        let io = Scripted::new(vec![
            framed(0, &hello_with_plugin("mysql_native_password")),
            framed(2, OK),
            framed(1, &refusal),
        ]);
        let mut client = Client::connect(io, &options(false)).unwrap();
        let e = client.load_local("LOAD DATA LOCAL INFILE 'b' INTO TABLE t", b"1\n");
        assert!(
            matches!(&e, Err(MysqlError::Server { code: 1148, .. })),
            "{e:?}"
        );
        assert_eq!(client.io.messages.len(), 2, "no file sent");
        client.io.turns.push_back(framed(1, OK));
        assert!(client.ping().is_ok(), "the connection stays usable");
    }

    #[test]
    fn a_closed_stream_is_an_io_error_to_retry() {
        let io = Scripted::new(vec![framed(0, &hello_with_plugin("mysql_native_password"))]);
        let e = Client::connect(io, &options(false)).err().unwrap();
        assert!(matches!(&e, MysqlError::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof));
        assert_eq!(e.class(), crate::mysql::ErrorClass::Retry);
    }
}
