//! `clickhouse`: a pumphouse sink that inserts records into a ClickHouse
//! table with `INSERT ... FORMAT JSONEachRow` over the HTTP interface.
//! See README.md.
//!
//! `rows` turns records into JSON lines, `types` says what each column can
//! hold and `response` reads ClickHouse's answers; all are pure. This file
//! holds the configuration and the I/O.

mod response;
mod rows;
mod types;

use std::collections::BTreeMap;
use std::time::Duration;

use pumphouse_sdk::config::expand_env;
use pumphouse_sdk::http::percent_encode;
use pumphouse_sdk::http::Request;
use pumphouse_sdk::{
    Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Schema, Sink, WriteError,
};
use serde::Deserialize;

use response::{classify, Outcome};
use rows::{default_columns, RowFormat, TimeFormat};
use types::{parse_describe, Types};

/// How many rows one batch may shed one by one (ClickHouse names the bad
/// row) before the plugin gives up and lets the host bisect.
const MAX_DROPPED_ROWS: usize = 16;

/// Waits for ClickHouse's answer; the pump's `sandbox.http_timeout` caps it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClickHouseConfig {
    /// The HTTP interface, e.g. `http://127.0.0.1:8123`.
    url: String,
    #[serde(default = "default_database")]
    database: String,
    table: String,
    #[serde(default = "default_user")]
    user: String,
    /// A literal, or `${NAME}` read from the sandbox's environment.
    #[serde(default)]
    password: String,
    /// Column name to source; defaults per schema.
    #[serde(default)]
    columns: Option<BTreeMap<String, String>>,
    #[serde(default)]
    timestamp: TimeFormat,
    #[serde(default = "default_time_fields")]
    time_fields: Vec<String>,
    #[serde(default)]
    skip_unknown_fields: bool,
}

fn default_database() -> String {
    "default".into()
}

fn default_user() -> String {
    "default".into()
}

fn default_time_fields() -> Vec<String> {
    vec!["TimeStamp".into(), "ExpireAt".into()]
}

/// Inserts each batch as one `INSERT`, which ClickHouse applies whole or
/// not at all (batches are far below `max_insert_block_size`).
pub struct ClickHouseSink {
    insert_url: String,
    describe_url: String,
    /// The table's column types, asked once before the first insert.
    types: Option<Types>,
    user: String,
    password: String,
    /// From `columns`, for every schema.
    configured: Option<RowFormat>,
    iam: RowFormat,
    tyk: RowFormat,
}

impl Sink for ClickHouseSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "clickhouse".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let c: ClickHouseConfig = config.parse()?;
        let fatal = |e: String| Error::fatal(format!("invalid config: {e}"));
        if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
            return Err(fatal(format!("url: {:?} is not an http(s) URL", c.url)));
        }
        if c.table.is_empty() {
            return Err(fatal("table: empty".into()));
        }
        if c.database.is_empty() {
            return Err(fatal("database: empty".into()));
        }
        let password =
            expand_env("password", &c.password).map_err(|e| e.context("invalid config"))?;
        let format = |pairs: Vec<(&str, &str)>| {
            RowFormat::new(pairs, &c.time_fields, c.timestamp).map_err(fatal)
        };
        let configured = match &c.columns {
            Some(cols) => Some(format(
                cols.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            )?),
            None => None,
        };
        let defaults = |schema| default_columns(schema).unwrap_or_default().to_vec();
        let iam = format(defaults(Schema::Iam))?;
        let tyk = format(defaults(Schema::Tyk))?;
        let insert_url = insert_url(&c);
        let describe_url = describe_url(&c);
        pumphouse_sdk::debug!("inserting into {}.{} at {}", c.database, c.table, c.url);
        Ok(ClickHouseSink {
            insert_url,
            describe_url,
            types: None,
            user: c.user,
            password,
            configured,
            iam,
            tyk,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "clickhouse sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        if self.types.is_none() {
            self.types = Some(self.describe()?);
        }
        let types = self.types.as_ref().expect("described above");
        let format = match (&self.configured, batch.schema) {
            (Some(f), _) => f,
            (None, Schema::Iam) => &self.iam,
            (None, Schema::Tyk) => &self.tyk,
            (None, Schema::Generic) => {
                return Err(WriteError::Fatal(
                    "generic records have no default columns: set `columns` in the config".into(),
                ))
            }
        };
        let mut failed = Vec::new();
        let mut rows = Vec::with_capacity(batch.len());
        for record in batch.records() {
            match format.row(&record, types) {
                Ok(line) => rows.push((record.index(), line)),
                Err(reason) => failed.push(FailedEvent {
                    index: record.index(),
                    reason,
                    retryable: false,
                }),
            }
        }
        let mut dropped = 0;
        while !rows.is_empty() {
            match self.insert(&rows)? {
                Outcome::Inserted => break,
                Outcome::BadRow { row, message }
                    if row <= rows.len() && dropped < MAX_DROPPED_ROWS =>
                {
                    // Nothing went in: drop the row ClickHouse named and
                    // insert the rest again, saving the host a bisection.
                    let (index, _) = rows.remove(row - 1);
                    failed.push(FailedEvent {
                        index,
                        reason: message,
                        retryable: false,
                    });
                    dropped += 1;
                }
                Outcome::BadRow { message, .. } | Outcome::Invalid(message) => {
                    return Err(WriteError::InvalidBatch(message))
                }
                Outcome::TooLarge(_) => return Err(WriteError::TooLarge),
                Outcome::Retry(message) => return Err(WriteError::Retry(message)),
                Outcome::Fatal(message) => return Err(WriteError::Fatal(message)),
            }
        }
        pumphouse_sdk::metrics::counter_add("rows_inserted", rows.len() as u64, &[]);
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

impl ClickHouseSink {
    /// The table's column types (`DESCRIBE TABLE`), so that a value a
    /// column cannot hold is refused instead of stored wrong.
    fn describe(&self) -> Result<Types, WriteError> {
        let mut request = Request::get(&self.describe_url)
            .header("x-clickhouse-user", &self.user)
            .timeout(REQUEST_TIMEOUT);
        if !self.password.is_empty() {
            request = request.header("x-clickhouse-key", &self.password);
        }
        let response = request.send()?;
        let body = String::from_utf8_lossy(response.body());
        match classify(response.status(), &body) {
            Outcome::Inserted => parse_describe(&body).map_err(WriteError::Retry),
            Outcome::Fatal(m) => Err(WriteError::Fatal(format!("DESCRIBE TABLE: {m}"))),
            Outcome::BadRow { message: m, .. }
            | Outcome::Invalid(m)
            | Outcome::TooLarge(m)
            | Outcome::Retry(m) => Err(WriteError::Retry(format!("DESCRIBE TABLE: {m}"))),
        }
    }

    /// One `INSERT` of `rows`; transport failures come back as errors
    /// (`retry`, or `fatal` for a denied destination).
    fn insert(&self, rows: &[(u32, String)]) -> Result<Outcome, Error> {
        let mut body = Vec::with_capacity(rows.iter().map(|(_, l)| l.len() + 1).sum());
        for (_, line) in rows {
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
        }
        let mut request = Request::post(&self.insert_url)
            .header("x-clickhouse-user", &self.user)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .timeout(REQUEST_TIMEOUT);
        if !self.password.is_empty() {
            request = request.header("x-clickhouse-key", &self.password);
        }
        let response = request.send()?;
        Ok(classify(
            response.status(),
            &String::from_utf8_lossy(response.body()),
        ))
    }
}

/// `{url}/?database=..&query=INSERT INTO `table` FORMAT JSONEachRow&...`.
fn insert_url(c: &ClickHouseConfig) -> String {
    let query = format!("INSERT INTO {} FORMAT JSONEachRow", quoted(&c.table));
    let mut url = format!(
        "{}/?database={}&query={}",
        c.url.trim_end_matches('/'),
        percent_encode(&c.database),
        percent_encode(&query)
    );
    if c.skip_unknown_fields {
        url.push_str("&input_format_skip_unknown_fields=1");
    }
    if c.timestamp == TimeFormat::Rfc3339 {
        url.push_str("&date_time_input_format=best_effort");
    }
    url
}

/// `{url}/?database=..&query=DESCRIBE TABLE `table` FORMAT JSONEachRow`.
fn describe_url(c: &ClickHouseConfig) -> String {
    let query = format!("DESCRIBE TABLE {} FORMAT JSONEachRow", quoted(&c.table));
    format!(
        "{}/?database={}&query={}",
        c.url.trim_end_matches('/'),
        percent_encode(&c.database),
        percent_encode(&query)
    )
}

fn quoted(table: &str) -> String {
    format!("`{}`", table.replace('\\', "\\\\").replace('`', "\\`"))
}

pumphouse_sdk::export_sink!(ClickHouseSink);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::http::{HttpError, HttpErrorKind, Response};
    use pumphouse_sdk::serde_json::{self, json, Value};
    use pumphouse_sdk::{testing, IamRecord, Timestamp};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn sink(extra: Value) -> ClickHouseSink {
        ClickHouseSink::init(testing::config(
            json!({"url": "http://ch.test:8123/", "table": "iam"}),
            extra,
        ))
        .unwrap()
    }

    fn iam(user: &str) -> IamRecord {
        IamRecord {
            timestamp: Timestamp::from_unix_seconds(1_795_240_061),
            username: user.into(),
            effect: "allow".into(),
            ..Default::default()
        }
    }

    /// The requests a mock saw: URL and rows.
    type Seen = Rc<RefCell<Vec<(String, Vec<Value>)>>>;

    /// The iam table of the README as `DESCRIBE TABLE` shows it.
    const IAM_DESCRIBED: &str = r#"{"name":"_id","type":"UInt64"}
{"name":"timestamp","type":"DateTime('UTC')"}
{"name":"username","type":"String"}
{"name":"expire_at","type":"Int64"}
"#;

    /// The answer to the plugin's `DESCRIBE TABLE`, for mocks that serve
    /// inserts.
    fn describe_answer(url: &str) -> Option<Response> {
        url.contains("DESCRIBE%20TABLE")
            .then(|| Response::new(200).with_body(IAM_DESCRIBED))
    }

    /// What a mock answers, and the check on the error it should give.
    type Case = ((u16, &'static str), fn(&WriteError) -> bool);

    /// Records the requests and answers each with the next of `answers`
    /// (the last one repeats).
    fn serve(answers: Vec<(u16, &'static str)>) -> Seen {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let log = seen.clone();
        let mut answers = answers.into_iter().peekable();
        testing::mock_http(move |req| {
            if let Some(answer) = describe_answer(req.url()) {
                return Ok(answer);
            }
            let rows = String::from_utf8_lossy(req.body_bytes())
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            log.borrow_mut().push((req.url().to_owned(), rows));
            let (status, body) = if answers.len() > 1 {
                answers.next().unwrap()
            } else {
                *answers.peek().unwrap()
            };
            Ok(Response::new(status).with_body(body))
        });
        seen
    }

    #[test]
    fn inserts_iam_rows_with_default_columns() {
        let seen = Rc::new(RefCell::new(Vec::new()));
        testing::mock_http({
            let seen = seen.clone();
            move |req| {
                assert_eq!(req.header_value("x-clickhouse-user"), Some("pump"));
                assert_eq!(req.header_value("x-clickhouse-key"), Some("pw"));
                if let Some(answer) = describe_answer(req.url()) {
                    return Ok(answer);
                }
                let rows: Vec<Value> = String::from_utf8_lossy(req.body_bytes())
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                seen.borrow_mut().push((req.url().to_owned(), rows));
                Ok(Response::new(200))
            }
        });
        let mut s = sink(json!({"user": "pump", "password": "pw", "database": "my db"}));
        let batch = testing::json_batch_of(Schema::Iam, &[iam("alice"), iam("bob")]);
        s.write(&batch).unwrap();
        let seen = seen.borrow();
        assert_eq!(
            seen[0].0,
            "http://ch.test:8123/?database=my%20db&query=INSERT%20INTO%20%60iam%60%20FORMAT%20JSONEachRow"
        );
        assert_eq!(
            seen[0].1[1],
            json!({
                "_id": 1,
                "timestamp": 1_795_240_061,
                "username": "bob",
                "effect": "allow",
                "conclusion": "",
                "request": "",
                "policies": "",
                "deciders": "",
                "expire_at": 0,
            })
        );
        assert_eq!(testing::counter("rows_inserted", &[]), 2);
    }

    #[test]
    fn a_named_bad_row_is_dropped_and_the_rest_inserted() {
        let seen = serve(vec![
            (
                500,
                "Code: 27, e.displayText() = DB::Exception: Cannot parse input: (at row 2)\n",
            ),
            (200, ""),
        ]);
        let mut s = sink(json!({}));
        let batch = testing::json_batch_of(Schema::Iam, &[iam("a"), iam("b"), iam("c")]);
        match s.write(&batch) {
            Err(WriteError::Partial(failed)) => {
                assert_eq!(failed.len(), 1);
                assert_eq!(failed[0].index, 1);
                assert!(!failed[0].retryable);
                assert!(
                    failed[0].reason.contains("Code: 27"),
                    "{}",
                    failed[0].reason
                );
            }
            other => panic!("{other:?}"),
        }
        let seen = seen.borrow();
        assert_eq!(seen.len(), 2);
        let users: Vec<_> = seen[1].1.iter().map(|r| r["username"].clone()).collect();
        assert_eq!(users, vec![json!("a"), json!("c")]);
    }

    #[test]
    fn records_that_cannot_become_rows_fail_alone() {
        let seen = serve(vec![(200, "")]);
        let mut s = sink(json!({}));
        let batch = testing::batch(
            Encoding::Json,
            Schema::Iam,
            vec![
                br#"{"Username":"ok"}"#.to_vec(),
                br#"{"TimeStamp":"not a time"}"#.to_vec(),
            ],
        );
        match s.write(&batch) {
            Err(WriteError::Partial(failed)) => {
                assert_eq!(failed.len(), 1);
                assert_eq!(failed[0].index, 1);
                assert!(
                    failed[0].reason.contains("column timestamp"),
                    "{}",
                    failed[0].reason
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(seen.borrow()[0].1.len(), 1);
    }

    #[test]
    fn errors_map_onto_write_errors() {
        let batch = testing::json_batch_of(Schema::Iam, &[iam("a")]);
        let cases: Vec<Case> = vec![
            ((500, "Code: 53, e.displayText() = Type mismatch"), |e| {
                matches!(e, WriteError::InvalidBatch(_))
            }),
            (
                (404, "Code: 60, e.displayText() = Table x doesn't exist"),
                |e| matches!(e, WriteError::Fatal(_)),
            ),
            ((401, "Code: 193, e.displayText() = Wrong password"), |e| {
                matches!(e, WriteError::Fatal(_))
            }),
            ((500, "Code: 241, e.displayText() = Memory limit"), |e| {
                matches!(e, WriteError::Retry(_))
            }),
            ((413, ""), |e| matches!(e, WriteError::TooLarge)),
            // Row 5 of a one-row body cannot be right: bisect instead.
            ((500, "Code: 27, e.displayText() = x (at row 5)"), |e| {
                matches!(e, WriteError::InvalidBatch(_))
            }),
        ];
        for (answer, expected) in cases {
            serve(vec![answer]);
            let err = sink(json!({})).write(&batch).unwrap_err();
            assert!(expected(&err), "{answer:?} gave {err:?}");
        }
        testing::mock_http(|req| Err(HttpError::new(HttpErrorKind::Connection, req, "refused")));
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
    fn a_value_its_column_cannot_hold_fails_that_record_alone() {
        let seen = serve(vec![(200, "")]);
        let describes = Rc::new(RefCell::new(0));
        let mut s = sink(json!({}));
        let mut far = iam("far");
        // Past DateTime's end in 2106: stored modulo 2^32 if sent.
        far.timestamp = Timestamp::from_unix_seconds(4_855_673_600);
        let mut ok = iam("ok");
        ok.expire_at = Timestamp::from_unix_seconds(4_855_673_600);
        let batch = testing::json_batch_of(Schema::Iam, &[ok, far]);
        match s.write(&batch) {
            Err(WriteError::Partial(failed)) => {
                assert_eq!(failed.len(), 1);
                assert_eq!(failed[0].index, 1);
                assert!(!failed[0].retryable);
                assert!(
                    failed[0]
                        .reason
                        .contains("column timestamp (DateTime('UTC')) cannot hold 2123-"),
                    "{}",
                    failed[0].reason
                );
            }
            other => panic!("{other:?}"),
        }
        // The Int64 expire_at takes the year 2123 as it is.
        let rows = seen.borrow()[0].1.clone();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["expire_at"], json!(4_855_673_600i64));
        // The table is described once, not per batch.
        testing::mock_http({
            let describes = describes.clone();
            move |req| {
                if describe_answer(req.url()).is_some() {
                    *describes.borrow_mut() += 1;
                }
                Ok(Response::new(200))
            }
        });
        s.write(&testing::json_batch_of(Schema::Iam, &[iam("again")]))
            .unwrap();
        assert_eq!(*describes.borrow(), 0);
    }

    #[test]
    fn an_unknown_table_fails_the_describe_as_fatal() {
        testing::mock_http(|_| {
            Ok(Response::new(404)
                .with_body("Code: 60, e.displayText() = Table default.iam doesn't exist"))
        });
        let batch = testing::json_batch_of(Schema::Iam, &[iam("a")]);
        match sink(json!({})).write(&batch) {
            Err(WriteError::Fatal(m)) => assert!(
                m.contains("DESCRIBE TABLE") && m.contains("Code: 60"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn gives_up_shedding_rows_after_a_limit() {
        let seen = serve(vec![(500, "Code: 27, e.displayText() = x (at row 1)")]);
        let records: Vec<_> = (0..40).map(|i| iam(&i.to_string())).collect();
        let batch = testing::json_batch_of(Schema::Iam, &records);
        assert!(matches!(
            sink(json!({})).write(&batch),
            Err(WriteError::InvalidBatch(_))
        ));
        assert_eq!(seen.borrow().len(), MAX_DROPPED_ROWS + 1);
    }

    #[test]
    fn tyk_defaults_custom_columns_and_settings() {
        let seen = serve(vec![(200, "")]);
        let mut s = sink(json!({
            "columns": {"id": "@id", "who": "Username", "at": "TimeStamp"},
            "timestamp": "rfc3339",
            "skip_unknown_fields": true,
        }));
        s.write(&testing::json_batch_of(Schema::Iam, &[iam("a")]))
            .unwrap();
        let (url, rows) = seen.borrow()[0].clone();
        assert!(
            url.ends_with("&input_format_skip_unknown_fields=1&date_time_input_format=best_effort"),
            "{url}"
        );
        assert_eq!(
            rows[0],
            json!({"id": 0, "who": "a", "at": "2026-11-21T05:47:41Z"})
        );

        let seen = serve(vec![(200, "")]);
        let tyk = pumphouse_sdk::TykRecord {
            path: "/x".into(),
            tags: vec!["t".into()],
            ..Default::default()
        };
        sink(json!({}))
            .write(&testing::json_batch_of(Schema::Tyk, &[tyk]))
            .unwrap();
        let row = seen.borrow()[0].1[0].clone();
        assert_eq!(row["path"], "/x");
        assert_eq!(row["tags"], json!(["t"]));
        assert_eq!(row["country"], "");
        assert_eq!(row["track_path"], false);
    }

    #[test]
    fn generic_records_need_columns_and_json_is_required() {
        serve(vec![(200, "")]);
        let batch = testing::json_batch(&[json!({"a": 1})]);
        assert!(matches!(
            sink(json!({})).write(&batch),
            Err(WriteError::Fatal(_))
        ));
        let mp = testing::iam_batch(&[iam("a")]);
        assert!(matches!(
            sink(json!({})).write(&mp),
            Err(WriteError::Fatal(_))
        ));
        sink(json!({"columns": {"a": "a"}})).write(&batch).unwrap();
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |c: Value| {
            ClickHouseSink::init(Config::from(c))
                .err()
                .unwrap()
                .to_string()
        };
        assert!(err(json!({"url": "http://h"})).contains("missing field `table`"));
        assert!(err(json!({"url": "h:8123", "table": "t"})).contains("url:"));
        assert!(err(json!({"url": "http://h", "table": "t", "tabel": 1}))
            .contains("unknown field `tabel`"));
        assert!(
            err(json!({"url": "http://h", "table": "t", "columns": {"x": "@what"}}))
                .contains("columns.x")
        );
        assert!(
            err(json!({"url": "http://h", "table": "t", "timestamp": "iso"}))
                .contains("unknown variant `iso`")
        );
        let e = err(json!({"url": "http://h", "table": "t", "password": "${PUMP_CH_TEST_UNSET}"}));
        assert!(
            e.contains("password") && e.contains("PUMP_CH_TEST_UNSET") && e.contains("sandbox.env"),
            "{e}"
        );
    }

    #[test]
    fn passwords_come_from_the_environment() {
        std::env::set_var("PUMP_CH_TEST_PASSWORD", "from-env");
        assert_eq!(
            expand_env("password", "${PUMP_CH_TEST_PASSWORD}").unwrap(),
            "from-env"
        );
        assert!(expand_env("password", "lit${x").is_err());
    }

    #[test]
    fn describes_itself() {
        let info = ClickHouseSink::info();
        assert_eq!(info.name, "clickhouse");
        assert_eq!(info.accepts, Encoding::Json);
    }
}
