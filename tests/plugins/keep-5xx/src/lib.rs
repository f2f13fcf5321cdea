//! Benchmark fixture: a filter keeping records whose `ResponseCode` is at
//! least 500, the Rust side of `scripts/bench langs` (the Python and JS
//! filters in `tests/python-plugins/keep_5xx_py` and
//! `tests/js-plugins/keep_5xx_js` do the same).

use pumphouse_sdk::{Batch, Config, Encoding, Error, Filter, PluginInfo, Verdict};

pub struct Keep5xx;

impl Filter for Keep5xx {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "keep-5xx".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(_config: Config) -> Result<Self, Error> {
        Ok(Keep5xx)
    }

    fn process(&mut self, batch: &Batch) -> Result<Verdict, Error> {
        let kept = batch
            .records()
            .filter(|rec| {
                rec.field("ResponseCode")
                    .and_then(|c| c.parse::<i64>().ok())
                    .is_some_and(|c| c >= 500)
            })
            .map(|rec| rec.index())
            .collect();
        Ok(Verdict::from_indices(kept, batch.len()))
    }
}

pumphouse_sdk::export_filter!(Keep5xx);
