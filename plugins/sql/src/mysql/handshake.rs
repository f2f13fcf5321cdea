//! The connection phase (pure): the server's greeting, the client's
//! SSLRequest and HandshakeResponse41, and the authentication exchange
//! that follows, as a state machine the client feeds packets to.

use std::borrow::Cow;

use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{
    AuthMoreData, AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse, SslRequest,
};
use mysql_common::proto::{MyDeserialize, MySerialize};

use super::reply::{parse_err, parse_ok, OkInfo};
use super::MysqlError;

/// `utf8mb4_general_ci`: text goes both ways as UTF-8, emoji included.
pub const UTF8MB4: u8 = 45;

/// What we tell the server our largest packet may be; the server sends
/// nothing larger than its own `max_allowed_packet` anyway.
const CLIENT_MAX_PACKET: u32 = 1 << 30;

/// The server's initial handshake (protocol version 10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    pub version: String,
    pub connection_id: u32,
    /// Auth plugin data parts 1 and 2 (20 bytes from any current server).
    pub nonce: Vec<u8>,
    pub capabilities: CapabilityFlags,
    /// The server's default collation id.
    pub charset: u8,
    /// The server's default auth plugin, e.g. `mysql_native_password`.
    pub auth_plugin: String,
}

/// Parses the server's first packet: a v10 handshake, or the ERR packet a
/// server sends instead when it refuses the connection outright (too many
/// connections, host not allowed).
pub fn parse_hello(payload: &[u8]) -> Result<ServerHello, MysqlError> {
    match payload.first() {
        Some(0xFF) => return Err(parse_err(payload, CapabilityFlags::CLIENT_PROTOCOL_41)),
        Some(10) => {}
        Some(v) => {
            return Err(MysqlError::protocol(format!(
                "handshake protocol version {v}; this client speaks 10"
            )))
        }
        None => return Err(MysqlError::protocol("empty handshake")),
    }
    // mysql_common computes the length of auth plugin data part 2 from a
    // byte it reads as i8 and subtracts 8 from, which overflows on bytes
    // from 0x80 to 0x87; real servers send 0 or 21.
    let version_end = payload[1..]
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| MysqlError::protocol("handshake: server version not terminated"))?;
    if let Some(&len) = payload.get(1 + version_end + 1 + 20) {
        if len >= 0x80 {
            return Err(MysqlError::protocol(format!(
                "handshake: auth plugin data length {len}"
            )));
        }
    }
    let hello = HandshakePacket::deserialize((), &mut ParseBuf(payload))
        .map_err(|e| MysqlError::protocol(format!("handshake: {e}")))?;
    Ok(ServerHello {
        version: hello.server_version_str().into_owned(),
        connection_id: hello.connection_id(),
        nonce: hello.nonce(),
        capabilities: hello.capabilities(),
        charset: hello.default_collation(),
        auth_plugin: hello
            .auth_plugin_name_str()
            .map(Cow::into_owned)
            .unwrap_or_default(),
    })
}

/// The capabilities the client asks for, given the server's: 4.1 protocol
/// with plugin auth is required; EOF packets are replaced by OK packets
/// when the server can.
pub fn client_capabilities(
    server: CapabilityFlags,
    tls: bool,
    with_db: bool,
) -> Result<CapabilityFlags, MysqlError> {
    let required = CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    if !server.contains(required) {
        return Err(MysqlError::Unsupported(format!(
            "the server lacks {:?}: it predates MySQL 5.5",
            required - server
        )));
    }
    let mut wanted = required
        | CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
        // For `LOAD DATA LOCAL INFILE`, answered only from memory
        // ([`super::Client::load_local`]); the client reads no files.
        | CapabilityFlags::CLIENT_LOCAL_FILES;
    if with_db {
        wanted |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    }
    if tls {
        if !server.contains(CapabilityFlags::CLIENT_SSL) {
            return Err(MysqlError::Unsupported(
                "tls is on but the server does not offer TLS: configure the server's \
                 ssl_cert and ssl_key, or turn tls off"
                    .into(),
            ));
        }
        wanted |= CapabilityFlags::CLIENT_SSL;
    }
    Ok(wanted & server)
}

/// The SSLRequest payload: after it the stream switches to TLS and the
/// HandshakeResponse follows inside it.
pub fn ssl_request(capabilities: CapabilityFlags) -> Vec<u8> {
    let mut out = Vec::new();
    SslRequest::new(capabilities, CLIENT_MAX_PACKET, UTF8MB4).serialize(&mut out);
    out
}

/// The auth plugins this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// `mysql_native_password`: SHA1 scramble.
    Native,
    /// `caching_sha2_password`: SHA256 scramble; a server that has not
    /// cached the password asks for it in full.
    CachingSha2,
}

impl Plugin {
    /// The plugin of this name, or an error naming it.
    pub fn from_name(name: &str) -> Result<Plugin, MysqlError> {
        match name {
            "mysql_native_password" => Ok(Plugin::Native),
            "caching_sha2_password" => Ok(Plugin::CachingSha2),
            other => Err(MysqlError::Unsupported(format!(
                "the server wants auth plugin {other:?}; this client speaks \
                 mysql_native_password and caching_sha2_password: \
                 ALTER USER ... IDENTIFIED WITH mysql_native_password"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Plugin::Native => "mysql_native_password",
            Plugin::CachingSha2 => "caching_sha2_password",
        }
    }

    /// The plugin's answer to `nonce`; empty for an empty password.
    pub fn scramble(self, nonce: &[u8], password: &str) -> Result<Vec<u8>, MysqlError> {
        let nonce = nonce.get(..20).unwrap_or(nonce);
        let Ok(nonce20) = <&[u8; 20]>::try_from(nonce) else {
            return Err(MysqlError::protocol(format!(
                "{}: a nonce of {} bytes, 20 expected",
                self.name(),
                nonce.len()
            )));
        };
        let password = password.as_bytes();
        Ok(match self {
            Plugin::Native => scramble_native(nonce20, password).map(|s| s.to_vec()),
            Plugin::CachingSha2 => scramble_sha256(nonce20, password).map(|s| s.to_vec()),
        }
        .unwrap_or_default())
    }
}

/// The HandshakeResponse41 payload, answering the greeting's nonce with
/// `plugin`.
pub fn handshake_response(
    capabilities: CapabilityFlags,
    user: &str,
    database: Option<&str>,
    plugin: Plugin,
    auth_data: &[u8],
) -> Vec<u8> {
    // mysql_common picks utf8mb4 for servers from 5.5.3 on, and every
    // server with plugin auth (required above) is newer.
    const UTF8MB4_SERVER: (u16, u16, u16) = (5, 5, 3);
    let response = HandshakeResponse::new(
        Some(auth_data),
        UTF8MB4_SERVER,
        Some(user.as_bytes()),
        database.map(str::as_bytes),
        Some(AuthPlugin::from_bytes(plugin.name().as_bytes())),
        capabilities,
        None,
        CLIENT_MAX_PACKET,
    );
    let mut out = Vec::new();
    response.serialize(&mut out);
    out
}

/// What the client does with a packet received during authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthStep {
    /// Send this payload (the next in sequence) and wait for the reply.
    Send(Vec<u8>),
    /// Nothing to send: the server's next packet settles it.
    Wait,
    /// Logged in.
    Done(OkInfo),
}

/// The authentication exchange after the HandshakeResponse.
#[derive(Debug)]
pub struct Auth {
    plugin: Plugin,
    password: String,
    tls: bool,
    capabilities: CapabilityFlags,
    /// Plugin switches so far: a server asks for one at most.
    switches: u8,
}

impl Auth {
    /// Starts with the greeting's plugin, or `mysql_native_password` when
    /// it is one this client does not speak (the server then switches to
    /// the user's own plugin, which names it in the error).
    pub fn start(hello: &ServerHello, password: &str, tls: bool) -> (Auth, Plugin) {
        let plugin = Plugin::from_name(&hello.auth_plugin).unwrap_or(Plugin::Native);
        let auth = Auth {
            plugin,
            password: password.to_owned(),
            tls,
            capabilities: hello.capabilities,
            switches: 0,
        };
        (auth, plugin)
    }

    /// Handles the server's next packet.
    pub fn step(&mut self, payload: &[u8]) -> Result<AuthStep, MysqlError> {
        match payload.first() {
            Some(0x00) => parse_ok(payload, self.capabilities).map(AuthStep::Done),
            Some(0xFF) => Err(parse_err(payload, self.capabilities)),
            Some(0xFE) if payload.len() == 1 => Err(Plugin::from_name("mysql_old_password")
                .err()
                .unwrap_or_else(|| MysqlError::protocol("old auth switch"))),
            Some(0xFE) => {
                self.switches += 1;
                if self.switches > 1 {
                    return Err(MysqlError::protocol("a second auth plugin switch"));
                }
                let switch = AuthSwitchRequest::deserialize((), &mut ParseBuf(payload))
                    .map_err(|e| MysqlError::protocol(format!("auth switch: {e}")))?;
                self.plugin =
                    Plugin::from_name(&String::from_utf8_lossy(switch.auth_plugin().as_bytes()))?;
                let nonce = switch.plugin_data();
                self.plugin
                    .scramble(nonce, &self.password)
                    .map(AuthStep::Send)
            }
            Some(0x01) => {
                let more = AuthMoreData::deserialize((), &mut ParseBuf(payload))
                    .map_err(|e| MysqlError::protocol(format!("auth more data: {e}")))?;
                self.more_data(more.data())
            }
            Some(b) => Err(MysqlError::protocol(format!(
                "packet 0x{b:02x} during authentication"
            ))),
            None => Err(MysqlError::protocol("empty packet during authentication")),
        }
    }

    /// caching_sha2_password's verdict on the scramble: 3 accepted (an OK
    /// follows), 4 the server wants the password itself.
    fn more_data(&self, data: &[u8]) -> Result<AuthStep, MysqlError> {
        if self.plugin != Plugin::CachingSha2 {
            return Err(MysqlError::protocol(format!(
                "auth more data for {}",
                self.plugin.name()
            )));
        }
        match data {
            [3] => Ok(AuthStep::Wait),
            [4] if self.tls => {
                let mut clear = self.password.as_bytes().to_vec();
                clear.push(0);
                Ok(AuthStep::Send(clear))
            }
            [4] => Err(MysqlError::Unsupported(
                "caching_sha2_password: the server has not cached this user's password and \
                 wants it sent whole, which this client does only over TLS: turn tls on, \
                 or log in once with another client so the server caches it, or \
                 ALTER USER ... IDENTIFIED WITH mysql_native_password"
                    .into(),
            )),
            _ => Err(MysqlError::protocol(format!(
                "caching_sha2_password: unexpected auth data of {} bytes",
                data.len()
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use sha1::{Digest, Sha1};
    use sha2::Sha256;

    /// A MariaDB 10.11 greeting, as a server sends it.
    pub(crate) fn mariadb_hello() -> Vec<u8> {
        hello_with_plugin("mysql_native_password")
    }

    /// A greeting offering TLS and naming `plugin`, with nonce
    /// `abcdefghijklmnopqrst`.
    pub(crate) fn hello_with_plugin(plugin: &str) -> Vec<u8> {
        let mut p = vec![10];
        p.extend(b"5.5.5-10.11.19-MariaDB\0");
        p.extend(7u32.to_le_bytes());
        p.extend(b"abcdefgh\0");
        let caps = CapabilityFlags::CLIENT_LONG_PASSWORD
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_LOCAL_FILES
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
        let bits = caps.bits();
        p.extend((bits as u16).to_le_bytes());
        p.push(UTF8MB4);
        p.extend(2u16.to_le_bytes());
        p.extend(((bits >> 16) as u16).to_le_bytes());
        p.push(21);
        p.extend([0; 10]);
        p.extend(b"ijklmnopqrst\0");
        p.extend(plugin.as_bytes());
        p.push(0);
        p
    }

    #[test]
    fn parses_a_mariadb_greeting() {
        let hello = parse_hello(&mariadb_hello()).unwrap();
        assert_eq!(hello.version, "5.5.5-10.11.19-MariaDB");
        assert_eq!(hello.connection_id, 7);
        assert_eq!(hello.nonce, b"abcdefghijklmnopqrst");
        assert!(hello.capabilities.contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(hello.charset, UTF8MB4);
        assert_eq!(hello.auth_plugin, "mysql_native_password");
    }

    #[test]
    fn a_refusal_instead_of_a_greeting_is_the_server_error() {
        let mut p = vec![0xFF];
        p.extend(1040u16.to_le_bytes());
        p.extend(b"Too many connections");
        match parse_hello(&p).unwrap_err() {
            MysqlError::Server {
                code: 1040,
                message,
                ..
            } => {
                assert_eq!(message, "Too many connections")
            }
            e => panic!("{e:?}"),
        }
        assert!(matches!(parse_hello(&[9, 0]), Err(MysqlError::Protocol(_))));
    }

    #[test]
    fn capabilities_follow_the_request_and_the_server() {
        let server = parse_hello(&mariadb_hello()).unwrap().capabilities;
        let caps = client_capabilities(server, false, true).unwrap();
        assert!(caps.contains(
            CapabilityFlags::CLIENT_PROTOCOL_41
                | CapabilityFlags::CLIENT_CONNECT_WITH_DB
                | CapabilityFlags::CLIENT_DEPRECATE_EOF
                | CapabilityFlags::CLIENT_MULTI_RESULTS
                | CapabilityFlags::CLIENT_LOCAL_FILES
        ));
        assert!(!caps.contains(CapabilityFlags::CLIENT_SSL));
        let tls = client_capabilities(server, true, false).unwrap();
        assert!(tls.contains(CapabilityFlags::CLIENT_SSL));
        assert!(!tls.contains(CapabilityFlags::CLIENT_CONNECT_WITH_DB));
        let no_tls = server - CapabilityFlags::CLIENT_SSL;
        assert!(matches!(
            client_capabilities(no_tls, true, false),
            Err(MysqlError::Unsupported(_))
        ));
        let no_eof = server - CapabilityFlags::CLIENT_DEPRECATE_EOF;
        let caps = client_capabilities(no_eof, false, false).unwrap();
        assert!(!caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF));
        let old = server - CapabilityFlags::CLIENT_PLUGIN_AUTH;
        assert!(client_capabilities(old, false, false).is_err());
    }

    #[test]
    fn ssl_request_is_32_bytes_with_the_ssl_flag() {
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SSL;
        let p = ssl_request(caps);
        assert_eq!(p.len(), 32);
        assert_eq!(u32::from_le_bytes(p[..4].try_into().unwrap()), caps.bits());
        assert_eq!(p[8], UTF8MB4);
    }

    #[test]
    fn handshake_response_carries_user_db_scramble_and_plugin() {
        let server = parse_hello(&mariadb_hello()).unwrap().capabilities;
        let caps = client_capabilities(server, false, true).unwrap();
        let p = handshake_response(caps, "pump", Some("logs"), Plugin::Native, &[7; 20]);
        let flags = u32::from_le_bytes(p[..4].try_into().unwrap());
        assert_eq!(flags, caps.bits());
        assert_eq!(p[8], UTF8MB4);
        let mut want = b"pump\0".to_vec();
        want.push(20);
        want.extend([7; 20]);
        want.extend(b"logs\0mysql_native_password\0");
        assert_eq!(&p[32..], &want[..]);
    }

    #[test]
    fn native_scramble_passes_the_servers_check() {
        // mysql.user keeps SHA1(SHA1(password)); for "password":
        let stored = hex("2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19");
        let nonce = b"abcdefghijklmnopqrst";
        let s = Plugin::Native.scramble(nonce, "password").unwrap();
        let mut h = Sha1::new();
        h.update(nonce);
        h.update(&stored);
        let sha1_pw: Vec<u8> = s.iter().zip(h.finalize()).map(|(a, b)| a ^ b).collect();
        assert_eq!(Sha1::digest(&sha1_pw).to_vec(), stored);
        assert!(Plugin::Native.scramble(nonce, "").unwrap().is_empty());
        assert!(Plugin::Native.scramble(b"short", "pw").is_err());
    }

    #[test]
    fn sha256_scramble_passes_the_servers_check() {
        let sha_pw = hex("5E884898DA28047151D0E56F8DC6292773603D0D6AABBDD62A11EF721D1542D8");
        let nonce = b"abcdefghijklmnopqrst";
        let s = Plugin::CachingSha2.scramble(nonce, "password").unwrap();
        let mut h = Sha256::new();
        h.update(Sha256::digest(&sha_pw));
        h.update(nonce);
        let got: Vec<u8> = s.iter().zip(h.finalize()).map(|(a, b)| a ^ b).collect();
        assert_eq!(got, sha_pw);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn auth(plugin: &str, tls: bool) -> Auth {
        let mut hello = parse_hello(&mariadb_hello()).unwrap();
        hello.auth_plugin = plugin.into();
        Auth::start(&hello, "secret", tls).0
    }

    #[test]
    fn unknown_greeting_plugin_starts_native() {
        let mut hello = parse_hello(&mariadb_hello()).unwrap();
        hello.auth_plugin = "client_ed25519".into();
        assert_eq!(Auth::start(&hello, "pw", false).1, Plugin::Native);
    }

    #[test]
    fn switch_answers_the_new_nonce_with_the_new_plugin() {
        let mut a = auth("mysql_native_password", false);
        let mut p = b"\xFEcaching_sha2_password\0".to_vec();
        p.extend(b"01234567890123456789\0");
        let want = Plugin::CachingSha2
            .scramble(b"01234567890123456789", "secret")
            .unwrap();
        assert_eq!(a.step(&p).unwrap(), AuthStep::Send(want));
        assert_eq!(a.step(&[1, 3]).unwrap(), AuthStep::Wait);
        let ok = [0, 0, 0, 2, 0, 0, 0];
        assert!(matches!(a.step(&ok).unwrap(), AuthStep::Done(_)));
        assert!(a.step(&p).is_err(), "a second switch");
    }

    #[test]
    fn switch_to_an_unknown_plugin_names_it() {
        let mut a = auth("mysql_native_password", false);
        let e = a.step(b"\xFEclient_ed25519\0nonce").unwrap_err();
        assert!(
            matches!(&e, MysqlError::Unsupported(m) if m.contains("client_ed25519")),
            "{e}"
        );
        let e = auth("mysql_native_password", false)
            .step(&[0xFE])
            .unwrap_err();
        assert!(e.to_string().contains("mysql_old_password"), "{e}");
    }

    #[test]
    fn full_sha2_auth_sends_the_password_only_over_tls() {
        let mut a = auth("caching_sha2_password", true);
        assert_eq!(
            a.step(&[1, 4]).unwrap(),
            AuthStep::Send(b"secret\0".to_vec())
        );
        let e = auth("caching_sha2_password", false)
            .step(&[1, 4])
            .unwrap_err();
        assert!(
            matches!(&e, MysqlError::Unsupported(m) if m.contains("tls")),
            "{e}"
        );
        assert!(auth("caching_sha2_password", false).step(&[1, 9]).is_err());
        assert!(auth("mysql_native_password", true).step(&[1, 3]).is_err());
    }

    #[test]
    fn auth_error_is_the_server_error() {
        let mut p = vec![0xFF];
        p.extend(1045u16.to_le_bytes());
        p.extend(b"#28000Access denied for user 'x'@'localhost'");
        match auth("mysql_native_password", false).step(&p).unwrap_err() {
            MysqlError::Server {
                code, sql_state, ..
            } => assert_eq!((code, sql_state.as_str()), (1045, "28000")),
            e => panic!("{e:?}"),
        }
    }
}
