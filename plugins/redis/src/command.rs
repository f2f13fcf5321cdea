//! What to send for a record and what each reply means. Pure, so the
//! mapping from Redis errors to the host's error kinds is unit-tested.

use crate::config::{Mode, Push, Settings};
use pumphouse_wire::resp::{encode_command, Reply};

/// Appends the connection's setup commands: `AUTH` (if configured) and
/// `SELECT` (if the db is not 0). Returns how many commands it appended.
pub fn encode_handshake(settings: &Settings, out: &mut Vec<u8>) -> usize {
    let mut n = 0;
    if let Some(password) = &settings.password {
        match &settings.username {
            Some(user) => encode_command(out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
            None => encode_command(out, &[b"AUTH", password.as_bytes()]),
        }
        n += 1;
    }
    if settings.db != 0 {
        encode_command(out, &[b"SELECT", settings.db.to_string().as_bytes()]);
        n += 1;
    }
    n
}

/// Appends the one command that writes `payload`.
pub fn encode_record(settings: &Settings, payload: &[u8], out: &mut Vec<u8>) {
    let key = settings.key.as_bytes();
    match settings.mode {
        Mode::List => {
            let verb: &[u8] = match settings.push {
                Push::Rpush => b"RPUSH",
                Push::Lpush => b"LPUSH",
            };
            encode_command(out, &[verb, key, payload]);
        }
        Mode::Stream => {
            let field = settings.field.as_bytes();
            match settings.maxlen {
                Some(n) => encode_command(
                    out,
                    &[
                        b"XADD",
                        key,
                        b"MAXLEN",
                        b"~",
                        n.to_string().as_bytes(),
                        b"*",
                        field,
                        payload,
                    ],
                ),
                None => encode_command(out, &[b"XADD", key, b"*", field, payload]),
            }
        }
        Mode::Pubsub => encode_command(out, &[b"PUBLISH", key, payload]),
    }
}

/// What a reply to a record's command means for that record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written.
    Written,
    /// Not written; `retryable` says whether trying again later can help.
    Failed { retryable: bool, reason: String },
    /// Not written, and no other record will be either: retrying cannot
    /// help until an operator acts (credentials, permissions, topology).
    Fatal(String),
}

/// Error codes of a Redis that cannot take writes right now but will.
const TRANSIENT: &[&str] = &[
    "OOM",
    "LOADING",
    "BUSY",
    "MASTERDOWN",
    "READONLY",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "NOREPLICAS",
];

/// Error codes that say the connection's identity or the target is wrong.
const FATAL: &[&str] = &["NOAUTH", "WRONGPASS", "NOPERM", "MOVED", "ASK"];

/// Classifies the reply to a record's command.
pub fn classify(reply: &Reply) -> Outcome {
    let (Reply::Error(line), Some(code)) = (reply, reply.error_code()) else {
        return Outcome::Written;
    };
    if FATAL.contains(&code) {
        let hint = match code {
            "MOVED" | "ASK" => " (the target is a Redis Cluster, which this sink does not support)",
            "NOPERM" => " (the user lacks a permission this sink needs)",
            _ => " (check username_env/password_env)",
        };
        return Outcome::Fatal(format!("Redis refused the write: {line}{hint}"));
    }
    Outcome::Failed {
        retryable: TRANSIENT.contains(&code),
        reason: format!("Redis refused the write: {line}"),
    }
}

/// What a reply to a handshake command means: `None` when it succeeded,
/// else the failure, which is retryable only for a transient server state
/// (a loading dataset, say).
pub fn classify_handshake(reply: &Reply) -> Option<Outcome> {
    match reply {
        Reply::Error(line) => {
            let code = reply.error_code().unwrap_or("");
            Some(if TRANSIENT.contains(&code) {
                Outcome::Failed {
                    retryable: true,
                    reason: format!("Redis is not ready: {line}"),
                }
            } else {
                Outcome::Fatal(format!(
                    "Redis refused the connection setup: {line} (check username_env, password_env and db)"
                ))
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Payload;
    use pumphouse_wire::resp::parse_reply;
    use std::time::Duration;

    fn settings(mode: Mode) -> Settings {
        Settings {
            mode,
            address: "127.0.0.1:6379".into(),
            key: "out".into(),
            payload: Payload::Msgpack,
            field: "record".into(),
            push: Push::Rpush,
            maxlen: None,
            username: None,
            password: None,
            db: 0,
            timeout: Duration::from_secs(1),
        }
    }

    /// The command's arguments, decoded back from RESP.
    fn args(bytes: &[u8]) -> Vec<Vec<u8>> {
        // A command is an array of bulk strings, which is also a reply.
        let (reply, used) = parse_reply(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        let Reply::Array(Some(items)) = reply else {
            panic!("{reply:?}")
        };
        items
            .into_iter()
            .map(|i| match i {
                Reply::Bulk(Some(b)) => b,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn strs(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn one_command_per_mode() {
        let mut out = Vec::new();
        encode_record(&settings(Mode::List), b"\x82\xa1a", &mut out);
        assert_eq!(
            args(&out),
            vec![b"RPUSH".to_vec(), b"out".to_vec(), b"\x82\xa1a".to_vec()]
        );

        let mut s = settings(Mode::List);
        s.push = Push::Lpush;
        let mut out = Vec::new();
        encode_record(&s, b"p", &mut out);
        assert_eq!(args(&out), strs(&["LPUSH", "out", "p"]));

        let mut s = settings(Mode::Stream);
        let mut out = Vec::new();
        encode_record(&s, b"p", &mut out);
        assert_eq!(args(&out), strs(&["XADD", "out", "*", "record", "p"]));
        s.maxlen = Some(1000);
        s.field = "f".into();
        let mut out = Vec::new();
        encode_record(&s, b"p", &mut out);
        assert_eq!(
            args(&out),
            strs(&["XADD", "out", "MAXLEN", "~", "1000", "*", "f", "p"])
        );

        let mut out = Vec::new();
        encode_record(&settings(Mode::Pubsub), b"p", &mut out);
        assert_eq!(args(&out), strs(&["PUBLISH", "out", "p"]));
    }

    #[test]
    fn handshake_authenticates_and_selects() {
        let mut out = Vec::new();
        assert_eq!(encode_handshake(&settings(Mode::List), &mut out), 0);
        assert!(out.is_empty());

        let mut s = settings(Mode::List);
        s.password = Some("pw".into());
        s.db = 2;
        let mut out = Vec::new();
        assert_eq!(encode_handshake(&s, &mut out), 2);
        assert_eq!(
            out,
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"
        );

        s.username = Some("pump".into());
        s.db = 0;
        let mut out = Vec::new();
        assert_eq!(encode_handshake(&s, &mut out), 1);
        assert_eq!(args(&out), strs(&["AUTH", "pump", "pw"]));
    }

    #[test]
    fn replies_map_onto_record_outcomes() {
        let err = |s: &str| Reply::Error(s.into());
        assert_eq!(classify(&Reply::Integer(3)), Outcome::Written);
        assert_eq!(
            classify(&Reply::Bulk(Some(b"1-0".to_vec()))),
            Outcome::Written
        );
        for bad in ["WRONGTYPE Operation against a key", "ERR syntax error"] {
            assert!(
                matches!(classify(&err(bad)), Outcome::Failed { retryable: false, reason } if reason.contains(bad)),
                "{bad}"
            );
        }
        for transient in [
            "OOM command not allowed when used memory > 'maxmemory'.",
            "LOADING Redis is loading the dataset in memory",
            "BUSY Redis is busy running a script.",
            "MASTERDOWN Link with MASTER is down",
            "READONLY You can't write against a read only replica.",
        ] {
            assert!(
                matches!(
                    classify(&err(transient)),
                    Outcome::Failed {
                        retryable: true,
                        ..
                    }
                ),
                "{transient}"
            );
        }
        for fatal in [
            "NOAUTH Authentication required.",
            "WRONGPASS invalid username-password pair",
            "NOPERM this user has no permissions",
            "MOVED 3999 127.0.0.1:6381",
        ] {
            assert!(
                matches!(classify(&err(fatal)), Outcome::Fatal(_)),
                "{fatal}"
            );
        }
    }

    #[test]
    fn handshake_failures_are_fatal_unless_transient() {
        assert_eq!(classify_handshake(&Reply::Simple("OK".into())), None);
        assert!(matches!(
            classify_handshake(&Reply::Error("WRONGPASS invalid".into())),
            Some(Outcome::Fatal(m)) if m.contains("WRONGPASS")
        ));
        assert!(matches!(
            classify_handshake(&Reply::Error("ERR DB index is out of range".into())),
            Some(Outcome::Fatal(_))
        ));
        assert!(matches!(
            classify_handshake(&Reply::Error("LOADING loading".into())),
            Some(Outcome::Failed {
                retryable: true,
                ..
            })
        ));
    }
}
