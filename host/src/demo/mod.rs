//! `pumphouse demo`: the main job on an embedded default config. Starts a
//! private `redis-server`, produces iam records, runs the daemon with the
//! file and stdout pumps until everything is delivered, and prints a
//! summary.

mod redis_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Schema};
use crate::produce::{produce, ProduceOptions};
use crate::source::redis::conn::Endpoint;
use crate::source::redis::lease_key;
pub use redis_server::RedisServer;

/// The demo's config, with `${DEMO_*}` placeholders.
pub const DEMO_CONFIG: &str = include_str!("../../../configs/demo.toml");

/// Demo settings.
pub struct DemoOptions {
    pub count: u64,
    pub plugins_dir: PathBuf,
    /// Where the file pump writes; a temporary directory when `None`.
    pub out_dir: Option<PathBuf>,
}

/// The bundled plugins: `<prefix>/share/pumphouse/plugins` for a binary
/// installed as `<prefix>/bin/pumphouse` (`scripts/install`), otherwise
/// `target/plugins` next to the binary's `target/<profile>/` directory, as
/// `scripts/build` lays it out.
pub fn default_plugins_dir() -> PathBuf {
    let Some(prefix) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
    else {
        return PathBuf::from("target/plugins");
    };
    let installed = prefix.join("share/pumphouse/plugins");
    if installed.is_dir() {
        installed
    } else {
        prefix.join("plugins")
    }
}

/// Reads one value of a Prometheus text rendering (label text exact).
pub fn metric_value(rendered: &str, name_with_labels: &str) -> f64 {
    rendered
        .lines()
        .filter_map(|l| l.strip_prefix(name_with_labels)?.trim().parse().ok())
        .next()
        .unwrap_or(0.0)
}

pub async fn run(
    o: DemoOptions,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<()> {
    for p in ["file.wasm", "stdout.wasm", "match.wasm"] {
        let path = o.plugins_dir.join(p);
        anyhow::ensure!(
            path.exists(),
            "plugin {} not found; build the plugins first (scripts/build)",
            path.display()
        );
    }
    let redis = RedisServer::start().context("starting a private redis-server")?;
    let tmp = tempfile::tempdir()?;
    let out_dir = o.out_dir.clone().unwrap_or_else(|| tmp.path().join("out"));
    let vars = |k: &str| match k {
        "DEMO_PLUGINS" => Some(o.plugins_dir.display().to_string()),
        "DEMO_REDIS" => Some(redis.url()),
        "DEMO_OUT" => Some(out_dir.display().to_string()),
        _ => None,
    };
    let config = Config::from_str_with(
        DEMO_CONFIG,
        Path::new("configs/demo.toml"),
        Path::new("."),
        vars,
    )?;
    let key = config.source.base_key().to_string();
    eprintln!(
        "pumphouse demo: private redis-server on {}, output in {}",
        redis.url(),
        out_dir.display()
    );

    let produced = produce(&ProduceOptions {
        redis_url: redis.url(),
        tls: Default::default(),
        format: Schema::Iam,
        key: key.clone(),
        shards: 0,
        count: o.count,
        rate: None,
        first_seq: 0,
        seed: 42,
        progress: true,
        push_log: None,
    })
    .await?;

    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let daemon =
        crate::daemon::start(config.clone(), None, metrics.clone(), shutdown.clone()).await?;
    let mut conn = Endpoint::open(&redis.url(), &Default::default())?
        .multiplexed()
        .await?;
    // Done when the list is empty and no claim is outstanding.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (len, leased): (u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(&key)
            .cmd("ZCARD")
            .arg(lease_key(&key))
            .query_async(&mut conn)
            .await?;
        if len == 0 && leased == 0 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "demo did not drain within 5 minutes ({len} waiting, {leased} batches claimed)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = daemon.done.await;

    let lines = std::fs::read_to_string(out_dir.join("iam.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let dead: u64 = redis::cmd("LLEN")
        .arg(config.source.dead_letter_key())
        .query_async(&mut conn)
        .await?;
    let rendered = metrics.as_ref().map(|h| h.render()).unwrap_or_default();
    println!();
    println!("── pumphouse demo summary ──────────────────────────────");
    println!("records produced            {produced}");
    println!(
        "records acked               {}",
        metric_value(&rendered, "pumphouse_records_acked_total")
    );
    for pump in ["file", "stdout"] {
        let written = metric_value(
            &rendered,
            &format!("pumphouse_pump_records_written_total{{pump=\"{pump}\"}}"),
        );
        let filtered = metric_value(
            &rendered,
            &format!("pumphouse_pump_records_filtered_total{{pump=\"{pump}\"}}"),
        );
        println!("pump {pump:<8} delivered {written:>8}   filtered out {filtered:>8}");
    }
    println!("lines in {}  {lines}", out_dir.join("iam.jsonl").display());
    println!("dead letters                {dead}");
    println!(
        "drained in                  {:.2}s ({:.0} records/s)",
        elapsed.as_secs_f64(),
        produced as f64 / elapsed.as_secs_f64()
    );
    if o.out_dir.is_some() {
        println!("output kept in {}", out_dir.display());
    } else {
        println!(
            "output removed at exit; keep it with --out DIR (e.g. scripts/demo --out target/demo-out)"
        );
    }
    anyhow::ensure!(
        lines as u64 == produced,
        "the file pump wrote {lines} lines for {produced} records"
    );
    Ok(())
}
