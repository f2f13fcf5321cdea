//! The sink against a scripted RESP server on a local socket: pipelining,
//! reconnects and the mapping of every failure onto the host's errors.
//! (The end-to-end tests run it against a real redis-server.)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use pumphouse_sdk::serde_json::{json, Value};
use pumphouse_sdk::{testing, IamRecord, Schema, Timestamp};

use super::*;
use pumphouse_wire::resp::parse_reply;

/// What the scripted server does with a command.
enum Act {
    Reply(&'static [u8]),
    /// Answers, then drops the connection.
    ReplyAndClose(&'static [u8]),
    /// Drops the connection without answering.
    Close,
}

/// A RESP server on a free local port that answers each command with
/// `script(connection number, command number on it, command)` and records
/// every command.
struct Scripted {
    address: String,
    commands: Arc<Mutex<Vec<Vec<Vec<u8>>>>>,
}

fn scripted(script: impl Fn(usize, usize, &[Vec<u8>]) -> Act + Send + 'static) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let commands = Arc::new(Mutex::new(Vec::new()));
    let seen = commands.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            serve(stream.unwrap(), n, &script, &seen);
        }
    });
    Scripted { address, commands }
}

fn serve(
    mut stream: TcpStream,
    conn: usize,
    script: &impl Fn(usize, usize, &[Vec<u8>]) -> Act,
    seen: &Mutex<Vec<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut n = 0;
    loop {
        while let Some((reply, used)) = parse_reply(&buf).unwrap() {
            buf.drain(..used);
            let Reply::Array(Some(items)) = reply else {
                panic!("not a command: {reply:?}")
            };
            let args: Vec<Vec<u8>> = items
                .into_iter()
                .map(|i| match i {
                    Reply::Bulk(Some(b)) => b,
                    other => panic!("{other:?}"),
                })
                .collect();
            seen.lock().unwrap().push(args.clone());
            n += 1;
            match script(conn, n - 1, &args) {
                Act::Reply(bytes) => stream.write_all(bytes).unwrap(),
                Act::ReplyAndClose(bytes) => {
                    stream.write_all(bytes).unwrap();
                    return;
                }
                Act::Close => return,
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn sink(address: &str, extra: Value) -> RedisSink {
    RedisSink::init(testing::config(
        json!({"address": address, "key": "out", "timeout_ms": 2000}),
        extra,
    ))
    .unwrap()
}

fn iam(n: usize) -> Batch {
    let records: Vec<IamRecord> = (0..n)
        .map(|i| IamRecord {
            timestamp: Timestamp::from_unix_seconds(1_763_700_000 + i as i64),
            username: format!("user{i}"),
            effect: "allow".into(),
            ..Default::default()
        })
        .collect();
    testing::iam_batch(&records)
}

const OK_INT: &[u8] = b":1\r\n";

#[test]
fn pipelines_one_command_per_record_with_the_original_bytes() {
    let server = scripted(|_, _, _| Act::Reply(OK_INT));
    let mut sink = sink(&server.address, json!({}));
    let batch = iam(3);
    sink.write(&batch).unwrap();
    sink.write(&iam(2)).unwrap();
    let commands = server.commands.lock().unwrap();
    assert_eq!(commands.len(), 5);
    for (cmd, rec) in commands.iter().zip(batch.records()) {
        assert_eq!(
            cmd,
            &vec![b"RPUSH".to_vec(), b"out".to_vec(), rec.payload().to_vec()]
        );
    }
    assert_eq!(
        testing::counter("connections_opened", &[]),
        1,
        "one connection across batches"
    );
}

#[test]
fn json_payloads_are_the_hosts_json() {
    let server = scripted(|_, _, _| Act::Reply(b"$3\r\n1-0\r\n"));
    let mut sink = sink(
        &server.address,
        json!({"payload": "json", "mode": "stream", "field": "f"}),
    );
    sink.write(&iam(2)).unwrap();
    let commands = server.commands.lock().unwrap();
    let cmd = &commands[1];
    assert_eq!(
        &cmd[..4],
        &[
            b"XADD".to_vec(),
            b"out".to_vec(),
            b"*".to_vec(),
            b"f".to_vec()
        ]
    );
    let v: Value = pumphouse_sdk::serde_json::from_slice(&cmd[4]).unwrap();
    assert_eq!(v["Username"], "user1");
    assert_eq!(v["TimeStamp"], "2025-11-21T04:40:01Z");
}

#[test]
fn refused_records_are_partial_and_keep_their_kind() {
    let server = scripted(|_, _, args| match args[2].as_slice() {
        p if p.ends_with(b"bad") => Act::Reply(b"-WRONGTYPE Operation against a key\r\n"),
        p if p.ends_with(b"later") => Act::Reply(b"-OOM command not allowed\r\n"),
        _ => Act::Reply(OK_INT),
    });
    let mut sink = sink(&server.address, json!({}));
    let batch = testing::batch(
        Encoding::Msgpack,
        Schema::Generic,
        vec![
            b"ok".to_vec(),
            b"bad".to_vec(),
            b"ok".to_vec(),
            b"later".to_vec(),
        ],
    );
    let Err(WriteError::Partial(failed)) = sink.write(&batch) else {
        panic!("expected partial")
    };
    assert_eq!(failed.len(), 2);
    assert_eq!((failed[0].index, failed[0].retryable), (1, false));
    assert!(
        failed[0].reason.contains("WRONGTYPE"),
        "{}",
        failed[0].reason
    );
    assert_eq!((failed[1].index, failed[1].retryable), (3, true));
}

#[test]
fn a_redis_that_is_loading_means_retry_and_noauth_means_fatal() {
    let server = scripted(|_, _, _| Act::Reply(b"-LOADING Redis is loading the dataset\r\n"));
    let mut s = sink(&server.address, json!({}));
    assert!(matches!(s.write(&iam(3)), Err(WriteError::Retry(m)) if m.contains("LOADING")));

    let server = scripted(|_, _, _| Act::Reply(b"-NOAUTH Authentication required.\r\n"));
    let mut s = sink(&server.address, json!({}));
    assert!(matches!(s.write(&iam(3)), Err(WriteError::Fatal(m)) if m.contains("NOAUTH")));
}

#[test]
fn a_wrong_password_is_fatal_and_auth_comes_first() {
    std::env::set_var("PUMP_REDIS_TEST_PW", "hunter2");
    let server = scripted(|_, _, args| match args[0].as_slice() {
        b"AUTH" => Act::Reply(b"-WRONGPASS invalid username-password pair\r\n"),
        _ => Act::Reply(OK_INT),
    });
    let mut s = sink(
        &server.address,
        json!({"password_env": "PUMP_REDIS_TEST_PW", "db": 4}),
    );
    let err = s.write(&iam(1)).unwrap_err();
    assert!(
        matches!(&err, WriteError::Fatal(m) if m.contains("WRONGPASS")),
        "{err:?}"
    );
    // The sink gives up at the AUTH reply; the server may still be taking
    // the SELECT that came in the same write.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.commands.lock().unwrap().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let commands = server.commands.lock().unwrap();
    assert_eq!(
        commands[..2],
        [
            vec![b"AUTH".to_vec(), b"hunter2".to_vec()],
            vec![b"SELECT".to_vec(), b"4".to_vec()]
        ]
    );
    assert_eq!(commands.len(), 2, "no record is sent after a failed AUTH");
}

#[test]
fn a_connection_lost_mid_batch_retries_only_the_unanswered_records() {
    // The first connection answers two commands and drops; later ones work.
    let server = scripted(|conn, n, _| match (conn, n) {
        (0, 2) => Act::Close,
        _ => Act::Reply(OK_INT),
    });
    let mut s = sink(&server.address, json!({}));
    let Err(WriteError::Partial(failed)) = s.write(&iam(5)) else {
        panic!("expected partial")
    };
    let indices: Vec<u32> = failed.iter().map(|f| f.index).collect();
    assert_eq!(indices, vec![2, 3, 4]);
    assert!(failed.iter().all(|f| f.retryable));
    // The next batch connects again.
    s.write(&iam(2)).unwrap();
}

#[test]
fn a_connection_that_died_between_batches_is_replaced_silently() {
    // Every connection serves one batch of two commands, then drops.
    let server = scripted(|_, n, _| match n {
        1 => Act::ReplyAndClose(OK_INT),
        _ => Act::Reply(OK_INT),
    });
    let mut s = sink(&server.address, json!({}));
    s.write(&iam(2)).unwrap();
    s.write(&iam(2)).unwrap();
    s.write(&iam(2)).unwrap();
    assert_eq!(server.commands.lock().unwrap().len(), 6);
    assert_eq!(testing::counter("connections_opened", &[]), 3);
}

#[test]
fn nothing_listening_means_retry() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = sink(&format!("127.0.0.1:{port}"), json!({}));
    assert!(matches!(s.write(&iam(1)), Err(WriteError::Retry(m)) if m.contains(&port.to_string())));
    assert!(testing::logs()
        .iter()
        .any(|(_, line)| line.contains("cannot write to")));
}

#[test]
fn an_undecodable_record_is_refused_alone_in_json_mode() {
    let server = scripted(|_, _, _| Act::Reply(OK_INT));
    let mut s = sink(&server.address, json!({"payload": "json"}));
    let good = iam(2).get(1).unwrap().payload().to_vec();
    let batch = testing::batch(
        Encoding::Msgpack,
        Schema::Iam,
        vec![vec![0x82, 0xa1, b'a'], good],
    );
    let Err(WriteError::Partial(failed)) = s.write(&batch) else {
        panic!("expected partial")
    };
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].index, failed[0].retryable), (0, false));
    assert_eq!(server.commands.lock().unwrap().len(), 1);
}

#[test]
fn empty_batches_touch_nothing() {
    let mut s = sink("127.0.0.1:1", json!({}));
    s.write(&testing::iam_batch(&[])).unwrap();
    assert!(s.conn.is_none());
}

#[test]
fn describes_itself() {
    let info = RedisSink::info();
    assert_eq!(info.name, "redis");
    assert_eq!(info.accepts, Encoding::Msgpack);
}
