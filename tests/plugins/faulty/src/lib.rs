//! Test fixture: a JSON-lines file sink that fails on cue, for the
//! fault-injection suite. Config:
//! - `path` (required): appends each delivered record's JSON plus `\n`;
//! - `fail_while_exists`: while this file exists every write returns
//!   `retry` (a sink outage the test switches on and off);
//! - `reject_seqs`: iam records whose sample `seq` (Request.context.seq) is
//!   listed are refused as non-retryable in a `partial` failure; the rest
//!   of the batch is written;
//! - `invalid_seqs`: a batch holding any of these is refused whole as
//!   `invalid-batch`, without saying which record is bad (the host bisects);
//! - `too_large_above`: a batch whose payload exceeds this many bytes is
//!   refused as `too-large`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;

use pumphouse_sdk::{Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Sink, WriteError};
use serde::Deserialize;

#[derive(Deserialize)]
struct FaultyConfig {
    path: String,
    #[serde(default)]
    fail_while_exists: Option<String>,
    #[serde(default)]
    reject_seqs: HashSet<u64>,
    #[serde(default)]
    invalid_seqs: HashSet<u64>,
    #[serde(default)]
    too_large_above: Option<usize>,
}

pub struct FaultySink {
    file: File,
    cfg: FaultyConfig,
}

/// The sample generator's sequence number of an iam record in JSON form.
fn seq(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let req: serde_json::Value = serde_json::from_str(v.get("Request")?.as_str()?).ok()?;
    req.get("context")?.get("seq")?.as_u64()
}

impl Sink for FaultySink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "faulty".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let cfg: FaultyConfig = config.parse()?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)
            .map_err(|e| Error::fatal(format!("cannot open {}: {e}", cfg.path)))?;
        Ok(FaultySink { file, cfg })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if let Some(flag) = &self.cfg.fail_while_exists {
            if std::fs::metadata(flag).is_ok() {
                return Err(WriteError::Retry(format!("outage: {flag} exists")));
            }
        }
        if let Some(max) = self.cfg.too_large_above {
            if batch.payloads.len() > max {
                return Err(WriteError::TooLarge);
            }
        }
        let seqs: Vec<Option<u64>> = batch.records().map(|r| seq(r.payload())).collect();
        if seqs
            .iter()
            .flatten()
            .any(|s| self.cfg.invalid_seqs.contains(s))
        {
            return Err(WriteError::InvalidBatch(
                "this batch holds a record the sink cannot take".into(),
            ));
        }
        let mut buf = Vec::with_capacity(batch.payloads.len() + batch.len());
        let mut failed = Vec::new();
        for (record, s) in batch.records().zip(&seqs) {
            match s {
                Some(s) if self.cfg.reject_seqs.contains(s) => failed.push(FailedEvent {
                    index: record.index(),
                    reason: format!("seq {s} is rejected by this sink"),
                    retryable: false,
                }),
                _ => {
                    buf.extend_from_slice(record.payload());
                    buf.push(b'\n');
                }
            }
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.flush())
            .map_err(|e| WriteError::Retry(format!("{}: {e}", self.cfg.path)))?;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(WriteError::Partial(failed))
        }
    }
}

pumphouse_sdk::export_sink!(FaultySink);
