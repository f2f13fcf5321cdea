#![doc = include_str!("../README.md")]

mod config;
mod series;

use pumphouse_sdk::{
    metrics, Batch, Config, Encoding, Error, PluginInfo, Schema, Sink, WriteError,
};

use config::{Kind, Settings, Spec, SERIES_CAPPED, VALUES_MISSING};
use series::{Plan, Row, Tally};

/// Turns records into labelled counters and histograms on the host's
/// `/metrics`.
pub struct Prometheus {
    plans: Plans,
    /// Whether a batch of generic records without configured metrics has
    /// been reported, so the log says it once.
    warned_generic: bool,
}

/// Configured metrics apply to every schema and keep one set of series;
/// the defaults differ per schema.
enum Plans {
    Configured(Plan),
    Defaults { tyk: Plan, iam: Plan },
}

impl Plans {
    fn for_schema(&mut self, schema: Schema) -> Option<&mut Plan> {
        match (self, schema) {
            (Plans::Configured(plan), _) => Some(plan),
            (Plans::Defaults { tyk, .. }, Schema::Tyk) => Some(tyk),
            (Plans::Defaults { iam, .. }, Schema::Iam) => Some(iam),
            (Plans::Defaults { .. }, Schema::Generic) => None,
        }
    }
}

impl Sink for Prometheus {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "prometheus".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            // It reads a few top-level fields per record, which is cheapest
            // on the producer's own bytes.
            accepts: Encoding::Msgpack,
        }
    }

    fn init(config: Config) -> Result<Self, Error> {
        let settings = Settings::parse(&config)?;
        let plans = match settings.metrics {
            Some(_) => Plans::Configured(Plan::new(settings.specs(Schema::Generic))),
            None => Plans::Defaults {
                tyk: Plan::new(settings.specs(Schema::Tyk)),
                iam: Plan::new(settings.specs(Schema::Iam)),
            },
        };
        Ok(Prometheus {
            plans,
            warned_generic: false,
        })
    }

    /// Never fails: bad or missing fields are counted, not rejected, since
    /// retrying or dead-lettering records cannot make them countable.
    fn write(&mut self, batch: &Batch) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        let Some(plan) = self.plans.for_schema(batch.schema) else {
            if !self.warned_generic {
                self.warned_generic = true;
                pumphouse_sdk::warn!(
                    "generic records have no default metrics; list them in `metrics` to count these"
                );
            }
            return Ok(());
        };
        let rows: Vec<Row<'_>> = batch.records().map(|rec| plan.row(&rec)).collect();
        let tallies = plan.tally(&rows);
        for (metric, tally) in plan.metrics.iter_mut().zip(&tallies) {
            emit(&metric.spec, tally);
            if tally.capped > 0 && !metric.warned_full {
                metric.warned_full = true;
                pumphouse_sdk::warn!(
                    "metric {} reached max_series ({}); records with new label values are counted under __other__",
                    metric.spec.name,
                    metric.spec.max_series
                );
            }
        }
        Ok(())
    }
}

/// One host call per label set of the batch, plus the plugin's own
/// counters when something was capped or missing.
fn emit(spec: &Spec, tally: &Tally) {
    for (values, series) in &tally.series {
        let labels: Vec<(&str, &str)> = spec
            .labels
            .iter()
            .zip(values)
            .map(|(label, value)| (label.name.as_str(), value.as_str()))
            .collect();
        match spec.kind {
            Kind::Counter => metrics::counter_add(&spec.name, series.count, &labels),
            Kind::Histogram { .. } => {
                metrics::histogram_observe(&spec.name, &series.values, &labels)
            }
        }
    }
    let by_metric = [("metric", spec.name.as_str())];
    if tally.capped > 0 {
        metrics::counter_add(SERIES_CAPPED, tally.capped, &by_metric);
    }
    if tally.missing > 0 {
        metrics::counter_add(VALUES_MISSING, tally.missing, &by_metric);
    }
}

pumphouse_sdk::export_sink!(Prometheus);

#[cfg(test)]
mod tests {
    use super::*;
    use pumphouse_sdk::serde_json::json;
    use pumphouse_sdk::{testing, IamRecord, TykRecord};

    fn tyk(code: i64, api: &str, method: &str, ms: i64) -> TykRecord {
        TykRecord {
            response_code: code,
            api_id: api.into(),
            method: method.into(),
            request_time: ms,
            path: format!("/{api}/items"),
            ..Default::default()
        }
    }

    fn sink(config: pumphouse_sdk::serde_json::Value) -> Prometheus {
        Prometheus::init(Config::from(config)).unwrap()
    }

    #[test]
    fn tyk_defaults_count_requests_and_observe_latency() {
        testing::reset();
        let mut s = sink(json!({}));
        let batch = testing::tyk_batch(&[
            tyk(200, "a", "GET", 10),
            tyk(200, "a", "GET", 30),
            tyk(500, "a", "POST", 2000),
            tyk(200, "b", "GET", 1),
        ]);
        s.write(&batch).unwrap();
        s.write(&batch).unwrap();
        let reqs = |code, api, method| {
            testing::counter(
                "tyk_http_requests",
                &[("code", code), ("api", api), ("method", method)],
            )
        };
        assert_eq!(reqs("200", "a", "GET"), 4);
        assert_eq!(reqs("500", "a", "POST"), 2);
        assert_eq!(reqs("200", "b", "GET"), 2);
        assert_eq!(testing::counter_total("tyk_http_requests"), 8);
        assert_eq!(
            testing::histogram("tyk_latency_ms", &[("api", "a")]),
            [10.0, 30.0, 2000.0, 10.0, 30.0, 2000.0]
        );
        assert_eq!(
            testing::histogram("tyk_latency_ms", &[("api", "b")]),
            [1.0, 1.0]
        );
        assert_eq!(testing::counter_total(SERIES_CAPPED), 0);
        assert_eq!(testing::counter_total(VALUES_MISSING), 0);
    }

    #[test]
    fn iam_defaults_count_decisions_per_user_and_effect() {
        testing::reset();
        let mut s = sink(json!({}));
        let rec = |user: &str, effect: &str| IamRecord {
            username: user.into(),
            effect: effect.into(),
            ..Default::default()
        };
        s.write(&testing::iam_batch(&[
            rec("alice", "allow"),
            rec("alice", "deny"),
            rec("alice", "allow"),
            rec("bob", "allow"),
        ]))
        .unwrap();
        let n = |user, effect| {
            testing::counter("iam_authz_decisions", &[("user", user), ("effect", effect)])
        };
        assert_eq!(
            (n("alice", "allow"), n("alice", "deny"), n("bob", "allow")),
            (2, 1, 1)
        );
        assert_eq!(testing::counter_total("iam_authz_decisions"), 4);
        assert!(testing::counter_total("tyk_http_requests") == 0);
    }

    #[test]
    fn configured_metrics_read_any_top_level_field() {
        testing::reset();
        let mut s = sink(json!({"metrics": [
            {"name": "by_org", "type": "counter", "labels": ["OrgID", {"field": "ResponseCode", "label": "status"}]},
            {"name": "bytes", "type": "histogram", "value_field": "ContentLength"}
        ]}));
        let mut a = tyk(404, "x", "GET", 3);
        a.org_id = "o1".into();
        a.content_length = 512;
        let b = tyk(404, "y", "GET", 3);
        s.write(&testing::tyk_batch(&[a.clone(), a, b])).unwrap();
        assert_eq!(
            testing::counter("by_org", &[("org_id", "o1"), ("status", "404")]),
            2
        );
        // A missing field is an empty label value.
        assert_eq!(
            testing::counter("by_org", &[("org_id", ""), ("status", "404")]),
            1
        );
        assert_eq!(testing::histogram("bytes", &[]), [512.0, 512.0, 0.0]);
    }

    #[test]
    fn missing_values_are_counted_and_the_batch_still_succeeds() {
        testing::reset();
        let mut s = sink(json!({"metrics": [
            {"name": "lat", "type": "histogram", "value_field": "Latency", "labels": ["Api"]}
        ]}));
        let batch = testing::msgpack_batch(
            Schema::Generic,
            &[
                json!({"Api": "a", "Latency": 5}),
                json!({"Api": "a", "Latency": "slow"}),
                json!({"Api": "a"}),
                json!({"Api": "a", "Latency": null}),
                json!({"Api": "a", "Latency": [1, 2]}),
                json!({"Api": "a", "Latency": 2.5}),
            ],
        );
        assert_eq!(s.write(&batch), Ok(()));
        assert_eq!(testing::histogram("lat", &[("api", "a")]), [5.0, 2.5]);
        assert_eq!(testing::counter(VALUES_MISSING, &[("metric", "lat")]), 4);
        // Payloads that are not MessagePack maps at all are no error either.
        let junk = testing::batch(Encoding::Msgpack, Schema::Generic, vec![vec![0xc1], vec![]]);
        assert_eq!(s.write(&junk), Ok(()));
        assert_eq!(testing::counter(VALUES_MISSING, &[("metric", "lat")]), 6);
    }

    #[test]
    fn the_cap_folds_new_label_sets_into_other_and_keeps_the_total() {
        testing::reset();
        let mut s = sink(json!({"max_series": 2}));
        let records: Vec<_> = (0..10)
            .map(|i| tyk(200, &format!("api{i}"), "GET", i))
            .collect();
        s.write(&testing::tyk_batch(&records)).unwrap();
        let other = [
            ("code", "__other__"),
            ("api", "__other__"),
            ("method", "__other__"),
        ];
        assert_eq!(testing::counter("tyk_http_requests", &other), 8);
        assert_eq!(
            testing::counter(
                "tyk_http_requests",
                &[("code", "200"), ("api", "api0"), ("method", "GET")]
            ),
            1
        );
        assert_eq!(testing::counter_total("tyk_http_requests"), 10);
        assert_eq!(
            testing::histogram("tyk_latency_ms", &[("api", "__other__")]),
            [2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        );
        assert_eq!(
            testing::counter(SERIES_CAPPED, &[("metric", "tyk_http_requests")]),
            8
        );
        assert_eq!(
            testing::counter(SERIES_CAPPED, &[("metric", "tyk_latency_ms")]),
            8
        );
        let warnings = testing::logs()
            .iter()
            .filter(|(_, l)| l.contains("reached max_series"))
            .count();
        assert_eq!(warnings, 2, "once per metric");
        s.write(&testing::tyk_batch(&records)).unwrap();
        assert_eq!(testing::counter_total("tyk_http_requests"), 20);
        let warnings = testing::logs()
            .iter()
            .filter(|(_, l)| l.contains("reached max_series"))
            .count();
        assert_eq!(warnings, 2, "still once per metric");
    }

    #[test]
    fn generic_records_without_metrics_are_accepted_with_one_warning() {
        testing::reset();
        let mut s = sink(json!({}));
        let batch = testing::msgpack_batch(Schema::Generic, &[json!({"a": 1})]);
        assert_eq!(s.write(&batch), Ok(()));
        assert_eq!(s.write(&batch), Ok(()));
        assert_eq!(testing::logs().len(), 1);
        assert_eq!(s.write(&Batch::new(Encoding::Msgpack, Schema::Tyk)), Ok(()));
    }

    #[test]
    fn a_bad_config_fails_init() {
        let err = Prometheus::init(Config::from(
            json!({"metrics": [{"name": "x", "type": "timer"}]}),
        ))
        .err()
        .expect("an error");
        assert_eq!(err.kind(), pumphouse_sdk::ErrorKind::Fatal);
        assert!(
            err.message().starts_with("metrics[0].type:"),
            "{}",
            err.message()
        );
    }
}
