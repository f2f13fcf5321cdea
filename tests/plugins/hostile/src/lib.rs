//! Test fixture: a sink that misbehaves in the way its config's `mode`
//! names, to show that the host's sandbox and limits hold.
//!
//! | `mode`        | what `write` does                                                        |
//! |---------------|--------------------------------------------------------------------------|
//! | `trap`        | panics (a trap) on the first call of every instance                       |
//! | `sleep`       | sleeps in a host call (`wasi:clocks` poll) for `sleep_ms` (default 1h)    |
//! | `fs-escape`   | reads `paths` (default `/etc/passwd`, `/out/../../etc/passwd`); any success is `fatal` ("escaped"), else `retry` with the errors |
//! | `env`         | logs which of `names` it can see (`NAME=value` or `NAME absent`), then delivers |
//! | `http`        | POSTs the batch's payloads as JSON lines to `url`; errors map as the SDK maps them (denied → `fatal`) |
//! | `partial-oob` | answers `partial` naming an index past the end of the batch             |
//! | `log-flood`   | logs `lines` lines (default 1000) of `size` bytes (default 100000), then delivers |
//!
//! Every mode accepts JSON batches.

use pumphouse_sdk::http::Request;
use pumphouse_sdk::{Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Sink, WriteError};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostileConfig {
    mode: String,
    #[serde(default)]
    sleep_ms: Option<u64>,
    #[serde(default)]
    paths: Option<Vec<String>>,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    lines: Option<u32>,
    #[serde(default)]
    size: Option<usize>,
}

pub struct Hostile {
    config: HostileConfig,
}

impl Sink for Hostile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let config: HostileConfig = config.parse()?;
        let known = [
            "trap",
            "sleep",
            "fs-escape",
            "env",
            "http",
            "partial-oob",
            "log-flood",
        ];
        if !known.contains(&config.mode.as_str()) {
            return Err(Error::fatal(format!("unknown mode {:?}", config.mode)));
        }
        if config.mode == "http" && config.url.is_none() {
            return Err(Error::fatal("mode http needs url"));
        }
        Ok(Hostile { config })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let c = &self.config;
        match c.mode.as_str() {
            "trap" => panic!("fixture-hostile: trapping on purpose"),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(
                    c.sleep_ms.unwrap_or(3_600_000),
                ));
                Ok(())
            }
            "fs-escape" => {
                let default = [
                    "/etc/passwd".to_string(),
                    "/out/../../etc/passwd".to_string(),
                ];
                let paths = c.paths.as_deref().unwrap_or(&default);
                let mut denied = Vec::new();
                for p in paths {
                    match std::fs::read(p) {
                        Ok(bytes) => {
                            return Err(WriteError::Fatal(format!(
                                "escaped: read {} bytes from {p}",
                                bytes.len()
                            )))
                        }
                        Err(e) => denied.push(format!("{p}: {e}")),
                    }
                }
                Err(WriteError::Retry(format!(
                    "filesystem denied: {}",
                    denied.join("; ")
                )))
            }
            "env" => {
                let seen: Vec<String> = c
                    .names
                    .iter()
                    .map(|n| match std::env::var(n) {
                        Ok(v) => format!("{n}={v}"),
                        Err(_) => format!("{n} absent"),
                    })
                    .collect();
                pumphouse_sdk::info!("env probe: {}", seen.join(", "));
                Ok(())
            }
            "http" => {
                let mut body = Vec::with_capacity(batch.payloads.len() + batch.len());
                for rec in batch.records() {
                    body.extend_from_slice(rec.payload());
                    body.push(b'\n');
                }
                let url = c.url.clone().unwrap_or_default();
                Request::post(url)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()?
                    .error_for_status()?;
                Ok(())
            }
            "partial-oob" => Err(WriteError::Partial(vec![FailedEvent {
                index: batch.len() as u32 + 7,
                reason: "no such record".into(),
                retryable: true,
            }])),
            "log-flood" => {
                let line = "x".repeat(c.size.unwrap_or(100_000));
                for i in 0..c.lines.unwrap_or(1000) {
                    pumphouse_sdk::info!("flood {i} {line}");
                }
                Ok(())
            }
            other => Err(WriteError::Fatal(format!("unknown mode {other}"))),
        }
    }
}

pumphouse_sdk::export_sink!(Hostile);
