//! Test fixture: a filter that returns a hostile verdict, chosen by its
//! config's `mode`:
//!
//! | `mode`                | verdict                                                          |
//! |-----------------------|------------------------------------------------------------------|
//! | `keep-oob`            | `keep` with an index past the end of the batch                   |
//! | `keep-unsorted`       | `keep` with indices out of order                                  |
//! | `replace-oob`         | `replace` with an event outside the payload bytes                |
//! | `replace-amplify`     | `replace` with `count` events (default 1 000 000), all pointing at one JSON payload of `size` bytes (default 4 MiB) |
//! | `replace-unencodable` | `replace` with `per_record` (default 10) events per record shown, each `{` (not JSON) |
//! | `error-huge`          | fails every `process` with a message of `size` bytes (default 1 MiB) holding newlines |

use pumphouse_sdk::{Batch, Config, Encoding, Error, Event, Filter, PluginInfo, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeConfig {
    mode: String,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    size: Option<usize>,
    #[serde(default)]
    per_record: Option<u32>,
}

pub struct HostileFilter {
    config: ModeConfig,
}

const MODES: &[&str] = &[
    "keep-oob",
    "keep-unsorted",
    "replace-oob",
    "replace-amplify",
    "replace-unencodable",
    "error-huge",
];

impl Filter for HostileFilter {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile-filter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let config: ModeConfig = config.parse()?;
        if !MODES.contains(&config.mode.as_str()) {
            return Err(Error::fatal(format!("unknown mode {:?}", config.mode)));
        }
        Ok(HostileFilter { config })
    }

    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error> {
        let n = batch.len() as u32;
        let c = &self.config;
        Ok(match c.mode.as_str() {
            "keep-oob" => Verdict::Keep(vec![0, n + 3]),
            "keep-unsorted" => Verdict::Keep(vec![1, 0]),
            "replace-oob" => {
                let mut out = Batch::new(Encoding::Json, batch.schema);
                out.payloads = b"{}".to_vec();
                out.events.push(Event {
                    id: 1,
                    timestamp: 0,
                    offset: 0,
                    len: 1000,
                });
                Verdict::Replace(out)
            }
            "replace-amplify" => {
                let size = c.size.unwrap_or(4 << 20).max(8);
                let mut payload = Vec::with_capacity(size);
                payload.extend_from_slice(b"{\"x\":\"");
                payload.resize(size - 2, b'a');
                payload.extend_from_slice(b"\"}");
                let mut out = Batch::new(Encoding::Json, batch.schema);
                out.payloads = payload;
                out.events = (0..c.count.unwrap_or(1_000_000))
                    .map(|i| Event {
                        id: u64::from(i),
                        timestamp: 0,
                        offset: 0,
                        len: size as u32,
                    })
                    .collect();
                Verdict::Replace(out)
            }
            "replace-unencodable" => {
                let mut out = Batch::new(Encoding::Json, batch.schema);
                out.payloads = b"{".to_vec();
                out.events = (0..n * c.per_record.unwrap_or(10))
                    .map(|i| Event {
                        id: u64::from(i),
                        timestamp: 0,
                        offset: 0,
                        len: 1,
                    })
                    .collect();
                Verdict::Replace(out)
            }
            _ => {
                let line = "2026-01-01T00:00:00.000000Z ERROR forged: ";
                let mut msg = String::with_capacity(c.size.unwrap_or(1 << 20));
                while msg.len() < c.size.unwrap_or(1 << 20) {
                    msg.push('\n');
                    msg.push_str(line);
                }
                return Err(Error::retry(msg));
            }
        })
    }
}

pumphouse_sdk::export_filter!(HostileFilter);
