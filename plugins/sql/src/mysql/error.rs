//! What can go wrong talking to MySQL/MariaDB, and what the sink should do
//! about each (pure).

use std::io;

/// A failure of the client: the server's own error, the network, the
/// protocol, or a setup this client cannot serve.
#[derive(Debug, thiserror::Error)]
pub enum MysqlError {
    /// An ERR packet from the server.
    #[error("server error {code} ({sql_state}): {message}")]
    Server {
        /// The server's error number, e.g. 1045 for access denied.
        code: u16,
        /// The five-character SQLSTATE, e.g. `28000`.
        sql_state: String,
        message: String,
    },
    /// The transport failed: refused, reset, closed, timed out, or denied
    /// by the sandbox (`PermissionDenied`).
    #[error("connection: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not the MySQL protocol as this client
    /// speaks it; the connection is unusable.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The server asks for something this client does not do (an auth
    /// plugin, TLS it does not offer, a full caching_sha2 auth in clear);
    /// the message says how to fix the setup.
    #[error("{0}")]
    Unsupported(String),
}

/// What a failure means for the records being written: the sink's one
/// classification, shared with PostgreSQL.
pub use crate::outcome::Class as ErrorClass;

impl MysqlError {
    /// Classifies the failure for the sink.
    pub fn class(&self) -> ErrorClass {
        match self {
            MysqlError::Server { code, message, .. } => classify_server(*code, message),
            MysqlError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied => ErrorClass::Fatal,
            MysqlError::Io(_) | MysqlError::Protocol(_) => ErrorClass::Retry,
            MysqlError::Unsupported(_) => ErrorClass::Fatal,
        }
    }

    pub(crate) fn protocol(what: impl Into<String>) -> MysqlError {
        MysqlError::Protocol(what.into())
    }
}

/// Classes by server error number (MySQL's and MariaDB's share them up to
/// 1999; the few higher ones are named).
fn classify_server(code: u16, message: &str) -> ErrorClass {
    match code {
        // Deadlock, lock wait timeout, shutdown in progress, too many
        // connections (server-wide, per user, per hour), out of memory,
        // network errors the server saw, query interrupted or timed out,
        // connection killed, the server read-only during a failover.
        1213
        | 1205
        | 1053
        | 1040
        | 1203
        | 1226
        | 1037
        | 1041
        | 1158..=1161
        | 1317
        | 1290
        | 1836
        | 1792
        | 1927
        | 1969
        | 3024
        | 1614
        | 1637 => ErrorClass::Retry,
        // Access denied (login, database, table/command, column, routine,
        // needs a privilege), host not allowed or blocked, unknown
        // database or table, password expired, account locked, the auth
        // method unknown to the client.
        1045 | 1044 | 1142 | 1143 | 1370 | 1227 | 1130 | 1129 | 1049 | 1146 | 1820 | 1862
        | 3118 | 4151 | 1251 | 1698 => ErrorClass::Fatal,
        // Data too long, out of range, cannot be null, incorrect value,
        // incorrect date/time, check constraint (MySQL, MariaDB), foreign
        // key, truncated, no default, duplicate key, BIGINT out of range,
        // bad geometry, invalid JSON.
        1406 | 1264 | 1048 | 1366 | 1292 | 3819 | 4025 | 1452 | 1265 | 1364 | 1062 | 1690
        | 1416 | 3140 => ErrorClass::BadRow {
            row: row_number(message),
        },
        // Packet larger than max_allowed_packet (read or built), a
        // transaction larger than max_binlog_cache_size.
        1153 | 1301 | 1197 => ErrorClass::TooLarge,
        _ => ErrorClass::Invalid,
    }
}

/// The N of the last "at row N" in a server message, as in "Data too long
/// for column 'v' at row 3".
pub fn row_number(message: &str) -> Option<u64> {
    let (_, tail) = message.rsplit_once("at row ")?;
    let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
    tail[..digits].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16, message: &str) -> MysqlError {
        MysqlError::Server {
            code,
            sql_state: "HY000".into(),
            message: message.into(),
        }
    }

    #[test]
    fn transient_server_errors_retry() {
        for code in [1213, 1205, 1053, 1040, 1290, 1836, 1927] {
            assert_eq!(server(code, "x").class(), ErrorClass::Retry, "{code}");
        }
    }

    #[test]
    fn setup_errors_are_fatal() {
        for code in [1045, 1044, 1142, 1143, 1049, 1146] {
            assert_eq!(server(code, "x").class(), ErrorClass::Fatal, "{code}");
        }
        let e = MysqlError::Unsupported("auth plugin client_ed25519".into());
        assert_eq!(e.class(), ErrorClass::Fatal);
    }

    #[test]
    fn data_errors_name_the_row() {
        let e = server(1406, "Data too long for column 'v' at row 37");
        assert_eq!(e.class(), ErrorClass::BadRow { row: Some(37) });
        let e = server(
            1366,
            "Incorrect integer value: 'at row 9' for column `d`.`t`.`n` at row 2",
        );
        assert_eq!(e.class(), ErrorClass::BadRow { row: Some(2) });
        for code in [1264, 1048, 1292, 3819, 4025, 1452] {
            assert!(
                matches!(
                    server(code, "no row here").class(),
                    ErrorClass::BadRow { row: None }
                ),
                "{code}"
            );
        }
    }

    #[test]
    fn row_number_needs_digits() {
        assert_eq!(
            row_number("Out of range value for column 'n' at row 1"),
            Some(1)
        );
        assert_eq!(row_number("at row "), None);
        assert_eq!(row_number("at row x"), None);
        assert_eq!(row_number("at row 99999999999999999999999"), None);
        assert_eq!(row_number("Column 'n' cannot be null"), None);
    }

    #[test]
    fn size_errors_are_too_large() {
        for code in [1153, 1301] {
            assert_eq!(server(code, "x").class(), ErrorClass::TooLarge, "{code}");
        }
    }

    #[test]
    fn other_server_errors_are_invalid() {
        for code in [1064, 1054, 1136] {
            assert_eq!(server(code, "x").class(), ErrorClass::Invalid, "{code}");
        }
    }

    #[test]
    fn io_is_retry_except_the_sandbox() {
        let reset = MysqlError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(reset.class(), ErrorClass::Retry);
        let denied = MysqlError::Io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(denied.class(), ErrorClass::Fatal);
        assert_eq!(MysqlError::protocol("bad").class(), ErrorClass::Retry);
    }
}
