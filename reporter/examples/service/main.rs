//! The example service: hello-world axum with the analytics layer.
//!
//! ```text
//! cargo run --release -p pumphouse-reporter --example service -- [--listen 127.0.0.1:8080] [--redis URL] [--key KEY]
//! cargo run --release -p pumphouse-reporter --example service -- --demo [N]
//! ```
//!
//! The first form serves until Ctrl-C, then flushes and prints the
//! reporter's counts. `--demo` starts a private redis-server, sends N
//! requests (default 10000) over loopback, shuts down and shows what
//! arrived in Redis.

mod app;
mod load;

use std::net::SocketAddr;
use std::time::Duration;

use pumphouse_reporter::{HttpTyk, Reporter, TYK_KEY};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--demo") {
        let n = arg(&args, "--demo")
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        return demo(n).await;
    }
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:8080".into());
    let redis =
        arg(&args, "--redis").unwrap_or_else(|| pumphouse_reporter::DEFAULT_REDIS_URL.into());
    let key = arg(&args, "--key").unwrap_or_else(|| TYK_KEY.into());
    let reporter = Reporter::builder()
        .format(HttpTyk)
        .redis_url(redis)
        .key(key)
        .build()?;
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("serving on http://{listen}; Ctrl-C to stop");
    app::serve(listener, app::app(Some(reporter.clone())), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    let stats = reporter.shutdown().await;
    eprintln!("{stats:#?}");
    Ok(())
}

async fn demo(n: u64) -> Result<(), Box<dyn std::error::Error>> {
    let redis = pumphouse::demo::RedisServer::start()?;
    let reporter = Reporter::builder()
        .format(HttpTyk)
        .redis_url(redis.url())
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(
        listener,
        app::app(Some(reporter.clone())),
        async {
            let _ = stopped.await;
        },
    ));
    let load = load::run(addr, "/", 8, Duration::from_secs(60), n).await?;
    let _ = stop.send(());
    server.await??;
    let stats = reporter.shutdown().await;

    let mut conn = redis::Client::open(redis.url())?
        .get_multiplexed_async_connection()
        .await?;
    let len: u64 = redis::cmd("LLEN")
        .arg(TYK_KEY)
        .query_async(&mut conn)
        .await?;
    let first: Vec<u8> = redis::cmd("LINDEX")
        .arg(TYK_KEY)
        .arg(0)
        .query_async(&mut conn)
        .await?;
    let meta = pumphouse::record::decode(pumphouse::record::Schema::Tyk, &first)?;
    println!("── pumphouse-reporter demo ─────────────────────────────");
    println!("requests served             {}", load.requests);
    println!("records accepted            {}", stats.accepted);
    println!("records sent                {}", stats.sent);
    println!(
        "dropped / lost              {} / {}",
        stats.dropped(),
        stats.lost()
    );
    println!("pipelines                   {}", stats.batches);
    println!("LLEN {TYK_KEY}  {len}");
    println!(
        "first record                {} bytes, APIID {:?}, ResponseCode {:?}",
        first.len(),
        meta.api_id.unwrap_or_default(),
        meta.response_code.unwrap_or_default()
    );
    println!("drain it with `pumphouse run` and a source of format = \"tyk\"");
    Ok(())
}
