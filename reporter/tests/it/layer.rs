//! The analytics layer on the example service, over real loopback HTTP:
//! one Tyk record per request, matching what the client saw.

use std::collections::HashMap;
use std::time::Duration;

use pumphouse::record::{decode, Schema};
use pumphouse_reporter::{HttpTyk, Reporter, TYK_KEY};
use rmpv::Value;

use crate::app::{app, serve, API_ID, API_NAME, ORG_ID};
use crate::load::Conn;
use crate::support::*;

/// A top-level (or nested, `a.b`) field of a Tyk record.
fn field<'a>(map: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(map, |v, k| {
        let Value::Map(entries) = v else {
            panic!("{path}: not a map")
        };
        &entries
            .iter()
            .find(|(key, _)| key.as_str() == Some(k))
            .unwrap_or_else(|| panic!("no field {path}"))
            .1
    })
}

fn s<'a>(map: &'a Value, path: &str) -> &'a str {
    field(map, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path}: not a string"))
}

fn i(map: &Value, path: &str) -> i64 {
    field(map, path)
        .as_i64()
        .unwrap_or_else(|| panic!("{path}: not an integer"))
}

/// One request as the client saw it: method, path, bytes sent, status,
/// bytes received.
type Exchange = (String, String, i64, i64, i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_records_one_tyk_record_per_request() {
    const CONNS: u64 = 8;
    const PER_CONN: u64 = 250;
    let redis = RedisServer::start().unwrap();
    let reporter = Reporter::builder()
        .format(HttpTyk)
        .redis_url(redis.url())
        .flush_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, app(Some(reporter.clone())), async {
        let _ = stopped.await;
    }));

    // A mix of methods, paths, statuses and body sizes.
    let mut clients = Vec::new();
    for c in 0..CONNS {
        clients.push(tokio::spawn(async move {
            let mut conn = Conn::connect(addr).await.unwrap();
            let mut seen = Vec::new();
            for k in 0..PER_CONN {
                let n = c * PER_CONN + k;
                let (method, path, body) = match n % 5 {
                    0 => ("GET", format!("/items/{n}"), Vec::new()),
                    1 => ("POST", "/echo".to_string(), vec![b'x'; n as usize % 300]),
                    2 => ("GET", format!("/status/{}", 400 + n % 100), Vec::new()),
                    3 => ("GET", format!("/page/{}", n % 20), Vec::new()),
                    _ => ("GET", format!("/?n={n}"), Vec::new()),
                };
                let reply = conn.request(method, &path, &body).await.unwrap();
                if let Some(rows) = path.strip_prefix("/page/") {
                    let html = String::from_utf8_lossy(&reply.body);
                    let rows: usize = rows.parse().unwrap();
                    assert_eq!(html.matches("<tr>").count(), rows + 1, "{html}");
                }
                let path = path.split('?').next().unwrap().to_string();
                seen.push((
                    method.to_string(),
                    path,
                    body.len() as i64,
                    i64::from(reply.status),
                    reply.body.len() as i64,
                ));
            }
            seen
        }));
    }
    let mut sent: HashMap<Exchange, u32> = HashMap::new();
    for c in clients {
        for ex in c.await.unwrap() {
            *sent.entry(ex).or_default() += 1;
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let stats = reporter.shutdown().await;
    let n = CONNS * PER_CONN;
    assert_eq!((stats.accepted, stats.sent), (n, n), "{stats:?}");

    let got = list(&redis, TYK_KEY).await;
    assert_eq!(got.len() as u64, n);
    let mut recorded: HashMap<Exchange, u32> = HashMap::new();
    for bytes in &got {
        let meta = decode(Schema::Tyk, bytes).expect("pumphouse decodes it");
        assert_eq!(meta.api_id.as_deref(), Some(API_ID));
        let r = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
        assert_eq!(s(&r, "RawPath"), s(&r, "Path"));
        assert_eq!(s(&r, "APIName"), API_NAME);
        assert_eq!(s(&r, "OrgID"), ORG_ID);
        assert_eq!(s(&r, "Host"), "localhost");
        assert_eq!(s(&r, "UserAgent"), "pumphouse-load/1");
        assert_eq!(s(&r, "IPAddress"), "127.0.0.1");
        assert!(i(&r, "Year") >= 2025 && (1..=12).contains(&i(&r, "Month")));
        assert_eq!(i(&r, "RequestTime"), i(&r, "Latency.Total"));
        assert_eq!(i(&r, "ContentLength"), i(&r, "Network.BytesIn"));
        let (Value::Array(ts), Value::Array(exp)) = (field(&r, "TimeStamp"), field(&r, "ExpireAt"))
        else {
            panic!("times are [seconds, nanoseconds] arrays");
        };
        let week = ts[0].as_i64().unwrap() + 7 * 86_400;
        assert_eq!(exp[0].as_i64().unwrap(), week);
        *recorded
            .entry((
                s(&r, "Method").to_string(),
                s(&r, "Path").to_string(),
                i(&r, "Network.BytesIn"),
                i(&r, "ResponseCode"),
                i(&r, "Network.BytesOut"),
            ))
            .or_default() += 1;
    }
    assert_eq!(recorded, sent, "records match the requests one to one");
}
