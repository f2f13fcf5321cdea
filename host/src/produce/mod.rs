//! `pumphouse produce`: a load generator that writes records to Redis the
//! way the real producers do (one `RPUSH` per record, sent in pipelines).

/// The encoders live in `pumphouse-wire`, shared with the reporter crate.
pub use pumphouse_wire as encode;

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::record::Schema;
use crate::source::redis::conn::{cause, redacted, Endpoint};
pub use encode::{encode_iam, encode_tyk, IamRecord, Sampler, TykRecord};

/// Records per pipeline.
const PIPELINE: usize = 1000;

/// What to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub redis_url: String,
    /// TLS settings for a `rediss://` URL.
    pub tls: crate::config::TlsConfig,
    pub format: Schema,
    /// The list key; shards are `<key>_<n>`.
    pub key: String,
    /// Spread records over `<key>_0` … `<key>_<shards-1>` (0: the key itself).
    pub shards: u32,
    pub count: u64,
    /// Records per second; `None` as fast as Redis takes them.
    pub rate: Option<u64>,
    /// First sequence number (embedded in each record).
    pub first_seq: u64,
    pub seed: u64,
    pub progress: bool,
    /// Appends `<first seq> <count> <unix µs>` per pipeline, timed just
    /// before the pipeline is sent: the push time of its records, for
    /// end-to-end latency measurements (`scripts/bench latency`).
    pub push_log: Option<std::path::PathBuf>,
}

/// Encodes record `seq` in `format`.
pub fn sample(format: Schema, sampler: &mut Sampler, seq: u64, now: i64) -> Vec<u8> {
    match format {
        Schema::Tyk => encode_tyk(&sampler.tyk(seq, now)),
        // Generic sources get iam-shaped maps: any map will do.
        Schema::Iam | Schema::Generic => encode_iam(&sampler.iam(seq, now)),
    }
}

/// Produces records and returns how many were written.
pub async fn produce(o: &ProduceOptions) -> anyhow::Result<u64> {
    let mut conn = Endpoint::open(&o.redis_url, &o.tls)?.multiplexed().await?;
    let bar = if o.progress {
        let b = ProgressBar::new(o.count);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} produced {pos}/{len} {format} records [{bar:30}] {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message(format!("{:?}", o.format));
        b
    } else {
        ProgressBar::hidden()
    };
    let mut sampler = Sampler::new(o.seed);
    let started = Instant::now();
    let chunk = match o.rate {
        // Small pipelines at low rates keep the pacing smooth.
        Some(r) => (r as usize / 20).clamp(1, PIPELINE),
        None => PIPELINE,
    };
    let mut push_log = match &o.push_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        )),
        None => None,
    };
    let mut sent = 0u64;
    while sent < o.count {
        let n = chunk.min((o.count - sent) as usize);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut pipe = redis::pipe();
        for i in 0..n as u64 {
            let seq = o.first_seq + sent + i;
            let key = if o.shards > 0 {
                format!("{}_{}", o.key, seq % u64::from(o.shards))
            } else {
                o.key.clone()
            };
            pipe.cmd("RPUSH")
                .arg(key)
                .arg(sample(o.format, &mut sampler, seq, now))
                .ignore();
        }
        if let Some(log) = &mut push_log {
            use std::io::Write;
            let us = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
            writeln!(log, "{} {n} {us}", o.first_seq + sent)?;
        }
        // A refusal names its cause and, on a cluster, the command refused.
        pipe.query_async::<()>(&mut conn).await.map_err(|e| {
            anyhow::anyhow!(
                "could not push records {}..{} to redis at {}: {}",
                o.first_seq + sent,
                o.first_seq + sent + n as u64,
                redacted(&o.redis_url),
                cause(&e)
            )
        })?;
        sent += n as u64;
        bar.set_position(sent);
        if let Some(rate) = o.rate {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    bar.finish();
    if let Some(mut log) = push_log {
        use std::io::Write;
        log.flush()?;
    }
    Ok(sent)
}

/// Writes `count` sample records to a file instead of Redis, for
/// `plugins test`: `.msgpack` holds the records' bytes back to back, as
/// the producers push them; `.jsonl` holds one record per line in the JSON
/// form pumps receive (times as RFC 3339 strings). Returns how many were
/// written.
pub fn produce_to_file(
    format: Schema,
    count: u64,
    first_seq: u64,
    seed: u64,
    path: &std::path::Path,
) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let json = match path.extension().and_then(|e| e.to_str()) {
        Some("msgpack") | Some("mp") => false,
        Some("jsonl") | Some("ndjson") => true,
        _ => anyhow::bail!(
            "{}: name the file .msgpack (concatenated MessagePack records) or .jsonl (one JSON record per line)",
            path.display()
        ),
    };
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut sampler = Sampler::new(seed);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut line = Vec::new();
    for seq in first_seq..first_seq + count {
        let record = sample(format, &mut sampler, seq, now);
        let bytes = if json {
            line.clear();
            crate::record::write_json(format, &record, &[], &mut line)
                .with_context(|| format!("record {seq} has no JSON form"))?;
            line.push(b'\n');
            &line
        } else {
            &record
        };
        out.write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(count)
}
