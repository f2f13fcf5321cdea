//! Test fixture: a sink whose `write` allocates without bound, touching
//! every page so nothing is optimised away. The host's memory limit is the
//! only way out: growing linear memory past it traps the instance.

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};

pub struct HogSink {
    hoard: Vec<Vec<u8>>,
}

impl Sink for HogSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hog".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(_config: Config) -> Result<Self, Error> {
        Ok(HogSink { hoard: Vec::new() })
    }

    fn write(&mut self, _batch: &Batch) -> Result<(), WriteError> {
        loop {
            let chunk = vec![0xA5u8; 1 << 20];
            self.hoard.push(std::hint::black_box(chunk));
        }
    }
}

pumphouse_sdk::export_sink!(HogSink);
