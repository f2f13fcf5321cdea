//! `stdout`: a pumphouse sink that prints every record as one JSON line on
//! standard output. See README.md.

use std::io::Write;

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};

/// Writes each record's JSON payload plus `\n` to standard output, one
/// locked write per batch.
pub struct StdoutSink {
    buf: Vec<u8>,
}

impl Sink for StdoutSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "stdout".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(_config: Config) -> Result<Self, Error> {
        Ok(StdoutSink { buf: Vec::new() })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "stdout sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        lines(batch, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(())
    }
}

/// Fills `buf` with one line per record: the payload and `\n`.
fn lines(batch: &Batch, buf: &mut Vec<u8>) {
    buf.clear();
    buf.reserve(batch.payloads.len() + batch.len());
    for record in batch.records() {
        buf.extend_from_slice(record.payload());
        buf.push(b'\n');
    }
}

pumphouse_sdk::export_sink!(StdoutSink);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::{testing, Schema};

    #[test]
    fn one_line_per_record() {
        let mut buf = b"stale".to_vec();
        lines(
            &testing::json_batch(&[json!({"a": 1}), json!("x")]),
            &mut buf,
        );
        assert_eq!(buf, b"{\"a\":1}\n\"x\"\n");
    }

    #[test]
    fn writes_and_refuses_msgpack() {
        let mut sink = StdoutSink::init(Config::default()).unwrap();
        // An empty batch: exercises the locked write without printing.
        sink.write(&testing::json_batch(&[])).unwrap();
        let batch = testing::msgpack_batch(Schema::Generic, &[json!({"a": 1})]);
        assert!(matches!(sink.write(&batch), Err(WriteError::Fatal(_))));
    }
}
