//! `influxdb`: a pumphouse sink that writes records as points to InfluxDB
//! 1.x over `POST /write` in line protocol. See README.md.
//!
//! `line` builds points and `response` reads InfluxDB's answers; both are
//! pure. This file holds the configuration and the I/O.

mod line;
mod response;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use pumphouse_sdk::config::expand_env;
use pumphouse_sdk::http::percent_encode;
use pumphouse_sdk::http::Request;
use pumphouse_sdk::{
    Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Schema, Sink, WriteError,
};
use serde::Deserialize;

use line::{defaults, LineFormat, Point, Precision};
use response::{classify, Outcome};

/// Waits for InfluxDB's answer; the pump's `sandbox.http_timeout` caps it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InfluxConfig {
    /// e.g. `http://127.0.0.1:8086`.
    url: String,
    database: String,
    #[serde(default)]
    retention_policy: Option<String>,
    /// Defaults to the schema's name (`iam`, `tyk`).
    #[serde(default)]
    measurement: Option<String>,
    /// Tag key to source; defaults per schema.
    #[serde(default)]
    tags: Option<BTreeMap<String, String>>,
    /// Field key to source; defaults per schema.
    #[serde(default)]
    fields: Option<BTreeMap<String, String>>,
    #[serde(default = "default_timestamp")]
    timestamp: String,
    #[serde(default)]
    precision: Precision,
    #[serde(default)]
    id_tag: Option<String>,
    #[serde(default = "default_integers")]
    integers: bool,
    #[serde(default)]
    username: String,
    /// A literal, or `${NAME}` read from the sandbox's environment.
    #[serde(default)]
    password: String,
}

fn default_timestamp() -> String {
    "TimeStamp".into()
}

fn default_integers() -> bool {
    true
}

/// Writes each batch as one `/write` request.
pub struct InfluxSink {
    write_url: String,
    authorization: Option<String>,
    iam: LineFormat,
    tyk: LineFormat,
    /// Generic records have no defaults: an error until `fields` and
    /// `measurement` are set.
    generic: Result<LineFormat, String>,
}

impl Sink for InfluxSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "influxdb".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let c: InfluxConfig = config.parse()?;
        let fatal = |e: String| Error::fatal(format!("invalid config: {e}"));
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(fatal(format!("url: {:?} is not an http(s) URL", c.url)));
        }
        if c.database.is_empty() {
            return Err(fatal("database: empty".into()));
        }
        let password =
            expand_env("password", &c.password).map_err(|e| e.context("invalid config"))?;
        let iam = format_for(&c, Schema::Iam).map_err(fatal)?;
        let tyk = format_for(&c, Schema::Tyk).map_err(fatal)?;
        // Configured parts were checked above; what generic records lack
        // (measurement, fields) matters only if one arrives.
        let generic = format_for(&c, Schema::Generic);
        let authorization = (!c.username.is_empty()).then(|| {
            let pair = format!("{}:{password}", c.username);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        let mut write_url = format!(
            "{}/write?db={}&precision={}",
            c.url.trim_end_matches('/'),
            percent_encode(&c.database),
            c.precision.as_str()
        );
        if let Some(rp) = &c.retention_policy {
            write_url.push_str(&format!("&rp={}", percent_encode(rp)));
        }
        pumphouse_sdk::debug!("writing to database {} at {}", c.database, c.url);
        Ok(InfluxSink {
            write_url,
            authorization,
            iam,
            tyk,
            generic,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "influxdb sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        let format = match batch.schema {
            Schema::Iam => &self.iam,
            Schema::Tyk => &self.tyk,
            Schema::Generic => self
                .generic
                .as_ref()
                .map_err(|e| WriteError::Fatal(format!("generic records: {e}")))?,
        };
        let mut failed = Vec::new();
        let mut points = Vec::with_capacity(batch.len());
        let mut indices = Vec::with_capacity(batch.len());
        for record in batch.records() {
            match format.point(&record) {
                Ok(p) => {
                    points.push(p);
                    indices.push(record.index());
                }
                Err(reason) => failed.push(FailedEvent {
                    index: record.index(),
                    reason,
                    retryable: false,
                }),
            }
        }
        if !points.is_empty() {
            match self.send(&points)? {
                Outcome::Written => {}
                Outcome::Dropped(dropped) => {
                    failed.extend(dropped.into_iter().map(|(i, reason)| FailedEvent {
                        index: indices[i],
                        reason,
                        retryable: false,
                    }))
                }
                Outcome::Invalid(message) => return Err(WriteError::InvalidBatch(message)),
                Outcome::TooLarge(_) => return Err(WriteError::TooLarge),
                Outcome::Retry(message) => return Err(WriteError::Retry(message)),
                Outcome::Fatal(message) => return Err(WriteError::Fatal(message)),
            }
        }
        pumphouse_sdk::metrics::counter_add(
            "points_written",
            (batch.len() - failed.len()) as u64,
            &[],
        );
        if failed.is_empty() {
            return Ok(());
        }
        pumphouse_sdk::warn!(
            "{} of {} records rejected, first: {}",
            failed.len(),
            batch.len(),
            failed[0].reason
        );
        failed.sort_by_key(|f| f.index);
        Err(WriteError::Partial(failed))
    }
}

impl InfluxSink {
    fn send(&self, points: &[Point]) -> Result<Outcome, Error> {
        let mut body = Vec::with_capacity(points.iter().map(|p| p.line.len() + 1).sum());
        for p in points {
            body.extend_from_slice(p.line.as_bytes());
            body.push(b'\n');
        }
        let mut request = Request::post(&self.write_url)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body)
            .timeout(REQUEST_TIMEOUT);
        if let Some(auth) = &self.authorization {
            request = request.header("authorization", auth);
        }
        let response = request.send()?;
        Ok(classify(
            response.status(),
            &String::from_utf8_lossy(response.body()),
            points,
        ))
    }
}

/// The line format of `schema`: configured parts over the schema's
/// defaults.
fn format_for(c: &InfluxConfig, schema: Schema) -> Result<LineFormat, String> {
    let (default_measurement, default_tags, default_fields) =
        defaults(schema).unwrap_or(("", &[], &[]));
    let measurement = c.measurement.as_deref().unwrap_or(default_measurement);
    if measurement.is_empty() {
        return Err("measurement: required for generic records".into());
    }
    let pairs = |configured: &Option<BTreeMap<String, String>>, default: &[(&str, &str)]| {
        configured.as_ref().map_or_else(
            || {
                default
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            },
            |m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            },
        )
    };
    let tags = pairs(&c.tags, default_tags);
    let fields = pairs(&c.fields, default_fields);
    let format = LineFormat::new(
        measurement,
        tags.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        fields.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &c.timestamp,
        c.precision,
        c.integers,
    )?;
    match &c.id_tag {
        Some(key) => format.with_id_tag(key),
        None => Ok(format),
    }
}

pumphouse_sdk::export_sink!(InfluxSink);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::http::{HttpError, HttpErrorKind, Response};
    use pumphouse_sdk::serde_json::{json, Value};
    use pumphouse_sdk::{testing, IamRecord, Timestamp, TykRecord};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn sink(extra: Value) -> InfluxSink {
        InfluxSink::init(testing::config(
            json!({"url": "http://influx.test:8086/", "database": "db 1"}),
            extra,
        ))
        .unwrap()
    }

    /// The requests a mock saw: URL, authorization header and body.
    type Seen = Rc<RefCell<Vec<(String, Option<String>, String)>>>;

    /// What a mock answers, and the check on the error it should give.
    type Case = (u16, &'static str, fn(&WriteError) -> bool);

    /// Records `(url, authorization, body)` and answers `status`/`body`.
    fn serve(status: u16, body: &'static str) -> Seen {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        testing::mock_http(move |req| {
            log.borrow_mut().push((
                req.url().to_owned(),
                req.header_value("authorization").map(str::to_owned),
                String::from_utf8_lossy(req.body_bytes()).into_owned(),
            ));
            Ok(Response::new(status).with_body(body))
        });
        seen
    }

    fn iam(user: &str) -> IamRecord {
        IamRecord {
            timestamp: Timestamp::from_unix_seconds(1_795_240_061),
            username: user.into(),
            effect: "allow".into(),
            conclusion: "ok, \"fine\"".into(),
            request: "{}".into(),
            ..Default::default()
        }
    }

    #[test]
    fn writes_iam_points_with_defaults_and_auth() {
        std::env::set_var("PUMP_INFLUX_TEST_PW", "s3cret");
        let seen = serve(204, "");
        let mut s = sink(json!({
            "username": "pump",
            "password": "${PUMP_INFLUX_TEST_PW}",
            "retention_policy": "week",
            "id_tag": "_id",
        }));
        let batch = testing::json_batch_of(Schema::Iam, &[iam("a b"), iam("c")]);
        s.write(&batch).unwrap();
        let (url, auth, body) = seen.borrow()[0].clone();
        assert_eq!(
            url,
            "http://influx.test:8086/write?db=db%201&precision=ns&rp=week"
        );
        // base64("pump:s3cret")
        assert_eq!(auth.as_deref(), Some("Basic cHVtcDpzM2NyZXQ="));
        assert_eq!(
            body,
            "iam,_id=0,effect=allow,username=a\\ b conclusion=\"ok, \\\"fine\\\"\",request=\"{}\",policies=\"\",deciders=\"\" 1795240061000000000\n\
             iam,_id=1,effect=allow,username=c conclusion=\"ok, \\\"fine\\\"\",request=\"{}\",policies=\"\",deciders=\"\" 1795240061000000000\n"
        );
        assert_eq!(testing::counter("points_written", &[]), 2);
    }

    #[test]
    fn tyk_points_keep_nanoseconds_and_types() {
        let seen = serve(204, "");
        let rec = TykRecord {
            method: "GET".into(),
            response_code: 200,
            path: "/a b".into(),
            timestamp: Timestamp::new(1_795_240_061, 123_456_789),
            track_path: true,
            tags: vec!["x".into()],
            ..Default::default()
        };
        sink(json!({"fields": {"path": "Path", "tp": "TrackPath", "tags": "Tags", "rt": "RequestTime"}}))
            .write(&testing::json_batch_of(Schema::Tyk, &[rec]))
            .unwrap();
        assert_eq!(
            seen.borrow()[0].2,
            "tyk,method=GET,response_code=200 path=\"/a b\",rt=0i,tags=\"[\\\"x\\\"]\",tp=true 1795240061123456789\n"
        );
    }

    #[test]
    fn refused_points_become_partial_failures() {
        let seen = serve(
            400,
            r#"{"error":"partial write: field type conflict: input field \"n\" on measurement \"m\" is type string, already exists as type integer dropped=1"}"#,
        );
        let mut s = sink(json!({"measurement": "m", "fields": {"n": "n"}}));
        let batch = testing::json_batch(&[
            json!({"n": 1}),
            json!({"n": "one"}),
            json!({"other": 2}),
            json!({"n": 3}),
        ]);
        match s.write(&batch) {
            Err(WriteError::Partial(failed)) => {
                let got: Vec<_> = failed.iter().map(|f| (f.index, f.retryable)).collect();
                // Record 2 has no field and never left; record 1 was refused.
                assert_eq!(got, vec![(1, false), (2, false)]);
                assert!(
                    failed[0].reason.contains("type conflict"),
                    "{}",
                    failed[0].reason
                );
                assert!(
                    failed[1].reason.contains("a point needs one"),
                    "{}",
                    failed[1].reason
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.borrow()[0].2.lines().count(), 3);
    }

    #[test]
    fn answers_map_onto_write_errors() {
        let batch = testing::json_batch_of(Schema::Iam, &[iam("a")]);
        let cases: Vec<Case> = vec![
            (400, r#"{"error":"field type conflict"}"#, |e| {
                matches!(e, WriteError::InvalidBatch(_))
            }),
            (404, r#"{"error":"database not found: \"x\""}"#, |e| {
                matches!(e, WriteError::Fatal(_))
            }),
            (401, r#"{"error":"authorization failed"}"#, |e| {
                matches!(e, WriteError::Fatal(_))
            }),
            (500, r#"{"error":"timeout"}"#, |e| {
                matches!(e, WriteError::Retry(_))
            }),
            (413, "", |e| matches!(e, WriteError::TooLarge)),
        ];
        for (status, body, expected) in cases {
            serve(status, body);
            let err = sink(json!({})).write(&batch).unwrap_err();
            assert!(expected(&err), "{status} {body} gave {err:?}");
        }
        testing::mock_http(|req| Err(HttpError::new(HttpErrorKind::Timeout, req, "")));
        assert!(matches!(
            sink(json!({})).write(&batch),
            Err(WriteError::Retry(_))
        ));
        testing::mock_http(|req| Err(HttpError::new(HttpErrorKind::Denied, req, "")));
        assert!(matches!(
            sink(json!({})).write(&batch),
            Err(WriteError::Fatal(_))
        ));
    }

    #[test]
    fn generic_records_need_a_measurement_and_fields() {
        serve(204, "");
        let batch = testing::json_batch(&[json!({"a": 1})]);
        assert!(matches!(
            sink(json!({})).write(&batch),
            Err(WriteError::Fatal(_))
        ));
        assert!(matches!(
            sink(json!({})).write(&testing::iam_batch(&[iam("a")])),
            Err(WriteError::Fatal(_))
        ));
        sink(json!({"measurement": "g", "fields": {"a": "a"}}))
            .write(&batch)
            .unwrap();
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |c: Value| InfluxSink::init(Config::from(c)).err().unwrap().to_string();
        assert!(err(json!({"url": "http://h"})).contains("missing field `database`"));
        assert!(err(json!({"url": "h", "database": "d"})).contains("url:"));
        assert!(err(json!({"url": "http://h", "database": "d", "tagz": {}}))
            .contains("unknown field `tagz`"));
        assert!(
            err(json!({"url": "http://h", "database": "d", "precision": "m"}))
                .contains("unknown variant `m`")
        );
        assert!(
            err(json!({"url": "http://h", "database": "d", "tags": {"t": "@x"}}))
                .contains("tags.t")
        );
        assert!(
            err(json!({"url": "http://h", "database": "d", "measurement": "m\\"}))
                .contains("measurement")
        );
        assert!(
            err(json!({"url": "http://h", "database": "d", "id_tag": "a=\n"})).contains("id_tag")
        );
        let e =
            err(json!({"url": "http://h", "database": "d", "password": "${PUMP_INFLUX_UNSET}"}));
        assert!(
            e.contains("password") && e.contains("PUMP_INFLUX_UNSET") && e.contains("sandbox.env"),
            "{e}"
        );
    }

    #[test]
    fn describes_itself() {
        let info = InfluxSink::info();
        assert_eq!(info.name, "influxdb");
        assert_eq!(info.accepts, Encoding::Json);
    }
}
