//! The workers' own Redis connection: the URL's credentials and database
//! are honoured, and an error reply neither loses records nor leaves the
//! connection out of step.

use std::time::Duration;

use pumphouse_reporter::{Iam, Reporter, Target};

use crate::support::*;

async fn cmd(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.unwrap()
}

#[tokio::test]
async fn credentials_and_database_come_from_the_url() {
    let redis = RedisServer::start().unwrap();
    let mut admin = conn(&redis).await;
    cmd(
        &mut admin,
        &["ACL", "SETUSER", "reporter", "on", ">pw-2", "~*", "+@all"],
    )
    .await;
    cmd(&mut admin, &["CONFIG", "SET", "requirepass", "pw-1"]).await;
    let (records, expected) = iam_records(300);
    let port = redis.port();
    // The default user with a password, then a named user, each on a
    // database of its own, with each target.
    let urls = [
        (
            format!("redis://:pw-1@127.0.0.1:{port}/3"),
            Target::ListBatched,
            3,
        ),
        (
            format!("redis://reporter:pw-2@127.0.0.1:{port}/4"),
            Target::List,
            4,
        ),
    ];
    for (url, target, db) in urls {
        let reporter = Reporter::builder()
            .format(Iam)
            .redis_url(url.as_str())
            .key("connection-test")
            .target(target)
            // One worker keeps the recording order.
            .pool_size(1)
            .batch_size(64)
            .give_up_after(Duration::from_secs(5))
            .build()
            .unwrap();
        for r in &records {
            reporter.record(r.clone()).unwrap();
        }
        let stats = reporter.shutdown().await;
        assert_eq!((stats.sent, stats.send_errors), (300, 0), "{url}");
        let mut reader = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let got: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg("connection-test")
            .arg(0)
            .arg(-1)
            .query_async(&mut reader)
            .await
            .unwrap();
        assert_eq!(got, expected, "db {db}");
    }
    // Nothing landed in database 0.
    let mut default = redis::Client::open(format!("redis://:pw-1@127.0.0.1:{port}/0"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: u64 = redis::cmd("EXISTS")
        .arg("connection-test")
        .query_async(&mut default)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // A wrong password is an error the workers keep retrying, then count.
    let reporter = Reporter::builder()
        .format(Iam)
        .redis_url(format!("redis://:wrong@127.0.0.1:{port}/0"))
        .give_up_after(Duration::from_millis(300))
        .retry(Duration::from_millis(20), Duration::from_millis(50))
        .build()
        .unwrap();
    reporter.record(records[0].clone()).unwrap();
    let stats = reporter.shutdown().await;
    assert_eq!((stats.sent, stats.lost_unreachable), (0, 1));
    assert!(stats.send_errors > 0);
}

#[tokio::test]
async fn an_error_reply_is_retried_on_the_same_connection_in_step() {
    for target in [Target::ListBatched, Target::List] {
        let redis = RedisServer::start().unwrap();
        let mut admin = conn(&redis).await;
        // A string where the list should be: every RPUSH fails with
        // WRONGTYPE until it is removed.
        cmd(&mut admin, &["SET", "wrong-type", "x"]).await;
        let (records, expected) = iam_records(100);
        let reporter = Reporter::builder()
            .format(Iam)
            .redis_url(redis.url())
            .key("wrong-type")
            .target(target)
            .pool_size(1)
            .batch_size(100)
            .retry(Duration::from_millis(10), Duration::from_millis(20))
            .give_up_after(Duration::from_secs(300))
            .build()
            .unwrap();
        for r in &records {
            reporter.record(r.clone()).unwrap();
        }
        let r = reporter.clone();
        wait_until(Duration::from_secs(30), "a refused attempt", move || {
            let errors = r.stats().send_errors;
            async move { errors > 0 }
        })
        .await;
        let connections = connections_received(&mut admin).await;
        cmd(&mut admin, &["DEL", "wrong-type"]).await;
        let r = reporter.clone();
        wait_until(Duration::from_secs(30), "the batch sent", move || {
            let sent = r.stats().sent;
            async move { sent == 100 }
        })
        .await;
        // The error replies were read in step: the worker kept its
        // connection rather than opening another.
        assert_eq!(connections_received(&mut admin).await, connections);
        let stats = reporter.shutdown().await;
        assert_eq!((stats.sent, stats.lost()), (100, 0), "{target:?}");
        assert_eq!(list(&redis, "wrong-type").await, expected, "{target:?}");
    }
}

/// Connections the server has accepted since it started.
async fn connections_received(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}
