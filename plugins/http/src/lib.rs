//! `http`: a pumphouse sink that sends each batch of records to an HTTP
//! endpoint as a JSON array or as NDJSON. See README.md.

mod body;
mod config;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pumphouse_sdk::http::Request;
use pumphouse_sdk::{
    Batch, Config, Encoding, Error, ErrorKind, FailedEvent, PluginInfo, Record, Sink, WriteError,
};

use crate::config::HttpConfig;

/// Sends records with the configured method, headers and body layout.
pub struct HttpSink {
    config: HttpConfig,
    /// Whether the config sets its own `Content-Type`.
    custom_content_type: bool,
}

impl Sink for HttpSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "http".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let config = HttpConfig::parse(&config, |name| std::env::var(name).ok())?;
        // Header values and query strings may hold secrets: log only the
        // header names and the URL with its query values masked.
        let names: Vec<&str> = config.headers.iter().map(|(n, _)| n.as_str()).collect();
        pumphouse_sdk::info!(
            "sending {:?} to {} {} (headers: {names:?}, gzip: {})",
            config.format,
            config.method.as_str(),
            pumphouse_sdk::http::redact_url(config.url.as_str()),
            config.gzip
        );
        Ok(HttpSink {
            custom_content_type: config.headers.iter().any(|(n, _)| n == "content-type"),
            config,
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "http sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let records: Vec<Record<'_>> = batch.records().collect();
        let per_request = self.config.max_batch_records.unwrap_or(records.len());
        for (n, part) in records.chunks(per_request).enumerate() {
            if let Err(e) = self.send(part) {
                if n == 0 || e.kind() == ErrorKind::Fatal {
                    return Err(e.into());
                }
                // Earlier requests went through: hand back only the rest,
                // as retryable. If they hold a bad or too large part, the
                // retry sends it first and gets the plain error back.
                let rest = &records[n * per_request..];
                return Err(WriteError::Partial(
                    rest.iter()
                        .map(|r| FailedEvent {
                            index: r.index(),
                            reason: e.message().to_owned(),
                            retryable: true,
                        })
                        .collect(),
                ));
            }
        }
        pumphouse_sdk::metrics::counter_add("http_records_sent", records.len() as u64, &[]);
        Ok(())
    }
}

impl HttpSink {
    /// One request for `records`; `Ok` only on a 2xx answer.
    fn send(&self, records: &[Record<'_>]) -> Result<(), Error> {
        let c = &self.config;
        let mut payload = body::build(c.format, records.iter().map(|r| r.payload()));
        let mut req = Request::new(c.method.clone(), c.url.as_str()).timeout(c.timeout);
        if !self.custom_content_type {
            req = req.header("content-type", c.format.content_type());
        }
        for (name, value) in &c.headers {
            req = req.header(name.as_str(), value);
        }
        if c.gzip {
            payload = body::gzip(&payload);
            req = req.header("content-encoding", "gzip");
        }
        pumphouse_sdk::metrics::counter_add("http_bytes_sent", payload.len() as u64, &[]);
        let response = req.body(payload).send()?;
        if response.is_success() {
            return Ok(());
        }
        let wait = response
            .header("retry-after")
            .and_then(|v| body::retry_after(v, unix_now()));
        let err = match response.error_for_status() {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        match wait {
            Some(wait) if err.kind() == ErrorKind::Retry => Err(self.honour_retry_after(err, wait)),
            _ => Err(err),
        }
    }

    /// The host's `retry` carries no delay, so a short `Retry-After` is
    /// waited out here before handing the batch back; a longer one is only
    /// reported, and the host's own backoff decides.
    fn honour_retry_after(&self, err: Error, wait: Duration) -> Error {
        let secs = wait.as_secs();
        if wait <= self.config.max_retry_wait {
            std::thread::sleep(wait);
            Error::retry(format!("{err} (Retry-After: {secs}s, waited)"))
        } else {
            Error::retry(format!(
                "{err} (Retry-After: {secs}s, more than max_retry_wait; the pump's retry backoff applies)"
            ))
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pumphouse_sdk::export_sink!(HttpSink);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::io::Read;
    use std::rc::Rc;

    use pumphouse_sdk::http::{HttpError, HttpErrorKind, Method, Response};
    use pumphouse_sdk::serde_json::{json, Value};
    use pumphouse_sdk::{testing, IamRecord, Schema};

    use super::*;

    /// Requests the mock saw: method, url, headers, body.
    type Seen = Rc<RefCell<Vec<Request>>>;

    /// Answers requests with `statuses` in turn (the last one repeats).
    fn mock(statuses: Vec<Response>) -> Seen {
        testing::reset();
        let seen: Seen = Rc::default();
        let log = seen.clone();
        let mut answers = statuses.into_iter();
        let mut last = Response::new(200);
        testing::mock_http(move |req| {
            log.borrow_mut().push(req.clone());
            if let Some(r) = answers.next() {
                last = r;
            }
            Ok(last.clone())
        });
        seen
    }

    fn sink(config: Value) -> HttpSink {
        HttpSink::init(Config::from(config)).unwrap()
    }

    fn records(n: usize) -> Batch {
        testing::json_batch(&(0..n).map(|i| json!({"n": i})).collect::<Vec<_>>())
    }

    #[test]
    fn posts_a_json_array_with_headers() {
        let seen = mock(vec![Response::new(204)]);
        let mut s = sink(json!({
            "url": "http://ingest.test/v1",
            "headers": {"X-Team": "analytics"},
        }));
        let batch = testing::json_batch_of(
            Schema::Iam,
            &[IamRecord {
                username: "alice".into(),
                ..Default::default()
            }],
        );
        s.write(&batch).unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.method(), &Method::Post);
        assert_eq!(req.url(), "http://ingest.test/v1");
        assert_eq!(req.header_value("content-type"), Some("application/json"));
        assert_eq!(req.header_value("x-team"), Some("analytics"));
        assert_eq!(req.header_value("content-encoding"), None);
        let body: Value = pumphouse_sdk::serde_json::from_slice(req.body_bytes()).unwrap();
        assert_eq!(body.as_array().unwrap().len(), 1);
        assert_eq!(body[0]["Username"], "alice");
        assert_eq!(testing::counter("http_records_sent", &[]), 1);
    }

    #[test]
    fn ndjson_gzip_and_a_custom_content_type() {
        let seen = mock(vec![]);
        let mut s = sink(json!({
            "url": "http://ingest.test/v1",
            "method": "PUT",
            "format": "ndjson",
            "gzip": true,
            "headers": {"Content-Type": "text/plain"},
        }));
        s.write(&records(3)).unwrap();
        let seen = seen.borrow();
        let req = &seen[0];
        assert_eq!(req.method(), &Method::Put);
        assert_eq!(req.header_value("content-type"), Some("text/plain"));
        assert_eq!(req.header_value("content-encoding"), Some("gzip"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(req.body_bytes())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n");
    }

    #[test]
    fn statuses_map_onto_write_errors() {
        type Expect = fn(&WriteError) -> bool;
        let cases: [(u16, Expect); 8] = [
            (429, |e| matches!(e, WriteError::Retry(_))),
            (503, |e| matches!(e, WriteError::Retry(_))),
            (500, |e| matches!(e, WriteError::Retry(_))),
            (413, |e| matches!(e, WriteError::TooLarge)),
            (400, |e| matches!(e, WriteError::InvalidBatch(_))),
            (422, |e| matches!(e, WriteError::InvalidBatch(_))),
            (401, |e| matches!(e, WriteError::Fatal(_))),
            (404, |e| matches!(e, WriteError::Fatal(_))),
        ];
        for (status, want) in cases {
            mock(vec![Response::new(status).with_body("nope")]);
            let err = sink(json!({"url": "http://ingest.test/"}))
                .write(&records(2))
                .unwrap_err();
            assert!(want(&err), "{status}: {err:?}");
        }
    }

    #[test]
    fn network_trouble_is_retry() {
        testing::reset();
        testing::mock_http(|req| Err(HttpError::new(HttpErrorKind::Connection, req, "refused")));
        let err = sink(json!({"url": "http://ingest.test/"}))
            .write(&records(1))
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Retry(ref m) if m.contains("refused")),
            "{err:?}"
        );
    }

    #[test]
    fn retry_after_is_waited_out_up_to_max_retry_wait() {
        mock(vec![Response::new(429).with_header("Retry-After", "0")]);
        let err = sink(json!({"url": "http://ingest.test/"}))
            .write(&records(1))
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Retry(ref m) if m.contains("Retry-After: 0s, waited")),
            "{err:?}"
        );
        mock(vec![Response::new(503).with_header("Retry-After", "3600")]);
        let err = sink(json!({"url": "http://ingest.test/", "max_retry_wait": "1s"}))
            .write(&records(1))
            .unwrap_err();
        assert!(
            matches!(err, WriteError::Retry(ref m) if m.contains("Retry-After: 3600s, more than max_retry_wait")),
            "{err:?}"
        );
        // Retry-After on a status that is not retried changes nothing.
        mock(vec![Response::new(413).with_header("Retry-After", "0")]);
        let err = sink(json!({"url": "http://ingest.test/"}))
            .write(&records(1))
            .unwrap_err();
        assert_eq!(err, WriteError::TooLarge);
    }

    #[test]
    fn max_batch_records_splits_and_reports_the_unsent_rest() {
        let seen = mock(vec![Response::new(200), Response::new(503)]);
        let mut s = sink(json!({"url": "http://ingest.test/", "max_batch_records": 2}));
        let err = s.write(&records(5)).unwrap_err();
        let WriteError::Partial(failed) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            failed.iter().map(|f| f.index).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert!(failed
            .iter()
            .all(|f| f.retryable && f.reason.contains("503")));
        assert_eq!(seen.borrow().len(), 2, "stops at the first failure");

        // A failure of the first request is the plain error.
        mock(vec![Response::new(413)]);
        assert_eq!(s.write(&records(5)).unwrap_err(), WriteError::TooLarge);

        let seen = mock(vec![]);
        s.write(&records(5)).unwrap();
        let sizes: Vec<usize> = seen
            .borrow()
            .iter()
            .map(|r| {
                pumphouse_sdk::serde_json::from_slice::<Vec<Value>>(r.body_bytes())
                    .unwrap()
                    .len()
            })
            .collect();
        assert_eq!(sizes, vec![2, 2, 1]);
    }

    #[test]
    fn refuses_msgpack_and_skips_empty_batches() {
        let seen = mock(vec![]);
        let mut s = sink(json!({"url": "http://ingest.test/"}));
        let batch = testing::msgpack_batch(Schema::Generic, &[json!({"a": 1})]);
        assert!(matches!(s.write(&batch), Err(WriteError::Fatal(_))));
        s.write(&records(0)).unwrap();
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn init_reads_header_secrets_from_the_environment() {
        // Set for this test only; no other test reads it.
        std::env::set_var("PUMP_HTTP_TEST_TOKEN", "t0ken");
        let seen = mock(vec![]);
        let mut s = sink(json!({
            "url": "http://ingest.test/",
            "headers": {"Authorization": "Bearer ${PUMP_HTTP_TEST_TOKEN}"},
        }));
        s.write(&records(1)).unwrap();
        assert_eq!(
            seen.borrow()[0].header_value("authorization"),
            Some("Bearer t0ken")
        );
        assert!(
            !testing::logs().iter().any(|(_, l)| l.contains("t0ken")),
            "the secret is not logged"
        );
        let err = HttpSink::init(Config::from(json!({
            "url": "http://ingest.test/",
            "headers": {"Authorization": "Bearer ${PUMP_HTTP_TEST_UNSET}"},
        })))
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("PUMP_HTTP_TEST_UNSET")
                && err.to_string().contains("sandbox.env"),
            "{err}"
        );
    }

    #[test]
    fn describes_itself() {
        let info = HttpSink::info();
        assert_eq!(info.name, "http");
        assert_eq!(info.accepts, Encoding::Json);
    }
}
