//! `blackhole`: a pumphouse sink that accepts and counts records and does
//! nothing else; the benchmark sink. See README.md.

use pumphouse_sdk::metrics::counter_add;
use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};

/// Counts records and payload bytes, then drops them.
pub struct Blackhole;

impl Sink for Blackhole {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "blackhole".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Msgpack,
        }
    }

    fn init(_config: Config) -> Result<Self, Error> {
        Ok(Blackhole)
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        counter_add("blackhole_records", batch.len() as u64, &[]);
        counter_add("blackhole_bytes", batch.payloads.len() as u64, &[]);
        Ok(())
    }
}

pumphouse_sdk::export_sink!(Blackhole);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::{testing, Schema};

    #[test]
    fn counts_records_and_bytes() {
        testing::reset();
        let mut sink = Blackhole::init(Config::default()).unwrap();
        let batch = testing::batch(
            Encoding::Msgpack,
            Schema::Generic,
            vec![vec![0x80], vec![0x81, 0xa1, b'a', 0x01]],
        );
        sink.write(&batch).unwrap();
        sink.write(&batch).unwrap();
        assert_eq!(testing::counter("blackhole_records", &[]), 4);
        assert_eq!(testing::counter("blackhole_bytes", &[]), 10);
    }
}
