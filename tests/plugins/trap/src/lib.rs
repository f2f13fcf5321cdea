//! Test fixture: a file sink that traps on every `every`-th `write` call
//! since instantiation, before writing anything.
//!
//! Config: `path` (required), `every` (default 1: trap on every call; 0:
//! never trap), `delay_ms` (default 0: sleep this long in every write, to
//! make a slow sink). Other calls append each JSON payload plus `\n` to
//! `path`, like the `file` plugin.

use std::fs::{File, OpenOptions};
use std::io::Write;

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};
use serde::Deserialize;

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
struct TrapConfig {
    path: String,
    #[serde(default = "one")]
    every: u32,
    #[serde(default)]
    delay_ms: u64,
}

pub struct TrapSink {
    file: File,
    every: u32,
    delay: std::time::Duration,
    calls: u32,
}

impl Sink for TrapSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "trap".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let TrapConfig {
            path,
            every,
            delay_ms,
        } = config.parse()?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::fatal(format!("cannot open {path} for appending: {e}")))?;
        Ok(TrapSink {
            file,
            every,
            delay: std::time::Duration::from_millis(delay_ms),
            calls: 0,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        self.calls = self.calls.wrapping_add(1);
        if self.every > 0 && self.calls.is_multiple_of(self.every) {
            panic!("fixture-trap: trapping on write call {}", self.calls);
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        let mut buf = Vec::with_capacity(batch.payloads.len() + batch.len());
        for record in batch.records() {
            buf.extend_from_slice(record.payload());
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.flush()?;
        Ok(())
    }
}

pumphouse_sdk::export_sink!(TrapSink);
