//! Test fixture: a file sink that traps on every `every`-th `write` call
//! since instantiation, before writing anything.
//!
//! Config: `path` (required), `every` (default 1: trap on every call).
//! Other calls append each JSON payload plus `\n` to `path`, like the
//! `file` plugin.

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
}

pub struct TrapSink {
    file: File,
    every: u32,
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
        let TrapConfig { path, every } = config.parse()?;
        if every == 0 {
            return Err(Error::fatal("`every` must be at least 1"));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::fatal(format!("cannot open {path} for appending: {e}")))?;
        Ok(TrapSink {
            file,
            every,
            calls: 0,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        self.calls = self.calls.wrapping_add(1);
        if self.calls.is_multiple_of(self.every) {
            panic!("fixture-trap: trapping on write call {}", self.calls);
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
