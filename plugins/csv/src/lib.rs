//! `csv`: a pumphouse sink that appends every record to a CSV file as one
//! row of configurable columns. See README.md.
//!
//! `format.rs` holds the pure parts (columns, cell text, quoting, finding
//! the last complete row); this file holds the config and the file I/O.

mod format;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use pumphouse_sdk::serde_json::Value;
use pumphouse_sdk::{Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Sink, WriteError};
use serde::Deserialize;

use format::{Column, Dialect, RowEnds};

/// A torn last row longer than this is not one interrupted row of ours:
/// refusing to start is safer than cutting that much off someone's file.
const MAX_TORN_ROW: u64 = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvConfig {
    /// The file to append to; the pump's sandbox must preopen its folder.
    path: String,
    /// Field paths or `{ field, header }` tables; per-schema defaults.
    columns: Option<Vec<Value>>,
    /// Write a header row when the file is empty.
    #[serde(default = "yes")]
    header: bool,
    /// One ASCII character.
    #[serde(default = "comma")]
    delimiter: String,
    /// End rows with CRLF (as RFC 4180 says) instead of LF.
    #[serde(default)]
    crlf: bool,
    /// `sync_data` after every batch.
    #[serde(default)]
    fsync: bool,
}

fn yes() -> bool {
    true
}

fn comma() -> String {
    ",".into()
}

/// Appends one row per record, one buffered write per batch.
pub struct CsvSink {
    path: String,
    file: File,
    /// Configured, or the schema's defaults once the first batch shows it.
    columns: Option<Vec<Column>>,
    header: bool,
    dialect: Dialect,
    fsync: bool,
    buf: Vec<u8>,
}

impl Sink for CsvSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "csv".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // The host's JSON already has times as RFC 3339 text and
            // binary values as base64, which is what a CSV cell wants.
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let CsvConfig {
            path,
            columns,
            header,
            delimiter,
            crlf,
            fsync,
        } = config.parse()?;
        let delimiter = parse_delimiter(&delimiter)?;
        let columns = columns.as_deref().map(Column::parse_all).transpose()?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::fatal(format!("path: cannot open {path} for appending: {e}")))?;
        drop_torn_row(&mut file, &path)?;
        pumphouse_sdk::debug!("appending CSV rows to {path} (fsync: {fsync})");
        Ok(CsvSink {
            path,
            file,
            columns,
            header,
            dialect: Dialect { delimiter, crlf },
            fsync,
            buf: Vec::new(),
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "csv sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        if self.columns.is_none() {
            self.columns = Some(Column::defaults(batch.schema).ok_or_else(|| {
                WriteError::Fatal(
                    "columns: records of the generic schema have no default columns; list them in the pump's config"
                        .into(),
                )
            })?);
        }
        let columns = self.columns.as_deref().unwrap_or_default();
        let retry = |e: std::io::Error| WriteError::Retry(format!("{}: {e}", self.path));
        let before = self.file.metadata().map_err(retry)?.len();

        self.buf.clear();
        let mut failed = Vec::new();
        let mut rows = self.dialect.rows(&mut self.buf);
        if self.header && before == 0 {
            rows.header(columns)?;
        }
        for rec in batch.records() {
            match rec.value() {
                Ok(value) => rows.record(columns, &value)?,
                Err(e) => failed.push(FailedEvent {
                    index: rec.index(),
                    reason: e.to_string(),
                    retryable: false,
                }),
            }
        }
        rows.finish()?;

        let written = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.flush());
        if let Err(e) = written {
            // Take back a partly written batch, so the retry does not
            // follow half a row (which could leave a quote open).
            if let Err(cut) = self.file.set_len(before) {
                pumphouse_sdk::warn!(
                    "{}: cannot cut a failed write back to {before} bytes: {cut}",
                    self.path
                );
            }
            return Err(retry(e));
        }
        if self.fsync {
            self.file.sync_data().map_err(retry)?;
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(WriteError::Partial(failed))
        }
    }
}

/// The delimiter byte: one ASCII character that cannot be confused with
/// quoting or line ends.
fn parse_delimiter(text: &str) -> Result<u8, Error> {
    match text.as_bytes() {
        [b] if b.is_ascii() && !matches!(b, b'"' | b'\r' | b'\n') => Ok(*b),
        _ => Err(Error::fatal(format!(
            "invalid config: delimiter: {text:?} is not one ASCII character other than a quote or line end (e.g. \",\", \";\", \"\\t\")"
        ))),
    }
}

/// A process killed mid-append can leave a partial last row, maybe inside
/// an open quote that would swallow every later row. Cutting it off keeps
/// the file parseable; the row's batch was never acknowledged, so the host
/// delivers it again.
fn drop_torn_row(file: &mut File, path: &str) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::fatal(format!("path: cannot check the end of {path}: {e}"));
    let len = file.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut ends = RowEnds::default();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk).map_err(io)? {
            0 => break,
            n => ends.feed(&chunk[..n]),
        }
    }
    let torn = len - ends.complete;
    if torn == 0 {
        return Ok(());
    }
    if torn > MAX_TORN_ROW {
        return Err(Error::fatal(format!(
            "path: {path} ends in {torn} bytes that are not a complete CSV row; \
             if this is not a file the csv sink wrote, point `path` elsewhere"
        )));
    }
    pumphouse_sdk::warn!(
        "{path} ended in a partial row of {torn} bytes (an interrupted write); removing it"
    );
    file.set_len(ends.complete).map_err(io)?;
    Ok(())
}

pumphouse_sdk::export_sink!(CsvSink);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::{testing, IamRecord, Schema, Timestamp, TykRecord};

    fn sink_at(path: &std::path::Path, extra: Value) -> Result<CsvSink, Error> {
        CsvSink::init(testing::config(json!({ "path": path }), extra))
    }

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn iam_rows_with_the_default_columns_and_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("iam.csv");
        let mut sink = sink_at(&path, json!({})).unwrap();
        let rec = IamRecord {
            timestamp: Timestamp::from_unix_seconds(1_763_700_000),
            username: "alice".into(),
            effect: "allow".into(),
            conclusion: "policies allow access".into(),
            request: r#"{"resource":"a","context":{"seq":1}}"#.into(),
            policies: "[]".into(),
            deciders: "".into(),
            expire_at: Timestamp::new(1_764_300_000, 500_000_000),
        };
        let batch = testing::json_batch_of(Schema::Iam, std::slice::from_ref(&rec));
        sink.write(&batch).unwrap();
        sink.write(&batch).unwrap();
        assert_eq!(
            read(&path),
            "TimeStamp,Username,Effect,Conclusion,Request,Policies,Deciders,ExpireAt\n\
             2025-11-21T04:40:00Z,alice,allow,policies allow access,\"{\"\"resource\"\":\"\"a\"\",\"\"context\"\":{\"\"seq\"\":1}}\",[],,2025-11-28T03:20:00.5Z\n\
             2025-11-21T04:40:00Z,alice,allow,policies allow access,\"{\"\"resource\"\":\"\"a\"\",\"\"context\"\":{\"\"seq\"\":1}}\",[],,2025-11-28T03:20:00.5Z\n"
        );
        // A new instance on the same, non-empty file writes no second header.
        let mut again = sink_at(&path, json!({})).unwrap();
        again.write(&batch).unwrap();
        assert_eq!(read(&path).matches("TimeStamp,").count(), 1);
    }

    #[test]
    fn tyk_rows_with_configured_columns_nested_values_and_no_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tyk.csv");
        let mut sink = sink_at(
            &path,
            json!({
                "header": false, "delimiter": ";", "crlf": true, "fsync": true,
                "columns": ["Method", {"field": "Geo.Country.ISOCode", "header": "country"}, "Latency", "Tags", "TrackPath", "Nope"],
            }),
        )
        .unwrap();
        let mut rec = TykRecord {
            method: "GET".into(),
            tags: vec!["a;b".into(), "c".into()],
            track_path: true,
            ..Default::default()
        };
        rec.geo.country.iso_code = "DE".into();
        rec.latency.total = 12;
        sink.write(&testing::json_batch_of(Schema::Tyk, &[rec]))
            .unwrap();
        assert_eq!(
            read(&path),
            "GET;DE;\"{\"\"Gateway\"\":0,\"\"Total\"\":12,\"\"Upstream\"\":0}\";\"[\"\"a;b\"\",\"\"c\"\"]\";true;\r\n"
        );
    }

    #[test]
    fn generic_records_need_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.csv");
        let mut sink = sink_at(&path, json!({})).unwrap();
        let err = sink
            .write(&testing::json_batch(&[json!({"a": 1})]))
            .unwrap_err();
        assert!(
            matches!(&err, WriteError::Fatal(m) if m.contains("columns")),
            "{err:?}"
        );
        let mut sink = sink_at(&path, json!({"columns": ["a", "b.c"]})).unwrap();
        sink.write(&testing::json_batch(&[json!({"a": 1, "b": {"c": "x\ny"}})]))
            .unwrap();
        assert_eq!(read(&path), "a,b.c\n1,\"x\ny\"\n");
    }

    #[test]
    fn a_record_that_is_not_json_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.csv");
        let mut sink = sink_at(&path, json!({"columns": ["a"], "header": false})).unwrap();
        let batch = testing::batch(
            Encoding::Json,
            Schema::Generic,
            vec![
                b"{\"a\":1}".to_vec(),
                b"{nope".to_vec(),
                b"{\"a\":3}".to_vec(),
            ],
        );
        let Err(WriteError::Partial(failed)) = sink.write(&batch) else {
            panic!("expected partial")
        };
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].index, failed[0].retryable), (1, false));
        assert_eq!(read(&path), "1\n3\n");
    }

    #[test]
    fn a_torn_last_row_is_cut_off_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "a\n\"x\ny\"\n\"torn\nstill torn").unwrap();
        let mut sink = sink_at(&path, json!({"columns": ["a"]})).unwrap();
        assert!(testing::logs()
            .iter()
            .any(|(_, l)| l.contains("partial row")));
        sink.write(&testing::json_batch(&[json!({"a": "z"})]))
            .unwrap();
        assert_eq!(read(&path), "a\n\"x\ny\"\nz\n");
    }

    #[test]
    fn config_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        for (extra, needle) in [
            (json!({"delimiter": ",,"}), "delimiter"),
            (json!({"delimiter": "\""}), "delimiter"),
            (json!({"delimiter": "é"}), "delimiter"),
            (json!({"columns": [1]}), "columns[0]"),
            (json!({"colums": ["a"]}), "unknown field `colums`"),
            (json!({"header": "yes"}), "invalid type"),
        ] {
            let e = sink_at(&path, extra.clone()).err().unwrap();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let e = CsvSink::init(Config::new("")).err().unwrap();
        assert!(e.to_string().contains("missing field `path`"), "{e}");
        let missing = dir.path().join("no/such/dir/x.csv");
        let e = sink_at(&missing, json!({})).err().unwrap();
        assert!(e.to_string().contains("path:"), "{e}");
        let big = dir.path().join("big.csv");
        let mut open = vec![b'"'];
        open.resize(MAX_TORN_ROW as usize + 2, b'x');
        std::fs::write(&big, &open).unwrap();
        let e = sink_at(&big, json!({})).err().unwrap();
        assert!(e.to_string().contains("not a complete CSV row"), "{e}");
        assert_eq!(std::fs::metadata(&big).unwrap().len(), open.len() as u64);
    }

    #[test]
    fn refuses_msgpack_and_describes_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        let mut sink = sink_at(&path, json!({})).unwrap();
        let batch = testing::iam_batch(&[IamRecord::default()]);
        assert!(matches!(sink.write(&batch), Err(WriteError::Fatal(_))));
        assert_eq!(read(&path), "");
        assert_eq!(CsvSink::info().name, "csv");
        assert_eq!(CsvSink::info().accepts, Encoding::Json);
    }
}
