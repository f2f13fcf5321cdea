//! The MySQL/MariaDB client protocol over any byte stream.
//!
//! Built on `mysql_common` (the protocol layer of `mysql_async`): its
//! packet types, chunk codec and auth scrambles are sans-IO, and with
//! default features off it builds for wasm32-wasip2; this whole module
//! adds about 120 KB to a .wasm. Its `server_version_parsed` would pull in
//! `regex` (+1.3 MB), so the greeting's version stays a string here. This
//! module adds framing state, the auth exchange, result sets and error classes.
//!
//! * `packet.rs` — chunk framing with a size bound (pure);
//! * `handshake.rs` — greeting, SSLRequest, HandshakeResponse41, auth (pure);
//! * `reply.rs` — commands, OK/ERR, text result sets (pure);
//! * `error.rs` — [`MysqlError`] and its [`ErrorClass`] for the sink (pure);
//! * `client.rs` — [`Client`] over a [`Transport`] (the I/O).

mod client;
mod error;
mod handshake;
#[cfg(test)]
mod mariadb_it;
mod packet;
mod reply;
#[cfg(test)]
mod tests;

pub use client::{Client, Options, Transport};
pub use error::{row_number, ErrorClass, MysqlError};
pub use handshake::{
    client_capabilities, handshake_response, parse_hello, ssl_request, Auth, AuthStep, Plugin,
    ServerHello,
};
pub use packet::{chunks, write_packet, PacketReader, DEFAULT_MAX_PACKET, MAX_CHUNK};
pub use reply::{
    com_ping, com_query, com_quit, parse_err, parse_ok, parse_text_row, Finished, OkInfo,
    QueryResult, ResultReader, Value,
};
