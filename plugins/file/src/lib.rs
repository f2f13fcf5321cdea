//! `file`: a pumphouse sink that appends every record to a file as one
//! JSON line. See README.md.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};

use pumphouse_sdk::{Batch, Config, Encoding, Error, PluginInfo, Sink, WriteError};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct FileConfig {
    /// The file to append to; the pump's sandbox must preopen its folder.
    path: String,
    /// `sync_data` after every batch.
    #[serde(default)]
    fsync: bool,
}

/// Appends each record's JSON payload plus `\n`, one positional write per
/// batch at the end of the file.
pub struct FileSink {
    path: String,
    fsync: bool,
    file: File,
    /// Where a batch whose write failed started: its retry goes there,
    /// over its own partial copy.
    failed_at: Option<u64>,
    buf: Vec<u8>,
}

impl Sink for FileSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "file".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let FileConfig { path, fsync } = config.parse()?;
        // Not `append`: an appending file is written through a WASI output
        // stream in 4 KiB calls, each a thread hand-off in the host; one
        // positional write per batch is a single call.
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::fatal(format!("cannot open {path} for appending: {e}")))?;
        end_torn_line(&mut file)
            .map_err(|e| Error::fatal(format!("cannot check the end of {path}: {e}")))?;
        pumphouse_sdk::debug!("appending to {path} (fsync: {fsync})");
        Ok(FileSink {
            path,
            fsync,
            file,
            failed_at: None,
            buf: Vec::new(),
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "file sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        self.buf.clear();
        self.buf.reserve(batch.payloads.len() + batch.len());
        for record in batch.records() {
            self.buf.extend_from_slice(record.payload());
            self.buf.push(b'\n');
        }
        let retry = |e: std::io::Error| WriteError::Retry(format!("{}: {e}", self.path));
        // The end is read for every batch, not kept: after a reload the
        // pump's previous instance may have written more since this one
        // started (the host runs them one after the other).
        let at = match self.failed_at.take() {
            Some(at) => at,
            None => self.file.metadata().map_err(retry)?.len(),
        };
        if let Err(e) = write_all_at(&self.file, &self.buf, at) {
            self.failed_at = Some(at);
            return Err(retry(e));
        }
        if self.fsync {
            self.file.sync_data().map_err(retry)?;
        }
        Ok(())
    }
}

/// A process killed mid-append can leave a partial last line. Ending it
/// keeps the next record on a line of its own (the torn record itself is
/// re-delivered, as its batch was never acknowledged).
fn end_torn_line(file: &mut File) -> io::Result<()> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(());
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8];
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        pumphouse_sdk::warn!("the file ended in a partial line (an interrupted write); ending it");
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes all of `buf` at `offset`.
fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match write_at(file, buf, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// `pwrite`: std's positional write for WASI is not stable yet, so the
/// plugin calls wasi-libc's, which is one `descriptor.write` on the host.
#[cfg(target_os = "wasi")]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::FileTooLarge)?;
    // SAFETY: `buf` is valid for `buf.len()` bytes and the fd is open for
    // as long as `file` is borrowed.
    let n = unsafe { libc::pwrite(file.as_raw_fd(), buf.as_ptr().cast(), buf.len(), offset) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

#[cfg(not(target_os = "wasi"))]
fn write_at(file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::write_at(file, buf, offset)
}

pumphouse_sdk::export_sink!(FileSink);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::{testing, Schema};

    fn config(path: &std::path::Path, fsync: bool) -> Config {
        Config::from(json!({ "path": path, "fsync": fsync }))
    }

    #[test]
    fn appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::init(config(&path, false)).unwrap();
        let payloads = vec![
            br#"{"Username":"alice","TimeStamp":"2026-11-21T05:47:41Z"}"#.to_vec(),
            br#"{ "spaced" :  true }"#.to_vec(),
        ];
        let batch = testing::batch(Encoding::Json, Schema::Iam, payloads);
        sink.write(&batch).unwrap();
        sink.write(&testing::json_batch(&[json!({"n": 3})]))
            .unwrap();
        sink.write(&testing::json_batch(&[])).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"Username\":\"alice\",\"TimeStamp\":\"2026-11-21T05:47:41Z\"}\n\
             { \"spaced\" :  true }\n\
             {\"n\":3}\n"
        );
    }

    #[test]
    fn a_torn_last_line_is_ended_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "{\"whole\":1}\n{\"tor").unwrap();
        let mut sink = FileSink::init(config(&path, false)).unwrap();
        sink.write(&testing::json_batch(&[json!(2)])).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"whole\":1}\n{\"tor\n2\n"
        );
    }

    #[test]
    fn keeps_existing_content_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut sink = FileSink::init(config(&path, true)).unwrap();
        sink.write(&testing::json_batch(&[json!(1), json!(2)]))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old\n1\n2\n");
    }

    #[test]
    fn config_errors_name_the_problem() {
        let err = FileSink::init(Config::new("")).err().unwrap();
        assert!(err.to_string().contains("missing field `path`"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/out.jsonl");
        let err = FileSink::init(config(&missing, false)).err().unwrap();
        assert!(
            err.to_string().contains(&*missing.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn refuses_msgpack() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut sink = FileSink::init(config(&path, false)).unwrap();
        let batch = testing::msgpack_batch(Schema::Generic, &[json!({"a": 1})]);
        assert!(matches!(sink.write(&batch), Err(WriteError::Fatal(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn describes_itself() {
        let info = FileSink::info();
        assert_eq!(info.name, "file");
        assert_eq!(info.accepts, Encoding::Json);
    }
}
