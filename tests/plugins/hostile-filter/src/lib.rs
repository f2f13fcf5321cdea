//! Test fixture: a filter that returns a malformed verdict, chosen by its
//! config's `mode`:
//!
//! | `mode`          | verdict                                               |
//! |-----------------|-------------------------------------------------------|
//! | `keep-oob`      | `keep` with an index past the end of the batch       |
//! | `keep-unsorted` | `keep` with indices out of order                      |
//! | `replace-oob`   | `replace` with an event outside the payload bytes    |

use pumphouse_sdk::{Batch, Config, Encoding, Error, Event, Filter, PluginInfo, Verdict};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModeConfig {
    mode: String,
}

pub struct HostileFilter {
    mode: String,
}

impl Filter for HostileFilter {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile-filter".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let ModeConfig { mode } = config.parse()?;
        if !["keep-oob", "keep-unsorted", "replace-oob"].contains(&mode.as_str()) {
            return Err(Error::fatal(format!("unknown mode {mode:?}")));
        }
        Ok(HostileFilter { mode })
    }

    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error> {
        let n = batch.len() as u32;
        Ok(match self.mode.as_str() {
            "keep-oob" => Verdict::Keep(vec![0, n + 3]),
            "keep-unsorted" => Verdict::Keep(vec![1, 0]),
            _ => {
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
        })
    }
}

pumphouse_sdk::export_filter!(HostileFilter);
