//! Test fixture: a sink whose `write` never returns. It spins in a busy
//! loop the compiler cannot remove, so the host's execution deadline is the
//! only way out. `init` accepts any config.

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};

pub struct SpinSink;

impl Sink for SpinSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "spin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(_config: Config) -> Result<Self, Error> {
        Ok(SpinSink)
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        let mut n = batch.len() as u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
}

pumphouse_sdk::export_sink!(SpinSink);
