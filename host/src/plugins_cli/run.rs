//! `pumphouse plugins test`: runs a plugin on sample records without Redis
//! and reports what it did with each batch, for plugin authors and their
//! CI. Records are decoded and encoded exactly as the daemon does
//! (`batch`), and the plugin runs in the same runtime and
//! sandbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{Batch, Form};
use crate::config::{DirConfig, SandboxConfig};
use crate::record::{self, Schema};
use crate::runtime::bindings::{self as wit, Verdict, WriteError};
use crate::runtime::{
    encoding_name, CallError, Instance, Kind, LoadError, Plugin, Runtime, Sandbox, SetupError,
};
use crate::sandbox::OutboundRule;

/// The records shown for a `replace` verdict; the rest are counted.
const SHOW_REPLACED: usize = 5;

/// Why a test run could not happen at all (a failing plugin is an
/// [`Outcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("--config is not a JSON object: {0}")]
    Config(String),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Load(#[from] LoadError),
    /// `source` already says "init failed".
    #[error("plugin {path}: {source}")]
    Init { path: PathBuf, source: CallError },
    #[error("sandbox: {0}")]
    Sandbox(String),
}

/// The sandbox options of `plugins test`, as on its command line.
#[derive(Debug, Clone, Default)]
pub struct SandboxArgs {
    /// `HOST:GUEST` or `HOST:GUEST:ro`.
    pub dirs: Vec<String>,
    pub env: Vec<String>,
    pub allowed_outbound_hosts: Vec<String>,
    pub allow_private_networks: bool,
    pub timeout: std::time::Duration,
}

impl SandboxArgs {
    /// The sandbox a pump with these settings would give the plugin.
    pub fn sandbox(&self) -> Result<Sandbox, TestError> {
        let mut dirs = Vec::new();
        for d in &self.dirs {
            let (spec, read_only) = match d.strip_suffix(":ro") {
                Some(s) => (s, true),
                None => (d.as_str(), false),
            };
            let Some((host, guest)) = spec
                .rsplit_once(':')
                .filter(|(h, g)| !h.is_empty() && g.starts_with('/'))
            else {
                return Err(TestError::Sandbox(format!(
                    "--dir {d:?}: expected HOST:GUEST or HOST:GUEST:ro, with GUEST absolute (e.g. ./out:/out)"
                )));
            };
            dirs.push(DirConfig {
                host: PathBuf::from(host),
                guest: guest.to_string(),
                read_only,
            });
        }
        let allowed_outbound_hosts = self
            .allowed_outbound_hosts
            .iter()
            .map(|e| OutboundRule::parse(e))
            .collect::<Result<_, _>>()
            .map_err(|e| TestError::Sandbox(e.to_string()))?;
        let config = SandboxConfig {
            dirs,
            env: self.env.clone(),
            allowed_outbound_hosts,
            allow_private_networks: self.allow_private_networks,
            ..Default::default()
        };
        Ok(Sandbox::for_pump(
            "plugins-test",
            &config,
            self.timeout,
            Default::default(),
        ))
    }
}

/// What to run.
pub struct TestRun {
    pub plugin: PathBuf,
    pub input: PathBuf,
    /// The pump `config` table as JSON.
    pub config: String,
    pub schema: Schema,
    pub batch_size: usize,
    pub sandbox: Sandbox,
}

/// What happened: one line per batch (and notes), and whether any batch
/// failed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub lines: Vec<String>,
    pub failed: bool,
}

/// Reads `.msgpack` (concatenated MessagePack records) or `.jsonl` (one
/// JSON object per line). A JSON line is either a record in the JSON form
/// pumphouse itself writes (the `file` sink, `produce --to-file`), turned
/// back into `schema`'s wire form, or a dead-letter entry as `dlq list
/// --json` prints it, whose record is used.
pub fn read_records(path: &Path, schema: Schema) -> Result<Vec<Vec<u8>>, TestError> {
    let bytes = std::fs::read(path).map_err(|source| TestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let input = |message: String| TestError::Input {
        path: path.to_path_buf(),
        message,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("msgpack") | Some("mp") => split_msgpack(&bytes).map_err(input),
        Some("jsonl") | Some("ndjson") => {
            let text = std::str::from_utf8(&bytes).map_err(|e| input(format!("not UTF-8: {e}")))?;
            let mut out = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| input(format!("line {}: not JSON: {e}", i + 1)))?;
                let record = match dead_letter(&v) {
                    Some(entry) => entry_record(schema, &entry),
                    None => json_to_wire(schema, v),
                };
                out.push(record.map_err(|e| input(format!("line {}: {e}", i + 1)))?);
            }
            Ok(out)
        }
        _ => Err(input(
            "use a .msgpack file (concatenated MessagePack records) or a .jsonl file (one JSON object per line)".into(),
        )),
    }
}

/// The dead-letter entry a JSON line is, if it is one: an object with
/// exactly the entry's fields.
fn dead_letter(v: &serde_json::Value) -> Option<crate::dlq::Entry> {
    let obj = v.as_object()?;
    let fields = ["time", "source", "pump", "reason", "encoding", "payload"];
    let is_entry = obj.contains_key("payload")
        && obj.contains_key("encoding")
        && obj.keys().all(|k| fields.contains(&k.as_str()));
    is_entry.then(|| serde_json::from_value(v.clone()).ok())?
}

/// The record a dead-letter entry holds, as MessagePack.
fn entry_record(schema: Schema, e: &crate::dlq::Entry) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&e.payload)
        .map_err(|err| format!("dead-letter entry: payload is not base64: {err}"))?;
    if bytes.is_empty() {
        return Err(format!("dead-letter entry ({}) holds no record", e.reason));
    }
    match e.encoding.as_str() {
        "json" => {
            let v = serde_json::from_slice(&bytes)
                .map_err(|err| format!("dead-letter entry: payload is not JSON: {err}"))?;
            json_to_wire(schema, v)
        }
        _ => Ok(bytes),
    }
}

/// A record in pumphouse's JSON form as the producers would have written
/// it: the schema's time fields, which the JSON form writes as RFC 3339
/// strings (or, outside years 0000–9999, a string of unix seconds), go
/// back to their wire encoding; everything else maps value for value.
pub fn json_to_wire(schema: Schema, v: serde_json::Value) -> Result<Vec<u8>, String> {
    let serde_json::Value::Object(map) = v else {
        return Err("expected a JSON object (one record per line)".into());
    };
    let mut fields = Vec::with_capacity(map.len());
    for (k, v) in map {
        let time = match (&v, schema.time_fields().contains(&k.as_str())) {
            (serde_json::Value::String(s), true) => parse_json_time(s),
            _ => None,
        };
        // A string that is no time stays a string: the decoder then names
        // the field, as the daemon would.
        let value = match time {
            Some((secs, nanos)) => wire_time(schema, &k, secs, nanos),
            None => to_msgpack(v),
        };
        fields.push((rmpv::Value::String(k.into()), value));
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &rmpv::Value::Map(fields)).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `2026-01-02T03:04:05.5Z` or `"253402300800"` → (seconds, nanoseconds).
fn parse_json_time(s: &str) -> Option<(i64, u32)> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some((secs, 0));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp(), t.nanosecond()))
}

/// A time in the encoding the producers use: iam's `TimeStamp` is int64
/// seconds and its `ExpireAt` the timestamp extension; Tyk writes
/// `[seconds, nanoseconds]`.
fn wire_time(schema: Schema, field: &str, secs: i64, nanos: u32) -> rmpv::Value {
    match (schema, field) {
        (Schema::Iam, "TimeStamp") => rmpv::Value::from(secs),
        (Schema::Iam, _) => {
            // The 12-byte form holds any seconds (MessagePack spec).
            let mut data = nanos.to_be_bytes().to_vec();
            data.extend_from_slice(&secs.to_be_bytes());
            rmpv::Value::Ext(-1, data)
        }
        _ => rmpv::Value::Array(vec![secs.into(), nanos.into()]),
    }
}

fn to_msgpack(v: serde_json::Value) -> rmpv::Value {
    use serde_json::Value as J;
    match v {
        J::Null => rmpv::Value::Nil,
        J::Bool(b) => b.into(),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into(),
            (None, Some(i)) => i.into(),
            _ => n.as_f64().unwrap_or(f64::NAN).into(),
        },
        J::String(s) => s.into(),
        J::Array(a) => rmpv::Value::Array(a.into_iter().map(to_msgpack).collect()),
        J::Object(m) => rmpv::Value::Map(
            m.into_iter()
                .map(|(k, v)| (rmpv::Value::String(k.into()), to_msgpack(v)))
                .collect(),
        ),
    }
}

/// Splits concatenated MessagePack values.
fn split_msgpack(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let before = rest.len();
        let at = bytes.len() - before;
        rmpv::decode::read_value(&mut rest)
            .map_err(|e| format!("record {} at byte {at}: not MessagePack: {e}", out.len()))?;
        out.push(bytes[at..at + (before - rest.len())].to_vec());
    }
    Ok(out)
}

/// Runs the plugin over the records in batches of `batch_size`.
pub async fn run(t: &TestRun) -> Result<Outcome, TestError> {
    let records = read_records(&t.input, t.schema)?;
    if !serde_json::from_str::<serde_json::Value>(&t.config).is_ok_and(|v| v.is_object()) {
        return Err(TestError::Config(t.config.clone()));
    }
    let runtime = Runtime::new(true)?;
    let plugin = runtime.load(&t.plugin).await?;
    let mut out = Outcome::default();
    out.lines.push(format!(
        "{} {} {} ({}), {} records in batches of {}",
        plugin.kind,
        plugin.info.name,
        plugin.info.version,
        encoding_name(plugin.info.accepts),
        records.len(),
        t.batch_size
    ));
    let mut instance = Some(start(&plugin, t).await?);
    let key: Arc<str> = Arc::from("plugins-test");
    for (n, chunk) in records.chunks(t.batch_size.max(1)).enumerate() {
        let first = n * t.batch_size.max(1);
        let label = format!(
            "batch {} (records {}-{})",
            n + 1,
            first,
            first + chunk.len() - 1
        );
        let (batch, bad) = Batch::decode(
            key.clone(),
            None,
            t.schema,
            chunk.to_vec(),
            Vec::new(),
            now_ms(),
        );
        if let Some(first) = bad.first() {
            // The host would dead-letter them; here they mean the samples
            // do not match --format, so the run fails.
            out.lines.push(format!(
                "{label}: {} of {} records are undecodable as {} records (check --format): {}",
                bad.len(),
                chunk.len(),
                t.schema.name(),
                first.reason.trim_start_matches("undecodable: ")
            ));
            out.failed = true;
        }
        let wb = std::sync::Arc::new(to_wit(&batch, plugin.info.accepts));
        if wb.events.is_empty() {
            continue;
        }
        let mut inst = match instance.take() {
            Some(i) => i,
            None => start(&plugin, t).await?,
        };
        let (text, ok, poisoned) = match plugin.kind {
            Kind::Sink => describe_write(inst.write(wb.clone()).await, wb.events.len()),
            Kind::Filter => describe_process(inst.process(wb.clone()).await, &wb),
        };
        out.lines.push(format!("{label}: {text}"));
        out.failed |= !ok;
        // Like the host: a trapped instance is dropped and the next batch
        // gets a fresh one.
        if !poisoned {
            instance = Some(inst);
        }
    }
    Ok(out)
}

async fn start(plugin: &Plugin, t: &TestRun) -> Result<Instance, TestError> {
    plugin
        .start("plugins-test", &t.sandbox, &t.config)
        .await
        .map_err(|source| TestError::Init {
            path: t.plugin.clone(),
            source,
        })
}

fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// The batch as the plugin would receive it (records that cannot be
/// encoded left out).
fn to_wit(batch: &Batch, encoding: wit::Encoding) -> wit::Batch {
    batch
        .form(Form {
            encoding,
            omit_detail: false,
        })
        .whole
        .clone()
}

/// `(report, ok, instance poisoned)` for a sink's answer.
fn describe_write(r: Result<Result<(), WriteError>, CallError>, n: usize) -> (String, bool, bool) {
    match r {
        Ok(Ok(())) => (format!("ok ({n} records written)"), true, false),
        Ok(Err(WriteError::Retry(m))) => (format!("retry: {m}"), false, false),
        Ok(Err(WriteError::InvalidBatch(m))) => (format!("invalid-batch: {m}"), false, false),
        Ok(Err(WriteError::TooLarge)) => ("too-large".into(), false, false),
        Ok(Err(WriteError::Fatal(m))) => (format!("fatal: {m}"), false, false),
        Ok(Err(WriteError::Partial(failed))) if failed.is_empty() => (
            format!("ok (partial listing no failures; {n} records written)"),
            true,
            false,
        ),
        Ok(Err(WriteError::Partial(failed))) => {
            let mut parts = Vec::new();
            let mut malformed = false;
            for f in &failed {
                malformed |= f.index as usize >= n;
                parts.push(format!(
                    "#{} {} ({})",
                    f.index,
                    if f.retryable { "retry" } else { "reject" },
                    f.reason
                ));
            }
            let what = if malformed {
                format!(
                    "malformed partial (indices must be below {n}; the host retries the batch): "
                )
            } else {
                format!("partial, {} of {n} failed: ", failed.len())
            };
            (what + &parts.join(", "), false, false)
        }
        Err(e) => (format!("{}: {e}", e.kind()), false, true),
    }
}

/// `(report, ok, instance poisoned)` for a filter's answer.
fn describe_process(
    r: Result<Result<Verdict, String>, CallError>,
    batch: &wit::Batch,
) -> (String, bool, bool) {
    let n = batch.events.len();
    match r {
        Ok(Ok(Verdict::KeepAll)) => (format!("keep-all ({n} of {n})"), true, false),
        Ok(Ok(Verdict::Keep(idx))) => {
            let sorted = idx.windows(2).all(|w| w[0] < w[1]);
            let in_range = idx.last().is_none_or(|&l| (l as usize) < n);
            if sorted && in_range {
                (format!("keep {idx:?} ({} of {n})", idx.len()), true, false)
            } else {
                (
                    format!("malformed keep {idx:?}: indices must be ascending and below {n} (the host retries the batch)"),
                    false,
                    false,
                )
            }
        }
        Ok(Ok(Verdict::Replace(b))) => {
            let mut shown = Vec::new();
            for e in &b.events {
                let range = e.offset as usize..(e.offset as usize).saturating_add(e.len as usize);
                let Some(bytes) = b.payloads.get(range) else {
                    return (
                        format!(
                            "malformed replace: event at {}+{} lies outside the {} payload bytes",
                            e.offset,
                            e.len,
                            b.payloads.len()
                        ),
                        false,
                        false,
                    );
                };
                if shown.len() < SHOW_REPLACED {
                    shown.push(render_payload(b.schema, b.encoding, bytes));
                }
            }
            let more = b.events.len().saturating_sub(SHOW_REPLACED);
            let mut text = format!(
                "replace with {} records ({})",
                b.events.len(),
                encoding_name(b.encoding)
            );
            for s in shown {
                text.push_str("\n    ");
                text.push_str(&s);
            }
            if more > 0 {
                text.push_str(&format!("\n    … {more} more"));
            }
            (text, true, false)
        }
        Ok(Err(msg)) => (format!("error: {msg}"), false, false),
        Err(e) => (format!("{}: {e}", e.kind()), false, true),
    }
}

fn render_payload(schema: wit::Schema, encoding: wit::Encoding, bytes: &[u8]) -> String {
    match encoding {
        wit::Encoding::Json => String::from_utf8_lossy(bytes).into_owned(),
        wit::Encoding::Msgpack => {
            let mut out = Vec::new();
            match record::write_json(schema.into(), bytes, &[], &mut out) {
                Ok(()) => String::from_utf8_lossy(&out).into_owned(),
                Err(e) => format!("(not a MessagePack map: {e})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_arguments_parse_or_say_how() {
        let args = |d: &str| SandboxArgs {
            dirs: vec![d.to_string()],
            timeout: std::time::Duration::from_secs(1),
            ..Default::default()
        };
        let s = args("./out:/out:ro").sandbox().unwrap();
        let dir = |host: &str, guest: &str, read_only| DirConfig {
            host: PathBuf::from(host),
            guest: guest.to_string(),
            read_only,
        };
        assert_eq!(s.dirs, vec![dir("./out", "/out", true)]);
        let s = args("/tmp/x:/data").sandbox().unwrap();
        assert_eq!(s.dirs, vec![dir("/tmp/x", "/data", false)]);
        let e = args("out").sandbox().unwrap_err().to_string();
        assert!(e.contains("HOST:GUEST"), "{e}");
        let bad_host = SandboxArgs {
            allowed_outbound_hosts: vec!["example.com".into()],
            ..args("/a:/b")
        };
        assert!(bad_host
            .sandbox()
            .unwrap_err()
            .to_string()
            .contains("scheme://"));
    }

    #[test]
    fn msgpack_input_splits_into_records() {
        let mut bytes = Vec::new();
        rmp_serde::encode::write_named(&mut bytes, &serde_json::json!({"a": 1})).unwrap();
        rmp_serde::encode::write_named(&mut bytes, &serde_json::json!({"b": [1, 2]})).unwrap();
        let recs = split_msgpack(&bytes).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs.concat(), bytes);
        let e = split_msgpack(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(e.contains("record 1"), "{e}");
    }

    #[test]
    fn jsonl_input_becomes_msgpack_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        std::fs::write(&p, "{\"Username\":\"a\"}\n\n{\"Username\":\"b\"}\n").unwrap();
        let recs = read_records(&p, Schema::Iam).unwrap();
        assert_eq!(recs.len(), 2);
        let m = record::decode(Schema::Iam, &recs[1]).unwrap();
        assert_eq!(m.username.as_deref(), Some("b"));
        std::fs::write(&p, "{\"a\":1}\nnot json\n").unwrap();
        let e = read_records(&p, Schema::Iam).unwrap_err().to_string();
        assert!(e.contains("r.jsonl") && e.contains("line 2"), "{e}");
        let txt = dir.path().join("r.txt");
        std::fs::write(&txt, "").unwrap();
        assert!(read_records(&txt, Schema::Iam)
            .unwrap_err()
            .to_string()
            .contains(".jsonl"));
    }

    #[test]
    fn pumphouse_json_goes_back_to_the_wire_form() {
        use crate::produce::{encode_iam, encode_tyk, Sampler};
        let mut sampler = Sampler::new(7);
        for (schema, wire) in [
            (Schema::Iam, encode_iam(&sampler.iam(3, 1_700_000_000))),
            (Schema::Tyk, encode_tyk(&sampler.tyk(4, 1_700_000_000))),
        ] {
            let mut json = Vec::new();
            record::write_json(schema, &wire, &[], &mut json).unwrap();
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let back = json_to_wire(schema, v).unwrap();
            assert_eq!(
                record::decode(schema, &back).unwrap().timestamp_ms,
                record::decode(schema, &wire).unwrap().timestamp_ms
            );
            // And its JSON is the JSON it came from.
            let mut again = Vec::new();
            record::write_json(schema, &back, &[], &mut again).unwrap();
            let again: serde_json::Value = serde_json::from_slice(&again).unwrap();
            assert_eq!(
                again,
                serde_json::from_slice::<serde_json::Value>(&json).unwrap()
            );
        }
        // A string that is no time is left for the decoder to name.
        let back = json_to_wire(Schema::Iam, serde_json::json!({"TimeStamp": "soon"})).unwrap();
        let e = record::decode(Schema::Iam, &back).unwrap_err().to_string();
        assert!(e.contains("TimeStamp"), "{e}");
    }

    #[test]
    fn dead_letter_lines_give_their_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Vec::new();
        rmp_serde::encode::write_named(&mut rec, &serde_json::json!({"Username": "x"})).unwrap();
        let entry = crate::dlq::Entry::new(
            "k",
            Some("p"),
            &crate::dlq::DeadRecord {
                bytes: rec.clone().into(),
                encoding: crate::runtime::bindings::Encoding::Msgpack,
                reason: "r".into(),
            },
        );
        let p = dir.path().join("dlq.jsonl");
        std::fs::write(&p, serde_json::to_string(&entry).unwrap() + "\n").unwrap();
        assert_eq!(read_records(&p, Schema::Iam).unwrap(), vec![rec]);
    }

    #[test]
    fn partial_answers_are_checked_against_the_batch() {
        let failed = |index| {
            Ok(Err(WriteError::Partial(vec![wit::FailedEvent {
                index,
                reason: "x".into(),
                retryable: true,
            }])))
        };
        let (text, ok, _) = describe_write(failed(1), 2);
        assert!(!ok && text.starts_with("partial, 1 of 2"), "{text}");
        let (text, ok, _) = describe_write(failed(9), 2);
        assert!(!ok && text.starts_with("malformed partial"), "{text}");
        let (_, ok, poisoned) = describe_write(Err(CallError::Trap("boom".into())), 2);
        assert!(!ok && poisoned);
    }
}
