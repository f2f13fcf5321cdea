//! `elasticsearch`: a pumphouse sink that indexes records through the bulk
//! API, one document per record with the record's id as `_id`. See
//! README.md.

mod bulk;
mod config;

use pumphouse_sdk::http::Request;
use pumphouse_sdk::{
    Batch, Config, Encoding, Error, FailedEvent, PluginInfo, Schema, Sink, WriteError,
};

use crate::config::EsConfig;

/// Sends each batch as one `_bulk` request.
pub struct ElasticsearchSink {
    config: EsConfig,
    /// Reused between batches.
    body: Vec<u8>,
}

impl Sink for ElasticsearchSink {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "elasticsearch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            accepts: Encoding::Json,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let config = EsConfig::parse(&config, |name| std::env::var(name).ok())?;
        pumphouse_sdk::info!(
            "indexing into {} (authorization: {})",
            config.bulk_url,
            if config.authorization.is_some() {
                "set"
            } else {
                "none"
            }
        );
        Ok(ElasticsearchSink {
            config,
            body: Vec::new(),
        })
    }

    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.encoding != Encoding::Json {
            return Err(WriteError::Fatal(format!(
                "elasticsearch sink got a {:?} batch but accepts only JSON",
                batch.encoding
            )));
        }
        self.body.clear();
        // Batch indices of the records behind each action, in order.
        let mut sent = Vec::with_capacity(batch.len());
        let mut failed = Vec::new();
        let time_fields: &[&str] = match batch.schema {
            Schema::Generic => &[],
            _ => &bulk::TIME_FIELDS,
        };
        for rec in batch.records() {
            if let Some(reason) = bulk::time_out_of_range(rec.payload(), time_fields) {
                failed.push(FailedEvent {
                    index: rec.index(),
                    reason,
                    retryable: false,
                });
                continue;
            }
            match bulk::one_line_document(rec.payload()) {
                Ok(doc) => {
                    let index = self.config.index.render(rec.timestamp());
                    bulk::push_index_action(&mut self.body, &index, &bulk::doc_id(rec.id()), &doc);
                    sent.push(rec.index());
                }
                Err(e) => failed.push(FailedEvent {
                    index: rec.index(),
                    reason: format!("not a document: {e}"),
                    retryable: false,
                }),
            }
        }
        let refused = if sent.is_empty() {
            Vec::new()
        } else {
            self.send(&sent)?
        };
        let indexed = sent.len() - refused.len();
        failed.extend(refused);
        pumphouse_sdk::metrics::counter_add("elasticsearch_documents", indexed as u64, &[]);
        if failed.is_empty() {
            Ok(())
        } else {
            failed.sort_by_key(|f| f.index);
            Err(WriteError::Partial(failed))
        }
    }
}

impl ElasticsearchSink {
    /// Posts the bulk body and returns the items the cluster refused.
    fn send(&mut self, sent: &[u32]) -> Result<Vec<FailedEvent>, Error> {
        let mut req = Request::post(self.config.bulk_url.as_str())
            .header("content-type", "application/x-ndjson")
            .timeout(self.config.timeout);
        if let Some(auth) = &self.config.authorization {
            req = req.header("authorization", auth);
        }
        let body = std::mem::take(&mut self.body);
        let result = req.body(body).send();
        // 413 -> too-large, 429/5xx -> retry, 400 -> invalid (bisect),
        // 401/403/404 -> fatal.
        let response = result?.error_for_status()?;
        bulk::failed_items(response.body(), sent)
    }
}

pumphouse_sdk::export_sink!(ElasticsearchSink);

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use pumphouse_sdk::http::{HttpError, HttpErrorKind, Response};
    use pumphouse_sdk::serde_json::{self, json, Value};
    use pumphouse_sdk::testing;

    use super::*;

    type Seen = Rc<RefCell<Vec<Request>>>;

    /// Answers every request with `respond(request)` and keeps them.
    fn mock(mut respond: impl FnMut(&Request) -> Response + 'static) -> Seen {
        testing::reset();
        let seen: Seen = Rc::default();
        let log = seen.clone();
        testing::mock_http(move |req| {
            log.borrow_mut().push(req.clone());
            Ok(respond(req))
        });
        seen
    }

    /// A bulk response with these item statuses; errors for non-2xx.
    fn bulk_response(statuses: &[u16]) -> Response {
        let items: Vec<Value> = statuses
            .iter()
            .map(|&s| match s {
                200..=299 => json!({"index": {"status": s}}),
                400 => json!({"index": {"status": s, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}}),
                _ => json!({"index": {"status": s, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}}),
            })
            .collect();
        let errors = statuses.iter().any(|s| !(200..300).contains(s));
        Response::new(200)
            .with_body(json!({"took": 1, "errors": errors, "items": items}).to_string())
    }

    fn sink() -> ElasticsearchSink {
        ElasticsearchSink::init(Config::from(json!({
            "url": "http://es.test:9200",
            "index": "analytics-%Y.%m.%d",
            "api_key": "k",
        })))
        .unwrap()
    }

    /// A batch of `n` records with ids 100+i and a time on day i.
    fn batch(n: usize) -> Batch {
        let mut b = Batch::new(Encoding::Json, Schema::Iam);
        for i in 0..n {
            let ms = 1_763_700_000_000 + i as i64 * 86_400_000;
            b.push(100 + i as u64, ms, json!({"n": i}).to_string().as_bytes())
                .unwrap();
        }
        b
    }

    fn lines(req: &Request) -> Vec<Value> {
        let body = std::str::from_utf8(req.body_bytes()).unwrap();
        assert!(body.ends_with('\n'), "a bulk body ends with a newline");
        body.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn one_bulk_request_per_batch() {
        let seen = mock(|_| bulk_response(&[201, 201]));
        sink().write(&batch(2)).unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        assert_eq!(req.url(), "http://es.test:9200/_bulk");
        assert_eq!(
            req.header_value("content-type"),
            Some("application/x-ndjson")
        );
        assert_eq!(req.header_value("authorization"), Some("ApiKey k"));
        assert_eq!(
            lines(req),
            vec![
                json!({"index": {"_index": "analytics-2025.11.21", "_id": "0000000000000064"}}),
                json!({"n": 0}),
                json!({"index": {"_index": "analytics-2025.11.22", "_id": "0000000000000065"}}),
                json!({"n": 1}),
            ]
        );
        assert_eq!(testing::counter("elasticsearch_documents", &[]), 2);
    }

    #[test]
    fn item_errors_become_partial_failures() {
        mock(|_| bulk_response(&[201, 400, 429, 200, 503]));
        let err = sink().write(&batch(5)).unwrap_err();
        let WriteError::Partial(failed) = err else {
            panic!("{err:?}")
        };
        let summary: Vec<(u32, bool)> = failed.iter().map(|f| (f.index, f.retryable)).collect();
        assert_eq!(summary, vec![(1, false), (2, true), (4, true)]);
        assert!(failed[0]
            .reason
            .contains("mapper_parsing_exception: failed to parse"));
        assert_eq!(testing::counter("elasticsearch_documents", &[]), 2);
    }

    #[test]
    fn a_record_that_is_no_document_is_rejected_alone() {
        let seen = mock(|_| bulk_response(&[201, 201]));
        let mut b = batch(2);
        b.push(7, 0, b"{\"broken\":\n").unwrap();
        let err = sink().write(&b).unwrap_err();
        let WriteError::Partial(failed) = err else {
            panic!("{err:?}")
        };
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].index, failed[0].retryable), (2, false));
        assert_eq!(lines(&seen.borrow()[0]).len(), 4, "the good two were sent");
    }

    /// An iam record whose `ExpireAt` is past 9999 (the host's seconds
    /// text) fails alone, not retryable, and is not sent.
    #[test]
    fn a_time_past_9999_is_refused_alone() {
        let seen = mock(|_| bulk_response(&[201, 201]));
        let mut b = batch(2);
        b.push(
            7,
            0,
            br#"{"TimeStamp":"2026-01-01T00:00:00Z","ExpireAt":"253402300800"}"#,
        )
        .unwrap();
        let err = sink().write(&b).unwrap_err();
        let WriteError::Partial(failed) = err else {
            panic!("{err:?}")
        };
        assert_eq!(failed.len(), 1);
        assert_eq!((failed[0].index, failed[0].retryable), (2, false));
        assert!(
            failed[0].reason.contains("epoch milliseconds"),
            "{}",
            failed[0].reason
        );
        assert_eq!(lines(&seen.borrow()[0]).len(), 4, "the good two were sent");
    }

    #[test]
    fn whole_request_statuses() {
        type Expect = fn(&WriteError) -> bool;
        let cases: [(u16, Expect); 6] = [
            (413, |e| *e == WriteError::TooLarge),
            (429, |e| matches!(e, WriteError::Retry(_))),
            (503, |e| matches!(e, WriteError::Retry(_))),
            (400, |e| matches!(e, WriteError::InvalidBatch(_))),
            (401, |e| matches!(e, WriteError::Fatal(_))),
            (404, |e| matches!(e, WriteError::Fatal(_))),
        ];
        for (status, want) in cases {
            mock(move |_| Response::new(status).with_body("{}"));
            let err = sink().write(&batch(1)).unwrap_err();
            assert!(want(&err), "{status}: {err:?}");
        }
        mock(|_| Response::new(200).with_body("not json"));
        assert!(matches!(sink().write(&batch(1)), Err(WriteError::Retry(_))));
        testing::reset();
        testing::mock_http(|req| Err(HttpError::new(HttpErrorKind::Timeout, req, "")));
        assert!(matches!(sink().write(&batch(1)), Err(WriteError::Retry(_))));
    }

    #[test]
    fn pipeline_and_basic_auth() {
        std::env::set_var("PUMP_ES_TEST_PASSWORD", "hunter2");
        let seen = mock(|_| bulk_response(&[201]));
        let mut s = ElasticsearchSink::init(Config::from(json!({
            "url": "http://es.test:9200/",
            "pipeline": "enrich",
            "username": "pump",
            "password": "${PUMP_ES_TEST_PASSWORD}",
        })))
        .unwrap();
        s.write(&batch(1)).unwrap();
        let seen = seen.borrow();
        assert_eq!(seen[0].url(), "http://es.test:9200/_bulk?pipeline=enrich");
        // base64("pump:hunter2")
        assert_eq!(
            seen[0].header_value("authorization"),
            Some("Basic cHVtcDpodW50ZXIy")
        );
        assert_eq!(
            lines(&seen[0])[0]["index"]["_index"],
            "pumphouse-2025.11.21",
            "the default pattern"
        );
    }

    #[test]
    fn refuses_msgpack_and_sends_nothing_for_empty_batches() {
        let seen = mock(|_| bulk_response(&[]));
        let mut s = sink();
        let b = testing::msgpack_batch(Schema::Generic, &[json!({"a": 1})]);
        assert!(matches!(s.write(&b), Err(WriteError::Fatal(_))));
        s.write(&batch(0)).unwrap();
        assert!(seen.borrow().is_empty());
    }

    #[test]
    fn describes_itself() {
        let info = ElasticsearchSink::info();
        assert_eq!(info.name, "elasticsearch");
        assert_eq!(info.accepts, Encoding::Json);
    }
}
